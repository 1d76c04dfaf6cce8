"""Consolidation: merge visitors who turn out to be one person.

Online resolution decides with what it has seen so far, so one person can be split in two
(first seen small and blurred, later close up). Consolidation looks at everything stored
and merges such visitors by **average linkage**: the similarity of two visitors is the
mean cosine similarity over all pairs of their sightings' embeddings, weighted by face
quality (weight ``0.25 + quality``, as in track pooling), which is
``dot(sum_a, sum_b) / (w_a * w_b)``, so a visitor is a (weighted sum, total weight) pair
and a merge is an addition. Pairs are proposed by nearest centroids (faiss), merged best
first while the similarity stays at or above the bar; two visitors seen in one frame are
never merged (cannot-link).

The bar depends on where the two were seen. Regulars come back to their own store, so
two visitors who share a store are far likelier to be one person than two seen only in
different stores: measured on simulated chains (docs/accuracy.md), nearly every split
visitor pair shares a store, while most look-alike strangers do not. Visitors sharing a
store merge at ``identity.merge_threshold_same_store``, others at
``identity.merge_threshold``.

Merges go through the store's alias table (``merge_visitors``): sightings are not
rewritten, reports read the merged id at once, and ``revisit visitors split`` undoes a
merge exactly. The kept id is the older visitor (lower number). Afterwards each merged
visitor's exemplars are trimmed back to ``identity.max_exemplars`` (best quality kept)
and the resolver's gallery is rebuilt from the store.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import faiss
import numpy as np

from revisit.config import Settings
from revisit.identity.tracks import Box, step_nearness
from revisit.records import Batch, is_enrolment_exemplar
from revisit.report.query import SightingQuery
from revisit.store.base import MergeRecord, SightingStore
from revisit.store.visitor_ids import visitor_number_or_zero
from revisit.vision.catalog import embedder_facts, match_threshold
from revisit.visits import DEFAULT_VISIT_GAP

if TYPE_CHECKING:
    from revisit.identity.resolver import Resolver

log = logging.getLogger(__name__)

CANDIDATES = 20  # nearest visitor centroids examined per visitor


def merge_threshold(settings: Settings) -> float:
    """identity.merge_threshold, else the embedder's measured default: the single-pair
    threshold at FAR 1e-4 on lfw-dev minus a margin, since a mean over many pairs has a far
    narrower impostor spread than one pair (docs/accuracy.md)."""
    t = settings.identity.merge_threshold
    return t if t is not None else embedder_facts(settings.embedder.model).merge_threshold


def stitch_threshold(settings: Settings) -> float:
    """Average similarity at which two pieces of one pass before a camera merge."""
    return match_threshold(settings) + settings.identity.stitch_offset


def merge_threshold_same_store(settings: Settings) -> float:
    """The bar for two visitors seen at a common store: regulars return to their store, so
    a shared store is roughly a tenfold prior for "same person", one decade of FAR lower."""
    t = settings.identity.merge_threshold_same_store
    return t if t is not None else embedder_facts(settings.embedder.model).merge_threshold_same_store


INSIDE_MAX = 2  # sightings of a piece that may sit inside another visitor's run


@dataclass(frozen=True, slots=True)
class Segment:
    """One unbroken run of a visitor's sightings on one camera (a track, as stored): where
    it began and ended, and how it was moving at each end."""

    camera: str
    place: str  # the camera's location
    points: tuple[tuple[datetime, Box], ...]  # every sighting of the run, in time order

    @property
    def first_ts(self) -> datetime:
        return self.points[0][0]

    @property
    def first_box(self) -> Box:
        return self.points[0][1]

    @property
    def last_ts(self) -> datetime:
        return self.points[-1][0]

    @property
    def last_box(self) -> Box:
        return self.points[-1][1]

    @property
    def first_velocity(self) -> np.ndarray | None:
        """px/s over its first two sightings."""
        return _velocity(self.points[0], list(self.points[1:2]))

    @property
    def last_velocity(self) -> np.ndarray | None:
        """px/s over its last two sightings."""
        return _velocity(self.points[-2], [self.points[-1]]) if len(self.points) > 1 else None


@dataclass(slots=True)
class ClusterStats:
    """What consolidation knows of one visitor: quality-weighted sum of its sightings'
    unit embeddings, their total weight, the frames and the stores it was seen in, and its
    runs per camera."""

    vec_sum: np.ndarray
    weight: float
    frames: set[str]
    places: set[str] = field(default_factory=set)
    segments: list[Segment] = field(default_factory=list)


@dataclass(slots=True)
class _Cluster:
    vid: str
    vec_sum: np.ndarray
    n: float
    frames: set[str]
    places: set[str]
    spans: list[tuple[str, datetime, datetime]] = field(default_factory=list)  # place, from, to
    near: set[str] = field(default_factory=set)
    version: int = 0


def _other_visit(a: _Cluster, b: _Cluster, gap: timedelta | None) -> bool:
    """Whether ``a`` and ``b`` were seen at a common store on different visits (at least
    ``gap`` apart there). Without runs (or ``gap``), any common store counts."""
    shared = a.places & b.places
    if not shared:
        return False
    if gap is None or not a.spans or not b.spans:
        return True
    return any(pa == pb and (sb - ea >= gap or sa - eb >= gap)
               for pa, sa, ea in a.spans if pa in shared for pb, sb, eb in b.spans)


@dataclass(frozen=True, slots=True)
class Proposal:
    keep: str
    absorb: str
    similarity: float


def _order(a: str, b: str) -> tuple[str, str]:
    """(keep, absorb): the older visitor (lower number) keeps its id."""
    ka, kb = (visitor_number_or_zero(a), a), (visitor_number_or_zero(b), b)
    return (a, b) if ka <= kb else (b, a)


def stitchable(clusters: dict[str, ClusterStats], max_s: float) -> set[frozenset[str]]:
    """Pairs of visitors where a run of one on a camera ends and a run of the other begins
    on the same camera at most one snapshot later (and within ``max_s``), where the
    first's motion puts it: one pass the tracker cut in two. Or where a piece of at most
    ``INSIDE_MAX`` sightings sits in a gap of the other's run, where that run's movement
    across the gap puts it from both sides: one pass cut in three (a face the tracker
    could not link, say while the head turned). (Two people in a queue rarely fit: the
    one in front is still in view when the next one arrives, and seen together they can
    never merge.)"""
    by_camera: dict[str, list[tuple[Segment, str]]] = {}
    for vid, c in clusters.items():
        for seg in c.segments:
            by_camera.setdefault(seg.camera, []).append((seg, vid))
    out: set[frozenset[str]] = set()
    for runs in by_camera.values():
        within_s = min(max_s, 2.0 * _snapshot_interval(runs))
        ends = sorted(runs, key=lambda r: r[0].last_ts)
        end_times = [r[0].last_ts for r in ends]
        for seg_b, vid_b in runs:
            lo = bisect.bisect_left(end_times, seg_b.first_ts - timedelta(seconds=within_s))
            hi = bisect.bisect_left(end_times, seg_b.first_ts)
            if lo == hi:
                continue
            vel_b = seg_b.first_velocity
            backwards = None if vel_b is None else -vel_b
            for seg_a, vid_a in ends[lo:hi]:
                if vid_a == vid_b:
                    continue
                dt = (seg_b.first_ts - seg_a.last_ts).total_seconds()
                ahead = step_nearness(seg_a.last_box, seg_a.last_velocity, None, seg_b.first_box, dt)
                back = step_nearness(seg_b.first_box, backwards, None, seg_a.last_box, dt)
                if ahead > 0 and back > 0:
                    out.add(frozenset((vid_a, vid_b)))
        # a short piece inside another's run, where it would be: the runs seen in the
        # moments before the piece are the candidates (indexed, so a busy camera's month
        # of runs is not compared pair by pair)
        seen = sorted((t, i) for i, (seg, _) in enumerate(runs) for t, _ in seg.points)
        seen_times = [t for t, _ in seen]
        for seg_b, vid_b in runs:
            if len(seg_b.points) > INSIDE_MAX:
                continue
            lo = bisect.bisect_left(seen_times, seg_b.first_ts - timedelta(seconds=within_s))
            hi = bisect.bisect_left(seen_times, seg_b.first_ts)
            for i in {i for _, i in seen[lo:hi]}:
                seg_a, vid_a = runs[i]
                if vid_a != vid_b and _inside(seg_a, seg_b, within_s):
                    out.add(frozenset((vid_a, vid_b)))
    return out



def _inside(a: Segment, b: Segment, within_s: float) -> bool:
    """Whether ``b`` sits in a gap of ``a``'s run on the same camera: ``a`` seen at most
    ``within_s`` before ``b`` begins and after it ends, not in between, and ``b`` where
    ``a``'s movement across the gap puts it, from both sides."""
    if not (a.first_ts < b.first_ts and b.last_ts < a.last_ts):
        return False
    times = [t for t, _ in a.points]
    i = bisect.bisect_left(times, b.first_ts)
    if i == 0 or i >= len(times) or times[i] <= b.last_ts:
        return False  # a seen while b was: two people
    (t0, box0), (t1, box1) = a.points[i - 1], a.points[i]
    if (b.first_ts - t0).total_seconds() > within_s or (t1 - b.last_ts).total_seconds() > within_s:
        return False
    vel = _velocity((t0, box0), [(t1, box1)])
    return (step_nearness(box0, vel, None, b.first_box, (b.first_ts - t0).total_seconds()) > 0
            and step_nearness(box1, None if vel is None else -vel, None, b.last_box,
                              (t1 - b.last_ts).total_seconds()) > 0)


