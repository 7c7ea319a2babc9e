"""Each loss on a case small enough to compute by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from reid.training.losses import (
    batch_hard_triplet,
    label_smoothed_ce,
    pairwise_distance,
    tkp_distance_loss,
    tkp_feature_loss,
    tkp_triplets,
)


def _line(*xs: float) -> torch.Tensor:
    """1-D positions as 2-D features [x, 0], so Euclidean distances are |x_i − x_j|."""
    return torch.tensor([[x, 0.0] for x in xs], dtype=torch.float64)


def test_label_smoothed_ce_by_hand():
    # softmax(log 1, log 2, log 1) = (1/4, 1/2, 1/4); target 1, ε = 0.1, K = 3:
    # q = (ε/3, 1 − ε + ε/3, ε/3) → loss = −(2·(ε/3)·log ¼ + (0.9 + ε/3)·log ½)
    logits = torch.log(torch.tensor([[1.0, 2.0, 1.0]], dtype=torch.float64))
    target = torch.tensor([1])
    expected = -(2 * (0.1 / 3) * math.log(0.25) + (0.9 + 0.1 / 3) * math.log(0.5))
    assert label_smoothed_ce(logits, target, 0.1).item() == pytest.approx(expected, rel=1e-9)
    # ε = 0 is plain cross-entropy: −log ½
    assert label_smoothed_ce(logits, target, 0.0).item() == pytest.approx(math.log(2), rel=1e-9)
    # batch mean over rows
    two = torch.cat([logits, logits.flip(1)])
    got = label_smoothed_ce(two, torch.tensor([1, 0]), 0.0).item()
    assert got == pytest.approx(F.cross_entropy(two, torch.tensor([1, 0])).item())


def test_batch_hard_triplet_euclidean_by_hand():
    # x = 0, 2 (pid 0) and 3, 6 (pid 1), margin 0.3
    #   x=0: d_ap = 2, d_an = 3 → 0;        x=2: d_ap = 2, d_an = 1 → 1.3
    #   x=3: d_ap = 3, d_an = 1 → 2.3;      x=6: d_ap = 3, d_an = 4 → 0      mean = 0.9
    x = _line(0, 2, 3, 6)
    pids = torch.tensor([0, 0, 1, 1])
    assert batch_hard_triplet(x, pids, margin=0.3, metric="euclidean").item() == pytest.approx(0.9, abs=1e-6)


def test_batch_hard_triplet_cosine_by_hand():
    # unit directions at 0°, 60° (pid 0) and 90°, 180° (pid 1), lengths varied (cosine ignores them);
    # distance = −cos.  0°: d_ap = −½, d_an = 0 → 0;   60°: d_ap = −½, d_an = −cos30 → 0.3 − ½ + √3/2
    # 90°: d_ap = 0, d_an = −cos30 → 0.3 + √3/2;      180°: d_ap = 0, d_an = ½ → 0
    angles = torch.tensor([0.0, 60.0, 90.0, 180.0], dtype=torch.float64) * math.pi / 180
    lengths = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    x = torch.stack([angles.cos(), angles.sin()], 1) * lengths[:, None]
    pids = torch.tensor([0, 0, 1, 1])
    expected = (0.3 - 0.5 + math.sqrt(3) / 2 + 0.3 + math.sqrt(3) / 2) / 4
    got = batch_hard_triplet(x, pids, margin=0.3, metric="cosine").item()
    assert got == pytest.approx(expected, abs=1e-9)


def test_pairwise_distance_and_bad_metric():
    d = pairwise_distance(_line(0, 3), _line(4), "euclidean")
    assert d[:, 0].tolist() == pytest.approx([4.0, 1.0])
    with pytest.raises(ValueError, match="metric"):
        pairwise_distance(_line(0), _line(1), "manhattan")


def test_triplet_without_negatives_is_zero_but_differentiable():
    x = _line(0, 1).requires_grad_()
    loss = batch_hard_triplet(x, torch.tensor([3, 3]))
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None


def test_integrated_tkp_triplet_by_hand():
    # videos: pid 0 at 0, pid 1 at 10; image frames: pid 0 at 1, 7; pid 1 at 9, 4 (margin 0.3)
    # I2V: img 1 → (1, 9) 0;  img 7 → (7, 3) 4.3;  img 9 → (1, 9) 0;  img 4 → (6, 4) 2.3   mean 1.65
    # V2I: vid 0 → (max(1,7)=7, min(9,4)=4) 3.3;  vid 10 → (max(1,6)=6, min(9,3)=3) 3.3     mean 3.3
    # I2I: 1 → (6, 3) 3.3;  7 → (6, 2) 4.3;  9 → (5, 2) 3.3;  4 → (5, 3) 2.3               mean 3.3
    # V2V: each video's only positive is itself (≈0), the negative is 10 away → 0
    img, img_pids = _line(1, 7, 9, 4), torch.tensor([0, 0, 1, 1])
    vid, vid_pids = _line(0, 10), torch.tensor([0, 1])
    out = tkp_triplets(img, img_pids, vid, vid_pids, margin=0.3, metric="euclidean")
    assert out["i2v"].item() == pytest.approx(1.65, abs=1e-6)
    assert out["v2i"].item() == pytest.approx(3.3, abs=1e-6)
    assert out["i2i"].item() == pytest.approx(3.3, abs=1e-6)
    assert out["v2v"].item() == pytest.approx(0.0, abs=1e-6)


def test_tkp_feature_loss_by_hand_and_detached():
    # rows: ‖(1,2) − (0,2)‖² = 1, ‖(3,4) − (3,0)‖² = 16 → mean 8.5; d/di = 2(i − f)/N
    img = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    vid = torch.tensor([[0.0, 2.0], [3.0, 0.0]], dtype=torch.float64, requires_grad=True)
    loss = tkp_feature_loss(img, vid)
    assert loss.item() == pytest.approx(8.5)
    loss.backward()
    assert img.grad.tolist() == [[1.0, 0.0], [0.0, 4.0]]
    assert vid.grad is None  # stop-gradient on the video side


def test_tkp_distance_loss_by_hand_and_detached():
    # image frames at 0, 3; video frames at 0, 1: D_img − D_vid = [[0, 2], [2, 0]]
    # code: mean of squares over (NT)² = 8/4 = 2;  talk: 8 / NT = 4
    img = _line(0, 3).requires_grad_()
    video_net = torch.nn.Linear(2, 2).double()
    with torch.no_grad():
        video_net.weight.copy_(torch.eye(2, dtype=torch.float64))
        video_net.bias.zero_()
    vid = video_net(_line(0, 1))
    loss = tkp_distance_loss(img, vid, "code")
    assert loss.item() == pytest.approx(2.0, abs=1e-5)
    assert tkp_distance_loss(img, vid, "talk").item() == pytest.approx(4.0, abs=1e-5)
    loss.backward()
    # L = ½·(|x1 − x0| − 1)² → ∂L/∂x1 = (3 − 0 − 1) = 2, ∂L/∂x0 = −2
    assert img.grad[:, 0].tolist() == pytest.approx([-2.0, 2.0], abs=1e-5)
    assert video_net.weight.grad is None and video_net.bias.grad is None  # nothing reaches the video net
    with pytest.raises(ValueError):
        tkp_distance_loss(img, vid, "paper")
