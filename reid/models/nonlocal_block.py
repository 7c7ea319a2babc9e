"""Embedded-Gaussian non-local block across the frames of a clip (TKP video net, spec §2.2).

Frames travel through the backbone flattened as [B·T, C, H, W]; this block alone looks across
time, so it takes the clip length ``t`` and attends over all T·(H/2)·(W/2) key positions. The
1×1×1 Conv3d of the official code is a 1×1 Conv2d per frame here (identical maths)."""

from __future__ import annotations

import math

import torch
from torch import nn


class NonLocalBlock(nn.Module):
    temporal = True  # marker: forward needs the clip length

    def __init__(self, channels: int, subsample: bool = True):
        super().__init__()
        self.channels = channels
        inter = max(channels // 2, 1)
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Conv2d(channels, inter, 1)
        self.g = nn.Conv2d(channels, inter, 1)
        self.pool = nn.MaxPool2d(2) if subsample else nn.Identity()
        self.out = nn.Conv2d(inter, channels, 1)
        self.bn = nn.BatchNorm2d(channels)
        for conv in (self.theta, self.phi, self.g, self.out):
            n = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
            nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / n))
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.bn.weight)  # identity at initialisation
        nn.init.zeros_(self.bn.bias)

    def attention(self, x: torch.Tensor, t: int) -> torch.Tensor:
        theta = self._clip(self.theta(x), t)  # B × T·H·W × C'
        phi = self._clip(self.pool(self.phi(x)), t)
        return torch.softmax(theta @ phi.transpose(1, 2), dim=-1)

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        bt, c, h, w = x.shape
        g = self._clip(self.pool(self.g(x)), t)
        y = self.attention(x, t) @ g  # B × T·H·W × C'
        inter = y.shape[-1]
        # back to frames: B × T × H × W × C' → B·T × C' × H × W
        y = y.reshape(-1, t, h, w, inter).permute(0, 1, 4, 2, 3).reshape(bt, inter, h, w)
        return self.bn(self.out(y)) + x

    @staticmethod
    def _clip(x: torch.Tensor, t: int) -> torch.Tensor:
        """[B·T, C, H, W] → [B, T·H·W, C]."""
        _, c, h, w = x.shape
        return x.reshape(-1, t, c, h * w).permute(0, 1, 3, 2).reshape(-1, t * h * w, c)
