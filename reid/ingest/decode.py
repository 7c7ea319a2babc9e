"""Footage decoding: video files, raw H.264 streams, and folders or zips of frames, as one stream of
:class:`Frame` (index, time offset in seconds, BGR pixels).

Why one abstraction: detection/tracking only need frames and their times, whatever the container.
Time offsets come from the container when it has them (``CAP_PROP_POS_MSEC``, checked to increase);
otherwise from an fps: the caller's, else ``seqinfo.ini`` (MOT layout), else the stream's nominal
fps, else ``default_fps``. Problems become :class:`FootageError` with a message for the user.
"""

from __future__ import annotations

import configparser
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".264", ".h264",
              ".265", ".h265", ".hevc", ".wmv", ".flv"}
FRAME_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class FootageError(ValueError):
    """The footage cannot be used; ``message`` says why in words for the uploader, ``kind`` what
    sort of problem it is (``invalid``, ``unsupported`` format or codec, ``too_large`` frames) so
    callers map it (e.g. to an HTTP status) without reading the words."""

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


@dataclass
class Frame:
    index: int  # 0-based position in the footage
    t: float  # seconds from the start of the footage
    bgr: np.ndarray


@dataclass
class FootageInfo:
    kind: str  # "video" | "frames" | "zip"
    width: int
    height: int
    fps: float
    n_frames: int | None  # None when the container does not say
    fps_source: str  # "given" | "seqinfo" | "container" | "default"


def is_footage(path: Path) -> bool:
    """A video file, a frames folder or a zip: what the footage pipeline (not the crop indexer) takes."""
    path = Path(path)
    if path.is_dir():
        return _frames_dir(path) is not None and not _looks_like_crops(path)
    return path.suffix.lower() in VIDEO_EXTS or path.suffix.lower() == ".zip"


def _looks_like_crops(path: Path) -> bool:
    """A folder of person crops (small images) rather than full frames: keep it on the image indexer."""
    d = _frames_dir(path)
    if d is None:
        return True
    if (path / "seqinfo.ini").is_file() or (path / "img1").is_dir():
        return False
    first = next(iter(sorted(p for p in d.iterdir() if p.suffix.lower() in FRAME_EXTS)), None)
    img = cv2.imread(str(first)) if first else None
    return img is None or img.shape[0] * img.shape[1] < 320 * 240


def _frames_dir(path: Path) -> Path | None:
    """The folder that holds the frames: ``path`` itself or MOT's ``path/img1``."""
    for d in (path / "img1", path):
        if d.is_dir() and any(p.suffix.lower() in FRAME_EXTS for p in d.iterdir()):
            return d
    return None


def _seqinfo_fps(text: str) -> float | None:
    cp = configparser.ConfigParser()
    try:
        cp.read_string(text)
        v = float(cp.get("Sequence", "frameRate"))
        return v if v > 0 else None
    except (configparser.Error, ValueError):
        return None


