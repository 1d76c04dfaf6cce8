"""Identity resolution against galleries of 10k, 100k and 1M identities.

    .venv/bin/python benchmarks/resolver.py [--sizes 10000 100000 1000000] [--index hnsw]

Embeddings (128-d, SFace-like) are synthetic but follow the similarity distributions
measured on lfw-dev (benchmarks/results/thresholds.json): identity vectors share a small
common component (impostor cosine mean ~0.08, sd ~0.09) and each photo of a person is
its identity vector plus noise (genuine cosine mean ~0.63, sd ~0.09); the generated
pairs' statistics are printed next to the measured ones.

For each gallery size (one exemplar per identity, the hardest case: no second exemplar
to fall back on):

- cold queries: a new photo of a gallery identity, or of a stranger; recall@1 of the
  approximate index (``identity/ann_index.py``) against exact search, over all queries
  and over those whose exact best score passes the match threshold (the decisions that
  matter);
- a sighting stream through the real ``Resolver``: visits of 12 sightings each (half by
  gallery identities, half by strangers), camera batches of 16 frames x 1-4 faces;
  sightings/s with the exact ``FaissIndex`` and with the approximate index, and the
  stream's recall@1 (every search of the approximate run is repeated exactly);
- index memory per identity (faiss structures) and process RSS growth per identity.

Writes benchmarks/results/resolver.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import faiss
import numpy as np

from revisit.config import Settings
from revisit.config.index_url import AnnOptions
from revisit.identity.ann_index import FaissAnnIndex
from revisit.identity.index import FaissIndex
from revisit.identity.resolver import Resolver
from revisit.records import Batch, Exemplar, Face

RESULTS = Path(__file__).parent / "results"
DIM = 128
COMMON = 0.13  # share of a common direction: impostor mean cosine
GENUINE_SCALE = (0.795, 0.07)  # per-photo weight of the identity vector: genuine ~0.63
T0 = datetime(2024, 3, 1, 9, tzinfo=UTC)


class Synth:
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.common = self._unit(self.rng.standard_normal((1, DIM)))

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def identities(self, n: int) -> np.ndarray:
        noise = self._unit(self.rng.standard_normal((n, DIM)))
        return self._unit(np.sqrt(COMMON) * self.common + np.sqrt(1 - COMMON) * noise)

    def photos(self, ids: np.ndarray) -> np.ndarray:
        s = np.clip(self.rng.normal(*GENUINE_SCALE, (len(ids), 1)), 0.3, 0.99)
        noise = self._unit(self.rng.standard_normal(ids.shape))
        return self._unit(s * ids + np.sqrt(1 - s * s) * noise)


def check_distribution(syn: Synth) -> dict[str, float]:
    ids = syn.identities(2000)
    a, b = syn.photos(ids), syn.photos(ids)
    gen = np.sum(a * b, axis=1)
    imp = (a[:1000] @ b[1000:].T).ravel()
    return {"genuine_mean": float(gen.mean()), "genuine_sd": float(gen.std()),
            "impostor_mean": float(imp.mean()), "impostor_sd": float(imp.std()),
            "impostor_p99.9": float(np.percentile(imp, 99.9))}


class NoStore:
    """The resolver's store calls, answered for a gallery that lives in memory: the
    resolver loads it as it would from a store (its index skips exemplars it already
    holds), so gallery visitors have centroids and can be matched."""

    def __init__(self, gallery: np.ndarray) -> None:
        self.gallery = gallery

    def max_visitor_number(self, tenant: str) -> int:
        return len(self.gallery)

    def load_exemplars(self, tenant: str):  # type: ignore[no-untyped-def]
        for s in range(0, len(self.gallery), 100_000):
            yield list(gallery_exemplars(self.gallery[s:s + 100_000], s))

    def existing_sightings(self, tenant: str, ids) -> dict[str, str]:  # type: ignore[no-untyped-def]
        return {}


class Tee:
    """Approximate index that also asks an exact one, counting top-1 agreement."""

    def __init__(self, ann: FaissAnnIndex, exact: FaissIndex, threshold: float) -> None:
        self.ann, self.exact, self.threshold = ann, exact, threshold
        self.queries = self.agree = self.decisive = self.decisive_agree = 0
        self.same_visitor = 0  # top-1 exemplars differ but belong to the same visitor

    def add(self, exemplars) -> None:  # type: ignore[no-untyped-def]
        exemplars = list(exemplars)
        self.ann.add(exemplars)
        self.exact.add(exemplars)

    def remove(self, tenant, ids) -> None:  # type: ignore[no-untyped-def]
        ids = list(ids)
        self.ann.remove(tenant, ids)
        self.exact.remove(tenant, ids)

    def remove_visitor(self, tenant, vid) -> None:  # type: ignore[no-untyped-def]
        self.ann.remove_visitor(tenant, vid)
        self.exact.remove_visitor(tenant, vid)

    def size(self, tenant):  # type: ignore[no-untyped-def]
        return self.ann.size(tenant)

    def search(self, tenant, emb, k, *, enough=None):  # type: ignore[no-untyped-def]
        a = self.ann.search(tenant, emb, k, enough=enough)
        e = self.exact.search(tenant, emb, k)
        for ha, he in zip(a, e, strict=True):
            if not he:
                continue
            same = bool(ha) and ha[0].face_image_id == he[0].face_image_id
            self.queries += 1
            self.agree += same
            if he[0].score >= self.threshold:
                self.decisive += 1
                self.decisive_agree += same
                self.same_visitor += bool(ha) and ha[0].visitor_id == he[0].visitor_id
        return a


def gallery_exemplars(vecs: np.ndarray, start: int = 0):  # type: ignore[no-untyped-def]
    for i, v in enumerate(vecs):
        n = start + i + 1
        yield Exemplar("default", f"V-{n:06X}", f"G-{n}", v, 0.9, T0)


def build(index, vecs: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    """Bulk load with every core (graph construction parallelises; searches do not)."""
    searching = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    try:
        return _build(index, vecs)
    finally:
        faiss.omp_set_num_threads(searching)


def _build(index, vecs: np.ndarray) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    for s in range(0, len(vecs), 100_000):
        index.add(list(gallery_exemplars(vecs[s:s + 100_000], s)))
    if isinstance(index, FaissAnnIndex):  # move the tail out of the exact tier
        t_ = index._tenants["default"]
        if t_.recent.ntotal and (t_.main is not None or t_.recent.ntotal >= index.options.min_main):
            index._flush(t_)
    return time.perf_counter() - t


def cold_queries(syn: Synth, ids: np.ndarray, exact: FaissIndex, ann: FaissAnnIndex,
                 n: int, threshold: float) -> dict[str, float]:
    half = n // 2
    pick = syn.rng.integers(0, len(ids), half)
    q = np.concatenate([syn.photos(ids[pick]), syn.photos(syn.identities(n - half))])
    out: dict[str, float] = {}
    for name, idx in (("exact", exact), ("ann", ann)):
        t = time.perf_counter()
        res = []
        for i in range(0, n, 3):  # a frame's faces per call, as the resolver asks
            res.extend(idx.search("default", q[i:i + 3], 10))
        out[f"{name}_queries_per_s"] = n / (time.perf_counter() - t)
        out[f"_{name}"] = res  # type: ignore[assignment]
    ex_res, ann_res = out.pop("_exact"), out.pop("_ann")  # type: ignore[misc]
    top_e = [r[0].face_image_id if r else None for r in ex_res]  # type: ignore[union-attr]
    top_a = [r[0].face_image_id if r else None for r in ann_res]  # type: ignore[union-attr]
    dec = [i for i, r in enumerate(ex_res) if r and r[0].score >= threshold]  # type: ignore[arg-type]
    out["recall_at_1"] = float(np.mean([a == e for a, e in zip(top_a, top_e, strict=True)]))
    out["recall_at_1_above_threshold"] = float(np.mean([top_a[i] == top_e[i] for i in dec]))
    out["above_threshold"] = len(dec)
    return out


def stream_batches(syn: Synth, ids: np.ndarray, sightings: int, seed: int) -> list[Batch]:
    """Visits of 12 sightings (half by gallery identities, half by strangers), interleaved
    over cameras, packed into batches of 16 frames with 1-4 faces."""
    rng = np.random.default_rng(seed)
    n_visits = sightings // 12
    people = np.where(rng.random(n_visits) < 0.5, rng.integers(0, len(ids), n_visits), -1)
    strangers = syn.identities(n_visits)
    faces: list[tuple[int, np.ndarray]] = []
    for v in range(n_visits):
        base = ids[people[v]] if people[v] >= 0 else strangers[v]
        for p in syn.photos(np.repeat(base[None], 12, axis=0)):
            faces.append((v, p))
    # interleave: visits overlap in time, ~8 visits open at once
    order = sorted(range(len(faces)), key=lambda i: (faces[i][0] // 8, i % 12, i))
    batches: list[Batch] = []
    b = Batch("s-0")
    frame = 0
    i = 0
    while i < len(order):
        k = int(rng.integers(1, 5))
        ts = T0 + timedelta(seconds=frame * 2)
        seen_visits: set[int] = set()
        for j in order[i:i + k]:
            v, emb = faces[j]
            if v in seen_visits:  # one face per person per frame
                continue
            seen_visits.add(v)
            b.faces.append(Face(
                tenant="default", camera_id=f"C-{v % 50}", location_id=f"L-{v % 10}",
                image_id=f"I-{frame}", ts=ts, face_image_id=f"F-{j}", bbox=(0, 0, 80, 100),
                landmarks=np.zeros((5, 2), np.float32), det_score=0.9, quality=0.8,
                creatable=True, embedding=emb,
            ))
        i += k
        frame += 1
        if frame % 16 == 0:
            batches.append(b)
            b = Batch(f"s-{len(batches)}")
    if b.faces:
        batches.append(b)
    return batches


def run_stream(index, gallery: np.ndarray, batches: list[Batch]) -> tuple[float, int, float]:  # type: ignore[no-untyped-def]
    """Resolve the batches with a fresh resolver over ``gallery``: seconds, sightings, and
    the RSS (MB) its in-memory gallery (exemplars behind the visitor centroids) took."""
    res = Resolver(Settings(), NoStore(gallery), index)  # type: ignore[arg-type]
    r0 = rss_mb()
    res._gallery("default")
    gallery_mb = rss_mb() - r0
    n = 0
    t = time.perf_counter()
    for b in batches:
        fresh = Batch(b.batch_id, faces=list(b.faces))
        n += len(res.resolve(fresh).sightings)
    return time.perf_counter() - t, n, gallery_mb


def forget_stream(*indexes) -> None:  # type: ignore[no-untyped-def]
    """Drop what a stream added (faces ``F-...``), so the next stream starts from the gallery."""
    for idx in indexes:
        t = idx._tenants["default"]
        idx.remove("default", [f for f in t.by_face if f.startswith("F-")])


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--index", default="pq", choices=["pq", "hnsw", "ivf"])
    ap.add_argument("--pq-m", type=int, default=AnnOptions().pq_m)
    ap.add_argument("--rerank", type=int, default=AnnOptions().rerank)
    ap.add_argument("--m", type=int, default=AnnOptions().m)
    ap.add_argument("--ef-search", type=int, default=AnnOptions().ef_search)
    ap.add_argument("--ef-construction", type=int, default=AnnOptions().ef_construction)
    ap.add_argument("--nprobe", type=int, default=AnnOptions().nprobe)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--stream", type=int, default=6000, help="sightings in the stream")
    ap.add_argument("--omp-threads", type=int, default=os.cpu_count() or 1,
                    help="faiss OpenMP threads; the resolver searches a camera batch's tracks at "
                    "once, which the compressed scan splits over threads")
    ap.add_argument("--out", default="resolver.json")
    args = ap.parse_args()
    faiss.omp_set_num_threads(args.omp_threads)
    syn = Synth()
    dist = check_distribution(syn)
    print("synthetic similarities:", {k: round(v, 3) for k, v in dist.items()},
          "(lfw-dev SFace: genuine 0.632/0.090, impostor 0.082/0.088, p99.9 0.360)")
    threshold = Resolver(Settings(), NoStore(np.empty((0, DIM))), FaissIndex(DIM)).threshold  # type: ignore[arg-type]
    opts = AnnOptions(kind=args.index, m=args.m, ef_search=args.ef_search,
                      ef_construction=args.ef_construction, nprobe=args.nprobe,
                      pq_m=args.pq_m, rerank=args.rerank)
    results = []
    for n in args.sizes:
        ids = syn.identities(n)
        gallery = syn.photos(ids)
        r0 = rss_mb()
        exact = FaissIndex(DIM)
        exact_build = build(exact, gallery)
        r1 = rss_mb()
        ann = FaissAnnIndex(DIM, opts)
        ann_build = build(ann, gallery)
        r2 = rss_mb()
        cold = cold_queries(syn, ids, exact, ann, args.queries, threshold)
        # recall first, while both indexes hold the same exemplars: every search of the
        # approximate resolver is repeated exactly (both see the same additions)
        tee = Tee(ann, exact, threshold)
        _, _, gallery_mb = run_stream(tee, gallery, stream_batches(syn, ids, args.stream // 2, seed=n))
        forget_stream(exact, ann)
        # then throughput, each resolver alone, on a second stream
        batches = stream_batches(syn, ids, args.stream, seed=n + 1)
        exact_s, n_sight, _ = run_stream(exact, gallery, batches)
        ann_s, _, _ = run_stream(ann, gallery, batches)
        row = {
            "identities": n, "index": str(opts),
            "exact_build_s": exact_build, "ann_build_s": ann_build,
            "cold": cold,
            "stream_sightings": n_sight,
            "exact_sightings_per_s": n_sight / exact_s,
            "ann_sightings_per_s": n_sight / ann_s,
            "stream_recall_at_1": tee.agree / max(1, tee.queries),
            "stream_recall_at_1_above_threshold": tee.decisive_agree / max(1, tee.decisive),
            "stream_visitor_at_1_above_threshold": tee.same_visitor / max(1, tee.decisive),
            "stream_queries_checked": tee.queries,
            "ann_index_bytes_per_identity": ann.memory_bytes("default") / n,
            "exact_rss_mb_per_million": (r1 - r0) / n * 1e6,
            "ann_rss_mb_per_million": (r2 - r1) / n * 1e6,
            "resolver_gallery_rss_mb_per_million": gallery_mb / n * 1e6,
        }
        results.append(row)
        print(f"{n:>9,} identities: exact {row['exact_sightings_per_s']:7.0f} sightings/s, "
              f"approx ({args.index}) {row['ann_sightings_per_s']:7.0f} sightings/s; "
              f"stream recall@1 {row['stream_recall_at_1']:.4f} "
              f"(above threshold {row['stream_recall_at_1_above_threshold']:.4f}, same visitor "
              f"{row['stream_visitor_at_1_above_threshold']:.4f}); "
              f"cold recall@1 {cold['recall_at_1']:.4f} "
              f"(above threshold {cold['recall_at_1_above_threshold']:.4f}), cold queries/s "
              f"exact {cold['exact_queries_per_s']:.0f} approx {cold['ann_queries_per_s']:.0f}; "
              f"build {ann_build:.0f} s; {row['ann_index_bytes_per_identity']:.0f} B/identity "
              f"in faiss, RSS {row['ann_rss_mb_per_million']:.0f} MB per million (+ "
              f"{row['resolver_gallery_rss_mb_per_million']:.0f} MB for the resolver's "
              "exemplars)", flush=True)
        del exact, ann, tee
        out = {"threshold": threshold, "synthetic": dist, "results": results,
               "cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0],
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        RESULTS.mkdir(exist_ok=True)  # after every size: a long run leaves what it has
        (RESULTS / args.out).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
