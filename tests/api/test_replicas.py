"""Two ``revisit serve`` processes on one PostgreSQL store are replicas: tenants, keys,
revocations and dashboard sessions made through one hold on the other.

Real processes, a real PostgreSQL (``bash scripts/services.sh``; skipped without one).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
from benchmarks.distributed_harness import free_port, port_open, start_server  # noqa: E402

pytestmark = pytest.mark.services

REVISIT = str(Path(sys.executable).with_name("revisit"))
PG = os.environ.get("REVISIT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/revisit_test")


def _env(data: Path, store_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVISIT_")}
    env.update(REVISIT_DATA=str(data), REVISIT_STORE_URL=store_url)
    return env


def _cli(args: list[str], env: dict[str, str]) -> str:
    out = subprocess.run([REVISIT, *args], env=env, text=True,
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(url of replica A, url of replica B, an admin key made with the CLI)."""
    if not port_open(5432):
        pytest.skip("PostgreSQL not reachable on 127.0.0.1:5432 (bash scripts/services.sh)")
    schema = "r_" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:16]
    url = f"{PG}?schema={schema}"
    env_a, env_b = _env(tmp_path / "a", url), _env(tmp_path / "b", url)
    _cli(["admin", "add-tenant", "acme"], env_a)
    admin = _cli(["admin", "add-key", "--tenant", "acme", "--role", "admin"], env_a)
    procs, urls = [], []
    try:
        for env in (env_a, env_b):
            port = free_port()
            procs.append(start_server(env, port))
            urls.append(f"http://127.0.0.1:{port}")
        yield urls[0], urls[1], admin
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        from revisit.store.postgres_store import PostgresStore

        store = PostgresStore(url)
        store.drop_schema()
        store.close()


def test_replicas_share_tenants_keys_revocation_and_sessions(
        replicas: tuple[str, str, str]) -> None:
    a, b, admin = replicas
    bearer = {"Authorization": f"Bearer {admin}"}
    # the admin key made by the CLI works on both replicas
    for base in (a, b):
        assert httpx.get(base + "/v1/places", headers=bearer).status_code == 200
    # a key created through A works on B
    made = httpx.post(a + "/v1/admin/keys", headers=bearer,
                      json={"role": "analyst", "name": "bi"})
    assert made.status_code == 201, made.text
    analyst = {"Authorization": f"Bearer {made.json()['key']}"}
    assert httpx.get(b + "/v1/places", headers=analyst).status_code == 200
    # a dashboard session signed by A is valid on B
    login = httpx.post(a + "/login", data={"key": made.json()["key"]})
    assert login.status_code == 303
    cookies = login.cookies
    assert httpx.get(b + "/dashboard", cookies=cookies).status_code == 200
    # revoked on B: refused by A, API and dashboard alike
    gone = httpx.delete(b + f"/v1/admin/keys/{made.json()['key_id']}", headers=bearer)
    assert gone.status_code == 200
    assert httpx.get(a + "/v1/places", headers=analyst).status_code == 401
    assert httpx.get(a + "/dashboard", cookies=cookies).status_code == 303
    # one audit log: both replicas list the creation and the revocation
    for base in (a, b):
        actions = [e["action"] for e in httpx.get(base + "/v1/admin/audit",
                                                  headers=bearer).json()]
        assert "key.create" in actions and "key.revoke" in actions


def test_replicas_answer_the_same_batch_status(replicas: tuple[str, str, str]) -> None:
    """A batch posted to A: B answers its status (from the store), through to done."""
    import json
    import time
    from datetime import UTC, datetime, timedelta

    from benchmarks.distributed_harness import photo_pool

    a, b, admin = replicas
    bearer = {"Authorization": f"Bearer {admin}"}
    assert httpx.put(a + "/v1/admin/locations", headers=bearer,
                     json={"location_id": "s1"}).status_code == 200
    assert httpx.put(a + "/v1/admin/cameras", headers=bearer,
                     json={"camera_id": "c1", "location_id": "s1"}).status_code == 200
    made = httpx.post(a + "/v1/admin/keys", headers=bearer,
                      json={"role": "camera", "cameras": ["c1"]})
    cam = {"Authorization": f"Bearer {made.json()['key']}"}
    ts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    meta = [{"file": "a.jpg", "camera_id": "c1", "ts": ts},
            {"file": "b.jpg", "camera_id": "c1", "ts": "0001-01-01T00:00:00Z"}]
    jpg = photo_pool(1)[0][1][0]
    r = httpx.post(a + "/v1/batches", headers=cam, data={"metadata": json.dumps(meta)},
                   files=[("images", ("a.jpg", jpg, "image/jpeg")),
                          ("images", ("b.jpg", jpg, "image/jpeg"))], timeout=60)
    assert r.status_code == 202, r.text
    url = r.json()["status_url"]
    end = time.monotonic() + 120
    while time.monotonic() < end:
        on_b = httpx.get(b + url, headers=cam).json()
        if on_b["status"] == "done":
            break
        time.sleep(0.2)
    on_a = httpx.get(a + url, headers=cam).json()
    assert on_b == on_a and on_b["status"] == "done", (on_a, on_b)
    assert on_b["processed"] == 1 and [x["file"] for x in on_b["rejected"]] == ["b.jpg"]
