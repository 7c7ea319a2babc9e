"""Decode and validate uploads: images, zips of images, short query clips.

Everything a client can get wrong ends here as :class:`BadInput` with an HTTP status and a message
that names the file and the problem — never a 500. Image size is checked from the header before
decoding so a decompression bomb is refused cheaply.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

import cv2
import numpy as np

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".264", ".h264", ".ts"}
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class BadInput(Exception):
    """A client error: HTTP ``status`` plus a message for the user."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class DecodedImage:
    """One uploaded image: its original bytes (kept for re-embedding), format and BGR pixels."""

    name: str
    data: bytes
    ext: str
    bgr: np.ndarray


def sniff(data: bytes) -> str | None:
    """Image format from magic bytes → file extension, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:2] == b"BM":
        return ".bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return ".tif"
    return None


def is_zip(name: str, data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04" or name.lower().endswith(".zip")


def looks_like_video(name: str | None, content_type: str | None, head: bytes = b"") -> bool:
    """Video by content type, extension or container magic (MP4/MOV ftyp, Matroska/WebM, AVI, H.264)."""
    if content_type and content_type.lower().startswith("video/"):
        return True
    if name and PurePosixPath(name.lower()).suffix in VIDEO_EXTS:
        return True
    if len(head) >= 12 and (
        head[4:8] == b"ftyp"
        or head[:4] == b"\x1a\x45\xdf\xa3"
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
    ):
        return True
    return head[:4] == b"\x00\x00\x00\x01" and sniff(head) is None


def header_size(data: bytes, ext: str) -> tuple[int, int] | None:
    """(width, height) from a PNG/JPEG/BMP header without decoding; None when not found."""
    try:
        if ext == ".png" and len(data) >= 24:
            w, h = struct.unpack(">II", data[16:24])
            return w, h
        if ext == ".bmp" and len(data) >= 26:
            w, h = struct.unpack("<ii", data[18:26])
            return abs(w), abs(h)
        if ext == ".jpg":
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    i += 1
                    continue
                marker = data[i + 1]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                    i += 1 if marker == 0xFF else 2
                    continue
                seg = struct.unpack(">H", data[i + 2 : i + 4])[0]
                if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
                    h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                    return w, h
                i += 2 + seg
    except struct.error:
        return None
    return None


def decode_image(name: str, data: bytes, max_pixels: int) -> DecodedImage:
    """Validate and decode one image file (BGR uint8) or raise :class:`BadInput`."""
    if not data:
        raise BadInput(f"{name}: empty file")
    ext = sniff(data)
    if ext is None:
        raise BadInput(f"{name}: not a supported image (JPEG, PNG, BMP, WebP or TIFF expected)", 415)
    size = header_size(data, ext)
    if size is not None and size[0] * size[1] > max_pixels:
        raise BadInput(
            f"{name}: image is {size[0]}×{size[1]} pixels, more than the limit of {max_pixels}", 413
        )
    arr = np.frombuffer(data, np.uint8)
    img = cv2.imdecode(arr, cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise BadInput(f"{name}: corrupt or truncated image")
    h, w = img.shape[:2]
    if h * w > max_pixels:
        raise BadInput(f"{name}: image is {w}×{h} pixels, more than the limit of {max_pixels}", 413)
    if h < 2 or w < 2:
        raise BadInput(f"{name}: image is too small ({w}×{h})")
    return DecodedImage(name=name, data=data, ext=ext, bgr=img)


def expand(
    files: list[tuple[str, bytes]], max_files: int, max_bytes: int, max_pixels: int
) -> list[DecodedImage]:
    """(name, bytes) uploads → decoded images, unpacking zips (images only, no nesting)."""
    out: list[DecodedImage] = []
    if not files:
        raise BadInput("no files uploaded (use the multipart field 'files')")
    for name, data in files:
        if data and is_zip(name, data):
            out.extend(_unzip(name, data, max_files - len(out), max_bytes, max_pixels))
        else:
            if len(out) + 1 > max_files:
                raise BadInput(f"too many files: the limit is {max_files} per request", 413)
            out.append(decode_image(name, data, max_pixels))
    if not out:
        raise BadInput("no images found in the upload")
    return out


def _unzip(name: str, data: bytes, room: int, max_bytes: int, max_pixels: int) -> list[DecodedImage]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        members = [
            m
            for m in zf.infolist()
            if not m.is_dir()
            and not PurePosixPath(m.filename).name.startswith(".")
            and "__MACOSX" not in m.filename
        ]
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise BadInput(f"{name}: not a readable zip file ({e})") from e
    images = [m for m in members if PurePosixPath(m.filename.lower()).suffix in IMAGE_EXTS]
    if not images:
        raise BadInput(f"{name}: the zip holds no images ({', '.join(IMAGE_EXTS)})")
    if len(images) > room:
        raise BadInput(f"{name}: too many images ({len(images)}); the limit is {room} more per request", 413)
    if sum(m.file_size for m in images) > max_bytes:
        raise BadInput(f"{name}: the zip expands beyond the upload limit of {max_bytes} bytes", 413)
    out = []
    for m in sorted(images, key=lambda m: m.filename):
        try:
            raw = zf.read(m)
        except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError) as e:
            raise BadInput(f"{name}/{m.filename}: cannot extract ({e})") from e
        out.append(decode_image(f"{name}/{m.filename}", raw, max_pixels))
    return out


def read_clip(data: bytes, name: str, max_frames: int, max_pixels: int) -> list[np.ndarray]:
    """Frames of a short query clip (evenly sampled, at most ``max_frames``) as BGR uint8."""
    suffix = PurePosixPath(name.lower()).suffix or ".mp4"
    fd, path = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        cap = cv2.VideoCapture(path)
        frames: list[np.ndarray] = []
        try:
            while cap.isOpened() and len(frames) < max_frames * 16:
                ok, frame = cap.read()
                if not ok:
                    break
                if frame.shape[0] * frame.shape[1] > max_pixels:
                    raise BadInput(f"{name}: frames exceed the pixel limit of {max_pixels}", 413)
                frames.append(frame)
        finally:
            cap.release()
    finally:
        os.unlink(path)
    if not frames:
        raise BadInput(f"{name}: no decodable video frames", 415)
    if len(frames) > max_frames:
        idx = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames = [frames[i] for i in idx]
    return frames
