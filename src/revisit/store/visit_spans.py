"""The visits rollup (``visit_spans``): one row per visit, kept by every write and delete.

The analyses (store/summary) work on visits: their duration, start hour, order, camera
path. Sessionising a period's raw sightings for each request costs seconds per ten
million sightings; this table holds the answer. A row is one visit of a *raw* face id at
one location, sessionised over all history at the report's default gap
(:data:`~revisit.store.report_sql.ROLLUP_GAP_US`): first and last sighting (epoch
microseconds), sightings, and the visit's camera path (repeats collapsed, camera ids
joined by ASCII unit separators; sightings of one instant by two cameras in camera-id
order). Merges are aliases, so merged visitors are sessionised from their sightings at
query time, as the report does with ``visit_days``.

A write recomputes only the visits its new sightings can change: per (tenant, face,
location), from the earliest start to the latest end of the stored visits within one gap
of the new sightings (a new sighting can extend, bridge or start visits). That range
begins and ends at visit boundaries, so sessionising just its sightings is exact.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from revisit.records import Sighting
from revisit.store.dialect import Dialect, Session
from revisit.store.report_sql import PATH_PLACE, ROLLUP_GAP_US, epoch_us

PATH_SEP = "\x1f"  # between the camera ids of a stored path (chr(31) in SQL)
_EPOCH = datetime(1970, 1, 1)


def visits_from(d: Dialect, marked: str, key: str) -> str:
    """``SELECT {key}, start_us, end_us, n, path`` over ``marked``: a relation with the
    ``key`` columns and ``t`` (epoch microseconds), ``cam`` and ``new_visit`` (1 on a
    visit's first sighting). Visits are numbered by a running count of their first
    sightings, first sightings sorted before ties at the same instant: a tie of a visit's
    start joins that visit, and two sightings at one instant that are each a visit (a
    visit gap of 0) stay two."""
    cam = d.bytewise("cam")
    return f"""
SELECT {key}, min(t) AS start_us, max(t) AS end_us, count(*) AS n,
       string_agg(CASE WHEN prev IS NULL OR prev <> cam THEN cam END, chr(31) ORDER BY t, {cam})
           AS path
FROM (
    SELECT {key}, t, cam, visit_no,
           lag(cam) OVER (PARTITION BY {key}, visit_no ORDER BY t, {cam}) AS prev
    FROM (
        SELECT {key}, t, cam,
               sum(new_visit) OVER (PARTITION BY {key} ORDER BY t, new_visit DESC, {cam}
                                    ROWS UNBOUNDED PRECEDING) AS visit_no
        FROM {marked}
    ) started
) stepped
GROUP BY {key}, visit_no"""


def span_rows_from_sightings(d: Dialect, where: str) -> str:
    """SELECT producing ``visit_spans`` rows from the sightings matching ``where`` (over
    ``s``); ``where`` must take whole visits (see the module docstring)."""
    t = d.epoch_us("s.ts")
    marked = f"""(
    SELECT s.tenant, s.face_id, s.location_id, {t} AS t, {PATH_PLACE} AS cam,
           CASE WHEN {t} - lag({t}) OVER (PARTITION BY s.tenant, s.face_id, s.location_id
                                          ORDER BY s.ts) <= {ROLLUP_GAP_US}
                THEN 0 ELSE 1 END AS new_visit
    FROM sightings s WHERE {where}
) m"""
    return visits_from(d, marked, "tenant, face_id, location_id")


def _ts(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


@dataclass(frozen=True, slots=True)
class Touched:
    """Per (tenant, face id, location): the first and last newly stored sighting."""

    keys: list[tuple[str, str, str]]
    lo: list[int]
    hi: list[int]


def spans_touched(sightings: Iterable[Sighting],
                  redelivered: Container[tuple[str, str]] = ()) -> Touched | None:
    """What a write's newly stored sightings (not ``redelivered``) touch; None: nothing."""
    span: dict[tuple[str, str, str], tuple[int, int]] = {}
    for s in sightings:
        if (s.tenant, s.face_image_id) in redelivered:
            continue
        us = epoch_us(s.ts)
        k = (s.tenant, s.face_id, s.location_id)
        lo, hi = span.get(k, (us, us))
        span[k] = (min(lo, us), max(hi, us))
    if not span:
        return None
    keys = sorted(span)
    return Touched(keys, [span[k][0] for k in keys], [span[k][1] for k in keys])


_KEYS = ("SELECT unnest(?::VARCHAR[]) AS tenant, unnest(?::VARCHAR[]) AS face_id, "
         "unnest(?::VARCHAR[]) AS location_id, unnest(?::BIGINT[]) AS lo, "
         "unnest(?::BIGINT[]) AS hi")


def refresh_spans(s: Session, d: Dialect, touched: Touched) -> None:
    """Recompute the visits ``touched`` can change (inside the caller's transaction, under
    its per-tenant rollup lock)."""
    cols: list[Any] = [[k[i] for k in touched.keys] for i in range(3)]
    gap = ROLLUP_GAP_US
    lo_all, hi_all = min(touched.lo) - gap, max(touched.hi) + gap
    # the stored visits within one gap of the new sightings widen each key's range
    ranges = s.execute(f"""
WITH k AS ({_KEYS}),
v AS (SELECT tenant, face_id, location_id, start_us, end_us FROM visit_spans
      WHERE tenant IN (SELECT unnest(?::VARCHAR[])) AND end_us >= ? AND start_us <= ?)
SELECT k.tenant, k.face_id, k.location_id,
       least(k.lo, coalesce(min(v.start_us), k.lo)), greatest(k.hi, coalesce(max(v.end_us), k.hi))
FROM k LEFT JOIN v ON v.tenant = k.tenant AND v.face_id = k.face_id
     AND v.location_id = k.location_id AND v.end_us >= k.lo - {gap} AND v.start_us <= k.hi + {gap}
GROUP BY k.tenant, k.face_id, k.location_id, k.lo, k.hi""",
                       [*cols, touched.lo, touched.hi, sorted(set(cols[0])), lo_all, hi_all]
                       ).fetchall()
    r_cols: list[Any] = [[r[i] for r in ranges] for i in range(3)]
    r_lo, r_hi = [int(r[3]) for r in ranges], [int(r[4]) for r in ranges]
    lo, hi = min(r_lo), max(r_hi)
    s.execute(
        f"DELETE FROM visit_spans v USING ({_KEYS}) r WHERE v.tenant = r.tenant "
        "AND v.face_id = r.face_id AND v.location_id = r.location_id "
        "AND v.start_us >= r.lo AND v.start_us <= r.hi AND v.start_us >= ? AND v.start_us <= ?",
        [*r_cols, r_lo, r_hi, lo, hi])
    where = ("s.tenant IN (SELECT unnest(?::VARCHAR[])) "
             "AND s.face_id IN (SELECT unnest(?::VARCHAR[])) AND s.ts >= ? AND s.ts <= ?")
    s.execute(
        "INSERT INTO visit_spans SELECT v.tenant, v.face_id, v.location_id, v.start_us, "
        "v.end_us, v.n, v.path FROM (" + span_rows_from_sightings(d, where)
        + f") v JOIN ({_KEYS}) r ON v.tenant = r.tenant AND v.face_id = r.face_id "
        "AND v.location_id = r.location_id AND v.start_us >= r.lo AND v.start_us <= r.hi",
        [sorted(set(r_cols[0])), sorted(set(r_cols[1])), _ts(lo), _ts(hi),
         *r_cols, r_lo, r_hi])


def rebuild_spans(s: Session, d: Dialect, tenant: str | None) -> None:
    """Recompute ``visit_spans`` from the sightings (all tenants, or one)."""
    if tenant is None:
        s.execute("DELETE FROM visit_spans")
        s.execute("INSERT INTO visit_spans " + span_rows_from_sightings(d, "true")
                  + " ORDER BY start_us")
        return
    s.execute("DELETE FROM visit_spans WHERE tenant = ?", [tenant])
    s.execute("INSERT INTO visit_spans " + span_rows_from_sightings(d, "s.tenant = ?")
              + " ORDER BY start_us", [tenant])
