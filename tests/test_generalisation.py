"""Training for new cameras (issue 10): several datasets as one training set, camera-aware P×K
batches, the colour / resolution / patch augmentations, IBN-a blocks (shapes, behaviour, export
parity), `--resume` across datasets, and the cross-domain bench's readers and protocol."""

from __future__ import annotations

import importlib.util
import random
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO

from reid.models.export import export_model
from reid.models.ibn import IBN, convert_first_batchnorm
from reid.models.mixstyle import MixStyle
from reid.models.networks import ModelConfig, NormalizedEmbedder, build_model
from reid.models.preprocess import PreprocessSpec
from reid.training.config import config_from_dict
from reid.training.datasets import Sample, Split, combine_train, load_split, with_test_identities
from reid.training.engine import Trainer
from reid.training.sampler import RandomIdentitySampler
from reid.training.transforms import AugmentConfig, Augmenter, ImageTrainSet, color_jitter

# ------------------------------------------------------------------------------- several datasets


def test_combine_train_keeps_datasets_apart():
    a = Split("a", train=[Sample("a1", 7, 0), Sample("a2", 7, 1), Sample("a3", 9, 1)])
    b = Split("b", train=[Sample("b1", 7, 0, trackid=3), Sample("b2", 2, 4, trackid=5)])
    out = combine_train([a, b])
    assert [(s.path, s.pid, s.camid, s.trackid) for s in out] == [
        ("a1", 0, 0, -1), ("a2", 0, 1, -1), ("a3", 1, 1, -1),  # a: ids 7, 9 → 0, 1; cameras 0, 1
        ("b1", 3, 2, 0), ("b2", 2, 3, 1)]  # b: ids 2, 7 → 2, 3 (its own); cameras 0, 4 → 2, 3


# ------------------------------------------------------------------------ camera-aware sampling

# identity → cameras of its items: 10 has 6 items over cameras 0/1/2, 20 one camera, 30 two cameras
PIDS = [10] * 6 + [20] * 5 + [30] * 9
CAMS = [0, 0, 0, 0, 1, 2] + [5] * 5 + [3] * 8 + [4]
K = 4


def test_camera_aware_chunks_cross_cameras():
    s = RandomIdentitySampler(PIDS, num_instances=K, seed=3, camids=CAMS)
    plain = RandomIdentitySampler(PIDS, num_instances=K, seed=3)
    order = list(s)
    assert len(order) == len(s) == len(list(plain))  # same epoch length as the plain rule
    chunks = [order[i:i + K] for i in range(0, len(order), K)]
    for c in chunks:
        assert len({PIDS[i] for i in c}) == 1
        pid = PIDS[c[0]]
        cams_of_pid = {CAMS[i] for i, p in enumerate(PIDS) if p == pid}
        # every chunk spans as many cameras as K and the identity allow
        assert len({CAMS[i] for i in c}) == min(K, len(cams_of_pid))
    # identity 30's single camera-4 item appears in each of its chunks, not just once
    assert Counter(order)[19] == Counter(PIDS[c[0]] for c in chunks)[30]
    # the plain sampler, by contrast, mostly gives identity 30 one camera per chunk
    plain_chunks = [list(plain)[i:i + K] for i in range(0, len(plain), K)]
    assert any(len({CAMS[i] for i in c}) == 1 for c in plain_chunks if PIDS[c[0]] == 30)


def test_camera_aware_sampler_is_seeded_and_checks_lengths():
    a = RandomIdentitySampler(PIDS, K, seed=5, camids=CAMS)
    b = RandomIdentitySampler(PIDS, K, seed=5, camids=CAMS)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    with pytest.raises(ValueError, match="camera ids"):
        RandomIdentitySampler(PIDS, K, camids=CAMS[:-1])


# ---------------------------------------------------------------------------- augmentations

SPEC = PreprocessSpec(height=64, width=32)