def _snapshot_interval(runs: list[tuple[Segment, str]]) -> float:
    """The camera's usual time between snapshots, from when its runs begin and end (the
    shortest step between distinct such times, which busy cameras pin down)."""
    times = sorted({t for seg, _ in runs for t in (seg.first_ts, seg.last_ts)})
    steps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    steps = [d for d in steps if d > 0]
    return float(np.percentile(steps, 10)) if steps else 0.0


def plan_merges(
    clusters: dict[str, ClusterStats], threshold: float, same_store: float | None = None,
    candidates: int = CANDIDATES, stitch: float | None = None, stitch_s: float = 0.0,
    visit_gap: timedelta | None = None,
) -> list[Proposal]:
    """Average-linkage agglomeration of visitors, best pair first, with cannot-link; pairs
    seen at a common store merge at ``same_store`` (default: ``threshold``), pieces of one
    pass before one camera (:func:`stitchable`) at ``stitch``.

    With ``visit_gap``, the store bar needs the two seen there on different visits: the
    store prior is about regulars coming back, while two people in a store at the same
    time, seen by the same cameras in the same light, look more alike than strangers do."""
    if len(clusters) < 2:
        return []
    same = threshold if same_store is None else same_store
    pieces = stitchable(clusters, stitch_s) if stitch is not None and stitch_s > 0 else set()
    state = {v: _Cluster(v, c.vec_sum.astype(np.float64), c.weight, set(c.frames), set(c.places),
                         [(seg.place, seg.first_ts, seg.last_ts) for seg in c.segments])
             for v, c in clusters.items()}
    ids = sorted(state)
    cent = np.stack([state[v].vec_sum / max(np.linalg.norm(state[v].vec_sum), 1e-12) for v in ids])
    index = faiss.IndexFlatIP(cent.shape[1])
    index.add(np.ascontiguousarray(cent, dtype=np.float32))
    _, nn = index.search(np.ascontiguousarray(cent, dtype=np.float32), min(candidates + 1, len(ids)))
    for i, row in enumerate(nn):
        for j in row.tolist():
            if j >= 0 and j != i:
                state[ids[i]].near.add(ids[j])
                state[ids[j]].near.add(ids[i])
    for pair in pieces:
        a, b = sorted(pair)
        state[a].near.add(b)
        state[b].near.add(a)

    def bar(a: _Cluster, b: _Cluster) -> float:
        if frozenset((a.vid, b.vid)) in pieces:
            return min(stitch, same) if stitch is not None else same
        return same if _other_visit(a, b, visit_gap) else threshold

    def sim(a: _Cluster, b: _Cluster) -> float:
        return float(np.dot(a.vec_sum, b.vec_sum) / (a.n * b.n))

    heap: list[tuple[float, str, str, int, int]] = []

    def push(a: _Cluster) -> None:
        for other in a.near:
            b = state.get(other)
            if b is None or a.frames & b.frames:
                continue
            s = sim(a, b)
            if s >= bar(a, b):
                x, y = (a, b) if a.vid < b.vid else (b, a)
                heapq.heappush(heap, (-s, x.vid, y.vid, x.version, y.version))

    for c in list(state.values()):
        push(c)
    out: list[Proposal] = []
    while heap:
        neg, x, y, vx, vy = heapq.heappop(heap)
        a, b = state.get(x), state.get(y)
        if a is None or b is None or a.version != vx or b.version != vy:
            continue
        if a.frames & b.frames:
            continue
        keep, absorb = _order(a.vid, b.vid)
        k, m = state[keep], state.pop(absorb)
        k.vec_sum = k.vec_sum + m.vec_sum
        k.n += m.n
        k.frames |= m.frames
        k.places |= m.places
        k.spans += m.spans
        k.near = (k.near | m.near) - {keep, absorb}
        k.version += 1
        for other in m.near:
            o = state.get(other)
            if o is not None:
                o.near.discard(absorb)
                o.near.add(keep)
        for pair in [p for p in pieces if absorb in p]:
            pieces.discard(pair)
            rest = set(pair) - {absorb}
            if rest and rest != {keep}:
                pieces.add(frozenset((keep, *rest)))
        out.append(Proposal(keep, absorb, -neg))
        push(k)
    return out


