"""The dashboard: sign-in with an analyst (or admin) key, then one page drawn by
``web/static/dashboard.js`` from the report API. Offline: every file is the project's own.

The session cookie is signed (Starlette SessionMiddleware, itsdangerous) and holds only the
key id and tenant; the key is re-checked on each request, so revoking it ends the session.
It only reads (``auth.SESSION_METHODS``); sign-in and sign-out refuse another site's form.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from revisit.api.auth import service_of, session_key

WEB = Path(__file__).resolve().parent.parent / "web"
VENDOR = WEB / "static" / "vendor"  # browser libraries scripts/setup.sh copies from npm
router = APIRouter(include_in_schema=False)


def mount_static(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=WEB / "static"), name="static")


def _page(name: str, **values: str) -> str:
    text = (WEB / name).read_text(encoding="utf-8")
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", html.escape(v))
    return text


@router.get("/docs")
def api_docs() -> HTMLResponse:
    """The OpenAPI schema in Swagger UI, served from /static/vendor: FastAPI's own page
    loads it from a CDN, which a store's network often cannot reach."""
    if not (VENDOR / "swagger-ui-bundle.js").is_file():
        return HTMLResponse(
            "<!doctype html><title>revisit API</title><p>The interactive API docs need the "
            "browser assets that <code>scripts/setup.sh</code> installs with npm. The "
            'schema itself: <a href="/openapi.json">/openapi.json</a>.</p>')
    return get_swagger_ui_html(
        openapi_url="/openapi.json", title="revisit API",
        swagger_js_url="/static/vendor/swagger-ui-bundle.js",
        swagger_css_url="/static/vendor/swagger-ui.css",
        swagger_favicon_url="/static/vendor/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None})  # no call to swagger.io's validator


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=303)


@router.get("/login")
def login_form() -> HTMLResponse:
    return HTMLResponse(_page("login.html", error=""))


def _same_origin(request: Request) -> bool:
    """A form posted from another site (login CSRF: signing a victim in as the attacker)
    carries that site's Origin; a browser posting our own form sends ours, or none.
    Behind a reverse proxy ours is the public host: the proxy passes it as Host or as
    X-Forwarded-Host (a page on another site cannot set either on the victim's request)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    ours = {request.headers.get("host", ""), request.headers.get("x-forwarded-host", "")}
    return urlsplit(origin).netloc in ours - {""}


@router.post("/login")
def login(request: Request, key: str = Form(...)) -> Response:
    if not _same_origin(request):
        return HTMLResponse(_page("login.html", error="Sign in from this site's own page."),
                            status_code=403)
    api_key = service_of(request).tenancy.authenticate(key.strip())
    if api_key is None or api_key.role not in ("analyst", "admin"):
        msg = "Unknown key." if api_key is None else "This key cannot read reports."
        return HTMLResponse(_page("login.html", error=msg), status_code=401)
    request.session.clear()
    request.session.update({"key_id": api_key.key_id, "tenant": api_key.tenant,
                            "since": time.time()})
    return RedirectResponse("/dashboard", status_code=303)


@router.post("/logout")
def logout(request: Request) -> Response:
    if not _same_origin(request):
        return Response("sign out from this site's own page", status_code=403)
    key = session_key(request)
    if key is not None:  # every copy of the cookie ends, not only this browser's
        service_of(request).tenancy.end_sessions(key.tenant, key.key_id)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/dashboard")
def dashboard(request: Request) -> Response:
    key = session_key(request)
    if key is None or key.role not in ("analyst", "admin"):
        request.session.clear()
        return RedirectResponse("/login", status_code=303)
    tenant = service_of(request).tenancy.tenant(key.tenant)
    return HTMLResponse(_page("dashboard.html", tenant=tenant.name if tenant else key.tenant))
