"""`reid blend` (WiSE-FT, reid/models/blend.py): weight 1 is the fine-tuned model, weight 0 its start,
anything between is the tensor-wise mix; the result exports and serves like any model; bad
inputs are clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from test_osnet import _ort, _osnet_config
from typer.testing import CliRunner

from reid.cli import app
from reid.models.blend import blend
from reid.models.export import export_model
from reid.training.engine import Trainer


def _train(tmp: Path, seed: int) -> tuple[Path, Path]:
    """A tiny OSNet trained one epoch: (its checkpoint, its export dir)."""
    cfg = _osnet_config(tmp / f"data{seed}", "run")
    cfg.optim.epochs, cfg.seed = 1, seed
    trainer = Trainer(cfg)
    ckpt = trainer.run()
    export_model(trainer.model.eval(), trainer.cfg.model, tmp / f"export{seed}", trained_on=f"unit-test {seed}",
                 version="1.2.0")
    return ckpt, tmp / f"export{seed}"


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("blend")
    return _train(tmp, 1), _train(tmp, 2)


def _weights(model_dir: Path) -> dict[str, np.ndarray]:
    graph = onnx.load(str(model_dir / "image.onnx")).graph
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name.startswith("net.")}


def test_the_ends_are_the_two_models_and_the_middle_is_their_mix(two_models, tmp_path: Path):
    (tuned_ckpt, tuned), (_, start) = two_models
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 32)).astype(np.float32)
    for weight, same_as in ((1.0, tuned), (0.0, start)):
        blended = blend(tuned_ckpt, start, weight)
        export_model(blended.net, blended.cfg, tmp_path / f"w{weight}")
        np.testing.assert_allclose(_ort(tmp_path / f"w{weight}" / "image.onnx", x), _ort(same_as / "image.onnx", x),
                                   atol=1e-5)
    result = CliRunner().invoke(app, ["blend", str(tuned), "--start", str(start), "--weight", "0.25",
                                      "--out", str(tmp_path / "mix")])
    assert result.exit_code == 0, result.output
    a, b, mix = _weights(tuned), _weights(start), _weights(tmp_path / "mix")
    moved = [k for k in mix if a[k].dtype.kind == "f" and not np.allclose(a[k], b[k])]
    assert len(moved) > 100  # two seeds: nearly every tensor differs
    for k in moved:
        np.testing.assert_allclose(mix[k], 0.25 * a[k] + 0.75 * b[k], rtol=1e-5, atol=1e-6)
    from reid.models.preprocess import read_onnx_metadata

    meta = read_onnx_metadata(str(tmp_path / "mix" / "image.onnx"))
    assert meta["reid.version"] == "1.2.0+blend0.25"
    assert meta["reid.trained_on"].startswith("unit-test 1; blended 0.25 with")


def test_a_soup_of_a_mixstyle_run_and_a_plain_run_is_their_mean(two_models, tmp_path: Path):
    """A model soup (bench/accuracy.md): `reid blend A --start B --weight 0.5` on two runs of the same
    network, one trained with MixStyle, gives the tensor-wise mean, which serves as the plain network."""
    (plain_ckpt, plain), _ = two_models
    cfg = _osnet_config(tmp_path / "data", "mix")
    cfg.optim.epochs, cfg.seed, cfg.model.mixstyle_after = 1, 3, ["layer1", "layer2"]
    trainer = Trainer(cfg)
    mix_ckpt = trainer.run()
    export_model(trainer.model.eval(), trainer.cfg.model, tmp_path / "mix_export")
    result = CliRunner().invoke(app, ["blend", str(mix_ckpt), "--start", str(plain_ckpt), "--weight", "0.5",
                                      "--out", str(tmp_path / "soup")])
    assert result.exit_code == 0, result.output
    a, b, soup = _weights(tmp_path / "mix_export"), _weights(plain), _weights(tmp_path / "soup")
    assert a.keys() == b.keys() == soup.keys()  # MixStyle adds no weights
    for k in soup:
        if a[k].dtype.kind == "f":
            np.testing.assert_allclose(soup[k], (a[k] + b[k]) / 2, rtol=1e-5, atol=1e-6)
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 32)).astype(np.float32)
    y = _ort(tmp_path / "soup" / "image.onnx", x)
    assert y.shape == (2, 512) and np.isfinite(y).all()
    from reid.models.preprocess import read_onnx_metadata

    meta = read_onnx_metadata(str(tmp_path / "soup" / "image.onnx"))  # provenance from the checkpoint
    assert meta["reid.version"] == "0+blend0.5"
    assert meta["reid.trained_on"].endswith(f"ids; blended 0.5 with {plain_ckpt}"), meta["reid.trained_on"]


def _text(output: str) -> str:
    """The CLI's message without rich's box and line wrapping."""
    return " ".join(output.replace("│", " ").split())


def test_bad_inputs_are_clear_errors(two_models, tmp_path: Path):
    (_, tuned), _ = two_models
    runner = CliRunner()
    out = ["--out", str(tmp_path / "o")]
    bad_weight = runner.invoke(app, ["blend", str(tuned), "--start", str(tuned), "--weight", "1.5", *out])
    assert bad_weight.exit_code == 2 and "--weight" in bad_weight.output
    missing = runner.invoke(app, ["blend", str(tmp_path / "nope"), "--start", str(tuned), "--weight", "0.5", *out])
    assert missing.exit_code == 2 and "model not found" in missing.output
    other = tmp_path / "other"
    cfg = _osnet_config(tmp_path, "mbv2")
    cfg.model.backbone, cfg.model.neck = "mobilenetv2", "bn"  # another network: nothing fits
    export_model(Trainer(cfg).model.eval(), cfg.model, other)
    wrong = runner.invoke(app, ["blend", str(tuned), "--start", str(other), "--weight", "0.5", *out])
    assert wrong.exit_code == 2 and "does not fit" in _text(wrong.output), wrong.output
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("not weights")
    for start in ("no-such-weights", str(not_a_model)):  # `pretrained` values that name no usable file
        res = runner.invoke(app, ["blend", str(tuned), "--start", start, "--weight", "0.5", *out])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    bad_ckpt = tmp_path / "bad.pt"
    bad_ckpt.write_text("x")
    res = runner.invoke(app, ["blend", str(bad_ckpt), "--start", str(tuned), "--weight", "0.5", *out])
    assert res.exit_code == 2 and "bad.pt is not a PyTorch checkpoint" in _text(res.output)
    assert not (tmp_path / "o").exists()
