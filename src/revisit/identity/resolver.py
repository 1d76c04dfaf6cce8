"""Identity resolution: each embedded face becomes a sighting of a visitor.

One snapshot of a face is weak evidence (small, blurred, half-turned); a visit usually
leaves several consecutive snapshots on a camera. So the resolver decides per *track*, not
per face (measured in docs/accuracy.md):

1. **Redelivered faces** keep the visitor they were stored with (idempotence), and that
   visitor is taken in their frame.
2. **Tracks**: the batch's other faces are linked, per camera and in time order, to the
   track whose pooled embedding they resemble (>= ``track_threshold``), if the track's last
   face is at most ``track_gap_s`` earlier and in another frame (a track never holds two
   faces of one frame). Batches are camera batches of consecutive frames, so a visit's
   snapshots mostly arrive together; deferral never outlives the batch, so a crash cannot
   lose a held face.
3. **Matching**: each track's pooled embedding (quality-weighted mean) is compared with
   the centroids of the visitors the face index proposes (nearest exemplars); the best
   centroid at or above the match threshold wins. Tracks are decided in order of
   appearance, so visitors created from this batch are visible to the tracks after them
   and visitor numbers follow first sightings.
4. **Cannot-link**: two faces of one frame never share a visitor: a visitor given to one
   track is barred for every track that shares a frame with it.
5. **Creation**: an unmatched track founds a new visitor only if one of its faces passed
   the quality gate; then all its faces (small ones too) are sightings of it. A track of
   poor faces only that matches nobody is dropped.
6. **Exemplars**: per visitor at most ``max_exemplars`` (best quality kept), at most
   ``exemplars_per_track`` from one track so a visitor's centroid spans visits.

Splits that survive this (a visitor seen once from afar, then close up) are repaired
afterwards by :mod:`revisit.identity.consolidate` (average-linkage merges, reversible).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np

from revisit.config import Settings
from revisit.identity.index import FaceIndex
from revisit.records import Batch, Exemplar, Face, Sighting
from revisit.store.base import SightingStore
from revisit.store.visitor_ids import format_visitor_id
from revisit.vision.embed import DEFAULT_MATCH_THRESHOLD

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Held:
    """One stored exemplar as the resolver remembers it."""

    quality: float
    face_image_id: str
    embedding: np.ndarray


@dataclass(slots=True)
class _Gallery:
    """What the resolver remembers of one tenant beyond the index: exemplars per visitor."""

    next_number: int
    exemplars: dict[str, list[_Held]] = field(default_factory=dict)
    _centroids: dict[str, np.ndarray] = field(default_factory=dict)

    def centroid(self, visitor: str) -> np.ndarray | None:
        c = self._centroids.get(visitor)
        if c is None:
            held = self.exemplars.get(visitor)
            if not held:
                return None
            c = _unit(np.mean([h.embedding for h in held], axis=0))
            self._centroids[visitor] = c
        return c

    def changed(self, visitor: str) -> None:
        self._centroids.pop(visitor, None)


@dataclass(slots=True)
class _Track:
    """Faces of one camera, consecutive frames, similar embeddings: one person's pass."""

    faces: list[Face]
    weight_sum: float
    vec_sum: np.ndarray

    @property
    def pooled(self) -> np.ndarray:
        return _unit(self.vec_sum)

    @property
    def creatable(self) -> bool:
        return any(f.creatable for f in self.faces)

    def add(self, face: Face) -> None:
        w = _weight(face)
        self.faces.append(face)
        self.weight_sum += w
        self.vec_sum = self.vec_sum + w * np.asarray(face.embedding, dtype=np.float32)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _weight(face: Face) -> float:
    """Pooling weight: better faces count more, poor ones still a little."""
    return 0.25 + float(face.quality)


