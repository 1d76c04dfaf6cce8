"""Background processing of accepted camera batches.

HTTP handlers only validate and enqueue: ``submit`` puts the batch on a bounded inbox
without waiting (full -> :class:`QueueFull` -> 429), and one :class:`~revisit.pipeline.Pipeline`
runs the runtime's stages in threads (detect / embed overlap, resolve / store serialised
with privacy operations by ``write_lock``). A failing batch is marked failed and skipped by
later stages; it never stops the pipeline.

Idempotency: frames the store already has, or that are queued right now, are not enqueued
again (``image_id`` is the key; the store's primary keys make a redelivery harmless too).

Durability: without a broker, an accepted batch is written to the :class:`Spool` before
it is queued and deleted once done or failed; at start the processor runs whatever an
earlier process left there, under the same batch ids.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from revisit.api.metrics import Metrics
from revisit.api.spool import Spool
from revisit.pipeline import Pipeline, Runtime, StageFn
from revisit.queue.base import QueueFull, StageQueue
from revisit.queue.memory import MemoryQueue
from revisit.records import Batch, Frame

log = logging.getLogger(__name__)

__all__ = ["BatchProcessor", "BatchStatus", "QueueFull"]

BROKER_QUEUE = "frames"  # the first pipeline arrow: what detect workers consume


@dataclass
class BatchStatus:
    batch_id: str
    tenant: str
    state: str  # queued | processing | done | failed (| published, with a broker)
    frames: int  # frames in the request
    duplicates: int = 0  # frames skipped as already received
    processed: int = 0
    faces: int = 0
    sightings: int = 0
    new_visitors: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    error: str = ""
    received_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    finished_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id, "status": self.state, "frames": self.frames,
            "duplicates": self.duplicates, "processed": self.processed, "faces": self.faces,
            "sightings": self.sightings, "new_visitors": self.new_visitors,
            "rejected": self.rejected, "error": self.error or None,
            "received_at": self.received_at, "finished_at": self.finished_at,
        }


class BatchProcessor:
    def __init__(
        self, runtime: Runtime, metrics: Metrics, write_lock: threading.RLock,
        queue_batches: int, keep: int = 10_000, spool: Spool | None = None,
    ) -> None:
        """``spool``: where accepted batches wait on disk (embedded mode; with a broker the
        broker holds them and the spool is not used)."""
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
        self.keep = keep
        self.spool = None if self.broker else spool
        self._statuses: OrderedDict[str, BatchStatus] = OrderedDict()
        self._inflight: dict[tuple[str, str], str] = {}  # (tenant, image_id) -> batch id
        self._lock = threading.Lock()
        self._recovered: list[Batch] = self._recover()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # -- accepting ------------------------------------------------------------------------
    def submit(self, tenant: str, frames: list[Frame]) -> BatchStatus:
        """Queue the frames not seen before; raises QueueFull (nothing is recorded then)."""
        batch_id = "B-" + uuid.uuid4().hex[:20]
        ids = [f.image_id for f in frames]
        known = self.runtime.store.known_frames(tenant, ids)
        with self._lock:
            fresh: list[Frame] = []
            seen: set[str] = set()
            for f in frames:
                if f.image_id in known or f.image_id in seen or (tenant, f.image_id) in \
                        self._inflight:
                    continue
                seen.add(f.image_id)
                fresh.append(f)
            status = BatchStatus(batch_id, tenant, "queued", len(frames),
                                 duplicates=len(frames) - len(fresh))
            if fresh and self.broker:
                self.inbox.put(Batch(batch_id=batch_id, frames=fresh), timeout=0)
                status.state = "published"  # workers process it; the report shows when
            elif fresh:
                batch = Batch(batch_id=batch_id, frames=fresh)
                if self.spool is not None:  # on disk before anyone can be told 202
                    self.spool.put(batch)
                try:
                    self.inbox.put(batch, timeout=0)
                except QueueFull:
                    if self.spool is not None:
                        self.spool.remove(batch_id)
                    raise
                for f in fresh:
                    self._inflight[(tenant, f.image_id)] = batch_id
            else:
                status.state = "done"
                status.finished_at = status.received_at
            self._remember(status)
        self.metrics.frames_received.labels(tenant).inc(len(fresh))
        if status.duplicates:
            self.metrics.frames_duplicate.labels(tenant).inc(status.duplicates)
        return status

    def _recover(self) -> list[Batch]:
        """Batches an earlier process accepted but did not finish: queued again, first."""
        if self.spool is None:
            return []
        batches = []
        for b in self.spool.pending():  # one tenant per batch, as submit() made them
            tenant = b.frames[0].tenant if b.frames else ""
            # stored before the spool file was removed (a crash in between): skip those
            # frames; the store would too, after running the models on them again
            known = self.runtime.store.known_frames(tenant, [f.image_id for f in b.frames])
            b.frames = [f for f in b.frames if f.image_id not in known]
            if not b.frames:
                self.spool.remove(b.batch_id)
                continue
            batches.append(b)
            self._remember(BatchStatus(b.batch_id, tenant, "queued", len(b.frames)))
            for f in b.frames:
                self._inflight[(tenant, f.image_id)] = b.batch_id
        if batches:
            log.info("running %d batch(es) accepted before the last stop", len(batches))
        return batches

    def _remember(self, status: BatchStatus) -> None:
        self._statuses[status.batch_id] = status
        while len(self._statuses) > self.keep:
            self._statuses.popitem(last=False)

    def status(self, tenant: str, batch_id: str) -> BatchStatus | None:
        with self._lock:
            st = self._statuses.get(batch_id)
        return st if st is not None and st.tenant == tenant else None

    def depth(self) -> int:
        return self.inbox.depth()

    # -- processing -----------------------------------------------------------------------
    def _wrap(self, name: str, fn: StageFn, serialised: bool) -> StageFn:
        def run(batch: Batch) -> Batch:
            st = self._statuses.get(batch.batch_id)
            if st is not None and st.state == "failed":
                return batch
            t0 = time.perf_counter()
            try:
                if serialised:
                    with self.write_lock:
                        return fn(batch)
                return fn(batch)
            except Exception as exc:
                log.exception("batch %s failed in %s", batch.batch_id, name)
                if st is not None:
                    st.state = "failed"
                    st.error = f"{name}: {type(exc).__name__}: {exc}"
                return batch
            finally:
                self.metrics.stage_seconds.labels(name).observe(time.perf_counter() - t0)

        return run

    def _source(self) -> Iterator[Batch]:
        while self._recovered and not self._stop.is_set():
            batch = self._recovered.pop(0)
            st = self._statuses.get(batch.batch_id)
            if st is not None:
                st.state = "processing"
            yield batch
        while not self._stop.is_set():
            d = self.inbox.get(timeout=0.1)
            if d is None:
                continue
            st = self._statuses.get(d.batch.batch_id)
            if st is not None:
                st.state = "processing"
            d.ack()
            yield d.batch

    def _done(self, batch: Batch) -> None:
        with self._lock:
            st = self._statuses.get(batch.batch_id)
            for f in batch.frames:
                self._inflight.pop((f.tenant, f.image_id), None)
            for r in batch.rejected:
                self._inflight.pop((r.tenant, r.image_id), None)
            # frames dropped by a failed stage are released too
            for key in [k for k, v in self._inflight.items() if v == batch.batch_id]:
                del self._inflight[key]
        tenant = st.tenant if st is not None else ""
        m = self.metrics
        if st is not None and st.state != "failed":
            st.processed = len(batch.frames)
            st.faces = len(batch.faces)
            st.sightings = len(batch.sightings)
            st.new_visitors = len(batch.visitors_created)
            st.rejected = [{"image_id": r.image_id, "reason": r.reason} for r in batch.rejected]
            st.state = "done"
            m.frames_processed.labels(tenant).inc(len(batch.frames))
            m.faces.labels(tenant).inc(len(batch.faces))
            m.sightings.labels(tenant).inc(len(batch.sightings))
            m.new_visitors.labels(tenant).inc(len(batch.visitors_created))
            for _ in batch.rejected:
                m.frames_rejected.labels(tenant, "undecodable").inc()
        if st is not None:
            st.finished_at = datetime.now(UTC).isoformat()
            m.batches.labels(st.state).inc()
        if self.spool is not None:  # stored or failed for good: nothing left to replay
            self.spool.remove(batch.batch_id)

    def stages(self) -> list[tuple[str, StageFn]]:
        return [
            (name, self._wrap(name, fn, serialised=name in {"resolve", "store"}))
            for name, fn in self.runtime.stages()
        ]

    def start(self) -> None:
        if self._thread is not None or self.broker:
            return
        stages = self.stages()  # loads the models here, not in the first request

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

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """True once nothing is queued or in flight (tests, graceful shutdown)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                busy = bool(self._inflight) or self.inbox.depth() > 0 or bool(self._recovered)
            if not busy:
                return True
            time.sleep(0.05)
        return False

    def stop(self, drain_s: float = 10.0) -> None:
        if self._thread is None:
            return
        self.wait_idle(drain_s)
        self._stop.set()
        self._thread.join(timeout=drain_s + 5)
        self._thread = None
