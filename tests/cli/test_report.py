"""``revisit report`` as the specification shows it: its columns and header, stores by
name, and a filter naming no place of the tenant refused (not an empty report)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from revisit.config import load_settings
from revisit.store.duckdb_store import DuckDBStore
from revisit.store.testing import T0, at, batch, sighting
from revisit.tenancy.db import Tenancy

REVISIT = str(Path(sys.executable).with_name("revisit"))
DAY = T0.date().isoformat()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    settings = load_settings(None, data=tmp_path)
    with DuckDBStore(settings.db_path) as store:
        store.write(batch([
            sighting("V-000001", at(0), "101"), sighting("V-000001", at(120), "101"),
            sighting("V-000001", at(300), "203"), sighting("V-000002", at(10), "203"),
        ]))
        t = Tenancy(store)
        t.create_tenant("default")
        t.add_location("default", "101", "Store #101")
        t.add_location("default", "203", "Store #203")
        t.add_camera("default", "203-cam1", "203")
        t.set_group("default", "harbour", ["203-cam1"])
    return tmp_path


def _report(data: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVISIT_")}
    env["REVISIT_DATA"] = str(data)
    return subprocess.run([REVISIT, "report", "--from", DAY, "--to", DAY, *args], env=env,
                          text=True, capture_output=True, timeout=120)


def test_table_and_csv_as_specified(data: Path) -> None:
    table = _report(data)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].startswith("Time Period:") and lines[2].startswith("Camera Group:")
    assert lines[3] == "Total Unique Visitors: 2"
    head = next(ln for ln in lines if ln.startswith("Visitor ID"))
    assert re.split(r"\s{2,}", head)[:4] == ["Visitor ID", "Total Appearances", "Locations Visited",
                                    "Visit Frequency per Location"]
    assert any("Store #101, Store #203" in ln and "Store #101: 2, Store #203: 1" in ln
               for ln in lines)
    out = _report(data, "--format", "csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert rows, (out.stdout, out.stderr)
    v1 = next(r for r in rows if r["Visitor ID"] == "V-000001")
    assert v1["Total Appearances"] == "3"
    assert v1["Locations Visited"] == "Store #101, Store #203"
    assert v1["Visit Frequency per Location"] == "Store #101: 2, Store #203: 1"


def test_an_unknown_filter_is_an_error(data: Path) -> None:
    out = _report(data, "--locations", "NOPE")
    assert out.returncode != 0 and "location 'NOPE'" in out.stderr
    assert "Traceback" not in out.stderr
    out = _report(data, "--cameras", "nope-cam")
    assert out.returncode != 0 and "camera 'nope-cam'" in out.stderr
    assert _report(data, "--locations", "101").returncode == 0
    out = _report(data, "--tenant", "acmee")  # a typo read as "no visitors" before
    assert out.returncode == 2 and "unknown tenant 'acmee'" in out.stderr


def test_a_camera_group_filters_and_is_named(data: Path) -> None:
    out = _report(data, "--group", "harbour", "--format", "csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert {r["Visitor ID"] for r in rows} == {"V-000001", "V-000002"}
    assert all(r["Locations Visited"] == "Store #203" for r in rows)
    table = _report(data, "--group", "harbour").stdout
    assert "Camera Group:          group harbour" in table
    bad = _report(data, "--group", "nope")
    assert bad.returncode != 0 and "camera group 'nope'" in bad.stderr


def test_analytics_on_the_cli(data: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVISIT_")}
    env["REVISIT_DATA"] = str(data)
    out = subprocess.run([REVISIT, "analytics", "--from", DAY, "--to", DAY], env=env,
                         text=True, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # V-000001: 101 at 09:00 and 11:00 (two visits), 203 at 14:00; V-000002: 203 at 09:10
    assert "Unique visitors 2: new 2" in out.stdout
    assert re.search(r"Store #101\s+2\s+0m15s", out.stdout), out.stdout
    assert "09h 2, 11h 1, 14h 1" in out.stdout
    js = subprocess.run([REVISIT, "analytics", "--from", DAY, "--to", DAY, "--format", "json",
                         "--interval", "1m"], env=env, text=True, capture_output=True,
                        timeout=120)
    assert json.loads(js.stdout)["dwell"]["all"]["median_s"] == 60.0
    c = subprocess.run([REVISIT, "analytics", "--from", DAY, "--to", DAY, "--format", "csv"],
                       env=env, text=True, capture_output=True, timeout=120)
    rows = list(csv.DictReader(io.StringIO(c.stdout)))
    assert {"section": "dwell", "location_id": "101", "name": "Store #101", "key": "visits",
            "value": "2"} in rows
    assert {"section": "affinity", "location_id": "101", "name": "Store #101",
            "key": "also:203", "value": "1.0"} in rows  # V1, the one visitor of 101


def test_days_and_hours_in_a_timezone(data: Path) -> None:
    # the sightings are 09:00-14:00 UTC on DAY: 18:00-23:00 in Tokyo, the same day
    table = _report(data, "--timezone", "Asia/Tokyo")
    assert table.returncode == 0, table.stderr
    assert f"{DAY} (Asia/Tokyo)" in table.stdout and "Total Unique Visitors: 2" in table.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVISIT_")}
    env["REVISIT_DATA"] = str(data)
    out = subprocess.run([REVISIT, "analytics", "--from", DAY, "--to", DAY,
                          "--timezone", "Asia/Tokyo"], env=env, text=True, capture_output=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "18h 2, 20h 1, 23h 1" in out.stdout
    bad = _report(data, "--timezone", "Asia/Tokio")
    assert bad.returncode == 2 and "unknown timezone 'Asia/Tokio'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_parquet_exports(data: Path, tmp_path: Path) -> None:
    import duckdb

    out = tmp_path / "report.parquet"
    r = _report(data, "--format", "parquet", "--output", str(out))
    assert r.returncode == 0, r.stderr
    rows = duckdb.sql(f"SELECT visitor_id, total_appearances, locations FROM '{out}' "
                      "ORDER BY visitor_id").fetchall()
    assert rows[0][0] == "V-000001" and rows[0][1] == 3
    assert rows[0][2][0] == {"location_id": "101", "name": "Store #101", "visits": 2}
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVISIT_")}
    env["REVISIT_DATA"] = str(data)
    s_out = tmp_path / "sightings.parquet"
    s = subprocess.run([REVISIT, "sightings", "--format", "parquet", "--output", str(s_out)],
                       env=env, text=True, capture_output=True, timeout=120)
    assert s.returncode == 0, s.stderr
    assert duckdb.sql(f"SELECT count(*) FROM '{s_out}'").fetchall()[0][0] == 4
    assert _report(data, "--format", "parquet").returncode != 0  # a file is needed


@pytest.mark.parametrize("args", [
    ["sightings"], ["consolidate", "--dry-run"], ["visitors", "merges"],
    ["occupancy", "--from", DAY, "--to", DAY], ["admin", "alerts"], ["admin", "audit"],
    ["known", "list"], ["known", "presence", "--from", DAY, "--to", DAY],
])
def test_every_reading_command_names_an_unknown_tenant(data: Path, args: list[str]) -> None:
    """A misspelt tenant is exit 2 naming it, never an empty answer read as "nobody"."""
    from typer.testing import CliRunner

    from revisit.cli.main import app

    runner = CliRunner()
    out = runner.invoke(app, ["--data", str(data), *args, "--tenant", "acmee"])
    assert out.exit_code == 2 and "unknown tenant 'acmee'" in out.output, out.output
    out = runner.invoke(app, ["--data", str(data), *args, "--tenant", "default"])
    assert out.exit_code == 0, out.output


def test_sightings_names_an_unknown_place(data: Path) -> None:
    from typer.testing import CliRunner

    from revisit.cli.main import app

    out = CliRunner().invoke(app, ["--data", str(data), "sightings", "--locations", "NOPE"])
    assert out.exit_code == 2 and "location 'NOPE'" in out.output, out.output


@pytest.mark.parametrize(("days", "words"), [
    (["--from", "0001-01-01", "--to", "9999-12-31"], "from 0001-01-01 is outside"),
    (["--from", DAY, "--to", "2199-12-31"], None),
    (["--to", "9999-12-31"], "to 9999-12-31 is outside"),
    (["--from", "2024-02-01", "--to", "2024-01-01"], "to 2024-01-01 is before from 2024-02-01"),
])
def test_sightings_refuses_days_as_the_report_does(data: Path, days: list[str],
                                                  words: str | None) -> None:
    """A day out of range was a traceback and --to before --from an empty export (exit 0)."""
    from typer.testing import CliRunner

    from revisit.cli.main import app

    out = CliRunner().invoke(app, ["--data", str(data), "sightings", *days])
    if words is None:
        assert out.exit_code == 0 and out.output.count("\n") == 5, out.output  # header + 4
        return
    flat = " ".join(re.sub("[│╭╮╰╯─]", " ", out.output).split())
    assert out.exit_code == 2 and words in flat, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception


@pytest.mark.parametrize(("days", "words"), [
    (["--from", "9999-12-31", "--to", "9999-12-31"], "from 9999-12-31 is outside"),
    (["--from", "0001-01-01", "--to", DAY], "from 0001-01-01 is outside"),
    (["--from", DAY, "--to", "2000-01-01"], "to 2000-01-01 is before from"),
])
def test_occupancy_refuses_days_as_the_report_does(data: Path, days: list[str],
                                                   words: str) -> None:
    """A day past 9999-12-30 was an OverflowError traceback."""
    from typer.testing import CliRunner

    from revisit.cli.main import app

    out = CliRunner().invoke(app, ["--data", str(data), "occupancy", *days])
    flat = " ".join(re.sub("[│╭╮╰╯─]", " ", out.output).split())
    assert out.exit_code == 2 and words in flat, out.output
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception


def test_occupancy_names_an_unknown_location(data: Path) -> None:
    """A misspelt location was an empty history with exit 0 (the API answers 403)."""
    from typer.testing import CliRunner

    from revisit.cli.main import app

    runner = CliRunner()
    days = ["occupancy", "--from", DAY, "--to", DAY]
    out = runner.invoke(app, ["--data", str(data), *days, "--locations", "101,NOPE"])
    assert out.exit_code == 2 and "location 'NOPE'" in out.output, out.output
    assert "101" not in out.output.replace("NOPE", ""), out.output  # only the unknown one
    out = runner.invoke(app, ["--data", str(data), *days, "--locations", "101,203"])
    assert out.exit_code == 0, out.output


@pytest.mark.parametrize("args", [
    ["occupancy", "--from", DAY, "--to", DAY], ["admin", "alerts", "-t", "default"],
    ["admin", "audit", "-t", "default"], ["known", "list", "-t", "default"],
    ["known", "presence", "-t", "default", "--from", DAY, "--to", DAY],
])
def test_reading_commands_name_a_data_directory_without_data(tmp_path: Path,
                                                             args: list[str]) -> None:
    """A misspelt --data made these create an empty store there and answer empty, exit 0."""
    from typer.testing import CliRunner

    from revisit.cli.main import app

    missing = tmp_path / "revisit-dat"
    out = CliRunner().invoke(app, ["--data", str(missing), *args])
    assert out.exit_code == 2 and f"no data in {missing}" in out.output, out.output
    assert not missing.exists()
