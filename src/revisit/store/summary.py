"""Dashboard figures as SQL over the store's tables, in the store's common spelling.

Built on :func:`revisit.store.report_sql.report_cte`, so "visitor", "visit" and "location"
mean exactly what they mean in the report (aliases resolved, same visit gap). Functions
take the session a store's ``read()`` gives (its dialect supplies the time functions).

Definitions
- *new visitor*: first seen in the period; *previously seen*: seen before the period
  (the two split ``unique_visitors``).
- *repeat visitor*: more than one visit in the period.
- *returning visitor*: previously seen or a repeat visitor: someone who came back.
  ``returning_share`` = returning / unique visitors (the dashboard's headline figure).
- daily unique visitors: distinct visitors per day (of the query's timezone, as every day
  and hour here).
- visit-frequency histogram: visitors by visits in the period, the last bucket open
  (``"10+"``).
- *visit duration* (dwell): a visit's last sighting minus its first, plus one snapshot
  interval (a visit seen once lasted about one interval); per store the median and the
  distribution over :data:`DWELL_BUCKETS`.
- visits by hour of day and by day of week: when visits start (their first sighting), in
  the query's timezone like the report's days.
- *store affinity*: of the visitors of store A in the period, those who also visited B
  (count and share of A's); *transitions*: a visit at A whose visitor's next visit in the
  period was at B.
"""

from __future__ import annotations

import contextlib
import contextvars
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from revisit.records import iso_utc
from revisit.report.query import ReportQuery
from revisit.store.dialect import Session
from revisit.store.report_sql import (
    PATH_PLACE,
    PER_VISITOR,
    ROLLUP_GAP_US,
    edge_pairs_sql,
    epoch_us,
    local_us_sql,
    naive_utc,
    report_cte,
    rollup_applies,
    sighting_filters,
    with_staff_left_out,
)
from revisit.store.visit_spans import PATH_SEP, visits_from

HISTOGRAM_BUCKETS = 10
# upper bounds (minutes) of the visit-duration buckets; the last one is open
DWELL_BUCKETS = (1, 5, 15, 30, 60)
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True, slots=True)
class _Source:
    """``WITH ...`` defining, for one period and filter, the relations every analysis
    reads: ``visits`` (vid, loc, start_us, end_us, n, path), ``per_loc``, ``per_visitor``
    (as in the report), ``days`` (vid, loc, day, n, visits) and ``before`` (vid: seen
    before the period), with its parameters."""

    cte: str
    params: list[Any]


# the source prepared for the analyses running inside sessionised(), while one is open
_SOURCE: contextvars.ContextVar[_Source | None] = contextvars.ContextVar("source", default=None)


def _q(con: Session, tail: str, query: ReportQuery,
       extra: list[Any] | None = None) -> list[tuple[Any, ...]]:
    src = _SOURCE.get() or _source(con, query)
    return con.execute(src.cte + "\n" + tail, src.params + (extra or [])).fetchall()


def _source(con: Session, query: ReportQuery) -> _Source:
    query = with_staff_left_out(con, query)
    if rollup_applies(query):
        return _rollup_source(con, query)
    return _raw_source(con, query, None)


def _raw_source(con: Session, query: ReportQuery, marked_table: str | None) -> _Source:
    """Everything from the period's sightings, sessionised at the query's gap."""
    d = con.dialect
    cte, params = report_cte(query, d, cameras=True, marked_table=marked_table)
    cte += f""",
visits AS ({visits_from(d, "marked", "vid, loc")}),
days AS (
    SELECT vid, loc, CAST({d.from_us(local_us_sql("t", query))} AS DATE) AS day,
           count(*) AS n, sum(new_visit) AS visits
    FROM marked GROUP BY vid, loc, day
),
before AS (
    SELECT DISTINCT coalesce(a.visitor_id, s.face_id) AS vid
    FROM sightings s LEFT JOIN aliases a ON a.tenant = s.tenant AND a.alias_id = s.face_id
    WHERE s.tenant = ? AND s.ts < ?
)"""
    return _Source(cte, [*params, query.tenant, naive_utc(query.ts_from)])