def _crop(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((64, 32, 3), np.uint8)
    img[:32] = (200, 40, 30)  # a red top
    img[32:] = (20, 60, 180)  # blue trousers
    return np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("cfg", [
    AugmentConfig(flip=False, erasing=0, color_jitter=1.0, jitter_strength=0.4),
    AugmentConfig(flip=False, erasing=0, grayscale=1.0),
    AugmentConfig(flip=False, erasing=0, downscale=1.0, downscale_min=0.3),
], ids=["jitter", "grayscale", "downscale"])
def test_photometric_augmentations_range_change_and_seed(cfg):
    aug, img = Augmenter(cfg, SPEC), _crop()
    out = aug.photometric(img, random.Random(4))
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.abs(out.astype(int) - img).mean() > 1.0  # it really changed the crop
    assert np.array_equal(out, aug.photometric(img, random.Random(4)))  # same seed, same crop
    assert np.array_equal(img, _crop())  # the stored crop is never modified in place


def test_grayscale_has_equal_channels_and_jitter_keeps_a_grey_grey():
    gray = Augmenter(AugmentConfig(grayscale=1.0), SPEC).photometric(_crop(), random.Random(0))
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])
    grey = np.full((8, 8, 3), 128, np.uint8)
    out = color_jitter(grey, random.Random(1), 0.3)
    assert np.ptp(out.reshape(-1, 3), axis=1).max() <= 2  # saturation/hue cannot colour a grey


