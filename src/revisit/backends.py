"""Chooses backends from the URLs in settings: one place that knows every scheme.

Empty URLs mean the embedded default (DuckDB file and faiss in the data directory).
"""

from __future__ import annotations

from pathlib import Path

from revisit.config import Settings
from revisit.identity.index import FaceIndex, FaissIndex
from revisit.queue.base import BrokerUnavailable
from revisit.store.base import SightingStore, StoreUnavailable


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
        import psycopg

        from revisit.store.postgres_store import PostgresStore

        try:
            return PostgresStore(url)
        except psycopg.OperationalError as exc:
            where = url.split("@")[-1]  # no password in the message
            raise StoreUnavailable(f"cannot reach PostgreSQL at {where}: "
                                   f"{str(exc).strip().splitlines()[0]} (is it running? "
                                   "bash scripts/services.sh starts one here)") from None
    raise ValueError(
        f"store_url {url!r}: unknown scheme {scheme!r} (use duckdb:///FILE or postgresql://...)"
    )


def open_index(settings: Settings) -> FaceIndex:
    url = settings.index_url
    from revisit.vision.catalog import embedder_facts

    dim = embedder_facts(settings.embedder.model).dim
    if url.startswith("faiss://") and url.partition("?")[2]:  # options: the approximate index
        from revisit.config.index_url import parse_options
        from revisit.identity.ann_index import FaissAnnIndex

        return FaissAnnIndex(dim, parse_options(url))
    if not url or url.startswith("faiss://"):
        return FaissIndex(dim)
    scheme = url.partition("://")[0]
    if scheme == "pgvector":
        from revisit.identity.pgvector_index import PgVectorIndex

        return PgVectorIndex(url, dim)
    raise ValueError(f"index_url {url!r}: unknown scheme {scheme!r} (use faiss:// or pgvector://)")


def unavailable_errors() -> tuple[type[BaseException], ...]:
    """What a store or broker that is down or restarting raises, on any backend: the API
    answers 503 for these and the CLI one line, never a traceback."""
    kinds: list[type[BaseException]] = [StoreUnavailable, BrokerUnavailable]
    try:
        import psycopg

        kinds.append(psycopg.OperationalError)  # server down, restarted, connection lost
    except ImportError:  # pragma: no cover - psycopg is a dependency
        pass
    try:
        import redis

        kinds += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:  # pragma: no cover - only with the redis extra
        pass
    try:
        from confluent_kafka import KafkaException

        kinds.append(KafkaException)  # broker unreachable, metadata or commit timed out
    except ImportError:  # pragma: no cover - only with the distributed extra
        pass
    return tuple(kinds)
