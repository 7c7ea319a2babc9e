"""Post-processing of a query × gallery ranking: k-reciprocal re-ranking and average query expansion.

k-reciprocal re-ranking, written from the algorithm in Zhong et al., "Re-ranking Person
Re-identification with k-reciprocal Encoding" (CVPR 2017):

1. Pool queries and gallery (N = Q + G items); ``d(i, j)`` = squared Euclidean distance of the
   L2-normalised embeddings (= 2 − 2·cos), divided by the row's maximum so it lies in [0, 1].
2. ``N(i, k)``: the k nearest items of i (i itself included). ``R(i, k)``: the members j of
   ``N(i, k)`` that also have i in ``N(j, k)`` (k-reciprocal neighbours), with k = k1 + 1.
3. Expansion: ``R*(i) = R(i, k1) ∪ R(c, k1/2)`` for every c in R(i, k1) whose half-size set
   overlaps R(i, k1) in at least 2/3 of its members.
4. ``V[i, j] = exp(−d(i, j))`` on R*(i), zero elsewhere, rows scaled to sum to 1.
5. Local query expansion: ``V[i] ← mean of V[j]`` over the k2 nearest neighbours j of i.
6. Jaccard distance ``d_J(i, j) = 1 − Σ min(V_i, V_j) / Σ max(V_i, V_j)``; with rows summing to 1,
   Σ max = 2 − Σ min.
7. ``d*(i, j) = (1 − λ)·d_J(i, j) + λ·d(i, j)`` for query rows and gallery columns.

Memory: nothing N × N is ever built. Neighbour lists come from row chunks of the distance matrix
(``chunk × N`` float32, the chunk sized to about 64 MB), V is a scipy sparse matrix with about
N·|R*| (before expansion) and N·k2·|R*| (after) non-zeros, and the Jaccard term uses V's
gallery columns as an inverted index, one query at a time. The only Q × G array is the float32
result. Peak ≈ 4·Q·G bytes + ~64 MB of chunk buffers + the sparse V (≈ 100 MB at N = 40 000,
k1 = 20): bench/rerank_memory.md measured a 1.9 GB process peak (1.5 GB of it the result) and
~200 s on one CPU thread for 20 000 × 20 000.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from reid.training.metrics import l2_normalize

CHUNK_ELEMENTS = 16 * 1024 * 1024  # float32 elements per distance chunk (64 MB)


def _row_chunk(n: int) -> int:
    return max(1, min(n, CHUNK_ELEMENTS // max(n, 1)))


def _neighbours(x: np.ndarray, k: int, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of every row (self included; ties by index) and each row's max distance."""
    n = len(x)
    k = min(k, n)
    chunk = chunk or _row_chunk(n)
    idx = np.empty((n, k), np.int64)
    row_max = np.empty(n, np.float32)
    for s in range(0, n, chunk):
        d = np.maximum(2.0 - 2.0 * (x[s:s + chunk] @ x.T), 0.0)
        row_max[s:s + chunk] = d.max(axis=1)
        part = np.argpartition(d, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(d), 1))
        pd = np.take_along_axis(d, part, axis=1)
        order = np.lexsort((part, pd), axis=1)  # by distance, then by index
        idx[s:s + chunk] = np.take_along_axis(part, order, axis=1)
    return idx, np.maximum(row_max, 1e-12)


def _reciprocal(idx: np.ndarray, k: int) -> list[np.ndarray]:
    """R(i, k) for every i from the (k-wide) neighbour table."""
    top = idx[:, :k]
    n = len(idx)
    # j ∈ R(i) ⇔ j ∈ top[i] and i ∈ top[j]
    rows = np.repeat(np.arange(n), top.shape[1])
    member = sparse.csr_matrix((np.ones(top.size, bool), (rows, top.ravel())), shape=(n, n))
    mutual = member.multiply(member.T).tocsr()
    return [mutual.indices[mutual.indptr[i]:mutual.indptr[i + 1]] for i in range(n)]


