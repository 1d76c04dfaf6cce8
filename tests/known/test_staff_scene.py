"""Staff walking among customers, end to end: three people of
``../shared/data/deepface-ids`` enrolled as staff from three photos each, then a simulated
scene (their other photos and LFW customers pasted into mall frames, with truth) through
the whole pipeline: no staff in the visitor report, all of them in the staff presence
report; a watchlist person's sighting sends exactly one alert to a webhook this test runs;
each step is in the audit log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from benchmarks.staff import _identity_of_sightings
from tests.api.conftest import Env
from tests.receivers import Received

from revisit.ingest.manifest import read_manifest
from revisit.report.query import SightingQuery
from revisit.simulate.scenario import ScenarioSpec, build_scenario, shared_data_dir

IDS = shared_data_dir() / "deepface-ids"
LFW = shared_data_dir() / "lfw-dev"
if not IDS.is_dir() or not LFW.is_dir():
    pytest.skip("needs ../shared/data/deepface-ids and lfw-dev", allow_module_level=True)
STAFF = ("id_01", "id_03", "id_10")
# LFW customers who are none of the deepface-ids people (id_01 is Angelina Jolie, id_02
# Jennifer Aniston: an SFace centroid cosine of 0.8 with their LFW photos)
WATCHED = "id_04"
CUSTOMERS = ("Colin_Powell", "Lleyton_Hewitt", "Andre_Agassi", "Alvaro_Uribe",
             "Ariel_Sharon", "Gloria_Macapagal_Arroyo", "Hugo_Chavez", "Jean_Chretien")


@pytest.fixture(scope="module")
def env(live_alerts: Env) -> Env:
    return live_alerts


def _photos(person: str) -> list[Path]:
    return sorted((IDS / person).glob("*.jpg"))


def test_staff_among_customers(env: Env, hook: tuple[str, Received], tmp_path: Path) -> None:
    admin = env.auth("admin")
    staff_ids = {}
    for person in STAFF:  # enrolled from three photos each
        r = env.client.post("/v1/enrolments", headers=admin, data={
            "group": "staff", "label": person, "reason": "works in the stores"},
            files=[("photos", (p.name, p.read_bytes(), "image/jpeg"))
                   for p in _photos(person)[:3]])
        assert r.status_code == 201, r.text
        staff_ids[r.json()["visitor_id"]] = person
    # the scene: the staff's other photos and LFW customers, in two stores over two days
    faces = tmp_path / "faces"
    for person in STAFF:
        (faces / person).mkdir(parents=True)
        for p in _photos(person)[3:]:
            shutil.copy(p, faces / person / p.name)
    for person in CUSTOMERS:
        shutil.copytree(LFW / person, faces / person)
    spec = ScenarioSpec(stores=2, cameras_per_store=1, days=2, visitors=len(STAFF) + len(CUSTOMERS),
                        seed=3, workers=1, tenant="acme", regular_share=0.6,
                        multi_store_share=0.3, companion_share=0.0, empty_frame_share=0.0)
    summary = build_scenario(faces, tmp_path / "scene", spec)
    truth = json.loads(summary.truth.read_text())
    staff_seen = {v["identity"] for v in truth["visitors"]} & set(STAFF)
    assert staff_seen == set(STAFF)  # they walk among the customers
    env.service.runtime.ingest(read_manifest(summary.manifest))

    days = {"from": spec.start.isoformat(), "to": "2024-01-02"}
    report = env.client.get("/v1/reports/unique-visitors", headers=env.auth("analyst"),
                            params={**days, "page_size": 1000}).json()
    reported = {v["visitor_id"] for v in report["visitors"]}
    assert not reported & set(staff_ids)  # no staff in the visitor report
    # per sighting, by the truth: staff found as staff, customers never taken for staff
    identity = _identity_of_sightings(env.service.runtime.store, truth)
    rows = [s for s in env.service.runtime.store.sightings(SightingQuery(tenant="acme"))
            if s["face_image_id"] in identity]
    staff_rows = [s for s in rows if identity[s["face_image_id"]] in STAFF]
    missed = [s for s in staff_rows if staff_ids.get(s["face_id"]) != identity[s["face_image_id"]]]
    taken = [s for s in rows if identity[s["face_image_id"]] not in STAFF
             and s["face_id"] in staff_ids]
    assert staff_rows and not taken
    assert len(missed) <= 0.1 * len(staff_rows)
    assert len(CUSTOMERS) - 1 <= len(reported) <= len(CUSTOMERS) + 1  # missed staff would add
    presence = env.client.get("/v1/reports/staff-presence", headers=admin, params=days).json()
    present = {p["label"] for p in presence["staff"]}
    assert present == set(STAFF)
    assert all(p["hours_present"] > 0 for p in presence["staff"])

    # the watchlist: turned on with a purpose, one person enrolled, one sighting, one alert
    r = env.client.put("/v1/watchlist", headers=admin, json={
        "enabled": True, "purpose": "people banned from the stores after thefts",
        "webhook_url": hook[0]})
    assert r.status_code == 200
    r = env.client.post("/v1/enrolments", headers=admin, data={
        "group": "watchlist", "label": "banned 2024-01", "reason": "theft, police report 17"},
        files=[("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in _photos(WATCHED)[:2]])
    assert r.status_code == 201, r.text
    env.service.runtime.watchlist.ttl_s = 0
    seen = env.post_batch("cam_a", [{"path": _photos(WATCHED)[3], "camera_id": "camA",
                                     "ts": "2024-01-03T10:00:00Z"}])
    assert env.wait(seen.json()["batch_id"])["sightings"] == 1
    env.service.runtime.watcher.deliverer.wait()
    assert len(hook[1].json()) == 1 and hook[1].json()[0]["location_id"] == "101"

    actions = [a["action"] for a in env.client.get("/v1/admin/audit", headers=admin,
                                                   params={"limit": 500}).json()]
    assert actions.count("known.enrol") == len(STAFF) + 1
    assert {"known.presence.read", "watchlist.enable", "watchlist.alert"} <= set(actions)
