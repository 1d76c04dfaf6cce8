"""Identity accuracy on a simulated scenario: replay cached faces through the resolver.

Running the whole pipeline costs minutes per scenario (detection + embedding dominate), so
this script splits the work:

    # 1. once per scenario: detect + embed every frame with both embedders (cached in DIR)
    .venv/bin/python benchmarks/accuracy.py extract DIR
    # 2. many times: replay the cached faces through the real Resolver + DuckDB store
    #    (in memory), in manifest order and camera batches as the pipeline would, then
    #    consolidate, and score against DIR/truth.json; plus the offline reference
    .venv/bin/python benchmarks/accuracy.py replay DIR --model sface
    # 3. score a real run (after `revisit ingest DIR/manifest.jsonl --data D`)
    .venv/bin/python benchmarks/accuracy.py score DIR --data D

Writes benchmarks/results/accuracy_<scenario>_<model>.json. ``DIR`` comes from
``revisit simulate --faces ../shared/data/lfw-dev --out DIR`` (or
``revisit.simulate.scenario.build_scenario``).

Metrics (over faces that were detected and match a true face):
- BCubed precision/recall/F1 of the face -> visitor assignment;
- unique visitors found vs true (relative error);
- share of true visitors whose per-store visit counts (the report's visit rule) are exactly
  right, read off the found visitor that holds most of their faces.
The offline reference is sklearn average-linkage agglomerative clustering (cosine) over the
same embeddings the pipeline stored, at its best threshold on a grid (an oracle choice).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODELS = ("sface", "arcface")


# -- truth ---------------------------------------------------------------------------------
def load_truth(scenario: Path) -> dict[str, Any]:
    return json.loads((scenario / "truth.json").read_text())


def _iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def truth_labeller(truth: dict[str, Any]):  # type: ignore[no-untyped-def]
    """(image_id, bbox) -> true visitor (or None for a false detection)."""
    by_image = {f["image_id"]: f["faces"] for f in truth["frames"]}

    def label(image_id: str, bbox: tuple[int, ...]) -> str | None:
        best, best_iou = None, 0.15
        for tf in by_image.get(image_id, []):
            v = _iou(tuple(bbox), tuple(tf["bbox"]))
            if v > best_iou:
                best, best_iou = tf["visitor"], v
        return best

    return label


# -- metrics -------------------------------------------------------------------------------
def bcubed(true: list[str], pred: list[str]) -> tuple[float, float, float]:
    """BCubed precision, recall, F1 (Amigó et al. 2009) over items with both labels."""
    pair = Counter(zip(true, pred, strict=True))
    t_size = Counter(true)
    p_size = Counter(pred)
    n = len(true)
    if n == 0:
        return 0.0, 0.0, 0.0
    p = sum(c * c / p_size[pl] for (tl, pl), c in pair.items()) / n
    r = sum(c * c / t_size[tl] for (tl, pl), c in pair.items()) / n
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


def _visits(times: list[datetime], gap: timedelta) -> int:
    times = sorted(times)
    return 1 + sum(1 for a, b in pairwise(times) if b - a > gap) if times else 0


def score(
    truth: dict[str, Any], rows: list[tuple[str | None, str, str, datetime]]
) -> dict[str, Any]:
    """``rows``: (true visitor or None, found visitor, location, ts) per stored sighting."""
    gap = timedelta(seconds=truth["visit_gap_s"])
    labelled = [(t, p) for t, p, _, _ in rows if t is not None]
    p, r, f1 = bcubed([t for t, _ in labelled], [q for _, q in labelled])
    found_visitors = {p for _, p, _, _ in rows}
    true_visitors = {v["visitor"]: v for v in truth["visitors"]}
    # visits per (found visitor, location) under the report's rule
    times: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    for _, pv, loc, ts in rows:
        times[(pv, loc)].append(ts)
    found_visits: dict[str, dict[str, int]] = defaultdict(dict)
    for (pv, loc), ts in times.items():
        found_visits[pv][loc] = _visits(ts, gap)
    majority: dict[str, Counter[str]] = defaultdict(Counter)
    for t, pv in labelled:
        majority[t][pv] += 1
    exact = 0
    for tv, info in true_visitors.items():
        if tv not in majority:
            continue
        pv = majority[tv].most_common(1)[0][0]
        if found_visits[pv] == {k: int(v) for k, v in info["visits"].items()}:
            exact += 1
    n_true = len(true_visitors)
    return {
        "faces_scored": len(labelled),
        "false_detections": sum(1 for t, *_ in rows if t is None),
        "bcubed_precision": round(p, 4),
        "bcubed_recall": round(r, 4),
        "bcubed_f1": round(f1, 4),
        "true_visitors": n_true,
        "found_visitors": len(found_visitors),
        "count_error": round((len(found_visitors) - n_true) / n_true, 4),
        "visits_exact_share": round(exact / n_true, 4),
    }


def reference(
    truth: dict[str, Any], rows: list[tuple[str | None, str, str, datetime]], emb: np.ndarray,
    grid: np.ndarray,
) -> dict[str, Any]:
    """Average-linkage agglomerative clustering on the same embeddings, best threshold."""
    from sklearn.cluster import AgglomerativeClustering

    best: dict[str, Any] | None = None
    curve = []
    for thr in grid:
        model = AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage="average",
            distance_threshold=float(1.0 - thr),
        )
        labels = model.fit_predict(emb)
        ref_rows = [(t, f"C{lab}", loc, ts) for (t, _, loc, ts), lab in zip(rows, labels, strict=True)]
        m = score(truth, ref_rows)
        m["threshold"] = round(float(thr), 3)
        curve.append({k: m[k] for k in ("threshold", "bcubed_f1", "count_error", "visits_exact_share")})
        if best is None or m["bcubed_f1"] > best["bcubed_f1"]:
            best = m
    assert best is not None
    return {"best": best, "curve": curve}


# -- extraction ----------------------------------------------------------------------------
def extract(scenario: Path, batch_frames: int = 16) -> Path:
    """Detect once, embed with both models; cache per-face records in DIR/faces.npz."""
    from revisit.config import Settings
    from revisit.ingest.manifest import read_manifest
    from revisit.pipeline import batched
    from revisit.records import Frame
    from revisit.vision.stages import Vision, embed_batch

    settings = Settings(privacy={"keep_crops": True})  # type: ignore[arg-type]
    vision = Vision(settings)
    arc = Vision(Settings(embedder={"model": "arcface"}, privacy={"keep_crops": True}))  # type: ignore[arg-type]
    cols: dict[str, list[Any]] = defaultdict(list)
    frames = [f for f in read_manifest(scenario / "manifest.jsonl") if isinstance(f, Frame)]
    t0 = time.perf_counter()
    done = 0
    for batch in batched(frames, batch_frames):
        order = {f.image_id: i for i, f in enumerate(batch.frames)}
        vision.detect(batch)
        embed_batch(batch, vision.embedder, settings)
        sface = [f.embedding for f in batch.faces]
        for f in batch.faces:
            f.embedding = None
        embed_batch(batch, arc.embedder, settings)
        for f, s in zip(batch.faces, sface, strict=True):
            cols["image_id"].append(f.image_id)
            cols["camera_id"].append(f.camera_id)
            cols["location_id"].append(f.location_id)
            cols["ts"].append(f.ts.isoformat())
            cols["bbox"].append(f.bbox)
            cols["landmarks"].append(f.landmarks)
            cols["det_score"].append(f.det_score)
            cols["quality"].append(f.quality)
            cols["creatable"].append(f.creatable)
            cols["sface"].append(s)
            cols["arcface"].append(f.embedding)
            cols["order"].append(order[f.image_id])
        done += len(batch.frames)
        if done % 320 < batch_frames:
            print(f"{done}/{len(frames)} frames, {len(cols['image_id'])} faces, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    out = scenario / "faces.npz"
    np.savez_compressed(
        out,
        image_id=np.array(cols["image_id"]), camera_id=np.array(cols["camera_id"]),
        location_id=np.array(cols["location_id"]), ts=np.array(cols["ts"]),
        bbox=np.array(cols["bbox"], dtype=np.int32).reshape(-1, 4),
        landmarks=np.array(cols["landmarks"], dtype=np.float32).reshape(-1, 5, 2),
        det_score=np.array(cols["det_score"], dtype=np.float32),
        quality=np.array(cols["quality"], dtype=np.float32),
        creatable=np.array(cols["creatable"], dtype=bool),
        sface=np.array(cols["sface"], dtype=np.float32),
        arcface=np.array(cols["arcface"], dtype=np.float32),
        frame_images=np.array([f.image_id for f in frames]),
    )
    print(f"wrote {out}: {len(cols['image_id'])} faces from {len(frames)} frames "
          f"in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return out


# -- replay --------------------------------------------------------------------------------
def replay(scenario: Path, model: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Feed cached faces through the real Resolver and an in-memory DuckDB store."""
    from revisit.backends import open_index
    from revisit.config import Settings
    from revisit.identity.consolidate import consolidate
    from revisit.identity.resolver import Resolver
    from revisit.ingest.manifest import read_manifest
    from revisit.pipeline import batched
    from revisit.records import Face, Frame
    from revisit.store.duckdb_store import DuckDBStore

    data = np.load(scenario / "faces.npz")
    settings = Settings(
        data=Path("/tmp/revisit-accuracy-unused"),
        embedder={"model": model}, identity=overrides.get("identity", {}),  # type: ignore[arg-type]
        pipeline=overrides.get("pipeline", {}),  # type: ignore[arg-type]
    )
    store = DuckDBStore(":memory:")
    index = open_index(settings)
    resolver = Resolver(settings, store, index)
    faces_by_image: dict[str, list[Face]] = defaultdict(list)
    for i in range(len(data["image_id"])):
        img = str(data["image_id"][i])
        faces_by_image[img].append(Face(
            tenant="default", camera_id=str(data["camera_id"][i]),
            location_id=str(data["location_id"][i]), image_id=img,
            ts=datetime.fromisoformat(str(data["ts"][i])),
            face_image_id=f"F-{i:08d}", bbox=tuple(int(x) for x in data["bbox"][i]),  # type: ignore[arg-type]
            landmarks=data["landmarks"][i], det_score=float(data["det_score"][i]),
            quality=float(data["quality"][i]), creatable=bool(data["creatable"][i]),
            embedding=data[model][i],
        ))
    frames = [f for f in read_manifest(scenario / "manifest.jsonl") if isinstance(f, Frame)]
    for f in frames:
        f.data = None
    t0 = time.perf_counter()
    for batch in batched(frames, settings.pipeline.frame_batch):
        for fr in batch.frames:
            batch.faces.extend(faces_by_image.get(fr.image_id, []))
        out = resolver.resolve(batch)
        store.write(out)
    tail = resolver.flush()
    if tail is not None:
        store.write(tail)
    online = time.perf_counter() - t0
    t1 = time.perf_counter()
    merges = 0 if overrides.get("no_consolidate") else len(
        consolidate(settings, store, resolver, "default")
    )
    cons_s = time.perf_counter() - t1
    truth = load_truth(scenario)
    result = _score_store(truth, store)
    result.update(online_s=round(online, 1), consolidate_s=round(cons_s, 1), merges=merges,
                  faces_detected=len(data["image_id"]))
    return result


