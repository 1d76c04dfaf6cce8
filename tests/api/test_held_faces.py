"""What the resolver holds in memory between batches (faces of a track not decided yet,
the decisions of a batch) must not be lost or doubled by the server around it: a graceful
stop stores the held faces, and a batch whose write failed leaves no decision behind, so
its replay counts its person once (real models, real faces)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.api.conftest import Env, make_env, photo

from revisit.api.app import create_app
from revisit.api.service import Service
from revisit.api.settings import ServiceSettings
from revisit.api.spool import Spool
from revisit.config import load_settings

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _items(n: int) -> list[dict]:
    return [{"path": photo("Colin_Powell", i), "camera_id": "camA",
             "ts": f"2024-05-02T10:00:{5 * i:02d}+02:00", "image_id": f"cp-{i}"}
            for i in range(1, n + 1)]


def _restart(tmp_path: Path, keys: dict[str, str], settings: dict) -> tuple[Service, Env, TestClient]:
    svc = Service(load_settings(None, data=tmp_path / "data", **settings),
                  ServiceSettings(purge_interval_s=0))
    client = TestClient(create_app(service=svc, processing=True), client=("127.0.0.1", 50000))
    return svc, Env(client, svc, keys), client


def test_a_graceful_stop_stores_the_faces_the_resolver_holds(tmp_path: Path) -> None:
    held = {"identity": {"create_after": 3}}  # one face per frame: two frames found nobody yet
    items = _items(3)
    gen = make_env(tmp_path, processing=True, settings=held)
    env = next(gen)
    assert env.wait(env.post_batch("cam_a", items[:2]).json()["batch_id"])["status"] == "done"
    keys = env.keys
    gen.close()  # lifespan shutdown
    svc, env, client = _restart(tmp_path, keys, held)
    with client:
        assert env.wait(env.post_batch("cam_a", items[2:]).json()["batch_id"])["status"] == "done"
        assert svc.runtime.store.stats("acme")["sightings"] == 3


def test_a_failed_write_leaves_no_decision_behind(tmp_path: Path, monkeypatch) -> None:
    items = _items(4)
    gen = make_env(tmp_path, processing=True)
    env = next(gen)

    def disk_full(batch: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(env.service.runtime.store, "write", disk_full)
    first = env.wait(env.post_batch("cam_a", items[:2]).json()["batch_id"])
    assert first["status"] == "failed"
    monkeypatch.undo()
    assert env.wait(env.post_batch("cam_a", items[2:]).json()["batch_id"])["status"] == "done"
    keys = env.keys
    gen.close()
    assert Spool(tmp_path / "data" / "spool").replay_failed() == [first["batch_id"]]
    svc, env, client = _restart(tmp_path, keys, {})
    with client:
        assert env.wait(first["batch_id"])["status"] == "done"
        stats = svc.runtime.store.stats("acme")
        assert (stats["sightings"], stats["visitors"]) == (4, 1)


def test_a_batch_resolved_on_a_failed_writes_decisions_is_not_stored(tmp_path: Path,
                                                                       monkeypatch) -> None:
    """Batch 1 founds the person's visitor, batch 2 (resolved before batch 1's write)
    joins it; batch 1's write fails: batch 2 must not be stored on that voided visitor.
    It fails too, and both replayed count the person once (stages run one by one here, in
    the order the pipeline's threads can take)."""
    gen = make_env(tmp_path, processing=False)
    env = next(gen)
    try:
        proc = env.service.processor
        ids = [env.post_batch("cam_a", [it]).json()["batch_id"] for it in _items(4)[:2]]
        batches = [proc.inbox.get(timeout=5).batch for _ in ids]
        for b in batches:  # as the pipeline's source does
            proc._mark_processing(b.batch_id)
        stage = dict(proc.stages())
        for b in batches:
            stage["resolve"](stage["embed"](stage["detect"](b)))
        assert batches[1].sightings and not batches[1].visitors_created  # joined batch 1's
        real_write = env.service.runtime.store.write

        def disk_full(batch: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(env.service.runtime.store, "write", disk_full)
        stage["store"](batches[0])
        monkeypatch.setattr(env.service.runtime.store, "write", real_write)
        stage["store"](batches[1])
        assert env.service.runtime.store.stats("acme")["sightings"] == 0
        for b in batches:
            proc._done(b)
        assert [env.client.get(f"/v1/batches/{i}", headers=env.auth("cam_a")).json()["status"]
                for i in ids] == ["failed", "failed"]
    finally:
        gen.close()
    assert sorted(Spool(tmp_path / "data" / "spool").replay_failed()) == sorted(ids)
    svc, env, client = _restart(tmp_path, {}, {})
    with client:
        assert svc.processor.wait_idle(120)
        stats = svc.runtime.store.stats("acme")
        assert (stats["sightings"], stats["visitors"]) == (2, 1)
