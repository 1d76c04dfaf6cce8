"""Error answers as one documented shape, ``{"detail": "<what is wrong>"}``.

Every refusal (HTTPException, request validation, a store that gave up) answers this JSON
object with a sentence a person can act on, and every route declares the statuses it can
answer, so clients and schema-driven tests know the whole contract.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"  # tenancy ids (tenant, location, camera)

_MEANING = {
    401: "No key, or an unknown, revoked or expired key",
    403: "The key's role or cameras do not allow this, or a filter names another "
         "tenant's place",
    404: "Nothing of that id in the key's tenant",
    409: "Refused to keep the tenant usable (its last admin key)",
    413: "Too large: body, image, pixels or images per batch",
    422: "Invalid input; the detail names the field and the rule",
    429: "Too busy (processing queue or report pool full); retry after Retry-After seconds",
    503: "A report ran past its time budget, or the store is unavailable",
}


# The HTTP server itself (uvicorn) refuses a request it cannot parse (a Content-Length that
# is not a number, a broken header line) before any route runs, in plain text: any
# operation can answer it.
MALFORMED_HTTP: dict[int | str, dict[str, Any]] = {400: {
    "description": "Malformed HTTP request (e.g. a Content-Length that is not a number), "
                   "refused by the HTTP server before the API sees it",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}}


class Problem(BaseModel):
    detail: str


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses."""
    return {c: {"model": Problem, "description": _MEANING[c]} for c in codes}


def _where(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
    return ".".join(loc) or "request"


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = [f"{_where(e)}: {e.get('msg', 'invalid')}" for e in exc.errors()[:5]]
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status, detail = exc.status_code, exc.detail
    if status == 400:  # a body the framework could not parse (not UTF-8, broken JSON)
        status, detail = 422, f"the request body cannot be read: {detail}"
    return JSONResponse({"detail": str(detail)}, status_code=status,
                        headers=getattr(exc, "headers", None))


_QUERY: dict[int, frozenset[str]] = {}  # id(route) -> the query parameters it declares


def _query_names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def known_query(request: Request) -> None:
    """Refuse query parameters an API route does not declare: a misspelt filter
    (``form=`` for ``from=``) would otherwise be silently ignored."""
    if not request.url.path.startswith("/v1/"):  # pages (the dashboard reads its own query)
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed = _QUERY.get(id(route))
    if allowed is None:
        allowed = _QUERY[id(route)] = frozenset(_query_names(dependant))
    if extra := sorted(set(request.query_params) - allowed):
        names = ", ".join(repr(e[:40]) for e in extra[:5])
        known = ", ".join(sorted(allowed)) or "none"
        raise HTTPException(422, f"unknown query parameter(s) {names} (this operation "
                                 f"takes: {known})")


def install(app: FastAPI) -> None:
    """Errors as ``{"detail": str}``: validation (FastAPI's default is a list) and
    unparseable bodies (FastAPI answers those 400, undocumented) become 422."""
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