def test_patch_pastes_a_piece_of_the_other_crop():
    aug = Augmenter(AugmentConfig(patch=1.0), SPEC)
    img, other = np.zeros((64, 32, 3), np.uint8), np.full((64, 32, 3), 255, np.uint8)
    out = aug.paste_patch(img, other, random.Random(2))
    pasted = (out == 255).all(axis=2)
    ys, xs = np.nonzero(pasted)
    assert 0.01 * 64 * 32 * 0.5 <= pasted.sum() <= 0.15 * 64 * 32 * 1.5
    assert pasted[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()  # one rectangle
    assert not img.any()


def test_image_train_set_is_deterministic_under_a_seed(tmp_path: Path):
    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.png"
        cv2.imwrite(str(p), _crop(i))
        paths.append(Sample(str(p), i % 2, i % 2))
    cfg = AugmentConfig(color_jitter=0.5, grayscale=0.3, downscale=0.5, patch=0.5, erasing=0.5)
    a, b = ImageTrainSet(paths, SPEC, cfg, seed=9), ImageTrainSet(paths, SPEC, cfg, seed=9)
    for i in range(4):
        xa, xb = a[i][0], b[i][0]
        assert torch.equal(xa, xb) and xa.shape == (3, 64, 32) and torch.isfinite(xa).all()


# -------------------------------------------------------------------------------------- IBN-a


def test_ibn_from_batchnorm_keeps_the_bn_half_and_normalises_each_image():
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(8)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    bn.eval()
    ibn = IBN.from_batchnorm(bn).eval()
    x = torch.randn(3, 8, 6, 5) * 4 + 2
    y = ibn(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y[:, 4:], bn(x)[:, 4:])  # BatchNorm half unchanged
    # InstanceNorm half: per image and channel, mean = β and std = γ (whatever the input scale)
    inst = y[:, :4].flatten(2)
    torch.testing.assert_close(inst.mean(-1), bn.bias[:4].expand(3, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(inst.std(-1, unbiased=False), bn.weight[:4].abs().expand(3, 4), atol=1e-3, rtol=0)
    # an image's InstanceNorm half does not depend on the other images in the batch, even training
    ibn.train()
    torch.testing.assert_close(ibn(x)[:1, :4], ibn(torch.cat([x[:1], 10 * x[1:]]))[:1, :4])
    with pytest.raises(ValueError):
        IBN(1)


def test_ibn_replaces_the_first_norm_of_each_block_in_the_named_stages():
    cfg = ModelConfig(arch="baseline", pretrained=None, height=64, width=32, num_classes=3,
                      ibn=["layer1", "layer2", "layer3"])
    model = build_model(cfg)
    stages = model.backbone.stages
    for name in ("layer1", "layer2", "layer3"):
        for block in stages[name]:
            first = next(m for m in block.modules() if isinstance(m, IBN | torch.nn.BatchNorm2d))
            assert isinstance(first, IBN)
            assert sum(isinstance(m, IBN) for m in block.modules()) == 1
    assert not any(isinstance(m, IBN) for s in ("stem", "layer4") for m in stages[s].modules())
    model.train()
    logits, feat = model(torch.randn(4, 3, 64, 32))
    assert logits.shape == (4, 3) and feat.shape == (4, 1280)
    assert not convert_first_batchnorm(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="unknown stage"):
        build_model(ModelConfig(pretrained=None, ibn=["layer9"]))


def test_ibn_export_parity(tmp_path: Path):
    from test_export import TOL, build_realistic, ort_run

    torch.manual_seed(4)
    cfg = ModelConfig(arch="baseline", pretrained=None, height=64, width=32, num_classes=3,
                      ibn=["layer1", "layer2", "layer3"])
    model = build_realistic(cfg)
    paths = export_model(model, cfg, tmp_path, trained_on="unit-test")
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 32)).astype(np.float32)
    with torch.no_grad():
        ref = NormalizedEmbedder(model.eval())(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ort_run(paths[0], x), ref, atol=TOL)
    # one image alone gives the same vector as in a batch (no batch statistics in the graph)
    np.testing.assert_allclose(ort_run(paths[0], x[1:2]), ref[1:2], atol=TOL)


def test_mixstyle_swaps_channel_statistics_in_training_only():
    torch.manual_seed(0)
    x = torch.randn(6, 4, 5, 3) * torch.arange(1, 7.0).view(6, 1, 1, 1) + torch.arange(6.0).view(6, 1, 1, 1)
    block = MixStyle(4, p=1.0)
    block.train()
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    # each output keeps its image's normalised content: only mean and std per channel change
    def normed(t):
        return (t - t.mean((2, 3), keepdim=True)) / t.std((2, 3), keepdim=True, unbiased=False)
    torch.testing.assert_close(normed(y), normed(x), atol=1e-3, rtol=0)
    # its statistics now lie between its own and another image's, and some moved
    mu_x, mu_y = x.mean((2, 3)), y.mean((2, 3))
    lo, hi = mu_x.min(0).values - 1e-4, mu_x.max(0).values + 1e-4
    assert ((mu_y >= lo) & (mu_y <= hi)).all()
    assert (mu_y - mu_x).abs().max() > 0.1
    # the same seed mixes the same way
    torch.manual_seed(3)
    a = block(x)
    torch.manual_seed(3)
    torch.testing.assert_close(block(x), a)
    # the identity at inference, with p = 0, and for a batch of one
    assert torch.equal(block.eval()(x), x)
    assert torch.equal(MixStyle(4, p=0.0).train()(x), x)
    assert torch.equal(block.train()(x[:1]), x[:1])


def test_mixstyle_after_stages_trains_and_exports_as_the_plain_net(tmp_path: Path):
    from test_export import TOL, ort_run

    torch.manual_seed(2)
    cfg = ModelConfig(arch="baseline", backbone="osnet_x0_25", pretrained=None, neck="fc", height=64, width=32,
                      num_classes=3, mixstyle_after=["layer1", "layer2"])
    model = build_model(cfg)
    assert [type(s[-1]).__name__ for s in (model.backbone.stages["layer1"], model.backbone.stages["layer2"])] == [
        "MixStyle", "MixStyle"]
    logits, feat = model.train()(torch.randn(4, 3, 64, 32))
    assert logits.shape == (4, 3) and feat.shape == (4, 512)
    plain = build_model(ModelConfig(**{**cfg.to_dict(), "mixstyle_after": []}))
    plain.load_state_dict(model.state_dict())  # no weights of its own: the same state dict
    paths = export_model(model.eval(), cfg, tmp_path, trained_on="unit-test")
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 32)).astype(np.float32)
    with torch.no_grad():
        ref = NormalizedEmbedder(plain.eval())(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ort_run(paths[0], x), ref, atol=TOL)
    with pytest.raises(ValueError, match="unknown stage"):
        build_model(ModelConfig(**{**cfg.to_dict(), "mixstyle_after": ["layer9"]}))


# ------------------------------------------------------------------- resume across datasets


