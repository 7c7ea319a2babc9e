"""Training-side commands: train, eval, export. torch is imported inside the commands only."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def export(checkpoint: Path = typer.Argument(..., help="training checkpoint (.pt)"),
               out: Path = typer.Option(..., "--out", help="output directory for image.onnx (+ video.onnx)"),
               version: str = typer.Option("0", help="model version recorded in the metadata")) -> None:
        """Export a checkpoint to self-describing ONNX (image.onnx, and video.onnx for TKP)."""
        if not checkpoint.is_file():
            raise typer.BadParameter(f"checkpoint not found: {checkpoint}")
        from models.export import export_checkpoint

        for p in export_checkpoint(checkpoint, out, version=version):
            typer.echo(str(p))
