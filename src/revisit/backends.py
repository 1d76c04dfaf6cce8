"""Chooses backends from the URLs in settings: one place that knows every scheme.

Empty URLs mean the embedded default (DuckDB file and faiss in the data directory).
"""

from __future__ import annotations

from pathlib import Path

from revisit.config import Settings
from revisit.identity.index import FaceIndex, FaissIndex
from revisit.store.base import SightingStore


def open_store(settings: Settings) -> SightingStore:
    url = settings.store_url
    bounds = {"threads": settings.store.duckdb_threads or None,
              "memory_limit": settings.store.duckdb_memory_limit or None}
    if not url:
        from revisit.store.duckdb_store import DuckDBStore

        return DuckDBStore(settings.db_path, **bounds)
    scheme, _, rest = url.partition("://")
    if scheme == "duckdb":
        from revisit.store.duckdb_store import DuckDBStore

        return DuckDBStore(Path(rest), **bounds)
    if scheme in {"postgresql", "postgres"}:
        from revisit.store.postgres_store import PostgresStore

        return PostgresStore(url)
    raise ValueError(
        f"store_url {url!r}: unknown scheme {scheme!r} (use duckdb:///FILE or postgresql://...)"
    )


def open_index(settings: Settings) -> FaceIndex:
    url = settings.index_url
    from revisit.vision.catalog import embedder_facts

    dim = embedder_facts(settings.embedder.model).dim
    if url.startswith("faiss://") and url.partition("?")[2]:  # options: the approximate index
        from revisit.identity.ann_index import FaissAnnIndex, parse_options

        return FaissAnnIndex(dim, parse_options(url))
    if not url or url.startswith("faiss://"):
        return FaissIndex(dim)
    scheme = url.partition("://")[0]
    if scheme == "pgvector":
        from revisit.identity.pgvector_index import PgVectorIndex

        return PgVectorIndex(url, dim)
    raise ValueError(f"index_url {url!r}: unknown scheme {scheme!r} (use faiss:// or pgvector://)")
