"""Occupancy end to end on real Mall frames through the HTTP service (real people counter,
real face pipeline): a location with a capacity, the occupancy API with a door sign's
display key, the CLI history, an alert rule firing once per episode to a webhook this test
runs and again after the cooldown; and an exclusion zone that keeps a face from becoming
a sighting."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from tests.api.conftest import Env
from tests.conftest import lfw_photo
from tests.receivers import Received

from revisit.occupancy.zones import mask_polygon
from revisit.simulate.scenario import shared_data_dir

MALL = shared_data_dir() / "mall"
if not (MALL / "ground_truth.jsonl").is_file():
    pytest.skip(f"{MALL} is missing (../shared/data beside the repo)", allow_module_level=True)


def _truth() -> list[dict]:
    return [json.loads(line) for line in (MALL / "ground_truth.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def env(live_alerts: Env) -> Env:
    return live_alerts


def _ts(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def test_mall_occupancy_sign_history_and_alerts(env: Env, hook: tuple[str, Received],
                                                 tmp_path: Path) -> None:
    admin = env.auth("admin")
    roi = cv2.imread(str(MALL / "roi_mask.png"), cv2.IMREAD_GRAYSCALE)
    r = env.client.put("/v1/cameras/camA/occupancy", headers=admin,
                       json={"counting": True, "count_zone": mask_polygon(roi)})
    assert r.status_code == 200, r.text
    r = env.client.put("/v1/locations/101/capacity", headers=admin,
                       json={"capacity": 50, "amber_pct": 60, "red_pct": 75})
    assert r.status_code == 200, r.text
    # a typo in a place id is refused, not taken for a new store or camera
    for path, body in (("/v1/locations/999/capacity", {"capacity": 50}),
                       ("/v1/cameras/nocam/occupancy", {"counting": True})):
        r = env.client.put(path, headers=admin, json=body)
        assert r.status_code == 404 and "unknown" in r.json()["detail"], r.text
    r = env.client.post("/v1/locations/999/display-keys", headers=admin)
    assert r.status_code == 404, r.text
    r = env.client.put("/v1/alert-rules/full", headers=admin, json={
        "rule_id": "full", "location_id": "101", "above": 70, "clear_below": 50,
        "cooldown_s": 600, "webhook_url": hook[0]})
    assert r.status_code == 200, r.text
    # crowded and quiet frames of the held-out part, by their annotated counts
    truth = _truth()[100:]
    busy = [t for t in truth if t["count"] >= 44][:4]
    quiet = [t for t in truth if t["count"] <= 20][:4]
    assert len(busy) == 4 and len(quiet) == 4
    # minute: 0 quiet, 1 busy (alert), 2 busy (same episode), 3 quiet (clears),
    # 4 busy (inside the 10-minute cooldown: none), 5 quiet, 12 busy (alert again), 13 busy
    plan = [(0, quiet[0]), (1, busy[0]), (2, busy[1]), (3, quiet[1]), (4, busy[2]),
            (5, quiet[2]), (12, busy[3]), (13, quiet[3])]
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=13, seconds=5)
    for minute, t in plan:  # one batch per snapshot, in time order, as a camera sends them
        r = env.post_batch("cam_a", [{"path": MALL / "frames" / t["frame"], "camera_id": "camA",
                                      "ts": _ts(start + timedelta(minutes=minute))}])
        assert r.status_code == 202, r.text
        assert env.wait(r.json()["batch_id"])["status"] == "done"
    env.service.runtime.watcher.deliverer.wait()

    # the alert fired at minute 1 and at minute 12, each delivered once, signed
    alerts = env.client.get("/v1/alerts", headers=env.auth("analyst")).json()
    assert len(alerts) == 2, alerts
    assert [a["deliveries"][0]["ok"] for a in alerts] == [True, True]
    assert len(hook[1].json()) == 2 and {h["location_id"] for h in hook[1].json()} == {"101"}

    # history: per minute, the model's counts near the annotated ones
    hist = env.client.get("/v1/occupancy/history", headers=env.auth("analyst"), params={
        "from": start.date().isoformat(), "to": (start + timedelta(days=1)).date().isoformat()
    }).json()
    people = [m["people"] for m in hist["minutes"] if not m["zone"]]
    assert len(people) == len(plan)
    errors = [abs(p - t["count"]) for p, (_, t) in zip(people, plan, strict=True)]
    assert np.mean(errors) < 6, (people, [t["count"] for _, t in plan])

    # the CLI shows the same minutes (the store read beside the running service)
    from typer.testing import CliRunner

    from revisit.cli.main import app

    out = CliRunner().invoke(app, [
        "--data", str(env.service.settings.data), "occupancy", "-t", "acme",
        "--from", start.date().isoformat(), "--to", (start + timedelta(days=1)).date().isoformat(),
        "--format", "json"])
    assert out.exit_code == 0, out.output
    cli = json.loads(out.output)
    assert [m["people"] for m in cli["minutes"] if not m["zone"]] == people
    table = CliRunner().invoke(app, [
        "--data", str(env.service.settings.data), "occupancy", "-t", "acme",
        "--from", start.date().isoformat(), "--to", (start + timedelta(days=1)).date().isoformat()])
    assert table.exit_code == 0 and "101" in table.output and "People" in table.output

    # the door sign: its key reads this location's occupancy only
    made = env.client.post("/v1/locations/101/display-keys", headers=admin).json()
    sign = {"Authorization": f"Bearer {made['key']}"}
    now = env.client.get("/v1/locations/101/occupancy", headers=sign).json()
    assert now["capacity"] == 50 and now["sign"] in ("enter", "wait")
    assert abs(now["count"] - plan[-1][1]["count"]) < 8
    assert env.client.get("/v1/locations/203/occupancy", headers=sign).status_code == 403
    assert env.client.get("/v1/alerts", headers=sign).status_code == 401
    page = env.client.get(made["sign_url"].split("#")[0])
    assert page.status_code == 200 and 'const LOCATION = "101"' in page.text


def test_a_face_in_an_exclusion_zone_is_no_sighting(env: Env) -> None:
    admin = env.auth("admin")
    photo = cv2.imread(str(lfw_photo("Colin_Powell", 1)))  # 250 x 250, the face in the middle
    _ok, jpg = cv2.imencode(".jpg", photo)
    day = datetime(2024, 6, 3, 10, tzinfo=UTC)

    def sightings_after(image_id: str) -> int:
        r = env.post_batch("cam_b", [{"data": jpg.tobytes(), "camera_id": "camB",
                                      "image_id": image_id, "ts": _ts(day)}])
        st = env.wait(r.json()["batch_id"], key="cam_b")
        return st["sightings"]

    r = env.client.put("/v1/cameras/camB/occupancy", headers=admin, json={
        "exclude": [[[60, 60], [190, 60], [190, 190], [60, 190]]]})  # a screen showing a face
    assert r.status_code == 200
    env.service.runtime.zones.ttl_s = 0  # see the change at once
    assert sightings_after("on-the-screen") == 0
    env.client.put("/v1/cameras/camB/occupancy", headers=admin, json={"exclude": []})
    assert sightings_after("in-the-room") == 1
