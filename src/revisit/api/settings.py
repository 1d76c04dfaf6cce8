"""Settings of the HTTP service (env ``REVISIT_SERVICE_...``): limits, queue, sessions.

Kept beside the service rather than in :mod:`revisit.config` so the service can grow
without touching the shared settings contract.
"""

from __future__ import annotations

import os

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from revisit.config import ConfigError


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REVISIT_SERVICE_", extra="ignore")

    max_batch_frames: int = Field(64, ge=1, le=10_000, description="Snapshots per camera batch.")
    max_image_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=1024**3,
        description="Largest accepted snapshot file (bytes)."
    )
    max_pixels: int = Field(
        40_000_000, ge=1, le=1_000_000_000,
        description="Largest accepted width x height, read from the header "
        "before any decoding (decompression bombs)."
    )
    max_body_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, le=16 * 1024**3,
        description="Largest request body (Content-Length)."
    )
    queue_batches: int = Field(
        16, ge=1, le=100_000, description="Accepted batches waiting for processing; beyond "
        "this POST /v1/batches answers 429 with Retry-After."
    )
    retry_after_s: int = Field(5, ge=1, le=3600, description="Retry-After on 429.")
    batch_status_days: int = Field(
        30, ge=1, le=3650, description="Days a finished batch's status is kept (deleted by "
        "the scheduled purge).",
    )
    session_secret: str = Field(
        "", description="Signs dashboard session cookies. Empty = a random key kept in "
        "the store, shared by every replica on it (sessions survive restarts)."
    )
    session_max_age_s: int = Field(8 * 3600, ge=60, le=366 * 86400,
                                   description="Dashboard session lifetime.")
    session_https_only: bool = Field(
        False, description="Mark the dashboard's session cookie Secure (sent over HTTPS only): "
        "set it where TLS is in front (a reverse proxy); off by default so that "
        "http://localhost works.")
    metrics_token: str = Field(
        "", description="Bearer token GET /metrics requires. Empty = /metrics answers only "
        "to clients on this machine (loopback).",
    )
    operator_token: str = Field(
        "", description="Token of the operator API (/v1/operator; with X-Revisit-Tenant, "
        "any tenant's /v1/admin). Empty: `revisit serve` makes a random one and writes it "
        "to <data>/serve.json (mode 0600) for the CLI on this machine.",
    )
    metrics_tenant_labels: bool = Field(
        False, description="Label per-tenant metrics with the tenant id (off: 'all'), so "
        "a scraper does not learn tenant ids and volumes unless you want it to.",
    )
    purge_interval_s: int = Field(
        3600, ge=0, le=7 * 86400,
        description="Seconds between scheduled retention purges (at most a week, so retention "
        "stays within days of its promise); 0 = never."
    )
    max_report_days: int = Field(
        731, ge=1, le=36600, description="Longest period (days, inclusive) one report or "
        "summary request may cover: bounds the work and the answer of one request.",
    )
    max_page_size: int = Field(1000, ge=1, le=1_000_000, description="Largest JSON report page.")
    model_process: bool = Field(
        True, description="Embedded mode: run the detector and embedder in a child process "
        "at a lower CPU priority, so uploads, health checks and reports are answered "
        "promptly however busy the models are (docs/performance.md). Off: one process.",
    )
    accept_process: bool = Field(
        True, description="Embedded mode: camera uploads are checked and spooled by a "
        "process of their own that owns the port (every other request passes through it "
        "to the server process), so a 202 does not wait behind the resolver and the "
        "store; ignored with a broker (docs/service.md, 'The accept process'). Off: "
        "one server process.")
    model_process_nice: int = Field(
        10, ge=0, le=19, description="How much lower the model process's CPU priority is "
        "(Unix nice increment): higher keeps answers faster under load, at the cost of "
        "processing while the server is busy answering.",
    )
    report_workers: int = Field(
        2, ge=1, le=64, description="Threads that run reports and summaries, apart from "
        "the threads that answer uploads and health checks.",
    )
    report_waiting: int = Field(
        8, ge=0, le=10_000, description="Report requests that may wait for a worker; "
        "beyond this they answer 429 with Retry-After.",
    )
    report_budget_s: float = Field(
        60.0, ge=0.1, le=3600, description="Time budget of one report or summary request "
        "(its queries in all, a CSV export's streaming included); past it the query is "
        "stopped and the request answers 503.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSettings:
        if self.session_secret and len(self.session_secret) < 32:
            raise ValueError("session_secret must be at least 32 characters (it signs the "
                             "dashboard's sessions); leave it empty for a random one")
        return self


ENV_PREFIX = "REVISIT_SERVICE_"


def load_service_settings() -> ServiceSettings:
    """The service's settings from the environment, checked: a variable it does not know
    (a misspelt name) or a value out of bounds is a :class:`ConfigError` naming it."""
    known = {ENV_PREFIX + name.upper() for name in ServiceSettings.model_fields}
    unknown = sorted(k for k in os.environ if k.upper().startswith(ENV_PREFIX)
                     and k.upper() not in known)
    if unknown:
        raise ConfigError(f"unknown service setting(s): {', '.join(unknown)} (known: "
                          f"{', '.join(sorted(known))})")
    try:
        return ServiceSettings()
    except ValidationError as exc:
        lines = [f"  service.{'.'.join(str(p) for p in err['loc'])} "
                 f"({ENV_PREFIX}{str(err['loc'][0]).upper()}): {err['msg']} "
                 f"(got {err.get('input')!r})" if err["loc"] else f"  service: {err['msg']}"
                 for err in exc.errors()]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None
