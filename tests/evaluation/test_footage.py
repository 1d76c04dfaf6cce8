"""Real footage: the by-eye labels, the scorer, and real clips end to end.

The labels (tests/evaluation/footage/*.json, FORMAT.md there) were written by people looking
at every frame ``revisit ingest-video --every 0.5s`` samples. The clips stay in
``../shared/data`` (or ``$REVISIT_SHARED_DATA``); tests that need them skip without it.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from revisit.evaluation.footage import (
    CLIP_START,
    FootageLabels,
    LabelError,
    LabelledFace,
    NotFace,
    load_labels,
    run_clip,
    score_sightings,
)
from revisit.ingest.video import sample_video
from revisit.pipeline import Runtime
from revisit.report.query import SightingQuery
from revisit.simulate.scenario import shared_data_dir

LABELS = Path(__file__).parent / "footage"
SHARED = shared_data_dir()


def _clip(name: str) -> FootageLabels:
    labels = load_labels(LABELS / f"{name}.json")
    if not (SHARED / labels.clip).is_file():
        pytest.skip(f"real clip missing: {SHARED / labels.clip} ($REVISIT_SHARED_DATA, or "
                    "../shared/data beside the repo)")
    return labels


# -- the labels ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(LABELS.glob("*.json")), ids=lambda p: p.name)
def test_every_label_file_is_valid_and_names_its_clip(path: Path) -> None:
    labels = load_labels(path)
    assert path.name == Path(labels.clip).name + ".json"
    assert labels.frames and labels.every_s == 0.5
    times = sorted(labels.frames)
    assert times[0] < 50  # starts at the clip's first frame
    used = {f.person for faces, _ in labels.frames.values() for f in faces}
    assert used == set(labels.people)  # every listed person shows a face somewhere


def test_a_label_naming_an_unknown_person_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"clip": "videos/x.gif", "people": {"P01": "a"}, "frames": '
                   '[{"t_ms": 0, "faces": [{"person": "P02", "box": [1, 2, 3, 4]}]}]}')
    with pytest.raises(LabelError, match="P02"):
        load_labels(bad)


# -- the scorer ----------------------------------------------------------------------------

def _labels() -> FootageLabels:
    box_a, box_b, back = (10, 10, 20, 24), (100, 10, 20, 24), (200, 10, 20, 24)
    frames = {
        0: ([LabelledFace("P1", box_a), LabelledFace("P2", box_b)], [NotFace("back_of_head", back)]),
        500: ([LabelledFace("P1", box_a), LabelledFace("P2", box_b)], []),
        1000: ([LabelledFace("P1", box_a), LabelledFace("P3", box_b, "profile")], []),
    }
    return FootageLabels("videos/x.gif", 0.5, {"P1": "", "P2": "", "P3": ""}, frames)


def _row(vid: str, t_ms: int, box: tuple[int, int, int, int]) -> dict:
    x, y, w, h = box
    return {"face_id": vid, "ts": CLIP_START + timedelta(milliseconds=t_ms),
            "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h}


def test_the_scorer_counts_splits_merges_false_visitors_and_misses() -> None:
    a, b, back = (11, 10, 20, 24), (101, 11, 20, 24), (200, 10, 20, 24)
    rows = [
        _row("V1", 0, a), _row("V2", 500, a),  # P1 split in two
        _row("V3", 0, b), _row("V3", 1000, a),  # ... and V3 holds P2 and P1: a merge
        _row("V4", 0, back),  # the back of a head became a visitor
    ]
    s = score_sightings(_labels(), 0.5, rows, CLIP_START)
    assert (s.people_by_eye, s.visitors_found) == (2, 4)  # P3 shows only a profile
    assert s.splits == 2 and s.merges == 1 and s.false_visitors == 1 and s.missed == []
    assert s.false_sightings["back_of_head"] == 1 and not s.exact
    exact = score_sightings(_labels(), 1.0, [_row("V1", 0, a), _row("V1", 1000, a),
                                             _row("V2", 0, b)], CLIP_START)
    assert exact.exact and exact.people_by_eye == 2
    missing = score_sightings(_labels(), 1.0, [_row("V1", 0, a)], CLIP_START)
    assert missing.missed == ["P2"] and not missing.exact


def test_sampling_every_second_takes_every_other_labelled_frame() -> None:
    labels = _labels()
    assert labels.sampled(0.5) == [0, 500, 1000]
    assert labels.sampled(1.0) == [0, 1000]


# -- real clips, end to end ----------------------------------------------------------------

@pytest.mark.parametrize(("name", "every"), [
    ("face-demographics-walking.gif", 1.0),  # two people, faces of 16-29 px
    ("head-pose-face-detection-female-and-male.gif", 0.5),  # heads turning and tilting
    ("one-by-one-person-detection.gif", 0.5),  # only backs of heads
])
def test_real_clip_counts_the_people_seen_by_eye(name: str, every: float, make_settings) -> None:
    labels = _clip(name)
    score = run_clip(labels, every, make_settings(), SHARED)
    assert score.exact, score.as_dict()
    assert score.visitors_found == score.people_by_eye


def test_real_snapshots_in_another_order_give_the_same_count(make_settings) -> None:
    """Camera batches of three real clips (three cameras of one store), fed in time order
    and shuffled: the same visitors after consolidation, and the by-eye count both ways."""
    clips = [_clip(n) for n in ("face-demographics-walking.gif",
                                "head-pose-face-detection-female-and-male.gif",
                                "face-demographics-walking-and-pause.gif")]
    def camera_batches() -> list[list]:
        out = []
        for cam, labels in enumerate(clips):
            frames = list(sample_video(str(SHARED / labels.clip), camera_id=f"cam{cam}",
                                       location_id="store", every=timedelta(seconds=0.5),
                                       start=CLIP_START))
            out += [frames[i:i + 3] for i in range(0, len(frames), 3)]
        return out

    expected = sum(len(c.expected_people(0.5)) for c in clips)
    counts = []
    for order in ("time", "shuffled"):
        todo = camera_batches()
        if order == "shuffled":
            random.Random(4).shuffle(todo)
        runtime = Runtime(_fresh(make_settings, order))
        try:
            runtime.ingest(f for b in todo for f in b)
            visitors = {r["face_id"] for r in runtime.store.sightings(SightingQuery())}
        finally:
            runtime.close()
        counts.append(len(visitors))
    assert counts == [expected, expected]


def test_a_reflection_resolved_one_snapshot_at_a_time_founds_no_visitor(make_settings) -> None:
    """ChokePoint's glass door reflects P09 while he walks towards the camera; his own track
    has only two blurred faces when the reflection's track could found a visitor. Resolved
    one snapshot per batch (a camera uploading as it goes), the reflection must still be
    seen for what it is, as it is when sixteen snapshots are resolved together."""
    labels = _clip("chokepoint_P2E_S5_C1.mp4")
    settings = make_settings(pipeline={"frame_batch": 1})
    window = (CLIP_START + timedelta(seconds=12), CLIP_START + timedelta(seconds=15))
    frames = sample_video(str(SHARED / labels.clip), camera_id="cam", location_id="clip",
                          every=timedelta(seconds=1), start=CLIP_START)
    runtime = Runtime(settings)
    try:
        runtime.ingest(f for f in frames if window[0] <= f.ts <= window[1])
        rows = list(runtime.store.sightings(SightingQuery()))
    finally:
        runtime.close()
    score = score_sightings(labels, 1.0, rows, CLIP_START)
    assert score.visitors_found >= 4, score.as_dict()  # the people of the window are counted
    assert (score.false_visitors, score.merges) == (0, 0), score.as_dict()


def _fresh(make_settings, tag: str):  # type: ignore[no-untyped-def]
    settings = make_settings()
    return settings.model_copy(update={
        "data": settings.data / tag,
        "pipeline": settings.pipeline.model_copy(update={"frame_batch": 3}),
    })


def test_a_clip_of_faces_too_small_to_count_says_so(make_settings) -> None:
    from revisit.pipeline import too_small_advice

    labels = _clip("vtest.avi")
    settings = make_settings()
    runtime = Runtime(settings)
    try:
        summary = runtime.ingest(sample_video(
            str(SHARED / labels.clip), camera_id="c", location_id="l",
            every=timedelta(seconds=2), start=datetime(2024, 1, 1, tzinfo=UTC), max_frames=20))
    finally:
        runtime.close()
    assert summary.sightings == 0 and summary.dropped["too_small"] > 0
    assert "too small" in summary.line()
    advice = too_small_advice(summary, settings)
    assert advice is not None and "quality.min_match_height" in advice


def test_small_faces_in_a_crowd_are_followed_by_position_never_joined_by_likeness(make_settings):
    """Real Mall frames (a crowd, faces of 15-22 px) as one camera 2 s apart: every
    visitor made only of small faces moves like one person (no jump beyond the tracker's
    reach between snapshots seconds apart): small faces of different people look alike, so
    likeness alone must never join them."""
    import json

    from revisit.ingest.manifest import read_manifest

    frames_dir = SHARED / "mall" / "frames"
    if not frames_dir.is_dir():
        pytest.skip(f"Mall frames missing: {frames_dir}")
    settings = make_settings()
    manifest = settings.data.parent / "mall.jsonl"
    t0 = datetime(2024, 1, 1, 10, tzinfo=UTC)
    lines = [json.dumps({"image": str(p), "camera_id": "mall", "location_id": "M",
                         "ts": (t0 + timedelta(seconds=2 * i)).isoformat()})
             for i, p in enumerate(sorted(frames_dir.glob("*.jpg"))[:150])]
    manifest.write_text("\n".join(lines) + "\n")
    runtime = Runtime(settings)
    try:
        runtime.ingest(read_manifest(manifest))
        rows = list(runtime.store.sightings(SightingQuery()))
    finally:
        runtime.close()
    by_visitor: dict[str, list[dict]] = {}
    for r in rows:
        by_visitor.setdefault(r["face_id"], []).append(r)
    small = {v: rs for v, rs in by_visitor.items() if max(r["bbox_h"] for r in rs) < 32}
    assert small, "the crowd's small faces should make some visitors"
    for vid, rs in small.items():
        rs.sort(key=lambda r: r["ts"])
        for a, b in itertools.pairwise(rs):
            dt = (datetime.fromisoformat(b["ts"].replace("Z", "+00:00"))
                  - datetime.fromisoformat(a["ts"].replace("Z", "+00:00"))).total_seconds()
            h = max(a["bbox_h"], b["bbox_h"])
            jump = ((b["bbox_x"] - a["bbox_x"]) ** 2 + (b["bbox_y"] - a["bbox_y"]) ** 2) ** 0.5 / h
            assert dt > settings.identity.track_motion_s or jump <= 6, (vid, a, b)
