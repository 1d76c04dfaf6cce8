"""Tracks: one person's pass in front of one camera, kept across camera batches.

A camera sees a walking person in consecutive snapshots seconds apart. Their face turns,
shrinks and blurs from one snapshot to the next, so the face embedding alone splits one
pass into several "people". Where they are, how they move and what they wear change little
in a second, so a face joins an open track of its camera when either

- **its face resembles the track's** (cosine to the track's pooled embedding at or above
  the link bar, the match threshold by default), wherever it is, when both are large
  enough to identify (``link_height``); or
- **it is where the track's motion puts it**: the distance to the predicted position,
  in face heights, is within what a person covers in that time (a bound that grows with
  the gap and is tighter once the track's velocity is known), the size change is
  plausible, and neither the face (both embeddings usable, the new one not weak, and less
  alike than ``face_veto``) nor the clothes below it (colour similarity under
  ``context_veto``) say it is someone else. Position is only trusted for gaps up to ``motion_s``.

Each frame's faces are assigned to tracks best pair first (one face per track per frame),
so two people crossing keep their tracks when their faces or clothes differ. A track
closes when nothing joined it for ``gap``. The bounds were measured on labelled real clips
(docs/accuracy.md "Tracks").

Open tracks outlive a stop: a run's end or a server's graceful stop saves them (their
motion, pooled embedding and counters; no image) and the next start of the same data
reads them back (:meth:`CameraTracks.save`, :meth:`CameraTracks.restore`), so a person seen
across the stop stays one track.

Tracks hold no identity decision; the resolver makes it per track
(:mod:`revisit.identity.resolver`) and writes the visitor onto the track, so later faces
of the same pass become sightings of that visitor, whatever their pose or size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from revisit.records import Face, SavedTrack
from revisit.vision.context import context_similarity


@dataclass(frozen=True, slots=True)
class TrackParams:
    gap: timedelta  # longest pause inside a track
    motion_s: float  # position links only across gaps up to this many seconds
    face_link: float  # face cosine that links wherever the face is
    face_veto: float  # both faces usable and less alike than this: not the same person
    context_veto: float  # clothes less alike than this: not the same person
    min_det_score: float  # "fair" faces (a track of several may found a visitor)
    static_after: timedelta = timedelta(minutes=30)  # unchanged this long: not a person
    link_height: int = 32  # faces (and tracks) this tall (px) may link by likeness alone
    veto_faceness: float = 0.0  # weaker faces (embedding norm) may not veto a link


# Reach of a person between snapshots, in face heights: base + per second, capped. Two
# bounds: before the track's velocity is known (one face so far) and after.
_REACH_FIRST = (1.0, 3.0)
_REACH_MOVING = (0.8, 1.0)
_REACH_CAP = 6.0
# Size change (|log ratio of face heights|) allowed: base + per second; tighter once the
# track's rate of growth (walking towards or away from the camera) is known.
_SIZE_FIRST = (0.35, 0.6)
_SIZE_MOVING = (0.3, 0.3)
# A face with no usable embedding has only its place and clothes to go by: it must be this
# much closer (share of the reach) and its clothes at least this alike.
_TRACK_ONLY_REACH = 0.5
_TRACK_ONLY_CONTEXT = 0.6
# A face is "still" when it moved less than this share of its height since the track's
# last face and its embedding is this alike the last one: a printed or screen face gives
# the same pixels snapshot after snapshot, a living one does not for long.
_STILL_MOVE = 0.15
_STILL_SIM = 0.9
# Two tracks scoring within this of each other for one face: too close to call.
_AMBIGUOUS = 0.15
# A link by position needs at least this score (place, face and clothes together).
_MIN_LINK = 0.5


Box = tuple[float, float, float, float]


def _centre(box: Box) -> np.ndarray:
    return np.array([box[0] + box[2] / 2.0, box[1] + box[3] / 2.0])


def step_nearness(last: Box, velocity: np.ndarray | None, size_rate: float | None, box: Box,
                  dt: float, share: float = 1.0) -> float:
    """Whether a person last seen at ``last`` (moving at ``velocity`` px/s, face growing at
    ``size_rate`` per second, if known) can be at ``box`` ``dt`` seconds later: 1 at the
    predicted spot, falling to 0 at the edge of their reach (``share`` of it), 0 beyond."""
    moving = velocity is not None
    base, per_s = _REACH_MOVING if moving else _REACH_FIRST
    reach = min(base + per_s * dt, _REACH_CAP) * share
    pred = _centre(last) + (velocity * dt if moving else 0.0)  # type: ignore[operator]
    h = max(box[3], last[3], 1.0)
    dist = float(np.linalg.norm(_centre(box) - pred)) / h
    grow = size_rate * dt if size_rate is not None else 0.0
    size = abs(math.log(max(box[3], 1.0) / max(last[3], 1.0)) - grow)
    sbase, sper_s = _SIZE_MOVING if size_rate is not None else _SIZE_FIRST
    if dist > reach or size > sbase + sper_s * dt:
        return 0.0
    return 1.0 - dist / reach


@dataclass(slots=True, eq=False)
class Track:
    """One pass of one person before one camera (module docstring)."""

    key: int
    tenant: str
    camera: str
    first_ts: datetime
    last_ts: datetime
    last_box: tuple[float, float, float, float]
    visitor: str | None = None
    held: list[Face] = field(default_factory=list)  # joined, not yet emitted as sightings
    velocity: np.ndarray | None = None  # px/s of the face centre
    size_rate: float | None = None  # d log(face height) / dt, 1/s
    emb_sum: np.ndarray | None = None  # weighted sum of matchable faces' unit embeddings
    emb_weight: float = 0.0
    context: np.ndarray | None = None
    faces: int = 0
    creatable: int = 0  # faces that passed the quality gate's creation bar
    fair: int = 0  # matchable faces with a confident detection
    exemplars: int = 0  # exemplars this track gave its visitor
    twin_of: str | None = None  # a reflection / picture of this visitor: its faces are dropped
    contrast: float = 0.0  # the highest contrast of its faces
    sharpness: float = 0.0  # the highest sharpness of its faces
    best_quality: float = 0.0  # of its creatable faces
    tallest: int = 0  # height (px) of its tallest matchable face
    still_since: datetime | None = None  # start of its current run of still faces
    static: bool = False  # still for params.static_after: a poster, screen or mannequin
    founded: bool = False  # its visitor was created from this track
    last_embedding: np.ndarray | None = None
    companions: set[Track] = field(default_factory=set)  # tracks seen in the same frames

    @property
    def pooled(self) -> np.ndarray | None:
        """Unit vector of the weighted mean of the track's matchable faces, if any."""
        if self.emb_sum is None:
            return None
        n = float(np.linalg.norm(self.emb_sum))
        return (self.emb_sum / n).astype(np.float32) if n > 0 else None

    @property
    def still(self) -> bool:
        """In a run of still faces (it may yet turn out to be a picture, not a person)."""
        return self.still_since is not None

    def add(self, face: Face, params: TrackParams) -> None:
        dt = (face.ts - self.last_ts).total_seconds()
        box = tuple(float(v) for v in face.bbox)
        self._stillness(face, box, params)  # type: ignore[arg-type]
        if 0 < dt <= params.motion_s:
            v = (_centre(box) - _centre(self.last_box)) / dt  # type: ignore[arg-type]
            self.velocity = v if self.velocity is None else 0.5 * self.velocity + 0.5 * v
            r = math.log(max(box[3], 1.0) / max(self.last_box[3], 1.0)) / dt
            self.size_rate = r if self.size_rate is None else 0.5 * self.size_rate + 0.5 * r
        elif dt > params.motion_s:
            self.velocity = self.size_rate = None
        if face.ts >= self.last_ts:
            self.last_ts = face.ts
            self.last_box = box  # type: ignore[assignment]
        self.first_ts = min(self.first_ts, face.ts)
        self._absorb(face, params)

    def _stillness(self, face: Face, box: Box, params: TrackParams) -> None:
        moved = float(np.linalg.norm(_centre(box) - _centre(self.last_box))) / max(box[3], 1.0)
        same = (face.embedding is not None and self.last_embedding is not None
                and float(np.asarray(face.embedding) @ self.last_embedding) >= _STILL_SIM)
        if moved < _STILL_MOVE and same and face.ts > self.last_ts:
            self.still_since = self.still_since or self.last_ts
            self.static = self.static or face.ts - self.still_since >= params.static_after
        else:
            self.still_since = None

    def _absorb(self, face: Face, params: TrackParams) -> None:
        self.held.append(face)
        self.faces += 1
        self.creatable += face.creatable
        if face.creatable:
            self.best_quality = max(self.best_quality, face.quality)
        if face.matchable and face.embedding is not None:
            self.tallest = max(self.tallest, face.bbox[3])
            w = 0.25 + float(face.quality)
            vec = np.asarray(face.embedding, dtype=np.float64)
            self.emb_sum = w * vec if self.emb_sum is None else self.emb_sum + w * vec
            self.emb_weight += w
            self.fair += face.det_score >= params.min_det_score
        if face.contrast is not None:
            self.contrast = max(self.contrast, face.contrast)
        if face.sharpness is not None:
            self.sharpness = max(self.sharpness, face.sharpness)
        if face.embedding is not None:
            self.last_embedding = np.asarray(face.embedding, dtype=np.float32)
        if face.context is not None:
            self.context = (face.context.copy() if self.context is None
                            else 0.7 * self.context + 0.3 * face.context)


