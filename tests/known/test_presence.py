"""The staff presence report takes the report's rules: the tenant's own places, at most
max_report_days."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.api.conftest import Env, make_env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from make_env(tmp_path, processing=False)


def test_staff_presence_takes_the_reports_rules(env: Env) -> None:
    def get(**params: str) -> object:
        return env.client.get("/v1/reports/staff-presence", headers=env.auth("admin"),
                              params={"from": "2024-05-01", "to": "2024-05-31", **params})

    assert get().status_code == 200
    unknown = get(locations="999")
    assert unknown.status_code == 403 and "999" in unknown.text
    assert get(locations="900").status_code == 403  # another tenant's
    too_long = get(**{"from": "2000-01-01"})
    assert too_long.status_code == 422 and "at most" in too_long.text
