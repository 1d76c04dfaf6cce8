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
        metrics_port: Annotated[
            int | None, typer.Option("--metrics-port", min=1, max=65535,
                                     help="Serve this worker's Prometheus metrics on this "
                                     "port (GET /metrics).")
        ] = None,
        metrics_host: Annotated[
            str, typer.Option("--metrics-host", help="Address for --metrics-port (0.0.0.0: "
                              "every interface, for a scraper on another machine).")
        ] = "127.0.0.1",
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
        if stage in ("resolve", "store") and not settings.store_url.startswith(
                ("postgres://", "postgresql://")):
            typer.echo(f"error: {stage} workers need a shared store: set store_url = "
                       "\"postgresql://...\" (REVISIT_STORE_URL)", err=True)
            raise typer.Exit(2)
        logging.getLogger().setLevel(logging.INFO)
        metrics = None
        if metrics_port is not None:
            from revisit.distributed.metrics import WorkerMetrics

            metrics = WorkerMetrics(stage)
            try:
                metrics.serve(metrics_port, metrics_host)
            except OSError as exc:  # the work matters more than its metrics: say so, go on
                logging.getLogger(__name__).error(
                    "cannot serve metrics on %s:%d (%s); working without them",
                    metrics_host, metrics_port, exc.strerror or exc)
        w = Worker(settings, stage, concurrency, name=name, metrics=metrics)
        signal.signal(signal.SIGTERM, lambda *_: w.stop.set())
        stats = w.run(max_idle_s=exit_when_idle)
        typer.echo(f"{stage} worker: {stats.batches} batches, {stats.frames} frames, "
                   f"{stats.errors} errors, {stats.busy_s:.1f} s busy, {stats.cpu_s:.1f} s CPU")

    @app.command("status")
    def status(
        ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    ) -> None:
        """Distributed mode: per stage queue, batches waiting, in flight and dead-lettered;
        frames stored per tenant; batches parked or skipped by resolve."""
        import json

        from revisit.backends import open_store
        from revisit.distributed.status import PipelineStatus

        settings = state(ctx).settings()
        if not settings.queue_url:
            typer.echo("error: no broker configured (queue_url): in the embedded default "
                       "`revisit serve`'s /readyz shows its queue", err=True)
            raise typer.Exit(2)
        store = open_store(settings)
        status = PipelineStatus(settings, store)
        try:
            out = status.read()
        finally:
            status.close()
            store.close()
        if as_json:
            typer.echo(json.dumps(out))
            return
        typer.echo(f"{'stage':<8} {'waiting':>8} {'in flight':>9} {'dead':>6} {'consumers':>9}")
        for stage, st in out["stages"].items():
            cells = [st.get(k) for k in ("waiting", "in_flight", "dead_letters", "consumers")]
            typer.echo(f"{stage:<8} " + " ".join(
                f"{'-' if v is None else v:>{w}}" for v, w in zip(cells, (8, 9, 6, 9), strict=True)))
        stored = ", ".join(f"{t} {n}" for t, n in out["stored_frames"].items()) or "none"
        typer.echo(f"frames stored: {stored}")
        typer.echo(f"streams with parked batches: {len(out['parked_streams'])}; "
                   f"skipped batches not turned up: {out['skipped_batches']}")
