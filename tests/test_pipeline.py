"""End to end on real faces: manifest → detect → embed → resolve → DuckDB → report.

Ground truth is known by construction: each frame is an LFW photo (one face) or a side by
side of two photos, with timestamps/locations/cameras chosen so every report rule shows.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from tests.conftest import lfw_photo
from typer.testing import CliRunner

from revisit.cli.main import app
from revisit.ingest.manifest import read_manifest
from revisit.pipeline import Runtime
from revisit.records import Batch
from revisit.report.query import ReportQuery, SightingQuery

POWELL = "Colin_Powell"  # person A: four photos
CHRETIEN = "Jean_Chretien"  # person B: two photos
CHAVEZ = "Hugo_Chavez"  # person C: seen once, after the main range


def _line(image: str, camera: str, location: str, ts: str, **extra: str) -> str:
    return json.dumps({"image": image, "camera_id": camera, "location_id": location, "ts": ts, **extra})


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scene")
    photos = {
        "a1": lfw_photo(POWELL, 1), "a2": lfw_photo(POWELL, 2), "a3": lfw_photo(POWELL, 3),
        "a4": lfw_photo(POWELL, 4), "b2": lfw_photo(CHRETIEN, 2), "b3": lfw_photo(CHRETIEN, 3),
        "c1": lfw_photo(CHAVEZ, 1),
    }
    for name, src in photos.items():
        (root / f"{name}.jpg").write_bytes(src.read_bytes())
    # two different photos of A side by side: one frame, two faces of the same person
    pair = np.hstack([cv2.imread(str(photos["a3"])), cv2.imread(str(photos["a4"]))])
    cv2.imwrite(str(root / "a3a4.jpg"), pair)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    lines = [
        _line("a1.jpg", "c1", "101", "2024-01-05T09:00:00+00:00"),
        _line("a2.jpg", "c1", "101", "2024-01-05T10:10:00+01:00"),  # +10 min: same visit
        _line("a3.jpg", "c2", "101", "2024-01-05T11:00:00Z"),  # +50 min: new visit
        _line("a1.jpg", "c3", "203", "2024-01-06T10:00:00Z", image_id="a1-again-at-203"),
        _line("b2.jpg", "c3", "203", "2024-01-06T10:00:05Z"),
        _line("b3.jpg", "c1", "101", "2024-01-07T23:59:00Z"),  # last minute of the range
        _line("a3a4.jpg", "c4", "305", "2024-01-07T12:00:00Z"),  # same-frame rule
        _line("c1.jpg", "c1", "101", "2024-01-08T00:00:00Z"),  # first second after the range
        _line("broken.jpg", "c1", "101", "2024-01-05T12:00:00Z"),  # corrupt image
        _line("notes.txt", "c1", "101", "2024-01-05T12:00:01Z"),  # unknown format
        json.dumps({"image": "a1.jpg", "camera_id": "c1", "ts": "2024-01-05T12:00:02Z"}),
        _line("a1.jpg", "c1", "101", "2024-01-05 12:00", image_id="x"),  # no offset
        "{not json",
        _line("missing.jpg", "c1", "101", "2024-01-05T12:00:03Z"),
    ]
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def ingested(scene: Path, tmp_path_factory: pytest.TempPathFactory):
    from revisit.config import load_settings

    settings = load_settings(None, data=tmp_path_factory.mktemp("data"))
    runtime = Runtime(settings)
    summary = runtime.ingest(read_manifest(scene / "manifest.jsonl"))
    yield runtime, summary, settings
    runtime.close()


def _report(runtime: Runtime, start: str, end: str, **kw: object) -> dict:
    q = ReportQuery(start=date.fromisoformat(start), end=date.fromisoformat(end), **kw)
    header = runtime.store.report_header(q)
    rows = list(runtime.store.report_rows(q))
    return {"header": header, "rows": rows}


def _visitor_of(runtime: Runtime, image_id: str) -> str:
    ids = {s["face_id"] for s in runtime.store.sightings(SightingQuery()) if s["image_id"] == image_id}
    assert len(ids) == 1, ids
    return ids.pop()


def test_summary_counts_frames_faces_and_skips(ingested) -> None:
    _, summary, _ = ingested
    assert summary.frames == 8
    assert summary.faces == 9  # one frame holds two faces
    assert len(summary.rejected) == 6
    reasons = " | ".join(f"{r.source}: {r.reason}" for r in summary.rejected)
    assert "manifest.jsonl:9" in reasons and "corrupt" in reasons
    assert "manifest.jsonl:10" in reasons and "not a supported image" in reasons
    assert "missing field(s): location_id" in reasons
    assert "no UTC offset" in reasons
    assert "not valid JSON" in reasons
    assert "cannot read image missing.jpg" in reasons


def test_same_person_is_one_visitor_across_stores(ingested) -> None:
    runtime, _, _ = ingested
    a = _visitor_of(runtime, _content_id_of(runtime, "2024-01-05T09:00:00"))
    assert _visitor_of(runtime, "a1-again-at-203") == a


def _content_id_of(runtime: Runtime, ts_prefix: str) -> str:
    for s in runtime.store.sightings(SightingQuery()):
        if s["ts"].startswith(ts_prefix):
            return s["image_id"]
    raise AssertionError(f"no sighting at {ts_prefix}")


def test_report_counts_visits_with_the_gap_rule(ingested) -> None:
    runtime, _, _ = ingested
    r = _report(runtime, "2024-01-05", "2024-01-07")
    rows = {row.visitor_id: row for row in r["rows"]}
    a = _visitor_of(runtime, "a1-again-at-203")
    assert rows[a].visits_per_location == {"101": 2, "203": 1, "305": 1}
    assert rows[a].total_appearances == 4
    assert rows[a].locations_visited == 3
    # A first (4 appearances), then the rest ordered by appearances and id
    assert r["rows"][0].visitor_id == a
    # a longer gap joins the two visits at 101; gap 0 counts every sighting
    rows3h = {x.visitor_id: x for x in _report(runtime, "2024-01-05", "2024-01-07",
                                                 visit_gap=timedelta(hours=3))["rows"]}
    assert rows3h[a].visits_per_location["101"] == 1
    rows0 = {x.visitor_id: x for x in _report(runtime, "2024-01-05", "2024-01-07",
                                                visit_gap=timedelta(0))["rows"]}
    assert rows0[a].visits_per_location["101"] == 3


def test_time_range_is_inclusive_of_whole_days(ingested) -> None:
    runtime, _, _ = ingested
    r = _report(runtime, "2024-01-05", "2024-01-07")
    ids = {row.visitor_id for row in r["rows"]}
    chavez = _visitor_of(runtime, _content_id_of(runtime, "2024-01-08T00:00:00"))
    chretien = _visitor_of(runtime, _content_id_of(runtime, "2024-01-07T23:59:00"))
    assert chretien in ids  # 23:59 on the --to day is inside
    assert chavez not in ids  # midnight after it is not
    assert chavez in {row.visitor_id for row in _report(runtime, "2024-01-08", "2024-01-08")["rows"]}
    only_first_day = _report(runtime, "2024-01-05", "2024-01-05")
    assert only_first_day["header"].unique_visitors == 1
    assert only_first_day["header"].total_sightings == 3


def test_location_and_camera_filters(ingested) -> None:
    runtime, _, _ = ingested
    a = _visitor_of(runtime, "a1-again-at-203")
    at_203 = _report(runtime, "2024-01-01", "2024-01-31", locations=("203",))
    assert at_203["header"].unique_visitors == 2  # A and B met at store 203
    assert all(set(row.visits_per_location) == {"203"} for row in at_203["rows"])
    cam_c2 = _report(runtime, "2024-01-01", "2024-01-31", cameras=("c2",))
    assert [row.visitor_id for row in cam_c2["rows"]] == [a]
    assert cam_c2["header"].total_sightings == 1


def test_two_faces_in_one_frame_never_share_a_visitor(ingested) -> None:
    runtime, _, _ = ingested
    pair_frame = _content_id_of(runtime, "2024-01-07T12:00:00")
    ids = [s["face_id"] for s in runtime.store.sightings(SightingQuery()) if s["image_id"] == pair_frame]
    assert len(ids) == 2
    assert len(set(ids)) == 2


def test_reingest_changes_nothing(ingested, scene: Path) -> None:
    runtime, _, _ = ingested
    before = list(runtime.store.sightings(SightingQuery()))
    header_before = _report(runtime, "2024-01-01", "2024-01-31")["header"]
    again = runtime.ingest(read_manifest(scene / "manifest.jsonl"))
    assert again.frames == 0 and again.sightings == 0 and again.new_visitors == 0
    assert again.skipped == 8
    assert list(runtime.store.sightings(SightingQuery())) == before
    assert _report(runtime, "2024-01-01", "2024-01-31")["header"] == header_before


def test_cli_ingest_report_and_export(scene: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    data = tmp_path / "cli-data"
    result = runner.invoke(app, ["--data", str(data), "ingest", str(scene / "manifest.jsonl"),
                                 "--no-progress"])
    assert result.exit_code == 3, result.output  # something was skipped
    assert "8 frames, 9 faces" in result.output
    assert "manifest.jsonl:9" in result.output
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["--data", str(data), "report", "--from", "2024-01-05",
                                 "--to", "2024-01-07", "--format", "json", "--output", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["header"]["unique_visitors"] >= 2
    assert doc["visitors"][0]["total_appearances"] == 4
    result = runner.invoke(app, ["--data", str(data), "sightings", "--format", "jsonl",
                                 "--locations", "203"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    assert len(rows) == 2 and {r["location_id"] for r in rows} == {"203"}
    assert all(r["bbox_w"] > 40 and r["bbox_h"] > 40 for r in rows)
    result = runner.invoke(app, ["--data", str(data), "report", "--from", "2024-01-07",
                                 "--to", "2024-01-05"])
    assert result.exit_code != 0 and "before" in result.output


def test_a_run_started_again_completes_what_a_kill_cut_short(tmp_path: Path) -> None:
    """Killed after its last batch was stored and before consolidation: running the same
    input again stores nothing new but consolidates; and an image id met twice in one run
    is one frame, even before its first copy is stored."""
    from dataclasses import replace

    from revisit.config import load_settings
    from revisit.records import Frame
    from revisit.store.testing import at, batch, embedding, sighting

    # one frame per batch: the second copy of an id comes while the first is in flight
    runtime = Runtime(load_settings(None, data=tmp_path / "data",
                                    pipeline={"frame_batch": 1}))
    try:
        person = embedding(7, dim=128)
        rows = [replace(sighting("V-000001", at(m)), embedding=person) for m in (0, 5)]
        rows += [replace(sighting("V-000002", at(m, day=1)), embedding=person) for m in (0, 5)]
        runtime.store.write(batch(rows))  # as the killed run left it: two ids, one person
        again = [Frame(tenant="default", camera_id=s.camera_id, location_id=s.location_id,
                       image_id=s.image_id, ts=s.ts) for s in rows]
        summary = runtime.ingest(again)
        assert summary.skipped == 4 and summary.frames == 0
        assert summary.merges == 1 and len(runtime.store.merges("default")) == 1
        twice = [Frame(tenant="default", camera_id="L1-cam1", location_id="L1",
                       image_id="same-id", ts=at(60), data=lfw_photo(POWELL, 1).read_bytes()),
                 Frame(tenant="default", camera_id="L1-cam1", location_id="L1",
                       image_id="same-id", ts=at(61), data=lfw_photo(CHAVEZ, 1).read_bytes())]
        summary = runtime.ingest(twice)
        assert summary.frames == 1 and summary.skipped == 1
        assert [s["image_id"] for s in runtime.store.sightings(SightingQuery())
                if s["image_id"] == "same-id"] == ["same-id"]
    finally:
        runtime.close()


def test_faces_held_when_a_run_is_killed_are_decided_by_the_next(tmp_path: Path,
                                                                 monkeypatch) -> None:
    """A track not decided yet when the run is killed (its faces held, their frames stored):
    running the same input again finds every frame stored, reads the held faces back and
    decides them, instead of losing them (real models)."""
    from revisit.config import load_settings
    from revisit.records import Frame
    from revisit.store.testing import at

    settings = load_settings(None, data=tmp_path / "data", identity={"create_after": 3})
    frames = [Frame(tenant="default", camera_id="L1-cam1", location_id="L1",
                    image_id=f"held-{i}", ts=at(i / 12),
                    data=lfw_photo(POWELL, i).read_bytes()) for i in (1, 2)]
    killed = Runtime(settings)
    monkeypatch.setattr(killed, "finish", lambda summary=None: None)  # the kill
    first = killed.ingest(list(frames))
    assert first.frames == 2 and first.sightings == 0
    assert len(killed.store.held_faces("default")) == 2
    killed.close()
    monkeypatch.undo()
    again = Runtime(settings)
    try:
        summary = again.ingest(list(frames))
        assert summary.skipped == 2 and summary.sightings == 2
        assert again.store.stats("default")["visitors"] == 1
        assert again.store.held_faces("default") == []
    finally:
        again.close()


def past_retention_batch(tenant: str, days: int) -> tuple[Batch, str, str]:
    """A batch as the embed stage hands it on: a frame from an hour ago and one from
    ``days`` ago, each with one face that would found a visitor; (batch, new id, old id)."""
    from datetime import UTC, datetime

    from revisit.records import Face, Frame, face_image_id
    from revisit.store.testing import embedding

    now = datetime.now(UTC)
    frames, faces = [], []
    for n, (image_id, ts) in enumerate((("recent", now - timedelta(hours=1)),
                                        ("archived", now - timedelta(days=days)))):
        bbox = (10, 20, 80, 100)
        frames.append(Frame(tenant, "L1-cam1", "L1", image_id, ts, source=f"batch:{image_id}.jpg"))
        faces.append(Face(tenant=tenant, camera_id="L1-cam1", location_id="L1",
                          image_id=image_id, ts=ts,
                          face_image_id=face_image_id(tenant, image_id, bbox), bbox=bbox,
                          landmarks=np.zeros((5, 2), np.float32), det_score=0.9, quality=0.8,
                          embedding=embedding(n, dim=128)))
    return Batch("B-retention", frames=frames, faces=faces), "recent", "archived"


def test_a_frame_past_retention_handed_to_the_pipeline_is_not_stored(tmp_path: Path) -> None:
    """A frame accepted before its tenant's retention was shortened (or replayed from a
    failed batch) reaches resolve: it is refused there, stored nowhere (no frame record,
    sighting, embedding or visitor), and listed in what the batch reports."""
    from revisit.config import load_settings
    from revisit.ingest.status import counts_of
    from revisit.tenancy.db import Tenancy

    runtime = Runtime(load_settings(None, data=tmp_path / "data",
                                    identity={"create_after": 1},
                                    privacy={"retention_at_door": True}))
    try:
        Tenancy(runtime.store).create_tenant("acme", retention_days=30)
        out, recent, archived = past_retention_batch("acme", 90)
        for name, fn in runtime.stages():
            if name in ("resolve", "store"):  # after the models, as a replay gets there
                out = fn(out)
        assert runtime.store.known_frames("acme", [recent, archived]) == {recent}
        assert [s.image_id for s in out.sightings] == [recent]
        assert runtime.store.stats("acme")["visitors"] == 1
        with runtime.store.read() as s:
            stored = s.execute("SELECT face_image_id FROM embeddings WHERE tenant = ?",
                               ["acme"]).fetchall()
        assert [r[0] for r in stored] == [out.faces[0].face_image_id]
        rejected = counts_of(out)["rejected"]
        assert [(r["image_id"], r["file"]) for r in rejected] == [(archived, "archived.jpg")]
        assert "older than tenant acme's retention of 30 days" in rejected[0]["reason"]
    finally:
        runtime.close()
