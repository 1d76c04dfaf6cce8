"""The vision stages as plain functions over :class:`~revisit.records.Batch`.

``detect_batch`` (decode, detect, quality gate, align) and ``embed_batch`` are separate so
the distributed mode can run them as different workers with a faces queue between them;
the embedded default simply calls one after the other.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from contextlib import closing
from itertools import islice
from typing import Any, Protocol, TypeVar

import cv2
import numpy as np

from revisit.config import Settings
from revisit.records import (
    NOT_A_FACE,
    Batch,
    Dropped,
    Face,
    Frame,
    PeopleCount,
    Rejected,
    face_image_id,
)
from revisit.vision import catalog
from revisit.vision.align import align_crop
from revisit.vision.context import clothes_histogram
from revisit.vision.detect import Detection, Detector
from revisit.vision.embed import Embedder
from revisit.vision.header import ImageError, image_size
from revisit.vision.quality import assess, contrast, face_check
from revisit.vision.scenes import SceneKeeper
from revisit.vision.stillness import StillCameras

log = logging.getLogger(__name__)
T = TypeVar("T")


def decode(frame: Frame, max_pixels: int | None = None) -> np.ndarray | Rejected:
    """BGR uint8 pixels of a frame (already decoded ones are returned as they are).

    Never raises on bad input: empty, unknown-format and corrupt images come back as a
    :class:`Rejected` naming the frame and the reason, so one bad snapshot cannot stop a
    camera batch. An image whose header declares more than ``max_pixels`` is refused
    before it is decoded (a 1 MB PNG can declare 20000 x 20000 pixels: 1.2 GB decoded),
    as is one whose size cannot be read from its header (no way round the bound).
    """
    if frame.pixels is not None:
        return frame.pixels
    source = frame.source or frame.key

    def reject(reason: str) -> Rejected:
        return Rejected(source=source, reason=reason, image_id=frame.image_id, tenant=frame.tenant)

    data = frame.data
    if not data:
        return reject("no image data")
    try:  # the format and size from the header (revisit.image_formats: the one list)
        fmt, w, h = image_size(data)
    except ImageError as exc:
        return reject(str(exc))
    if max_pixels is not None and w * h > max_pixels:
        return reject(f"{fmt} of {w}x{h} = {w * h} pixels; at most {max_pixels} "
                      "(ingest.max_pixels): not decoded")
    try:
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        return reject(f"corrupt {fmt}: {str(exc).strip().splitlines()[-1]}")
    if pixels is None or pixels.size == 0:
        return reject(f"corrupt or truncated {fmt} ({len(data)} bytes)")
    return pixels


def head_top_duplicate(face: tuple[int, int, int, int], other: tuple[int, int, int, int]) -> bool:
    """Whether box ``other`` sits on the top of box ``face``, of about its size and centred
    over it: a second detection on one head (forehead and hair), not a second person,
    whose face could not be where that head is."""
    fx, fy, fw, fh = face
    ox, oy, ow, oh = other
    return (fy - oy > 0.3 * fh and fy <= oy + oh <= fy + 0.5 * fh
            and abs((ox + ow / 2) - (fx + fw / 2)) < 0.35 * fw
            and max(fh, oh) / max(min(fh, oh), 1) <= 1.6)


def faces_of_frame(frame: Frame, pixels: np.ndarray, detections: list[Detection],
                   settings: Settings, dropped: list[Dropped] | None = None) -> list[Face]:
    """Quality-gate and align one frame's detections into Face records; faces the gate
    drops are appended to ``dropped`` with their reason."""
    faces: list[Face] = []
    q = settings.quality
    for det in detections:
        height = det.bbox[3]
        if any(o.score > det.score and head_top_duplicate(o.bbox, det.bbox) for o in detections):
            if dropped is not None:
                dropped.append(Dropped(frame.tenant, frame.image_id, det.bbox, NOT_A_FACE,
                                       "a second box on the top of a face's head", frame.source))
            continue
        crop = align_crop(pixels, det.landmarks) if height >= q.min_track_height else None
        verdict = assess(height, det.score, crop, q, det.landmarks)
        if not verdict.keep:
            if dropped is not None:
                dropped.append(Dropped(frame.tenant, frame.image_id, det.bbox, verdict.drop,
                                       verdict.reason, frame.source))
            continue
        faces.append(Face(
            tenant=frame.tenant,
            camera_id=frame.camera_id,
            location_id=frame.location_id,
            image_id=frame.image_id,
            ts=frame.ts,
            face_image_id=face_image_id(frame.tenant, frame.image_id, det.bbox),
            bbox=det.bbox,
            landmarks=det.landmarks,
            det_score=det.score,
            quality=verdict.quality,
            creatable=verdict.creatable,
            crop=crop,
            matchable=verdict.matchable,
            pose=(verdict.pose.yaw, verdict.pose.pitch, verdict.pose.roll),
            context=clothes_histogram(pixels, det.bbox),
            contrast=round(contrast(crop), 2) if crop is not None else None,
            sharpness=round(verdict.sharpness, 2),
        ))
    return faces


class FrameCounter(Protocol):
    """What the detect stage asks of the occupancy stage (revisit.occupancy.counting),
    on the frame it has decoded anyway."""

    def count(self, frame: Frame, pixels: np.ndarray) -> list[PeopleCount]: ...

    def counts(self, frame: Frame) -> bool: ...

    def veto(self, faces: list[Face], dropped: list[Dropped]) -> list[Face]: ...


AHEAD = 2  # frames decoded ahead of the detector: enough to keep it busy, few in memory


def detect_batch(batch: Batch, detector: Detector, settings: Settings,
                 scenes: SceneKeeper | None = None,
                 counting: FrameCounter | None = None,
                 still: StillCameras | None = None,
                 ahead: Executor | None = None) -> Batch:
    """Decode, detect, gate and align every frame; append Faces and Rejected to ``batch``.

    Frames stay in the batch (the store marks them processed even with no face), but
    their pixels and encoded bytes are released: after this stage only crops travel.
    Frames that fail to decode are removed from ``batch.frames`` and reported in
    ``batch.rejected``. ``scenes`` samples the decoded frames for the cameras' empty-scene
    backgrounds (renewed ones travel in ``batch.scenes``); ``counting`` counts people on
    them (``batch.counts``) and drops faces in exclusion zones; ``still`` skips the
    detector on a camera's unchanged empty frames (:mod:`revisit.vision.stillness`; never
    on a camera that counts people). ``ahead``: a one-thread executor that decodes and
    samples the next frames while the detector runs (one thread, so the scene samples
    keep the frames' order); without it this thread does both.
    """
    def prepare(frame: Frame) -> np.ndarray | Rejected:
        pixels = decode(frame, settings.ingest.max_pixels)
        if scenes is not None and not isinstance(pixels, Rejected) and (
                scene := scenes.observe(frame.tenant, frame.camera_id, frame.ts, pixels)):
            batch.scenes.append(scene)
        return pixels

    prepared = (_looking_ahead(ahead, prepare, batch.frames) if ahead is not None
                else (prepare(f) for f in batch.frames))
    with closing(prepared):
        batch.frames = _detect_frames(batch, prepared, detector, settings, counting, still)
    return batch


def _detect_frames(batch: Batch, prepared: Iterator[np.ndarray | Rejected], detector: Detector,
                   settings: Settings, counting: FrameCounter | None,
                   still: StillCameras | None) -> list[Frame]:
    """The frames of ``batch`` that were examined, their decoded pixels from ``prepared``."""
    kept: list[Frame] = []
    for frame, pixels in zip(batch.frames, prepared, strict=True):
        if isinstance(pixels, Rejected):
            batch.rejected.append(pixels)
            frame.data = None
            continue
        thumb, skip = None, False
        if still is not None and not (counting is not None and counting.counts(frame)):
            skip, thumb = still.unchanged_and_empty(frame.tenant, frame.camera_id, frame.ts,
                                                    pixels)
        if skip:
            detections: list[Detection] = []  # stored as processed, with no face
        else:
            try:
                detections = detector.predict([pixels])[0]
            except cv2.error as exc:  # e.g. a degenerate 1x1 image
                batch.rejected.append(Rejected(frame.source or frame.key,
                                               f"detector failed: {exc}", frame.image_id,
                                               frame.tenant))
                frame.data = frame.pixels = None
                continue
            if thumb is not None:
                still.saw(frame.tenant, frame.camera_id, frame.ts, thumb,  # type: ignore[union-attr]
                          empty=not detections)
        faces = faces_of_frame(frame, pixels, detections, settings, batch.dropped)
        if counting is not None:
            faces = counting.veto(faces, batch.dropped)
            batch.counts.extend(counting.count(frame, pixels))
        batch.faces.extend(faces)
        frame.data = None
        frame.pixels = None
        kept.append(frame)
    return kept


def _looking_ahead(pool: Executor, fn: Callable[[Frame], T],
                   frames: list[Frame]) -> Generator[T, None, None]:
    """``map(fn, frames)``, computed up to ``AHEAD`` frames before they are asked for. Every
    submitted call has finished when this ends, even if the caller stops early (it must not
    touch the batch afterwards)."""
    pending: deque[Future[T]] = deque()
    todo = iter(frames)
    try:
        for frame in islice(todo, AHEAD):
            pending.append(pool.submit(fn, frame))
        while pending:
            result = pending.popleft().result()
            for frame in islice(todo, 1):
                pending.append(pool.submit(fn, frame))
            yield result
    finally:
        for f in pending:
            f.cancel()
        wait(pending)


def embed_batch(batch: Batch, embedder: Embedder, settings: Settings) -> Batch:
    """Fill ``face.embedding`` for every face with a crop; drop crops unless kept for privacy
    settings (``privacy.keep_crops``).

    The embedder's face check runs here: how face-like it finds a crop (the norm of its raw
    embedding) is a second opinion on the detector's. Below the embedder's
    ``faceness_floor`` the face is dropped (the back of a head, an object); below
    ``faceness_match`` it may only follow its track.
    """
    todo = [f for f in batch.faces if f.embedding is None and f.crop is not None]
    size = max(1, settings.embedder.batch_size)
    for start in range(0, len(todo), size):
        chunk = todo[start:start + size]
        vectors, norms = embedder.predict_with_norms([f.crop for f in chunk])
        for face, vec, norm in zip(chunk, vectors, norms.tolist(), strict=True):
            face.embedding = vec
            face.faceness = round(float(norm), 3)
    kept: list[Face] = []
    for face in batch.faces:
        verdict = face_check(face.faceness, embedder.faceness_floor, embedder.faceness_match)
        if verdict == "drop":
            batch.dropped.append(Dropped(
                face.tenant, face.image_id, face.bbox, NOT_A_FACE,
                f"embedding check {face.faceness:.1f} < {embedder.faceness_floor}"))
            continue
        if verdict == "track":
            face.matchable = face.creatable = False
        kept.append(face)
    batch.faces = kept
    if not settings.privacy.keep_crops:
        for face in batch.faces:
            face.crop = None
    return batch


class Vision:
    """Detector and embedder built from Settings on first use (one per process/worker).

    Not thread-safe: OpenCV nets keep state per call; give each worker thread its own.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._detector: Detector | None = None
        self._embedder: Embedder | None = None
        self.counting: FrameCounter | None = None  # set where the store is at hand
        self.still = StillCameras() if settings.pipeline.skip_still_frames else None
        self.scenes = (SceneKeeper(lambda img: [d.bbox for d in self._scene_detector.predict(
                           [img])[0]]) if settings.privacy.scene_backgrounds else None)
        self._ahead: ThreadPoolExecutor | None = None
        self._second_detector: Detector | None = None

    @property
    def detector(self) -> Detector:
        if self._detector is None:
            self._detector = self._new_detector()
        return self._detector

    def _new_detector(self) -> Detector:
        det = catalog.create("detector", self.settings.detector.model,
                              settings=self.settings.detector, **self._runtime())
        assert isinstance(det, Detector)
        return det

    @property
    def _scene_detector(self) -> Detector:
        """The detector for faces left in a scene's median. With ``decode_ahead`` the scenes
        are sampled in the decode thread while the detect thread runs the detector, and
        an OpenCV net must not run in two threads at once: that thread gets its own."""
        if not self.settings.pipeline.decode_ahead:
            return self.detector
        if self._second_detector is None:
            self._second_detector = self._new_detector()
        return self._second_detector

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            emb = catalog.create("embedder", self.settings.embedder.model,
                                  batch_size=self.settings.embedder.batch_size,
                                  **self._runtime())
            assert isinstance(emb, Embedder)
            self._embedder = emb
        return self._embedder

    def _runtime(self) -> dict[str, Any]:
        p = self.settings.pipeline
        return {"threads": p.threads, "runtime": p.runtime, "precision": p.precision}

    @property
    def match_threshold(self) -> float:
        """identity.match_threshold if set, else the measured default of the embedder."""
        return catalog.match_threshold(self.settings)

    def detect(self, batch: Batch) -> Batch:
        if self._ahead is None and self.settings.pipeline.decode_ahead:
            self._ahead = ThreadPoolExecutor(1, thread_name_prefix="decode")
        return detect_batch(batch, self.detector, self.settings, self.scenes, self.counting,
                            self.still, self._ahead)

    def embed(self, batch: Batch) -> Batch:
        return embed_batch(batch, self.embedder, self.settings)

    def process(self, batch: Batch) -> Batch:
        return self.embed(self.detect(batch))

    def close(self) -> None:
        """Stop the decode thread (a later ``detect`` starts another)."""
        if self._ahead is not None:
            self._ahead.shutdown()
            self._ahead = None
