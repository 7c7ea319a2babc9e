"""CAN's cross-attention module (reid/models/can.py) on hand-built maps, its losses and training on a
frozen image net (reid/training/can.py), ONNX parity of the pair scorer, and re-ranking with it
(reid/models/pair_model.py; the service's rerank=can is in tests/test_service_api.py)."""

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
    # uniform attention pools to exactly the plain GAP: an untrained CAN scores as the index does
    neck = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU()).eval()
    plain = torch.nn.functional.cosine_similarity(neck(p.mean(dim=(2, 3))), neck(q.mean(dim=(2, 3))))
    torch.testing.assert_close(pair_scores(*can(p, q), neck), plain)


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


def test_the_exported_map_pools_to_cans_grid_and_keeps_the_gap():
    from reid.models.networks import MAP_GRID, ImageNet, ModelConfig

    net = ImageNet(ModelConfig(backbone="osnet_x0_25", pretrained=None, neck="fc", height=256, width=128),
                   with_ia=False).eval()
    x = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        emb, regions, maps = net.embedding_parts(x, 4)
        fmap = net.backbone(x)
    assert fmap.shape[2:] == (16, 8) and maps.shape == (2, 128, *MAP_GRID)  # 16×8 pooled 2×2 → 8×4
    torch.testing.assert_close(maps[:, :, 0, 0], fmap[:, :, :2, :2].mean(dim=(2, 3)))
    torch.testing.assert_close(maps.mean(dim=(2, 3)), net.pooled(x))  # the same GAP, so the same embedding
    torch.testing.assert_close(emb, net(x))


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


# ------------------------------------------------------------------- training and re-ranking


def test_the_losses_leave_each_crop_out_of_its_own_prototype_and_train_the_attention():
    from reid.models.osnet import embedding_head
    from reid.training.can import CanConfig, CanModel, batch_losses
    from reid.training.config import SourceConfig

    torch.manual_seed(0)
    cfg = CanConfig(image_checkpoint="unused", train=[SourceConfig("x", "market1501")])
    model = CanModel(32, embedding_head(16, 24), 24, num_classes=10, tune_neck=False)
    ids = torch.tensor([3, 3, 7, 7, 9, 9])
    base = torch.randn(10, 16, 8, 4)
    maps = base[ids] + 0.05 * torch.randn(6, 16, 8, 4)  # two crops per identity, close to each other
    losses = batch_losses(model, maps, ids, cfg)
    # each crop's prototype of its own identity is the *other* crop: it is nearest, so nn_acc = 1
    assert losses["nn_acc"].item() == 1.0
    assert losses["loss"].item() == pytest.approx(losses["global"].item() + 0.5 * losses["nn"].item(), rel=1e-5)
    losses["loss"].backward()
    assert model.attention.fuse[0].weight.grad.abs().sum() > 0  # the attention learns …
    assert all(p.grad is None for p in model.neck.parameters())  # … the image net's neck stays frozen
    with pytest.raises(ValueError, match="num_instances"):
        CanConfig(image_checkpoint="x", train=[SourceConfig("x", "market1501")], num_instances=1)


def test_rerank_distances_reorders_only_the_shortlist():
    from reid.models.pair_model import rerank_distances

    class Reverse:  # scores candidates by their position: the last one best
        def scores(self, query_map, cands):
            return cands[:, 0, 0, 0].astype(np.float32)

    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5]], np.float32)
    maps = np.arange(5, dtype=np.float32).reshape(5, 1, 1, 1)
    out = rerank_distances(dist, np.zeros((1, 1, 1, 1)), maps, Reverse(), k=3)
    assert list(np.argsort(out[0])) == [2, 1, 0, 3, 4]  # the top 3 reversed, still ahead of the rest
    with pytest.raises(ValueError, match="k"):
        rerank_distances(dist, np.zeros((1, 1, 1, 1)), maps, Reverse(), k=0)


