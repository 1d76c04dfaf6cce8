"""Known people API (admin keys): enrolments (photos or a visitor), staff presence, the
watchlist switch and its alerts. Every call that reveals or changes who is enrolled is
audited."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from pydantic import BaseModel, Field

from revisit.api.auth import require, service_of
from revisit.api.errors import errors
from revisit.api.reports import Day, Filters, build_query, pooled
from revisit.known.enrol import EnrolmentError, Enrolments
from revisit.known.presence import staff_presence
from revisit.known.watchlist import Watchlist, WatchlistSettings
from revisit.records import ID_PATTERN
from revisit.report.durations import parse_duration
from revisit.tenancy.db import ApiKey, TenancyError
from revisit.vision.header import ImageError, image_size

router = APIRouter(tags=["known people"], responses=errors(401, 403, 422))
admin = require("admin")
MAX_PHOTOS = 10
MAX_PHOTO_BYTES = 10 * 1024 * 1024


class MarkIn(BaseModel):
    group: str = Field(..., max_length=32, description="staff, watchlist or a custom name")
    visitor_id: str = Field(..., pattern=ID_PATTERN, max_length=64)
    label: str = Field("", max_length=200, description="A name or staff number.")
    reason: str = Field(..., min_length=3, max_length=1000, description="Why (recorded).")
    expires_at: datetime | None = Field(None, description="Until when (UTC); none: no end.")


def _book(request: Request) -> Enrolments:
    svc = service_of(request)
    return Enrolments(svc.runtime.store, svc.tenancy)


def _local_resolver(request: Request) -> Any:
    """This process's resolver where it runs the pipeline (embedded), started if need be."""
    return service_of(request).local_resolver(start=True)


def _reload(request: Request, tenant: str) -> None:
    """The running resolver sees enrolments at once (staff bar, the photos' exemplars)."""
    resolver = _local_resolver(request)
    if resolver is not None:
        resolver.sync_known(tenant)


@router.post("/v1/enrolments", status_code=201, summary="Enrol a person from photos",
             responses=errors(413, 429, 503))
async def enrol_photos(
    request: Request,
    group: str = Form(..., max_length=32), label: str = Form(..., max_length=200),
    reason: str = Form(..., max_length=1000),
    expires_at: datetime | None = Form(None),
    photos: list[UploadFile] = File(..., description=f"1-{MAX_PHOTOS} photos of the person"),
    key: ApiKey = Depends(admin),
) -> dict[str, Any]:
    if not 1 <= len(photos) <= MAX_PHOTOS:
        raise HTTPException(422, f"send 1 to {MAX_PHOTOS} photos, got {len(photos)}")
    data = []
    for p in photos:
        b = await p.read(MAX_PHOTO_BYTES + 1)
        if len(b) > MAX_PHOTO_BYTES:
            raise HTTPException(413, f"photo {p.filename!r} is over {MAX_PHOTO_BYTES} bytes")
        data.append(b)
    svc = service_of(request)
    for p, b in zip(photos, data, strict=True):  # the header's size, before any decoding
        try:
            fmt, w, h = image_size(b)
        except ImageError as exc:
            raise HTTPException(422, f"photo {p.filename!r}: {exc}") from None
        if w * h > svc.config.max_pixels:
            raise HTTPException(413, f"photo {p.filename!r} is {w}x{h} {fmt} = {w * h} "
                                     f"pixels; at most {svc.config.max_pixels}")

    resolver = _local_resolver(request)

    def run() -> Any:
        return _book(request).enrol_photos(
            key.tenant, group, data, svc.enrol_process, label=label,
            reason=reason, expires_at=expires_at, actor=key.actor,
            new_visitor=(lambda: resolver.new_visitor(key.tenant)) if resolver else None)

    try:  # on the report pool: a full pool answers 429, a spent budget 503 (never a 500)
        e = await pooled(svc, run)
    except EnrolmentError as exc:
        raise HTTPException(422, str(exc)) from None
    _reload(request, key.tenant)
    return e.as_dict()


