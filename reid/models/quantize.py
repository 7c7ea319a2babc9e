"""Post-training INT8 quantisation of an exported image model (torch-free: ONNX Runtime only).

Static QDQ quantisation (per-channel INT8 weights, UINT8 activations, percentile calibration)
roughly doubles CPU throughput, but the first, high-resolution stages are sensitive: quantising
them moves the embeddings enough to reorder neighbours. So the stages are kept in FP32 as a
growing prefix (none, ``stem``, ``stem+layer1``, …) until the INT8 embeddings of held-out crops
agree with the FP32 ones to ``target_cosine``. The chosen split and its measured agreement are
written into the ONNX metadata (``reid.precision``, ``reid.fp32_stages``, ``reid.int8_cosine``)
and into ``quantization.json``, so a quantised model always says what it cost.

Calibration and checking crops should come from the *training* data, never from the split that
the model is evaluated on.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from reid.models.preprocess import PreprocessSpec, preprocess, read_image, read_onnx_metadata, write_onnx_metadata

STAGE_PREFIXES = ((), ("stem",), ("stem", "layer1"), ("stem", "layer1", "layer2"),
                  ("stem", "layer1", "layer2", "layer3"))
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class QuantizeError(ValueError):
    """The inputs cannot be quantised (no images, wrong model, target unreachable)."""


@dataclass
class QuantizeReport:
    fp32_stages: list[str]
    mean_cosine: float  # INT8 vs FP32 embeddings of the held-out check crops
    min_cosine: float
    nn_agreement: float  # share of check crops whose nearest other crop is the same under both
    calibration_images: int
    check_images: int
    target_cosine: float
    tried: list[dict]


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _embed(path: Path, x: np.ndarray, batch: int = 32) -> np.ndarray:
    sess = _session(path)
    out = np.concatenate([sess.run(None, {"images": x[i : i + batch]})[0] for i in range(0, len(x), batch)])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _agreement(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float]:
    cos = np.sum(ref * got, axis=1)
    s_ref, s_got = ref @ ref.T, got @ got.T
    np.fill_diagonal(s_ref, -9)
    np.fill_diagonal(s_got, -9)
    return float(cos.mean()), float(cos.min()), float(np.mean(s_ref.argmax(1) == s_got.argmax(1)))


def image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise QuantizeError(f"no images (.jpg/.png/.bmp) under {folder}")
    return files


def _quantize_once(pre: Path, out: Path, calib: np.ndarray, keep_fp32: tuple[str, ...], node_names) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter({"images": calib[i : i + 1]} for i in range(len(calib)))  # equal shapes

        def get_next(self):
            return next(self.it, None)

    # exported node names carry the module path: /net/backbone/<stage>/... Everything after the backbone
    # (pooling, neck, normalisation, region features) stays FP32: it costs nothing and an 8-bit
    # embedding would cap the agreement with FP32
    exclude = [n for n in node_names
               if "/backbone/" not in n or any(f"/backbone/{s}/" in n for s in keep_fp32)]
    quantize_static(str(pre), str(out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.Percentile, nodes_to_exclude=exclude)


def quantize_model(model_dir: Path, out_dir: Path, images: list[Path], *, target_cosine: float = 0.995,
                   n_calibration: int = 128, n_check: int = 256, seed: int = 0) -> QuantizeReport:
    """Quantise ``model_dir/image.onnx`` into ``out_dir`` (other files copied), see module doc."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = Path(model_dir) / "image.onnx"
    if not src.is_file():
        raise QuantizeError(f"{model_dir} has no image.onnx (quantise an exported model directory)")
    meta = read_onnx_metadata(str(src))
    if meta.get("reid.precision", "fp32") != "fp32":
        raise QuantizeError(f"{src} is already quantised ({meta['reid.precision']})")
    spec = PreprocessSpec.from_metadata(meta)
    if len(images) < 16:
        raise QuantizeError(f"need at least 16 images for calibration and checking, got {len(images)}")
    order = np.random.default_rng(seed).permutation(len(images))
    n_cal = min(n_calibration, len(images) // 2)
    calib = preprocess([read_image(str(images[i])) for i in order[:n_cal]], spec)
    check = preprocess([read_image(str(images[i])) for i in order[n_cal : n_cal + n_check]], spec)

    out_dir = Path(out_dir)
    if out_dir.resolve() == Path(model_dir).resolve():
        raise QuantizeError("--out must differ from the model directory (the FP32 model is kept)")
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        node_names = [n.name for n in onnx.load(str(pre)).graph.node]
        ref = _embed(src, check)
        tried, chosen = [], None
        for keep in STAGE_PREFIXES:
            candidate = Path(tmp) / f"int8_{len(keep)}.onnx"
            _quantize_once(pre, candidate, calib, keep, node_names)
            mean, low, nn = _agreement(ref, _embed(candidate, check))
            tried.append({"fp32_stages": list(keep), "mean_cosine": round(mean, 4), "min_cosine": round(low, 4),
                          "nn_agreement": round(nn, 3)})
            if mean >= target_cosine:
                chosen = (keep, candidate, mean, low, nn)
                break
        if chosen is None:
            best = max(tried, key=lambda t: t["mean_cosine"])
            raise QuantizeError(f"no FP32/INT8 split reached mean cosine {target_cosine} "
                                f"(best {best['mean_cosine']} keeping {best['fp32_stages']} in FP32); "
                                "keep using the FP32 model")
        keep, candidate, mean, low, nn = chosen
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in Path(model_dir).iterdir():
            if f.is_file() and f.name != "image.onnx":
                shutil.copy2(f, out_dir / f.name)
        shutil.copy2(candidate, out_dir / "image.onnx")
    report = QuantizeReport(fp32_stages=list(keep), mean_cosine=round(mean, 4), min_cosine=round(low, 4),
                            nn_agreement=round(nn, 3), calibration_images=len(calib), check_images=len(check),
                            target_cosine=target_cosine, tried=tried)
    write_onnx_metadata(out_dir / "image.onnx", {
        **meta,
        "reid.precision": "int8",
        "reid.fp32_stages": ",".join(keep),
        "reid.int8_cosine": f"{mean:.4f}",
    })
    (out_dir / "quantization.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report
