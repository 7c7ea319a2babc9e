"""The compose deployment, run as host processes: the API and a worker started with exactly the
command and environment docker-compose.yml gives them (only the data dir, ports and Redis URL are
made local), a real redis-server, and a real short video pushed through as a footage job.

Skips when redis-server, the redis client or the footage sample is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import free_port, start_redis

from tests.conftest import REPO, shared_path

pytest.importorskip("redis")

COMPOSE = REPO / "docker-compose.yml"
BIN = Path(sys.executable).parent
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")



def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR:-default} substitution (what `docker compose` does with the host env)."""
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def compose_service(name: str) -> tuple[list[str], dict[str, str]]:
    """(command, environment) of a compose service, with ${...} resolved against an empty .env."""
    cfg = yaml.safe_load(COMPOSE.read_text())
    svc = cfg["services"][name]
    env_raw = svc.get("environment") or {}
    if isinstance(env_raw, list):
        env_raw = dict(e.split("=", 1) for e in env_raw)
    env = {k: interpolate(str(v), {}) for k, v in env_raw.items() if k != "<<"}
    cmd = svc["command"]
    return (cmd if isinstance(cmd, list) else cmd.split()), env


def compose_healthcheck(name: str) -> list[str]:
    test = yaml.safe_load(COMPOSE.read_text())["services"][name]["healthcheck"]["test"]
    assert test[0] == "CMD", test
    exe = shutil.which(test[1], path=str(BIN)) or test[1]
    return [exe, *test[2:]]



def make_video(src: Path, dst: Path, frames: int = 60) -> Path:
    import cv2

    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    ok, frame = cap.read()
    assert ok, f"cannot decode {src}"
    h, w = frame.shape[:2]
    out = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    n = 0
    # skip the empty corridor at the start: the first person walks in after a few seconds
    cap.set(cv2.CAP_PROP_POS_FRAMES, 40)
    while n < frames:
        ok, frame = cap.read()
        if not ok:
            break
        out.write(frame)
        n += 1
    out.release()
    cap.release()
    assert n == frames and dst.stat().st_size > 10_000
    return dst


