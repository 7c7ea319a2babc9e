"""k-reciprocal re-ranking and average query expansion on small hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from reid.training.metrics import cosine_distance, evaluate_ranking, l2_normalize
from reid.training.rerank import average_query_expansion, k_reciprocal_rerank


def _lift(points: list[tuple[float, float]]) -> np.ndarray:
    """2-D layout → unit vectors near (0, 0, 1), so plane distances order the cosine distances."""
    p = np.asarray(points, np.float64) * 0.1
    return l2_normalize(np.hstack([p, np.ones((len(p), 1))]))


# identity A: four crops left of the query; a wrong item d (pid 2) just right of the query, sitting on
# the edge of a dense cluster B of pid 2. d is the query's nearest item, but d's own neighbours are
# all in B, so the query is not among d's k-reciprocal neighbours while A's members have it.
A = [(-1, 0), (-1, 0.4), (-1, -0.4), (-1.4, 0)]
D = [(0.9, 0)]
B = [(1.2, 0), (1.2, 0.3), (1.2, -0.3), (1.5, 0), (1.4, 0.2)]
Q = _lift([(0, 0)])
G = _lift(A + D + B)
G_PIDS = [1] * 4 + [2] + [2] * 5


def test_planted_mistake_is_fixed():
    raw = cosine_distance(Q, G)
    assert int(np.argmin(raw[0])) == 4  # the planted wrong item is rank 1 before re-ranking
    before = evaluate_ranking(raw, [1], G_PIDS, [0], [1] * 10)
    d = k_reciprocal_rerank(Q, G, k1=5, k2=1, lambda_value=0.3)
    assert d.shape == (1, 10) and d.dtype == np.float32
    assert int(np.argmin(d[0])) in (0, 1, 2)  # an A crop is now first
    after = evaluate_ranking(d, [1], G_PIDS, [0], [1] * 10)
    assert before["rank1"] == 0.0 and after["rank1"] == 100.0
    assert after["mAP"] > before["mAP"]
    # the wrong item's Jaccard distance is 1 (no shared reciprocal neighbours): d* = 0.7 + 0.3·d̃
    assert d[0, 4] > 0.7


def test_lambda_one_keeps_the_original_order():
    rng = np.random.default_rng(1)
    q, g = rng.standard_normal((6, 8)), rng.standard_normal((15, 8))
    d = k_reciprocal_rerank(q, g, k1=4, k2=2, lambda_value=1.0)
    assert d.shape == (6, 15)
    raw = cosine_distance(l2_normalize(q), l2_normalize(g))
    order = np.argsort(d, axis=1, kind="stable")
    np.testing.assert_array_equal(order, np.argsort(raw, axis=1, kind="stable"))
    assert np.all((d >= 0) & (d <= 1.0 + 1e-6))


def test_chunked_equals_unchunked():
    rng = np.random.default_rng(2)
    centers = rng.standard_normal((6, 16))
    pids_q, pids_g = rng.integers(0, 6, 25), rng.integers(0, 6, 60)
    q = centers[pids_q] + 0.5 * rng.standard_normal((25, 16))
    g = centers[pids_g] + 0.5 * rng.standard_normal((60, 16))
    a = k_reciprocal_rerank(q, g, k1=6, k2=3)
    b = k_reciprocal_rerank(q, g, k1=6, k2=3, chunk=7)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # and on clustered data it does not hurt mAP
    raw = evaluate_ranking(cosine_distance(l2_normalize(q), l2_normalize(g)), pids_q, pids_g,
                           np.zeros(25), np.ones(60))
    rr = evaluate_ranking(a, pids_q, pids_g, np.zeros(25), np.ones(60))
    assert rr["mAP"] >= raw["mAP"] - 1.0


def test_bad_parameters():
    with pytest.raises(ValueError, match="k1"):
        k_reciprocal_rerank(Q, G, k1=0)
    with pytest.raises(ValueError, match="lambda"):
        k_reciprocal_rerank(Q, G, lambda_value=1.5)


def test_average_query_expansion_by_hand():
    q = np.array([[1.0, 0.0]])
    g = np.array([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    # k=1, alpha=0: q' = normalise(q + g0) = normalise(1.6, 0.8)
    q2, g2 = average_query_expansion(q, g, k=1, alpha=0.0)
    np.testing.assert_allclose(q2, [[1.6 / np.hypot(1.6, 0.8), 0.8 / np.hypot(1.6, 0.8)]], atol=1e-6)
    np.testing.assert_allclose(g2, g, atol=1e-6)  # gallery untouched by default
    # k=2, alpha=1: weights cos(q,g0)=0.6, cos(q,g1)=0 → q + 0.6·g0 = (1.36, 0.48)
    q3, _ = average_query_expansion(q, g, k=2, alpha=1.0)
    np.testing.assert_allclose(q3, [[1.36 / np.hypot(1.36, 0.48), 0.48 / np.hypot(1.36, 0.48)]], atol=1e-6)
    # database-side: each gallery item is averaged with its nearest other gallery item
    _, g4 = average_query_expansion(q, g, k=1, alpha=0.0, expand_gallery=True)
    np.testing.assert_allclose(g4[2], l2_normalize(g[2] + g[1]), atol=1e-6)  # (-1,0)'s nearest is (0,1)
