"""Would detecting at a lower resolution, with landmarks refined at full resolution, save
detector time without moving the embeddings?

"Detect at the resolution the faces need" (issue "Cost per frame"): a camera whose faces
are all large could run YuNet on a downscaled frame. Detecting at half size alone was
measured before (docs/performance.md): the coarser landmarks move the aligned crops and
the embeddings with them, and identity F1 fell. This measures the remedy, YuNet again on
a full-resolution crop around each face found at low resolution, on the frames of
`benchmarks/pipeline.py` (or ``--hard``):

    .venv/bin/python benchmarks/detect_scale.py [--hard]

For each scale: detector milliseconds per frame (one thread), refinement milliseconds per
frame, faces of the full-resolution detection lost (no box at IoU >= 0.5), and the
cosine between each face's embedding from the candidate's landmarks and from the
full-resolution ones (1.0 = the same crop). As a control, ``crop`` refines the
full-resolution detections themselves: what YuNet's landmarks move by when it sees a crop
instead of the whole frame. Writes benchmarks/results/detect_scale[_hard].json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from revisit.config import DetectorSettings
from revisit.evaluation.matching import iou
from revisit.vision.align import align_crop
from revisit.vision.detect import Detection, YuNetDetector
from revisit.vision.embed import SFaceEmbedder
from scenes import build_scenes

RESULTS = Path(__file__).parent / "results"
PAD = 0.6  # the refinement crop: the box widened by this share of its size on each side


def refine(detector: YuNetDetector, frame: np.ndarray, found: list[Detection]) -> list[Detection]:
    """Each detection re-detected on a full-resolution crop around it (kept as it is where
    the crop gives nothing)."""
    height, width = frame.shape[:2]
    out = []
    for d in found:
        x, y, w, h = d.bbox
        side = max(w, h) * (1 + 2 * PAD)
        x0, y0 = int(max(0, x + w / 2 - side / 2)), int(max(0, y + h / 2 - side / 2))
        x1, y1 = int(min(width, x + w / 2 + side / 2)), int(min(height, y + h / 2 + side / 2))
        again = detector.detect(frame[y0:y1, x0:x1])
        if not again:
            out.append(d)
            continue
        best = max(again, key=lambda a: iou((a.bbox[0] + x0, a.bbox[1] + y0, *a.bbox[2:]), d.bbox))
        out.append(Detection((best.bbox[0] + x0, best.bbox[1] + y0, *best.bbox[2:]),
                             best.landmarks + np.float32([x0, y0]), best.score))
    return out


def compare(frames: list[np.ndarray], ref: list[list[Detection]], ref_emb: list[np.ndarray],
            dets: list[list[Detection]], embed: Callable[[list[np.ndarray]], np.ndarray]
            ) -> dict[str, float]:
    """Faces of ``ref`` lost by ``dets`` and the embedding cosine of those kept."""
    cos, lost = [], 0
    for frame, found, r, r_emb in zip(frames, dets, ref, ref_emb, strict=True):
        for i, rd in enumerate(r):
            near = [d for d in found if iou(d.bbox, rd.bbox) >= 0.5]
            if not near:
                lost += 1
                continue
            d = max(near, key=lambda d: iou(d.bbox, rd.bbox))
            cos.append(float(embed([align_crop(frame, d.landmarks)])[0] @ r_emb[i]))
    c = np.asarray(cos)
    return {"faces_lost": lost, "cosine_median": round(float(np.median(c)), 4),
            "cosine_p5": round(float(np.percentile(c, 5)), 4),
            "cosine_min": round(float(c.min()), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hard", action="store_true", help="the harder scene set of pipeline.py")
    ap.add_argument("--frames", type=int, default=240)
    args = ap.parse_args()
    scenes = (build_scenes(args.frames, min_face=32, max_face=80, faces=(2, 6)) if args.hard
              else build_scenes(args.frames))
    frames = [cv2.imdecode(np.frombuffer(s.data, np.uint8), cv2.IMREAD_COLOR) for s in scenes]
    longest = max(frames[0].shape[:2])
    full = YuNetDetector(threads=1)
    embedder = SFaceEmbedder(threads=1)
    full.detect(frames[0])

    def timed(fn: Callable[[np.ndarray], list[Detection]]) -> tuple[list[list[Detection]], float]:
        t = time.perf_counter()
        out = [fn(f) for f in frames]
        return out, (time.perf_counter() - t) / len(frames) * 1000

    ref, ms_full = timed(full.detect)
    ref_emb = [embedder.predict([align_crop(f, d.landmarks) for d in r]) if r else np.empty(0)
               for f, r in zip(frames, ref, strict=True)]
    rows = {"full": {"detect_ms": round(ms_full, 2), "faces": sum(map(len, ref))}}
    crop_ref = [refine(full, f, r) for f, r in zip(frames, ref, strict=True)]
    rows["crop"] = compare(frames, ref, ref_emb, crop_ref, embedder.predict)
    for scale in (0.5, 0.75):
        low = YuNetDetector(DetectorSettings(max_side=round(longest * scale)), threads=1)
        low.detect(frames[0])
        found, ms_low = timed(low.detect)
        t = time.perf_counter()
        fine = [refine(full, f, d) for f, d in zip(frames, found, strict=True)]
        ms_refine = (time.perf_counter() - t) / len(frames) * 1000
        rows[f"scale {scale}"] = {"detect_ms": round(ms_low, 2),
                                  **compare(frames, ref, ref_emb, found, embedder.predict)}
        rows[f"scale {scale} refined"] = {"detect_ms": round(ms_low + ms_refine, 2),
                                          "refine_ms": round(ms_refine, 2),
                                          **compare(frames, ref, ref_emb, fine, embedder.predict)}
    for name, row in rows.items():
        print(f"{name:18s} " + ", ".join(f"{k} {v}" for k, v in row.items()))
    RESULTS.mkdir(exist_ok=True)
    out = {"frames": len(frames), "frame_size": list(frames[0].shape[:2]),
           "scene_set": "hard" if args.hard else "default", "rows": rows}
    (RESULTS / f"detect_scale{'_hard' if args.hard else ''}.json").write_text(
        json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
