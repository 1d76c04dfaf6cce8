"""Wires the stages: detect → embed → resolve → store, each a function over a Batch.

The embedded default runs one thread per stage connected by bounded in-process queues, so
decoding/detection of one batch overlaps embedding of the previous one (OpenCV and
onnxruntime release the GIL). The distributed mode runs the very same stage functions as
separate workers over broker queues (:mod:`revisit.distributed`, which imports this
module, never the other way round).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from revisit.config import Settings
from revisit.queue.base import QueueFull, StageQueue
from revisit.queue.memory import MemoryQueue
from revisit.records import (
    DROP_REASONS,
    NOT_A_FACE,
    REJECT_REASONS,
    TOO_SMALL,
    WEAK_TRACK,
    Batch,
    Dropped,
    Frame,
    Rejected,
)

if TYPE_CHECKING:
    from revisit.identity.resolver import Resolver
    from revisit.vision.stages import Vision

log = logging.getLogger(__name__)

# Frames a run remembers by image id to drop one sent again while its first copy is still
# in the pipeline (stage queues hold far fewer); older repeats are found in the store.
IN_FLIGHT = 50_000

StageFn = Callable[[Batch], Batch]


@dataclass(slots=True)
class Summary:
    """What a run did; printed as the one-line summary at the end."""

    frames: int = 0
    faces: int = 0
    sightings: int = 0
    new_visitors: int = 0
    skipped: int = 0  # frames already stored (idempotent re-ingest)
    merges: int = 0  # visitors merged by end-of-run consolidation
    rejected: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0
    dropped: Counter = field(default_factory=Counter)  # reason code -> faces
    dropped_faces: list[Dropped] = field(default_factory=list)  # the first MAX_LISTED, for -v
    largest_dropped: int = 0  # tallest face (px) dropped as too small or in a weak track
    held: int = 0  # faces of open tracks saved undecided, for the next run to decide

    MAX_LISTED = 10_000

    def add(self, batch: Batch) -> None:
        self.frames += len(batch.frames)
        self.faces += len(batch.faces)
        self.sightings += len(batch.sightings)
        self.new_visitors += len(batch.visitors_created)
        self.rejected.extend(batch.rejected)
        self.held += sum(len(t.held) for t in batch.tracks_saved)
        for d in batch.dropped:
            self.dropped[d.reason] += 1
            if d.reason in (TOO_SMALL, WEAK_TRACK):
                self.largest_dropped = max(self.largest_dropped, d.bbox[3])
        room = self.MAX_LISTED - len(self.dropped_faces)
        if room > 0:
            self.dropped_faces.extend(batch.dropped[:room])

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        dropped = ""
        if self.dropped:
            parts = ", ".join(f"{n} {DROP_REASONS.get(r, r)}"
                              for r, n in self.dropped.most_common())
            dropped = f" (dropped: {parts})"
        detected = self.faces + self.dropped[TOO_SMALL] + self.dropped[NOT_A_FACE]
        coded = Counter(r.code for r in self.rejected if r.code)
        why = ", ".join(f"{n} {REJECT_REASONS.get(c, c)}" for c, n in coded.most_common())
        if self.held:
            dropped += f" ({self.held} held in open tracks for the next run)"
        return (
            f"{self.frames} frames, {detected} faces{dropped}, {self.sightings} sightings, "
            f"{self.new_visitors} new visitors, {self.merges} merged, "
            f"{len(self.rejected)} rejected{f' ({why})' if why else ''}, "
            f"{self.skipped} already stored; {self.seconds:.1f} s, "
            f"{self.frames_per_second:.1f} frames/s, "
            f"{self.faces / self.seconds if self.seconds else 0.0:.1f} faces/s"
        )


def too_small_advice(summary: Summary, settings: Settings) -> str | None:
    """One line for a run that saw faces but counted nobody because they were all too
    small or too weak, naming the settings that decide it; None otherwise."""
    small = summary.dropped.get(TOO_SMALL, 0) + summary.dropped.get(WEAK_TRACK, 0)
    if summary.sightings or not small:
        return None
    q, ident = settings.quality, settings.identity
    if summary.largest_dropped >= q.min_face_height:
        return (f"no visitor counted: the {small} faces seen were too turned, blurred or "
                "unconfident to found a visitor, and matched nobody known (`revisit -v` lists "
                "each face with its reason).")
    largest = f" (largest {summary.largest_dropped} px)" if summary.largest_dropped else ""
    return (
        f"no visitor counted: all {small} faces seen were too small or too weak{largest}. A "
        f"face is followed from quality.min_track_height={q.min_track_height} px, matched from "
        f"quality.min_match_height={q.min_match_height} px, and a visitor needs one face of "
        f"quality.min_face_height={q.min_face_height} px or identity.track_create_faces="
        f"{ident.track_create_faces} matchable snapshots; lower them to count smaller faces "
        "(re-identification below ~24 px is unreliable, docs/accuracy.md) or move the camera "
        "closer."
    )


def batched(
    items: Iterable[Frame | Rejected], size: int, prefix: str = "b"
) -> Iterator[Batch]:
    """Group a stream of frames (and rejected lines) into camera batches of ``size`` frames."""
    batch = Batch(batch_id=f"{prefix}-0")
    n = 0
    for item in items:
        if isinstance(item, Rejected):
            batch.rejected.append(item)
            continue
        batch.frames.append(item)
        if len(batch.frames) >= size:
            yield batch
            n += 1
            batch = Batch(batch_id=f"{prefix}-{n}")
    if batch.frames or batch.rejected:
        yield batch


class _StageThread(threading.Thread):
    """Consumes ``inbox``, applies ``fn``, feeds ``outbox`` (or ``sink``), acks after."""

    def __init__(
        self,
        name: str,
        fn: StageFn,
        inbox: StageQueue,
        upstream_done: threading.Event,
        outbox: StageQueue | None,
        sink: Callable[[Batch], None] | None,
        abort: threading.Event,
    ) -> None:
        super().__init__(name=f"stage-{name}", daemon=True)
        self.fn = fn
        self.inbox = inbox
        self.outbox = outbox
        self.sink = sink
        self.upstream_done = upstream_done
        self.done = threading.Event()
        self.abort = abort
        self.error: BaseException | None = None
        self.busy = 0.0

    def run(self) -> None:
        try:
            while not self.abort.is_set():
                delivery = self.inbox.get(timeout=0.05)
                if delivery is None:
                    if self.upstream_done.is_set() and self.inbox.depth() == 0:
                        break
                    continue
                t0 = time.perf_counter()
                out = self.fn(delivery.batch)
                self.busy += time.perf_counter() - t0
                if self.outbox is not None:
                    _put(self.outbox, out, self.abort)
                if self.sink is not None:
                    self.sink(out)
                delivery.ack()
        except BaseException as exc:  # surfaced by Pipeline.run
            self.error = exc
            self.abort.set()
        finally:
            self.done.set()


def _put(queue: StageQueue, batch: Batch, abort: threading.Event) -> None:
    """Blocking put that still notices an abort elsewhere in the pipeline."""
    while not abort.is_set():
        try:
            queue.put(batch, timeout=0.1)
            return
        except QueueFull:
            continue


class Pipeline:
    """Runs named stages in threads over bounded queues; the last stage's output goes to
    ``on_batch`` (progress, summary)."""

    def __init__(self, stages: list[tuple[str, StageFn]], queue_size: int = 8) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages = stages
        self.queue_size = queue_size
        self.stage_seconds: dict[str, float] = {}

    def run(self, batches: Iterable[Batch], on_batch: Callable[[Batch], None]) -> None:
        abort = threading.Event()
        source_done = threading.Event()
        queues = [MemoryQueue(name, self.queue_size) for name, _ in self.stages]
        threads: list[_StageThread] = []
        upstream = source_done
        for i, (name, fn) in enumerate(self.stages):
            last = i == len(self.stages) - 1
            t = _StageThread(
                name, fn, queues[i], upstream,
                None if last else queues[i + 1], on_batch if last else None, abort,
            )
            threads.append(t)
            upstream = t.done
        for t in threads:
            t.start()
        try:
            for batch in batches:
                if abort.is_set():
                    break
                _put(queues[0], batch, abort)
        except BaseException:
            abort.set()
            raise
        finally:
            source_done.set()
            for t in threads:
                t.join()
            self.stage_seconds = {t.name.removeprefix("stage-"): t.busy for t in threads}
        for t in threads:
            if t.error is not None:
                raise t.error


def pipeline_model_settings(settings: Settings) -> Settings:
    """Settings for the models of an in-process pipeline: ``pipeline.threads = 0`` (auto)
    becomes the cores divided between the two model stages, which run at the same time.

    Each stage thread calling OpenCV with a pool of every core oversubscribes the machine,
    and the int8 YuNet/SFace calls gain nothing from a second thread (docs/performance.md,
    "Pipeline").
    """
    if settings.pipeline.threads:
        return settings
    from revisit.vision.model import resolve_threads

    threads = max(1, resolve_threads(0) // 2)
    return settings.model_copy(
        update={"pipeline": settings.pipeline.model_copy(update={"threads": threads})}
    )


def zone_book(store: Any) -> Any:
    """Every camera's zones (occupancy), read from the store and cached a few seconds."""
    from revisit.occupancy.counting import ZoneBook
    from revisit.occupancy.db import all_camera_zones

    return ZoneBook(lambda: all_camera_zones(store))


