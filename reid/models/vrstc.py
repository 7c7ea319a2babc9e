"""VRSTC-style occlusion handling for tracklets, at feature level (Hou et al., CVPR 2019, §3).

The paper finds occluded regions by *similarity scoring* — each frame is cut into horizontal body
regions, and a region whose feature is far (cosine below τ) from the tracklet's average feature of
the same region is occluded — then regenerates the occluded pixels with a GAN (STCnet: spatial
structure generator, temporal attention generator, discriminators, ID guider) and re-embeds.
Here the completion is done on features instead of pixels: an occluded region's feature is
rebuilt from the same region in the unoccluded frames, weighted by a temporal attention (frames
near in time and alike in their visible regions weigh more). No GAN training is needed, and a
tracklet without occlusion comes out exactly as mean pooling.

Input everywhere: ``regions`` [T, R, D] — per frame, R horizontal-stripe features of the re-ID
feature map, after the embedding's own (affine, eval-mode) BN neck, so that the mean over the R
stripes *is* the frame's embedding before L2 normalisation (the exported ``image.onnx`` has them as
its second output, ``regions``). NumPy only: the service imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the paper's threshold; each model should be calibrated (``calibrate_tau``), see docs/models.md
PAPER_TAU = 0.89


@dataclass(frozen=True)
class VrstcConfig:
    tau: float = PAPER_TAU  # regions scoring below this are occluded
    attention_temperature: float = 0.1  # softmax temperature over appearance similarity
    time_scale: float = 4.0  # frames: attention falls by e for every this many frames apart


def _unit(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def region_scores(regions: np.ndarray) -> np.ndarray:
    """[T, R]: cosine of each frame's region to the tracklet's mean feature of that region."""
    regions = np.asarray(regions, np.float32)
    if regions.ndim != 3:
        raise ValueError(f"regions must be [T, R, D], got shape {regions.shape}")
    mean = _unit(regions).mean(axis=0, keepdims=True)
    return np.sum(_unit(regions) * _unit(mean), axis=-1)


def complete(regions: np.ndarray, cfg: VrstcConfig = VrstcConfig()) -> tuple[np.ndarray, np.ndarray]:
    """(repaired regions [T, R, D], occluded mask [T, R]). Each occluded region becomes the
    attention-weighted mean of the same region in the frames where it is visible; a region visible
    in no other frame is left as it is."""
    regions = np.asarray(regions, np.float32)
    occluded = region_scores(regions) < cfg.tau
    repaired = regions.copy()
    if not occluded.any():
        return repaired, occluded
    t_count = regions.shape[0]
    unit = _unit(regions)
    times = np.arange(t_count, dtype=np.float32)
    for t, k in zip(*np.nonzero(occluded), strict=True):
        donors = np.nonzero(~occluded[:, k])[0]
        donors = donors[donors != t]
        if donors.size == 0:
            continue
        visible = ~occluded[t]
        if visible.any():  # compare the frames on what frame t shows
            mine = _unit(unit[t, visible].mean(axis=0))
            theirs = _unit(unit[donors][:, visible].mean(axis=1))
            similarity = theirs @ mine
        else:
            similarity = np.zeros(donors.size, np.float32)
        logits = similarity / cfg.attention_temperature - np.abs(times[donors] - t) / cfg.time_scale
        weights = np.exp(logits - logits.max())
        repaired[t, k] = (weights / weights.sum()) @ regions[donors, k]
    return repaired, occluded


def pool(regions: np.ndarray, cfg: VrstcConfig = VrstcConfig(), embeddings: np.ndarray | None = None) -> np.ndarray:
    """The tracklet's vector [D]: repaired frames → per-frame embedding → mean over frames, L2 —
    the same pooling as the service's mean pooling, on repaired frames.

    A frame's embedding is the mean of its regions (L2). With ``embeddings`` [T, D] (the model's
    own, normalised) each frame keeps its embedding shifted by what the repair changed in its region
    mean: exact for an affine neck (there the region mean *is* the embedding), and for a non-affine
    one (OSNet's fc → BN → ReLU) an unrepaired frame stays exactly its embedding, so a tracklet with
    nothing occluded pools exactly as mean pooling does."""
    repaired, _ = complete(regions, cfg)
    regions = np.asarray(regions, np.float32)
    if embeddings is None:
        frames = _unit(repaired.mean(axis=1))
    else:
        before, after = regions.mean(axis=1), repaired.mean(axis=1)
        scale = np.linalg.norm(before, axis=1, keepdims=True)
        frames = _unit(np.asarray(embeddings, np.float32) * scale + (after - before))
    return _unit(frames.mean(axis=0))


def calibrate_tau(tracklets: list[np.ndarray], false_alarm: float = 0.02) -> float:
    """τ such that a fraction ``false_alarm`` of the regions of *clean* tracklets score below it:
    the paper's 0.89 belongs to its ResNet-50 features; each model's scores sit elsewhere."""
    scores = [region_scores(r).ravel() for r in tracklets if len(r) > 1]
    if not scores:
        raise ValueError("calibration needs tracklets of at least 2 frames")
    scores = np.concatenate(scores)
    return float(np.quantile(scores, false_alarm))
