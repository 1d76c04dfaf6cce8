"""``revisit serve``: the HTTP service (camera batches, reports, dashboard) in one process."""

from __future__ import annotations

from typing import Annotated

import typer

from revisit.cli.context import state

HEAD_LIMIT = 256 * 1024  # bytes of request line + headers uvicorn reads


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        ctx: typer.Context,
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
        log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    ) -> None:
        """Run the API, dashboard and background processing (docs at /docs)."""
        import uvicorn

        from revisit.api.app import create_app

        settings = state(ctx).settings()
        app = create_app(settings)
        typer.echo(f"revisit serving {settings.data} on http://{host}:{port} (docs: /docs)")
        # request line + headers up to 256 KiB (h11's default, 16 KiB, drops a long
        # filter list without an answer; past this one the connection is closed)
        uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1,
                    h11_max_incomplete_event_size=HEAD_LIMIT)
