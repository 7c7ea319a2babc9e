"""Losses (spec §1.7, §2.4): label-smoothed CE, batch-hard triplet (cosine or Euclidean, also
across two feature sets for TKP's I2V/V2I/I2I/V2V), and TKP's feature- and distance-level
propagation losses with the video side detached."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_smoothed_ce(logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1,
                      allowed: torch.Tensor | None = None) -> torch.Tensor:
    """CE against (1−ε)·onehot + ε/K, batch mean. ``allowed`` [B, classes] (bool) limits each
    row's softmax and smoothing to its K allowed classes (the per-camera softmax of ``reid adapt``)."""
    if allowed is None:
        log_p = F.log_softmax(logits, dim=1)
        k = logits.shape[1]
        smooth = torch.full_like(log_p, epsilon / k)
        smooth.scatter_(1, targets[:, None], 1 - epsilon + epsilon / k)
        return -(smooth * log_p).sum(dim=1).mean()
    log_p = F.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=1).masked_fill(~allowed, 0.0)
    k = allowed.sum(dim=1, keepdim=True).to(log_p.dtype)
    smooth = allowed.to(log_p.dtype) * (epsilon / k)
    smooth.scatter_(1, targets[:, None], 1 - epsilon + epsilon / k)
    return -(smooth * log_p).sum(dim=1).mean()


def pairwise_distance(a: torch.Tensor, b: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """``euclidean``: ‖a−b‖ (clamped at 1e-12 before the sqrt); ``cosine``: −cos(a, b)."""
    if metric == "cosine":
        return -F.normalize(a, dim=1) @ F.normalize(b, dim=1).t()
    if metric == "euclidean":
        d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2 * a @ b.t()
        return d2.clamp_min(1e-12).sqrt()
    raise ValueError(f"unknown metric {metric!r}; use 'euclidean' or 'cosine'")


def batch_hard_triplet(anchors: torch.Tensor, anchor_pids: torch.Tensor, candidates: torch.Tensor | None = None,
                       candidate_pids: torch.Tensor | None = None, margin: float = 0.3,
                       metric: str = "euclidean") -> torch.Tensor:
    """For each anchor: hardest positive (max distance, same pid) and hardest negative (min
    distance, other pid) among the candidates; mean of max(0, d_ap − d_an + margin). Anchors
    without a positive or a negative among the candidates are ignored."""
    if candidates is None:
        candidates, candidate_pids = anchors, anchor_pids
    dist = pairwise_distance(anchors, candidates, metric)
    same = anchor_pids[:, None] == candidate_pids[None, :]
    d_ap = dist.masked_fill(~same, float("-inf")).max(dim=1).values
    d_an = dist.masked_fill(same, float("inf")).min(dim=1).values
    valid = torch.isfinite(d_ap) & torch.isfinite(d_an)
    if not valid.any():
        return dist.sum() * 0.0
    return F.relu(d_ap[valid] - d_an[valid] + margin).mean()


def tkp_feature_loss(image_frames: torch.Tensor, video_frames: torch.Tensor) -> torch.Tensor:
    """L^F = mean over the N·T rows of ‖i − sg(f)‖² (summed over dims)."""
    return ((image_frames - video_frames.detach()) ** 2).sum(dim=1).mean()


def tkp_distance_loss(image_frames: torch.Tensor, video_frames: torch.Tensor,
                      normalization: str = "code") -> torch.Tensor:
    """L^D between the N·T×N·T Euclidean distance matrices of image and (detached) video frame
    features. ``code``: mean over all (NT)² entries (the official code; default);
    ``talk``: ‖D_img − D_vid‖²_F / (NT), which is NT times larger."""
    d_img = pairwise_distance(image_frames, image_frames)
    vf = video_frames.detach()
    d_vid = pairwise_distance(vf, vf)
    sq = (d_img - d_vid) ** 2
    if normalization == "code":
        return sq.mean()
    if normalization == "talk":
        return sq.sum() / image_frames.shape[0]
    raise ValueError("normalization must be 'code' or 'talk'")


def tkp_triplets(img: torch.Tensor, img_pids: torch.Tensor, vid: torch.Tensor, vid_pids: torch.Tensor,
                 margin: float = 0.3, metric: str = "euclidean") -> dict[str, torch.Tensor]:
    """The integrated heterogeneous triplet: I2V + V2I + I2I + V2V."""
    return {
        "i2v": batch_hard_triplet(img, img_pids, vid, vid_pids, margin, metric),
        "v2i": batch_hard_triplet(vid, vid_pids, img, img_pids, margin, metric),
        "i2i": batch_hard_triplet(img, img_pids, None, None, margin, metric),
        "v2v": batch_hard_triplet(vid, vid_pids, None, None, margin, metric),
    }
