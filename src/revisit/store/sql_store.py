"""The sighting store, written once over any SQL engine (:mod:`revisit.store.dialect`).

:class:`SQLStore` is the whole :class:`revisit.store.base.SightingStore`: the write path,
merge / split / erase, retention purge, visitor detail, the report and the tables other
concerns keep (tenancy, through :meth:`SQLStore.transaction`). An engine adapter
(:class:`revisit.store.duckdb_store.DuckDBStore`, the embedded default;
:class:`revisit.store.postgres_store.PostgresStore`, the distributed one) supplies only
connections, transactions, streaming, bulk load and locks.

- A batch is written in ONE transaction with ``INSERT ... ON CONFLICT DO NOTHING`` on
  natural keys, so a redelivered batch changes nothing.
- Every delete (purge, erasure) and every write keeps the rollups (``visit_days`` for the
  report, ``visit_spans`` for the analyses) equal to what a rebuild from the sightings
  gives, in the same transaction.
- Identity decisions (resolve, merge, split, erase, purge) run in
  :meth:`SQLStore.identity_transaction`: the tenant's lock, a per-tenant
  ``identity_version`` (bumped by each, so a resolver knows when its in-memory gallery is
  stale) and per-stream resolve cursors (batches of one ingest stream resolved in
  publication order, exactly once). See docs/deploy.md.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TypeVar, cast

import numpy as np

from revisit.records import (
    ENROLMENT_EXEMPLAR,
    Batch,
    Exemplar,
    Face,
    SavedTrack,
    Sighting,
    iso_utc,
)
from revisit.report.query import (
    SIGHTING_COLUMNS,
    ReportHeader,
    ReportQuery,
    ReportRow,
    SightingQuery,
)
from revisit.store.base import MergeRecord, StoreUnavailable, VisitorDetail
from revisit.store.dialect import Dialect, Engine, Session
from revisit.store.report_sql import (
    header_from,
    naive_utc,
    report_sql,
    rollup_refresh_sql,
    rollup_rows_from_sightings,
    rollup_touched,
    row_from,
    sightings_sql,
    staff_ids,
    with_staff_left_out,
)
from revisit.store.schema import migrations
from revisit.store.visit_spans import rebuild_spans, refresh_spans, spans_touched
from revisit.store.visitor_ids import visitor_number_or_zero

log = logging.getLogger(__name__)

FETCH_ROWS = 10_000  # rows per fetch: bounded memory however large the report
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LIST = "IN (SELECT unnest(?::VARCHAR[]))"  # membership in a list parameter
_AUDIT_SUBJECTS = ("visitor_id", "keep", "absorb")  # detail keys naming the visitor(s)
T = TypeVar("T")


def now_utc() -> datetime:
    """Now, as the store keeps times (naive UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


def _aware(ts: datetime | None) -> datetime | None:
    return None if ts is None else ts.replace(tzinfo=UTC)


def _delete_faces(s: Session, table: str, faces: Iterable[tuple[str, str]]) -> None:
    """Delete a table's rows of these (tenant, face_image_id), one statement per tenant."""
    by_tenant: dict[str, set[str]] = defaultdict(set)
    for tenant, fid in faces:
        by_tenant[tenant].add(fid)
    for tenant, ids in by_tenant.items():
        s.execute(f"DELETE FROM {table} WHERE tenant = ? AND face_image_id {_LIST}",
                  [tenant, sorted(ids)])


def _month(d: date) -> date:
    return date(d.year, d.month, 1)


@dataclass
class _Written:
    """Facts a committed write teaches the store's memos."""

    places: set[tuple[str, str, str]] = field(default_factory=set)  # (kind, tenant, id)
    tops: dict[str, int] = field(default_factory=dict)  # tenant -> highest visitor number


class IdentityTransaction:
    """A resolve + write transaction holding the locks of its stream and tenants."""

    def __init__(self, store: SQLStore, session: Session) -> None:
        self.store = store
        self.session = session
        self._written: list[_Written] = []

    @property
    def conn(self) -> Any:
        """The engine's own connection, for a face index kept in the same database
        (pgvector) whose writes must commit or roll back with this transaction."""
        return getattr(self.session, "conn", None)

    def lock_tenants(self, tenants: Iterable[str]) -> None:
        """Take the tenants' locks (call once per transaction: sorted, so no deadlocks)."""
        for t in sorted(set(tenants)):
            self.session.lock("tenant", t)

    def park(self, stream: str, seq: int, payload: bytes) -> None:
        """Keep an encoded batch that arrived before its predecessor, durably, until its
        turn (the caller encodes: the store holds bytes, not the queue's format)."""
        self.session.execute(
            "INSERT INTO resolve_parked (stream, seq, payload, parked_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [stream, seq, payload, now_utc()],
        )

    def unpark(self, stream: str, seq: int, *, forward: bool = True) -> bytes | None:
        """The parked batch's bytes, taken out of the reorder buffer. ``forward``: it is
        being applied, so its row stays, marked applied, until the store stage has it
        (:meth:`SQLStore.forwarded`): a resolver killed between this commit and the
        forward must not lose the batch's alerts. Otherwise (set aside) the row goes."""
        sql = ("UPDATE resolve_parked SET applied_at = ? WHERE stream = ? AND seq = ? "
               "AND applied_at IS NULL RETURNING payload") if forward else (
               "DELETE FROM resolve_parked WHERE stream = ? AND seq = ? "
               "AND applied_at IS NULL RETURNING payload")
        row = self.session.execute(
            sql, [now_utc(), stream, seq] if forward else [stream, seq]).fetchone()
        return None if row is None else bytes(row[0])

    def first_parked(self, stream: str) -> tuple[int, datetime, bytes] | None:
        """The lowest parked batch of the stream: (seq, when the stream's first parked
        batch arrived, its bytes), or None."""
        row = self.session.execute(
            "SELECT seq, payload, (SELECT min(parked_at) FROM resolve_parked WHERE stream = ? "
            "AND applied_at IS NULL) FROM resolve_parked WHERE stream = ? "
            "AND applied_at IS NULL ORDER BY seq LIMIT 1", [stream, stream],
        ).fetchone()
        return None if row is None else (int(row[0]), row[2], bytes(row[1]))

    def skip(self, stream: str, first: int, last: int, tenants: str, reason: str) -> None:
        """Give up waiting for ``first..last`` of the stream: record them and move the
        cursor past them (a late copy is still applied, see :meth:`take_skipped`)."""
        at = now_utc()
        self.session.insert(
            "resolve_skipped", ("stream", "seq", "tenants", "reason", "skipped_at"),
            [(stream, s, tenants, reason, at) for s in range(first, last + 1)])
        self.advance(stream, last)

    def take_skipped(self, stream: str, seq: int) -> bool:
        """True once for a skipped batch that turned up after all (replayed from a dead
        letter): the caller applies it, out of order."""
        row = self.session.execute(
            "UPDATE resolve_skipped SET replayed_at = ? WHERE stream = ? AND seq = ? "
            "AND replayed_at IS NULL RETURNING seq", [now_utc(), stream, seq]).fetchone()
        return row is not None

    def version(self, tenant: str) -> int:
        row = self.session.execute(
            "SELECT identity_version FROM tenants WHERE tenant = ?", [tenant]
        ).fetchone()
        return int(row[0] or 0) if row else 0

    def last_seq(self, stream: str) -> int:
        row = self.session.execute(
            "SELECT last_seq FROM resolve_cursors WHERE stream = ?", [stream]
        ).fetchone()
        return int(row[0]) if row else -1

    def write(self, batch: Batch) -> None:
        self._written.append(self.store._write_in(self.session, batch))

    def advance(self, stream: str, seq: int) -> None:
        self.session.execute(
            "INSERT INTO resolve_cursors VALUES (?, ?, ?) ON CONFLICT (stream) DO UPDATE "
            "SET last_seq = greatest(resolve_cursors.last_seq, excluded.last_seq), "
            "updated_at = excluded.updated_at",
            [stream, seq, now_utc()],
        )

    def bump(self, tenants: Iterable[str]) -> None:
        _bump(self.session, tenants)


def _bump(s: Session, tenants: Iterable[str]) -> None:
    """Move the tenants' ``identity_version``: resolvers elsewhere reload their gallery."""
    names = sorted(set(tenants))
    if names:
        s.execute(
            "INSERT INTO tenants (tenant, created_at, identity_version) "
            "SELECT unnest(?::VARCHAR[]), ?, 1 ON CONFLICT (tenant) DO UPDATE "
            "SET identity_version = coalesce(tenants.identity_version, 0) + 1",
            [names, now_utc()],
        )


class SQLStore:
    """:class:`revisit.store.base.SightingStore` over an :class:`Engine`."""

    def __init__(self, engine: Engine, *, migrate: bool = True) -> None:
        self.engine = engine
        self.dialect: Dialect = engine.dialect
        # Write-side memos, only ever holding committed facts, so a stale entry can only
        # skip an insert that would have been a no-op (cameras and locations are never
        # deleted; the visitor counter only grows).
        self._places_known: set[tuple[str, str, str]] = set()
        self._tenant_max: dict[str, int] = {}
        self._partitions: set[date] = set()
        # Reports read the visit_days rollup when it can answer them (same numbers as the
        # raw query, tested); False forces the raw sessionisation (tests, benchmarks).
        self.use_rollup = True
        if migrate:
            self._migrate()

    # --- plumbing -------------------------------------------------------------------

    def _migrate(self) -> None:
        with self.engine.transaction() as s:
            s.lock("migrate")
            s.execute("CREATE TABLE IF NOT EXISTS schema_version "
                      "(version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)")
            row = s.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
            have = int(row[0]) if row else 0
            self._before_migrations(s, have)
            row = s.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
            have = int(row[0]) if row else 0
            known = migrations(self.dialect)
            if have > known[-1][0]:  # its tables hold what this version would not keep or erase
                raise StoreUnavailable(
                    f"this store was written by a newer revisit (schema version {have}; this "
                    f"one knows up to {known[-1][0]}): run that version, or restore a backup "
                    "made before the upgrade")
            todo = [(v, stmts) for v, stmts in known if v > have]
            if todo and have:
                log.info("upgrading the store from schema version %d to %d", have, todo[-1][0])
            for version, statements in todo:
                for stmt in statements:
                    s.execute(stmt)
                s.execute("INSERT INTO schema_version VALUES (?, ?)", [version, now_utc()])

    def _before_migrations(self, s: Session, have: int) -> None:
        """Hook for an engine's own upgrade of databases older than the migration list."""

    def schema_version(self) -> int:
        with self.engine.read() as s:
            row = s.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def transaction(self) -> contextlib.AbstractContextManager[Session]:
        """One transaction on the store's database, in its dialect (``?`` placeholders):
        for the tables other concerns keep beside the store's (tenancy)."""
        return self.engine.transaction()

    def read(self) -> contextlib.AbstractContextManager[Session]:
        """A read session on the store's database (the dashboard's summary SQL)."""
        return self.engine.read()

    def _query(self, sql: str, params: list[Any] | None = None) -> list[Any]:
        with self.engine.read() as s:
            return s.execute(sql, params or []).fetchall()

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> SQLStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- ingest side ----------------------------------------------------------------

    def known_frames(self, tenant: str, image_ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(image_ids))
        if not ids:
            return set()
        rows = self._query(f"SELECT image_id FROM frames WHERE tenant = ? AND image_id {_LIST}",
                           [tenant, ids])
        return {r[0] for r in rows}

    def existing_sightings(self, tenant: str, face_image_ids: Iterable[str]) -> dict[str, str]:
        """face_image_id -> canonical visitor id (after merges)."""
        ids = list(dict.fromkeys(face_image_ids))
        if not ids:
            return {}
        rows = self._query(
            "SELECT s.face_image_id, coalesce(a.visitor_id, s.face_id) FROM sightings s "
            "LEFT JOIN aliases a ON a.tenant = s.tenant AND a.alias_id = s.face_id "
            f"WHERE s.tenant = ? AND s.face_image_id {_LIST}",
            [tenant, ids],
        )
        return {r[0]: r[1] for r in rows}

    def prepare(self, batch: Batch) -> None:
        """Create what writing ``batch`` needs outside any transaction (monthly partitions):
        call before :meth:`identity_transaction`, whose locks a DDL would wait behind."""
        if not self.dialect.partitioned:
            return
        items: list[Any] = [*batch.sightings, *batch.faces]
        months = {_month(naive_utc(s.ts).date()) for s in items} - self._partitions
        if months:
            self.engine.ensure_partitions(months)
            self._partitions |= months

    def write(self, batch: Batch) -> None:
        """One transaction; idempotent. Steps are methods so tests can inject failures."""
        self.prepare(batch)
        with self.engine.transaction() as s:
            written = self._write_in(s, batch)
        self._learn([written])

    def _learn(self, written: Iterable[_Written]) -> None:
        """Update the memos from writes that committed."""
        for w in written:
            self._places_known |= w.places
            for tenant, top in w.tops.items():
                self._tenant_max[tenant] = max(self._tenant_max.get(tenant, 0), top)

    def _write_in(self, s: Session, batch: Batch) -> _Written:
        self.prepare(batch)
        erased = self._erased_in_batch(s, batch)
        self._write_frames(s, batch)
        places = self._write_places(s, batch)
        sightings, redelivered = self._write_sightings(s, batch, erased)
        tops = self._write_visitors(s, batch, sightings, erased)
        self._write_rollup(s, sightings, redelivered)
        self._write_exemplars(s, batch, redelivered, erased)
        self._write_scenes(s, batch)
        self._write_counts(s, batch)
        self._write_crops(s, batch, erased)
        self._write_held(s, batch)
        self._write_tracks(s, batch, erased)
        self._withdraw_in(s, batch)
        return _Written(places, tops)

    @staticmethod
    def _write_crops(s: Session, batch: Batch, erased: dict[str, set[str]]) -> None:
        """The crops the faces still carry (only with ``privacy.keep_crops``) of those that
        became sightings (not of a person erased meanwhile) or that the resolver holds;
        a face held and then dropped loses its crop. So every crop kept belongs to a
        sighting, or to a face still undecided, and erasure reaches each through its
        sighting. A redelivered face keeps its first crop."""
        keep = {(x.tenant, x.face_image_id) for x in batch.sightings
                if x.face_id not in erased.get(x.tenant, ())}
        _delete_faces(s, "face_crops", (k for k in batch.released if k not in keep))
        keep |= {(f.tenant, f.face_image_id) for f in batch.held}
        faces = {(f.tenant, f.face_image_id): f for f in batch.faces
                 if f.crop is not None and (f.tenant, f.face_image_id) in keep}
        if not faces:
            return
        from revisit.store.crops import encode_crop

        rows = []
        for f in faces.values():
            if (jpeg := encode_crop(f.crop)) is not None:  # type: ignore[arg-type]
                rows.append((f.tenant, f.face_image_id, naive_utc(f.ts), jpeg))
        if rows:
            s.insert("face_crops", ("tenant", "face_image_id", "ts", "jpeg"), rows, "DO NOTHING")

    def visitor_crops(self, tenant: str, visitor_id: str) -> list[tuple[str, datetime, bytes]]:
        """(face_image_id, time, JPEG) of the crops kept of a visitor's merge group, in
        time order."""
        canon = self.canonical_id(tenant, visitor_id)
        with self.engine.read() as s:
            group = [canon, *self._aliases_of(s, tenant, canon)]
            rows = s.execute(
                "SELECT c.face_image_id, c.ts, c.jpeg FROM face_crops c JOIN sightings x "
                "ON x.tenant = c.tenant AND x.face_image_id = c.face_image_id "
                f"WHERE c.tenant = ? AND x.face_id {_LIST} ORDER BY c.ts, c.face_image_id",
                [tenant, group]).fetchall()
        return [(r[0], r[1].replace(tzinfo=UTC), bytes(r[2])) for r in rows]

    @staticmethod
    def _write_held(s: Session, batch: Batch) -> None:
        """Faces the resolver holds now, and those it decided or dropped since: a crash
        between the batch that brought a face and the one that decides it loses nothing
        (the resolver reads them back). Written again as they are: idempotent."""
        _delete_faces(s, "held_faces", [*batch.released,
                                        *((f.tenant, f.face_image_id) for f in batch.held)])
        if batch.held:
            from revisit.queue.codec import encode_face

            now = now_utc()
            s.insert("held_faces", ("tenant", "face_image_id", "camera_id", "ts", "held_at",
                                    "face"),
                     [(f.tenant, f.face_image_id, f.camera_id, naive_utc(f.ts), now,
                       encode_face(f))
                      for f in {f.face_image_id: f for f in batch.held}.values()])

    @staticmethod
    def _write_tracks(s: Session, batch: Batch, erased: dict[str, set[str]]) -> None:
        """Open camera tracks: a tenant's stored ones go once read back or saved anew (so
        a start reads them once), then this batch's are saved; none of a person erased
        meanwhile."""
        for tenant in sorted({*batch.tracks_cleared, *(t.tenant for t in batch.tracks_saved)}):
            s.execute("DELETE FROM open_tracks WHERE tenant = ?", [tenant])
        rows = [t for t in batch.tracks_saved
                if not {t.visitor_id, t.twin_of} & erased.get(t.tenant, set())]
        if rows:
            now = now_utc()
            s.insert("open_tracks", ("tenant", "camera_id", "track_key", "visitor_id", "twin_of",
                                     "first_ts", "last_ts", "saved_at", "state"),
                     [(t.tenant, t.camera_id, t.key, t.visitor_id, t.twin_of,
                       naive_utc(t.first_ts), naive_utc(t.last_ts), now, t.state)
                      for t in rows], "DO NOTHING")

    def open_tracks(self, tenant: str) -> list[SavedTrack]:
        """The tenant's camera tracks saved open by the last run or server (stored visitor
        ids as they were: a merge since leaves an alias)."""
        rows = self._query("SELECT camera_id, track_key, visitor_id, twin_of, first_ts, "
                           "last_ts, state FROM open_tracks WHERE tenant = ? "
                           "ORDER BY camera_id, track_key", [tenant])
        out = []
        for cam, key, vid, twin, first, last, state in rows:
            held = tuple(json.loads(bytes(state)).get("held", []))
            out.append(SavedTrack(tenant, cam, int(key), vid, twin, first.replace(tzinfo=UTC),
                                  last.replace(tzinfo=UTC), held, bytes(state)))
        return out

    def held_faces(self, tenant: str) -> list[Face]:
        """The faces of the tenant's undecided tracks, as the last write left them, in
        time order (a resolver starting up continues those tracks)."""
        from revisit.queue.codec import decode_face

        rows = self._query("SELECT face FROM held_faces WHERE tenant = ? "
                           "ORDER BY ts, face_image_id", [tenant])
        return [decode_face(bytes(r[0])) for r in rows]

    def held_tenants(self, idle_before: datetime | None = None) -> list[str]:
        """Tenants with held faces (:meth:`held_faces`); with ``idle_before`` (naive UTC),
        only those none of whose held faces was written since (no undecided track of
        theirs has grown since then)."""
        if idle_before is None:
            rows = self._query("SELECT DISTINCT tenant FROM held_faces ORDER BY tenant")
        else:
            rows = self._query("SELECT tenant FROM held_faces GROUP BY tenant "
                               "HAVING max(held_at) < ? ORDER BY tenant", [idle_before])
        return [r[0] for r in rows]

    def _withdraw_in(self, s: Session, batch: Batch) -> None:
        """Visitors the resolver found to be no person (a poster that founded one before
        it was known to be static) are erased with the batch that found it, in the same
        transaction: a crash cannot leave them standing. One merged with anyone since is
        kept (a person may be in that group)."""
        changed = set()
        for tenant, vid in batch.visitors_withdrawn:
            if self._canonical(s, tenant, vid) != vid or self._aliases_of(s, tenant, vid):
                continue
            try:
                self._erase_in(s, tenant, vid)
            except KeyError:  # gone already (a redelivery)
                continue
            changed.add(tenant)
        _bump(s, changed)

    @staticmethod
    def _write_scenes(s: Session, batch: Batch) -> None:
        """The newest background per camera wins (a redelivered older one does not)."""
        newest: dict[tuple[str, str], Any] = {}
        for sc in batch.scenes:
            k = (sc.tenant, sc.camera_id)
            if k not in newest or sc.ts > newest[k].ts:
                newest[k] = sc
        for sc in newest.values():
            s.execute("DELETE FROM camera_scenes WHERE tenant = ? AND camera_id = ? AND ts <= ?",
                      [sc.tenant, sc.camera_id, naive_utc(sc.ts)])
            s.insert("camera_scenes", ("tenant", "camera_id", "width", "height", "image",
                                       "frames", "ts"),
                     [(sc.tenant, sc.camera_id, sc.width, sc.height, sc.jpeg, sc.frames,
                       naive_utc(sc.ts))])

    @staticmethod
    def _write_counts(s: Session, batch: Batch) -> None:
        """People per frame and zone (occupancy); a redelivered frame changes nothing."""
        if batch.counts:
            s.insert("people_counts", ("tenant", "image_id", "zone", "camera_id",
                                       "location_id", "ts", "count", "raw", "points"),
                     [(c.tenant, c.image_id, c.zone, c.camera_id, c.location_id,
                       naive_utc(c.ts), float(c.count), int(c.raw),
                       json.dumps(c.points, separators=(",", ":")) if c.points else None)
                      for c in batch.counts],
                     "DO NOTHING")

    def _erased_in_batch(self, s: Session, batch: Batch) -> dict[str, set[str]]:
        """Which visitor ids mentioned by the batch were erased: one query per tenant."""
        ids: dict[str, set[str]] = defaultdict(set)
        for x in batch.sightings:
            ids[x.tenant].add(x.face_id)
        for tenant, vid, _ in batch.visitors_created:
            ids[tenant].add(vid)
        for e in batch.exemplars_added:
            ids[e.tenant].add(e.visitor_id)
        for t in batch.tracks_saved:
            ids[t.tenant].update(v for v in (t.visitor_id, t.twin_of) if v is not None)
        return {t: self._erased(s, t, v) for t, v in ids.items()}

    @staticmethod
    def _erased(s: Session, tenant: str, ids: Iterable[str]) -> set[str]:
        ids = list(set(ids))
        if not ids:
            return set()
        rows = s.execute(f"SELECT visitor_id FROM erased WHERE tenant = ? AND visitor_id {_LIST}",
                         [tenant, ids]).fetchall()
        return {r[0] for r in rows}

    def _write_frames(self, s: Session, batch: Batch) -> None:
        if not batch.frames:
            return
        faces = Counter((f.tenant, f.image_id) for f in batch.faces)
        seen = Counter((x.tenant, x.image_id) for x in batch.sightings)
        now = now_utc()
        s.insert("frames", ("tenant", "image_id", "camera_id", "location_id", "ts", "faces",
                            "processed_at"), [
            (fr.tenant, fr.image_id, fr.camera_id, fr.location_id, naive_utc(fr.ts),
             max(faces[(fr.tenant, fr.image_id)], seen[(fr.tenant, fr.image_id)]), now)
            for fr in batch.frames
        ])

    def _write_places(self, s: Session, batch: Batch) -> set[tuple[str, str, str]]:
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
            s.insert("cameras", ("tenant", "camera_id", "location_id", "first_seen"),
                     [(k[0], k[1], *cams[k]) for k in sorted(cams)])
        if locs:
            s.insert("locations", ("tenant", "location_id", "first_seen"),
                     [(k[0], k[1], locs[k]) for k in sorted(locs)])
        return {("cam", *k) for k in cams} | {("loc", *k) for k in locs}

    def _write_sightings(
        self, s: Session, batch: Batch, erased: dict[str, set[str]]
    ) -> tuple[list[Sighting], set[tuple[str, str]]]:
        """Insert new sightings (+ embeddings). Returns the sightings kept and the
        (tenant, face_image_id) of those already stored (a redelivery)."""
        if not batch.sightings:
            return [], set()
        by_tenant: dict[str, list[Sighting]] = defaultdict(list)
        for x in batch.sightings:
            by_tenant[x.tenant].append(x)
        kept: list[Sighting] = []
        redelivered: set[tuple[str, str]] = set()
        for tenant, group in by_tenant.items():
            gone = erased.get(tenant, set())
            live = [x for x in group if x.face_id not in gone]
            if not live:
                continue
            rows = s.execute(
                f"SELECT face_image_id FROM sightings WHERE tenant = ? AND face_image_id {_LIST}",
                [tenant, [x.face_image_id for x in live]],
            ).fetchall()
            stored = {r[0] for r in rows}
            redelivered.update((tenant, f) for f in stored)
            # a face stored before is never inserted again, nor twice from one batch (on
            # PostgreSQL the key holds the time too, so a copy with another time would be a
            # second row): the first copy is kept
            for x in live:
                if x.face_image_id not in stored:
                    stored.add(x.face_image_id)
                    kept.append(x)
        if not kept:
            return [], redelivered
        s.insert("sightings", SIGHTING_TABLE_COLUMNS, [
            (x.tenant, x.face_image_id, x.face_id, x.image_id, x.camera_id, x.location_id,
             naive_utc(x.ts), int(x.bbox[0]), int(x.bbox[1]), int(x.bbox[2]), int(x.bbox[3]),
             float(x.quality), float(x.match_score), x.zone or None)
            for x in kept
        ])
        with_emb = [x for x in kept if x.embedding is not None]
        if with_emb:
            s.insert("embeddings", ("tenant", "face_image_id", "embedding"), [
                (x.tenant, x.face_image_id, np.asarray(x.embedding, dtype=np.float32).tolist())
                for x in with_emb
            ])
        return kept, redelivered

    def _write_visitors(
        self, s: Session, batch: Batch, sightings: list[Sighting], erased: dict[str, set[str]]
    ) -> dict[str, int]:
        """Upsert visitors (first/last seen widen only) and each tenant's id counter, which
        only ever grows (``greatest``, atomically in the row); returns the highest visitor
        number per tenant written."""
        span: dict[tuple[str, str], list[datetime]] = {}
        for tenant, vid, ts in batch.visitors_created:
            t = naive_utc(ts)
            span.setdefault((tenant, vid), [t, t])
        for x in sightings:
            t = naive_utc(x.ts)
            cur = span.setdefault((x.tenant, x.face_id), [t, t])
            cur[0] = min(cur[0], t)
            cur[1] = max(cur[1], t)
        tenants = {x.tenant for x in batch.sightings} | {f.tenant for f in batch.frames}
        tenants |= {t for t, _, _ in batch.visitors_created}
        # visitors created in this batch but erased meanwhile must not come back
        span = {k: v for k, v in span.items() if k[1] not in erased.get(k[0], set())}
        now = now_utc()
        if span:
            s.insert(
                "visitors", ("tenant", "visitor_id", "created_at", "first_seen", "last_seen"),
                [(k[0], k[1], now, *span[k]) for k in sorted(span)],
                "(tenant, visitor_id) DO UPDATE SET "
                "first_seen = least(visitors.first_seen, excluded.first_seen), "
                "last_seen = greatest(visitors.last_seen, excluded.last_seen)",
            )
        top: dict[str, int] = dict.fromkeys(tenants, 0)
        for tenant, vid in span:
            top[tenant] = max(top.get(tenant, 0), visitor_number_or_zero(vid))
        names = sorted(t for t, n in top.items()
                       if t not in self._tenant_max or n > self._tenant_max[t])
        if names:
            s.insert(
                "tenants", ("tenant", "max_visitor_number", "created_at"),
                [(n, top[n], now) for n in names],
                "(tenant) DO UPDATE SET max_visitor_number = "
                "greatest(tenants.max_visitor_number, excluded.max_visitor_number)",
            )
        return top

    def _write_rollup(
        self, s: Session, sightings: list[Sighting], redelivered: set[tuple[str, str]]
    ) -> None:
        """Recompute the ``visit_days`` rows the new sightings touch (one delete + one
        insert per batch, :func:`revisit.store.report_sql.rollup_refresh_sql`), then the
        ``visit_spans`` rows (:func:`revisit.store.visit_spans.refresh_spans`). A
        per-tenant lock serialises this between writers: each recomputation then sees
        every sighting committed before it, and two writers never insert the same row."""
        touched = rollup_touched(sightings, redelivered)
        if touched is None:
            return
        for tenant in touched.tenants:
            s.lock("rollup", tenant)
        delete, insert = rollup_refresh_sql(self.dialect)
        s.execute(delete, touched.delete_params)
        s.execute(insert, touched.insert_params)
        spans = spans_touched(sightings, redelivered)
        if spans is not None:
            refresh_spans(s, self.dialect, spans)

    def _rebuild_rollup_in(self, s: Session, tenant: str | None) -> None:
        if tenant is None:
            s.execute("DELETE FROM visit_days")
            s.execute("INSERT INTO visit_days " + rollup_rows_from_sightings(self.dialect, "true")
                      + " ORDER BY tenant, day, location_id")
            rebuild_spans(s, self.dialect, None)
            return
        s.lock("rollup", tenant)
        s.execute("DELETE FROM visit_days WHERE tenant = ?", [tenant])
        s.execute("INSERT INTO visit_days "
                  + rollup_rows_from_sightings(self.dialect, "s.tenant = ?")
                  + " ORDER BY day, location_id", [tenant])
        rebuild_spans(s, self.dialect, tenant)

    def rebuild_rollup(self, tenant: str | None = None) -> None:
        """Recompute the rollups (``visit_days``, ``visit_spans``) from the sightings (all
        tenants or one), e.g. after a bulk load that bypassed :meth:`write`."""
        with self.engine.transaction() as s:
            self._rebuild_rollup_in(s, tenant)

    def _write_exemplars(
        self, s: Session, batch: Batch, redelivered: set[tuple[str, str]],
        erased: dict[str, set[str]],
    ) -> None:
        """Add/drop exemplars. Adds for a redelivered sighting are skipped: replaying an
        old batch must not resurrect an exemplar a later batch dropped."""
        added = [
            e for e in batch.exemplars_added
            if (e.tenant, e.face_image_id) not in redelivered
            and e.visitor_id not in erased.get(e.tenant, set())
        ]
        if added:
            s.insert("exemplars", ("tenant", "visitor_id", "face_image_id", "embedding",
                                   "quality", "ts"), [
                (e.tenant, e.visitor_id, e.face_image_id,
                 np.asarray(e.embedding, dtype=np.float32).tolist(), float(e.quality),
                 naive_utc(e.ts))
                for e in added
            ])
        dropped: dict[str, list[str]] = defaultdict(list)
        for tenant, fid in batch.exemplars_dropped:
            dropped[tenant].append(fid)
        for tenant, fids in dropped.items():
            s.execute(f"DELETE FROM exemplars WHERE tenant = ? AND face_image_id {_LIST}",
                      [tenant, fids])

    @contextlib.contextmanager
    def identity_transaction(
        self, tenants: Iterable[str] = (), stream: str | None = None
    ) -> Iterator[IdentityTransaction]:
        """One transaction holding locks: the stream's first (if any), then the tenants'
        (here or via :meth:`IdentityTransaction.lock_tenants`), always in that order, so
        resolvers cannot deadlock. Resolution decisions made inside and written with
        :meth:`IdentityTransaction.write` are serialised per tenant across every process
        using this database."""
        with self.engine.transaction() as s:
            if stream is not None:
                s.lock("stream", stream)
            tx = IdentityTransaction(self, s)
            names = list(tenants)
            if names:
                tx.lock_tenants(names)
            yield tx
        self._learn(tx._written)

    @staticmethod
    def _skipped_where(tenant: str | None, pending_only: bool) -> tuple[str, list[Any]]:
        sql = " FROM resolve_skipped WHERE 1 = 1"
        params: list[Any] = []
        if tenant is not None:
            # an exact match within the comma-separated list (LIKE would take a tenant
            # id's "_" for any character)
            sql += " AND strpos(',' || tenants || ',', ?) > 0"
            params.append(f",{tenant},")
        if pending_only:
            sql += " AND replayed_at IS NULL"
        return sql, params

    def skipped_batches(self, tenant: str | None = None, pending_only: bool = False,
                        limit: int = 1000) -> list[dict[str, Any]]:
        """Stream gaps resolve skipped, newest first (``tenant``: those that held it), at
        most ``limit`` of them (:meth:`count_skipped_batches` counts them all)."""
        where, params = self._skipped_where(tenant, pending_only)
        rows = self._query("SELECT stream, seq, tenants, reason, skipped_at, replayed_at"
                           + where + " ORDER BY skipped_at DESC, stream, seq LIMIT ?",
                           [*params, limit])
        keys = ("stream", "seq", "tenants", "reason", "skipped_at", "replayed_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def count_skipped_batches(self, tenant: str | None = None,
                              pending_only: bool = False) -> int:
        """How many batches :meth:`skipped_batches` would list without a limit."""
        where, params = self._skipped_where(tenant, pending_only)
        return int(self._query("SELECT count(*)" + where, params)[0][0])

    def parked_streams(self) -> list[str]:
        """Streams with batches waiting in the resolve reorder buffer."""
        return [r[0] for r in self._query(
            "SELECT DISTINCT stream FROM resolve_parked WHERE applied_at IS NULL")]

    def unforwarded(self, applied_before: datetime) -> list[tuple[str, int, bytes]]:
        """Parked batches applied before ``applied_before`` that never reached the store
        stage (their resolver died between the commit and the forward), claimed: stamped
        applied now, so other idle resolvers do not forward them too (a claimer that dies
        before forwarding leaves them to be found again as late)."""
        with self.engine.transaction() as s:
            rows = s.execute(
                "UPDATE resolve_parked SET applied_at = ? WHERE applied_at < ? "
                "RETURNING stream, seq, payload", [now_utc(), applied_before]).fetchall()
        return sorted((r[0], int(r[1]), bytes(r[2])) for r in rows)

    def forwarded(self, batches: Iterable[tuple[str, int]]) -> None:
        """Applied parked batches now on the store stage's queue: their rows go."""
        with self.engine.transaction() as s:
            for stream, seq in batches:
                s.execute("DELETE FROM resolve_parked WHERE stream = ? AND seq = ? "
                          "AND applied_at IS NOT NULL", [stream, seq])

    def identity_version(self, tenant: str) -> int:
        rows = self._query("SELECT identity_version FROM tenants WHERE tenant = ?", [tenant])
        return int(rows[0][0] or 0) if rows else 0

    def load_exemplars(self, tenant: str, chunk: int = FETCH_ROWS,
                       enrolments_only: bool = False) -> Iterator[list[Exemplar]]:
        """Exemplars in chunks, in no particular order (sorting millions of vectors costs
        more than it gives); ``visitor_id`` is the canonical id (after merges), so a
        rebuilt index never hands out an id that was merged away. ``enrolments_only``:
        those of enrolment photos (revisit.known)."""
        only = f" AND e.face_image_id LIKE '{ENROLMENT_EXEMPLAR}%'" if enrolments_only else ""
        for rows in self.engine.stream(
            "SELECT coalesce(a.visitor_id, e.visitor_id), e.face_image_id, e.embedding, "
            "e.quality, e.ts FROM exemplars e LEFT JOIN aliases a "
            "ON a.tenant = e.tenant AND a.alias_id = e.visitor_id WHERE e.tenant = ?" + only,
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
        """Every sighting's embedding, in time order: a fixed order keeps consolidation's
        float sums, and so its decisions, the same from run to run."""
        for rows in self.engine.stream(
            "SELECT s.face_image_id, coalesce(a.visitor_id, s.face_id), m.embedding "
            "FROM embeddings m JOIN sightings s "
            "ON s.tenant = m.tenant AND s.face_image_id = m.face_image_id "
            "LEFT JOIN aliases a ON a.tenant = s.tenant AND a.alias_id = s.face_id "
            "WHERE m.tenant = ? ORDER BY s.ts, s.face_image_id",
            [tenant], chunk,
        ):
            yield [(r[0], r[1], np.asarray(r[2], dtype=np.float32)) for r in rows]

    def staff(self, tenant: str) -> tuple[str, ...]:
        """Visitor ids of the tenant's active staff enrolments (and ids merged with them)."""
        with self.engine.read() as s:
            return staff_ids(s, tenant)

    def tenants(self) -> list[str]:
        return [r[0] for r in self._query("SELECT tenant FROM tenants ORDER BY tenant")]

    def max_visitor_number(self, tenant: str) -> int:
        """Highest number ever issued (erased visitors included: ids are never reused)."""
        rows = self._query("SELECT max_visitor_number FROM tenants WHERE tenant = ?", [tenant])
        return int(rows[0][0]) if rows else 0

    def stats(self, tenant: str) -> dict[str, int]:
        out = {}
        with self.engine.read() as s:
            for table in ("frames", "sightings", "embeddings", "visitors", "exemplars",
                          "aliases", "cameras", "locations", "erased", "held_faces",
                          "face_crops", "open_tracks"):
                row = s.execute(f"SELECT count(*) FROM {table} WHERE tenant = ?",
                                [tenant]).fetchone()
                out[table] = int(row[0]) if row else 0
        return out

    # --- report side ----------------------------------------------------------------

    def _has_aliases(self, tenant: str) -> bool:
        return bool(self._query("SELECT 1 FROM aliases WHERE tenant = ? LIMIT 1", [tenant]))

    def _report_sql(self, query: ReportQuery, rows: bool,
                    totals: bool = False) -> tuple[str, list[Any]]:
        with self.engine.read() as s:
            query = with_staff_left_out(s, query)
        return report_sql(query, self.dialect, rows=rows, totals=totals,
                          aliases=self._has_aliases(query.tenant), rollup=self.use_rollup)

    def report(self, query: ReportQuery) -> tuple[ReportHeader, Iterator[ReportRow]]:
        """The header and the rows from one query (the header summed over its rows), so
        sightings written while a report is read are in both or in neither."""
        read = self._report_with_header(query)
        return cast(ReportHeader, next(read)), cast(Iterator[ReportRow], read)

    def _report_with_header(self, query: ReportQuery) -> Iterator[ReportHeader | ReportRow]:
        """The header, then the rows: started (suspended at the header) so that closing it
        unread also ends the query."""
        sql, params = self._report_sql(query, rows=True, totals=True)
        chunks = self.engine.stream(sql, params, FETCH_ROWS)
        try:
            first = next(chunks, [])
            yield header_from(query, first[0][7:] if first else None)
            for records in itertools.chain([first], chunks):
                for record in records:
                    yield row_from(record)
        finally:  # the engines' streams are generators: this ends the query
            getattr(chunks, "close", lambda: None)()

    def report_header(self, query: ReportQuery) -> ReportHeader:
        records = self._query(*self._report_sql(query, rows=False))
        return header_from(query, records[0] if records else None)

    def report_rows(self, query: ReportQuery) -> Iterator[ReportRow]:
        sql, params = self._report_sql(query, rows=True)
        for records in self.engine.stream(sql, params, FETCH_ROWS):
            for record in records:
                yield row_from(record)

    def sightings(self, query: SightingQuery) -> Iterator[dict[str, Any]]:
        sql, params = sightings_sql(query)
        for rows in self.engine.stream(sql, params, FETCH_ROWS):
            for row in rows:
                d = dict(zip(SIGHTING_COLUMNS, row, strict=True))
                d["ts"] = iso_utc(d["ts"])
                # stored as REAL: round away float32 noise (0.8999999761 -> 0.9)
                for k in ("quality", "match_score"):
                    if d[k] is not None:
                        d[k] = round(float(d[k]), 6)
                yield d

    # --- identity maintenance -------------------------------------------------------

    def canonical_id(self, tenant: str, visitor_id: str) -> str:
        with self.engine.read() as s:
            return self._canonical(s, tenant, visitor_id)

    def live_visitors(self, tenant: str, visitor_ids: Iterable[str]) -> dict[str, str | None]:
        ids = sorted(set(visitor_ids))
        if not ids:
            return {}
        with self.engine.read() as s:
            canon = {a: v for a, v in s.execute(
                f"SELECT alias_id, visitor_id FROM aliases WHERE tenant = ? AND alias_id {_LIST}",
                [tenant, ids]).fetchall()}
            live = {r[0] for r in s.execute(
                f"SELECT visitor_id FROM visitors WHERE tenant = ? AND visitor_id {_LIST}",
                [tenant, sorted({canon.get(i, i) for i in ids})]).fetchall()}
        return {i: c if (c := canon.get(i, i)) in live else None for i in ids}

    @staticmethod
    def _canonical(s: Session, tenant: str, visitor_id: str) -> str:
        row = s.execute("SELECT visitor_id FROM aliases WHERE tenant = ? AND alias_id = ?",
                        [tenant, visitor_id]).fetchone()
        return row[0] if row else visitor_id

    @staticmethod
    def _visitor_exists(s: Session, tenant: str, visitor_id: str) -> bool:
        return s.execute("SELECT 1 FROM visitors WHERE tenant = ? AND visitor_id = ?",
                         [tenant, visitor_id]).fetchone() is not None

    @staticmethod
    def _aliases_of(s: Session, tenant: str, canon: str) -> list[str]:
        return [r[0] for r in s.execute(
            "SELECT alias_id FROM aliases WHERE tenant = ? AND visitor_id = ? ORDER BY alias_id",
            [tenant, canon]).fetchall()]

    def _maintenance(self, tenant: str, fn: Callable[[Session], T]) -> T:
        """Merges, splits, erasure and purge take the tenant's lock (they change
        identities, as a resolver does) and bump ``identity_version`` so resolvers reload
        their gallery."""
        with self.identity_transaction([tenant]) as tx:
            out = fn(tx.session)
            tx.bump([tenant])
            return out

    def merge_visitors(self, tenant: str, keep: str, absorb: str, reason: str = "") -> MergeRecord:
        """Record ``absorb`` -> ``keep`` (both resolved to canonical ids first). Aliases that
        pointed at ``absorb`` are re-pointed at ``keep`` (aliases stay one hop deep) and
        listed in the merge log so a split can send them back."""

        def run(s: Session) -> MergeRecord:
            k = self._canonical(s, tenant, keep)
            a = self._canonical(s, tenant, absorb)
            for vid in (k, a):
                if not self._visitor_exists(s, tenant, vid):
                    raise KeyError(f"no visitor {vid} in tenant {tenant}")
            if k == a:
                raise ValueError(f"{absorb} and {keep} are already the same visitor ({k})")
            repointed = self._aliases_of(s, tenant, a)
            now = now_utc()
            s.execute("UPDATE aliases SET visitor_id = ? WHERE tenant = ? AND visitor_id = ?",
                      [k, tenant, a])
            s.execute("INSERT INTO aliases VALUES (?, ?, ?, ?, ?)", [tenant, a, k, now, reason])
            row = s.execute("SELECT coalesce(max(merge_id), 0) + 1 FROM merge_log "
                            "WHERE tenant = ?", [tenant]).fetchone()
            merge_id = int(row[0]) if row else 1
            s.execute("INSERT INTO merge_log VALUES (?, ?, ?, ?, ?, ?, ?::VARCHAR[], NULL)",
                      [tenant, merge_id, k, a, now, reason, repointed])
            return MergeRecord(merge_id, tenant, k, a, _aware(now) or _EPOCH, reason)

        return self._maintenance(tenant, run)

    def split_visitor(self, tenant: str, merged_id: str) -> MergeRecord:
        """Undo the merge that absorbed ``merged_id``: drop its alias and send back the
        aliases that merge re-pointed (those still in the same group and absorbed before
        it), so the report returns exactly to its numbers before the merge."""

        def run(s: Session) -> MergeRecord:
            row = s.execute(
                "SELECT merge_id, keep_id, merged_at, reason, repointed FROM merge_log "
                "WHERE tenant = ? AND absorb_id = ? AND split_at IS NULL",
                [tenant, merged_id],
            ).fetchone()
            if row is None:
                if not self._visitor_exists(s, tenant, merged_id):  # as merge: not ours
                    raise KeyError(f"no visitor {merged_id} in tenant {tenant}")
                absorbed = self._aliases_of(s, tenant, merged_id)
                hint = f"; ids merged into it: {', '.join(absorbed)}" if absorbed else ""
                raise ValueError(f"{merged_id} is not merged into another visitor{hint}")
            merge_id, keep_id, merged_at, reason, repointed = row
            group = self._canonical(s, tenant, merged_id)
            s.execute("DELETE FROM aliases WHERE tenant = ? AND alias_id = ?",
                      [tenant, merged_id])
            if repointed:
                s.execute(
                    "UPDATE aliases SET visitor_id = ? WHERE tenant = ? AND visitor_id = ? "
                    f"AND alias_id {_LIST} AND alias_id IN ("
                    "  SELECT absorb_id FROM merge_log WHERE tenant = ? AND split_at IS NULL "
                    "  AND merge_id < ?)",
                    [merged_id, tenant, group, list(repointed), tenant, merge_id],
                )
            now = now_utc()
            s.execute("UPDATE merge_log SET split_at = ? WHERE tenant = ? AND merge_id = ?",
                      [now, tenant, merge_id])
            return MergeRecord(
                int(merge_id), tenant, keep_id, merged_id, _aware(merged_at) or _EPOCH,
                reason or "", _aware(now),
            )

        return self._maintenance(tenant, run)

    def merges(self, tenant: str) -> list[MergeRecord]:
        rows = self._query(
            "SELECT merge_id, keep_id, absorb_id, merged_at, reason, split_at FROM merge_log "
            "WHERE tenant = ? ORDER BY merge_id", [tenant]
        )
        return [
            MergeRecord(int(r[0]), tenant, r[1], r[2], _aware(r[3]) or _EPOCH, r[4] or "",
                        _aware(r[5]))
            for r in rows
        ]

    def erase_visitor(self, tenant: str, visitor_id: str) -> tuple[dict[str, int], list[str]]:
        """Delete the visitor's whole merge group: sightings, embeddings, exemplars,
        aliases, merge records, visitor rows, rollup rows, enrolments, watchlist alerts
        and their deliveries; audit entries that named the person keep only their ids.
        The ids are remembered as erased (ids only) so a redelivered batch cannot bring
        the person back. Frames stay marked processed for the same reason. Returns the
        deleted counts and the face_image_ids of the group's exemplars (for the face
        index, whatever visitor id an index entry still carries)."""
        return self._maintenance(tenant, lambda s: self._erase_in(s, tenant, visitor_id))

    def _erase_in(self, s: Session, tenant: str, visitor_id: str
                  ) -> tuple[dict[str, int], list[str]]:
        """:meth:`erase_visitor` inside a transaction of the caller's."""
        canon = self._canonical(s, tenant, visitor_id)
        group = [canon, *self._aliases_of(s, tenant, canon)]
        known = s.execute(f"SELECT count(*) FROM visitors WHERE tenant = ? "
                          f"AND visitor_id {_LIST}", [tenant, group]).fetchone()
        if not known or not known[0]:
            raise KeyError(f"no visitor {visitor_id} in tenant {tenant}")
        g = [tenant, group]
        exemplar_ids = [r[0] for r in s.execute(
            f"SELECT face_image_id FROM exemplars WHERE tenant = ? AND visitor_id {_LIST}",
            g).fetchall()]
        counts = {
            "embeddings": s.count(
                "DELETE FROM embeddings WHERE tenant = ? AND face_image_id IN ("
                f"SELECT face_image_id FROM sightings WHERE tenant = ? AND face_id {_LIST})",
                [tenant, *g]),
            "crops": s.count(
                "DELETE FROM face_crops WHERE tenant = ? AND face_image_id IN ("
                f"SELECT face_image_id FROM sightings WHERE tenant = ? AND face_id {_LIST})",
                [tenant, *g]),
            "sightings": s.count(f"DELETE FROM sightings WHERE tenant = ? AND face_id {_LIST}",
                                 g),
        }
        s.lock("rollup", tenant)
        s.execute(f"DELETE FROM visit_days WHERE tenant = ? AND face_id {_LIST}", g)
        s.execute(f"DELETE FROM visit_spans WHERE tenant = ? AND face_id {_LIST}", g)
        counts["exemplars"] = s.count(
            f"DELETE FROM exemplars WHERE tenant = ? AND visitor_id {_LIST}", g)
        counts["aliases"] = s.count(
            f"DELETE FROM aliases WHERE tenant = ? AND alias_id {_LIST}", g)
        counts["merge_log"] = s.count(
            f"DELETE FROM merge_log WHERE tenant = ? AND (keep_id {_LIST} "
            f"OR absorb_id {_LIST})", [tenant, group, group])
        counts["visitors"] = s.count(
            f"DELETE FROM visitors WHERE tenant = ? AND visitor_id {_LIST}", g)
        # an erased person's enrolments (staff, watchlist) end with them, and so do the
        # watchlist alerts raised on them (the only alerts with a subject)
        counts["enrolments"] = s.count(
            f"DELETE FROM enrolments WHERE tenant = ? AND visitor_id {_LIST}", g)
        counts["alert_deliveries"] = s.count(
            "DELETE FROM alert_deliveries WHERE tenant = ? AND alert_id IN ("
            f"SELECT alert_id FROM alerts WHERE tenant = ? AND subject {_LIST})",
            [tenant, *g])
        counts["alerts"] = s.count(
            f"DELETE FROM alerts WHERE tenant = ? AND subject {_LIST}", g)
        # a camera track left open on them (or on a reflection of them)
        counts["open_tracks"] = s.count(
            f"DELETE FROM open_tracks WHERE tenant = ? AND (visitor_id {_LIST} "
            f"OR twin_of {_LIST})", [tenant, group, group])
        counts["audit_redacted"] = redact_audit(s, tenant, set(group))
        s.execute("INSERT INTO erased SELECT ?, unnest(?::VARCHAR[]), ? "
                  "ON CONFLICT DO NOTHING", [tenant, group, now_utc()])
        return counts, exemplar_ids

    @classmethod
    def _redact_gone_merges(cls, s: Session, tenant: str) -> int:
        """The reason given for a merge goes once either visitor is gone (as erasure does)."""
        named: set[str] = set()
        for (detail,) in s.execute(
                "SELECT detail FROM tenancy_audit WHERE tenant = ? AND action = 'visitor.merge' "
                "AND strpos(detail, '\"reason\"') > 0", [tenant]).fetchall():
            try:
                d = json.loads(detail)
            except ValueError:
                continue
            if isinstance(d, dict) and d.get("reason"):
                named |= {str(d[k]) for k in ("keep", "absorb") if d.get(k)}
        if not named:
            return 0
        here = {r[0] for r in s.execute(
            f"SELECT visitor_id FROM visitors WHERE tenant = ? AND visitor_id {_LIST}",
            [tenant, sorted(named)]).fetchall()}
        return redact_audit(s, tenant, named - here) if named - here else 0

    def visitor_face_ids(self, tenant: str, visitor_id: str) -> set[str]:
        with self.engine.read() as s:
            canon = self._canonical(s, tenant, visitor_id)
            rows = s.execute(
                "SELECT s.face_image_id FROM sightings s LEFT JOIN aliases a "
                "ON a.tenant = s.tenant AND a.alias_id = s.face_id "
                "WHERE s.tenant = ? AND coalesce(a.visitor_id, s.face_id) = ?",
                [tenant, canon]).fetchall()
        return {r[0] for r in rows}

    def purge_before(self, tenant: str, cutoff: datetime, now: datetime | None = None
                     ) -> tuple[dict[str, int], list[str]]:
        """Retention: sightings, their embeddings and exemplars older than ``cutoff``,
        enrolments expired by ``now`` (naive UTC; default: the clock) with their photos'
        exemplars, then visitors left with nothing and the merge records that named them,
        and the tenant's rollup recomputed, at once. What is derived from purged rows
        goes too: alerts and their deliveries, the watchlist's audit entries, and the
        visitors' first and last sighting times."""
        now = now if now is not None else now_utc()

        def run(s: Session) -> tuple[dict[str, int], list[str]]:
            dropped = [r[0] for r in s.execute(
                "SELECT face_image_id FROM exemplars WHERE tenant = ? AND ts < ? "
                f"AND face_image_id NOT LIKE '{ENROLMENT_EXEMPLAR}%'",
                [tenant, cutoff]).fetchall()]
            expired = [r[0] for r in s.execute(
                "SELECT enrolment_id FROM enrolments WHERE tenant = ? AND expires_at < ?",
                [tenant, now]).fetchall()]
            for enrolment_id in expired:
                like = [tenant, f"{ENROLMENT_EXEMPLAR}{enrolment_id}-%"]
                dropped += [r[0] for r in s.execute(
                    "SELECT face_image_id FROM exemplars WHERE tenant = ? "
                    "AND face_image_id LIKE ?", like).fetchall()]
                s.execute("DELETE FROM exemplars WHERE tenant = ? AND face_image_id LIKE ?",
                          like)
            s.execute(f"DELETE FROM enrolments WHERE tenant = ? AND enrolment_id {_LIST}",
                      [tenant, expired])
            t, c = [tenant], [tenant, cutoff]
            counts = {
                "enrolments_expired": len(expired),
                "embeddings": s.count(
                    "DELETE FROM embeddings WHERE tenant = ? AND face_image_id IN ("
                    "SELECT face_image_id FROM sightings WHERE tenant = ? AND ts < ?)", t + c),
                "sightings": s.count("DELETE FROM sightings WHERE tenant = ? AND ts < ?", c),
                # enrolment photos' embeddings live as long as their enrolment (its expiry,
                # its removal), not by the camera data's retention
                "exemplars": s.count("DELETE FROM exemplars WHERE tenant = ? AND ts < ? AND "
                                     f"face_image_id NOT LIKE '{ENROLMENT_EXEMPLAR}%'", c),
                "scenes": s.count("DELETE FROM camera_scenes WHERE tenant = ? AND ts < ?", c),
                "held_faces": s.count("DELETE FROM held_faces WHERE tenant = ? AND ts < ?", c),
                # a track holds what its faces were since it began
                "open_tracks": s.count(
                    "DELETE FROM open_tracks WHERE tenant = ? AND first_ts < ?", c),
                "crops": s.count("DELETE FROM face_crops WHERE tenant = ? AND ts < ?", c),
                "people_counts": s.count(
                    "DELETE FROM people_counts WHERE tenant = ? AND ts < ?", c),
                "alerts": s.count("DELETE FROM alerts WHERE tenant = ? AND started_at < ? "
                                  "AND ended_at IS NOT NULL", c),
                "alert_deliveries": s.count(
                    "DELETE FROM alert_deliveries d WHERE d.tenant = ? AND (d.ts < ? OR NOT "
                    "EXISTS (SELECT 1 FROM alerts a WHERE a.tenant = d.tenant "
                    "AND a.alert_id = d.alert_id))", c),
                # the watchlist's audit entries copy its alerts (who, where, when)
                "audit": s.count("DELETE FROM tenancy_audit WHERE tenant = ? AND ts < ? "
                                 "AND action = 'watchlist.alert'", c),
                # visitors left with no sighting: neither their own nor a merged id's (an
                # enrolled person stays while enrolled)
                "visitors": s.count(
                    "DELETE FROM visitors v WHERE v.tenant = ? AND NOT EXISTS (SELECT 1 FROM "
                    "enrolments e WHERE e.tenant = v.tenant AND e.visitor_id = v.visitor_id) "
                    "AND NOT EXISTS ("
                    "SELECT 1 FROM sightings s WHERE s.tenant = v.tenant "
                    "AND s.face_id = v.visitor_id) AND NOT EXISTS (SELECT 1 FROM aliases a "
                    "JOIN sightings s ON s.tenant = a.tenant AND s.face_id = a.alias_id "
                    "WHERE a.tenant = v.tenant AND a.visitor_id = v.visitor_id)", t),
            }
            gone = "NOT EXISTS (SELECT 1 FROM visitors v WHERE v.tenant = {t}.tenant AND " \
                   "v.visitor_id = {t}.{col})"
            counts["aliases"] = s.count(
                f"DELETE FROM aliases a WHERE a.tenant = ? AND ({gone.format(t='a', col='alias_id')}"
                f" OR {gone.format(t='a', col='visitor_id')})", t)
            counts["merge_log"] = s.count(
                f"DELETE FROM merge_log m WHERE m.tenant = ? AND ({gone.format(t='m', col='keep_id')}"
                f" OR {gone.format(t='m', col='absorb_id')})", t)
            counts["audit_redacted"] = self._redact_gone_merges(s, tenant) + redact_audit(
                s, tenant, set(expired), ("enrolment_id",))
            # a visitor's first and last sighting times and its creation time say nothing
            # from before the cutoff any more
            s.execute(
                "UPDATE visitors SET "
                "first_seen = (SELECT min(x.ts) FROM sightings x WHERE x.tenant = visitors.tenant "
                "AND x.face_id = visitors.visitor_id), "
                "last_seen = (SELECT max(x.ts) FROM sightings x WHERE x.tenant = visitors.tenant "
                "AND x.face_id = visitors.visitor_id), "
                "created_at = CASE WHEN created_at < ? THEN ? ELSE created_at END "
                "WHERE tenant = ? AND (first_seen < ? OR created_at < ?)",
                [cutoff, cutoff, tenant, cutoff, cutoff])
            self._rebuild_rollup_in(s, tenant)
            return counts, dropped

        return self._maintenance(tenant, run)

    def camera_location(self, tenant: str, camera_id: str) -> str | None:
        """The location a camera's frames were stored under (None: never seen)."""
        rows = self._query("SELECT location_id FROM cameras WHERE tenant = ? AND camera_id = ?",
                           [tenant, camera_id])
        return str(rows[0][0]) if rows else None

    def scene(self, tenant: str, camera_id: str) -> tuple[int, int, bytes] | None:
        """The camera's empty-scene background: (width, height, JPEG), or None."""
        rows = self._query("SELECT width, height, image FROM camera_scenes WHERE tenant = ? "
                           "AND camera_id = ?", [tenant, camera_id])
        return (int(rows[0][0]), int(rows[0][1]), bytes(rows[0][2])) if rows else None

    def face_positions(self, tenant: str, camera_id: str, ts_from: datetime,
                       ts_to: datetime) -> Iterator[list[Any]]:
        """Centres (x, y) of the camera's sightings in [ts_from, ts_to), in chunks; staff
        left out, as in every visitor analysis."""
        staff = list(self.staff(tenant))
        yield from self.engine.stream(
            "SELECT bbox_x + bbox_w / 2.0, bbox_y + bbox_h / 2.0 FROM sightings "
            "WHERE tenant = ? AND camera_id = ? AND ts >= ? AND ts < ? "
            "AND face_id NOT IN (SELECT unnest(?::VARCHAR[]))",
            [tenant, camera_id, naive_utc(ts_from), naive_utc(ts_to), staff], FETCH_ROWS)

    def people_positions(self, tenant: str, camera_id: str, ts_from: datetime,
                         ts_to: datetime) -> Iterator[list[Any]]:
        """Where the camera's people counter found people in [ts_from, ts_to), in chunks."""
        for rows in self.engine.stream(
                "SELECT points FROM people_counts WHERE tenant = ? AND camera_id = ? "
                "AND zone = '' AND points IS NOT NULL AND ts >= ? AND ts < ?",
                [tenant, camera_id, naive_utc(ts_from), naive_utc(ts_to)], FETCH_ROWS):
            yield [tuple(p) for (points,) in rows for p in json.loads(points)]

    def visitor_detail(self, tenant: str, visitor_id: str) -> VisitorDetail | None:
        with self.engine.read() as s:
            canon = self._canonical(s, tenant, visitor_id)
            if not self._visitor_exists(s, tenant, canon):
                return None
            aliases = self._aliases_of(s, tenant, canon)
            group = [canon, *aliases]
            locs = s.execute(
                "SELECT location_id, count(*), min(ts), max(ts) FROM sightings "
                f"WHERE tenant = ? AND face_id {_LIST} GROUP BY location_id "
                "ORDER BY location_id", [tenant, group]).fetchall()
            ex = s.execute(
                "SELECT count(*), avg(quality), max(quality) FROM exemplars WHERE tenant = ? "
                f"AND visitor_id {_LIST}", [tenant, group]).fetchone()
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


SIGHTING_TABLE_COLUMNS = (
    "tenant", "face_image_id", "face_id", "image_id", "camera_id", "location_id", "ts",
    "bbox_x", "bbox_y", "bbox_w", "bbox_h", "quality", "match_score", "zone",
)


def redact_audit(s: Session, tenant: str, ids: set[str],
                 keys: tuple[str, ...] = _AUDIT_SUBJECTS) -> int:
    """Audit entries about a person (an enrolment's label and reason, a watchlist alert's
    place and time, the reason given for a merge of theirs) whose ``keys`` name one of
    ``ids`` keep what was done, when and by whom, and the ids: the person's details go.
    ``keys``: the visitor ids an entry names (erasure, retention) or its enrolment id (an
    enrolment removed or expired)."""
    if not ids:
        return 0
    n = 0
    # only entries whose text names one of the ids are read and parsed
    named = " OR ".join("strpos(detail, ?) > 0" for _ in ids)
    for audit_id, detail in s.execute(
            "SELECT id, detail FROM tenancy_audit WHERE tenant = ? AND action IN "
            f"('known.enrol', 'known.remove', 'watchlist.alert', 'visitor.merge') "
            f"AND ({named})",
            [tenant, *sorted(ids)]).fetchall():
        try:
            d = json.loads(detail)
        except ValueError:
            continue
        if not isinstance(d, dict) or not ids & {d.get(k) for k in keys}:
            continue
        kept = {k: d[k] for k in (*_AUDIT_SUBJECTS, "enrolment_id", "alert_id", "group",
                                  "merge_id") if k in d}
        s.execute("UPDATE tenancy_audit SET detail = ? WHERE id = ?",
                  [json.dumps({**kept, "erased": True}, sort_keys=True), audit_id])
        n += 1
    return n
