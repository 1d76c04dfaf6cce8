"""The PostgreSQL sighting store: the distributed backend (``store_url = "postgresql://..."``).

Same contract and same behaviour as :mod:`revisit.store.duckdb_store` (both pass
``tests/store/test_contract.py``); what differs is what a shared server needs:

- **Time-partitioned sightings.** ``sightings`` is ``PARTITION BY RANGE (ts)`` with one
  partition per UTC month, created on demand (under an advisory lock, so concurrent
  writers do not race on the catalogue). Old months are dropped or archived whole.
  PostgreSQL requires the partition key in every unique key, so the primary key is
  (tenant, face_image_id, ts); ``face_image_id`` is a hash of (tenant, image id, bbox)
  and a face's ``ts`` is its frame's, so it is still one row per face.
- **Indexes that serve the report**: ``(tenant, ts) INCLUDE (location_id, camera_id,
  face_id)`` for the time-window scan (an index-only scan feeds the window function) and
  ``(tenant, face_id)`` for visitor detail / erasure.
- **Bulk ingestion with COPY**: each batch's rows are COPYed into session temp tables and
  moved with one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` per table, in ONE
  transaction, so a redelivered batch changes nothing.
- **Serialised identity decisions** (:meth:`identity_transaction`): a transaction-level
  advisory lock per tenant, a per-tenant ``identity_version`` (bumped by every resolve
  commit, so a resolver knows when its in-memory gallery is stale) and per-stream resolve
  cursors (so batches of one ingest stream are resolved in publication order, exactly
  once). See docs/deploy.md.
- Timestamps are ``timestamp`` (no zone) holding UTC, as in DuckDB; sessions run in UTC.
- One connection per thread; streamed reads use their own short-lived connection so the
  caller may use the store while iterating.
"""

from __future__ import annotations

import contextlib
import re
import threading
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql as psql

from revisit.postgres import ensure_database, parse_url
from revisit.records import Batch, Exemplar, Sighting
from revisit.report.query import ReportHeader, ReportQuery, ReportRow, SightingQuery
from revisit.report.sql import (
    SIGHTING_COLUMNS,
    header_from,
    naive_utc,
    report_sql,
    rollup_refresh_sql,
    rollup_rows_from_sightings,
    rollup_touched,
    row_from,
    sightings_sql,
)
from revisit.store.base import MergeRecord, VisitorDetail
from revisit.store.retention import purge_statements
from revisit.store.visitor_ids import visitor_number_or_zero

