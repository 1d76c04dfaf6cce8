"""The service's models in their own process: batches processed there, a dead child
replaced without losing the batch in flight."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.api.conftest import Env, make_env, photo

from revisit.api.modelproc import ModelProcess


@pytest.fixture(scope="module")
def proc_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield from make_env(tmp_path_factory.mktemp("proc"), processing=True, model_process=True)


def _stored(env: Env, batch_id: str) -> dict:
    st = env.wait(batch_id)
    assert st["status"] == "done", st
    return st


def test_batches_run_in_a_child_process(proc_env: Env) -> None:
    models = proc_env.service.runtime.models
    assert isinstance(models, ModelProcess)
    assert models.pid is not None and models.pid != os.getpid()
    r = proc_env.post_batch("cam_a", [
        {"path": photo("George_W_Bush", 1), "camera_id": "camA", "ts": "2024-03-01T10:00:00Z"},
        {"path": photo("George_W_Bush", 2), "camera_id": "camA", "ts": "2024-03-01T10:00:05Z"},
    ])
    assert r.status_code == 202, r.text
    st = _stored(proc_env, r.json()["batch_id"])
    assert st["processed"] == 2 and st["sightings"] == 2


def test_a_killed_child_is_replaced_and_the_batch_kept(proc_env: Env) -> None:
    models = proc_env.service.runtime.models
    assert isinstance(models, ModelProcess)
    before, old_pid = models.restarts, models.pid
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while models._proc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    r = proc_env.post_batch("cam_a", [
        {"path": photo("Colin_Powell", 1), "camera_id": "camA", "ts": "2024-03-02T10:00:00Z"},
    ])
    assert r.status_code == 202, r.text
    st = _stored(proc_env, r.json()["batch_id"])
    assert st["sightings"] == 1
    assert models.restarts == before + 1 and models.pid != old_pid


def test_without_the_setting_models_run_in_the_server(tmp_path: Path) -> None:
    for env in make_env(tmp_path, processing=True, model_process=False):
        assert not isinstance(env.service.runtime.models, ModelProcess)
