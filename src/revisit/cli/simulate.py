"""``revisit simulate``: build a multi-store CCTV scenario with ground truth from face photos."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from revisit.cli.context import parse_day
from revisit.visits import DEFAULT_VISIT_GAP


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate(
        faces: Annotated[
            Path, typer.Option(help="Face photos, one sub-folder per person (e.g. lfw-dev).",
                               exists=True, file_okay=False)
        ],
        out: Annotated[Path, typer.Option(help="Output folder (frames, manifest.jsonl, truth.json).")],
        stores: Annotated[int, typer.Option(min=1, max=10000)] = 20,
        cameras_per_store: Annotated[int, typer.Option("--cameras-per-store", min=1, max=64)] = 3,
        days: Annotated[int, typer.Option(min=1, max=3650)] = 30,
        visitors: Annotated[int, typer.Option(min=1)] = 500,
        seed: Annotated[int, typer.Option()] = 1,
        start: Annotated[str | None, typer.Option(
            help="First day, YYYY-MM-DD (default: DAYS days ago, so that the frames are "
            "within a tenant's retention when ingested).")] = None,
        interval: Annotated[
            int, typer.Option("--interval", min=1, max=3600, help="Seconds between snapshots.")
        ] = 15,
        visit_gap: Annotated[
            int, typer.Option("--visit-gap", min=0, help="Visit gap in minutes (truth visits).")
        ] = int(DEFAULT_VISIT_GAP.total_seconds() // 60),
        tenant: Annotated[str | None, typer.Option(help="Tenant written to the manifest.")] = None,
        backgrounds: Annotated[
            Path | None, typer.Option(help="Folder of CCTV frames (default shared mall frames).")
        ] = None,
        workers: Annotated[int, typer.Option(min=1, max=64, help="Rendering processes.")] = 2,
        hard: Annotated[
            bool, typer.Option("--hard", help="Add what real cameras add: faces of 24-80 px, head "
                               "tilt and turn, mirrored pose, motion blur, lower-face occlusion, "
                               "dim frames, sensor noise, heavy JPEG.")
        ] = False,
    ) -> None:
        """Build camera snapshots with known truth: real faces pasted into CCTV frames.

        Writes frames, manifest.jsonl (for `revisit ingest`), truth.json (`revisit eval`).
        """
        from revisit.simulate.scenario import HARD_FACE_HEIGHT, ScenarioSpec, build_scenario

        try:
            spec = ScenarioSpec(
                hard=hard, **({"face_height": HARD_FACE_HEIGHT} if hard else {}),
                stores=stores, cameras_per_store=cameras_per_store, days=days,
                visitors=visitors, seed=seed,
                start=(parse_day(start, "--start") if start is not None
                       else datetime.now(UTC).date() - timedelta(days=days)),
                snapshot_interval_s=interval, visit_gap_min=visit_gap, tenant=tenant,
                backgrounds=backgrounds, workers=workers,
            )
            summary = build_scenario(faces, out, spec)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            f"{summary.frames} frames, {summary.faces} faces, {summary.visitors} visitors, "
            f"{summary.visits} visits in {summary.seconds:.1f} s"
        )
        typer.echo(f"manifest: {summary.manifest}")
        typer.echo(f"truth:    {summary.truth}")