def counting_for(settings: Settings, zones: Any) -> Any:
    """The occupancy stage of a detect stage, over the cameras' zones (:func:`zone_book`)."""
    from revisit.occupancy.counting import Counting

    return Counting(zones, threads=pipeline_model_settings(settings).pipeline.threads)


class AfterStore:
    """What a stored batch may set off: the occupancy alert rules judge its people counts,
    the watchlist its sightings. Both are built on first use, on the store's database."""

    def __init__(self, store: Any, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._watcher: Any = None
        self._watchlist: Any = None

    def __call__(self, batch: Batch) -> None:
        if batch.counts:
            self.watcher.after(batch.counts)
        if batch.sightings:
            self.watchlist.after(batch.sightings)

    @property
    def watcher(self) -> Any:
        """Occupancy alert rules, judged after each batch with people counts."""
        if self._watcher is None:
            from revisit.occupancy.watch import Watcher

            self._watcher = Watcher(self.store, self.settings)
        return self._watcher

    @property
    def watchlist(self) -> Any:
        """Watchlist alerts (revisit.known), judged after each batch with sightings."""
        if self._watchlist is None:
            from revisit.known.watchlist import WatchlistWatcher

            self._watchlist = WatchlistWatcher(self.store, self.watcher.deliverer)
        return self._watchlist

    def open(self) -> AfterStore:
        """Build the watcher and the watchlist now, not at the first batch that needs them."""
        self._watchlist = self.watchlist  # builds the watcher too
        return self

    def wait(self) -> None:
        """Let the alerts on their way be delivered (and logged)."""
        if self._watcher is not None:
            self._watcher.deliverer.wait()


class Models(Protocol):
    """The two model stages of a pipeline, wherever the models run."""

    def detect(self, batch: Batch) -> Batch: ...

    def embed(self, batch: Batch) -> Batch: ...

    def close(self) -> None: ...


class LocalModels:
    """Detector and embedder in this process, loaded on first use.

    ``zones``: the cameras' zones for people counting and exclusion (``None``: no
    occupancy stage).
    """

    def __init__(self, settings: Settings, zones: Any = None) -> None:
        self.settings = settings
        self.zones = zones
        self._vision: Vision | None = None
        self._embed_pool: Any = None
        self._embed_visions: list[Vision] = []

    @property
    def vision(self) -> Vision:
        if self._vision is None:
            from revisit.vision.stages import Vision

            self._vision = Vision(pipeline_model_settings(self.settings))
            if self.zones is not None:
                self._vision.counting = counting_for(self.settings, self.zones)
        return self._vision

    def detect(self, batch: Batch) -> Batch:
        return self.vision.detect(batch)

    def embed(self, batch: Batch) -> Batch:
        """The embed stage: the batch's faces split over ``embed_workers`` threads, each
        with its own embedder (OpenCV nets are not thread-safe), order kept.

        Embedding costs several times detection per frame, so with one model thread per
        stage the embed thread is the bottleneck while the detect thread idles; splitting a
        batch's faces over the cores lets embedding use the idle time (docs/performance.md).
        """
        workers = self.embed_workers
        todo = [f for f in batch.faces if f.embedding is None and f.crop is not None]
        if workers <= 1 or len(todo) < 2 * workers:
            return self.vision.embed(batch)
        if self._embed_pool is None:
            from concurrent.futures import ThreadPoolExecutor

            from revisit.vision.stages import Vision

            model_settings = pipeline_model_settings(self.settings)
            self._embed_visions = [self.vision] + [
                Vision(model_settings) for _ in range(workers - 1)
            ]
            self._embed_pool = ThreadPoolExecutor(workers, thread_name_prefix="embed")
        step = -(-len(batch.faces) // workers)
        parts = [Batch(batch.batch_id, faces=batch.faces[i:i + step])
                 for i in range(0, len(batch.faces), step)]
        list(self._embed_pool.map(lambda vp: vp[0].embed(vp[1]),
                                  zip(self._embed_visions, parts, strict=False)))
        return batch

    @property
    def embed_workers(self) -> int:
        """Threads embedding one batch: the cores over the model threads of each call."""
        from revisit.vision.model import resolve_threads

        threads = pipeline_model_settings(self.settings).pipeline.threads
        return max(1, resolve_threads(0) // threads)

    def close(self) -> None:
        if self._embed_pool is not None:
            self._embed_pool.shutdown()
            self._embed_pool = None
        if self._vision is not None:
            self._vision.close()


class Runtime:
    """The embedded default in one object: store, face index, models, resolver, stages.

    Backends come from the URLs in settings; empty URLs mean DuckDB + faiss in the data
    directory. Models load lazily, so opening a runtime for a report costs no model load.
    """

    def __init__(self, settings: Settings) -> None:
        from revisit.backends import open_index, open_store

        self.settings = settings
        settings.data.mkdir(parents=True, exist_ok=True)
        self.store = open_store(settings)
        if settings.occupancy.cameras or settings.occupancy.locations:
            from revisit.occupancy.db import apply_settings

            apply_settings(self.store, settings)
        self.index = open_index(settings)
        # The resolver searches one frame's faces at a time; on such tiny searches faiss's
        # OpenMP pool (all cores by default) only spins, taking the cores the models run
        # on (docs/performance.md, "faiss OpenMP").
        import faiss

        faiss.omp_set_num_threads(1)
        self.zones = zone_book(self.store)
        self.models = LocalModels(settings, zones=self.zones)
        self._resolver: Resolver | None = None
        self._tenants_seen: set[str] = set()  # by skip_known: what finish() consolidates
        from revisit.tenancy.privacy import RetentionCutoffs

        # snapshots past their tenant's retention: refused at the door and before resolve
        self.retention = RetentionCutoffs(self.store,
                                          enabled=settings.privacy.retention_at_door)
        self.after_store = AfterStore(self.store, settings)
        self.stage_seconds: dict[str, float] = {}

    @property
    def vision(self) -> Vision:
        return self.models.vision

    @property
    def resolver(self):
        if self._resolver is None:
            from revisit.identity.resolver import Resolver

            self._resolver = Resolver(self.settings, self.store, self.index,
                                      refuse=self.retention.refuse)
        return self._resolver

    @property
    def loaded_resolver(self) -> Resolver | None:
        """The resolver if it has been used (None: nothing is held in memory yet)."""
        return self._resolver

    def store_batch(self, batch: Batch) -> Batch:
        # also erases the visitors the resolver withdrew, and keeps the faces' crops when
        # privacy.keep_crops left them on the faces
        self.store.write(batch)
        self.after_store(batch)
        return batch

    @property
    def watchlist(self) -> Any:
        return self.after_store.watchlist

    @property
    def watcher(self) -> Any:
        return self.after_store.watcher

    def stages(self) -> list[tuple[str, StageFn]]:
        return [
            ("detect", self.models.detect),
            ("embed", self.models.embed),
            ("resolve", self.resolver.resolve),
            ("store", self.store_batch),
        ]

    def skip_known(self, batches: Iterable[Batch], summary: Summary,
                   recent: dict[tuple[str, str], None] | None = None) -> Iterator[Batch]:
        """Refuse frames older than their tenant's retention (before any model runs on
        them) and drop frames the store already has: re-ingesting changes nothing. An image id
        met earlier in this run is dropped too, stored yet or not (a later line reusing an
        id while its first copy is still in the pipeline is the same snapshot); the ids of
        the last ``IN_FLIGHT`` frames are enough for that, older ones are in the store.
        ``recent``: those ids, insertion-ordered, for a run that calls this batch by batch."""
        recent = {} if recent is None else recent
        for batch in batches:
            self.retention.refuse(batch)
            by_tenant: dict[str, list[str]] = {}
            for f in batch.frames:
                by_tenant.setdefault(f.tenant, []).append(f.image_id)
            self._tenants_seen.update(by_tenant)
            known: set[tuple[str, str]] = set()
            for tenant, ids in by_tenant.items():
                known.update((tenant, i) for i in self.store.known_frames(tenant, ids))
            unique = []
            for f in batch.frames:
                key = (f.tenant, f.image_id)
                if key in known or key in recent:
                    summary.skipped += 1
                    continue
                recent[key] = None
                unique.append(f)
            while len(recent) > IN_FLIGHT:
                del recent[next(iter(recent))]
            batch.frames = unique
            yield batch

    def ingest(
        self,
        items: Iterable[Frame | Rejected],
        *,
        progress: bool = False,
        total: int | None = None,
    ) -> Summary:
        """Run frames through every stage in this process and return what happened. (With a
        broker configured, callers publish instead:
        :func:`revisit.distributed.publish.ingest_frames`.)"""
        if self.settings.queue_url:
            raise RuntimeError("queue_url is set: publish the frames for workers "
                               "(revisit.distributed.publish.ingest_frames)")
        from tqdm import tqdm

        summary = Summary()
        bar = tqdm(total=total, unit="frame", disable=not progress, leave=False)
        lock = threading.Lock()

        def done(batch: Batch) -> None:
            with lock:
                summary.add(batch)
                bar.update(len(batch.frames))

        t0 = time.perf_counter()
        pipe = Pipeline(self.stages(), queue_size=self.settings.pipeline.queue_size)
        try:
            batches = batched(items, self.settings.pipeline.frame_batch)
            pipe.run(self.skip_known(batches, summary), done)
            self.finish(summary)
        finally:
            bar.close()
            summary.seconds = time.perf_counter() - t0
            self.stage_seconds = pipe.stage_seconds
        return summary

    def finish(self, summary: Summary | None = None) -> None:
        """End of stream: store whatever the resolver still holds, then consolidate the
        tenants this run touched (identity.consolidate; docs/accuracy.md), also when every
        frame was stored already: a run killed after its last batch and before this step
        is completed by running it again."""
        tail = self.flush()
        if tail is not None and summary is not None:
            summary.add(tail)
        tenants = set(self._tenants_seen)
        if self._resolver is not None:
            tenants.update(self._resolver.loaded_tenants())
        if self.settings.identity.consolidate:
            from revisit.identity.consolidate import consolidate

            for tenant in sorted(tenants):
                merges = consolidate(self.settings, self.store, self._resolver, tenant)
                if summary is not None:
                    summary.merges += len(merges)

    def flush(self) -> Batch | None:
        """Decide and store the faces the resolver still holds (tracks not decided yet): at
        the end of a run, and when a server stops. The tracks a next snapshot could still
        join are saved with it, for the next run or start on this data to continue (a
        weak one's faces stay held until then). Faces an earlier run held when it was
        killed are read back from the store for the tenants this run saw."""
        seen = self._tenants_seen | (self._resolver.loaded_tenants() if self._resolver else set())
        tenants = sorted(seen & set(self.store.held_tenants())) if seen else []
        if self._resolver is None and not tenants:
            return None
        tail = self.resolver.flush(tenants, keep_open=True)
        if tail is not None:
            self.store_batch(tail)
        return tail

    def use_models(self, models: Models) -> None:
        """Run detect and embed on ``models`` (e.g. a model process) from now on."""
        self.models.close()
        self.models = models

    def close(self) -> None:
        self.models.close()
        self.after_store.wait()  # alerts on their way: delivered and logged first
        self.store.close()
