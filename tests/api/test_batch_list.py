"""GET /v1/batches: the tenant's batches newest first, by state, page by page; a camera
key sees only its own, another tenant nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.api.conftest import Env, make_env, photo


def _post(env: Env, key: str, camera: str, i: int) -> str:
    r = env.post_batch(key, [{"path": photo("Colin_Powell", 1), "camera_id": camera,
                              "ts": f"2024-05-02T10:00:{i:02d}Z", "image_id": f"{camera}-{i}"}])
    assert r.status_code == 202, r.text
    return r.json()["batch_id"]


def test_batches_are_listed_newest_first_by_state_and_key(env: Env) -> None:
    ids = [_post(env, "cam_a", "camA", i) for i in range(3)] + [_post(env, "cam_b", "camB", 3)]
    other = _post(env, "other_cam", "camX", 4)

    def get(key: str, **params: object) -> dict:
        r = env.client.get("/v1/batches", params=params, headers=env.auth(key))
        assert r.status_code == 200, r.text
        return r.json()

    page = get("admin")
    assert [b["batch_id"] for b in page["batches"]] == ids[::-1] and page["next_before"] is None
    assert [b["status"] for b in page["batches"]] == ["queued"] * 4
    assert get("analyst", status="failed")["batches"] == []
    assert [b["batch_id"] for b in get("cam_a")["batches"]] == ids[2::-1]
    assert [b["batch_id"] for b in get("other_admin")["batches"]] == [other]
    # page by page: the cursor is the last batch's reception time and id
    first = get("admin", limit=3)
    assert [b["batch_id"] for b in first["batches"]] == ids[:0:-1]
    assert "+" not in first["next_before"]  # safe to paste into a URL
    rest = get("admin", limit=3, before=first["next_before"],
               before_id=first["next_before_id"])
    assert [b["batch_id"] for b in rest["batches"]] == ids[:1] and rest["next_before"] is None
    bad = env.client.get("/v1/batches", params={"before": "2024-05-02T10:00:00"},
                         headers=env.auth("admin"))
    assert bad.status_code == 422 and "offset" in bad.text
    assert env.client.get("/v1/batches").status_code == 401


def test_a_failed_batch_is_found_by_its_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    gen = make_env(tmp_path, processing=True)
    env = next(gen)
    try:
        def disk_full(batch: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(env.service.runtime.store, "write", disk_full)
        failed = _post(env, "cam_a", "camA", 0)
        assert env.wait(failed)["status"] == "failed"
        monkeypatch.undo()
        done = _post(env, "cam_a", "camA", 1)
        assert env.wait(done)["status"] == "done"
        r = env.client.get("/v1/batches", params={"status": "failed"},
                           headers=env.auth("admin"))
        (only,) = r.json()["batches"]
        assert only["batch_id"] == failed and "No space left" in only["error"]
        r = env.client.get("/v1/batches", headers=env.auth("admin"))
        assert [(b["batch_id"], b["status"]) for b in r.json()["batches"]] == [
            (done, "done"), (failed, "failed")]
    finally:
        gen.close()



def test_batches_received_at_one_instant_are_each_listed_once(env: Env) -> None:
    from datetime import datetime

    from revisit.ingest.status import BatchStatus

    at = datetime(2026, 1, 5, 10, 0, 0, 123456)
    for i in range(5):
        env.service.processor.ledger.record(BatchStatus(
            f"B-tie-{i}", "acme", "failed", 1, error="store: disk full", received_at=at))
    seen, params = [], {"status": "failed", "limit": 2}
    while True:
        page = env.client.get("/v1/batches", params=params, headers=env.auth("admin")).json()
        seen += [b["batch_id"] for b in page["batches"]]
        if page["next_before"] is None:
            break
        params = {**params, "before": page["next_before"], "before_id": page["next_before_id"]}
    assert seen == [f"B-tie-{i}" for i in range(4, -1, -1)]