def _rollup_source(con: Session, query: ReportQuery,
                   visits_table: str | None = None) -> _Source:
    """From the rollups: visits from ``visit_spans``, days and "seen before" from
    ``visit_days``. Sessionised from their sightings instead, as the raw query would:
    merged visitors (their sightings interleave) and every (visitor, store) with a visit
    crossing the period's first or last midnight (the raw query cuts such a visit at the
    edge; ``visit_days.cont`` names them). ``visits_table``: the visits made already
    (:func:`sessionised`).

    In a zone other than UTC (``visit_days`` holds UTC days) days and "seen before" come
    from ``visit_spans`` too, and the pairs sessionised from sightings are those
    :func:`~revisit.store.report_sql.edge_pairs_sql` names, visits over a local midnight
    included."""
    d = con.dialect
    tenant = query.tenant
    members = sorted(r[0] for r in con.execute(
        "SELECT alias_id FROM aliases WHERE tenant = ? "
        "UNION SELECT visitor_id FROM aliases WHERE tenant = ?", [tenant, tenant]).fetchall())
    loc_filter, loc_params = "", []
    if query.locations:
        loc_filter = " AND location_id IN (SELECT unnest(?::VARCHAR[]))"
        loc_params = [list(query.locations)]
    local = not query.in_utc
    if local:
        edge_sql, edge_params = edge_pairs_sql(query, midnights=True)
        edges = sorted({str(k) for (k,) in con.execute(edge_sql, edge_params).fetchall()})
    else:
        edges = sorted({f"{f}{PATH_SEP}{loc}" for f, loc in con.execute(
            "SELECT face_id, location_id FROM visit_days WHERE tenant = ? AND day IN (?, ?) "
            "AND cont" + loc_filter,
            [tenant, query.start, query.end + timedelta(days=1), *loc_params]).fetchall()})
    raw_faces = sorted(set(members) | {e.split(PATH_SEP)[0] for e in edges})
    not_raw, not_raw_params = "", []
    if members:
        not_raw += " AND face_id NOT IN (SELECT unnest(?::VARCHAR[]))"
        not_raw_params.append(members)
    if query.excluded:  # staff
        not_raw += " AND face_id NOT IN (SELECT unnest(?::VARCHAR[]))"
        not_raw_params.append(list(query.excluded))
    # the period's visits the rollup holds whole (the rest are sessionised from sightings)
    spans_whole = ("FROM visit_spans WHERE tenant = ? AND start_us >= ? AND start_us < ?"
                   + loc_filter + not_raw)
    spans_params = [tenant, epoch_us(query.ts_from), epoch_us(query.ts_to), *loc_params,
                    *not_raw_params]
    if edges:
        spans_whole += (" AND face_id || chr(31) || location_id "
                        "NOT IN (SELECT unnest(?::VARCHAR[]))")
        spans_params.append(edges)
    params: list[Any] = []
    ctes = []
    if visits_table is not None and not local:  # only merged visitors' days need sightings
        raw_faces = members
    if raw_faces:
        where, w_params = sighting_filters(tenant, query.locations, (), query.ts_from, query.ts_to)
        vid = "coalesce(a.visitor_id, s.face_id)" if members else "s.face_id"
        if query.excluded:
            where += f" AND {vid} NOT IN (SELECT unnest(?::VARCHAR[]))"
            w_params.append(list(query.excluded))
        join = ("LEFT JOIN aliases a ON a.tenant = s.tenant AND a.alias_id = s.face_id"
                if members else "")
        ctes.append(f"""rawmarked AS (
    SELECT vid, loc, t, cam, member,
           CASE WHEN t - lag(t) OVER (PARTITION BY vid, loc ORDER BY t) <= {ROLLUP_GAP_US}
                THEN 0 ELSE 1 END AS new_visit
    FROM (
        SELECT {vid} AS vid, s.location_id AS loc, {d.epoch_us("s.ts")} AS t,
               {PATH_PLACE} AS cam, s.face_id IN (SELECT unnest(?::VARCHAR[])) AS member
        FROM sightings s {join}
        WHERE {where} AND s.face_id IN (SELECT unnest(?::VARCHAR[]))
          AND (s.face_id IN (SELECT unnest(?::VARCHAR[]))
               OR s.face_id || chr(31) || s.location_id IN (SELECT unnest(?::VARCHAR[])))
    ) x
)""")
        params += [members, *w_params, raw_faces, members, edges]
    if visits_table is not None:
        ctes.append(f"visits AS (SELECT * FROM {visits_table})")
    else:
        spans = f"""
    SELECT face_id AS vid, location_id AS loc, start_us, end_us, n, path {spans_whole}"""
        params += spans_params
        if raw_faces:
            spans += f"\n    UNION ALL{visits_from(d, 'rawmarked', 'vid, loc')}"
        ctes.append(f"visits AS ({spans}\n)")
    ctes.append("""per_loc AS (
    SELECT vid, loc, count(*) AS visits, sum(n) AS n, min(start_us) AS first_us,
           max(end_us) AS last_us
    FROM visits GROUP BY vid, loc
)""")
    ctes.append(PER_VISITOR)
    if local:  # a visit's day is its start's: visits over a local midnight are raw
        days = f"""
    SELECT face_id AS vid, location_id AS loc,
           CAST({d.from_us(local_us_sql("start_us", query))} AS DATE) AS day, n, 1 AS visits
    {spans_whole}"""
        params += spans_params
    else:
        days = f"""
    SELECT face_id AS vid, location_id AS loc, day, n,
           visits + CASE WHEN cont AND day = ? THEN 1 ELSE 0 END AS visits
    FROM visit_days WHERE tenant = ? AND day BETWEEN ? AND ?{loc_filter}{not_raw}"""
        params += [query.start, tenant, query.start, query.end, *loc_params, *not_raw_params]
    if members or (local and raw_faces):
        days += f"""
    UNION ALL
    SELECT vid, loc, CAST({d.from_us(local_us_sql("t", query))} AS DATE) AS day, count(*),
           sum(new_visit)
    FROM rawmarked{"" if local else " WHERE member"} GROUP BY vid, loc, day"""
    ctes.append(f"days AS ({days}\n)")
    if local:
        ctes.append("""before AS (
    SELECT DISTINCT coalesce(a.visitor_id, r.face_id) AS vid
    FROM visit_spans r LEFT JOIN aliases a ON a.tenant = r.tenant AND a.alias_id = r.face_id
    WHERE r.tenant = ? AND r.start_us < ?
)""")
        params += [tenant, epoch_us(query.ts_from)]
    else:
        ctes.append("""before AS (
    SELECT DISTINCT coalesce(a.visitor_id, r.face_id) AS vid
    FROM visit_days r LEFT JOIN aliases a ON a.tenant = r.tenant AND a.alias_id = r.face_id
    WHERE r.tenant = ? AND r.day < ?
)""")
        params += [tenant, query.start]
    return _Source("WITH " + ",\n".join(ctes), params)


