"""The Redis job queue against a real redis-server (started here on a free port; skipped if absent)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("redis")

from conftest import start_redis

from reid.ingest.pipeline import FootageJob  # noqa: E402
from reid.ingest.tracklets import Tracklet  # noqa: E402
from reid.jobs.model import FootageParams  # noqa: E402
from reid.jobs.redis_queue import RedisJobQueue, ResultConsumer, TrackletBatch  # noqa: E402
from reid.service.records import gallery_entries  # noqa: E402


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    proc, port = start_redis(tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    yield url
    proc.terminate()
    proc.wait(5)


def batch(job_id: str, n: int = 1, model_id: str | None = "m", footage_id: str = "f1") -> TrackletBatch:
    """A tracklet batch as a worker sends it: n tracklets of two smooth crops, with vectors."""
    yy, xx = np.mgrid[0:64, 0:32]
    crop = np.stack([yy * 3, xx * 6, 255 - yy * 2], axis=-1).astype(np.uint8)  # smooth, like a real crop
    tracklets = [Tracklet(track_id=i, segment=0, frame_start=10, frame_end=20, t_start=1.0, t_end=2.0,
                          n_detections=5, box=[1.0, 2.0, 30.0, 60.0], box_frame=12, crops=[crop, crop],
                          frames=[11, 15], boxes=[[1.0, 2.0, 30.0, 60.0]] * 2, quality=0.5, median_height=60.0)
                 for i in range(n)]
    job = FootageJob(path=Path("/data/uploads/x.mp4"), camera="c1", start=1.7e9, source="x.mp4", meta={"k": 1})
    return TrackletBatch(job_id, model_id, footage_id, job, tracklets,
                         [np.full(4, i, np.float32) for i in range(n)])


def test_a_tracklet_batch_travels_as_json_and_comes_back_whole() -> None:
    sent = batch("j", n=2)
    sent.tracklets[0].scene = np.full((90, 160, 3), 70, np.uint8)  # the first has a scene, the second none
    msg = json.loads(sent.to_json())
    assert msg["op"] == "tracklets" and "__dc__" not in sent.to_json()  # explicit fields, no generic codec
    back = TrackletBatch.from_message(msg)
    assert back.job == sent.job and back.footage_id == "f1" and back.model_id == "m"
    assert [t.track_id for t in back.tracklets] == [0, 1] and back.tracklets[1].boxes == sent.tracklets[1].boxes
    assert all(np.array_equal(a, b) for a, b in zip(back.vectors, sent.vectors, strict=True))
    crop = back.tracklets[0].crops[0]
    assert crop.data[:2] == b"\xff\xd8" and np.abs(crop.bgr.astype(int) - sent.tracklets[0].crops[0]).mean() < 4
    again = TrackletBatch.from_message(json.loads(back.to_json()))
    assert again.tracklets[0].crops[0].data == crop.data, "JPEG bytes are kept verbatim, not re-encoded"
    entries = gallery_entries(back)  # what the API commits: tracklet records with their crops
    assert [e.record.camera for e in entries] == ["c1", "c1"] and entries[0].record.ts_start == 1.7e9 + 1.0
    assert entries[0].crops[0].data == crop.data
    scene = back.tracklets[0].scene
    assert scene.data[:2] == b"\xff\xd8" and scene.bgr.shape == (90, 160, 3) and back.tracklets[1].scene is None
    assert entries[0].scene.data == scene.data and entries[1].scene is None


def test_job_flows_from_submit_through_worker_to_the_api_writer(redis_url: str) -> None:
    q = RedisJobQueue(redis_url, prefix="t")
    assert q.ping()
    job = q.submit(FootageParams("uploads/x.mp4", "c1"))
    assert q.get(job.id).state == "queued" and q.depth() == 1

    got = q.claim("w1", timeout=1)
    assert got is not None and got.id == job.id and got.state == "running"
    assert q.depth() == 0 and q.claim("w2", timeout=0.1) is None
    assert q.progress(job.id, 0.5, frames=30)
    q.add_error(job.id, "frame 7: decode error")
    q.send_batch(batch(job.id, n=3))
    q.finish(job.id, {"tracklets": 3})
    assert q.get(job.id).state == "running", "done only once the API applied the writes"

    committed: list[TrackletBatch] = []
    consumer = ResultConsumer(q, lambda b: committed.append(b) or len(b.tracklets))
    consumer.handle(q.pop_result(timeout=1))
    consumer.handle(q.pop_result(timeout=1))
    assert len(committed) == 1 and len(committed[0].vectors) == 3
    final = q.get(job.id)
    assert final.state == "done" and final.progress == 1.0
    assert final.result["tracklets"] == 3 and final.result["items_indexed"] == 3
    assert final.errors == ("frame 7: decode error",)
    assert q.counts()["done"] == 1 and [j.id for j in q.list()] == [job.id]


def test_failed_commit_fails_the_job_and_cancel_stops_work(redis_url: str) -> None:
    q = RedisJobQueue(redis_url, prefix="t")
    a = q.submit(FootageParams(""))
    q.claim("w", timeout=1)
    q.send_batch(batch(a.id))
    q.finish(a.id)

    def commit(b: TrackletBatch) -> int:
        raise ValueError("disk full")

    c = ResultConsumer(q, commit)
    c.handle(q.pop_result(timeout=1))
    c.handle(q.pop_result(timeout=1))
    job = q.get(a.id)
    assert job.state == "failed" and "disk full" in job.errors[-1]

    m = q.submit(FootageParams(""))
    q.claim("w", timeout=1)
    q.send_batch(batch(m.id, model_id="other-model"))
    q.finish(m.id)
    committed: list[TrackletBatch] = []
    c3 = ResultConsumer(q, lambda b: committed.append(b) or 1, model_id=lambda: "api-model")
    c3.handle(q.pop_result(timeout=1))
    c3.handle(q.pop_result(timeout=1))
    job = q.get(m.id)
    assert not committed and job.state == "failed" and "same REID_MODEL" in job.errors[-1]

    b = q.submit(FootageParams(""))
    q.cancel(b.id)
    assert q.depth() == 0 and q.claim("w", timeout=0.1) is None
    c2 = q.submit(FootageParams(""))
    q.claim("w", timeout=1)
    q.cancel(c2.id)
    assert q.progress(c2.id, 0.2) is False, "a running worker learns about the cancel"


def test_job_of_a_dead_worker_goes_back_to_the_queue(redis_url: str) -> None:
    q = RedisJobQueue(redis_url, prefix="t", lease_seconds=0.2)
    job = q.submit(FootageParams(""))
    assert q.claim("dead", timeout=1) is not None
    time.sleep(0.3)  # no heartbeat: lease expires
    again = q.claim("alive", timeout=1)
    assert again is not None and again.id == job.id and again.worker == "alive" and again.attempts == 2
    assert "worker lost" in again.errors[-1]


def test_results_taken_but_not_applied_come_back_after_an_api_crash(redis_url: str) -> None:
    q = RedisJobQueue(redis_url, prefix="t")
    job = q.submit(FootageParams(""))
    q.claim("w", timeout=1)
    q.send_batch(batch(job.id))
    q.finish(job.id, {"tracklets": 1})
    first = q.pop_result(timeout=1)  # the API took it ... and died before applying/acking
    assert first is not None and q.pending_results() == 1

    q2 = RedisJobQueue(redis_url, prefix="t")  # the restarted API
    assert q2.restore_unacked() == 1
    again = q2.pop_result(timeout=1)
    assert again is not None and again["op"] == "tracklets" and again["_raw"] == first["_raw"]
    q2.ack(again)
    assert q2.restore_unacked() == 0
    assert q2.pop_result(timeout=1)["op"] == "finish"


def test_items_indexed_survives_an_api_restart_between_writes_and_finish(redis_url: str) -> None:
    q = RedisJobQueue(redis_url, prefix="t")
    job = q.submit(FootageParams(""))
    q.claim("w", timeout=1)
    for _ in range(2):
        q.send_batch(batch(job.id, n=2))
    q.finish(job.id, {"tracklets": 4})
    before = ResultConsumer(q, lambda b: len(b.tracklets))  # each batch "adds" its tracklets
    for _ in range(2):
        msg = q.pop_result(timeout=1)
        before.handle(msg)
        q.ack(msg)
    # the API restarts here: a fresh consumer (no memory of the writes) applies the finish
    after = ResultConsumer(RedisJobQueue(redis_url, prefix="t"), lambda b: 0)
    after.handle(q.pop_result(timeout=1))
    final = q.get(job.id)
    assert final.state == "done" and final.result["items_indexed"] == 4
    assert final.result.get("already_indexed") is not True
    assert q.pop_written(job.id) == 0  # the counter is gone with the job's completion
