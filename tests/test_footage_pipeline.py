"""Footage pipeline on real video: decoding (container, raw H.264, MOT folders, zips), detectors
(HOG, NanoDet, the YOLO output decoders), the tracker, tracklet cutting/selection, and bad input."""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from reid.ingest.decode import Footage, FootageError, content_hash, is_footage
from reid.ingest.detect import (
    Detections,
    DetectorConfig,
    HogDetector,
    YoloDetector,
    YoloxDetector,
    describe_detector,
    make_detector,
    nms,
    sniff_format,
)
from reid.ingest.pipeline import FootageJob, PipelineConfig, detect_stride, process_footage
from reid.ingest.track import Tracker, TrackerConfig, iou_matrix
from reid.ingest.tracklets import SCENE_BOX_BGR, Candidate, TrackletBuilder, TrackletConfig, select_frames
from reid.service.records import gallery_entries
from tests.conftest import shared_path

INTEL = ("data", "footage", "intel")


def intel_mp4() -> Path:
    return shared_path(*INTEL, "one-by-one-person-detection.mp4")


def write_clip(src: Path, dst: Path, start: int, n: int, fourcc: str = "mp4v", fps: float = 10) -> Path:
    """The n frames of ``src`` from ``start`` as a small real video file (at ``src``'s 10 fps unless told)."""
    cap = cv2.VideoCapture(str(src))
    cap.set(cv2.CAP_PROP_POS_FRAMES, start)
    ok, f = cap.read()
    assert ok
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*fourcc), fps, (f.shape[1], f.shape[0]))
    for _ in range(n):
        out.write(f)
        ok, f = cap.read()
        if not ok:
            break
    out.release()
    cap.release()
    return dst


# --------------------------------------------------------------------------------------------- decode
def test_container_timestamps_and_stride() -> None:
    src = Footage(intel_mp4())
    info = src.info()
    assert (info.width, info.height, info.n_frames, info.kind) == (768, 432, 1394, "video")
    assert info.fps == pytest.approx(10.0)
    frames = list(src.frames(stride=3, limit=5))
    assert [f.index for f in frames] == [0, 3, 6, 9, 12]
    assert [round(f.t, 2) for f in frames] == [0.0, 0.3, 0.6, 0.9, 1.2]
    assert frames[0].bgr.shape == (432, 768, 3)


def test_raw_h264_stream_uses_the_given_fps() -> None:
    path = shared_path(*INTEL, "people-detection.264")
    src = Footage(path, fps=12.5)
    assert src.info().fps_source == "given" and src.info().width == 768
    frames = list(src.frames(limit=4))
    assert len(frames) == 4 and [f.t for f in frames] == pytest.approx([0, 0.08, 0.16, 0.24])
    # without an fps the container's nominal rate (25) or the default clock is used, never zeros
    ts = [f.t for f in Footage(path).frames(limit=3)]
    assert ts[1] > ts[0] and ts[2] > ts[1]


def test_mot_folder_and_zip_of_frames(tmp_path: Path) -> None:
    seq = shared_path("data", "footage", "mot17_mini", "train", "MOT17-02-FRCNN")
    src = Footage(seq)
    info = src.info()
    assert info.kind == "frames" and info.fps == 30 and info.fps_source == "seqinfo"
    frames = list(src.frames())
    assert len(frames) == info.n_frames >= 4 and frames[1].t == pytest.approx(1 / 30)
    assert is_footage(seq)
    # the same frames zipped (with a corrupt member that is skipped and reported)
    z = tmp_path / "seq.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted((seq / "img1").iterdir()):
            zf.write(p, f"img1/{p.name}")
        zf.writestr("img1/999999.jpg", b"not a jpeg")
    errors: list[str] = []
    zframes = list(Footage(z, fps=10).frames(errors=errors))
    assert len(zframes) == len(frames) and np.array_equal(zframes[0].bgr, frames[0].bgr)
    assert any("999999.jpg" in e for e in errors)
    assert content_hash(z) != content_hash(seq) and len(content_hash(seq)) == 32


