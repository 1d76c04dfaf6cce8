"""Occupancy API: cameras' zones, locations' capacity, occupancy now (also for a door
sign's read-only display key), its history, alert rules and alerts; and the sign page."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from pydantic import Field

from revisit.api.auth import bearer, current_key, require, service_of
from revisit.api.errors import errors
from revisit.api.reports import Day, pooled, split_ids
from revisit.config.occupancy import CameraZones, LocationOccupancy
from revisit.occupancy.alerts import AlertBook, AlertRule
from revisit.occupancy.db import OccupancyDB
from revisit.occupancy.history import history_table, write_history_csv
from revisit.occupancy.watch import webhook_secret
from revisit.records import ID_PATTERN
from revisit.tenancy.db import ApiKey, TenancyError

router = APIRouter(tags=["occupancy"], responses=errors(401, 403, 422))
admin = require("admin")
reader = require("analyst", "admin")


def _id() -> Any:
    """A path id (a new parameter object per use: FastAPI binds one to one name)."""
    return PathParam(pattern=ID_PATTERN, max_length=64)


_SIGN = Path(__file__).resolve().parents[1] / "web" / "sign.html"


def _db(request: Request) -> OccupancyDB:
    svc = service_of(request)
    return OccupancyDB(svc.runtime.store, svc.tenancy)


@router.put("/v1/cameras/{camera_id}/occupancy", summary="A camera's counting and zones",
            responses=errors(404))
def put_camera(body: CameraZones, request: Request, camera_id: str = _id(),
               key: ApiKey = Depends(admin)) -> dict[str, Any]:
    _db(request).set_camera(key.tenant, camera_id, body, actor=key.actor)
    return {"camera_id": camera_id, **body.model_dump()}


@router.get("/v1/cameras/{camera_id}/occupancy", summary="A camera's counting and zones",
            responses=errors(404))
def get_camera(request: Request, camera_id: str = _id(),
               key: ApiKey = Depends(reader)) -> dict[str, Any]:
    z = _db(request).camera(key.tenant, camera_id)
    if z is None:
        raise HTTPException(404, f"camera {camera_id!r} has no occupancy settings")
    return {"camera_id": camera_id, **z.model_dump()}


@router.get("/v1/cameras/{camera_id}/zones.png", summary="A camera's zones over its scene (PNG)",
            response_class=Response, responses={
                200: {"content": {"image/png": {}}, "description": "PNG"}, **errors(404)})
def zones_png(request: Request, camera_id: str = _id(), key: ApiKey = Depends(reader)) -> Response:
    from revisit.occupancy.zones import render_zones

    z = _db(request).camera(key.tenant, camera_id)
    if z is None:
        raise HTTPException(404, f"camera {camera_id!r} has no occupancy settings")
    scene = service_of(request).runtime.store.scene(key.tenant, camera_id)
    width, height, jpeg = scene if scene else (None, None, None)
    return Response(render_zones(z, width, height, jpeg), media_type="image/png",
                    headers={"Cache-Control": "no-store"})


@router.get("/v1/occupancy/locations", summary="Locations with a capacity, and their "
            "occupancy now")
def list_locations(request: Request, key: ApiKey = Depends(reader)) -> list[dict[str, Any]]:
    db = _db(request)
    cams = [cam for _, cam in db.all_cameras(key.tenant)]
    return [{**db.live(key.tenant, loc).as_dict(), "settings": cfg.model_dump(),
             "zone_cameras": sorted(cams)}
            for loc, cfg in db.locations(key.tenant).items()]


@router.put("/v1/locations/{location_id}/capacity", summary="A location's capacity and levels",
            responses=errors(404))
def put_location(body: LocationOccupancy, request: Request, location_id: str = _id(),
                 key: ApiKey = Depends(admin)) -> dict[str, Any]:
    _db(request).set_location(key.tenant, location_id, body, actor=key.actor)
    return {"location_id": location_id, **body.model_dump()}


def _sign_or_reader(request: Request, location_id: str) -> str:
    """The tenant: a display key of this location, or an analyst/admin key."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() == "bearer" and secret.strip().startswith("rvd_"):
        found = _db(request).display_key(secret.strip())
        if found is None:
            raise HTTPException(401, "unknown or revoked display key",
                                headers={"WWW-Authenticate": "Bearer"})
        if found[1] != location_id:
            raise HTTPException(403, "this display key shows another location")
        return found[0]
    key = current_key(request)
    if key.role not in ("analyst", "admin"):
        raise HTTPException(403, f"a {key.role} key may not do this (needs analyst or admin)")
    return key.tenant


@router.get("/v1/locations/{location_id}/occupancy", summary="Occupancy now (door sign)",
            responses=errors(404))
def live(request: Request, location_id: str = _id(),
         _: Any = Security(bearer)) -> dict[str, Any]:  # declares the Bearer scheme
    tenant = _sign_or_reader(request, location_id)
    try:
        return _db(request).live(tenant, location_id).as_dict()
    except TenancyError as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/v1/locations/{location_id}/display-keys", status_code=201,
             summary="A read-only key for a door sign (shown once)", responses=errors(404))
def create_display_key(request: Request, location_id: str = _id(),
                       key: ApiKey = Depends(admin)) -> dict[str, str]:
    key_id, secret = _db(request).create_display_key(key.tenant, location_id, key.actor)
    return {"key_id": key_id, "key": secret, "location_id": location_id,
            "sign_url": f"/sign/{location_id}#key={secret}"}


@router.delete("/v1/display-keys/{key_id}", summary="Revoke a door sign's key",
               responses=errors(404))
