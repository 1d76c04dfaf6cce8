"""People-counting candidates for occupancy, on the Mall camera (../shared/data/mall).

Every candidate runs the person detector once over all 500 frames at a low threshold, one
thread, timed; then its count is the number of people whose counting point lies in the
ROI mask. Everything that is tuned (threshold, calibration line) is chosen on frames 0-99
only; MAE is reported on frames 100-499. "raw" picks the threshold that minimises the
0-99 MAE of the plain count; "cal" picks the threshold (and fits count' = a*n + b) that
minimises the 0-99 MAE of the calibrated count. The constant-mean baseline predicts the
mean true count of frames 0-99 for every frame.

    .venv/bin/python benchmarks/occupancy.py               # ~5 min on one core
    .venv/bin/python benchmarks/occupancy.py --only r13 r13-tiles2x2   # prints only

Writes benchmarks/results/occupancy.json (full runs only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from revisit.simulate.scenario import shared_data_dir
from revisit.vision.people import Calibration, PersonDetector, in_mask, tile_grid

# Replays footage dated in 2024, older than a tenant's default retention (365 days)
# by now: stored as it was before snapshots past the retention were refused.
os.environ.setdefault("REVISIT_PRIVACY__RETENTION_AT_DOOR", "false")

RESULTS = Path(__file__).parent / "results" / "occupancy.json"
TUNE, TEST = slice(0, 100), slice(100, 500)
THRESHOLDS = np.round(np.arange(0.02, 0.80, 0.02), 2)
FLOOR = float(THRESHOLDS[0])


def p200_weights() -> Path:
    return shared_data_dir().parent / "models" / "omz" / "person-detection-0200" / "FP16" / \
        "person-detection-0200.xml"


def scaled(width: int, height: int) -> type[PersonDetector]:
    """The retail model run on the whole frame enlarged to a bigger input."""
    return type(f"R13x{width}", (PersonDetector,), {"input_size": (width, height)})


class P200(PersonDetector):
    """person-detection-0200 (only in ../shared; not shipped)."""

    name = "person-detection-0200"
    input_size = (256, 256)

    @property
    def weights(self) -> Path:  # type: ignore[override]
        return p200_weights()


class FullPlusTop(PersonDetector):
    """The whole frame plus two enlarged tiles over its far (upper) half."""

    def _regions(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        return [(0, 0, width, height), *tile_grid(width, height // 2, (2, 1), 0.5)]


@dataclass
class Candidate:
    name: str
    make: Any
    rules: tuple[str, ...] = ("head",)
    members: tuple[str, ...] = ()  # an ensemble: mean of these candidates' calibrated counts
    notes: str = ""
    result: dict[str, Any] = field(default_factory=dict)


CANDIDATES = [
    Candidate("r13", lambda: PersonDetector(threshold=FLOOR, tiles=(1, 1)),
              rules=("foot", "head", "centre"), notes="whole frame at 544x320"),
    Candidate("r13-flip", lambda: PersonDetector(threshold=FLOOR, tiles=(1, 1), flip=True),
              notes="+ horizontal flip, boxes merged"),
    Candidate("r13-x1.5", lambda: scaled(816, 480)(threshold=FLOOR, tiles=(1, 1)),
              notes="whole frame at 816x480"),
    Candidate("r13-x2", lambda: scaled(1088, 640)(threshold=FLOOR, tiles=(1, 1)),
              notes="whole frame at 1088x640"),
    Candidate("r13-tiles2x1", lambda: PersonDetector(threshold=FLOOR, tiles=(2, 1)),
              notes="2 side-by-side tiles"),
    Candidate("r13-tiles2x2", lambda: PersonDetector(threshold=FLOOR),
              rules=("foot", "head", "centre"), notes="2x2 overlapping tiles (shipped)"),
    Candidate("r13-tiles3x2", lambda: PersonDetector(threshold=FLOOR, tiles=(3, 2)),
              notes="3x2 overlapping tiles"),
    Candidate("r13-full+top2", lambda: FullPlusTop(threshold=FLOOR, tiles=(1, 1)),
              notes="whole frame + 2 tiles over the upper half"),
    Candidate("r13-tiles2x2-flip", lambda: PersonDetector(threshold=FLOOR, flip=True),
              notes="2x2 tiles + flip"),
    Candidate("r13-tiles2x2-x1.5", lambda: scaled(816, 480)(threshold=FLOOR),
              notes="2x2 tiles at 816x480"),
    Candidate("p200", lambda: P200(threshold=FLOOR, tiles=(1, 1)), rules=("foot", "head"),
              notes="person-detection-0200, whole frame at 256x256"),
    Candidate("p200-x2", lambda: scaled_p200(512, 512)(threshold=FLOOR, tiles=(1, 1)),
              notes="person-detection-0200 at 512x512"),
    Candidate("p200-tiles2x2", lambda: P200(threshold=FLOOR), notes="0200, 2x2 tiles"),
    Candidate("p200-tiles3x3", lambda: P200(threshold=FLOOR, tiles=(3, 3)), notes="0200, 3x3 tiles"),
    Candidate("p200-tiles2x2-flip", lambda: P200(threshold=FLOOR, flip=True),
              notes="0200, 2x2 tiles + flip"),
    Candidate("r13-tiles2x2+p200-tiles2x2-flip", None,
              members=("r13-tiles2x2", "p200-tiles2x2-flip"),
              notes="mean of the two calibrated counts"),
]


def scaled_p200(width: int, height: int) -> type[PersonDetector]:
    return type(f"P200x{width}", (P200,), {"input_size": (width, height)})


def point(bbox: tuple[int, int, int, int], rule: str, head_offset: float) -> tuple[float, float]:
    x, y, w, h = bbox
    return x + w / 2, {"head": y + head_offset * h, "foot": y + h - 1, "centre": y + h / 2}[rule]


def count_matrix(people: list[list[Any]], rule: str, mask: np.ndarray) -> np.ndarray:
    """(frames, thresholds) counts of people in the ROI."""
    out = np.zeros((len(people), len(THRESHOLDS)))
    for i, frame in enumerate(people):
        pts = [point(p.bbox, rule, PersonDetector.head_offset) for p in frame]
        scores = np.array([p.score for p, inside in zip(frame, in_mask(pts, mask), strict=True)
                           if inside])
        out[i] = (scores[:, None] >= THRESHOLDS[None]).sum(0) if scores.size else 0
    return out


def choose(counts: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Raw and calibrated figures, every choice made on frames 0-99."""
    tune_mae = np.abs(counts[TUNE] - truth[TUNE, None]).mean(0)
    j = int(tune_mae.argmin())
    raw = {"threshold": float(THRESHOLDS[j]), "tune_mae": float(tune_mae[j]),
           "mae": float(np.abs(counts[TEST, j] - truth[TEST]).mean()),
           "bias": float((counts[TEST, j] - truth[TEST]).mean())}
    best: dict[str, Any] | None = None
    for j in range(len(THRESHOLDS)):
        if np.ptp(counts[TUNE, j]) == 0:
            continue
        cal = Calibration.fit(counts[TUNE, j], truth[TUNE])
        pred = np.array([cal.apply(n) for n in counts[:, j]])
        tune = float(np.abs(pred[TUNE] - truth[TUNE]).mean())
        if best is None or tune < best["tune_mae"]:
            best = {"threshold": float(THRESHOLDS[j]), "scale": cal.scale, "offset": cal.offset,
                    "tune_mae": tune, "mae": float(np.abs(pred[TEST] - truth[TEST]).mean()),
                    "bias": float((pred[TEST] - truth[TEST]).mean()), "pred": pred}
    assert best is not None
    return {"raw": raw, "cal": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    args = parser.parse_args()
    data = shared_data_dir() / "mall"
    if not (data / "ground_truth.jsonl").is_file():
        raise SystemExit(f"Mall data not found at {data} (expected ../shared/data/mall with "
                         "frames/, ground_truth.jsonl, roi_mask.png; set REVISIT_SHARED_DATA)")
    rows = [json.loads(line) for line in (data / "ground_truth.jsonl").read_text().splitlines()]
    truth = np.array([r["count"] for r in rows], dtype=np.float64)
    frames = [cv2.imread(str(data / "frames" / r["frame"])) for r in rows]
    mask = cv2.imread(str(data / "roi_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
    baseline = float(np.abs(truth[TEST] - truth[TUNE].mean()).mean())
    print(f"{'candidate':34s} {'rule':6s} {'ms/frame':>8s}  {'raw th':>6s} {'raw MAE':>7s}  "
          f"{'cal th':>6s} {'cal MAE':>7s} {'a':>5s} {'b':>5s}")
    print(f"{'constant mean of frames 0-99':34s} {'':6s} {0:8.1f}  {'':6s} {baseline:7.2f}")
    done: dict[str, Candidate] = {}
    wanted = set(args.only or [c.name for c in CANDIDATES])
    for cand in CANDIDATES:
        if cand.name not in wanted:
            continue
        if cand.members:
            if not all(m in done for m in cand.members):
                continue
            ms = sum(done[m].result["ms_per_frame"] for m in cand.members)
            pred = np.mean([done[m].result["_pred"] for m in cand.members], axis=0)
            mae = float(np.abs(pred[TEST] - truth[TEST]).mean())
            cand.result = {"ms_per_frame": ms, "rules": {"head": {"cal": {
                "mae": mae, "tune_mae": float(np.abs(pred[TUNE] - truth[TUNE]).mean())}}}}
            print(f"{cand.name:34s} {'head':6s} {ms:8.1f}  {'':6s} {'':7s}  {'':6s} {mae:7.2f}")
            done[cand.name] = cand
            continue
        detector = cand.make()
        detector.threads = 1
        detector.load()
        start = time.perf_counter()
        people = detector.predict(frames)
        ms = (time.perf_counter() - start) / len(frames) * 1000
        cand.result = {"ms_per_frame": ms, "notes": cand.notes, "rules": {}}
        for rule in cand.rules:
            fig = choose(count_matrix(people, rule, mask), truth)
            if rule == "head":
                cand.result["_pred"] = fig["cal"]["pred"]
            fig["cal"].pop("pred")
            cand.result["rules"][rule] = fig
            raw, cal = fig["raw"], fig["cal"]
            print(f"{cand.name:34s} {rule:6s} {ms:8.1f}  {raw['threshold']:6.2f} {raw['mae']:7.2f}  "
                  f"{cal['threshold']:6.2f} {cal['mae']:7.2f} {cal['scale']:5.2f} "
                  f"{cal['offset']:5.2f}", flush=True)
        done[cand.name] = cand
    out = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpu": platform.processor(),
                    "threads": 1},
        "data": "Mall, 500 frames; tuned on 0-99, MAE on 100-499; count = points in roi_mask",
        "baseline_constant_mean": {"mae": baseline, "mean": float(truth[TUNE].mean())},
        "shipped": {"candidate": "r13-tiles2x2", "rule": PersonDetector.point_rule,
                    "threshold": PersonDetector.default_threshold,
                    "calibration": {"scale": Calibration().scale, "offset": Calibration().offset}},
        "candidates": {name: {k: v for k, v in c.result.items() if not k.startswith("_")}
                       for name, c in done.items()},
    }
    if args.only:
        print(f"--only: a partial run, {RESULTS} left as it was")
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
