"""Embedded queue with the work outside the API: `REID_JOB_WORKERS=0 reid serve` only queues, a
separate `reid worker` on the same data dir runs the job and writes the gallery, and the API serves
the new tracklets (its index catches up from SQLite)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import REPO, shared_path
from tests.test_footage_pipeline import write_clip
from tests.test_jobs_api import count, upload, wait_job
from tests.test_service_api import MODEL, Server


def test_separate_worker_process_on_the_embedded_queue(tmp_path: Path) -> None:
    clip = write_clip(shared_path("data", "footage", "intel", "one-by-one-person-detection.mp4"),
                      tmp_path / "hall.mp4", 230, 50)
    data = tmp_path / "data"
    srv = Server(data, REID_JOB_WORKERS="0").start()
    worker = None
    try:
        jid = upload(srv.url, clip, camera="hall").json()["job_id"]
        time.sleep(2.0)
        assert httpx.get(f"{srv.url}/jobs/{jid}", timeout=10).json()["state"] == "queued"  # the API only queues
        env = {**os.environ, "OMP_NUM_THREADS": "1", "REID_INTRA_OP_THREADS": "1", "REID_LOG_JSON": "false"}
        log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen([sys.executable, "-m", "reid.cli", "worker", "--model", str(MODEL),
                                   "--data-dir", str(data)], cwd=REPO, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        job = wait_job(srv.url, jid, timeout=120)
        assert job["state"] == "done" and job["tracklets"] >= 1, job
        assert count(srv.url, kind="tracklet", camera="hall") == job["tracklets"]
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
            assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-2000:]
        srv.stop()
