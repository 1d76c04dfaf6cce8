"""The hostile-client probes of the hardening issue, one test each: every input that once
answered 500, lost accepted frames or leaked across tenants, with what it must do now.

No models run here (``processing=False`` unless stated): these are door checks.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from tests.api.conftest import Env


def _jpeg(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return cv2.imencode(".jpg", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))[1].tobytes()


def _png(w: int, h: int) -> bytes:
    data = bytearray(cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes())
    data[16:24] = w.to_bytes(4, "big") + h.to_bytes(4, "big")  # what the header claims
    return bytes(data)


NOW = datetime.now(UTC).replace(microsecond=0)
GOOD_TS = (NOW - timedelta(hours=1)).isoformat()


def _post(env: Env, items: list[dict], key: str = "cam_a") -> object:
    return env.post_batch(key, [{"camera_id": "camA", "data": _jpeg(i), **it}
                                for i, it in enumerate(items)])


@pytest.mark.parametrize("bad_ts", [
    "0001-01-01T00:00:00+00:00", "9999-12-30T00:00:00+00:00", "9999-12-31T23:59:59+00:00",
    "9999-12-31T23:00:00-05:00", "1900-01-01T00:00:00Z", "2100-01-01T00:00:00Z",
    GOOD_TS + "\x00", "1999-12-31T23:59:59Z", (NOW + timedelta(days=2)).isoformat(),
], ids=["year-1", "year-9999", "last-second", "past-9999-utc", "1900", "2100", "nul-byte",
        "before-window", "2-days-ahead"])  # fixed ids: parallel workers collect at other times
def test_a_bad_timestamp_is_refused_per_frame_and_good_frames_go_on(env: Env, bad_ts: str) -> None:
    r = _post(env, [{"ts": GOOD_TS}, {"ts": bad_ts, "file": "bad.jpg"}])
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["frames"] == 2 and body["status"] == "queued"  # frames in the request
    assert [x["file"] for x in body["rejected"]] == ["bad.jpg"]
    assert "ts" in body["rejected"][0]["reason"]
    st = env.client.get(body["status_url"], headers=env.auth("cam_a")).json()
    assert st["status"] == "queued" and st["rejected"][0]["file"] == "bad.jpg"
    # nothing but bad timestamps: 422 naming them, nothing queued
    r = _post(env, [{"ts": bad_ts}])
    assert r.status_code == 422 and "ts" in r.json()["detail"]


def test_a_frame_past_the_tenants_retention_is_refused_per_frame(env: Env) -> None:
    """acme keeps 30 days: a 90-day-old snapshot (an archive back-fill) is refused at the
    door, named with the retention, and the batch's other frame goes on; a retention
    changed over the API applies to the next batch."""
    env.service.runtime.retention.enabled = True  # privacy.retention_at_door (tests/conftest.py)
    env.service.tenancy.set_retention("acme", 30)
    old = (NOW - timedelta(days=90)).isoformat()
    r = _post(env, [{"ts": GOOD_TS}, {"ts": old, "file": "old.jpg"}])
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["frames"] == 2 and body["status"] == "queued"
    assert [x["file"] for x in body["rejected"]] == ["old.jpg"]
    assert "older than tenant acme's retention of 30 days" in body["rejected"][0]["reason"]
    st = env.client.get(body["status_url"], headers=env.auth("cam_a")).json()
    assert [x["file"] for x in st["rejected"]] == ["old.jpg"]
    assert env.service.processor.depth() == 1  # the good frame is queued
    r = _post(env, [{"ts": old, "image_id": "only-old"}])
    assert r.status_code == 422 and "retention of 30 days" in r.json()["detail"]
    put = env.client.put("/v1/admin/retention", json={"retention_days": 100},
                         headers=env.auth("admin"))
    assert put.status_code == 200, put.text
    r = _post(env, [{"ts": old, "image_id": "only-old"}])
    assert r.status_code == 202 and r.json()["rejected"] == []


def test_metrics_need_a_token_or_this_machine(env: Env, tmp_path) -> None:
    remote = TestClient(env.client.app, client=("203.0.113.9", 40000))
    assert remote.get("/metrics").status_code == 403
    local = env.client.get("/metrics")
    assert local.status_code == 200
    assert remote.get("/v1/pipeline").status_code == 403  # the same guard: operators only
    assert env.client.get("/v1/pipeline").json() == {"mode": "embedded", "queue_depth": 0,
                                                     "busy": False}
    assert 'tenant="acme"' not in local.text and 'tenant="other"' not in local.text
    env.service.config.metrics_token = "s3cret-token"
    try:
        assert remote.get("/metrics").status_code == 401
        assert remote.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        ok = remote.get("/metrics", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200 and "revisit_frames_received" in ok.text
    finally:
        env.service.config.metrics_token = ""


@pytest.mark.parametrize("params", [
    {"visit_gap": "99999999999d"},
    {"to": "9999-12-31"},
    {"from": "0001-01-02", "to": "9999-12-30"},
    {"page": str(10**30)},
    {"page_size": str(10**30)},
    {"from": "2024-01-01", "to": "2027-01-01"},  # longer than max_report_days
    {"tz": "Mars/Olympus"},
    {"tz": "localtime"},
])
def test_report_and_summary_bounds_answer_422(env: Env, params: dict) -> None:
    r = env.report(**params)
    assert r.status_code == 422, r.text
    q = {"from": "2024-01-01", "to": "2024-12-31", **params}
    q.pop("page", None), q.pop("page_size", None)
    s = env.client.get("/v1/reports/summary", params=q, headers=env.auth("analyst"))
    assert s.status_code in (200, 422) and s.status_code != 500


def test_deep_json_and_lone_surrogates_answer_422(env: Env) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    r = env.client.post("/v1/batches", data={"metadata": deep},
                        files=[("images", ("a.jpg", _jpeg(), "image/jpeg"))],
                        headers=env.auth("cam_a"))
    assert r.status_code == 422 and "nested" in r.json()["detail"]
    for field in ("image_id", "file"):
        meta = [{"file": "a.jpg", "camera_id": "camA", "ts": GOOD_TS, field: "x\ud800y"}]
        r = env.client.post("/v1/batches", data={"metadata": json.dumps(meta)},
                            files=[("images", ("a.jpg", _jpeg(), "image/jpeg"))],
                            headers=env.auth("cam_a"))
        assert r.status_code == 422, (field, r.text)


def test_too_many_files_is_413(env: Env) -> None:
    n = env.service.config.max_batch_frames + 1
    meta = [{"file": f"f{i}.jpg", "camera_id": "camA", "ts": GOOD_TS} for i in range(n)]
    r = env.client.post("/v1/batches", data={"metadata": json.dumps(meta)},
                        files=[("images", (f"f{i}.jpg", b"x", "image/jpeg")) for i in range(n)],
                        headers=env.auth("cam_a"))
    assert r.status_code == 413, r.text


def test_png_claiming_zero_size_is_422(env: Env) -> None:
    r = env.post_batch("cam_a", [{"camera_id": "camA", "ts": GOOD_TS, "data": _png(0, 0)}])
    assert r.status_code == 422 and "zero" in r.json()["detail"]


def test_camera_key_reads_only_its_own_batches(env: Env) -> None:
    r = _post(env, [{"ts": GOOD_TS}])
    url = r.json()["status_url"]
    assert env.client.get(url, headers=env.auth("cam_a")).status_code == 200
    assert env.client.get(url, headers=env.auth("cam_b")).status_code == 404
    assert env.client.get(url, headers=env.auth("analyst")).status_code == 200
    assert env.client.get(url, headers=env.auth("other_admin")).status_code == 404


def test_status_lives_in_the_store(env: Env) -> None:
    """Statuses are rows of the store (every replica reads the same, tests/api/test_replicas.py);
    on the one-writer DuckDB store a queued batch's row is written when the pipeline takes
    it, not on the request path (which would wait for the batch being stored)."""
    r = _post(env, [{"ts": GOOD_TS}])
    batch_id = r.json()["batch_id"]
    proc = env.service.processor
    assert proc.status("acme", batch_id).state == "queued"
    assert proc.status("other", batch_id) is None  # never another tenant's
    assert proc.ledger.get("acme", batch_id) is None
    proc._mark_processing(batch_id)  # what the pipeline does when it takes the batch
    st = proc.ledger.get("acme", batch_id)
    assert st is not None and st.state == "processing" and st.frames == 1
    assert proc.status("acme", batch_id).state == "processing"


def test_no_more_batches_held_than_queue_batches(tmp_path) -> None:
    from tests.api.conftest import make_env

    gen = make_env(tmp_path, processing=False, queue_batches=2)
    env = next(gen)
    try:
        codes = [_post(env, [{"ts": GOOD_TS, "image_id": f"i{i}"}]).status_code
                 for i in range(4)]
        assert codes == [202, 202, 429, 429]
    finally:
        gen.close()


def test_the_last_admin_key_cannot_be_revoked_through_the_api(env: Env) -> None:
    keys = env.client.get("/v1/admin/keys", headers=env.auth("admin")).json()
    admin_id = next(k["key_id"] for k in keys if k["role"] == "admin")
    r = env.client.delete(f"/v1/admin/keys/{admin_id}", headers=env.auth("admin"))
    assert r.status_code == 409 and "last admin key" in r.json()["detail"]
    assert env.client.get("/v1/admin/keys", headers=env.auth("admin")).status_code == 200
    # rotation: a new admin key now, the old one keeps working through the grace period
    rot = env.client.post(f"/v1/admin/keys/{admin_id}/rotate", json={"grace": "1h"},
                          headers=env.auth("admin"))
    assert rot.status_code == 201, rot.text
    new = {"Authorization": f"Bearer {rot.json()['key']}"}
    assert env.client.get("/v1/admin/keys", headers=new).status_code == 200
    assert env.client.get("/v1/admin/keys", headers=env.auth("admin")).status_code == 200
    # grace 0: the old one stops now; the new one is the last admin and stays
    rot2 = env.client.post(f"/v1/admin/keys/{rot.json()['key_id']}/rotate", json={"grace": "0"},
                           headers=new)
    assert rot2.status_code == 201
    assert env.client.get("/v1/admin/keys", headers=new).status_code == 401
    newest = {"Authorization": f"Bearer {rot2.json()['key']}"}
    assert env.client.get("/v1/admin/keys", headers=newest).status_code == 200


def test_reports_run_in_their_own_pool_under_a_budget(env: Env) -> None:
    """A report past its budget answers 503 (its query stopped); with every report worker
    busy a report answers 429, while health and uploads still answer at once."""
    import threading

    from revisit.api.workpool import ReportPool

    svc = env.service
    old = svc.reports
    try:
        svc.reports = ReportPool(1, 0, budget_s=1e-6)  # spent before the first query
        r = env.report()
        assert r.status_code == 503 and "budget" in r.json()["detail"], r.text
        assert "retry-after" in r.headers
        csv = env.report(format="csv")
        assert csv.status_code == 503
        svc.reports.close()

        svc.reports = ReportPool(1, 0, budget_s=30)
        release = threading.Event()
        svc.reports.start(lambda: release.wait(30))  # a slow report holds the one worker
        try:
            r = env.report()
            assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
            s = env.client.get("/v1/reports/summary", headers=env.auth("analyst"),
                               params={"from": "2024-01-01", "to": "2024-01-31"})
            assert s.status_code == 429
            assert env.client.get("/healthz").status_code == 200
            assert _post(env, [{"ts": GOOD_TS}]).status_code == 202
        finally:
            release.set()
        for _ in range(100):  # the worker is free again
            if (r := env.report()).status_code != 429:
                break
            threading.Event().wait(0.05)
        assert r.status_code == 200
    finally:
        svc.reports.close()
        svc.reports = old


def test_unknown_query_parameters_and_unreadable_bodies_answer_422(env: Env) -> None:
    r = env.report(form="2024-01-01")  # misspelt 'from'
    assert r.status_code == 422 and "form" in r.json()["detail"]
    r = env.client.put("/v1/admin/locations", content=b"\xff\xfe{",
                       headers={**env.auth("admin"), "Content-Type": "application/json"})
    assert r.status_code == 422 and isinstance(r.json()["detail"], str)
    r = env.client.put("/v1/admin/locations", json={"location_id": 5},
                       headers=env.auth("admin"))
    assert r.status_code == 422 and "location_id" in r.json()["detail"]


def test_flows_over_http(env: Env) -> None:
    """GET /v1/reports/flows: store affinity and transitions, JSON and CSV, names included,
    only the key's tenant."""
    from revisit.store.testing import at, batch, sighting

    env.service.runtime.store.write(batch([
        sighting("V-000001", at(0), "101", tenant="acme"),
        sighting("V-000001", at(50), "203", tenant="acme"),
        sighting("V-000002", at(5), "101", tenant="acme"),
        sighting("V-000001", at(0), "900", tenant="other"),
    ]))
    q = {"from": "2024-03-01", "to": "2024-03-01"}
    r = env.client.get("/v1/reports/flows", params=q, headers=env.auth("analyst"))
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["affinity"] == [{"from": "101", "to": "203", "visitors": 1, "share": 0.5},
                             {"from": "203", "to": "101", "visitors": 1, "share": 1.0}]
    assert f["transitions"] == [{"from": "101", "to": "203", "visits": 1}]
    assert f["names"]["101"] == "Main Street"
    as_csv = env.client.get("/v1/reports/flows", params={**q, "format": "csv"},
                            headers=env.auth("analyst"))
    assert as_csv.headers["content-disposition"] == \
        'attachment; filename="flows_2024-03-01_2024-03-01.csv"'  # saved under a name
    csv_text = as_csv.text
    assert "affinity,101,Main Street,203,Harbour,1,0.5" in csv_text
    assert "transition,101,Main Street,203,Harbour,1," in csv_text
    assert f["camera_paths"][0]["location_id"] == "101"  # one camera per store here: no moves
    assert f["camera_paths"][0]["transitions"] == []


