"""The OSNet-x0.25 backbone (reid.models.osnet): the MSMT17 export's weights land where they belong
(same function as the ONNX file), a wrong file is a clear error, it trains with the fine-tuning
knobs (backbone lr scale, retention loss), survives `--resume` and exports with parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import shared_path
from test_generalisation import _tiny_config

from reid.models.export import export_checkpoint, export_model
from reid.models.networks import ModelConfig, NormalizedEmbedder, build_model
from reid.models.osnet import _module_path, osnet_x0_25
from reid.training.engine import Trainer


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_onnx_scopes_map_to_backbone_stages():
    assert _module_path("/conv1/conv/Conv_output_0") == "stem.0.conv"
    assert _module_path("/conv2/conv2.0/conv2b/conv2b.1/conv1/Conv_output_0") == "layer1.0.conv2b.1.conv1"
    assert _module_path("/conv3/conv3.1/gate/fc2_3/Conv_output_0") == "layer2.1.gate.fc2"  # reused gate
    assert _module_path("/conv3/conv3.2/conv3.2.0/conv/Conv_output_0") == "layer2.2.0.conv"  # transition
    assert _module_path("/conv5/conv/Conv_output_0") == "layer4.0.conv"


def test_msmt17_weights_reproduce_the_onnx_export():
    src = shared_path("weights", "osnet_x0_25_msmt17.onnx")
    cfg = ModelConfig(backbone="osnet_x0_25", pretrained=str(src), neck="fc", height=256, width=128)
    model = build_model(cfg).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 256, 128)).astype(np.float32)
    with torch.no_grad():
        ours = model(torch.from_numpy(x)).numpy()
    theirs = _ort(src, x)
    assert model.embedding_dim == 512
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3 * np.abs(theirs).max())


def test_random_osnet_stage_shapes():
    backbone = osnet_x0_25(weights=None)
    x = torch.zeros(1, 3, 128, 64)
    shapes = {}
    for name, stage in backbone.stages.items():
        x = stage(x)
        shapes[name] = tuple(x.shape[1:])
    assert shapes == {"stem": (16, 32, 16), "layer1": (64, 16, 8), "layer2": (96, 8, 4),
                      "layer3": (128, 8, 4), "layer4": (128, 8, 4)}
    assert backbone.info.strides["layer4"] == 16


def test_a_wrong_onnx_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ValueError, match="no ImageNet OSNet weights"):
        build_model(ModelConfig(backbone="osnet_x0_25", pretrained="imagenet", neck="fc"))
    with pytest.raises(FileNotFoundError, match="OSNet weights not found"):
        osnet_x0_25(weights=tmp_path / "missing.onnx")
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("not a model")
    with pytest.raises(ValueError, match="not an ONNX file"):
        osnet_x0_25(weights=not_onnx)
    other = tmp_path / "other.onnx"
    node = onnx.helper.make_node("Conv", ["x", "w"], ["/head/conv/Conv_output_0"])
    w = onnx.numpy_helper.from_array(np.zeros((4, 3, 1, 1), np.float32), "w")
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", 1, [1, 3, 4, 4])],
                                   [onnx.helper.make_tensor_value_info("/head/conv/Conv_output_0", 1, None)],
                                   [w])
    onnx.save(onnx.helper.make_model(graph), other)
    with pytest.raises(ValueError, match="not an OSNet export"):
        osnet_x0_25(weights=other)


def _osnet_config(tmp_path: Path, out: str, **loss):
    cfg = _tiny_config(tmp_path, out)
    cfg.model.backbone, cfg.model.neck, cfg.model.ibn = "osnet_x0_25", "fc", []
    cfg.model.height, cfg.model.width = 64, 32
    cfg.optim.backbone_lr_scale = 0.25
    for k, v in loss.items():
        setattr(cfg.loss, k, v)
    return cfg


def test_fine_tuning_knobs_lr_scale_and_retention(tmp_path: Path):
    torch.manual_seed(0)
    trainer = Trainer(_osnet_config(tmp_path, "run", retain_weight=1.0))
    lrs = {g["lr_scale"]: len(g["params"]) for g in trainer.optimizer.param_groups}
    assert lrs[1.0] == 2 and lrs[0.25] > 100  # classifier weight + bias; everything else scaled
    x = torch.rand(4, 3, 64, 32)
    pids = torch.tensor([0, 0, 1, 1])
    trainer.model.train()
    losses = trainer.losses(x, pids)
    # the frozen initial net is the model itself at first: no retention loss until the weights move
    assert losses["retain"].item() == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        for p in trainer.model.backbone.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    assert trainer.losses(x, pids)["retain"].item() > losses["retain"].item()
    assert all(not p.requires_grad for p in trainer.initial.parameters())
    trainer.run()
    lr = trainer.cfg.optim.lr * trainer.cfg.optim.gamma  # epoch 2, after the milestone
    assert [g["lr"] for g in trainer.optimizer.param_groups] == pytest.approx([lr * 0.25, lr])


def test_osnet_resume_and_export_parity(tmp_path: Path):
    straight = Trainer(_osnet_config(tmp_path / "s", "run", retain_weight=0.5))
    straight.run()
    first = _osnet_config(tmp_path / "r", "run", retain_weight=0.5)
    first.optim.epochs = 1
    Trainer(first).run()
    again = _osnet_config(tmp_path / "r2", "unused", retain_weight=0.5)
    again.output_dir, again.data = first.output_dir, first.data
    resumed = Trainer(again)
    resumed.run(resume=True)
    for (k, v), v2 in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.allclose(v, v2, atol=1e-6), k
    model = resumed.model.eval()
    paths = export_model(model, resumed.cfg.model, tmp_path / "export", trained_on="unit-test")
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 32)).astype(np.float32)
    with torch.no_grad():
        ref = NormalizedEmbedder(model)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_ort(paths[0], x), ref, atol=1e-4)


def test_bad_fine_tuning_settings_are_clear_errors(tmp_path: Path):
    from test_generalisation import config_from_dict

    with pytest.raises(ValueError, match="backbone_lr_scale must be ≥ 0"):
        config_from_dict({"optim": {"backbone_lr_scale": -1}})
    with pytest.raises(ValueError, match="retain_weight must be ≥ 0"):
        config_from_dict({"loss": {"retain_weight": -0.5}})
    cfg = _osnet_config(tmp_path, "tkp", distill_weight=1.0, distill_from=str(tmp_path / "teacher.pt"))
    cfg.model.arch, cfg.model.nl_after = "tkp", ["layer2.0"]
    with pytest.raises(ValueError, match="image nets"):
        Trainer(cfg)


def test_train_cli_names_a_bad_backbone_setting_without_a_traceback(tmp_path: Path):
    import subprocess
    import sys

    import yaml

    cfg = _osnet_config(tmp_path, "run").to_dict()
    cfg["model"]["pretrained"] = "imagenet"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = subprocess.run([sys.executable, "-m", "reid.cli", "train", str(path)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "no ImageNet OSNet weights" in res.stderr and "Traceback" not in res.stderr


def test_distillation_from_a_larger_teacher(tmp_path: Path):
    """A 32×16 MobileNetV2 student learns the batch similarities of a 64×32 OSNet teacher."""
    teacher_cfg = _osnet_config(tmp_path / "t", "teacher")
    teacher_cfg.optim.epochs = 1
    checkpoint = Trainer(teacher_cfg).run()
    student_cfg = _tiny_config(tmp_path / "s", "student")
    student_cfg.loss.distill_weight, student_cfg.loss.distill_from = 2.0, str(checkpoint)
    student = Trainer(student_cfg)
    assert student.teacher_size == (64, 32) and not any(p.requires_grad for p in student.teacher.parameters())
    x = torch.rand(4, 3, 32, 16)
    with torch.no_grad():
        t = student.teacher(torch.nn.functional.interpolate(x, size=(64, 32), mode="bilinear", align_corners=False))
    assert student._distill(x, t).item() == pytest.approx(0.0, abs=1e-6)  # the teacher's own similarities
    assert student._distill(x, torch.randn(4, 24)).item() > 0.01
    student.model.train()
    losses = student.losses(x, torch.tensor([0, 0, 1, 1]))
    assert losses["distill"].requires_grad and losses["distill"].item() > 0
    student.run()
    with open(student.out / "log.csv") as f:
        assert "distill" in f.readline()
    bad = _tiny_config(tmp_path / "b", "bad")
    with pytest.raises(ValueError, match="distill_from"):
        bad.loss.__class__(distill_weight=1.0)


def test_weight_averaging_is_the_mean_of_every_step_survives_resume_and_exports(tmp_path: Path):
    cfg = _osnet_config(tmp_path / "s", "run", retain_weight=0.5)
    cfg.optim.average_from = 2
    straight = Trainer(cfg)
    after_step: list[dict[str, torch.Tensor]] = []
    straight.optimizer.register_step_post_hook(
        lambda *_: after_step.append({k: v.detach().clone() for k, v in straight.model.state_dict().items()}))
    straight.run()
    averaged = torch.load(straight.averaged_path(), weights_only=False)
    epoch2 = after_step[len(after_step) // 2:]  # two epochs of max_batches_per_epoch steps each
    assert averaged["averaged_steps"] == len(epoch2) == 2
    for k, v in averaged["model"].items():
        if v.is_floating_point():
            assert torch.allclose(v, torch.stack([s[k] for s in epoch2]).mean(0), atol=1e-6), k
    assert not torch.equal(averaged["model"]["classifier.weight"], straight.model.state_dict()["classifier.weight"])

    first = _osnet_config(tmp_path / "r", "run", retain_weight=0.5)
    first.optim.average_from, first.optim.epochs = 2, 1
    Trainer(first).run()
    assert not (first.out / "averaged.pt").exists()  # nothing averaged before epoch 2
    again = _osnet_config(tmp_path / "r2", "unused", retain_weight=0.5)
    again.optim.average_from = 2
    again.output_dir, again.data = first.output_dir, first.data
    resumed = Trainer(again)
    resumed.run(resume=True)
    theirs = torch.load(resumed.averaged_path(), weights_only=False)["model"]
    for k, v in averaged["model"].items():
        assert torch.allclose(v.float(), theirs[k].float(), atol=1e-6), k
    assert export_checkpoint(resumed.averaged_path(), tmp_path / "export")[0].is_file()


def test_weight_averaging_outside_the_epochs_is_a_clear_error():
    from test_generalisation import config_from_dict

    with pytest.raises(ValueError, match="average_from must be 0 .* from 1 to optim.epochs"):
        config_from_dict({"optim": {"epochs": 4, "average_from": 5}})
