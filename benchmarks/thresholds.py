"""Face-verification score distributions and thresholds on lfw-dev, for every embedder.

Every photo goes through our own stage code (``detect_batch`` -> largest, most central
face -> the aligned crop), then through both embedders. Genuine pairs are all pairs of
photos of one person; impostor pairs are all pairs of photos of different people (~24M).
A second, "centroid" protocol mirrors how the resolver matches: a face against the mean of
a visitor's other exemplars.

    .venv/bin/python benchmarks/thresholds.py            # uses the embedding cache if present
    .venv/bin/python benchmarks/thresholds.py --refresh  # recompute embeddings (~10 min, 2 cores)

Writes benchmarks/results/thresholds.json; caches embeddings in
benchmarks/results/thresholds_lfw_dev_embeddings.npz.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from revisit.config import Settings
from revisit.records import Batch, Frame
from revisit.vision.catalog import embedder_facts
from revisit.vision.stages import Vision, detect_batch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CACHE = RESULTS / "thresholds_lfw_dev_embeddings.npz"
OUT = RESULTS / "thresholds.json"
MODELS = ("sface", "reid0095", "sface-reid", "arcface")
RUN = ("sface", "reid0095", "arcface")  # sface-reid is the first two side by side
FARS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
PERCENTILES = (1, 5, 50, 95, 99, 99.9, 99.99)
TS = datetime(2024, 1, 1, tzinfo=UTC)


def shared_data() -> Path:
    env = os.environ.get("REVISIT_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def list_photos(root: Path) -> list[tuple[str, str]]:
    """(person, path) for every photo, sorted for reproducibility."""
    out = []
    for person in sorted(os.listdir(root)):
        d = root / person
        if d.is_dir():
            out.extend((person, str(d / f)) for f in sorted(os.listdir(d)) if f.endswith(".jpg"))
    return out


_VISION: dict[str, Vision] = {}


def _worker_init() -> None:
    base = Settings(pipeline={"threads": 1})  # one thread per process, one process per core
    for model in RUN:
        _VISION[model] = Vision(base.model_copy(update={
            "embedder": base.embedder.model_copy(update={"model": model})}))


def _embed_chunk(paths: list[str]) -> tuple[list, float, float, float, float, int]:
    """Embeddings of the chosen face of each photo, plus time spent per stage."""
    settings = _VISION["sface"].settings
    det = _VISION["sface"].detector
    rows = []
    t_det = t_sf = t_af = t_rd = 0.0
    for path in paths:
        data = Path(path).read_bytes()
        frame = Frame("lfw", "cam", "loc", path, TS, data=data, source=path)
        t0 = time.perf_counter()
        batch = detect_batch(Batch(path, frames=[frame]), det, settings)
        t_det += time.perf_counter() - t0
        if not batch.faces:
            rows.append(None)
            continue
        face = max(batch.faces, key=lambda f: _centrality(f.bbox, 250, 250))
        t0 = time.perf_counter()
        sf = _VISION["sface"].embedder.predict([face.crop])[0]
        t1 = time.perf_counter()
        af = _VISION["arcface"].embedder.predict([face.crop])[0]
        t2 = time.perf_counter()
        rd = _VISION["reid0095"].embedder.predict([face.crop])[0]
        t_rd += time.perf_counter() - t2
        t_sf += t1 - t0
        t_af += t2 - t1
        rows.append((sf, af, face.bbox[3], face.det_score, face.quality, face.creatable, rd))
    return rows, t_det, t_sf, t_af, t_rd, len(paths)


def _centrality(bbox: tuple[int, int, int, int], width: int, height: int) -> float:
    """Largest, most central face wins: face height discounted by distance from centre."""
    x, y, w, h = bbox
    dx = (x + w / 2 - width / 2) / width
    dy = (y + h / 2 - height / 2) / height
    return h * (1.0 - min(1.0, (dx * dx + dy * dy) ** 0.5))


def compute_embeddings(photos: list[tuple[str, str]], workers: int) -> dict[str, np.ndarray]:
    paths = [p for _, p in photos]
    chunks = [paths[i:i + 64] for i in range(0, len(paths), 64)]
    rows: list = []
    t_det = t_sf = t_af = t_rd = 0.0
    n_det = 0
    start = time.perf_counter()
    with get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
        for i, (r, td, ts_, ta, tr, n) in enumerate(pool.imap(_embed_chunk, chunks)):
            rows.extend(r)
            t_det += td
            t_sf += ts_
            t_af += ta
            t_rd += tr
            n_det += n
            if i % 10 == 0:
                print(f"  {len(rows)}/{len(paths)} photos, {time.perf_counter() - start:.0f}s",
                      file=sys.stderr, flush=True)
    found = np.array([r is not None for r in rows])
    n_faces = max(1, int(found.sum()))
    ok = [r for r in rows if r is not None]
    return {
        "found": found,
        "sface": np.stack([r[0] for r in ok]).astype(np.float32),
        "arcface": np.stack([r[1] for r in ok]).astype(np.float32),
        "reid0095": np.stack([r[6] for r in ok]).astype(np.float32),
        "face_height": np.array([r[2] for r in ok], dtype=np.int32),
        "det_score": np.array([r[3] for r in ok], dtype=np.float32),
        "quality": np.array([r[4] for r in ok], dtype=np.float32),
        "creatable": np.array([r[5] for r in ok], dtype=bool),
        "timing_ms": np.array([
            1000 * t_det / n_det, 1000 * t_sf / n_faces, 1000 * t_af / n_faces,
            time.perf_counter() - start, workers, 1000 * t_rd / n_faces,
        ]),
    }


def pair_scores(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All genuine and all impostor cosine similarities (upper triangle), in blocks."""
    n = len(emb)
    genuine, impostor = [], []
    step = 1024
    for i in range(0, n, step):
        block = emb[i:i + step] @ emb[i:].T  # rows i.., cols i..
        li = labels[i:i + step, None]
        lj = labels[None, i:]
        rows = np.arange(block.shape[0])[:, None] + i
        cols = np.arange(i, n)[None, :]
        upper = cols > rows
        same = li == lj
        genuine.append(block[upper & same])
        impostor.append(block[upper & ~same])
    return np.concatenate(genuine), np.concatenate(impostor)


