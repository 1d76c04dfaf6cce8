"""Staff presence: hours each enrolled staff member was seen per store in a period (the
report that shows what the visitor reports leave out)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from revisit.known.enrol import STAFF, Enrolments
from revisit.report.query import ReportQuery


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
    t0 = int((query.ts_from.timestamp()) * 1_000_000)
    t1 = int((query.ts_to.timestamp()) * 1_000_000)
    sql = ("SELECT face_id, location_id, start_us, end_us FROM visit_spans WHERE tenant = ? "
           "AND face_id IN (SELECT unnest(?::VARCHAR[])) AND start_us >= ? AND start_us < ?")
    params: list[Any] = [tenant, sorted(ids), t0, t1]
    if query.locations:
        sql += " AND location_id IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(query.locations))
    with store.read() as s:  # type: ignore[attr-defined]
        rows = s.execute(sql, params).fetchall()
    add = int(interval.total_seconds() * 1_000_000)
    acc: dict[tuple[str, str], dict[str, Any]] = {}
    for face, loc, start, end in rows:
        a = acc.setdefault((ids[face], loc), {"visits": 0, "us": 0, "days": set()})
        a["visits"] += 1
        a["us"] += int(end) - int(start) + add
        a["days"].add(int(start) // 86_400_000_000)
    by_id = {e.enrolment_id: e for e in people}
    return [{"enrolment_id": eid, "label": by_id[eid].label, "visitor_id": by_id[eid].visitor_id,
             "location_id": loc, "visits": a["visits"], "days_present": len(a["days"]),
             "hours_present": round(a["us"] / 3.6e9, 2)}
            for (eid, loc), a in sorted(acc.items(), key=lambda kv: (by_id[kv[0][0]].label,
                                                                     kv[0][1]))]
