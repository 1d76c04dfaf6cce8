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
            Path, typer.Option(help="truth.json written by `revisit simulate`.", exists=True,
                               dir_okay=False)
        ],
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
        from revisit.evaluation.evaluate import evaluate_store, format_table
        from revisit.evaluation.truth import load_truth

        settings = state(ctx).settings(**({"data": data} if data is not None else {}))
        t = load_truth(truth)
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
