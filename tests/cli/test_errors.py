"""Inputs that once made the CLI print a traceback: each must now end with one readable
``error:`` line (or usage error) naming the problem, and a non-zero exit code."""

from __future__ import annotations

import json
import os
import re
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
    flat = " ".join(re.sub("[│╭╮╰╯─]", " ", text).split()).lower()  # a usage box wraps lines
    for w in words:
        assert w.lower() in flat, text


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


def _run_env(args: list[str], env_extra: dict[str, str], timeout: int = 120
             ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVISIT_")}
    env.update(env_extra)
    return subprocess.run([REVISIT, *args], env=env, text=True, capture_output=True,
                          timeout=timeout)


def test_data_option_reads_the_folders_settings_file(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "revisit.toml").write_text('[embedder]\nmodel = "no-such-model"\n')
    _refused(_run_env(["--data", str(data), "admin", "show"], {}), "embedder.model")


def test_a_misspelt_setting_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text("[quality]\nmin_face_hieght = 40\n")
    _refused(_run(["--config", str(conf), "admin", "show"], tmp_path / "d"),
             "quality.min_face_hieght")
    _refused(_run_env(["--data", str(tmp_path / "d"), "admin", "show"],
                      {"REVISIT_QUALITY__MIN_FACE_HIEGHT": "40"}), "min_face_hieght")


def test_bad_service_settings_are_refused_at_start(tmp_path: Path) -> None:
    args = ["--data", str(tmp_path / "d"), "serve", "--port", "18999"]
    _refused(_run_env(args, {"REVISIT_SERVICE_MAX_BATCH_FRAMES": "0"}),
             "REVISIT_SERVICE_MAX_BATCH_FRAMES")
    _refused(_run_env(args, {"REVISIT_SERVICE_QUEUE_BATCH": "4"}),
             "REVISIT_SERVICE_QUEUE_BATCH")
    _refused(_run_env(["--data", str(tmp_path / "d"), "serve", "--port", "99999"], {}),
             "65535")


def test_report_to_a_path_that_cannot_be_written(tmp_path: Path) -> None:
    for target, words in ((tmp_path / "no" / "r.csv", ("does not exist",)),
                          (tmp_path, ("is a folder",))):
        for fmt in ("csv", "parquet"):
            out = _run(["report", "--from", "2024-01-01", "--to", "2024-01-02",
                        "--format", fmt, "--output", str(target)], tmp_path / "d")
            _refused(out, *words)
    assert not list(tmp_path.glob("*.part"))


def test_ingest_video_checks_its_ids(tmp_path: Path) -> None:
    clip = SHARED / "videos" / "classroom.gif"
    if not clip.exists():
        pytest.skip("../shared/data/videos is not there")
    for cam, loc in (("c 1/../x", "101"), ("c1", ""), ("", "101")):
        _refused(_run(["ingest-video", str(clip), "--camera", cam, "--location", loc,
                       "--every", "1s", "--start", "2024-01-05T09:00:00Z"], tmp_path),
                 "not valid")


def test_a_filter_that_names_nothing_is_refused(tmp_path: Path) -> None:
    _refused(_run(["report", "--from", "2024-01-01", "--to", "2024-01-02",
                   "--locations", " , "], tmp_path), "names no id")


def test_a_resolve_worker_without_a_shared_store(tmp_path: Path) -> None:
    """Refused at start, not logging "reconnecting" every second for ever."""
    env_url = "redis://127.0.0.1:6379/0"
    out = subprocess.run([REVISIT, "worker", "--stage", "resolve"], text=True,
                         capture_output=True, timeout=60,
                         env={**{k: v for k, v in os.environ.items()
                                 if not k.startswith("REVISIT_")},
                              "REVISIT_DATA": str(tmp_path), "REVISIT_QUEUE_URL": env_url})
    _refused(out, "resolve workers need a shared store", "store_url")


@pytest.mark.parametrize(("url", "words"), [
    ("redis://localhost:6379/0?bogus=1", ("queue_url", "unknown parameter 'bogus'",
                                          "claim_idle_ms")),
    ("redis://localhost:6379/0?claim_idle_ms=x", ("queue_url", "claim_idle_ms", "integer")),
    ("redis://h:abc", ("queue_url", "port 'abc'")),
    ("redis://:secret@h:abc/0", ("queue_url", "port 'abc'", ":***@")),
    ("kafka://h1:9092,h2:x?partitions=4", ("queue_url", "port 'x'")),
])
def test_a_bad_queue_url_is_refused_at_start(tmp_path: Path, url: str, words: tuple) -> None:
    """Before anything connects (a worker would retry its ValueError forever)."""
    out = _run_env(["--data", str(tmp_path / "d"), "status"], {"REVISIT_QUEUE_URL": url},
                   timeout=60)
    _refused(out, "invalid configuration", *words)
    assert out.returncode == 2
    assert "secret" not in out.stdout + out.stderr


@pytest.mark.parametrize("args", [["serve", "--port", "18997"], ["worker", "--stage", "detect"]])
def test_serve_and_worker_refuse_a_bad_queue_url(tmp_path: Path, args: list[str]) -> None:
    out = _run_env(["--data", str(tmp_path / "d"), *args],
                   {"REVISIT_QUEUE_URL": "redis://127.0.0.1:6379/0?claim_idle_ms=x"}, timeout=60)
    _refused(out, "invalid configuration", "queue_url", "claim_idle_ms")
    assert out.returncode == 2


def test_eval_footage_of_a_clip_that_is_no_video(tmp_path: Path) -> None:
    clip = tmp_path / "broken.mp4"
    clip.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(2000))  # no moov: cannot be opened
    labels = tmp_path / "broken.mp4.json"
    labels.write_text(json.dumps({"clip": str(clip), "every_s": 1, "people": {}, "frames": []}))
    _refused(_run(["eval", "--footage", str(labels)], tmp_path / "data"),
             "error:", "cannot open video", "broken.mp4")