def _arr(a: np.ndarray | None) -> list | None:
    return None if a is None else [str(a.dtype), a.tolist()]


def _unarr(v: list | None) -> np.ndarray | None:
    return None if v is None else np.asarray(v[1], dtype=v[0])


def _ts(v: str | None) -> datetime | None:
    return None if v is None else datetime.fromisoformat(v)


# Track fields saved as they are (numbers, flags); arrays and times are converted
_PLAIN = ("emb_weight", "faces", "creatable", "fair", "exemplars", "contrast", "sharpness",
          "best_quality", "tallest", "static", "founded", "size_rate")
_ARRAYS = ("velocity", "emb_sum", "context", "last_embedding")


class CameraTracks:
    """The open tracks of one camera of one tenant."""

    def __init__(self, tenant: str, camera: str, params: TrackParams) -> None:
        self.tenant = tenant
        self.camera = camera
        self.params = params
        self.open: list[Track] = []
        self._next_key = 0
        self.latest: datetime | None = None  # newest frame seen
        self._recent: list[datetime] = []  # times of the frames linked, newest last (bounded)
        # places found static (a poster): a new track there with the same face is static at
        # once; kept while this process runs
        self.static_spots: list[tuple[Box, np.ndarray]] = []
        self._missed: dict[int, int] = {}  # track key -> frames of this camera it was absent from

    def close_before(self, ts: datetime) -> list[Track]:
        """Close (and return) tracks with nothing joined since ``ts - gap``."""
        horizon = ts - self.params.gap
        closed = [t for t in self.open if t.last_ts < horizon]
        if closed:
            self.open = [t for t in self.open if t.last_ts >= horizon]
        return closed

    def link(self, faces: list[Face]) -> list[Track]:
        """Assign the faces of ONE frame to tracks (new ones where none fits); returns the
        track of each face, in order."""
        if not faces:
            return []
        ts = faces[0].ts
        self.latest = ts if self.latest is None else max(self.latest, ts)
        if ts not in self._recent:
            self._recent.append(ts)
            self._recent.sort()
            horizon = ts - self.params.gap
            self._recent = [t for t in self._recent if t >= horizon][-256:]
        live = [t for t in self.open if t.last_ts != ts and t.first_ts != ts]
        self._missed = {t.key: sum(t.last_ts < r < ts for r in self._recent) for t in live}
        scores: dict[tuple[int, int], float] = {}
        for i, f in enumerate(faces):
            for j, t in enumerate(live):
                score = self._score(f, t)
                if score is not None:
                    scores[(i, j)] = score
        options = sorted((-sc, i, j) for (i, j), sc in scores.items())
        out: list[Track | None] = [None] * len(faces)
        used: set[int] = set()
        for neg, i, j in options:
            if out[i] is not None or j in used:
                continue
            # a close call between two free tracks: rather a new track (a split) than
            # perhaps the wrong person's (a merge)
            rival = max((sc for (fi, tj), sc in scores.items()
                         if fi == i and tj != j and tj not in used), default=None)
            if rival is not None and -neg - rival < _AMBIGUOUS:
                out[i] = None
                used.add(j)  # nobody else takes it in this frame either
                continue
            out[i] = live[j]
            used.add(j)
        tracks: list[Track] = []
        for f, t in zip(faces, out, strict=True):
            if t is None:
                t = Track(self._next_key, self.tenant, self.camera, f.ts, f.ts,
                          tuple(float(v) for v in f.bbox))  # type: ignore[arg-type]
                self._next_key += 1
                self.open.append(t)
                t._absorb(f, self.params)
                if self._at_static_spot(f):
                    t.static, t.still_since = True, f.ts
            else:
                was_static = t.static
                t.add(f, self.params)
                if t.static and not was_static and t.last_embedding is not None:
                    self.static_spots.append((t.last_box, t.last_embedding))
                    del self.static_spots[:-64]
            tracks.append(t)
        for t in tracks:
            t.companions.update(o for o in tracks if o is not t)
        return tracks

    def save(self, tracks: list[Track]) -> list[SavedTrack]:
        """These open tracks of the camera as the store keeps them: everything linking and
        deciding reads (exactly: arrays with their dtype), the ids of the faces they hold
        undecided, and the camera's recent frame times; no image."""
        cam = {"latest": self.latest.isoformat() if self.latest else None,
               "recent": [t.isoformat() for t in self._recent], "next_key": self._next_key}
        keys = {t.key for t in tracks}
        out = []
        for t in tracks:
            state = {k: getattr(t, k) for k in _PLAIN}
            state.update({k: _arr(getattr(t, k)) for k in _ARRAYS})
            state.update(
                cam=cam, last_box=list(t.last_box),
                still_since=t.still_since.isoformat() if t.still_since else None,
                companions=sorted(c.key for c in t.companions if c.key in keys),
                held=[f.face_image_id for f in t.held])
            state = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in state.items()}
            out.append(SavedTrack(self.tenant, self.camera, t.key, t.visitor, t.twin_of,
                                  t.first_ts, t.last_ts, tuple(state["held"]),
                                  json.dumps(state).encode()))
        return out

    def restore(self, saved: list[SavedTrack]) -> list[Track]:
        """Open the tracks :meth:`save` gave (of this camera) again, without their held
        faces (the caller gives each its faces back)."""
        tracks: dict[int, Track] = {}
        links: dict[int, list[int]] = {}
        for row in saved:
            st = json.loads(row.state)
            t = Track(row.key, self.tenant, self.camera, row.first_ts, row.last_ts,
                      tuple(st["last_box"]), visitor=row.visitor_id,  # type: ignore[arg-type]
                      twin_of=row.twin_of, still_since=_ts(st["still_since"]))
            for k in _PLAIN:
                setattr(t, k, st[k])
            for k in _ARRAYS:
                setattr(t, k, _unarr(st[k]))
            tracks[row.key] = t
            links[row.key] = st["companions"]
            cam = st["cam"]
            latest = _ts(cam["latest"])
            if latest is not None and (self.latest is None or latest > self.latest):
                self.latest = latest
                self._recent = [datetime.fromisoformat(v) for v in cam["recent"]]
            self._next_key = max(self._next_key, cam["next_key"], row.key + 1)
        for key, t in tracks.items():
            t.companions = {tracks[k] for k in links[key] if k in tracks}
        self.open.extend(tracks.values())
        return list(tracks.values())

    def _at_static_spot(self, f: Face) -> bool:
        if f.embedding is None:
            return False
        box = tuple(float(v) for v in f.bbox)
        return any(float(np.linalg.norm(_centre(box) - _centre(b))) < _STILL_MOVE * box[3]  # type: ignore[arg-type]
                   and float(np.asarray(f.embedding) @ e) >= _STILL_SIM for b, e in self.static_spots)

    def _score(self, f: Face, t: Track) -> float | None:
        """How well face ``f`` continues track ``t`` (higher is better), None if it cannot.

        Position decides at short gaps; face and clothes likeness adjust. A track that
        missed the camera's previous frame (the person left, or turned away) links by
        position only with some face evidence, one that missed several only with a face
        alike enough to link anywhere.
        """
        p = self.params
        dt = abs((f.ts - t.last_ts).total_seconds())
        if dt > p.gap.total_seconds():
            return None
        pooled = t.pooled
        face_sim = None
        if f.matchable and f.embedding is not None and pooled is not None:
            face_sim = float(np.asarray(f.embedding, dtype=np.float32) @ pooled)
            if face_sim < p.face_veto and f.faceness is not None \
                    and f.faceness < p.veto_faceness:
                # a weak face (looking down, turned, dim) is unlike its own track as often
                # as a stranger is: its unlikeness says nothing, so it goes by place and
                # clothes alone, as a track-only face does
                face_sim = None
        ctx = (context_similarity(f.context, t.context)
               if f.context is not None and t.context is not None else None)
        # a face links anywhere only if it and the track are large enough to identify:
        # small faces of different people are alike (docs/accuracy.md, identity by size)
        strong = face_sim is not None and face_sim >= p.face_link \
            and f.bbox[3] >= p.link_height and t.tallest >= p.link_height
        near = self._nearness(f, t, dt, face_sim, ctx)
        if not strong and near <= 0.0:
            return None
        score = (1.0 if strong else 0.0) + near \
            + (face_sim - p.face_veto if face_sim is not None else 0.0) \
            + 0.5 * (ctx - 0.7 if ctx is not None else 0.0)
        return score if strong or score >= _MIN_LINK else None

    def _nearness(self, f: Face, t: Track, dt: float, face_sim: float | None,
                  ctx: float | None) -> float:
        """1 at the predicted spot, falling to 0 at the edge of the person's reach; 0 when
        position may not link them (module docstring)."""
        p = self.params
        if dt > p.motion_s or (face_sim is not None and face_sim < p.face_veto) \
                or (ctx is not None and ctx < p.context_veto):
            return 0.0
        missed = self._missed.get(t.key, 0) if f.ts > t.last_ts else 0
        if missed and (face_sim is None or face_sim < (
                (p.face_veto + p.face_link) / 2 if missed == 1 else p.face_link)):
            return 0.0
        if face_sim is None and ctx is not None and ctx < _TRACK_ONLY_CONTEXT:
            return 0.0  # nothing but place and clothes: the clothes must agree
        forward = f.ts > t.last_ts
        return step_nearness(t.last_box, t.velocity if forward else None,
                             t.size_rate if forward else None,
                             tuple(float(v) for v in f.bbox), dt,  # type: ignore[arg-type]
                             share=_TRACK_ONLY_REACH if face_sim is None else 1.0)
