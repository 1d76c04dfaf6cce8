"""Dashboard figures (store/summary.py) on hand-built sightings, checked by hand, on every
store backend (the PostgreSQL store translates the summary SQL's dialect)."""

from __future__ import annotations

from datetime import date, timedelta

from revisit.report.query import ReportQuery
from revisit.store import summary
from revisit.store.base import SightingStore
from revisit.store.testing import at, batch, sighting


def _fill(s: SightingStore) -> SightingStore:
    rows = [
        # V1: two visits at 101 on days 0 and 2, and one at 203 on day 2
        sighting("V-000001", at(0, 0), "101", tenant="acme"),
        sighting("V-000001", at(10, 0), "101", tenant="acme"),  # same visit
        sighting("V-000001", at(0, 2), "101", tenant="acme"),
        sighting("V-000001", at(60, 2), "203", tenant="acme"),
        # V2: one visit on day 1
        sighting("V-000002", at(0, 1), "101", tenant="acme"),
        # V3: seen before the period (day -3), once in it (day 1)
        sighting("V-000003", at(0, -3), "203", tenant="acme"),
        sighting("V-000003", at(0, 1), "203", tenant="acme"),
        # another tenant, same ids: never counted
        sighting("V-000001", at(0, 0), "101", tenant="other"),
        sighting("V-000009", at(0, 1), "101", tenant="other"),
    ]
    s.write(batch(rows))
    return s


def test_summary_figures(store: SightingStore) -> None:
    s = _fill(store)
    q = ReportQuery(date(2024, 3, 1), date(2024, 3, 3), tenant="acme",
                    visit_gap=timedelta(minutes=30))
    with s.read() as con:
        out = summary.summary(con, q)
    t = out["totals"]
    assert t["unique_visitors"] == 3
    assert t["visits"] == 3 + 1 + 1
    assert t["sightings"] == 6
    assert t["new_visitors"] == 2 and t["previously_seen"] == 1
    assert t["repeat_visitors"] == 1  # V1 (3 visits)
    assert t["returning_visitors"] == 2 and t["returning_share"] == round(2 / 3, 4)
    assert [d["unique_visitors"] for d in out["daily"]] == [1, 2, 1]
    assert [d["visits"] for d in out["daily"]] == [1, 2, 2]
    hist = {h["visits"]: h["visitors"] for h in out["histogram"]}
    assert hist["1"] == 2 and hist["3"] == 1 and hist["2"] == 0 and hist["10+"] == 0
    locs = {r["location_id"]: r for r in out["locations"]}
    assert locs["101"]["unique_visitors"] == 2 and locs["101"]["visits"] == 3
    assert locs["101"]["repeat_visitors"] == 1
    assert locs["203"]["unique_visitors"] == 2 and locs["203"]["repeat_visitors"] == 0
    # the report agrees on the headline
    header = s.report_header(q)
    assert (header.unique_visitors, header.total_visits) == (t["unique_visitors"], t["visits"])


def test_summary_respects_camera_filter(store: SightingStore) -> None:
    s = _fill(store)
    q = ReportQuery(date(2024, 3, 1), date(2024, 3, 3), tenant="acme", locations=("203",))
    with s.read() as con:
        t = summary.totals(con, q)
    assert t["unique_visitors"] == 2 and t["previously_seen"] == 1


def test_hours_and_days_follow_the_timezone_across_a_change_of_offset(
        store: SightingStore) -> None:
    from datetime import UTC, datetime

    # New York moves from UTC-5 to UTC-4 at 07:00 UTC on Sunday 2024-03-10
    visits = [datetime(2024, 3, 10, 6, 30, tzinfo=UTC),  # 01:30 EST, Sunday
              datetime(2024, 3, 10, 7, 30, tzinfo=UTC),  # 03:30 EDT, Sunday
              datetime(2024, 3, 11, 3, 30, tzinfo=UTC)]  # 23:30 EDT, still Sunday
    store.write(batch([sighting(f"V-00000{i}", t, "101", tenant="acme")
                       for i, t in enumerate(visits, 1)]))
    for tz, hours, days in (
        ("America/New_York", {1: 1, 3: 1, 23: 1}, {"2024-03-10": 3}),
        ("UTC", {6: 1, 7: 1, 3: 1}, {"2024-03-10": 2, "2024-03-11": 1}),
    ):
        q = ReportQuery(date(2024, 3, 9), date(2024, 3, 11), tenant="acme", timezone=tz)
        with store.read() as con:  # type: ignore[attr-defined]
            by = summary.by_time(con, q)
            daily = summary.daily(con, q)
        assert {h["hour"]: h["visits"] for h in by["by_hour"] if h["visits"]} == hours, tz
        assert {d["day"]: d["visits"] for d in daily if d["visits"]} == days, tz
        assert sum(d["visits"] for d in by["by_weekday"]) == 3
    ny = ReportQuery(date(2024, 3, 9), date(2024, 3, 11), tenant="acme",
                     timezone="America/New_York")
    with store.read() as con:  # type: ignore[attr-defined]
        assert [d["visits"] for d in summary.by_time(con, ny)["by_weekday"]][6] == 3  # Sun
