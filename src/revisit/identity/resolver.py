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

# A tiered index (identity/ann_index.py) may answer from its recent exemplars alone when
# one scores this far above the match threshold: the person was seen minutes ago, and the
# full gallery would only add a look-alike (docs/performance.md measures the agreement).
RECENT_MARGIN = 0.1


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
            c = held[0].embedding.astype(np.float32, copy=True)
            for h in held[1:]:  # at most max_exemplars: a loop beats np.mean's overhead
                c += h.embedding
            c = _unit(c)
            self._centroids[visitor] = c
        return c

    def changed(self, visitor: str) -> None:
        self._centroids.pop(visitor, None)


@dataclass(slots=True)
class _Track:
    """Faces of one camera, consecutive frames, similar embeddings: one person's pass.
    ``rows`` index the batch's matrix of unit embeddings."""

    faces: list[Face]
    rows: list[int]
    weight_sum: float
    vec_sum: np.ndarray
    pooled: np.ndarray  # unit vector of vec_sum, kept current by add()

    @classmethod
    def start(cls, face: Face, row: int, unit: np.ndarray) -> _Track:
        w = _weight(face)
        return cls([face], [row], w, w * unit, unit)

    @property
    def creatable(self) -> bool:
        return any(f.creatable for f in self.faces)

    def add(self, face: Face, row: int, unit: np.ndarray) -> None:
        w = _weight(face)
        self.faces.append(face)
        self.rows.append(row)
        self.weight_sum += w
        self.vec_sum = self.vec_sum + w * unit
        self.pooled = _unit(self.vec_sum)


class _Pending:
    """Exemplars chosen during one batch, written to the index once at its end. Until
    then they are searched here, so a track sees visitors created by the tracks before it
    (as if each had been added at once)."""

    def __init__(self, dim: int) -> None:
        self.items: list[Exemplar] = []
        self.vecs = np.empty((16, dim), np.float32)
        self.live: list[bool] = []

    def add(self, ex: Exemplar) -> None:
        n = len(self.items)
        if n == len(self.vecs):
            self.vecs = np.concatenate([self.vecs, np.empty_like(self.vecs)])
        self.vecs[n] = ex.embedding
        self.items.append(ex)
        self.live.append(True)

    def discard(self, face_image_id: str) -> bool:
        for i, ex in enumerate(self.items):
            if self.live[i] and ex.face_image_id == face_image_id:
                self.live[i] = False
                return True
        return False

    def visitors_near(self, query: np.ndarray, k: int) -> list[str]:
        n = len(self.items)
        if n == 0:
            return []
        sims = self.vecs[:n] @ query
        order = np.argsort(-sims)[: k + self.live.count(False)]
        return [self.items[i].visitor_id for i in order.tolist() if self.live[i]][:k]

    def exemplars(self) -> list[Exemplar]:
        return [ex for ex, live in zip(self.items, self.live, strict=True) if live]


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    n = float(np.sqrt(v @ v))
    return v / n if n > 0 else v


