"""`reid delete --camera … --since … --until …`: erase what a filter matches, from the command line
(the same filters and the same refusal of none as DELETE /gallery; safe while the server runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from reid.service.commands.common import open_gallery, settings_from


def delete_command(
    camera: list[str] = typer.Option(None, help="only these cameras (repeat or comma-separate)"),
    exclude_camera: list[str] = typer.Option(None, help="skip these cameras"),
    since: str = typer.Option(None, help="ISO 8601: items seen at or after"),
    until: str = typer.Option(None, help="ISO 8601: items seen at or before"),
    kind: str = typer.Option(None, help="image or tracklet"),
    model: Path = typer.Option(None, help="model dir or .onnx (REID_MODEL)"),
    data_dir: Path = typer.Option(None, help="data directory (REID_DATA_DIR)"),
) -> None:
    """Delete every gallery item the filters match (rows, vectors, crops, scenes); `reid query` and
    GET /gallery list with the same filters."""
    from reid.service.inputs import build_filters
    from reid.service.uploads import BadInput

    try:
        filters = build_filters(camera, exclude_camera, since, until, kind)
    except BadInput as e:
        raise typer.BadParameter(e.message) from e
    if not filters.active():
        raise typer.BadParameter("give a filter (--camera, --exclude-camera, --since, --until or --kind): "
                                 "reid delete never empties the gallery by accident")
    embedder, gallery = open_gallery(settings_from(model=model, data_dir=data_dir))
    try:
        n = gallery.delete_matching(filters)
    finally:
        gallery.close()
        embedder.close()
    typer.echo(f"deleted {n} item{'' if n == 1 else 's'}")
