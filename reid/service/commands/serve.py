"""`reid serve`: the REST API and web page under uvicorn."""

from __future__ import annotations

from pathlib import Path

import typer

from reid.service.commands.common import check_model, settings_from


def serve_command(
    host: str = typer.Option(None, help="bind address (REID_HOST, default 127.0.0.1)"),
    port: int = typer.Option(None, help="port (REID_PORT, default 8000)"),
    model: Path = typer.Option(None, help="model dir or .onnx (REID_MODEL, default: the shipped model)"),
    data_dir: Path = typer.Option(None, help="data directory (REID_DATA_DIR, default ./data)"),
) -> None:
    """Start the search service (REST API, OpenAPI at /docs)."""
    import uvicorn

    from reid.service.app import create_app
    from reid.service.logging import configure_logging

    settings = settings_from(host=host, port=port, model=model, data_dir=data_dir)
    check_model(settings)
    configure_logging(settings.log_level, settings.log_json)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                timeout_keep_alive=int(settings.keep_alive_s), timeout_graceful_shutdown=10)
