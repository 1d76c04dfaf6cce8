"""Writes that survive a power cut, for the two spools that hold accepted snapshots (the
server's, :mod:`revisit.api.spool`, and the camera agent's, :mod:`revisit.ingest.agent`):
a file is fsynced before anything relies on it, and a directory after entries are made in
it (a created file or a rename is an entry of its directory, not of the file)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def write_synced(path: Path, data: bytes) -> None:
    """Write a file and fsync it."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def make_dir(path: Path) -> None:
    """Create a directory and its missing parents so that they survive a power cut: each
    new one is an entry of its parent, fsynced there."""
    missing = []
    while not path.is_dir():
        missing.append(path)
        path = path.parent
    for made in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by another writer meanwhile
            made.mkdir()
        fsync_path(made.parent)


def fsync_path(path: Path) -> None:
    """Make what ``path`` names durable: a directory's entries (files created, renames
    into it), or the data of a file written without fsync."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
