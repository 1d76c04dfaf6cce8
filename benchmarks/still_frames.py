"""How many snapshots skip the face detector as unchanged empty frames, and whether any
skipped one held a face (issue "Cost per frame", lever "skip unchanged frames").

    .venv/bin/python benchmarks/still_frames.py [--every 1]

For each source (the real clips in ``../shared/data/videos`` and ``real-clips`` sampled
every ``--every`` seconds; the Mall frames in order; a simulated scenario's frames per
camera in time order), frames go through :class:`revisit.vision.stillness.StillCameras`
as in the detect stage; the detector then also runs on every skipped frame, for this
measurement only: a skipped frame where it finds a face is a face the lever lost.
Writes ``benchmarks/results/still_frames.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# Replays footage dated in 2024, older than a tenant's default retention (365 days)
# by now: stored as it was before snapshots past the retention were refused.
os.environ.setdefault("REVISIT_PRIVACY__RETENTION_AT_DOOR", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
RESULTS = Path(__file__).resolve().parent / "results"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _clip(path: Path, every: float) -> Iterator[tuple[str, datetime, np.ndarray]]:
    from revisit.ingest.video import sample_video

    for f in sample_video(str(path), camera_id="cam", location_id="L",
                          every=timedelta(seconds=every), start=T0):
        yield "cam", f.ts, f.pixels


def _mall(shared: Path) -> Iterator[tuple[str, datetime, np.ndarray]]:
    frames = sorted((shared / "mall" / "frames").glob("*.jpg"))
    for i, p in enumerate(frames):
        yield "mall", T0 + timedelta(seconds=2 * i), cv2.imread(str(p))


def _scenario(shared: Path) -> Iterator[tuple[str, datetime, np.ndarray]]:
    from revisit.simulate.scenario import ScenarioSpec, build_scenario

    with tempfile.TemporaryDirectory() as tmp:
        spec = ScenarioSpec(stores=2, cameras_per_store=2, days=2, visitors=30, seed=4, workers=2)
        out = build_scenario(shared / "lfw-dev", Path(tmp) / "s", spec)
        lines = [json.loads(x) for x in out.manifest.read_text().splitlines()]
        lines.sort(key=lambda x: (x["camera_id"], x["ts"]))
        for x in lines:
            yield x["camera_id"], datetime.fromisoformat(x["ts"]), cv2.imread(
                str(out.manifest.parent / x["image"]))


def measure(name: str, frames: Iterator[tuple[str, datetime, np.ndarray]]) -> dict[str, Any]:
    from revisit.config import Settings
    from revisit.vision.stages import Vision
    from revisit.vision.stillness import StillCameras

    detector = Vision(Settings(pipeline={"threads": 1})).detector
    still = StillCameras()
    n = lost = lost_faces = 0
    for cam, ts, img in frames:
        if img is None:
            continue
        n += 1
        skip, thumb = still.unchanged_and_empty("t", cam, ts, img)
        found = detector.predict([img])[0]
        if skip:
            if found:
                lost += 1
                lost_faces += len(found)
            continue
        still.saw("t", cam, ts, thumb, empty=not found)
    row = {"source": name, "frames": n, "skipped": still.skipped,
           "skipped_share": round(still.skipped / n, 3) if n else 0.0,
           "skipped_frames_with_a_face": lost, "faces_in_skipped_frames": lost_faces}
    print(f"{name:<48} {n:>5} frames, skipped {still.skipped:>5} "
          f"({row['skipped_share']:.1%}), skipped with a face {lost}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--every", type=float, default=1.0, help="clip sampling, seconds")
    args = ap.parse_args()
    from revisit.simulate.scenario import shared_data_dir

    shared = shared_data_dir()
    rows = []
    for folder in ("videos", "real-clips"):
        for p in sorted((shared / folder).iterdir()):
            if p.suffix.lower() in (".mp4", ".avi", ".gif"):
                rows.append(measure(f"{folder}/{p.name} every {args.every:g}s",
                                    _clip(p, args.every)))
    rows.append(measure("mall frames (500, in order)", _mall(shared)))
    rows.append(measure("simulated scenario (4 cameras, 2 days)", _scenario(shared)))
    total = sum(r["frames"] for r in rows)
    skipped = sum(r["skipped"] for r in rows)
    out = {"every_s": args.every, "sources": rows, "frames": total, "skipped": skipped,
           "skipped_with_a_face": sum(r["skipped_frames_with_a_face"] for r in rows)}
    print(f"all: {skipped} of {total} frames skipped; "
          f"{out['skipped_with_a_face']} of them held a face")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "still_frames.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