def test_heatmap_over_http(env: Env) -> None:
    """GET /v1/cameras/{id}/heatmap.png: a PNG for a camera of the key's tenant, 404 for
    any other id (another tenant's included)."""
    import cv2
    import numpy as np

    from revisit.store.testing import at, batch, sighting

    env.service.runtime.store.write(batch([
        sighting("V-000001", at(i), "101", camera="camA", tenant="acme") for i in range(5)]))
    q = {"from": "2024-03-01", "to": "2024-03-01"}
    r = env.client.get("/v1/cameras/camA/heatmap.png", params=q, headers=env.auth("analyst"))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[1] == 640  # no background yet: the plain grid
    for cam in ("camX", "nope"):
        r = env.client.get(f"/v1/cameras/{cam}/heatmap.png", params=q,
                           headers=env.auth("analyst"))
        assert r.status_code == 404
    assert env.client.get("/v1/cameras/camA/heatmap.png", params=q,
                          headers=env.auth("cam_a")).status_code == 403


def test_the_dashboard_session_only_reads(env: Env) -> None:
    c = env.client
    assert c.post("/login", data={"key": env.keys["admin"]},
                  headers={"Origin": "https://evil.example"}).status_code == 403
    assert "revisit_session" not in c.cookies
    r = c.post("/login", data={"key": env.keys["admin"]}, follow_redirects=False)
    assert r.status_code == 303 and "revisit_session" in c.cookies
    assert c.get("/v1/places").status_code == 200  # the dashboard's reads
    # a page on another site posting with the victim's cookie changes nothing
    for method, path, body in (("POST", "/v1/admin/keys", {"role": "admin"}),
                               ("PUT", "/v1/admin/retention", {"retention_days": 1}),
                               ("POST", "/v1/admin/purge", None)):
        r = c.request(method, path, json=body)
        assert r.status_code == 401 and "only reads" in r.json()["detail"], (path, r.text)
    assert c.post("/logout", headers={"Origin": "https://evil.example"}).status_code == 403
    # behind a proxy that passes the public host on: our own origin
    assert c.post("/logout", follow_redirects=False, headers={
        "Origin": "https://revisit.example", "X-Forwarded-Host": "revisit.example"}
    ).status_code == 303
    r = c.post("/login", data={"key": env.keys["admin"]}, follow_redirects=False)
    assert r.status_code == 303
    # signing out ends every copy of the cookie, not only this browser's
    copy = c.cookies.get("revisit_session")
    assert c.post("/logout", follow_redirects=False).status_code == 303
    c.cookies.set("revisit_session", copy)
    assert c.get("/v1/places").status_code == 401
    c.cookies.clear()
    r = c.post("/login", data={"key": env.keys["admin"]}, follow_redirects=False)
    assert r.status_code == 303 and c.get("/v1/places").status_code == 200  # sign in again


