"""Ranking metrics for re-ID: CMC rank-k, mAP (non-interpolated or trapezoidal) and mINP.

Protocol (Market-1501 / MARS, model_spec §1.8 and §2.8): for each query the gallery is sorted by
distance (smaller = more similar); gallery items with the query's pid **and** camera are junk and
removed from the ranking; the remaining same-pid items are the true matches; a query with no true
match is skipped and counted in ``num_skipped``.

Ties are broken by gallery order: the sort is stable, so among equal distances the item that comes
first in the gallery is ranked first. This is deterministic, but it means a model that outputs
constant embeddings scores whatever the gallery order gives; report it when it matters.

Everything is vectorised over chunks of queries, so a 20k × 20k matrix needs only a few
``chunk × G`` arrays at a time, never a second ``Q × G`` copy.
"""

from __future__ import annotations

import numpy as np

AP_FORMS = ("noninterp", "trapezoid")


def evaluate_ranking(dist: np.ndarray, q_pids, g_pids, q_cams, g_cams, max_rank: int = 50,
                     ap: str = "noninterp", chunk: int = 256) -> dict:
    """Score a [Q, G] distance matrix. Returns rank1/5/10, mAP and mINP in percent, plus
    ``num_query`` (queries scored) and ``num_skipped`` (queries without any true match).

    ``ap="noninterp"``: AP = mean over the true matches of precision at their rank (IANet code).
    ``ap="trapezoid"``: AP = Σ (1/n_good)·(prec_{i−1} + prec_i)/2 (official Market/MARS MATLAB and
    TKP code), where prec_{i−1} is the precision one rank above the i-th match (1 at rank 1).
    mINP = n_good / (rank of the hardest true match), averaged over scored queries (AGW)."""
    if ap not in AP_FORMS:
        raise ValueError(f"ap must be one of {AP_FORMS}, got {ap!r}")
    dist = np.asarray(dist)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_cams, g_cams = np.asarray(q_cams), np.asarray(g_cams)
    if dist.ndim != 2 or dist.shape != (len(q_pids), len(g_pids)):
        raise ValueError(f"dist has shape {dist.shape}, expected ({len(q_pids)}, {len(g_pids)})")
    if len(q_cams) != len(q_pids) or len(g_cams) != len(g_pids):
        raise ValueError("pid and camera arrays must have matching lengths")
    num_q, num_g = dist.shape
    max_rank = max(1, min(max_rank, num_g)) if num_g else 1
    cmc_hits = np.zeros(max_rank, np.int64)
    ap_sum = inp_sum = 0.0
    valid = 0
    for start in range(0, num_q, chunk):
        stop = min(start + chunk, num_q)
        order = np.argsort(dist[start:stop], axis=1, kind="stable")
        same_pid = g_pids[order] == q_pids[start:stop, None]
        junk = same_pid & (g_cams[order] == q_cams[start:stop, None])
        good = same_pid & ~junk
        n_good = good.sum(axis=1)
        ok = n_good > 0
        if not ok.any():
            continue
        good, junk, n_good = good[ok], junk[ok], n_good[ok].astype(np.float64)
        valid += int(ok.sum())
        # rank (1-based) of every item once junk is removed; only read at good positions
        rank = np.cumsum(~junk, axis=1)
        hits = np.cumsum(good, axis=1)
        prec = np.where(good, hits / np.maximum(rank, 1), 0.0)
        if ap == "noninterp":
            ap_rows = prec.sum(axis=1) / n_good
        else:
            prev = np.where(rank > 1, (hits - 1) / np.maximum(rank - 1, 1), 1.0)
            ap_rows = (np.where(good, (prev + prec) / 2, 0.0)).sum(axis=1) / n_good
        ap_sum += float(ap_rows.sum())
        first = np.where(good, rank, np.iinfo(np.int64).max).min(axis=1)  # 1-based
        last = np.where(good, rank, 0).max(axis=1)
        inp_sum += float((n_good / last).sum())
        idx = first[first <= max_rank] - 1
        np.add.at(cmc_hits, idx, 1)
    num_skipped = num_q - valid
    if valid == 0:
        return {"rank1": 0.0, "rank5": 0.0, "rank10": 0.0, "mAP": 0.0, "mINP": 0.0,
                "num_query": 0, "num_skipped": num_skipped}
    cmc = np.cumsum(cmc_hits) / valid

    def at(k: int) -> float:
        return float(cmc[min(k, max_rank) - 1]) * 100.0

    return {"rank1": at(1), "rank5": at(5), "rank10": at(10), "mAP": ap_sum / valid * 100.0,
            "mINP": inp_sum / valid * 100.0, "num_query": valid, "num_skipped": num_skipped}


def cosine_distance(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """1 − cosine similarity of L2-normalised rows, float32 [Q, G]."""
    return (1.0 - np.asarray(q, np.float32) @ np.asarray(g, np.float32).T).astype(np.float32)


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)