@contextlib.contextmanager
def sessionised(con: Session, query: ReportQuery, rollup: bool = True) -> Iterator[None]:
    """Prepare the period's visits once for every analysis run inside: through the
    rollups where they answer exactly (:func:`rollup_applies`; ``rollup=False`` forces
    the raw way), else by sessionising the period's sightings into a temporary table of
    this session (each analysis would do it again otherwise)."""
    if _SOURCE.get() is not None:  # already inside one
        yield
        return
    query = with_staff_left_out(con, query)
    if rollup and rollup_applies(query):
        # the period's visits once (the analyses read them up to four times)
        name = f"rv_visits_{uuid.uuid4().hex[:12]}"
        src = _rollup_source(con, query)
        con.execute(f"CREATE TEMP TABLE {name} AS {src.cte}\nSELECT * FROM visits", src.params)
        token = _SOURCE.set(_rollup_source(con, query, visits_table=name))
        try:
            yield
        finally:
            _SOURCE.reset(token)
            con.execute(f"DROP TABLE IF EXISTS {name}")
        return
    name = f"rv_marked_{uuid.uuid4().hex[:12]}"
    cte, params = report_cte(query, con.dialect, cameras=True)
    con.execute(f"CREATE TEMP TABLE {name} AS {cte}\n"
                "SELECT vid, loc, t, cam, new_visit FROM marked", params)
    token = _SOURCE.set(_raw_source(con, query, name))
    try:
        yield
    finally:
        _SOURCE.reset(token)
        con.execute(f"DROP TABLE IF EXISTS {name}")


