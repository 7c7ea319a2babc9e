"""Footage → embedded tracklets: decode, detect, track, cut tracklets, embed.

:func:`process_footage` does the work and returns the tracklets with their vectors, writing
nothing. The service turns a result into gallery records (:func:`reid.service.records.gallery_entries`)
and commits them in one transaction, so a job's tracklets are either all indexed or absent, and the
same footage (same content hash) is never indexed twice. The embedded job runner, the Redis worker
and ``reid index`` all use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reid.ingest.decode import Footage, FootageError, FootageInfo, content_hash
from reid.ingest.detect import Detector, DetectorConfig, make_detector
from reid.ingest.track import Tracker, TrackerConfig
from reid.ingest.tracklets import Tracklet, TrackletBuilder, TrackletConfig


class Cancelled(Exception):
    """The job was cancelled while it ran."""


@dataclass
class PipelineConfig:
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    tracklets: TrackletConfig = field(default_factory=TrackletConfig)
    detect_fps: float = 5.0  # detections per second of footage, whatever its frame rate (0 = every frame)
    track_max_age_s: float = 1.5
    fps: float | None = None
    max_pixels: int = 3840 * 2160
    max_frames: int | None = None  # stop after this many frames (tests, previews)

    @classmethod
    def from_settings(cls, s: Any) -> PipelineConfig:
        """From the service's settings sections (reid.service.settings), whose fields are these
        configs' own: REID_DETECTOR_* → DetectorConfig, REID_TRACKLET_* → TrackletConfig,
        REID_FOOTAGE_* → the rest."""
        footage = s.footage
        return cls(
            detector=DetectorConfig(**s.detector.model_dump()),
            tracklets=TrackletConfig(**s.tracklet.model_dump(exclude={"pooling"})),
            detect_fps=footage.detect_fps, track_max_age_s=footage.track_max_age_s,
            fps=footage.fps, max_pixels=footage.max_pixels,
        )


@dataclass
class Progress:
    frames_done: int
    frames_total: int | None
    fps: float  # frames of footage processed per wall-clock second
    tracklets: int
    realtime: float | None = None  # footage seconds per wall-clock second


@dataclass
class FootageJob:
    """What the uploader told us about the footage."""

    path: Path
    camera: str
    start: float | None = None  # POSIX seconds of the first frame (None: times stay relative)
    fps: float | None = None
    source: str | None = None  # the uploaded file name
    meta: dict[str, Any] | None = None
    footage_id: str | None = None  # content hash; computed when None


@dataclass
class FootageResult:
    job: FootageJob
    footage_id: str
    info: FootageInfo
    tracklets: list[Tracklet]
    vectors: list[np.ndarray]  # one per tracklet, in order (empty when embedding was skipped)
    frames_done: int
    seconds: float
    errors: list[str]
    dropped: dict[str, int]

    def stats(self) -> dict[str, Any]:
        dur = self.frames_done / self.info.fps if self.info.fps else None
        return {
            "footage_id": self.footage_id,
            "tracklets": len(self.vectors),
            "frames_done": self.frames_done,
            "frames_total": self.info.n_frames,
            "footage_seconds": round(dur, 2) if dur else None,
            "wall_seconds": round(self.seconds, 2),
            "fps": round(self.frames_done / self.seconds, 1) if self.seconds > 0 else None,
            "realtime": round(dur / self.seconds, 2) if dur and self.seconds > 0 else None,
            "dropped": self.dropped,
            "width": self.info.width,
            "height": self.info.height,
        }


def detect_stride(footage_fps: float, detect_fps: float) -> int:
    """Every how many frames to detect so that detection runs ``detect_fps`` times per footage second:
    the cost of an hour of footage then does not depend on the camera's frame rate (a 30 fps camera
    would otherwise cost three times a 10 fps one, for the same people)."""
    if detect_fps <= 0 or not footage_fps:
        return 1
    return max(1, round(footage_fps / detect_fps))


def process_footage(
    job: FootageJob,
    cfg: PipelineConfig,
    embed_tracklet: Callable[[Sequence[np.ndarray]], np.ndarray] | None,
    detector: Detector | None = None,
    progress: Callable[[Progress], bool | None] | None = None,
    progress_every_s: float = 1.0,
) -> FootageResult:
    """Run the pipeline over one footage; ``progress`` returning False cancels (:class:`Cancelled`).
    ``embed_tracklet`` None skips embedding (detection/tracking benchmarks)."""
    t0 = time.perf_counter()
    src = Footage(job.path, fps=job.fps or cfg.fps, max_pixels=cfg.max_pixels)
    info = src.info()
    footage_id = job.footage_id or content_hash(job.path)
    det = detector or make_detector(cfg.detector)
    stride = detect_stride(info.fps, cfg.detect_fps)
    tcfg = TrackerConfig(**{**cfg.tracker.__dict__})
    tcfg.max_age = max(1, round(cfg.track_max_age_s * info.fps / stride))
    tracklets: list[Tracklet] = []
    vectors: list[np.ndarray] = []
    errors: list[str] = []

    def emit(tl: Tracklet) -> None:
        tracklets.append(tl)
        if embed_tracklet is not None:
            vectors.append(np.asarray(embed_tracklet(tl.crops), np.float32).reshape(-1))

    builder = TrackletBuilder(cfg.tracklets, emit)
    tracker = Tracker(tcfg, on_end=builder.end)
    last_report = time.perf_counter()
    done = 0
    last_index = -1
    for fr in src.frames(stride=stride, limit=cfg.max_frames, errors=errors):
        dets = det.detect(fr.bgr)
        matches = tracker.update(fr.index, dets.boxes, dets.scores)
        builder.add(fr.index, fr.t, fr.bgr, matches)
        last_index = fr.index
        done = fr.index + 1
        now = time.perf_counter()
        if progress is not None and now - last_report >= progress_every_s:
            last_report = now
            el = now - t0
            if progress(Progress(done, info.n_frames, done / el, len(tracklets),
                                 (done / info.fps) / el if info.fps else None)) is False:
                raise Cancelled()
    if last_index < 0:
        raise FootageError(f"{job.path.name}: no decodable frames")
    done = max(done, src.frames_read)
    tracker.finish()
    builder.finish()
    el = time.perf_counter() - t0
    if progress is not None:
        progress(Progress(done, info.n_frames, done / max(el, 1e-9), len(tracklets),
                          (done / info.fps) / max(el, 1e-9) if info.fps else None))
    if info.n_frames and done < 0.9 * info.n_frames and cfg.max_frames is None:
        errors.append(f"decoding stopped at frame {done} of {info.n_frames}: the file is truncated or damaged; "
                      "the frames before it were indexed")
    return FootageResult(job, footage_id, info, tracklets, vectors, done, el, errors, dict(builder.dropped))
