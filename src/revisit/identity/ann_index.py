"""Approximate face index for large galleries: a compressed scan for the bulk, exact for
recent faces.

Exact search over a gallery of a million exemplars is far too slow for a live resolver
(docs/performance.md, "Resolver"). This index keeps two tiers per tenant:

- ``recent``: an exact flat index holding the exemplars added since the last flush. A
  returning face mostly matches exemplars its own visit just added (same day, same
  cameras), so those decisions stay exact.
- ``main``: everything older, in one of three structures:

  - ``type=pq`` (default): every exemplar is scanned, as a 4-bit product-quantised code
    (faiss fast-scan, ``pq_m`` sub-quantisers: 32 bytes per face at 64), and the best
    ``k * rerank`` candidates are re-scored exactly against the full vectors. Face
    embeddings are close to isotropic (lfw-dev SFace impostor similarities have the
    spread of random 128-d directions), which defeats partitions and graphs: measured in
    docs/performance.md, HNSW and IVF lose the true neighbour far more often than a full
    compressed scan does, at equal speed.
  - ``type=hnsw``: a faiss HNSW graph; ``type=ivf``: IVF with 8-bit scalar quantisation
    and exact re-scoring. Kept for comparison and for embeddings with more structure.

  Recent exemplars move into ``main`` when ``recent`` holds ``flush`` of them.

Removing an exemplar deletes it from ``recent`` or tombstones it in ``main``; searches
over-fetch past tombstones, and ``main`` is rebuilt from its live vectors once a third of
it is dead. A tombstoned vector stays readable in memory until
:meth:`FaissAnnIndex.compact`, which erasure, retention and an enrolment's removal call:
it deletes or overwrites those vectors in place rather than rebuilding ``main`` (ingest
waits on erasure's write lock, and a rebuild grows with the gallery). Selected by
``index_url``, e.g. ``faiss://?type=pq&pq_m=64&rerank=16``
(:mod:`revisit.config.index_url`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import faiss
import numpy as np

from revisit.config.index_url import AnnOptions
from revisit.identity.index import LabelledIndex, Neighbour


@dataclass
class _Tenant:
    dim: int
    recent: faiss.IndexIDMap2 = field(init=False)
    main: faiss.Index | None = None
    main_ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    main_vecs: np.ndarray | None = None  # kept for IVF rebuilds (HNSW keeps its own)
    main_base: faiss.Index | None = None  # the PQ codes under a re-ranking ``main``
    dead: set[int] = field(default_factory=set)  # tombstoned ids still inside main
    readable: set[int] = field(default_factory=set)  # dead ids whose vectors compact clears
    in_main: set[int] = field(default_factory=set)
    next_id: int = 0
    meta: dict[int, tuple[str, str]] = field(default_factory=dict)
    by_face: dict[str, int] = field(default_factory=dict)
    by_visitor: dict[str, set[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.recent = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))


class FaissAnnIndex(LabelledIndex):
    """:class:`revisit.identity.index.FaceIndex` with approximate search (see module doc)."""

    def __init__(self, dim: int, options: AnnOptions | None = None) -> None:
        self.dim = dim
        self.options = options or AnnOptions()
        if self.options.kind == "pq" and dim % self.options.pq_m:
            raise ValueError(f"index option pq_m={self.options.pq_m} must divide the embedding "
                             f"size {dim} (e.g. 16, 32 or 64)")
        self._tenants: dict[str, _Tenant] = {}

    def _new_tenant(self) -> _Tenant:
        return _Tenant(self.dim)

    # -- writes ----------------------------------------------------------------------
    def _insert(self, t: _Tenant, vecs: np.ndarray, ids: np.ndarray) -> None:
        t.recent.add_with_ids(vecs, ids)
        if t.recent.ntotal >= self.options.flush and (
            t.main is not None or t.recent.ntotal >= self.options.min_main
        ):
            self._flush(t)

    def _flush(self, t: _Tenant) -> None:
        """Move ``recent`` into ``main`` (built on first flush)."""
        n = t.recent.ntotal
        ids = faiss.vector_to_array(t.recent.id_map).astype(np.int64)
        vecs = t.recent.index.reconstruct_n(0, n) if n else np.empty((0, self.dim), np.float32)
        if t.main is None:
            self._build_main(t, ids, vecs)
        else:  # HNSW, PQ and a trained IVF all take additions in place
            if t.main_vecs is not None:  # IVF: ids are positions, which its removals keep
                t.main.add_with_ids(vecs, np.arange(len(t.main_ids), len(t.main_ids) + n))
                t.main_vecs = np.concatenate([t.main_vecs, vecs])
            else:
                t.main.add(vecs)
            t.main_ids = np.concatenate([t.main_ids, ids])
            t.in_main.update(ids.tolist())
        t.recent.reset()

    def _live_main(self, t: _Tenant) -> tuple[np.ndarray, np.ndarray]:
        if t.main is None:
            return np.empty(0, np.int64), np.empty((0, self.dim), np.float32)
        vecs = t.main_vecs if t.main_vecs is not None else t.main.reconstruct_n(0, t.main.ntotal)
        keep = np.fromiter((i not in t.dead for i in t.main_ids.tolist()), bool, len(t.main_ids))
        return t.main_ids[keep], vecs[keep]

    def _build_main(self, t: _Tenant, ids: np.ndarray, vecs: np.ndarray) -> None:
        o = self.options
        if o.kind == "pq":
            base = faiss.IndexPQFastScan(self.dim, o.pq_m, 4, faiss.METRIC_INNER_PRODUCT)
            idx = faiss.IndexRefineFlat(base)
            idx.k_factor = float(o.rerank)
            rng = np.random.default_rng(0)
            sample = vecs[rng.choice(len(vecs), min(len(vecs), 65_536), replace=False)]
            if len(sample) < 1024:  # k-means wants ~39 points per code; tiny galleries only
                pad = rng.standard_normal((1024 - len(sample), self.dim)).astype(np.float32)
                sample = np.concatenate([sample, pad / np.linalg.norm(pad, axis=1, keepdims=True)])
            idx.train(sample)
            idx.add(vecs)
            t.main_base = base  # the refine index points at it; keep it alive
            t.main_vecs = None
        elif o.kind == "hnsw":
            idx = faiss.IndexHNSWFlat(self.dim, o.m, faiss.METRIC_INNER_PRODUCT)
            idx.hnsw.efConstruction = o.ef_construction
            idx.hnsw.efSearch = o.ef_search
            idx.add(vecs)
            t.main_vecs = None
        else:
            nlist = o.nlist or max(16, int(4 * np.sqrt(len(vecs))))
            quant = faiss.IndexFlatIP(self.dim)
            idx = faiss.IndexIVFScalarQuantizer(
                quant, self.dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
            )
            rng = np.random.default_rng(0)
            sample = vecs[rng.choice(len(vecs), min(len(vecs), 64 * nlist), replace=False)]
            idx.train(sample)
            idx.add_with_ids(vecs, np.arange(len(vecs)))  # compact's removals keep positions
            idx.nprobe = o.nprobe
            t.main_vecs = vecs
        t.main = idx
        t.main_ids = ids
        t.in_main = set(ids.tolist())
        t.dead, t.readable = set(), set()

    def _drop(self, t: _Tenant, ids: list[int]) -> None:
        if not ids:
            return
        recent = [i for i in ids if i not in t.in_main]
        if recent:
            t.recent.remove_ids(np.asarray(recent, dtype=np.int64))
        marked = [i for i in ids if i in t.in_main]
        t.dead.update(marked)
        t.readable.update(marked)
        self._forget(t, ids)
        if t.main is not None and len(t.dead) * 3 > len(t.main_ids):
            self._rebuild_main(t)

    def _rebuild_main(self, t: _Tenant) -> None:
        """``main`` again without its dead entries; what is left under ``min_main`` goes
        back to the exact tier (too few to train on, and flat is fast enough there)."""
        live_ids, live_vecs = self._live_main(t)
        t.main, t.main_base, t.main_vecs = None, None, None
        t.main_ids = np.empty(0, dtype=np.int64)
        t.in_main, t.dead, t.readable = set(), set(), set()
        if len(live_ids) >= self.options.min_main:
            self._build_main(t, live_ids, live_vecs)
        elif len(live_ids):
            t.recent.add_with_ids(np.ascontiguousarray(live_vecs, dtype=np.float32), live_ids)

    def compact(self, tenant: str) -> None:
        """Leave no vector removed from ``main`` readable, without rebuilding it: PQ drops
        them (its codes and the full vectors shift down), IVF drops them from its lists
        and zeroes its copy, HNSW zeroes them in its storage (the graph keeps the slot,
        tombstoned, until the rebuild at a third dead). Costs a pass over ``main`` at
        most, so erasure and retention call it every time."""
        t = self._tenants.get(tenant)
        if t is None or not t.readable or t.main is None:
            return
        gone = np.fromiter(t.readable, np.int64, len(t.readable))
        pos = np.flatnonzero(np.isin(t.main_ids, gone))
        if self.options.kind == "pq":
            t.main_base.remove_ids(pos)
            t.main.refine_index.remove_ids(pos)
            t.main.ntotal = t.main_base.ntotal  # IndexRefine does not track removals
            t.main_ids = np.delete(t.main_ids, pos)
            t.in_main -= t.readable
            t.dead -= t.readable
        elif t.main_vecs is not None:  # IVF
            t.main.remove_ids(pos)
            t.main_vecs[pos] = 0.0
        else:  # HNSW: overwrite in place (faiss cannot take a node out of the graph)
            storage = faiss.downcast_index(t.main.storage)
            flat = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * self.dim)
            flat.reshape(storage.ntotal, self.dim)[pos] = 0.0
        t.readable = set()

    # -- reads -----------------------------------------------------------------------
    def search(self, tenant: str, embeddings: np.ndarray, k: int, *,
               enough: float | None = None) -> list[list[Neighbour]]:
        """Both tiers. With ``enough``, a row whose best *recent* exemplar scores at least
        that is settled and skips ``main``: the person was seen minutes ago, and ``main``
        could only add a look-alike. That holds for a visitor created minutes ago too: it
        was founded because its first search of ``main`` found nobody. (A weak first track
        can have missed an older id of the same person; consolidation merges such splits.
        docs/performance.md measures the agreement with exact search.)"""
        t = self._tenants.get(tenant)
        n = len(embeddings)
        if t is None or n == 0 or self.size(tenant) == 0:
            return [[] for _ in range(n)]
        q = np.ascontiguousarray(embeddings, dtype=np.float32)
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        ask = np.arange(n)
        if t.recent.ntotal:
            rs, ri = t.recent.search(q, min(k, t.recent.ntotal))
            parts.append((rs, ri))
            if enough is not None:
                ask = np.flatnonzero((ri[:, 0] < 0) | (rs[:, 0] < enough))
        if t.main is not None and t.main.ntotal and len(ask):
            kk = min(t.main.ntotal, k + min(len(t.dead), 4 * k))
            s = np.full((n, kk), -np.inf, dtype=np.float32)
            pos = np.full((n, kk), -1, dtype=np.int64)
            s[ask], pos[ask] = t.main.search(q[ask], kk)
            safe = np.maximum(pos, 0)
            ids = np.where(pos >= 0, t.main_ids[safe], -1)
            if t.main_vecs is not None:  # IVF-SQ8 scores are quantised: re-score exactly
                s = np.einsum("nd,nkd->nk", q, t.main_vecs[safe])
                s[pos < 0] = -np.inf
            parts.append((s, ids))
        scores = np.concatenate([p[0] for p in parts], axis=1)
        ids = np.concatenate([p[1] for p in parts], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")
        ranked_ids = np.take_along_axis(ids, order, axis=1).tolist()
        ranked_scores = np.take_along_axis(scores, order, axis=1).tolist()
        out: list[list[Neighbour]] = []
        dead, meta = t.dead, t.meta
        for row_ids, row_scores in zip(ranked_ids, ranked_scores, strict=True):
            hits: list[Neighbour] = []
            for i, s in zip(row_ids, row_scores, strict=True):
                if i < 0 or i in dead:
                    continue
                visitor, face = meta[i]
                hits.append(Neighbour(visitor, face, s))
                if len(hits) == k:
                    break
            out.append(hits)
        return out

    def size(self, tenant: str) -> int:
        t = self._tenants.get(tenant)
        return 0 if t is None else len(t.meta)

    def memory_bytes(self, tenant: str) -> int:
        """Bytes of faiss structures (vectors, graph/lists) of one tenant, metadata excluded."""
        t = self._tenants.get(tenant)
        if t is None:
            return 0
        total = faiss.serialize_index(t.recent).nbytes
        if t.main is not None:
            total += faiss.serialize_index(t.main).nbytes + t.main_ids.nbytes
            if t.main_vecs is not None:
                total += t.main_vecs.nbytes
        return total
