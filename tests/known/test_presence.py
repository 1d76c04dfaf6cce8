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


def test_a_staff_visit_over_midnight_under_two_ids_is_one_visit(
        store_factory: object) -> None:
    """V-2 (merged into V-1) was seen inside V-1's visit that began before midnight: the
    person's visit began on the first day, and the second day has none of it."""
    from datetime import UTC, date, datetime, timedelta

    from revisit.known.enrol import Enrolments
    from revisit.known.presence import staff_presence
    from revisit.report.query import ReportQuery
    from revisit.store.testing import batch, sighting
    from revisit.tenancy.db import Tenancy

    store = store_factory()  # type: ignore[operator]
    midnight = datetime(2024, 3, 2, tzinfo=UTC)
    rows = [sighting("V-000001", midnight + timedelta(minutes=k)) for k in range(-60, 61, 20)]
    rows += [sighting("V-000002", midnight + timedelta(minutes=k)) for k in (10, 30)]
    store.write(batch(rows))
    store.merge_visitors("default", "V-000001", "V-000002")
    ten = Tenancy(store)
    ten.create_tenant("default")
    book = Enrolments(store, ten)
    book.enrol_visitor("default", "staff", "V-000001", reason="works here")
    (first,) = staff_presence(book, ReportQuery(date(2024, 3, 1), date(2024, 3, 1)))
    assert (first["visits"], first["days_present"]) == (1, 1)
    assert first["hours_present"] == round((2 * 3600 + 15) / 3600, 2)
    assert staff_presence(book, ReportQuery(date(2024, 3, 2), date(2024, 3, 2))) == []
    store.close()
