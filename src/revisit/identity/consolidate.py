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

import heapq
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import faiss
import numpy as np

from revisit.config import Settings
from revisit.records import Batch
from revisit.report.query import SightingQuery
from revisit.store.base import MergeRecord, SightingStore
from revisit.store.visitor_ids import visitor_number_or_zero

if TYPE_CHECKING:
    from revisit.identity.resolver import Resolver

log = logging.getLogger(__name__)

# Average-linkage similarity at which two visitors are one person, per embedder: one rule
# for both, the single-pair threshold at FAR 1e-4 on lfw-dev (SFace 0.449, ArcFace 0.319,
# docs/accuracy.md) minus 0.03, since a mean over many pairs has a far narrower impostor
# spread than one pair. Checked, not fitted, on simulated scenarios (two seeds).
DEFAULT_MERGE_THRESHOLD: dict[str, float] = {"sface": 0.42, "arcface": 0.29}
# Two visitors who share a store: a shared store makes "same person" roughly ten times
# likelier a priori, so the bar moves one decade of FAR: the single-pair threshold at FAR
# 1e-3 (SFace 0.370, ArcFace 0.239) minus 0.01. The offset was picked from a sweep of
# 0.33-0.38 (SFace) on two simulated scenarios; docs/accuracy.md has the neighbours.
DEFAULT_MERGE_THRESHOLD_SAME_STORE: dict[str, float] = {"sface": 0.36, "arcface": 0.23}
CANDIDATES = 20  # nearest visitor centroids examined per visitor


def merge_threshold(settings: Settings) -> float:
    t = settings.identity.merge_threshold
    return t if t is not None else DEFAULT_MERGE_THRESHOLD[settings.embedder.model]


def merge_threshold_same_store(settings: Settings) -> float:
    t = settings.identity.merge_threshold_same_store
    return t if t is not None else DEFAULT_MERGE_THRESHOLD_SAME_STORE[settings.embedder.model]


@dataclass(slots=True)
class ClusterStats:
    """What consolidation knows of one visitor: quality-weighted sum of its sightings'
    unit embeddings, their total weight, the frames and the stores it was seen in."""

    vec_sum: np.ndarray
    weight: float
    frames: set[str]
    places: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Cluster:
    vid: str
    vec_sum: np.ndarray
    n: float
    frames: set[str]
    places: set[str]
    near: set[str] = field(default_factory=set)
    version: int = 0


@dataclass(frozen=True, slots=True)
class Proposal:
    keep: str
    absorb: str
    similarity: float


def _order(a: str, b: str) -> tuple[str, str]:
    """(keep, absorb): the older visitor (lower number) keeps its id."""
    ka, kb = (visitor_number_or_zero(a), a), (visitor_number_or_zero(b), b)
    return (a, b) if ka <= kb else (b, a)


def plan_merges(
    clusters: dict[str, ClusterStats], threshold: float, same_store: float | None = None,
    candidates: int = CANDIDATES,
) -> list[Proposal]:
    """Average-linkage agglomeration of visitors, best pair first, with cannot-link; pairs
    that share a store merge at ``same_store`` (default: ``threshold``)."""
    if len(clusters) < 2:
        return []
    same = threshold if same_store is None else same_store
    state = {v: _Cluster(v, c.vec_sum.astype(np.float64), c.weight, set(c.frames), set(c.places))
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

    def sim(a: _Cluster, b: _Cluster) -> float:
        return float(np.dot(a.vec_sum, b.vec_sum) / (a.n * b.n))

    heap: list[tuple[float, str, str, int, int]] = []

    def push(a: _Cluster) -> None:
        for other in a.near:
            b = state.get(other)
            if b is None or a.frames & b.frames:
                continue
            s = sim(a, b)
            if s >= (same if a.places & b.places else threshold):
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
        k.near = (k.near | m.near) - {keep, absorb}
        k.version += 1
        for other in m.near:
            o = state.get(other)
            if o is not None:
                o.near.discard(absorb)
                o.near.add(keep)
        out.append(Proposal(keep, absorb, -neg))
        push(k)
    return out


def load_clusters(store: SightingStore, tenant: str) -> dict[str, ClusterStats]:
    """visitor (canonical) -> its :class:`ClusterStats`."""
    frame_of: dict[str, str] = {}
    place_of: dict[str, str] = {}
    weight_of: dict[str, float] = {}
    for row in store.sightings(SightingQuery(tenant=tenant)):
        frame_of[row["face_image_id"]] = row["image_id"]
        place_of[row["face_image_id"]] = row["location_id"]
        weight_of[row["face_image_id"]] = 0.25 + float(row.get("quality") or 0.0)
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
    return {v: ClusterStats(sums[v], counts[v], frames[v], places[v]) for v in sums}


def consolidate(
    settings: Settings, store: SightingStore, resolver: Resolver | None, tenant: str,
    *, threshold: float | None = None, same_store: float | None = None, dry_run: bool = False,
) -> list[MergeRecord] | list[Proposal]:
    """Merge the tenant's visitors who are one person; returns the merges made (or, with
    ``dry_run``, the proposals). ``threshold`` alone overrides both bars."""
    thr = merge_threshold(settings) if threshold is None else threshold
    if same_store is None:
        same_store = merge_threshold_same_store(settings) if threshold is None else thr
    proposals = plan_merges(load_clusters(store, tenant), thr, same_store)
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
    if resolver is not None and (records or tenant in resolver._galleries):
        resolver.reload(tenant)
    return records


def _trim_exemplars(settings: Settings, store: SightingStore, tenant: str) -> None:
    """Merged visitors hold the exemplars of all their parts: keep the best ``max``."""
    per: dict[str, list[tuple[float, str]]] = {}
    for chunk in store.load_exemplars(tenant):
        for ex in chunk:
            per.setdefault(ex.visitor_id, []).append((ex.quality, ex.face_image_id))
    limit = settings.identity.max_exemplars
    drop = []
    for held in per.values():
        if len(held) > limit:
            held.sort(key=lambda h: (-h[0], h[1]))
            drop.extend((tenant, fid) for _, fid in held[limit:])
    if drop:
        store.write(Batch(batch_id=f"consolidate-{tenant}", exemplars_dropped=drop))