def test_bad_files_give_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(FootageError, match="empty file"):
        Footage(empty)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(FootageError, match="not a readable video|no decodable frames"):
        Footage(junk)
    text = tmp_path / "notes.avi"
    text.write_text("this is not a video\n" * 100)
    with pytest.raises(FootageError):
        Footage(text)
    # a real video with frames larger than the limit
    big = tmp_path / "big.avi"
    w = cv2.VideoWriter(str(big), cv2.VideoWriter_fourcc(*"MJPG"), 5, (4200, 2400))
    for _ in range(2):
        w.write(np.zeros((2400, 4200, 3), np.uint8))
    w.release()
    with pytest.raises(FootageError, match="4200×2400 pixels"):
        Footage(big, max_pixels=3840 * 2160)
    with pytest.raises(FootageError, match="not found"):
        Footage(tmp_path / "missing.mp4")


# --------------------------------------------------------------------------------------------- detect
def frame_at(i: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(intel_mp4()))
    cap.set(cv2.CAP_PROP_POS_FRAMES, i)
    ok, f = cap.read()
    cap.release()
    assert ok
    return f


def test_hog_finds_the_person_and_not_the_empty_room() -> None:
    det = HogDetector(DetectorConfig())
    person = det.detect(frame_at(300))  # a man in a black hoodie, centre of the frame
    assert len(person) >= 1
    x1, y1, x2, y2 = person.boxes[int(np.argmax(person.scores))]
    assert 300 < (x1 + x2) / 2 < 520 and y2 - y1 > 200
    assert len(det.detect(frame_at(20))) == 0  # empty corridor


def test_nanodet_finds_the_person() -> None:
    onnx = shared_path("weights", "nanodet", "nanodet.onnx")
    det = make_detector(DetectorConfig(name=str(onnx)))
    d = det.detect(frame_at(300))
    assert len(d) == 1 and d.scores[0] > 0.5
    x1, y1, x2, y2 = d.boxes[0]
    assert 330 < x1 < 420 and 500 < x2 < 600 and y2 - y1 > 300
    assert len(det.detect(frame_at(20))) == 0


