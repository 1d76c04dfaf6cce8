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
    run("erase-visitor", "-t", "acme", "V-000001", code=2)
    log = [json.loads(line) for line in run("audit", "-t", "acme").splitlines()]
    assert log[0]["action"] == "retention.purge"
    key_id = shown["keys"][0]["key_id"]
    run("revoke-key", "-t", "acme", key_id)


def test_admin_purge_drops_failed_batches_past_their_tenants_retention(tmp_path) -> None:
    """`revisit admin purge` deletes a failed spooled batch whose snapshots are all older
    than its tenant's retention, as the server's purge does."""
    from datetime import UTC, datetime, timedelta

    from revisit.api.spool import Spool
    from revisit.records import Batch, Frame

    runner = CliRunner()
    data = ["--data", str(tmp_path / "d")]
    assert runner.invoke(app, [*data, "admin", "add-tenant", "acme", "--retention-days",
                               "30"]).exit_code == 0
    spool = Spool(tmp_path / "d" / "spool")
    for batch_id, days in (("B-old", 40), ("B-new", 1)):
        ts = datetime.now(UTC) - timedelta(days=days)
        spool.put(Batch(batch_id, frames=[Frame("acme", "cam", "101", batch_id, ts,
                                                data=b"x" * 100)]))
        spool.set_aside(batch_id)
    r = runner.invoke(app, [*data, "admin", "purge"])
    assert r.exit_code == 0, r.output
    assert [p.name for p in spool.failed_dir.iterdir()] == ["B-new.batch"]
