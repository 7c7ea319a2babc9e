"""What every service command needs: settings from the environment plus options, and the model and
gallery opened with setup errors turned into clean CLI errors (exit 2, a message, no traceback)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_from(**overrides: Any) -> Any:
    """Settings from REID_* environment variables, with command-line options on top."""
    from pydantic import ValidationError

    from reid.service.settings import RenamedSetting, Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except RenamedSetting as e:
        raise typer.BadParameter(str(e)) from e
    except ValidationError as e:  # name the environment variable, not the pydantic field
        problems = "; ".join(f"REID_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']} "
                             f"(got {err.get('input')!r})" for err in e.errors())
        raise typer.BadParameter(problems) from e


def load_embedder(settings: Any) -> Any:
    from reid.service.embedder import Embedder, ModelError

    try:
        return Embedder(settings)
    except ModelError as e:
        fail(str(e))


def open_gallery(settings: Any, background: bool = False) -> tuple[Any, Any]:
    """(embedder, gallery) for ``settings``; the caller closes both."""
    from reid.service.gallery import DataDirBusy, Gallery, ModelMismatch
    from reid.service.index_milvus import MilvusUnavailable

    embedder = load_embedder(settings)
    try:
        return embedder, Gallery(settings, embedder, background=background)
    except (ModelMismatch, DataDirBusy, MilvusUnavailable) as e:
        embedder.close()
        fail(str(e))


def check_model(settings: Any) -> None:
    """Refuse to serve a gallery built with another model, or one being re-embedded, before the
    server starts (the same check the gallery makes, with the command that fixes it)."""
    from reid.service.embedder import ModelError, file_digest, resolve_model
    from reid.service.gallery import DB_NAME, DataDirBusy, lock_data_dir
    from reid.service.index_milvus import MilvusIndex, MilvusUnavailable
    from reid.service.store import Store

    try:
        lock_data_dir(Path(settings.data_dir), exclusive=False).close()
        image, video = resolve_model(settings.model)
        if settings.index.backend == "milvus" and settings.milvus.uri:  # a server: reachable?
            MilvusIndex(1, settings.milvus.uri).close()
    except (DataDirBusy, ModelError, MilvusUnavailable) as e:
        fail(str(e))
    db = Path(settings.data_dir) / DB_NAME
    if not db.is_file():
        return
    store = Store(db, settings.sqlite_synchronous)
    try:
        stored, n = store.get_meta("model_id"), store.count()
        if stored and n and stored != file_digest(image, video):
            fail(f"the gallery in {settings.data_dir} holds {n} vectors from model "
                 f"{store.get_meta('model_desc') or stored}, not from {settings.model}. Vectors of two models "
                 f"cannot be mixed: run `reid reindex --model {settings.model} --data-dir {settings.data_dir}` "
                 "to re-embed the stored crops, or serve the original model.")
    finally:
        store.close()
