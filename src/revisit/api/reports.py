"""Report API: the CLI's unique-visitor report (JSON paginated or CSV streamed) and the
dashboard summary. Analyst and admin keys; always the key's own tenant.

Filters naming a camera, location or group the tenant does not have answer 403: a key
cannot probe another tenant's ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from revisit.api.auth import require, service_of
from revisit.api.errors import errors
from revisit.api.service import Service
from revisit.api.workpool import PoolBusy
from revisit.report import formats
from revisit.report.durations import format_duration, parse_duration
from revisit.report.query import ReportQuery
from revisit.store import summary as summary_sql
from revisit.store.base import QueryTimeout, budget_left
from revisit.tenancy.db import ApiKey, TenancyError
from revisit.visits import DEFAULT_VISIT_GAP

router = APIRouter(tags=["reports"], responses=errors(401, 403, 422, 429, 503))
T = TypeVar("T")
reader = require("analyst", "admin")

# Ties are broken by visitor id, ascending in either direction (as the store's own order):
# rows are sorted by id first, then stably by the column.
SORTS = {
    "total_appearances": lambda r: r.total_appearances,
    "visitor_id": lambda r: r.visitor_id,
    "locations_visited": lambda r: r.locations_visited,
    "first_seen": lambda r: r.first_seen,
    "last_seen": lambda r: r.last_seen,
    "sightings": lambda r: r.sightings,
}
DEFAULT_SORT = "-total_appearances"  # the store's own order: no sorting in Python


def split_ids(text: str | None) -> tuple[str, ...]:
    """``"101, 203"`` -> ids; empty -> no filter; separators only (``",,"``) -> 422: as a
    filter it would silently mean "all" (the CLI's rule too)."""
    items = tuple(p.strip() for p in (text or "").split(",") if p.strip())
    if text and text.strip() and not items:
        raise HTTPException(422, f"{text!r} names no id (ids separated by commas)")
    return items


def _day(value: object) -> object:
    """A whole day written YYYY-MM-DD: pydantic would also take a Unix time or a datetime
    (2024-05-01T10:00 read as that day), which a report's whole-day period cannot mean."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("a day is written YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_day)]


@dataclass(frozen=True)
class Filters:
    """The filters every report and analysis takes (query parameters)."""

    from_: date
    to: date
    locations: str | None = None
    cameras: str | None = None
    camera_group: str | None = None
    visit_gap: str = format_duration(DEFAULT_VISIT_GAP)
    tz: str = "UTC"


def filters(
    # Annotated, not a default: FastAPI applies Day's validator only in this form
    from_: Annotated[Day, Query(alias="from", description="First day (YYYY-MM-DD), "
                                "inclusive; not after 'to'.")],
    to: Annotated[Day, Query(description="Last day, inclusive; the period is at most "
                             "max_report_days (731 by default).")],
    locations: str | None = Query(None, max_length=4000,
                                  description="Location ids, comma separated."),
    cameras: str | None = Query(None, max_length=4000,
                                description="Camera ids, comma separated."),
    camera_group: str | None = Query(None, max_length=64,
                                     description="A camera group of the tenant."),
    visit_gap: str = Query(format_duration(DEFAULT_VISIT_GAP), max_length=32,
                           description="Longest gap inside one visit, e.g. 30m."),
    tz: str = Query("UTC", max_length=64,
                    description="IANA zone whose days and hours the period and the figures "
                    "are cut in, e.g. Europe/Berlin."),
) -> Filters:
    return Filters(from_, to, locations, cameras, camera_group, visit_gap, tz)


def build_query(svc: Service, key: ApiKey, f: Filters) -> ReportQuery:
    locs, group = split_ids(f.locations), f.camera_group or ""
    from_, to = f.from_, f.to
    try:  # another tenant's ids answer 403, as ids that do not exist: a key cannot probe
        cams = svc.tenancy.report_filter(key.tenant, locs, split_ids(f.cameras), group)
    except TenancyError as exc:
        raise HTTPException(403, str(exc)) from None
    try:
        query = ReportQuery(start=from_, end=to, tenant=key.tenant, locations=locs,
                            cameras=cams, visit_gap=parse_duration(f.visit_gap),
                            camera_group=group, timezone=f.tz)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    days = (to - from_).days + 1
    if days > svc.config.max_report_days:
        raise HTTPException(422, f"period of {days} days; at most {svc.config.max_report_days} "
                                 "per request (REVISIT_SERVICE_MAX_REPORT_DAYS)")
    return query


class _Pipe:
    """A text sink a report worker writes and the response reads, in 64 KiB chunks, with
    back-pressure: the writer waits while ``depth`` chunks are unread (and gives up when
    its time budget is spent, e.g. a client that stopped reading)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = 16) -> None:
        self.loop = loop
        self.q: asyncio.Queue[str | BaseException | None] = asyncio.Queue(maxsize=depth)
        self.buf: list[str] = []
        self.size = 0

    def put(self, item: str | BaseException | None) -> None:
        asyncio.run_coroutine_threadsafe(self.q.put(item), self.loop).result(
            timeout=budget_left())

    def write(self, s: str) -> int:
        self.buf.append(s)
        self.size += len(s)
        if self.size >= 64 * 1024:
            self.flush()
        return len(s)

    def flush(self) -> None:
        if self.buf:
            self.put("".join(self.buf))
            self.buf, self.size = [], 0


