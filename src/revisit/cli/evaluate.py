"""``revisit eval``: score what the pipeline stored against a scenario's ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from revisit.cli.context import state


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def evaluate(
        ctx: typer.Context,
        truth: Annotated[
            Path | None, typer.Option(help="truth.json written by `revisit simulate`.",
                                      exists=True, dir_okay=False)
        ] = None,
        footage: Annotated[
            Path | None, typer.Option(
                help="By-eye labels of a real clip (tests/evaluation/footage/*.json): ingest the "
                "clip into a fresh data directory with the current settings and score it.",
                exists=True, dir_okay=False)
        ] = None,
        every: Annotated[
            str, typer.Option("--every", help="With --footage: sampling interval, e.g. 1s, 0.5s.")
        ] = "1s",
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
        data: Annotated[
            Path | None, typer.Option("--data", help="Data directory (overrides the global one).")
        ] = None,
        reference: Annotated[
            bool, typer.Option(help="Also cluster the stored embeddings offline as a reference.")
        ] = True,
        top: Annotated[int, typer.Option(min=0, max=1000, help="Worst cases listed.")] = 10,
    ) -> None:
        """Score the stored sightings against a simulated scenario's truth.

        Detection, unique-visitor error, BCubed/pairwise, exact visit counts, worst cases.

        Printed beside an offline clustering of the same embeddings (best threshold).
        """
        if (truth is None) == (footage is None):
            typer.echo("error: give either --truth (a simulated scenario) or --footage (labels "
                       "of a real clip)", err=True)
            raise typer.Exit(2)
        if footage is not None:
            _footage(ctx, footage, every, data, as_json)
            return
        assert truth is not None
        from revisit.evaluation.evaluate import evaluate_store, format_table
        from revisit.evaluation.truth import TruthError, load_truth

        settings = state(ctx).settings(**({"data": data} if data is not None else {}))
        try:
            t = load_truth(truth)
        except TruthError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        if not settings.store_url:
            if not settings.db_path.exists():
                typer.echo(f"error: no store at {settings.db_path} (ingest first, or --data DIR)",
                           err=True)
                raise typer.Exit(2)
            from revisit.store.duckdb_store import DuckDBStore

            store = DuckDBStore(settings.db_path, read_only=True)
        else:
            from revisit.backends import open_store

            store = open_store(settings)
        try:
            result = evaluate_store(store, t, reference=reference, top=top)
        finally:
            store.close()
        result["truth"] = str(truth)
        if as_json:
            typer.echo(json.dumps(result, indent=2, default=str))
        else:
            typer.echo(format_table(result, t.identities))


def _footage(ctx: typer.Context, labels_path: Path, every: str, data: Path | None,
             as_json: bool) -> None:
    """``revisit eval --footage``: ingest a labelled real clip and score it."""
    import tempfile

    from revisit.evaluation.footage import LabelError, load_labels, run_clip
    from revisit.ingest.video import VideoError
    from revisit.report.durations import parse_duration
    from revisit.simulate.scenario import shared_data_dir

    try:
        step = parse_duration(every).total_seconds()
        labels = load_labels(labels_path)
    except (ValueError, LabelError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if step <= 0:
        typer.echo("error: --every must be positive", err=True)
        raise typer.Exit(2)
    with tempfile.TemporaryDirectory(prefix="revisit-eval-") as tmp:
        settings = state(ctx).settings(data=data or Path(tmp))
        try:
            score = run_clip(labels, step, settings, shared_data_dir())
        except (LabelError, VideoError) as exc:  # VideoError: a clip that is no video
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(score.as_dict(), indent=2, default=str))
        return
    typer.echo(score.line())
    for vid, v in score.visitors.items():
        people = ", ".join(v["people"]) or "nobody"
        typer.echo(f"  {vid}: {people}  {v['sightings']}")
    if score.missed:
        typer.echo(f"  missed: {', '.join(score.missed)}")
