"""Occupancy history as a table: per minute and location, and the typical week."""

from __future__ import annotations

import csv
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from revisit.occupancy.db import OccupancyDB

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def history_table(db: OccupancyDB, tenant: str, start: date, end: date,
                  locations: tuple[str, ...]) -> dict[str, Any]:
    """Per minute, and the typical week (mean people by local weekday and hour), per
    location, over whole days ``start``..``end`` (UTC)."""
    t0 = datetime.combine(start, time.min).replace(tzinfo=ZoneInfo("UTC"))
    rows = db.history(tenant, t0, t0 + timedelta(days=(end - start).days + 1), locations)
    zones = {loc.location_id: loc.timezone for loc in db.tenancy.locations(tenant)}
    caps = db.locations(tenant)
    week: dict[tuple[str, int, int], list[float]] = {}
    minutes = []
    for r in rows:
        cap = caps.get(r.location_id)
        minutes.append({
            "location_id": r.location_id, "zone": r.zone,
            "minute": r.minute.isoformat().replace("+00:00", "Z"),
            "people": round(r.people, 2), "peak": round(r.peak, 2), "cameras": r.cameras,
            "occupancy_pct": (round(100 * r.people / cap.capacity, 1)
                              if cap is not None and not r.zone else None)})
        if not r.zone:
            local = r.minute.astimezone(ZoneInfo(zones.get(r.location_id, "UTC")))
            week.setdefault((r.location_id, local.weekday(), local.hour), []).append(r.people)
    typical = [{"location_id": loc, "weekday": WEEKDAYS[d], "hour": h,
                "people": round(sum(v) / len(v), 2)}
               for (loc, d, h), v in sorted(week.items())]
    return {"from": start.isoformat(), "to": end.isoformat(), "minutes": minutes,
            "by_weekday_hour": typical}


def write_history_csv(out: dict[str, Any], buf: Any) -> None:
    w = csv.writer(buf)
    w.writerow(["Location", "Zone", "Minute (UTC)", "People", "Peak", "Occupancy %",
                "Cameras"])
    for m in out["minutes"]:
        w.writerow([m["location_id"], m["zone"], m["minute"], m["people"], m["peak"],
                    "" if m["occupancy_pct"] is None else m["occupancy_pct"],
                    ", ".join(f"{c}: {v}" for c, v in m["cameras"].items())])
