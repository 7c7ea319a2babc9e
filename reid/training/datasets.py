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


# -- public benchmark layouts --------------------------------------------------------------------
# Market-1501 / DukeMTMC-reID: folders of crops named PPPP_cC..., MSMT17: list files, MARS: .mat
# track tables, iLIDS-VID / PRID2011: one folder of frames per person and camera.

MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")


def _find_root(root: Path, *markers: str) -> Path:
    """``root`` itself, or the single sub-folder holding the layout (archives unpack one level deep)."""
    if all((root / m).exists() for m in markers):
        return root
    for sub in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if all((sub / m).exists() for m in markers):
            return sub
    raise DatasetError(f"{root}: expected {', '.join(markers)} (here or one folder down)")


def read_market_folder(folder: str | Path) -> list[Sample]:
    """``PPPP_cC*.jpg`` (Market ``0002_c1s1_000451_03.jpg``, Duke ``0001_c2_f0046182.jpg``): pid −1
    (junk) dropped, pid 0 (distractors) kept, cameras 1-based in the name → 0-based."""
    samples = []
    for p in _images(Path(folder)):
        m = MARKET_NAME.match(p.name)
        if not m:
            raise DatasetError(f"{p}: name is not PPPP_cC… (Market-1501/DukeMTMC layout)")
        pid, cam = int(m.group(1)), int(m.group(2))
        if pid == -1:
            continue
        if pid < -1 or cam < 1:
            raise DatasetError(f"{p}: bad person id {pid} or camera {cam} (cameras are 1-based)")
        samples.append(Sample(str(p), pid, cam - 1))
    return samples


def market1501(root: str | Path, name: str = "market1501") -> Split:
    """``bounding_box_train/`` (train), ``query/``, ``bounding_box_test/`` (gallery)."""
    root = _find_root(Path(root), "query", "bounding_box_test")
    split = Split(name, query=read_market_folder(root / "query"),
                  gallery=read_market_folder(root / "bounding_box_test"))
    if (root / "bounding_box_train").is_dir():
        split.train = read_market_folder(root / "bounding_box_train")
    return split


def dukemtmc(root: str | Path) -> Split:
    return market1501(root, "dukemtmc")


def read_msmt17_list(list_file: Path, image_dirs: list[Path]) -> list[Sample]:
    """Lines ``relative/path.jpg pid``; the camera is the third ``_`` field of the file name
    (``0000_000_01_0303morning_0015_0.jpg`` → camera 01 → 0)."""
    if not list_file.is_file():
        raise DatasetError(f"missing list file: {list_file}")
    base = next((d for d in image_dirs if d.is_dir()), None)
    if base is None:
        raise DatasetError(f"{list_file}: none of the image folders exist: {', '.join(map(str, image_dirs))}")
    samples = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            rel, pid = parts[0], int(parts[1])
            cam = int(Path(rel).name.split("_")[2])
        except (IndexError, ValueError) as exc:
            raise DatasetError(f"{list_file}:{lineno}: expected 'path pid' with a PPPP_NNN_CC_… file name, "
                               f"got {line!r}") from exc
        path = base / rel
        if lineno == 1 and not path.is_file():
            raise DatasetError(f"{list_file}:{lineno}: image not found: {path}")
        if cam < 1:
            raise DatasetError(f"{list_file}:{lineno}: camera {cam} in {rel} (cameras are 1-based)")
        samples.append(Sample(str(path), pid, cam - 1))
    return samples


def msmt17(root: str | Path) -> Split:
    """``list_train.txt`` (+ ``list_val.txt``, merged into train as is customary), ``list_query.txt``,
    ``list_gallery.txt``; images under ``train/``/``test/`` (V1) or ``mask_train_v2/``/``mask_test_v2/``."""
    root = _find_root(Path(root), "list_query.txt", "list_gallery.txt")
    train_dirs = [root / "train", root / "mask_train_v2", root]
    test_dirs = [root / "test", root / "mask_test_v2", root]
    split = Split("msmt17", query=read_msmt17_list(root / "list_query.txt", test_dirs),
                  gallery=read_msmt17_list(root / "list_gallery.txt", test_dirs))
    for name in ("list_train.txt", "list_val.txt"):
        if (root / name).is_file():
            split.train += read_msmt17_list(root / name, train_dirs)
    return split