def test_audit_ids_count_the_tenants_own_entries(env: Env) -> None:
    def newest(key: str) -> int:
        r = env.client.get("/v1/admin/audit", headers=env.auth(key))
        assert r.status_code == 200, r.text
        return r.json()[0]["id"]

    before = newest("admin")
    for _ in range(3):  # the other tenant's audited reads
        assert env.client.get("/v1/enrolments", headers=env.auth("other_admin")).status_code == 200
    assert env.client.get("/v1/enrolments", headers=env.auth("admin")).status_code == 200
    assert newest("admin") == before + 1


def test_text_that_is_not_unicode_is_refused_and_the_audit_still_reads(env: Env) -> None:
    admin = env.auth("admin")
    for method, path, body in (
            ("PUT", "/v1/watchlist", {"enabled": True, "purpose": "0123456789ab",
                                      "emails": ["\ud800@a.b"]}),
            ("PUT", "/v1/cameras/camA/occupancy",
             {"named": {"\ud800": [[0, 0], [1, 0], [1, 1]]}}),
            ("PUT", "/v1/admin/groups", {"name": "g1", "cameras": ["\ud800"]})):
        r = env.client.request(method, path, content=json.dumps(body),
                               headers={**admin, "Content-Type": "application/json"})
        assert r.status_code == 422 and "unicode" in r.json()["detail"].lower(), (path, r.text)
    # an emoji is text: its escaped surrogate pair is fine
    r = env.client.put("/v1/cameras/camA/occupancy", headers={
        **admin, "Content-Type": "application/json"},
        content=json.dumps({"named": {"till \U0001F600": [[0, 0], [1, 0], [1, 1]]}}))
    assert r.status_code == 200, r.text
    assert env.client.get("/v1/admin/audit", headers=admin).status_code == 200


