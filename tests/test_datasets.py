"""Dataset readers on tiny synthetic copies of each benchmark's layout (real files: small JPG/PNG
crops written with OpenCV, .mat tables written with scipy)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from reid.training.datasets import DatasetError, load_split, tracklets
from reid.training.evaluate import mode_items

RNG = np.random.default_rng(0)


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), RNG.integers(0, 255, (16, 8, 3), dtype=np.uint8))


# -- Market-1501 / DukeMTMC-reID -----------------------------------------------------------------

def _market(root: Path) -> Path:
    for name in ("0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s1_000100_02.jpg"):
        _img(root / "bounding_box_train" / name)
    for name in ("0001_c1s1_001051_00.jpg", "0003_c6s2_000001_00.jpg"):
        _img(root / "query" / name)
    for name in ("0001_c2s1_000301_01.jpg", "0001_c1s1_000001_02.jpg", "0000_c3s1_000001_01.jpg",
                 "-1_c1s1_000001_01.jpg", "0003_c5s1_000001_01.jpg"):
        _img(root / "bounding_box_test" / name)
    (root / "query" / "Thumbs.db").write_bytes(b"x")  # not an image: ignored
    return root


def test_market1501(tmp_path):
    s = load_split(_market(tmp_path / "Market-1501-v15.09.15"), "market1501")
    assert len(s.train) == 3 and {x.pid for x in s.train} == {2, 7}
    assert [(x.pid, x.camid) for x in s.query] == [(1, 0), (3, 5)]
    gallery = sorted((x.pid, x.camid) for x in s.gallery)
    assert gallery == [(0, 2), (1, 0), (1, 1), (3, 4)]  # −1 junk dropped, 0 distractor kept, 0-based cams
    # the archive's top folder may be given instead of the dataset folder
    assert len(load_split(tmp_path, "market1501").gallery) == 4


def test_duke_names_and_mislabelled_file(tmp_path):
    root = tmp_path / "DukeMTMC-reID"
    _img(root / "query" / "0005_c2_f0046182.jpg")
    _img(root / "bounding_box_test" / "0005_c8_f0046999.jpg")
    s = load_split(root, "dukemtmc")
    assert s.name == "dukemtmc" and s.query[0].camid == 1 and s.gallery[0].camid == 7 and not s.train
    _img(root / "bounding_box_test" / "person5.jpg")
    with pytest.raises(DatasetError, match="person5.jpg"):
        load_split(root, "dukemtmc")


# -- MSMT17 --------------------------------------------------------------------------------------

def _msmt(root: Path) -> Path:
    lists = {
        "list_train.txt": ("train", [("0000/0000_000_01_0303morning_0015_0.jpg", 0),
                                     ("0000/0000_001_05_0303morning_0016_0.jpg", 0)]),
        "list_val.txt": ("train", [("0001/0001_000_02_0303noon_0001_0.jpg", 1)]),
        "list_query.txt": ("test", [("0000/0000_000_12_0303morning_0001_0.jpg", 0)]),
        "list_gallery.txt": ("test", [("0000/0000_003_15_0303afternoon_0002_1.jpg", 0),
                                      ("0001/0001_000_01_0303morning_0009_0.jpg", 1)]),
    }
    for fname, (folder, rows) in lists.items():
        for rel, _ in rows:
            _img(root / folder / rel)
        (root / fname).write_text("".join(f"{rel} {pid}\n" for rel, pid in rows))
    return root


def test_msmt17(tmp_path):
    root = _msmt(tmp_path / "MSMT17_V1")
    s = load_split(root, "msmt17")
    assert [(x.pid, x.camid) for x in s.train] == [(0, 0), (0, 4), (1, 1)]  # train + val
    assert [(x.pid, x.camid) for x in s.query] == [(0, 11)]
    assert [(x.pid, x.camid) for x in s.gallery] == [(0, 14), (1, 0)]
    assert all(Path(x.path).is_file() for x in s.train + s.query + s.gallery)


def test_msmt17_bad_line_is_named(tmp_path):
    root = _msmt(tmp_path / "MSMT17_V1")
    (root / "list_query.txt").write_text("0000/0000_000_12_0303morning_0001_0.jpg zero\n")
    with pytest.raises(DatasetError, match=r"list_query.txt:1"):
        load_split(root, "msmt17")
    (root / "list_query.txt").write_text("0000/badname.jpg 0\n")
    with pytest.raises(DatasetError, match=r"list_query.txt:1"):
        load_split(root, "msmt17")


# -- MARS ----------------------------------------------------------------------------------------

def _mars(root: Path, with_names: bool = True) -> Path:
    # name lists in sorted order (what the reader assumes when info/<part>_name.txt is absent)
    train = ["00-1C1T0001F001.jpg", "0001C1T0001F001.jpg", "0001C1T0001F002.jpg", "0001C2T0002F001.jpg"]
    test = ["0000C2T0003F001.jpg",
            "0002C1T0001F001.jpg", "0002C1T0001F002.jpg", "0002C1T0001F003.jpg",
            "0002C3T0002F001.jpg", "0002C3T0002F002.jpg",
            "0004C1T0004F001.jpg", "0004C1T0004F002.jpg"]
    for part, names in (("train", train), ("test", test)):
        for n in names:
            _img(root / f"bbox_{part}" / n[:4] / n)
        if with_names:
            (root / "info").mkdir(parents=True, exist_ok=True)
            (root / "info" / f"{part}_name.txt").write_text("\n".join(names) + "\n")
    (root / "info").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "info" / "tracks_train_info.mat",
                     {"track_train_info": np.array([[2, 3, 1, 1], [4, 4, 1, 2], [1, 1, -1, 1]], float)})
    scipy.io.savemat(root / "info" / "tracks_test_info.mat",
                     {"track_test_info": np.array([[2, 4, 2, 1], [5, 6, 2, 3], [1, 1, 0, 2], [7, 8, 4, 1]],
                                                  float)})
    scipy.io.savemat(root / "info" / "query_IDX.mat", {"query_IDX": np.array([[1, 4]])})
    return root


@pytest.mark.parametrize("with_names", [True, False])
def test_mars(tmp_path, with_names):
    s = load_split(_mars(tmp_path / "MARS", with_names), "mars")
    train_tracks = tracklets(s.train)
    assert [(t.pid, t.camid, len(t.paths)) for t in train_tracks] == [(1, 0, 2), (1, 1, 1)]  # pid −1 dropped
    q = tracklets(s.query)
    assert [(t.pid, t.camid, len(t.paths)) for t in q] == [(2, 0, 3), (4, 0, 2)]
    assert Path(q[0].paths[0]).name == "0002C1T0001F001.jpg"  # frame order kept
    g = tracklets(s.gallery)
    # every test tracklet, query ones included (TKP), pid 0 kept
    assert sorted((t.pid, t.camid) for t in g) == [(0, 1), (2, 0), (2, 2), (4, 0)]
    # I2V: query 2's copy in the gallery is junk (same pid, same camera); 4 has no true match → skipped
    qi, gi, _, _ = mode_items(s, "i2v")
    assert len(qi) == 2 and len(gi) == 4 and len(qi[0].paths) == 1


def test_mars_mislabelled_track(tmp_path):
    root = _mars(tmp_path / "MARS")
    scipy.io.savemat(root / "info" / "tracks_test_info.mat",
                     {"track_test_info": np.array([[2, 5, 2, 1]], float)})  # frame 5 is camera 3
    scipy.io.savemat(root / "info" / "query_IDX.mat", {"query_IDX": np.array([[1]])})
    with pytest.raises(DatasetError, match="0002C3T0002F001.jpg"):
        load_split(root, "mars")
    (root / "info" / "query_IDX.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="query_IDX.mat"):
        load_split(root, "mars")


# -- iLIDS-VID and PRID2011 ----------------------------------------------------------------------

def _ilids(root: Path, n: int = 4) -> Path:
    for cam in ("cam1", "cam2"):
        for p in range(1, n + 1):
            for f in (3, 1, 2):  # written out of order: the reader sorts
                name = f"{cam}_person{p:03d}_{f:05d}.png"
                _img(root / "i-LIDS-VID" / "sequences" / cam / f"person{p:03d}" / name)
    return root


def test_ilidsvid_without_split(tmp_path):
    s = load_split(_ilids(tmp_path), "ilidsvid")
    assert not s.train and len(tracklets(s.query)) == 4 and len(tracklets(s.gallery)) == 4
    assert {x.camid for x in s.query} == {0} and {x.camid for x in s.gallery} == {1}
    qi, gi, _, gv = mode_items(s, "i2v")
    # the query is the first (sorted) cam1 frame of each person; the gallery the full cam2 sequences
    assert [Path(i.paths[0]).name for i in qi] == [f"cam1_person{p:03d}_00001.png" for p in range(1, 5)]
    assert all(len(i.paths) == 1 for i in qi) and all(len(i.paths) == 3 for i in gi) and gv


def test_ilidsvid_split_file(tmp_path):
    root = _ilids(tmp_path)
    split_dir = root / "i-LIDS-VID" / "train-test people splits"
    split_dir.mkdir()
    # row 0: first half test (persons 4 and 1), second half train (persons 2 and 3), 1-based
    ls_set = np.array([[4, 1, 2, 3], [1, 2, 3, 4]])
    scipy.io.savemat(split_dir / "train_test_splits_ilidsvid.mat", {"ls_set": ls_set})
    s = load_split(root, "ilidsvid")
    assert {x.pid for x in s.train} == {2, 3} and {x.camid for x in s.train} == {0, 1}
    assert {x.pid for x in s.query} == {1, 4} == {x.pid for x in s.gallery}


def test_ilidsvid_unpaired_person_is_an_error(tmp_path):
    root = _ilids(tmp_path)
    _img(root / "i-LIDS-VID" / "sequences" / "cam1" / "person099" / "a.png")
    with pytest.raises(DatasetError, match="person099"):
        load_split(root, "ilidsvid")


def test_prid2011(tmp_path):
    base = tmp_path / "prid_2011" / "multi_shot"
    for p in (1, 2, 3):
        for f in range(1, 4):
            _img(base / "cam_a" / f"person_{p:04d}" / f"{f:04d}.png")
    for p in (1, 2, 5):  # person 3 only in cam_a, person 5 only in cam_b: both left out
        _img(base / "cam_b" / f"person_{p:04d}" / "0001.png")
    s = load_split(tmp_path, "prid2011")
    assert {x.pid for x in s.query} == {1, 2} == {x.pid for x in s.gallery}
    assert len(tracklets(s.query)) == 2 and all(len(t.paths) == 3 for t in tracklets(s.query))
    (tmp_path / "splits_prid2011.json").write_text('[{"train": ["person_0001"], "test": ["person_0002"]}]')
    s = load_split(tmp_path, "prid2011")
    assert {x.pid for x in s.train} == {1} and {x.pid for x in s.query} == {2}
    (base / "cam_b" / "somebody").mkdir()
    with pytest.raises(DatasetError, match="somebody"):
        load_split(tmp_path, "prid2011")


def test_unknown_format_and_missing_layout(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset format"):
        load_split(tmp_path, "viper")
    with pytest.raises(DatasetError, match="bounding_box_test"):
        load_split(tmp_path, "market1501")
    with pytest.raises(DatasetError, match="list_query.txt"):
        load_split(tmp_path, "msmt17")
