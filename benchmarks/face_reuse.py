"""Could a face's embedding be reused from the camera's previous snapshot?

"Embed fewer faces" (issue "Cost per frame") asks whether faces that barely change from
one snapshot to the next need embedding again. This measures it on the real clips:

    .venv/bin/python benchmarks/face_reuse.py

Every clip in ../shared/data/real-clips and ../shared/data/videos is sampled as
``revisit ingest-video --every 1s`` and ``0.5s`` would, each frame goes through the default
detector, quality gate and embedder, and every face is paired with the face at the same
place (largest box overlap, IoU >= 0.5) in the camera's previous sampled frame. For each
pair: how much the aligned crops differ (mean absolute difference of 16x16 grey
thumbnails, in grey levels) and how close their embeddings are (cosine). Reuse is only
safe where a small crop difference means an embedding nearly unchanged; the figures say
how many faces that would spare.

Writes benchmarks/results/face_reuse.json.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import cv2
import numpy as np

from revisit.config import Settings
from revisit.evaluation.matching import iou
from revisit.ingest.video import sample_video
from revisit.records import Batch
from revisit.simulate.scenario import shared_data_dir
from revisit.vision.stages import Vision

# Replays footage dated in 2024, older than a tenant's default retention (365 days)
# by now: stored as it was before snapshots past the retention were refused.
os.environ.setdefault("REVISIT_PRIVACY__RETENTION_AT_DOOR", "false")

RESULTS = Path(__file__).parent / "results"
CLIPS = (".mp4", ".gif", ".avi")


def _thumb(crop: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)


def main() -> None:
    data = shared_data_dir()
    clips = sorted(p for d in ("real-clips", "videos") for p in (data / d).iterdir()
                   if p.suffix in CLIPS)
    vision = Vision(Settings(privacy={"keep_crops": True}))  # type: ignore[arg-type]
    pairs: list[dict[str, float | str]] = []
    faces = 0
    for clip in clips:
        for every in (1.0, 0.5):
            prev: list[tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]] = []
            for frame in sample_video(str(clip), camera_id="cam", location_id="clip",
                                      every=timedelta(seconds=every)):
                batch = vision.process(Batch(batch_id="reuse", frames=[frame]))
                cur = [(f.bbox, _thumb(f.crop), f.embedding) for f in batch.faces
                       if f.crop is not None and f.embedding is not None]
                faces += len(cur)
                for box, thumb, emb in cur:
                    best = max(prev, key=lambda p, box=box: iou(p[0], box), default=None)
                    overlap = iou(best[0], box) if best is not None else 0.0
                    if best is None or overlap < 0.5:
                        continue
                    cos = float(emb @ best[2] / (np.linalg.norm(emb) * np.linalg.norm(best[2])))
                    pairs.append({"clip": clip.name, "every_s": every,
                                  "iou": round(overlap, 3),
                                  "thumb_mad": round(float(np.abs(thumb - best[1]).mean()), 2),
                                  "cosine": round(cos, 4), "height": box[3]})
                prev = cur
    cos = np.array([p["cosine"] for p in pairs])
    mad = np.array([p["thumb_mad"] for p in pairs])
    by_mad = {}
    for limit in (1.0, 1.5, 2.0, 3.0):
        m = mad < limit
        by_mad[str(limit)] = {"pairs": int(m.sum()), "share_of_faces": round(m.sum() / faces, 4),
                              "min_cosine": float(cos[m].min()) if m.any() else None}
    out = {"clips": len(clips), "faces": faces, "pairs_same_place": len(pairs),
           "cosine_quantiles": dict(zip(("5", "50", "95"),
                                        np.quantile(cos, [0.05, 0.5, 0.95]).round(4).tolist(),
                                        strict=True)) if pairs else {},
           "below_thumb_mad": by_mad, "pairs": pairs}
    for limit, row in by_mad.items():
        print(f"crops differing by < {limit} grey levels: {row['pairs']} of {faces} faces "
              f"({100 * row['share_of_faces']:.1f} %), lowest embedding cosine {row['min_cosine']}")
    print(f"{len(pairs)} faces at the place of one in the previous snapshot; their embedding "
          f"cosine to it: {out['cosine_quantiles']} (5th / 50th / 95th percentile)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "face_reuse.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
