"""`reid index FOOTAGE`: a real video through the CLI into a data dir; re-running is a no-op; a bad
file is a clean error (exit 2, message, no traceback). `reid query --like ID` searches from a stored
tracklet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, shared_path
from tests.test_footage_pipeline import write_clip


def reid(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REID_INTRA_OP_THREADS": "1", "REID_LOG_JSON": "false"}
    return subprocess.run([sys.executable, "-m", "reid.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_index_footage_from_the_command_line(tmp_path: Path) -> None:
    clip = write_clip(shared_path("data", "footage", "intel", "one-by-one-person-detection.mp4"),
                      tmp_path / "door.mp4", 230, 60)
    data = str(tmp_path / "data")
    r = reid("index", str(clip), "--camera", "door", "--start", "2024-05-01T08:00:00Z", "--data-dir", data)
    assert r.returncode == 0, r.stderr
    assert "indexed" in r.stdout and "tracklets from" in r.stdout and "as camera 'door'" in r.stdout
    n = int(r.stdout.split("indexed ")[1].split()[0])
    assert n >= 1
    again = reid("index", str(clip), "--camera", "door", "--data-dir", data)
    assert again.returncode == 0 and "already indexed" in again.stdout, again.stdout + again.stderr
    # a second camera; then the first tracklet as the query finds every other one, never itself
    hall = write_clip(shared_path("data", "footage", "intel", "one-by-one-person-detection.mp4"),
                      tmp_path / "hall.mp4", 600, 60)
    r = reid("index", str(hall), "--camera", "hall", "--data-dir", data)
    assert r.returncode == 0, r.stderr
    total = n + int(r.stdout.split("indexed ")[1].split()[0])
    like = reid("query", "--like", "1", "--data-dir", data, "--top-k", "50")
    assert like.returncode == 0, like.stderr
    rows = [line.split("│") for line in like.stdout.splitlines() if line.count("│") >= 6]
    ids = [int(r[2]) for r in rows if r[2].strip().isdigit()]
    assert total >= 2 and sorted(ids) == list(range(2, total + 1)), like.stdout
    both = reid("query", "--like", "1", "--like", "2", "--data-dir", data, "--top-k", "50")  # two sightings
    rows = [line.split("│") for line in both.stdout.splitlines() if line.count("│") >= 6]
    assert both.returncode == 0 and sorted(int(r[2]) for r in rows if r[2].strip().isdigit()) == \
        list(range(3, total + 1)), both.stdout + both.stderr
    for args, needle in ((["--like", "999"], "gallery item 999 not found"), ([], "not both"),
                         (["--like", "1", "--like", "998", "--like", "999"], "gallery items 998, 999 not found"),
                         ([str(clip), "--like", "1"], "not both")):
        r = reid("query", *args, "--data-dir", data)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 5000)
    r = reid("index", str(bad), "--camera", "door", "--data-dir", data)
    assert r.returncode == 2 and "broken.mp4" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = reid("index", str(clip), "--camera", "door", "--start", "yesterday", "--data-dir", data)
    assert r.returncode == 2 and "ISO 8601" in r.stderr