def revoke_display_key(request: Request, key_id: str = _id(),
                       key: ApiKey = Depends(admin)) -> dict[str, str]:
    try:
        _db(request).revoke_display_key(key.tenant, key_id, key.actor)
    except TenancyError as exc:
        raise HTTPException(404, str(exc)) from None
    return {"revoked": key_id}


@router.get("/v1/occupancy/history", summary="Occupancy per minute and the typical week",
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}},
                             "description": "JSON, or the minutes as CSV"},
                       **errors(429, 503)})
async def history(request: Request, from_: Annotated[Day, Query(alias="from")],
                  to: Annotated[Day, Query()],
                  locations: str = Query("", max_length=10_000,
                                         description="Location ids, comma separated"),
                  format: Literal["json", "csv"] = Query("json"),
                  key: ApiKey = Depends(reader)) -> Any:
    if to < from_:
        raise HTTPException(422, f"to {to} is before from {from_}")
    if from_.year < 1970 or to.year > 2199:
        raise HTTPException(422, "days between 1970-01-01 and 2199-12-31")
    if (to - from_).days > 366:
        raise HTTPException(422, "at most 366 days per request")
    locs = split_ids(locations)
    svc = service_of(request)

    def run() -> dict[str, Any]:  # a report: on the report pool, within its budget
        # as the reports: a location the tenant does not have is 403, not an empty history
        if problems := svc.tenancy.unknown_places(key.tenant, locs, ()):
            raise HTTPException(403, "; ".join(problems))
        return history_table(_db(request), key.tenant, from_, to, locs)

    out = await pooled(svc, run)
    if format == "json":
        return out
    buf = io.StringIO()
    write_history_csv(out, buf)
    name = f"occupancy_{from_.isoformat()}_{to.isoformat()}.csv"
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


class AlertRuleIn(AlertRule):
    """A rule as PUT: its id may be left to the path."""

    rule_id: str = Field("", description="The path's rule id (may be left out).")


@router.put("/v1/alert-rules/{rule_id}", summary="Create or replace an alert rule")
def put_rule(given: AlertRuleIn, request: Request, rule_id: str = _id(),
             key: ApiKey = Depends(admin)) -> dict[str, Any]:
    if given.rule_id not in ("", rule_id):
        raise HTTPException(422, f"rule_id in the body ({given.rule_id}) is not {rule_id}")
    body = AlertRule.model_validate({**given.model_dump(), "rule_id": rule_id})
    svc = service_of(request)
    try:
        _db(request).check_rule_place(key.tenant, body.location_id, body.zone)
        changed = AlertBook(svc.runtime.store).put_rule(key.tenant, body)
    except ValueError as exc:  # TenancyError too
        raise HTTPException(422, str(exc)) from None
    if changed:
        svc.tenancy.audit(key.tenant, key.actor, "alerts.rule.put", body.model_dump())
    return body.model_dump()


@router.get("/v1/alert-rules", summary="The tenant's alert rules")
def list_rules(request: Request, key: ApiKey = Depends(reader)) -> list[dict[str, Any]]:
    return [r.model_dump() for r in AlertBook(service_of(request).runtime.store).rules(key.tenant)]


@router.get("/v1/alert-rules/{rule_id}", summary="One alert rule", responses=errors(404))
def get_rule(request: Request, rule_id: str = _id(),
             key: ApiKey = Depends(reader)) -> dict[str, Any]:
    for rule in AlertBook(service_of(request).runtime.store).rules(key.tenant):
        if rule.rule_id == rule_id:
            return rule.model_dump()
    raise HTTPException(404, f"no alert rule {rule_id!r}")


@router.delete("/v1/alert-rules/{rule_id}", summary="Delete an alert rule",
               responses=errors(404))
def delete_rule(request: Request, rule_id: str = _id(),
                key: ApiKey = Depends(admin)) -> dict[str, str]:
    svc = service_of(request)
    if not AlertBook(svc.runtime.store).delete_rule(key.tenant, rule_id):
        raise HTTPException(404, f"no alert rule {rule_id!r}")
    svc.tenancy.audit(key.tenant, key.actor, "alerts.rule.delete", {"rule_id": rule_id})
    return {"deleted": rule_id}


@router.get("/v1/alerts", summary="Alerts raised, newest first, with every delivery attempt")
def list_alerts(request: Request, limit: int = Query(100, ge=1, le=1000),
                key: ApiKey = Depends(reader)) -> list[dict[str, Any]]:
    return AlertBook(service_of(request).runtime.store).alerts(key.tenant, limit)


@router.get("/v1/admin/webhook-secret", summary="The secret alert webhooks are signed with")
def get_webhook_secret(request: Request, key: ApiKey = Depends(admin)) -> dict[str, str]:
    svc = service_of(request)
    svc.tenancy.audit(key.tenant, key.actor, "alerts.webhook_secret.read", {})
    return {"secret": webhook_secret(svc.tenancy, key.tenant),
            "header": "X-Revisit-Signature: sha256=HMAC-SHA256(secret, timestamp + '.' + body)"}


@router.get("/sign/{location_id}", include_in_schema=False, response_class=HTMLResponse)
def sign_page(location_id: str = _id()) -> HTMLResponse:
    """The door sign: a page that reads its display key from the URL fragment (never sent
    to the server in a request line) and polls the occupancy endpoint."""
    return HTMLResponse(_SIGN.read_text().replace("{{LOCATION}}", location_id),
                        headers={"Cache-Control": "no-store"})
