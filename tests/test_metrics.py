"""Ranking metrics on hand-built distance matrices; every expected number is worked out by hand in
the comments."""

from __future__ import annotations

import numpy as np
import pytest

from reid.training.metrics import cosine_distance, evaluate_ranking, l2_normalize


def test_single_query_known_ap_cmc_minp():
    # gallery order by distance: g0 (pid 2), g1 (pid 1 cam 1, good), g2 (pid 3), g3 (pid 1 cam 2, good)
    dist = np.array([[0.1, 0.2, 0.3, 0.4]])
    r = evaluate_ranking(dist, [1], [2, 1, 3, 1], [0], [1, 1, 1, 2])
    # good at ranks 2 and 4: AP = (1/2 + 2/4) / 2 = 0.5
    assert r["mAP"] == pytest.approx(50.0)
    assert r["rank1"] == 0.0 and r["rank5"] == 100.0 and r["rank10"] == 100.0
    # mINP = n_good / rank of the hardest = 2/4
    assert r["mINP"] == pytest.approx(50.0)
    assert r["num_query"] == 1 and r["num_skipped"] == 0


def test_trapezoid_ap():
    # same ranking: good at ranks 2 and 4.
    # match 1: prec_prev = 0/1 = 0, prec = 1/2 → (0 + 0.5)/2 = 0.25
    # match 2: prec_prev = 1/3, prec = 2/4 → (1/3 + 1/2)/2 = 5/12
    # AP = (0.25 + 5/12) / 2 = 1/3
    dist = np.array([[0.1, 0.2, 0.3, 0.4]])
    r = evaluate_ranking(dist, [1], [2, 1, 3, 1], [0], [1, 1, 1, 2], ap="trapezoid")
    assert r["mAP"] == pytest.approx(100 / 3)
    # a match at rank 1 has prec_prev = 1: good at ranks 1, 3 → ((1+1)/2 + (1/2 + 2/3)/2) / 2 = 0.7916..
    r = evaluate_ranking(np.array([[0.1, 0.2, 0.3]]), [1], [1, 2, 1], [0], [1, 1, 1], ap="trapezoid")
    assert r["mAP"] == pytest.approx(100 * (1 + 7 / 12) / 2)
    r = evaluate_ranking(np.array([[0.1, 0.2, 0.3]]), [1], [1, 2, 1], [0], [1, 1, 1])
    assert r["mAP"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="ap must be"):
        evaluate_ranking(dist, [1], [2, 1, 3, 1], [0], [1, 1, 1, 2], ap="interp11")


def test_junk_removed_before_ranking():
    # g0 has the query's pid AND camera → junk, removed; then ranking is g1 (good), g2 (wrong), g3 (good)
    dist = np.array([[0.0, 0.1, 0.2, 0.3]])
    r = evaluate_ranking(dist, [5], [5, 5, 7, 5], [3], [3, 0, 1, 2])
    assert r["rank1"] == 100.0
    assert r["mAP"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert r["mINP"] == pytest.approx(100 * 2 / 3)
    # junk counted as a normal item would make the first good item rank 2: it must not
    r2 = evaluate_ranking(dist, [5], [5, 5, 7, 5], [3], [0, 0, 1, 2])  # now g0 is a good match too
    assert r2["mINP"] == pytest.approx(75.0)  # 3 good, hardest at rank 4


def test_query_without_true_match_is_skipped():
    dist = np.array([[0.1, 0.2], [0.2, 0.1], [0.3, 0.4]])
    # q0 pid 1 cam 0: g0 (pid 1 cam 1) good at rank 1.
    # q1 pid 2 cam 0: only pid-2 item is g1 in camera 0 → junk → skipped.
    # q2 pid 9: no such pid in the gallery → skipped.
    r = evaluate_ranking(dist, [1, 2, 9], [1, 2], [0, 0, 0], [1, 0])
    assert r["num_query"] == 1 and r["num_skipped"] == 2
    assert r["rank1"] == 100.0 and r["mAP"] == 100.0
    empty = evaluate_ranking(dist[1:], [2, 9], [1, 2], [0, 0], [1, 0])
    assert empty["num_query"] == 0 and empty["num_skipped"] == 2 and empty["mAP"] == 0.0


def test_ties_broken_by_gallery_order():
    # all distances equal: the stable sort keeps gallery order, so the ranking is g0, g1, g2
    dist = np.zeros((1, 3))
    r = evaluate_ranking(dist, [1], [2, 1, 3], [0], [1, 1, 1])
    assert r["rank1"] == 0.0 and r["mAP"] == pytest.approx(50.0)
    r = evaluate_ranking(dist, [1], [1, 2, 3], [0], [1, 1, 1])
    assert r["rank1"] == 100.0 and r["mAP"] == pytest.approx(100.0)


def test_several_queries_average_and_cmc():
    # q0: good at rank 1 → AP 1, INP 1;  q1: good at rank 3 of 3 → AP 1/3, INP 1/3
    dist = np.array([[0.1, 0.5, 0.9], [0.1, 0.5, 0.9]])
    r = evaluate_ranking(dist, [1, 3], [1, 2, 3], [0, 0], [1, 1, 1])
    assert r["rank1"] == pytest.approx(50.0)
    assert r["rank5"] == pytest.approx(100.0)  # gallery shorter than 5: every valid query is found
    assert r["mAP"] == pytest.approx(100 * (1 + 1 / 3) / 2)
    assert r["mINP"] == pytest.approx(100 * (1 + 1 / 3) / 2)


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(0)
    q_pids, g_pids = rng.integers(0, 10, 37), rng.integers(0, 10, 61)
    q_cams, g_cams = rng.integers(0, 3, 37), rng.integers(0, 3, 61)
    dist = rng.random((37, 61))
    a = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, chunk=5)
    b = evaluate_ranking(dist, q_pids, g_pids, q_cams, g_cams, chunk=1000)
    assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k]) for k in a)
    # brute-force reference for the non-interpolated AP, query by query
    aps = []
    for i in range(37):
        order = np.argsort(dist[i], kind="stable")
        keep = [j for j in order if not (g_pids[j] == q_pids[i] and g_cams[j] == q_cams[i])]
        good = [k + 1 for k, j in enumerate(keep) if g_pids[j] == q_pids[i]]
        if good:
            aps.append(np.mean([(n + 1) / rank for n, rank in enumerate(good)]))
    assert a["num_query"] == len(aps)
    assert a["mAP"] == pytest.approx(100 * np.mean(aps))


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        evaluate_ranking(np.zeros((2, 3)), [1], [1, 2, 3], [0], [1, 1, 1])


def test_cosine_distance():
    a = l2_normalize(np.array([[1.0, 0.0], [1.0, 1.0]]))
    d = cosine_distance(a, a)
    assert d[0, 0] == pytest.approx(0.0, abs=1e-6) and d[0, 1] == pytest.approx(1 - 2 ** -0.5, abs=1e-6)
