"""``revisit report`` (unique visitors) and ``revisit sightings`` (audit export)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from revisit.cli.context import (
    ReportZone,
    Tenant,
    open_data_store,
    parse_day,
    require_tenant,
    split_list,
)
from revisit.report.durations import format_duration, parse_duration
from revisit.report.query import ReportQuery, SightingQuery
from revisit.visits import DEFAULT_VISIT_GAP


def _writable(path: Path | None) -> None:
    """Refuse an --output that cannot be written before any work is done."""
    if path is None:
        return
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a folder: give a file name", param_hint="--output")
    folder = path.parent
    if not folder.is_dir():
        raise typer.BadParameter(f"folder {folder} does not exist", param_hint="--output")
    if not os.access(folder, os.W_OK):
        raise typer.BadParameter(f"folder {folder} is not writable", param_hint="--output")


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    """Write to a temporary file and rename at the end, so a killed or failed run leaves
    no half file (and no temporary one)."""
    if path is None:
        yield sys.stdout
        return
    tmp = path.with_name(path.name + ".part")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            yield fh
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        ctx: typer.Context,
        from_: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD), inclusive.")],
        to: Annotated[str, typer.Option("--to", help="Last day (YYYY-MM-DD), inclusive.")],
        locations: Annotated[str | None, typer.Option(help="Location ids, comma separated.")] = None,
        cameras: Annotated[str | None, typer.Option(help="Camera ids, comma separated.")] = None,
        visit_gap: Annotated[
            str, typer.Option("--visit-gap", help="Longest gap inside one visit (0: every sighting).")
        ] = format_duration(DEFAULT_VISIT_GAP),
        fmt: Annotated[str, typer.Option(
            "--format", help="table, csv, json or parquet (parquet needs --output).")] = "table",
        output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write.")] = None,
        tenant: Tenant = "default",
        group: Annotated[str | None, typer.Option(
            "--group", help="A camera group of the tenant (admin set-group): its cameras, "
            "named in the header.")] = None,
        timezone: ReportZone = "UTC",
    ) -> None:
        """Unique visitors in a time range, with visits per location."""
        from revisit.report import formats

        if fmt not in {"table", "csv", "json", "parquet"}:
            raise typer.BadParameter(f"{fmt!r} is not one of table, csv, json, parquet",
                                     param_hint="--format")
        if fmt == "parquet" and output is None:
            raise typer.BadParameter("parquet is written to a file: give --output FILE",
                                     param_hint="--format")
        _writable(output)
        query = _query(from_, to, tenant, locations, cameras, visit_gap, group, timezone)
        store = open_data_store(ctx)
        try:
            tenancy, query = _filtered(store, query)
            header, rows = store.report(query)
            if fmt == "parquet":
                n = formats.write_report_parquet(rows, output,
                                                 names=tenancy.location_names(tenant))
                typer.echo(f"{n} visitors written to {output}", err=True)
                return
            with _output(output) as out:
                formats.write_report(fmt, header, rows, out,
                                     names=tenancy.location_names(tenant))
        finally:
            store.close()

    @app.command("analytics")
    def analytics(
        ctx: typer.Context,
        from_: Annotated[str, typer.Option("--from", help="First day (YYYY-MM-DD), inclusive.")],
        to: Annotated[str, typer.Option("--to", help="Last day (YYYY-MM-DD), inclusive.")],
        locations: Annotated[str | None, typer.Option(help="Location ids, comma separated.")] = None,
        cameras: Annotated[str | None, typer.Option(help="Camera ids, comma separated.")] = None,
        group: Annotated[str | None, typer.Option("--group", help="A camera group.")] = None,
        visit_gap: Annotated[str, typer.Option("--visit-gap")] = format_duration(DEFAULT_VISIT_GAP),
        interval: Annotated[str, typer.Option(
            "--interval", help="The cameras' snapshot interval, added to each visit's "
            "duration.")] = "15s",
        fmt: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
        tenant: Tenant = "default",
        timezone: ReportZone = "UTC",
    ) -> None:
        """New and returning visitors, visit durations per store, when visits happen."""
        import json

        from revisit.store import summary as summary_sql

        if fmt not in {"table", "json", "csv"}:
            raise typer.BadParameter(f"{fmt!r} is not one of table, json, csv",
                                     param_hint="--format")
        query = _query(from_, to, tenant, locations, cameras, visit_gap, group, timezone)
        try:
            step = parse_duration(interval)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--interval") from None
        store = open_data_store(ctx)
        try:
            tenancy, query = _filtered(store, query)
            with store.read() as con, summary_sql.sessionised(con, query):  # type: ignore[attr-defined]
                out = summary_sql.summary(con, query, step)
                out["flows"] = summary_sql.flows(con, query)
                # the API's top ten; the table shows the first three of each store
                out["camera_paths"] = summary_sql.camera_paths(con, query)
            names = tenancy.location_names(tenant)
        finally:
            store.close()
        if fmt == "json":
            typer.echo(json.dumps(out))
            return
        if fmt == "csv":
            from revisit.report import formats

            formats.write_analytics_csv(out, sys.stdout, names)
            return
        _print_analytics(out, names)

    @app.command("sightings")
    def sightings(
        ctx: typer.Context,
        from_: Annotated[str | None, typer.Option("--from", help="First day, inclusive.")] = None,
        to: Annotated[str | None, typer.Option("--to", help="Last day, inclusive.")] = None,
        locations: Annotated[str | None, typer.Option(help="Location ids, comma separated.")] = None,
        cameras: Annotated[str | None, typer.Option(help="Camera ids, comma separated.")] = None,
        fmt: Annotated[str, typer.Option(
            "--format", help="csv, jsonl or parquet (parquet needs --output).")] = "csv",
        output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
        tenant: Tenant = "default",
        timezone: ReportZone = "UTC",
    ) -> None:
        """Every sighting (one row per face assigned to a visitor), for audits."""
        from revisit.report import formats

        if fmt not in {"csv", "jsonl", "parquet"}:
            raise typer.BadParameter(f"{fmt!r} is not one of csv, jsonl, parquet",
                                     param_hint="--format")
        if fmt == "parquet" and output is None:
            raise typer.BadParameter("parquet is written to a file: give --output FILE",
                                     param_hint="--format")
        _writable(output)
        try:
            query = SightingQuery(
                start=parse_day(from_, "--from") if from_ else None,
                end=parse_day(to, "--to") if to else None,
                tenant=tenant, locations=split_list(locations), cameras=split_list(cameras),
                timezone=timezone,
            )
        except ValueError as exc:  # a day out of range, --to before --from, an unknown zone
            raise typer.BadParameter(str(exc)) from None
        store = open_data_store(ctx)
        try:
            _places(store, tenant, query.locations, query.cameras)
            if fmt == "parquet":
                n = formats.write_sightings_parquet(store.sightings(query), output)
                typer.echo(f"{n} sightings written to {output}", err=True)
                return
            with _output(output) as out:
                formats.write_sightings(fmt, store.sightings(query), out)
        finally:
            store.close()


def _query(from_: str, to: str, tenant: str, locations: str | None, cameras: str | None,
           visit_gap: str, group: str | None, timezone: str = "UTC") -> ReportQuery:
    try:
        return ReportQuery(
            start=parse_day(from_, "--from"), end=parse_day(to, "--to"), tenant=tenant,
            locations=split_list(locations), cameras=split_list(cameras),
            visit_gap=parse_duration(visit_gap), camera_group=group or "", timezone=timezone,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _places(store: Any, tenant: str, locations: tuple[str, ...], cameras: tuple[str, ...],
            group: str = "") -> tuple[Any, tuple[str, ...]]:
    """(the tenancy, the cameras to filter on: ``cameras`` plus the group's); exits naming
    an unknown tenant, location, camera or group."""
    from revisit.tenancy.db import Tenancy, TenancyError

    require_tenant(store, tenant)
    tenancy = Tenancy(store)
    try:
        return tenancy, tenancy.report_filter(tenant, locations, cameras, group)
    except TenancyError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _filtered(store: Any, query: ReportQuery) -> tuple[Any, ReportQuery]:
    """(the tenancy, the query with its group's cameras); exits naming an unknown place."""
    from dataclasses import replace

    tenancy, cams = _places(store, query.tenant, query.locations, query.cameras,
                            query.camera_group)
    return tenancy, replace(query, cameras=cams)


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, sec = divmod(round(seconds), 60)
    return f"{m}m{sec:02d}s"


def _print_analytics(out: dict, names: dict[str, str]) -> None:
    t = out["totals"]
    lines = [
        f"Time Period:  {out['period']['from']} to {out['period']['to']}",
        f"Camera Group: {out['filter']}",
        f"Unique visitors {t['unique_visitors']}: new {t['new_visitors']}, previously seen "
        f"{t['previously_seen']}; returning {t['returning_visitors']} "
        f"({t['returning_share']:.1%}); repeat (2+ visits) {t['repeat_visitors']} "
        f"({t['repeat_share']:.1%}); visits {t['visits']}",
        "",
        f"Visit duration (first to last sighting + {out['dwell']['interval_s']:g} s)",
    ]
    labels = list(out["dwell"]["all"]["buckets"])
    rows = [(names.get(x["location_id"], x["location_id"]), x)
            for x in out["dwell"]["locations"]] + [("All stores", out["dwell"]["all"])]
    width = max(len(n) for n, _ in rows)
    lines.append(f"{'Store':<{width}}  {'Visits':>6}  {'Median':>8}  "
                 + "  ".join(f"{lb:>6}" for lb in labels))
    for name, x in rows:
        lines.append(f"{name:<{width}}  {x['visits']:>6}  {_minutes(x['median_s']):>8}  "
                     + "  ".join(f"{x['buckets'][lb]:>6}" for lb in labels))
    aff = out["flows"]["affinity"]
    if aff:
        lines += ["", "Store affinity (of the visitors of A, who also visited B)"]
        for a in sorted(aff, key=lambda x: (-x["share"], x["from"], x["to"]))[:20]:
            lines.append(f"  {names.get(a['from'], a['from'])} -> {names.get(a['to'], a['to'])}: "
                         f"{a['visitors']} ({a['share']:.0%})")
    for store in out["camera_paths"]:
        top = "; ".join(f"{' > '.join(p['path'])} ({p['visits']})" for p in store["paths"][:3])
        lines.append(f"Paths at {names.get(store['location_id'], store['location_id'])}: {top}")
    hours = ", ".join(f"{h['hour']:02d}h {h['visits']}" for h in out["by_hour"] if h["visits"])
    lines += ["", "Visits by hour (UTC): " + (hours or "none"),
        "Visits by weekday:    " + ", ".join(
        f"{d['day']} {d['visits']}" for d in out["by_weekday"])]
    typer.echo("\n".join(lines))