def test_dates_past_the_calendar_answer_422(env: Env) -> None:
    r = env.client.get("/v1/occupancy/history", params={"from": "9999-12-31",
                                                        "to": "9999-12-31"},
                       headers=env.auth("analyst"))
    assert r.status_code == 422, r.text


def test_descending_sorts_break_ties_by_ascending_visitor_id(env: Env) -> None:
    from revisit.store.testing import at, batch, sighting

    rows = [sighting(f"V-00000{v}", at(10 * k + v, day=400), "101", tenant="acme")
            for v in (4, 2, 1, 3) for k in range(3)]  # 3 sightings each: all tied
    env.service.runtime.store.write(batch(rows))
    day = at(0, day=400).date().isoformat()
    for sort in ("-sightings", "-locations_visited", "sightings"):
        r = env.report(sort=sort, **{"from": day, "to": day})
        assert r.status_code == 200, r.text
        assert [v["visitor_id"] for v in r.json()["visitors"]] == [
            "V-000001", "V-000002", "V-000003", "V-000004"], sort


def test_a_query_parameter_given_twice_is_refused(env: Env) -> None:
    r = env.client.get("/v1/reports/unique-visitors?from=2024-05-01&to=2024-05-02&from=2024-04-01",
                       headers=env.auth("analyst"))
    assert r.status_code == 422 and "more than once" in r.json()["detail"], r.text


