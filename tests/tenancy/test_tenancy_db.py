"""Admin data: hashed keys, roles, camera binding, registry, groups, audit, isolation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from revisit.store.duckdb_store import DuckDBStore
from revisit.store.testing import at, batch, sighting
from revisit.tenancy.db import Tenancy, TenancyError, hash_key
from revisit.tenancy.privacy import erase_visitor, purge_tenant


@pytest.fixture
def t(store) -> Tenancy:
    ten = Tenancy(store)
    ten.create_tenant("acme", retention_days=30)
    ten.add_location("acme", "101", "Main", "Europe/Berlin")
    ten.add_camera("acme", "camA", "101")
    ten.create_tenant("other")
    return ten


def test_keys_are_stored_hashed_and_authenticate(t: Tenancy) -> None:
    key, secret = t.create_key("acme", "camera", ["camA"], "door")
    assert secret.startswith("rvk_") and len(secret) > 40
    with t.store.read() as s:
        stored = s.execute("SELECT key_hash FROM tenancy_keys").fetchall()
        assert [tuple(r) for r in stored] == [(hash_key(secret),)]
        assert secret not in str(s.execute("SELECT * FROM tenancy_keys").fetchall())
    got = t.authenticate(secret)
    assert got is not None and got.tenant == "acme" and got.cameras == ("camA",)
    assert got.may_post_for("camA") and not got.may_post_for("camB")
    assert t.authenticate(secret + "x") is None and t.authenticate("") is None
    assert t.revoke_key("acme", key.key_id)
    assert t.authenticate(secret) is None
    # another tenant cannot revoke or see it
    assert not t.revoke_key("other", key.key_id) and t.keys("other") == []


def test_validation(t: Tenancy) -> None:
    with pytest.raises(TenancyError, match="already exists"):
        t.create_tenant("acme")
    with pytest.raises(TenancyError, match="not valid"):
        t.create_tenant("bad name!")
    with pytest.raises(TenancyError, match="timezone"):
        t.add_location("acme", "102", timezone="Mars/Olympus")
    with pytest.raises(TenancyError, match="unknown location"):
        t.add_camera("acme", "camZ", "999")
    with pytest.raises(TenancyError, match="at least one camera"):
        t.create_key("acme", "camera")
    with pytest.raises(TenancyError, match="not registered"):
        t.create_key("other", "camera", ["camA"])  # acme's camera, other tenant
    with pytest.raises(TenancyError, match="role"):
        t.create_key("acme", "root")
    with pytest.raises(TenancyError, match="not registered"):
        t.set_group("other", "g", ["camA"])


def test_registry_groups_and_audit(t: Tenancy) -> None:
    cam = t.camera("acme", "camA")
    assert cam is not None and cam.timezone == "Europe/Berlin" and cam.location_id == "101"
    assert t.camera("other", "camA") is None
    t.add_camera("acme", "camB", "101", timezone="UTC")
    assert t.set_group("acme", "all", ["camB", "camA"]) == ["camA", "camB"]
    t.set_group("acme", "all", ["camA"])  # replaced
    assert t.group_cameras("acme", "all") == ["camA"]
    assert t.group_cameras("other", "all") is None
    actions = [a["action"] for a in t.audit_log("acme")]
    assert actions[0] == "group.put" and "tenant.create" in actions
    assert t.audit_log("other")[0]["action"] == "tenant.create"
    assert all(a["action"] == "tenant.create" for a in t.audit_log("other"))


def test_purge_and_erase_on_store(tmp_path) -> None:
    store = DuckDBStore(tmp_path / "s.duckdb")
    ten = Tenancy(store)
    ten.create_tenant("acme", retention_days=10)
    now = datetime(2024, 3, 20, tzinfo=UTC)
    store.write(batch([
        sighting("V-000001", at(0, 0), tenant="acme"),  # 2024-03-01: older than 10 days
        sighting("V-000002", at(0, 0), tenant="acme"),
        sighting("V-000002", at(0, 15), tenant="acme"),  # 2024-03-16: kept
        sighting("V-000001", at(0, 0), tenant="default"),  # other tenant: untouched
    ]))
    counts = purge_tenant(store, None, ten, "acme", "test", now=now)
    assert counts["sightings"] == 2 and counts["embeddings"] == 2 and counts["visitors"] == 1
    assert store.stats("acme")["sightings"] == 1 and store.stats("acme")["visitors"] == 1
    assert store.stats("default")["sightings"] == 1
    assert store.visitor_detail("acme", "V-000001") is None
    assert store.stats("acme")["frames"] == 3  # frames stay: a resend stays a duplicate
    counts = erase_visitor(store, None, ten, "acme", "V-000002", "test")
    assert counts["sightings"] == 1
    assert store.stats("acme")["sightings"] == 0
    with pytest.raises(KeyError):
        erase_visitor(store, None, ten, "acme", "V-000002", "test")
    actions = [a["action"] for a in ten.audit_log("acme")]
    assert actions[:2] == ["visitor.erase", "retention.purge"]
    store.close()


def test_a_legacy_tenancy_file_is_imported_once(store, tmp_path, monkeypatch) -> None:
    """An earlier version's tenancy.duckdb beside the store: imported with its audit log,
    and not again by a process that starts after one killed before the file's rename."""
    from pathlib import Path

    from revisit.tenancy.db import LEGACY_FILE, open_tenancy

    data = tmp_path / "data"
    data.mkdir()
    old = DuckDBStore(data / LEGACY_FILE)
    legacy = Tenancy(old)
    legacy.create_tenant("acme")
    legacy.create_key("acme", "admin", name="ops")
    old.close()

    real_rename = Path.rename
    monkeypatch.setattr(Path, "rename", lambda self, target: (_ for _ in ()).throw(
        KeyboardInterrupt("killed before the rename")))
    with pytest.raises(KeyboardInterrupt):
        open_tenancy(store, data)
    monkeypatch.setattr(Path, "rename", real_rename)
    ten = open_tenancy(store, data)  # the next start
    assert [x.tenant for x in ten.tenants()] == ["acme"]
    actions = [a["action"] for a in ten.audit_log("acme")]
    assert sorted(actions) == ["key.create", "tenant.create"]
    assert (data / f"{LEGACY_FILE}.imported").is_file()


def test_timezones_name_places_and_cameras_follow_their_location(t: Tenancy) -> None:
    for tz in ("localtime", "Factory", "Mars/Olympus"):
        with pytest.raises(TenancyError, match=repr(tz)):
            t.add_location("acme", "102", "X", tz)
    t.add_camera("acme", "camB", "101", timezone="Europe/London")  # its own, kept
    t.add_location("acme", "101", "Main", "America/New_York")  # the store's zone fixed
    zones = {c.camera_id: c.timezone for c in t.cameras("acme")}
    assert zones == {"camA": "America/New_York", "camB": "Europe/London"}