def test_can_trains_on_a_frozen_net_resumes_exports_and_reranks(tmp_path: Path):
    from test_osnet import _osnet_config

    from reid.models.export import export_model
    from reid.models.pair_model import PairModel, PairModelError
    from reid.training.can import CanConfig, CanTrainer
    from reid.training.datasets import load_split
    from reid.training.engine import Trainer
    from reid.training.evaluate import OnnxEmbedder, rank

    image_cfg = _osnet_config(tmp_path, "image")
    image_cfg.optim.epochs = 1
    image_run = Trainer(image_cfg)
    checkpoint = image_run.run()
    train = [{"root": s.root, "format": s.format} for s in image_cfg.data.train]

    def can_cfg(out: str, epochs: int = 2) -> CanConfig:
        return CanConfig(image_checkpoint=str(checkpoint), train=train, epochs=epochs, batch_ids=2,
                         num_instances=2, threads=1, max_batches_per_epoch=3, output_dir=str(tmp_path / out))

    straight = CanTrainer(can_cfg("can"))
    assert straight.maps.shape[1:] == (128, 4, 2)  # OSNet's 4×2 map at 64×32 (too small to pool to 8×4)
    pair_path = straight.run()
    CanTrainer(can_cfg("can2", epochs=1)).run()
    maps_file = tmp_path / "can2" / "maps.npy"
    made = maps_file.stat().st_mtime_ns
    resumed = CanTrainer(can_cfg("can2"))
    assert maps_file.stat().st_mtime_ns == made  # the frozen net's maps are computed once per run
    resumed.run(resume=True)
    for (k, v), v2 in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.allclose(v, v2, atol=1e-6), k

    pair = PairModel(pair_path, expected_map=(128, 4, 2))
    assert pair.meta["reid.kind"] == "pair" and "market1501 train" in pair.meta["reid.trained_on"]
    q, cands = straight.maps[:1].astype(np.float32), straight.maps[1:6].astype(np.float32)
    with torch.no_grad():
        ref = straight.model.scorer()(torch.from_numpy(q), torch.from_numpy(cands)).numpy()
    np.testing.assert_allclose(pair.scores(q[0], cands), ref, atol=1e-5)
    with pytest.raises(PairModelError, match="another image model"):
        pair.check((64, 4, 2))

    model_dir = tmp_path / "model"
    export_model(image_run.model.eval(), image_cfg.model, model_dir, trained_on="unit-test")
    embedder = OnnxEmbedder(model_dir)
    assert embedder.has_maps and embedder.pair_path == model_dir / "pair.onnx"
    split = load_split(image_cfg.data.eval.root, image_cfg.data.eval.format)
    with pytest.raises(ValueError, match="pair"):
        rank(split, embedder, rerank="can")  # no pair.onnx in the model directory yet
    (model_dir / "pair.onnx").write_bytes(pair_path.read_bytes())
    plain = rank(split, embedder)
    reranked = rank(split, embedder, rerank="can", rerank_k=3)
    assert reranked.metrics["rerank"] == "can" and reranked.metrics["rerank_k"] == 3
    # only each query's 3 nearest move, and they stay ahead of everything else
    for row_plain, row_can in zip(plain.dist, reranked.dist, strict=True):
        top3 = set(np.argsort(row_plain)[:3])
        assert set(np.argsort(row_can)[:3]) == top3
        np.testing.assert_array_equal(np.argsort(row_can)[3:], [i for i in np.argsort(row_plain) if i not in top3])


def test_train_can_cli_names_a_bad_config_without_a_traceback(tmp_path: Path):
    import subprocess
    import sys

    bad = tmp_path / "can.yaml"
    bad.write_text("name: x\nbogus: 1\n")
    for path, says in ((bad, "unknown keys ['bogus']"), (tmp_path / "none.yaml", "config file not found")):
        res = subprocess.run([sys.executable, "-m", "reid.cli", "train-can", str(path)], capture_output=True,
                             text=True)
        assert res.returncode == 2, res.stderr
        assert says in res.stderr and "Traceback" not in res.stderr, res.stderr
