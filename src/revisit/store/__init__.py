"""Sighting store backends behind :class:`revisit.store.base.SightingStore`.

:func:`open_store` turns a ``store_url`` setting into a backend, so callers never import
a backend module directly (the PostgreSQL backend registers itself in ``BACKENDS``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from revisit.store.base import SightingStore


def _open_duckdb(url: str, default_path: Path, **kwargs: Any) -> SightingStore:
    from revisit.store.duckdb_store import DuckDBStore

    path = url.split("://", 1)[1] if url else str(default_path)
    # duckdb:///abs/path -> /abs/path ; duckdb://rel/path -> rel/path ; duckdb://:memory:
    return DuckDBStore(path or str(default_path), **kwargs)


# scheme -> opener(url, default_path, **kwargs); add "postgresql" here for that backend
BACKENDS: dict[str, Callable[..., SightingStore]] = {"duckdb": _open_duckdb}


def open_store(url: str = "", default_path: Path | str = "revisit-data/revisit.duckdb",
               **kwargs: Any) -> SightingStore:
    """``""`` -> DuckDB at ``default_path`` (settings.db_path); ``duckdb:///file.duckdb``;
    other schemes as registered in :data:`BACKENDS`."""
    scheme = url.split("://", 1)[0] if url else "duckdb"
    if scheme == "postgres":
        scheme = "postgresql"
    opener = BACKENDS.get(scheme)
    if opener is None:
        raise ValueError(
            f"unknown store URL scheme {scheme!r} in {url!r} (known: {', '.join(sorted(BACKENDS))})"
        )
    return opener(url, Path(default_path), **kwargs)