def centroid_scores(emb: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out: a photo vs the normalised mean of its person's other photos (genuine),
    and every person's centroid vs every photo of another person (impostor)."""
    ids, inv = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(ids), emb.shape[1]), dtype=np.float64)
    np.add.at(sums, inv, emb)
    counts = np.bincount(inv)
    genuine = []
    for k in np.nonzero(counts >= 2)[0]:
        members = np.nonzero(inv == k)[0]
        others = sums[k] - emb[members]  # (m, d): centroid without the held-out photo
        others /= np.linalg.norm(others, axis=1, keepdims=True)
        genuine.append(np.einsum("ij,ij->i", others, emb[members]))
    cents = (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)
    impostor = []
    for i in range(0, len(cents), 512):
        block = cents[i:i + 512] @ emb.T
        mask = np.arange(i, i + len(block))[:, None] != inv[None, :]
        impostor.append(block[mask])
    return np.concatenate(genuine).astype(np.float32), np.concatenate(impostor)


def roc(genuine: np.ndarray, impostor: np.ndarray, model: str) -> dict:
    imp_sorted = np.sort(impostor)
    gen_sorted = np.sort(genuine)
    n_imp, n_gen = len(imp_sorted), len(gen_sorted)

    def far_at(t: float) -> float:
        return float(n_imp - np.searchsorted(imp_sorted, t, side="right")) / n_imp

    def tar_at(t: float) -> float:
        return float(n_gen - np.searchsorted(gen_sorted, t, side="right")) / n_gen

    points = []
    for far in FARS:
        if far * n_imp < 1:
            continue
        # smallest threshold whose FAR (share of impostors scoring above it) <= far
        k = int(np.floor(far * n_imp))
        t = float(imp_sorted[n_imp - k - 1]) if k < n_imp else float(imp_sorted[0])
        points.append({"far": far, "threshold": round(t, 4), "tar": round(tar_at(t), 4),
                       "far_measured": far_at(t)})
    grid = np.linspace(-0.2, 1.0, 2401)
    fars = n_imp - np.searchsorted(imp_sorted, grid, side="right")
    frrs = np.searchsorted(gen_sorted, grid, side="right")
    fars = fars / n_imp
    frrs = frrs / n_gen
    k = int(np.argmin(np.abs(fars - frrs)))
    t = embedder_facts(model).match_threshold
    at_default = {"threshold": t, "tar": round(tar_at(t), 4), "far": far_at(t)}
    return {
        "tar_at_far": points,
        "eer": round(float((fars[k] + frrs[k]) / 2), 5),
        "eer_threshold": round(float(grid[k]), 4),
        "at_default_threshold": at_default,
    }