def launch(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    exe = shutil.which(cmd[0], path=str(BIN)) or shutil.which(cmd[0])
    assert exe, f"{cmd[0]} not found (pip install -e .)"
    full_env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "OMP_NUM_THREADS": "1",
                "REID_INTRA_OP_THREADS": "1", **env}
    if "REID_SHARED" in os.environ:
        full_env["REID_SHARED"] = os.environ["REID_SHARED"]
    with log.open("wb") as fh:
        return subprocess.Popen([exe, *cmd[1:]], cwd=REPO, env=full_env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict]:
    redis_proc, redis_port = start_redis(tmp_path)
    api_port = free_port()
    local = {"REID_DATA_DIR": str(tmp_path / "data"), "REID_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
    api_cmd, api_env = compose_service("api")
    worker_cmd, worker_env = compose_service("worker")
    api_env.update(local, REID_HOST="127.0.0.1", REID_PORT=str(api_port))
    worker_env.update(local)
    procs: list[subprocess.Popen] = []
    logs = {"api": tmp_path / "api.log", "worker": tmp_path / "worker.log"}
    try:
        api = launch(api_cmd, api_env, logs["api"])
        procs.append(api)
        worker = launch(worker_cmd, worker_env, logs["worker"])
        procs.append(worker)
        url = f"http://127.0.0.1:{api_port}"
        deadline = time.time() + 90
        while True:
            assert api.poll() is None, f"api exited:\n{logs['api'].read_text()[-3000:]}"
            assert worker.poll() is None, f"worker exited:\n{logs['worker'].read_text()[-3000:]}"
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, f"api not ready:\n{logs['api'].read_text()[-3000:]}"
            time.sleep(0.3)
        yield {"url": url, "api": api, "worker": worker, "logs": logs, "api_env": api_env,
               "worker_env": worker_env, "redis": redis_proc}
    finally:
        for p in reversed(procs):
            stop(p)
        if redis_proc.poll() is None:
            redis_proc.terminate()
            redis_proc.wait(5)


def test_compose_commands_run_a_footage_job_through_redis(stack: dict, tmp_path: Path) -> None:
    src = shared_path("data", "footage", "intel", "one-by-one-person-detection.mp4")
    video = make_video(src, tmp_path / "clip.mp4")
    url, logs = stack["url"], stack["logs"]
    assert stack["api_env"]["REID_QUEUE"] == "redis" == stack["worker_env"]["REID_QUEUE"]

    ready = httpx.get(url + "/readyz", timeout=5).json()
    assert ready.get("queue", {}).get("ok") is True, ready

    with video.open("rb") as fh:
        r = httpx.post(url + "/gallery", files={"files": ("clip.mp4", fh, "video/mp4")},
                       data={"camera": "lobby", "timestamp": "2024-05-01T12:00:00Z"}, timeout=60,
                       headers={"X-Request-ID": "stack-test-1"})
    assert r.status_code == 202, r.text
    assert r.headers["X-Request-ID"] == "stack-test-1"
    job_id = r.json()["job_id"]

    deadline = time.time() + 240
    seen_states = set()
    while True:
        job = httpx.get(f"{url}/jobs/{job_id}", timeout=5).json()
        seen_states.add(job["state"])
        if job["state"] in ("done", "failed", "cancelled"):
            break
        assert stack["worker"].poll() is None, f"worker died:\n{logs['worker'].read_text()[-3000:]}"
        assert time.time() < deadline, f"job stuck in {job}:\n{logs['worker'].read_text()[-3000:]}"
        time.sleep(0.5)
    assert job["state"] == "done", (job, logs["worker"].read_text()[-3000:], logs["api"].read_text()[-3000:])

    listed = httpx.get(url + "/gallery", params={"kind": "tracklet", "limit": 100}, timeout=5).json()
    assert listed["total"] >= 1, (job, logs["worker"].read_text()[-2000:])
    item = listed["items"][0]
    assert item["camera"] == "lobby" and item["kind"] == "tracklet"
    assert httpx.get(url + item["thumbnail_url"], timeout=5).status_code == 200

    # the upload is removed once processed (the crops live with the items)
    assert not [p for p in (tmp_path / "data" / "uploads").iterdir()], "upload left behind"
    assert job["tracklets"] >= 1 and job["result"]["items_indexed"] == listed["total"]

    # the API, not the worker, wrote the index: the worker never opened the database
    assert "gallery ready" not in logs["worker"].read_text()

    metrics = httpx.get(url + "/metrics", timeout=5).text
    assert 'reid_jobs{state="done"} 1.0' in metrics
    assert "reid_job_queue_depth 0.0" in metrics
    assert 'route="/gallery"' in metrics

    # JSON logs carry the request id of the upload, in the API and in the worker that ran the job
    for name in ("api", "worker"):
        lines = [ln for ln in logs[name].read_text().splitlines() if "stack-test-1" in ln]
        assert lines and all(json.loads(ln)["request_id"] == "stack-test-1" for ln in lines), name

    # the worker's compose health check passes while Redis is up ...
    check = compose_healthcheck("worker")
    env = {**os.environ, **stack["worker_env"]}
    assert subprocess.run(check, env=env, cwd=REPO, timeout=60, capture_output=True).returncode == 0
    # a job cancelled while still queued (no worker running) loses its upload too
    stop(stack["worker"])
    with video.open("rb") as fh:
        r = httpx.post(url + "/gallery", files={"files": ("again.mp4", fh, "video/mp4")},
                       data={"camera": "lobby"}, timeout=60)
    queued = r.json()["job_id"]
    assert httpx.get(f"{url}/jobs/{queued}", timeout=5).json()["state"] == "queued"
    assert len(list((tmp_path / "data" / "uploads").iterdir())) == 1
    assert httpx.delete(f"{url}/jobs/{queued}", timeout=5).json()["state"] == "cancelled"
    assert not list((tmp_path / "data" / "uploads").iterdir()), "cancelled upload left behind"

    # ... and readiness (the API's health check) and the worker check fail when it is gone
    stack["redis"].terminate()
    stack["redis"].wait(5)
    r = httpx.get(url + "/readyz", timeout=10)
    assert r.status_code == 503 and r.json()["queue"]["ok"] is False
    bad = subprocess.run(check, env=env, cwd=REPO, timeout=60, capture_output=True, text=True)
    assert bad.returncode == 1 and "Redis unreachable" in bad.stderr
