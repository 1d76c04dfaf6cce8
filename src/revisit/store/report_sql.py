"""The report as SQL: visit sessionisation with window functions, in one place.

Everything the report says comes from :func:`report_cte`, so a faster source (a
pre-aggregated rollup, a different engine) replaces one function, not the callers.

A visit is a run of sightings of one canonical visitor at one location with no gap
longer than ``visit_gap``: a gap exactly equal to ``visit_gap`` continues the visit.
``visit_gap == 0`` makes every sighting a visit (no window pass at all).

Timestamps are stored as UTC ``TIMESTAMP`` (no zone); parameters are naive UTC. The SQL
is the store's common spelling (:mod:`revisit.store.dialect`); time functions come from
the :class:`~revisit.store.dialect.Dialect` each builder takes.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from revisit.records import Sighting
from revisit.report.query import ReportHeader, ReportQuery, ReportRow, SightingQuery
from revisit.store.dialect import Dialect
from revisit.visits import DEFAULT_VISIT_GAP

# One row per canonical visitor from per_loc (vid, loc, visits, n, first_us, last_us): shared
# by the raw query and the rollup so both answer in exactly the same shape.
_PER_LOC = """per_loc AS (
    SELECT vid, loc, sum(new_visit) AS visits, count(*) AS n, min(t) AS first_us,
           max(t) AS last_us
    FROM marked GROUP BY vid, loc
)"""
PER_VISITOR = """per_visitor AS (
    SELECT vid, sum(visits)::BIGINT AS total, count(*)::BIGINT AS n_locations,
           string_agg(loc || chr(31) || visits::VARCHAR, chr(30)) AS loc_visits,
           min(first_us) AS first_us, max(last_us) AS last_us, sum(n)::BIGINT AS n_sightings
    FROM per_loc GROUP BY vid
)"""
_ROWS_SELECT = (
    "\nSELECT vid, total, n_locations, loc_visits, first_us, last_us, n_sightings{totals}"
    " FROM per_visitor ORDER BY total DESC, vid ASC"
)
# The header's figures on every row, summed over the rows themselves: a header read with
# the rows cannot disagree with them, however the sightings change in between.
_TOTALS = (", count(*) OVER ()::BIGINT, sum(total) OVER ()::BIGINT, "
           "sum(n_sightings) OVER ()::BIGINT")


# A step of a visit's path: the camera, or camera/zone where the sighting was in one of the
# camera's named zones (occupancy zones).
PATH_PLACE = ("CASE WHEN s.zone IS NULL OR s.zone = '' THEN s.camera_id "
              "ELSE s.camera_id || '/' || s.zone END")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us(ts: datetime) -> int:
    """An aware timestamp as microseconds since 1970 (the rollups' time unit)."""
    return (ts.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)


def naive_utc(ts: datetime) -> datetime:
    """Aware -> naive UTC, the form the store keeps (naive input is rejected upstream)."""
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {ts.isoformat()} has no UTC offset")
    return ts.astimezone(UTC).replace(tzinfo=None)


def sighting_filters(
    tenant: str, locations: tuple[str, ...], cameras: tuple[str, ...],
    ts_from: datetime | None, ts_to: datetime | None,
) -> tuple[str, list[Any]]:
    where = ["s.tenant = ?"]
    params: list[Any] = [tenant]
    if ts_from is not None:
        where.append("s.ts >= ?")
        params.append(naive_utc(ts_from))
    if ts_to is not None:
        where.append("s.ts < ?")
        params.append(naive_utc(ts_to))
    if locations:
        where.append(f"s.location_id IN ({', '.join('?' * len(locations))})")
        params.extend(locations)
    if cameras:
        where.append(f"s.camera_id IN ({', '.join('?' * len(cameras))})")
        params.extend(cameras)
    return " AND ".join(where), params


def report_cte(query: ReportQuery, d: Dialect, aliases: bool = True,
               cameras: bool = False, marked_table: str | None = None) -> tuple[str, list[Any]]:
    """``WITH ... per_visitor AS (...)``: one row per canonical visitor in the window.

    per_visitor columns: vid, total (visits), n_locations, loc_visits, first_us, last_us
    (epoch microseconds), n_sightings. ``loc_visits`` is ``loc<US>visits`` pairs joined by
    ``<RS>`` (ASCII unit/record separators), unordered (an ordered aggregate costs far
    more over the whole query, docs/performance.md "Report"): see :func:`parse_loc_visits`.
    ``aliases=False`` (the tenant has no merges) skips the alias join on every sighting;
    ``cameras=True`` carries each sighting's camera (``cam``) in ``base`` and ``marked``.
    ``marked_table``: a table holding ``marked`` already (store/summary.sessionised), read
    instead of sessionising the sightings again.
    """
    if marked_table is not None:
        return (f"WITH marked AS (SELECT * FROM {marked_table}),\n{_PER_LOC},\n{PER_VISITOR}",
                [])
    where, params = sighting_filters(
        query.tenant, query.locations, query.cameras, query.ts_from, query.ts_to
    )
    vid = "coalesce(a.visitor_id, s.face_id)" if aliases else "s.face_id"
    if query.excluded:
        where += f" AND {vid} NOT IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(query.excluded))
    gap_us = query.visit_gap // timedelta(microseconds=1)
    cam = ", cam" if cameras else ""
    if gap_us == 0:
        marked = f"SELECT vid, loc, t{cam}, 1 AS new_visit FROM base"
    else:
        marked = (
            f"SELECT vid, loc, t{cam}, "
            "CASE WHEN t - lag(t) OVER (PARTITION BY vid, loc ORDER BY t) <= ? "
            "THEN 0 ELSE 1 END AS new_visit FROM base"
        )
        params.append(gap_us)
    join = (
        "LEFT JOIN aliases a ON a.tenant = s.tenant AND a.alias_id = s.face_id" if aliases else ""
    )
    sql = f"""
WITH base AS (
    SELECT {vid} AS vid, s.location_id AS loc, {d.epoch_us('s.ts')} AS t
           {f", {PATH_PLACE} AS cam" if cameras else ""}
    FROM sightings s
    {join}
    WHERE {where}
),
marked AS ({marked}),
{_PER_LOC},
{PER_VISITOR}"""
    return sql, params


def staff_ids(s: Any, tenant: str) -> tuple[str, ...]:
    """Visitor ids the reports leave out: active ``staff`` enrolments (revisit.known) and
    every id merged with them (``s``: a session of the store)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    ids = {r[0] for r in s.execute(
        "SELECT visitor_id FROM enrolments WHERE tenant = ? AND grp = 'staff' "
        "AND (expires_at IS NULL OR expires_at > ?)", [tenant, now]).fetchall()}
    if not ids:
        return ()
    listed = sorted(ids)
    groups = s.execute(
        "SELECT visitor_id FROM aliases WHERE tenant = ? AND alias_id IN "
        "(SELECT unnest(?::VARCHAR[]))", [tenant, listed]).fetchall()
    canon = ids | {r[0] for r in groups}
    members = s.execute(
        "SELECT alias_id FROM aliases WHERE tenant = ? AND visitor_id IN "
        "(SELECT unnest(?::VARCHAR[]))", [tenant, sorted(canon)]).fetchall()
    return tuple(sorted(canon | {r[0] for r in members}))


def with_staff_left_out(s: Any, query: ReportQuery) -> ReportQuery:
    """The query with the tenant's staff left out (unless the caller already chose)."""
    from dataclasses import replace

    if query.excluded:
        return query
    staff = staff_ids(s, query.tenant)
    return replace(query, excluded=staff) if staff else query


def parse_loc_visits(text: str) -> dict[str, int]:
    """``per_visitor.loc_visits`` -> {location id: visits}, ordered by location id."""
    pairs = (p.rsplit("\x1f", 1) for p in text.split("\x1e"))
    return {loc: int(n) for loc, n in sorted(pairs)}


def report_header_sql(query: ReportQuery, d: Dialect, aliases: bool = True) -> tuple[str, list[Any]]:
    """Totals straight from the marked sightings: skips both group-bys of the rows query."""
    cte, params = report_cte(query, d, aliases)
    return (
        cte + "\nSELECT count(DISTINCT vid), coalesce(sum(new_visit), 0)::BIGINT, "
        "count(*)::BIGINT FROM marked",
        params,
    )


def sightings_sql(query: SightingQuery) -> tuple[str, list[Any]]:
    """Sightings with the face id resolved through aliases, in time order."""
    ts_from = ts_to = None
    if query.start is not None:
        ts_from = ReportQuery(query.start, query.start, timezone=query.timezone).ts_from
    if query.end is not None:
        ts_to = ReportQuery(query.end, query.end, timezone=query.timezone).ts_to
    where, params = sighting_filters(query.tenant, query.locations, query.cameras, ts_from, ts_to)
    sql = f"""
SELECT coalesce(a.visitor_id, s.face_id) AS face_id, s.face_image_id, s.image_id, s.camera_id,
       s.location_id, s.ts, s.bbox_x, s.bbox_y, s.bbox_w, s.bbox_h, s.quality, s.match_score
FROM sightings s
LEFT JOIN aliases a ON a.tenant = s.tenant AND a.alias_id = s.face_id
WHERE {where}
ORDER BY s.ts, s.face_image_id"""
    return sql, params


def period_text(query: ReportQuery) -> str:
    days = (query.start.isoformat() if query.start == query.end
            else f"{query.start.isoformat()} to {query.end.isoformat()}")
    return days if query.in_utc else f"{days} ({query.timezone})"


# --- rollup ------------------------------------------------------------------------
#
# ``visit_days`` holds one row per (tenant, face_id, location_id, UTC day) with that
# day's first/last sighting, sighting count, the number of visits that START that day
# (sessionised over all history at ROLLUP_GAP) and ``cont``: whether the day's first
# sighting continues a visit from the day before. For a report over whole days D1..D2
# the raw query's visits are then exactly  sum(visits) + (rows of D1 with cont): only on
# D1 does the raw query (which cannot see the day before) start a visit that the rollup
# counted on an earlier day. A later day's continuation is always from a sighting at most
# ROLLUP_GAP (< 1 day) earlier, hence inside the window. So the rollup answers any report
# with the default gap and no camera filter exactly, reading ~n/10 rows instead of n
# sightings and sorting nothing.

ROLLUP_GAP_US = DEFAULT_VISIT_GAP // timedelta(microseconds=1)  # other gaps use the raw query


def rollup_applies(query: ReportQuery) -> bool:
    """The rollups answer queries at their gap without a camera filter (they are per
    location): in UTC from ``visit_days``, in another zone from ``visit_spans``
    (:func:`edge_pairs_sql`)."""
    return (
        not query.cameras
        and query.visit_gap // timedelta(microseconds=1) == ROLLUP_GAP_US
    )


def _in_locations(col: str, query: ReportQuery) -> tuple[str, list[Any]]:
    if not query.locations:
        return "", []
    return f" AND {col} IN (SELECT unnest(?::VARCHAR[]))", [list(query.locations)]


def edge_pairs_sql(query: ReportQuery, midnights: bool) -> tuple[str, list[Any]]:
    """SELECT ``k`` (face_id, chr(31), location_id) of every raw visitor and store whose
    visits ``visit_spans`` holds whole where a report of a zone other than UTC cuts them:
    sightings within one gap on both sides of the period's start (a superset of the visits
    that cross it; sessionising more of them from sightings stays exact), a visit that
    starts in the period and ends after it, and with ``midnights`` one over a midnight of
    the zone inside the period (its sightings fall on two days). These are sessionised from
    their sightings; the rest of the period's visits are read from ``visit_spans``."""
    t0, t1 = epoch_us(query.ts_from), epoch_us(query.ts_to)
    gap = timedelta(microseconds=ROLLUP_GAP_US)
    lf, lp = _in_locations("location_id", query)
    key = "face_id || chr(31) || location_id"
    crossing = "end_us >= ?"
    if midnights:
        day = "86400000000.0"
        crossing += (f" OR floor({local_us_sql('start_us', query)} / {day})"
                     f" <> floor({local_us_sql('end_us', query)} / {day})")
    sql = f"""
    SELECT k FROM (
        SELECT {key} AS k FROM sightings WHERE tenant = ? AND ts >= ? AND ts < ?{lf}
        INTERSECT
        SELECT {key} AS k FROM sightings WHERE tenant = ? AND ts >= ? AND ts <= ?{lf}
    ) before_and_after
    UNION
    SELECT {key} AS k FROM visit_spans
    WHERE tenant = ? AND start_us >= ? AND start_us < ? AND ({crossing}){lf}"""
    start = naive_utc(query.ts_from)
    params = [query.tenant, start - gap, start, *lp, query.tenant, start, start + gap, *lp,
              query.tenant, t0, t1, t1, *lp]
    return sql, params


def local_us_sql(expr: str, query: ReportQuery) -> str:
    """SQL for ``expr`` (microseconds since the epoch, an instant of the period) as wall-clock
    microseconds in the query's timezone: UTC plus the offset in force then, as a CASE over
    the zone's few offsets in the period, so that both dialects read it alike and need no
    zone database of their own. The values are integers computed here, not user text."""
    changes, offsets = query.utc_offsets
    if not changes:
        return expr if offsets[0] == 0 else f"({expr} + {offsets[0]})"
    cases = " ".join(f"WHEN {expr} < {c} THEN {o}" for c, o in zip(changes, offsets, strict=False))
    return f"({expr} + CASE {cases} ELSE {offsets[-1]} END)"


def rollup_rows_from_sightings(d: Dialect, where: str) -> str:
    """SELECT producing ``visit_days`` rows from the sightings matching ``where`` (over
    ``s``). The scan must include the day before each recomputed day, so the first
    sighting of a day sees its predecessor; callers keep only the rows they asked for."""
    return f"""
SELECT tenant, face_id, location_id, day, min(ts) AS first_ts, max(ts) AS last_ts,
       count(*)::BIGINT AS n, sum(nv)::BIGINT AS visits, bool_or(first_of_day AND nv = 0) AS cont
FROM (
    SELECT tenant, face_id, location_id, ts, ts::DATE AS day,
           CASE WHEN prev IS NOT NULL AND {d.epoch_us('ts')} - {d.epoch_us('prev')} <= {ROLLUP_GAP_US}
                THEN 0 ELSE 1 END AS nv,
           (prev IS NULL OR prev::DATE <> ts::DATE) AS first_of_day
    FROM (
        SELECT s.tenant, s.face_id, s.location_id, s.ts,
               lag(s.ts) OVER (PARTITION BY s.tenant, s.face_id, s.location_id ORDER BY s.ts)
                   AS prev
        FROM sightings s WHERE {where}
    ) ordered
) marked
GROUP BY tenant, face_id, location_id, day"""


@dataclass(frozen=True, slots=True)
class RollupRefresh:
    """What :func:`rollup_refresh_sql`'s DELETE and INSERT need for one write."""

    tenants: list[str]  # sorted: the order to lock them in
    delete_params: list[Any]
    insert_params: list[Any]


def rollup_touched(
    sightings: Iterable[Sighting], redelivered: Container[tuple[str, str]] = (),
) -> RollupRefresh | None:
    """The rollup rows a write's newly stored sightings touch (None: none), i.e. not those
    ``redelivered`` ((tenant, face_image_id) already stored): their (tenant, visitor,
    location, day) and the day after, since a late sighting can change whether the next
    day's first sighting continues a visit."""
    keys: set[tuple[str, str, str, date]] = set()
    for s in sightings:
        if (s.tenant, s.face_image_id) in redelivered:
            continue
        day = naive_utc(s.ts).date()
        keys.add((s.tenant, s.face_id, s.location_id, day))
        keys.add((s.tenant, s.face_id, s.location_id, day + timedelta(days=1)))
    if not keys:
        return None
    cols: list[Any] = [[k[i] for k in keys] for i in range(4)]
    lo = datetime.combine(min(cols[3]) - timedelta(days=1), time.min)
    hi = datetime.combine(max(cols[3]) + timedelta(days=1), time.min)
    tenants = sorted(set(cols[0]))
    return RollupRefresh(tenants, cols, [tenants, sorted(set(cols[1])), lo, hi, *cols])


_ROLLUP_KEYS = (
    "SELECT unnest(?::VARCHAR[]) AS tenant, unnest(?::VARCHAR[]) AS face_id, "
    "unnest(?::VARCHAR[]) AS location_id, unnest(?::DATE[]) AS day"
)


def rollup_refresh_sql(d: Dialect) -> tuple[str, str]:
    """DELETE and INSERT recomputing the ``visit_days`` rows of the keys that
    :func:`rollup_touched` lists (its ``delete_params`` and ``insert_params``). The INSERT scans the
    touched visitors' sightings over those days plus the day before; keys are distinct,
    so the join keeps exactly the recomputed rows that were asked for."""
    delete = (
        f"DELETE FROM visit_days v USING ({_ROLLUP_KEYS}) k WHERE v.tenant = k.tenant "
        "AND v.face_id = k.face_id AND v.location_id = k.location_id AND v.day = k.day"
    )
    where = (
        "s.tenant IN (SELECT unnest(?::VARCHAR[])) "
        "AND s.face_id IN (SELECT unnest(?::VARCHAR[])) AND s.ts >= ? AND s.ts < ?"
    )
    insert = (
        "INSERT INTO visit_days SELECT r.* FROM (" + rollup_rows_from_sightings(d, where)
        + f") r JOIN ({_ROLLUP_KEYS}) k ON r.tenant = k.tenant AND r.face_id = k.face_id "
        "AND r.location_id = k.location_id AND r.day = k.day"
    )
    return delete, insert


def rollup_cte(query: ReportQuery, d: Dialect, aliases: bool = True) -> tuple[str, list[Any]]:
    """Like :func:`report_cte` (``per_loc`` and ``per_visitor``), from ``visit_days``.

    Visitors in a merge group (``aliases``) are sessionised from their raw sightings,
    because merged visitors' sightings interleave; everyone else comes from the rollup.
    """
    if not rollup_applies(query):
        raise ValueError("the rollup only answers default-gap reports without a camera filter")
    if not query.in_utc:
        return _spans_cte(query, d, aliases)
    d1 = query.start
    d2 = query.end
    params: list[Any] = [d1, query.tenant, d1, d2]
    loc_filter = ""
    if query.locations:  # one list parameter: faster than thousands of IN (?, ...) items
        loc_filter = " AND r.location_id IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(query.locations))
    if query.excluded:
        loc_filter += " AND r.face_id NOT IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(query.excluded))
    members = (
        "SELECT alias_id FROM aliases WHERE tenant = ? "
        "UNION SELECT visitor_id FROM aliases WHERE tenant = ?"
    )
    roll = f"""
    SELECT r.face_id AS vid, r.location_id AS loc,
           sum(r.visits + CASE WHEN r.cont AND r.day = ? THEN 1 ELSE 0 END) AS visits,
           sum(r.n) AS n, min({d.epoch_us('r.first_ts')}) AS first_us,
           max({d.epoch_us('r.last_ts')}) AS last_us
    FROM visit_days r
    WHERE r.tenant = ? AND r.day BETWEEN ? AND ?{loc_filter}
    {"AND r.face_id NOT IN (" + members + ")" if aliases else ""}
    GROUP BY r.face_id, r.location_id"""
    if aliases:
        params.extend([query.tenant, query.tenant])
        where, raw_params = sighting_filters(query.tenant, query.locations, (), query.ts_from,
                                             query.ts_to)
        if query.excluded:
            where += " AND coalesce(a.visitor_id, s.face_id) NOT IN (SELECT unnest(?::VARCHAR[]))"
            raw_params.append(list(query.excluded))
        raw = _sessionised_per_loc(
            d, "coalesce(a.visitor_id, s.face_id)",
            "LEFT JOIN aliases a ON a.tenant = s.tenant AND a.alias_id = s.face_id",
            f"{where} AND s.face_id IN ({members})")
        params.append(ROLLUP_GAP_US)
        params.extend(raw_params)
        params.extend([query.tenant, query.tenant])
        per_loc = f"{roll}\n    UNION ALL\n{raw}"
    else:
        per_loc = roll
    sql = f"""
WITH per_loc AS ({per_loc}
),
{PER_VISITOR}"""
    return sql, params


def _sessionised_per_loc(d: Dialect, vid: str, join: str, where: str) -> str:
    """Per (vid, loc): visits (at the gap given as the first parameter), sightings, first
    and last instant of the sightings ``where`` picks (over ``s``, joined by ``join``)."""
    return f"""
    SELECT vid, loc, sum(nv) AS visits, count(*) AS n, min(t) AS first_us, max(t) AS last_us
    FROM (
        SELECT vid, loc, t, CASE WHEN t - lag(t) OVER (PARTITION BY vid, loc ORDER BY t) <= ?
                                 THEN 0 ELSE 1 END AS nv
        FROM (
            SELECT {vid} AS vid, s.location_id AS loc, {d.epoch_us('s.ts')} AS t
            FROM sightings s {join}
            WHERE {where}
        ) picked
    ) marked GROUP BY vid, loc"""


def _spans_cte(query: ReportQuery, d: Dialect, aliases: bool) -> tuple[str, list[Any]]:
    """:func:`rollup_cte` for a zone other than UTC: the period's visits from ``visit_spans``
    (whole visits starting in it), those of merged visitors and of the pairs
    :func:`edge_pairs_sql` names sessionised from the period's sightings."""
    edges, params = edge_pairs_sql(query, midnights=False)
    members = (
        "SELECT alias_id FROM aliases WHERE tenant = ? "
        "UNION SELECT visitor_id FROM aliases WHERE tenant = ?"
    )
    lf, lp = _in_locations("r.location_id", query)
    not_raw = " AND r.face_id || chr(31) || r.location_id NOT IN (SELECT k FROM edges)"
    if aliases:
        not_raw += f" AND r.face_id NOT IN ({members})"
    if query.excluded:
        not_raw += " AND r.face_id NOT IN (SELECT unnest(?::VARCHAR[]))"
    roll = f"""
    SELECT r.face_id AS vid, r.location_id AS loc, count(*) AS visits, sum(r.n) AS n,
           min(r.start_us) AS first_us, max(r.end_us) AS last_us
    FROM visit_spans r
    WHERE r.tenant = ? AND r.start_us >= ? AND r.start_us < ?{lf}{not_raw}
    GROUP BY r.face_id, r.location_id"""
    params += [query.tenant, epoch_us(query.ts_from), epoch_us(query.ts_to), *lp]
    if aliases:
        params += [query.tenant, query.tenant]
    if query.excluded:
        params.append(list(query.excluded))
    where, raw_params = sighting_filters(query.tenant, query.locations, (), query.ts_from,
                                         query.ts_to)
    vid = "coalesce(a.visitor_id, s.face_id)" if aliases else "s.face_id"
    if query.excluded:
        where += f" AND {vid} NOT IN (SELECT unnest(?::VARCHAR[]))"
        raw_params.append(list(query.excluded))
    which = "s.face_id || chr(31) || s.location_id IN (SELECT k FROM edges)"
    if aliases:
        which = f"({which} OR s.face_id IN ({members}))"
    join = ("LEFT JOIN aliases a ON a.tenant = s.tenant AND a.alias_id = s.face_id"
            if aliases else "")
    raw = _sessionised_per_loc(d, vid, join, f"{where} AND {which}")
    params += [ROLLUP_GAP_US, *raw_params]
    if aliases:
        params += [query.tenant, query.tenant]
    sql = f"""
WITH edges AS ({edges}
),
per_loc AS ({roll}
    UNION ALL{raw}
),
{PER_VISITOR}"""
    return sql, params


def rollup_header_sql(query: ReportQuery, d: Dialect, aliases: bool = True) -> tuple[str, list[Any]]:
    if not aliases and query.in_utc:  # straight from the rollup rows: no group-by needed
        if not rollup_applies(query):
            raise ValueError("the rollup only answers default-gap reports without cameras")
        params: list[Any] = [query.start, query.tenant, query.start, query.end]
        loc_filter = ""
        if query.locations:
            loc_filter = " AND location_id IN (SELECT unnest(?::VARCHAR[]))"
            params.append(list(query.locations))
        if query.excluded:
            loc_filter += " AND face_id NOT IN (SELECT unnest(?::VARCHAR[]))"
            params.append(list(query.excluded))
        return (
            "SELECT count(DISTINCT face_id), "
            "coalesce(sum(visits + CASE WHEN cont AND day = ? THEN 1 ELSE 0 END), 0)::BIGINT, "
            "coalesce(sum(n), 0)::BIGINT FROM visit_days "
            f"WHERE tenant = ? AND day BETWEEN ? AND ?{loc_filter}",
            params,
        )
    cte, params = rollup_cte(query, d, aliases)
    return (
        cte + "\nSELECT count(DISTINCT vid), coalesce(sum(visits), 0)::BIGINT, "
        "coalesce(sum(n), 0)::BIGINT FROM per_loc",
        params,
    )


# --- what a store runs and returns ---------------------------------------------------


def report_sql(query: ReportQuery, d: Dialect, *, rows: bool, aliases: bool,
               rollup: bool = True, totals: bool = False) -> tuple[str, list[Any]]:
    """The header (``rows=False``) or rows query: through the rollup when ``rollup`` is on
    and it answers exactly (:func:`rollup_applies`), else the raw sessionisation.
    ``totals``: each row also carries the header's three figures (:func:`header_from`
    reads ``record[7:]``)."""
    use_rollup = rollup and rollup_applies(query)
    if not rows:
        return (rollup_header_sql if use_rollup else report_header_sql)(query, d, aliases)
    cte, params = (rollup_cte if use_rollup else report_cte)(query, d, aliases)
    return cte + _ROWS_SELECT.format(totals=_TOTALS if totals else ""), params


def _from_us(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=int(us))


def header_from(query: ReportQuery, record: tuple[Any, ...] | None) -> ReportHeader:
    """The header query's one row (unique visitors, visits, sightings) as a header."""
    visitors, visits, sightings = record or (0, 0, 0)
    return ReportHeader(
        period=period_text(query),
        camera_group=query.describe_filter(),
        unique_visitors=int(visitors or 0),
        total_visits=int(visits or 0),
        total_sightings=int(sightings or 0),
    )


def row_from(record: tuple[Any, ...]) -> ReportRow:
    """One row of the rows query as a :class:`ReportRow`."""
    vid, total, n_loc, loc_visits, first_us, last_us, n = record[:7]
    return ReportRow(
        visitor_id=vid,
        total_appearances=int(total),
        locations_visited=int(n_loc),
        visits_per_location=parse_loc_visits(loc_visits),
        first_seen=_from_us(first_us),
        last_seen=_from_us(last_us),
        sightings=int(n),
    )
