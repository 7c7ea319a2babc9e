"""TKP started from a trained image model (``model.init_from``, issue 10): the image net is that model
(same embeddings as its export), the video net starts as the same function (non-local blocks are
identities), the retention loss works for TKP's image net, and bad sources are clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from test_osnet import _ort, _osnet_config

from reid.models.export import export_model
from reid.models.networks import ModelConfig, NormalizedEmbedder, build_model, init_from_trained
from reid.training.config import DataConfig
from reid.training.engine import Trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ModelConfig]:
    """A tiny OSNet image model trained one epoch: (its checkpoint, its export dir, its config)."""
    tmp = tmp_path_factory.mktemp("image")
    cfg = _osnet_config(tmp, "run")
    cfg.optim.epochs = 1
    trainer = Trainer(cfg)
    ckpt = trainer.run()
    export = tmp / "export"
    export_model(trainer.model.eval(), trainer.cfg.model, export, trained_on="unit-test")
    return ckpt, export, trainer.cfg.model


def _tkp_config(image_cfg: ModelConfig, source: Path) -> ModelConfig:
    return ModelConfig.from_dict({**image_cfg.to_dict(), "arch": "tkp", "pretrained": None,
                                  "init_from": str(source), "nl_after": ["layer2.0", "layer3.1"]})


@pytest.mark.parametrize("kind", ["checkpoint", "export"])
def test_tkp_starts_from_the_trained_image_model(trained, kind: str):
    ckpt, export, image_cfg = trained
    model = build_model(_tkp_config(image_cfg, ckpt if kind == "checkpoint" else export)).eval()
    x = np.random.default_rng(2).standard_normal((3, 3, 64, 32)).astype(np.float32)
    with torch.no_grad():
        ours = NormalizedEmbedder(model.image_net)(torch.from_numpy(x)).numpy()
        clip = torch.from_numpy(x[:1]).unsqueeze(1).repeat(1, 4, 1, 1, 1)  # one frame four times
        video = model.video_net(clip)[0]
        image = model.image_net(torch.from_numpy(x[:1]))[0]
    np.testing.assert_allclose(ours, _ort(export / "image.onnx", x), atol=1e-4)
    # a still clip through fresh non-local blocks gives the image net's embedding
    torch.testing.assert_close(video, image, atol=1e-4, rtol=1e-4)


def test_a_source_that_does_not_fit_is_a_clear_error(trained, tmp_path: Path):
    ckpt, _, image_cfg = trained
    with pytest.raises(FileNotFoundError, match="init_from"):
        build_model(_tkp_config(image_cfg, tmp_path / "missing.pt"))
    other = ModelConfig(backbone="mobilenetv2", pretrained=None, neck="bn", height=64, width=32, init_from=str(ckpt))
    with pytest.raises(ValueError, match="does not fit"):
        build_model(other)
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        init_from_trained(build_model(ModelConfig(pretrained=None)), Path(__file__))
    foreign = tmp_path / "foreign.onnx"  # a model not exported by reid: no net.* weights
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", 1, [1])],
                                   [onnx.helper.make_tensor_value_info("y", 1, [1])],
                                   [onnx.numpy_helper.from_array(np.zeros(1, np.float32), "w")])
    onnx.save(onnx.helper.make_model(graph), foreign)
    with pytest.raises(ValueError, match="not a reid export"):
        init_from_trained(build_model(ModelConfig(pretrained=None)), foreign)


def test_tkp_trains_with_retention_from_the_image_model(trained, tmp_path: Path):
    ckpt, _, image_cfg = trained
    cfg = _osnet_config(tmp_path, "tkp", retain_weight=1.0)
    cfg.model = _tkp_config(image_cfg, ckpt)
    cfg.augment.color_jitter = 1.0
    trainer = Trainer(cfg)
    x, pids = next(iter(trainer.loader))
    assert x.ndim == 5  # clips
    trainer.model.train()
    losses = trainer.losses(x, pids)
    # the frozen initial image net is the one loaded: nothing to retain yet
    assert losses["retain"].item() == pytest.approx(0.0, abs=1e-5)
    assert {"ce_vid", "ce_img", "tkp_f", "tkp_d", "i2v"} <= set(losses)
    # a cosine-metric net propagates between unit vectors: squared distances are at most 4
    assert 0 <= losses["tkp_f"].item() <= 4 * cfg.loss.tkp_feature_weight
    trainer.cfg.loss.triplet_metric = "euclidean"  # the paper's raw features: another scale
    assert trainer.losses(x, pids)["tkp_f"].item() != pytest.approx(losses["tkp_f"].item(), rel=1e-3)
    trainer.cfg.loss.triplet_metric = "cosine"
    trainer.run()
    # the trained pair exports as image.onnx + video.onnx, and the video model embeds clips in ORT
    from reid.training.evaluate import OnnxEmbedder

    image_onnx, video_onnx = export_model(trainer.model.eval(), trainer.cfg.model, tmp_path / "export")
    assert video_onnx.name == "video.onnx"
    frames = [(np.random.default_rng(i).random((80, 40, 3)) * 255).astype(np.uint8) for i in range(5)]
    emb = OnnxEmbedder(tmp_path / "export")
    clips = emb.embed_clips([frames, frames[:2]])
    assert emb.has_video and clips.shape == (2, trainer.model.video_net.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(clips, axis=1), 1.0, atol=1e-5)


def test_tkp_keeps_the_classifier_of_a_run_on_the_same_data(trained, tmp_path: Path):
    """Same training sets → same identity labels, so TKP starts from the image run's classifier;
    other data → a fresh one (its labels would mean other people)."""
    ckpt, _, image_cfg = trained
    source = torch.load(ckpt, map_location="cpu", weights_only=False)
    same = _osnet_config(tmp_path / "same", "tkp")
    same.model = _tkp_config(image_cfg, ckpt)
    same.data = DataConfig(**source["train_config"]["data"])
    carried = Trainer(same)
    assert carried.classifier_from == str(ckpt)
    torch.testing.assert_close(carried.model.classifier.weight, source["model"]["classifier.weight"])
    other = _osnet_config(tmp_path / "other", "tkp")  # the same layout, written to another folder
    other.model = _tkp_config(image_cfg, ckpt)
    fresh = Trainer(other)
    assert fresh.classifier_from is None
    assert not torch.allclose(fresh.model.classifier.weight, source["model"]["classifier.weight"])


def test_a_clip_gets_one_photometric_change(tmp_path: Path):
    """Colour jitter, grayscale and down-scaling are drawn once per clip: a tracklet of one image
    repeated stays four identical frames, and different clips differ."""
    import cv2

    from reid.models.preprocess import PreprocessSpec
    from reid.training.datasets import Tracklet
    from reid.training.transforms import AugmentConfig, ClipTrainSet

    img = (np.random.default_rng(0).random((64, 32, 3)) * 255).astype(np.uint8)
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, img)
    aug = AugmentConfig(flip=True, pad=0, erasing=1.0, color_jitter=1.0, grayscale=0.3, downscale=0.5)
    clips = ClipTrainSet([Tracklet(0, 0, 0, (path,) * 5)], PreprocessSpec(height=64, width=32), aug, seq_len=4,
                         stride=1, seed=3)
    firsts = []
    for _ in range(4):
        frames, _pid = clips[0]
        assert all(torch.equal(frames[0], f) for f in frames[1:])
        firsts.append(frames[0])
    assert any(not torch.equal(firsts[0], f) for f in firsts[1:])
