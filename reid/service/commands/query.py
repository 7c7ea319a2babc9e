"""`reid query IMAGE…` / `reid query --like ITEM_ID`: search the local gallery from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from reid.service.commands.common import fail, open_gallery, settings_from


def search(images: list[Path], like: list[int], top_k: int, filters: Any, settings: Any) -> list[Any]:
    """The top hits for one query: images (several = one query tracklet) or stored items (``like``:
    several = one person's sightings, averaged)."""
    from reid.service.gallery import ItemsNotFound
    from reid.service.uploads import BadInput, decode_image

    try:
        frames = [decode_image(str(p), p.read_bytes(), settings.max_image_pixels).bgr for p in images]
    except (BadInput, OSError) as e:
        raise typer.BadParameter(str(getattr(e, "message", e))) from e
    embedder, gallery = open_gallery(settings)
    try:
        if like:
            try:
                return gallery.similar(like, top_k, filters)
            except ItemsNotFound as e:
                fail(str(e))
        q = embedder.embed(frames)[0] if len(frames) == 1 else embedder.embed_tracklet(frames)
        return gallery.search(q, top_k, filters)
    finally:
        gallery.close()
        embedder.close()


def query_command(
    images: list[Path] = typer.Argument(None, help="query image (several = one query tracklet)"),
    like: list[int] = typer.Option(None, "--like", min=1, help="a stored item's id as the query instead (the "
                                   "item itself left out; GET /gallery/{id}/similar); repeat for several "
                                   "sightings of one person (averaged)"),
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

    if bool(images) == bool(like):
        raise typer.BadParameter("give query images or --like ITEM_ID, not both")
    settings = settings_from(model=model, data_dir=data_dir)
    filters = Filters(cameras=camera or None, exclude_cameras=exclude_camera or None)
    hits = search(images or [], like or [], top_k, filters, settings)
    table = Table("rank", "id", "score", "kind", "camera", "source")
    for r, h in enumerate(hits, 1):
        table.add_row(str(r), str(h.record.id), f"{h.score:.4f}", h.record.kind, h.record.camera,
                      h.record.source or h.record.footage_id or "")
    Console().print(table)
