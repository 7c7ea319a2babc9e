"""Shared fixtures. Tests that need ../shared (data, weights, footage) skip when it is absent."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("REID_SHARED", REPO.parent / "shared"))

# REID_DETECTOR_NAME=auto means YOLOX-nano when `reid fetch-detector` installed it on this machine, else HOG:
# the suite pins HOG so that it behaves the same everywhere; the YOLOX tests ask for it (yolox_onnx).
os.environ.setdefault("REID_DETECTOR_NAME", "hog")


def shared_path(*parts: str) -> Path:
    """Path inside ../shared, or skip the test when it is not there."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (set REID_SHARED)")
    return p


@pytest.fixture
def cuhk03_val() -> Path:
    return shared_path("data", "cuhk03", "val")


@pytest.fixture
def yolox_onnx() -> Path:
    """The pinned YOLOX-nano installed by `reid fetch-detector` (skip when it is not installed)."""
    from reid.ingest.detector_weights import installed_detector

    path = installed_detector()
    if path is None:
        pytest.skip("YOLOX-nano not installed (run `reid fetch-detector`; needs GitHub access)")
    return path


@pytest.fixture
def osnet_onnx() -> Path:
    return shared_path("weights", "osnet_x0_25_msmt17.onnx")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for real servers started by tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(tmp: Path) -> tuple[subprocess.Popen, int]:
    """A real, throw-away redis-server on a free port (skips when Debian's redis-server is absent)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed (apt-get install -y redis-server)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")
