"""End-to-end scoring of hand-made stored sightings against a hand-made truth."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from revisit.evaluation.evaluate import evaluate, format_table, visit_accuracy
from revisit.evaluation.truth import load_truth

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)


def _truth_file(tmp_path: Path) -> Path:
    """Two visitors. P1: 2 frames at S01 in the morning + 1 frame at S01 in the evening
    (2 visits). P2: the 2 morning frames only (1 visit). One frame nobody is found in."""
    frames = []
    for i, (minute, faces) in enumerate([
        (0, [("P1", [10, 10, 50, 60]), ("P2", [200, 100, 50, 60])]),
        (1, [("P1", [12, 10, 50, 60]), ("P2", [202, 100, 50, 60])]),
        (600, [("P1", [300, 200, 40, 50])]),
        (601, [("P2", [100, 100, 40, 50])]),
    ]):
        frames.append({
            "image_id": f"img{i}", "image": f"f{i}.jpg", "camera_id": "S01-C1",
            "location_id": "S01", "ts": (T0 + timedelta(minutes=minute)).isoformat(),
            "faces": [{"visitor": v, "identity": v.lower(), "bbox": b} for v, b in faces],
        })
    doc = {
        "format": "revisit-truth/1", "tenant": "default", "visit_gap_s": 1800,
        "visitors": [
            {"visitor": "P1", "identity": "p1", "visits": {"S01": 2}},
            {"visitor": "P2", "identity": "p2", "visits": {"S01": 2}},
        ],
        "frames": frames,
    }
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(doc))
    return path


def _row(face_id: str, image: int, bbox: list[int], minute: int) -> dict:
    return {
        "face_id": face_id, "face_image_id": f"F{image}-{bbox[0]}", "image_id": f"img{image}",
        "camera_id": "S01-C1", "location_id": "S01",
        "ts": (T0 + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z"),
        "bbox_x": bbox[0], "bbox_y": bbox[1], "bbox_w": bbox[2], "bbox_h": bbox[3],
    }


def test_evaluate_counts_detection_identity_and_visits(tmp_path: Path) -> None:
    truth = load_truth(_truth_file(tmp_path))
    rows = [
        _row("V1", 0, [12, 12, 50, 60], 0),
        _row("V2", 0, [200, 100, 50, 60], 0),
        _row("V1", 1, [12, 10, 50, 60], 1),
        _row("V2", 1, [203, 101, 50, 60], 1),
        _row("V3", 2, [300, 200, 40, 50], 600),  # P1 in the evening: split off as V3
        # frame 3: P2 missed; a false detection far from any truth face
        _row("V2", 3, [500, 400, 30, 30], 601),
        _row("V9", 99, [0, 0, 10, 10], 0),  # a frame that is not in the truth
    ]
    r = evaluate(truth, rows)
    d = r["detection"]
    assert (d["matched"], d["missed"], d["unmatched_sightings"]) == (5, 1, 1)
    assert d["recall"] == pytest.approx(5 / 6) and d["precision"] == pytest.approx(5 / 6)
    assert r["sightings_outside_truth"] == 1
    p = r["pipeline"]
    assert p["unique_visitors"] == {"true": 2, "found": 3, "error_pct": pytest.approx(50.0)}
    # matched: P1->V1,V1,V3 ; P2->V2,V2 : no merges, P1 split
    assert p["bcubed"]["precision"] == 1.0
    assert p["bcubed"]["recall"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 + 1) / 5)
    assert p["pairwise"] == {"precision": 1.0, "recall": pytest.approx(2 / 4),
                             "f1": pytest.approx(2 / 3)}
    assert p["over_merges"] == [] and p["over_merged_clusters"] == 0
    assert p["split_identities"] == 1
    assert p["splits"][0]["identity"] == "P1"
    # P1's majority visitor V1 has 1 visit (truth 2); V2 has 2 visits thanks to the false
    # detection at 10:01 (truth 2): exactly one of two visitors right
    assert p["visits"]["exact"] == 1 and p["visits"]["exact_share"] == 0.5
    table = format_table(r, truth.identities)
    assert "BCubed F1" in table and "P1 (p1)" in table


def test_reference_clusters_the_stored_embeddings(tmp_path: Path) -> None:
    truth = load_truth(_truth_file(tmp_path))
    rows = [
        _row("V1", 0, [10, 10, 50, 60], 0), _row("V1", 0, [200, 100, 50, 60], 0),
        _row("V1", 1, [12, 10, 50, 60], 1), _row("V1", 1, [202, 100, 50, 60], 1),
        _row("V1", 2, [300, 200, 40, 50], 600), _row("V1", 3, [100, 100, 40, 50], 601),
    ]
    a, b = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[1]
    who = ["P1", "P2", "P1", "P2", "P1", "P2"]
    emb = {r["face_image_id"]: (a if w == "P1" else b) for r, w in zip(rows, who, strict=True)}
    r = evaluate(truth, rows, emb)
    assert r["pipeline"]["over_merges"][0]["size"] == 6  # everything in one visitor
    ref = r["reference"]
    assert ref["bcubed"]["f1"] == pytest.approx(1.0)
    assert ref["unique_visitors"]["found"] == 2
    assert ref["visits"]["exact_share"] == 1.0


def test_visit_accuracy_unmatched_visitor_is_wrong() -> None:
    gap = timedelta(minutes=30)
    out = visit_accuracy({"P1": {"S01": 1}, "P2": {"S02": 1}}, ["P1"], ["V1"],
                         {"V1": [("S01", T0)]}, gap)
    assert out["exact"] == 1 and out["visitors"] == 2