@router.post("/v1/enrolments/visitor", status_code=201,
             summary="Enrol a visitor revisit already counts", responses=errors(404))
def enrol_visitor(body: MarkIn, request: Request, key: ApiKey = Depends(admin)) -> dict[str, Any]:
    try:
        e = _book(request).enrol_visitor(key.tenant, body.group, body.visitor_id,
                                         label=body.label, reason=body.reason,
                                         expires_at=body.expires_at, actor=key.actor)
    except EnrolmentError as exc:
        status = 404 if str(exc).startswith("no visitor") else 422
        raise HTTPException(status, str(exc)) from None
    _reload(request, key.tenant)
    return e.as_dict()


@router.get("/v1/enrolments", summary="Enrolments of the tenant (audited)")
def list_enrolments(request: Request, group: str | None = Query(None, max_length=32),
                    expired: bool = Query(False, description="Include expired ones."),
                    key: ApiKey = Depends(admin)) -> list[dict[str, Any]]:
    out = [e.as_dict() for e in _book(request).list(key.tenant, group, expired)]
    service_of(request).tenancy.audit(key.tenant, key.actor, "known.list",
                                      {"group": group, "count": len(out)})
    return out


@router.delete("/v1/enrolments/{enrolment_id}", summary="End an enrolment",
               responses=errors(404))
def remove_enrolment(enrolment_id: str, request: Request,
                     key: ApiKey = Depends(admin)) -> dict[str, Any]:
    svc = service_of(request)
    # the face index is changed here: not while the pipeline resolves a batch (its search
    # reads the index), as erasure and purge
    with svc.write_lock:
        try:
            out = _book(request).remove(key.tenant, enrolment_id, key.actor,
                                        index=svc.runtime.index)
        except TenancyError as exc:
            raise HTTPException(404, str(exc)) from None
        _reload(request, key.tenant)
    return {"removed": enrolment_id, **out}


@router.get("/v1/reports/staff-presence", summary="Hours enrolled staff were seen per store",
            responses=errors(429, 503))
async def presence(request: Request, from_: Annotated[Day, Query(alias="from")],
                   to: Annotated[Day, Query()], locations: str = Query("", max_length=10_000),
                   snapshot_interval: str = Query("15s", max_length=32),
                   tz: str = Query("UTC", max_length=64, description="IANA zone whose days "
                                   "the period and the days present are cut in."),
                   key: ApiKey = Depends(admin)) -> dict[str, Any]:
    try:
        step = parse_duration(snapshot_interval)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if step > timedelta(hours=1):
        raise HTTPException(422, "snapshot_interval: at most 1h")
    svc = service_of(request)

    def run() -> list[dict[str, Any]]:  # a report: on the report pool, within its budget
        # the report's rules: known places of the tenant only, at most max_report_days
        q = build_query(svc, key, Filters(from_, to, locations or None, tz=tz))
        rows = staff_presence(_book(request), q, step)
        svc.tenancy.audit(key.tenant, key.actor, "known.presence.read",
                          {"from": str(from_), "to": str(to)})
        return rows

    return {"from": from_.isoformat(), "to": to.isoformat(), "staff": await pooled(svc, run)}


@router.put("/v1/watchlist", summary="Turn watchlist alerts on or off (purpose recorded)")
def put_watchlist(body: WatchlistSettings, request: Request,
                  key: ApiKey = Depends(admin)) -> dict[str, Any]:
    svc = service_of(request)
    Watchlist(svc.runtime.store, svc.tenancy).set(key.tenant, body, key.actor)
    return body.model_dump()


@router.get("/v1/watchlist/alerts", summary="Watchlist alerts (each look is audited)")
def watchlist_alerts(request: Request, limit: int = Query(100, ge=1, le=1000),
                     key: ApiKey = Depends(admin)) -> list[dict[str, Any]]:
    svc = service_of(request)
    return Watchlist(svc.runtime.store, svc.tenancy).alerts(key.tenant, key.actor, limit)
