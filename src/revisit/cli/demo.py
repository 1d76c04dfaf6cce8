"""``revisit demo``: a small multi-store scene set from real face photos, end to end.

Builds camera frames with known truth (faces pasted into real CCTV backgrounds), ingests
them through the full pipeline, prints the report and true vs found unique visitors.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from revisit.cli.context import state


def default_faces_dir() -> Path | None:
    from revisit.simulate.scenario import shared_data_dir

    candidate = shared_data_dir() / "lfw-dev"
    return candidate if candidate.is_dir() else None


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        ctx: typer.Context,
        faces: Annotated[
            Path | None,
            typer.Option(help="Folder of face photos, one sub-folder per person "
                         "(default ../shared/data/lfw-dev)."),
        ] = None,
        stores: Annotated[int, typer.Option(min=1, max=50)] = 3,
        cameras_per_store: Annotated[int, typer.Option("--cameras-per-store", min=1, max=8)] = 2,
        days: Annotated[int, typer.Option(min=1, max=60)] = 5,
        visitors: Annotated[int, typer.Option(min=2, max=2000)] = 40,
        seed: Annotated[int, typer.Option()] = 1,
    ) -> None:
        """Simulate a few stores from real faces, ingest them, print the report."""
        from revisit.cli.ingest import print_summary
        from revisit.distributed.publish import ingest_frames
        from revisit.pipeline import Runtime
        from revisit.report import formats
        from revisit.report.query import ReportQuery
        from revisit.simulate.scenario import ScenarioSpec, build_scenario

        faces = faces or default_faces_dir()
        if faces is None or not faces.is_dir():
            typer.echo(
                "error: no face photos found. Pass --faces DIR (one sub-folder of photos per "
                "person), e.g. --faces ../shared/data/lfw-dev",
                err=True,
            )
            raise typer.Exit(2)
        settings = state(ctx).settings()
        out = settings.data / "demo-scenario"
        spec = ScenarioSpec(  # the last days: fixed dates would fall past the retention
            stores=stores, cameras_per_store=cameras_per_store, days=days, visitors=visitors,
            seed=seed, start=datetime.now(UTC).date() - timedelta(days=days),
        )
        typer.echo(f"building {stores} stores x {cameras_per_store} cameras, {days} days, "
                   f"{visitors} visitors from {faces} ...", err=True)
        try:  # as `revisit simulate`: a folder without usable photos is one line, exit 2
            scenario = build_scenario(faces, out, spec)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"scene set: {scenario.frames} frames, {scenario.faces} faces "
                   f"({scenario.seconds:.1f} s) in {out}", err=True)
        from revisit.ingest.manifest import read_manifest

        runtime = Runtime(settings)
        try:
            summary = ingest_frames(
                runtime, read_manifest(scenario.manifest), progress=sys.stderr.isatty(),
                total=scenario.frames,
            )
            print_summary(summary, settings)
            query = ReportQuery(start=spec.start, end=spec.start + timedelta(days=days - 1))
            header = runtime.store.report_header(query)
            formats.write_report("table", header, runtime.store.report_rows(query), sys.stdout)
        finally:
            runtime.close()
        true_visits = scenario.visits
        typer.echo("")
        typer.echo(
            f"true unique visitors: {scenario.visitors}   found: {header.unique_visitors}   "
            f"(error {100.0 * (header.unique_visitors - scenario.visitors) / scenario.visitors:+.1f} %)"
        )
        typer.echo(f"true visits: {true_visits}   found: {header.total_visits}")
        typer.echo(f"evaluate in depth: revisit --data {settings.data} eval --truth {scenario.truth}")
