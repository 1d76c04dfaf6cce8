"""The counting stage on a real Mall frame with the real person detector: zones split the
people exactly, a camera's own line calibrates, cameras without counting cost nothing."""

from __future__ import annotations

from datetime import UTC, datetime

import cv2
import pytest

from revisit.config.occupancy import CameraZones
from revisit.occupancy.counting import Counting, ZoneBook
from revisit.records import Frame
from revisit.simulate.scenario import shared_data_dir

MALL = shared_data_dir() / "mall" / "frames" / "seq_000401.jpg"
if not MALL.is_file():
    pytest.skip(f"{MALL} is missing (../shared/data beside the repo)", allow_module_level=True)
LEFT = [(0, 0), (320, 0), (320, 480), (0, 480)]


def test_zones_split_the_people_and_calibration_applies() -> None:
    img = cv2.imread(str(MALL))
    frame = Frame("default", "cam", "L1", "f1", datetime(2024, 5, 1, tzinfo=UTC))
    settings: dict[tuple[str, str], CameraZones] = {}
    counting = Counting(ZoneBook(lambda: settings, ttl_s=0))

    def count(z: CameraZones) -> dict[str, float]:
        settings[("default", "cam")] = z
        return {c.zone: c.count for c in counting.count(frame, img)}

    assert count(CameraZones(counting=False)) == {}
    whole = count(CameraZones(counting=True, named={"left half": LEFT}))
    assert whole[""] >= 15  # a busy Mall frame
    left = whole["left half"]
    right = count(CameraZones(counting=True, exclude=[LEFT]))[""]
    only_left = count(CameraZones(counting=True, count_zone=LEFT))[""]
    assert 0 < left < whole[""] and only_left == left and left + right == whole[""]
    calibrated = count(CameraZones(counting=True, scale=1.5, offset=2))[""]
    assert calibrated == pytest.approx(1.5 * whole[""] + 2)


def test_calibrate_counter_fits_and_saves_a_cameras_line(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from revisit.cli.main import app
    from revisit.occupancy.db import OccupancyDB
    from revisit.store.duckdb_store import DuckDBStore
    from revisit.tenancy.db import Tenancy

    truth = [json.loads(x) for x in (MALL.parent.parent / "ground_truth.jsonl")
             .read_text().splitlines()][:12]
    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join(json.dumps({"frame": t["frame"], "count": t["count"]})
                                for t in truth))
    data = ["--data", str(tmp_path / "d")]
    run = CliRunner()
    assert run.invoke(app, [*data, "admin", "calibrate-counter", "-t", "default", "mall",
                            "--labels", str(labels), "--frames", str(MALL.parent)]
                      ).exit_code == 2  # no zones yet: said so
    assert run.invoke(app, [*data, "admin", "set-zones", "-t", "default", "mall"]).exit_code == 0
    out = run.invoke(app, [*data, "admin", "calibrate-counter", "-t", "default", "mall",
                           "--labels", str(labels), "--frames", str(MALL.parent)])
    assert out.exit_code == 0, out.output
    before, after = (float(x) for x in out.output.split("mean error ")[1].split(")")[0]
                     .split(" -> "))
    assert after < before  # the camera's own line fits it better than the raw count
    with DuckDBStore(tmp_path / "d" / "revisit.duckdb") as store:
        z = OccupancyDB(store, Tenancy(store)).camera("default", "mall")
    assert z is not None and z.counting and z.scale is not None and z.offset is not None
