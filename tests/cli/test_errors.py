"""Inputs that once made the CLI print a traceback: each must now end with one readable
``error:`` line (or usage error) naming the problem, and a non-zero exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

REVISIT = str(Path(sys.executable).with_name("revisit"))
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _run(args: list[str], data: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVISIT_")}
    env["REVISIT_DATA"] = str(data)
    return subprocess.run([REVISIT, *args], env=env, text=True, capture_output=True,
                          timeout=120)


def _refused(out: subprocess.CompletedProcess, *words: str) -> None:
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert "Traceback" not in text, text
    for w in words:
        assert w.lower() in text.lower(), text


def test_an_image_given_as_manifest(tmp_path: Path) -> None:
    jpg = next((SHARED / "lfw-dev").glob("*/*.jpg"), None)
    if jpg is None:
        pytest.skip("../shared/data/lfw-dev is not there")
    _refused(_run(["ingest", str(jpg)], tmp_path), "manifest")


def test_ingest_video_every_zero(tmp_path: Path) -> None:
    clip = SHARED / "videos" / "classroom.gif"
    if not clip.exists():
        pytest.skip("../shared/data/videos is not there")
    _refused(_run(["ingest-video", str(clip), "--camera", "c1", "--location", "101",
                   "--every", "0"], tmp_path), "every")


def test_a_malformed_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "revisit.toml"
    bad.write_text("[identity\nmatch = ")
    _refused(_run(["--config", str(bad), "admin", "show"], tmp_path / "d"), "revisit.toml")


def test_report_while_another_process_holds_the_store(tmp_path: Path) -> None:
    assert _run(["admin", "add-tenant", "acme"], tmp_path).returncode == 0  # creates it
    files = list(tmp_path.glob("*.duckdb"))
    assert files, list(tmp_path.iterdir())
    holder = duckdb.connect(str(files[0]))  # as `revisit serve` would
    try:
        out = _run(["report", "--from", "2024-01-01", "--to", "2024-01-02"], tmp_path)
        _refused(out, "in use by another process", "/v1/reports")
    finally:
        holder.close()
