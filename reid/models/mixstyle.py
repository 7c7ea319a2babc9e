"""MixStyle (Zhou et al., ICLR 2021, "Domain Generalization with MixStyle"): during training, mix
the per-channel feature statistics (mean, std over H×W) of each image with another image's.

Why: in the early stages those statistics carry an image's *style* — camera colour response,
lighting, contrast — more than who is in it. Training on crops whose style has been swapped with
another camera's teaches the later layers not to rely on it, which is what a new camera needs.
It has no weights and is the identity at inference, so the exported graph and its speed are
unchanged. Inserted after the stages a model config names (``mixstyle_after``).
"""

from __future__ import annotations

import torch
from torch import nn

MIX_PROBABILITY = 0.5  # the paper's p: half the batches are mixed
BETA_ALPHA = 0.1  # λ ~ Beta(α, α): with α 0.1 most λ are near 0 or 1, so styles are swapped more than averaged
EPS = 1e-6


class MixStyle(nn.Module):
    """Mix each image's channel statistics with those of a randomly chosen image of the batch."""

    def __init__(self, channels: int, p: float = MIX_PROBABILITY, alpha: float = BETA_ALPHA):
        super().__init__()
        self.channels = channels  # for reid.models.backbones.insert_after's channel count
        self.p = p
        self.beta = torch.distributions.Beta(alpha, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.shape[0] < 2 or torch.rand(()).item() >= self.p:
            return x
        mu = x.mean(dim=(2, 3), keepdim=True)
        sig = (x.var(dim=(2, 3), keepdim=True) + EPS).sqrt()
        # the statistics are treated as constants (as the paper): gradients flow through the content only
        mu, sig = mu.detach(), sig.detach()
        normed = (x - mu) / sig
        lam = self.beta.sample((x.shape[0], 1, 1, 1)).to(x)
        other = torch.randperm(x.shape[0], device=x.device)
        mixed_mu = lam * mu + (1 - lam) * mu[other]
        mixed_sig = lam * sig + (1 - lam) * sig[other]
        return normed * mixed_sig + mixed_mu

    def extra_repr(self) -> str:
        return f"channels={self.channels}, p={self.p}"