def totals(con: Session, query: ReportQuery) -> dict[str, Any]:
    """Unique visitors, visits, sightings, new/returning/repeat visitors of the period."""
    # Grouped by (min(visits, 2), seen before) and summed in Python: DuckDB 2.0 folds
    # comparisons on per_visitor.total (``total > 1``) to false from wrong statistics.
    rows = _q(con, """
SELECT least(total, 2) AS many, vid IN (SELECT vid FROM before) AS seen_before, count(*),
       coalesce(sum(total), 0)::BIGINT, coalesce(sum(n_sightings), 0)::BIGINT
FROM per_visitor GROUP BY many, seen_before""", query)
    visitors = visits = sightings = before = repeat = returning = 0
    for many, seen_before, n, v, s in rows:
        n = int(n)
        visitors += n
        visits += int(v)
        sightings += int(s)
        if seen_before:
            before += n
        if int(many) >= 2:
            repeat += n
        if seen_before or int(many) >= 2:
            returning += n
    return {
        "unique_visitors": visitors,
        "visits": visits,
        "sightings": sightings,
        "new_visitors": visitors - before,
        "previously_seen": before,
        "returning_visitors": returning,
        "returning_share": round(returning / visitors, 4) if visitors else 0.0,
        "repeat_visitors": repeat,
        "repeat_share": round(repeat / visitors, 4) if visitors else 0.0,
    }


def daily(con: Session, query: ReportQuery) -> list[dict[str, Any]]:
    """Distinct visitors and sightings per day (days without sightings included)."""
    rows = _q(con, """
SELECT day, count(DISTINCT vid), sum(n)::BIGINT, sum(visits)::BIGINT
FROM days GROUP BY day ORDER BY day""", query)
    found = {r[0]: r for r in rows}
    out = []
    day = query.start
    while day <= query.end:
        r = found.get(day)
        out.append({
            "day": day.isoformat(),
            "unique_visitors": int(r[1]) if r else 0,
            "sightings": int(r[2]) if r else 0,
            "visits": int(r[3]) if r else 0,
        })
        day += timedelta(days=1)
    return out


def histogram(con: Session, query: ReportQuery) -> list[dict[str, Any]]:
    """Visitors by number of visits in the period: 1, 2, ..., ``10+``."""
    rows = _q(con, f"""
SELECT least(total, {HISTOGRAM_BUCKETS}) AS b, count(*) FROM per_visitor GROUP BY b ORDER BY b""",
              query)
    found = {int(b): int(n) for b, n in rows}
    return [
        {"visits": f"{b}+" if b == HISTOGRAM_BUCKETS else str(b), "visitors": found.get(b, 0)}
        for b in range(1, HISTOGRAM_BUCKETS + 1)
    ]


def per_location(con: Session, query: ReportQuery) -> list[dict[str, Any]]:
    """One row per location (store): unique visitors, visits, sightings, first/last seen."""
    rows = _q(con, f"""
SELECT loc, count(*), sum(visits)::BIGINT, sum(n)::BIGINT, min(first_us), max(last_us),
       sum(least(visits, 2))::BIGINT - count(*)  -- visitors with 2+ visits (no comparison)
FROM per_loc GROUP BY loc ORDER BY {con.dialect.bytewise("loc")}""", query)
    return [
        {
            "location_id": r[0], "unique_visitors": int(r[1]), "visits": int(r[2]),
            "sightings": int(r[3]), "repeat_visitors": int(r[6]),
            "first_seen": _iso(r[4]), "last_seen": _iso(r[5]),
        }
        for r in rows
    ]


