"""Writes that survive a power cut, for the two spools that hold accepted snapshots (the
server's, :mod:`revisit.api.spool`, and the camera agent's, :mod:`revisit.ingest.agent`):
a file is fsynced before anything relies on it, and a directory after entries are made in
it (a created file or a rename is an entry of its directory, not of the file)."""

from __future__ import annotations

import os
from pathlib import Path


def write_synced(path: Path, data: bytes) -> None:
    """Write a file and fsync it."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_path(path: Path) -> None:
    """Make what ``path`` names durable: a directory's entries (files created, renames
    into it), or the data of a file written without fsync."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
