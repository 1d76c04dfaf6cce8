"""``revisit admin ...``: tenants, API keys, locations, cameras, groups, erasure, retention.

Works on the data directory directly, so run it while the server is stopped (DuckDB admits
one writer process) or use the admin HTTP API of a running server.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Annotated

import typer

from revisit.cli.context import AnyTenant, Tenant, require_data, require_tenant, split_list, state
from revisit.tenancy.db import Tenancy, TenancyError, open_tenancy

admin_app = typer.Typer(help="Tenants, keys, cameras, groups, erasure and retention.",
                        no_args_is_help=True)


@contextlib.contextmanager
def _open(ctx: typer.Context) -> Iterator[tuple[object, Tenancy]]:
    from revisit.backends import open_store
    from revisit.cli.remote import running_server
    from revisit.store.base import StoreUnavailable

    settings = state(ctx).settings()
    settings.data.mkdir(parents=True, exist_ok=True)
    try:
        store = open_store(settings)
    except StoreUnavailable:  # `revisit serve` holds it: go through the server, if it runs
        remote = running_server(settings.data)
        if remote is None:
            raise  # a readable error (cli.main.run)
        try:
            yield None, remote  # type: ignore[misc]
        except TenancyError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        finally:
            remote.close()
        return
    try:
        yield store, open_tenancy(store, settings.data)
    except TenancyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        store.close()


def _needs_store(store: object, api: str) -> None:
    """Commands that work on the store itself, not only tenancy."""
    if store is None:
        typer.echo(f"error: `revisit serve` holds the store; while it runs use {api}",
                   err=True)
        raise typer.Exit(2)




@admin_app.command("add-tenant")
def add_tenant(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Argument(help="Tenant id (letters, digits, _ . -).")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    retention_days: Annotated[int, typer.Option(help="Keep sightings this many days.")] = 365,
) -> None:
    """Create a tenant."""
    with _open(ctx) as (_, t):
        t.create_tenant(tenant, name, retention_days)
    typer.echo(f"tenant {tenant} created (retention {retention_days} days)")


@admin_app.command("set-retention")
def set_retention(ctx: typer.Context, tenant: Tenant, days: int) -> None:
    """Change how many days a tenant's sightings and embeddings are kept."""
    with _open(ctx) as (_, t):
        t.set_retention(tenant, days)
    typer.echo(f"tenant {tenant}: retention {days} days")


@admin_app.command("add-key")
def add_key(
    ctx: typer.Context, tenant: Tenant,
    role: Annotated[str, typer.Option(help="admin, analyst or camera.")],
    cameras: Annotated[
        str | None, typer.Option(help="Camera ids (camera keys), comma separated.")
    ] = None,
    name: Annotated[str, typer.Option(help="A note: who or what uses the key.")] = "",
) -> None:
    """Create an API key. The key is printed once and stored only as a hash."""
    with _open(ctx) as (_, t):
        key, secret = t.create_key(tenant, role, split_list(cameras), name)
    typer.echo(f"key id {key.key_id} ({key.role}, tenant {key.tenant}); keep the key, it is "
               "shown only now:", err=True)
    typer.echo(secret)


@admin_app.command("revoke-key")
def revoke_key(
    ctx: typer.Context, tenant: Tenant, key_id: str,
    force: Annotated[bool, typer.Option(
        "--force", help="Revoke even the tenant's last admin key (the API then has none; "
        "the CLI can always make another).")] = False,
) -> None:
    """Revoke an API key by its id."""
    with _open(ctx) as (_, t):
        ok = t.revoke_key(tenant, key_id, keep_an_admin=not force)
    if not ok:
        typer.echo(f"error: no key {key_id} in tenant {tenant}", err=True)
        raise typer.Exit(2)
    typer.echo(f"key {key_id} revoked")


