"""CAN's cross-attention module (reid/models/can.py) on hand-built maps, and ONNX parity of the pair
scorer. (The trained second stage and `rerank=can` in the service are not built yet: issue 11.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reid.models.can import CrossAttention, PairScorer, pair_scores


def _maps(seed: int = 0, b: int = 2, c: int = 16, h: int = 8, w: int = 4) -> torch.Tensor:
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def test_correlation_is_cosine_with_the_right_argmax():
    p = _maps(0, b=1)
    q = torch.roll(p, shifts=1, dims=2) * 3.0  # Q's row y+1 is P's row y, scaled: same direction
    r = CrossAttention.correlation(p, q)[0]
    assert r.shape == (32, 32) and float(r.abs().max()) <= 1 + 1e-5
    # position i of P = (y, x) matches position ((y + 1) mod 8, x) of Q exactly
    expect = torch.tensor([((i // 4 + 1) % 8) * 4 + i % 4 for i in range(32)])
    assert torch.equal(r.argmax(dim=1), expect)
    torch.testing.assert_close(r.max(dim=1).values, torch.ones(32))


def test_attention_sums_to_one_and_the_residual_keeps_the_map():
    torch.manual_seed(0)
    can = CrossAttention(32).eval()
    p, q = _maps(1), _maps(2)
    ap = can.attention(CrossAttention.correlation(p, q))
    assert ap.shape == (2, 32) and bool((ap > 0).all())
    torch.testing.assert_close(ap.sum(dim=1), torch.ones(2))
    # a kernel of zeros gives uniform attention: the attended map is P·(1 + 1/m), never P·A alone
    with torch.no_grad():
        can.fuse[3].weight.zero_()
        can.fuse[3].bias.zero_()
    pa, qa = can(p, q)
    torch.testing.assert_close(pa, p * (1 + 1 / 32))
    torch.testing.assert_close(qa, q * (1 + 1 / 32))
    # identical maps score 1 whatever the attention
    torch.testing.assert_close(pair_scores(*can(p, p)), torch.ones(2))


def test_attention_goes_where_the_other_map_agrees():
    can = CrossAttention(32).eval()
    with torch.no_grad():  # a kernel that weighs every Q position alike: A_i ∝ exp(mean_j R_ij / τ)
        can.fuse[3].weight.zero_()
        can.fuse[3].bias.fill_(1.0)
    p, q = _maps(3, b=1, c=256), _maps(4, b=1, c=256)  # many channels: unrelated positions are near-orthogonal
    q[:, :, 0, 0] = p[:, :, 2, 1] * 5  # one position of Q shows what P shows at (2, 1) …
    q[:, :, 1, 0] = p[:, :, 2, 1] * 5  # … twice
    ap = can.attention(CrossAttention.correlation(p, q))[0]
    assert int(ap.argmax()) == 2 * 4 + 1


def test_wrong_map_sizes_are_refused():
    with pytest.raises(ValueError, match="positions"):
        CrossAttention(32)(_maps(0, h=6, w=6), _maps(1, h=6, w=6))


def test_pair_scorer_onnx_parity(tmp_path: Path):
    import onnxruntime as ort

    torch.manual_seed(1)
    can = CrossAttention(32)
    can.train()
    with torch.no_grad():
        can(_maps(5, b=8), _maps(6, b=8))  # give BN real running statistics
    scorer = PairScorer(can).eval()
    query, cands = _maps(7, b=1), _maps(8, b=5)
    path = tmp_path / "pair.onnx"
    with torch.no_grad():
        torch.onnx.export(scorer, (query, cands), str(path), input_names=["query", "candidates"],
                          output_names=["scores"], dynamic_axes={"candidates": {0: "k"}, "scores": {0: "k"}},
                          opset_version=17, dynamo=False)
        ref = scorer(query, cands).numpy()
        ref3 = scorer(query, cands[:3]).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"query": query.numpy(), "candidates": cands.numpy()})[0]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    got3 = sess.run(None, {"query": query.numpy(), "candidates": cands[:3].numpy()})[0]  # another K
    np.testing.assert_allclose(got3, ref3, atol=1e-5)
    np.testing.assert_allclose(got3, got[:3], atol=1e-5)  # a candidate's score does not depend on the others