def load_clusters(store: SightingStore, tenant: str,
                  gap: timedelta = timedelta(seconds=120)) -> dict[str, ClusterStats]:
    """visitor (canonical) -> its :class:`ClusterStats`; a visitor's sightings on one camera
    more than ``gap`` apart are separate runs."""
    frame_of: dict[str, str] = {}
    place_of: dict[str, str] = {}
    weight_of: dict[str, float] = {}
    seen: dict[str, list[tuple[str, str, datetime, Box]]] = {}
    for row in store.sightings(SightingQuery(tenant=tenant)):
        frame_of[row["face_image_id"]] = row["image_id"]
        place_of[row["face_image_id"]] = row["location_id"]
        weight_of[row["face_image_id"]] = 0.25 + float(row.get("quality") or 0.0)
        box = (float(row["bbox_x"] or 0), float(row["bbox_y"] or 0), float(row["bbox_w"] or 0),
               float(row["bbox_h"] or 0))
        seen.setdefault(row["face_id"], []).append(
            (row["camera_id"], row["location_id"],
             datetime.fromisoformat(str(row["ts"]).replace("Z", "+00:00")), box))
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, float] = {}
    frames: dict[str, set[str]] = {}
    places: dict[str, set[str]] = {}
    for chunk in store.load_embeddings(tenant):
        for fid, vid, vec in chunk:
            v = np.asarray(vec, dtype=np.float64)
            w = weight_of.get(fid, 1.0)
            v = w * v / max(float(np.linalg.norm(v)), 1e-12)
            if vid in sums:
                sums[vid] += v
                counts[vid] += w
            else:
                sums[vid] = v.copy()
                counts[vid] = w
                frames[vid] = set()
                places[vid] = set()
            if fid in frame_of:
                frames[vid].add(frame_of[fid])
                places[vid].add(place_of[fid])
    return {v: ClusterStats(sums[v], counts[v], frames[v], places[v],
                            _segments(seen.get(v, []), gap)) for v in sums}


