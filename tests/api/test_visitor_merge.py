"""Merging and splitting visitors over HTTP while the server runs (the CLI cannot open the
store then): the report follows at once, the change is audited, mistakes are 404/422."""

from __future__ import annotations

from tests.api.conftest import Env

from revisit.store.testing import at, batch, sighting


def test_merge_and_split_while_serving(env: Env) -> None:
    store = env.service.runtime.store
    store.write(batch([sighting("V-000001", at(0), "101", tenant="acme"),
                       sighting("V-000002", at(0, day=1), "203", tenant="acme"),
                       sighting("V-000003", at(5), "101", tenant="other")]))

    def unique() -> int:
        r = env.report(**{"from": "2024-03-01", "to": "2024-03-31", "format": "json"})
        assert r.status_code == 200, r.text
        return r.json()["header"]["unique_visitors"]

    admin = env.auth("admin")
    assert unique() == 2
    r = env.client.post("/v1/visitors/V-000001/merge", headers=admin,
                        json={"absorb": "V-000002", "reason": "same person, new glasses"})
    assert r.status_code == 200, r.text
    assert (r.json()["keep"], r.json()["absorb"]) == ("V-000001", "V-000002")
    assert unique() == 1
    audit = env.client.get("/v1/admin/audit", headers=admin).json()
    assert any(e["action"] == "visitor.merge" for e in audit)
    assert env.client.post("/v1/visitors/V-000001/merge", headers=admin,
                           json={"absorb": "V-000002"}).status_code == 422  # already one
    assert env.client.post("/v1/visitors/V-000001/merge", headers=admin,
                           json={"absorb": "V-000003"}).status_code == 404  # other tenant's
    assert env.client.post("/v1/visitors/V-000001/merge", headers=env.auth("analyst"),
                           json={"absorb": "V-000002"}).status_code == 403
    r = env.client.post("/v1/visitors/V-000002/split", headers=admin)
    assert r.status_code == 200 and r.json()["split_at"] is not None
    assert unique() == 2
    assert env.client.post("/v1/visitors/V-000002/split", headers=admin).status_code in (404, 422)


def test_a_filter_of_separators_only_is_refused(env: Env) -> None:
    """`locations=,,,` would silently mean every store."""
    for path in ("/v1/reports/unique-visitors", "/v1/reports/summary"):
        r = env.client.get(path, headers=env.auth("analyst"),
                           params={"from": "2024-03-01", "to": "2024-03-02", "locations": ",,,"})
        assert r.status_code == 422 and "names no id" in r.text, (path, r.text)
    r = env.client.get("/v1/occupancy/history", headers=env.auth("analyst"),
                       params={"from": "2024-03-01", "to": "2024-03-02", "locations": " , "})
    assert r.status_code == 422


def test_a_merge_stored_is_audited_even_if_the_resolver_cannot_follow(env: Env,
                                                                      monkeypatch) -> None:
    store = env.service.runtime.store
    store.write(batch([sighting("V-000001", at(0), "101", tenant="acme"),
                       sighting("V-000002", at(5), "101", tenant="acme")]))
    resolver = env.service.local_resolver(start=True)

    def broken(tenant: str) -> None:
        raise ValueError("exemplar has 8 dimensions, index has 128")

    monkeypatch.setattr(resolver, "reload", broken)
    admin = env.auth("admin")
    r = env.client.post("/v1/visitors/V-000001/merge", headers=admin, json={"absorb": "V-000002"})
    assert r.status_code == 200, r.text  # it is stored: the answer says so
    audit = env.client.get("/v1/admin/audit", headers=admin).json()
    assert [e["action"] for e in audit].count("visitor.merge") == 1
    # control characters in free text are refused (they garble logs, CSV, terminals)
    r = env.client.post("/v1/visitors/V-000002/split", headers=admin)
    assert r.status_code == 200, r.text
    r = env.client.post("/v1/visitors/V-000001/merge", headers=admin,
                        json={"absorb": "V-000002", "reason": "a\u0000b\u001b[31m"})
    assert r.status_code == 422 and "control characters" in r.text