@admin_app.command("rotate-key")
def rotate_key(
    ctx: typer.Context, tenant: Tenant, key_id: str,
    grace: Annotated[str, typer.Option(
        help="How long the old key keeps working, e.g. 24h; 0 revokes it now.")] = "24h",
) -> None:
    """Replace a key: prints a new key with the same role and cameras; the old one stops
    working after the grace period."""
    from revisit.report.durations import parse_duration

    try:
        period = parse_duration(grace)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--grace") from None
    with _open(ctx) as (_, t):
        new, secret = t.rotate_key(tenant, key_id, period)
    typer.echo(f"key id {new.key_id} replaces {key_id} ({new.role}, tenant {tenant}); "
               f"{key_id} stops working in {grace}. Keep the new key, it is shown only now:",
               err=True)
    typer.echo(secret)


@admin_app.command("add-location")
def add_location(
    ctx: typer.Context, tenant: Tenant, location_id: str,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    timezone: Annotated[str, typer.Option(help="IANA timezone.")] = "UTC",
) -> None:
    """Create or update a location (store)."""
    with _open(ctx) as (_, t):
        t.add_location(tenant, location_id, name, timezone)
    typer.echo(f"location {location_id} saved")


@admin_app.command("add-camera")
def add_camera(
    ctx: typer.Context, tenant: Tenant, camera_id: str,
    location: Annotated[str, typer.Option(help="Location id the camera is at.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    timezone: Annotated[
        str | None, typer.Option(help="IANA timezone (default: the location's).")
    ] = None,
) -> None:
    """Register a camera at a location (needed before it may post batches)."""
    with _open(ctx) as (_, t):
        t.add_camera(tenant, camera_id, location, name, timezone)
    typer.echo(f"camera {camera_id} at {location} saved")


@admin_app.command("set-group")
def set_group(
    ctx: typer.Context, tenant: Tenant, name: str,
    cameras: Annotated[str, typer.Option(help="Camera ids, comma separated.")],
) -> None:
    """Create or replace a camera group."""
    with _open(ctx) as (_, t):
        cams = t.set_group(tenant, name, split_list(cameras))
    typer.echo(f"group {name}: {', '.join(cams)}")


@admin_app.command("show")
def show(ctx: typer.Context, tenant: AnyTenant = None) -> None:
    """Tenants, or one tenant's locations, cameras, groups and keys (as JSON)."""
    with _open(ctx) as (_, t):
        if tenant is None:
            out: object = [{"tenant": x.tenant, "name": x.name,
                            "retention_days": x.retention_days} for x in t.tenants()]
        else:
            x = t.require_tenant(tenant)
            out = {
                "tenant": x.tenant, "name": x.name, "retention_days": x.retention_days,
                "locations": [vars_(loc) for loc in t.locations(tenant)],
                "cameras": [vars_(c) for c in t.cameras(tenant)],
                "groups": t.groups(tenant),
                "keys": [{"key_id": k.key_id, "role": k.role, "cameras": list(k.cameras),
                          "name": k.name, "revoked": k.revoked_at is not None,
                          "expires_at": k.expires_at, "active": k.active()}
                         for k in t.keys(tenant)],
            }
    typer.echo(json.dumps(out, indent=2, default=str))


def vars_(obj: object) -> dict:
    from dataclasses import asdict

    return asdict(obj)  # type: ignore[call-overload]


@admin_app.command("erase-visitor")
def erase_visitor(ctx: typer.Context, tenant: Tenant, visitor_id: str) -> None:
    """Erase a visitor: sightings, embeddings, exemplars, crops; audited."""
    from revisit.backends import open_index
    from revisit.tenancy.privacy import erase_visitor as erase

    settings = state(ctx).settings()
    with _open(ctx) as (store, t):
        _needs_store(store, "DELETE /v1/visitors/{id} with an admin key")
        try:  # the configured index: a pgvector table keeps its rows between runs
            counts = erase(store, open_index(settings), t, tenant, visitor_id, "cli",  # type: ignore[arg-type]
                           settings.crops_dir)
        except KeyError:
            typer.echo(f"error: no visitor {visitor_id} in tenant {tenant}", err=True)
            raise typer.Exit(2) from None
    typer.echo(f"visitor {visitor_id} erased: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@admin_app.command("purge")
def purge(ctx: typer.Context, tenant: AnyTenant = None) -> None:
    """Delete sightings and embeddings older than each tenant's retention."""
    from revisit.api.housekeeping import purge_held_batches
    from revisit.api.settings import load_service_settings
    from revisit.api.spool import Spool
    from revisit.backends import open_index
    from revisit.config import ConfigError
    from revisit.tenancy.privacy import purge_tenant, purgeable_tenants

    settings = state(ctx).settings()
    try:
        status_days = load_service_settings().batch_status_days
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    with _open(ctx) as (store, t):
        _needs_store(store, "POST /v1/admin/purge (the server also purges every "
                            "purge_interval_s)")
        index = open_index(settings)  # a pgvector table keeps its rows between runs
        tenants = [tenant] if tenant else purgeable_tenants(store, t)  # type: ignore[arg-type]
        for name in tenants:
            counts = purge_tenant(store, index, t, name, "cli", settings.crops_dir)  # type: ignore[arg-type]
            typer.echo(f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        if not tenant:  # as the server's scheduled purge does
            pipeline = None
            if settings.queue_url:  # the stage queues' dead letters
                from revisit.distributed.status import PipelineStatus

                pipeline = PipelineStatus(settings, store)
            try:
                problem = purge_held_batches(store, t, Spool(settings.data / "spool"),  # type: ignore[arg-type]
                                             pipeline, status_days)
                if problem:  # the store's retention is done: say what is not
                    typer.echo(f"warning: {problem}", err=True)
            finally:
                if pipeline is not None:
                    pipeline.close()


@admin_app.command("audit")
def audit(ctx: typer.Context, tenant: Tenant,
          limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50) -> None:
    """The tenant's audit log, newest first (JSON lines)."""
    require_data(ctx)
    with _open(ctx) as (store, t):
        if store is not None:  # through a running server, the server names a wrong tenant
            require_tenant(store, tenant)
        for rec in t.audit_log(tenant, limit):
            typer.echo(json.dumps(rec))


@admin_app.command("replay")
def replay(ctx: typer.Context) -> None:
    """Put batches that failed in the embedded server (kept in spool/failed) back in line:
    a running server with its accept process (the default) takes them at once, else the
    server runs them at its next start (frames already stored are skipped)."""
    from revisit.api.spool import Spool

    settings = state(ctx).settings()
    ids = Spool(settings.data / "spool").replay_failed()
    typer.echo(f"{len(ids)} failed batch(es) queued for `revisit serve` (taken at once by a "
               "running server with its accept process, else at its next start)"
               + (": " + ", ".join(ids[:10]) if ids else ""))


@admin_app.command("replay-dead")
def replay_dead(ctx: typer.Context) -> None:
    """Distributed mode: put the dead letters of every stage queue back in line (after the
    cause is fixed). A batch resolve skipped meanwhile is applied when it arrives."""
    from revisit.distributed.topology import QUEUE_IN
    from revisit.queue.factory import open_queue

    settings = state(ctx).settings()
    if not settings.queue_url:
        raise typer.BadParameter("no broker configured (queue_url): the embedded server's "
                                 "failed batches are replayed with `revisit admin replay`")
    for name in QUEUE_IN.values():
        q = open_queue(settings.queue_url, name)
        try:
            replay = getattr(q, "replay_dead", None)
            if replay is None:
                typer.echo(f"{name}: this broker keeps no dead letters")
                continue
            typer.echo(f"{name}: {replay()} dead letter(s) re-published")
        finally:
            q.close()


@admin_app.command("skipped")
def skipped(ctx: typer.Context, tenant: AnyTenant = None, limit: int = 100) -> None:
    """Distributed mode: stream batches resolve stopped waiting for (JSON lines)."""
    with _open(ctx) as (store, _t):
        _needs_store(store, "GET /v1/admin/skipped-batches")
        for rec in store.skipped_batches(tenant, limit=limit):
            typer.echo(json.dumps(rec, default=str))


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")
