"""The ASGI app: camera batches, reports, admin/privacy, health, metrics, dashboard.

``create_app(settings)`` opens one :class:`~revisit.api.service.Service` (runtime with
store, index and models, admin data, batch processor) at startup and closes it at
shutdown. Tests pass their own service to control processing.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.middleware.sessions import SessionMiddleware

from revisit.api import admin, batches, dashboard, known, occupancy, operator, reports
from revisit.api import errors as api_errors
from revisit.api.door import PEER_HEADER, DoorProcess
from revisit.api.errors import errors
from revisit.api.metrics import CONTENT_TYPE_LATEST
from revisit.api.service import Service
from revisit.api.settings import ServiceSettings
from revisit.config import Settings

_LOOPBACK = {"127.0.0.1", "::1"}


def _monitoring(request: Request) -> Service:
    """Monitoring endpoints (metrics, pipeline): the metrics token, or this machine."""
    s: Service = request.app.state.service
    token = s.config.metrics_token
    if token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "monitoring endpoints need 'Authorization: Bearer "
                                     "<metrics_token>'", headers={"WWW-Authenticate": "Bearer"})
    elif (request.client.host if request.client else "") not in _LOOPBACK:
        raise HTTPException(403, "monitoring endpoints answer only on this machine unless "
                                 "REVISIT_SERVICE_METRICS_TOKEN is set")
    return s


class _PeerFromDoor:
    """Behind the accept process every request comes over its Unix socket: the caller's
    address is the one the door passes on (monitoring answers only this machine). Only
    installed there, where nothing but the door can reach the server."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            peer = dict(scope["headers"]).get(PEER_HEADER.encode())
            scope = {**scope, "client": (peer.decode("latin-1"), 0) if peer else None}
        await self.app(scope, receive, send)


def create_app(
    settings: Settings | None = None, service: Service | None = None,
    service_settings: ServiceSettings | None = None, processing: bool = True,
    door: DoorProcess | None = None,
) -> FastAPI:
    """One app per service. Pass ``service`` to share one (tests), else settings.
    ``door``: the accept process, started once the service is, stopped before it."""
    if service is None:
        if settings is None:
            raise ValueError("create_app needs settings or a service")
        service = Service(settings, service_settings, behind_door=door is not None)
    svc = service

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.start(processing=processing)
        if door is not None:
            door.start()
        try:
            yield
        finally:
            if door is not None:  # no new uploads while the last ones are processed
                door.stop()
            svc.stop()

    app = FastAPI(
        title="revisit",
        version="0.1.0",
        summary="Unique customer visits from CCTV snapshots",
        description="Camera batches in, unique-visitor reports out. Authenticate with "
        "`Authorization: Bearer <key>`; see docs/service.md.",
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # /docs: dashboard.api_docs, served offline
        # a path with a trailing slash is a 404 naming the path without it, not a 307 to
        # an absolute URL (http:// behind a TLS proxy; a camera's POST re-sent there)
        redirect_slashes=False,
        dependencies=[Depends(api_errors.known_query)],
        responses=api_errors.MALFORMED_HTTP,
    )
    app.state.service = svc
    api_errors.install(app)
    app.add_middleware(api_errors.ValidText)
    app.add_middleware(api_errors.HeadLimit)
    if svc.behind_door:  # then `revisit serve` listens on a Unix socket, for the door only
        app.add_middleware(_PeerFromDoor)
    app.add_middleware(
        SessionMiddleware, secret_key=svc.session_secret, session_cookie="revisit_session",
        max_age=svc.config.session_max_age_s, same_site="strict",
        https_only=svc.config.session_https_only,
    )

    # liveness answers on the event loop itself: no thread pool a busy service could fill
    # HEAD too: load balancers and uptime checks often probe with it
    @app.api_route("/healthz", methods=["GET", "HEAD"], tags=["operations"],
                   summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.api_route("/readyz", methods=["GET", "HEAD"], tags=["operations"],
                   summary="Ready to accept batches",
                   responses={503: {"description": "Starting, or the pipeline stopped"}})
    def readyz(request: Request) -> Any:  # asks the broker: off the event loop
        s: Service = request.app.state.service
        problems = []
        if not s.ready:
            problems.append("starting")
        if s.processor.error is not None:
            problems.append(f"pipeline stopped: {s.processor.error}")
        depth = None
        try:
            depth = s.processor.depth()
        except Exception as exc:
            problems.append(f"broker unreachable: {type(exc).__name__}: {exc}")
        try:
            s.runtime.store.identity_version("")
        except Exception as exc:
            problems.append(f"store unreachable: {type(exc).__name__}: {exc}")
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return {"status": "ready", "queue_depth": depth,
                "pipeline": "broker" if s.processor.broker else (
                    "running" if s.processor.running else "stopped"),
                "busy": s.processor.busy()}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics",
             responses={**errors(401, 403),
                        200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"}})
    def metrics(request: Request) -> Response:
        s = _monitoring(request)
        s.update_pipeline_gauges()
        return Response(s.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/pipeline", tags=["operations"], responses=errors(401, 403),
             summary="Where the work is: queues per stage, frames stored (operators)")
    def pipeline(request: Request) -> dict[str, Any]:
        return _monitoring(request).pipeline_status()

    app.include_router(batches.router)
    app.include_router(reports.router)
    app.include_router(admin.router)
    app.include_router(operator.router)
    app.include_router(occupancy.router)
    app.include_router(known.router)
    app.include_router(dashboard.router)
    dashboard.mount_static(app)
    return app
