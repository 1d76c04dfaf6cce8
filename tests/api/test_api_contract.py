"""The HTTP API against its documented contract, as an integrator calls it (no models)."""

from __future__ import annotations

import pytest
from tests.api.conftest import Env, photo

from revisit.api.workpool import PoolBusy
from revisit.store.testing import at, batch, sighting


def _busy(*args: object, **kwargs: object) -> None:
    raise PoolBusy("every report worker is busy")


def test_enrolment_while_the_report_pool_is_full_is_429_not_500(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enrolments run on the report pool: a full pool answers 429 with Retry-After, as
    every pooled operation does (docs/service.md, "Work per request is bounded")."""
    monkeypatch.setattr(env.service.reports, "_claim", _busy)
    r = env.client.post(
        "/v1/enrolments", headers=env.auth("admin"),
        data={"group": "staff", "label": "Anna", "reason": "till staff"},
        files=[("photos", ("a.jpg", photo("Colin_Powell", 1).read_bytes(), "image/jpeg"))])
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] and "busy" in r.json()["detail"]
    declared = env.client.get("/openapi.json").json()["paths"]["/v1/enrolments"]["post"]
    assert {"413", "429", "503"} <= set(declared["responses"])


def test_rotate_key_unknown_is_404_and_the_body_is_optional(env: Env) -> None:
    """An unknown (or revoked) key id answers 404 as DELETE /v1/admin/keys/{id} does and
    the schema declares; the body only carries the grace (default 24h), so it may be left
    out (``curl -X POST .../rotate``)."""
    admin = env.auth("admin")
    for key_id in ("nope", "0" * 12):
        r = env.client.post(f"/v1/admin/keys/{key_id}/rotate", json={"grace": "1h"},
                            headers=admin)
        assert r.status_code == 404, r.text
        assert key_id in r.json()["detail"]
    made = env.client.post("/v1/admin/keys", json={"role": "analyst"}, headers=admin).json()
    r = env.client.post(f"/v1/admin/keys/{made['key_id']}/rotate", headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["replaces"] == made["key_id"]
    assert env.client.get("/v1/places", headers={"Authorization": f"Bearer {made['key']}"}
                          ).status_code == 200  # the old key works through the grace
    r = env.client.post(f"/v1/admin/keys/{made['key_id']}/rotate", json={"grace": "abc"},
                        headers=admin)
    assert r.status_code == 422 and "abc" in r.json()["detail"]


def test_split_of_an_unknown_or_other_tenants_visitor_is_404(env: Env) -> None:
    """docs/service.md: another tenant's visitor ids answer 404, the same as ids that do not
    exist, on every visitor route (merge did; split answered 422 'is not merged'). A
    visitor of this tenant that is not merged stays a 422 naming that."""
    env.service.runtime.store.write(batch([
        sighting("V-000001", at(0), "101", tenant="acme"),
        sighting("V-000003", at(5), "900", tenant="other")]))
    admin = env.auth("admin")
    for vid in ("V-999999", "V-000003"):
        r = env.client.post(f"/v1/visitors/{vid}/split", headers=admin)
        assert r.status_code == 404, r.text
        assert r.json()["detail"] == f"no visitor {vid} in tenant acme"
        assert env.client.get(f"/v1/visitors/{vid}", headers=admin).status_code == 404
    r = env.client.post("/v1/visitors/V-000001/split", headers=admin)
    assert r.status_code == 422 and "is not merged" in r.json()["detail"]


def test_occupancy_history_refuses_a_location_the_tenant_does_not_have(env: Env) -> None:
    """docs/service.md: a report filter naming a location the tenant does not have answers
    403 (a typo must not read as an empty history, another tenant's id must not be
    probed); the occupancy history answered 200 with no minutes."""
    q = {"from": "2024-05-01", "to": "2024-05-02"}
    for loc in ("900", "nope", "101,nope"):
        r = env.client.get("/v1/occupancy/history", params={**q, "locations": loc},
                           headers=env.auth("analyst"))
        assert r.status_code == 403, r.text
        assert "is not a location of tenant 'acme'" in r.json()["detail"]
    r = env.client.get("/v1/occupancy/history", params={**q, "locations": "101,203"},
                       headers=env.auth("analyst"))
    assert r.status_code == 200 and r.json()["minutes"] == []
    r = env.client.get("/v1/occupancy/history", params={**q, "format": "csv"},
                       headers=env.auth("analyst"))
    assert r.headers["content-disposition"] == \
        'attachment; filename="occupancy_2024-05-01_2024-05-02.csv"'


def test_a_missing_or_non_json_body_is_named_as_such(env: Env) -> None:
    """``curl -d '{...}'`` without a JSON Content-Type, or no body at all, answered
    'request: Field required' / 'request: Input should be a valid dictionary'; the 422
    now says what is wrong with the body and which Content-Type to send."""
    admin = env.auth("admin")
    url = "/v1/visitors/V-000001/merge"
    body = b'{"absorb": "V-000002"}'
    cases = [
        ({}, b"", "the request body is missing", "no Content-Type"),
        ({"content-type": "application/x-www-form-urlencoded"}, body,
         "not a JSON object", "'application/x-www-form-urlencoded'"),
        ({"content-type": "text/plain"}, body, "not a JSON object", "'text/plain'"),
        ({"content-type": "application/json"}, b"", "the request body is missing", ""),
        ({"content-type": "application/json"}, b"[1, 2]", "not a JSON object", ""),
    ]
    for headers, content, what, sent in cases:
        r = env.client.post(url, content=content, headers={**admin, **headers})
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert what in detail and sent in detail, detail
        assert "request:" not in detail, detail
    r = env.client.put("/v1/admin/retention", json={"retention_days": "x"}, headers=admin)
    assert r.json()["detail"].startswith("retention_days: ")  # field errors as before
    r = env.client.put("/v1/locations/101/capacity", headers=admin,
                       json={"capacity": 50, "amber_pct": 95, "red_pct": 90})
    assert r.status_code == 422 and "amber_pct (95.0) must be below" in r.json()["detail"]


def test_occupancy_without_capacity_names_commands_that_exist(env: Env) -> None:
    """The 404 named 'revisit occupancy set-location', which does not exist."""
    r = env.client.get("/v1/locations/203/occupancy", headers=env.auth("analyst"))
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert "revisit admin set-capacity" in detail and "/v1/locations/{id}/capacity" in detail
    from typer.testing import CliRunner

    from revisit.cli.main import app

    out = CliRunner().invoke(app, ["admin", "set-capacity", "--help"])
    assert out.exit_code == 0, out.output


def test_batch_list_cursor_is_null_when_no_batch_is_left(env: Env) -> None:
    """docs/service.md: next_before is null when there is no more. With as many batches as
    the limit, the last page answered a cursor to an empty page."""
    for i in range(2):
        r = env.post_batch("cam_a", [{"path": photo("Colin_Powell", 1), "camera_id": "camA",
                                      "ts": f"2024-05-02T10:00:0{i}Z", "image_id": f"b{i}"}])
        assert r.status_code == 202, r.text
    for limit in (1, 2):
        pages, params = [], {"limit": limit}
        while True:
            page = env.client.get("/v1/batches", params=params,
                                  headers=env.auth("admin")).json()
            pages.append(len(page["batches"]))
            if page["next_before"] is None:
                break
            params = {**params, "before": page["next_before"],
                      "before_id": page["next_before_id"]}
        assert pages == [limit] * (2 // limit), pages  # no empty page at the end


def test_every_keyed_operation_declares_the_bearer_scheme(env: Env) -> None:
    """A client generated from /openapi.json sends the key only where the operation
    declares it: GET /v1/locations/{id}/occupancy (analyst, admin or display key) did not."""
    paths = env.client.get("/openapi.json").json()["paths"]
    unkeyed = {"/healthz", "/readyz", "/metrics", "/v1/pipeline"}  # token or loopback
    missing = [f"{m.upper()} {p}" for p, ops in paths.items() for m, op in ops.items()
               if p not in unkeyed and not op.get("security")]
    assert missing == []


@pytest.mark.parametrize(("path", "role"), [
    ("/v1/reports/staff-presence?from=2024-05-01&to=2024-05-02", "admin"),
    ("/v1/occupancy/history?from=2024-05-01&to=2024-05-02", "analyst"),
])
def test_staff_presence_and_occupancy_history_run_on_the_report_pool(
        env: Env, monkeypatch: pytest.MonkeyPatch, path: str, role: str) -> None:
    """Both are reports: bounded by the pool and its budget as the others are (they ran
    on the request threads, outside both)."""
    assert env.client.get(path, headers=env.auth(role)).status_code == 200
    monkeypatch.setattr(env.service.reports, "_claim", _busy)
    r = env.client.get(path, headers=env.auth(role))
    assert r.status_code == 429 and r.headers["retry-after"], r.text


def test_the_report_page_is_what_the_schema_declares(env: Env) -> None:
    """The JSON page of the main report has a declared shape (a generated client gets
    typed rows), and a real answer with visitors in two stores fits it exactly."""
    from revisit.api.reports import ReportPageOut

    env.service.runtime.store.write(batch([
        sighting("V-000001", at(0), "101", tenant="acme"),
        sighting("V-000001", at(300), "203", tenant="acme"),
        sighting("V-000002", at(60), "101", tenant="acme"),
    ]))
    r = env.report(**{"from": at(0).date().isoformat(), "to": at(0).date().isoformat()})
    assert r.status_code == 200, r.text
    page = ReportPageOut.model_validate(r.json())  # extra or missing fields fail
    assert page.total == 2 and page.visitors[0].visitor_id == "V-000001"
    assert [loc.name for loc in page.visitors[0].locations] == ["Main Street", "Harbour"]
    declared = env.client.get("/openapi.json").json()
    ok = declared["paths"]["/v1/reports/unique-visitors"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/ReportPageOut")
    assert "visitors" in declared["components"]["schemas"]["ReportPageOut"]["properties"]


def test_a_report_pages_total_and_rows_agree_while_sightings_arrive(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A visitor written while a page is read is in both its total and its rows or in
    neither (the total and the rows came from two reads: total 2, 3 rows)."""
    store = env.service.runtime.store
    store.write(batch([sighting(f"V-00000{i}", at(i), "101", tenant="acme")
                       for i in (1, 2)]))
    stream = store.engine.stream

    def arriving(*args: object, **kwargs: object) -> object:
        store.write(batch([sighting("V-000003", at(3), "101", tenant="acme")]))
        monkeypatch.setattr(store.engine, "stream", stream)
        return stream(*args, **kwargs)

    monkeypatch.setattr(store.engine, "stream", arriving)
    day = at(0).date().isoformat()
    body = env.report(**{"from": day, "to": day, "page_size": 2}).json()
    last = env.report(**{"from": day, "to": day, "page_size": 2, "page": 2}).json()
    assert body["total"] == body["header"]["unique_visitors"] == 3
    assert body["pages"] == 2 and len(body["visitors"]) + len(last["visitors"]) == 3


def test_the_summary_is_what_the_schema_declares(env: Env) -> None:
    from revisit.api.reports import SummaryOut

    env.service.runtime.store.write(batch([
        sighting("V-000001", at(0), "101", tenant="acme"),
        sighting("V-000001", at(300), "203", tenant="acme"),
        sighting("V-000002", at(60), "101", tenant="acme"),
    ]))
    day = at(0).date().isoformat()
    r = env.client.get("/v1/reports/summary", params={"from": day, "to": day},
                       headers=env.auth("analyst"))
    assert r.status_code == 200, r.text
    out = SummaryOut.model_validate(r.json())
    assert out.totals.unique_visitors == 2 and out.dwell.all.visits == 3
    for empty in ("2023-01-01",):  # no visits: shares and medians still fit
        r = env.client.get("/v1/reports/summary", params={"from": empty, "to": empty},
                           headers=env.auth("analyst"))
        assert SummaryOut.model_validate(r.json()).dwell.all.median_s is None
    ok = env.client.get("/openapi.json").json()["paths"]["/v1/reports/summary"]["get"]
    assert ok["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/SummaryOut")


@pytest.mark.parametrize("bad", ["1714521600", "2024-05-01T10:00:00", "20240501", "2024-5-1"])
def test_a_day_is_written_yyyy_mm_dd(env: Env, bad: str) -> None:
    """A Unix time or a datetime would be read as some day: refused, naming the form."""
    for path in ("/v1/reports/unique-visitors", "/v1/reports/summary"):
        r = env.client.get(path, params={"from": bad, "to": "2024-05-02"},
                           headers=env.auth("analyst"))
        assert r.status_code == 422 and "YYYY-MM-DD" in r.json()["detail"], r.text
    ok = env.client.get("/v1/reports/summary", params={"from": "2024-05-01", "to": "2024-05-02"},
                        headers=env.auth("analyst"))
    assert ok.status_code == 200


def test_places_visitor_keys_and_audit_are_what_the_schema_declares(env: Env) -> None:
    """Real answers fit their declared shapes exactly (extra or missing fields fail)."""
    from pydantic import TypeAdapter

    from revisit.api.admin import AuditEntryOut, KeyOut, VisitorOut
    from revisit.api.reports import PlacesOut

    env.service.runtime.store.write(batch([
        sighting("V-000001", at(0), "101", tenant="acme"),
        sighting("V-000001", at(300), "203", tenant="acme"),
    ]))
    admin = env.auth("admin")
    places = PlacesOut.model_validate(env.client.get("/v1/places", headers=admin).json())
    assert {loc.location_id for loc in places.locations} >= {"101", "203"}
    visitor = VisitorOut.model_validate(
        env.client.get("/v1/visitors/V-000001", headers=admin).json())
    assert visitor.sightings == 2 and visitor.locations == {"101": 1, "203": 1}
    assert visitor.first_seen is not None and visitor.first_seen.endswith("Z")
    keys = TypeAdapter(list[KeyOut]).validate_python(
        env.client.get("/v1/admin/keys", headers=admin).json())
    assert keys and all(k.created_at.endswith("Z") for k in keys)
    audit = TypeAdapter(list[AuditEntryOut]).validate_python(
        env.client.get("/v1/admin/audit", headers=admin).json())
    assert audit and all(e.ts.endswith("Z") for e in audit)
    paths = env.client.get("/openapi.json").json()["paths"]
    for path, method in (("/v1/places", "get"), ("/v1/visitors/{visitor_id}", "get"),
                         ("/v1/admin/keys", "get"), ("/v1/admin/audit", "get")):
        schema = paths[path][method]["responses"]["200"]["content"]["application/json"]
        assert schema["schema"] != {}, path
