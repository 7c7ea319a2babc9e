"""Re-create the public benchmark layout under ../datasets (``REID_DATASETS``) that the configs and
bench/accuracy.py read. Nothing here is committed: the data are research-only.

    python bench/datasets.py                       # clone the pinned public snapshots, unpack
    python bench/datasets.py --isp-git DIR.git --occluded-git DIR2.git   # from local git dirs

What it writes:

* ``market1501/`` and ``dukemtmc/`` — Market-1501 and DukeMTMC-reID, complete, from
  ``mononokehime14/ISP-reID`` at the pinned commit (later commits deleted them);
* ``partial/`` — Partial-REID (60 people) and Partial-iLIDS (119 people), from
  ``lightas/ICCV19_Pose_Guided_Occluded_Person_ReID``'s ``dataset.zip``;
* ``mot17_gt/`` — person crops cut from ``../shared``'s MOT17-mini ground-truth boxes (visible,
  pedestrian class), as a generic ``<pid>/<cam>_<frame>.jpg`` folder: each track's first frame is
  "camera 0", its later frames "camera 1", so a query must find the same person a few frames on;
* ``mot17_halves/`` — the same boxes at *any* visibility (people really partly hidden), each
  track's first half of frames as "camera 0", second half as "camera 1": tracklet-to-tracklet
  search with real occlusions (bench/occlusion.py).
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from _common import DATASETS, SHARED  # bench/ is on sys.path when run as a script

ISP = ("https://github.com/mononokehime14/ISP-reID.git", "cf036bafc35441af2b233402bb473b104d42729d")
OCCLUDED = ("https://github.com/lightas/ICCV19_Pose_Guided_Occluded_Person_ReID.git",
            "f3aaf4c9f1bf2b69b7930bf398c7bc75729efa59")


def git_dir(url: str, given: str | None, scratch: Path) -> Path:
    if given:
        return Path(given)
    dest = scratch / Path(url).stem
    subprocess.run(["git", "clone", "--bare", "--quiet", url, str(dest)], check=True)
    return dest


def resolve_commit(gitdir: Path, commit: str) -> str:
    """The pinned commit, or (for a snapshot that lacks the full id) the one it abbreviates."""
    out = subprocess.run(["git", f"--git-dir={gitdir}", "rev-parse", "--verify", "--quiet", commit[:8] + "^{commit}"],
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{gitdir}: commit {commit[:8]} not found")
    return out.stdout.strip()


def unpack_market_duke(gitdir: Path) -> None:
    commit = resolve_commit(gitdir, ISP[1])
    tar = subprocess.run(["git", f"--git-dir={gitdir}", "archive", commit, "data/market1501", "data/dukemtmc"],
                         capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        for m in tf.getmembers():
            if "parsing" in m.name or not m.isfile():
                continue  # the repo's own human-parsing labels are not part of the benchmarks
            m.name = m.name.removeprefix("data/")
            tf.extract(m, DATASETS, filter="data")
    print(f"{DATASETS}/market1501, {DATASETS}/dukemtmc")


def unpack_partial(gitdir: Path) -> None:
    commit = resolve_commit(gitdir, OCCLUDED[1])
    outer = subprocess.run(["git", f"--git-dir={gitdir}", "show", f"{commit}:dataset.zip"],
                           capture_output=True, check=True).stdout
    dest = DATASETS / "partial"
    with zipfile.ZipFile(io.BytesIO(outer)) as z:
        for inner in ("Partial-REID_Dataset.zip", "Partial_iLIDS.zip"):
            with zipfile.ZipFile(io.BytesIO(z.read(inner))) as zi:
                zi.extractall(dest, [n for n in zi.namelist() if not n.startswith("__MACOSX")])
    print(f"{dest}")


def _mot17_boxes(min_visibility: float, min_height: int):
    """(sequence number, sequence dir, frame, track id, visibility, crop) of MOT17-mini GT pedestrians."""
    import cv2

    src = SHARED / "data" / "footage" / "mot17_mini" / "train"
    if not src.is_dir():
        print(f"skip MOT17 crops: {src} missing", file=sys.stderr)
        return
    for seq_no, seq in enumerate(sorted(p for p in src.iterdir() if p.is_dir())):
        rows = [line.split(",") for line in (seq / "gt" / "gt.txt").read_text().split()]
        for frame, tid, x, y, w, h, consider, cls, vis in sorted(rows, key=lambda r: int(r[0])):
            frame, tid, cls, vis = int(frame), int(tid), int(cls), float(vis)
            x, y, w, h = (int(float(v)) for v in (x, y, w, h))
            if consider != "1" or cls != 1 or vis < min_visibility or h < min_height:
                continue
            img = cv2.imread(str(seq / "img1" / f"{frame:06d}.jpg"))
            crop = img[max(y, 0):y + h, max(x, 0):x + w]
            if crop.size:
                yield seq_no, frame, tid, vis, crop


def mot17_crops() -> None:
    import cv2

    dest, n, first = DATASETS / "mot17_gt", 0, {}
    for seq_no, frame, tid, _vis, crop in _mot17_boxes(0.5, 64):
        pid = (seq_no + 1) * 1000 + tid
        cam = 0 if first.setdefault(pid, frame) == frame else 1
        out = dest / str(pid) / f"{cam}_{frame:06d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), crop)
        n += 1
    print(f"{dest}: {n} crops")


def mot17_halves() -> None:
    import cv2

    tracks: dict[int, list] = {}
    for seq_no, frame, tid, vis, crop in _mot17_boxes(0.0, 64):
        tracks.setdefault((seq_no + 1) * 1000 + tid, []).append((frame, vis, crop))
    dest, n, low = DATASETS / "mot17_halves", 0, 0
    for pid, boxes in tracks.items():
        if len(boxes) < 4:
            continue
        half = len(boxes) // 2
        for i, (frame, vis, crop) in enumerate(boxes):
            out = dest / str(pid) / f"{0 if i < half else 1}_{frame:06d}_v{round(vis * 100):03d}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), crop)
            n, low = n + 1, low + (vis < 0.5)
    print(f"{dest}: {n} crops of {len({p for p in tracks if len(tracks[p]) >= 4})} tracks, {low} with visibility < 0.5")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isp-git", help="local git dir of mononokehime14/ISP-reID (else cloned)")
    ap.add_argument("--occluded-git", help="local git dir of lightas/ICCV19_Pose_Guided_Occluded_Person_ReID")
    args = ap.parse_args()
    DATASETS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        unpack_market_duke(git_dir(ISP[0], args.isp_git, Path(scratch)))
        unpack_partial(git_dir(OCCLUDED[0], args.occluded_git, Path(scratch)))
    mot17_crops()
    mot17_halves()


if __name__ == "__main__":
    main()
