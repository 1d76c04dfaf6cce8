"""The worker loop: ``concurrency`` threads consuming one stage's queue and feeding the next
(``revisit worker --stage S``)."""

from __future__ import annotations

import contextlib
import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from revisit.config import Settings
from revisit.distributed.publish import put_blocking
from revisit.distributed.resolve import ResolveHandler
from revisit.distributed.topology import QUEUE_BOUND, QUEUE_IN, QUEUE_OUT, STAGES, sequence_of
from revisit.queue.base import StageQueue
from revisit.records import Batch

if TYPE_CHECKING:
    from revisit.distributed.metrics import WorkerMetrics

log = logging.getLogger(__name__)

FIRST_RETRY_WAIT_S = 1.0  # pause before trying a batch again while a backend is down,
MAX_RETRY_WAIT_S = 30.0  # doubled each time up to this
IDLE_SWEEP_S = 2.0  # a worker without work runs its handler's idle() this often
BUSY_SWEEP_S = 30.0  # a worker that always has work still runs its handler's idle() this often


def _handler(settings: Settings, stage: str) -> tuple[Callable[[Batch], list[Batch]], Any]:
    """(handler, closable) for one worker thread."""
    if stage in ("detect", "embed"):
        from revisit.vision.stages import Vision

        vision = Vision(settings)
        closable = None
        if stage == "detect" and settings.store_url.startswith("postgres"):
            # cameras' zones and counting switches live in the (shared) store
            from revisit.backends import open_store
            from revisit.pipeline import counting_for, zone_book

            closable = open_store(settings)
            vision.counting = counting_for(settings, zone_book(closable))
        fn = vision.detect if stage == "detect" else vision.embed
        return (lambda b: [fn(b)]), closable
    from revisit.backends import open_store

    store = open_store(settings)
    if stage == "resolve":
        return ResolveHandler(settings, store), store

    from revisit.pipeline import AfterStore

    after_store = AfterStore(store, settings).open()

    def store_stage(batch: Batch) -> list[Batch]:
        after_store(batch)  # resolve stored the batch; its alerts are judged here
        return []

    return store_stage, store


def _close_quietly(*things: Any) -> None:
    """Close each of ``things`` that is not None; a failure to close is not worth more."""
    for thing in things:
        if thing is not None:
            with contextlib.suppress(Exception):
                thing.close()


def _wire(handler: Any, inq: StageQueue) -> None:
    """The resolve stage sets aside parked batches it cannot apply in its queue's dead
    letters (where the queue has them)."""
    if isinstance(handler, ResolveHandler):
        handler.dead_letter = getattr(inq, "put_dead", None)


class _Statuses:
    """API batch statuses seen from a worker (with a shared store configured): the first
    stage marks a batch ``processing``; a stage that fails on it records why (the broker
    redelivers it; a later success marks it ``done``). Stream batches have no status."""

    def __init__(self, settings: Settings) -> None:
        self.ledger = None
        if settings.store_url.startswith(("postgres://", "postgresql://")):
            from revisit.backends import open_store
            from revisit.ingest.status import BatchLedger

            self.ledger = BatchLedger(open_store(settings))

    def _each(self, batch: Batch, fn: Callable[[str], None]) -> None:
        if self.ledger is None or sequence_of(batch.batch_id)[0] is not None:
            return
        for tenant in {f.tenant for f in batch.frames} or {f.tenant for f in batch.faces}:
            try:
                fn(tenant)
            except Exception:  # a status is not worth stopping a worker for
                log.exception("cannot record the status of batch %s", batch.batch_id)

    def processing(self, batch: Batch) -> None:
        self._each(batch, lambda t: self.ledger.processing(t, batch.batch_id))  # type: ignore[union-attr]

    def failed(self, batch: Batch, stage: str, exc: BaseException) -> None:
        why = f"{stage}: {type(exc).__name__}: {exc} (the broker delivers it again)"
        self._each(batch, lambda t: self.ledger.failed(t, batch.batch_id, why))  # type: ignore[union-attr]

    def dead_lettered(self, batch: Batch, queue: str, why: str) -> None:
        """The queue moved the batch to its dead letters: nobody delivers it again (a
        batch that killed its worker each time was left ``processing``)."""
        error = (f"{queue}: {why}; moved to the dead letters (`revisit admin replay-dead` "
                 "after fixing the cause)")
        self._each(batch, lambda t: self.ledger.failed(t, batch.batch_id, error))  # type: ignore[union-attr]

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.store.close()


