"""`reid adapt` (issue 10, stretch): a gallery's own tracklets become a training set, each a
pseudo-identity of its camera; the softmax runs per camera; the new model is a working model
directory that `reid reindex` switches the gallery to. Bad galleries and models are clear errors."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from test_osnet import _osnet_config
from typer.testing import CliRunner

from reid.cli import app
from reid.models.export import export_model
from reid.models.preprocess import read_onnx_metadata
from reid.service.embedder import Embedder
from reid.service.gallery import Gallery
from reid.service.settings import Settings
from reid.training.engine import Trainer
from reid.training.losses import label_smoothed_ce


def test_per_camera_softmax_ignores_other_cameras_classes():
    logits = torch.randn(3, 5)
    targets = torch.tensor([0, 3, 4])
    every = torch.ones(3, 5, dtype=torch.bool)
    assert label_smoothed_ce(logits, targets, 0.1, every).item() == pytest.approx(
        label_smoothed_ce(logits, targets, 0.1).item(), rel=1e-6)
    cams = torch.tensor([0, 0, 0, 1, 1])  # classes 0–2 in camera 0, 3–4 in camera 1
    allowed = (cams[:, None] == cams[None, :])[targets]
    moved = logits.clone()
    moved[0, 3:] += 50.0  # other cameras' classes: no effect on a camera-0 row
    moved[1:, :3] -= 50.0
    a = label_smoothed_ce(logits, targets, 0.1, allowed)
    assert torch.isfinite(a)
    assert label_smoothed_ce(moved, targets, 0.1, allowed).item() == pytest.approx(a.item(), rel=1e-6)
    # a row's softmax over its own camera only: camera 1 has two classes
    row = label_smoothed_ce(logits[1:2], targets[1:2], 0.0, allowed[1:2])
    assert row.item() == pytest.approx(-torch.log_softmax(logits[1, 3:], 0)[0].item(), rel=1e-6)


def test_per_camera_ids_need_one_camera_per_identity(tmp_path: Path):
    cfg = _osnet_config(tmp_path, "run")
    cfg.loss.per_camera_ids = True  # the tiny sets have people in two and three cameras
    with pytest.raises(ValueError, match="one camera"):
        Trainer(cfg)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported OSNet image model (64×32)."""
    tmp = tmp_path_factory.mktemp("model")
    cfg = _osnet_config(tmp, "run")
    cfg.optim.epochs = 1
    trainer = Trainer(cfg)
    trainer.run()
    export_model(trainer.model.eval(), trainer.cfg.model, tmp / "export", trained_on="unit-test", version="1.0")
    return tmp / "export"


def _weights(model: Path) -> dict[str, np.ndarray]:
    graph = onnx.load(str(model / "image.onnx")).graph
    return {t.name: numpy_helper.to_array(t) for t in graph.initializer
            if t.name.startswith("net.") and t.data_type == onnx.TensorProto.FLOAT}


def _gallery(data: Path, model: Path, tracklets: int) -> None:
    """A real gallery: ``tracklets`` tracklets of 2 crops over two cameras, and two single images."""
    s = Settings(model=model, data_dir=data, intra_op_threads=1)
    emb = Embedder(s)
    g = Gallery(s, emb, background=False)
    rng = np.random.default_rng(0)
    try:
        for i in range(tracklets):
            base = rng.integers(0, 255, (96, 48, 3), dtype=np.uint8)
            frames = [base, np.clip(base.astype(int) + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)]
            g.add_tracklet(frames, f"cam{i % 2}", ts_start=float(i), ts_end=float(i) + 1)
        g.add_images([rng.integers(0, 255, (96, 48, 3), dtype=np.uint8)] * 2, "stills")
    finally:
        g.close()
        emb.close()


def test_adapt_tunes_a_model_on_the_gallery_and_reindex_switches_to_it(model_dir: Path, tmp_path: Path):
    data = tmp_path / "data"
    _gallery(data, model_dir, tracklets=18)
    out, run = tmp_path / "adapted", tmp_path / "run"
    res = CliRunner().invoke(app, ["adapt", "--model", str(model_dir), "--data-dir", str(data), "--out", str(out),
                                   "--epochs", "1", "--run-dir", str(run)])
    assert res.exit_code == 0, res.output
    assert "18 tracklets (36 crops) from 2 camera(s)" in res.output
    with open(run / "gallery" / "train.csv") as f:
        rows = list(csv.DictReader(f))
    assert len({r["pid"] for r in rows}) == 18 and {r["camid"] for r in rows} == {"0", "1"}
    meta = read_onnx_metadata(str(out / "image.onnx"))
    assert meta["reid.version"] == "1.0+adapted"
    assert meta["reid.trained_on"].endswith("adapted on 18 unlabelled tracklets of 2 camera(s), blended 0.5 "
                                            "with the model it started from")
    # the model written is halfway between the start and the adapted net (--blend 1: as trained)
    res = CliRunner().invoke(app, ["adapt", "--model", str(model_dir), "--data-dir", str(data), "--out",
                                   str(tmp_path / "as_trained"), "--epochs", "1", "--run-dir", str(run), "--resume",
                                   "--blend", "1"])
    assert res.exit_code == 0, res.output
    start, trained, written = (_weights(d) for d in (model_dir, tmp_path / "as_trained", out))
    moved = [k for k in written if not np.allclose(start[k], trained[k])]
    assert moved
    for k in moved:
        np.testing.assert_allclose(written[k], 0.5 * start[k] + 0.5 * trained[k], rtol=1e-5, atol=1e-6)
    x = np.random.default_rng(1).integers(0, 255, (3, 96, 48, 3), dtype=np.uint8)
    before = Embedder(Settings(model=model_dir, data_dir=tmp_path / "p1", intra_op_threads=1))
    after = Embedder(Settings(model=out, data_dir=tmp_path / "p2", intra_op_threads=1))
    try:
        a, b = before.embed(list(x)), after.embed(list(x))
    finally:
        before.close()
        after.close()
    assert not np.allclose(a, b, atol=1e-4)  # the weights moved
    res = CliRunner().invoke(app, ["reindex", "--model", str(out), "--data-dir", str(data)])
    assert res.exit_code == 0, res.output


def test_adapt_names_what_is_missing(model_dir: Path, tmp_path: Path):
    runner = CliRunner()
    res = runner.invoke(app, ["adapt", "--model", str(model_dir), "--data-dir", str(tmp_path / "none"),
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no gallery" in res.output and "Traceback" not in res.output
    data = tmp_path / "data"
    _gallery(data, model_dir, tracklets=1)
    res = runner.invoke(app, ["adapt", "--model", str(model_dir), "--data-dir", str(data), "--out", str(tmp_path / "o"),
                              "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 2 and "holds 1 tracklet(s)" in res.output
    res = runner.invoke(app, ["adapt", "--model", str(tmp_path), "--data-dir", str(data), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "not a model directory" in res.output
    res = runner.invoke(app, ["adapt", "--model", str(model_dir), "--data-dir", str(data), "--out", str(tmp_path / "o"),
                              "--blend", "1.5"])
    assert res.exit_code == 2 and "--blend" in res.output
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    shutil.copy(model_dir / "image.onnx", foreign / "image.onnx")  # no model_config.json: not from `reid export`
    _gallery(tmp_path / "data2", model_dir, tracklets=3)
    res = runner.invoke(app, ["adapt", "--model", str(foreign), "--data-dir", str(tmp_path / "data2"),
                              "--out", str(tmp_path / "o"), "--run-dir", str(tmp_path / "run2")])
    assert res.exit_code == 2 and "model_config.json" in res.output
