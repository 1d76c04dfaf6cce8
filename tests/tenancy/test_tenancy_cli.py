"""`revisit admin ...` end to end on a data directory."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from revisit.cli.main import app


def test_admin_cli(tmp_path) -> None:
    runner = CliRunner()
    data = ["--data", str(tmp_path / "d")]

    def run(*args: str, code: int = 0) -> str:
        r = runner.invoke(app, [*data, "admin", *args])
        assert r.exit_code == code, r.output
        return r.stdout

    run("add-tenant", "acme", "--retention-days", "30")
    run("add-location", "-t", "acme", "101", "--name", "Main", "--timezone", "Europe/Berlin")
    run("add-camera", "-t", "acme", "camA", "--location", "101")
    run("add-camera", "-t", "acme", "camZ", "--location", "999", code=2)
    secret = run("add-key", "-t", "acme", "--role", "camera", "--cameras", "camA").strip()
    assert secret.startswith("rvk_")
    run("set-group", "-t", "acme", "front", "--cameras", "camA")
    shown = json.loads(run("show", "-t", "acme"))
    assert shown["cameras"][0]["timezone"] == "Europe/Berlin"
    assert shown["groups"] == {"front": ["camA"]}
    assert secret not in json.dumps(shown)
    assert "acme: " in run("purge")
    run("erase-visitor", "-t", "acme", "V-000001", code=1)
    log = [json.loads(line) for line in run("audit", "-t", "acme").splitlines()]
    assert log[0]["action"] == "retention.purge"
    key_id = shown["keys"][0]["key_id"]
    run("revoke-key", "-t", "acme", key_id)
