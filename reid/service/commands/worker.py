"""`reid worker`: footage jobs outside the API process (Redis queue, or the data dir's job table)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from reid.service.commands.common import fail, settings_from


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def worker_command(
    check: bool = typer.Option(False, "--check", help="exit 0 if the queue and the model are usable, else 1"),
    model: Path = typer.Option(None, help="model dir or .onnx (REID_MODEL); must match the API's"),
    data_dir: Path = typer.Option(None, help="data directory shared with the API (REID_DATA_DIR)"),
) -> None:
    """Process footage jobs from the Redis queue (REID_QUEUE=redis, REID_REDIS_URL); the API
    applies the results, so any number of workers can run (docs/deploy.md). With the embedded
    queue, take jobs from the data dir's job table and write the gallery directly
    (run the API with REID_JOB_WORKERS=0; docs/footage.md)."""
    from reid.service.embedder import ModelError, resolve_model
    from reid.service.logging import configure_logging

    settings = settings_from(model=model, data_dir=data_dir)
    if settings.queue == "redis":
        from reid.jobs.redis_queue import QueueUnavailable
        from reid.service.footage_jobs import check_redis_worker, run_redis_worker

        problems = check_redis_worker(settings) if check else []
    else:
        try:
            resolve_model(settings.model)
            problems = []
        except ModelError as e:
            problems = [str(e)]
    if check:
        for p in problems:
            typer.echo(f"unhealthy: {p}", err=True)
        raise typer.Exit(1 if problems else 0)
    if problems:
        fail(problems[0])
    configure_logging(settings.log_level, settings.log_json)
    stop = _stop_on_signals()
    if settings.queue != "redis":
        from reid.service.footage_jobs import run_embedded_worker

        run_embedded_worker(settings, stop=stop)
        return
    try:
        run_redis_worker(settings, stop=stop)
    except (QueueUnavailable, ModelError) as e:
        fail(str(e))
