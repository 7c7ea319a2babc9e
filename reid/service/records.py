"""Footage results → gallery records: what the service stores for each embedded tracklet.

Ingestion (:mod:`reid.ingest`) knows nothing of storage; this is where a tracklet becomes an
``ItemRecord`` with its vector, crops and scene, ready for ``Gallery.add_records``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from reid.ingest.pipeline import FootageJob, FootageResult
from reid.ingest.tracklets import Tracklet
from reid.service.gallery import Crop, NewItem
from reid.service.store import ItemRecord


class EmbeddedTracklets(Protocol):
    """A finished job's tracklets: a FootageResult, or the TrackletBatch a Redis worker sent."""

    job: FootageJob
    footage_id: str
    tracklets: list[Tracklet]
    vectors: list[np.ndarray]


def _crop(c: Any) -> Crop:
    """Pixels, or a crop that travelled as JPEG (its bytes are stored as they are)."""
    return Crop(bgr=c) if isinstance(c, np.ndarray) else Crop(bgr=c.bgr, data=c.data, ext=c.ext)


def gallery_entries(res: EmbeddedTracklets) -> list[NewItem]:
    """One tracklet item per embedded tracklet; times are absolute when the job gave a start time."""
    job = res.job
    entries: list[NewItem] = []
    for tl, vec in zip(res.tracklets, res.vectors, strict=True):
        meta = {**(job.meta or {}), "track_id": tl.track_id, "segment": tl.segment,
                "offset_s": [round(tl.t_start, 3), round(tl.t_end, 3)], "detections": tl.n_detections,
                "quality": round(tl.quality, 3), "frames": tl.frames, "boxes": tl.boxes,
                "box_frame": tl.box_frame}
        rec = ItemRecord(kind="tracklet", camera=job.camera,
                         ts_start=job.start + tl.t_start if job.start is not None else None,
                         ts_end=job.start + tl.t_end if job.start is not None else None,
                         source=job.source or job.path.name, footage_id=res.footage_id,
                         frame_start=tl.frame_start, frame_end=tl.frame_end, box=tl.box, meta=meta,
                         n_frames=len(tl.crops))
        scene = _crop(tl.scene) if tl.scene is not None else None
        entries.append(NewItem(rec, vec, [_crop(c) for c in tl.crops], scene))
    return entries


def commit_result(gallery: Any, res: FootageResult) -> dict[str, Any]:
    """One transaction for the whole footage; nothing when that footage is already indexed.
    Returns the job's stats with what was indexed."""
    entries = gallery_entries(res)
    added = gallery.add_records(entries, unless_footage=res.footage_id) if entries else []
    stats = res.stats()
    stats["tracklets"] = len(added)
    if entries and not added:
        stats["already_indexed"] = True
        stats["tracklets"] = gallery.store.count_footage(res.footage_id)
    stats["item_ids"] = [r.id for r in added][:1000]
    return stats
