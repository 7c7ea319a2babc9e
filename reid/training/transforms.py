"""Training-time data: crops resized once through the preprocessing contract (so train and serve
see the same pixels), then augmentations and the contract's normalisation.

Geometric: the spec's horizontal flip and optional pad-and-crop. Against the shifts a new camera
brings (all off by default, probabilities in the config): colour jitter (brightness, contrast,
saturation, hue), random grayscale, random down-up-scaling (a low-resolution camera), random patch
(a rectangle of another training crop pasted in: occluders). Random erasing last, as the spec.
Every random draw comes from the dataset's ``random.Random``, so a seed fixes the batches."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from reid.models.preprocess import PreprocessSpec, normalize, read_image, resize_crop
from reid.training.datasets import Sample, Tracklet


@dataclass
class AugmentConfig:
    flip: bool = True
    pad: int = 0  # pad-and-random-crop by this many pixels (0 = off; the IANet code uses none)
    erasing: float = 0.5  # random erasing probability (area 0.02–0.4, aspect ≥ 0.3), filled with 0 = mean
    color_jitter: float = 0.0  # probability of jittering brightness/contrast/saturation/hue
    jitter_strength: float = 0.2  # brightness, contrast, saturation ×(1 ± s); hue ± s/4 of the circle
    grayscale: float = 0.0  # probability of a grayscale crop
    downscale: float = 0.0  # probability of shrinking then re-enlarging (lost resolution)
    downscale_min: float = 0.4  # smallest shrink factor
    patch: float = 0.0  # probability of pasting a patch (area 0.01–0.15) of another training crop


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

    def photometric(self, img: np.ndarray, rng: random.Random) -> np.ndarray:
        """Colour, grayscale and resolution changes on a uint8 H×W×3 crop; returns uint8."""
        c = self.cfg
        if c.color_jitter and rng.random() < c.color_jitter:
            img = color_jitter(img, rng, c.jitter_strength)
        if c.grayscale and rng.random() < c.grayscale:
            gray = img.astype(np.float32) @ np.asarray([0.299, 0.587, 0.114], np.float32)[
                ::1 if self.spec.color == "RGB" else -1]
            img = np.repeat(np.clip(gray + 0.5, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)
        if c.downscale and rng.random() < c.downscale:
            h, w = img.shape[:2]
            f = rng.uniform(c.downscale_min, 1.0)
            small = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
            img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        return img

    def paste_patch(self, img: np.ndarray, other: np.ndarray, rng: random.Random) -> np.ndarray:
        """A random rectangle of ``other`` (same size) pasted at a random place of ``img``."""
        if not self.cfg.patch or rng.random() >= self.cfg.patch:
            return img
        h, w = img.shape[:2]
        area = rng.uniform(0.01, 0.15) * h * w
        aspect = rng.uniform(0.5, 2.0)
        ph = min(h - 1, max(1, round(math.sqrt(area * aspect))))
        pw = min(w - 1, max(1, round(math.sqrt(area / aspect))))
        sy, sx = rng.randint(0, h - ph), rng.randint(0, w - pw)
        dy, dx = rng.randint(0, h - ph), rng.randint(0, w - pw)
        img = img.copy()
        img[dy:dy + ph, dx:dx + pw] = other[sy:sy + ph, sx:sx + pw]
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


def color_jitter(img: np.ndarray, rng: random.Random, strength: float) -> np.ndarray:
    """Brightness, contrast, saturation (each ×U(1−s, 1+s)) and hue (±s/4 turn) in a random order,
    as torchvision's ColorJitter does, on uint8 RGB or BGR (hue is rotated the same either way)."""
    x = img.astype(np.float32)
    ops = ["brightness", "contrast", "saturation", "hue"]
    rng.shuffle(ops)
    for op in ops:
        if op == "hue":
            shift = rng.uniform(-strength / 4, strength / 4)
            hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV_FULL)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int16) + round(shift * 256)) % 256
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL).astype(np.float32)
            continue
        f = rng.uniform(1 - strength, 1 + strength)
        if op == "brightness":
            x = x * f
        elif op == "contrast":
            x = (x - x.mean()) * f + x.mean()
        else:
            gray = x.mean(axis=2, keepdims=True)
            x = (x - gray) * f + gray
        x = np.clip(x, 0, 255)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


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
        img = self.aug.photometric(self.aug.geometric(self.images[s.path], self.rng), self.rng)
        if self.aug.cfg.patch:
            other = self.images[self.samples[self.rng.randrange(len(self.samples))].path]
            img = self.aug.paste_patch(img, other, self.rng)
        x = self.aug.erase(normalize(np.ascontiguousarray(img), self.spec), self.rng)
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
    """Clips of ``seq_len`` frames from tracklets, no erasing (TKP). Flip and the photometric
    changes (colour, grayscale, resolution) are decided once per clip: a camera changes a whole
    tracklet's colours at once, and the video net should see frames that still look alike."""

    def __init__(self, tracks: list[Tracklet], spec: PreprocessSpec, aug: AugmentConfig, seq_len: int = 4,
                 stride: int = 8, seed: int = 1):
        self.tracks, self.spec, self.seq_len, self.stride = tracks, spec, seq_len, stride
        self.images = load_resized([p for t in tracks for p in t.paths], spec)
        self.aug = Augmenter(replace(aug, erasing=0.0, patch=0.0), spec)
        self.photometric = bool(aug.color_jitter or aug.grayscale or aug.downscale)
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, i: int):
        t = self.tracks[i]
        flip = self.aug.cfg.flip and self.rng.random() < 0.5
        clip_seed = self.rng.random() if self.photometric else 0.0
        frames = []
        for j in sample_clip(len(t.paths), self.seq_len, self.stride, self.rng):
            img = self.aug.geometric(self.images[t.paths[j]], self.rng, flip)
            if self.photometric:
                img = self.aug.photometric(img, random.Random(clip_seed))  # the same draws for every frame
            frames.append(normalize(np.ascontiguousarray(img), self.spec))
        return torch.from_numpy(np.stack(frames)), t.pid
