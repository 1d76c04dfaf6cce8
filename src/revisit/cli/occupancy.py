"""``revisit occupancy``: people per minute and the typical week; ``revisit admin``
commands for cameras' zones, locations' capacity, door-sign keys and alert rules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from revisit.cli.context import (
    Tenant,
    open_store_directly,
    parse_day,
    require_data,
    require_tenant,
    split_list,
    state,
)


def _stores(ctx: typer.Context):  # -> (store, OccupancyDB)
    from revisit.occupancy.db import OccupancyDB, apply_settings
    from revisit.tenancy.db import Tenancy

    store = open_store_directly(ctx, "the occupancy HTTP API (docs/occupancy.md)")
    try:  # what the configuration file sets counts here too, as in the pipeline
        apply_settings(store, state(ctx).settings())
    except BaseException:
        store.close()
        raise
    return store, OccupancyDB(store, Tenancy(store))


def _invalid(exc: ValidationError) -> typer.Exit:
    for e in exc.errors():
        where = ".".join(str(x) for x in e["loc"]) or "settings"
        typer.echo(f"error: {where}: {e['msg']}", err=True)
    return typer.Exit(2)




def register(app: typer.Typer) -> None:
    from revisit.cli.admin import admin_app

    @app.command("occupancy")
    def occupancy(
        ctx: typer.Context,
        from_: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD), UTC.")],
        to: Annotated[str, typer.Option("--to", help="Last day, inclusive.")],
        locations: Annotated[str | None, typer.Option(help="Location ids, comma separated.")] = None,
        fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
        tenant: Tenant = "default",
    ) -> None:
        """People per minute per location (cameras combined by the overlap rule), and the
        typical week: when is the store full?"""
        from revisit.occupancy.history import history_table, write_history_csv
        from revisit.report.query import check_days

        if fmt not in {"table", "csv", "json"}:
            raise typer.BadParameter(f"{fmt!r} is not one of table, csv, json",
                                     param_hint="--format")
        start, end = parse_day(from_, "--from"), parse_day(to, "--to")
        try:  # as the reports: a day past 9999 overflowed the history's date arithmetic
            check_days(start, end)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
        locs = split_list(locations)
        require_data(ctx)
        store, db = _stores(ctx)
        try:
            require_tenant(store, tenant)
            # as the reports and the API (403): a misspelt location is no empty history
            if problems := db.tenancy.unknown_places(tenant, locs, ()):
                typer.echo(f"error: {'; '.join(problems)}", err=True)
                raise typer.Exit(2)
            out = history_table(db, tenant, start, end, locs)
        finally:
            store.close()
        if fmt == "json":
            typer.echo(json.dumps(out))
        elif fmt == "csv":
            write_history_csv(out, sys.stdout)
        else:
            _table(out)

    @admin_app.command("set-zones")
    def set_zones(
        ctx: typer.Context, tenant: Tenant, camera_id: str,
        file: Annotated[Path | None, typer.Option(
            help="JSON with count_zone, exclude, named, overlap_group, scale, offset, "
            "counting.", exists=True, dir_okay=False)] = None,
        counting: Annotated[bool | None, typer.Option(
            "--counting/--no-counting", help="Count people on this camera (default: the "
            "file's counting, else on).")] = None,
    ) -> None:
        """A camera's occupancy settings: counting on/off and its zones (docs/occupancy.md)."""
        from revisit.config.occupancy import CameraZones

        try:
            doc = json.loads(file.read_text()) if file else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"{file} is not JSON: {exc}", param_hint="--file") from None
        if not isinstance(doc, dict):
            raise typer.BadParameter(f"{file} must hold one JSON object", param_hint="--file")
        if counting is not None:
            doc["counting"] = counting
        try:
            zones = CameraZones.model_validate({"counting": True, **doc})
        except ValidationError as exc:
            raise _invalid(exc) from None
        store, db = _stores(ctx)
        try:
            db.set_camera(tenant, camera_id, zones)
        finally:
            store.close()
        typer.echo(f"camera {camera_id}: counting {'on' if zones.counting else 'off'}, "
                   f"{len(zones.exclude)} exclusion and {len(zones.named)} named zones")

    @admin_app.command("calibrate-counter")
    def calibrate_counter(
        ctx: typer.Context, tenant: Tenant, camera_id: str,
        labels: Annotated[Path, typer.Option(help="JSON lines: {\"frame\": FILE, \"count\": N}, "
                                            "people counted by eye in the counting zone.")],
        frames: Annotated[Path | None, typer.Option(help="Directory the frame names are "
                                                   "relative to (default: the labels' own).")] = None,
    ) -> None:
        """Fit the camera's count line (count = scale * found + offset) on frames of it
        whose people were counted by eye, and save it with its zones."""
        import cv2

        from revisit.vision.people import Calibration, PersonDetector

        base = frames or labels.parent
        rows = [json.loads(line) for line in labels.read_text().splitlines() if line.strip()]
        store, db = _stores(ctx)
        try:
            zones = db.camera(tenant, camera_id)
            if zones is None:
                typer.echo(f"error: camera {camera_id} has no zones yet (revisit admin "
                           "set-zones)", err=True)
                raise typer.Exit(2)
            det, found, truth = PersonDetector(), [], []
            for r in rows:
                img = cv2.imread(str(base / (r.get("frame") or r.get("image", ""))))
                if img is None:
                    typer.echo(f"error: cannot read {r}", err=True)
                    raise typer.Exit(2)
                people = det.predict([img])[0]
                found.append(sum(1 for p in people if "" in zones.zones_of(*p.point)))
                truth.append(float(r["count"]))
            try:
                cal = Calibration.fit(found, truth)
            except ValueError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(2) from None
            db.set_camera(tenant, camera_id, zones.model_copy(
                update={"scale": round(cal.scale, 4), "offset": round(cal.offset, 4)}))
        finally:
            store.close()
        before = sum(abs(f - t) for f, t in zip(found, truth, strict=True)) / len(truth)
        after = sum(abs(cal.apply(f) - t) for f, t in zip(found, truth, strict=True)) / len(truth)
        typer.echo(f"camera {camera_id}: count = {cal.scale:.3f} x found + {cal.offset:.2f} "
                   f"(on {len(truth)} frames: mean error {before:.2f} -> {after:.2f})")

    @admin_app.command("set-capacity")
    def set_capacity(
        ctx: typer.Context, tenant: Tenant, location_id: str,
        capacity: Annotated[int, typer.Option(help="Most people allowed inside.")],
        amber: Annotated[float, typer.Option(help="Amber from this % of capacity.")] = 70.0,
        red: Annotated[float, typer.Option(help="Red (sign: wait) from this %.")] = 90.0,
        stale_after: Annotated[int, typer.Option(help="Seconds before a camera counts as "
                                                 "silent.")] = 120,
    ) -> None:
        """A location's capacity and the levels its door sign shows."""
        from revisit.config.occupancy import LocationOccupancy

        try:
            cfg = LocationOccupancy(capacity=capacity, amber_pct=amber, red_pct=red,
                                    stale_after_s=stale_after)
        except ValidationError as exc:
            raise _invalid(exc) from None
        store, db = _stores(ctx)
        try:
            db.set_location(tenant, location_id, cfg)
        finally:
            store.close()
        typer.echo(f"location {location_id}: capacity {capacity}, amber {amber:g} %, "
                   f"red {red:g} %")

    @admin_app.command("display-key")
    def display_key(ctx: typer.Context, tenant: Tenant, location_id: str) -> None:
        """A read-only key for the door sign of a location (shown once)."""
        store, db = _stores(ctx)
        try:
            key_id, secret = db.create_display_key(tenant, location_id)
        finally:
            store.close()
        typer.echo(f"display key {key_id}: {secret}\nsign: http://HOST:PORT/sign/{location_id}"
                   f"#key={secret}")

    @admin_app.command("alert-rule")
    def alert_rule(
        ctx: typer.Context, tenant: Tenant,
        file: Annotated[Path, typer.Option(help="JSON of the rule (docs/occupancy.md).",
                                           exists=True, dir_okay=False)],
    ) -> None:
        """Create or replace an occupancy alert rule (audited)."""
        from revisit.occupancy.alerts import AlertBook, AlertRule

        try:
            rule = AlertRule.model_validate_json(file.read_text())
        except ValidationError as exc:
            raise _invalid(exc) from None
        store, db = _stores(ctx)
        try:
            db.check_rule_place(tenant, rule.location_id, rule.zone)
            changed = AlertBook(store).put_rule(tenant, rule)
            if changed:
                db.tenancy.audit(tenant, "cli", "alerts.rule.put", rule.model_dump())
        except ValueError as exc:  # TenancyError too
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        finally:
            store.close()
        typer.echo(f"alert rule {rule.rule_id} {'saved' if changed else 'unchanged'}")

    @admin_app.command("alerts")
    def alerts(ctx: typer.Context, tenant: Tenant, limit: int = 50) -> None:
        """Alerts raised, newest first, with their delivery attempts (JSON lines)."""
        from revisit.occupancy.alerts import AlertBook

        require_data(ctx)
        store, _db = _stores(ctx)
        try:
            require_tenant(store, tenant)
            for a in AlertBook(store).alerts(tenant, limit):
                typer.echo(json.dumps(a))
        finally:
            store.close()


def _table(out: dict) -> None:
    rows = [m for m in out["minutes"] if not m["zone"]]
    if not rows:
        typer.echo(f"no people counts from {out['from']} to {out['to']}")
        return
    typer.echo(f"{'Location':<16} {'Minute (UTC)':<22} {'People':>7} {'Peak':>6} {'Full %':>7}")
    for m in rows:
        pct = "" if m["occupancy_pct"] is None else f"{m['occupancy_pct']:.1f}"
        typer.echo(f"{m['location_id']:<16} {m['minute']:<22} {m['people']:>7.1f} "
                   f"{m['peak']:>6.1f} {pct:>7}")
