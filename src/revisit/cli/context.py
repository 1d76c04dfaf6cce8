"""What every command shares: the settings (validated once) and the runtime (opened lazily)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from revisit.config import ConfigError, Settings, load_settings

Tenant = Annotated[str, typer.Option("--tenant", "-t", help="Tenant id.")]
AnyTenant = Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant id (all if unset).")]
ReportZone = Annotated[str, typer.Option(
    "--timezone", help="IANA zone whose days (and hours) the period and the figures are "
    "cut in, e.g. Europe/Berlin.")]


@dataclass
class CliState:
    data: Path | None = None
    config: Path | None = None
    verbose: bool = False
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self, **overrides: Any) -> Settings:
        if self._settings is None or overrides:
            try:
                self._settings = load_settings(self.config, **{"data": self.data, **overrides})
            except ConfigError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None
        return self._settings


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        obj = ctx.find_root().obj = CliState()
    return obj


def split_list(text: str | None) -> tuple[str, ...]:
    """``"101, 203"`` -> ``("101", "203")``; None or "" -> ``()``. A list of separators
    only (``","``) is refused: as a filter it would silently mean "all"."""
    if not text:
        return ()
    items = tuple(p.strip() for p in text.split(",") if p.strip())
    if not items:
        raise typer.BadParameter(f"{text!r} names no id (ids separated by commas)")
    return items


def parse_day(text: str, option: str) -> date:
    """A whole day: a time of day would be silently dropped, so it is refused."""
    try:
        if len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a date (YYYY-MM-DD; reports count whole "
                                 "days)", param_hint=option) from None


def open_data_store(ctx: typer.Context, api: str | None = None) -> Any:
    """The data directory's store for a command that reads what ingest wrote (one line
    naming the directory if there is nothing yet); ``api``: the HTTP route that does the
    same while `revisit serve` holds the store, named in the error."""
    from revisit.backends import open_store

    require_data(ctx)
    settings = state(ctx).settings()
    return open_store(settings) if api is None else open_store_directly(ctx, api)


def require_data(ctx: typer.Context) -> None:
    """Exit 2 naming an embedded data directory that holds no store: a command that only
    reads must not create one on a misspelt ``--data`` and answer as if it were empty."""
    settings = state(ctx).settings()
    if not settings.store_url and not settings.db_path.exists():
        typer.echo(f"error: no data in {settings.data} (run `revisit ingest` first or pass "
                   "--data)", err=True)
        raise typer.Exit(2)


def open_store_directly(ctx: typer.Context, api: str) -> Any:
    """The data directory's store for an admin command, or a one-line error naming the
    HTTP API to use instead while `revisit serve` holds it."""
    from revisit.backends import open_store
    from revisit.store.base import StoreUnavailable

    settings = state(ctx).settings()
    settings.data.mkdir(parents=True, exist_ok=True)
    try:
        return open_store(settings)
    except StoreUnavailable:
        typer.echo(f"error: `revisit serve` holds the store; while it runs use {api}", err=True)
        raise typer.Exit(2) from None


def require_tenant(store: Any, tenant: str) -> None:
    """Exit 2 naming a tenant that is neither registered nor holds data: a misspelt tenant
    must not read as an empty answer ("no visitors", "no alerts")."""
    from revisit.records import DEFAULT_TENANT
    from revisit.tenancy.db import Tenancy

    if tenant == DEFAULT_TENANT or Tenancy(store).tenant(tenant) is not None \
            or tenant in store.tenants():
        return
    typer.echo(f"error: unknown tenant {tenant!r} (no such tenant, and no data under it)",
               err=True)
    raise typer.Exit(2)
