"""Background processing of accepted camera batches.

HTTP handlers only validate and enqueue: ``submit`` puts the batch on a bounded inbox
without waiting (full -> :class:`QueueFull` -> 429), and one :class:`~revisit.pipeline.Pipeline`
runs the runtime's stages in threads (detect / embed overlap, resolve / store serialised
with privacy operations by ``write_lock``). A failing batch is marked failed and skipped by
later stages; it never stops the pipeline.

Idempotency: frames the store already has, or that are queued right now, are not enqueued
again (``image_id`` is the key; the store's primary keys make a redelivery harmless too).
With a broker, frames in flight are not known here: they are published again, and the
resolve worker leaves out those another batch stored meanwhile, counted as duplicates.

Durability: without a broker, an accepted batch is written to the :class:`Spool` before
it is queued and deleted once done; a failed batch's file moves to ``spool/failed`` (kept
for ``revisit admin replay``, never lost); at start the processor runs whatever an earlier
process left there, under the same batch ids. Statuses live in the store
(:mod:`revisit.ingest.status`), so every replica answers the same and they survive restarts;
on the embedded DuckDB store, whose writes are serialised, an accepted batch's status is
kept in memory until the pipeline takes it, so that a 202 never waits for a batch being
stored (the spool file already makes the acceptance durable).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

from revisit.api.metrics import Metrics
from revisit.api.spool import Spool, meta_status, status_meta
from revisit.ingest.status import BatchLedger, BatchStatus
from revisit.pipeline import Pipeline, Runtime, StageFn
from revisit.queue.base import BrokerUnavailable, QueueFull, StageQueue
from revisit.queue.memory import MemoryQueue
from revisit.records import Batch, Frame

log = logging.getLogger(__name__)

__all__ = ["BatchProcessor", "BatchStatus", "BrokerUnavailable", "QueueFull"]


class StaleDecisions(RuntimeError):
    """A batch resolved on decisions that were voided since (see _check_decisions)."""

BROKER_QUEUE = "frames"  # the first pipeline arrow: what detect workers consume
# frames of the last stored batches remembered by image id (far more than are stored while
# submit() asks the store which frames it has)
STORED_MEMO = 10_000


class BatchProcessor:
    def __init__(
        self, runtime: Runtime, metrics: Metrics, write_lock: threading.RLock,
        queue_batches: int, spool: Spool | None = None, adopt_spool: bool = False,
    ) -> None:
        """``spool``: where accepted batches wait on disk (embedded mode; with a broker the
        broker holds them and the spool is not used). ``adopt_spool``: another process
        (the accept process, :mod:`revisit.api.door`) writes accepted batches there; they
        are taken from the spool as the pipeline has room."""
        self.runtime = runtime
        self.metrics = metrics
        self.write_lock = write_lock
        self.broker = runtime.settings.queue_url
        if self.broker:
            # distributed mode: publish to the broker's frames queue; workers run the stages
            from revisit.queue.factory import open_queue

            self.inbox: StageQueue = open_queue(self.broker, BROKER_QUEUE, maxsize=queue_batches)
        else:
            self.inbox = MemoryQueue("batches", queue_batches)
        self.queue_batches = queue_batches
        self.spool = None if self.broker else spool
        self.adopt_spool = adopt_spool and self.spool is not None
        self.ledger = BatchLedger(runtime.store)
        # On a one-writer store (DuckDB) a status write waits for the batch being stored,
        # so an accepted batch's status stays here until the pipeline takes it (the spool
        # file is what makes the acceptance durable; a restart records it from there).
        dialect = getattr(runtime.store, "dialect", None)
        self._defer_status = self.spool is not None and bool(getattr(dialect, "one_writer", False))
        self._unrecorded: dict[str, BatchStatus] = {}  # batch id -> status, not yet in the store
        self._tenant_of: dict[str, str] = {}  # batch id -> tenant, while in the pipeline
        self._failed: set[str] = set()  # batches a stage failed: later stages skip them
        self._interrupted: set[str] = set()  # failed because the server is stopping
        # resets of each tenant's resolver state after a failed write, and the count each
        # batch was resolved at (a batch resolved before a reset is not stored)
        self._resets: defaultdict[str, int] = defaultdict(int)
        self._decided_in: dict[str, int] = {}
        self._inflight: dict[tuple[str, str], str] = {}  # (tenant, image_id) -> batch id
        # frames of the batches stored last, insertion-ordered: a submit() that asked the
        # store before they were stored and looks at _inflight after they left it
        self._stored: dict[tuple[str, str], None] = {}
        self._spooling: set[str] = set()  # batches placed, being written to the spool
        self._taken: set[str] = set()  # spooled batches taken, until their file is gone
        # the deferred status of a batch that was all duplicates is "done" at once: the
        # pipeline thread writes it between batches (_record_settled), not the upload
        self._settle_failed = False  # the last such write failed (logged once)
        self._lock = threading.Lock()
        self._recovered: list[Batch] = self._recover()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # -- accepting ------------------------------------------------------------------------
    def submit(self, tenant: str, frames: list[Frame],
               refused: list[dict[str, str]] | None = None, key_id: str = "") -> BatchStatus:
        """Queue the frames not seen before; raises QueueFull, or the broker's error when
        it is down (BrokerUnavailable, a connection error): nothing is recorded then.
        ``refused``: frames of the request refused at the door, kept in the status;
        ``key_id``: the key that posted it (a camera key reads only its own batches).
        Embedded: the batch takes its place under the lock and is written to the spool
        outside it, so neither another upload nor the door's full() waits for that fsync."""
        batch_id = "B-" + uuid.uuid4().hex[:20]
        ids = [f.image_id for f in frames]
        with self._lock:
            # full: refuse before asking the store, unless every frame is already in flight
            # (a redelivery); a stored frame posted again meanwhile is told to retry too
            if self._full() and any((tenant, i) not in self._inflight for i in ids):
                raise QueueFull(f"{len(self._tenant_of)} batches accepted and not yet stored")
        known = self.runtime.store.known_frames(tenant, ids)
        with self._lock:
            fresh: list[Frame] = []
            seen: set[str] = set()
            for f in frames:
                if f.image_id in known or f.image_id in seen or (tenant, f.image_id) in \
                        self._inflight or (tenant, f.image_id) in self._stored:
                    if self._inflight.get((tenant, f.image_id)) in self._spooling:
                        # its first copy is not on disk yet: not a duplicate to confirm
                        raise QueueFull("the same snapshots are being accepted; retry")
                    continue
                seen.add(f.image_id)
                fresh.append(f)
            # only a batch with new frames needs room (a redelivery is answered at once)
            if fresh and self._full():
                raise QueueFull(f"{len(self._tenant_of)} batches accepted and not yet stored")
            status = BatchStatus(batch_id, tenant, "queued", len(frames) + len(refused or ()),
                                 duplicates=len(frames) - len(fresh),
                                 rejected=list(refused or ()), key_id=key_id)
            if not fresh:
                status.state = "done"
                status.finished_at = status.received_at
            if self._defer_status:
                self._unrecorded[batch_id] = status
            else:
                self.ledger.record(status)  # before the queue: a fast worker finds the row
            batch = Batch(batch_id=batch_id, frames=fresh)
            if fresh and self.broker:
                try:
                    self.inbox.put(batch, timeout=0)
                except Exception:
                    self._not_accepted(tenant, batch_id)
                    raise
            elif fresh:  # its place, taken now: the pipeline may take the batch at once
                # once queued (its status, by tenant, moves to the store then)
                self._tenant_of[batch_id] = tenant
                for f in fresh:
                    self._inflight[(tenant, f.image_id)] = batch_id
                self._spooling.add(batch_id)
        if fresh and not self.broker:
            self._spool_and_queue(tenant, batch, status)
        self.metrics.frames_received.labels(self.metrics.tenant(tenant)).inc(len(fresh))
        if status.duplicates:
            self.metrics.frames_duplicate.labels(self.metrics.tenant(tenant)).inc(status.duplicates)
        return status

    def _spool_and_queue(self, tenant: str, batch: Batch, status: BatchStatus) -> None:
        """On disk before anyone can be told 202, then queued; a failure gives the place
        back and leaves no status (the caller answers 429 or 503)."""
        try:
            if self.spool is not None:
                self.spool.put(batch, status_meta(status))
            self.inbox.put(batch, timeout=0)
        except Exception:
            with self._lock:
                self._tenant_of.pop(batch.batch_id, None)
                for f in batch.frames:
                    self._inflight.pop((tenant, f.image_id), None)
                self._not_accepted(tenant, batch.batch_id)
            if self.spool is not None:
                self.spool.remove(batch.batch_id)
            raise
        finally:
            with self._lock:
                self._spooling.discard(batch.batch_id)

    def _not_accepted(self, tenant: str, batch_id: str) -> None:
        """Not accepted (429; 503: the broker is down, refused the write or did not
        confirm it, whatever its client raises): no status is left behind."""
        if self._unrecorded.pop(batch_id, None) is None:
            try:
                self.ledger.forget(tenant, batch_id)
            except Exception:  # the store is away too: the log says which batch
                log.exception("cannot forget the status of refused batch %s", batch_id)

    def _recover(self) -> list[Batch]:
        """Batches an earlier process accepted but did not finish: queued again, first."""
        if self.spool is None:
            return []
        batches = [b for b in self.spool.pending() if self._take(b, adopted=False)]
        if batches:
            log.info("running %d batch(es) accepted before the last stop", len(batches))
        return batches

    def _take(self, b: Batch, adopted: bool) -> bool:
        """A spooled batch joins the pipeline (False: nothing of it left to process).
        Frames stored already (before a crash removed its file; posted again after being
        stored, which the accept process cannot know) are left out and counted as
        duplicates, as the store would skip them after running the models on them again."""
        assert self.spool is not None
        tenant = b.frames[0].tenant if b.frames else ""  # one tenant per batch
        known = self.runtime.store.known_frames(tenant, [f.image_id for f in b.frames])
        if adopted:  # also those another batch holds in flight (posted twice meanwhile)
            with self._lock:
                known = set(known) | {f.image_id for f in b.frames
                                      if (tenant, f.image_id) in self._inflight}
        st = meta_status(b.batch_id, {**self.spool.meta(b.batch_id), "tenant": tenant,
                                      "state": "queued"}, frames=len(b.frames))
        # no status yet: spooled by the accept process (taken now, or not before the last
        # stop), its stored frames duplicates; else run before a stop, or replayed after
        # failing (taken at once behind the door): queued again, its error cleared
        new = self.ledger.get(tenant, b.batch_id) is None
        if new and known:
            st.duplicates += len(known)
            self.metrics.frames_duplicate.labels(self.metrics.tenant(tenant)).inc(len(known))
        b.frames = [f for f in b.frames if f.image_id not in known]
        if not b.frames:  # stored already: only its status was left to write
            if new:
                st.state, st.finished_at = "done", datetime.now(UTC).replace(tzinfo=None)
                self.ledger.record(st)
            else:
                self.ledger.finished(tenant, b.batch_id)
            self.spool.remove(b.batch_id)
            return False
        if not new:
            self.ledger.requeue(st)
        elif adopted and self._defer_status:
            with self._lock:
                self._unrecorded[b.batch_id] = st
        else:
            self.ledger.record(st)
        with self._lock:
            self._tenant_of[b.batch_id] = tenant
            self._taken.add(b.batch_id)
            for f in b.frames:
                self._inflight[(tenant, f.image_id)] = b.batch_id
        return True

    def _adopt(self) -> Batch | None:
        """The oldest batch the accept process spooled and the pipeline has not taken."""
        assert self.spool is not None
        for batch_id in self.spool.ids():
            if batch_id in self._taken:
                continue
            batch = self.spool.read(batch_id)
            if batch is not None and self._take(batch, adopted=True):
                return batch
        return None

    def full(self) -> bool:
        """Nothing more fits (embedded mode): checked at the door, before a request's body
        is parsed, so that refusing costs next to nothing however busy the server is. A
        redelivery of frames in flight is refused then too; the camera's retry finds them
        stored (a duplicate) or room for them."""
        with self._lock:
            return self._full()

    def _full(self) -> bool:
        """Embedded mode: ``queue_batches`` accepted and not yet stored (caller holds the lock)."""
        return not self.broker and len(self._tenant_of) >= self.queue_batches

    def status(self, tenant: str, batch_id: str) -> BatchStatus | None:
        with self._lock:
            st = self._unrecorded.get(batch_id)
        if st is not None:
            return st if st.tenant == tenant else None
        found = self.ledger.get(tenant, batch_id)
        if found is None and self.adopt_spool and self.spool is not None:
            meta = self.spool.meta(batch_id)  # spooled by the accept process, not taken yet
            if meta.get("tenant") == tenant and (self.spool.holds(batch_id)
                                                 or meta.get("state") == "done"):
                return meta_status(batch_id, meta)
            found = self.ledger.get(tenant, batch_id)  # taken and recorded meanwhile
        return found

    def recent(self, tenant: str, *, state: str | None = None, key_id: str | None = None,
               before: tuple[datetime, str] | None = None,
               limit: int = 100) -> list[BatchStatus]:
        """The tenant's batches, newest first (:meth:`BatchLedger.recent`), with those
        accepted and not yet recorded in the store (read first: one that moves to the store
        meanwhile is found there)."""
        with self._lock:
            pending = list(self._unrecorded.values())
            taken = set(self._taken)  # their status is in memory or the store, not the spool's
        if self.adopt_spool and self.spool is not None:  # spooled, not taken yet
            known = {st.batch_id for st in pending} | taken
            pending += [meta_status(b, m) for b, m in self.spool.metas().items()
                        if b not in known]
        waiting = [st for st in pending if st.tenant == tenant
                   and (state is None or st.state == state)
                   and (key_id is None or st.key_id == key_id)
                   and (before is None or (st.received_at, st.batch_id) < before)]
        stored = self.ledger.recent(tenant, state=state, key_id=key_id, before=before,
                                    limit=limit)
        seen = {st.batch_id for st in waiting}
        both = waiting + [st for st in stored if st.batch_id not in seen]
        both.sort(key=lambda st: (st.received_at, st.batch_id), reverse=True)
        return both[:limit]

    def depth(self) -> int:
        if self.adopt_spool and self.spool is not None:  # waiting: spooled, not taken
            return max(0, self.spool.count() - len(self._tenant_of))
        return self.inbox.depth()

    # -- processing -----------------------------------------------------------------------
    def _wrap(self, name: str, fn: StageFn, serialised: bool) -> StageFn:
        def run(batch: Batch) -> Batch:
            if batch.batch_id in self._failed:
                return batch
            t0 = time.perf_counter()
            try:
                if serialised:
                    with self.write_lock:
                        if name == "store":
                            self._check_decisions(batch)
                        out = fn(batch)
                        if name == "resolve":
                            self._decided_in[batch.batch_id] = self._resets[
                                self._tenant_of.get(batch.batch_id, "")]
                        return out
                return fn(batch)
            except Exception as exc:
                if self._stop.is_set():  # the shutdown stopped it (the model process...)
                    log.warning("batch %s interrupted in %s by the shutdown: it stays "
                                "spooled and runs at the next start", batch.batch_id, name)
                    self._failed.add(batch.batch_id)
                    self._interrupted.add(batch.batch_id)
                    return batch
                log.exception("batch %s failed in %s", batch.batch_id, name)
                self._failed.add(batch.batch_id)
                if name in {"resolve", "store"} and not isinstance(exc, StaleDecisions):
                    self._forget_decisions(batch, voided=name == "store")
                tenant = self._tenant_of.get(batch.batch_id)
                if tenant is not None:
                    try:
                        self.ledger.failed(tenant, batch.batch_id,
                                           f"{name}: {type(exc).__name__}: {exc}")
                    except Exception:  # the store is what failed: the log has it
                        log.exception("cannot record batch %s as failed", batch.batch_id)
                return batch
            finally:
                self.metrics.stage_seconds.labels(name).observe(time.perf_counter() - t0)

        return run

    def _check_decisions(self, batch: Batch) -> None:
        """A batch resolved before an earlier batch's decisions were voided (its write
        failed) was resolved on those decisions (a visitor it created, say): stored, it
        would keep them. It fails instead and is set aside for ``revisit admin replay``,
        which decides it afresh."""
        tenant = self._tenant_of.get(batch.batch_id, "")
        at = self._decided_in.pop(batch.batch_id, self._resets[tenant])
        if at != self._resets[tenant]:
            raise StaleDecisions("resolved on the decisions of an earlier batch whose write "
                                 "failed; replay it with `revisit admin replay`")

    def _forget_decisions(self, batch: Batch, voided: bool = False) -> None:
        """The resolver decided this batch but it was not stored: its decisions must not
        stay in memory (a replay of the batch would count its people twice). ``voided``
        (its write failed): batches resolved after it, on its decisions, are not stored
        either (:meth:`_check_decisions`); those resolved before it were stored before it."""
        if voided:  # counted by the tenant the batch was accepted for (_check_decisions)
            with self.write_lock:
                self._resets[self._tenant_of.get(batch.batch_id, "")] += 1
        resolver = self.runtime.loaded_resolver
        if resolver is None:
            return
        with self.write_lock:
            for tenant in sorted({f.tenant for f in batch.frames}):
                try:
                    resolver.reset(tenant)
                except Exception:  # the store may still be away: the next batch reloads
                    log.exception("cannot reset the resolver for tenant %s", tenant)

    def _source(self) -> Iterator[Batch]:
        while self._recovered and not self._stop.is_set():
            batch = self._recovered.pop(0)
            self._mark_processing(batch.batch_id)
            yield batch
        bell = self.spool.bell if self.adopt_spool and self.spool is not None else None
        pause = 0.5 if bell is not None and bell.listen() else 0.02
        while bell is not None and not self._stop.is_set():  # taken from the spool
            self._record_settled()
            try:
                batch = self._adopt()
            except Exception:  # the store is away: the batch stays spooled, tried again
                log.exception("cannot take a spooled batch")
                batch = None
            if batch is None:
                bell.wait(pause)  # until the accept process spools a batch
                continue
            self._mark_processing(batch.batch_id)
            yield batch
        while not self._stop.is_set():
            self._record_settled()
            d = self.inbox.get(timeout=0.1)
            if d is None:
                continue
            self._mark_processing(d.batch.batch_id)
            d.ack()
            yield d.batch

    def _record_settled(self) -> None:
        """Write the deferred statuses of all-duplicate batches (kept in memory until
        then, so a status read finds them meanwhile)."""
        with self._lock:  # "done" here: all duplicates (one being processed is not done)
            pending = [st for st in self._unrecorded.values() if st.state == "done"]
        if self.adopt_spool and self.spool is not None:  # the accept process's
            for batch_id in self.spool.settled():
                st = meta_status(batch_id, self.spool.meta(batch_id))
                try:
                    self.ledger.record(st)
                except Exception:
                    log.exception("cannot record the status of batch %s", batch_id)
                    return
                self.spool.remove(batch_id)
        for st in pending:
            try:
                self.ledger.record(st)
            except Exception:  # the store is away: kept in memory, tried again next time
                if not self._settle_failed:
                    log.exception("cannot record the status of batch %s", st.batch_id)
                self._settle_failed = True
                return
            self._settle_failed = False
            with self._lock:
                self._unrecorded.pop(st.batch_id, None)

    def _mark_processing(self, batch_id: str) -> None:
        tenant = self._tenant_of.get(batch_id)
        if tenant is None:
            return
        with self._lock:
            st = self._unrecorded.get(batch_id)
        try:
            if st is not None:
                self.ledger.record(replace(st, state="processing"))
                with self._lock:
                    self._unrecorded.pop(batch_id, None)
            else:
                self.ledger.processing(tenant, batch_id)
        except Exception:  # a status is not worth stopping the pipeline for
            log.exception("cannot record batch %s as processing", batch_id)

    def _release(self, batch: Batch, stored: bool) -> None:
        """The batch's frames leave the in-flight set (the processor may read as idle) and
        its status leaves memory: only once its final status is in the store, so neither a
        GET nor an idle processor can see it as still processing."""
        with self._lock:
            self._unrecorded.pop(batch.batch_id, None)
            if stored:
                self._stored.update(dict.fromkeys((f.tenant, f.image_id) for f in batch.frames))
                while len(self._stored) > STORED_MEMO:
                    del self._stored[next(iter(self._stored))]
            for f in batch.frames:
                self._inflight.pop((f.tenant, f.image_id), None)
            for r in batch.rejected:
                self._inflight.pop((r.tenant, r.image_id), None)
            # frames dropped by a failed stage are released too
            for key in [k for k, v in self._inflight.items() if v == batch.batch_id]:
                del self._inflight[key]

    def _done(self, batch: Batch) -> None:
        tenant = self._tenant_of.pop(batch.batch_id, "")
        self._decided_in.pop(batch.batch_id, None)
        failed = batch.batch_id in self._failed
        self._failed.discard(batch.batch_id)
        if batch.batch_id in self._interrupted:  # left spooled as it is: the next start
            self._interrupted.discard(batch.batch_id)  # runs it (its status: "processing")
            self._release(batch, stored=not failed)
            return  # still taken: not adopted again by this process
        m = self.metrics
        label = m.tenant(tenant)
        if not failed:
            try:
                self.ledger.done(tenant, batch)
            except Exception:
                log.exception("cannot record batch %s as done", batch.batch_id)
        self._release(batch, stored=not failed)
        if not failed:
            m.frames_processed.labels(label).inc(len(batch.frames))
            m.faces.labels(label).inc(len(batch.faces))
            m.sightings.labels(label).inc(len(batch.sightings))
            m.new_visitors.labels(label).inc(len(batch.visitors_created))
            for r in batch.rejected:
                m.frames_rejected.labels(label, r.code or "undecodable").inc()
        m.batches.labels("failed" if failed else "done").inc()
        if self.spool is not None:  # stored: nothing left to replay; failed: kept aside
            if failed:
                self.spool.set_aside(batch.batch_id)
            else:
                self.spool.remove(batch.batch_id)
            with self._lock:
                self._taken.discard(batch.batch_id)

    def stages(self) -> list[tuple[str, StageFn]]:
        return [
            (name, self._wrap(name, fn, serialised=name in {"resolve", "store"}))
            for name, fn in self.runtime.stages()
        ]

    def start(self) -> None:
        if self._thread is not None or self.broker:
            return
        stages = self.stages()  # loads the models here, not in the first request
        if self.spool is not None and not self.adopt_spool:  # uploads are spooled here
            self.spool.prepare()

        def run() -> None:
            try:
                Pipeline(stages, queue_size=self.runtime.settings.pipeline.queue_size).run(
                    self._source(), self._done
                )
            except BaseException as exc:  # pragma: no cover - stage wrappers catch errors
                log.exception("batch pipeline stopped")
                self.error = exc

        self._thread = threading.Thread(target=run, name="batch-pipeline", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def busy(self) -> bool:
        """Batches accepted here and not yet stored (with a broker: those published and
        not yet taken by a detect worker)."""
        with self._lock:
            if self._inflight or self._recovered:
                return True
        if self.adopt_spool and self.spool is not None:
            return self.spool.count() > 0 or bool(self.spool.settled())
        return self.inbox.depth() > 0

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """True once nothing is queued or in flight (tests, graceful shutdown)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.busy():
                return True
            time.sleep(0.05)
        return False

    def stop(self, drain_s: float = 10.0) -> None:
        if self._thread is not None:
            self.wait_idle(drain_s)
            self._stop.set()
            if self.spool is not None:
                self.spool.bell.ring()  # the loop waiting for the accept process
            self._thread.join(timeout=drain_s + 5)
            self._thread = None
        self._record_settled()
        if self.spool is not None:
            self.spool.close()