def _segments(sightings: list[tuple[str, str, datetime, Box]], gap: timedelta) -> list[Segment]:
    by_camera: dict[tuple[str, str], list[tuple[datetime, Box]]] = {}
    for cam, place, ts, box in sightings:
        by_camera.setdefault((cam, place), []).append((ts, box))
    out = []
    for (cam, place), items in by_camera.items():
        items.sort(key=lambda i: i[0])
        run = [items[0]]
        for item in [*items[1:], None]:  # type: ignore[list-item]
            if item is not None and item[0] - run[-1][0] <= gap:
                run.append(item)
                continue
            out.append(Segment(cam, place, tuple(run)))
            if item is not None:
                run = [item]
    return out


def _velocity(a: tuple[datetime, Box], rest: list[tuple[datetime, Box]]) -> np.ndarray | None:
    """px/s of the face centre from ``a`` to the first of ``rest``, if any and apart."""
    if not rest:
        return None
    (t0, b0), (t1, b1) = a, rest[0]
    dt = (t1 - t0).total_seconds()
    if dt <= 0:
        return None
    return np.array([(b1[0] + b1[2] / 2) - (b0[0] + b0[2] / 2),
                     (b1[1] + b1[3] / 2) - (b0[1] + b0[3] / 2)]) / dt


