"""The embedded job queue (SQLite under the data dir): states, claims across processes, cancel,
and recovery of jobs interrupted by a crash."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from reid.jobs.model import FootageParams, Job
from reid.jobs.sqlite_queue import SqliteJobQueue


def _claim_in_child(db: str, out: mp.Queue) -> None:
    q = SqliteJobQueue(db)
    out.put(q.claim("child", timeout=5.0))


def test_lifecycle_and_listing(tmp_path: Path) -> None:
    q = SqliteJobQueue(tmp_path / "jobs.sqlite3")
    a = q.submit(FootageParams("/x/a.mp4", "c1", 1.0e9, "a.mp4", {"k": 1}))
    b = q.submit(FootageParams("/x/b.mp4"))
    assert a.state == "queued" and a.params.camera == "c1" and a.params.meta == {"k": 1}
    assert q.depth() == 2 and q.counts()["queued"] == 2
    got = q.claim("w1", timeout=0)
    assert got is not None and got.id == a.id and got.state == "running" and got.attempts == 1
    assert q.progress(a.id, 0.5, frames_done=10, frames_total=20) is True
    q.add_error(a.id, "frame 3 unreadable")
    q.complete(a.id, {"tracklets": 3})
    done = q.get(a.id)
    assert done.state == "done" and done.progress == 1.0 and done.finished is not None
    assert done.result == {"frames_done": 10, "frames_total": 20, "tracklets": 3}
    assert done.errors == ("frame 3 unreadable",)
    assert [j.id for j in q.list()] == [b.id, a.id]  # newest first
    assert [j.id for j in q.list(state="done")] == [a.id] and q.total() == 2
    # a finished job cannot be cancelled or failed afterwards
    q.cancel(a.id)
    q.fail(a.id, "late")
    assert q.get(a.id).state == "done"
    assert q.get("nope") is None and q.cancel("nope") is None


def test_cancel_queued_and_running(tmp_path: Path) -> None:
    q = SqliteJobQueue(tmp_path / "jobs.sqlite3")
    a = q.submit(FootageParams(""))
    b = q.submit(FootageParams(""))
    assert q.cancel(a.id).state == "cancelled"
    got = q.claim("w", timeout=0)
    assert got.id == b.id  # the cancelled one never starts
    q.cancel(b.id)
    assert q.progress(b.id, 0.3) is False  # the running worker learns it must stop
    q.complete(b.id, {"tracklets": 1})
    assert q.get(b.id).state == "cancelled"
    assert q.claim("w", timeout=0) is None


def test_another_process_claims_a_job(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    q = SqliteJobQueue(db)
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_claim_in_child, args=(str(db), out))
    p.start()
    job = q.submit(FootageParams("/v.mp4"))
    got = out.get(timeout=30)
    p.join(10)
    assert got is not None and got.id == job.id and got.worker == "child"
    assert q.get(job.id).state == "running"
    assert q.claim("me", timeout=0) is None  # claimed exactly once


def test_transitions_are_pure_and_refuse_what_the_state_does_not_allow() -> None:
    job = Job("j", FootageParams("/v.mp4"))
    assert job.progressed(0.5) is None  # not running yet
    assert job.completed({"already_indexed": True}).state == "done"  # footage indexed before: never runs
    running = job.claimed("w")
    assert running.state == "running" and running.attempts == 1 and job.state == "queued"
    assert running.claimed("w2") is None
    done = running.completed({"tracklets": 2})
    assert done.final and done.cancelled() is None and done.failed("late") is None
    lost = running.requeued("worker lost")
    assert lost.state == "queued" and lost.worker is None and lost.errors == ("worker lost",)
    assert Job.from_json(done.to_json()) == done
    errs = running
    for i in range(60):
        errs = errs.with_error(f"e{i}")
    assert len(errs.errors) == 50 and errs.errors[-1] == "e59"


def test_recover_requeues_then_fails(tmp_path: Path) -> None:
    q = SqliteJobQueue(tmp_path / "jobs.sqlite3", max_attempts=2)
    job = q.submit(FootageParams(""))
    q.claim("w", timeout=0)
    # the service dies; at the next start the job runs again
    q2 = SqliteJobQueue(tmp_path / "jobs.sqlite3", max_attempts=2)
    assert q2.recover() == 1
    j = q2.get(job.id)
    assert j.state == "queued" and "interrupted" in j.errors[-1]
    assert q2.claim("w", timeout=0).attempts == 2
    # it dies again: attempts are used up, so it fails with a message instead of looping forever
    assert q2.recover() == 1
    j = q2.get(job.id)
    assert j.state == "failed" and "giving up" in j.errors[-1]
