"""The ``revisit`` command: global options, then one module per command group."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from revisit.cli import context, ingest, report
from revisit.config import ConfigError

app = typer.Typer(
    name="revisit",
    help="Unique customer visits from periodic CCTV snapshots.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    data: Annotated[
        Path | None,
        typer.Option("--data", envvar="REVISIT_DATA", help="Data directory (default ./revisit-data)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="REVISIT_CONFIG", help="TOML settings file."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = context.CliState(data=data, config=config, verbose=verbose)


def _register_all() -> None:
    ingest.register(app)
    report.register(app)
    for name in ("demo", "simulate", "evaluate", "visitors", "serve", "admin", "agent", "worker",
                 "occupancy", "known"):
        try:
            module = __import__(f"revisit.cli.{name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"revisit.cli.{name}":
                raise
            continue
        module.register(app)


_register_all()


def run() -> None:
    """Entry point that turns configuration errors, an unavailable store and registry
    errors (an unknown tenant, location or camera) into a readable message and exit
    code 2."""
    from revisit.backends import unavailable_errors
    from revisit.tenancy.db import TenancyError

    try:
        app()
    except (ConfigError, TenancyError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except unavailable_errors() as exc:
        text = _kafka_text(exc) or str(exc).strip() or type(exc).__name__
        if type(exc).__module__.startswith(("psycopg", "redis", "cimpl", "confluent_kafka")):
            # theirs: the gist only
            text = f"{type(exc).__name__}: {text.splitlines()[0]} (is the service running? "\
                   "bash scripts/services.sh starts them here)"
        typer.echo(f"error: {text}", err=True)
        raise SystemExit(2) from None


def _kafka_text(exc: BaseException) -> str:
    """A KafkaException's reason (its str is ``KafkaError{code=...,str="..."}``)."""
    err = exc.args[0] if exc.args else None
    reason = getattr(err, "str", None)
    if not callable(reason):
        return ""
    try:
        return str(reason())
    except Exception:  # a message: at worst the plain one
        return ""