def _csv_producer(svc: Service, query: ReportQuery, pipe: _Pipe) -> Callable[[], None]:
    def produce() -> None:
        end: BaseException | None = None
        try:
            header, rows = svc.runtime.store.report(query)
            formats.write_csv(rows, pipe, header,  # type: ignore[arg-type]
                              names=svc.tenancy.location_names(query.tenant))
            pipe.flush()
        except BaseException as exc:  # handed to the response, which ends the stream
            end = exc
        with contextlib.suppress(Exception):
            pipe.put(end)

    return produce


async def _chunks(pipe: _Pipe) -> AsyncIterator[bytes]:
    while (item := await pipe.q.get()) is not None:
        if isinstance(item, BaseException):
            raise item  # the client sees a cut-off response, never a silently short file
        yield item.encode()


async def pooled(svc: Service, fn: Callable[..., T], *args: Any) -> T:
    """``fn`` on the report pool, its refusals as HTTP answers."""
    try:
        return await svc.reports.run(fn, *args)
    except PoolBusy:
        raise _busy(svc) from None
    except QueryTimeout:
        raise _too_slow(svc) from None


def _busy(svc: Service) -> HTTPException:
    retry = str(svc.config.retry_after_s)
    return HTTPException(429, f"every report worker is busy; retry in {retry} s",
                         headers={"Retry-After": retry})


def _too_slow(svc: Service) -> HTTPException:
    return HTTPException(
        503, f"the report needed more than its {svc.config.report_budget_s:g} s budget; ask "
        "for a shorter period or fewer places (REVISIT_SERVICE_REPORT_BUDGET_S)",
        headers={"Retry-After": str(svc.config.retry_after_s)})


class Answer(BaseModel):
    """An answer's shape, for the OpenAPI schema (the routes return plain dicts; tests
    check real answers against these, extra fields refused)."""

    model_config = ConfigDict(extra="forbid")


class ReportHeaderOut(Answer):
    period: str = Field(description="The days asked for, as the CLI prints them.")
    camera_group: str = Field(description="The cameras or locations filtered on.")
    unique_visitors: int
    total_visits: int
    total_sightings: int


class LocationVisitsOut(Answer):
    location_id: str
    name: str = Field(description="The location's name (admin add-location), else its id.")
    visits: int


class VisitorRowOut(Answer):
    visitor_id: str = Field(description="Pseudonymous visitor id, e.g. V-0001A7.")
    total_appearances: int = Field(description="Visits summed over locations.")
    locations_visited: int
    visits_per_location: dict[str, int] = Field(description="Location id -> visits.")
    locations: list[LocationVisitsOut]
    first_seen: str | None = Field(description="First sighting in the period (UTC, ISO 8601).")
    last_seen: str | None = Field(description="Last sighting in the period (UTC, ISO 8601).")
    sightings: int


class ReportPageOut(Answer):
    header: ReportHeaderOut
    page: int
    page_size: int
    sort: str
    total: int = Field(description="Unique visitors in the whole report.")
    pages: int
    visitors: list[VisitorRowOut]


class PeriodOut(Answer):
    from_: str = Field(alias="from", description="First day (YYYY-MM-DD, UTC).")
    to: str = Field(description="Last day, inclusive.")


class TotalsOut(Answer):
    unique_visitors: int
    visits: int
    sightings: int
    new_visitors: int = Field(description="First seen (anywhere) in the period.")
    previously_seen: int = Field(description="Seen before the period too.")
    returning_visitors: int = Field(description="More than one visit, or seen before.")
    returning_share: float
    repeat_visitors: int = Field(description="More than one visit in the period.")
    repeat_share: float


class DayOut(Answer):
    day: str
    unique_visitors: int
    sightings: int
    visits: int


class HistogramOut(Answer):
    visits: str = Field(description="Visits per visitor: '1' .. '9', '10+'.")
    visitors: int


