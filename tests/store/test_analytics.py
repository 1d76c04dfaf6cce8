"""Dwell (visit duration) and when visits happen, on both stores, from sightings whose
truth is known by construction."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from revisit.report.query import ReportQuery
from revisit.store import summary as S
from revisit.store.base import SightingStore
from revisit.store.testing import at, batch, sighting

Q = ReportQuery(date(2024, 3, 1), date(2024, 3, 3), visit_gap=timedelta(minutes=30))
STEP = timedelta(seconds=15)


def _load(store: SightingStore) -> None:
    # T0 = 2024-03-01 09:00 UTC, a Friday
    store.write(batch([
        # V1 at 101: a visit 09:00-09:20 (20 min), then another the next day 12:00 alone
        sighting("V-000001", at(0), "101"), sighting("V-000001", at(10), "101"),
        sighting("V-000001", at(20), "101"), sighting("V-000001", at(180, day=1), "101"),
        # V2 at 101: 09:05-09:08 (3 min); at 203: 09:40-10:25 (45 min, gaps under 30)
        sighting("V-000002", at(5), "101"), sighting("V-000002", at(8), "101"),
        sighting("V-000002", at(40), "203"), sighting("V-000002", at(65), "203"),
        sighting("V-000002", at(85), "203"),
    ]))


def test_visit_durations_per_store(store: SightingStore) -> None:
    _load(store)
    with store.read() as con:  # type: ignore[attr-defined]
        d = S.dwell(con, Q, STEP)
    by = {x["location_id"]: x for x in d["locations"]}
    # 101: 20m15s, 15s (seen once), 3m15s -> median 3m15s
    assert by["101"]["visits"] == 3 and by["101"]["median_s"] == 195.0
    assert by["101"]["buckets"] == {"<1m": 1, "1-5m": 1, "5-15m": 0, "15-30m": 1,
                                    "30-60m": 0, "60m+": 0}
    assert by["203"]["visits"] == 1 and by["203"]["median_s"] == 45 * 60 + 15
    assert d["all"]["visits"] == 4 and d["all"]["buckets"]["30-60m"] == 1
    assert d["all"]["median_s"] == (195.0 + 20 * 60 + 15) / 2


def test_visits_by_hour_and_weekday(store: SightingStore) -> None:
    _load(store)
    with store.read() as con:  # type: ignore[attr-defined]
        t = S.by_time(con, Q)
    hours = {x["hour"]: x["visits"] for x in t["by_hour"] if x["visits"]}
    assert hours == {9: 3, 12: 1}  # visits start at 09:00, 09:05, 09:40 and 12:00
    days = {x["day"]: x["visits"] for x in t["by_weekday"] if x["visits"]}
    assert days == {"Fri": 3, "Sat": 1}


def test_summary_carries_them(store: SightingStore) -> None:
    _load(store)
    with store.read() as con:  # type: ignore[attr-defined]
        out = S.summary(con, Q, STEP)
    assert out["dwell"]["all"]["visits"] == out["totals"]["visits"] == 4
    assert sum(x["visits"] for x in out["by_hour"]) == 4


def test_flows_between_stores(store: SightingStore) -> None:
    _load(store)
    store.write(batch([sighting("V-000003", at(30), "203")]))  # 203 only
    with store.read() as con:  # type: ignore[attr-defined]
        f = S.flows(con, Q)
    assert f["visitors_per_location"] == {"101": 2, "203": 2}
    # of 101's two visitors, one (V2) also went to 203; of 203's two, one (V2) to 101
    assert f["affinity"] == [
        {"from": "101", "to": "203", "visitors": 1, "share": 0.5},
        {"from": "203", "to": "101", "visitors": 1, "share": 0.5},
    ]
    # V2: 101 (09:05) then 203 (09:40); V1 stays at 101
    assert f["transitions"] == [{"from": "101", "to": "203", "visits": 1}]


def test_camera_paths_within_a_store(store: SightingStore) -> None:
    store.write(batch([
        # V1, one visit at 101: door -> door -> till -> door (repeats collapse)
        sighting("V-000001", at(0), "101", camera="door"),
        sighting("V-000001", at(2), "101", camera="door"),
        sighting("V-000001", at(6), "101", camera="till"),
        sighting("V-000001", at(9), "101", camera="door"),
        # V2, one visit: door -> till; V3: door only
        sighting("V-000002", at(1), "101", camera="door"),
        sighting("V-000002", at(4), "101", camera="till"),
        sighting("V-000003", at(3), "101", camera="door"),
    ]))
    with store.read() as con:  # type: ignore[attr-defined]
        (p,) = S.camera_paths(con, Q)
    assert p["location_id"] == "101"
    assert p["transitions"] == [{"from": "door", "to": "till", "visits": 2},
                                {"from": "till", "to": "door", "visits": 1}]
    assert p["paths"] == [{"path": ["door"], "visits": 1},
                          {"path": ["door", "till"], "visits": 1},
                          {"path": ["door", "till", "door"], "visits": 1}]


def test_camera_paths_go_through_zones(store: SightingStore) -> None:
    """A sighting in one of its camera's named zones is a step camera/zone of the path."""
    rows = [sighting("V-000001", at(0), "101", camera="door"),
            sighting("V-000001", at(3), "101", camera="floor"),
            sighting("V-000001", at(6), "101", camera="floor"),
            sighting("V-000001", at(9), "101", camera="door")]
    rows[2].zone = "till 3"
    store.write(batch(rows))
    for rollup in (True, False):
        with store.read() as con, S.sessionised(con, Q, rollup=rollup):  # type: ignore[attr-defined]
            (p,) = S.camera_paths(con, Q)
        assert p["paths"] == [{"path": ["door", "floor", "floor/till 3", "door"], "visits": 1}]


