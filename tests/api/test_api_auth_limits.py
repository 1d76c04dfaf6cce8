"""Auth, roles, tenant isolation, upload limits and back-pressure (no models needed)."""

from __future__ import annotations

import json
import struct

from tests.api.conftest import Env, photo

TS = "2024-05-02T10:00:00+02:00"


def _jpeg() -> bytes:
    return photo("Colin_Powell", 1).read_bytes()


def _bomb() -> bytes:
    """A real JPEG whose frame header claims 60000 x 60000 pixels."""
    data = bytearray(_jpeg())
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    data[i + 5:i + 9] = struct.pack(">HH", 60000, 60000)
    return bytes(data)


def _nothing_queued(env: Env) -> None:
    assert env.service.processor.depth() == 0
    assert env.service.runtime.store.stats("acme")["frames"] == 0


def test_health_ready_metrics_docs(env: Env) -> None:
    assert env.client.get("/healthz").json() == {"status": "ok"}
    ready = env.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["busy"] is False  # idle: nothing queued
    m = env.client.get("/metrics")
    assert m.status_code == 200
    for name in ("revisit_frames_received_total", "revisit_queue_depth",
                 "revisit_stage_seconds", "revisit_new_visitors_total"):
        assert name in m.text or name.removesuffix("_total") in m.text
    assert env.client.head("/healthz").status_code == 200  # load balancers probe with HEAD
    assert env.client.head("/readyz").status_code == 200
    slash = env.client.get("/v1/batches/", follow_redirects=False)
    assert slash.status_code == 404 and "without the trailing slash: /v1/batches" in \
        slash.json()["detail"]
    docs = env.client.get("/docs")
    assert docs.status_code == 200 and "https://" not in docs.text  # offline: no CDN
    from revisit.api.dashboard import VENDOR

    if (VENDOR / "swagger-ui-bundle.js").is_file():  # set-up ran npm
        assert "/static/vendor/swagger-ui-bundle.js" in docs.text
        assert env.client.get("/static/vendor/swagger-ui-bundle.js").status_code == 200
    else:
        assert 'href="/openapi.json"' in docs.text
    paths = env.client.get("/openapi.json").json()["paths"]
    assert "/v1/batches" in paths and "/v1/reports/unique-visitors" in paths