FETCH_ROWS = 10_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE tenants (
            tenant TEXT PRIMARY KEY,
            max_visitor_number BIGINT NOT NULL DEFAULT 0,
            identity_version BIGINT NOT NULL DEFAULT 0,
            created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE frames (
            tenant TEXT NOT NULL, image_id TEXT NOT NULL,
            camera_id TEXT NOT NULL, location_id TEXT NOT NULL,
            ts TIMESTAMP NOT NULL, faces INTEGER NOT NULL DEFAULT 0,
            processed_at TIMESTAMP NOT NULL,
            PRIMARY KEY (tenant, image_id))""",
        """CREATE TABLE sightings (
            tenant TEXT NOT NULL, face_image_id TEXT NOT NULL,
            face_id TEXT NOT NULL, image_id TEXT NOT NULL,
            camera_id TEXT NOT NULL, location_id TEXT NOT NULL,
            ts TIMESTAMP NOT NULL,
            bbox_x INTEGER, bbox_y INTEGER, bbox_w INTEGER, bbox_h INTEGER,
            quality REAL, match_score REAL,
            PRIMARY KEY (tenant, face_image_id, ts)) PARTITION BY RANGE (ts)""",
        "CREATE INDEX sightings_report ON sightings (tenant, ts) "
        "INCLUDE (location_id, camera_id, face_id)",
        "CREATE INDEX sightings_visitor ON sightings (tenant, face_id)",
        "CREATE INDEX sightings_face ON sightings (tenant, face_image_id)",
        """CREATE TABLE embeddings (
            tenant TEXT NOT NULL, face_image_id TEXT NOT NULL,
            embedding REAL[] NOT NULL,
            PRIMARY KEY (tenant, face_image_id))""",
        """CREATE TABLE visitors (
            tenant TEXT NOT NULL, visitor_id TEXT NOT NULL,
            created_at TIMESTAMP NOT NULL, first_seen TIMESTAMP, last_seen TIMESTAMP,
            PRIMARY KEY (tenant, visitor_id))""",
        """CREATE TABLE cameras (
            tenant TEXT NOT NULL, camera_id TEXT NOT NULL,
            location_id TEXT NOT NULL, name TEXT, first_seen TIMESTAMP,
            PRIMARY KEY (tenant, camera_id))""",
        """CREATE TABLE locations (
            tenant TEXT NOT NULL, location_id TEXT NOT NULL, name TEXT,
            timezone TEXT NOT NULL DEFAULT 'UTC', first_seen TIMESTAMP,
            PRIMARY KEY (tenant, location_id))""",
        """CREATE TABLE exemplars (
            tenant TEXT NOT NULL, visitor_id TEXT NOT NULL,
            face_image_id TEXT NOT NULL, embedding REAL[] NOT NULL,
            quality REAL, ts TIMESTAMP,
            PRIMARY KEY (tenant, face_image_id))""",
        "CREATE INDEX exemplars_visitor ON exemplars (tenant, visitor_id)",
        """CREATE TABLE aliases (
            tenant TEXT NOT NULL, alias_id TEXT NOT NULL,
            visitor_id TEXT NOT NULL, merged_at TIMESTAMP NOT NULL, reason TEXT,
            PRIMARY KEY (tenant, alias_id))""",
        "CREATE INDEX aliases_visitor ON aliases (tenant, visitor_id)",
        """CREATE TABLE merge_log (
            tenant TEXT NOT NULL, merge_id BIGINT NOT NULL,
            keep_id TEXT NOT NULL, absorb_id TEXT NOT NULL,
            merged_at TIMESTAMP NOT NULL, reason TEXT,
            repointed TEXT[] NOT NULL, split_at TIMESTAMP,
            PRIMARY KEY (tenant, merge_id))""",
        """CREATE TABLE erased (
            tenant TEXT NOT NULL, visitor_id TEXT NOT NULL,
            erased_at TIMESTAMP NOT NULL,
            PRIMARY KEY (tenant, visitor_id))""",
        """CREATE TABLE resolve_cursors (
            stream TEXT PRIMARY KEY, last_seq BIGINT NOT NULL,
            updated_at TIMESTAMP NOT NULL)""",
    ]),
]
MIGRATIONS.append((2, [
    # resolve reorder buffer: batches of a stream that arrived before their predecessor
    """CREATE TABLE resolve_parked (
        stream TEXT NOT NULL, seq BIGINT NOT NULL, payload BYTEA NOT NULL,
        parked_at TIMESTAMP NOT NULL, PRIMARY KEY (stream, seq))""",
]))
# Report rollup, as in the DuckDB store (report/sql.py ``rollup_cte``): one row per
# visitor, location and UTC day, kept by every write, backfilled from existing sightings.
# The key serves the per-batch delete and the report's day-range scan; the visitor
# index serves erasure.
MIGRATIONS.append((3, [
    """CREATE TABLE visit_days (
        tenant TEXT NOT NULL, face_id TEXT NOT NULL,
        location_id TEXT NOT NULL, day DATE NOT NULL,
        first_ts TIMESTAMP NOT NULL, last_ts TIMESTAMP NOT NULL,
        n BIGINT NOT NULL, visits BIGINT NOT NULL, cont BOOLEAN NOT NULL,
        PRIMARY KEY (tenant, day, location_id, face_id))""",
    "CREATE INDEX visit_days_visitor ON visit_days (tenant, face_id)",
    "INSERT INTO visit_days " + rollup_rows_from_sightings("true"),
]))
SCHEMA_VERSION = MIGRATIONS[-1][0]

_TEMP_TABLES = """
CREATE TEMP TABLE IF NOT EXISTS _in_frames (LIKE frames) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _in_sightings (LIKE sightings) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _in_embeddings (LIKE embeddings) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS _in_exemplars (LIKE exemplars) ON COMMIT DELETE ROWS;
"""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _aware(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.replace(tzinfo=UTC)


def _lock_key(*parts: str) -> int:
    """A stable signed 64-bit advisory-lock key."""
    h = zlib.crc32("\x1f".join(parts).encode()) << 32 | zlib.crc32("|".join(parts).encode())
    return h - (1 << 64) if h >= 1 << 63 else h


_EPOCH_US = re.compile(r"epoch_us\(([\w.]+)\)")
_MAKE_TIMESTAMP = re.compile(r"make_timestamp\(([\w.]+)\)")


def _pg_report_sql(sql: str) -> str:
    """The shared report SQL (DuckDB dialect) in PostgreSQL's: one source of truth for what
    a visit is, one spelling changed."""
    out = _EPOCH_US.sub(r"(extract(epoch FROM \1) * 1000000)::BIGINT", sql)
    out = _MAKE_TIMESTAMP.sub(r"(to_timestamp(\1 / 1000000.0) AT TIME ZONE 'UTC')", out)
    if "epoch_us(" in out or "make_timestamp(" in out or "list(" in out or "SEMI JOIN" in out:
        raise ValueError("report SQL uses a DuckDB function this translation does not know")
    if "%" in out:
        raise ValueError("report SQL contains '%'; cannot convert placeholders")
    return out.replace("?", "%s")


class ReportConnection:
    """A PostgreSQL connection that takes the shared report SQL's DuckDB dialect and ``?``
    placeholders (:func:`_pg_report_sql`), for report-side modules (store/summary.py)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Any = None) -> psycopg.Cursor[Any]:
        return self._conn.execute(_pg_report_sql(sql), params)


def _month_start(d: date) -> date:
    return date(d.year, d.month, 1)


