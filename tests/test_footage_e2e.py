"""End to end on real frames: PRW campus frames indexed as footage of cameras c1 and c3 (NanoDet
detector, the shipped default re-ID model, a real gallery in tmp_path), then searched with a
Market-1501 crop of person 0001: her tracklets must come first. bench/ingest.py records the full
ranks and saves the picture (bench/ingest_prw_grid.png)."""

from __future__ import annotations

from pathlib import Path

import cv2

from reid.ingest.detect import DetectorConfig
from reid.ingest.pipeline import FootageJob, PipelineConfig, process_footage
from reid.ingest.track import TrackerConfig
from reid.ingest.tracklets import TrackletConfig
from tests.conftest import REPO, shared_path

# Person 0001 located by eye (full-resolution point on her body), as in bench/ingest.py.
HER = {"c1s1_001051": (1290, 590), "c1s1_002301": (893, 580), "c1s1_002326": (825, 590),
       "c1s1_002351": (750, 600), "c1s1_002376": (655, 600), "c1s1_002401": (540, 620),
       "c1s1_009376": (1838, 580), "c1s1_009451": (1463, 580), "c1s1_009476": (1425, 560),
       "c1s1_009526": (1568, 540), "c1s1_014601": (1795, 490), "c1s1_014776": (1460, 540),
       "c1s1_014901": (1165, 600), "c3s1_000501": (1023, 520), "c3s1_000551": (1188, 530),
       "c3s1_001626": (1667, 530)}


def test_prw_frames_indexed_then_person_0001_found_first(tmp_path: Path) -> None:
    samples = shared_path("data", "footage", "prw", "data", "samples")
    query = shared_path("data", "footage", "prw", "query", "0001_c1s1_001051_00.jpg")
    nanodet = shared_path("weights", "nanodet", "nanodet_m.onnx")
    from reid.service.embedder import Embedder
    from reid.service.gallery import Gallery
    from reid.service.records import commit_result
    from reid.service.settings import Settings

    settings = Settings(model=REPO / "reid" / "models" / "default", data_dir=tmp_path / "data", intra_op_threads=1)
    # still frames ≥ 1 s apart: no tracking, every detection is a tracklet
    cfg = PipelineConfig(detector=DetectorConfig(name=str(nanodet)), detect_fps=0,
                         tracker=TrackerConfig(min_hits=1, match_iou=1.01, match_iou_low=1.01),
                         tracklets=TrackletConfig(min_frames=1))
    embedder = Embedder(settings)
    gallery = Gallery(settings, embedder, background=False)
    names: dict[tuple[str, int], str] = {}
    try:
        for cam in ("c1", "c3"):
            d = tmp_path / cam / "img1"
            d.mkdir(parents=True)
            for i, f in enumerate(sorted(samples.glob(f"{cam}s1_*.jpg"))):
                (d / f"{i + 1:06d}.jpg").symlink_to(f)
                names[(cam, i)] = f.stem
            res = process_footage(FootageJob(path=tmp_path / cam, camera=cam, start=1.4e9, fps=1.0), cfg,
                                  embedder.embed_tracklet)
            assert commit_result(gallery, res)["tracklets"] == len(res.vectors) > 0

        def hers(rec) -> bool:
            for fr, (x, y, w, h) in zip(rec.meta["frames"], rec.meta["boxes"], strict=True):
                pt = HER.get(names[(rec.camera, fr)])
                if pt and x <= pt[0] <= x + w and y <= pt[1] <= y + h:
                    return True
            return False

        total = gallery.count()
        hits = gallery.search(embedder.embed([cv2.imread(str(query))])[0], total)
        ranks = [i + 1 for i, h in enumerate(hits) if hers(h.record)]
        assert total >= 15 and len(ranks) >= 4, (total, ranks)
        assert ranks[0] == 1, ranks  # the best match is her
        assert {h.record.camera for h in hits} == {"c1", "c3"}
        top = hits[0].record
        assert top.kind == "tracklet" and top.ts_start is not None and top.ts_start >= 1.4e9
        assert gallery.path(top.thumbnail).is_file()
    finally:
        gallery.close()
        embedder.close()
