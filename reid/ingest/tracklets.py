"""Tracks → tracklets: cut, filter, and pick the frames worth embedding.

A tracklet is one person's continuous appearance on one camera, cut when the track ends or after
``max_seconds`` (so one very long track becomes several searchable items with precise times).
Tracklets that are too short or whose person is too small are dropped: they would only add noise
to search results. Frames for the embedding are chosen by a quality score (box height, detection
score, sharpness, not cut by the frame border, plausible aspect) and spread over time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from reid.ingest.track import Match


@dataclass
class TrackletConfig:
    min_frames: int = 3  # detections (processed frames) a tracklet needs
    min_height: int = 64  # median person height in frame pixels
    max_seconds: float = 10.0  # cut longer tracks into several tracklets
    embed_frames: int = 8  # frames embedded (and kept as crops) per tracklet
    candidates: int = 32  # best frames kept in memory while the track runs
    pad: float = 0.05  # crop margin around the box (fraction of its size)
    scene_side: int = 640  # long side of the kept scene (the best frame, box marked); 0 = keep none


@dataclass
class Candidate:
    frame: int
    t: float
    box: np.ndarray  # xyxy
    score: float
    quality: float
    crop: np.ndarray


@dataclass
class Tracklet:
    track_id: int
    segment: int
    frame_start: int
    frame_end: int
    t_start: float
    t_end: float
    n_detections: int
    box: list[float]  # representative [x, y, w, h] (the best frame's box)
    box_frame: int  # the frame that box is on
    crops: list[np.ndarray]  # chosen frames, in time order
    frames: list[int]  # their frame indices
    boxes: list[list[float]]  # their boxes [x, y, w, h]
    quality: float  # mean quality of the chosen frames
    median_height: float
    scene: np.ndarray | None = None  # the best frame downscaled, the person's box marked: where they were


SCENE_BOX_BGR = (0, 220, 0)


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian on a fixed-size grey crop (blur → low)."""
    g = cv2.cvtColor(cv2.resize(crop, (48, 96), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(g, cv2.CV_32F).var())


def quality(box: np.ndarray, score: float, crop: np.ndarray, frame_w: int, frame_h: int) -> float:
    """In [0, 1]: bigger, sharper, more confident, whole (not cut by the border) and upright is better."""
    x1, y1, x2, y2 = (float(v) for v in box)
    h, w = y2 - y1, x2 - x1
    size = min(1.0, h / 160.0)
    conf = min(1.0, max(0.05, score))
    sharp = min(1.0, sharpness(crop) / 200.0)
    m = 2.0
    cut = x1 <= m or y1 <= m or x2 >= frame_w - m or y2 >= frame_h - m
    border = 0.3 if cut else 1.0
    ar = h / max(w, 1.0)
    aspect = 1.0 if 1.4 <= ar <= 4.5 else 0.5
    return size * conf * (0.4 + 0.6 * sharp) * border * aspect


def crop_box(frame: np.ndarray, box: np.ndarray, pad: float) -> np.ndarray:
    H, W = frame.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    px, py = (x2 - x1) * pad, (y2 - y1) * pad
    a, b = max(0, int(x1 - px)), max(0, int(y1 - py))
    c, d = min(W, int(np.ceil(x2 + px))), min(H, int(np.ceil(y2 + py)))
    return frame[b:d, a:c].copy()


@dataclass
class _Open:
    track_id: int
    segment: int = 0
    cands: list[Candidate] = field(default_factory=list)
    frame_start: int = -1
    frame_end: int = -1
    t_start: float = 0.0
    t_end: float = 0.0
    heights: list[float] = field(default_factory=list)
    scene: np.ndarray | None = None  # the best frame so far, downscaled (shared with other tracks)
    scene_box: np.ndarray | None = None  # the box on it, in its pixels
    scene_quality: float = -1.0


def downscale(frame: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    """The frame with its long side at most ``side`` pixels, and the scale applied."""
    scale = min(1.0, side / max(frame.shape[:2]))
    if scale == 1.0:
        return frame.copy(), 1.0
    size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), scale


def mark(scene: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A copy of the scene with the box drawn (the scene itself may be another track's too)."""
    out = scene.copy()
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    cv2.rectangle(out, (x1, y1), (x2, y2), SCENE_BOX_BGR, max(2, round(max(out.shape[:2]) / 320)))
    return out


class TrackletBuilder:
    """Collects matches per track; calls ``emit(tracklet)`` for every finished, kept tracklet."""

    def __init__(self, cfg: TrackletConfig, emit: Callable[[Tracklet], None]) -> None:
        self.cfg = cfg
        self.emit = emit
        self.open: dict[int, _Open] = {}
        self.dropped = {"short": 0, "small": 0, "unconfirmed": 0}

    def add(self, frame_index: int, t: float, frame: np.ndarray, matches: list[Match]) -> None:
        H, W = frame.shape[:2]
        small: tuple[np.ndarray, float] | None = None  # this frame downscaled once, if a track needs it
        for m in matches:
            o = self.open.get(m.track_id)
            if o is None:
                o = self.open[m.track_id] = _Open(m.track_id)
            if o.frame_start >= 0 and t - o.t_start >= self.cfg.max_seconds:
                seg = o.segment + 1
                self._close(o, True)
                o = self.open[m.track_id] = _Open(m.track_id, segment=seg)
            if o.frame_start < 0:
                o.frame_start, o.t_start = frame_index, t
            o.frame_end, o.t_end = frame_index, t
            o.heights.append(float(m.box[3] - m.box[1]))
            crop = crop_box(frame, m.box, self.cfg.pad)
            if crop.shape[0] < 8 or crop.shape[1] < 4:
                continue
            q = quality(m.box, m.score, crop, W, H)
            o.cands.append(Candidate(frame_index, t, m.box.copy(), m.score, q, crop))
            if self.cfg.scene_side and q > o.scene_quality:  # the best frame so far is the tracklet's box frame
                small = small or downscale(frame, self.cfg.scene_side)
                o.scene, o.scene_box, o.scene_quality = small[0], m.box * small[1], q
            if len(o.cands) > self.cfg.candidates:
                self._prune(o)

    def _prune(self, o: _Open) -> None:
        """Keep the best candidates, but never all from one moment: best of each time bin."""
        n = self.cfg.candidates
        bins = np.linspace(o.cands[0].frame, o.cands[-1].frame + 1, n // 2 + 1)
        keep: dict[int, Candidate] = {}
        for c in o.cands:
            b = int(np.searchsorted(bins, c.frame, side="right"))
            if b not in keep or c.quality > keep[b].quality:
                keep[b] = c
        rest = sorted((c for c in o.cands if c not in keep.values()), key=lambda c: -c.quality)
        chosen = list(keep.values()) + rest[: max(0, n - len(keep))]
        o.cands = sorted(chosen, key=lambda c: c.frame)

    def end(self, track_id: int, confirmed: bool) -> None:
        o = self.open.pop(track_id, None)
        if o is not None:
            self._close(o, confirmed)

    def finish(self) -> None:
        for tid in list(self.open):
            self.end(tid, True)

    def _close(self, o: _Open, confirmed: bool) -> None:
        if not confirmed:
            self.dropped["unconfirmed"] += 1
            return
        if len(o.heights) < self.cfg.min_frames or not o.cands:
            self.dropped["short"] += 1
            return
        med = float(np.median(o.heights))
        if med < self.cfg.min_height:
            self.dropped["small"] += 1
            return
        chosen = select_frames(o.cands, self.cfg.embed_frames)
        best = max(chosen, key=lambda c: c.quality)
        x1, y1, x2, y2 = (float(v) for v in best.box)
        self.emit(Tracklet(
            track_id=o.track_id, segment=o.segment, frame_start=o.frame_start, frame_end=o.frame_end,
            t_start=o.t_start, t_end=o.t_end, n_detections=len(o.heights),
            box=[round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1)], box_frame=best.frame,
            crops=[c.crop for c in chosen], frames=[c.frame for c in chosen], boxes=[_xywh(c.box) for c in chosen],
            quality=float(np.mean([c.quality for c in chosen])), median_height=med,
            scene=mark(o.scene, o.scene_box) if o.scene is not None else None,
        ))


def _xywh(b: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in b)
    return [round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1)]


def select_frames(cands: list[Candidate], n: int) -> list[Candidate]:
    """Up to ``n`` high-quality frames spread over time (greedy by quality with a minimum gap), in time
    order. Frames far below the best quality are skipped unless nothing else is left."""
    if len(cands) <= n:
        return sorted(cands, key=lambda c: c.frame)
    span = cands[-1].frame - cands[0].frame
    gap = 0.8 * span / n if span > 0 else 0
    order = sorted(cands, key=lambda c: -c.quality)
    floor = 0.25 * order[0].quality
    picked: list[Candidate] = []
    for c in order:
        if len(picked) >= n:
            break
        if c.quality < floor and len(picked) >= max(1, n // 2):
            break
        if all(abs(c.frame - p.frame) >= gap for p in picked):
            picked.append(c)
    return sorted(picked, key=lambda c: c.frame)