def test_a_backend_that_is_down_answers_503_not_500(env: Env, monkeypatch) -> None:
    import psycopg

    def down(*a: object, **k: object) -> None:
        raise psycopg.OperationalError("connection to server at 127.0.0.1 failed")

    store = env.service.runtime.store
    monkeypatch.setattr(store, "report", down)
    monkeypatch.setattr(store, "identity_version", down)
    monkeypatch.setattr(env.service.processor, "depth", down)
    r = env.report()
    assert r.status_code == 503 and r.headers["Retry-After"], r.text
    assert "unavailable" in r.json()["detail"]
    ready = env.client.get("/readyz")
    assert ready.status_code == 503
    assert any("store unreachable" in p for p in ready.json()["problems"])
    assert any("broker unreachable" in p for p in ready.json()["problems"])
    assert env.client.get("/metrics").status_code == 200  # the scrape during an outage


def test_the_session_cookie_is_secure_where_tls_is_in_front(tmp_path) -> None:
    from tests.api.conftest import make_env

    gen = make_env(tmp_path, processing=False, session_https_only=True)
    env = next(gen)
    try:
        r = env.client.post("/login", data={"key": env.keys["analyst"]},
                            follow_redirects=False)
        assert r.status_code == 303
        cookie = r.headers["set-cookie"].lower()
        assert "revisit_session=" in cookie and "secure" in cookie and "samesite=strict" in cookie
    finally:
        gen.close()


