"""End to end over HTTP with real models on real faces: camera key in, analyst report out,
retries not double-counted, erasure removes the visitor. One module-scoped service."""

from __future__ import annotations

import csv
import io

import pytest
from tests.api.conftest import Env, photo

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _items() -> list[dict]:
    # two photos of one person at store 101, one of another person; each LFW photo has one
    # central face
    return [
        {"path": photo("Colin_Powell", 1), "camera_id": "camA",
         "ts": "2024-05-02T10:00:00+02:00", "image_id": "cp-1"},
        {"path": photo("Colin_Powell", 2), "camera_id": "camA",
         "ts": "2024-05-02T10:05:00+02:00", "image_id": "cp-2"},
        {"path": photo("Gerhard_Schroeder", 1), "camera_id": "camA",
         "ts": "2024-05-02T10:07:00+02:00"},  # no image_id: content id
    ]


@pytest.fixture(scope="module")
def posted(live: Env) -> dict:
    r = live.post_batch("cam_a", _items())
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["frames"] == 3 and body["duplicates"] == 0
    st = live.wait(body["batch_id"])
    assert st["status"] == "done", st
    return st


def test_batch_appears_in_analyst_report(live: Env, posted: dict) -> None:
    assert posted["processed"] == 3 and posted["faces"] == 3 and posted["sightings"] == 3
    r = live.report()
    assert r.status_code == 200
    body = r.json()
    assert body["header"]["total_sightings"] == 3
    assert body["header"]["unique_visitors"] == 2  # Powell twice, Blair once
    assert body["total"] == 2
    top = body["visitors"][0]
    assert top["total_appearances"] == 1 and top["visits_per_location"] == {"101": 1}
    assert top["first_seen"] == "2024-05-02T08:00:00Z"
    # CSV: the same rows, streamed
    r = live.report(format="csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    expected = sorted(v["visitor_id"] for v in body["visitors"])
    assert sorted(x["Visitor ID"] for x in rows) == expected
    assert sum(int(x["Sightings"]) for x in rows) == 3
    # other tenant: nothing
    other = live.report("other_analyst").json()
    assert other["header"]["unique_visitors"] == 0 and other["visitors"] == []
    # metrics counted the work
    text = live.client.get("/metrics").text
    assert 'revisit_frames_processed_total{tenant="all"} 3.0' in text
    assert 'revisit_new_visitors_total{tenant="all"} 2.0' in text


def test_report_filters_pages_and_summary(live: Env, posted: dict) -> None:
    assert live.report(camera_group="harbour").json()["header"]["unique_visitors"] == 0
    assert live.report(locations="101").json()["header"]["unique_visitors"] == 2
    p1 = live.report(page_size=1, sort="visitor_id").json()
    p2 = live.report(page_size=1, page=2, sort="visitor_id").json()
    assert p1["pages"] == 2
    assert p1["visitors"][0]["visitor_id"] < p2["visitors"][0]["visitor_id"]
    assert live.report(sort="nonsense").status_code == 422
    r = live.client.get("/v1/reports/summary", params={"from": "2024-05-01", "to": "2024-05-03"},
                        headers=live.auth("analyst"))
    s = r.json()
    assert s["totals"]["unique_visitors"] == 2 and s["totals"]["sightings"] == 3
    assert [d["unique_visitors"] for d in s["daily"]] == [0, 2, 0]
    assert s["histogram"][0] == {"visits": "1", "visitors": 2}
    assert s["locations"][0]["location_id"] == "101"
    assert s["locations"][0]["name"] == "Main Street"


def test_retried_batch_is_not_double_counted(live: Env, posted: dict) -> None:
    before = live.report().json()["header"]
    r = live.post_batch("cam_a", _items())
    assert r.status_code == 202
    assert r.json()["duplicates"] == 3
    st = live.wait(r.json()["batch_id"])
    assert st["status"] == "done" and st["sightings"] == 0
    assert live.report().json()["header"] == before
    assert live.service.runtime.store.stats("acme")["frames"] == 3


def test_erasure_removes_visitor_from_report(live: Env, posted: dict) -> None:
    visitors = live.report().json()["visitors"]
    # Powell: the visitor with two sightings
    target = next(v for v in visitors if v["sightings"] == 2)["visitor_id"]
    assert live.client.delete(f"/v1/visitors/{target}",
                              headers=live.auth("other_admin")).status_code == 404
    r = live.client.delete(f"/v1/visitors/{target}", headers=live.auth("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["erased"]["sightings"] == 2
    after = live.report().json()
    assert target not in {v["visitor_id"] for v in after["visitors"]}
    assert after["header"]["unique_visitors"] == 1
    assert live.client.get(f"/v1/visitors/{target}", headers=live.auth("admin")).status_code == 404
    # gone from the face index: a new photo of him is a new visitor, not the erased one
    r = live.post_batch("cam_a", [{"path": photo("Colin_Powell", 3), "camera_id": "camA",
                                   "ts": "2024-05-03T10:00:00+02:00"}])
    st = live.wait(r.json()["batch_id"])
    assert st["sightings"] == 1 and st["new_visitors"] == 1
    assert target not in {v["visitor_id"] for v in live.report().json()["visitors"]}
    audit = live.client.get("/v1/admin/audit", headers=live.auth("admin")).json()
    assert any(a["action"] == "visitor.erase" and a["detail"]["visitor_id"] == target
               for a in audit)
