"""`reid reindex`: re-embed every stored item with the current model."""

from __future__ import annotations

from pathlib import Path

import typer

from reid.service.commands.common import fail, load_embedder, settings_from


def reindex_command(
    model: Path = typer.Option(None, help="the new model dir or .onnx (REID_MODEL)"),
    data_dir: Path = typer.Option(None, help="data directory (REID_DATA_DIR)"),
) -> None:
    """Re-embed every stored item from its kept crops with the current model (refused while a server,
    indexer or worker has the data dir open)."""
    from rich.progress import Progress

    from reid.service.gallery import reindex

    settings = settings_from(model=model, data_dir=data_dir)
    embedder = load_embedder(settings)
    try:
        with Progress() as bar:
            task = bar.add_task("re-embedding", total=None)
            n = reindex(settings, embedder, progress=lambda d, t: bar.update(task, completed=d, total=t))
    except RuntimeError as e:
        fail(str(e), 1)
    finally:
        embedder.close()
    typer.echo(f"re-embedded {n} items with {embedder.info.describe()}")
