"""Footage jobs through a real `reid serve` (uvicorn, embedded queue, job child processes): a video
upload becomes searchable tracklets; re-uploads do not duplicate; bad footage gets a 4xx or a failed
job and never disturbs the gallery; cancel; a crash mid-job is recovered without half-indexed items."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from tests.conftest import shared_path
from tests.test_footage_pipeline import write_clip
from tests.test_service_api import Server

FINAL = ("done", "failed", "cancelled")


def upload(url: str, path: Path, camera: str = "lobby", ctype: str = "video/mp4",
           timestamp: str | None = "2024-05-01T12:00:00Z", fps: str | None = None) -> httpx.Response:
    data = {"camera": camera, **({"timestamp": timestamp} if timestamp else {}), **({"fps": fps} if fps else {})}
    with path.open("rb") as fh:
        return httpx.post(url + "/gallery", files={"files": (path.name, fh, ctype)}, data=data, timeout=60)


def wait_job(url: str, job_id: str, timeout: float = 120, until=FINAL) -> dict:
    t0 = time.time()
    while True:
        job = httpx.get(f"{url}/jobs/{job_id}", timeout=10).json()
        if job["state"] in until:
            return job
        assert time.time() - t0 < timeout, job
        time.sleep(0.3)


def count(url: str, **params: str) -> int:
    return httpx.get(url + "/gallery", params={"limit": 1, **params}, timeout=10).json()["total"]


@pytest.fixture
def server(tmp_path: Path):
    srv = Server(tmp_path / "data").start()
    yield srv
    srv.stop()


def test_video_upload_becomes_searchable_tracklets(server: Server, tmp_path: Path) -> None:
    src = shared_path("data", "footage", "intel", "one-by-one-person-detection.mp4")
    clip = write_clip(src, tmp_path / "walk_in.mp4", 230, 80)
    url = server.url
    r = upload(url, clip, fps="10")  # the given rate overrides the container's 25 fps clock
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.json()["status_url"] == f"/jobs/{job_id}"
    job = wait_job(url, job_id)
    assert job["state"] == "done", job
    assert job["frames_total"] == 80 and job["frames_done"] >= 79 and job["fps"] > 0
    assert job["tracklets"] >= 1 and job["progress"] == 1.0 and job["camera"] == "lobby"
    items = httpx.get(url + "/gallery", params={"kind": "tracklet"}, timeout=10).json()["items"]
    assert len(items) == job["tracklets"]
    it = items[0]
    assert it["camera"] == "lobby" and it["source"]["name"] == "walk_in.mp4"
    assert it["timestamp_start"].startswith("2024-05-01T12:00:0") and it["n_crops"] >= 1
    assert it["source"]["frame_start"] < it["source"]["frame_end"] and len(it["box"]) == 4
    span = datetime.fromisoformat(it["timestamp_end"]) - datetime.fromisoformat(it["timestamp_start"])
    assert span.total_seconds() == pytest.approx((it["source"]["frame_end"] - it["source"]["frame_start"]) / 10,
                                                 abs=1e-3)
    thumb = httpx.get(url + it["thumbnail_url"], timeout=10)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    # where they were: the 768×432 frame at 640 px wide, their box marked in green
    scene = httpx.get(url + it["scene_url"], timeout=10)
    assert scene.status_code == 200 and scene.headers["content-type"] == "image/jpeg"
    frame = cv2.imdecode(np.frombuffer(scene.content, np.uint8), cv2.IMREAD_COLOR).astype(int)
    assert frame.shape == (360, 640, 3)
    x, y, w, h = (v * 640 / 768 for v in it["box"])
    edge = frame[round(y + h / 2) - 3:round(y + h / 2) + 4, round(x) - 3:round(x) + 4]  # the box's left side
    assert (edge[..., 1] - np.maximum(edge[..., 0], edge[..., 2]) > 60).any()
    # the query endpoint finds the tracklet from one of its own frames
    crop = httpx.get(f"{url}/gallery/{it['id']}/crops/0", timeout=10).content
    hits = httpx.post(url + "/query", files={"files": ("q.jpg", crop, "image/jpeg")}, timeout=30).json()
    ranked = [h["id"] for h in hits["results"]]
    assert hits["results"][0]["kind"] == "tracklet" and it["id"] in ranked[:2], hits
    # the same footage again: accepted, but indexed once
    again = wait_job(url, upload(url, clip).json()["job_id"])
    assert again["state"] == "done" and again["already_indexed"] is True
    assert count(url, kind="tracklet") == len(items)
    listed = httpx.get(url + "/jobs", timeout=10).json()
    assert listed["total"] == 2 and listed["jobs"][0]["id"] == again["id"]
    assert httpx.get(url + "/jobs/doesnotexist", timeout=10).status_code == 404
    assert httpx.get(url + "/jobs", params={"state": "bogus"}, timeout=10).status_code == 422
    metrics = httpx.get(url + "/metrics", timeout=10).text
    assert 'reid_jobs{state="done"} 2.0' in metrics


def test_bad_footage_is_refused_and_the_gallery_is_untouched(server: Server, tmp_path: Path) -> None:
    url = server.url
    person = shared_path("data", "cuhk03", "val")
    img = sorted(person.glob("*.jpg"))[0]
    r = httpx.post(url + "/gallery", files={"files": (img.name, img.read_bytes(), "image/jpeg")},
                   data={"camera": "c0"}, timeout=30)
    assert r.status_code == 201
    before = count(url)
    for fps, why in (("25", "video uploads only"), ("0", "greater than 0"), ("fast", "number")):
        r = httpx.post(url + "/gallery", files={"files": (img.name, img.read_bytes(), "image/jpeg")},
                       data={"camera": "c0", "fps": fps}, timeout=30)
        assert r.status_code == 422 and why in r.text, r.text

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    r = upload(url, empty)
    assert r.status_code == 400 and "empty" in r.json()["detail"]

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).bytes(40_000))
    r = upload(url, junk)
    assert r.status_code == 415 and "junk.mp4" in r.json()["detail"], r.text

    text = tmp_path / "clip.avi"
    text.write_text("definitely not a video\n" * 200)
    r = upload(url, text, ctype="video/x-msvideo")
    assert r.status_code == 415, r.text

    big = tmp_path / "huge.avi"
    w = cv2.VideoWriter(str(big), cv2.VideoWriter_fourcc(*"MJPG"), 5, (4200, 2400))
    for _ in range(2):
        w.write(np.full((2400, 4200, 3), 90, np.uint8))
    w.release()
    r = upload(url, big, ctype="video/x-msvideo")
    assert r.status_code == 413 and "4200×2400" in r.json()["detail"], r.text

    # a video with no people: a job that finishes with nothing found
    nobody = tmp_path / "nobody.avi"
    w = cv2.VideoWriter(str(nobody), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for i in range(20):
        w.write(np.full((240, 320, 3), 100 + i, np.uint8))
    w.release()
    job = wait_job(url, upload(url, nobody, ctype="video/x-msvideo").json()["job_id"])
    assert job["state"] == "done" and job["tracklets"] == 0

    # a truncated video: what decodes is indexed, the job says the rest was lost
    src = shared_path("data", "footage", "intel", "one-by-one-person-detection.mp4")
    full = write_clip(src, tmp_path / "full.avi", 230, 60, fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    job = wait_job(url, upload(url, cut, ctype="video/x-msvideo").json()["job_id"])
    assert job["state"] == "done" and any("truncated" in e for e in job["errors"]), job

    assert count(url, kind="image") == before  # nothing already indexed was disturbed
    assert httpx.get(url + "/readyz", timeout=10).status_code == 200


def test_cancel_and_crash_recovery(tmp_path: Path) -> None:
    src = shared_path("data", "footage", "intel", "one-by-one-person-detection.mp4")
    clip = write_clip(src, tmp_path / "long.mp4", 230, 150)
    srv = Server(tmp_path / "data", REID_FOOTAGE_DETECT_FPS="0").start()
    try:
        url = srv.url
        # cancel a running job: nothing of it is indexed
        jid = upload(url, clip).json()["job_id"]
        wait_job(url, jid, until=("running",))
        r = httpx.delete(f"{url}/jobs/{jid}", timeout=10)
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        time.sleep(1.5)
        assert wait_job(url, jid)["state"] == "cancelled" and count(url) == 0

        # kill -9 the service while a job runs
        jid = upload(url, clip).json()["job_id"]
        t0 = time.time()
        while (httpx.get(f"{url}/jobs/{jid}", timeout=10).json().get("frames_done") or 0) < 10:
            assert time.time() - t0 < 60
            time.sleep(0.2)
        srv.kill9()
        # restart: the interrupted job runs again and its tracklets are indexed exactly once
        srv.start()
        url = srv.url
        job = wait_job(url, jid)
        assert job["state"] == "done" and job["attempts"] == 2, job
        assert any("interrupted" in e for e in job["errors"])
        assert job["tracklets"] >= 1 and count(url, kind="tracklet") == job["tracklets"]
        items = httpx.get(url + "/gallery", params={"limit": 500}, timeout=10).json()["items"]
        assert {it["source"]["footage_id"] for it in items} == {job["result"]["footage_id"]}
    finally:
        srv.stop()
    # the same footage through a server that was never killed: the same tracklets, no more, no less
    clean = Server(tmp_path / "clean", REID_FOOTAGE_DETECT_FPS="0").start()
    try:
        ref = wait_job(clean.url, upload(clean.url, clip).json()["job_id"])
        assert ref["state"] == "done" and ref["attempts"] == 1
        ref_items = httpx.get(clean.url + "/gallery", params={"limit": 500}, timeout=10).json()["items"]
    finally:
        clean.stop()

    def spans(listing):
        return sorted((it["source"]["frame_start"], it["source"]["frame_end"], it["n_frames"]) for it in listing)

    assert spans(items) == spans(ref_items)
