"""``revisit admin`` while ``revisit serve`` holds the embedded store: the commands go
through the running server (serve.json + operator API), with the same effect and audit."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
from benchmarks.distributed_harness import free_port, start_server  # noqa: E402

REVISIT = str(Path(sys.executable).with_name("revisit"))


def _env(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVISIT_")}
    env.update(REVISIT_DATA=str(data), REVISIT_SERVICE_PURGE_INTERVAL_S="0")
    return env


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([REVISIT, *args], env=env, text=True, capture_output=True,
                          timeout=120)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    env = _env(tmp_path)
    port = free_port()
    proc = start_server(env, port)
    try:
        yield f"http://127.0.0.1:{port}", env, tmp_path
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not (tmp_path / "serve.json").exists()  # removed at exit


def test_admin_commands_go_through_the_running_server(
        served: tuple[str, dict[str, str], Path]) -> None:
    url, env, data = served
    info = data / "serve.json"
    assert stat.S_IMODE(info.stat().st_mode) == 0o600
    steps = [
        ["admin", "add-tenant", "acme", "--retention-days", "90"],
        ["admin", "add-location", "-t", "acme", "s1", "--timezone", "Europe/Berlin"],
        ["admin", "add-camera", "-t", "acme", "c1", "--location", "s1"],
        ["admin", "set-group", "-t", "acme", "doors", "--cameras", "c1"],
        ["admin", "set-retention", "-t", "acme", "30"],
    ]
    for args in steps:
        out = _cli(args, env)
        assert out.returncode == 0, (args, out.stderr)
    key = _cli(["admin", "add-key", "-t", "acme", "--role", "admin"], env)
    assert key.returncode == 0, key.stderr
    admin = {"Authorization": f"Bearer {key.stdout.strip()}"}
    places = httpx.get(f"{url}/v1/places", headers=admin).json()
    assert [c["camera_id"] for c in places["cameras"]] == ["c1"]
    assert places["groups"] == {"doors": ["c1"]}
    shown = json.loads(_cli(["admin", "show", "-t", "acme"], env).stdout)
    assert shown["retention_days"] == 30 and shown["locations"][0]["timezone"] == "Europe/Berlin"
    key_id = shown["keys"][0]["key_id"]
    # the last admin key: refused without --force, revoked with it (the CLI's power)
    assert _cli(["admin", "revoke-key", "-t", "acme", key_id], env).returncode != 0
    assert _cli(["admin", "revoke-key", "-t", "acme", key_id, "--force"], env).returncode == 0
    assert httpx.get(f"{url}/v1/places", headers=admin).status_code == 401
    actions = [json.loads(line)["action"] for line in
               _cli(["admin", "audit", "-t", "acme"], env).stdout.splitlines()]
    assert {"tenant.create", "tenant.retention", "key.create", "key.revoke"} <= set(actions)
    # a command on the store itself says what to use instead, no traceback
    out = _cli(["admin", "erase-visitor", "-t", "acme", "V-000001"], env)
    assert out.returncode == 2 and "DELETE /v1/visitors" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_operator_api_needs_the_operator_token(
        served: tuple[str, dict[str, str], Path]) -> None:
    url, _, data = served
    token = json.loads((data / "serve.json").read_text())["token"]
    op = {"Authorization": f"Bearer {token}"}
    assert httpx.put(f"{url}/v1/operator/tenants/acme", json={}).status_code == 401
    r = httpx.put(f"{url}/v1/operator/tenants/acme", json={"retention_days": 7}, headers=op)
    assert r.status_code == 200 and r.json()["created"] is True
    r = httpx.put(f"{url}/v1/operator/tenants/acme", json={"name": "ACME"}, headers=op)
    assert r.json() == {"tenant": "acme", "name": "ACME", "retention_days": 7,
                        "created": False}
    assert httpx.get(f"{url}/v1/admin/keys", headers=op).status_code == 422  # which tenant?
    assert httpx.get(f"{url}/v1/admin/keys",
                     headers={**op, "X-Revisit-Tenant": "nope"}).status_code == 404
    assert httpx.get(f"{url}/v1/admin/keys",
                     headers={**op, "X-Revisit-Tenant": "acme"}).json() == []
    # an admin key of a tenant is not an operator
    k = httpx.post(f"{url}/v1/admin/keys", json={"role": "admin"},
                   headers={**op, "X-Revisit-Tenant": "acme"}).json()["key"]
    assert httpx.get(f"{url}/v1/operator/tenants",
                     headers={"Authorization": f"Bearer {k}"}).status_code == 401
