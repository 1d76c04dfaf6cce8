"""The resolve stage's protocol: identities decided and committed with the sightings in one
PostgreSQL transaction, per tenant lock, each stream's batches in sequence order
(the package docstring has the whole story)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from revisit.config import Settings
from revisit.distributed.topology import sequence_of, tenants_of
from revisit.ingest.status import BatchLedger
from revisit.queue.codec import decode_batch, encode_batch
from revisit.records import Batch, Face, Sighting
from revisit.store.sql_store import now_utc
from revisit.tenancy.privacy import RetentionCutoffs

log = logging.getLogger(__name__)

# A parked batch applied this long ago and still not forwarded lost its resolver between
# the commit and the forward: an idle resolver forwards it (a duplicate is harmless: the
# store stage's alerts keep their cooldowns).
FORWARD_ORPHAN_S = 300.0


class _LoadGuard:
    """Index wrapper for a shared (pgvector) index: rebuilding a resolver's bookkeeping from
    the store must not re-insert every exemplar into a table that already has them."""

    def __init__(self, index: Any) -> None:
        self.inner = index
        self.loading = False

    def add(self, exemplars: Any) -> None:
        if not self.loading:
            self.inner.add(exemplars)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class ResolveHandler:
    """Resolve + commit, serialised per tenant and ordered per stream (module docstring)."""

    settings: Settings
    store: Any  # PostgresStore
    versions: dict[str, int] = field(default_factory=dict)
    resolver: Any = None
    index: Any = None
    # (payload, reason) -> the stage queue's dead letters; the worker sets it
    dead_letter: Callable[[bytes, str], None] | None = None
    _last_work: float = field(default_factory=time.monotonic)
    # applied parked batches returned for the store stage, not yet confirmed forwarded
    _pending: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from revisit.store.postgres_store import PostgresStore

        if not isinstance(self.store, PostgresStore):
            raise RuntimeError(
                "resolve workers need a shared store: set store_url = \"postgresql://...\" "
                "(DuckDB is one process's file)"
            )
        self.ledger = BatchLedger(self.store)
        self.retention = RetentionCutoffs(self.store,
                                          enabled=self.settings.privacy.retention_at_door)
        self._reset()

    def _reset(self) -> None:
        from revisit.backends import open_index
        from revisit.identity.resolver import Resolver

        self.index = open_index(self.settings)
        shared = type(self.index).__name__ == "PgVectorIndex"
        self.guard = _LoadGuard(self.index) if shared else None
        self.resolver = Resolver(self.settings, self.store, self.guard or self.index,
                                 refuse=self.retention.refuse)
        self.versions.clear()

    def __call__(self, batch: Batch) -> list[Batch]:
        self._last_work = time.monotonic()
        self.store.prepare(batch)  # partitions: DDL outside the locked transaction
        stream, seq = sequence_of(batch.batch_id)
        try:
            if stream is None:
                with self.store.identity_transaction() as tx:
                    return [self._apply(tx, batch)]
            with self.store.identity_transaction(stream=stream) as tx:
                last = tx.last_seq(stream)
                if seq <= last and tx.take_skipped(stream, seq):
                    log.warning("applying %s, skipped earlier, out of order", batch.batch_id)
                    out = [self._apply(tx, batch)]
                elif seq <= last:
                    out = [self._replay(batch)]
                elif seq > last + 1:
                    tx.park(stream, seq, encode_batch(batch))
                    out = []
                else:
                    out = [self._apply(tx, batch)]
                    tx.advance(stream, seq)
        except BaseException:
            self._reset()  # in-memory decisions of a rolled-back transaction are void
            raise
        # committed: parked batches whose turn has come follow (a resolver killed while
        # draining leaves some: whoever comes next, or idle(), applies them); a failure
        # there leaves them parked and must not take this batch's result with it
        return out + self._drain_quietly(stream)

    def forwarded(self) -> None:
        """The worker put what this handler returned on the store stage's queue: the
        applied parked batches among it leave the reorder buffer."""
        if self._pending:
            self.store.forwarded(self._pending)
            self._pending.clear()

    def idle(self) -> list[Batch]:
        """Between deliveries: forward parked batches applied by a resolver that died
        before forwarding them, apply parked batches whose turn has come (their stream's
        predecessor was committed by a resolver that died before draining); after
        ``pipeline.idle_flush_s`` without a batch, store the faces open tracks hold."""
        out: list[Batch] = []
        try:
            cutoff = now_utc() - timedelta(seconds=FORWARD_ORPHAN_S)
            for stream, seq, payload in self.store.unforwarded(cutoff):
                log.warning("stream %s: batch %d was applied but never forwarded; "
                            "forwarding it now", stream, seq)
                out.append(self._replay(decode_batch(payload)))
                self._pending.append((stream, seq))
            for stream in self.store.parked_streams():
                out += self._drain_quietly(stream)
            out += self._flush_held()
        except BaseException:
            self._reset()
            if not out:
                raise
            log.exception("resolver idle: storing held faces failed; they wait for the next try")
        return out

    def _flush_held(self) -> list[Batch]:
        """The end of a stream, as far as a resolver can tell: nothing came for a while.
        Open tracks are decided and their held faces stored, in one transaction under the
        tenants' locks (after a reload if another resolver moved them meanwhile)."""
        wait = self.settings.pipeline.idle_flush_s
        wait = self.settings.identity.track_gap_s if wait is None else wait
        if time.monotonic() - self._last_work < wait:
            return []
        # and faces a resolver that stopped or moved on left held, once no track of
        # their tenant has grown for as long (another resolver's live tracks keep theirs)
        quiet = self.store.held_tenants(now_utc() - timedelta(seconds=wait))
        tenants = sorted(self.resolver.tracking_tenants() | set(quiet))
        if not tenants:
            return []
        with self.store.identity_transaction(tenants) as tx:
            self._catch_up(tx, tenants)
            with self._bound(tx):
                # stored held faces are read back only where nobody's track is live
                tail = self.resolver.flush(quiet)
                if tail is None:
                    return []
                tx.write(tail)
            tx.bump(tenants)
            for t in tenants:
                self.versions[t] += 1
        log.info("resolver idle: stored %d held face(s) of open tracks", len(tail.sightings))
        return [tail]

    def stop(self) -> list[Batch]:
        """A graceful stop (SIGTERM, a deploy): save the open tracks a next snapshot could
        still join, as the embedded pipeline does at a stop (``Resolver.flush`` with
        ``keep_open``), in one transaction under their tenants' locks; the next resolver
        to take the tenant continues them. A tenant another resolver moved on since is
        left to it: this one's tracks of it are stale."""
        tenants = sorted(self.resolver.tracking_tenants())
        if not tenants:
            return []
        with self.store.identity_transaction(tenants) as tx:
            current = {t: tx.version(t) for t in tenants}
            stale = [t for t in tenants if self.versions.get(t) != current[t]]
            for t in stale:
                self.resolver.drop_tracks(t)
            with self._bound(tx):
                tail = self.resolver.flush(keep_open=True)
                if tail is None:
                    return []
                tx.write(tail)
            tx.bump(t for t in tenants if t not in stale)  # not the mover's: it keeps on
        log.info("resolver stopping: saved %d open track(s), stored %d sighting(s)",
                 len(tail.tracks_saved), len(tail.sightings))
        return [tail]

    def _drain_quietly(self, stream: str) -> list[Batch]:
        """:meth:`_drain`, and what it applied even if a later one failed (each is
        committed on its own: its sightings go on to the store stage either way)."""
        out: list[Batch] = []
        try:
            self._drain(stream, out)
        except Exception:
            log.exception("stream %s: applying parked batches failed; they stay parked "
                          "for the next try", stream)
            self._reset()
        return out

    def _drain(self, stream: str, out: list[Batch]) -> None:
        """Apply parked batches that are next in line, one transaction each, into ``out``.
        One that fails for a reason of its own (not a backend that is down) is set aside
        as a dead letter (:meth:`_set_aside`): it must not hold its stream for ever."""
        from revisit.backends import unavailable_errors

        while True:
            payload = None
            try:
                with self.store.identity_transaction(stream=stream) as tx:
                    nxt = tx.last_seq(stream) + 1
                    payload = tx.unpark(stream, nxt)
                    if payload is None:
                        if self._skip_gap(tx, stream, nxt):
                            continue
                        return
                    applied = self._apply(tx, decode_batch(payload))
                    tx.advance(stream, nxt)
                out.append(applied)
                self._pending.append((stream, nxt))
            except unavailable_errors():
                raise
            except Exception as exc:
                if payload is None or self.dead_letter is None:
                    raise
                self._reset()
                self._set_aside(stream, nxt, payload, exc)

    def _set_aside(self, stream: str, seq: int, payload: bytes, exc: Exception) -> None:
        """A parked batch that cannot be applied goes to the dead letters (``revisit admin
        replay-dead`` brings it back after the cause is fixed; it is then applied out of
        order) and is recorded as skipped, so the stream goes on."""
        why = (f"parked batch {seq} of {stream} failed: {type(exc).__name__}: {exc}; moved "
               "to the dead letters (`revisit admin replay-dead` after the fix)")
        log.error("stream %s: %s", stream, why)
        try:
            tenants = ",".join(tenants_of(decode_batch(payload)))
        except Exception:  # undecodable: the dead letter keeps it as it is
            tenants = ""
        with self.store.identity_transaction(stream=stream) as tx:
            if tx.last_seq(stream) + 1 != seq or tx.unpark(stream, seq, forward=False) is None:
                return  # another resolver moved on meanwhile
            tx.skip(stream, seq, seq, tenants, why)
            self.dead_letter(payload, why)  # type: ignore[misc]  # before the commit

    def _skip_gap(self, tx: Any, stream: str, nxt: int) -> bool:
        """Stop waiting for ``nxt..`` once later batches have waited ``gap_wait_s``: a
        batch that never comes (dead-lettered upstream) must not hold its stream."""
        first = tx.first_parked(stream)
        if first is None:
            return False
        seq, since, payload = first
        wait = self.settings.pipeline.gap_wait_s
        if (now_utc() - since).total_seconds() < wait:
            return False
        tenants = ",".join(tenants_of(decode_batch(payload)))
        reason = (f"not delivered to resolve within {wait} s while later batches waited "
                  "(dead-lettered or lost upstream); `revisit admin replay-dead` "
                  "re-publishes dead letters, and a late copy is applied")
        log.error("stream %s: skipping batches %d..%d: %s", stream, nxt, seq - 1, reason)
        tx.skip(stream, nxt, seq - 1, tenants, reason)
        return True

    def _apply(self, tx: Any, batch: Batch) -> Batch:
        tenants = tenants_of(batch)
        tx.lock_tenants(tenants)
        if self._committed(batch):
            # stored by this batch (a redelivery: done already, left so) or by another one
            # that carried the same images (posted twice): then this one is done too
            out = self._replay(batch)
            for t in tenants:
                self.ledger.stored_before(t, out, session=tx.session)
            return out
        posted = [f.tenant for f in batch.frames]
        self._drop_stored_frames(batch)  # what is left out counts as duplicates
        left = {t: posted.count(t) - sum(1 for f in batch.frames if f.tenant == t)
                for t in tenants}
        self._catch_up(tx, tenants)
        with self._bound(tx):
            out = self.resolver.resolve(batch)
            tx.write(out)  # with the faces' crops, if kept: no need to carry them on
        for f in out.faces:
            f.crop = None
        for t in tenants:  # an API batch's status: done with the sightings, atomically
            self.ledger.done(t, out, session=tx.session, duplicates=left[t])
        tx.bump(tenants)
        for t in tenants:
            self.versions[t] += 1
        return out

    def _catch_up(self, tx: Any, tenants: list[str]) -> None:
        """Under the tenants' locks: reload those another process changed since."""
        current = {t: tx.version(t) for t in tenants}
        stale = [t for t in tenants if self.versions.get(t) != current[t]]
        if stale:
            self._reload(stale)
        self.versions.update(current)

    def _bound(self, tx: Any) -> Any:
        """A pgvector index works in the transaction's connection; faiss needs nothing."""
        bind = getattr(self.index, "bind", None)
        return bind(tx.conn) if bind is not None else contextlib.nullcontext()

    def _reload(self, tenants: list[str]) -> None:
        """Another process changed these tenants' identities since we last looked."""
        if self.guard is None:  # faiss in memory: rebuild everything from the store, lazily
            self._reset()
            return
        self.guard.loading = True  # pgvector is shared: rebuild only our bookkeeping
        try:
            for t in tenants:  # open tracks too: another resolver may have decided them
                self.resolver.rebuild(t)
        finally:
            self.guard.loading = False

    def _committed(self, batch: Batch) -> bool:
        """All frames stored already: a replay of a committed batch (kill before ack)."""
        by_tenant: dict[str, list[str]] = {}
        for f in batch.frames:
            by_tenant.setdefault(f.tenant, []).append(f.image_id)
        if not by_tenant:
            return False
        return all(
            len(self.store.known_frames(t, ids)) == len(set(ids)) for t, ids in by_tenant.items()
        )

    def _drop_stored_frames(self, batch: Batch) -> None:
        """Frames of this batch stored by an earlier one (the same image sent again, e.g.
        published while its first copy was still in flight) are left out: a frame is
        stored once. Checked under the tenant lock, so two resolvers cannot both miss it."""
        by_tenant: dict[str, list[str]] = {}
        for f in batch.frames:
            by_tenant.setdefault(f.tenant, []).append(f.image_id)
        known = {(t, i) for t, ids in by_tenant.items() for i in self.store.known_frames(t, ids)}
        if known:
            batch.frames = [f for f in batch.frames if (f.tenant, f.image_id) not in known]
            batch.faces = [f for f in batch.faces if (f.tenant, f.image_id) not in known]

    def _replay(self, batch: Batch) -> Batch:
        """The batch as it was committed: sightings from the stored assignments."""
        by_tenant: dict[str, list[Face]] = {}
        for f in batch.faces:
            by_tenant.setdefault(f.tenant, []).append(f)
        batch.sightings = []
        for tenant, faces in by_tenant.items():
            known = self.store.existing_sightings(tenant, [f.face_image_id for f in faces])
            for f in faces:
                if f.face_image_id in known:
                    batch.sightings.append(Sighting(
                        tenant=tenant, face_id=known[f.face_image_id],
                        face_image_id=f.face_image_id, image_id=f.image_id,
                        camera_id=f.camera_id, location_id=f.location_id, ts=f.ts,
                        bbox=f.bbox, quality=f.quality, match_score=1.0,
                        embedding=f.embedding,
                    ))
        return batch