def _bucket_label(i: int) -> str:
    if i == 0:
        return f"<{DWELL_BUCKETS[0]}m"
    if i == len(DWELL_BUCKETS):
        return f"{DWELL_BUCKETS[-1]}m+"
    return f"{DWELL_BUCKETS[i - 1]}-{DWELL_BUCKETS[i]}m"


def dwell(con: Session, query: ReportQuery, interval: timedelta) -> dict[str, Any]:
    """Visit durations per store and over all stores: median seconds and buckets."""
    add_us = interval // timedelta(microseconds=1)
    cases = " ".join(f"WHEN span_us + {add_us} < {m * 60_000_000} THEN {i}"
                     for i, m in enumerate(DWELL_BUCKETS))
    rows = _q(con, f"""
, bucketed AS (
    SELECT loc, CASE {cases} ELSE {len(DWELL_BUCKETS)} END AS b, span_us + {add_us} AS dur
    FROM (SELECT loc, end_us - start_us AS span_us FROM visits) v
)
SELECT loc, b, count(*), {con.dialect.median("dur")}
FROM bucketed GROUP BY GROUPING SETS ((loc, b), (loc), (b), ())""", query)
    out: dict[str, Any] = {"interval_s": interval.total_seconds(), "locations": {}}

    def entry(key: str | None) -> dict[str, Any]:
        if key is None:
            return out.setdefault("all", {"visits": 0, "median_s": None, "buckets": {
                _bucket_label(i): 0 for i in range(len(DWELL_BUCKETS) + 1)}})
        return out["locations"].setdefault(key, {"visits": 0, "median_s": None, "buckets": {
            _bucket_label(i): 0 for i in range(len(DWELL_BUCKETS) + 1)}})

    for loc, b, n, med in rows:
        e = entry(loc)
        if b is None:  # the per-store (or overall) total
            e["visits"] = int(n)
            e["median_s"] = round(float(med) / 1e6, 1) if med is not None else None
        else:
            e["buckets"][_bucket_label(int(b))] = int(n)
    entry(None)
    out["locations"] = [{"location_id": k, **v} for k, v in sorted(out["locations"].items())]
    return out


def by_time(con: Session, query: ReportQuery) -> dict[str, list[dict[str, Any]]]:
    """Visits by the hour and the day of week they started (in the query's timezone)."""
    start = con.dialect.from_us(local_us_sql("start_us", query))
    rows = _q(con, f"""
SELECT CAST(extract(hour FROM {start}) AS INTEGER) AS h,
       CAST(extract(isodow FROM {start}) AS INTEGER) AS d, count(*)
FROM visits GROUP BY h, d""", query)
    hours = [0] * 24
    days = [0] * 7
    for h, d, n in rows:
        hours[int(h)] += int(n)
        days[int(d) - 1] += int(n)
    return {"by_hour": [{"hour": h, "visits": n} for h, n in enumerate(hours)],
            "by_weekday": [{"day": WEEKDAYS[i], "visits": n} for i, n in enumerate(days)]}


