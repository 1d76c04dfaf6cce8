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

Scoring is :func:`revisit.evaluation.evaluate.evaluate_store`, the code behind
`revisit eval`: BCubed F1 of face -> visitor, unique visitors found vs true, share of true
visitors with exactly right per-store visit counts, and the offline reference
(average-linkage agglomerative clustering of the same stored embeddings at its best
threshold in hindsight).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

# Replays footage dated in 2024, older than a tenant's default retention (365 days)
# by now: stored as it was before snapshots past the retention were refused.
os.environ.setdefault("REVISIT_PRIVACY__RETENTION_AT_DOOR", "false")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODELS = ("sface-reid", "sface", "reid0095", "arcface")


# -- extraction ----------------------------------------------------------------------------
def extract(scenario: Path, batch_frames: int = 16, shard: tuple[int, int] = (0, 1),
            sface_only: bool = False) -> Path:
    """Detect once, embed with every model; cache per-face records in DIR/faces.npz.

    ``sface_only``: SFace as the pipeline runs it by default (``sface``) and in OpenVINO's
    bf16 arithmetic (``sface_bf16``, ``pipeline.precision=bf16``), nothing else: the cheap
    way to compare the two (replay ``--embeddings sface_bf16``).

    Every detection is kept with what the quality gate and the embedders' face check need
    (size, score, landmarks, sharpness, clothes colours, raw embedding norms), so a replay
    re-applies the gate with its own settings. ``shard`` (i, n) processes the i-th of n
    contiguous slices into DIR/faces.i-of-n.npz; ``merge`` joins them (run n shards as
    separate processes to use every core)."""
    from revisit.config import Settings
    from revisit.ingest.manifest import read_manifest
    from revisit.pipeline import batched
    from revisit.records import Frame
    from revisit.vision.quality import sharpness
    from revisit.vision.stages import Vision

    one = {"threads": 1}
    keep_all = {"min_track_height": 8, "min_match_height": 8, "min_face_height": 8,
                "max_landmark_residual": 100.0}
    settings = Settings(privacy={"keep_crops": True}, pipeline=one,  # type: ignore[arg-type]
                        quality=keep_all)  # type: ignore[arg-type]
    vision = Vision(settings.model_copy(update={"embedder": settings.embedder.model_copy(
        update={"model": "sface"})}))
    arc = Vision(Settings(embedder={"model": "arcface"}, pipeline=one))  # type: ignore[arg-type]
    reid = Vision(Settings(embedder={"model": "reid0095"}, pipeline=one))  # type: ignore[arg-type]
    bf16 = Vision(Settings(pipeline={**one, "precision": "bf16"}))  # type: ignore[arg-type]
    cols: dict[str, list[Any]] = defaultdict(list)
    frames = [f for f in read_manifest(scenario / "manifest.jsonl") if isinstance(f, Frame)]
    i_shard, n_shard = shard
    per = -(-len(frames) // n_shard)
    frames = frames[i_shard * per:(i_shard + 1) * per]
    t0 = time.perf_counter()
    done = 0
    for batch in batched(frames, batch_frames):
        order = {f.image_id: i for i, f in enumerate(batch.frames)}
        vision.detect(batch)
        crops = [f.crop for f in batch.faces]
        sface, sface_norm = vision.embedder.predict_with_norms(crops)
        if sface_only:
            other, other_norm = bf16.embedder.predict_with_norms(crops)
            cols["sface_bf16"].extend(other)
            cols["sface_bf16_norm"].extend(other_norm)
        else:
            arcface, arcface_norm = arc.embedder.predict_with_norms(crops)
            reid0095, reid0095_norm = reid.embedder.predict_with_norms(crops)
            # the mirror image of each aligned crop (test-time flip: the other side of a face)
            mirrored = [np.ascontiguousarray(c[:, ::-1]) for c in crops]
            sface_flip, _ = vision.embedder.predict_with_norms(mirrored)
            reid0095_flip, _ = reid.embedder.predict_with_norms(mirrored)
        for i, f in enumerate(batch.faces):
            cols["image_id"].append(f.image_id)
            cols["camera_id"].append(f.camera_id)
            cols["location_id"].append(f.location_id)
            cols["ts"].append(f.ts.isoformat())
            cols["bbox"].append(f.bbox)
            cols["landmarks"].append(f.landmarks)
            cols["det_score"].append(f.det_score)
            cols["sharpness"].append(sharpness(f.crop))
            cols["context"].append(f.context if f.context is not None else np.zeros(36, np.float32))
            cols["sface"].append(sface[i])
            cols["sface_norm"].append(sface_norm[i])
            cols["order"].append(order[f.image_id])
            if sface_only:
                continue
            cols["arcface"].append(arcface[i])
            cols["arcface_norm"].append(arcface_norm[i])
            cols["reid0095"].append(reid0095[i])
            cols["reid0095_norm"].append(reid0095_norm[i])
            cols["sface_flip"].append(sface_flip[i])
            cols["reid0095_flip"].append(reid0095_flip[i])
        done += len(batch.frames)
        if done % 320 < batch_frames:
            print(f"{done}/{len(frames)} frames, {len(cols['image_id'])} faces, "
                  f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    out = scenario / ("faces.npz" if n_shard == 1 else f"faces.{i_shard}-of-{n_shard}.npz")
    vectors = {k: np.array(v, dtype=np.float32) for k, v in cols.items()
               if k.startswith(("sface", "arcface", "reid0095"))}
    np.savez_compressed(
        out,
        image_id=np.array(cols["image_id"]), camera_id=np.array(cols["camera_id"]),
        location_id=np.array(cols["location_id"]), ts=np.array(cols["ts"]),
        bbox=np.array(cols["bbox"], dtype=np.int32).reshape(-1, 4),
        landmarks=np.array(cols["landmarks"], dtype=np.float32).reshape(-1, 5, 2),
        det_score=np.array(cols["det_score"], dtype=np.float32),
        sharpness=np.array(cols["sharpness"], dtype=np.float32),
        context=np.array(cols["context"], dtype=np.float32).reshape(-1, 36),
        frame_images=np.array([f.image_id for f in frames]),
        **vectors,
    )
    print(f"wrote {out}: {len(cols['image_id'])} faces from {len(frames)} frames "
          f"in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return out


def merge_shards(scenario: Path, n: int) -> Path:
    parts = [np.load(scenario / f"faces.{i}-of-{n}.npz") for i in range(n)]
    out = scenario / "faces.npz"
    np.savez_compressed(out, **{k: np.concatenate([p[k] for p in parts]) for k in parts[0].files})
    return out


# -- replay --------------------------------------------------------------------------------
def replay(scenario: Path, model: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Feed cached faces through the real Resolver and an in-memory DuckDB store."""
    from revisit.backends import open_index
    from revisit.config import Settings
    from revisit.identity.consolidate import consolidate
    from revisit.identity.resolver import Resolver
    from revisit.pipeline import batched
    from revisit.records import Face, Frame
    from revisit.store.duckdb_store import DuckDBStore
    from revisit.vision.catalog import model_class
    from revisit.vision.quality import assess, face_check

    with np.load(scenario / "faces.npz") as npz:
        data = {k: npz[k] for k in npz.files}
    if overrides.get("embeddings"):  # another column of the same model (another runtime)
        data[model] = data[overrides["embeddings"]]
        data[f"{model}_norm"] = data[f"{overrides['embeddings']}_norm"]
    if overrides.get("flip"):  # each face and its mirror image, averaged
        for name in ("sface", "reid0095"):
            both = data[name] + data[f"{name}_flip"]
            data[name] = (both / np.linalg.norm(both, axis=1, keepdims=True)).astype(np.float32)
    if "reid0095" in data:  # SFace and the Intel model side by side, as SFaceReidEmbedder
        data["sface-reid"] = (np.hstack([data["sface"], data["reid0095"]])
                              / np.sqrt(2.0)).astype(np.float32)
        data["sface-reid_norm"] = data["sface_norm"]
    settings = Settings(
        data=Path("/tmp/revisit-accuracy-unused"),
        embedder={"model": model}, identity=overrides.get("identity", {}),  # type: ignore[arg-type]
        pipeline=overrides.get("pipeline", {}),  # type: ignore[arg-type]
        quality=overrides.get("quality", {}),  # type: ignore[arg-type]
    )
    store = DuckDBStore(":memory:")
    index = open_index(settings)
    resolver = Resolver(settings, store, index)
    embedder = model_class("embedder", model)
    faces_by_image: dict[str, list[Face]] = defaultdict(list)
    dropped = 0
    for i in range(len(data["image_id"])):
        img = str(data["image_id"][i])
        box = tuple(int(x) for x in data["bbox"][i])
        verdict = assess(box[3], float(data["det_score"][i]), None, settings.quality,
                         data["landmarks"][i], sharp=float(data["sharpness"][i]))
        norm = float(data[f"{model}_norm"][i])
        check = face_check(norm, embedder.faceness_floor, embedder.faceness_match)  # type: ignore[attr-defined]
        if not verdict.keep or check == "drop":
            dropped += 1
            continue
        ctx = data["context"][i]
        faces_by_image[img].append(Face(
            tenant="default", camera_id=str(data["camera_id"][i]),
            location_id=str(data["location_id"][i]), image_id=img,
            ts=datetime.fromisoformat(str(data["ts"][i])),
            face_image_id=f"F-{i:08d}", bbox=box,  # type: ignore[arg-type]
            landmarks=data["landmarks"][i], det_score=float(data["det_score"][i]),
            quality=verdict.quality, creatable=verdict.creatable and check == "ok",
            matchable=verdict.matchable and check == "ok",
            pose=(verdict.pose.yaw, verdict.pose.pitch, verdict.pose.roll), faceness=norm,
            context=ctx if ctx.sum() > 0 else None, embedding=data[model][i],
        ))
    frames = []
    for line in (scenario / "manifest.jsonl").read_text().splitlines():
        m = json.loads(line)
        frames.append(Frame(m.get("tenant", "default"), m["camera_id"], m["location_id"],
                            m["image_id"], datetime.fromisoformat(m["ts"])))
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
    sweep = []
    for thr, same in overrides.get("merge_sweep", []):
        plan = consolidate(settings, store, None, "default", threshold=thr, same_store=same,
                           dry_run=True)
        done = [store.merge_visitors("default", p.keep, p.absorb) for p in plan]  # type: ignore[union-attr]
        fig = figures(_score_store(scenario, store, with_reference=False)["eval"])["pipeline"]
        sweep.append({"merge_threshold": thr, "same_store": same, "merges": len(done), **fig})
        print(json.dumps(sweep[-1]), file=sys.stderr)
        for rec in reversed(done):
            store.split_visitor("default", rec.absorb)
    t1 = time.perf_counter()
    merges = 0 if overrides.get("no_consolidate") else len(
        consolidate(settings, store, resolver, "default")
    )
    cons_s = time.perf_counter() - t1
    result = _score_store(scenario, store, with_reference=overrides.get("reference", True))
    result.update(online_s=round(online, 1), consolidate_s=round(cons_s, 1), merges=merges,
                  merge_sweep=sweep,
                  faces_detected=len(data["image_id"]), faces_dropped_by_gate=dropped)
    return result


def likeness(scenario: Path, model: str = "sface") -> dict[str, Any]:
    """How alike a face is to its own visit: each detected face (matched to the truth)
    against the leave-one-out centroid of the faces pasted from the same photo (one visit),
    and of all faces of the same person. Compared with the same figure on real clips
    (face_quality.json, "same_person_to_own_centroid") it says how hard a scene is."""
    from revisit.evaluation.matching import match_boxes

    with np.load(scenario / "faces.npz") as npz:
        data = {k: npz[k] for k in ("image_id", "bbox", "sface", "reid0095", "arcface")}
    data["sface-reid"] = np.hstack([data["sface"], data["reid0095"]]) / np.sqrt(2.0)
    truth = json.loads((scenario / "truth.json").read_text())
    by_image: dict[str, list[int]] = defaultdict(list)
    for i, img in enumerate(data["image_id"]):
        by_image[str(img)].append(i)
    groups: dict[str, dict[str, list[int]]] = {"visit": defaultdict(list), "person": defaultdict(list)}
    for frame in truth["frames"]:
        idx = by_image.get(frame["image_id"], [])
        boxes = [tuple(float(v) for v in data["bbox"][i]) for i in idx]
        for r, c, _ in match_boxes([tuple(f["bbox"]) for f in frame["faces"]], boxes):
            groups["visit"][frame["faces"][r]["photo"]].append(idx[c])
            groups["person"][frame["faces"][r]["identity"]].append(idx[c])
    emb = data[model].astype(np.float64)
    out: dict[str, Any] = {}
    # pairwise: every pair of one person's faces against 2M random pairs of two people
    person = np.full(len(emb), -1)
    for k, rows in enumerate(groups["person"].values()):
        person[rows] = k
    seen = np.nonzero(person >= 0)[0]
    rng = np.random.default_rng(0)
    a, b = rng.choice(seen, 2_000_000), rng.choice(seen, 2_000_000)
    other = person[a] != person[b]
    impostor = np.einsum("ij,ij->i", emb[a[other]], emb[b[other]])
    bar = float(np.quantile(impostor, 1 - 1e-3))
    genuine = np.concatenate([(emb[r] @ emb[r].T)[np.triu_indices(len(r), 1)]
                              for r in groups["person"].values() if len(r) > 1])
    out["pairs_tar_at_far_1e-3"] = {"threshold": round(bar, 3),
                                    "tar": round(float(np.mean(genuine >= bar)), 3)}
    for name, members in groups.items():
        sims = []
        for rows in members.values():
            if len(rows) < 2:
                continue
            total = emb[rows].sum(axis=0)
            for i in rows:
                loo = total - emb[i]
                sims.append(float(emb[i] @ loo) / max(float(np.linalg.norm(loo)), 1e-12))
        a = np.array(sims)
        out[f"same_{name}"] = {"n": len(a), "p10": round(float(np.percentile(a, 10)), 3),
                               "p50": round(float(np.median(a)), 3)}
    return out


def _score_store(scenario: Path, store: Any, with_reference: bool = True) -> dict[str, Any]:
    """Score with the same code as `revisit eval` (revisit.evaluation)."""
    from revisit.evaluation.evaluate import evaluate_store
    from revisit.evaluation.truth import load_truth as eval_truth

    full = evaluate_store(store, eval_truth(scenario / "truth.json"), reference=with_reference)
    return {"eval": full, "figures": figures(full)}


def figures(full: dict[str, Any]) -> dict[str, Any]:
    """The acceptance figures of one `revisit eval` result, pipeline and reference."""
    out: dict[str, Any] = {"detection_recall": round(full["detection"]["recall"], 4)}
    for side in ("pipeline", "reference"):
        b = full.get(side)
        if not b or "bcubed" not in b:
            continue
        out[side] = {
            "bcubed_f1": round(b["bcubed"]["f1"], 4),
            "bcubed_precision": round(b["bcubed"]["precision"], 4),
            "bcubed_recall": round(b["bcubed"]["recall"], 4),
            "visitors_true": b["unique_visitors"]["true"],
            "visitors_found": b["unique_visitors"]["found"],
            "count_error_pct": round(b["unique_visitors"]["error_pct"], 2),
            "visits_exact_share": round(b["visits"]["exact_share"], 4),
        }
        if side == "reference":
            out[side]["similarity_threshold"] = b["similarity"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract")
    e.add_argument("scenario", type=Path)
    e.add_argument("--shard", default="0/1", help="i/n: the i-th of n slices (then `merge`)")
    e.add_argument("--sface-only", action="store_true",
                   help="SFace as by default and in bf16 (sface_bf16), nothing else")
    mg = sub.add_parser("merge")
    mg.add_argument("scenario", type=Path)
    mg.add_argument("n", type=int)
    r = sub.add_parser("replay")
    r.add_argument("scenario", type=Path)
    r.add_argument("--model", choices=MODELS, default="sface")
    r.add_argument("--threshold", type=float, default=None)
    r.add_argument("--frame-batch", type=int, default=None)
    r.add_argument("--no-consolidate", action="store_true")
    r.add_argument("--tag", default="")
    r.add_argument("--flip", action="store_true",
                   help="embeddings of each face and its mirror image, averaged")
    r.add_argument("--no-reference", action="store_true")
    r.add_argument("--embeddings", default="",
                   help="the cache column to read the model's embeddings from, e.g. sface_bf16")
    r.add_argument("--merge-threshold", type=float, default=None)
    r.add_argument("--track-offset", type=float, default=None)
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="settings override, e.g. quality.min_face_height=32")
    r.add_argument("--merge-sweep", default="",
                   help="comma-separated merge bars to try: T (everywhere) or T/S (S for "
                   "visitors sharing a store), e.g. 0.42,0.42/0.36")
    lk = sub.add_parser("likeness", help="how alike faces are to their own visit and person")
    lk.add_argument("scenario", type=Path)
    lk.add_argument("--model", choices=MODELS, default="sface")
    s = sub.add_parser("score")
    s.add_argument("scenario", type=Path)
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--model", choices=MODELS, default="sface")
    s.add_argument("--tag", default="pipeline")
    args = ap.parse_args()
    if args.cmd == "extract":
        i, n = (int(x) for x in args.shard.split("/"))
        extract(args.scenario, shard=(i, n), sface_only=args.sface_only)
        return
    if args.cmd == "merge":
        merge_shards(args.scenario, args.n)
        return
    if args.cmd == "likeness":
        print(json.dumps(likeness(args.scenario, args.model)))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.cmd == "replay":
        from revisit.config import dotted_overrides

        ov: dict[str, Any] = {"identity": {}, "pipeline": {}, "quality": {}}
        for key, value in dotted_overrides(args.set).items():
            ov.setdefault(key, {}).update(value)
        if args.threshold is not None:
            ov["identity"]["match_threshold"] = args.threshold
        if args.frame_batch is not None:
            ov["pipeline"]["frame_batch"] = args.frame_batch
        ov["no_consolidate"] = args.no_consolidate
        ov["flip"] = args.flip
        ov["embeddings"] = args.embeddings
        ov["reference"] = not args.no_reference
        if args.merge_threshold is not None:
            ov["identity"]["merge_threshold"] = args.merge_threshold
        if args.track_offset is not None:
            ov["identity"]["track_threshold_offset"] = args.track_offset
        ov["merge_sweep"] = [
            (float(x.partition("/")[0]), float(x.partition("/")[2] or x.partition("/")[0]))
            for x in args.merge_sweep.split(",") if x
        ]
        result = replay(args.scenario, args.model, ov)
        result["mode"] = "replay"
    else:
        from revisit.store.duckdb_store import DuckDBStore

        store = DuckDBStore(args.data / "revisit.duckdb", read_only=True)
        result = _score_store(args.scenario, store)
        result["mode"] = "pipeline"
    result.update(scenario=str(args.scenario), model=args.model)
    name = f"accuracy_{args.scenario.name}_{args.model}{('_' + args.tag) if args.tag else ''}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "eval"}, indent=1))


if __name__ == "__main__":
    main()
