"""Instance–batch normalisation (IBN-Net "IBN-a", Pan et al. 2018): in a block's first
normalisation layer, half the channels use InstanceNorm and the rest keep BatchNorm.

Why: InstanceNorm removes per-image contrast and colour statistics — much of what differs
between one camera and the next — while the BatchNorm half keeps the content features that tell
people apart. Applied to the early stages only, where appearance style lives.

Converting a pretrained BatchNorm keeps its affine weights on both halves (the InstanceNorm half
normalises with per-image statistics instead of the running ones), so ImageNet initialisation
still applies; fine-tuning adapts the rest.
"""

from __future__ import annotations

import torch
from torch import nn


class IBN(nn.Module):
    """InstanceNorm on the first ``round(C·ratio)`` channels, BatchNorm on the others."""

    def __init__(self, channels: int, ratio: float = 0.5):
        super().__init__()
        self.half = int(round(channels * ratio))
        if not 0 < self.half < channels:
            raise ValueError(f"IBN ratio {ratio} leaves no channels for one half of {channels}")
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d, ratio: float = 0.5) -> IBN:
        ibn = cls(bn.num_features, ratio)
        h = ibn.half
        with torch.no_grad():
            ibn.IN.weight.copy_(bn.weight[:h])
            ibn.IN.bias.copy_(bn.bias[:h])
            ibn.BN.weight.copy_(bn.weight[h:])
            ibn.BN.bias.copy_(bn.bias[h:])
            ibn.BN.running_mean.copy_(bn.running_mean[h:])
            ibn.BN.running_var.copy_(bn.running_var[h:])
        return ibn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(a.contiguous()), self.BN(b.contiguous())], dim=1)


def convert_first_batchnorm(block: nn.Module, ratio: float = 0.5) -> bool:
    """Replace the first ``BatchNorm2d`` inside ``block`` by an :class:`IBN`; False if none."""
    for name, module in block.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            parent = block
            *path, leaf = name.split(".")
            for part in path:
                parent = getattr(parent, part)
            setattr(parent, leaf, IBN.from_batchnorm(module, ratio))
            return True
    return False
