"""What one search of a 1M-face gallery costs at recall >= 0.99: the resolver's floor.

    .venv/bin/python benchmarks/ann_floor.py [--size 1000000] [--queries 2000]

The resolver benchmark's synthetic SFace-like gallery (one photo per identity) and queries
(half new photos of gallery identities, half strangers). Exact search gives each query's
true best exemplar; for each approximate structure this prints the share of queries
whose exact best scores above the match threshold (the decisions that matter) that find
that exemplar among the candidates the structure returns (before exact re-ranking), and
the cost per query with faiss on every core, queries in calls of ``--per-call``:

- 4-bit PQ fast-scan over every code (``pq_m`` 16 / 32 / 64 bytes x 2 per face), keeping
  K = 160 / 640 / 2000 candidates (the resolver keeps k x rerank = 160);
- IVF (1024 lists) over the same 32-byte codes, probing 64 / 128 / 256 lists;
- the same pq64 scan at 1 / 4 / 16 queries per call (what batching tracks buys).

Writes benchmarks/results/ann_floor.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import faiss
import numpy as np

from resolver import DIM, Synth

RESULTS = Path(__file__).parent / "results"
THRESHOLD = 0.48  # the resolver's SFace match threshold


def timed_search(index: faiss.Index, q: np.ndarray, k: int, per_call: int) -> tuple[float, np.ndarray]:
    out = []
    t = time.perf_counter()
    for s in range(0, len(q), per_call):
        out.append(index.search(q[s:s + per_call], k)[1])
    return (time.perf_counter() - t) / len(q) * 1e3, np.concatenate(out)


def found(cands: np.ndarray, truth: np.ndarray, rows: np.ndarray) -> float:
    return float(np.mean([truth[r] in cands[r] for r in rows]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--per-call", type=int, default=8)
    args = ap.parse_args()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    syn = Synth()
    ids = syn.identities(args.size)
    gallery = syn.photos(ids)
    half = args.queries // 2
    pick = syn.rng.integers(0, args.size, half)
    q = np.concatenate([syn.photos(ids[pick]), syn.photos(syn.identities(args.queries - half))])
    exact = faiss.IndexFlatIP(DIM)
    exact.add(gallery)
    exact_ms, _ = timed_search(exact, q[:200], 1, args.per_call)
    best_s, best_i = exact.search(q, 1)
    truth, decisive = best_i[:, 0], np.flatnonzero(best_s[:, 0] >= THRESHOLD)
    del exact
    print(f"{args.size:,} faces, {args.queries} queries, {len(decisive)} above threshold "
          f"{THRESHOLD}; exact scan {exact_ms:.2f} ms/query", flush=True)
    rows: list[dict] = []

    def report(name: str, ms: float, cands: np.ndarray, **extra: object) -> None:
        r = {"structure": name, "ms_per_query": ms, "found_above_threshold":
             found(cands, truth, decisive), **extra}
        rows.append(r)
        print(f"  {name:34s} {ms:6.3f} ms/query  found {r['found_above_threshold']:.4f}",
              flush=True)

    train = gallery[np.random.default_rng(0).choice(args.size, 65_536, replace=False)]
    pq64 = None
    for m in (16, 32, 64):
        idx = faiss.IndexPQFastScan(DIM, m, 4, faiss.METRIC_INNER_PRODUCT)
        idx.train(train)
        idx.add(gallery)
        for k in (160, 640, 2000):
            ms, cands = timed_search(idx, q, k, args.per_call)
            report(f"pq{m} full scan, K={k}", ms, cands, pq_m=m, k=k)
        if m == 64:
            pq64 = idx
    assert pq64 is not None
    for per_call in (1, 4, 16):
        ms, cands = timed_search(pq64, q, 160, per_call)
        report(f"pq64 full scan, K=160, {per_call}/call", ms, cands, pq_m=64, k=160,
               per_call=per_call)
    del pq64
    ivf = faiss.IndexIVFPQFastScan(faiss.IndexFlatIP(DIM), DIM, 1024, 64, 4,
                                   faiss.METRIC_INNER_PRODUCT)
    ivf.train(train)
    ivf.add(gallery)
    for nprobe in (64, 128, 256):
        ivf.nprobe = nprobe
        ms, cands = timed_search(ivf, q, 160, args.per_call)
        report(f"ivf1024 pq64, nprobe={nprobe}, K=160", ms, cands, nlist=1024, nprobe=nprobe)
    out = {"size": args.size, "queries": args.queries, "above_threshold": len(decisive),
           "threshold": THRESHOLD, "exact_ms_per_query": exact_ms, "per_call": args.per_call,
           "results": rows, "cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ann_floor.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
