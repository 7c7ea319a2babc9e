"""Shared helpers for the bench scripts: the hardware line for the Markdown reports and a real
`reid serve` on a free port."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: development data and weights, and the public benchmarks `bench/datasets.py` unpacks: beside the
#: checkout unless REID_SHARED / REID_DATASETS say otherwise (as reid.models.backbones.shared_dir)
SHARED = Path(os.environ.get("REID_SHARED", REPO.parent / "shared"))
DATASETS = Path(os.environ.get("REID_DATASETS", REPO.parent / "datasets"))


def hardware() -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        gpu = (
            subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=5).stdout.strip()
            or "no GPU"
        )
    except (OSError, subprocess.SubprocessError):
        gpu = "no GPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{os.cpu_count()}-core {cpu}, {gpu}, Python {platform.python_version()}, "
        f"load average at start {load:.2f}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(env: dict[str, str], timeout: float = 300) -> Iterator[tuple[str, float]]:
    """Start `reid serve` with ``env`` added to the environment; yield (base URL, seconds until
    /readyz answered 200); stop it with SIGTERM on exit."""
    import httpx

    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "reid.cli", "serve", "--port", str(port)], cwd=REPO,
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                raise RuntimeError("server failed to start")
            time.sleep(0.3)
        yield url, time.perf_counter() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def write_report(path: str | Path, lines: list[str]) -> None:
    """Write a benchmark's Markdown report and echo it."""
    text = "\n".join(lines).rstrip("\n") + "\n"
    Path(path).write_text(text)
    print(text, end="")


def reid_eval(*args: str) -> dict:
    """Run `reid eval ARGS` (the CLI, as a user would) and return its JSON result line."""
    cmd = [sys.executable, "-m", "reid.cli", "eval", *args]
    out = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])
