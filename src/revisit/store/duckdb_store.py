"""The embedded store: :class:`~revisit.store.sql_store.SQLStore` on one DuckDB file.

Why DuckDB: the report is a scan + window + aggregate over many millions of rows, which a
columnar engine does in seconds on a laptop (see design notes), and it is one file with no
server to run.

What this module adds to the shared store is the engine: one DuckDB cursor per thread (the
pipeline writes while reports read), writes serialised by one lock (DuckDB admits one
writer process per file, so every writer of the file is in this process), bulk inserts as
one list per column unnested side by side (one statement per table per batch), streamed
results on a cursor of their own.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from revisit.store.base import QueryTimeout, StoreUnavailable, budget_left
from revisit.store.dialect import DUCKDB, Dialect, PerThread
from revisit.store.schema import DUCKDB_LEGACY_V1, migrations
from revisit.store.sql_store import SQLStore, now_utc


class DuckDBSession:
    """:class:`revisit.store.dialect.Session` on a DuckDB cursor."""

    dialect: Dialect = DUCKDB

    def __init__(self, cur: duckdb.DuckDBPyConnection, engine: DuckDBEngine) -> None:
        self.cur = cur
        self._engine = engine

    def execute(self, sql: str, params: Sequence[Any] = ()) -> duckdb.DuckDBPyConnection:
        return self.cur.execute(sql, list(params))

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        row = self.cur.execute(sql, list(params)).fetchone()  # DuckDB returns the count
        return int(row[0]) if row else 0

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               on_conflict: str = "DO NOTHING") -> None:
        if not rows:
            return
        types = self._engine.column_types(self.cur, table)
        values = ", ".join(f"unnest(?::{types[c]}[])" for c in columns)
        self.cur.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM (SELECT {values}) "
            f"ON CONFLICT {on_conflict}",
            [list(col) for col in zip(*rows, strict=True)],
        )

    def lock(self, *key: str) -> None:
        """Nothing to do: the engine's writer lock is held for the whole transaction."""


@contextlib.contextmanager
def _interrupted_after(cur: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Interrupt ``cur`` when this thread's time budget runs out (no budget: nothing)."""
    left = budget_left()
    if left is None:
        yield
        return
    timer = threading.Timer(left, cur.interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield
    except duckdb.InterruptException:
        raise QueryTimeout("the query ran past its time budget and was stopped") from None
    finally:
        timer.cancel()


class DuckDBEngine:
    """Connections and transactions of one DuckDB file (or ``":memory:"``)."""

    dialect: Dialect = DUCKDB

    def __init__(self, path: str, read_only: bool, config: dict[str, Any]) -> None:
        try:
            self.conn = duckdb.connect(path, read_only=read_only, config=config)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():  # unreadable, a directory, no space, ...
                raise StoreUnavailable(f"cannot open the store {path}: "
                                       f"{str(exc).strip().splitlines()[0]}") from None
            raise StoreUnavailable(
                f"the store {path} is in use by another process (DuckDB admits one at a "
                "time: is `revisit serve` running on this data directory?). While it runs, "
                "read reports through its HTTP API (GET /v1/reports/unique-visitors or "
                "/v1/reports/summary with an analyst key) and manage tenants through "
                "/v1/admin/...; or stop it first.") from None
        self._cursors = PerThread(self.conn.cursor, lambda c: c.close())
        self._local = threading.local()  # this thread's transaction depth
        self._lock = threading.RLock()  # the one writer
        self._types: dict[str, dict[str, str]] = {}

    def column_types(self, cur: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
        types = self._types.get(table)
        if types is None:
            rows = cur.execute("SELECT column_name, data_type FROM information_schema.columns "
                               "WHERE table_name = ?", [table]).fetchall()
            types = self._types[table] = dict(rows)
        return types

    @contextlib.contextmanager
    def transaction(self) -> Iterator[DuckDBSession]:
        with self._lock:
            cur = self._cursors.get()
            depth = getattr(self._local, "depth", 0)
            if depth:  # joins the transaction this thread has open
                self._local.depth = depth + 1
                try:
                    yield DuckDBSession(cur, self)
                finally:
                    self._local.depth = depth
                return
            cur.begin()
            self._local.depth = 1
            try:
                yield DuckDBSession(cur, self)
            except BaseException:
                cur.rollback()
                raise
            else:
                cur.commit()
            finally:
                self._local.depth = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[DuckDBSession]:
        if budget_left() is None:
            yield DuckDBSession(self._cursors.get(), self)
            return
        cur = self.conn.cursor()  # its own: an interrupt must not reach another query
        try:
            with _interrupted_after(cur):
                yield DuckDBSession(cur, self)
        finally:
            cur.close()

    def stream(self, sql: str, params: Sequence[Any], chunk: int) -> Iterator[list[Any]]:
        cur = self.conn.cursor()
        try:
            with _interrupted_after(cur):
                cur.execute(sql, list(params))
                while rows := cur.fetchmany(chunk):
                    yield rows
        finally:
            cur.close()

    def ensure_partitions(self, months: set[date]) -> None:
        """DuckDB tables are not partitioned (zone maps prune by time)."""

    def close(self) -> None:
        with self._lock:
            if not self._cursors.closed:
                self._cursors.close()
                self.conn.close()


class DuckDBStore(SQLStore):
    """The store on a DuckDB file: :class:`SQLStore` over a :class:`DuckDBEngine`."""

    def __init__(
        self, path: str | Path, read_only: bool = False, threads: int | None = None,
        memory_limit: str | None = None,
    ) -> None:
        """``threads``/``memory_limit`` (e.g. ``"4GB"``) bound DuckDB; default: all cores,
        80 % of RAM."""
        self.path = str(path)
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a file in the way, no permission: the store's problem
                raise StoreUnavailable(f"cannot create the store's directory "
                                       f"{Path(self.path).parent}: {exc.strerror or exc}") from None
        config: dict[str, Any] = {}
        if threads:
            config["threads"] = threads
        if memory_limit:
            config["memory_limit"] = memory_limit
        super().__init__(DuckDBEngine(self.path, read_only, config), migrate=not read_only)

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The file's DuckDB connection, for benchmarks that bulk-load generated data
        straight into the store's tables (the product goes through the store)."""
        return self.engine.conn  # type: ignore[attr-defined, no-any-return]

    def _before_migrations(self, s: Any, have: int) -> None:
        """Files made before the one migration list: their version 1 lacks two things of
        version 1 here, and their version 2 (visit_days) is version 3 here once the
        resolve reorder buffer (version 2 here) exists too."""
        if have not in (1, 2):
            return
        done = s.execute("SELECT count(*) FROM information_schema.tables "
                         "WHERE table_name = 'resolve_cursors'").fetchone()
        if done and done[0]:
            return
        for stmt in DUCKDB_LEGACY_V1:
            s.execute(stmt)
        if have == 2:
            for stmt in migrations(self.dialect)[1][1]:
                s.execute(stmt)
            s.execute("INSERT INTO schema_version VALUES (?, ?)", [3, now_utc()])