def test_analytics_follow_merges_splits_and_erasure(store: SightingStore) -> None:
    """A merge makes two visitors one everywhere; a split undoes it; an erased visitor is
    gone from every analysis."""
    _load(store)
    store.write(batch([sighting("V-000003", at(45), "203")]))  # joins V2's 203 visit...

    def figures() -> tuple[int, int, int, list]:
        with store.read() as con:  # type: ignore[attr-defined]
            t = S.totals(con, Q)
            d = S.dwell(con, Q, STEP)
            f = S.flows(con, Q)
        return t["unique_visitors"], t["visits"], d["all"]["visits"], f["affinity"]

    assert figures()[:3] == (3, 5, 5)
    store.merge_visitors("default", "V-000002", "V-000003")  # ...once they are one person
    assert figures()[:3] == (2, 4, 4)  # one visitor, its two 203 visits one
    store.split_visitor("default", "V-000003")
    assert figures()[:3] == (3, 5, 5)
    store.erase_visitor("default", "V-000002")
    visitors, visits, dwell_visits, affinity = figures()
    assert (visitors, visits, dwell_visits) == (2, 3, 3) and affinity == []  # V2 linked them


def test_every_sighting_is_a_visit_at_gap_zero_even_two_at_one_instant(
        store: SightingStore) -> None:
    t = at(180)
    store.write(batch([sighting("V-000001", t, "L1", camera="a"),
                       sighting("V-000001", t, "L1", camera="b"),
                       sighting("V-000001", at(185), "L1", camera="a")]))
    q = ReportQuery(t.date(), t.date(), visit_gap=timedelta(0))
    assert store.report_header(q).total_visits == 3
    with store.read() as con:  # type: ignore[attr-defined]
        out = S.summary(con, q)
    assert out["totals"]["visits"] == 3 and out["dwell"]["all"]["visits"] == 3
    assert sum(x["visits"] for x in out["by_hour"]) == 3


def test_a_gap_of_odd_milliseconds_is_kept_to_the_microsecond(store: SightingStore) -> None:
    t = at(0)
    store.write(batch([sighting("V-000002", t, "L1"),
                       sighting("V-000002", t + timedelta(milliseconds=1001), "L1")]))
    q = ReportQuery(t.date(), t.date(), visit_gap=timedelta(milliseconds=1001))
    assert store.report_header(q).total_visits == 1  # a gap equal to the visit gap joins