def _store_rows(truth: dict[str, Any], store: Any):  # type: ignore[no-untyped-def]
    from revisit.report.query import SightingQuery

    label = truth_labeller(truth)
    rows, fids = [], []
    for s in store.sightings(SightingQuery(tenant=truth.get("tenant", "default"))):
        bbox = (s["bbox_x"], s["bbox_y"], s["bbox_w"], s["bbox_h"])
        ts = s["ts"] if isinstance(s["ts"], datetime) else datetime.fromisoformat(str(s["ts"]))
        rows.append((label(s["image_id"], bbox), s["face_id"], s["location_id"], ts))
        fids.append(s["face_image_id"])
    return rows, fids


def _score_store(truth: dict[str, Any], store: Any, with_reference: bool = True) -> dict[str, Any]:
    rows, fids = _store_rows(truth, store)
    result: dict[str, Any] = {"pipeline": score(truth, rows)}
    if with_reference:
        emb = {}
        for chunk in store.load_embeddings(truth.get("tenant", "default")):
            for fid, _, vec in chunk:
                emb[fid] = vec
        mat = np.stack([emb[f] for f in fids])
        result["reference"] = reference(truth, rows, mat, np.round(np.arange(0.20, 0.66, 0.02), 3))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract")
    e.add_argument("scenario", type=Path)
    r = sub.add_parser("replay")
    r.add_argument("scenario", type=Path)
    r.add_argument("--model", choices=MODELS, default="sface")
    r.add_argument("--threshold", type=float, default=None)
    r.add_argument("--frame-batch", type=int, default=None)
    r.add_argument("--no-consolidate", action="store_true")
    r.add_argument("--tag", default="")
    s = sub.add_parser("score")
    s.add_argument("scenario", type=Path)
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--model", choices=MODELS, default="sface")
    s.add_argument("--tag", default="pipeline")
    args = ap.parse_args()
    if args.cmd == "extract":
        extract(args.scenario)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.cmd == "replay":
        ov: dict[str, Any] = {"identity": {}, "pipeline": {}}
        if args.threshold is not None:
            ov["identity"]["match_threshold"] = args.threshold
        if args.frame_batch is not None:
            ov["pipeline"]["frame_batch"] = args.frame_batch
        ov["no_consolidate"] = args.no_consolidate
        result = replay(args.scenario, args.model, ov)
        result["mode"] = "replay"
    else:
        from revisit.store.duckdb_store import DuckDBStore

        store = DuckDBStore(args.data / "revisit.duckdb", read_only=True)
        result = _score_store(load_truth(args.scenario), store)
        result["mode"] = "pipeline"
    result.update(scenario=str(args.scenario), model=args.model)
    name = f"accuracy_{args.scenario.name}_{args.model}{('_' + args.tag) if args.tag else ''}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    short = {k: v for k, v in result.items() if k != "reference"}
    if "reference" in result:
        short["reference_best"] = result["reference"]["best"]
    print(json.dumps(short, indent=1))


if __name__ == "__main__":
    main()
