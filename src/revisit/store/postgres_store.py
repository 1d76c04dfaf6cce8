"""The distributed store: :class:`~revisit.store.sql_store.SQLStore` on PostgreSQL
(``store_url = "postgresql://..."``).

What this module adds to the shared store is the engine a shared server needs:

- one connection per thread (psycopg 3), a broken one (server restart) dropped so the next
  call reconnects; streamed reads on a server-side cursor of a connection of their own;
- bulk load with COPY into session temp tables, then one ``INSERT ... SELECT ... ON
  CONFLICT`` per table, in the caller's transaction;
- transaction-level advisory locks, so identity decisions and rollup refreshes are
  serialised across every process using the database (see docs/deploy.md);
- monthly ``sightings`` partitions created on demand, under a lock, so concurrent
  writers do not race on the catalogue; old months can be dropped or archived whole.

Sessions run in UTC; ``?`` placeholders of the common SQL become psycopg's ``%s`` (and a
literal ``%`` is doubled), the one spelling change (:mod:`revisit.store.dialect`).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

import psycopg
from psycopg import sql as psql

from revisit.postgres import ensure_database, parse_url
from revisit.store.base import QueryTimeout, budget_left
from revisit.store.dialect import POSTGRES, Dialect, PerThread
from revisit.store.sql_store import SQLStore


def _lock_key(*parts: str) -> int:
    """A stable signed 64-bit advisory-lock key."""
    h = zlib.crc32("\x1f".join(parts).encode()) << 32 | zlib.crc32("|".join(parts).encode())
    return h - (1 << 64) if h >= 1 << 63 else h


def _next_month(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def _pg(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class _Connection:
    """A thread's connection and the staging tables made on it."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self.staged: set[str] = set()


class PostgresSession:
    """:class:`revisit.store.dialect.Session` on a psycopg connection."""

    dialect: Dialect = POSTGRES

    def __init__(self, handle: _Connection, schema: str) -> None:
        self.conn = handle.conn
        self._handle = handle
        self._schema = schema

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[Any]:
        return self.conn.execute(_pg(sql), list(params))

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(_pg(sql), list(params)).rowcount

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
               on_conflict: str = "DO NOTHING") -> None:
        if not rows:
            return
        staged = f"_in_{table}"
        if staged not in self._handle.staged:
            self.conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staged} "
                              f"(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
            self._handle.staged.add(staged)
        cols = ", ".join(columns)
        with self.conn.cursor().copy(f"COPY {staged} ({cols}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        self.conn.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {staged} "
                          f"ON CONFLICT {on_conflict}")
        self.conn.execute(f"DELETE FROM {staged}")  # the same table may be loaded again

    def lock(self, *key: str) -> None:
        kind, *rest = key
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)",
                          [_lock_key(kind, self._schema, *rest)])


def _limit(conn: psycopg.Connection) -> None:
    """The rest of this thread's time budget as the transaction's statement_timeout."""
    left = budget_left()
    if left is not None:
        conn.execute(f"SET LOCAL statement_timeout = {max(1, int(left * 1000))}")


class PostgresEngine:
    """Connections and transactions of one PostgreSQL schema."""

    dialect: Dialect = POSTGRES

    def __init__(self, url: str, connect_timeout: int) -> None:
        self.conninfo, self.schema = parse_url(url)
        self.connect_timeout = connect_timeout
        self._conns = PerThread(lambda: _Connection(self.connect()), lambda h: h.conn.close(),
                                alive=lambda h: not h.conn.closed)
        ensure_database(self.conninfo, self.schema, connect_timeout)

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(
            self.conninfo, connect_timeout=self.connect_timeout, autocommit=False,
            options=f"-c search_path={self.schema} -c TimeZone=UTC",
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PostgresSession]:
        handle = self._conns.get()
        try:
            with handle.conn.transaction():
                _limit(handle.conn)
                yield PostgresSession(handle, self.schema)
        except psycopg.errors.QueryCanceled:
            raise QueryTimeout("the query ran past its time budget and was stopped") from None
        except psycopg.OperationalError:  # server restart: reconnect next time
            self._conns.drop()
            raise

    def read(self) -> contextlib.AbstractContextManager[PostgresSession]:
        return self.transaction()

    def stream(self, sql: str, params: Sequence[Any], chunk: int) -> Iterator[list[Any]]:
        with (
            self.connect() as conn,
            conn.transaction(),
            conn.cursor(name="revisit_stream") as cur,
        ):
            cur.itersize = chunk
            try:
                _limit(conn)
                cur.execute(_pg(sql), list(params))
                while rows := cur.fetchmany(chunk):
                    yield rows
                    _limit(conn)
            except psycopg.errors.QueryCanceled:
                raise QueryTimeout("the query ran past its time budget and was stopped") \
                    from None

    def ensure_partitions(self, months: set[date]) -> None:
        """Monthly partitions of ``sightings``, each ``[month, next month)``, created in a
        transaction of their own under a lock."""
        with self.connect() as conn:
            missing = {
                m for m in months
                if conn.execute("SELECT to_regclass(%s)", [
                    f"{self.schema}.sightings_{m.year:04d}_{m.month:02d}"]).fetchone()[0] is None
            }
            conn.commit()
            if not missing:
                return
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)",
                             [_lock_key("partitions", self.schema)])
                for m in sorted(missing):
                    conn.execute(psql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} PARTITION OF sightings "
                        "FOR VALUES FROM ({}) TO ({})").format(
                            psql.Identifier(f"sightings_{m.year:04d}_{m.month:02d}"),
                            psql.Literal(m.isoformat()),
                            psql.Literal(_next_month(m).isoformat())))

    def close(self) -> None:
        self._conns.close()


class PostgresStore(SQLStore):
    """The store on PostgreSQL: :class:`SQLStore` over a :class:`PostgresEngine`."""

    def __init__(self, url: str, *, connect_timeout: int = 10) -> None:
        self.url = url
        engine = PostgresEngine(url, connect_timeout)
        self.schema = engine.schema
        super().__init__(engine)

    def drop_schema(self) -> None:
        """Delete everything this store holds (tests, benchmarks)."""
        with self.engine.connect() as conn:
            conn.execute(psql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                psql.Identifier(self.schema)))
