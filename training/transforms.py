"""Training-time data: crops resized once through the preprocessing contract (so train and serve
see the same pixels), then the spec's augmentations — horizontal flip, optional pad-and-crop,
random erasing — and the contract's normalisation."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from models.preprocess import PreprocessSpec, normalize, read_image, resize_crop
from training.datasets import Sample, Tracklet


@dataclass
class AugmentConfig:
    flip: bool = True
    pad: int = 0  # pad-and-random-crop by this many pixels (0 = off; the IANet code uses none)
    erasing: float = 0.5  # random erasing probability (area 0.02–0.4, aspect ≥ 0.3), filled with 0 = mean


class Augmenter:
    def __init__(self, cfg: AugmentConfig, spec: PreprocessSpec):
        self.cfg, self.spec = cfg, spec

    def geometric(self, img: np.ndarray, rng: random.Random, flip: bool | None = None) -> np.ndarray:
        """Flip and pad-crop on a resized uint8 crop. ``flip`` forces one decision for a clip."""
        if flip if flip is not None else (self.cfg.flip and rng.random() < 0.5):
            img = img[:, ::-1]
        if self.cfg.pad:
            p = self.cfg.pad
            padded = np.pad(img, ((p, p), (p, p), (0, 0)))
            y, x = rng.randint(0, 2 * p), rng.randint(0, 2 * p)
            img = padded[y:y + img.shape[0], x:x + img.shape[1]]
        return img

    def erase(self, x: np.ndarray, rng: random.Random) -> np.ndarray:
        if rng.random() >= self.cfg.erasing:
            return x
        _, h, w = x.shape
        for _ in range(100):
            area = rng.uniform(0.02, 0.4) * h * w
            aspect = rng.uniform(0.3, 1 / 0.3)
            eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if 0 < eh < h and 0 < ew < w:
                y, x0 = rng.randint(0, h - eh), rng.randint(0, w - ew)
                x[:, y:y + eh, x0:x0 + ew] = 0.0
                return x
        return x


def load_resized(paths: list[str], spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """Decode and resize every crop once (a few hundred MB at 128×64 for CUHK03)."""
    return {p: resize_crop(read_image(p), spec) for p in dict.fromkeys(paths)}


class ImageTrainSet(Dataset):
    def __init__(self, samples: list[Sample], spec: PreprocessSpec, aug: AugmentConfig, seed: int = 1):
        self.samples, self.spec = samples, spec
        self.images = load_resized([s.path for s in samples], spec)
        self.aug = Augmenter(aug, spec)
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        img = np.ascontiguousarray(self.aug.geometric(self.images[s.path], self.rng))
        x = self.aug.erase(normalize(img, self.spec), self.rng)
        return torch.from_numpy(x), s.pid


def sample_clip(n: int, seq_len: int, stride: int, rng: random.Random) -> list[int]:
    """TKP's training rule (spec §2.5): ≥ seq_len·stride frames → a strided window at a random
    start; ≥ seq_len → seq_len distinct random frames, sorted; else with replacement, sorted."""
    if n >= seq_len * stride:
        start = rng.randint(0, n - seq_len * stride)
        return list(range(start, start + seq_len * stride, stride))
    if n >= seq_len:
        return sorted(rng.sample(range(n), seq_len))
    return sorted(rng.choices(range(n), k=seq_len))


class ClipTrainSet(Dataset):
    """Clips of ``seq_len`` frames from tracklets, one flip decision per clip, no erasing (TKP)."""

    def __init__(self, tracks: list[Tracklet], spec: PreprocessSpec, aug: AugmentConfig, seq_len: int = 4,
                 stride: int = 8, seed: int = 1):
        self.tracks, self.spec, self.seq_len, self.stride = tracks, spec, seq_len, stride
        self.images = load_resized([p for t in tracks for p in t.paths], spec)
        self.aug = Augmenter(AugmentConfig(flip=aug.flip, pad=aug.pad, erasing=0.0), spec)
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, i: int):
        t = self.tracks[i]
        flip = self.aug.cfg.flip and self.rng.random() < 0.5
        frames = [normalize(np.ascontiguousarray(self.aug.geometric(self.images[t.paths[j]], self.rng, flip)),
                            self.spec)
                  for j in sample_clip(len(t.paths), self.seq_len, self.stride, self.rng)]
        return torch.from_numpy(np.stack(frames)), t.pid