class Resolver:
    """Stateful per tenant; loads each tenant's gallery from the store on first use."""

    def __init__(self, settings: Settings, store: SightingStore, index: FaceIndex) -> None:
        self.settings = settings
        self.store = store
        self.index = index
        ident = settings.identity
        self.threshold = (
            ident.match_threshold
            if ident.match_threshold is not None
            else DEFAULT_MATCH_THRESHOLD[settings.embedder.model]
        )
        self.track_threshold = self.threshold + ident.track_threshold_offset
        self.track_gap = timedelta(seconds=ident.track_gap_s)
        self.k = ident.neighbours
        self.max_exemplars = ident.max_exemplars
        self.per_track = ident.exemplars_per_track
        self._galleries: dict[str, _Gallery] = {}

    # -- gallery state ---------------------------------------------------------------
    def _gallery(self, tenant: str) -> _Gallery:
        g = self._galleries.get(tenant)
        if g is None:
            g = _Gallery(next_number=self.store.max_visitor_number(tenant) + 1)
            for chunk in self.store.load_exemplars(tenant):
                self.index.add(chunk)
                for ex in chunk:
                    g.exemplars.setdefault(ex.visitor_id, []).append(
                        _Held(ex.quality, ex.face_image_id, np.asarray(ex.embedding, np.float32))
                    )
            self._galleries[tenant] = g
        return g

    def reload(self, tenant: str) -> None:
        """Forget a tenant's gallery and rebuild it from the store (after a merge/split)."""
        g = self._galleries.pop(tenant, None)
        if g is not None:  # by face id: entries may still carry a merged-away visitor id
            self.index.remove(tenant, [h.face_image_id for held in g.exemplars.values()
                                       for h in held])
        self._gallery(tenant)

    def _new_visitor(self, tenant: str) -> str:
        g = self._gallery(tenant)
        vid = format_visitor_id(g.next_number)
        g.next_number += 1
        return vid

    def _remember(self, batch: Batch, face: Face, visitor: str) -> None:
        """Keep the face as an exemplar if the visitor has room or it beats the worst one."""
        assert face.embedding is not None
        g = self._gallery(face.tenant)
        held = g.exemplars.setdefault(visitor, [])
        if len(held) >= self.max_exemplars:
            worst = min(held, key=lambda h: (h.quality, h.face_image_id))
            if face.quality <= worst.quality:
                return
            held.remove(worst)
            self.index.remove(face.tenant, [worst.face_image_id])
            batch.exemplars_dropped.append((face.tenant, worst.face_image_id))
        emb = np.asarray(face.embedding, dtype=np.float32)
        held.append(_Held(face.quality, face.face_image_id, emb))
        g.changed(visitor)
        ex = Exemplar(face.tenant, visitor, face.face_image_id, emb, face.quality, face.ts)
        self.index.add([ex])
        batch.exemplars_added.append(ex)

    # -- the stage -------------------------------------------------------------------
    def resolve(self, batch: Batch) -> Batch:
        """Fill ``batch.sightings`` for the batch's embedded faces (module docstring)."""
        faces = [f for f in batch.faces if f.embedding is not None]
        by_tenant: dict[str, list[Face]] = defaultdict(list)
        for f in faces:
            by_tenant[f.tenant].append(f)
        for tenant in sorted(by_tenant):
            self._resolve_tenant(batch, tenant, by_tenant[tenant])
        return batch

    def flush(self) -> Batch | None:
        """Faces still held at the end of a stream. Deferral never outlives a batch, so
        there are none; the hook exists so a pipeline can drain any resolver the same way."""
        return None

    def _already_stored(self, tenant: str, faces: Iterable[Face]) -> dict[str, str]:
        return self.store.existing_sightings(tenant, [f.face_image_id for f in faces])

    def _resolve_tenant(self, batch: Batch, tenant: str, faces: list[Face]) -> None:
        g = self._gallery(tenant)
        known = self._already_stored(tenant, faces)
        taken: dict[str, set[str]] = defaultdict(set)  # frame -> visitors given there
        canonical = {v: self.store.canonical_id(tenant, v) for v in set(known.values())}
        for f in faces:
            if f.face_image_id in known:
                vid = known[f.face_image_id]
                taken[f.frame_key].update((vid, canonical[vid]))
                self._emit(batch, f, vid, 1.0, new=False)
        fresh = [f for f in faces if f.face_image_id not in known]
        if not fresh:
            return
        tracks = self._tracks(fresh)
        # in order of appearance, so visitor numbers follow first sighting (older = lower)
        tracks.sort(key=lambda t: (t.faces[0].ts, not t.creatable, -t.weight_sum,
                                   t.faces[0].face_image_id))
        for tr in tracks:
            barred = set().union(*(taken[f.frame_key] for f in tr.faces))
            vid, _ = self._match(tenant, tr.pooled, barred)
            new = False
            if vid is None:
                if not tr.creatable:
                    continue  # below the quality bar: may match, never founds a visitor
                vid, new = self._new_visitor(tenant), True
                batch.visitors_created.append((tenant, vid, min(f.ts for f in tr.faces)))
            for f in tr.faces:
                taken[f.frame_key].add(vid)
                s = 1.0 if new else float(np.dot(_unit(f.embedding), g.centroid(vid)))  # type: ignore[arg-type]
                self._emit(batch, f, vid, s, new=new and f is tr.faces[0])
            best = sorted(
                (f for f in tr.faces if f.creatable), key=lambda f: (-f.quality, f.face_image_id)
            )
            for f in best[: self.per_track]:
                self._remember(batch, f, vid)

    def _tracks(self, faces: list[Face]) -> list[_Track]:
        """Link faces per camera over consecutive frames (see module docstring)."""
        by_camera: dict[str, list[Face]] = defaultdict(list)
        for f in faces:
            by_camera[f.camera_id].append(f)
        out: list[_Track] = []
        for cam in sorted(by_camera):
            frames: dict[str, list[Face]] = defaultdict(list)
            for f in by_camera[cam]:
                frames[f.frame_key].append(f)
            ordered = sorted(frames.values(), key=lambda fs: (fs[0].ts, fs[0].image_id))
            open_tracks: list[_Track] = []
            for frame_faces in ordered:
                ts = frame_faces[0].ts
                live = [t for t in open_tracks if ts - t.faces[-1].ts <= self.track_gap
                        and t.faces[-1].frame_key != frame_faces[0].frame_key]
                options = []
                for i, f in enumerate(frame_faces):
                    e = _unit(f.embedding)  # type: ignore[arg-type]
                    for j, t in enumerate(live):
                        s = float(np.dot(e, t.pooled))
                        if s >= self.track_threshold:
                            options.append((s, i, j))
                options.sort(key=lambda o: (-o[0], o[1], o[2]))
                used_f: set[int] = set()
                used_t: set[int] = set()
                for _, i, j in options:
                    if i in used_f or j in used_t:
                        continue
                    live[j].add(frame_faces[i])
                    used_f.add(i)
                    used_t.add(j)
                for i, f in enumerate(frame_faces):
                    if i not in used_f:
                        t = _Track([], 0.0, np.zeros_like(f.embedding, dtype=np.float32))
                        t.add(f)
                        open_tracks.append(t)
                        out.append(t)
        return out

    def _match(
        self, tenant: str, query: np.ndarray, barred: set[str]
    ) -> tuple[str | None, float]:
        """Best visitor centroid among the index's proposals, if at or above threshold."""
        g = self._gallery(tenant)
        hits = self.index.search(tenant, query[None, :], self.k)[0]
        best, best_score = None, self.threshold
        for vid in dict.fromkeys(h.visitor_id for h in hits):
            if vid in barred:
                continue
            c = g.centroid(vid)
            if c is None:
                continue
            s = float(np.dot(query, c))
            if s >= best_score:
                best, best_score = vid, s
        return best, best_score

    def _emit(self, batch: Batch, f: Face, vid: str, score: float, *, new: bool) -> None:
        batch.sightings.append(
            Sighting(
                tenant=f.tenant, face_id=vid, face_image_id=f.face_image_id,
                image_id=f.image_id, camera_id=f.camera_id, location_id=f.location_id,
                ts=f.ts, bbox=f.bbox, quality=f.quality, match_score=score,
                new_visitor=new, embedding=f.embedding,
            )
        )
