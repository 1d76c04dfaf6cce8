"""Distributed mode: each pipeline stage as a worker over broker queues.

::

    publisher ──► [frames] ─► detect ─► [faces] ─► embed ─► [embeddings] ─► resolve ─► [sightings] ─► store
    (ingest / API)                                                           │ PostgreSQL: one txn per batch
                                                                             ▼ (tenant lock, cursor, write)

Any number of workers of any stage may run on any machine (``revisit worker --stage S``).
Delivery is at-least-once (a worker acks its input only after its output is on the next
queue, or committed), and every step is idempotent, so ``kill -9`` of any worker at any
moment loses nothing and doubles nothing:

- detect / embed are pure functions of their input: a redelivered batch yields the same
  faces (deterministic ``face_image_id``).
- resolve decides identities and **commits them with the sightings in the same
  PostgreSQL transaction**, holding a per-tenant advisory lock
  (:meth:`PostgresStore.identity_transaction`): two resolvers can never create two
  visitors for one person because two sightings arrived at once, and visitor numbers come
  from the tenant's counter row read under that lock.
- **Order.** Online clustering depends on the order faces are seen. A publisher stamps
  its batches ``<stream>#<seq>``; resolvers apply each stream's batches strictly in
  ``seq`` order (a per-stream cursor row, advanced in the same transaction). A batch that
  arrives early (parallel detect/embed workers reorder) is parked in ``resolve_parked``
  (durably, then acked) and applied by whichever resolver commits its predecessor. The
  result: the same decisions as the embedded default on the same input, however many
  workers, kills or redeliveries. Batches without a sequence (HTTP API) are resolved in
  arrival order under the tenant lock.
- A batch already committed (its frames are stored, or its seq is behind the cursor) is
  a replay: it is forwarded with the stored assignments, nothing is decided again.
- Each resolver keeps its gallery (faiss, or bookkeeping beside pgvector) in memory and
  reloads a tenant from the store when the tenant's ``identity_version`` moved (another
  resolver, a merge or an erasure committed since).
- store: post-commit work that needs no lock (face crops when ``privacy.keep_crops``;
  erasing a visitor the resolver withdrew, a poster found static after founding one).

Broker or database down: the worker logs, waits and reconnects; its unacked input is
delivered again (Redis: claimed after ``claim_idle_ms``). See docs/deploy.md.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from revisit.config import Settings
from revisit.pipeline import Runtime, Summary, batched
from revisit.queue.base import QueueFull, StageQueue
from revisit.queue.codec import decode_batch, encode_batch
from revisit.records import Batch, Face, Frame, Rejected, Sighting

log = logging.getLogger(__name__)

STAGES = ("detect", "embed", "resolve", "store")
QUEUE_IN = {"detect": "frames", "embed": "faces", "resolve": "embeddings", "store": "sightings"}
QUEUE_OUT: dict[str, str | None] = {
    "detect": "faces", "embed": "embeddings", "resolve": "sightings", "store": None,
}
QUEUE_BOUND = 64  # batches per inter-stage queue: back-pressure without starving workers
_SEQ_RE = re.compile(r"^(?P<stream>.+)#(?P<seq>\d+)$")


def sequence_of(batch_id: str) -> tuple[str | None, int]:
    """``"s-ab12#000000042"`` -> ("s-ab12", 42); unsequenced ids -> (None, -1)."""
    m = _SEQ_RE.match(batch_id)
    return (m["stream"], int(m["seq"])) if m else (None, -1)


def _tenants(batch: Batch) -> list[str]:
    items: list[Any] = [*batch.frames, *batch.faces, *batch.sightings]
    return sorted({i.tenant for i in items})


# --- publishing ---------------------------------------------------------------------------


def publish(
    runtime: Runtime,
    items: Iterable[Frame | Rejected],
    *,
    stream: str | None = None,
    progress: bool = False,
    total: int | None = None,
) -> Summary:
    """Put camera batches on the broker's frames queue, stamped ``<stream>#<seq>``.

    Frames already stored are skipped first (as in the embedded default), so re-running a
    publisher after a crash only sends what is missing.
    """
    from tqdm import tqdm

    from revisit.queue.factory import open_queue

    settings = runtime.settings
    stream = stream or f"s-{uuid.uuid4().hex[:12]}"
    queue = open_queue(settings.queue_url, QUEUE_IN["detect"],
                       maxsize=max(QUEUE_BOUND, settings.pipeline.queue_size))
    summary = Summary()
    bar = tqdm(total=total, unit="frame", disable=not progress, leave=False)
    t0 = time.perf_counter()
    seq = 0
    try:
        for raw in batched(items, settings.pipeline.frame_batch):
            batch = _skip_known(runtime, raw, summary)
            if not batch.frames and not batch.rejected:
                continue
            batch.batch_id = f"{stream}#{seq:09d}"
            seq += 1
            _put(queue, batch, threading.Event(), retry=True)
            summary.frames += len(batch.frames)
            summary.rejected.extend(batch.rejected)
            bar.update(len(batch.frames))
    finally:
        bar.close()
        queue.close()
        summary.seconds = time.perf_counter() - t0
    return summary


def _skip_known(runtime: Runtime, batch: Batch, summary: Summary) -> Batch:
    """``Runtime.skip_known`` for one batch, riding out a database restart: the stream
    goes on with the same batches, so resolution order is unchanged."""
    while True:
        before = summary.skipped
        try:
            return next(iter(runtime.skip_known([batch], summary)))
        except Exception as exc:
            if "Operational" not in type(exc).__name__:
                raise
            summary.skipped = before
            log.warning("publisher: store unavailable (%s); retrying", exc)
            time.sleep(1.0)


def _put(queue: StageQueue, batch: Batch, stop: threading.Event, retry: bool = False) -> None:
    """Blocking put. ``retry``: ride out a broker restart (a put whose reply was lost may
    land twice; downstream idempotence absorbs it)."""
    while True:
        try:
            queue.put(batch, timeout=1.0)
            return
        except QueueFull:
            if stop.is_set():
                raise
        except Exception as exc:
            if not retry or stop.is_set():
                raise
            log.warning("publishing %s: %s: %s; retrying", batch.batch_id,
                        type(exc).__name__, exc)
            time.sleep(1.0)


# --- stage handlers -----------------------------------------------------------------------


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

    def __post_init__(self) -> None:
        from revisit.store.postgres_store import PostgresStore

        if not isinstance(self.store, PostgresStore):
            raise RuntimeError(
                "resolve workers need a shared store: set store_url = \"postgresql://...\" "
                "(DuckDB is one process's file)"
            )
        self._reset()

    def _reset(self) -> None:
        from revisit.backends import open_index
        from revisit.identity.resolver import Resolver

        self.index = open_index(self.settings)
        shared = type(self.index).__name__ == "PgVectorIndex"
        self.guard = _LoadGuard(self.index) if shared else None
        self.resolver = Resolver(self.settings, self.store, self.guard or self.index)
        self.versions.clear()

    def __call__(self, batch: Batch) -> list[Batch]:
        self.store.prepare(batch)  # partitions: DDL outside the locked transaction
        stream, seq = sequence_of(batch.batch_id)
        try:
            if stream is None:
                with self.store.identity_transaction() as tx:
                    return [self._apply(tx, batch)]
            with self.store.identity_transaction(stream=stream) as tx:
                last = tx.last_seq(stream)
                if seq <= last:
                    return [self._replay(batch)]
                if seq > last + 1:
                    tx.park(stream, seq, encode_batch(batch))
                    out = []
                else:
                    out = [self._apply(tx, batch)]
                    tx.advance(stream, seq)
            # a resolver killed while draining leaves parked batches: whoever comes next
            # (or idle(), below) applies them
            return out + self._drain(stream)
        except BaseException:
            self._reset()  # in-memory decisions of a rolled-back transaction are void
            raise

    def idle(self) -> list[Batch]:
        """Between deliveries: apply parked batches whose turn has come (their stream's
        predecessor was committed by a resolver that died before draining)."""
        out: list[Batch] = []
        try:
            for stream in self.store.parked_streams():
                out += self._drain(stream)
        except BaseException:
            self._reset()
            raise
        return out

    def _drain(self, stream: str) -> list[Batch]:
        """Apply parked batches that are next in line, one transaction each."""
        out: list[Batch] = []
        while True:
            with self.store.identity_transaction(stream=stream) as tx:
                nxt = tx.last_seq(stream) + 1
                payload = tx.unpark(stream, nxt)
                if payload is None:
                    return out
                out.append(self._apply(tx, decode_batch(payload)))
                tx.advance(stream, nxt)

    def _apply(self, tx: Any, batch: Batch) -> Batch:
        tenants = _tenants(batch)
        tx.lock_tenants(tenants)
        if self._committed(batch):
            return self._replay(batch)
        current = {t: tx.version(t) for t in tenants}
        stale = [t for t in tenants if self.versions.get(t) != current[t]]
        if stale:
            self._reload(stale)
        self.versions.update(current)
        bind = getattr(self.index, "bind", None)
        with bind(tx.conn) if bind is not None else contextlib.nullcontext():
            out = self.resolver.resolve(batch)
            tx.write(out)
        tx.bump(tenants)
        for t in tenants:
            self.versions[t] += 1
        return out

    def _reload(self, tenants: list[str]) -> None:
        """Another process changed these tenants' identities since we last looked."""
        if self.guard is None:  # faiss in memory: rebuild everything from the store, lazily
            self._reset()
            return
        self.guard.loading = True  # pgvector is shared: rebuild only our bookkeeping
        try:
            for t in tenants:
                self.resolver._galleries.pop(t, None)
                self.resolver._gallery(t)
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


