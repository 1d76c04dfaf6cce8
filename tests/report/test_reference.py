"""The report and the analyses against a brute-force reference in plain Python.

The other report tests hold the rollup to the raw SQL (both could share a mistake) or
check hand-counted small cases; here random sightings of two tenants (the same visitor
ids in both), with visits across midnight, gaps of exactly the visit gap, a merge, a
split, an erasure and a staff member, are counted by a few lines of Python over the same
sightings and compared with every path: rollup and raw, every gap, day range, location
and camera filter, and days in UTC and in other zones (one with half-hour offsets).
"""

from __future__ import annotations

import itertools
import random
import statistics
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from revisit.records import Sighting, iso_utc
from revisit.report.query import ReportQuery, ReportRow
from revisit.store import summary as S
from revisit.store.base import SightingStore
from revisit.store.testing import batch, sighting
from revisit.visits import count_visits

TENANTS = ("default", "acme")
START = datetime(2024, 3, 1, 20, 0, tzinfo=UTC)
STEPS = (0.0, 1.0, 12.0, 29.0, 30.0, 30.0, 31.0, 45.0, 180.0, 60 * 20.0)
INTERVAL = timedelta(seconds=15)
IST = timezone(timedelta(hours=5, minutes=30))
# merged: absorbed -> kept; V-000007 was merged into V-000006 and split off again
ALIASES = {"V-000003": "V-000002", "V-000005": "V-000004"}
STAFF = "V-000005"  # enrolled under its absorbed id: the whole group V-000004 is left out
ERASED = "V-000008"
ZONES = ("UTC", "America/New_York", "Asia/Kolkata", "UTC", "Europe/Berlin")


def _sightings(seed: int) -> list[Sighting]:
    rng = random.Random(seed)
    out = []
    for tenant in TENANTS:
        for v in range(1, 10):
            t = START + timedelta(minutes=rng.uniform(0, 300))
            for _ in range(rng.randint(4, 30)):
                t += timedelta(minutes=rng.choice(STEPS))
                loc = rng.choice(("L1", "L2", "L3"))
                cam = f"{loc}-{rng.choice('ab')}"
                ts = t.astimezone(IST) if rng.random() < 0.2 else t  # any offset is UTC
                out.append(sighting(f"V-{v:06X}", ts, loc, cam, tenant=tenant))
                if rng.random() < 0.1:  # the same instant on the store's other camera
                    other = f"{loc}-{'b' if cam.endswith('a') else 'a'}"
                    out.append(sighting(f"V-{v:06X}", t, loc, other, tenant=tenant))
        # one visit through two midnights (sightings every 20-30 min for two days)
        t = datetime(2024, 3, 1, 22, 0, tzinfo=UTC)
        while t < datetime(2024, 3, 4, 1, 0, tzinfo=UTC):
            out.append(sighting("V-000009", t, "L2", "L2-a", tenant=tenant))
            t += timedelta(minutes=rng.choice((20.0, 30.0)))
    return out


def _load(store: SightingStore, seed: int) -> list[Sighting]:
    sights = _sightings(seed)
    firsts = {(x.tenant, x.face_id): x for x in reversed(sights)}  # every visitor early
    shuffled = [x for x in sights if x not in firsts.values()]
    random.Random(seed + 1).shuffle(shuffled)
    shuffled[:0] = firsts.values()
    half = len(shuffled) // 2
    for i in range(0, half, 37):
        store.write(batch(shuffled[i:min(i + 37, half)]))
    for tenant in TENANTS:
        store.merge_visitors(tenant, "V-000002", "V-000003")
        store.merge_visitors(tenant, "V-000004", "V-000005")
        store.merge_visitors(tenant, "V-000006", "V-000007")
        store.split_visitor(tenant, "V-000007")
    for i in range(half, len(shuffled), 37):  # late sightings after the merges
        store.write(batch(shuffled[i:i + 37]))
    for tenant in TENANTS:
        store.erase_visitor(tenant, ERASED)
    with store.transaction() as s:  # type: ignore[attr-defined]
        s.execute("INSERT INTO enrolments (tenant, enrolment_id, grp, visitor_id, label, "
                  "reason, source, enrolled_by, enrolled_at, expires_at) VALUES "
                  "(?, 'en_1', 'staff', ?, 'x', 'test', 'visitor', 'cli', ?, NULL)",
                  ["default", STAFF, datetime(2024, 1, 1)])
        s.execute("INSERT INTO enrolments (tenant, enrolment_id, grp, visitor_id, label, "
                  "reason, source, enrolled_by, enrolled_at, expires_at) VALUES "
                  "(?, 'en_2', 'staff', 'V-000006', 'x', 'expired', 'visitor', 'cli', ?, ?)",
                  ["default", datetime(2024, 1, 1), datetime(2024, 1, 2)])
    return [s for s in sights if s.face_id != ERASED]