@dataclass
class WorkerStats:
    batches: int = 0
    frames: int = 0
    errors: int = 0
    busy_s: float = 0.0  # wall time handling batches (includes lock waits)
    cpu_s: float = 0.0  # CPU time of the handling threads (inference runs on them)


class Worker:
    """``concurrency`` threads consuming one stage's queue and feeding the next."""

    def __init__(self, settings: Settings, stage: str, concurrency: int = 1,
                 name: str | None = None, metrics: WorkerMetrics | None = None) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
        if not settings.queue_url:
            raise RuntimeError("workers need a broker: set queue_url (redis://... or kafka://...)")
        self.settings = settings
        self.stage = stage
        self.concurrency = max(1, concurrency)
        self.name = name
        self.stop = threading.Event()
        self.stats = WorkerStats()
        self.metrics = metrics
        if metrics is not None:
            metrics.threads.set(self.concurrency)
        self._lock = threading.Lock()
        self._reported = time.monotonic()

    def run(self, max_idle_s: float | None = None) -> WorkerStats:
        """Run until :attr:`stop` is set (or nothing arrived for ``max_idle_s``)."""
        threads = [
            threading.Thread(target=self._loop, args=(i, max_idle_s), daemon=True,
                             name=f"{self.stage}-{i}")
            for i in range(self.concurrency)
        ]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.2)
        except KeyboardInterrupt:
            self.stop.set()
            for t in threads:
                t.join()
        return self.stats

    def _report(self, every_s: float = 60.0) -> None:
        """One log line per minute of work: what this process did so far."""
        with self._lock:
            now = time.monotonic()
            if now - self._reported < every_s:
                return
            self._reported = now
            s = self.stats
            log.info("%s worker: %d batches, %d frames, %d errors, %.0f s busy so far",
                     self.stage, s.batches, s.frames, s.errors, s.busy_s)

    def _count_error(self) -> None:
        with self._lock:
            self.stats.errors += 1
        if self.metrics is not None:
            self.metrics.errors.inc()

    def _forward(self, outs: list[Batch], outq: StageQueue | None, handler: Any) -> None:
        """Put the handler's outputs on the next queue, then tell the resolve stage they
        are there (it keeps the applied parked batches among them until then)."""
        for out in outs:
            if outq is not None:
                put_blocking(outq, out, self.stop)
        if isinstance(handler, ResolveHandler):
            handler.forwarded()

    def _sweep(self, handler: Any, outq: StageQueue | None, last: float, every_s: float
               ) -> float:
        """Run the handler's ``idle()`` (if it has one) when ``every_s`` passed since
        ``last``, forwarding what it returns; returns when it last ran."""
        idle = getattr(handler, "idle", None)
        if idle is None or time.monotonic() - last <= every_s:
            return last
        last = time.monotonic()
        self._forward(idle(), outq, handler)
        return last

    def _open(self, i: int) -> tuple[StageQueue, StageQueue | None]:
        from revisit.queue.factory import open_queue

        consumer = f"{self.name}-{i}" if self.name else None
        inq = open_queue(self.settings.queue_url, QUEUE_IN[self.stage], consumer=consumer,
                         maxsize=QUEUE_BOUND)
        out_name = QUEUE_OUT[self.stage]
        outq = None if out_name is None else open_queue(
            self.settings.queue_url, out_name, maxsize=QUEUE_BOUND)
        return inq, outq

    def _handle(self, i: int, batch: Batch, handler: Callable[[Batch], list[Batch]] | None,
                closable: Any, inq: StageQueue
                ) -> tuple[list[Batch], Callable[[Batch], list[Batch]], Any]:
        """The batch through the stage; while the store (or another backend) is down, the
        same delivery is retried here, waiting longer each time, instead of being handed
        back: each hand-back counts as a delivery, and a short outage would otherwise move
        good batches to the dead letters. Each attempt works on a copy of the batch as
        delivered: a stage fills the batch it is given (the resolver its sightings and new
        visitors), and what a failed attempt left there was rolled back, not committed.
        Returns (outputs, handler, closable)."""
        from revisit.backends import unavailable_errors

        wait = FIRST_RETRY_WAIT_S
        fresh = False  # a handler opened here: the caller does not know it yet
        while True:
            try:
                if handler is None:
                    handler, closable = _handler(self.settings, self.stage)
                    fresh = True
                    _wire(handler, inq)
                return handler(copy.deepcopy(batch)), handler, closable
            except unavailable_errors() as exc:
                if self.stop.is_set():
                    raise
                self._count_error()
                log.warning("%s worker %d: %s: %s; batch %s again in %.0f s", self.stage, i,
                            type(exc).__name__, exc, batch.batch_id, wait)
                if self.stage == "resolve":  # its memory may hold what was not stored
                    _close_quietly(closable)
                    handler = closable = None
                self.stop.wait(wait)
                wait = min(wait * 2, MAX_RETRY_WAIT_S)
            except BaseException:
                if fresh:  # the caller closes only the handler it passed in
                    _close_quietly(closable)
                raise

    def _loop(self, i: int, max_idle_s: float | None) -> None:
        handler = closable = inq = outq = None
        statuses: _Statuses | None = None
        last_work = last_idle = time.monotonic()
        while not self.stop.is_set():
            delivery = None
            try:
                if statuses is None:
                    statuses = _Statuses(self.settings)
                if handler is None:
                    handler, closable = _handler(self.settings, self.stage)
                if inq is None:
                    inq, outq = self._open(i)
                    if hasattr(inq, "on_dead"):
                        inq.on_dead = (lambda b, why, q=inq.name, st=statuses:
                                       st.dead_lettered(b, q, why))
                _wire(handler, inq)
                delivery = inq.get(timeout=0.5)
                if delivery is None:
                    last_idle = self._sweep(handler, outq, last_idle, IDLE_SWEEP_S)
                    if max_idle_s is not None and time.monotonic() - last_work > max_idle_s:
                        break  # as a stop: tracks saved, connections closed
                    continue
                t0, c0 = time.perf_counter(), time.thread_time()
                if self.stage == "detect":
                    statuses.processing(delivery.batch)
                outs, handler, closable = self._handle(i, delivery.batch, handler, closable,
                                                       inq)
                self._forward(outs, outq, handler)
                delivery.ack()
                busy, cpu = time.perf_counter() - t0, time.thread_time() - c0
                with self._lock:
                    self.stats.batches += 1
                    self.stats.frames += len(delivery.batch.frames)
                    self.stats.busy_s += busy
                    self.stats.cpu_s += cpu
                if (m := self.metrics) is not None:
                    m.batches.inc()
                    m.frames.inc(len(delivery.batch.frames))
                    m.seconds.observe(busy)
                    m.cpu.inc(cpu)
                    m.last.set(time.time())
                last_work = time.monotonic()
                self._report()
                # a busy worker sweeps too (parked batches of streams that went quiet)
                last_idle = self._sweep(handler, outq, last_idle, BUSY_SWEEP_S)
            except Exception as exc:  # broker/database down, or a bad batch: retry later
                self._count_error()
                if delivery is not None and statuses is not None:
                    statuses.failed(delivery.batch, self.stage, exc)
                log.warning("%s worker %d: %s: %s; reconnecting", self.stage, i,
                            type(exc).__name__, exc)
                _close_quietly(inq, outq)
                inq = outq = None
                if self.stage == "resolve" and handler is not None:
                    _close_quietly(closable)
                    handler = closable = None
                time.sleep(1.0)
        if isinstance(handler, ResolveHandler):
            self._stop_resolver(i, handler, outq)
        _close_quietly(inq, outq, closable, statuses)

    def _stop_resolver(self, i: int, handler: ResolveHandler, outq: StageQueue | None) -> None:
        """A graceful stop saves the resolver's open tracks for the next one (their held
        faces are in the store already: a failure here loses only the tracks' state); the
        sightings decided on the way go on to the store stage if it still takes them."""
        try:
            outs = handler.stop()
        except Exception as exc:
            log.warning("resolve worker %d: saving open tracks at stop failed: %s: %s",
                        i, type(exc).__name__, exc)
            return
        try:
            self._forward(outs, outq, handler)
        except Exception as exc:  # alerts of those sightings only; they are stored
            log.warning("resolve worker %d: forwarding at stop failed: %s: %s",
                        i, type(exc).__name__, exc)
