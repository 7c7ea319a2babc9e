"""The service's `reid` commands, one small module each: a typer wrapper (options, printing, exit
codes) around a plain function that tests can call. Heavy imports happen inside the commands."""

from __future__ import annotations

import typer

from reid.service.commands import delete, detector, index, query, reindex, serve, worker


def register(app: typer.Typer) -> None:
    app.command("serve")(serve.serve_command)
    app.command("index")(index.index_command)
    app.command("query")(query.query_command)
    app.command("delete")(delete.delete_command)
    app.command("reindex")(reindex.reindex_command)
    app.command("worker")(worker.worker_command)
    app.command("fetch-detector")(detector.fetch_detector_command)
