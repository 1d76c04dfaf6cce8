"""Staff exclusion on a simulated scenario: do customers get taken for staff?

    .venv/bin/python benchmarks/staff.py [--visitors 60] [--margins 0,0.08]

Builds a scenario from ``../shared/data/lfw-dev`` (customers: LFW people pasted into mall
frames, with truth), enrols **50 staff** from photos of LFW people who are not in it (the
holdout), plus 5 of the scenario's regular customers as staff from photos of them the
scenario does not use (a positive control), runs the whole embedded pipeline, and counts
per sighting (matched to the truth by box):

- *false staff matches*: sightings of a person who is not that staff member that joined a
  staff member's visitor id (a customer who would vanish from the reports);
- *control staff found*: the control staff's sightings that joined their enrolment;
- the report's unique visitors (staff left out) against the true customers seen.

Once per ``--margins`` value (``identity.staff_margin``: how much closer than the match
threshold a face must be to join staff). Writes ``benchmarks/results/staff.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

# Replays footage dated in 2024, older than a tenant's default retention (365 days)
# by now: stored as it was before snapshots past the retention were refused.
os.environ.setdefault("REVISIT_PRIVACY__RETENTION_AT_DOOR", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
RESULTS = Path(__file__).resolve().parent / "results"


def _identity_of_sightings(store: Any, truth: dict) -> dict[str, str]:
    """face_image_id -> true identity, by best box overlap per frame (the truth's tenant)."""
    from revisit.evaluation.matching import match_boxes
    from revisit.report.query import SightingQuery

    frames = {f["image_id"]: f for f in truth["frames"]}
    by_frame: dict[str, list[dict]] = {}
    for s in store.sightings(SightingQuery(tenant=truth["tenant"])):
        by_frame.setdefault(s["image_id"], []).append(s)
    out = {}
    for image_id, rows in by_frame.items():
        faces = frames.get(image_id, {}).get("faces", [])
        boxes = [tuple(f["bbox"]) for f in faces]
        found = [(r["bbox_x"], r["bbox_y"], r["bbox_w"], r["bbox_h"]) for r in rows]
        for ti, fi, _ in match_boxes(boxes, found):
            out[rows[fi]["face_image_id"]] = faces[ti]["identity"]
    return out


def run(scenario: Path, faces_dir: Path, margin: float, staff_photos: dict[str, list[Path]],
        control: dict[str, list[Path]]) -> dict[str, Any]:
    from revisit.config import load_settings
    from revisit.ingest.manifest import read_manifest
    from revisit.known.enrol import Enrolments
    from revisit.pipeline import Runtime, pipeline_model_settings
    from revisit.report.query import ReportQuery, SightingQuery
    from revisit.tenancy.db import Tenancy
    from revisit.vision.stages import Vision

    truth = json.loads((scenario / "truth.json").read_text())
    with tempfile.TemporaryDirectory() as data:
        settings = load_settings(None, data=Path(data), identity={"staff_margin": margin})
        rt = Runtime(settings)
        try:
            book = Enrolments(rt.store, Tenancy(rt.store))
            vision = Vision(pipeline_model_settings(settings))
            staff_of: dict[str, str] = {}  # staff visitor id -> identity
            for who, photos in {**staff_photos, **control}.items():
                e = book.enrol_photos("default", "staff", [p.read_bytes() for p in photos],
                                      vision.process, label=who, reason="benchmark staff",
                                      new_visitor=lambda: rt.resolver.new_visitor("default"))
                staff_of[e.visitor_id] = who
            rt.resolver.reload("default")
            t0 = time.perf_counter()
            summary = rt.ingest(read_manifest(scenario / "manifest.jsonl"))
            ingest_s = time.perf_counter() - t0
            identity = _identity_of_sightings(rt.store, truth)
            false, control_hit, control_all = Counter(), 0, 0
            customers_taken: set[str] = set()
            n_customer = 0
            for s in rt.store.sightings(SightingQuery()):
                who = identity.get(s["face_image_id"])
                if who is None:
                    continue
                staff_who = staff_of.get(s["face_id"])
                if who in control:
                    control_all += 1
                    control_hit += staff_who == who
                    continue
                n_customer += 1
                if staff_who is not None:
                    false[staff_who] += 1
                    customers_taken.add(who)
            spec = truth["spec"]
            start = date.fromisoformat(spec["start"])
            q = ReportQuery(start, date.fromordinal(start.toordinal() + spec["days"] - 1))
            reported = rt.store.report_header(q).unique_visitors
            true_customers = {v["identity"] for v in truth["visitors"]} - set(control)
        finally:
            rt.close()
    return {
        "staff_margin": margin, "staff_enrolled": len(staff_photos),
        "control_staff": len(control), "customer_sightings": n_customer,
        "false_staff_matches": sum(false.values()), "customers_taken_for_staff":
            sorted(customers_taken), "false_matches_by_staff": dict(false),
        "control_staff_sightings": control_all, "control_staff_found": control_hit,
        "report_unique_visitors": reported, "true_customers": len(true_customers),
        "frames": summary.frames, "ingest_s": round(ingest_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--visitors", type=int, default=60)
    ap.add_argument("--staff", type=int, default=50)
    ap.add_argument("--margins", default="0,0.08")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    import numpy as np

    from revisit.simulate.scenario import ScenarioSpec, build_scenario, shared_data_dir

    faces_dir = shared_data_dir() / "lfw-dev"
    if not faces_dir.is_dir():
        sys.exit(f"{faces_dir} is missing (../shared/data beside the repository)")
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "scenario"
        spec = ScenarioSpec(stores=3, cameras_per_store=2, days=5, visitors=args.visitors,
                            seed=args.seed, workers=2)
        build_scenario(faces_dir, scenario, spec)
        truth = json.loads((scenario / "truth.json").read_text())
        used = {v["identity"]: v["photos_used"] for v in truth["visitors"]}
        people = sorted(p for p in faces_dir.iterdir() if p.is_dir())
        rng = np.random.default_rng(args.seed)
        holdout = [p for p in people if p.name not in used]
        rng.shuffle(holdout)
        staff_photos = {p.name: sorted(p.glob("*.jpg"))[:2] for p in holdout[: args.staff]}
        # control: regular customers with a photo the scenario did not use
        control = {}
        for v in truth["visitors"]:
            photos = sorted((faces_dir / v["identity"]).glob("*.jpg"))
            if v["kind"] == "regular" and len(photos) > v["photos_used"] and len(control) < 5:
                control[v["identity"]] = photos[v["photos_used"]:][:1]
        out = {"scenario": {"stores": 3, "cameras": 6, "days": 5, "visitors": args.visitors,
                            "seed": args.seed}, "runs": []}
        for m in (float(x) for x in args.margins.split(",")):
            r = run(scenario, faces_dir, m, staff_photos, control)
            out["runs"].append(r)
            print(f"staff_margin {m}: false staff matches {r['false_staff_matches']} of "
                  f"{r['customer_sightings']} customer sightings "
                  f"({len(r['customers_taken_for_staff'])} customers); control staff found "
                  f"{r['control_staff_found']}/{r['control_staff_sightings']}; report "
                  f"{r['report_unique_visitors']} visitors, true customers "
                  f"{r['true_customers']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "staff.json").write_text(json.dumps(out, indent=2))
    print(f"wrote {RESULTS / 'staff.json'}")


if __name__ == "__main__":
    main()