def _const_onnx(path: Path, out: np.ndarray, size: int = 64) -> Path:
    """An ONNX model with a 1×3×size×size input whose output is a fixed tensor (a YOLO export stand-in)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])
    outv = helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out.shape))
    const = numpy_helper.from_array(out.astype(np.float32), "c")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "z")
    nodes = [helper.make_node("ReduceSum", ["images"], ["s"], keepdims=0),
             helper.make_node("Mul", ["s", "z"], ["s0"]),
             helper.make_node("Add", ["c", "s0"], ["output0"])]
    g = helper.make_graph(nodes, "g", [inp], [outv], [const, zero])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_yolo_v8_and_v5_outputs_are_decoded(tmp_path: Path) -> None:
    # one person (class 0) at cx=32, cy=32, w=16, h=20 in the 64×64 letterboxed input; one cat (class 15)
    v8 = np.zeros((1, 84, 84), np.float32)  # one column per cell of the 8/16/32 grids (640²: 8400)
    v8[0, :4, 0] = [32, 32, 16, 20]
    v8[0, 4, 0] = 0.9
    v8[0, :4, 1] = [10, 10, 8, 8]
    v8[0, 4 + 15, 1] = 0.95
    det = make_detector(DetectorConfig(name=str(_const_onnx(tmp_path / "v8.onnx", v8)), min_height=1))
    assert isinstance(det, YoloDetector) and det.fmt == "yolov8"
    frame = np.zeros((64, 128, 3), np.uint8)  # letterboxed: scale 0.5, 16 px pad top and bottom
    d = det.detect(frame)
    assert len(d) == 1
    np.testing.assert_allclose(d.boxes[0], [48, 12, 80, 52], atol=0.5)
    v5 = np.zeros((1, 100, 85), np.float32)
    v5[0, 0, :5] = [32, 32, 16, 40, 0.8]
    v5[0, 0, 5] = 0.9
    v5[0, 1, :5] = [32, 32, 16, 40, 0.1]  # low objectness
    v5[0, 1, 5] = 0.9
    det5 = make_detector(DetectorConfig(name=str(_const_onnx(tmp_path / "v5.onnx", v5)), min_height=1))
    assert det5.fmt == "yolov5"
    d5 = det5.detect(frame)
    assert len(d5) == 1 and d5.scores[0] == pytest.approx(0.72)


def test_yolox_grid_output_is_decoded(tmp_path: Path) -> None:
    # a 64×64 YOLOX input has 8² + 4² + 2² = 84 cells (strides 8, 16, 32); rows are raw
    # (dx, dy, log w, log h, objectness, classes): a person in stride-8 cell (x=3, y=1), 16×24 px
    out = np.zeros((1, 84, 85), np.float32)
    out[0, 1 * 8 + 3, :6] = [0.5, 0.5, np.log(2), np.log(3), 0.9, 0.8]
    out[0, 64 + 5, :5] = [0, 0, 0, 0, 0.9]  # a stride-16 cell that is a cat, not a person
    out[0, 64 + 5, 5 + 15] = 0.9
    path = _const_onnx(tmp_path / "yolox.onnx", out)
    assert sniff_format(path) == "yolox"
    det = make_detector(DetectorConfig(name=str(path), min_height=1, input_size=0))
    assert isinstance(det, YoloxDetector)
    d = det.detect(np.zeros((64, 128, 3), np.uint8))  # top-left letterbox at scale 0.5
    assert len(d) == 1 and d.scores[0] == pytest.approx(0.72)
    np.testing.assert_allclose(d.boxes[0], [40, 0, 72, 48], atol=1e-3)  # centre (28, 12) ± (8, 12), / 0.5


def test_yolox_finds_the_person_at_the_frames_aspect_ratio(yolox_onnx: Path) -> None:
    det = make_detector(DetectorConfig(name=str(yolox_onnx)))
    assert isinstance(det, YoloxDetector)
    assert det.input_hw(432, 768) == (384, 640) and det.input_hw(1080, 1920) == (384, 640)
    d = det.detect(frame_at(300))
    assert len(d) == 1 and d.scores[0] > 0.6
    x1, y1, x2, y2 = d.boxes[0]
    assert 330 < x1 < 420 and 500 < x2 < 600 and y2 - y1 > 300
    assert len(det.detect(frame_at(20))) == 0  # empty corridor


def test_auto_detector_is_yolox_when_installed_else_hog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        yolox_onnx: Path) -> None:
    monkeypatch.setenv("REID_CACHE", str(tmp_path / "empty"))
    assert isinstance(make_detector(DetectorConfig(name="auto")), HogDetector)
    assert describe_detector("auto").startswith("hog (no detector installed")
    (tmp_path / "cache" / "detectors").mkdir(parents=True)
    (tmp_path / "cache" / "detectors" / "yolox_nano.onnx").symlink_to(yolox_onnx)
    monkeypatch.setenv("REID_CACHE", str(tmp_path / "cache"))
    assert isinstance(make_detector(DetectorConfig(name="auto")), YoloxDetector)
    assert describe_detector("auto").startswith("yolox-nano (")


def test_nms_and_unknown_detector() -> None:
    d = Detections(np.array([[0, 0, 10, 20], [1, 1, 11, 21], [50, 50, 60, 70]], np.float32),
                   np.array([0.9, 0.8, 0.7], np.float32))
    kept = nms(d, 0.5)
    assert len(kept) == 2 and kept.scores.tolist() == pytest.approx([0.9, 0.7])
    from reid.ingest.detect import DetectorError

    with pytest.raises(DetectorError, match="not found"):
        make_detector(DetectorConfig(name="/nope/detector.onnx"))


# --------------------------------------------------------------------------------------------- track
def test_tracker_keeps_identities_through_a_crossing_and_a_gap() -> None:
    ends: list[tuple[int, bool]] = []
    tr = Tracker(TrackerConfig(max_age=3), on_end=lambda i, c: ends.append((i, c)))
    ids_a, ids_b = set(), set()
    for f in range(30):
        a = [10 + 6 * f, 100, 50 + 6 * f, 200]  # walks right
        b = [200 - 6 * f, 110, 240 - 6 * f, 210]  # walks left, crossing a around f=16
        boxes = [a, b] if f not in (20, 21) else [a]  # b unseen for two frames
        m = tr.update(f, np.array(boxes, np.float32), np.array([0.9] * len(boxes)))
        for x in m:
            (ids_a if x.det_index == 0 else ids_b).add(x.track_id)
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b
    tr.finish()
    assert sorted(c for _, c in ends) == [True, True]


def test_low_score_detections_only_extend_tracks() -> None:
    tr = Tracker(TrackerConfig(min_hits=2))
    assert tr.update(0, np.array([[0, 0, 40, 100]], np.float32), np.array([0.3])) == []
    assert tr.tracks == []  # a low-score detection does not start a track
    box = np.array([[0, 0, 40, 100]], np.float32)
    tr.update(1, box, np.array([0.9]))
    tr.update(2, box, np.array([0.9]))
    m = tr.update(3, box + 2, np.array([0.3]))  # occluded: low score, still the same person
    assert len(m) == 1 and m[0].track_id == 1
    assert iou_matrix(box, box)[0, 0] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------- tracklets
def _img(sharp: bool) -> np.ndarray:
    rng = np.random.default_rng(1)
    im = rng.integers(0, 255, (200, 80, 3), dtype=np.uint8)
    return im if sharp else cv2.GaussianBlur(im, (31, 31), 10)


def test_tracklets_are_cut_filtered_and_frames_chosen() -> None:
    from reid.ingest.track import Match

    out = []
    b = TrackletBuilder(TrackletConfig(min_frames=3, min_height=64, max_seconds=2.0, embed_frames=4), out.append)
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[100:300, 200:280] = _img(True)
    for i in range(50):  # track 1: 5 s at 10 fps, big, sharp → cut into 3 tracklets (2 s each)
        b.add(i, i / 10, frame, [Match(1, 0, np.array([200, 100, 280, 300], np.float32), 0.9)])
    for i in range(2):  # track 2: too short
        b.add(i, i / 10, frame, [Match(2, 0, np.array([10, 10, 40, 90], np.float32), 0.9)])
    for i in range(10):  # track 3: too small
        b.add(i, i / 10, frame, [Match(3, 0, np.array([400, 10, 420, 50], np.float32), 0.9)])
    b.end(2, True)
    b.end(3, True)
    b.finish()
    assert [(t.track_id, t.segment) for t in out] == [(1, 0), (1, 1), (1, 2)]
    assert out[0].t_start == 0 and out[0].t_end == pytest.approx(1.9) and out[1].t_start == pytest.approx(2.0)
    assert all(len(t.crops) == 4 and t.box == [200, 100, 80, 200] for t in out)
    assert b.dropped == {"short": 1, "small": 1, "unconfirmed": 0}
    assert all(t.scene.shape == frame.shape for t in out)  # 640 px wide already: kept at full size


def test_tracklet_scene_is_the_best_frame_downscaled_with_the_box_marked() -> None:
    from reid.ingest.track import Match

    out = []
    b = TrackletBuilder(TrackletConfig(min_frames=3, scene_side=320), out.append)
    frames = [np.full((480, 640, 3), 60, np.uint8) for _ in range(4)]
    for i, frame in enumerate(frames):
        frame[:40, :40] = 40 * i  # a corner that tells the frames apart
        frame[100:300, 200:280] = _img(sharp=True)
        score = 0.9 if i == 2 else 0.5  # frame 2's detection is the surest: the best crop
        b.add(i, i / 10, frame, [Match(1, 0, np.array([200, 100, 280, 300], np.float32), score)])
    b.finish()
    (t,) = out
    assert t.box_frame == 2 and t.scene.shape == (240, 320, 3)
    assert tuple(t.scene[5, 5]) == (80, 80, 80)  # frame 2's corner, downscaled
    x1, y1, x2, y2 = 100, 50, 140, 150  # the box at half size, drawn in green
    assert all(tuple(t.scene[y, x]) == SCENE_BOX_BGR for x, y in ((x1, y1), (x2, y2), (120, y1), (x1, 100)))
    assert tuple(frames[2][50, 100]) != SCENE_BOX_BGR  # the frame itself is not drawn on

    none = []
    b = TrackletBuilder(TrackletConfig(min_frames=1, scene_side=0), none.append)
    b.add(0, 0.0, frames[0], [Match(1, 0, np.array([200, 100, 280, 300], np.float32), 0.9)])
    b.finish()
    assert none[0].scene is None


def test_frame_selection_prefers_quality_and_spreads_over_time() -> None:
    c = [Candidate(i, i / 10, np.zeros(4), 0.9, q, np.zeros((4, 4, 3), np.uint8))
         for i, q in enumerate([0.9, 0.95, 0.2, 0.1, 0.1, 0.85, 0.8, 0.1, 0.1, 0.9])]
    chosen = select_frames(c, 3)
    assert [x.frame for x in chosen] == sorted(x.frame for x in chosen)
    assert all(x.quality >= 0.8 for x in chosen)
    assert max(x.frame for x in chosen) - min(x.frame for x in chosen) >= 5


# --------------------------------------------------------------------------------------------- pipeline
def _embed(crops):  # stand-in embedder for the pipeline-only tests (the service tests use the real one)
    v = np.array([np.mean(c) for c in crops] + [1.0], np.float32)
    return np.resize(v, 16) / np.linalg.norm(np.resize(v, 16))


def test_pipeline_indexes_a_person_walking_in(tmp_path: Path) -> None:
    clip = write_clip(intel_mp4(), tmp_path / "clip.mp4", 230, 80)  # a man walks in and stands
    start = 1_714_564_800.0
    job = FootageJob(path=clip, camera="lobby", start=start, source="clip.mp4", meta={"site": "hq"})
    seen = []
    res = process_footage(job, PipelineConfig(track_max_age_s=1.5), _embed,
                          progress=lambda p: seen.append(p) or True, progress_every_s=0.0)
    assert res.info.n_frames == 80 and res.frames_done >= 79
    entries = gallery_entries(res)
    assert len(entries) == len(res.tracklets) >= 1
    rec, vec, crops, scene = entries[0].record, entries[0].vector, entries[0].crops, entries[0].scene
    assert rec.kind == "tracklet" and rec.camera == "lobby" and rec.meta["site"] == "hq"
    assert start <= rec.ts_start < rec.ts_end <= start + 8.0
    assert rec.footage_id == content_hash(clip) and rec.frame_start < rec.frame_end
    x, y, w, h = rec.box
    assert 250 < x + w / 2 < 550 and h > 200
    assert 1 <= len(crops) <= 8 and vec.shape == (16,)
    assert max(scene.bgr.shape[:2]) == 640 and scene.bgr.shape[1] > scene.bgr.shape[0]  # the whole frame, smaller
    assert seen and seen[-1].frames_done >= 79 and seen[-1].tracklets >= 1


def test_detection_runs_at_a_rate_whatever_the_frame_rate(tmp_path: Path) -> None:
    """REID_FOOTAGE_DETECT_FPS: 5 detections per second of footage by default, on 10 and 30 fps alike
    (a 30 fps camera is not three times the work of a 10 fps one); 0 = every frame."""
    assert [detect_stride(fps, 5.0) for fps in (10, 25, 30, 4)] == [2, 5, 6, 1]
    assert detect_stride(30, 0) == 1 and detect_stride(0, 5.0) == 1  # unknown rate: every frame
    clip = write_clip(intel_mp4(), tmp_path / "clip30.mp4", 230, 80, fps=30)
    res = process_footage(FootageJob(path=clip, camera="lobby"), PipelineConfig(), _embed)
    frames = [f for t in res.tracklets for f in t.frames]
    assert res.info.fps == pytest.approx(30) and frames and all(f % 6 == 0 for f in frames), frames
    res = process_footage(FootageJob(path=clip, camera="lobby"), PipelineConfig(detect_fps=0), _embed)
    assert any(f % 2 for t in res.tracklets for f in t.frames)  # every frame


def test_pipeline_on_a_video_without_people(tmp_path: Path) -> None:
    p = tmp_path / "empty_room.avi"
    w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    rng = np.random.default_rng(0)
    for _ in range(30):
        w.write((rng.normal(120, 3, (240, 320, 3))).clip(0, 255).astype(np.uint8))
    w.release()
    res = process_footage(FootageJob(path=p, camera="c"), PipelineConfig(), _embed)
    assert res.vectors == [] and res.frames_done == 30 and res.errors == []


def test_truncated_video_keeps_what_decodes(tmp_path: Path) -> None:
    clip = write_clip(intel_mp4(), tmp_path / "full.avi", 230, 60, fourcc="MJPG")
    data = clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    res = process_footage(FootageJob(path=cut, camera="c"), PipelineConfig(), _embed)
    assert 0 < res.frames_done < 60
    assert res.errors and "truncated" in res.errors[0]
