"""The ASGI app: camera batches, reports, admin/privacy, health, metrics, dashboard.

``create_app(settings)`` opens one :class:`~revisit.api.service.Service` (runtime with
store, index and models, admin data, batch processor) at startup and closes it at
shutdown. Tests pass their own service to control processing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.middleware.sessions import SessionMiddleware

from revisit.api import admin, batches, dashboard, reports
from revisit.api.metrics import CONTENT_TYPE_LATEST
from revisit.api.service import Service
from revisit.api.settings import ServiceSettings
from revisit.config import Settings


def create_app(
    settings: Settings | None = None, service: Service | None = None,
    service_settings: ServiceSettings | None = None, processing: bool = True,
) -> FastAPI:
    """One app per service. Pass ``service`` to share one (tests), else settings."""
    if service is None:
        if settings is None:
            raise ValueError("create_app needs settings or a service")
        service = Service(settings, service_settings)
    svc = service

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.start(processing=processing)
        try:
            yield
        finally:
            svc.stop()

    app = FastAPI(
        title="revisit",
        version="0.1.0",
        summary="Unique customer visits from CCTV snapshots",
        description="Camera batches in, unique-visitor reports out. Authenticate with "
        "`Authorization: Bearer <key>`; see docs/service.md.",
        lifespan=lifespan,
    )
    app.state.service = svc
    app.add_middleware(
        SessionMiddleware, secret_key=svc.session_secret, session_cookie="revisit_session",
        max_age=svc.config.session_max_age_s, same_site="strict", https_only=False,
    )

    @app.get("/healthz", tags=["operations"], summary="The process is alive")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], summary="Ready to accept batches")
    def readyz(request: Request) -> Any:
        s: Service = request.app.state.service
        problems = []
        if not s.ready:
            problems.append("starting")
        if s.processor.error is not None:
            problems.append(f"pipeline stopped: {s.processor.error}")
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503)
        return {"status": "ready", "queue_depth": s.processor.depth(),
                "processing": s.processor.running}

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    def metrics(request: Request) -> Response:
        return Response(request.app.state.service.metrics.render(),
                        media_type=CONTENT_TYPE_LATEST)

    app.include_router(batches.router)
    app.include_router(reports.router)
    app.include_router(admin.router)
    app.include_router(dashboard.router)
    dashboard.mount_static(app)
    return app