class LocationSummaryOut(Answer):
    location_id: str
    name: str
    unique_visitors: int
    visits: int
    sightings: int
    repeat_visitors: int
    first_seen: str | None
    last_seen: str | None


class DwellOut(Answer):
    visits: int
    median_s: float | None = Field(description="Median visit duration, seconds.")
    buckets: dict[str, int] = Field(description="Visits per duration band (<1m ... 60m+).")


class LocationDwellOut(DwellOut):
    location_id: str


class DwellSummaryOut(Answer):
    interval_s: float = Field(description="The snapshot interval added to each visit.")
    locations: list[LocationDwellOut]
    all: DwellOut


class HourOut(Answer):
    hour: int
    visits: int


class WeekdayOut(Answer):
    day: str
    visits: int


class SummaryOut(Answer):
    period: PeriodOut
    filter: str = Field(description="The cameras or locations filtered on.")
    totals: TotalsOut
    daily: list[DayOut]
    histogram: list[HistogramOut]
    locations: list[LocationSummaryOut]
    dwell: DwellSummaryOut
    by_hour: list[HourOut] = Field(description="Visits starting in each UTC hour.")
    by_weekday: list[WeekdayOut]


def _report_page(svc: Service, key: ApiKey, f: Filters, page: int, page_size: int,
                 sort: str) -> dict[str, Any]:
    query = build_query(svc, key, f)
    if page_size > svc.config.max_page_size:
        raise HTTPException(422, f"page_size is at most {svc.config.max_page_size}")
    field = sort.removeprefix("-")
    if field not in SORTS:
        raise HTTPException(422, f"sort {sort!r}: use one of {', '.join(SORTS)} ('-' = desc)")
    store = svc.runtime.store
    header, rows = store.report(query)  # one read: the total is the rows'
    start = (page - 1) * page_size
    if sort == DEFAULT_SORT:
        page_rows = list(itertools.islice(rows, start, start + page_size))
        rows_close = getattr(rows, "close", None)
        if rows_close:
            rows_close()
    else:
        by_id = sorted(rows, key=lambda r: r.visitor_id)
        ordered = sorted(by_id, key=SORTS[field], reverse=sort.startswith("-"))
        page_rows = ordered[start:start + page_size]
    total = header.unique_visitors
    names = svc.tenancy.location_names(key.tenant)
    return {
        "header": formats.header_dict(header),
        "page": page, "page_size": page_size, "sort": sort, "total": total,
        "pages": (total + page_size - 1) // page_size,
        "visitors": [formats.row_dict(r, names) for r in page_rows],
    }


@router.get("/v1/reports/unique-visitors", summary="Unique visitors (JSON pages or CSV)",
            responses={200: {"model": ReportPageOut,
                             "content": {"text/csv": {"schema": {"type": "string"}}},
                             "description": "A JSON page, or the whole report as CSV"}})
