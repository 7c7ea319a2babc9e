"""The Redis job queue against a real redis-server (started here on a free port; skipped if absent)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("redis")

from conftest import start_redis

from reid.service.queue_redis import RedisJobQueue, ResultConsumer, decode, encode  # noqa: E402


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    proc, port = start_redis(tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    yield url
    proc.terminate()
    proc.wait(5)


def test_encode_roundtrip_keeps_arrays_bytes_and_times() -> None:
    v = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    out = decode(encode({"v": v, "jpg": b"\xff\xd8x", "t": t, "box": (1, 2, 3, 4), "p": Path("/a")}))
    assert out["v"].dtype == np.float32 and np.array_equal(out["v"], v)
    assert out["jpg"] == b"\xff\xd8x" and out["t"] == t and out["box"] == (1, 2, 3, 4)
    assert out["p"] == Path("/a")
    with pytest.raises(TypeError):
        encode(object())
    with pytest.raises(ValueError):
        decode({"__dc__": "os:system", "fields": {}})


def test_crops_travel_as_jpeg_and_come_back_as_crops() -> None:
    from reid.service.gallery import Crop

    yy, xx = np.mgrid[0:64, 0:32]
    bgr = np.stack([yy * 3, xx * 6, 255 - yy * 2], axis=-1).astype(np.uint8)  # smooth, like a real crop
    back = decode(encode([Crop(bgr=bgr)]))[0]
    assert isinstance(back, Crop) and back.bgr.shape == bgr.shape and back.data[:2] == b"\xff\xd8"
    assert np.abs(back.bgr.astype(int) - bgr.astype(int)).mean() < 4
    kept = decode(encode(Crop(bgr=bgr, data=back.data, ext=".jpg")))
    assert kept.data == back.data, "original encoded bytes are kept verbatim"


def test_job_flows_from_submit_through_worker_to_the_api_writer(redis_url: str) -> None:
    q = RedisJobQueue(redis_url, prefix="t")
    assert q.ping()
    job = q.submit("footage", {"path": "/data/uploads/x.mp4", "camera": "c1"})
    assert q.get(job["id"])["state"] == "queued" and q.depth() == 1

    got = q.claim("w1", timeout=1)
    assert got is not None and got["id"] == job["id"] and got["state"] == "running"
    assert q.depth() == 0 and q.claim("w2", timeout=0.1) is None
    assert q.progress(job["id"], 0.5, frames=30)
    q.add_error(job["id"], "frame 7: decode error")
    vec = np.ones((1, 4), np.float32)
    q.send_write(job["id"], "add", vec, camera="c1", thumbnail=b"jpg")
    q.finish(job["id"], {"tracklets": 1})
    assert q.get(job["id"])["state"] == "running", "done only once the API applied the writes"

    applied: list[tuple[str, list, dict]] = []
    consumer = ResultConsumer(q, lambda m, a, k: applied.append((m, a, k)))
    consumer.handle(q.pop_result(timeout=1))
    consumer.handle(q.pop_result(timeout=1))
    assert applied[0][0] == "add" and np.array_equal(applied[0][1][0], vec)
    assert applied[0][2] == {"camera": "c1", "thumbnail": b"jpg"}
    final = q.get(job["id"])
    assert final["state"] == "done" and final["progress"] == 1.0
    assert final["result"]["tracklets"] == 1 and final["result"]["items_indexed"] == 1
    assert final["errors"] == ["frame 7: decode error"]
    assert q.counts()["done"] == 1 and [j["id"] for j in q.list()] == [job["id"]]


def test_failed_write_fails_the_job_and_cancel_stops_work(redis_url: str) -> None:
    q = RedisJobQueue(redis_url, prefix="t")
    a = q.submit("footage", {})
    q.claim("w", timeout=1)
    q.send_write(a["id"], "nope")
    q.finish(a["id"])

    def apply(method: str, args: list, kwargs: dict) -> None:
        raise ValueError(f"no gallery method {method}")

    c = ResultConsumer(q, apply)
    c.handle(q.pop_result(timeout=1))
    c.handle(q.pop_result(timeout=1))
    job = q.get(a["id"])
    assert job["state"] == "failed" and "no gallery method nope" in job["errors"][-1]

    m = q.submit("footage", {})
    q.claim("w", timeout=1)
    q.send_write(m["id"], "add_records", [], _model_id="other-model")
    q.finish(m["id"])
    applied: list[str] = []
    c3 = ResultConsumer(q, lambda meth, a, k: applied.append(meth), model_id=lambda: "api-model")
    c3.handle(q.pop_result(timeout=1))
    c3.handle(q.pop_result(timeout=1))
    job = q.get(m["id"])
    assert not applied and job["state"] == "failed" and "same REID_MODEL" in job["errors"][-1]

    b = q.submit("footage", {})
    q.cancel(b["id"])
    assert q.depth() == 0 and q.claim("w", timeout=0.1) is None
    c2 = q.submit("footage", {})
    q.claim("w", timeout=1)
    q.cancel(c2["id"])
    assert q.progress(c2["id"], 0.2) is False, "a running worker learns about the cancel"


def test_job_of_a_dead_worker_goes_back_to_the_queue(redis_url: str) -> None:
    q = RedisJobQueue(redis_url, prefix="t", lease_seconds=0.2)
    job = q.submit("footage", {})
    assert q.claim("dead", timeout=1) is not None
    time.sleep(0.3)  # no heartbeat: lease expires
    again = q.claim("alive", timeout=1)
    assert again is not None and again["id"] == job["id"] and again["worker"] == "alive"
    assert "worker lost" in again["errors"][-1]


def test_results_taken_but_not_applied_come_back_after_an_api_crash(redis_url: str) -> None:
    q = RedisJobQueue(redis_url, prefix="t")
    job = q.submit("footage", {})
    q.claim("w", timeout=1)
    q.send_write(job["id"], "add_records", [1])
    q.finish(job["id"], {"tracklets": 1})
    first = q.pop_result(timeout=1)  # the API took it ... and died before applying/acking
    assert first is not None and q.pending_results() == 1

    q2 = RedisJobQueue(redis_url, prefix="t")  # the restarted API
    assert q2.restore_unacked() == 1
    again = q2.pop_result(timeout=1)
    assert again is not None and again["method"] == "add_records" and again["_raw"] == first["_raw"]
    q2.ack(again)
    assert q2.restore_unacked() == 0
    assert q2.pop_result(timeout=1)["op"] == "finish"


def test_items_indexed_survives_an_api_restart_between_writes_and_finish(redis_url: str) -> None:
    q = RedisJobQueue(redis_url, prefix="t")
    job = q.submit("footage", {})
    q.claim("w", timeout=1)
    for _ in range(2):
        q.send_write(job["id"], "add_records", [1, 2])
    q.finish(job["id"], {"tracklets": 4})
    before = ResultConsumer(q, lambda m, a, k: list(a[0]))  # each call "adds" its records
    for _ in range(2):
        msg = q.pop_result(timeout=1)
        before.handle(msg)
        q.ack(msg)
    # the API restarts here: a fresh consumer (no memory of the writes) applies the finish
    after = ResultConsumer(RedisJobQueue(redis_url, prefix="t"), lambda m, a, k: [])
    after.handle(q.pop_result(timeout=1))
    final = q.get(job["id"])
    assert final["state"] == "done" and final["result"]["items_indexed"] == 4
    assert final["result"].get("already_indexed") is not True
    assert q.pop_written(job["id"]) == 0  # the counter is gone with the job's completion