def _loadmat_array(path: Path):
    """The one data array of a small .mat file."""
    import numpy as np
    import scipy.io

    if not path.is_file():
        raise DatasetError(f"missing file: {path}")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for corrupt files
        raise DatasetError(f"{path}: cannot read .mat file: {exc}") from exc
    arrays = [v for k, v in mat.items() if not k.startswith("__")]
    if len(arrays) != 1:
        raise DatasetError(f"{path}: expected one array, found {len(arrays)}")
    return np.asarray(arrays[0])


def _mars_names(root: Path, part: str) -> list[str]:
    listing = root / "info" / f"{part}_name.txt"
    if listing.is_file():
        return [n.strip() for n in listing.read_text().splitlines() if n.strip()]
    # no name list: the official lists are the sorted file names of bbox_<part>/*/
    folder = root / f"bbox_{part}"
    if not folder.is_dir():
        raise DatasetError(f"{root}: missing {listing} and {folder}")
    return sorted(p.name for d in folder.iterdir() if d.is_dir() for p in d.iterdir()
                  if p.suffix.lower() in IMAGE_EXTS)


def _mars_tracks(root: Path, part: str, table, names: list[str], rows, track_offset: int) -> list[Sample]:
    samples = []
    for row in rows:
        start, end, pid, cam = (int(v) for v in table[row][:4])
        if pid == -1:
            continue
        if not 1 <= start <= end <= len(names):
            raise DatasetError(f"MARS {part} track {row + 1}: frames {start}–{end} outside the "
                               f"{len(names)}-name list")
        for frame, name in enumerate(names[start - 1:end]):
            if not (name[:4] == f"{pid:04d}" and name[5:6] == str(cam)):
                raise DatasetError(f"MARS {part} track {row + 1} (pid {pid}, camera {cam}) lists {name}, "
                                   "whose name says otherwise")
            samples.append(Sample(str(root / f"bbox_{part}" / name[:4] / name), pid, cam - 1,
                                  track_offset + row, frame))
    return samples


def mars(root: str | Path) -> Split:
    """MARS: ``info/tracks_train_info.mat`` and ``tracks_test_info.mat`` (rows ``start, end, pid,
    camid``, 1-based indices into ``info/<part>_name.txt``), ``info/query_IDX.mat`` (1-based test
    rows). Tracklets with pid −1 dropped. As TKP's test.py does, the query tracklets are also in the
    gallery (their same-camera copy is junk, so no self-match), so the gallery is every test row."""
    root = _find_root(Path(root), "info")
    info = root / "info"
    train = _loadmat_array(info / "tracks_train_info.mat")
    test = _loadmat_array(info / "tracks_test_info.mat")
    query_idx = _loadmat_array(info / "query_IDX.mat").ravel().astype(int) - 1
    for t, f in ((train, "tracks_train_info.mat"), (test, "tracks_test_info.mat")):
        if t.ndim != 2 or t.shape[1] < 4:
            raise DatasetError(f"{info / f}: expected an N×4 table (start, end, pid, camid)")
    if len(query_idx) and (query_idx.min() < 0 or query_idx.max() >= len(test)):
        raise DatasetError(f"{info / 'query_IDX.mat'}: indices outside 1..{len(test)}")
    split = Split("mars")
    split.train = _mars_tracks(root, "train", train, _mars_names(root, "train"), range(len(train)), 0)
    test_names = _mars_names(root, "test")
    split.query = _mars_tracks(root, "test", test, test_names, query_idx.tolist(), len(train))
    split.gallery = _mars_tracks(root, "test", test, test_names, range(len(test)), len(train))
    return split


PERSON_DIR = re.compile(r"^person_?(\d+)$")


def _person_dirs(cam_dir: Path) -> dict[str, Path]:
    if not cam_dir.is_dir():
        raise DatasetError(f"not a directory: {cam_dir}")
    dirs = {}
    for d in sorted(p for p in cam_dir.iterdir() if p.is_dir()):
        if not PERSON_DIR.match(d.name):
            raise DatasetError(f"{d}: expected a person folder named personNNN / person_NNNN")
        dirs[d.name] = d
    return dirs


