"""The HTTP API against its documented contract, as an integrator calls it (no models)."""

from __future__ import annotations

import pytest
from tests.api.conftest import Env, photo

from revisit.api.workpool import PoolBusy


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