def _handler(settings: Settings, stage: str) -> tuple[Callable[[Batch], list[Batch]], Any]:
    """(handler, closable) for one worker thread."""
    if stage in ("detect", "embed"):
        from revisit.vision.stages import Vision

        vision = Vision(settings)
        fn = vision.detect if stage == "detect" else vision.embed
        return (lambda b: [fn(b)]), None
    from revisit.backends import open_store
    from revisit.store.base import erase_withdrawn

    store = open_store(settings)
    if stage == "resolve":
        return ResolveHandler(settings, store), store

    def store_stage(batch: Batch) -> list[Batch]:
        if settings.privacy.keep_crops:
            from revisit.store.crops import save_crops

            save_crops(settings.crops_dir, batch)
        erase_withdrawn(store, batch)
        return []

    return store_stage, store


# --- the worker loop ----------------------------------------------------------------------


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
                 name: str | None = None) -> None:
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
        self._lock = threading.Lock()

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

    def _open(self, i: int) -> tuple[StageQueue, StageQueue | None]:
        from revisit.queue.factory import open_queue

        consumer = f"{self.name}-{i}" if self.name else None
        inq = open_queue(self.settings.queue_url, QUEUE_IN[self.stage], consumer=consumer,
                         maxsize=QUEUE_BOUND)
        out_name = QUEUE_OUT[self.stage]
        outq = None if out_name is None else open_queue(
            self.settings.queue_url, out_name, maxsize=QUEUE_BOUND)
        return inq, outq

    def _loop(self, i: int, max_idle_s: float | None) -> None:
        handler = closable = inq = outq = None
        last_work = last_idle = time.monotonic()
        while not self.stop.is_set():
            try:
                if handler is None:
                    handler, closable = _handler(self.settings, self.stage)
                if inq is None:
                    inq, outq = self._open(i)
                delivery = inq.get(timeout=0.5)
                if delivery is None:
                    idle = getattr(handler, "idle", None)
                    if idle is not None and time.monotonic() - last_idle > 2.0:
                        last_idle = time.monotonic()
                        for out in idle():
                            if outq is not None:
                                _put(outq, out, self.stop)
                    if max_idle_s is not None and time.monotonic() - last_work > max_idle_s:
                        return
                    continue
                t0, c0 = time.perf_counter(), time.thread_time()
                outs = handler(delivery.batch)
                for out in outs:
                    if outq is not None:
                        _put(outq, out, self.stop)
                delivery.ack()
                with self._lock:
                    self.stats.batches += 1
                    self.stats.frames += len(delivery.batch.frames)
                    self.stats.busy_s += time.perf_counter() - t0
                    self.stats.cpu_s += time.thread_time() - c0
                last_work = time.monotonic()
            except Exception as exc:  # broker/database down, or a bad batch: retry later
                with self._lock:
                    self.stats.errors += 1
                log.warning("%s worker %d: %s: %s; reconnecting", self.stage, i,
                            type(exc).__name__, exc)
                for q in (inq, outq):
                    if q is not None:
                        with contextlib.suppress(Exception):
                            q.close()
                inq = outq = None
                if self.stage == "resolve" and handler is not None:
                    with contextlib.suppress(Exception):
                        if closable is not None:
                            closable.close()
                    handler = closable = None
                time.sleep(1.0)
        for q in (inq, outq):
            if q is not None:
                with contextlib.suppress(Exception):
                    q.close()
        if closable is not None:
            with contextlib.suppress(Exception):
                closable.close()
