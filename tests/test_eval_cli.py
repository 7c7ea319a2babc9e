"""`reid eval` end to end on a 20-identity slice of CUHK03 val, with the shipped model and with a
foreign ONNX model (explicit preprocessing), plus the error paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import shared_path
from typer.testing import CliRunner

from reid.cli import app

REPO = Path(__file__).resolve().parents[1]

runner = CliRunner()
N_IDS = 20
OSNET_FLAGS = ["--height", "256", "--width", "128", "--color", "RGB", "--scale", "0.00392156862745098",
               "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]


@pytest.fixture(scope="module")
def small_val(tmp_path_factory) -> Path:
    val = shared_path("data", "cuhk03", "val")
    out = tmp_path_factory.mktemp("cuhk03_small") / "val"
    out.mkdir()
    pids = sorted({p.name[:4] for p in val.glob("*.jpg")})[:N_IDS]
    for p in sorted(val.glob("*.jpg")):
        if p.name[:4] in pids:
            os.symlink(p, out / p.name)
    return out


def _run(*args: str) -> tuple[int, str]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    r = runner.invoke(app, ["eval", *args, "--threads", "1"])
    return r.exit_code, r.output


def _json(output: str) -> dict:
    lines = [ln for ln in output.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, output
    return json.loads(lines[0])


def _counts(folder: Path) -> tuple[int, int]:
    names = [p.stem for p in folder.glob("*.jpg")]
    q = sum(int(n[5:]) < 5 for n in names)
    return q, len(names) - q


def test_default_model_i2i(small_val):
    code, out = _run("--model", str(REPO / "reid" / "models" / "default"), "--data", str(small_val))
    assert code == 0, out
    r = _json(out)
    nq, ng = _counts(small_val)
    assert r["mode"] == "i2i" and r["num_query"] + r["num_skipped"] == nq and r["num_gallery"] == ng
    assert 0 <= r["rank1"] <= r["rank5"] <= r["rank10"] <= 100
    assert 0 < r["mAP"] <= 100 and 0 < r["mINP"] <= r["mAP"] + 1e-6
    assert r["seconds"] > 0 and "protocol" in r


def test_foreign_onnx_with_explicit_preprocessing(small_val, osnet_onnx, tmp_path):
    code, out = _run("--model", str(osnet_onnx), "--data", str(small_val), "--mode", "i2v", *OSNET_FLAGS,
                     "--visualize", "3", "--out", str(tmp_path / "grid.png"))
    assert code == 0, out
    r = _json(out)
    assert r["mode"] == "i2v" and r["num_query"] == N_IDS and r["num_gallery"] == N_IDS
    # an MSMT17 model on 20 CUHK03 identities: far above chance (1/20 = 5 %)
    assert r["rank1"] >= 50.0
    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid is not None and grid.shape[1] == 11 * 64 + 8 and grid.shape[0] >= 3 * 128
    # the same model, wrongly preprocessed (BGR, no normalisation), must score differently
    code, out2 = _run("--model", str(osnet_onnx), "--data", str(small_val), "--mode", "i2v",
                      "--color", "BGR", "--mean", "0,0,0", "--std", "1,1,1")
    assert code == 0, out2
    assert _json(out2)["mAP"] != r["mAP"]


def test_options_rerank_aqe_flip_trapezoid(small_val):
    base = ["--model", str(REPO / "reid" / "models" / "default"), "--data", str(small_val)]
    code, out = _run(*base)
    plain = _json(out)
    code, out = _run(*base, "--rerank", "kreciprocal", "--k1", "10", "--k2", "3", "--lambda", "0.3", "--aqe", "--flip",
                     "--ap", "trapezoid")
    assert code == 0, out
    r = _json(out)
    assert r["rerank"] == "kreciprocal" and r["aqe"] and r["flip"] and r["ap"] == "trapezoid"
    assert r["num_query"] == plain["num_query"] and r["mAP"] != plain["mAP"]


def test_bad_rerank_options_are_cli_errors(small_val, tmp_path):
    base = ["--model", str(REPO / "reid" / "models" / "default"), "--data", str(small_val)]
    for extra, hint in ((["--rerank", "foo"], "kreciprocal, can"), (["--rerank", "can", "--rerank-k", "0"], "≥ 1"),
                        (["--rerank", "can", "--pair-model", str(tmp_path / "none.onnx")], "train-can")):
        code, out = _run(*base, *extra)
        assert code == 2 and hint in out and "Traceback" not in out, out


def test_foreign_onnx_without_preprocessing_is_a_cli_error(small_val, osnet_onnx):
    code, out = _run("--model", str(osnet_onnx), "--data", str(small_val))
    assert code == 2 and "preprocessing" in out and "Traceback" not in out


@pytest.mark.parametrize("args, message", [
    (["--model", "/nonexistent/model", "--data", "{data}"], "model not found"),
    (["--model", "{model}", "--data", "/nonexistent/data"], "does not exist"),
    (["--model", "{model}", "--data", "{data}", "--format", "nope"], "unknown dataset format"),
    (["--model", "{model}", "--data", "{data}", "--mode", "x2y"], "unknown mode"),
    (["--model", "{model}", "--data", "{data}", "--ap", "11point"], "trapezoid"),
    (["--model", "{model}", "--data", "{data}", "--mean", "1,2"], "3 comma-separated"),
    (["--model", "{model}", "--data", "{data}", "--visualize", "2"], "--out"),
    (["--model", "{bad_model}", "--data", "{data}"], "unknown model type"),
])
def test_bad_input_is_a_cli_error(small_val, tmp_path, args, message):
    bad_model = tmp_path / "weights.bin"
    bad_model.write_bytes(b"not a model")
    subs = {"model": str(REPO / "reid" / "models" / "default"), "data": str(small_val), "bad_model": str(bad_model)}
    code, out = _run(*[a.format(**subs) for a in args])
    assert code == 2, out
    assert message in " ".join(out.split()) and "Traceback" not in out


def test_unreadable_image_is_named(tmp_path):
    folder = tmp_path / "val"
    folder.mkdir()
    img = np.random.default_rng(0).integers(0, 255, (64, 32, 3), dtype=np.uint8)
    for name in ("0001_00", "0001_05", "0002_00", "0002_05"):
        cv2.imwrite(str(folder / f"{name}.jpg"), img)
    (folder / "0002_06.jpg").write_bytes(b"garbage")
    code, out = _run("--model", str(REPO / "reid" / "models" / "default"), "--data", str(folder))
    assert code == 2 and "0002_06.jpg" in " ".join(out.split())


@pytest.mark.parametrize("arch, mode", [("baseline", "i2i"), ("tkp", "i2v")])
def test_checkpoint_model(small_val, tmp_path, arch, mode):
    """A training checkpoint is evaluated through TorchEmbedder (TKP: its video branch for tracklets)."""
    import torch

    from reid.models.networks import ModelConfig, build_model

    tiny = tmp_path / "val"
    tiny.mkdir()
    for p in sorted(small_val.glob("*.jpg")):
        if int(p.name[:4]) < 5:
            os.symlink(p, tiny / p.name)
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, pretrained=None, height=64, width=32, num_classes=3)
    ckpt = tmp_path / "last.pt"
    torch.save({"model": build_model(cfg).state_dict(), "model_config": cfg.to_dict()}, ckpt)
    code, out = _run("--model", str(ckpt), "--data", str(tiny), "--mode", mode)
    assert code == 0, out
    r = _json(out)
    assert r["mode"] == mode and r["video_model"] == (arch == "tkp")
    assert r["num_query"] + r["num_skipped"] == (_counts(tiny)[0] if mode == "i2i" else 5)


def test_onnx_evaluation_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys; from reid.training.evaluate import load_embedder, evaluate; import reid.training.rerank, "
            "reid.training.visualize; load_embedder('reid/models/default'); assert 'torch' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
