"""``revisit serve``: the HTTP service (camera batches, reports, dashboard) in one process."""

from __future__ import annotations

from typing import Annotated

import typer

from revisit.cli.context import state


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
        uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)