def test_tiff_is_taken_and_avif_refused_in_the_words_of_every_entry_point(env: Env) -> None:
    """A camera set to TIFF was refused here while `revisit ingest` took its snapshots;
    the one list (revisit.image_formats) takes TIFF, bounded by its header like the rest,
    and refuses AVIF, for batches and enrolment photos alike."""
    import struct

    from tests.conftest import lfw_still

    tiff = lfw_still("Colin_Powell", 1, "TIFF", compression="tiff_lzw")
    r = env.post_batch("cam_a", [{"camera_id": "camA", "ts": GOOD_TS, "data": tiff,
                                  "file": "night.tif"}])
    assert r.status_code == 202, r.text
    entry = struct.Struct("<HHII")
    bomb = (b"II*\x00" + struct.pack("<IH", 8, 2) + entry.pack(256, 4, 1, 60000)
            + entry.pack(257, 4, 1, 60000) + bytes(4))
    r = env.post_batch("cam_a", [{"camera_id": "camA", "ts": GOOD_TS, "data": bomb}])
    assert r.status_code == 413 and "60000x60000 TIFF" in r.json()["detail"]
    refused = "AVIF is not a supported image format (accepted: JPEG, PNG, WebP, BMP, TIFF)"
    avif = lfw_still("Colin_Powell", 1, "AVIF")
    r = env.post_batch("cam_a", [{"camera_id": "camA", "ts": GOOD_TS, "data": avif,
                                  "file": "phone.avif"}])
    assert r.status_code == 422 and r.json()["detail"] == f"image 'phone.avif': {refused}"
    r = env.client.post("/v1/enrolments", headers=env.auth("admin"),
                        data={"group": "staff", "label": "Anna", "reason": "till staff"},
                        files=[("photos", ("anna.avif", avif, "image/avif"))])
    assert r.status_code == 422 and r.json()["detail"] == f"photo 'anna.avif': {refused}"