def test_missing_and_wrong_key_401(env: Env) -> None:
    item = {"data": _jpeg(), "camera_id": "camA", "ts": TS}
    assert env.post_batch("", [item]).status_code == 401
    env.keys["bogus"] = "rvk_not-a-real-key"
    r = env.post_batch("bogus", [item])
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = env.client.get("/v1/reports/unique-visitors?from=2024-01-01&to=2024-01-02",
                       headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    _nothing_queued(env)


def test_camera_key_cannot_post_for_other_camera(env: Env) -> None:
    for cam in ("camB", "camX", "unknown"):
        r = env.post_batch("cam_a", [{"data": _jpeg(), "camera_id": cam, "ts": TS}])
        assert r.status_code == 403, r.text
        assert cam in r.json()["detail"]
    # one bad frame refuses the whole batch
    r = env.post_batch("cam_a", [{"data": _jpeg(), "camera_id": "camA", "ts": TS},
                                 {"data": _jpeg(), "camera_id": "camB", "ts": TS}])
    assert r.status_code == 403
    r = env.post_batch("other_cam", [{"data": _jpeg(), "camera_id": "camA", "ts": TS}])
    assert r.status_code == 403
    _nothing_queued(env)


def test_roles(env: Env) -> None:
    item = {"data": _jpeg(), "camera_id": "camA", "ts": TS}
    for key in ("analyst", "admin"):
        assert env.post_batch(key, [item]).status_code == 403
    assert env.report("cam_a").status_code == 403
    r = env.client.delete("/v1/visitors/V-000001", headers=env.auth("analyst"))
    assert r.status_code == 403
    r = env.client.put("/v1/admin/cameras", json={"camera_id": "c9", "location_id": "101"},
                       headers=env.auth("analyst"))
    assert r.status_code == 403
    _nothing_queued(env)


def test_other_tenant_analyst_sees_nothing_and_cannot_probe(env: Env) -> None:
    r = env.post_batch("cam_a", [{"data": _jpeg(), "camera_id": "camA", "ts": TS}])
    assert r.status_code == 202
    batch_id = r.json()["batch_id"]
    # the status of acme's batch is not visible to another tenant
    r = env.client.get(f"/v1/batches/{batch_id}", headers=env.auth("other_analyst"))
    assert r.status_code == 404
    assert env.client.get(f"/v1/batches/{batch_id}", headers=env.auth("analyst")).status_code == 200
    for params in ({"cameras": "camA"}, {"locations": "101"}, {"camera_group": "harbour"}):
        r = env.report("other_analyst", **params)
        assert r.status_code == 403, params
    r = env.client.get("/v1/places", headers=env.auth("other_analyst")).json()
    assert [c["camera_id"] for c in r["cameras"]] == ["camX"]
    r = env.client.delete("/v1/visitors/V-000001", headers=env.auth("other_admin"))
    assert r.status_code == 404


def test_revoked_key_401(env: Env) -> None:
    svc = env.service
    key_id = svc.tenancy.authenticate(env.keys["analyst"]).key_id
    assert env.report().status_code == 200
    r = env.client.delete(f"/v1/admin/keys/{key_id}", headers=env.auth("admin"))
    assert r.status_code == 200
    assert env.report().status_code == 401


def test_bad_uploads_get_4xx_naming_the_problem(tmp_path) -> None:
    from tests.api.conftest import make_env

    gen = make_env(tmp_path, processing=False, max_batch_frames=2, max_image_bytes=200_000)
    env = next(gen)
    try:
        good = _jpeg()
        cases = [
            ([{"data": b"this is not an image", "camera_id": "camA", "ts": TS}], 422, "JPEG"),
            ([{"data": good[:60], "camera_id": "camA", "ts": TS}], 422, "JPEG"),
            ([{"data": _bomb(), "camera_id": "camA", "ts": TS}], 413, "60000x60000"),
            ([{"data": good + b"\0" * 250_000, "camera_id": "camA", "ts": TS}], 413, "bytes"),
            ([{"data": good, "camera_id": "camA", "ts": TS, "file": f"f{i}.jpg"}
              for i in range(3)], 413, "at most 2"),
            ([{"data": good, "camera_id": "camA", "ts": "2024-05-02T10:00:00"}], 422, "offset"),
            ([{"data": good, "camera_id": "camA", "ts": "yesterday"}], 422, "ISO 8601"),
        ]
        for items, status, word in cases:
            r = env.post_batch("cam_a", items)
            assert r.status_code == status, (word, r.text)
            assert word in r.json()["detail"], (word, r.text)
        # metadata that does not match the parts
        h = env.auth("cam_a")
        r = env.client.post("/v1/batches", data={"metadata": "[{]"},
                            files=[("images", ("a.jpg", good, "image/jpeg"))], headers=h)
        assert r.status_code == 422 and "JSON" in r.json()["detail"]
        r = env.client.post(
            "/v1/batches",
            data={"metadata": json.dumps([{"file": "b.jpg", "camera_id": "camA", "ts": TS}])},
            files=[("images", ("a.jpg", good, "image/jpeg"))], headers=h)
        assert r.status_code == 422 and "b.jpg" in r.json()["detail"]
        _nothing_queued(env)
        assert "revisit_frames_rejected_total" in env.client.get("/metrics").text
    finally:
        gen.close()


def test_streamed_body_over_limit_413(tmp_path) -> None:
    """No Content-Length to trust: the body is cut off while it streams."""
    from tests.api.conftest import make_env

    gen = make_env(tmp_path, processing=False, max_body_bytes=100_000)
    env = next(gen)
    try:
        boundary = "b0undary"
        meta = json.dumps([{"file": "a.jpg", "camera_id": "camA", "ts": TS}])
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n"
                f"{meta}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; "
                f"filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()

        def chunks():
            yield head + _jpeg()
            for _ in range(50):
                yield b"\0" * 10_000
            yield f"\r\n--{boundary}--\r\n".encode()

        r = env.client.post("/v1/batches", content=chunks(), headers={
            **env.auth("cam_a"), "Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 413, r.text
        assert "100000" in r.json()["detail"]
        _nothing_queued(env)
    finally:
        gen.close()


def test_queue_full_429_with_retry_after(tmp_path) -> None:
    from tests.api.conftest import make_env

    gen = make_env(tmp_path, processing=False, queue_batches=1)
    env = next(gen)
    try:
        a = photo("Colin_Powell", 1).read_bytes()
        b = photo("Colin_Powell", 2).read_bytes()
        r = env.post_batch("cam_a", [{"data": a, "camera_id": "camA", "ts": TS}])
        assert r.status_code == 202
        body = r.json()
        assert body["frames"] == 1 and body["status_url"] == f"/v1/batches/{body['batch_id']}"
        r = env.post_batch("cam_a", [{"data": b, "camera_id": "camA", "ts": TS}])
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) > 0
        assert env.service.processor.depth() == 1
        assert "revisit_batches_throttled_total 1.0" in env.client.get("/metrics").text
        # refused at the door, before the body is parsed: a redelivery of the frame in
        # flight too (its retry finds it stored), and a bad body is not even looked at
        r = env.post_batch("cam_a", [{"data": a, "camera_id": "camA", "ts": TS}])
        assert r.status_code == 429
        r = env.client.post("/v1/batches", headers=env.auth("cam_a"),
                            files={"images": ("x.jpg", b"not an image")},
                            data={"metadata": "[]"})
        assert r.status_code == 429
        assert env.service.processor.depth() == 1
        # room again: the redelivery is a duplicate, not queued twice
        env.service.processor.start()
        assert env.service.processor.wait_idle(60)
        r = env.post_batch("cam_a", [{"data": a, "camera_id": "camA", "ts": TS}])
        assert r.status_code == 202 and r.json()["duplicates"] == 1
    finally:
        gen.close()


def test_headers_past_the_limit_are_refused(env: Env) -> None:
    """uvicorn's httptools parser does not bound headers: the app does (431)."""
    big = {"X-Filler": "a" * (300 * 1024)}
    r = env.client.get("/v1/reports/unique-visitors", headers={**env.auth("analyst"), **big},
                       params={"from": "2024-05-01", "to": "2024-05-02"})
    assert r.status_code == 431 and "256 KiB" in r.text
    ok = env.client.get("/v1/reports/unique-visitors", headers=env.auth("analyst"),
                        params={"from": "2024-05-01", "to": "2024-05-02"})
    assert ok.status_code == 200
