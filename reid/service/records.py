"""Footage results → gallery records: what the service stores for each embedded tracklet.

Ingestion (:mod:`reid.ingest`) knows nothing of storage; this is where a tracklet becomes an
``ItemRecord`` with its vector and crops, ready for ``Gallery.add_records``.
"""

from __future__ import annotations

import numpy as np

from reid.ingest.pipeline import FootageResult
from reid.service.gallery import Crop
from reid.service.store import ItemRecord

GalleryEntry = tuple[ItemRecord, np.ndarray, list[Crop]]


def gallery_entries(res: FootageResult) -> list[GalleryEntry]:
    """One tracklet item per embedded tracklet; times are absolute when the job gave a start time."""
    job = res.job
    entries: list[GalleryEntry] = []
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
        entries.append((rec, vec, [Crop(bgr=c) for c in tl.crops]))
    return entries