def _next_month(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


class IdentityTransaction:
    """A resolve+write transaction holding the advisory locks of its tenants."""

    def __init__(self, store: PostgresStore, conn: psycopg.Connection) -> None:
        self.store = store
        self.conn = conn

    def lock_tenants(self, tenants: Iterable[str]) -> None:
        """Take the tenants' locks (call once per transaction: sorted, so no deadlocks)."""
        for t in sorted(set(tenants)):
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)",
                              [_lock_key("tenant", self.store.schema, t)])

    def park(self, stream: str, seq: int, payload: bytes) -> None:
        """Keep an encoded batch that arrived before its predecessor, durably, until its
        turn (the caller encodes: the store holds bytes, not the queue's format)."""
        self.conn.execute(
            "INSERT INTO resolve_parked VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [stream, seq, payload, _now()],
        )

    def unpark(self, stream: str, seq: int) -> bytes | None:
        row = self.conn.execute(
            "DELETE FROM resolve_parked WHERE stream = %s AND seq = %s RETURNING payload",
            [stream, seq],
        ).fetchone()
        return None if row is None else bytes(row[0])

    def version(self, tenant: str) -> int:
        row = self.conn.execute(
            "SELECT identity_version FROM tenants WHERE tenant = %s", [tenant]
        ).fetchone()
        return int(row[0]) if row else 0

    def last_seq(self, stream: str) -> int:
        row = self.conn.execute(
            "SELECT last_seq FROM resolve_cursors WHERE stream = %s", [stream]
        ).fetchone()
        return int(row[0]) if row else -1

    def write(self, batch: Batch) -> None:
        self.store._write_in(self.conn, batch)

    def advance(self, stream: str, seq: int) -> None:
        self.conn.execute(
            "INSERT INTO resolve_cursors VALUES (%s, %s, %s) ON CONFLICT (stream) DO UPDATE "
            "SET last_seq = greatest(resolve_cursors.last_seq, excluded.last_seq), "
            "updated_at = excluded.updated_at",
            [stream, seq, _now()],
        )

    def bump(self, tenants: Iterable[str]) -> None:
        names = sorted(set(tenants))
        if names:
            self.conn.execute(
                "INSERT INTO tenants (tenant, created_at, identity_version) "
                "SELECT unnest(%s::text[]), %s, 1 ON CONFLICT (tenant) DO UPDATE "
                "SET identity_version = tenants.identity_version + 1",
                [names, _now()],
            )