async def unique_visitors(
    request: Request,
    f: Filters = Depends(filters),
    format: Literal["json", "csv"] = Query("json"),
    page: int = Query(1, ge=1, le=1_000_000),
    page_size: int = Query(100, ge=1, le=100_000,
                           description="At most max_page_size (1000 by default)."),
    sort: str = Query(DEFAULT_SORT, max_length=32, description="Column, '-' prefix for "
                      "descending: " + ", ".join(SORTS)),
    key: ApiKey = Depends(reader),
) -> Any:
    svc = service_of(request)
    if format == "json":
        return await pooled(svc, _report_page, svc, key, f, page, page_size, sort)
    query = await pooled(svc, build_query, svc, key, f)
    pipe = _Pipe(asyncio.get_running_loop())
    try:
        svc.reports.start(_csv_producer(svc, query, pipe))
    except PoolBusy:
        raise _busy(svc) from None
    name = f"unique-visitors_{f.from_.isoformat()}_{f.to.isoformat()}.csv"
    return StreamingResponse(
        _chunks(pipe), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _summary(svc: Service, key: ApiKey, f: Filters, snapshot_interval: str) -> dict[str, Any]:
    query = build_query(svc, key, f)
    try:
        interval = parse_duration(snapshot_interval)
    except ValueError as exc:
        raise HTTPException(422, f"snapshot_interval: {exc}") from None
    if interval > timedelta(hours=1):
        raise HTTPException(422, "snapshot_interval: at most 1h")
    with svc.runtime.store.read() as con:
        out = summary_sql.summary(con, query, interval)
    names = {loc.location_id: loc.name for loc in svc.tenancy.locations(key.tenant)}
    for row in out["locations"]:
        row["name"] = names.get(row["location_id"], row["location_id"])
    return out


@router.get("/v1/reports/summary", summary="Dashboard figures for a period",
            responses={200: {"model": SummaryOut}})
async def summary(
    request: Request,
    f: Filters = Depends(filters),
    snapshot_interval: str = Query("15s", max_length=32, description="The cameras' "
                                   "snapshot interval, added to each visit's duration."),
    key: ApiKey = Depends(reader),
) -> dict[str, Any]:
    svc = service_of(request)
    return await pooled(svc, _summary, svc, key, f, snapshot_interval)


def _flows(svc: Service, key: ApiKey, f: Filters) -> dict[str, Any]:
    query = build_query(svc, key, f)
    with svc.runtime.store.read() as con, summary_sql.sessionised(con, query):
        out = summary_sql.flows(con, query)
        out["camera_paths"] = summary_sql.camera_paths(con, query)
    out["names"] = svc.tenancy.location_names(key.tenant)
    return out


@router.get("/v1/reports/flows", summary="Between stores: affinity and transitions",
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                             "description": "JSON, or the affinity matrix as CSV rows"}})
async def flows(
    request: Request,
    f: Filters = Depends(filters),
    format: Literal["json", "csv"] = Query("json"),
    key: ApiKey = Depends(reader),
) -> Any:
    svc = service_of(request)
    out = await pooled(svc, _flows, svc, key, f)
    if format == "json":
        return out
    buf = io.StringIO()
    formats.write_flows_csv(out, buf)
    name = f"flows_{f.from_.isoformat()}_{f.to.isoformat()}.csv"
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _heatmap(svc: Service, key: ApiKey, camera_id: str, from_: date, to: date,
             source: str = "auto", tz: str = "UTC") -> bytes:
    from revisit.report.heatmap import render

    if svc.tenancy.unknown_places(key.tenant, (), (camera_id,)):
        raise HTTPException(404, f"no camera {camera_id!r} in your tenant")
    query = build_query(svc, key, Filters(from_, to, tz=tz))
    store = svc.runtime.store
    scene = store.scene(key.tenant, camera_id)
    people = list(_points(store.people_positions(key.tenant, camera_id, query.ts_from,
                                                 query.ts_to))) if source != "faces" else []
    if source == "faces" or (source == "auto" and not people):
        points: Any = _points(store.face_positions(key.tenant, camera_id, query.ts_from,
                                                   query.ts_to))
    else:
        points = people
    width, height, jpeg = scene if scene else (None, None, None)
    return render(points, width, height, jpeg)


def _points(chunks: Any) -> Any:
    return (tuple(p) for chunk in chunks for p in chunk)


@router.get("/v1/cameras/{camera_id}/heatmap.png",
            summary="Where people were seen by a camera, over its empty scene (PNG)",
            response_class=Response, responses={
                200: {"content": {"image/png": {"schema": {"type": "string",
                                                           "format": "binary"}}},
                      "description": "The density of sightings over the background"},
                **errors(404)})
async def heatmap(
    request: Request, camera_id: str,
    from_: Annotated[Day, Query(alias="from", description="First day, inclusive.")],
    to: Annotated[Day, Query(description="Last day, inclusive (at most max_report_days).")],
    t: int | None = Query(None, ge=0, description="Ignored: lets a page that redraws the "
                          "map (live) ask again."),
    source: Literal["auto", "people", "faces"] = Query(
        "auto", description="people: the people counter's detections (cameras that count, "
        "faces or not); faces: face sightings; auto: people where the camera counts, else "
        "faces."),
    tz: str = Query("UTC", max_length=64, description="IANA zone whose days the period is."),
    key: ApiKey = Depends(reader),
) -> Response:
    svc = service_of(request)
    png = await pooled(svc, _heatmap, svc, key, camera_id, from_, to, source, tz)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


class LocationOut(Answer):
    location_id: str
    name: str
    timezone: str = Field(description="IANA zone, e.g. Europe/Berlin.")


class CameraOut(Answer):
    camera_id: str
    location_id: str
    name: str
    timezone: str


class PlacesOut(Answer):
    locations: list[LocationOut]
    cameras: list[CameraOut]
    groups: dict[str, list[str]] = Field(description="Camera group name -> its cameras.")


@router.get("/v1/places", summary="Locations, cameras and camera groups of the tenant",
            responses={200: {"model": PlacesOut}})
def places(request: Request, key: ApiKey = Depends(reader)) -> dict[str, Any]:
    t = service_of(request).tenancy
    return {
        "locations": [{"location_id": x.location_id, "name": x.name, "timezone": x.timezone}
                      for x in t.locations(key.tenant)],
        "cameras": [{"camera_id": c.camera_id, "location_id": c.location_id, "name": c.name,
                     "timezone": c.timezone} for c in t.cameras(key.tenant)],
        "groups": t.groups(key.tenant),
    }
