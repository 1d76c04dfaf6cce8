"""``revisit known ...``: enrol staff and watchlist people, list and end enrolments, staff
presence, the watchlist switch. Admin actions on the data directory (while `revisit
serve` runs, use its HTTP API: docs/privacy.md)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from revisit.cli.context import (
    ReportZone,
    Tenant,
    open_store_directly,
    parse_day,
    require_data,
    require_tenant,
    split_list,
    state,
)

known_app = typer.Typer(help="Known people: staff exclusion and the watchlist (opt-in, "
                        "audited).", no_args_is_help=True)


def _open(ctx: typer.Context):  # -> (store, Tenancy)
    from revisit.tenancy.db import Tenancy

    store = open_store_directly(ctx, "the HTTP API (/v1/enrolments, docs/privacy.md)")
    return store, Tenancy(store)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


@known_app.command("enrol")
def enrol(
    ctx: typer.Context, tenant: Tenant,
    photos: Annotated[list[Path] | None, typer.Argument(
        help="Photos of the person (one per photo); none with --visitor.")] = None,
    group: Annotated[str, typer.Option(help="staff, watchlist or a custom group.")] = "staff",
    label: Annotated[str, typer.Option(help="A name or staff number.")] = "",
    reason: Annotated[str, typer.Option(help="Why (recorded).")] = "",
    expires: Annotated[str | None, typer.Option(help="Until (ISO date/time, UTC).")] = None,
    visitor: Annotated[str | None, typer.Option(
        help="Enrol this visitor id instead of photos.")] = None,
) -> None:
    """Enrol a person into a group, from photos or as a visitor revisit already counts."""
    from revisit.known.enrol import EnrolmentError, Enrolments
    from revisit.tenancy.db import TenancyError

    if bool(visitor) == bool(photos):
        raise typer.BadParameter("give photos of the person, or --visitor V-… (not both)")
    try:
        until = datetime.fromisoformat(expires) if expires else None
    except ValueError:
        raise typer.BadParameter(f"{expires!r} is not an ISO date or date and time "
                                 "(e.g. 2027-03-31 or 2027-03-31T18:00Z)",
                                 param_hint="--expires") from None
    store, tenancy = _open(ctx)
    try:
        book = Enrolments(store, tenancy)
        if visitor:
            e = book.enrol_visitor(tenant, group, visitor, label=label, reason=reason,
                                   expires_at=until)
        else:
            from revisit.pipeline import pipeline_model_settings
            from revisit.vision.stages import Vision

            for p in photos or ():
                if not p.is_file():
                    raise typer.BadParameter(f"{p} is not a file", param_hint="PHOTOS")
            vision = Vision(pipeline_model_settings(state(ctx).settings()))
            e = book.enrol_photos(tenant, group, [p.read_bytes() for p in photos or ()],
                                  vision.process, label=label, reason=reason, expires_at=until)
    except (EnrolmentError, TenancyError) as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    typer.echo(f"enrolled {e.label!r} in {e.group} as {e.visitor_id} ({e.enrolment_id})")
    for why in e.skipped:
        typer.echo(f"skipped {why}", err=True)


@known_app.command("list")
def list_(ctx: typer.Context, tenant: Tenant,
          group: Annotated[str | None, typer.Option(help="Only this group.")] = None) -> None:
    """Active enrolments (JSON lines; audited)."""
    from revisit.known.enrol import Enrolments

    require_data(ctx)
    store, tenancy = _open(ctx)
    try:
        require_tenant(store, tenant)
        rows = Enrolments(store, tenancy).list(tenant, group)
        tenancy.audit(tenant, "cli", "known.list", {"group": group, "count": len(rows)})
    finally:
        store.close()
    for e in rows:
        typer.echo(json.dumps(e.as_dict()))


@known_app.command("remove")
def remove(ctx: typer.Context, tenant: Tenant, enrolment_id: str) -> None:
    """End an enrolment (its photos' embeddings go with it)."""
    from revisit.backends import open_index
    from revisit.known.enrol import Enrolments
    from revisit.tenancy.db import TenancyError

    store, tenancy = _open(ctx)
    try:  # the configured index: a pgvector table keeps its rows between runs
        out = Enrolments(store, tenancy).remove(tenant, enrolment_id,
                                                index=open_index(state(ctx).settings()))
    except TenancyError as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    typer.echo(f"removed {enrolment_id}: {out}")


@known_app.command("presence")
def presence(
    ctx: typer.Context, tenant: Tenant,
    from_: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD).")],
    to: Annotated[str, typer.Option("--to", help="Last day, inclusive.")],
    locations: Annotated[str | None, typer.Option(help="Location ids, comma separated.")] = None,
    timezone: ReportZone = "UTC",
) -> None:
    """Hours each enrolled staff member was seen per store (audited)."""
    from revisit.known.enrol import Enrolments
    from revisit.known.presence import staff_presence
    from revisit.report.query import ReportQuery
    from revisit.tenancy.db import TenancyError

    try:
        q = ReportQuery(parse_day(from_, "--from"), parse_day(to, "--to"), tenant=tenant,
                        locations=tuple(split_list(locations)), timezone=timezone)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    require_data(ctx)
    store, tenancy = _open(ctx)
    try:
        require_tenant(store, tenant)
        try:  # the report's rule: the tenant's own places only
            tenancy.report_filter(tenant, q.locations, (), "")
        except TenancyError as exc:
            raise _fail(exc) from None
        rows = staff_presence(Enrolments(store, tenancy), q)
        tenancy.audit(tenant, "cli", "known.presence.read", {"from": from_, "to": to})
    finally:
        store.close()
    typer.echo(f"{'Staff':<28} {'Store':<12} {'Days':>5} {'Visits':>7} {'Hours':>7}")
    for r in rows:
        typer.echo(f"{r['label'][:28]:<28} {r['location_id']:<12} {r['days_present']:>5} "
                   f"{r['visits']:>7} {r['hours_present']:>7.2f}")


@known_app.command("watchlist")
def watchlist(
    ctx: typer.Context, tenant: Tenant,
    enable: Annotated[bool, typer.Option("--enable/--disable", help="Turn alerts on or off.")],
    purpose: Annotated[str, typer.Option(help="Why the tenant watches (recorded).")],
    webhook: Annotated[str | None, typer.Option(help="Webhook URL for alerts.")] = None,
    emails: Annotated[str | None, typer.Option(help="E-mail addresses, comma separated.")] = None,
) -> None:
    """Turn watchlist alerts on or off, stating the purpose (audited)."""
    from pydantic import ValidationError

    from revisit.known.enrol import EnrolmentError
    from revisit.known.watchlist import Watchlist, WatchlistSettings

    try:
        cfg = WatchlistSettings(enabled=enable, purpose=purpose, webhook_url=webhook,
                                emails=split_list(emails))
    except ValidationError as exc:
        err = exc.errors()[0]
        option = {"purpose": "--purpose", "webhook_url": "--webhook", "emails": "--emails"}
        where = option.get(str(err["loc"][0]) if err["loc"] else "", "")
        raise _fail(f"{where}: {err['msg']}" if where else err["msg"]) from None  # type: ignore[arg-type]
    store, tenancy = _open(ctx)
    try:
        Watchlist(store, tenancy).set(tenant, cfg, "cli")
    except EnrolmentError as exc:
        raise _fail(exc) from None
    finally:
        store.close()
    typer.echo(f"watchlist {'on' if enable else 'off'} for {tenant}")


def register(app: typer.Typer) -> None:
    app.add_typer(known_app, name="known")
