"""Staff presence: hours each enrolled staff member was seen per store in a period (the
report that shows what the visitor reports leave out)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from revisit.known.enrol import STAFF, Enrolments
from revisit.report.query import ReportQuery
from revisit.store.report_sql import ROLLUP_GAP_US, epoch_us


def staff_presence(enrolments: Enrolments, query: ReportQuery,
                   interval: timedelta = timedelta(seconds=15)) -> list[dict[str, Any]]:
    """Per staff member and store: visits (at the report's default gap) starting in the
    period, days present, and hours present (each visit's first to last sighting, plus one
    snapshot interval)."""
    store, tenant = enrolments.store, query.tenant
    people = enrolments.list(tenant, STAFF)
    ids: dict[str, str] = {}  # any id of the person -> enrolment id
    for e in people:
        for vid in enrolments.visitors_of(tenant, e.visitor_id):
            ids[vid] = e.enrolment_id
    if not ids:
        return []
    t0, t1 = epoch_us(query.ts_from), epoch_us(query.ts_to)
    # a visit is judged by where the person's joined visit starts, so every span that can
    # join one starting in the period is read: any ending after the period began (staff
    # are few, their spans a handful a day)
    sql = ("SELECT face_id, location_id, start_us, end_us FROM visit_spans WHERE tenant = ? "
           "AND face_id IN (SELECT unnest(?::VARCHAR[])) AND end_us >= ?")
    params: list[Any] = [tenant, sorted(ids), t0 - ROLLUP_GAP_US]
    if query.locations:
        sql += " AND location_id IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(query.locations))
    with store.read() as s:  # type: ignore[attr-defined]
        rows = s.execute(sql, params).fetchall()
    add = int(interval.total_seconds() * 1_000_000)
    # a person's ids (merged visitors) have their own visits: one person's visits are the
    # union of them, joined where they overlap or are within the visit gap
    spans: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for face, loc, start, end in rows:
        spans.setdefault((ids[face], loc), []).append((int(start), int(end)))
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    offsets = query.utc_offsets
    for key, items in spans.items():
        visits: list[list[int]] = []
        for start, end in sorted(items):
            if visits and start <= visits[-1][1] + ROLLUP_GAP_US:
                visits[-1][1] = max(visits[-1][1], end)
            else:
                visits.append([start, end])
        visits = [v for v in visits if t0 <= v[0] < t1]
        if not visits:
            continue
        acc[key] = {"visits": len(visits), "us": sum(e - s + add for s, e in visits),
                    "days": {query.local_us(s, offsets) // 86_400_000_000 for s, _ in visits}}
    by_id = {e.enrolment_id: e for e in people}
    return [{"enrolment_id": eid, "label": by_id[eid].label, "visitor_id": by_id[eid].visitor_id,
             "location_id": loc, "visits": a["visits"], "days_present": len(a["days"]),
             "hours_present": round(a["us"] / 3.6e9, 2)}
            for (eid, loc), a in sorted(acc.items(), key=lambda kv: (by_id[kv[0][0]].label,
                                                                     kv[0][1]))]
