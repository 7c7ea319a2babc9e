"""Dataset readers. Each yields :class:`Sample` records (image path, person id, camera id, and for
video a tracklet id and frame index); nothing is decoded here.

Image datasets become video-like by reading one identity's images in one camera as a
pseudo-tracklet (:func:`tracklets`): that is how image-to-video is trained and measured without a
video dataset."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp"}


class DatasetError(ValueError):
    """A dataset file is missing, unreadable or mislabelled; the message names it."""


@dataclass(frozen=True)
class Sample:
    path: str
    pid: int
    camid: int
    trackid: int = -1  # -1: none given; pseudo-tracklets use the camera
    frame: int = 0


@dataclass(frozen=True)
class Tracklet:
    pid: int
    camid: int
    trackid: int
    paths: tuple[str, ...]  # in frame order


@dataclass
class Split:
    """A dataset split into train / query / gallery (any may be empty)."""

    name: str
    train: list[Sample] = field(default_factory=list)
    query: list[Sample] = field(default_factory=list)
    gallery: list[Sample] = field(default_factory=list)


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"not a directory: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


CUHK03_NAME = re.compile(r"^(\d+)_(\d+)$")


def read_cuhk03_folder(folder: str | Path) -> list[Sample]:
    """``PPPP_KK.jpg``: KK 00–04 camera A (0), 05–09 camera B (1)."""
    samples = []
    for p in _images(Path(folder)):
        m = CUHK03_NAME.match(p.stem)
        if not m:
            raise DatasetError(f"{p}: name is not PPPP_KK (CUHK03 layout)")
        pid, k = int(m.group(1)), int(m.group(2))
        if not 0 <= k <= 9:
            raise DatasetError(f"{p}: image index {k} outside 00–09")
        samples.append(Sample(str(p), pid, 0 if k < 5 else 1, frame=k))
    if not samples:
        raise DatasetError(f"no images in {folder}")
    return samples


def cuhk03(root: str | Path) -> Split:
    """CUHK03 as laid out in ../shared: ``train/`` for training, ``val/`` camera A as query and
    camera B as gallery (cross-camera search, the development benchmark)."""
    root = Path(root)
    split = Split("cuhk03")
    if (root / "train").is_dir():
        split.train = read_cuhk03_folder(root / "train")
    evaluation = root / "val" if (root / "val").is_dir() else root
    if evaluation != root or not (root / "train").is_dir():
        items = read_cuhk03_folder(evaluation)
        split.query = [s for s in items if s.camid == 0]
        split.gallery = [s for s in items if s.camid == 1]
    return split


def generic(root: str | Path) -> Split:
    """``<root>/<pid>/<cam>_*.jpg`` folders, or a CSV manifest ``path,pid,camid[,trackid]``.

    A root with ``train``/``query``/``gallery`` sub-folders (or CSVs) is read as those splits; a
    single folder or CSV is read as an evaluation set with every item in the gallery and, as
    queries, each identity's items from its first camera."""
    root = Path(root)
    split = Split("generic")
    parts = {n: _generic_part(root, n) for n in ("train", "query", "gallery")}
    if any(v is not None for v in parts.values()):
        split.train, split.query, split.gallery = (parts[n] or [] for n in ("train", "query", "gallery"))
        return split
    items = _read_generic(root)
    first_cam: dict[int, int] = {}
    for s in sorted(items, key=lambda s: (s.pid, s.camid)):
        first_cam.setdefault(s.pid, s.camid)
    split.query = [s for s in items if s.camid == first_cam[s.pid]]
    split.gallery = [s for s in items if s.camid != first_cam[s.pid]]
    return split


def _generic_part(root: Path, name: str) -> list[Sample] | None:
    if (root / name).is_dir():
        return _read_generic(root / name)
    if (root / f"{name}.csv").is_file():
        return _read_generic(root / f"{name}.csv")
    return None


def _read_generic(src: Path) -> list[Sample]:
    if src.is_file() and src.suffix.lower() == ".csv":
        return read_manifest(src)
    samples = []
    for pid_dir in sorted(p for p in src.iterdir() if p.is_dir()) if src.is_dir() else []:
        try:
            pid = int(pid_dir.name)
        except ValueError as exc:
            raise DatasetError(f"{pid_dir}: folder name must be an integer person id") from exc
        for p in _images(pid_dir):
            cam = p.stem.split("_", 1)[0]
            if not cam.lstrip("c").isdigit():
                raise DatasetError(f"{p}: name must start with a camera number (<cam>_*.jpg)")
            samples.append(Sample(str(p), pid, int(cam.lstrip("c"))))
    if not samples:
        raise DatasetError(f"no images found under {src} (expected <root>/<pid>/<cam>_*.jpg or a CSV)")
    return samples


def read_manifest(csv_path: str | Path) -> list[Sample]:
    """CSV rows ``path,pid,camid[,trackid]`` (a header row is allowed); relative paths are
    relative to the CSV."""
    csv_path = Path(csv_path)
    samples = []
    with open(csv_path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if not row or (lineno == 1 and not row[1].strip().lstrip("-").isdigit()):
                continue
            if len(row) < 3:
                raise DatasetError(f"{csv_path}:{lineno}: expected path,pid,camid[,trackid]")
            try:
                pid, camid = int(row[1]), int(row[2])
                trackid = int(row[3]) if len(row) > 3 and row[3].strip() else -1
            except ValueError as exc:
                raise DatasetError(f"{csv_path}:{lineno}: pid, camid and trackid must be integers") from exc
            path = Path(row[0])
            path = path if path.is_absolute() else csv_path.parent / path
            samples.append(Sample(str(path), pid, camid, trackid, lineno))
    return samples


def tracklets(samples: list[Sample]) -> list[Tracklet]:
    """Group samples into tracklets by (pid, camid, trackid), frames in order. Samples without a
    trackid form one pseudo-tracklet per identity and camera."""
    groups: dict[tuple[int, int, int], list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.pid, s.camid, s.trackid)].append(s)
    return [Tracklet(pid, cam, tid, tuple(s.path for s in sorted(g, key=lambda s: (s.frame, s.path))))
            for (pid, cam, tid), g in sorted(groups.items())]


FORMATS = {"cuhk03": cuhk03, "generic": generic}


def load_split(root: str | Path, fmt: str) -> Split:
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; choose one of {sorted(FORMATS)}")
    if not Path(root).exists():
        raise DatasetError(f"dataset path does not exist: {root}")
    return FORMATS[fmt](root)


def relabel(samples: list[Sample]) -> tuple[list[Sample], dict[int, int]]:
    """Map person ids to 0..N-1 for the classifier."""
    mapping = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    return [Sample(s.path, mapping[s.pid], s.camid, s.trackid, s.frame) for s in samples], mapping
