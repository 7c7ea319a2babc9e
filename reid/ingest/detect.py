"""Person detectors behind one small interface: ``detect(bgr) -> Detections`` (xyxy boxes in frame
pixels, scores in [0, 1] for ONNX models, SVM margins for HOG).

* ``hog`` (default): OpenCV's built-in HOG + linear SVM people detector. Needs no downloaded
  weights, so a fresh install indexes footage out of the box. Optionally gated by background
  subtraction (``bg_subtraction``) for static cameras: empty frames skip detection and boxes
  on static background are dropped.
* an ONNX file: NanoDet (GFL head outputs: per stride a [N, 80] class-score and a [N, 4·(reg_max+1)]
  distance-distribution tensor; tensor names are unreliable, so outputs are matched by shape),
  YOLOv5 ([1, N, 5+C]: cx, cy, w, h, objectness, classes), YOLOv8 ([1, 4+C, N]) or YOLOX (official
  export, [1, N, 5+C] with raw grid offsets and log sizes, N = one anchor per cell of strides 8/16/32).
  Class 0 = person (COCO). The format is detected from the output shapes unless ``detector_format``
  says otherwise.
* ``auto`` (the default): YOLOX-nano when ``reid fetch-detector`` has installed it
  (:mod:`reid.ingest.detector_weights`), else HOG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

NANODET_MEAN = np.array([103.53, 116.28, 123.675], np.float32)  # BGR
NANODET_STD = np.array([57.375, 57.12, 58.395], np.float32)


class DetectorError(ValueError):
    """The detector cannot be loaded as configured (message says what to change)."""


@dataclass
class Detections:
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))  # x1, y1, x2, y2
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> Detections:
        return Detections(self.boxes[keep], self.scores[keep])


@dataclass
class DetectorConfig:
    """Knobs shared by all detectors (from Settings, see docs/footage.md)."""

    name: str = "hog"  # "auto", "hog" or a path to an .onnx detector
    format: str = "auto"  # auto | nanodet | yolov5 | yolov8 | yolox
    conf: float | None = None  # None = the detector's own default
    nms: float = 0.45
    min_height: int = 48  # boxes shorter than this (frame pixels) are dropped
    input_width: int = 384  # HOG: frames are resized to this width before detection (0 = as is)
    input_size: int = 640  # YOLOX: the long side of the network input (0 = the file's own size)
    hog_pad: float = 0.15  # HOG: border padding (fraction of the height) so people cut by the edge count
    bg_subtraction: bool = False
    threads: int = 1
    person_class: int = 0


class Detector(Protocol):
    def detect(self, bgr: np.ndarray) -> Detections: ...


def nms(dets: Detections, iou: float) -> Detections:
    if len(dets) == 0:
        return dets
    xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in dets.boxes]
    keep = cv2.dnn.NMSBoxes(xywh, dets.scores.astype(float).tolist(), 0.0, iou)
    keep = np.asarray(keep, int).reshape(-1)
    return dets.select(np.sort(keep))


def _finish(dets: Detections, cfg: DetectorConfig, conf: float, w: int, h: int) -> Detections:
    """Clip to the frame, then confidence, minimum height and NMS."""
    if len(dets) == 0:
        return dets
    b = dets.boxes.astype(np.float32).copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
    d = Detections(b, dets.scores.astype(np.float32))
    keep = (d.scores >= conf) & ((b[:, 3] - b[:, 1]) >= cfg.min_height) & ((b[:, 2] - b[:, 0]) >= 4)
    return nms(d.select(keep), cfg.nms)


class HogDetector:
    """OpenCV HOG people detector (Dalal–Triggs); scores are SVM margins (≈0…3)."""

    default_conf = 0.3

    def __init__(self, cfg: DetectorConfig) -> None:
        if not hasattr(cv2, "HOGDescriptor"):
            raise DetectorError("this OpenCV build has no HOGDescriptor (OpenCV 5 dropped it): "
                                "install opencv-python-headless<5 or configure an ONNX detector")
        self.cfg = cfg
        self.conf = cfg.conf if cfg.conf is not None else self.default_conf
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.bg = cv2.createBackgroundSubtractorMOG2(history=200, varThreshold=25, detectShadows=False) \
            if cfg.bg_subtraction else None

    def detect(self, bgr: np.ndarray) -> Detections:
        h, w = bgr.shape[:2]
        s = self.cfg.input_width / w if self.cfg.input_width else 1.0
        img = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s != 1.0 else bgr
        fg = None
        if self.bg is not None:
            small = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
            fg = self.bg.apply(small)
            if np.count_nonzero(fg) < 0.002 * fg.size:
                return Detections()
        # Replicate-pad the borders: HOG cannot fire on a person whose window would leave the image,
        # and people close to the camera often touch the top or bottom edge.
        py, px = round(img.shape[0] * self.cfg.hog_pad), round(img.shape[0] * self.cfg.hog_pad / 2)
        padded = cv2.copyMakeBorder(img, py, py, px, px, cv2.BORDER_REPLICATE) if py else img
        rects, weights = self.hog.detectMultiScale(padded, winStride=(8, 8), padding=(8, 8), scale=1.05)
        if len(rects) == 0:
            return Detections()
        r = np.asarray(rects, np.float32).reshape(-1, 4) - np.array([px, py, 0, 0], np.float32)
        sc = np.asarray(weights, np.float32).reshape(-1)
        # HOG boxes have a ~10% margin around the person: tighten them a little
        dx, dy = r[:, 2] * 0.1, r[:, 3] * 0.05
        boxes = np.stack([r[:, 0] + dx, r[:, 1] + dy, r[:, 0] + r[:, 2] - dx, r[:, 1] + r[:, 3] - dy], 1) / s
        dets = Detections(boxes, sc)
        if fg is not None:
            k = fg.shape[1] / w
            cover = np.array([
                np.count_nonzero(fg[int(b[1] * k):int(b[3] * k) + 1, int(b[0] * k):int(b[2] * k) + 1])
                / max(1.0, (b[3] - b[1]) * (b[2] - b[0]) * k * k) for b in boxes])
            dets = dets.select(cover >= 0.1)
        return _finish(dets, self.cfg, self.conf, w, h)


def _session(path: Path | bytes, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = max(0, threads)
    so.inter_op_num_threads = 1
    try:
        model = path if isinstance(path, bytes) else str(path)
        return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises several types for a bad file
        what = "the detector" if isinstance(path, bytes) else f"the detector {path}"
        raise DetectorError(f"cannot load {what}: {e}") from e


def _input_hw(sess: Any, default: int = 640) -> tuple[int, int]:
    shape = sess.get_inputs()[0].shape
    h = shape[2] if len(shape) == 4 and isinstance(shape[2], int) else default
    w = shape[3] if len(shape) == 4 and isinstance(shape[3], int) else default
    return int(h), int(w)


def _letterbox_top_left(bgr: np.ndarray, h: int, w: int, pad: int) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio into an h×w canvas filled with ``pad``, image at the top left."""
    H, W = bgr.shape[:2]
    r = min(h / H, w / W)
    nh, nw = max(1, round(H * r)), max(1, round(W * r))
    canvas = np.full((h, w, 3), pad, np.uint8)
    canvas[:nh, :nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    return canvas, r


class NanoDetDetector:
    """NanoDet(-m) ONNX: GFL head, distances as a softmax over reg_max+1 bins, 3 strides."""

    default_conf = 0.35

    def __init__(self, path: Path, cfg: DetectorConfig, strides: tuple[int, ...] = (8, 16, 32)) -> None:
        self.cfg = cfg
        self.conf = cfg.conf if cfg.conf is not None else self.default_conf
        self.sess = _session(path, cfg.threads)
        self.input_name = self.sess.get_inputs()[0].name
        self.h, self.w = _input_hw(self.sess, 416)
        self.strides = strides
        self.levels: list[tuple[int, int, int, np.ndarray]] = []  # (stride, cls idx, reg idx, centers)
        outs = [tuple(o.shape) for o in self.sess.get_outputs()]
        rows = [int(np.prod(s[:-1])) for s in outs]
        cols = [s[-1] for s in outs]
        ncls = max(c for c in cols if isinstance(c, int))
        for s in strides:
            fh, fw = -(-self.h // s), -(-self.w // s)
            n = fh * fw
            ci = [i for i in range(len(outs)) if rows[i] == n and cols[i] == ncls]
            ri = [i for i in range(len(outs)) if rows[i] == n and cols[i] != ncls and cols[i] % 4 == 0]
            if not ci or not ri:
                raise DetectorError(f"{path}: outputs {outs} do not look like NanoDet "
                                    f"(need [{n}, classes] and [{n}, 4·(reg_max+1)] for stride {s})")
            ys, xs = np.mgrid[0:fh, 0:fw]
            centers = (np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32) + 0.5) * s  # cell centres
            self.levels.append((s, ci[0], ri[0], centers))
        self.reg_bins = cols[self.levels[0][2]] // 4

    def detect(self, bgr: np.ndarray) -> Detections:
        H, W = bgr.shape[:2]
        # keep the aspect ratio (pad right/bottom): squashing a 16:9 frame into a square loses people
        # (MOT17: recall 0.23 → 0.34 at the same precision, bench/ingest.md)
        canvas, r = _letterbox_top_left(bgr, self.h, self.w, 0)
        x = ((canvas.astype(np.float32) - NANODET_MEAN) / NANODET_STD).transpose(2, 0, 1)[None]
        outs = self.sess.run(None, {self.input_name: np.ascontiguousarray(x)})
        boxes, scores = [], []
        proj = np.arange(self.reg_bins, dtype=np.float32)
        pc = self.cfg.person_class
        for s, ci, ri, centers in self.levels:
            cls = outs[ci].reshape(len(centers), -1)[:, pc]
            keep = np.nonzero(cls >= min(self.conf, 0.99))[0]
            if len(keep) == 0:
                continue
            reg = outs[ri].reshape(len(centers), 4, self.reg_bins)[keep]
            e = np.exp(reg - reg.max(-1, keepdims=True))
            dist = (e / e.sum(-1, keepdims=True) * proj).sum(-1) * s  # l, t, r, b
            c = centers[keep]
            boxes.append(np.stack([c[:, 0] - dist[:, 0], c[:, 1] - dist[:, 1],
                                   c[:, 0] + dist[:, 2], c[:, 1] + dist[:, 3]], 1))
            scores.append(cls[keep])
        if not boxes:
            return Detections()
        b = np.concatenate(boxes) / r
        return _finish(Detections(b, np.concatenate(scores)), self.cfg, self.conf, W, H)


class YoloDetector:
    """Ultralytics YOLOv5 ([1, N, 5+C]) or YOLOv8/11 ([1, 4+C, N]) ONNX export, letterboxed RGB /255."""

    default_conf = 0.35

    def __init__(self, path: Path, cfg: DetectorConfig, fmt: str) -> None:
        self.cfg = cfg
        self.conf = cfg.conf if cfg.conf is not None else self.default_conf
        self.sess = _session(path, cfg.threads)
        self.input_name = self.sess.get_inputs()[0].name
        self.h, self.w = _input_hw(self.sess, 640)
        self.fmt = fmt

    def detect(self, bgr: np.ndarray) -> Detections:
        H, W = bgr.shape[:2]
        r = min(self.h / H, self.w / W)
        nh, nw = round(H * r), round(W * r)
        top, left = (self.h - nh) // 2, (self.w - nw) // 2
        canvas = np.full((self.h, self.w, 3), 114, np.uint8)
        canvas[top:top + nh, left:left + nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
        x = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        out = np.asarray(self.sess.run(None, {self.input_name: np.ascontiguousarray(x)})[0])[0]
        pc = self.cfg.person_class
        if self.fmt == "yolov8":
            p = out.T  # [4+C, N] → [N, 4+C]
            score = p[:, 4 + pc]
        else:
            p = out
            score = p[:, 4] * p[:, 5 + pc]
        keep = score >= self.conf
        p, score = p[keep], score[keep]
        cx, cy, bw, bh = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
        b = np.stack([cx - bw / 2 - left, cy - bh / 2 - top, cx + bw / 2 - left, cy + bh / 2 - top], 1) / r
        return _finish(Detections(b.astype(np.float32), score.astype(np.float32)), self.cfg, self.conf, W, H)


YOLOX_STRIDES = (8, 16, 32)


def _grid_cells(h: int, w: int, strides: tuple[int, ...]) -> int:
    return sum((h // s) * (w // s) for s in strides)


class YoloxDetector:
    """YOLOX ONNX (Megvii's export): BGR 0–255 input letterboxed top-left on grey 114; the output rows are
    (dx, dy, log w, log h, objectness, class scores) per cell of the 8/16/32 grids, decoded here.

    The network is fully convolutional, so the file's fixed 416×416 input is made dynamic on load and
    each frame is fed at its own aspect ratio with the long side at ``cfg.input_size`` (a 16:9 frame
    runs at 640×384, not 640×640): MOT17-mini recall 0.30 at 416² → 0.48 at 640 (bench/ingest.md)."""

    default_conf = 0.25

    def __init__(self, path: Path, cfg: DetectorConfig) -> None:
        import onnx

        self.cfg = cfg
        self.conf = cfg.conf if cfg.conf is not None else self.default_conf
        try:
            model = onnx.load(str(path))
        except Exception as e:  # DecodeError, OSError
            raise DetectorError(f"cannot load the detector {path}: {e}") from e
        dims = model.graph.input[0].type.tensor_type.shape.dim
        self.native = (dims[2].dim_value or 416, dims[3].dim_value or 416)
        if cfg.input_size:
            dims[2].dim_param, dims[3].dim_param = "height", "width"
            model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "cells"
            del model.graph.value_info[:]  # shapes inferred for 416² would contradict other sizes
        self.sess = _session(model.SerializeToString(), cfg.threads)
        self.input_name = self.sess.get_inputs()[0].name
        self._grids: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def input_hw(self, H: int, W: int) -> tuple[int, int]:
        """Network input for an H×W frame: long side ``input_size``, both sides multiples of 32."""
        if not self.cfg.input_size:
            return self.native
        r = self.cfg.input_size / max(H, W)
        return (max(32, -(-round(H * r) // 32) * 32), max(32, -(-round(W * r) // 32) * 32))

    def _grid(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        if (h, w) not in self._grids:
            cells, steps = [], []
            for s in YOLOX_STRIDES:
                ys, xs = np.mgrid[0:h // s, 0:w // s]
                cells.append(np.stack([xs.ravel(), ys.ravel()], 1))
                steps.append(np.full((len(cells[-1]), 1), s))
            self._grids[(h, w)] = (np.concatenate(cells).astype(np.float32),
                                   np.concatenate(steps).astype(np.float32))
        return self._grids[(h, w)]

    def detect(self, bgr: np.ndarray) -> Detections:
        H, W = bgr.shape[:2]
        h, w = self.input_hw(H, W)
        canvas, r = _letterbox_top_left(bgr, h, w, 114)
        x = canvas.transpose(2, 0, 1)[None].astype(np.float32)
        out = np.asarray(self.sess.run(None, {self.input_name: np.ascontiguousarray(x)})[0])[0]
        grid, stride = self._grid(h, w)
        if len(out) != len(grid):
            raise DetectorError(f"YOLOX output has {len(out)} rows, expected {len(grid)} grid cells "
                                f"for a {w}×{h} input")
        score = out[:, 4] * out[:, 5 + self.cfg.person_class]
        keep = np.nonzero(score >= self.conf)[0]
        p, score = out[keep], score[keep]
        xy = (p[:, :2] + grid[keep]) * stride[keep]
        wh = np.exp(np.minimum(p[:, 2:4], 10.0)) * stride[keep]
        b = np.concatenate([xy - wh / 2, xy + wh / 2], 1) / r
        return _finish(Detections(b.astype(np.float32), score.astype(np.float32)), self.cfg, self.conf, W, H)


def sniff_format(path: Path) -> str:
    """nanodet | yolov5 | yolov8 | yolox from the ONNX input and output shapes."""
    sess = _session(path, 1)
    outs = [o.shape for o in sess.get_outputs()]
    if len(outs) >= 6:
        return "nanodet"
    if len(outs) >= 1 and len(outs[0]) == 3:
        a, b = outs[0][1], outs[0][2]
        if isinstance(a, int) and isinstance(b, int):
            h, w = _input_hw(sess, 0)
            cells = _grid_cells(h, w, YOLOX_STRIDES) if h else -1
            if b == cells:  # YOLOv8: [1, 4+C, one column per cell of the 8/16/32 grids]
                return "yolov8"
            if a == cells:  # YOLOX: one row per cell (YOLOv5: three anchors per cell)
                return "yolox"
            return "yolov8" if a < b else "yolov5"
        if isinstance(a, int) and a < 1000:  # [1, 84, N] with dynamic N
            return "yolov8"
        return "yolov5"
    raise DetectorError(f"{path}: cannot tell the detector format from outputs {outs}; "
                        "set REID_DETECTOR_FORMAT to nanodet, yolov5, yolov8 or yolox")


def describe_detector(name: str) -> str:
    """What ``name`` resolves to, without loading it (for /readyz and the startup log)."""
    if name.lower() == "auto":
        from reid.ingest.detector_weights import installed_detector

        installed = installed_detector()
        return f"yolox-nano ({installed})" if installed else "hog (no detector installed: run `reid fetch-detector`)"
    return "hog" if name.lower() in ("hog", "", "default") else name


def make_detector(cfg: DetectorConfig) -> Detector:
    """The detector named by ``cfg.name``: "auto", "hog" or a path to an ONNX file."""
    name = cfg.name.lower()
    if name == "auto":
        from reid.ingest.detector_weights import installed_detector

        installed = installed_detector()
        if installed is None:
            return HogDetector(cfg)
        return YoloxDetector(installed, cfg)
    if name in ("hog", "", "default"):
        return HogDetector(cfg)
    path = Path(cfg.name)
    if not path.is_file():
        raise DetectorError(f"detector {cfg.name!r} not found: set REID_DETECTOR_NAME to 'hog' or to an ONNX file")
    fmt = cfg.format.lower() if cfg.format and cfg.format != "auto" else sniff_format(path)
    if fmt == "nanodet":
        return NanoDetDetector(path, cfg)
    if fmt in ("yolov5", "yolov8"):
        return YoloDetector(path, cfg, fmt)
    if fmt == "yolox":
        return YoloxDetector(path, cfg)
    raise DetectorError(f"unknown detector format {fmt!r} (nanodet, yolov5, yolov8 or yolox)")
