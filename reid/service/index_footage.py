"""`reid index FOOTAGE --camera C --start T`: the footage pipeline from the command line, with a
progress bar, committing into the local data directory like a service job does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def index_footage(path: Path, camera: str, start: str | None, meta: str | None, fps: float | None,
                  settings: Any, open_gallery: Any) -> None:
    """Decode → detect → track → embed ``path`` and commit its tracklets in one transaction."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from reid.ingest.decode import Footage, FootageError, content_hash
    from reid.ingest.detect import DetectorError
    from reid.ingest.pipeline import FootageJob, PipelineConfig, process_footage
    from reid.service.inputs import parse_meta, parse_time
    from reid.service.jobs import commit_result
    from reid.service.uploads import BadInput

    try:
        ts, meta_d = parse_time(start, "start"), parse_meta(meta)
    except BadInput as e:
        raise typer.BadParameter(e.message) from e
    try:  # check the footage before loading the model: a bad file fails fast
        Footage(path, fps=fps or settings.footage_fps, max_pixels=settings.footage_max_pixels)
    except FootageError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    fid = content_hash(path)
    embedder, gallery = open_gallery(settings)
    try:
        n = gallery.store.count_footage(fid)
        if n:
            typer.echo(f"{path} is already indexed ({n} tracklets, footage id {fid}); nothing to do")
            return
        cols = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} frames"),
                TextColumn("{task.fields[fps]:.1f} fps · {task.fields[tracklets]} tracklets"),
                TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*cols) as bar:
            task = bar.add_task(f"indexing {camera}", total=None, fps=0.0, tracklets=0)

            def report(p: Any) -> bool:
                bar.update(task, completed=p.frames_done, total=p.frames_total, fps=p.fps, tracklets=p.tracklets)
                return True

            try:
                res = process_footage(
                    FootageJob(path=path, camera=camera, start=ts, fps=fps, source=path.name, meta=meta_d,
                               footage_id=fid),
                    PipelineConfig.from_settings(settings), embedder.embed_tracklet, progress=report)
            except (FootageError, DetectorError) as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(2) from e
        stats = commit_result(gallery, res)
    finally:
        gallery.close()
        embedder.close()
    for err in res.errors:
        typer.echo(f"warning: {err}", err=True)
    typer.echo(f"indexed {stats['tracklets']} tracklets from {path} as camera {camera!r} "
               f"({stats['frames_done']} frames in {stats['wall_seconds']} s, {stats['realtime']}× real time)")
