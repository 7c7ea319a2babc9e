"""Shared helpers for the bench scripts: hardware line for the Markdown reports."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone


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