def _visits(times: list[datetime], gap: timedelta) -> list[list[datetime]]:
    """One visitor's times at one store cut into visits by the gap rule."""
    out: list[list[datetime]] = []
    for t in sorted(times):
        if out and gap > timedelta(0) and t - out[-1][-1] <= gap:
            out[-1].append(t)
        else:
            out.append([t])
    return out


def _reference(sights: list[Sighting], q: ReportQuery) -> dict[str, Any]:
    """Per canonical visitor: {location: [visit, ...]} from the period's sightings."""
    staff = {STAFF, ALIASES[STAFF]} if q.tenant == "default" else set()
    times: dict[str, dict[str, list[datetime]]] = defaultdict(lambda: defaultdict(list))
    before: set[str] = set()
    for s in sights:
        vid = ALIASES.get(s.face_id, s.face_id)
        if s.tenant != q.tenant or vid in staff:
            continue
        if s.ts < q.ts_from:
            before.add(vid)
        if not q.ts_from <= s.ts < q.ts_to:
            continue
        if q.locations and s.location_id not in q.locations:
            continue
        if q.cameras and s.camera_id not in q.cameras:
            continue
        times[vid][s.location_id].append(s.ts.astimezone(UTC))
    visits = {vid: {loc: _visits(ts, q.visit_gap) for loc, ts in locs.items()}
              for vid, locs in times.items()}
    for vid, locs in times.items():  # the gap rule, stated once, agrees
        for loc, ts in locs.items():
            assert count_visits(ts, q.visit_gap) == len(visits[vid][loc])
    return {"visits": visits, "before": before, "query": q}


def _rows(ref: dict[str, Any]) -> list[ReportRow]:
    rows = []
    for vid, locs in ref["visits"].items():
        flat = [t for vs in locs.values() for v in vs for t in v]
        rows.append(ReportRow(
            visitor_id=vid, total_appearances=sum(len(vs) for vs in locs.values()),
            locations_visited=len(locs),
            visits_per_location={loc: len(vs) for loc, vs in sorted(locs.items())},
            first_seen=min(flat), last_seen=max(flat), sightings=len(flat)))
    return sorted(rows, key=lambda r: (-r.total_appearances, r.visitor_id))