def _units(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


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

    def _remember(self, batch: Batch, pending: _Pending, face: Face, unit: np.ndarray,
                  visitor: str) -> None:
        """Keep the face as an exemplar if the visitor has room or it beats the worst one."""
        g = self._gallery(face.tenant)
        held = g.exemplars.setdefault(visitor, [])
        if len(held) >= self.max_exemplars:
            worst = min(held, key=lambda h: (h.quality, h.face_image_id))
            if face.quality <= worst.quality:
                return
            held.remove(worst)
            if not pending.discard(worst.face_image_id):  # added in this batch: never indexed
                self.index.remove(face.tenant, [worst.face_image_id])
            batch.exemplars_dropped.append((face.tenant, worst.face_image_id))
        held.append(_Held(face.quality, face.face_image_id, unit))
        g.changed(visitor)
        ex = Exemplar(face.tenant, visitor, face.face_image_id, unit, face.quality, face.ts)
        pending.add(ex)
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
        units = _units(np.stack([f.embedding for f in fresh]))  # type: ignore[misc]
        tracks = self._tracks(fresh, units)
        # in order of appearance, so visitor numbers follow first sighting (older = lower)
        tracks.sort(key=lambda t: (t.faces[0].ts, not t.creatable, -t.weight_sum,
                                   t.faces[0].face_image_id))
        # one index search for the whole batch; exemplars the batch adds are searched in
        # ``pending`` and reach the index at the end
        hits = self.index.search(tenant, np.stack([t.pooled for t in tracks]), self.k,
                                 enough=self.threshold + RECENT_MARGIN)
        pending = _Pending(units.shape[1])
        for tr, tr_hits in zip(tracks, hits, strict=True):
            barred = set().union(*(taken[f.frame_key] for f in tr.faces))
            proposals = [h.visitor_id for h in tr_hits]
            proposals += pending.visitors_near(tr.pooled, self.k)
            vid, _ = self._best_centroid(g, tr.pooled, proposals, barred)
            new = False
            if vid is None:
                if not tr.creatable:
                    continue  # below the quality bar: may match, never founds a visitor
                vid, new = self._new_visitor(tenant), True
                batch.visitors_created.append((tenant, vid, min(f.ts for f in tr.faces)))
            rows = units[tr.rows]
            scores = np.ones(len(rows)) if new else rows @ g.centroid(vid)
            for f, s in zip(tr.faces, scores.tolist(), strict=True):
                taken[f.frame_key].add(vid)
                self._emit(batch, f, vid, s, new=new and f is tr.faces[0])
            best = sorted(
                (i for i, f in enumerate(tr.faces) if f.creatable),
                key=lambda i: (-tr.faces[i].quality, tr.faces[i].face_image_id),
            )
            for i in best[: self.per_track]:
                self._remember(batch, pending, tr.faces[i], units[tr.rows[i]].copy(), vid)
        self.index.add(pending.exemplars())

    def _tracks(self, faces: list[Face], units: np.ndarray) -> list[_Track]:
        """Link faces per camera over consecutive frames (see module docstring)."""
        by_camera: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i, f in enumerate(faces):
            by_camera[f.camera_id][f.image_id].append(i)
        out: list[_Track] = []
        for cam in sorted(by_camera):
            frames = by_camera[cam]
            if len(frames) == 1:  # one snapshot: nothing to link, a track per face
                out.extend(_Track.start(faces[r], r, units[r]) for r in next(iter(frames.values())))
                continue
            ordered = sorted(frames.values(), key=lambda rs: (faces[rs[0]].ts, faces[rs[0]].image_id))
            open_tracks: list[_Track] = []
            for rows in ordered:
                first = faces[rows[0]]
                live = [t for t in open_tracks if first.ts - t.faces[-1].ts <= self.track_gap]
                used_f: set[int] = set()
                if live:
                    sims = units[rows] @ np.stack([t.pooled for t in live]).T
                    fi, tj = np.nonzero(sims >= self.track_threshold)
                    options = sorted(zip((-sims[fi, tj]).tolist(), fi.tolist(), tj.tolist(), strict=True))
                    used_t: set[int] = set()
                    for _, i, j in options:
                        if i in used_f or j in used_t:
                            continue
                        live[j].add(faces[rows[i]], rows[i], units[rows[i]])
                        used_f.add(i)
                        used_t.add(j)
                for i, r in enumerate(rows):
                    if i not in used_f:
                        t = _Track.start(faces[r], r, units[r])
                        open_tracks.append(t)
                        out.append(t)
        return out

    def _best_centroid(
        self, g: _Gallery, query: np.ndarray, proposals: list[str], barred: set[str]
    ) -> tuple[str | None, float]:
        """Best centroid among the proposed visitors, if at or above threshold."""
        cands: list[str] = []
        cents: list[np.ndarray] = []
        for vid in dict.fromkeys(proposals):
            if vid not in barred and (c := g.centroid(vid)) is not None:
                cands.append(vid)
                cents.append(c)
        if not cands:
            return None, self.threshold
        scores = np.stack(cents) @ query
        best = int(np.argmax(scores))
        if scores[best] < self.threshold:
            return None, self.threshold
        return cands[best], float(scores[best])

    def _emit(self, batch: Batch, f: Face, vid: str, score: float, *, new: bool) -> None:
        batch.sightings.append(
            Sighting(
                tenant=f.tenant, face_id=vid, face_image_id=f.face_image_id,
                image_id=f.image_id, camera_id=f.camera_id, location_id=f.location_id,
                ts=f.ts, bbox=f.bbox, quality=f.quality, match_score=score,
                new_visitor=new, embedding=f.embedding,
            )
        )