def _sequence(d: Path, pid: int, cam: int, trackid: int) -> list[Sample]:
    frames = _images(d)
    if not frames:
        raise DatasetError(f"{d}: no frames")
    return [Sample(str(p), pid, cam, trackid, i) for i, p in enumerate(frames)]


def _json_split(path: Path, index: int) -> tuple[set[str], set[str]]:
    import json

    try:
        splits = json.loads(path.read_text())
        chosen = splits[index]
        return set(chosen["train"]), set(chosen["test"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise DatasetError(f"{path}: expected a JSON list of {{'train': [...], 'test': [...]}}") from exc


def _two_camera_split(name: str, cams: tuple[Path, Path], persons: list[str],
                      train_ids: set[str] | None) -> Split:
    """Camera 0 sequences are the queries (I2V uses each one's first, sorted frame), camera 1
    sequences the gallery; identities in ``train_ids`` go to train instead (both cameras)."""
    split = Split(name)
    for n, person in enumerate(persons):
        pid = int(PERSON_DIR.match(person).group(1))
        a = _sequence(cams[0] / person, pid, 0, 2 * n)
        b = _sequence(cams[1] / person, pid, 1, 2 * n + 1)
        if train_ids is not None and person in train_ids:
            split.train += a + b
        else:
            split.query += a
            split.gallery += b
    return split


def ilidsvid(root: str | Path, split_index: int = 0) -> Split:
    """iLIDS-VID ``sequences/cam1|cam2/personNNN/*.png``. With a split file (TKP/torchreid
    ``train-test people splits/train_test_splits_ilidsvid.mat``: ``ls_set`` rows, first half test,
    second half train, 1-based indices into the sorted person folders; or ``splits_ilidsvid.json``)
    split 0 is used; without one every identity is evaluated."""
    root = Path(root)
    base = _find_root(root / "i-LIDS-VID" if (root / "i-LIDS-VID").is_dir() else root, "sequences")
    cam1, cam2 = base / "sequences" / "cam1", base / "sequences" / "cam2"
    d1, d2 = _person_dirs(cam1), _person_dirs(cam2)
    if set(d1) != set(d2):
        odd = sorted(set(d1) ^ set(d2))[:5]
        raise DatasetError(f"{base / 'sequences'}: cam1 and cam2 hold different people, e.g. {odd}")
    persons = sorted(d1)
    train_ids = None
    mats = [p for p in (base / "train-test people splits" / "train_test_splits_ilidsvid.mat",
                        root / "train-test people splits" / "train_test_splits_ilidsvid.mat") if p.is_file()]
    jsons = [p for p in (root / "splits_ilidsvid.json", base / "splits_ilidsvid.json") if p.is_file()]
    if mats:
        ls_set = _loadmat_array(mats[0])
        row = ls_set[split_index].astype(int)
        if row.min() < 1 or row.max() > len(persons):
            raise DatasetError(f"{mats[0]}: person indices outside 1..{len(persons)}")
        half = len(row) // 2
        train_ids = {persons[i - 1] for i in row[half:]}
    elif jsons:
        train_ids, _ = _json_split(jsons[0], split_index)
    return _two_camera_split("ilidsvid", (cam1, cam2), persons, train_ids)


def prid2011(root: str | Path, split_index: int = 0) -> Split:
    """PRID2011 ``multi_shot/cam_a|cam_b/person_NNNN/*.png``: the people seen by both cameras
    (the first 200), cam_a as query, cam_b as gallery; a ``splits_prid2011.json`` (list of
    ``{"train": [...], "test": [...]}`` folder names) selects split 0's train identities."""
    root = Path(root)
    base = root / "prid_2011" if (root / "prid_2011").is_dir() else root
    base = base / "multi_shot" if (base / "multi_shot").is_dir() else base
    cam_a, cam_b = base / "cam_a", base / "cam_b"
    da, db = _person_dirs(cam_a), _person_dirs(cam_b)
    persons = sorted(set(da) & set(db))
    if not persons:
        raise DatasetError(f"{base}: no person folder is in both cam_a and cam_b")
    jsons = [p for p in (root / "splits_prid2011.json", base / "splits_prid2011.json") if p.is_file()]
    train_ids = _json_split(jsons[0], split_index)[0] if jsons else None
    return _two_camera_split("prid2011", (cam_a, cam_b), persons, train_ids)


# -- occluded / partial test sets (no training split): query = occluded or partial views, gallery =
# whole-body views of the same people from another camera.

def _numbered(folder: Path, camid: int, pattern: re.Pattern) -> list[Sample]:
    samples = []
    for p in _images(folder):
        m = pattern.match(p.stem)
        if not m:
            raise DatasetError(f"{p}: unexpected file name (expected {pattern.pattern})")
        samples.append(Sample(str(p), int(m.group(1)), camid))
    if not samples:
        raise DatasetError(f"no images in {folder}")
    return samples


def partial_reid(root: str | Path) -> Split:
    """Partial-REID (Zheng et al. 2015, 60 people): ``occluded_body_images/PPP_NNN.jpg`` as queries,
    ``whole_body_images/PPP_NNN.jpg`` as the gallery."""
    root = _find_root(Path(root), "occluded_body_images", "whole_body_images")
    name = re.compile(r"^(\d+)_\d+$")
    return Split("partial_reid", query=_numbered(root / "occluded_body_images", 0, name),
                 gallery=_numbered(root / "whole_body_images", 1, name))


def partial_ilids(root: str | Path) -> Split:
    """Partial-iLIDS (119 people, airport cameras): ``Probe/N.jpg`` (occluded people, cropped to
    the visible part) as queries, ``Gallery/N.jpg`` as the gallery."""
    root = _find_root(Path(root), "Probe", "Gallery")
    name = re.compile(r"^(\d+)$")
    return Split("partial_ilids", query=_numbered(root / "Probe", 0, name),
                 gallery=_numbered(root / "Gallery", 1, name))


FORMATS = {"cuhk03": cuhk03, "generic": generic, "market1501": market1501, "dukemtmc": dukemtmc,
           "msmt17": msmt17, "mars": mars, "ilidsvid": ilidsvid, "prid2011": prid2011,
           "partial_reid": partial_reid, "partial_ilids": partial_ilids}


def load_split(root: str | Path, fmt: str) -> Split:
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; choose one of {sorted(FORMATS)}")
    if not Path(root).exists():
        raise DatasetError(f"dataset path does not exist: {root}")
    return FORMATS[fmt](root)


# the readers whose person id 0 marks distractors (crops that are no annotated person)
DISTRACTOR_ID_ZERO = {"market1501"}


def with_test_identities(split: Split) -> Split:
    """The split with its query and gallery people added to ``train``, and nothing left to test on.

    For a model meant for other cameras, a benchmark's test people are just more people to learn
    from. They are other people than the train ones (their own labels, whatever their numbers);
    Market-1501's distractors (id 0) are left out."""
    skip_zero = split.name in DISTRACTOR_ID_ZERO
    pid_top = max((s.pid for s in split.train), default=-1) + 1
    track_top = max((s.trackid for s in split.train), default=-1) + 1
    test = [Sample(s.path, pid_top + s.pid, s.camid, track_top + s.trackid if s.trackid >= 0 else -1, s.frame)
            for s in split.query + split.gallery if not (skip_zero and s.pid == 0)]
    return Split(split.name, train=split.train + test)


def relabel(samples: list[Sample]) -> tuple[list[Sample], dict[int, int]]:
    """Map person ids to 0..N-1 for the classifier."""
    mapping = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    return [Sample(s.path, mapping[s.pid], s.camid, s.trackid, s.frame) for s in samples], mapping


def combine_train(splits: list[Split]) -> list[Sample]:
    """The training samples of several datasets as one set: each dataset's identities, cameras and
    tracklets get their own id range (no two datasets share a person or a camera), ids 0..N-1.
    Identities are assumed disjoint across datasets (true of the public benchmarks)."""
    out: list[Sample] = []
    pid_base = cam_base = track_base = 0
    for split in splits:
        train, mapping = relabel(split.train)
        cams = {c: i for i, c in enumerate(sorted({s.camid for s in train}))}
        tracks = {t: i for i, t in enumerate(sorted({s.trackid for s in train if s.trackid >= 0}))}
        out += [Sample(s.path, pid_base + s.pid, cam_base + cams[s.camid],
                       track_base + tracks[s.trackid] if s.trackid >= 0 else -1, s.frame) for s in train]
        pid_base, cam_base, track_base = pid_base + len(mapping), cam_base + len(cams), track_base + len(tracks)
    return out
