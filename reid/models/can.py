"""CAN's cross-attention module (Hou et al., NeurIPS 2019; ../shared/docs/model_spec.md §4), for
re-scoring a (query, candidate) pair of re-ID feature maps.

* Correlation: both maps L2-normalised along channels; R ∈ R^{m×m}, R_ij = cos(P_i, Q_j) over
  the m = h·w positions (R^q = Rᵀ).
* Meta-fusion: w = conv(m/6→m)(ReLU(BN(conv(m→m/6)(GAP over R's rows)))) — the kernel.
* Attention: A_i = softmax_i(wᵀ r_i / (m·τ)), τ = 0.025 (the code's mean over j, hence /m).
* Residual: the attended map is P ⊙ (1 + A) (one weight per position, shared by the channels);
  the same module (shared weights) attends Q with Rᵀ.
* Pair score: cosine of the pooled attended maps (CAN's inference rule, without its ×7 scale,
  which does not change a ranking), each passed through the image net's neck first so that the
  score lives in the embedding space the index ranks by. Adapted: the pooling divides by the
  mean residual weight (1 + 1/m), so uniform attention gives exactly the plain GAP feature —
  an untrained CAN scores every pair as the index does, and training can only move it from there.

m is the size of the spatial map the image model exports (``maps``, pooled to 8×4 = 32 positions
by reid.models.networks.MAP_GRID; OSNet's 16×8 map at 256×128 is pooled 2×2), not CAN's 6×6.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TEMPERATURE = 0.025


class CrossAttention(nn.Module):
    def __init__(self, positions: int, temperature: float = TEMPERATURE):
        super().__init__()
        hidden = max(1, positions // 6)
        self.positions, self.temperature = positions, temperature
        self.fuse = nn.Sequential(nn.Conv2d(positions, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, positions, 1))
        for conv in (self.fuse[0], self.fuse[3]):  # the code's N(0, √(2/n)), n = k·k·out
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / conv.out_channels))
            nn.init.zeros_(conv.bias)

    @staticmethod
    def correlation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """[B, m, m]: cosine between every position of ``p`` (rows) and of ``q`` (columns)."""
        pn = F.normalize(p.flatten(2), dim=1)
        qn = F.normalize(q.flatten(2), dim=1)
        return pn.transpose(1, 2) @ qn

    def attention(self, r: torch.Tensor) -> torch.Tensor:
        """[B, m] attention over the row positions of ``r`` [B, m, m]; sums to 1 per pair."""
        kernel = self.fuse(r.mean(dim=1)[:, :, None, None]).flatten(1)  # GAP over the rows → w
        logits = torch.einsum("bij,bj->bi", r, kernel) / (r.shape[2] * self.temperature)
        return torch.softmax(logits, dim=1)

    def forward(self, p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both maps [B, C, h, w] attended: P ⊙ (1 + A^p), Q ⊙ (1 + A^q)."""
        b, _, h, w = p.shape
        if h * w != self.positions or q.shape[2:] != p.shape[2:]:
            raise ValueError(f"maps of {h}×{w} and {tuple(q.shape[2:])} positions; this module has {self.positions}")
        r = self.correlation(p, q)
        ap = self.attention(r).view(b, 1, h, w)
        aq = self.attention(r.transpose(1, 2)).view(b, 1, h, w)
        return p * (1 + ap), q * (1 + aq)


def attended_pool(attended: torch.Tensor) -> torch.Tensor:
    """[B, C]: GAP of an attended map P ⊙ (1 + A), divided by the mean weight 1 + 1/m (A sums to 1)."""
    m = attended.shape[2] * attended.shape[3]
    return attended.mean(dim=(2, 3)) / (1 + 1 / m)


def pair_scores(attended_p: torch.Tensor, attended_q: torch.Tensor, neck: nn.Module | None = None) -> torch.Tensor:
    """[B]: cosine of the pooled attended maps, through ``neck`` (the image net's) when given."""
    fp, fq = attended_pool(attended_p), attended_pool(attended_q)
    if neck is not None:
        fp, fq = neck(fp), neck(fq)
    return F.cosine_similarity(fp, fq, dim=1)


class PairScorer(nn.Module):
    """What `reid.kind = pair` exports: (query map [1, C, h, w], K candidate maps [K, C, h, w]) → K
    scores, the query attended against each candidate, pooled features through ``neck``."""

    def __init__(self, attention: CrossAttention, neck: nn.Module | None = None):
        super().__init__()
        self.attention = attention
        self.neck = neck if neck is not None else nn.Identity()

    def forward(self, query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        q = query.expand(candidates.shape[0], -1, -1, -1)
        return pair_scores(*self.attention(q, candidates), self.neck)
