"""``revisit ingest`` (manifest) and ``revisit ingest-video`` (file or RTSP)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from revisit.cli.context import Tenant, state
from revisit.config import Settings
from revisit.distributed.publish import ingest_frames
from revisit.pipeline import Runtime, Summary, too_small_advice
from revisit.report.durations import parse_duration

EXIT_SKIPPED = 3  # some input was rejected; everything else was stored


def print_summary(summary: Summary, settings: Settings | None = None, *, verbose: bool = False,
                  max_errors: int = 20) -> None:
    """Rejected input, then (with ``-v``) every frame refused with a reason code (past its
    tenant's retention: an archive back-fill may hold many; the summary counts them) and
    every dropped face per frame, then the one-line summary and, when faces were seen but
    none counted, what to change."""
    bad = [r for r in summary.rejected if not r.code]
    for rej in bad[:max_errors]:
        typer.echo(f"skipped {rej.source}: {rej.reason}", err=True)
    if len(bad) > max_errors:
        typer.echo(f"... and {len(bad) - max_errors} more skipped", err=True)
    if verbose:
        coded = [r for r in summary.rejected if r.code]
        for rej in coded[:summary.MAX_LISTED]:
            typer.echo(f"refused {rej.source or rej.image_id}: {rej.reason}", err=True)
        if len(coded) > summary.MAX_LISTED:
            typer.echo(f"... and {len(coded) - summary.MAX_LISTED} more refused", err=True)
        for d in summary.dropped_faces:
            x, y, w, h = d.bbox
            typer.echo(f"dropped face {w}x{h} at ({x},{y}) in {d.source or d.image_id}: "
                       f"{d.reason} ({d.detail})", err=True)
        listed = len(summary.dropped_faces)
        if sum(summary.dropped.values()) > listed:
            typer.echo(f"... and {sum(summary.dropped.values()) - listed} more dropped faces",
                       err=True)
    typer.echo(summary.line())
    advice = too_small_advice(summary, settings) if settings is not None else None
    if advice:
        typer.echo(advice)


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest_manifest(
        ctx: typer.Context,
        manifest: Annotated[Path, typer.Argument(help="JSONL manifest, one snapshot per line.")],
        keep_crops: Annotated[
            bool, typer.Option("--keep-crops", help="Store aligned face crops (off by default).")
        ] = False,
        progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
        wait: Annotated[bool, typer.Option(
            "--wait/--no-wait", help="With a broker: follow the frames until the workers "
            "stored them (default), or only publish them.")] = True,
    ) -> None:
        """Ingest camera snapshots listed in a manifest; re-ingesting is a no-op."""
        from revisit.ingest.manifest import ManifestError, check_manifest, read_manifest

        if not manifest.is_file():
            why = ("is a folder: give the manifest file in it (JSONL, one snapshot a line)"
                   if manifest.is_dir() else "is no regular file" if manifest.exists()
                   else "not found")
            typer.echo(f"error: manifest {manifest} {why}", err=True)
            raise typer.Exit(2)
        try:
            check_manifest(manifest)
        except ManifestError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        overrides = {"privacy": {"keep_crops": True}} if keep_crops else {}
        settings = state(ctx).settings(**overrides)
        runtime = Runtime(settings)
        try:
            summary = ingest_frames(
                runtime, read_manifest(manifest, settings.ingest.window(),
                                       settings.ingest.max_image_bytes),
                progress=progress, total=_count_lines(manifest), wait=wait,
            )
        finally:
            runtime.close()
        print_summary(summary, settings, verbose=state(ctx).verbose)
        if summary.rejected:
            raise typer.Exit(EXIT_SKIPPED)

    @app.command("ingest-video")
    def ingest_video(
        ctx: typer.Context,
        source: Annotated[str, typer.Argument(help="Video file or rtsp:// URL.")],
        camera: Annotated[str, typer.Option("--camera", help="Camera id.")],
        location: Annotated[str, typer.Option("--location", help="Location (store) id.")],
        every: Annotated[str, typer.Option("--every", help="Sampling interval, e.g. 5s.")] = "5s",
        start: Annotated[
            str | None,
            typer.Option("--start", help="Timestamp of the video's first frame (ISO 8601)."),
        ] = None,
        tenant: Tenant = "default",
        keep_crops: Annotated[bool, typer.Option("--keep-crops")] = False,
        max_frames: Annotated[int | None, typer.Option("--max-frames", min=1)] = None,
    ) -> None:
        """Sample one frame every N seconds from a video file (video time) or stream (wall time)."""
        from revisit.ingest.timestamps import parse_ts
        from revisit.ingest.video import VideoError, is_stream, not_a_video_file, sample_video
        from revisit.tenancy.db import TenancyError, check_id

        try:
            for value, what in ((camera, "--camera"), (location, "--location"),
                                (tenant, "--tenant")):
                check_id(value, what)
        except TenancyError as exc:
            raise typer.BadParameter(str(exc)) from None
        try:
            step = parse_duration(every)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--every") from None
        try:
            origin = parse_ts(start) if start else None
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--start") from None
        if step.total_seconds() <= 0:
            raise typer.BadParameter(f"--every {every}: the interval must be more than 0 s")
        if (why := not_a_video_file(source)) is not None:
            typer.echo(f"error: {why}", err=True)
            raise typer.Exit(2)
        overrides = {"privacy": {"keep_crops": True}} if keep_crops else {}
        settings = state(ctx).settings(**overrides)
        if origin is None and not is_stream(source):
            origin = datetime.fromtimestamp(Path(source).stat().st_mtime).astimezone()
            typer.echo(f"no --start given: using the file's time {origin.isoformat()}", err=True)
        if origin is not None and (why := settings.ingest.window().reason(origin)):
            raise typer.BadParameter(f"--start: {why}")
        runtime = Runtime(settings)
        at = runtime.store.camera_location(tenant, camera)
        if at is not None and at != location:
            runtime.close()
            raise typer.BadParameter(f"camera {camera!r} is at location {at!r} in this data "
                                     "(a camera has one location): give that location or "
                                     "another camera id")
        try:
            frames = sample_video(
                source, camera_id=camera, location_id=location, every=step, start=origin,
                tenant=tenant, max_frames=max_frames, max_pixels=settings.ingest.max_pixels,
            )
            summary = ingest_frames(runtime, frames, progress=True)
        except VideoError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        finally:
            runtime.close()
        print_summary(summary, settings, verbose=state(ctx).verbose)
        if summary.rejected:
            raise typer.Exit(EXIT_SKIPPED)