def test_a_postgres_database_sorting_by_locale_gives_duckdbs_answers(tmp_path: Path) -> None:
    """Camera paths (two cameras at one instant), their ties and the store listing are
    ordered by the ids' bytes on every engine, not by the database's locale."""
    import os
    import uuid

    import pytest

    psycopg = pytest.importorskip("psycopg")
    from revisit.store.duckdb_store import DuckDBStore
    from revisit.store.postgres_store import PostgresStore

    base = os.environ.get("REVISIT_TEST_PG_URL",
                          "postgresql://postgres@127.0.0.1:5432/revisit_test").rsplit("/", 1)[0]
    name = "icu_" + uuid.uuid4().hex[:10]
    try:
        admin = psycopg.connect(base + "/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    try:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu "
                      "ICU_LOCALE 'en' LOCALE 'C.UTF-8'")
    except psycopg.Error as exc:
        admin.close()
        pytest.skip(f"this PostgreSQL cannot make an ICU database: {exc}")
    rows = []
    for v in range(3):
        rows += [sighting(f"V-{v + 1:06X}", at(0), location="berlin", camera="door"),
                 sighting(f"V-{v + 1:06X}", at(0), location="berlin", camera="Till")]
    rows.append(sighting("V-000009", at(3), location="Munich", camera="M1"))
    answers = []
    stores = [DuckDBStore(str(tmp_path / "d.duckdb")),
              PostgresStore(f"{base}/{name}?schema=s", connect_timeout=3)]
    try:
        for s in stores:
            s.write(batch(rows))
            q = ReportQuery(date(2024, 3, 1), date(2024, 3, 1))
            with s.read() as con:  # type: ignore[attr-defined]
                answers.append((S.camera_paths(con, q),
                                [x["location_id"] for x in S.summary(con, q)["locations"]]))
    finally:
        for s in stores:
            s.close()
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
    assert answers[0] == answers[1]
    berlin = next(x for x in answers[0][0] if x["location_id"] == "berlin")
    assert berlin["paths"][0]["path"] == ["Till", "door"]
    assert answers[0][1] == ["Munich", "berlin"]


def test_dwell_bucket_bounds_are_exclusive_upper_ends(store: SightingStore) -> None:
    # with the 15 s interval: 45 s apart -> exactly 1 min; 4m45s apart -> exactly 5 min;
    # 44 s apart -> 59 s
    store.write(batch([
        sighting("V-000001", at(0), "101"), sighting("V-000001", at(0.75), "101"),
        sighting("V-000002", at(0), "101"), sighting("V-000002", at(4.75), "101"),
        sighting("V-000003", at(0), "101"), sighting("V-000003", at(44 / 60), "101"),
    ]))
    with store.read() as con:  # type: ignore[attr-defined]
        for rollup in (True, False):
            with S.sessionised(con, Q, rollup=rollup):
                d = S.dwell(con, Q, STEP)
            assert d["all"]["buckets"] == {"<1m": 1, "1-5m": 1, "5-15m": 1, "15-30m": 0,
                                           "30-60m": 0, "60m+": 0}
            assert d["all"]["median_s"] == 60.0


def test_the_last_histogram_bucket_holds_every_visitor_with_ten_or_more_and_repeats_count_once(
    store: SightingStore,
) -> None:
    # one visit a day: V1 9 visits, V2 10, V3 12 (the period is long enough for all)
    rows = [sighting(v, at(0, day=d), "101")
            for v, n in (("V-000001", 9), ("V-000002", 10), ("V-000003", 12)) for d in range(n)]
    store.write(batch(rows))
    q = ReportQuery(date(2024, 3, 1), date(2024, 3, 20))
    with store.read() as con:  # type: ignore[attr-defined]
        for rollup in (True, False):
            with S.sessionised(con, q, rollup=rollup):
                h = {b["visits"]: b["visitors"] for b in S.histogram(con, q)}
                (loc,) = S.per_location(con, q)
            assert (h["9"], h["10+"], sum(h.values())) == (1, 2, 3)
            # per store: three visitors, each with more than one visit there
            assert (loc["unique_visitors"], loc["visits"], loc["repeat_visitors"]) == (3, 31, 3)