def _market_like(root: Path, ids: range, cams: int, per_cam: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        (root / sub).mkdir(parents=True)
    for pid in ids:
        colour = rng.integers(0, 255, 3)
        for cam in range(1, cams + 1):
            for k in range(per_cam):
                img = np.clip(colour + rng.integers(-30, 30, (48, 24, 3)), 0, 255).astype(np.uint8)
                sub = "bounding_box_train" if pid < ids.start + len(ids) - 2 else ("query" if cam == 1 else
                                                                                  "bounding_box_test")
                cv2.imwrite(str(root / sub / f"{pid:04d}_c{cam}s1_{k:06d}_00.jpg"), img)
    return root


def _tiny_config(tmp_path: Path, out: str) -> object:
    a = _market_like(tmp_path / "a", range(1, 7), cams=2, per_cam=2, seed=0)
    b = _market_like(tmp_path / "b", range(1, 6), cams=3, per_cam=1, seed=1)
    return config_from_dict({
        "model": {"arch": "baseline", "pretrained": None, "height": 32, "width": 16, "ibn": ["layer1"]},
        "data": {"train": [{"root": str(a), "format": "market1501"}, {"root": str(b), "format": "dukemtmc"}],
                 "eval": {"root": str(b), "format": "dukemtmc"}},
        "optim": {"epochs": 2, "milestones": [1]},
        "augment": {"color_jitter": 0.5, "downscale": 0.5},
        "batch_ids": 2, "num_instances": 2, "eval_every": 0, "threads": 1, "max_batches_per_epoch": 2,
        "output_dir": str(tmp_path / out)})


def test_resume_across_datasets_matches_an_uninterrupted_run(tmp_path: Path):
    straight = Trainer(_tiny_config(tmp_path / "s", "run"))
    assert straight.cfg.model.num_classes == 4 + 3  # 6−2 train ids of a + 5−2 of b, kept apart
    assert "market1501 train (16 items)" in straight.trained_on and "dukemtmc train (9 items)" in straight.trained_on
    straight.run()
    first = _tiny_config(tmp_path / "r", "run")
    first.optim.epochs = 1
    Trainer(first).run()
    resumed_cfg = _tiny_config(tmp_path / "r2", "unused")
    resumed_cfg.output_dir, resumed_cfg.data = first.output_dir, first.data
    resumed = Trainer(resumed_cfg)
    resumed.run(resume=True)
    assert resumed.start_epoch == 1
    for (k, v), v2 in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(v, v2), k


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown keys"):
        config_from_dict({"data": {"train": [{"root": "x", "format": "cuhk03", "colour": 1}]}})
    with pytest.raises(ValueError, match="at least one"):
        config_from_dict({"data": {"train": []}})


def test_with_test_adds_the_test_people_as_new_identities(tmp_path: Path):
    market = Split("market1501", train=[Sample("t1", 2, 0), Sample("t2", 7, 1, trackid=4)],
                   query=[Sample("q1", 7, 0, trackid=0), Sample("q0", 0, 1)],
                   gallery=[Sample("g1", 7, 1, trackid=1), Sample("g2", 5, 0)])
    out = with_test_identities(market)
    # test ids after the train ones (8 + id: person 7 of the test split is not train's person 7),
    # tracklets likewise (5 + id), Market's distractor id 0 dropped, nothing left to test on
    assert [(s.path, s.pid, s.camid, s.trackid) for s in out.train] == [
        ("t1", 2, 0, -1), ("t2", 7, 1, 4), ("q1", 15, 0, 5), ("g1", 15, 1, 6), ("g2", 13, 0, -1)]
    assert out.query == out.gallery == []
    cuhk = with_test_identities(Split("cuhk03", train=[Sample("t", 3, 0)], query=[Sample("q", 0, 1)]))
    assert [(s.path, s.pid) for s in cuhk.train] == [("t", 3), ("q", 4)]  # CUHK03's id 0 is a person

    cfg = _tiny_config(tmp_path, "run")
    cfg.data.train[0].with_test = True
    trainer = Trainer(cfg)
    assert cfg.model.num_classes == 6 + 3  # a's 4 train + 2 test people, b's 3
    assert "market1501 train + test (24 items)" in trainer.trained_on


def test_a_with_test_source_cannot_be_the_eval_set():
    a, b = {"root": "a", "format": "market1501"}, {"root": "b", "format": "dukemtmc"}
    with pytest.raises(ValueError, match="test people are seen in training"):
        config_from_dict({"data": {"train": [a, {**b, "with_test": True}], "eval": b}})
    with pytest.raises(ValueError, match="test people are seen in training"):  # eval defaults to the first
        config_from_dict({"data": {"train": [{**a, "with_test": True}, b]}})
    config_from_dict({"data": {"train": [{**a, "with_test": True}], "eval": b}})


# ------------------------------------------------------------- the cross-domain bench's protocol


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_accuracy", REPO / "bench" / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_accuracy", module)
    spec.loader.exec_module(module)
    return module