def consolidate(
    settings: Settings, store: SightingStore, resolver: Resolver | None, tenant: str,
    *, threshold: float | None = None, same_store: float | None = None, dry_run: bool = False,
) -> list[MergeRecord] | list[Proposal]:
    """Merge the tenant's visitors who are one person; returns the merges made (or, with
    ``dry_run``, the proposals). ``threshold`` alone overrides both bars."""
    thr = merge_threshold(settings) if threshold is None else threshold
    if same_store is None:
        same_store = merge_threshold_same_store(settings) if threshold is None else thr
    ident = settings.identity
    clusters = load_clusters(store, tenant, timedelta(seconds=ident.track_gap_s))
    # enrolled staff are joined only by the resolver, at their stricter bar: consolidation's
    # lower bar could take customers for staff (who leave the reports)
    staff = set(store.staff(tenant))
    clusters = {k: v for k, v in clusters.items() if k not in staff}
    proposals = plan_merges(clusters, thr, same_store, stitch=stitch_threshold(settings),
                            stitch_s=ident.track_motion_s, visit_gap=DEFAULT_VISIT_GAP)
    if dry_run:
        return proposals
    records: list[MergeRecord] = []
    for p in proposals:
        records.append(store.merge_visitors(
            tenant, p.keep, p.absorb, reason=f"consolidate: average similarity {p.similarity:.3f}"
        ))
    if records:
        _trim_exemplars(settings, store, tenant)
        log.info("consolidate %s: %d merges", tenant, len(records))
    if resolver is not None and (records or tenant in resolver.loaded_tenants()):
        resolver.reload(tenant)
    return records


def _trim_exemplars(settings: Settings, store: SightingStore, tenant: str) -> None:
    """Merged visitors hold the exemplars of all their parts: keep the best ``max`` of
    those cameras gave (an enrolment's stay while it lasts: they are how staff and
    watchlist people are recognised)."""
    per: dict[str, list[tuple[float, str]]] = {}
    for chunk in store.load_exemplars(tenant):
        for ex in chunk:
            if not is_enrolment_exemplar(ex.face_image_id):
                per.setdefault(ex.visitor_id, []).append((ex.quality, ex.face_image_id))
    limit = settings.identity.max_exemplars
    drop = []
    for held in per.values():
        if len(held) > limit:
            held.sort(key=lambda h: (-h[0], h[1]))
            drop.extend((tenant, fid) for _, fid in held[limit:])
    if drop:
        store.write(Batch(batch_id=f"consolidate-{tenant}", exemplars_dropped=drop))
