"""What differs between the SQL engines the store runs on, stated once.

The store's SQL (:mod:`revisit.store.sql_store`, :mod:`revisit.store.report_sql`,
:mod:`revisit.store.schema`, :mod:`revisit.store.summary`, the tenancy tables) is written
once, with ``?`` placeholders and a spelling both engines accept:
``IN (SELECT unnest(?::VARCHAR[]))`` for list parameters, ``INSERT ... ON CONFLICT``,
``least``/``greatest``, ``string_agg``, ``bool_or``, ``lag() OVER``, ``::DATE`` casts.
Where the engines really differ, the difference is a field or method here, or a method of
the engine's :class:`Session`; DuckDB (embedded) first, PostgreSQL (distributed) second:

- placeholders: ``?``; ``%s`` (its session rewrites ``?`` and doubles a literal ``%``);
- bulk load: lists unnested side by side in one INSERT; COPY into a temp table, then
  ``INSERT ... SELECT``;
- time functions: ``epoch_us(ts)``, ``make_timestamp(us)``; ``extract(epoch ...)``,
  ``to_timestamp(...) AT TIME ZONE 'UTC'``;
- column types: ``FLOAT[]`` (float32) and ``BLOB``; ``REAL[]`` and ``BYTEA``;
- secondary indexes: none (zone maps prune; an ART index costs more at load than it
  saves); report, visitor and rollup indexes;
- partitions: none; ``sightings`` by UTC month, made on demand;
- locks: one writer lock in the process (DuckDB admits one writer process per file);
  transaction-level advisory locks shared by every process.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date
from typing import Any, Generic, Protocol, TypeVar


@dataclass(frozen=True, slots=True)
class Dialect:
    """The spelling of one SQL engine where it differs from the common one."""

    name: str
    vector_type: str  # a column holding one float32 embedding
    blob_type: str  # a column holding bytes
    indexes: bool  # secondary indexes and a key on the rollup (False: zone maps only)
    partitioned: bool  # sightings partitioned by UTC month (partitions made on demand)
    epoch_us_sql: str  # {} = a naive-UTC TIMESTAMP -> microseconds since 1970, BIGINT
    from_us_sql: str  # {} = microseconds since 1970 -> naive-UTC TIMESTAMP
    median_sql: str  # {} = a numeric column -> its median (an aggregate)
    # one process writes, its writes serialised by a lock: a request should not wait on it
    one_writer: bool = False
    bytewise_sql: str = "{}"  # {} = a text expression sorted by its bytes, whatever the locale

    def bytewise(self, expr: str) -> str:
        """Text ordered the same on every engine (ids: the order of a path's cameras at one
        instant, a top-N's ties, a listing): PostgreSQL sorts by the database's locale."""
        return self.bytewise_sql.format(expr)

    def epoch_us(self, expr: str) -> str:
        return self.epoch_us_sql.format(expr)

    def from_us(self, expr: str) -> str:
        return self.from_us_sql.format(expr)

    def median(self, expr: str) -> str:
        return self.median_sql.format(expr)


DUCKDB = Dialect(
    name="duckdb", vector_type="FLOAT[]", blob_type="BLOB", indexes=False, partitioned=False,
    epoch_us_sql="epoch_us({})", from_us_sql="make_timestamp({})",
    median_sql="median({})", one_writer=True,
)
POSTGRES = Dialect(
    name="postgresql", vector_type="REAL[]", blob_type="BYTEA", indexes=True, partitioned=True,
    epoch_us_sql="(extract(epoch FROM {}) * 1000000)::BIGINT",
    from_us_sql="(to_timestamp({} / 1000000.0) AT TIME ZONE 'UTC')",
    median_sql="percentile_cont(0.5) WITHIN GROUP (ORDER BY {})",
    bytewise_sql='{} COLLATE "C"',
)


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Session(Protocol):
    """One connection inside a transaction (or a read), in the common SQL spelling."""

    dialect: Dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement with ``?`` placeholders."""
        ...

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run an INSERT/UPDATE/DELETE; returns the number of rows it changed."""
        ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               on_conflict: str = "DO NOTHING") -> None:
        """Bulk insert ``rows`` (tuples in ``columns`` order) with one ``ON CONFLICT``
        clause (``excluded.`` names the incoming row)."""
        ...

    def lock(self, *key: str) -> None:
        """Hold a lock named ``key`` until the transaction ends (between processes where
        the engine has several; a no-op where one process holds the only writer)."""
        ...


class Engine(Protocol):
    """Connections and transactions of one database: all the store needs of an engine."""

    dialect: Dialect

    def transaction(self) -> AbstractContextManager[Session]:
        """A write transaction: committed when the block ends, rolled back on error.
        Re-entering on the same thread joins the open transaction."""
        ...

    def read(self) -> AbstractContextManager[Session]:
        """A session for reads (it sees this thread's open transaction, if any)."""
        ...

    def stream(self, sql: str, params: Sequence[Any], chunk: int) -> Iterator[list[Any]]:
        """A large result in chunks, on a connection of its own, so the caller may use
        the store while iterating."""
        ...

    def ensure_partitions(self, months: set[date]) -> None:
        """Create the monthly sightings partitions that do not exist yet (outside any
        transaction: a DDL would wait behind the locks a writer holds)."""
        ...

    def close(self) -> None: ...


H = TypeVar("H")


class PerThread(Generic[H]):
    """One handle (a cursor, a connection) per thread, opened at first use and all closed
    together: an engine's connections must not be shared across threads."""

    def __init__(self, open_: Callable[[], H], close_: Callable[[H], None],
                 alive: Callable[[H], bool] = lambda h: True) -> None:
        self._open, self._close, self._alive = open_, close_, alive
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[H] = []
        self._owner: dict[int, threading.Thread] = {}  # id(handle) -> the thread it is for
        self.closed = False

    def get(self) -> H:
        h = getattr(self._local, "h", None)
        if h is not None and self._alive(h):
            return h
        if self.closed:
            raise RuntimeError("store is closed")
        h = self._local.h = self._open()
        with self._lock:
            self._prune()
            self._all.append(h)
            self._owner[id(h)] = threading.current_thread()
        return h

    def _prune(self) -> None:
        """Close the handles of threads that ended (a server's worker threads come and
        go): kept, each would hold a connection until the store closes."""
        gone = [h for h in self._all if not self._owner[id(h)].is_alive()]
        for h in gone:
            self._all.remove(h)
            del self._owner[id(h)]
            with contextlib.suppress(Exception):
                self._close(h)

    def drop(self) -> None:
        """Forget this thread's handle (broken: the next :meth:`get` opens another)."""
        h = getattr(self._local, "h", None)
        self._local.h = None
        if h is not None:
            with self._lock:
                if id(h) in self._owner:
                    self._all.remove(h)
                    del self._owner[id(h)]
            with contextlib.suppress(Exception):
                self._close(h)

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
            for h in self._all:
                with contextlib.suppress(Exception):
                    self._close(h)
            self._all.clear()
            self._owner.clear()
