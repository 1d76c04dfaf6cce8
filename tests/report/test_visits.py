"""Visit sessionisation, filters and ordering of the unique-visitor report."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from revisit.report.formats import frequency_text
from revisit.report.query import ReportQuery, ReportRow, SightingQuery
from revisit.store.base import SightingStore
from revisit.store.testing import at, batch, sighting

DAY = date(2024, 3, 1)  # testing.T0 is 2024-03-01 09:00 UTC


def rq(gap: timedelta = timedelta(minutes=30), **kw) -> ReportQuery:
    kw.setdefault("start", DAY)
    kw.setdefault("end", DAY + timedelta(days=10))
    return ReportQuery(visit_gap=gap, **kw)


def rows(store: SightingStore, query: ReportQuery) -> dict[str, ReportRow]:
    return {r.visitor_id: r for r in store.report_rows(query)}


@pytest.mark.parametrize(
    ("gap_minutes", "offsets", "visits"),
    [
        (30, [0, 30], 1),  # gap exactly the visit gap: same visit
        (30, [0, 30.0001], 2),  # a hair longer: new visit (microsecond precision)
        (30, [0, 31], 2),
        (30, [0, 20, 40, 60], 1),  # chained short gaps stay one visit
        (30, [0, 20, 60, 70, 200], 3),
        (30, [0, 0], 1),  # two faces in the same instant
        (0, [0, 0, 1, 2], 4),  # gap 0: every sighting is a visit
        (1440, [0, 60 * 23, 60 * 47], 1),
    ],
)
def test_visit_gap_rule(
    store: SightingStore, gap_minutes: float, offsets: list[float], visits: int
) -> None:
    store.write(batch([sighting("V-000001", at(m)) for m in offsets]))
    r = rows(store, rq(timedelta(minutes=gap_minutes)))["V-000001"]
    assert r.total_appearances == visits
    assert r.sightings == len(offsets)
    h = store.report_header(rq(timedelta(minutes=gap_minutes)))
    assert (h.unique_visitors, h.total_visits, h.total_sightings) == (1, visits, len(offsets))


def test_visits_are_per_location(store: SightingStore) -> None:
    # alternating between two shops 5 minutes apart: one visit at each, not four
    store.write(batch([
        sighting("V-000001", at(0), "101"), sighting("V-000001", at(5), "203"),
        sighting("V-000001", at(10), "101"), sighting("V-000001", at(15), "203"),
        sighting("V-000001", at(0, day=1), "101"),
    ]))
    r = rows(store, rq())["V-000001"]
    assert r.visits_per_location == {"101": 2, "203": 1}
    assert list(r.visits_per_location) == ["101", "203"]  # ordered by location id
    assert r.total_appearances == 3 and r.locations_visited == 2
    assert r.first_seen == at(0) and r.last_seen == at(0, day=1)
    assert frequency_text(r) == "101: 2, 203: 1"


def test_time_filter_includes_whole_from_and_to_days(store: SightingStore) -> None:
    d0 = datetime(2024, 3, 1, tzinfo=UTC)
    store.write(batch([
        sighting("V-000001", d0 - timedelta(microseconds=1)),  # day before: out
        sighting("V-000002", d0),  # first instant of --from: in
        sighting("V-000003", d0 + timedelta(days=2, hours=23, minutes=59, seconds=59)),  # in
        sighting("V-000004", d0 + timedelta(days=3)),  # midnight after --to: out
    ]))
    q = rq(start=date(2024, 3, 1), end=date(2024, 3, 3))
    assert set(rows(store, q)) == {"V-000002", "V-000003"}
    one_day = rq(start=date(2024, 3, 1), end=date(2024, 3, 1))
    assert set(rows(store, one_day)) == {"V-000002"}
    assert store.report_header(one_day).period == "2024-03-01"
    assert store.report_header(q).period == "2024-03-01 to 2024-03-03"
    exported = list(store.sightings(SightingQuery(start=date(2024, 3, 1), end=date(2024, 3, 3))))
    assert {s["face_id"] for s in exported} == {"V-000002", "V-000003"}
    assert len(list(store.sightings(SightingQuery()))) == 4


def test_location_and_camera_filters(store: SightingStore) -> None:
    store.write(batch([
        sighting("V-000001", at(0), "101", camera="c1"),
        sighting("V-000001", at(60), "101", camera="c2"),
        sighting("V-000002", at(0), "203", camera="c3"),
        sighting("V-000003", at(0), "305", camera="c4"),
    ]))
    by_loc = rq(locations=("101", "203"))
    assert set(rows(store, by_loc)) == {"V-000001", "V-000002"}
    assert store.report_header(by_loc).camera_group == "locations 101,203"
    by_cam = rq(cameras=("c2", "c4"))
    got = rows(store, by_cam)
    assert set(got) == {"V-000001", "V-000003"}
    assert got["V-000001"].sightings == 1
    both = rq(locations=("101",), cameras=("c3",))
    assert rows(store, both) == {}
    h = store.report_header(both)
    assert (h.unique_visitors, h.total_visits, h.total_sightings) == (0, 0, 0)
    assert store.report_header(rq(camera_group="front doors")).camera_group == "group front doors"
    sq = SightingQuery(locations=("203", "305"), cameras=("c3",))
    assert [s["camera_id"] for s in store.sightings(sq)] == ["c3"]


def test_rows_sorted_by_appearances_then_id(store: SightingStore) -> None:
    plan = {"V-00000B": 2, "V-00000A": 2, "V-000003": 5, "V-000010": 1, "V-000002": 2}
    ss = [sighting(v, at(i * 120)) for v, n in plan.items() for i in range(n)]
    store.write(batch(ss))
    order = [(r.visitor_id, r.total_appearances) for r in store.report_rows(rq())]
    assert order == [("V-000003", 5), ("V-000002", 2), ("V-00000A", 2), ("V-00000B", 2),
                     ("V-000010", 1)]


def test_rows_stream_beyond_one_fetch_chunk(store: SightingStore, monkeypatch) -> None:
    import revisit.store.sql_store as mod

    monkeypatch.setattr(mod, "FETCH_ROWS", 7)
    store.write(batch([sighting(f"V-{i:06X}", at(i)) for i in range(1, 51)]))
    got = [r.visitor_id for r in store.report_rows(rq())]
    assert got == [f"V-{i:06X}" for i in range(1, 51)]
    assert len(list(store.sightings(SightingQuery()))) == 50


def test_merge_combines_and_split_restores_exactly(store: SightingStore) -> None:
    store.write(batch([
        sighting("V-000001", at(0), "101"), sighting("V-000001", at(10), "101"),
        sighting("V-000002", at(20), "101"),  # continues V-000001's visit once merged
        sighting("V-000002", at(0, day=1), "203"),
        sighting("V-000003", at(0), "101"),
    ]))
    before_rows = list(store.report_rows(rq()))
    before_header = store.report_header(rq())
    assert (before_header.unique_visitors, before_header.total_visits) == (3, 4)

    store.merge_visitors("default", "V-000001", "V-000002", reason="review")
    merged = rows(store, rq())
    assert set(merged) == {"V-000001", "V-000003"}
    m = merged["V-000001"]
    assert m.visits_per_location == {"101": 1, "203": 1}  # 0,10,20 min is one visit now
    assert m.total_appearances == 2 and m.sightings == 4
    assert m.first_seen == at(0) and m.last_seen == at(0, day=1)
    h = store.report_header(rq())
    assert (h.unique_visitors, h.total_visits, h.total_sightings) == (2, 3, 5)
    assert {s["face_id"] for s in store.sightings(SightingQuery())} == {"V-000001", "V-000003"}

    store.split_visitor("default", "V-000002")
    assert list(store.report_rows(rq())) == before_rows
    assert store.report_header(rq()) == before_header


def test_empty_store_report(store: SightingStore) -> None:
    h = store.report_header(rq())
    assert (h.unique_visitors, h.total_visits, h.total_sightings) == (0, 0, 0)
    assert list(store.report_rows(rq())) == []


def test_odd_location_ids_survive(store: SightingStore) -> None:
    odd = ["shop, north: 1", "ünïcode", "a\tb"]
    store.write(batch([sighting("V-000001", at(i * 60), loc) for i, loc in enumerate(odd)]))
    r = rows(store, rq())["V-000001"]
    assert r.visits_per_location == {loc: 1 for loc in sorted(odd)}
    assert list(r.visits_per_location) == sorted(odd)


def test_a_tenants_report_holds_only_its_own_sightings(store: SightingStore) -> None:
    # the same visitor id and store id under two tenants: each report counts only its own
    store.write(batch([
        sighting("V-000001", at(0), "101"), sighting("V-000001", at(90), "101"),
        sighting("V-000001", at(0), "101", tenant="other"),
        sighting("V-000002", at(5), "101", tenant="other"),
    ]))
    for gap in (timedelta(minutes=30), timedelta(minutes=45)):  # rollup and raw query
        mine = rows(store, rq(gap))
        assert set(mine) == {"V-000001"}
        assert (mine["V-000001"].total_appearances, mine["V-000001"].sightings) == (2, 2)
        h = store.report_header(rq(gap))
        assert (h.unique_visitors, h.total_visits, h.total_sightings) == (1, 2, 2)
        theirs = rows(store, rq(gap, tenant="other"))
        assert {v: r.sightings for v, r in theirs.items()} == {"V-000001": 1, "V-000002": 1}


def test_another_tenants_merge_does_not_join_this_tenants_visitors(store: SightingStore) -> None:
    # both tenants have V1 and V2; only "other" merged them (and "default" merged
    # something else, so its report reads the alias table)
    stored = [sighting(v, at(m), "101", tenant=t) for t in ("default", "other")
            for v, m in (("V-000001", 0), ("V-000002", 90))]
    stored += [sighting("V-000004", at(200), "101"), sighting("V-000005", at(300), "101")]
    store.write(batch(stored))
    store.merge_visitors("other", "V-000001", "V-000002")
    store.merge_visitors("default", "V-000004", "V-000005")
    for gap in (timedelta(minutes=30), timedelta(minutes=45)):  # rollup and raw query
        assert sorted(rows(store, rq(gap))) == ["V-000001", "V-000002", "V-000004"]
        assert store.report_header(rq(gap)).unique_visitors == 3
        assert sorted(rows(store, rq(gap, tenant="other"))) == ["V-000001"]


def test_days_of_another_timezone_bound_the_period(store: SightingStore) -> None:
    # Berlin is UTC+1 in March: its 2024-03-01 runs from 02-29 23:00 to 03-01 23:00 UTC
    store.write(batch([
        sighting("V-000001", datetime(2024, 2, 29, 22, 59, tzinfo=UTC)),  # Berlin 02-29
        sighting("V-000002", datetime(2024, 2, 29, 23, 0, tzinfo=UTC)),  # Berlin 03-01 00:00
        sighting("V-000003", datetime(2024, 3, 1, 22, 59, tzinfo=UTC)),  # Berlin 03-01 23:59
        sighting("V-000004", datetime(2024, 3, 1, 23, 0, tzinfo=UTC)),  # Berlin 03-02
    ]))
    day = date(2024, 3, 1)
    berlin = rq(start=day, end=day, timezone="Europe/Berlin")
    assert set(rows(store, berlin)) == {"V-000002", "V-000003"}
    assert store.report_header(berlin).period == "2024-03-01 (Europe/Berlin)"
    assert set(rows(store, rq(start=day, end=day))) == {"V-000003", "V-000004"}  # UTC
    exported = store.sightings(SightingQuery(start=day, end=day, timezone="Europe/Berlin"))
    assert {s["face_id"] for s in exported} == {"V-000002", "V-000003"}
    # "Etc/UTC" is UTC, and a zone that names no place is refused by name
    assert rq(timezone="Etc/UTC").timezone == "UTC"
    for bad in ("Mars/Olympus", "localtime", "../etc/passwd", ""):
        with pytest.raises(ValueError, match="timezone"):
            rq(timezone=bad)


def test_a_zone_changing_its_offset_inside_the_period_is_followed() -> None:
    from zoneinfo import ZoneInfo

    # New York leaves EST for EDT on 2024-03-10 at 07:00 UTC; Santiago's clocks skip the
    # midnight of 2024-09-08 (00:00 -> 01:00), so that day starts at 04:00 UTC
    ny = rq(start=date(2024, 3, 1), end=date(2024, 3, 31), timezone="America/New_York")
    assert ny.ts_from == datetime(2024, 3, 1, 5, tzinfo=UTC)
    assert ny.ts_to == datetime(2024, 4, 1, 4, tzinfo=UTC)
    changes, offsets = ny.utc_offsets
    change = int(datetime(2024, 3, 10, 7, tzinfo=UTC).timestamp()) * 1_000_000
    assert changes == (change,) and offsets == (-5 * 3_600_000_000, -4 * 3_600_000_000)
    zone = ZoneInfo("America/New_York")
    for us in (change - 1, change, change + 1, change + 86_400_000_000):
        utc = datetime.fromtimestamp(us / 1e6, UTC)
        wall = utc.astimezone(zone).replace(tzinfo=UTC)
        assert ny.local_us(us) == round(wall.timestamp() * 1e6)
    chile = rq(start=date(2024, 9, 8), end=date(2024, 9, 8), timezone="America/Santiago")
    assert chile.ts_from == datetime(2024, 9, 8, 4, tzinfo=UTC)
    assert chile.ts_to == datetime(2024, 9, 9, 3, tzinfo=UTC)
