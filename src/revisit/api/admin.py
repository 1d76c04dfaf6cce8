"""Admin API (admin keys, own tenant only): registry, keys, erasure, retention, audit log."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from revisit.api.auth import require, service_of
from revisit.api.errors import errors
from revisit.api.reports import Answer
from revisit.records import ID_PATTERN, iso_utc
from revisit.report.durations import parse_duration
from revisit.tenancy.db import ApiKey, TenancyError

router = APIRouter(tags=["admin and privacy"], responses=errors(401, 403, 422))
admin = require("admin")


Id = Field(pattern=ID_PATTERN, description="1-64 of A-Z a-z 0-9 _ . - (not first)")
Name = Field("", max_length=200)


class LocationIn(BaseModel):
    location_id: str = Id
    name: str = Name
    timezone: str = Field("UTC", max_length=64, description="IANA time zone")


class CameraIn(BaseModel):
    camera_id: str = Id
    location_id: str = Id
    name: str = Name
    timezone: str | None = Field(None, max_length=64,
                                 description="IANA time zone; default: the location's")


class GroupIn(BaseModel):
    name: str = Id
    cameras: list[str] = Field(min_length=1, max_length=10_000)


class KeyIn(BaseModel):
    role: Literal["admin", "analyst", "camera"]
    cameras: list[str] = Field([], max_length=10_000,
                               description="Camera keys: the cameras it may post for")
    name: str = Name


def _bad(exc: TenancyError) -> HTTPException:
    return HTTPException(422, str(exc))


@router.delete("/v1/visitors/{visitor_id}", summary="Erase a visitor (privacy)",
               responses=errors(404))
def erase(visitor_id: str, request: Request, key: ApiKey = Depends(admin)) -> dict[str, Any]:
    svc = service_of(request)
    try:
        counts = svc.erase(key.tenant, visitor_id, key.actor)
    except KeyError:
        raise HTTPException(404, f"no visitor {visitor_id}") from None
    return {"visitor_id": visitor_id, "erased": counts}


class VisitorOut(Answer):
    visitor_id: str = Field(description="The canonical id (a merged id answers as it).")
    aliases: list[str] = Field(description="Ids merged into it.")
    sightings: int
    locations: dict[str, int] = Field(description="Location id -> sightings.")
    exemplars: int = Field(description="Face embeddings kept to recognise the visitor.")
    first_seen: str | None
    last_seen: str | None


class KeyOut(Answer):
    key_id: str
    role: str
    cameras: list[str] = Field(description="The cameras a camera key may post for.")
    name: str
    created_at: str
    revoked_at: str | None
    expires_at: str | None = Field(description="End of a rotated key's grace period.")
    active: bool


class AuditEntryOut(Answer):
    id: int = Field(description="Counts this tenant's entries (1 = its first).")
    ts: str
    actor: str
    action: str
    detail: dict[str, Any]


@router.get("/v1/visitors/{visitor_id}", summary="What is stored about a visitor",
            responses={200: {"model": VisitorOut}, **errors(404)})
def visitor(
    visitor_id: str, request: Request, key: ApiKey = Depends(require("admin", "analyst"))
) -> dict[str, Any]:
    d = service_of(request).runtime.store.visitor_detail(key.tenant, visitor_id)
    if d is None:
        raise HTTPException(404, f"no visitor {visitor_id}")
    return {
        "visitor_id": d.visitor_id, "aliases": list(d.aliases), "sightings": d.sightings,
        "locations": d.locations, "exemplars": d.exemplars,
        "first_seen": iso_utc(d.first_seen) or None,
        "last_seen": iso_utc(d.last_seen) or None,
    }


class MergeIn(BaseModel):
    absorb: str = Field(..., min_length=1, max_length=64,
                        description="The visitor id that reads as the path's from now on.")
    reason: str = Field("manual", max_length=500, description="Why (kept in the merge log).")


def _merge_record(rec: Any) -> dict[str, Any]:
    return {"merge_id": rec.merge_id, "keep": rec.keep, "absorb": rec.absorb,
            "merged_at": iso_utc(rec.merged_at), "reason": rec.reason,
            "split_at": iso_utc(rec.split_at) or None}


@contextlib.contextmanager
def _merge_errors() -> Iterator[None]:
    """A merge or split of a visitor that does not exist (404) or cannot be done (422)."""
    try:
        yield
    except KeyError as exc:
        raise HTTPException(404, str(exc.args[0] if exc.args else exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


@router.post("/v1/visitors/{visitor_id}/merge", responses=errors(404),
             summary="Merge another visitor into this one (one person seen as two)")
def merge(visitor_id: str, body: MergeIn, request: Request,
          key: ApiKey = Depends(admin)) -> dict[str, Any]:
    with _merge_errors():
        rec = service_of(request).merge(key.tenant, visitor_id, body.absorb, body.reason,
                                        key.actor)
    return _merge_record(rec)


@router.post("/v1/visitors/{visitor_id}/split", responses=errors(404),
             summary="Undo the merge that absorbed this visitor")
def split(visitor_id: str, request: Request, key: ApiKey = Depends(admin)) -> dict[str, Any]:
    with _merge_errors():
        rec = service_of(request).split(key.tenant, visitor_id, key.actor)
    return _merge_record(rec)


@router.post("/v1/admin/purge", summary="Purge data older than the tenant's retention")
def purge(request: Request, key: ApiKey = Depends(admin)) -> dict[str, Any]:
    return service_of(request).purge(key.tenant, key.actor)


@router.get("/v1/admin/skipped-batches",
            summary="Distributed mode: stream batches resolve stopped waiting for")
def skipped_batches(request: Request, limit: int = Query(100, ge=1, le=10_000),
                    key: ApiKey = Depends(admin)) -> list[dict[str, Any]]:
    rows = service_of(request).runtime.store.skipped_batches(key.tenant, limit=limit)
    for r in rows:
        r.pop("tenants", None)  # other tenants of a shared stream are not this key's business
        for k in ("skipped_at", "replayed_at"):
            r[k] = iso_utc(r[k]) or None
    return rows


class RetentionIn(BaseModel):
    retention_days: int = Field(ge=1, le=36500, strict=True, description="Days sightings and "
                                "embeddings are kept; older ones go at the next purge, and older "
                                "snapshots are refused.")


@router.put("/v1/admin/retention", summary="Change how long the tenant's data is kept")
def put_retention(body: RetentionIn, request: Request,
                  key: ApiKey = Depends(admin)) -> dict[str, Any]:
    svc = service_of(request)
    svc.tenancy.set_retention(key.tenant, body.retention_days, actor=key.actor)
    svc.runtime.retention.forget(key.tenant)  # this server's door applies it at once
    return {"tenant": key.tenant, "retention_days": body.retention_days}


@router.get("/v1/admin/audit", summary="Audit log of admin actions and erasures",
            responses={200: {"model": list[AuditEntryOut]}})
def audit(request: Request, limit: int = Query(100, ge=1, le=10_000),
          key: ApiKey = Depends(admin)) -> list[dict]:
    return service_of(request).tenancy.audit_log(key.tenant, limit)


@router.put("/v1/admin/locations", summary="Create or update a location")
def put_location(body: LocationIn, request: Request, key: ApiKey = Depends(admin)) -> dict:
    try:
        loc = service_of(request).tenancy.add_location(
            key.tenant, body.location_id, body.name, body.timezone, actor=key.actor)
    except TenancyError as exc:
        raise _bad(exc) from None
    return {"location_id": loc.location_id, "name": loc.name, "timezone": loc.timezone}


@router.put("/v1/admin/cameras", summary="Register a camera at a location")
def put_camera(body: CameraIn, request: Request, key: ApiKey = Depends(admin)) -> dict:
    try:
        cam = service_of(request).tenancy.add_camera(
            key.tenant, body.camera_id, body.location_id, body.name, body.timezone,
            actor=key.actor)
    except TenancyError as exc:
        raise _bad(exc) from None
    return {"camera_id": cam.camera_id, "location_id": cam.location_id, "name": cam.name,
            "timezone": cam.timezone}


@router.put("/v1/admin/groups", summary="Create or replace a camera group")
def put_group(body: GroupIn, request: Request, key: ApiKey = Depends(admin)) -> dict:
    try:
        cams = service_of(request).tenancy.set_group(key.tenant, body.name, body.cameras,
                                                     actor=key.actor)
    except TenancyError as exc:
        raise _bad(exc) from None
    return {"name": body.name, "cameras": cams}


@router.post("/v1/admin/keys", status_code=201, summary="Create an API key (shown once)")
def create_key(body: KeyIn, request: Request, key: ApiKey = Depends(admin)) -> dict:
    try:
        new, secret = service_of(request).tenancy.create_key(
            key.tenant, body.role, body.cameras, body.name, actor=key.actor)
    except TenancyError as exc:
        raise _bad(exc) from None
    return {"key_id": new.key_id, "role": new.role, "cameras": list(new.cameras),
            "key": secret}


@router.get("/v1/admin/keys", summary="API keys of the tenant (no secrets)",
            responses={200: {"model": list[KeyOut]}})
def list_keys(request: Request, key: ApiKey = Depends(admin)) -> list[dict]:
    return [
        {"key_id": k.key_id, "role": k.role, "cameras": list(k.cameras), "name": k.name,
         "created_at": iso_utc(k.created_at),
         "revoked_at": iso_utc(k.revoked_at) or None,
         "expires_at": iso_utc(k.expires_at) or None,
         "active": k.active()}
        for k in service_of(request).tenancy.keys(key.tenant)
    ]


@router.delete("/v1/admin/keys/{key_id}", summary="Revoke an API key",
               responses=errors(404, 409))
def revoke_key(key_id: str, request: Request, force: bool = Query(
        False, description="Operator token only: revoke even the last admin key."),
        key: ApiKey = Depends(admin)) -> dict:
    if force and key.key_id != "operator":
        raise HTTPException(403, "force is for the operator token (the CLI)")
    try:
        ok = service_of(request).tenancy.revoke_key(key.tenant, key_id, actor=key.actor,
                                                    keep_an_admin=not force)
    except TenancyError as exc:
        raise HTTPException(409, str(exc)) from None
    if not ok:
        raise HTTPException(404, f"no key {key_id}")
    return {"key_id": key_id, "revoked": True}


class RotateIn(BaseModel):
    grace: str = Field("24h", max_length=32, description="How long the old key keeps working, e.g. 24h; "
                       "0 revokes it now.")


@router.post("/v1/admin/keys/{key_id}/rotate", status_code=201,
             summary="Replace a key: a new key now, the old one stops after a grace period",
             responses=errors(404))
def rotate_key(key_id: str, request: Request, body: RotateIn | None = None,
               key: ApiKey = Depends(admin)) -> dict:
    body = body or RotateIn()  # no body: the default grace, as the docs' example reads
    tenancy = service_of(request).tenancy
    old = tenancy.key(key.tenant, key_id)
    if old is None or not old.active():  # as DELETE answers: 404, not a validation error
        raise HTTPException(404, f"no active key {key_id}")
    try:
        grace = parse_duration(body.grace)
        new, secret = tenancy.rotate_key(key.tenant, key_id, grace, actor=key.actor)
    except (TenancyError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    return {"key_id": new.key_id, "role": new.role, "cameras": list(new.cameras),
            "key": secret, "replaces": key_id,
            "old_key_expires_at": iso_utc(new.created_at + grace)}
