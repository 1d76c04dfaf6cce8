"""The evaluation's visit rule and store reading agree with the real DuckDB store."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np

from revisit.evaluation.evaluate import evaluate_store
from revisit.evaluation.truth import load_truth
from revisit.report.query import ReportQuery
from revisit.store.duckdb_store import DuckDBStore
from revisit.store.testing import T0, at, batch, sighting
from revisit.visits import visits_per_location

# (visitor, location, minutes after T0): gaps of exactly 30, 31 and 600 minutes
PLAN = [
    ("V-A", "L1", 0), ("V-A", "L1", 30), ("V-A", "L1", 61), ("V-A", "L2", 65),
    ("V-A", "L1", 700), ("V-B", "L2", 0), ("V-B", "L2", 29.5), ("V-B", "L2", 3000),
]


def test_visit_rule_matches_the_store_report(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "s.duckdb")
    try:
        store.write(batch([sighting(v, at(m), location=loc) for v, loc, m in PLAN]))
        rows = {r.visitor_id: r.visits_per_location for r in store.report_rows(
            ReportQuery(start=T0.date(), end=date(2024, 3, 31)))}
    finally:
        store.close()
    ours = {
        v: visits_per_location([(loc, at(m)) for w, loc, m in PLAN if w == v])
        for v in ("V-A", "V-B")
    }
    assert ours == {"V-A": {"L1": 3, "L2": 1}, "V-B": {"L2": 2}}
    assert {v: dict(sorted(d.items())) for v, d in rows.items()} == ours


def test_evaluate_store_reads_sightings_and_embeddings(tmp_path: Path) -> None:
    sightings = [sighting(v, at(m), location=loc) for v, loc, m in PLAN]
    frames = [{
        "image_id": s.image_id, "image": "x.jpg", "camera_id": s.camera_id,
        "location_id": s.location_id, "ts": s.ts.isoformat(),
        "faces": [{"visitor": "P" + s.face_id[-1], "bbox": list(s.bbox)}],
    } for s in sightings]
    truth_path = tmp_path / "truth.json"
    truth_path.write_text(json.dumps({"tenant": "default", "visit_gap_s": 1800, "frames": frames}))
    store = DuckDBStore(tmp_path / "s.duckdb")
    try:
        store.write(batch(sightings))
        result = evaluate_store(store, load_truth(truth_path))
    finally:
        store.close()
    assert result["detection"]["recall"] == 1.0
    p = result["pipeline"]
    assert p["bcubed"]["f1"] == 1.0
    assert p["visits"]["exact_share"] == 1.0
    assert p["visits"]["true_visits"] == p["visits"]["found_visits"] == 6
    ref = result["reference"]
    assert ref["faces"] == len(PLAN)  # every stored embedding was read back
    assert np.isfinite(ref["threshold"])
