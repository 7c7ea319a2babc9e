"""Install the default person detector (YOLOX-nano, Apache-2.0) reproducibly, without vendoring it.

The file is pinned by commit and SHA-256: ``model/yolox_nano.onnx`` of the public repository
``Kazuhito00/YOLOX-ONNX-TFLite-Sample`` (Megvii's YOLOX-nano COCO weights exported to ONNX, 416×416),
with that repository's Apache-2.0 LICENSE written beside it. ``reid fetch-detector`` downloads both
(install time, never at run time) or copies a file the user already has (``--from``, for machines
without GitHub access); either way the digest is checked and the write is atomic. Nothing here
needs torch.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from reid.models.weights import sha256


@dataclass(frozen=True)
class PinnedFile:
    url: str
    sha256: str


REPO = "Kazuhito00/YOLOX-ONNX-TFLite-Sample"
COMMIT = "3d4f1119d0694200671c08069ecb847aa0d8495a"
_RAW = f"https://raw.githubusercontent.com/{REPO}/{COMMIT}"
YOLOX_NANO = PinnedFile(f"{_RAW}/model/yolox_nano.onnx",
                        "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14")
YOLOX_LICENSE = PinnedFile(f"{_RAW}/LICENSE", "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4")
MODEL_NAME = "yolox_nano.onnx"


class DetectorWeightsError(RuntimeError):
    """Fetching or verifying the detector failed; the message says which step and why."""


def detector_dir() -> Path:
    """``$REID_CACHE/detectors`` (default ``~/.cache/reid/detectors``)."""
    return Path(os.environ.get("REID_CACHE", Path.home() / ".cache" / "reid")) / "detectors"


def installed_detector(directory: Path | None = None) -> Path | None:
    """The installed YOLOX-nano file, or None (then ``detector=auto`` means HOG)."""
    path = (directory or detector_dir()) / MODEL_NAME
    return path if path.is_file() else None


def _download(pinned: PinnedFile, dest: Path, timeout_s: float) -> None:
    try:
        with urllib.request.urlopen(pinned.url, timeout=timeout_s) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as exc:  # URLError, timeouts, refused connections
        raise DetectorWeightsError(f"cannot download {pinned.url}: {exc} (offline? copy the file here "
                                   "and use `reid fetch-detector --from FILE`)") from exc


def _check(path: Path, pinned: PinnedFile, what: str) -> None:
    digest = sha256(path)
    if digest != pinned.sha256:
        raise DetectorWeightsError(f"{what} has SHA-256 {digest}, expected {pinned.sha256} "
                                   f"({pinned.url} at commit {COMMIT})")


def _licence(dest: Path, beside: Path | None, timeout_s: float) -> Path:
    """The pinned LICENSE: from beside ``--from``'s file, else downloaded, else (offline) a pointer to it."""
    if beside is not None and beside.is_file() and sha256(beside) == YOLOX_LICENSE.sha256:
        shutil.copyfile(beside, dest)
        return dest
    try:
        _download(YOLOX_LICENSE, dest, timeout_s)
        _check(dest, YOLOX_LICENSE, YOLOX_LICENSE.url)
    except DetectorWeightsError:
        dest.write_text(f"Apache License 2.0, the text at {YOLOX_LICENSE.url} (SHA-256 {YOLOX_LICENSE.sha256})\n")
    return dest


def fetch_detector(dest_dir: Path | None = None, source: Path | None = None, force: bool = False,
                   timeout_s: float = 60.0) -> Path:
    """Install YOLOX-nano into ``dest_dir`` (default :func:`detector_dir`) and return its path.

    ``source``: an existing copy of the pinned file (checked, then copied) instead of downloading."""
    dest_dir = Path(dest_dir) if dest_dir is not None else detector_dir()
    model = dest_dir / MODEL_NAME
    if model.is_file() and not force:
        _check(model, YOLOX_NANO, str(model))
        return model
    with tempfile.TemporaryDirectory(prefix="reid-detector-") as tmp:
        staged = Path(tmp) / MODEL_NAME
        if source is not None:
            if not Path(source).is_file():
                raise DetectorWeightsError(f"--from {source}: no such file")
            shutil.copyfile(source, staged)
        else:
            _download(YOLOX_NANO, staged, timeout_s)
        _check(staged, YOLOX_NANO, str(source or YOLOX_NANO.url))
        licence = _licence(Path(tmp) / "LICENSE", None if source is None else Path(source).parent / "LICENSE",
                           timeout_s)
        dest_dir.mkdir(parents=True, exist_ok=True)
        provenance = {"repository": REPO, "commit": COMMIT, "model": asdict(YOLOX_NANO),
                      "licence": "Apache-2.0", "licence_file": asdict(YOLOX_LICENSE)}
        (dest_dir / "yolox_nano.PROVENANCE.json").write_text(json.dumps(provenance, indent=2) + "\n")
        shutil.copyfile(licence, dest_dir / "yolox_nano.LICENSE")
        partial = model.with_name(MODEL_NAME + ".partial")
        shutil.copyfile(staged, partial)
        os.replace(partial, model)
    return model
