"""`revisit visitors show|merge|split|merges` and `revisit consolidate` on a real store:
reports after a merge count one visitor, after the split exactly what they counted before."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from revisit.cli.main import app
from revisit.store.duckdb_store import DuckDBStore
from revisit.store.testing import at, batch, sighting

runner = CliRunner()


def _seed(data) -> None:  # type: ignore[no-untyped-def]
    store = DuckDBStore(data / "revisit.duckdb")
    store.write(batch([
        sighting("V-000001", at(0), "S01"), sighting("V-000001", at(5), "S01"),
        sighting("V-000002", at(0, day=2), "S01"), sighting("V-000002", at(0, day=3), "S02"),
        sighting("V-000003", at(0, day=1), "S02"),
    ]))
    store.close()


def _report(data) -> dict:  # type: ignore[no-untyped-def]
    r = runner.invoke(app, ["--data", str(data), "report", "--from", "2024-03-01",
                            "--to", "2024-03-31", "--format", "json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_merge_then_split_round_trips_the_report(tmp_path) -> None:
    data = tmp_path / "d"
    _seed(data)
    before = _report(data)
    r = runner.invoke(app, ["--data", str(data), "visitors", "merge", "V-000001", "V-000002"])
    assert r.exit_code == 0, r.output
    merged = _report(data)
    assert _unique(merged) == _unique(before) - 1
    rows = {row_id(r): r for r in _rows(merged)}
    assert "V-000002" not in rows and _visits(rows["V-000001"]) == 3
    show = runner.invoke(app, ["--data", str(data), "visitors", "show", "V-000002", "--json"])
    assert show.exit_code == 0, show.output
    info = json.loads(show.stdout)
    assert info["visitor"] == "V-000001" and info["merged_ids"] == ["V-000002"]
    assert info["sightings"] == 4 and info["stores"] == {"S01": 3, "S02": 1}
    r = runner.invoke(app, ["--data", str(data), "visitors", "split", "V-000002"])
    assert r.exit_code == 0, r.output
    assert _report(data) == before
    log = runner.invoke(app, ["--data", str(data), "visitors", "merges", "--json"])
    assert json.loads(log.stdout)[0]["split_at"] is not None


def test_errors_are_readable(tmp_path) -> None:
    data = tmp_path / "d"
    _seed(data)
    r = runner.invoke(app, ["--data", str(data), "visitors", "split", "V-000001"])
    assert r.exit_code == 1 and "not merged" in r.output
    r = runner.invoke(app, ["--data", str(data), "visitors", "merge", "V-000001", "V-000001"])
    assert r.exit_code == 1


def test_an_unknown_visitor_is_an_input_error(tmp_path) -> None:
    """Exit code 2 with one line naming it, as for every other unknown id the CLI is
    given (a tenant, a location, a camera)."""
    data = tmp_path / "d"
    _seed(data)
    for args in (["visitors", "show", "V-00FFFF"],
                 ["visitors", "crops", "V-00FFFF", "--out", str(tmp_path / "c")],
                 ["visitors", "merge", "V-000001", "V-00FFFF"],
                 ["visitors", "split", "V-00FFFF"],
                 ["admin", "erase-visitor", "-t", "default", "V-00FFFF"]):
        r = runner.invoke(app, ["--data", str(data), *args])
        assert r.exit_code == 2, (args, r.output)
        assert r.output == "error: no visitor V-00FFFF in tenant default\n", args
    r = runner.invoke(app, ["--data", str(data), "admin", "revoke-key", "-t", "default",
                            "k-nope"])
    assert r.exit_code == 2 and r.output == "error: no key k-nope in tenant default\n"


def test_consolidate_dry_run_changes_nothing(tmp_path) -> None:
    data = tmp_path / "d"
    _seed(data)
    before = _report(data)
    r = runner.invoke(app, ["--data", str(data), "consolidate", "--dry-run", "--threshold", "0.0"])
    assert r.exit_code == 0, r.output
    assert "merges proposed" in r.output
    assert _report(data) == before


def _rows(report: dict) -> list[dict]:
    return next(v for k, v in report.items() if k != "header")


def row_id(row: dict) -> str:
    return row["visitor_id"]


def _visits(row: dict) -> int:
    return int(row["total_appearances"])


def _unique(report: dict) -> int:
    return int(report["header"]["unique_visitors"])


def _ingest_with_crops(tmp_path: Path) -> Path:
    """Two photos of one person ingested with --keep-crops; the data directory."""
    from tests.conftest import lfw_photo

    data = tmp_path / "d"
    lines = [json.dumps({"image": str(lfw_photo("Colin_Powell", i)), "camera_id": "c1",
                         "location_id": "S01", "ts": f"2024-03-01T10:00:{5 * i:02d}Z"})
             for i in (1, 2)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    r = runner.invoke(app, ["--data", str(data), "ingest", str(tmp_path / "m.jsonl"),
                            "--keep-crops", "--no-progress"])
    assert r.exit_code == 0, r.output
    return data


def test_kept_crops_are_exported_and_erased_with_the_visitor(tmp_path) -> None:
    """`ingest --keep-crops` on real photos: the visitor's crops come out as JPEGs of the
    aligned face; erasing the visitor leaves none in the store."""
    import cv2

    data = _ingest_with_crops(tmp_path)
    out = tmp_path / "crops"
    r = runner.invoke(app, ["--data", str(data), "visitors", "crops", "V-000001", "--out",
                            str(out)])
    assert r.exit_code == 0 and "2 crop(s)" in r.output, r.output
    files = sorted(out.glob("*.jpg"))
    assert len(files) == 2
    assert oct(out.stat().st_mode & 0o777) == "0o700"
    assert all(oct(f.stat().st_mode & 0o777) == "0o600" for f in files)  # faces: owner only
    assert cv2.imread(str(files[0])).shape == (112, 112, 3)
    r = runner.invoke(app, ["--data", str(data), "admin", "erase-visitor", "-t", "default",
                            "V-000001"])
    assert r.exit_code == 0, r.output
    store = DuckDBStore(data / "revisit.duckdb")
    try:
        assert store.stats("default")["face_crops"] == 0
    finally:
        store.close()


def test_crop_files_of_an_earlier_version_are_exported_too(tmp_path) -> None:
    """A store upgraded from a version that wrote crops as files: the export finds both."""

    data = _ingest_with_crops(tmp_path)
    store = DuckDBStore(data / "revisit.duckdb")
    try:  # one crop as the earlier version kept it: a file of its day
        with store.transaction() as s:
            face, jpeg = s.execute("SELECT face_image_id, jpeg FROM face_crops LIMIT 1").fetchone()
            s.execute("DELETE FROM face_crops WHERE face_image_id = ?", [face])
    finally:
        store.close()
    day = data / "crops" / "default" / "2024-03-01"
    day.mkdir(parents=True)
    (day / f"{face}.jpg").write_bytes(bytes(jpeg))
    out = tmp_path / "crops"
    r = runner.invoke(app, ["--data", str(data), "visitors", "crops", "V-000001", "--out",
                            str(out)])
    assert r.exit_code == 0 and "2 crop(s)" in r.output, r.output
    assert (out / f"20240301_{face}.jpg").read_bytes() == bytes(jpeg)