def test_a_visitor_first_seen_at_the_periods_first_instant_is_new(store: SightingStore) -> None:
    # V1 first seen exactly at midnight starting the period; V2 a microsecond before it
    from datetime import UTC, datetime

    midnight = datetime(2024, 3, 2, tzinfo=UTC)
    store.write(batch([
        sighting("V-000001", midnight, "101"),
        sighting("V-000002", midnight - timedelta(microseconds=1), "101"),
        sighting("V-000002", midnight + timedelta(hours=2), "101"),
    ]))
    for gap in (timedelta(minutes=30), timedelta(minutes=45)):  # rollup and raw sources
        q = ReportQuery(date(2024, 3, 2), date(2024, 3, 2), visit_gap=gap)
        with store.read() as con:  # type: ignore[attr-defined]
            t = S.totals(con, q)
        assert (t["unique_visitors"], t["new_visitors"], t["previously_seen"]) == (2, 1, 1)


def test_daily_visits_count_a_visit_continuing_from_before_the_period_on_its_first_day(
    store: SightingStore,
) -> None:
    # one visit 23:50 -> 00:10 across the midnight that starts the period: the report cuts
    # it there, so the period's first day has one visit (and one visitor, one sighting)
    from datetime import UTC, datetime

    store.write(batch([sighting("V-000001", datetime(2024, 3, 1, 23, 50, tzinfo=UTC), "101"),
                       sighting("V-000001", datetime(2024, 3, 2, 0, 10, tzinfo=UTC), "101")]))
    q = ReportQuery(date(2024, 3, 2), date(2024, 3, 3))
    with store.read() as con:  # type: ignore[attr-defined]
        for rollup in (True, False):
            with S.sessionised(con, q, rollup=rollup):
                days = S.daily(con, q)
                t = S.totals(con, q)
            assert days[0] == {"day": "2024-03-02", "unique_visitors": 1, "sightings": 1,
                               "visits": 1}
            assert days[1]["visits"] == 0 and t["visits"] == 1


def test_a_visit_starting_at_the_midnight_after_the_period_is_not_in_it(
    store: SightingStore,
) -> None:
    from datetime import UTC, datetime

    store.write(batch([sighting("V-000001", datetime(2024, 3, 3, 12, tzinfo=UTC), "101"),
                       sighting("V-000002", datetime(2024, 3, 4, tzinfo=UTC), "101")]))
    q = ReportQuery(date(2024, 3, 2), date(2024, 3, 3))
    with store.read() as con:  # type: ignore[attr-defined]
        for rollup in (True, False):
            with S.sessionised(con, q, rollup=rollup):
                t = S.totals(con, q)
                d = S.dwell(con, q, STEP)
            assert (t["unique_visitors"], t["visits"], d["all"]["visits"]) == (1, 1, 1)


def test_camera_paths_keep_the_most_common_when_cut_to_top(store: SightingStore) -> None:
    # door -> till: 3 visits; door: 2; till: 1 (one visitor each, all at 101)
    rows = []
    for i, cams in enumerate([("door", "till")] * 3 + [("door",)] * 2 + [("till",)]):
        rows += [sighting(f"V-{i + 1:06d}", at(j), "101", camera=c) for j, c in enumerate(cams)]
    store.write(batch(rows))
    with store.read() as con:  # type: ignore[attr-defined]
        (p,) = S.camera_paths(con, Q, top=2)
    assert p["paths"] == [{"path": ["door", "till"], "visits": 3},
                          {"path": ["door"], "visits": 2}]


def test_a_merged_visitor_seen_before_under_the_absorbed_id_is_previously_seen(
    store: SightingStore,
) -> None:
    # V2 came on the 1st; V1, first seen on the 2nd, turned out to be V2 (merged, V1 kept)
    store.write(batch([sighting("V-000002", at(0), "101"),
                       sighting("V-000001", at(0, day=1), "101"),
                       sighting("V-000003", at(5, day=1), "101")]))
    store.merge_visitors("default", "V-000001", "V-000002")
    for gap in (timedelta(minutes=30), timedelta(minutes=45)):  # rollup and raw sources
        q = ReportQuery(date(2024, 3, 2), date(2024, 3, 2), visit_gap=gap)
        with store.read() as con:  # type: ignore[attr-defined]
            t = S.totals(con, q)
        assert (t["unique_visitors"], t["new_visitors"], t["previously_seen"]) == (2, 1, 1)
