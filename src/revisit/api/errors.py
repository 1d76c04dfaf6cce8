"""Error answers as one documented shape, ``{"detail": "<what is wrong>"}``.

Every refusal (HTTPException, request validation, a store that gave up) answers this JSON
object with a sentence a person can act on, and every route declares the statuses it can
answer, so clients and schema-driven tests know the whole contract.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from revisit.records import encodes

log = logging.getLogger(__name__)

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


# no body, or one not read as a JSON object (a model's own check on the whole body, such
# as "amber below red", keeps its message)
_WHOLE_BODY = frozenset({"missing", "model_attributes_type", "dict_type", "model_type"})


def _whole_body(request: Request, err: dict[str, Any]) -> str:
    """The body as a whole is wrong: missing, or not a JSON object. FastAPI reads a body
    as JSON only when its Content-Type says so (``curl -d`` sends a form type), so say
    what was sent rather than 'request: Field required'."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if err.get("type") == "missing":
        what = "the request body is missing"
    else:
        what = "the request body is not a JSON object"
    if ctype != "application/json":
        sent = f"Content-Type {ctype!r}" if ctype else "no Content-Type"
        return f"{what}: send a JSON object with Content-Type: application/json (this " \
               f"request has {sent})"
    return f"{what}: send a JSON object ({err.get('msg', 'invalid')})"


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for e in exc.errors()[:5]:
        if e.get("type") == "json_invalid":  # a body that is not JSON: say where it breaks
            where = e.get("loc", ("body", "?"))[-1]
            why = (e.get("ctx") or {}).get("error", "invalid JSON")
            parts.append(f"the request body is not valid JSON ({why} at character {where})")
        elif tuple(e.get("loc", ())) == ("body",) and e.get("type") in _WHOLE_BODY:
            parts.append(_whole_body(request, e))
        else:
            parts.append(f"{_where(e)}: {e.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status, detail = exc.status_code, exc.detail
    if status == 400:  # a body the framework could not parse (not UTF-8, broken JSON)
        status, detail = 422, f"the request body cannot be read: {detail}"
    path = request.url.path
    if status == 404 and detail == "Not Found" and len(path) > 1 and path.endswith("/"):
        detail = f"no such path {path} (without the trailing slash: {path.rstrip('/')})"
    return JSONResponse({"detail": str(detail)}, status_code=status,
                        headers=getattr(exc, "headers", None))


_QUERY: dict[int, frozenset[str]] = {}  # id(route) -> the query parameters it declares


def _query_names(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def known_query(request: Request) -> None:
    """Refuse query parameters an API route does not declare: a misspelt filter
    (``form=`` for ``from=``) would otherwise be silently ignored. Async: no I/O, so it
    runs on the event loop (a plain function would cost every request a thread hop)."""
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
    given = [k for k, _ in request.query_params.multi_items()]
    if twice := sorted({k for k in given if given.count(k) > 1}):
        raise HTTPException(422, f"query parameter(s) {', '.join(repr(t[:40]) for t in twice)} "
                                 "given more than once (one value each; lists are comma "
                                 "separated)")


# escapes of a surrogate, or of a control character other than tab and line breaks
_SUSPECT_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}|\\u00[01][0-9a-fA-F]"
                             rb"|\\u007[fF]|\\[bf]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _bad_text(value: Any) -> bool:
    """A string (or key) in parsed JSON that is not valid Unicode (a lone surrogate) or
    holds a control character (NUL, ESC, ...; tab and line breaks are text)."""
    if isinstance(value, str):
        return (not value.isascii() and not encodes(value)) or bool(_CONTROL.search(value))
    if isinstance(value, dict):
        return any(_bad_text(k) or _bad_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_bad_text(v) for v in value)
    return False


HEAD_LIMIT = 256 * 1024  # bytes of request line + headers a request may carry


class HeadLimit:
    """ASGI middleware: a request whose path, query and headers exceed ``HEAD_LIMIT`` is
    refused with 431 before any route sees it (uvicorn's httptools parser, used where it is
    installed, does not bound headers itself)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") \
                + sum(len(k) + len(v) + 4 for k, v in scope.get("headers") or ())
            if size > HEAD_LIMIT:
                response = JSONResponse({"detail": f"request line and headers exceed "
                                         f"{HEAD_LIMIT // 1024} KiB"}, status_code=431)
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


class ValidText:
    """ASGI middleware: a JSON body whose text is not valid Unicode (``"\\ud800"``, a lone
    surrogate: JSON allows the escape, UTF-8 cannot hold it) or holds control characters
    (a NUL, terminal escapes) is refused with 422 before any route stores it where it
    would break, or garble, every later answer, log and CSV that shows it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        ctype = dict(scope.get("headers") or ()).get(b"content-type", b"")
        if not ctype.lower().startswith(b"application/json"):
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, receive, send)
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if _SUSPECT_ESCAPE.search(body):
            try:
                bad = _bad_text(json.loads(body))
            except (ValueError, RecursionError):
                bad = False  # not JSON: the route's own validation says so
            if bad:
                response = JSONResponse({"detail": "the request body holds text that is not "
                                         "valid Unicode (a lone surrogate escape such as "
                                         "\\ud800) or holds control characters (such as "
                                         "\\u0000 or \\u001b)"}, status_code=422)
                return await response(scope, receive, send)
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _tenancy(request: Request, exc: Exception) -> JSONResponse:
    """A registry check that failed below a route (an unknown location or camera named
    in a setting): 404 for what does not exist, 422 for what is not allowed."""
    text = str(exc)
    status = 404 if text.startswith(("unknown ", "no ")) else 422
    return JSONResponse({"detail": text}, status_code=status)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    """A backend down answers 503 with Retry-After (nothing was accepted; a retry is safe),
    logged in one line, never a 500 with a traceback."""
    retry = str(getattr(request.app.state.service.config, "retry_after_s", 5))
    log.warning("%s %s: %s unavailable: %s", request.method, request.url.path,
                "broker" if "redis" in type(exc).__module__ else "store or broker",
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return JSONResponse({"detail": f"a backend is unavailable ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); "
                                   f"retry in {retry} s (a retry is never counted twice)"},
                        status_code=503, headers={"Retry-After": retry})


def install(app: FastAPI) -> None:
    """Errors as ``{"detail": str}``: validation (FastAPI's default is a list) and
    unparseable bodies (FastAPI answers those 400, undocumented) become 422; a store or
    broker that is down, 503."""
    from revisit.backends import unavailable_errors
    from revisit.tenancy.db import TenancyError

    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(TenancyError, _tenancy)
    for kind in unavailable_errors():
        app.add_exception_handler(kind, _unavailable)