def test_a_folder_given_as_manifest(tmp_path: Path) -> None:
    """A folder was reported as "not found", which sends a user looking for a typo."""
    from typer.testing import CliRunner

    from revisit.cli.main import app

    folder = tmp_path / "snapshots"
    folder.mkdir()
    out = CliRunner().invoke(app, ["--data", str(tmp_path / "d"), "ingest", str(folder)])
    assert out.exit_code == 2 and f"manifest {folder} is a folder" in out.output, out.output
    out = CliRunner().invoke(app, ["--data", str(tmp_path / "d"), "ingest",
                                   str(tmp_path / "none.jsonl")])
    assert out.exit_code == 2 and "none.jsonl not found" in out.output, out.output


@pytest.mark.parametrize(("option", "value"), [("--start", "2024-01-05T09:00"),
                                               ("--every", "often")])
def test_ingest_video_names_the_option_it_refuses(tmp_path: Path, option: str,
                                                  value: str) -> None:
    """"Invalid value: ts '…' has no UTC offset" did not say which option held it."""
    from typer.testing import CliRunner

    from revisit.cli.main import app

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    out = CliRunner().invoke(app, ["--data", str(tmp_path / "d"), "ingest-video", str(clip),
                                   "--camera", "c1", "--location", "101", option, value])
    flat = " ".join(re.sub("[│╭╮╰╯─]", " ", out.output).split())
    assert out.exit_code == 2 and f"Invalid value for {option}" in flat, out.output


@pytest.mark.parametrize(("text", "words"), [
    ('{"image": "a.jpg", "camera_id": "c1", "location_id": "101", "ts": "2024-01-05T09:00:00Z"}',
     "no field 'image_id'"),  # a manifest given as the truth
    ("", "holds no frames"),  # scored nothing as 100 %, exit 0
    ("not json", "cannot read a truth file"),
])
def test_eval_of_a_file_that_is_no_truth(tmp_path: Path, text: str, words: str) -> None:
    from typer.testing import CliRunner

    from revisit.cli.main import app
    from revisit.store.duckdb_store import DuckDBStore

    data = tmp_path / "d"
    data.mkdir()
    DuckDBStore(data / "revisit.duckdb").close()
    truth = tmp_path / "truth.jsonl"
    truth.write_text(text + "\n")
    out = CliRunner().invoke(app, ["--data", str(data), "eval", "--truth", str(truth),
                                   "--no-reference"])
    assert out.exit_code == 2 and words in out.output, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception


def test_demo_on_a_folder_without_person_folders(tmp_path: Path) -> None:
    """`revisit simulate` named it; `revisit demo` printed the ValueError's traceback."""
    from typer.testing import CliRunner

    from revisit.cli.main import app

    faces = tmp_path / "faces"
    faces.mkdir()
    (faces / "loose.jpg").write_bytes(b"")
    out = CliRunner().invoke(app, ["--data", str(tmp_path / "d"), "demo", "--faces", str(faces)])
    assert out.exit_code == 2 and "has no person folders with photos" in out.output, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception


def test_a_second_server_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    """Embedded mode: the spool, its journal and the resolver are one server's; a second
    `revisit serve` on the same --data (another port) is refused before it opens anything,
    naming the one that runs; once that one stops, the data directory is free again."""
    from benchmarks.distributed_harness import free_port, start_server

    env = {k: v for k, v in os.environ.items() if not k.startswith("REVISIT_")}
    env.update(REVISIT_DATA=str(tmp_path / "d"), REVISIT_PIPELINE__THREADS="1")
    port = free_port()
    first = start_server(env, port)
    try:
        out = subprocess.run([REVISIT, "serve", "--port", str(free_port())], env=env,
                             text=True, capture_output=True, timeout=120)
        _refused(out, "another revisit serve", f"pid {first.pid}", f":{port}",
                 "its own --data")
        assert out.returncode == 1
    finally:
        first.terminate()
        first.wait(60)
    again = start_server(env, free_port())  # the lock went with the first server
    again.terminate()
    assert again.wait(60) == 0