def _queries() -> list[ReportQuery]:
    qs = []
    for tenant in TENANTS:
        for d1, d2 in ((1, 1), (2, 2), (2, 3), (1, 4), (3, 9), (5, 14)):  # NY: DST on the 10th
            for gap in (30, 0, 45, 29):
                for locs, cams in (((), ()), (("L1",), ()), (("L2", "L3"), ()),
                                   ((), ("L1-a", "L2-b")), (("L1",), ("L1-a", "L3-a"))):
                    qs.append(ReportQuery(date(2024, 3, d1), date(2024, 3, d2), tenant=tenant,
                                          locations=locs, cameras=cams,
                                          visit_gap=timedelta(minutes=gap),
                                          timezone=ZONES[len(qs) // 7 % len(ZONES)]))
    return qs


def test_report_equals_the_reference_on_every_path(store: SightingStore) -> None:
    sights = _load(store, 7)
    checked = 0
    for q in _queries()[::4]:  # every filter, gap, range and tenant, not every combination
        expect = _rows(_reference(sights, q))
        for rollup in (True, False):
            store.use_rollup = rollup  # type: ignore[attr-defined]
            h = store.report_header(q)
            assert list(store.report_rows(q)) == expect, (q, rollup)
            assert (h.unique_visitors, h.total_visits, h.total_sightings) == (
                len(expect), sum(r.total_appearances for r in expect),
                sum(r.sightings for r in expect)), (q, rollup)
        checked += len(expect)
    assert checked > 100


def _dwell(visits: list[list[datetime]]) -> dict[str, Any]:
    durs = [(v[-1] - v[0] + INTERVAL).total_seconds() for v in visits]
    bounds = [m * 60 for m in S.DWELL_BUCKETS]
    buckets = [0] * (len(bounds) + 1)
    for d in durs:
        buckets[next((i for i, b in enumerate(bounds) if d < b), len(bounds))] += 1
    labels = [S._bucket_label(i) for i in range(len(buckets))]
    return {"visits": len(durs), "median_s": round(statistics.median(durs), 1) if durs else None,
            "buckets": dict(zip(labels, buckets, strict=True))}


def _summary(ref: dict[str, Any]) -> dict[str, Any]:
    visits = ref["visits"]
    vids = set(visits)
    total = {v: sum(len(x) for x in locs.values()) for v, locs in visits.items()}
    repeat = {v for v in vids if total[v] >= 2}
    every = [(vs[0], loc, vid) for vid, locs in visits.items() for loc, x in locs.items()
             for vs in x]
    zone = ZoneInfo(ref["query"].timezone)

    def local_day(t: datetime) -> date:
        return t.astimezone(zone).date()

    hours, days = [0] * 24, [0] * 7
    for t, _, _ in every:
        hours[t.astimezone(zone).hour] += 1
        days[t.astimezone(zone).weekday()] += 1
    by_loc: dict[str, list[list[datetime]]] = defaultdict(list)
    for locs in visits.values():
        for loc, x in locs.items():
            by_loc[loc].extend(x)
    visitors_of = {loc: {v for v in vids if loc in visits[v]} for loc in by_loc}
    affinity = [{"from": a, "to": b, "visitors": len(visitors_of[a] & visitors_of[b]),
                 "share": round(len(visitors_of[a] & visitors_of[b]) / len(visitors_of[a]), 4)}
                for a in sorted(by_loc) for b in sorted(by_loc)
                if a != b and visitors_of[a] & visitors_of[b]]
    moves: dict[tuple[str, str], int] = defaultdict(int)
    for vid in vids:
        seq = sorted((t, loc) for t, loc, v in every if v == vid)
        for (_, a), (_, b) in itertools.pairwise(seq):
            if a != b:
                moves[(a, b)] += 1
    daily = []
    day = ref["query"].start
    while day <= ref["query"].end:
        on = [(vid, v) for vid, locs in visits.items() for x in locs.values() for v in x]
        daily.append({"day": day.isoformat(),
                      "unique_visitors": len({vid for vid, v in on
                                              if any(local_day(t) == day for t in v)}),
                      "sightings": sum(1 for _, v in on for t in v if local_day(t) == day),
                      "visits": sum(1 for _, v in on if local_day(v[0]) == day)})
        day += timedelta(days=1)
    locations = [{"location_id": loc, "unique_visitors": len(visitors_of[loc]),
                  "visits": len(by_loc[loc]), "sightings": sum(len(v) for v in by_loc[loc]),
                  "repeat_visitors": sum(1 for v in visitors_of[loc] if len(visits[v][loc]) > 1),
                  "first_seen": iso_utc(min(v[0] for v in by_loc[loc])),
                  "last_seen": iso_utc(max(v[-1] for v in by_loc[loc]))}
                 for loc in sorted(by_loc)]
    histogram = [0] * S.HISTOGRAM_BUCKETS
    for n in total.values():
        histogram[min(n, S.HISTOGRAM_BUCKETS) - 1] += 1
    return {
        "daily": daily, "locations": locations, "histogram": histogram,
        "totals": (len(vids), sum(total.values()), len(vids - ref["before"]), len(repeat),
                   len(repeat | (vids & ref["before"]))),
        "dwell": {"all": _dwell([v for x in by_loc.values() for v in x]),
                  **{loc: _dwell(x) for loc, x in by_loc.items()}},
        "hours": hours, "days": days,
        "flows": {"visitors_per_location": {k: len(v) for k, v in sorted(visitors_of.items())},
                  "affinity": affinity,
                  "transitions": [{"from": a, "to": b, "visits": n}
                                  for (a, b), n in sorted(moves.items())]},
    }


def test_analytics_equal_the_reference_on_every_path(store: SightingStore) -> None:
    sights = _load(store, 11)
    # every other query the rollups answer in a zone other than UTC (from visit_spans), too
    local = [q for q in _queries() if not q.in_utc and not q.cameras
             and q.visit_gap == timedelta(minutes=30)]
    for q in _queries()[::11] + local[::2]:
        expect = _summary(_reference(sights, q))
        for rollup in (True, False):
            with store.read() as con, S.sessionised(con, q, rollup=rollup):  # type: ignore[attr-defined]
                t = S.totals(con, q)
                d = S.dwell(con, q, INTERVAL)
                bt = S.by_time(con, q)
                f = S.flows(con, q)
                daily = S.daily(con, q)
                locations = S.per_location(con, q)
                histogram = [x["visitors"] for x in S.histogram(con, q)]
            got = {
                "daily": daily, "locations": locations, "histogram": histogram,
                "totals": (t["unique_visitors"], t["visits"], t["new_visitors"],
                           t["repeat_visitors"], t["returning_visitors"]),
                "dwell": {"all": d["all"], **{x.pop("location_id"): x for x in d["locations"]}},
                "hours": [x["visits"] for x in bt["by_hour"]],
                "days": [x["visits"] for x in bt["by_weekday"]],
                "flows": f,
            }
            assert got == expect, (q, rollup)
