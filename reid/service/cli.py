"""Service commands: serve, index, query, reindex. Heavy imports happen inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _settings(**overrides: Any):
    """Settings from REID_* environment variables, with command-line options on top."""
    from pydantic import ValidationError

    from reid.service.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        raise typer.BadParameter(str(e)) from e


def _load_embedder(settings):
    """Load the model, turning a model error into a clean CLI error."""
    from reid.service.embedder import Embedder, ModelError

    try:
        return Embedder(settings)
    except ModelError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e


def _open(settings, background: bool = False):
    """Load the model and open the gallery, turning setup errors into clean CLI errors."""
    from reid.service.gallery import DataDirBusy, Gallery, ModelMismatch

    embedder = _load_embedder(settings)
    try:
        return embedder, Gallery(settings, embedder, background=background)
    except (ModelMismatch, DataDirBusy) as e:
        embedder.close()
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e


def _check_model(settings) -> None:
    """Refuse to serve a gallery built with another model, or one being re-embedded, before uvicorn starts."""
    from reid.service.embedder import ModelError, file_digest, resolve_model
    from reid.service.gallery import DB_NAME, DataDirBusy, lock_data_dir
    from reid.service.store import Store

    try:
        lock_data_dir(Path(settings.data_dir), exclusive=False).close()
    except DataDirBusy as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    try:
        image, video = resolve_model(settings.model)
    except ModelError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    db = Path(settings.data_dir) / DB_NAME
    if not db.is_file():
        return
    store = Store(db, settings.sqlite_synchronous)
    try:
        stored, n = store.get_meta("model_id"), store.count()
        if stored and n and stored != file_digest(image, video):
            typer.echo(
                f"error: the gallery in {settings.data_dir} holds {n} vectors from model "
                f"{store.get_meta('model_desc') or stored}, not from {settings.model}. Vectors of two "
                f"models cannot be mixed: run `reid reindex --model {settings.model} --data-dir "
                f"{settings.data_dir}` to re-embed the stored crops, or serve the original model.",
                err=True,
            )
            raise typer.Exit(2)
    finally:
        store.close()


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: str = typer.Option(None, help="bind address (REID_HOST, default 127.0.0.1)"),
        port: int = typer.Option(None, help="port (REID_PORT, default 8000)"),
        model: Path = typer.Option(None, help="model dir or .onnx (REID_MODEL, default reid/models/default)"),
        data_dir: Path = typer.Option(None, help="data directory (REID_DATA_DIR, default ./data)"),
    ) -> None:
        """Start the search service (REST API, OpenAPI at /docs)."""
        import uvicorn

        from reid.service.app import create_app
        from reid.service.logging import configure_logging

        settings = _settings(host=host, port=port, model=model, data_dir=data_dir)
        _check_model(settings)
        configure_logging(settings.log_level, settings.log_json)
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_config=None,
            timeout_keep_alive=int(settings.keep_alive_s),
            timeout_graceful_shutdown=10,
        )

    @app.command()
    def index(
        folder: Path = typer.Argument(..., help="folder of person crops (searched recursively), or footage: "
                                      "a video file, a raw .264 stream, a folder or zip of frames"),
        camera: str = typer.Option(..., "--camera", help="camera name stored with every item"),
        timestamp: str = typer.Option(None, help="ISO 8601 time stored with every item"),
        start: str = typer.Option(None, "--start", help="footage: ISO 8601 time of its first frame"),
        fps: float = typer.Option(None, "--fps", min=0.001, help="footage without timestamps: its frame rate"),
        meta: str = typer.Option(None, help="JSON object stored with every item"),
        batch: int = typer.Option(64, min=1, help="images per write"),
        model: Path = typer.Option(None, help="model dir or .onnx (REID_MODEL)"),
        data_dir: Path = typer.Option(None, help="data directory (REID_DATA_DIR)"),
    ) -> None:
        """Bulk-index person crops, or footage (detect, track, embed tracklets; docs/footage.md), into
        the gallery (safe while the server runs)."""
        from rich.progress import Progress

        from reid.ingest.decode import is_footage
        from reid.service.inputs import parse_meta, parse_time
        from reid.service.uploads import BadInput, decode_image

        if folder.exists() and is_footage(folder):
            from reid.service.index_footage import index_footage

            index_footage(folder, camera, start or timestamp, meta, fps, _settings(model=model, data_dir=data_dir),
                          _open)
            return
        if not folder.is_dir():
            raise typer.BadParameter(f"not a folder: {folder}")
        try:
            ts, meta_d = parse_time(timestamp, "timestamp"), parse_meta(meta)
        except BadInput as e:
            raise typer.BadParameter(e.message) from e
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            typer.echo(f"error: no images in {folder}", err=True)
            raise typer.Exit(2)
        settings = _settings(model=model, data_dir=data_dir)
        embedder, gallery = _open(settings)
        added, skipped = 0, []
        try:
            with Progress() as bar:
                task = bar.add_task(f"indexing {camera}", total=len(paths))
                for i in range(0, len(paths), batch):
                    imgs = []
                    for p in paths[i : i + batch]:
                        try:
                            imgs.append(
                                decode_image(
                                    str(p.relative_to(folder)), p.read_bytes(), settings.max_image_pixels
                                )
                            )
                        except (BadInput, OSError) as e:
                            skipped.append(f"{p}: {getattr(e, 'message', e)}")
                    if imgs:
                        gallery.add_images(
                            imgs, camera, timestamp=ts, meta=meta_d, sources=[m.name for m in imgs]
                        )
                        added += len(imgs)
                    bar.advance(task, len(paths[i : i + batch]))
        finally:
            gallery.close()
            embedder.close()
        for s in skipped:
            typer.echo(f"skipped {s}", err=True)
        typer.echo(f"indexed {added} images from {folder} as camera {camera!r} into {settings.data_dir}")

    @app.command()
    def query(
        images: list[Path] = typer.Argument(..., help="query image (several = one query tracklet)"),
        top_k: int = typer.Option(10, min=1, max=1000, help="hits to print"),
        camera: list[str] = typer.Option(None, help="only these cameras"),
        exclude_camera: list[str] = typer.Option(None, help="skip these cameras"),
        model: Path = typer.Option(None, help="model dir or .onnx (REID_MODEL)"),
        data_dir: Path = typer.Option(None, help="data directory (REID_DATA_DIR)"),
    ) -> None:
        """Search the local gallery and print the top hits."""
        from rich.console import Console
        from rich.table import Table

        from reid.service.store import Filters
        from reid.service.uploads import BadInput, decode_image

        settings = _settings(model=model, data_dir=data_dir)
        try:
            frames = [decode_image(str(p), p.read_bytes(), settings.max_image_pixels).bgr for p in images]
        except (BadInput, OSError) as e:
            raise typer.BadParameter(str(getattr(e, "message", e))) from e
        embedder, gallery = _open(settings)
        try:
            q = embedder.embed(frames)[0] if len(frames) == 1 else embedder.embed_tracklet(frames)
            hits = gallery.search(
                q, top_k, Filters(cameras=camera or None, exclude_cameras=exclude_camera or None)
            )
        finally:
            gallery.close()
            embedder.close()
        table = Table("rank", "id", "score", "kind", "camera", "source")
        for r, h in enumerate(hits, 1):
            table.add_row(
                str(r),
                str(h.record.id),
                f"{h.score:.4f}",
                h.record.kind,
                h.record.camera,
                h.record.source or h.record.footage_id or "",
            )
        Console().print(table)

    @app.command()
    def reindex(
        model: Path = typer.Option(None, help="the new model dir or .onnx (REID_MODEL)"),
        data_dir: Path = typer.Option(None, help="data directory (REID_DATA_DIR)"),
    ) -> None:
        """Re-embed every stored item from its kept crops with the current model (refused while a server,
        indexer or worker has the data dir open)."""
        from rich.progress import Progress

        from reid.service.gallery import reindex as do_reindex

        settings = _settings(model=model, data_dir=data_dir)
        embedder = _load_embedder(settings)
        try:
            with Progress() as bar:
                task = bar.add_task("re-embedding", total=None)
                n = do_reindex(
                    settings, embedder, progress=lambda d, t: bar.update(task, completed=d, total=t)
                )
        except RuntimeError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        finally:
            embedder.close()
        typer.echo(f"re-embedded {n} items with {embedder.info.describe()}")

    @app.command()
    def worker(
        check: bool = typer.Option(False, "--check", help="exit 0 if Redis and the model are usable, else 1"),
        model: Path = typer.Option(None, help="model dir or .onnx (REID_MODEL); must match the API's"),
        data_dir: Path = typer.Option(None, help="data directory shared with the API (REID_DATA_DIR)"),
    ) -> None:
        """Process footage jobs from the Redis queue (REID_QUEUE=redis, REID_REDIS_URL); the API
        applies the results, so any number of workers can run (docs/deploy.md). With the embedded
        queue, take jobs from the data dir's job table and write the gallery directly
        (run the API with REID_JOB_WORKERS=0; docs/footage.md)."""
        import signal
        import threading

        from reid.service.embedder import ModelError
        from reid.service.logging import configure_logging
        from reid.service.queue_redis import QueueUnavailable, check_worker, run_worker

        settings = _settings(model=model, data_dir=data_dir)
        if settings.queue != "redis":  # embedded: jobs from the data dir's job table (reid/service/jobs.py)
            from reid.service.embedder import resolve_model
            from reid.service.jobs import run_embedded_worker

            try:
                resolve_model(settings.model)
            except ModelError as e:
                typer.echo(f"{'unhealthy' if check else 'error'}: {e}", err=True)
                raise typer.Exit(1 if check else 2) from e
            if check:
                raise typer.Exit(0)
            configure_logging(settings.log_level, settings.log_json)
            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            run_embedded_worker(settings, stop=stop)
            return
        if check:
            problems = check_worker(settings)
            for p in problems:
                typer.echo(f"unhealthy: {p}", err=True)
            raise typer.Exit(1 if problems else 0)
        configure_logging(settings.log_level, settings.log_json)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            run_worker(settings, stop=stop)
        except (QueueUnavailable, ModelError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e

    @app.command("fetch-detector")
    def fetch_detector_cmd(
        source: Path = typer.Option(None, "--from", help="install this copy of the pinned file instead of "
                                    "downloading it (machines without GitHub access)"),
        dest: Path = typer.Option(None, "--dest", help="directory (default ~/.cache/reid/detectors, "
                                  "REID_CACHE)"),
        force: bool = typer.Option(False, "--force", help="install again even if present"),
    ) -> None:
        """Install the default person detector, YOLOX-nano (Apache-2.0, pinned by commit and SHA-256).
        Without it, REID_DETECTOR=auto falls back to HOG (docs/footage.md)."""
        from reid.ingest.detector_weights import DetectorWeightsError, fetch_detector

        try:
            path = fetch_detector(dest, source=source, force=force)
        except DetectorWeightsError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
        typer.echo(str(path))
