"""Known people through the HTTP service with the real models on real photos: staff
enrolled from photos are recognised on camera and left out of the report; a photo with no
usable face is refused with the reason; the watchlist is off until an admin states its
purpose, then a match raises an audited alert delivered to a webhook this test runs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from tests.api.conftest import Env
from tests.conftest import lfw_photo
from tests.receivers import Received


@pytest.fixture(scope="module")
def env(live_alerts: Env) -> Env:
    return live_alerts


def _enrol(env: Env, group: str, label: str, photos: list[Path]) -> object:
    return env.client.post(
        "/v1/enrolments", headers=env.auth("admin"),
        data={"group": group, "label": label, "reason": "test enrolment of a known person"},
        files=[("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in photos])


def _post(env: Env, photo: Path, ts: str) -> dict:
    r = env.post_batch("cam_a", [{"path": photo, "camera_id": "camA", "ts": ts}])
    assert r.status_code == 202, r.text
    return env.wait(r.json()["batch_id"])


def test_staff_from_photos_are_recognised_and_left_out(env: Env) -> None:
    blank = np.full((300, 300, 3), 128, np.uint8)
    no_face = Path(env.service.settings.data) / "wall.jpg"
    cv2.imwrite(str(no_face), blank)
    r = _enrol(env, "staff", "Colin (manager)", [no_face])
    assert r.status_code == 422 and "no usable face" in r.json()["detail"]
    r = _enrol(env, "staff", "Colin (manager)", [lfw_photo("Colin_Powell", 1),
                                                 lfw_photo("Colin_Powell", 2)])
    assert r.status_code == 201, r.text
    staff_id = r.json()["visitor_id"]
    # on camera: the manager (another photo of him) and a customer
    _post(env, lfw_photo("Colin_Powell", 5), "2024-04-02T10:00:00Z")
    _post(env, lfw_photo("Angelina_Jolie", 1), "2024-04-02T10:05:00Z")
    seen = env.client.get("/v1/visitors/" + staff_id, headers=env.auth("admin")).json()
    assert seen["sightings"] == 1  # the manager's camera face joined his enrolment
    rows = env.report(**{"from": "2024-04-02", "to": "2024-04-02"}).json()
    ids = {v["visitor_id"] for v in rows["visitors"]}
    assert staff_id not in ids and len(ids) == 1  # only the customer
    presence = env.client.get("/v1/reports/staff-presence", headers=env.auth("admin"),
                              params={"from": "2024-04-02", "to": "2024-04-02"}).json()
    assert [(p["label"], p["location_id"]) for p in presence["staff"]] == [
        ("Colin (manager)", "101")], seen
    assert env.client.get("/v1/reports/staff-presence", headers=env.auth("analyst"),
                          params={"from": "2024-04-02", "to": "2024-04-02"}).status_code == 403


def test_watchlist_is_off_until_its_purpose_is_stated(env: Env, hook: tuple[str, Received]) -> None:
    r = _enrol(env, "watchlist", "banned: shoplifting 2024-03", [lfw_photo("Andre_Agassi", 1)])
    assert r.status_code == 422 and "watchlist is off" in r.json()["detail"]
    r = env.client.put("/v1/watchlist", headers=env.auth("admin"),
                       json={"enabled": True, "purpose": "too short"})
    assert r.status_code == 422  # a purpose of at least 10 characters
    r = env.client.put("/v1/watchlist", headers=env.auth("admin"), json={
        "enabled": True, "purpose": "people banned from the store after a theft",
        "webhook_url": hook[0]})
    assert r.status_code == 200, r.text
    r = _enrol(env, "watchlist", "banned: shoplifting 2024-03", [lfw_photo("Andre_Agassi", 1),
                                                                 lfw_photo("Andre_Agassi", 2)])
    assert r.status_code == 201, r.text
    env.service.runtime.watchlist.ttl_s = 0  # see the switch at once
    _post(env, lfw_photo("Andre_Agassi", 4), "2024-04-03T11:00:00Z")
    _post(env, lfw_photo("Andre_Agassi", 5), "2024-04-03T11:01:00Z")  # same visit: no 2nd alert
    env.service.runtime.watcher.deliverer.wait()
    assert len(hook[1].json()) == 1 and hook[1].json()[0]["location_id"] == "101"
    assert "banned: shoplifting" in hook[1].json()[0]["message"]
    alerts = env.client.get("/v1/watchlist/alerts", headers=env.auth("admin")).json()
    assert len(alerts) == 1 and alerts[0]["deliveries"][0]["ok"]
    audit = env.client.get("/v1/admin/audit", headers=env.auth("admin")).json()
    actions = [a["action"] for a in audit]
    assert {"watchlist.enable", "watchlist.alert", "watchlist.alerts.read",
            "known.enrol"} <= set(actions)
