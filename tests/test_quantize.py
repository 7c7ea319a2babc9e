"""INT8 quantisation (`reid quantize`, reid/models/quantize.py) and what the shipped default is.

These tests check that quantised graphs really are INT8 where they say so, FP32 where they say so,
and that their embeddings agree with the FP32 model's on crops the quantiser never saw."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import REPO, shared_path

from reid.models.preprocess import PreprocessSpec, preprocess, read_image, read_onnx_metadata
from reid.models.quantize import QuantizeError, image_files, quantize_model

DEFAULT = REPO / "reid" / "models" / "default"
FP32 = DEFAULT  # the default ships in FP32: it is the quantiser's input


def _reid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reid.cli", *args], capture_output=True, text=True, cwd=REPO)


def _embed(model: Path, x: np.ndarray) -> np.ndarray:
    out = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _quantized_nodes(path: Path) -> tuple[set[str], set[str]]:
    """Names of Conv nodes fed by a DequantizeLinear (INT8) and of those fed by plain floats."""
    graph = onnx.load(str(path)).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    int8 = {n.name for n in convs if n.input[0] in dq_outputs}
    return int8, {n.name for n in convs} - int8


def _val_crops(n: int) -> np.ndarray:
    spec = PreprocessSpec.from_metadata(read_onnx_metadata(str(FP32 / "image.onnx")))
    paths = sorted(shared_path("data", "cuhk03", "val").glob("*.jpg"))[::37][:n]
    return preprocess([read_image(str(p)) for p in paths], spec)


def test_shipped_default_is_the_fp32_export():
    """v3 (OSNet-x0.25): its INT8 quantisation reaches the agreement target but embeds *slower*
    than FP32 on this CPU (bench/embed_speed_int8.md), so the FP32 export is what
    ships (reid/models/default/MODEL_CARD.md)."""
    meta = read_onnx_metadata(str(DEFAULT / "image.onnx"))
    assert meta.get("reid.precision", "fp32") == "fp32"
    card = (DEFAULT / "MODEL_CARD.md").read_text().splitlines()[0]
    assert f"v{meta['reid.version']}, FP32" in card  # the card describes this very file
    int8, _ = _quantized_nodes(DEFAULT / "image.onnx")
    assert not int8


@pytest.fixture(scope="module")
def train_crops(tmp_path_factory) -> Path:
    """40 CUHK03 training crops (the quantiser's calibration and check sets come from here)."""
    src = sorted(shared_path("data", "cuhk03", "train").glob("*.jpg"))[::150][:40]
    folder = tmp_path_factory.mktemp("crops") / "nested"
    folder.mkdir()
    for p in src:
        shutil.copy(p, folder / p.name)
    return folder.parent


def test_quantize_cli_keeps_the_stages_it_needs(train_crops: Path, tmp_path: Path):
    out = tmp_path / "int8"
    res = _reid("quantize", str(FP32), "--images", str(train_crops), "--out", str(out), "--calibration", "20",
                "--target-cosine", "0.985")
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "quantization.json").read_text())
    assert report["calibration_images"] == 20 and report["check_images"] == 20
    # it stops at the first split that meets the target, and earlier splits did not
    assert report["mean_cosine"] >= 0.985 and report["tried"][-1]["mean_cosine"] == report["mean_cosine"]
    assert all(t["mean_cosine"] < 0.985 for t in report["tried"][:-1])
    assert {p.name for p in out.iterdir()} >= {"image.onnx", "model_config.json", "quantization.json"}
    meta = read_onnx_metadata(str(out / "image.onnx"))
    assert meta["reid.precision"] == "int8" and float(meta["reid.int8_cosine"]) == report["mean_cosine"]
    int8, fp32 = _quantized_nodes(out / "image.onnx")
    kept = [f"/backbone/{s}/" for s in report["fp32_stages"]]
    assert all(any(k in n for k in kept) for n in fp32)
    assert not any(any(k in n for k in kept) for n in int8)

    x = _val_crops(8)
    cos = np.sum(_embed(out / "image.onnx", x) * _embed(FP32 / "image.onnx", x), axis=1)
    assert cos.mean() > 0.98

    again = _reid("quantize", str(out), "--images", str(train_crops), "--out", str(tmp_path / "twice"))
    assert again.returncode == 2 and "already quantised" in again.stderr


def test_unreachable_target_is_refused_and_writes_nothing(train_crops: Path, tmp_path: Path):
    with pytest.raises(QuantizeError, match="no FP32/INT8 split reached mean cosine 1.01"):
        quantize_model(FP32, tmp_path / "out", image_files(train_crops), target_cosine=1.01, n_calibration=16)
    assert not (tmp_path / "out").exists()


def test_bad_inputs_give_clear_errors(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _reid("quantize", str(FP32), "--images", str(empty), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "no images" in res.stderr and "Traceback" not in res.stderr

    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        cv2.imwrite(str(few / f"{i}.jpg"), np.full((128, 64, 3), 40 * i, np.uint8))
    res = _reid("quantize", str(FP32), "--images", str(few), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "at least 16 images" in res.stderr

    res = _reid("quantize", str(tmp_path), "--images", str(few), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "has no image.onnx" in res.stderr
