"""ONNX export: PyTorch ↔ ONNX Runtime parity (image and video graphs, dynamic B and T), the reid.*
metadata contract, and the `reid export` CLI.

The IA and non-local blocks are zero-initialised (identity) when fresh, which would make parity
trivially true for them; their ``.bn`` layers are perturbed so the blocks really compute. The backbone's
own BatchNorms are left alone (randomising them blows activations up, not a real-model situation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import REPO, SHARED
from torch import nn

from reid.models.export import export_checkpoint, export_model, parity
from reid.models.ia import CIA, SIA
from reid.models.networks import ModelConfig, NormalizedEmbedder, build_model, image_branch, video_branch
from reid.models.nonlocal_block import NonLocalBlock
from reid.models.preprocess import META_KEYS, PreprocessSpec, preprocess, read_image, read_onnx_metadata

TOL = 1e-4
IMAGENET = SHARED / "weights" / "mobilenetv2_imagenet.pt"


def _pretrained() -> str | None:
    """Real ImageNet weights when ../shared has them (realistic activations), else random init."""
    return str(IMAGENET) if IMAGENET.is_file() else None


def build_realistic(cfg: ModelConfig) -> nn.Module:
    """The model in eval mode with realistic activation scales: ImageNet weights when present, else
    random weights whose BatchNorm statistics are calibrated on random input (plain random init
    with unit running stats shrinks activations towards zero, hiding every difference)."""
    model = build_model(cfg)
    if cfg.pretrained is None and cfg.arch != "tkp":  # (non-local softmax turns one-hot on calibrated noise)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None  # cumulative average over the calibration passes
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(4, 3, cfg.height, cfg.width))
    return model.eval()


def perturb_attention_bns(model: nn.Module, seed: int = 0) -> int:
    """Give every IA / non-local BN non-zero γ, β and running stats so the block is not the identity.

    γ ∈ [0.2, 0.6] is a trained-residual-branch scale; γ ≈ 1 on random-noise clips makes the
    unscaled non-local softmax near-degenerate, where even fp32 PyTorch is ~1e-4 off from fp64."""
    g = torch.Generator().manual_seed(seed)
    n = 0
    for m in model.modules():
        if isinstance(m, (SIA, CIA, NonLocalBlock)):
            bn = m.bn
            c = bn.num_features
            with torch.no_grad():
                bn.weight.copy_(0.2 + 0.4 * torch.rand(c, generator=g))
                bn.bias.copy_(0.05 * torch.randn(c, generator=g))
                bn.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                bn.running_var.copy_(0.5 + torch.rand(c, generator=g))
            n += 1
    return n


def real_crops(spec: PreprocessSpec, n: int) -> np.ndarray | None:
    val = SHARED / "data" / "cuhk03" / "val"
    files = sorted(val.glob("*.jpg"))[: n] if val.is_dir() else []
    if len(files) < n:
        return None
    return preprocess([read_image(str(f)) for f in files], spec)


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def ianet_export(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig(arch="ianet", pretrained=_pretrained(), height=128, width=64, num_classes=3)
    model = build_realistic(cfg)
    assert perturb_attention_bns(model) == 4  # 2 IA blocks × (SIA, CIA)
    out = tmp_path_factory.mktemp("ianet")
    paths = export_model(model, cfg, out, trained_on="unit-test", version="7")
    return model, cfg, paths


@pytest.fixture(scope="module")
def tkp_export(tmp_path_factory):
    torch.manual_seed(1)
    cfg = ModelConfig(arch="tkp", pretrained=_pretrained(), height=64, width=32, num_classes=3)
    model = build_realistic(cfg)
    assert perturb_attention_bns(model) == 5  # the video net's 5 non-local blocks
    out = tmp_path_factory.mktemp("tkp")
    paths = export_model(model, cfg, out, trained_on="unit-test")
    return model, cfg, paths


def test_perturbed_blocks_are_not_the_identity(ianet_export, tkp_export):
    """Guard for the parity tests below: the attention blocks must actually change their input."""
    model, cfg, _ = ianet_export
    x = torch.randn(2, 3, cfg.height, cfg.width)
    for m in model.modules():
        if isinstance(m, SIA):
            with torch.no_grad():
                f = torch.randn(2, m.channels, 4, 3)
                assert (m(f) - f).abs().max() > 1e-2
    fresh = build_model(ModelConfig(**{**cfg.to_dict(), "arch": "baseline"})).eval()
    fresh.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        assert (fresh(x) - model(x)).abs().max() > 1e-3
    vmodel, vcfg, _ = tkp_export
    nl = next(m for m in vmodel.modules() if isinstance(m, NonLocalBlock))
    f = torch.randn(4, nl.channels, 4, 2)
    with torch.no_grad():
        assert (nl(f, 2) - f).abs().max() > 1e-2


@pytest.mark.parametrize("batch", [1, 7])
def test_image_parity_random(ianet_export, batch: int):
    model, cfg, paths = ianet_export
    x = np.random.default_rng(batch).standard_normal((batch, 3, cfg.height, cfg.width)).astype(np.float32)
    assert parity(image_branch(model), paths[0], x) <= TOL
    got = ort_run(paths[0], x)
    assert got.shape == (batch, 1280)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 7])
def test_image_parity_real_crops(ianet_export, batch: int):
    model, cfg, paths = ianet_export
    spec = PreprocessSpec.from_metadata(read_onnx_metadata(paths[0]))
    x = real_crops(spec, batch)
    if x is None:
        pytest.skip("needs ../shared/data/cuhk03/val")
    assert x.shape == (batch, 3, 128, 64)
    assert parity(image_branch(model), paths[0], x) <= TOL
    # different people get different embeddings (the graph is not degenerate)
    if batch > 1:
        e = ort_run(paths[0], x)
        assert np.abs(e[0] - e[-1]).max() > 1e-3


@pytest.mark.parametrize("bt", [(1, 1), (2, 4), (1, 8), (7, 2)])
def test_video_parity_dynamic_b_and_t(tkp_export, bt):
    model, cfg, paths = tkp_export
    b, t = bt
    x = np.random.default_rng(b * 10 + t).standard_normal((b, t, 3, cfg.height, cfg.width)).astype(np.float32)
    assert parity(video_branch(model), paths[1], x) <= TOL
    assert ort_run(paths[1], x).shape == (b, 1280)


@pytest.mark.parametrize("bt", [(1, 7), (7, 1)])
def test_video_parity_real_crops(tkp_export, bt):
    model, cfg, paths = tkp_export
    b, t = bt
    x = real_crops(cfg.preprocess, b * t)
    if x is None:
        pytest.skip("needs ../shared/data/cuhk03/val")
    clips = x.reshape(b, t, 3, cfg.height, cfg.width)
    assert parity(video_branch(model), paths[1], clips) <= TOL
    assert parity(image_branch(model), paths[0], x) <= TOL


def test_video_graph_mixes_frames(tkp_export):
    """The exported video graph is temporal: changing one frame changes the clip embedding beyond the
    plain mean of per-frame features (non-local attention spans the clip in ONNX too)."""
    _, cfg, paths = tkp_export
    if cfg.pretrained is None:
        pytest.skip("needs the ImageNet weights in ../shared: random-init features are near-constant")
    x = np.random.default_rng(3).standard_normal((1, 4, 3, cfg.height, cfg.width)).astype(np.float32)
    y = x.copy()
    y[0, 0] += 1.0
    assert np.abs(ort_run(paths[1], x) - ort_run(paths[1], y)).max() > 1e-4


def _check_metadata(path: Path, cfg: ModelConfig, kind: str, trained_on: str, version: str) -> None:
    meta = read_onnx_metadata(path)
    assert set(META_KEYS) <= set(meta), sorted(set(META_KEYS) - set(meta))
    assert PreprocessSpec.from_metadata(meta) == cfg.preprocess
    assert all(isinstance(v, str) for v in meta.values())  # ONNX metadata_props are strings
    assert int(meta["reid.input_height"]) == cfg.height and int(meta["reid.input_width"]) == cfg.width
    assert meta["reid.color"] in ("RGB", "BGR")
    assert float(meta["reid.scale"]) == pytest.approx(1 / 255)
    for key in ("reid.mean", "reid.std"):
        vals = json.loads(meta[key])
        assert isinstance(vals, list) and len(vals) == 3 and all(isinstance(v, float) for v in vals)
    dummy = np.zeros((1, 1, 3, cfg.height, cfg.width) if kind == "video" else (1, 3, cfg.height, cfg.width),
                     np.float32)
    assert int(meta["reid.embedding_dim"]) == ort_run(path, dummy).shape[1] == 1280
    assert meta["reid.normalized"] == "true"
    assert meta["reid.kind"] == kind
    assert meta["reid.arch"] == f"{cfg.arch}-{cfg.backbone}"
    assert meta["reid.trained_on"] == trained_on
    assert meta["reid.version"] == version
    # the graph's declared input: dynamic batch (and T), fixed H×W matching the metadata
    model = onnx.load(str(path))
    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    assert inp.name == ("clips" if kind == "video" else "images")
    assert model.graph.output[0].name == "embeddings"
    assert dims[0].dim_param and not dims[0].dim_value
    if kind == "video":
        assert dims[1].dim_param and not dims[1].dim_value
    assert [d.dim_value for d in dims[-3:]] == [3, cfg.height, cfg.width]


def test_metadata_round_trip(ianet_export, tkp_export):
    _, cfg, paths = ianet_export
    assert len(paths) == 1 and paths[0].name == "image.onnx"
    assert not (paths[0].parent / "video.onnx").exists()
    _check_metadata(paths[0], cfg, "image", "unit-test", "7")
    assert ModelConfig.from_dict(json.loads((paths[0].parent / "model_config.json").read_text())) == cfg
    _, vcfg, vpaths = tkp_export
    assert [p.name for p in vpaths] == ["image.onnx", "video.onnx"]
    _check_metadata(vpaths[0], vcfg, "image", "unit-test", "0")
    _check_metadata(vpaths[1], vcfg, "video", "unit-test", "0")


def test_export_checkpoint_round_trip(tmp_path: Path):
    """A checkpoint in load_checkpoint's format exports to a graph equal to the trained weights."""
    torch.manual_seed(2)
    cfg = ModelConfig(arch="ianet", pretrained=None, height=64, width=32, num_classes=3)
    model = build_model(cfg)
    perturb_attention_bns(model)
    ckpt = tmp_path / "ianet.pt"
    state = {"model": model.state_dict(), "model_config": cfg.to_dict(), "trained_on": "cuhk03-mini"}
    torch.save(state, ckpt)
    paths = export_checkpoint(ckpt, tmp_path / "out", version="3")
    _check_metadata(paths[0], cfg, "image", "cuhk03-mini", "3")
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 32)).astype(np.float32)
    with torch.no_grad():
        ref = NormalizedEmbedder(model.eval())(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ort_run(paths[0], x), ref, atol=TOL)