def _partial_sets(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    reid, ilids = root / "Partial-REID_Dataset", root / "Partial_iLIDS"
    for d in ("occluded_body_images", "whole_body_images"):
        (reid / d).mkdir(parents=True)
    for d in ("Probe", "Gallery"):
        (ilids / d).mkdir(parents=True)
    for pid in range(1, 4):
        person = rng.integers(0, 255, (48, 24, 3)).astype(np.uint8)
        for k in range(1, 3):
            cv2.imwrite(str(reid / "whole_body_images" / f"{pid:03d}_{k:03d}.jpg"), person)
            occluded = person.copy()
            occluded[30:] = 128  # the lower body hidden
            cv2.imwrite(str(reid / "occluded_body_images" / f"{pid:03d}_{k:03d}.jpg"), occluded)
        cv2.imwrite(str(ilids / "Probe" / f"{pid}.jpg"), person[:30])
        cv2.imwrite(str(ilids / "Gallery" / f"{pid}.jpg"), person)
    return reid, ilids


def test_partial_readers_on_hand_built_sets(tmp_path: Path):
    reid, ilids = _partial_sets(tmp_path)
    s = load_split(tmp_path, "partial_reid")  # found one folder down
    assert (len(s.query), len(s.gallery)) == (6, 6)
    assert {q.camid for q in s.query} == {0} and {g.camid for g in s.gallery} == {1}
    assert sorted({q.pid for q in s.query}) == [1, 2, 3]
    s = load_split(ilids, "partial_ilids")
    assert (len(s.query), len(s.gallery)) == (3, 3) and {q.pid for q in s.query} == {1, 2, 3}
    (ilids / "Probe" / "x.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="unexpected file name"):
        load_split(ilids, "partial_ilids")


def test_bench_marks_in_domain_only_where_a_model_trained_on_those_cameras():
    bench = _load_bench()
    results = {f"{m}|{s}|i2i": {"rank1": 50.0, "mAP": 40.0, "mINP": 30.0, "command": f"reid eval {m} {s}"}
               for m in ("v2", "osnet") for s in ("duke", "partial_reid")}
    results["speed|v2"] = {"img_s": 500.0, "peer_img_s": 400.0, "vs_peer": 1.25, "date": "2026-12-07"}
    lines = bench.render(results, {"v2": 1.25})
    v2 = next(line for line in lines if line.startswith(f"| {bench.MODELS['v2'].name} |"))
    osnet = next(line for line in lines if line.startswith(f"| {bench.MODELS['osnet'].name} |"))
    assert "50.0 / 40.0 in" in v2 and "50.0 / 40.0 ×" in v2  # Duke in-domain, Partial-REID never seen
    speed = lambda line: line.split("|")[-3].strip()  # noqa: E731 — the column before "made by"
    assert (speed(v2), speed(osnet)) == ("1.25×", "—")  # a multiple of the peer's, where measured
    assert not any("500" in line for line in lines)  # stored speeds are not eval cells or commands
    assert " in " not in osnet.split("|", 2)[2]  # the peer saw none of these cameras
    assert set(bench.HELD_OUT) <= set(bench.SETS)
    assert not {bench.SETS[s].domain for s in bench.HELD_OUT} - {""}  # held-out sets: nobody trains there
