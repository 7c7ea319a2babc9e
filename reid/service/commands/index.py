"""`reid index`: bulk-index a folder of person crops, or footage (detect, track, embed tracklets), into
the local data directory, with a progress bar (safe while the server runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from reid.service.commands.common import fail, open_gallery, settings_from

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def index_images(folder: Path, camera: str, ts: float | None, meta: dict[str, Any] | None, batch: int,
                 settings: Any, advance: Any = None) -> tuple[int, list[str]]:
    """Every image under ``folder`` as one gallery item; returns (added, skipped files with why)."""
    from reid.service.uploads import BadInput, decode_image

    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        fail(f"no images in {folder}")
    embedder, gallery = open_gallery(settings)
    added, skipped = 0, []
    try:
        for i in range(0, len(paths), batch):
            imgs = []
            for p in paths[i : i + batch]:
                try:
                    imgs.append(decode_image(str(p.relative_to(folder)), p.read_bytes(), settings.max_image_pixels))
                except (BadInput, OSError) as e:
                    skipped.append(f"{p}: {getattr(e, 'message', e)}")
            if imgs:
                gallery.add_images(imgs, camera, timestamp=ts, meta=meta, sources=[m.name for m in imgs])
                added += len(imgs)
            if advance is not None:
                advance(len(paths[i : i + batch]), len(paths))
    finally:
        gallery.close()
        embedder.close()
    return added, skipped


def index_footage(path: Path, camera: str, ts: float | None, meta: dict[str, Any] | None, fps: float | None,
                  settings: Any, report: Any = None) -> tuple[dict[str, Any] | None, list[str]]:
    """Decode → detect → track → embed ``path`` and commit its tracklets in one transaction.
    Returns (the job stats, or None when that footage is already indexed; warnings)."""
    from reid.ingest.decode import Footage, FootageError, content_hash
    from reid.ingest.detect import DetectorError
    from reid.ingest.pipeline import FootageJob, PipelineConfig, process_footage
    from reid.service.records import commit_result

    try:  # check the footage before loading the model: a bad file fails fast
        Footage(path, fps=fps or settings.footage.fps, max_pixels=settings.footage.max_pixels)
    except FootageError as e:
        fail(str(e))
    fid = content_hash(path)
    embedder, gallery = open_gallery(settings)
    try:
        n = gallery.store.count_footage(fid)
        if n:
            typer.echo(f"{path} is already indexed ({n} tracklets, footage id {fid}); nothing to do")
            return None, []
        try:
            res = process_footage(FootageJob(path=path, camera=camera, start=ts, fps=fps, source=path.name,
                                             meta=meta, footage_id=fid),
                                  PipelineConfig.from_settings(settings), embedder.embed_tracklet, progress=report)
        except (FootageError, DetectorError) as e:
            fail(str(e))
        return commit_result(gallery, res), res.errors
    finally:
        gallery.close()
        embedder.close()


def index_command(
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
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from reid.ingest.decode import is_footage
    from reid.service.inputs import check_retained, parse_meta, parse_time
    from reid.service.uploads import BadInput

    footage = folder.exists() and is_footage(folder)
    if not footage and not folder.is_dir():
        raise typer.BadParameter(f"not a folder: {folder}")
    try:
        ts = parse_time(start or timestamp, "start" if start else "timestamp")
        meta_d = parse_meta(meta)
    except BadInput as e:
        raise typer.BadParameter(e.message) from e
    settings = settings_from(model=model, data_dir=data_dir)
    try:
        check_retained(ts, settings.retention_days, "start" if start else "timestamp")
    except BadInput as e:
        raise typer.BadParameter(e.message) from e
    if not footage:
        with Progress() as bar:
            task = bar.add_task(f"indexing {camera}", total=None)
            added, skipped = index_images(folder, camera, ts, meta_d, batch, settings,
                                          lambda n, total: bar.update(task, advance=n, total=total))
        for s in skipped:
            typer.echo(f"skipped {s}", err=True)
        typer.echo(f"indexed {added} images from {folder} as camera {camera!r} into {settings.data_dir}")
        return
    cols = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} frames"),
            TextColumn("{task.fields[fps]:.1f} fps · {task.fields[tracklets]} tracklets"),
            TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*cols) as bar:
        task = bar.add_task(f"indexing {camera}", total=None, fps=0.0, tracklets=0)

        def report(p: Any) -> bool:
            bar.update(task, completed=p.frames_done, total=p.frames_total, fps=p.fps, tracklets=p.tracklets)
            return True

        stats, warnings = index_footage(folder, camera, ts, meta_d, fps, settings, report)
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    if stats is not None:
        typer.echo(f"indexed {stats['tracklets']} tracklets from {folder} as camera {camera!r} "
                   f"({stats['frames_done']} frames in {stats['wall_seconds']} s, {stats['realtime']}× real time)")
