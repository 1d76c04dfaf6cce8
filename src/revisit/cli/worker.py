"""``revisit worker --stage detect|embed|resolve|store``: one stage of the distributed mode."""

from __future__ import annotations

import logging
import signal
from typing import Annotated

import typer

from revisit.cli.context import state


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        ctx: typer.Context,
        stage: Annotated[str, typer.Option("--stage", help="detect, embed, resolve or store.")],
        concurrency: Annotated[
            int, typer.Option("--concurrency", "-c", min=1, max=256,
                              help="Threads consuming this stage's queue in this process.")
        ] = 1,
        name: Annotated[
            str | None, typer.Option("--name", help="Consumer name (default: unique per "
                                     "process; a fixed name takes back its own unacked work).")
        ] = None,
        exit_when_idle: Annotated[
            float | None, typer.Option("--exit-when-idle", help="Stop after this many seconds "
                                       "without work (batch jobs, benchmarks).")
        ] = None,
    ) -> None:
        """Consume one stage's queue and feed the next (needs queue_url and, for resolve,
        a PostgreSQL store_url). Run any number of each stage, on any machine."""
        from revisit.distributed.topology import STAGES
        from revisit.distributed.worker import Worker

        if stage not in STAGES:
            typer.echo(f"error: --stage must be one of {', '.join(STAGES)}", err=True)
            raise typer.Exit(2)
        settings = state(ctx).settings()
        if not settings.queue_url:
            typer.echo("error: workers need a broker: set queue_url (REVISIT_QUEUE_URL)", err=True)
            raise typer.Exit(2)
        logging.getLogger().setLevel(logging.INFO)
        w = Worker(settings, stage, concurrency, name=name)
        signal.signal(signal.SIGTERM, lambda *_: w.stop.set())
        stats = w.run(max_idle_s=exit_when_idle)
        typer.echo(f"{stage} worker: {stats.batches} batches, {stats.frames} frames, "
                   f"{stats.errors} errors, {stats.busy_s:.1f} s busy, {stats.cpu_s:.1f} s CPU")
