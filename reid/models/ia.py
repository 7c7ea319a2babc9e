"""IANet's interaction-and-aggregation block (spec §1.3–1.4): SIA then CIA, each a residual whose
BatchNorm starts at γ = β = 0, so a freshly inserted block is the identity and IANet starts equal
to its baseline."""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn


def _zero_bn(channels: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels)
    nn.init.zeros_(bn.weight)
    nn.init.zeros_(bn.bias)
    return bn


@lru_cache(maxsize=32)
def _location_prior(height: int, width: int, sigma_y: float, sigma_x: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                            torch.arange(width, dtype=torch.float32), indexing="ij")
    xs, ys = xs.reshape(-1), ys.reshape(-1)  # row index i = x + y·W
    d = (xs[None, :] - xs[:, None]) ** 2 / (2 * sigma_x**2) + (ys[None, :] - ys[:, None]) ** 2 / (2 * sigma_y**2)
    return torch.softmax(-d, dim=1)


def location_prior(height: int, width: int, sigma_y: float, sigma_x: float) -> torch.Tensor:
    """S^L: row-normalised Gaussian over key positions j around query position i, N×N, fixed."""
    return _location_prior(height, width, float(sigma_y), float(sigma_x)).clone()


class SIA(nn.Module):
    """Spatial interaction-and-aggregation.

    ``kernel`` — K×K neighbourhood for the appearance relation (code: 1).
    ``temperature`` — divide logits by √(C·K²) (code: True; absent from the talk's formula).
    ``combine`` — ``softmax``: softmax(S^A ⊙ S^L), code-faithful and the default (near-uniform, see
    spec §1.3 ⚠); ``renorm``: S^A ⊙ S^L renormalised per row (the paper's apparent intent).
    ``sigma_scale`` — σ of the location prior as a fraction of the map size along each axis; the
    code's σ values at 256×128 (10/20 at 32×16, 5/10 at 16×8) are exactly 0.625×.
    """

    def __init__(self, channels: int, kernel: int = 1, temperature: bool = True,
                 combine: str = "softmax", sigma_scale: float = 0.625, use_prior: bool = True):
        super().__init__()
        if combine not in ("softmax", "renorm"):
            raise ValueError("combine must be 'softmax' or 'renorm'")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError("kernel must be an odd positive integer")
        self.channels, self.kernel, self.temperature = channels, kernel, temperature
        self.combine, self.sigma_scale, self.use_prior = combine, sigma_scale, use_prior
        self.bn = _zero_bn(channels)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.kernel > 1:
            rel = F.unfold(x, self.kernel, padding=self.kernel // 2)  # B × C·K² × N
        else:
            rel = x.reshape(b, c, h * w)
        rel = rel.transpose(1, 2)  # B × N × C'
        logits = rel @ rel.transpose(1, 2)
        if self.temperature:
            logits = logits / math.sqrt(rel.shape[-1])
        s_a = torch.softmax(logits, dim=-1)
        if not self.use_prior:
            return s_a
        prior = location_prior(h, w, self.sigma_scale * h, self.sigma_scale * w).to(x)
        s = s_a * prior
        if self.combine == "softmax":
            return torch.softmax(s, dim=-1)
        return s / s.sum(dim=-1, keepdim=True).clamp_min(1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        feats = x.reshape(b, c, h * w).transpose(1, 2)  # B × N × C
        y = (self.attention(x) @ feats).transpose(1, 2).reshape(b, c, h, w)
        return self.bn(y) + x


class CIA(nn.Module):
    """Channel interaction-and-aggregation: softmax(F Fᵀ) over channels, unscaled as in the code."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.bn = _zero_bn(channels)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        f = x.reshape(x.shape[0], x.shape[1], -1)
        return torch.softmax(f @ f.transpose(1, 2), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = (self.attention(x) @ x.reshape(b, c, h * w)).reshape(b, c, h, w)
        return self.bn(y) + x


class IABlock(nn.Sequential):
    """SIA followed by CIA (IANet order; IAUnet's is the reverse)."""

    def __init__(self, channels: int, **sia_kwargs):
        super().__init__(SIA(channels, **sia_kwargs), CIA(channels))
        self.channels = channels