# --------------------------------------------------------------------------- the `reid export` CLI


def _reid(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    exe = REPO / ".venv" / "bin" / "reid"
    cmd = [str(exe), *args] if exe.exists() else [sys.executable, "-m", "reid.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_cli_export_tkp_checkpoint(tmp_path: Path):
    torch.manual_seed(3)
    cfg = ModelConfig(arch="tkp", pretrained=None, height=64, width=32, num_classes=4)
    model = build_model(cfg)
    perturb_attention_bns(model)
    ckpt = tmp_path / "tkp.pt"
    torch.save({"model": model.state_dict(), "model_config": cfg.to_dict(), "trained_on": "cli-test"}, ckpt)
    out = tmp_path / "exported"
    proc = _reid("export", str(ckpt), "--out", str(out), "--version", "5")
    assert proc.returncode == 0, proc.stderr
    image, video = out / "image.onnx", out / "video.onnx"
    assert image.is_file() and video.is_file()
    assert str(image) in proc.stdout and str(video) in proc.stdout
    _check_metadata(image, cfg, "image", "cli-test", "5")
    _check_metadata(video, cfg, "video", "cli-test", "5")
    clips = np.random.default_rng(1).standard_normal((2, 3, 3, 64, 32)).astype(np.float32)
    with torch.no_grad():
        ref = NormalizedEmbedder(video_branch(model.eval()))(torch.from_numpy(clips)).numpy()
    np.testing.assert_allclose(ort_run(video, clips), ref, atol=TOL)


def test_cli_export_missing_checkpoint(tmp_path: Path):
    proc = _reid("export", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o"))
    assert proc.returncode != 0
    assert "checkpoint not found" in proc.stderr and "nope.pt" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "o").exists()


def test_bad_checkpoints_give_clear_errors(tmp_path: Path):
    """Not a checkpoint at all, a foreign checkpoint, and weights that do not fit the config; the CLI
    turns these into a one-line error (checked once, in a subprocess, for the last case)."""
    from reid.models.networks import load_checkpoint

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    cfg = ModelConfig(arch="baseline", pretrained=None, height=64, width=32)
    mismatch = tmp_path / "mismatch.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "model_config": cfg.to_dict()}, mismatch)
    for path, msg in [(junk, "not a PyTorch checkpoint"), (foreign, "not a reid checkpoint"),
                      (mismatch, "do not match its model_config")]:
        with pytest.raises(ValueError, match=msg):
            load_checkpoint(str(path))
    proc = _reid("export", str(mismatch), "--out", str(tmp_path / "o"))
    text = " ".join((proc.stderr + proc.stdout).replace("│", " ").split())  # rich boxes and wraps it
    assert proc.returncode != 0
    assert "do not match its model_config" in text and mismatch.name in text, text
    assert "Traceback" not in text


def test_near_denormal_weights_are_zeroed_in_the_export(tmp_path: Path):
    """Weights of |w| < 1e-30 (harmless in value, slow in ONNX Runtime's convolutions) become 0."""
    import onnx
    import torch
    from onnx import numpy_helper

    from reid.models.export import TINY_WEIGHT, flush_tiny_weights

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    with torch.no_grad():
        net[0].weight[0, 0, 0, :] = torch.tensor([1e-35, -1e-33, 0.5])
    path = tmp_path / "m.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False)
    assert flush_tiny_weights(path) == 2
    w = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if t.name.endswith("weight")][0]
    assert w[0, 0, 0].tolist() == [0.0, 0.0, 0.5] and not ((w != 0) & (abs(w) < TINY_WEIGHT)).any()
    assert flush_tiny_weights(path) == 0