def _side_by_side(sface: np.ndarray, reid: np.ndarray) -> np.ndarray:
    """The sface-reid embedding from its parts, as SFaceReidEmbedder forms it."""
    def unit(m: np.ndarray) -> np.ndarray:
        m = m.astype(np.float32)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    return (np.hstack([unit(sface), unit(reid)]) / np.sqrt(2.0)).astype(np.float32)


def describe(x: np.ndarray) -> dict:
    return {
        "n": len(x),
        "mean": round(float(x.mean()), 4),
        "std": round(float(x.std()), 4),
        "percentiles": {str(p): round(float(np.percentile(x, p)), 4) for p in PERCENTILES},
        "max": round(float(x.max()), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--refresh", action="store_true", help="recompute the embedding cache")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--limit", type=int, default=0, help="first N photos only (smoke test)")
    args = ap.parse_args()

    root = shared_data() / "lfw-dev"
    photos = list_photos(root)
    if args.limit:
        photos = photos[:args.limit]
    people = np.array([p for p, _ in photos])
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache = CACHE if not args.limit else RESULTS / "thresholds_smoke.npz"
    if cache.exists() and not args.refresh:
        data = dict(np.load(cache))
        print(f"embeddings from cache {cache.relative_to(REPO)}", file=sys.stderr)
    else:
        print(f"embedding {len(photos)} photos with {args.workers} workers", file=sys.stderr)
        data = compute_embeddings(photos, args.workers)
        np.savez_compressed(cache, **{k: (v.astype(np.float16) if k in MODELS else v)
                                      for k, v in data.items()})
    data["sface-reid"] = _side_by_side(data["sface"], data["reid0095"])
    found = data["found"].astype(bool)
    labels = people[found]
    t_det, t_sf, t_af, wall, workers, t_rd = data["timing_ms"].tolist()
    result: dict = {
        "dataset": "lfw-dev",
        "photos": len(photos),
        "people": len(set(people.tolist())),
        "faces_found": int(found.sum()),
        "no_face": [p for p, f in zip((p for _, p in photos), found, strict=True) if not f][:50],
        "creatable_share": round(float(data["creatable"].mean()), 4),
        "timing": {
            "detect_ms_per_photo": round(t_det, 2), "sface_ms_per_face": round(t_sf, 2),
            "arcface_ms_per_face": round(t_af, 2), "reid0095_ms_per_face": round(t_rd, 2),
            "embedding_wall_s": round(wall, 1),
            "workers": int(workers), "threads_per_worker": 1,
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "models": {},
    }
    for model in MODELS:
        emb = data[model].astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        g, i = pair_scores(emb, labels)
        cg, ci = centroid_scores(emb, labels)
        result["models"][model] = {
            "pairs": {"genuine": describe(g), "impostor": describe(i), **roc(g, i, model)},
            "centroid": {"genuine": describe(cg), "impostor": describe(ci), **roc(cg, ci, model)},
            "default_match_threshold": embedder_facts(model).match_threshold,
        }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({m: {k: result["models"][m][k]["tar_at_far"] for k in ("pairs", "centroid")}
                      for m in MODELS}, indent=1))
    for m in MODELS:
        for proto in ("pairs", "centroid"):
            r = result["models"][m][proto]
            print(f"{m:10s} {proto:8s} genuine mean {r['genuine']['mean']:.3f} impostor mean "
                  f"{r['impostor']['mean']:.3f} p99.9 {r['impostor']['percentiles']['99.9']:.3f} "
                  f"EER {r['eer']:.4f} @ {r['eer_threshold']:.3f} "
                  f"default {r['at_default_threshold']}")
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
