"""`reid fetch-detector`: install the default person detector (docs/footage.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from reid.service.commands.common import fail


def fetch_detector_command(
    source: Path = typer.Option(None, "--from", help="install this copy of the pinned file instead of "
                                "downloading it (machines without GitHub access)"),
    dest: Path = typer.Option(None, "--dest", help="directory (default ~/.cache/reid/detectors, REID_CACHE)"),
    force: bool = typer.Option(False, "--force", help="install again even if present"),
) -> None:
    """Install the default person detector, YOLOX-nano (Apache-2.0, pinned by commit and SHA-256).
    Without it, REID_DETECTOR_NAME=auto falls back to HOG (docs/footage.md)."""
    from reid.ingest.detector_weights import DetectorWeightsError, fetch_detector

    try:
        path = fetch_detector(dest, source=source, force=force)
    except DetectorWeightsError as e:
        fail(str(e), 1)
    typer.echo(str(path))