def flows(con: Session, query: ReportQuery) -> dict[str, Any]:
    """Between stores: ``affinity`` (of store A's visitors in the period, how many and
    what share also visited store B) and ``transitions`` (a visit to A followed by the
    visitor's next visit, at B != A: how often), each as a list of (a, b) pairs."""
    pairs = _q(con, """
, visitors_of AS (SELECT DISTINCT loc, vid FROM per_loc)
SELECT a.loc, b.loc, count(*) FROM visitors_of a JOIN visitors_of b ON a.vid = b.vid
GROUP BY a.loc, b.loc""", query)
    seen = {a: int(n) for a, b, n in pairs if a == b}
    affinity = [
        {"from": a, "to": b, "visitors": int(n), "share": round(int(n) / seen[a], 4)}
        for a, b, n in sorted(pairs) if a != b
    ]
    moves = _q(con, f"""
, ordered AS (
    SELECT vid, loc,
           lead(loc) OVER (PARTITION BY vid ORDER BY start_us, {con.dialect.bytewise("loc")})
               AS next_loc
    FROM visits
)
SELECT loc, next_loc, count(*) FROM ordered
WHERE next_loc IS NOT NULL AND next_loc <> loc GROUP BY loc, next_loc""", query)
    transitions = [{"from": a, "to": b, "visits": int(n)} for a, b, n in sorted(moves)]
    return {"visitors_per_location": dict(sorted(seen.items())), "affinity": affinity,
            "transitions": transitions}


def camera_paths(con: Session, query: ReportQuery, top: int = 10) -> list[dict[str, Any]]:
    """Within each store: how visits move between its cameras. ``transitions``: camera
    pairs (a sighting at A, the visit's next sighting at another camera B); ``paths``: the
    ``top`` most common sequences of cameras a visit passed (repeats collapsed; sightings
    of one instant by two cameras are taken in camera-id order)."""
    path = con.dialect.bytewise("path")
    paths = _q(con, f"""
, counted AS (
    SELECT loc, path, count(*) AS n,
           row_number() OVER (PARTITION BY loc ORDER BY count(*) DESC, {path}) AS r
    FROM visits GROUP BY loc, path
)
SELECT loc, path, n FROM counted WHERE r <= ?
ORDER BY {con.dialect.bytewise("loc")}, n DESC, {path}""", query, [top])
    # each path's consecutive cameras, weighted by the visits that took the path
    pairs = _q(con, """
, counted AS (SELECT loc, string_to_array(path, chr(31)) AS cams, count(*) AS n
              FROM visits GROUP BY loc, path)
SELECT loc, cams[i], cams[i + 1], sum(n)::BIGINT
FROM counted, generate_series(1, array_length(cams, 1) - 1) AS g(i)
GROUP BY loc, cams[i], cams[i + 1]""", query)
    out: dict[str, dict[str, Any]] = {}
    for loc, a, b, n in sorted(pairs):
        out.setdefault(loc, {"transitions": [], "paths": []})["transitions"].append(
            {"from": a, "to": b, "visits": int(n)})
    for loc, path, n in paths:
        out.setdefault(loc, {"transitions": [], "paths": []})["paths"].append(
            {"path": path.split(PATH_SEP), "visits": int(n)})
    return [{"location_id": loc, **v} for loc, v in sorted(out.items())]


def summary(con: Session, query: ReportQuery,
            interval: timedelta = timedelta(seconds=15)) -> dict[str, Any]:
    """Everything the dashboard shows for one period and filter (``interval``: the
    cameras' snapshot interval, added to each visit's duration); the sightings are
    sessionised once for all of it."""
    with sessionised(con, query):
        return _summary(con, query, interval)


def _summary(con: Session, query: ReportQuery, interval: timedelta) -> dict[str, Any]:
    return {
        "period": {"from": query.start.isoformat(), "to": query.end.isoformat()},
        "filter": query.describe_filter(),
        "totals": totals(con, query),
        "daily": daily(con, query),
        "histogram": histogram(con, query),
        "locations": per_location(con, query),
        "dwell": dwell(con, query, interval),
        **by_time(con, query),
    }


def known_places(con: Session, tenant: str) -> tuple[set[str], set[str]]:
    """(camera ids, location ids) the store has seen for a tenant."""
    cams = {r[0] for r in con.execute(
        "SELECT camera_id FROM cameras WHERE tenant = ?", [tenant]).fetchall()}
    locs = {r[0] for r in con.execute(
        "SELECT location_id FROM locations WHERE tenant = ?", [tenant]).fetchall()}
    return cams, locs


def _iso(us: int | None) -> str | None:
    if us is None:
        return None
    return iso_utc(datetime.fromtimestamp(us / 1_000_000, UTC))
