"""Count people on real clips against by-eye labels (tests/evaluation/footage/*.json).

Each labelled clip is ingested as ``revisit ingest-video CLIP --every S`` would (default
settings unless ``--set`` changes them), consolidated, and scored by
``revisit.evaluation.footage``: people by eye, visitors found, splits, merges, false
visitors, missed people, face recall by face height.

    .venv/bin/python benchmarks/real_footage.py                     # every clip, 1 s and 0.5 s
    .venv/bin/python benchmarks/real_footage.py --clips chokepoint --every 1
    .venv/bin/python benchmarks/real_footage.py --set quality.min_face_height=30

Writes benchmarks/results/real_footage.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

from revisit.config import dotted_overrides, load_settings
from revisit.evaluation.footage import load_labels, run_clip
from revisit.simulate.scenario import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
LABELS = REPO / "tests" / "evaluation" / "footage"


def _one(job: tuple[str, float, dict[str, Any]]) -> dict[str, Any]:
    path, every, overrides = job
    import cv2

    cv2.setNumThreads(1)
    labels = load_labels(path)
    with tempfile.TemporaryDirectory(prefix="rv-footage-") as tmp:
        settings = load_settings(None, data=Path(tmp), **overrides)
        t0 = time.perf_counter()
        score = run_clip(labels, every, settings, shared_data_dir())
        out = score.as_dict()
        out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", default="", help="comma-separated substrings of label names")
    ap.add_argument("--every", default="1,0.5", help="sampling intervals in seconds")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="settings override, e.g. quality.min_face_height=30")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "real_footage.json")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every visitor")
    args = ap.parse_args()
    wanted = [w for w in args.clips.split(",") if w]
    paths = sorted(p for p in LABELS.glob("*.json")
                   if not wanted or any(w in p.name for w in wanted))
    overrides = dotted_overrides(args.set)
    jobs = [(str(p), float(e), overrides) for p in paths for e in args.every.split(",")]
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(max(1, args.workers)) as pool:
        results = pool.map(_one, jobs, chunksize=1)
    rows = []
    print(f"{'clip':45s} {'every':>5s} {'eye':>4s} {'ids':>4s} {'split':>5s} {'merge':>5s} "
          f"{'false':>5s} {'miss':>4s} {'faces':>9s}  exact")
    for r in results:
        exact = "yes" if r["exact"] else ""
        print(f"{r['clip']:45s} {r['every_s']:5g} {r['people_by_eye']:4d} {r['visitors_found']:4d} "
              f"{r['splits']:5d} {r['merges']:5d} {r['false_visitors']:5d} {len(r['missed']):4d} "
              f"{r['faces_found']:4d}/{r['faces_labelled']:<4d}  {exact}")
        if args.verbose:
            for vid, v in r["visitors"].items():
                print(f"    {vid}: {v['people']} {v['sightings']}")
            if r["missed"]:
                print(f"    missed: {r['missed']}")
        rows.append(r)
    n = len(rows)
    summary = {
        "runs": n, "exact": sum(r["exact"] for r in rows),
        "people_by_eye": sum(r["people_by_eye"] for r in rows),
        "visitors_found": sum(r["visitors_found"] for r in rows),
        "splits": sum(r["splits"] for r in rows), "merges": sum(r["merges"] for r in rows),
        "false_visitors": sum(r["false_visitors"] for r in rows),
        "missed": sum(len(r["missed"]) for r in rows),
    }
    print("total:", json.dumps(summary), f"({time.perf_counter() - t0:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": overrides, "summary": summary, "runs": rows},
                                   indent=1, default=str))


if __name__ == "__main__":
    main()
