"""``revisit serve``: the HTTP service (camera batches, reports, dashboard): the server
process, its model process and, in front, the accept process (:mod:`revisit.api.door`)."""

from __future__ import annotations

import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from revisit.cli.context import state


class LogLevel(StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"
    trace = "trace"


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        ctx: typer.Context,
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8080,
        log_level: Annotated[LogLevel, typer.Option(help="uvicorn log level.")] = LogLevel.info,
    ) -> None:
        """Run the API, dashboard and background processing (docs at /docs)."""
        import uvicorn

        from revisit.api.app import create_app
        from revisit.api.errors import HEAD_LIMIT
        from revisit.api.settings import load_service_settings
        from revisit.cli.remote import announced, hold_data, holder, new_token
        from revisit.config import ConfigError

        settings = state(ctx).settings()
        try:
            service = load_service_settings()
        except ConfigError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        # embedded mode: one server per data directory (with a broker, replicas share one)
        if not settings.queue_url and not hold_data(settings.data):
            typer.echo(f"error: another revisit serve{holder(settings.data)} already serves "
                       f"{settings.data}; stop it first, or give this one its own --data",
                       err=True)
            raise typer.Exit(1)
        token = service.operator_token or new_token()
        service = service.model_copy(update={"operator_token": token})
        door, listen = None, {"host": host, "port": port}
        if service.accept_process and not settings.queue_url:
            from revisit.api.door import DoorProcess, remove_socket, server_socket

            # the server process answers only the accept process, over a socket only this
            # user can reach
            sock = server_socket(settings)
            try:
                door = DoorProcess(settings, service, host, port, sock, log_level.value)
            except OSError as exc:  # the port is in use (or not this machine's)
                remove_socket(settings, sock, bound=False)
                typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}",
                           err=True)
                raise typer.Exit(1) from None
            listen = {"uds": str(sock), "access_log": False}  # the door logs each request
        app = create_app(settings, service_settings=service, door=door)
        typer.echo(f"revisit serving {settings.data} on http://{host}:{port} (docs: /docs)"
                   + (" with an accept process" if door is not None else ""))
        # serve.json: `revisit admin` on this machine goes through this server meanwhile
        # uvicorn stops gracefully on SIGTERM, then raises the signal again with the
        # handler it found: make that an exit, so serve.json is removed on the way out
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            with announced(settings.data, host, port, token):
                # request line + headers up to 256 KiB under h11 (its default, 16 KiB, drops
                # a long filter list without an answer); under httptools the app's HeadLimit
                uvicorn.run(app, **listen, log_level=log_level.value, workers=1,
                            h11_max_incomplete_event_size=HEAD_LIMIT)
        finally:
            if "uds" in listen:
                from revisit.api.door import remove_socket

                remove_socket(settings, Path(str(listen["uds"])))
