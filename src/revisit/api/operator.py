"""Operator API: what spans tenants (create a tenant, its retention), for the person who
runs the service. Authenticated by the operator token, never by an API key: the token
``revisit serve`` writes to ``<data>/serve.json`` (mode 0600, for the CLI on the same
machine) or ``REVISIT_SERVICE_OPERATOR_TOKEN``. With header ``X-Revisit-Tenant`` the same
token acts as that tenant's admin on the ``/v1/admin`` routes (api.auth), which is how
``revisit admin`` works while the server holds the store.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Security
from pydantic import BaseModel, Field

from revisit.api.auth import bearer, service_of
from revisit.api.errors import errors
from revisit.api.service import Service
from revisit.records import ID_PATTERN
from revisit.tenancy.db import TenancyError

router = APIRouter(prefix="/v1/operator", tags=["operations"], responses=errors(401, 422))


def is_operator(svc: Service, secret: str) -> bool:
    token = svc.config.operator_token
    return bool(token) and hmac.compare_digest(secret.encode(), token.encode())


def operator(request: Request, _: Any = Security(bearer)) -> Service:
    svc = service_of(request)
    scheme, _sep, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not is_operator(svc, secret.strip()):
        raise HTTPException(401, "operator routes need 'Authorization: Bearer <operator "
                                 "token>' (see <data>/serve.json)",
                            headers={"WWW-Authenticate": "Bearer"})
    return svc


class TenantIn(BaseModel):
    name: str | None = Field(None, max_length=200, description="Display name.")
    retention_days: int | None = Field(None, ge=1, le=36500, strict=True,
                                       description="Days sightings and embeddings are kept.")


def _tenant_out(t: Any) -> dict[str, Any]:
    return {"tenant": t.tenant, "name": t.name, "retention_days": t.retention_days}


@router.get("/tenants", summary="Every tenant (operator token)")
def tenants(svc: Service = Depends(operator)) -> list[dict[str, Any]]:
    return [_tenant_out(t) for t in svc.tenancy.tenants()]


@router.put("/tenants/{tenant}", summary="Create a tenant, or change its name or retention")
def put_tenant(tenant: str, body: TenantIn, svc: Service = Depends(operator)) -> dict[str, Any]:
    import re

    if not re.fullmatch(ID_PATTERN, tenant):
        raise HTTPException(422, f"tenant {tenant!r}: letters, digits, _ . -; at most 64")
    t = svc.tenancy
    try:
        if t.tenant(tenant) is None:
            t.create_tenant(tenant, body.name or "", body.retention_days or 365,
                            actor="operator")
            created = True
        else:
            if body.retention_days is not None:
                t.set_retention(tenant, body.retention_days, actor="operator")
            if body.name is not None:
                t.rename_tenant(tenant, body.name, actor="operator")
            created = False
    except TenancyError as exc:
        raise HTTPException(422, str(exc)) from None
    svc.runtime.retention.forget(tenant)  # this server's door applies it at once
    return {**_tenant_out(t.require_tenant(tenant)), "created": created}
