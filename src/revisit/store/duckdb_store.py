"""The embedded sighting store: one DuckDB file, the default backend.

Why DuckDB: the report is a scan + window + aggregate over many millions of rows, which a
columnar engine does in seconds on a laptop (see design notes), and it is one file with no
server to run.

Conventions:
- every table carries ``tenant``; keys are (tenant, natural id);
- timestamps are UTC ``TIMESTAMP`` (no zone): converted on the way in and out, so the
  session time zone never matters;
- a batch is written in ONE transaction with ``INSERT ... ON CONFLICT DO NOTHING`` on
  natural keys, so a redelivered batch changes nothing;
- bulk inserts pass one list per column and ``unnest`` them side by side: one statement
  per table instead of one per row;
- merges are aliases (absorbed id -> canonical id, kept flat: an alias always points at a
  canonical id); reports resolve every sighting through them, nothing is rewritten;
- one DuckDB cursor per thread (the pipeline writes, reports read concurrently); writes
  are serialised by a lock; streamed results use their own cursor so a caller may query
  the store while iterating.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

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

FETCH_ROWS = 10_000  # rows per fetchmany: bounded memory however large the report
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Migrations: (version, statements). Append new versions; never edit an applied one.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        """CREATE TABLE tenants (
            tenant VARCHAR PRIMARY KEY,
            max_visitor_number BIGINT NOT NULL DEFAULT 0,
            created_at TIMESTAMP NOT NULL)""",
        """CREATE TABLE frames (
            tenant VARCHAR NOT NULL, image_id VARCHAR NOT NULL,
            camera_id VARCHAR NOT NULL, location_id VARCHAR NOT NULL,
            ts TIMESTAMP NOT NULL, faces INTEGER NOT NULL DEFAULT 0,
            processed_at TIMESTAMP NOT NULL,
            PRIMARY KEY (tenant, image_id))""",
        """CREATE TABLE sightings (
            tenant VARCHAR NOT NULL, face_image_id VARCHAR NOT NULL,
            face_id VARCHAR NOT NULL, image_id VARCHAR NOT NULL,
            camera_id VARCHAR NOT NULL, location_id VARCHAR NOT NULL,
            ts TIMESTAMP NOT NULL,
            bbox_x INTEGER, bbox_y INTEGER, bbox_w INTEGER, bbox_h INTEGER,
            quality REAL, match_score REAL,
            PRIMARY KEY (tenant, face_image_id))""",
        """CREATE TABLE embeddings (
            tenant VARCHAR NOT NULL, face_image_id VARCHAR NOT NULL,
            embedding FLOAT[] NOT NULL,
            PRIMARY KEY (tenant, face_image_id))""",
        """CREATE TABLE visitors (
            tenant VARCHAR NOT NULL, visitor_id VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL, first_seen TIMESTAMP, last_seen TIMESTAMP,
            PRIMARY KEY (tenant, visitor_id))""",
        """CREATE TABLE cameras (
            tenant VARCHAR NOT NULL, camera_id VARCHAR NOT NULL,
            location_id VARCHAR NOT NULL, name VARCHAR, first_seen TIMESTAMP,
            PRIMARY KEY (tenant, camera_id))""",
        """CREATE TABLE locations (
            tenant VARCHAR NOT NULL, location_id VARCHAR NOT NULL, name VARCHAR,
            timezone VARCHAR NOT NULL DEFAULT 'UTC', first_seen TIMESTAMP,
            PRIMARY KEY (tenant, location_id))""",
        """CREATE TABLE exemplars (
            tenant VARCHAR NOT NULL, visitor_id VARCHAR NOT NULL,
            face_image_id VARCHAR NOT NULL, embedding FLOAT[] NOT NULL,
            quality REAL, ts TIMESTAMP,
            PRIMARY KEY (tenant, face_image_id))""",
        """CREATE TABLE aliases (
            tenant VARCHAR NOT NULL, alias_id VARCHAR NOT NULL,
            visitor_id VARCHAR NOT NULL, merged_at TIMESTAMP NOT NULL, reason VARCHAR,
            PRIMARY KEY (tenant, alias_id))""",
        """CREATE TABLE merge_log (
            tenant VARCHAR NOT NULL, merge_id BIGINT NOT NULL,
            keep_id VARCHAR NOT NULL, absorb_id VARCHAR NOT NULL,
            merged_at TIMESTAMP NOT NULL, reason VARCHAR,
            repointed VARCHAR[] NOT NULL, split_at TIMESTAMP,
            PRIMARY KEY (tenant, merge_id))""",
        """CREATE TABLE erased (
            tenant VARCHAR NOT NULL, visitor_id VARCHAR NOT NULL,
            erased_at TIMESTAMP NOT NULL,
            PRIMARY KEY (tenant, visitor_id))""",
    ]),
    # Report rollup: one row per visitor, location and UTC day (see report.sql rollup_cte),
    # maintained by write() and erase_visitor(); backfilled from existing sightings. No
    # primary key: an ART index over ~10^7 rows costs more at load than it saves in the
    # per-batch delete + insert, which prunes by day through zone maps.
    (2, [
        """CREATE TABLE visit_days (
            tenant VARCHAR NOT NULL, face_id VARCHAR NOT NULL,
            location_id VARCHAR NOT NULL, day DATE NOT NULL,
            first_ts TIMESTAMP NOT NULL, last_ts TIMESTAMP NOT NULL,
            n BIGINT NOT NULL, visits BIGINT NOT NULL, cont BOOLEAN NOT NULL)""",
        "INSERT INTO visit_days " + rollup_rows_from_sightings("true")
        + " ORDER BY tenant, day, location_id",
    ]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _aware(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.replace(tzinfo=UTC)


class DuckDBStore:
    """:class:`revisit.store.base.SightingStore` on a DuckDB file (or ``":memory:"``)."""

    def __init__(
        self, path: str | Path, read_only: bool = False, threads: int | None = None,
        memory_limit: str | None = None,
    ) -> None:
        """``threads``/``memory_limit`` (e.g. ``"4GB"``) bound DuckDB; default: all cores,
        80 % of RAM."""
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {}
        if threads:
            config["threads"] = threads
        if memory_limit:
            config["memory_limit"] = memory_limit
        self._conn = duckdb.connect(self.path, read_only=read_only, config=config)
        self._local = threading.local()
        self._lock = threading.RLock()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._closed = False
        # Write-side memos, only ever holding committed facts, so a stale entry can only
        # skip an insert that would have been a no-op (saves ~3 statements per batch).
        self._places_known: set[tuple[str, str, str]] = set()  # (kind, tenant, id)
        self._tenant_max: dict[str, int] = {}
        self._write_erased: dict[str, set[str]] | None = None  # per write: erased ids seen
        # Reports read the visit_days rollup when it can answer them (same numbers as the
        # raw query, tested); False forces the raw sessionisation (tests, benchmarks).
        self.use_rollup = True
        if not read_only:
            self._migrate()

    # --- plumbing -------------------------------------------------------------------

    def _cur(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB connections must not be shared across threads)."""
        cur = getattr(self._local, "cur", None)
        if cur is None:
            if self._closed:
                raise RuntimeError("store is closed")
            cur = self._conn.cursor()
            self._local.cur = cur
            with self._lock:
                self._cursors.append(cur)
        return cur

    def _migrate(self) -> None:
        cur = self._cur()
        with self._lock:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_version "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)"
            )
            current = cur.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
            have = int(current[0]) if current else 0
            for version, statements in MIGRATIONS:
                if version <= have:
                    continue
                cur.begin()
                try:
                    for stmt in statements:
                        cur.execute(stmt)
                    cur.execute("INSERT INTO schema_version VALUES (?, ?)", [version, _now()])
                    cur.commit()
                except Exception:
                    cur.rollback()
                    raise

    def schema_version(self) -> int:
        row = self._cur().execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def _stream(self, sql: str, params: list[Any]) -> Iterator[tuple[Any, ...]]:
        """Rows of a query, fetched in chunks on a private cursor."""
        cur = self._conn.cursor()
        try:
            cur.execute(sql, params)
            while True:
                chunk = cur.fetchmany(FETCH_ROWS)
                if not chunk:
                    return
                yield from chunk
        finally:
            cur.close()

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The one connection to the file (DuckDB allows one writer process per file), for
        modules that keep their own tables beside the store's (tenancy, audit)."""
        return self._conn

    @contextlib.contextmanager
    def report_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own for read-side SQL in the report's dialect (the dashboard
        summary): DuckDB cursors must not be shared across threads."""
        cur = self._conn.cursor()
        try:
            yield cur
        finally:
            cur.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for cur in self._cursors:
                with contextlib.suppress(duckdb.Error):
                    cur.close()
            self._cursors.clear()
            self._conn.close()

    def __enter__(self) -> DuckDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- ingest side ----------------------------------------------------------------

    def known_frames(self, tenant: str, image_ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(image_ids))
        if not ids:
            return set()
        rows = self._cur().execute(
            "SELECT image_id FROM frames WHERE tenant = ? "
            "AND image_id IN (SELECT unnest(?::VARCHAR[]))",
            [tenant, ids],
        ).fetchall()
        return {r[0] for r in rows}

    def existing_sightings(self, tenant: str, face_image_ids: Iterable[str]) -> dict[str, str]:
        """face_image_id -> canonical visitor id (after merges)."""
        ids = list(dict.fromkeys(face_image_ids))
        if not ids:
            return {}
        rows = self._cur().execute(
            "SELECT s.face_image_id, coalesce(a.visitor_id, s.face_id) FROM sightings s "
            "LEFT JOIN aliases a ON a.tenant = s.tenant AND a.alias_id = s.face_id "
            "WHERE s.tenant = ? AND s.face_image_id IN (SELECT unnest(?::VARCHAR[]))",
            [tenant, ids],
        ).fetchall()
        return {r[0]: r[1] for r in rows}

    def write(self, batch: Batch) -> None:
        """One transaction; idempotent. Steps are methods so tests can inject failures."""
        with self._lock:
            cur = self._cur()
            cur.begin()
            try:
                self._write_erased = self._erased_in_batch(cur, batch)
                self._write_frames(cur, batch)
                places = self._write_places(cur, batch)
                sightings, redelivered = self._write_sightings(cur, batch)
                tops = self._write_visitors(cur, batch, sightings)
                self._write_rollup(cur, sightings, redelivered)
                self._write_exemplars(cur, batch, redelivered)
                cur.commit()
            except BaseException:
                cur.rollback()
                raise
            finally:
                self._write_erased = None
            self._places_known |= places
            for tenant, top in tops.items():
                self._tenant_max[tenant] = max(self._tenant_max.get(tenant, 0), top)

    def _erased_in_batch(
        self, cur: duckdb.DuckDBPyConnection, batch: Batch
    ) -> dict[str, set[str]]:
        """Which visitor ids mentioned by the batch were erased: one query per tenant."""
        ids: dict[str, set[str]] = defaultdict(set)
        for s in batch.sightings:
            ids[s.tenant].add(s.face_id)
        for tenant, vid, _ in batch.visitors_created:
            ids[tenant].add(vid)
        for e in batch.exemplars_added:
            ids[e.tenant].add(e.visitor_id)
        return {t: self._erased_query(cur, t, v) for t, v in ids.items()}

    def _write_frames(self, cur: duckdb.DuckDBPyConnection, batch: Batch) -> None:
        if not batch.frames:
            return
        faces = Counter((f.tenant, f.image_id) for f in batch.faces)
        seen = Counter((s.tenant, s.image_id) for s in batch.sightings)
        now = _now()
        cols: list[list[Any]] = [[], [], [], [], [], [], []]
        for fr in batch.frames:
            key = (fr.tenant, fr.image_id)
            for col, val in zip(
                cols,
                (fr.tenant, fr.image_id, fr.camera_id, fr.location_id, naive_utc(fr.ts),
                 max(faces[key], seen[key]), now),
                strict=True,
            ):
                col.append(val)
        cur.execute(
            "INSERT INTO frames SELECT * FROM (SELECT unnest(?::VARCHAR[]), "
            "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
            "unnest(?::TIMESTAMP[]), unnest(?::INTEGER[]), unnest(?::TIMESTAMP[])) "
            "ON CONFLICT DO NOTHING",
            cols,
        )

    def _write_places(
        self, cur: duckdb.DuckDBPyConnection, batch: Batch
    ) -> set[tuple[str, str, str]]:
        """Register cameras and locations the first time they are seen; returns them."""
        cams: dict[tuple[str, str], tuple[str, datetime]] = {}
        locs: dict[tuple[str, str], datetime] = {}
        items: list[Any] = [*batch.frames, *batch.sightings]
        known = self._places_known
        for it in items:
            ts = naive_utc(it.ts)
            ck = (it.tenant, it.camera_id)
            if ("cam", *ck) not in known and (ck not in cams or ts < cams[ck][1]):
                cams[ck] = (it.location_id, ts)
            lk = (it.tenant, it.location_id)
            if ("loc", *lk) not in known and (lk not in locs or ts < locs[lk]):
                locs[lk] = ts
        if cams:
            keys = list(cams)
            cur.execute(
                "INSERT INTO cameras (tenant, camera_id, location_id, first_seen) "
                "SELECT * FROM (SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
                "unnest(?::VARCHAR[]), unnest(?::TIMESTAMP[])) ON CONFLICT DO NOTHING",
                [[k[0] for k in keys], [k[1] for k in keys],
                 [cams[k][0] for k in keys], [cams[k][1] for k in keys]],
            )
        if locs:
            keys = list(locs)
            cur.execute(
                "INSERT INTO locations (tenant, location_id, first_seen) "
                "SELECT * FROM (SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
                "unnest(?::TIMESTAMP[])) ON CONFLICT DO NOTHING",
                [[k[0] for k in keys], [k[1] for k in keys], [locs[k] for k in keys]],
            )
        return {("cam", *k) for k in cams} | {("loc", *k) for k in locs}

    def _erased(self, cur: duckdb.DuckDBPyConnection, tenant: str, ids: Iterable[str]) -> set[str]:
        if self._write_erased is not None and tenant in self._write_erased:
            return self._write_erased[tenant] & set(ids)
        return self._erased_query(cur, tenant, ids)

    @staticmethod
    def _erased_query(
        cur: duckdb.DuckDBPyConnection, tenant: str, ids: Iterable[str]
    ) -> set[str]:
        ids = list(set(ids))
        if not ids:
            return set()
        rows = cur.execute(
            "SELECT visitor_id FROM erased WHERE tenant = ? "
            "AND visitor_id IN (SELECT unnest(?::VARCHAR[]))",
            [tenant, ids],
        ).fetchall()
        return {r[0] for r in rows}

    def _write_sightings(
        self, cur: duckdb.DuckDBPyConnection, batch: Batch
    ) -> tuple[list[Sighting], set[tuple[str, str]]]:
        """Insert new sightings (+ embeddings). Returns the sightings kept and the
        (tenant, face_image_id) of those already stored (a redelivery)."""
        if not batch.sightings:
            return [], set()
        by_tenant: dict[str, list[Sighting]] = defaultdict(list)
        for s in batch.sightings:
            by_tenant[s.tenant].append(s)
        kept: list[Sighting] = []
        redelivered: set[tuple[str, str]] = set()
        for tenant, group in by_tenant.items():
            erased = self._erased(cur, tenant, (s.face_id for s in group))
            live = [s for s in group if s.face_id not in erased]
            if not live:
                continue
            existing = self._existing_in(cur, tenant, [s.face_image_id for s in live])
            redelivered.update((tenant, f) for f in existing)
            kept.extend(live)
        if not kept:
            return [], redelivered
        cur.execute(
            "INSERT INTO sightings SELECT * FROM (SELECT unnest(?::VARCHAR[]), "
            "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
            "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::TIMESTAMP[]), "
            "unnest(?::INTEGER[]), unnest(?::INTEGER[]), unnest(?::INTEGER[]), "
            "unnest(?::INTEGER[]), unnest(?::REAL[]), unnest(?::REAL[])) "
            "ON CONFLICT DO NOTHING",
            [
                [s.tenant for s in kept], [s.face_image_id for s in kept],
                [s.face_id for s in kept], [s.image_id for s in kept],
                [s.camera_id for s in kept], [s.location_id for s in kept],
                [naive_utc(s.ts) for s in kept],
                [int(s.bbox[0]) for s in kept], [int(s.bbox[1]) for s in kept],
                [int(s.bbox[2]) for s in kept], [int(s.bbox[3]) for s in kept],
                [float(s.quality) for s in kept], [float(s.match_score) for s in kept],
            ],
        )
        with_emb = [s for s in kept if s.embedding is not None]
        if with_emb:
            cur.execute(
                "INSERT INTO embeddings SELECT * FROM (SELECT unnest(?::VARCHAR[]), "
                "unnest(?::VARCHAR[]), unnest(?::FLOAT[][])) ON CONFLICT DO NOTHING",
                [
                    [s.tenant for s in with_emb], [s.face_image_id for s in with_emb],
                    [np.asarray(s.embedding, dtype=np.float32).tolist() for s in with_emb],
                ],
            )
        return kept, redelivered

    @staticmethod
    def _write_rollup(
        cur: duckdb.DuckDBPyConnection, sightings: list[Sighting],
        redelivered: set[tuple[str, str]],
    ) -> None:
        """Recompute the ``visit_days`` rows the new sightings touch (one delete + one
        insert per batch, :func:`revisit.report.sql.rollup_refresh_sql`)."""
        touched = rollup_touched(sightings, redelivered)
        if touched is None:
            return
        delete, insert = rollup_refresh_sql()
        cur.execute(delete, touched.delete_params)
        cur.execute(insert, touched.insert_params)

    def rebuild_rollup(self, tenant: str | None = None) -> None:
        """Recompute ``visit_days`` from the sightings (all tenants or one), e.g. after a
        bulk load that bypassed :meth:`write`."""
        with self._lock:
            cur = self._cur()
            cur.begin()
            try:
                if tenant is None:
                    cur.execute("DELETE FROM visit_days")
                    cur.execute("INSERT INTO visit_days " + rollup_rows_from_sightings("true")
                                + " ORDER BY tenant, day, location_id")
                else:
                    cur.execute("DELETE FROM visit_days WHERE tenant = ?", [tenant])
                    cur.execute("INSERT INTO visit_days " + rollup_rows_from_sightings(
                        "s.tenant = ?") + " ORDER BY day, location_id", [tenant])
                cur.commit()
            except BaseException:
                cur.rollback()
                raise

    @staticmethod
    def _existing_in(cur: duckdb.DuckDBPyConnection, tenant: str, ids: list[str]) -> set[str]:
        rows = cur.execute(
            "SELECT face_image_id FROM sightings WHERE tenant = ? "
            "AND face_image_id IN (SELECT unnest(?::VARCHAR[]))",
            [tenant, ids],
        ).fetchall()
        return {r[0] for r in rows}

    def _write_visitors(
        self, cur: duckdb.DuckDBPyConnection, batch: Batch, sightings: list[Sighting]
    ) -> dict[str, int]:
        """Upsert visitors (first/last seen widen only) and each tenant's id counter;
        returns the highest visitor number per tenant written."""
        span: dict[tuple[str, str], list[datetime | None]] = {}
        for tenant, vid, ts in batch.visitors_created:
            t = naive_utc(ts)
            span.setdefault((tenant, vid), [t, t])
        for s in sightings:
            t = naive_utc(s.ts)
            cur_span = span.setdefault((s.tenant, s.face_id), [t, t])
            cur_span[0] = min(cur_span[0], t) if cur_span[0] else t
            cur_span[1] = max(cur_span[1], t) if cur_span[1] else t
        tenants = {s.tenant for s in batch.sightings} | {f.tenant for f in batch.frames}
        tenants |= {t for t, _, _ in batch.visitors_created}
        # visitors created in this batch but erased meanwhile must not come back
        for tenant in {k[0] for k in span}:
            for vid in self._erased(cur, tenant, (k[1] for k in span if k[0] == tenant)):
                span.pop((tenant, vid), None)
        now = _now()
        if span:
            keys = list(span)
            cur.execute(
                "INSERT INTO visitors SELECT * FROM (SELECT unnest(?::VARCHAR[]), "
                "unnest(?::VARCHAR[]), unnest(?::TIMESTAMP[]), unnest(?::TIMESTAMP[]), "
                "unnest(?::TIMESTAMP[])) "
                "ON CONFLICT (tenant, visitor_id) DO UPDATE SET "
                "first_seen = least(visitors.first_seen, excluded.first_seen), "
                "last_seen = greatest(visitors.last_seen, excluded.last_seen)",
                [[k[0] for k in keys], [k[1] for k in keys], [now] * len(keys),
                 [span[k][0] for k in keys], [span[k][1] for k in keys]],
            )
        top: dict[str, int] = dict.fromkeys(tenants, 0)
        for tenant, vid in span:
            top[tenant] = max(top.get(tenant, 0), visitor_number_or_zero(vid))
        names = [t for t, n in top.items() if t not in self._tenant_max or n > self._tenant_max[t]]
        if names:
            cur.execute(
                "INSERT INTO tenants SELECT * FROM (SELECT unnest(?::VARCHAR[]), "
                "unnest(?::BIGINT[]), unnest(?::TIMESTAMP[])) "
                "ON CONFLICT (tenant) DO UPDATE SET max_visitor_number = "
                "greatest(tenants.max_visitor_number, excluded.max_visitor_number)",
                [names, [top[n] for n in names], [now] * len(names)],
            )
        return top

    def _write_exemplars(
        self, cur: duckdb.DuckDBPyConnection, batch: Batch, redelivered: set[tuple[str, str]]
    ) -> None:
        """Add/drop exemplars. Adds for a redelivered sighting are skipped: replaying an
        old batch must not resurrect an exemplar a later batch dropped."""
        added = [
            e for e in batch.exemplars_added
            if (e.tenant, e.face_image_id) not in redelivered
        ]
        if added:
            erased_by_tenant = {
                t: self._erased(cur, t, (e.visitor_id for e in added if e.tenant == t))
                for t in {e.tenant for e in added}
            }
            added = [e for e in added if e.visitor_id not in erased_by_tenant[e.tenant]]
        if added:
            cur.execute(
                "INSERT INTO exemplars SELECT * FROM (SELECT unnest(?::VARCHAR[]), "
                "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::FLOAT[][]), "
                "unnest(?::REAL[]), unnest(?::TIMESTAMP[])) ON CONFLICT DO NOTHING",
                [
                    [e.tenant for e in added], [e.visitor_id for e in added],
                    [e.face_image_id for e in added],
                    [np.asarray(e.embedding, dtype=np.float32).tolist() for e in added],
                    [float(e.quality) for e in added], [naive_utc(e.ts) for e in added],
                ],
            )
        dropped: dict[str, list[str]] = defaultdict(list)
        for tenant, fid in batch.exemplars_dropped:
            dropped[tenant].append(fid)
        for tenant, fids in dropped.items():
            cur.execute(
                "DELETE FROM exemplars WHERE tenant = ? "
                "AND face_image_id IN (SELECT unnest(?::VARCHAR[]))",
                [tenant, fids],
            )

    def load_exemplars(self, tenant: str, chunk: int = FETCH_ROWS) -> Iterator[list[Exemplar]]:
        """Exemplars in chunks, in no particular order (sorting millions of vectors costs
        more than it gives); ``visitor_id`` is the canonical id (after merges), so a
        rebuilt index never hands out an id that was merged away."""
        cur = self._conn.cursor()
        try:
            cur.execute(
                "SELECT coalesce(a.visitor_id, e.visitor_id), e.face_image_id, e.embedding, "
                "e.quality, e.ts FROM exemplars e LEFT JOIN aliases a "
                "ON a.tenant = e.tenant AND a.alias_id = e.visitor_id "
                "WHERE e.tenant = ?",
                [tenant],
            )
            while rows := cur.fetchmany(chunk):
                yield [
                    Exemplar(
                        tenant=tenant, visitor_id=r[0], face_image_id=r[1],
                        embedding=np.asarray(r[2], dtype=np.float32), quality=float(r[3]),
                        ts=_aware(r[4]) or _EPOCH,
                    )
                    for r in rows
                ]
        finally:
            cur.close()

    def load_embeddings(
        self, tenant: str, chunk: int = FETCH_ROWS
    ) -> Iterator[list[tuple[str, str, np.ndarray]]]:
        cur = self._conn.cursor()
        try:
            cur.execute(
                "SELECT s.face_image_id, coalesce(a.visitor_id, s.face_id), m.embedding "
                "FROM embeddings m JOIN sightings s "
                "ON s.tenant = m.tenant AND s.face_image_id = m.face_image_id "
                "LEFT JOIN aliases a ON a.tenant = s.tenant AND a.alias_id = s.face_id "
                "WHERE m.tenant = ?",
                [tenant],
            )
            while rows := cur.fetchmany(chunk):
                yield [(r[0], r[1], np.asarray(r[2], dtype=np.float32)) for r in rows]
        finally:
            cur.close()

    def tenants(self) -> list[str]:
        rows = self._cur().execute("SELECT tenant FROM tenants ORDER BY tenant").fetchall()
        return [r[0] for r in rows]

    def max_visitor_number(self, tenant: str) -> int:
        """Highest number ever issued (erased visitors included: ids are never reused)."""
        row = self._cur().execute(
            "SELECT max_visitor_number FROM tenants WHERE tenant = ?", [tenant]
        ).fetchone()
        return int(row[0]) if row else 0

    def stats(self, tenant: str) -> dict[str, int]:
        out = {}
        for table in ("frames", "sightings", "embeddings", "visitors", "exemplars", "aliases",
                      "cameras", "locations", "erased"):
            row = self._cur().execute(
                f"SELECT count(*) FROM {table} WHERE tenant = ?", [tenant]
            ).fetchone()
            out[table] = int(row[0]) if row else 0
        return out

    # --- report side ----------------------------------------------------------------

    def _has_aliases(self, tenant: str) -> bool:
        return self._cur().execute(
            "SELECT 1 FROM aliases WHERE tenant = ? LIMIT 1", [tenant]
        ).fetchone() is not None

    def report_header(self, query: ReportQuery) -> ReportHeader:
        sql, params = report_sql(query, rows=False, aliases=self._has_aliases(query.tenant),
                                 rollup=self.use_rollup)
        return header_from(query, self._cur().execute(sql, params).fetchone())

    def report_rows(self, query: ReportQuery) -> Iterator[ReportRow]:
        sql, params = report_sql(query, rows=True, aliases=self._has_aliases(query.tenant),
                                 rollup=self.use_rollup)
        for record in self._stream(sql, params):
            yield row_from(record)

    def sightings(self, query: SightingQuery) -> Iterator[dict[str, Any]]:
        sql, params = sightings_sql(query)
        for row in self._stream(sql, params):
            d = dict(zip(SIGHTING_COLUMNS, row, strict=True))
            d["ts"] = d["ts"].replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
            # stored as REAL: round away float32 noise (0.8999999761 -> 0.9)
            for k in ("quality", "match_score"):
                if d[k] is not None:
                    d[k] = round(float(d[k]), 6)
            yield d

    # --- identity maintenance -------------------------------------------------------

    def canonical_id(self, tenant: str, visitor_id: str) -> str:
        return self._canonical(self._cur(), tenant, visitor_id)

    @staticmethod
    def _canonical(cur: duckdb.DuckDBPyConnection, tenant: str, visitor_id: str) -> str:
        row = cur.execute(
            "SELECT visitor_id FROM aliases WHERE tenant = ? AND alias_id = ?",
            [tenant, visitor_id],
        ).fetchone()
        return row[0] if row else visitor_id

    @staticmethod
    def _visitor_exists(cur: duckdb.DuckDBPyConnection, tenant: str, visitor_id: str) -> bool:
        return cur.execute(
            "SELECT 1 FROM visitors WHERE tenant = ? AND visitor_id = ?", [tenant, visitor_id]
        ).fetchone() is not None

    def _transaction(self, fn: Any) -> Any:
        with self._lock:
            cur = self._cur()
            cur.begin()
            try:
                out = fn(cur)
                cur.commit()
                return out
            except BaseException:
                cur.rollback()
                raise

    def merge_visitors(self, tenant: str, keep: str, absorb: str, reason: str = "") -> MergeRecord:
        """Record ``absorb`` -> ``keep`` (both resolved to canonical ids first). Aliases that
        pointed at ``absorb`` are re-pointed at ``keep`` (aliases stay one hop deep) and
        listed in the merge log so a split can send them back."""

        def run(cur: duckdb.DuckDBPyConnection) -> MergeRecord:
            k = self._canonical(cur, tenant, keep)
            a = self._canonical(cur, tenant, absorb)
            for vid in (k, a):
                if not self._visitor_exists(cur, tenant, vid):
                    raise KeyError(f"no visitor {vid} in tenant {tenant}")
            if k == a:
                raise ValueError(f"{absorb} and {keep} are already the same visitor ({k})")
            repointed = [r[0] for r in cur.execute(
                "SELECT alias_id FROM aliases WHERE tenant = ? AND visitor_id = ? "
                "ORDER BY alias_id", [tenant, a]).fetchall()]
            now = _now()
            cur.execute(
                "UPDATE aliases SET visitor_id = ? WHERE tenant = ? AND visitor_id = ?",
                [k, tenant, a],
            )
            cur.execute(
                "INSERT INTO aliases VALUES (?, ?, ?, ?, ?)", [tenant, a, k, now, reason]
            )
            row = cur.execute(
                "SELECT coalesce(max(merge_id), 0) + 1 FROM merge_log WHERE tenant = ?", [tenant]
            ).fetchone()
            merge_id = int(row[0]) if row else 1
            cur.execute(
                "INSERT INTO merge_log VALUES (?, ?, ?, ?, ?, ?, ?::VARCHAR[], NULL)",
                [tenant, merge_id, k, a, now, reason, repointed],
            )
            return MergeRecord(merge_id, tenant, k, a, _aware(now) or _EPOCH, reason)

        return self._transaction(run)

    def split_visitor(self, tenant: str, merged_id: str) -> MergeRecord:
        """Undo the merge that absorbed ``merged_id``: drop its alias and send back the
        aliases that merge re-pointed (those still in the same group and absorbed before
        it), so the report returns exactly to its numbers before the merge."""

        def run(cur: duckdb.DuckDBPyConnection) -> MergeRecord:
            row = cur.execute(
                "SELECT merge_id, keep_id, merged_at, reason, repointed FROM merge_log "
                "WHERE tenant = ? AND absorb_id = ? AND split_at IS NULL",
                [tenant, merged_id],
            ).fetchone()
            if row is None:
                absorbed = [r[0] for r in cur.execute(
                    "SELECT alias_id FROM aliases WHERE tenant = ? AND visitor_id = ? "
                    "ORDER BY alias_id", [tenant, merged_id]).fetchall()]
                hint = f"; ids merged into it: {', '.join(absorbed)}" if absorbed else ""
                raise ValueError(f"{merged_id} is not merged into another visitor{hint}")
            merge_id, keep_id, merged_at, reason, repointed = row
            group = self._canonical(cur, tenant, merged_id)
            cur.execute(
                "DELETE FROM aliases WHERE tenant = ? AND alias_id = ?", [tenant, merged_id]
            )
            if repointed:
                cur.execute(
                    "UPDATE aliases SET visitor_id = ? WHERE tenant = ? AND visitor_id = ? "
                    "AND alias_id IN (SELECT unnest(?::VARCHAR[])) AND alias_id IN ("
                    "  SELECT absorb_id FROM merge_log WHERE tenant = ? AND split_at IS NULL "
                    "  AND merge_id < ?)",
                    [merged_id, tenant, group, list(repointed), tenant, merge_id],
                )
            now = _now()
            cur.execute(
                "UPDATE merge_log SET split_at = ? WHERE tenant = ? AND merge_id = ?",
                [now, tenant, merge_id],
            )
            return MergeRecord(
                int(merge_id), tenant, keep_id, merged_id, _aware(merged_at) or _EPOCH,
                reason or "", _aware(now),
            )

        return self._transaction(run)

    def merges(self, tenant: str) -> list[MergeRecord]:
        rows = self._cur().execute(
            "SELECT merge_id, keep_id, absorb_id, merged_at, reason, split_at FROM merge_log "
            "WHERE tenant = ? ORDER BY merge_id", [tenant]
        ).fetchall()
        return [
            MergeRecord(int(r[0]), tenant, r[1], r[2], _aware(r[3]) or _EPOCH, r[4] or "",
                        _aware(r[5]))
            for r in rows
        ]

    def erase_visitor(self, tenant: str, visitor_id: str) -> dict[str, int]:
        """Delete the visitor's whole merge group: sightings, embeddings, exemplars,
        aliases, merge records, visitor rows. The ids are remembered as erased (ids only)
        so a redelivered batch cannot bring the person back. Frames stay marked processed
        for the same reason."""

        def run(cur: duckdb.DuckDBPyConnection) -> dict[str, int]:
            canon = self._canonical(cur, tenant, visitor_id)
            group = [canon] + [r[0] for r in cur.execute(
                "SELECT alias_id FROM aliases WHERE tenant = ? AND visitor_id = ?",
                [tenant, canon]).fetchall()]
            known = cur.execute(
                "SELECT count(*) FROM visitors WHERE tenant = ? "
                "AND visitor_id IN (SELECT unnest(?::VARCHAR[]))", [tenant, group]).fetchone()
            if not known or not known[0]:
                raise KeyError(f"no visitor {visitor_id} in tenant {tenant}")
            counts: dict[str, int] = {}

            def delete(name: str, sql: str, params: list[Any]) -> None:
                row = cur.execute(sql + " RETURNING 1", params).fetchall()
                counts[name] = len(row)

            delete("embeddings",
                   "DELETE FROM embeddings WHERE tenant = ? AND face_image_id IN ("
                   "SELECT face_image_id FROM sightings WHERE tenant = ? "
                   "AND face_id IN (SELECT unnest(?::VARCHAR[])))", [tenant, tenant, group])
            delete("sightings",
                   "DELETE FROM sightings WHERE tenant = ? "
                   "AND face_id IN (SELECT unnest(?::VARCHAR[]))", [tenant, group])
            cur.execute(
                "DELETE FROM visit_days WHERE tenant = ? "
                "AND face_id IN (SELECT unnest(?::VARCHAR[]))", [tenant, group])
            delete("exemplars",
                   "DELETE FROM exemplars WHERE tenant = ? "
                   "AND visitor_id IN (SELECT unnest(?::VARCHAR[]))", [tenant, group])
            delete("aliases",
                   "DELETE FROM aliases WHERE tenant = ? "
                   "AND alias_id IN (SELECT unnest(?::VARCHAR[]))", [tenant, group])
            delete("merge_log",
                   "DELETE FROM merge_log WHERE tenant = ? AND (keep_id IN "
                   "(SELECT unnest(?::VARCHAR[])) OR absorb_id IN (SELECT unnest(?::VARCHAR[])))",
                   [tenant, group, group])
            delete("visitors",
                   "DELETE FROM visitors WHERE tenant = ? "
                   "AND visitor_id IN (SELECT unnest(?::VARCHAR[]))", [tenant, group])
            now = _now()
            cur.execute(
                "INSERT INTO erased SELECT ?, unnest(?::VARCHAR[]), ? ON CONFLICT DO NOTHING",
                [tenant, group, now],
            )
            return counts

        return self._transaction(run)

    def visitor_face_ids(self, tenant: str, visitor_id: str) -> set[str]:
        cur = self._cur()
        canon = self._canonical(cur, tenant, visitor_id)
        rows = cur.execute(
            "SELECT s.face_image_id FROM sightings s LEFT JOIN aliases a "
            "ON a.tenant = s.tenant AND a.alias_id = s.face_id "
            "WHERE s.tenant = ? AND coalesce(a.visitor_id, s.face_id) = ?",
            [tenant, canon]).fetchall()
        return {r[0] for r in rows}

    def purge_before(self, tenant: str, cutoff: datetime) -> tuple[dict[str, int], list[str]]:
        def run(cur: duckdb.DuckDBPyConnection) -> tuple[dict[str, int], list[str]]:
            dropped = [r[0] for r in cur.execute(
                "SELECT face_image_id FROM exemplars WHERE tenant = ? AND ts < ?",
                [tenant, cutoff]).fetchall()]
            counts: dict[str, int] = {}
            for name, sql, params in purge_statements(tenant, cutoff):
                counts[name] = len(cur.execute(sql + " RETURNING 1", params).fetchall())
            cur.execute("DELETE FROM visit_days WHERE tenant = ?", [tenant])
            cur.execute("INSERT INTO visit_days " + rollup_rows_from_sightings("s.tenant = ?")
                        + " ORDER BY day, location_id", [tenant])
            return counts, dropped

        return self._transaction(run)

    def visitor_detail(self, tenant: str, visitor_id: str) -> VisitorDetail | None:
        cur = self._cur()
        canon = self._canonical(cur, tenant, visitor_id)
        if not self._visitor_exists(cur, tenant, canon):
            return None
        aliases = [r[0] for r in cur.execute(
            "SELECT alias_id FROM aliases WHERE tenant = ? AND visitor_id = ? ORDER BY alias_id",
            [tenant, canon]).fetchall()]
        group = [canon, *aliases]
        locs = cur.execute(
            "SELECT location_id, count(*), min(ts), max(ts) FROM sightings WHERE tenant = ? "
            "AND face_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY location_id "
            "ORDER BY location_id", [tenant, group]).fetchall()
        ex = cur.execute(
            "SELECT count(*), avg(quality), max(quality) FROM exemplars WHERE tenant = ? "
            "AND visitor_id IN (SELECT unnest(?::VARCHAR[]))", [tenant, group]).fetchone()
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