class Footage:
    """Open footage once, check it (:meth:`info`), then iterate frames (:meth:`frames`)."""

    def __init__(self, path: Path | str, fps: float | None = None, max_pixels: int = 3840 * 2160,
                 default_fps: float = 25.0) -> None:
        self.path = Path(path)
        self.given_fps = fps
        self.max_pixels = max_pixels
        self.default_fps = default_fps
        if not self.path.exists():
            raise FootageError(f"{self.path.name}: not found")
        if self.path.is_dir():
            self.kind = "frames"
            d = _frames_dir(self.path)
            if d is None:
                raise FootageError(f"{self.path.name}: the folder holds no frames ({', '.join(sorted(FRAME_EXTS))})")
            self._files = sorted(p for p in d.iterdir() if p.suffix.lower() in FRAME_EXTS)
            seq = self.path / "seqinfo.ini"
            self._seq_fps = _seqinfo_fps(seq.read_text(errors="replace")) if seq.is_file() else None
        elif self.path.stat().st_size == 0:
            raise FootageError(f"{self.path.name}: empty file")
        elif zipfile.is_zipfile(self.path):
            self.kind = "zip"
            try:
                zf = zipfile.ZipFile(self.path)
                names = [m.filename for m in zf.infolist() if not m.is_dir()
                         and "__MACOSX" not in m.filename and not PurePosixPath(m.filename).name.startswith(".")]
            except (zipfile.BadZipFile, OSError) as e:
                raise FootageError(f"{self.path.name}: not a readable zip ({e})") from e
            self._members = sorted(n for n in names if PurePosixPath(n.lower()).suffix in FRAME_EXTS)
            if not self._members:
                raise FootageError(f"{self.path.name}: the zip holds no frames ({', '.join(sorted(FRAME_EXTS))})")
            seq = [n for n in names if PurePosixPath(n).name == "seqinfo.ini"]
            self._seq_fps = _seqinfo_fps(zf.read(seq[0]).decode(errors="replace")) if seq else None
            zf.close()
        else:
            self.kind = "video"
            self._seq_fps = None
        self._info = self._probe()

    # --- probing -----------------------------------------------------------------------------------
    def _open_video(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise FootageError(
                f"{self.path.name}: not a readable video (unknown container or codec, or a damaged file); "
                "supported: MP4/AVI/MKV/MOV with H.264/H.265/MPEG-4/MJPEG, raw .264 streams, frame folders or zips",
                "unsupported")
        return cap

    def _check_size(self, w: int, h: int) -> None:
        if w * h > self.max_pixels:
            raise FootageError(
                f"{self.path.name}: frames are {w}×{h} pixels, more than the limit of {self.max_pixels} "
                "(REID_FOOTAGE_MAX_PIXELS); downscale the footage first", "too_large")
        if w < 16 or h < 16:
            raise FootageError(f"{self.path.name}: frames are too small ({w}×{h})")

    def _probe(self) -> FootageInfo:
        first = next(self._iter_raw(limit=1), None)
        if first is None:
            raise FootageError(f"{self.path.name}: no decodable frames (corrupt, truncated or unsupported codec)",
                               "unsupported")
        h, w = first.shape[:2]
        n: int | None
        if self.kind == "video":
            cap = self._open_video()
            cnt = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            nominal = cap.get(cv2.CAP_PROP_FPS)
            cap.release()
            n = int(cnt) if 0 < cnt < 1e9 else None
        else:
            n = len(self._files) if self.kind == "frames" else len(self._members)
            nominal = 0.0
        if self.given_fps:
            fps, src = float(self.given_fps), "given"
        elif self._seq_fps:
            fps, src = self._seq_fps, "seqinfo"
        elif 0 < nominal < 1000:
            fps, src = float(nominal), "container"
        else:
            fps, src = self.default_fps, "default"
        return FootageInfo(self.kind, w, h, fps, n, src)

    def info(self) -> FootageInfo:
        return self._info

    # --- reading -----------------------------------------------------------------------------------
    def _decode_file(self, name: str, data: bytes) -> np.ndarray | None:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
        if img is not None:
            self._check_size(img.shape[1], img.shape[0])
        return img

    def _iter_raw(self, limit: int | None = None) -> Iterator[np.ndarray]:
        """Decoded frames only (used by the probe, size-checked)."""
        for f in self.frames(limit=limit, _probe=True):
            yield f.bgr

    def frames(self, stride: int = 1, limit: int | None = None, errors: list[str] | None = None,
               _probe: bool = False) -> Iterator[Frame]:
        """Every ``stride``-th frame (others are skipped without converting pixels), at most ``limit``.
        Unreadable frames in a folder/zip are skipped and reported in ``errors``."""
        stride = max(1, int(stride))
        self.frames_read = 0  # frames decoded or skipped so far (progress; skipped ones count)
        fps = self._info.fps if not _probe else (self.given_fps or self.default_fps)
        emitted = 0
        if self.kind == "video":
            cap = self._open_video()
            try:
                idx, last_ms = -1, -1.0
                container_times = not self.given_fps
                while limit is None or emitted < limit:
                    idx += 1
                    if idx % stride:
                        if not cap.grab():
                            break
                        self.frames_read = idx + 1
                        continue
                    ok, img = cap.read()
                    if not ok or img is None:
                        break
                    self.frames_read = idx + 1
                    if idx == 0 or _probe:
                        self._check_size(img.shape[1], img.shape[0])
                    ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                    if container_times and idx > 0 and ms <= last_ms:
                        container_times = False  # raw streams report 0: fall back to the fps clock
                    last_ms = ms
                    t = ms / 1000.0 if container_times else idx / fps
                    yield Frame(idx, t, img)
                    emitted += 1
            finally:
                cap.release()
            return
        if self.kind == "frames":
            items: list[tuple[str, object]] = [(p.name, p) for p in self._files]
            zf = None
        else:
            zf = zipfile.ZipFile(self.path)
            items = [(n, n) for n in self._members]
        try:
            for idx, (name, ref) in enumerate(items):
                if limit is not None and emitted >= limit:
                    break
                self.frames_read = idx + 1
                if idx % stride:
                    continue
                try:
                    data = Path(ref).read_bytes() if zf is None else zf.read(str(ref))  # type: ignore[arg-type]
                except (OSError, zipfile.BadZipFile, ValueError) as e:
                    if errors is not None:
                        errors.append(f"{name}: unreadable ({e})")
                    continue
                img = self._decode_file(name, data)
                if img is None:
                    if errors is not None:
                        errors.append(f"{name}: not a decodable image, skipped")
                    continue
                yield Frame(idx, idx / fps, img)
                emitted += 1
        finally:
            if zf is not None:
                zf.close()


def content_hash(path: Path | str) -> str:
    """SHA-256 of the footage bytes (a folder: of its frame names and bytes), to spot re-submissions."""
    import hashlib

    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        d = _frames_dir(path) or path
        for p in sorted(d.iterdir()):
            if p.suffix.lower() in FRAME_EXTS:
                h.update(p.name.encode() + b"\0")
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
    else:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:32]


def zip_bytes_of_frames(frames: list[np.ndarray], ext: str = ".jpg") -> bytes:
    """A zip of frames named 000001.jpg… (tests and tools)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, f in enumerate(frames, 1):
            ok, enc = cv2.imencode(ext, f)
            if ok:
                zf.writestr(f"img1/{i:06d}{ext}", enc.tobytes())
    return buf.getvalue()


__all__ = ["Footage", "FootageError", "FootageInfo", "Frame", "content_hash", "is_footage"]
