"""An HTTP service on a temp data dir with two tenants, their cameras and keys."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient
from tests.conftest import lfw_photo

from revisit.api.app import create_app
from revisit.api.service import Service
from revisit.api.settings import ServiceSettings
from revisit.config import load_settings


@dataclass
class Env:
    client: TestClient
    service: Service
    keys: dict[str, str] = field(default_factory=dict)

    def auth(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}

    def post_batch(self, key: str, items: list[dict[str, Any]]) -> Any:
        """items: {"path" or "data", "camera_id", "ts", optional "image_id", "file"}."""
        meta, files = [], []
        for i, it in enumerate(items):
            name = it.get("file") or f"img{i}.jpg"
            data = it["data"] if "data" in it else Path(it["path"]).read_bytes()
            m = {"file": name, "camera_id": it["camera_id"], "ts": it["ts"]}
            if it.get("image_id"):
                m["image_id"] = it["image_id"]
            meta.append(m)
            files.append(("images", (name, data, "image/jpeg")))
        return self.client.post("/v1/batches", data={"metadata": json.dumps(meta)},
                                files=files, headers=self.auth(key) if key else {})

    def wait(self, batch_id: str, key: str = "cam_a", timeout: float = 120) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            st = self.client.get(f"/v1/batches/{batch_id}", headers=self.auth(key)).json()
            if st["status"] in ("done", "failed"):
                return st
            time.sleep(0.1)
        raise AssertionError(f"batch {batch_id} not processed in {timeout} s")

    def report(self, key: str = "analyst", **params: Any) -> Any:
        params.setdefault("from", "2024-01-01")
        params.setdefault("to", "2024-12-31")
        return self.client.get("/v1/reports/unique-visitors", params=params,
                               headers=self.auth(key))


def make_env(tmp_path: Path, processing: bool, settings: dict[str, Any] | None = None,
             behind_door: bool = False, **limits: Any) -> Iterator[Env]:
    """A service with two tenants, places and keys; ``settings``: overrides (a broker);
    ``behind_door``: as `revisit serve` runs it behind the accept process."""
    settings = load_settings(None, data=tmp_path / "data", **(settings or {}))
    svc = Service(settings, ServiceSettings(purge_interval_s=0, **limits),
                  behind_door=behind_door)
    t = svc.tenancy
    keys: dict[str, str] = {}
    t.create_tenant("acme", "ACME Stores")
    t.add_location("acme", "101", "Main Street", "Europe/Berlin")
    t.add_location("acme", "203", "Harbour", "Europe/Berlin")
    t.add_camera("acme", "camA", "101")
    t.add_camera("acme", "camB", "203")
    t.set_group("acme", "harbour", ["camB"])
    keys["cam_a"] = t.create_key("acme", "camera", ["camA"])[1]
    keys["cam_b"] = t.create_key("acme", "camera", ["camB"])[1]
    keys["analyst"] = t.create_key("acme", "analyst")[1]
    keys["admin"] = t.create_key("acme", "admin")[1]
    t.create_tenant("other")
    t.add_location("other", "900", "Elsewhere")
    t.add_camera("other", "camX", "900")
    keys["other_analyst"] = t.create_key("other", "analyst")[1]
    keys["other_admin"] = t.create_key("other", "admin")[1]
    keys["other_cam"] = t.create_key("other", "camera", ["camX"])[1]
    app = create_app(service=svc, processing=processing)
    with TestClient(app, client=("127.0.0.1", 50000)) as client:  # a client on this machine
        yield Env(client, svc, keys)


PG_URL = os.environ.get("REVISIT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/revisit_test")


@contextlib.contextmanager
def pg_store_url(tmp_path: Path) -> Iterator[str]:
    """A store URL on a schema of its own in the local PostgreSQL (skipped without one),
    dropped afterwards: for running a service in this process on a PostgreSQL store."""
    try:
        from revisit.store.postgres_store import PostgresStore
    except ImportError as exc:
        pytest.skip(f"{exc.name} is not installed: `pip install -e '.[distributed]'`")
    url = f"{PG_URL}?schema=a_{hashlib.sha1(str(tmp_path).encode()).hexdigest()[:16]}"
    try:
        PostgresStore(url, connect_timeout=3).close()
    except Exception as exc:
        if "Operational" not in type(exc).__name__:  # any connection failure: no server
            raise
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc} (bash scripts/services.sh)")
    try:
        yield url
    finally:
        store = PostgresStore(url)
        store.drop_schema()
        store.close()


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port (for a real browser)."""
    import threading

    import uvicorn
    from benchmarks.distributed_harness import free_port

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                        log_level="warning", lifespan="off"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    end = time.monotonic() + 10
    while not srv.started and time.monotonic() < end:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        th.join(timeout=10)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """No background processing: for auth, validation and queue tests (no models load)."""
    yield from make_env(tmp_path, processing=False)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Real processing (YuNet + SFace), shared by a module: models load once."""
    yield from make_env(tmp_path_factory.mktemp("live"), processing=True)


def photo(person: str, n: int) -> Path:
    return lfw_photo(person, n)
