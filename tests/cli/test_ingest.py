"""``revisit ingest``: what the summary says about frames it refused."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from revisit.cli.ingest import print_summary
from revisit.cli.main import app
from revisit.pipeline import Summary
from revisit.records import EXPIRED, Rejected


def test_frames_past_the_tenants_retention_are_refused_and_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tenant keeps 30 days: a 90-day-old snapshot is refused before any model runs
    on it, counted in the summary with its reason and listed with -v; the recent one goes
    on."""
    monkeypatch.setenv("REVISIT_PRIVACY__RETENTION_AT_DOOR", "true")  # off in tests/conftest.py
    data = tmp_path / "data"
    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((48, 64, 3), 128, np.uint8))
    now = datetime.now(UTC).replace(microsecond=0)
    lines = [{"image": "a.jpg", "camera_id": "c1", "location_id": "101", "ts": ts,
              "image_id": name, "tenant": "acme"}
             for name, ts in (("new", (now - timedelta(hours=1)).isoformat()),
                              ("old", (now - timedelta(days=90)).isoformat()))]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    runner = CliRunner()
    r = runner.invoke(app, ["--data", str(data), "admin", "add-tenant", "acme",
                            "--retention-days", "30"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["--data", str(data), "-v", "ingest", str(manifest),
                            "--no-progress"])
    assert r.exit_code == 3, r.output  # something was refused
    assert "1 frames" in r.output
    assert "1 rejected (1 older than their tenant's retention)" in r.output
    assert "m.jsonl:2" in r.output and "older than tenant acme's retention of 30 days" in r.output


def test_without_v_refusals_for_retention_are_only_counted(capsys: pytest.CaptureFixture) -> None:
    """An archive back-fill may refuse thousands of frames: the summary counts them, -v
    lists them; other rejected lines are listed either way."""
    summary = Summary(rejected=[
        Rejected("m.jsonl:1", "ts 2024-01-01T00:00:00Z is older than tenant acme's "
                 "retention of 30 days", code=EXPIRED),
        Rejected("m.jsonl:2", "line is not UTF-8 text")])
    print_summary(summary)
    out = capsys.readouterr()
    assert "m.jsonl:2" in out.err and "m.jsonl:1" not in out.err
    assert "2 rejected (1 older than their tenant's retention)" in out.out
    print_summary(summary, verbose=True)
    assert "refused m.jsonl:1: ts 2024-01-01T00:00:00Z is older" in capsys.readouterr().err