def k_reciprocal_rerank(q: np.ndarray, g: np.ndarray, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                        chunk: int | None = None) -> np.ndarray:
    """Re-ranked distance [Q, G] (float32; smaller = more similar) from query and gallery
    embeddings (normalised here). ``chunk`` overrides the row-chunk size (tests use it)."""
    if k1 < 1 or k2 < 1:
        raise ValueError("k1 and k2 must be >= 1")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError("lambda must be in [0, 1]")
    x = l2_normalize(np.concatenate([np.asarray(q, np.float32), np.asarray(g, np.float32)]))
    nq, n = len(q), len(x)
    ng = n - nq
    chunk = chunk or _row_chunk(n)
    idx, row_max = _neighbours(x, max(k1 + 1, k2), chunk)
    full = _reciprocal(idx, k1 + 1)
    half = _reciprocal(idx, int(round(k1 / 2)) + 1)

    rows, cols, vals = [], [], []
    for i in range(n):
        r = full[i]
        expanded = [r]
        r_set = set(r.tolist())
        for c in r:
            h = half[c]
            if len(h) and sum(1 for v in h.tolist() if v in r_set) >= 2 / 3 * len(h):
                expanded.append(h)
        members = np.unique(np.concatenate(expanded))
        d = np.maximum(2.0 - 2.0 * (x[members] @ x[i]), 0.0) / row_max[i]
        w = np.exp(-d)
        rows.append(np.full(len(members), i))
        cols.append(members)
        vals.append(w / w.sum())
    v = sparse.csr_matrix((np.concatenate(vals).astype(np.float32),
                           (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    if k2 > 1:
        kk = idx[:, :k2]
        avg = sparse.csr_matrix((np.full(kk.size, 1.0 / k2, np.float32),
                                 (np.repeat(np.arange(n), k2), kk.ravel())), shape=(n, n))
        v = (avg @ v).tocsr()
    vq = v[:nq]
    vg = v[nq:].tocsc()  # inverted index: for column c, the gallery rows with V[·, c] > 0

    out = np.empty((nq, ng), np.float32)
    for s in range(0, nq, chunk):
        e = min(s + chunk, nq)
        d = np.maximum(2.0 - 2.0 * (x[s:e] @ x[nq:].T), 0.0) / row_max[s:e, None]
        out[s:e] = lambda_value * d
    for i in range(nq):
        lo, hi = vq.indptr[i], vq.indptr[i + 1]
        qc, qv = vq.indices[lo:hi], vq.data[lo:hi]
        sub = vg[:, qc]  # G × |qc|, CSC
        counts = np.diff(sub.indptr)
        mins = np.minimum(sub.data, np.repeat(qv, counts))
        s_min = np.bincount(sub.indices, weights=mins, minlength=ng)
        jaccard = 1.0 - s_min / (2.0 - s_min)
        out[i] += (1.0 - lambda_value) * jaccard.astype(np.float32)
    return out


def average_query_expansion(q: np.ndarray, g: np.ndarray, k: int = 5, alpha: float = 3.0,
                            expand_gallery: bool = False, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """α-weighted average query expansion: each query becomes normalise(q + Σ w_i·g_i) over its k
    most similar gallery items, ``w_i = max(cos, 0)^alpha`` (alpha = 0: plain average). With
    ``expand_gallery`` the gallery is first expanded the same way among itself (database-side
    augmentation). Returns new (query, gallery) embeddings, L2-normalised."""
    q, g = l2_normalize(q), l2_normalize(g)
    if k < 1 or len(g) == 0:
        return q, g

    def expand(a: np.ndarray, pool: np.ndarray, skip_self: bool) -> np.ndarray:
        kk = min(k + int(skip_self), len(pool))
        out = np.empty_like(a)
        for s in range(0, len(a), chunk):
            sim = a[s:s + chunk] @ pool.T
            top = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
            w = np.maximum(np.take_along_axis(sim, top, axis=1), 0.0) ** alpha
            if skip_self:  # the item itself is among its neighbours; it is already added with weight 1
                w[top == np.arange(s, s + len(top))[:, None]] = 0.0
            out[s:s + chunk] = a[s:s + chunk] + np.einsum("nk,nkd->nd", w, pool[top])
        return l2_normalize(out)

    if expand_gallery:
        g = expand(g, g, skip_self=True)
    return expand(q, g, skip_self=False), g
