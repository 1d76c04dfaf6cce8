"""Who is calling: a Bearer API key, or (for reads only) the dashboard's signed session
cookie.

401: no credentials or unknown/revoked key. 403: a valid key whose role does not allow the
action. The tenant always comes from the key, never from the request.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import UTC, datetime

from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from revisit.api.service import Service
from revisit.tenancy.db import ApiKey

# declares the scheme in OpenAPI; the header itself is read by current_key (and a dashboard
# session cookie stands in for it)
bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`")


def _operator_as_admin(request: Request, svc: Service) -> ApiKey:
    """The operator token with ``X-Revisit-Tenant``: that tenant's admin (audited as
    ``key:operator``)."""
    tenant = request.headers.get("x-revisit-tenant", "")
    if not tenant:
        raise HTTPException(422, "the operator token acts for one tenant: send "
                                 "X-Revisit-Tenant: <tenant>")
    if svc.tenancy.tenant(tenant) is None:
        raise HTTPException(404, f"no tenant {tenant!r}")
    return ApiKey(key_id="operator", tenant=tenant, role="admin", cameras=(),
                  name="operator", created_at=datetime.now(UTC).replace(tzinfo=None))


# What the dashboard's session cookie may do: read. Every change needs the key itself, so a
# page on another site cannot make a signed-in browser change anything (CSRF).
SESSION_METHODS = frozenset({"GET", "HEAD"})


def service_of(request: Request) -> Service:
    return request.app.state.service


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def current_key(request: Request) -> ApiKey:
    svc = service_of(request)
    header = request.headers.get("authorization")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise _unauthorized("Authorization must be 'Bearer <key>'")
        token = svc.config.operator_token
        if token and hmac.compare_digest(secret.strip().encode(), token.encode()):
            return _operator_as_admin(request, svc)
        key = svc.tenancy.authenticate(secret.strip())
        if key is None:
            raise _unauthorized("unknown or revoked API key")
        return key
    session = request.scope.get("session") or {}
    if session.get("key_id") and session.get("tenant"):
        if request.method not in SESSION_METHODS:  # a cookie rides along cross-site requests
            raise _unauthorized("the dashboard session only reads: a change needs an API key "
                                "(Authorization: Bearer <key>)")
        key = session_key(request)
        if key is not None:
            return key
    raise _unauthorized("missing API key (Authorization: Bearer <key>)")


def session_key(request: Request) -> ApiKey | None:
    """The key of the dashboard session, if the session is still valid: its key active,
    and not signed out since it signed in (a void session is cleared)."""
    session = request.session
    if not (session.get("key_id") and session.get("tenant")):
        return None
    key = service_of(request).tenancy.key(session["tenant"], session["key_id"])
    if key is not None and key.session_valid(float(session.get("since", 0))):
        return key
    session.clear()
    return None


def require(*roles: str) -> Callable[[Request], ApiKey]:
    def dep(
        request: Request, _: HTTPAuthorizationCredentials | None = Security(bearer)
    ) -> ApiKey:
        key = current_key(request)
        if key.role not in roles:
            needs = " or ".join(roles)
            article = "an" if key.role[:1] in "aeiou" else "a"
            raise HTTPException(403, f"{article} {key.role} key may not do this (needs {needs})")
        return key

    return dep
