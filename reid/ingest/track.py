"""Multi-object tracking in the SORT / ByteTrack family.

Each track has a constant-velocity Kalman filter over (cx, cy, w, h). Every processed frame:
predict all tracks, then match in two rounds with the Hungarian method
(``scipy.optimize.linear_sum_assignment``): confirmed/lost tracks against high-score detections,
then the remaining tracks against low-score detections (ByteTrack's trick to keep people through
partial occlusion). Unmatched high-score detections start tentative tracks; a track is confirmed
after ``min_hits`` matches and ends after ``max_age`` processed frames without one. When appearance
features are given (optional re-ID), the cost blends IoU with cosine distance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between xyxy boxes a [N,4] and b [M,4]."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return (inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)).astype(np.float32)


class KalmanBox:
    """Constant-velocity Kalman filter on (cx, cy, w, h, vcx, vcy, vw, vh); noise scales with box height."""

    _F = np.eye(8, dtype=np.float64)
    _F[:4, 4:] = np.eye(4)
    _H = np.eye(4, 8, dtype=np.float64)

    def __init__(self, box: np.ndarray) -> None:
        self.x = np.zeros(8)
        self.x[:4] = _xyxy_to_cxcywh(box)
        h = max(self.x[3], 1.0)
        self.P = np.diag([(0.1 * h) ** 2] * 4 + [(0.3 * h) ** 2] * 4).astype(np.float64)

    def predict(self) -> np.ndarray:
        h = max(self.x[3], 1.0)
        Q = np.diag([(0.05 * h) ** 2] * 4 + [(0.01 * h) ** 2 * 4] * 4)
        self.x = self._F @ self.x
        self.x[2:4] = np.maximum(self.x[2:4], 1.0)
        self.P = self._F @ self.P @ self._F.T + Q
        return self.box()

    def update(self, box: np.ndarray) -> None:
        h = max(self.x[3], 1.0)
        R = np.diag([(0.05 * h) ** 2] * 4)
        z = _xyxy_to_cxcywh(box)
        S = self._H @ self.P @ self._H.T + R
        K = self.P @ self._H.T @ np.linalg.inv(S)
        self.x = self.x + K @ (z - self._H @ self.x)
        self.P = (np.eye(8) - K @ self._H) @ self.P

    def box(self) -> np.ndarray:
        cx, cy, w, h = self.x[:4]
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)


def _xyxy_to_cxcywh(b: np.ndarray) -> np.ndarray:
    return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]], np.float64)


@dataclass
class TrackerConfig:
    high: float = 0.5  # detections at or above this start and extend tracks (first round)
    low: float = 0.1  # detections between low and high only extend tracks (second round)
    match_iou: float = 0.2  # minimum IoU to match (first round)
    match_iou_low: float = 0.4  # minimum IoU to match a low-score detection
    min_hits: int = 2  # matches before a track is confirmed
    max_age: int = 8  # processed frames a track may go unmatched before it ends
    tentative_age: int = 1  # the same for a track not yet confirmed
    appearance_weight: float = 0.0  # 0 = IoU only; >0 blends in cosine distance of features


@dataclass
class Track:
    id: int
    kf: KalmanBox
    hits: int = 1
    misses: int = 0
    confirmed: bool = False
    feature: np.ndarray | None = None
    last_frame: int = -1


@dataclass
class Match:
    """One detection assigned to a track on one frame."""

    track_id: int
    det_index: int
    box: np.ndarray
    score: float


@dataclass
class Tracker:
    cfg: TrackerConfig = field(default_factory=TrackerConfig)
    tracks: list[Track] = field(default_factory=list)
    next_id: int = 1
    on_end: Callable[[int, bool], None] | None = None  # (track id, confirmed) when a track ends

    def _cost(self, trks: list[Track], boxes: np.ndarray, feats: np.ndarray | None) -> np.ndarray:
        pred = np.stack([t.kf.box() for t in trks]) if trks else np.zeros((0, 4), np.float32)
        cost = 1.0 - iou_matrix(pred, boxes)
        w = self.cfg.appearance_weight
        if w > 0 and feats is not None and len(trks) and len(boxes):
            tf = np.stack([t.feature if t.feature is not None else np.zeros(feats.shape[1]) for t in trks])
            cos = 1.0 - tf @ feats.T
            cost = (1 - w) * cost + w * np.clip(cos, 0, 2) / 2
        return cost

    def _assign(self, trks: list[Track], boxes: np.ndarray, feats: np.ndarray | None,
                min_iou: float) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        if not trks or len(boxes) == 0:
            return [], list(range(len(trks))), list(range(len(boxes)))
        cost = self._cost(trks, boxes, feats)
        pred = np.stack([t.kf.box() for t in trks])
        iou = iou_matrix(pred, boxes)
        rows, cols = linear_sum_assignment(cost)
        pairs = [(r, c) for r, c in zip(rows.tolist(), cols.tolist(), strict=True) if iou[r, c] >= min_iou]
        mr = {r for r, _ in pairs}
        mc = {c for _, c in pairs}
        return pairs, [i for i in range(len(trks)) if i not in mr], [j for j in range(len(boxes)) if j not in mc]

    def update(self, frame: int, boxes: np.ndarray, scores: np.ndarray,
               feats: np.ndarray | None = None) -> list[Match]:
        """Advance one processed frame; returns every (track, detection) match on it."""
        for t in self.tracks:
            t.kf.predict()
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(scores, np.float32).reshape(-1)
        hi = np.nonzero(scores >= self.cfg.high)[0]
        lo = np.nonzero((scores >= self.cfg.low) & (scores < self.cfg.high))[0]
        out: list[Match] = []
        matched_tracks: set[int] = set()

        def take(trk: Track, j: int) -> None:
            trk.kf.update(boxes[j])
            trk.hits += 1
            trk.misses = 0
            trk.last_frame = frame
            if feats is not None:
                f = feats[j]
                trk.feature = f if trk.feature is None else _l2n(0.9 * trk.feature + 0.1 * f)
            if trk.hits >= self.cfg.min_hits:
                trk.confirmed = True
            matched_tracks.add(trk.id)
            out.append(Match(trk.id, int(j), boxes[j].copy(), float(scores[j])))

        # round 1: all live tracks vs high-score detections
        f_hi = feats[hi] if feats is not None else None
        pairs, left_t, left_d = self._assign(self.tracks, boxes[hi], f_hi, self.cfg.match_iou)
        for r, c in pairs:
            take(self.tracks[r], int(hi[c]))
        # round 2: the remaining confirmed tracks vs low-score detections (IoU only)
        rest = [self.tracks[i] for i in left_t if self.tracks[i].confirmed]
        pairs2, _, _ = self._assign(rest, boxes[lo], None, self.cfg.match_iou_low)
        for r, c in pairs2:
            take(rest[r], int(lo[c]))
        # new tentative tracks from unmatched high-score detections
        for c in left_d:
            j = int(hi[c])
            t = Track(self.next_id, KalmanBox(boxes[j]), last_frame=frame,
                      feature=feats[j] if feats is not None else None)
            self.next_id += 1
            t.confirmed = self.cfg.min_hits <= 1
            matched_tracks.add(t.id)
            out.append(Match(t.id, j, boxes[j].copy(), float(scores[j])))
            self.tracks.append(t)
        # age unmatched tracks; end the old ones (tentative tracks die on their first miss)
        alive = []
        for t in self.tracks:
            if t.id not in matched_tracks and t.last_frame != frame:
                t.misses += 1
            if t.misses > (self.cfg.max_age if t.confirmed else self.cfg.tentative_age):
                if self.on_end is not None:
                    self.on_end(t.id, t.confirmed)
                continue
            alive.append(t)
        self.tracks = alive
        return out  # tentative tracks included: the consumer learns the verdict from on_end

    def finish(self) -> None:
        """End every live track (end of footage)."""
        for t in self.tracks:
            if self.on_end is not None:
                self.on_end(t.id, t.confirmed)
        self.tracks = []


def _l2n(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-12)