class PostgresStore:
    """:class:`revisit.store.base.SightingStore` on PostgreSQL (psycopg 3)."""

    def __init__(self, url: str, *, connect_timeout: int = 10) -> None:
        self.url = url
        self.conninfo, self.schema = parse_url(url)
        self.connect_timeout = connect_timeout
        self._local = threading.local()
        self._lock = threading.RLock()
        self._conns: list[psycopg.Connection] = []
        self._partitions: set[date] = set()
        self._closed = False
        # Reports read the visit_days rollup when it can answer them (same numbers as the
        # raw query, tested); False forces the raw sessionisation (tests, benchmarks).
        self.use_rollup = True
        self._ensure_database()
        self._migrate()

    # --- plumbing -------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(
            self.conninfo, connect_timeout=self.connect_timeout, autocommit=False,
            options=f"-c search_path={self.schema} -c TimeZone=UTC",
        )
        return conn

    def _ensure_database(self) -> None:
        ensure_database(self.conninfo, self.schema, self.connect_timeout)

    def _conn(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn.closed:
            conn = None
        if conn is None:
            if self._closed:
                raise RuntimeError("store is closed")
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[psycopg.Connection]:
        """A transaction on this thread's connection; a broken connection (server restart)
        is dropped so the next call reconnects."""
        conn = self._conn()
        try:
            with conn.transaction():
                yield conn
        except psycopg.OperationalError:
            with contextlib.suppress(Exception):
                conn.close()
            self._local.conn = None
            raise

    def _query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self._tx() as conn:
            return conn.execute(sql, params).fetchall()

    def _migrate(self) -> None:
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_key("migrate", self.schema)])
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
            )
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
            have = int(row[0]) if row else 0
            for version, statements in MIGRATIONS:
                if version <= have:
                    continue
                for stmt in statements:
                    conn.execute(_pg_report_sql(stmt) if "epoch_us(" in stmt else stmt)
                conn.execute("INSERT INTO schema_version VALUES (%s, %s)", [version, _now()])

    def schema_version(self) -> int:
        return int(self._query("SELECT coalesce(max(version), 0) FROM schema_version")[0][0])

    def _stream(self, sql: str, params: Any, chunk: int = FETCH_ROWS) -> Iterator[list[Any]]:
        """Rows in chunks from a server-side cursor on a private connection."""
        with (
            self._connect() as conn,
            conn.transaction(),
            conn.cursor(name="revisit_stream") as cur,
        ):
            cur.itersize = chunk
            cur.execute(sql, params)
            while rows := cur.fetchmany(chunk):
                yield rows

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for conn in self._conns:
                with contextlib.suppress(Exception):
                    conn.close()
            self._conns.clear()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drop_schema(self) -> None:
        """Delete everything this store holds (tests, benchmarks)."""
        with self._tx() as conn:
            conn.execute(psql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                psql.Identifier(self.schema)))

    # --- ingest side ----------------------------------------------------------------

    def known_frames(self, tenant: str, image_ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(image_ids))
        if not ids:
            return set()
        rows = self._query(
            "SELECT image_id FROM frames WHERE tenant = %s AND image_id = ANY(%s)", [tenant, ids]
        )
        return {r[0] for r in rows}

    def existing_sightings(self, tenant: str, face_image_ids: Iterable[str]) -> dict[str, str]:
        ids = list(dict.fromkeys(face_image_ids))
        if not ids:
            return {}
        rows = self._query(
            "SELECT s.face_image_id, coalesce(a.visitor_id, s.face_id) FROM sightings s "
            "LEFT JOIN aliases a ON a.tenant = s.tenant AND a.alias_id = s.face_id "
            "WHERE s.tenant = %s AND s.face_image_id = ANY(%s)",
            [tenant, ids],
        )
        return {r[0]: r[1] for r in rows}

    def write(self, batch: Batch) -> None:
        """One transaction; idempotent."""
        self.prepare(batch)
        with self._tx() as conn:
            self._write_in(conn, batch)

    @contextlib.contextmanager
    def identity_transaction(
        self, tenants: Iterable[str] = (), stream: str | None = None
    ) -> Iterator[IdentityTransaction]:
        """One transaction holding advisory locks: the stream's first (if any), then the
        tenants' (here or via :meth:`IdentityTransaction.lock_tenants`), always in that
        order, so resolvers cannot deadlock. Resolution decisions made inside and written
        with :meth:`IdentityTransaction.write` are serialised per tenant across every
        process using this database."""
        with self._tx() as conn:
            if stream is not None:
                conn.execute("SELECT pg_advisory_xact_lock(%s)",
                             [_lock_key("stream", self.schema, stream)])
            tx = IdentityTransaction(self, conn)
            names = list(tenants)
            if names:
                tx.lock_tenants(names)
            yield tx

    def prepare(self, batch: Batch) -> None:
        """Create what writing ``batch`` needs outside any transaction (monthly partitions):
        call before :meth:`identity_transaction`, whose locks a DDL would wait behind."""
        self._ensure_partitions(batch)

    def _write_in(self, conn: psycopg.Connection, batch: Batch) -> None:
        self._ensure_partitions(batch)
        conn.execute(_TEMP_TABLES)
        self._write_frames(conn, batch)
        self._write_places(conn, batch)
        sightings, redelivered = self._write_sightings(conn, batch)
        self._write_visitors(conn, batch, sightings)
        self._write_rollup(conn, sightings, redelivered)
        self._write_exemplars(conn, batch, redelivered)

    def _write_rollup(
        self, conn: psycopg.Connection, sightings: list[Sighting],
        redelivered: set[tuple[str, str]],
    ) -> None:
        """Recompute the ``visit_days`` rows the new sightings touch, as the DuckDB store
        does. A per-tenant lock serialises this between writers: each recomputation then
        sees every sighting committed before it (READ COMMITTED takes a fresh snapshot per
        statement), and two writers never insert the same row."""
        touched = rollup_touched(sightings, redelivered)
        if touched is None:
            return
        for tenant in touched.tenants:
            conn.execute("SELECT pg_advisory_xact_lock(%s)",
                         [_lock_key("rollup", self.schema, tenant)])
        delete, insert = rollup_refresh_sql()
        conn.execute(_pg_report_sql(delete), touched.delete_params)
        conn.execute(_pg_report_sql(insert), touched.insert_params)

    def rebuild_rollup(self, tenant: str | None = None) -> None:
        """Recompute ``visit_days`` from the sightings (all tenants or one), e.g. after a
        bulk load that bypassed :meth:`write`."""
        with self._tx() as conn:
            if tenant is None:
                conn.execute("DELETE FROM visit_days")
                conn.execute(_pg_report_sql("INSERT INTO visit_days "
                                            + rollup_rows_from_sightings("true")))
            else:
                conn.execute("SELECT pg_advisory_xact_lock(%s)",
                             [_lock_key("rollup", self.schema, tenant)])
                conn.execute("DELETE FROM visit_days WHERE tenant = %s", [tenant])
                conn.execute(_pg_report_sql("INSERT INTO visit_days "
                                            + rollup_rows_from_sightings("s.tenant = ?")),
                             [tenant])

    def _ensure_partitions(self, batch: Batch) -> None:
        """Monthly partitions for the batch's sightings, created in their own transaction."""
        items: list[Any] = [*batch.sightings, *batch.faces]
        months = {_month_start(naive_utc(s.ts).date()) for s in items}
        missing = months - self._partitions
        if not missing:
            return
        with self._connect() as conn:
            exists = {
                m for m in missing
                if conn.execute("SELECT to_regclass(%s)", [
                    f"{self.schema}.sightings_{m.year:04d}_{m.month:02d}"]).fetchone()[0]
            }
            conn.commit()
        self._partitions |= exists
        missing -= exists
        if not missing:
            return
        with self._connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)",
                         [_lock_key("partitions", self.schema)])
            for m in sorted(missing):
                name = f"sightings_{m.year:04d}_{m.month:02d}"
                conn.execute(psql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} PARTITION OF sightings "
                    "FOR VALUES FROM ({}) TO ({})").format(
                        psql.Identifier(name), psql.Literal(m.isoformat()),
                        psql.Literal(_next_month(m).isoformat())))
        self._partitions |= missing

    @staticmethod
    def _copy(conn: psycopg.Connection, table: str, rows: list[tuple[Any, ...]]) -> None:
        with conn.cursor().copy(f"COPY {table} FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)

    def _write_frames(self, conn: psycopg.Connection, batch: Batch) -> None:
        if not batch.frames:
            return
        faces = Counter((f.tenant, f.image_id) for f in batch.faces)
        seen = Counter((s.tenant, s.image_id) for s in batch.sightings)
        now = _now()
        rows = [
            (fr.tenant, fr.image_id, fr.camera_id, fr.location_id, naive_utc(fr.ts),
             max(faces[(fr.tenant, fr.image_id)], seen[(fr.tenant, fr.image_id)]), now)
            for fr in batch.frames
        ]
        self._copy(conn, "_in_frames", rows)
        conn.execute("INSERT INTO frames SELECT * FROM _in_frames ON CONFLICT DO NOTHING")

    def _write_places(self, conn: psycopg.Connection, batch: Batch) -> None:
        cams: dict[tuple[str, str], tuple[str, datetime]] = {}
        locs: dict[tuple[str, str], datetime] = {}
        items: list[Any] = [*batch.frames, *batch.sightings]
        for it in items:
            ts = naive_utc(it.ts)
            ck = (it.tenant, it.camera_id)
            if ck not in cams or ts < cams[ck][1]:
                cams[ck] = (it.location_id, ts)
            lk = (it.tenant, it.location_id)
            if lk not in locs or ts < locs[lk]:
                locs[lk] = ts
        if cams:
            keys = sorted(cams)
            conn.execute(
                "INSERT INTO cameras (tenant, camera_id, location_id, first_seen) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamp[]) "
                "ON CONFLICT DO NOTHING",
                [[k[0] for k in keys], [k[1] for k in keys],
                 [cams[k][0] for k in keys], [cams[k][1] for k in keys]],
            )
        if locs:
            keys = sorted(locs)
            conn.execute(
                "INSERT INTO locations (tenant, location_id, first_seen) "
                "SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamp[]) "
                "ON CONFLICT DO NOTHING",
                [[k[0] for k in keys], [k[1] for k in keys], [locs[k] for k in keys]],
            )

    @staticmethod
    def _erased(conn: psycopg.Connection, tenant: str, ids: Iterable[str]) -> set[str]:
        ids = list(set(ids))
        if not ids:
            return set()
        rows = conn.execute(
            "SELECT visitor_id FROM erased WHERE tenant = %s AND visitor_id = ANY(%s)",
            [tenant, ids],
        ).fetchall()
        return {r[0] for r in rows}

    def _write_sightings(
        self, conn: psycopg.Connection, batch: Batch
    ) -> tuple[list[Sighting], set[tuple[str, str]]]:
        if not batch.sightings:
            return [], set()
        by_tenant: dict[str, list[Sighting]] = defaultdict(list)
        for s in batch.sightings:
            by_tenant[s.tenant].append(s)
        kept: list[Sighting] = []
        redelivered: set[tuple[str, str]] = set()
        for tenant, group in by_tenant.items():
            erased = self._erased(conn, tenant, (s.face_id for s in group))
            live = [s for s in group if s.face_id not in erased]
            if not live:
                continue
            rows = conn.execute(
                "SELECT face_image_id FROM sightings WHERE tenant = %s "
                "AND face_image_id = ANY(%s)", [tenant, [s.face_image_id for s in live]],
            ).fetchall()
            redelivered.update((tenant, r[0]) for r in rows)
            kept.extend(live)
        if not kept:
            return [], redelivered
        self._copy(conn, "_in_sightings", [
            (s.tenant, s.face_image_id, s.face_id, s.image_id, s.camera_id, s.location_id,
             naive_utc(s.ts), int(s.bbox[0]), int(s.bbox[1]), int(s.bbox[2]), int(s.bbox[3]),
             float(s.quality), float(s.match_score))
            for s in kept
        ])
        conn.execute("INSERT INTO sightings SELECT * FROM _in_sightings ON CONFLICT DO NOTHING")
        with_emb = [s for s in kept if s.embedding is not None]
        if with_emb:
            self._copy(conn, "_in_embeddings", [
                (s.tenant, s.face_image_id, np.asarray(s.embedding, dtype=np.float32).tolist())
                for s in with_emb
            ])
            conn.execute(
                "INSERT INTO embeddings SELECT * FROM _in_embeddings ON CONFLICT DO NOTHING"
            )
        return kept, redelivered

    def _write_visitors(
        self, conn: psycopg.Connection, batch: Batch, sightings: list[Sighting]
    ) -> None:
        """Upsert visitors (first/last seen widen only) and each tenant's id counter, which
        only ever grows (``greatest``), atomically in the row."""
        span: dict[tuple[str, str], list[datetime]] = {}
        for tenant, vid, ts in batch.visitors_created:
            t = naive_utc(ts)
            span.setdefault((tenant, vid), [t, t])
        for s in sightings:
            t = naive_utc(s.ts)
            cur_span = span.setdefault((s.tenant, s.face_id), [t, t])
            cur_span[0] = min(cur_span[0], t)
            cur_span[1] = max(cur_span[1], t)
        tenants = {s.tenant for s in batch.sightings} | {f.tenant for f in batch.frames}
        tenants |= {t for t, _, _ in batch.visitors_created}
        for tenant in {k[0] for k in span}:
            for vid in self._erased(conn, tenant, (k[1] for k in span if k[0] == tenant)):
                span.pop((tenant, vid), None)
        now = _now()
        if span:
            keys = sorted(span)
            conn.execute(
                "INSERT INTO visitors SELECT * FROM unnest(%s::text[], %s::text[], "
                "%s::timestamp[], %s::timestamp[], %s::timestamp[]) "
                "ON CONFLICT (tenant, visitor_id) DO UPDATE SET "
                "first_seen = least(visitors.first_seen, excluded.first_seen), "
                "last_seen = greatest(visitors.last_seen, excluded.last_seen)",
                [[k[0] for k in keys], [k[1] for k in keys], [now] * len(keys),
                 [span[k][0] for k in keys], [span[k][1] for k in keys]],
            )
        top: dict[str, int] = dict.fromkeys(tenants, 0)
        for tenant, vid in span:
            top[tenant] = max(top.get(tenant, 0), visitor_number_or_zero(vid))
        if top:
            names = sorted(top)
            conn.execute(
                "INSERT INTO tenants (tenant, max_visitor_number, created_at) "
                "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::timestamp[]) "
                "ON CONFLICT (tenant) DO UPDATE SET max_visitor_number = "
                "greatest(tenants.max_visitor_number, excluded.max_visitor_number)",
                [names, [top[n] for n in names], [now] * len(names)],
            )

    def _write_exemplars(
        self, conn: psycopg.Connection, batch: Batch, redelivered: set[tuple[str, str]]
    ) -> None:
        added = [
            e for e in batch.exemplars_added if (e.tenant, e.face_image_id) not in redelivered
        ]
        if added:
            erased_by_tenant = {
                t: self._erased(conn, t, (e.visitor_id for e in added if e.tenant == t))
                for t in {e.tenant for e in added}
            }
            added = [e for e in added if e.visitor_id not in erased_by_tenant[e.tenant]]
        if added:
            self._copy(conn, "_in_exemplars", [
                (e.tenant, e.visitor_id, e.face_image_id,
                 np.asarray(e.embedding, dtype=np.float32).tolist(), float(e.quality),
                 naive_utc(e.ts))
                for e in added
            ])
            conn.execute(
                "INSERT INTO exemplars SELECT * FROM _in_exemplars ON CONFLICT DO NOTHING"
            )
        dropped: dict[str, list[str]] = defaultdict(list)
        for tenant, fid in batch.exemplars_dropped:
            dropped[tenant].append(fid)
        for tenant, fids in dropped.items():
            conn.execute(
                "DELETE FROM exemplars WHERE tenant = %s AND face_image_id = ANY(%s)",
                [tenant, fids],
            )

    def load_exemplars(self, tenant: str, chunk: int = FETCH_ROWS) -> Iterator[list[Exemplar]]:
        for rows in self._stream(
            "SELECT coalesce(a.visitor_id, e.visitor_id), e.face_image_id, e.embedding, "
            "e.quality, e.ts FROM exemplars e LEFT JOIN aliases a "
            "ON a.tenant = e.tenant AND a.alias_id = e.visitor_id "
            "WHERE e.tenant = %s ORDER BY e.visitor_id, e.face_image_id",
            [tenant], chunk,
        ):
            yield [
                Exemplar(
                    tenant=tenant, visitor_id=r[0], face_image_id=r[1],
                    embedding=np.asarray(r[2], dtype=np.float32), quality=float(r[3]),
                    ts=_aware(r[4]) or _EPOCH,
                )
                for r in rows
            ]

    def load_embeddings(
        self, tenant: str, chunk: int = FETCH_ROWS
    ) -> Iterator[list[tuple[str, str, np.ndarray]]]:
        for rows in self._stream(
            "SELECT s.face_image_id, coalesce(a.visitor_id, s.face_id), m.embedding "
            "FROM embeddings m JOIN sightings s "
            "ON s.tenant = m.tenant AND s.face_image_id = m.face_image_id "
            "LEFT JOIN aliases a ON a.tenant = s.tenant AND a.alias_id = s.face_id "
            "WHERE m.tenant = %s ORDER BY s.ts, s.face_image_id",
            [tenant], chunk,
        ):
            yield [(r[0], r[1], np.asarray(r[2], dtype=np.float32)) for r in rows]

    def tenants(self) -> list[str]:
        return [r[0] for r in self._query("SELECT tenant FROM tenants ORDER BY tenant")]

    def max_visitor_number(self, tenant: str) -> int:
        rows = self._query("SELECT max_visitor_number FROM tenants WHERE tenant = %s", [tenant])
        return int(rows[0][0]) if rows else 0

    def parked_streams(self) -> list[str]:
        """Streams with batches waiting in the resolve reorder buffer."""
        return [r[0] for r in self._query("SELECT DISTINCT stream FROM resolve_parked")]

    def identity_version(self, tenant: str) -> int:
        rows = self._query("SELECT identity_version FROM tenants WHERE tenant = %s", [tenant])
        return int(rows[0][0]) if rows else 0

    def stats(self, tenant: str) -> dict[str, int]:
        out = {}
        with self._tx() as conn:
            for table in ("frames", "sightings", "embeddings", "visitors", "exemplars",
                          "aliases", "cameras", "locations", "erased"):
                row = conn.execute(
                    f"SELECT count(*) FROM {table} WHERE tenant = %s", [tenant]
                ).fetchone()
                out[table] = int(row[0]) if row else 0
        return out

    # --- report side ----------------------------------------------------------------

    @contextlib.contextmanager
    def report_connection(self) -> Iterator[ReportConnection]:
        """Read-side SQL in the report's dialect (the dashboard summary)."""
        with self._tx() as conn:
            yield ReportConnection(conn)

    def _has_aliases(self, tenant: str) -> bool:
        return bool(self._query("SELECT 1 FROM aliases WHERE tenant = %s LIMIT 1", [tenant]))

    def _report_sql(self, query: ReportQuery, rows: bool) -> tuple[str, list[Any]]:
        sql, params = report_sql(query, rows=rows, aliases=self._has_aliases(query.tenant),
                                 rollup=self.use_rollup)
        return _pg_report_sql(sql), params

    def report_header(self, query: ReportQuery) -> ReportHeader:
        records = self._query(*self._report_sql(query, rows=False))
        return header_from(query, records[0] if records else None)

    def report_rows(self, query: ReportQuery) -> Iterator[ReportRow]:
        for records in self._stream(*self._report_sql(query, rows=True)):
            for record in records:
                yield row_from(record)

    def sightings(self, query: SightingQuery) -> Iterator[dict[str, Any]]:
        sql, params = sightings_sql(query)
        for rows in self._stream(_pg_report_sql(sql), params):
            for row in rows:
                d = dict(zip(SIGHTING_COLUMNS, row, strict=True))
                d["ts"] = d["ts"].replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
                for k in ("quality", "match_score"):
                    if d[k] is not None:
                        d[k] = round(float(d[k]), 6)
                yield d

    # --- identity maintenance -------------------------------------------------------

    def canonical_id(self, tenant: str, visitor_id: str) -> str:
        with self._tx() as conn:
            return self._canonical(conn, tenant, visitor_id)

    @staticmethod
    def _canonical(conn: psycopg.Connection, tenant: str, visitor_id: str) -> str:
        row = conn.execute(
            "SELECT visitor_id FROM aliases WHERE tenant = %s AND alias_id = %s",
            [tenant, visitor_id],
        ).fetchone()
        return row[0] if row else visitor_id

    @staticmethod
    def _visitor_exists(conn: psycopg.Connection, tenant: str, visitor_id: str) -> bool:
        return conn.execute(
            "SELECT 1 FROM visitors WHERE tenant = %s AND visitor_id = %s", [tenant, visitor_id]
        ).fetchone() is not None

    def _maintenance(self, tenant: str, fn: Any) -> Any:
        """Merges/splits/erasure take the tenant's lock: they change identities, like a
        resolver does, and bump ``identity_version`` so resolvers reload their gallery."""
        with self.identity_transaction([tenant]) as tx:
            out = fn(tx.conn)
            tx.bump([tenant])
            return out

    def merge_visitors(self, tenant: str, keep: str, absorb: str, reason: str = "") -> MergeRecord:
        def run(conn: psycopg.Connection) -> MergeRecord:
            k = self._canonical(conn, tenant, keep)
            a = self._canonical(conn, tenant, absorb)
            for vid in (k, a):
                if not self._visitor_exists(conn, tenant, vid):
                    raise KeyError(f"no visitor {vid} in tenant {tenant}")
            if k == a:
                raise ValueError(f"{absorb} and {keep} are already the same visitor ({k})")
            repointed = [r[0] for r in conn.execute(
                "SELECT alias_id FROM aliases WHERE tenant = %s AND visitor_id = %s "
                "ORDER BY alias_id", [tenant, a]).fetchall()]
            now = _now()
            conn.execute(
                "UPDATE aliases SET visitor_id = %s WHERE tenant = %s AND visitor_id = %s",
                [k, tenant, a],
            )
            conn.execute("INSERT INTO aliases VALUES (%s, %s, %s, %s, %s)",
                         [tenant, a, k, now, reason])
            row = conn.execute(
                "SELECT coalesce(max(merge_id), 0) + 1 FROM merge_log WHERE tenant = %s",
                [tenant],
            ).fetchone()
            merge_id = int(row[0]) if row else 1
            conn.execute(
                "INSERT INTO merge_log VALUES (%s, %s, %s, %s, %s, %s, %s::text[], NULL)",
                [tenant, merge_id, k, a, now, reason, repointed],
            )
            return MergeRecord(merge_id, tenant, k, a, _aware(now) or _EPOCH, reason)

        return self._maintenance(tenant, run)

    def split_visitor(self, tenant: str, merged_id: str) -> MergeRecord:
        def run(conn: psycopg.Connection) -> MergeRecord:
            row = conn.execute(
                "SELECT merge_id, keep_id, merged_at, reason, repointed FROM merge_log "
                "WHERE tenant = %s AND absorb_id = %s AND split_at IS NULL",
                [tenant, merged_id],
            ).fetchone()
            if row is None:
                absorbed = [r[0] for r in conn.execute(
                    "SELECT alias_id FROM aliases WHERE tenant = %s AND visitor_id = %s "
                    "ORDER BY alias_id", [tenant, merged_id]).fetchall()]
                hint = f"; ids merged into it: {', '.join(absorbed)}" if absorbed else ""
                raise ValueError(f"{merged_id} is not merged into another visitor{hint}")
            merge_id, keep_id, merged_at, reason, repointed = row
            group = self._canonical(conn, tenant, merged_id)
            conn.execute("DELETE FROM aliases WHERE tenant = %s AND alias_id = %s",
                         [tenant, merged_id])
            if repointed:
                conn.execute(
                    "UPDATE aliases SET visitor_id = %s WHERE tenant = %s AND visitor_id = %s "
                    "AND alias_id = ANY(%s) AND alias_id IN ("
                    "  SELECT absorb_id FROM merge_log WHERE tenant = %s AND split_at IS NULL "
                    "  AND merge_id < %s)",
                    [merged_id, tenant, group, list(repointed), tenant, merge_id],
                )
            now = _now()
            conn.execute(
                "UPDATE merge_log SET split_at = %s WHERE tenant = %s AND merge_id = %s",
                [now, tenant, merge_id],
            )
            return MergeRecord(
                int(merge_id), tenant, keep_id, merged_id, _aware(merged_at) or _EPOCH,
                reason or "", _aware(now),
            )

        return self._maintenance(tenant, run)

    def merges(self, tenant: str) -> list[MergeRecord]:
        rows = self._query(
            "SELECT merge_id, keep_id, absorb_id, merged_at, reason, split_at FROM merge_log "
            "WHERE tenant = %s ORDER BY merge_id", [tenant]
        )
        return [
            MergeRecord(int(r[0]), tenant, r[1], r[2], _aware(r[3]) or _EPOCH, r[4] or "",
                        _aware(r[5]))
            for r in rows
        ]

    def erase_visitor(self, tenant: str, visitor_id: str) -> dict[str, int]:
        def run(conn: psycopg.Connection) -> dict[str, int]:
            canon = self._canonical(conn, tenant, visitor_id)
            group = [canon] + [r[0] for r in conn.execute(
                "SELECT alias_id FROM aliases WHERE tenant = %s AND visitor_id = %s",
                [tenant, canon]).fetchall()]
            known = conn.execute(
                "SELECT count(*) FROM visitors WHERE tenant = %s AND visitor_id = ANY(%s)",
                [tenant, group]).fetchone()
            if not known or not known[0]:
                raise KeyError(f"no visitor {visitor_id} in tenant {tenant}")
            counts: dict[str, int] = {}

            def delete(name: str, sql: str, params: list[Any]) -> None:
                cur = conn.execute(sql, params)
                counts[name] = cur.rowcount

            delete("embeddings",
                   "DELETE FROM embeddings WHERE tenant = %s AND face_image_id IN ("
                   "SELECT face_image_id FROM sightings WHERE tenant = %s "
                   "AND face_id = ANY(%s))", [tenant, tenant, group])
            delete("sightings",
                   "DELETE FROM sightings WHERE tenant = %s AND face_id = ANY(%s)",
                   [tenant, group])
            conn.execute("DELETE FROM visit_days WHERE tenant = %s AND face_id = ANY(%s)",
                         [tenant, group])
            delete("exemplars",
                   "DELETE FROM exemplars WHERE tenant = %s AND visitor_id = ANY(%s)",
                   [tenant, group])
            delete("aliases",
                   "DELETE FROM aliases WHERE tenant = %s AND alias_id = ANY(%s)",
                   [tenant, group])
            delete("merge_log",
                   "DELETE FROM merge_log WHERE tenant = %s AND (keep_id = ANY(%s) "
                   "OR absorb_id = ANY(%s))", [tenant, group, group])
            delete("visitors",
                   "DELETE FROM visitors WHERE tenant = %s AND visitor_id = ANY(%s)",
                   [tenant, group])
            conn.execute(
                "INSERT INTO erased SELECT %s, unnest(%s::text[]), %s ON CONFLICT DO NOTHING",
                [tenant, group, _now()],
            )
            return counts

        return self._maintenance(tenant, run)

    def visitor_face_ids(self, tenant: str, visitor_id: str) -> set[str]:
        with self._tx() as conn:
            canon = self._canonical(conn, tenant, visitor_id)
            rows = conn.execute(
                "SELECT s.face_image_id FROM sightings s LEFT JOIN aliases a "
                "ON a.tenant = s.tenant AND a.alias_id = s.face_id "
                "WHERE s.tenant = %s AND coalesce(a.visitor_id, s.face_id) = %s",
                [tenant, canon]).fetchall()
            return {r[0] for r in rows}

    def purge_before(self, tenant: str, cutoff: datetime) -> tuple[dict[str, int], list[str]]:
        def run(conn: psycopg.Connection) -> tuple[dict[str, int], list[str]]:
            dropped = [r[0] for r in conn.execute(
                "SELECT face_image_id FROM exemplars WHERE tenant = %s AND ts < %s",
                [tenant, cutoff]).fetchall()]
            counts = {name: conn.execute(sql, params).rowcount
                      for name, sql, params in purge_statements(tenant, cutoff, "%s")}
            conn.execute("SELECT pg_advisory_xact_lock(%s)",
                         [_lock_key("rollup", self.schema, tenant)])
            conn.execute("DELETE FROM visit_days WHERE tenant = %s", [tenant])
            conn.execute(_pg_report_sql("INSERT INTO visit_days "
                                        + rollup_rows_from_sightings("s.tenant = ?")), [tenant])
            return counts, dropped

        return self._maintenance(tenant, run)

    def visitor_detail(self, tenant: str, visitor_id: str) -> VisitorDetail | None:
        with self._tx() as conn:
            canon = self._canonical(conn, tenant, visitor_id)
            if not self._visitor_exists(conn, tenant, canon):
                return None
            aliases = [r[0] for r in conn.execute(
                "SELECT alias_id FROM aliases WHERE tenant = %s AND visitor_id = %s "
                "ORDER BY alias_id", [tenant, canon]).fetchall()]
            group = [canon, *aliases]
            locs = conn.execute(
                "SELECT location_id, count(*), min(ts), max(ts) FROM sightings "
                "WHERE tenant = %s AND face_id = ANY(%s) GROUP BY location_id "
                "ORDER BY location_id", [tenant, group]).fetchall()
            ex = conn.execute(
                "SELECT count(*), avg(quality), max(quality) FROM exemplars WHERE tenant = %s "
                "AND visitor_id = ANY(%s)", [tenant, group]).fetchone()
        return VisitorDetail(
            visitor_id=canon,
            aliases=tuple(aliases),
            sightings=sum(int(r[1]) for r in locs),
            locations={r[0]: int(r[1]) for r in locs},
            first_seen=_aware(min(r[2] for r in locs)) if locs else None,
            last_seen=_aware(max(r[3] for r in locs)) if locs else None,
            exemplars=int(ex[0]) if ex else 0,
            exemplar_quality_mean=float(ex[1]) if ex and ex[1] is not None else None,
            exemplar_quality_max=float(ex[2]) if ex and ex[2] is not None else None,
        )
