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
  "camera 0", its later frames "camera 1", so a query must find the same person a few frames on.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("REID_DATASETS", REPO.parent / "datasets"))
SHARED = Path(os.environ.get("REID_SHARED", REPO.parent / "shared"))

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


def mot17_crops(min_visibility: float = 0.5, min_height: int = 64) -> None:
    import cv2

    src = SHARED / "data" / "footage" / "mot17_mini" / "train"
    if not src.is_dir():
        print(f"skip mot17_gt: {src} missing", file=sys.stderr)
        return
    dest = DATASETS / "mot17_gt"
    n = 0
    for seq_no, seq in enumerate(sorted(p for p in src.iterdir() if p.is_dir())):
        first: dict[int, int] = {}
        rows = [line.split(",") for line in (seq / "gt" / "gt.txt").read_text().split()]
        for frame, tid, x, y, w, h, consider, cls, vis in sorted(rows, key=lambda r: int(r[0])):
            frame, tid, cls, vis = int(frame), int(tid), int(cls), float(vis)
            x, y, w, h = (int(float(v)) for v in (x, y, w, h))
            if consider != "1" or cls != 1 or vis < min_visibility or h < min_height:
                continue
            img = cv2.imread(str(seq / "img1" / f"{frame:06d}.jpg"))
            crop = img[max(y, 0):y + h, max(x, 0):x + w]
            if crop.size == 0:
                continue
            cam = 0 if first.setdefault(tid, frame) == frame else 1
            pid = (seq_no + 1) * 1000 + tid
            out = dest / str(pid) / f"{cam}_{frame:06d}.jpg"
            out.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out), crop)
            n += 1
    print(f"{dest}: {n} crops")


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


if __name__ == "__main__":
    main()
