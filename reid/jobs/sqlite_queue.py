"""The embedded job queue: job records in ``<data_dir>/jobs.sqlite3`` (WAL), safe across threads
and processes, so jobs survive restarts. Storage only: what changes a job is :mod:`reid.jobs.model`."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reid.jobs.model import STATES, FootageParams, Job, new_job
from reid.service.store import connect

JOBS_DB = "jobs.sqlite3"
_COLS = "id, kind, state, params, progress, errors, result, created, updated, started, finished, worker, attempts"


def _job(r: tuple) -> Job:
    (id_, kind, state, params, progress, errors, result, created, updated, started, finished, worker,
     attempts) = r
    return Job(id=id_, kind=kind, state=state, params=FootageParams(**json.loads(params)), progress=progress,
               errors=tuple(json.loads(errors)), result=json.loads(result), created=created, updated=updated,
               started=started, finished=finished, worker=worker, attempts=attempts)


class SqliteJobQueue:
    def __init__(self, path: Path | str, max_attempts: int = 2) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        self._local = threading.local()
        self._wake = threading.Condition()
        self._c.execute("""CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, params TEXT NOT NULL,
            progress REAL NOT NULL DEFAULT 0, errors TEXT NOT NULL DEFAULT '[]',
            result TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL, updated REAL NOT NULL,
            started REAL, finished REAL, worker TEXT, attempts INTEGER NOT NULL DEFAULT 0)""")
        self._c.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created)")

    @property
    def _c(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return conn

    def _update(self, job_id: str, transition: Callable[[Job], Job | None]) -> Job | None:
        """Apply one transition in an immediate transaction (other processes wait); the job as it is
        afterwards (unchanged when the transition does not apply), None when there is no such job."""
        c = self._c
        c.execute("BEGIN IMMEDIATE")
        try:
            r = c.execute(f"SELECT {_COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            job = _job(r) if r else None
            new = transition(job) if job is not None else None
            if new is not None:
                c.execute("UPDATE jobs SET state=?, progress=?, errors=?, result=?, updated=?, started=?, "
                          "finished=?, worker=?, attempts=? WHERE id=?",
                          (new.state, new.progress, json.dumps(list(new.errors)), json.dumps(new.result),
                           new.updated, new.started, new.finished, new.worker, new.attempts, job_id))
                job = new
            c.execute("COMMIT")
            return job
        except BaseException:
            c.execute("ROLLBACK")
            raise

    # ---- API side
    def submit(self, params: FootageParams, job_id: str | None = None) -> Job:
        job = new_job(job_id or uuid.uuid4().hex[:16], params)
        self._c.execute("INSERT INTO jobs (id, kind, state, params, created, updated) VALUES (?,?,?,?,?,?)",
                        (job.id, job.kind, job.state, json.dumps(dataclasses.asdict(params)), job.created,
                         job.updated))
        with self._wake:
            self._wake.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        r = self._c.execute(f"SELECT {_COLS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(r) if r else None

    def list(self, limit: int = 100, offset: int = 0, state: str | None = None) -> list[Job]:
        """Newest first."""
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        rows = self._c.execute(f"SELECT {_COLS} FROM jobs {where} ORDER BY created DESC LIMIT ? OFFSET ?",
                               (*args, limit, offset)).fetchall()
        return [_job(r) for r in rows]

    def total(self, state: str | None = None) -> int:
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        return int(self._c.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0])

    def cancel(self, job_id: str) -> Job | None:
        """A queued job never starts; a running one stops at its next progress report."""
        return self._update(job_id, Job.cancelled)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for state, n in self._c.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            out[state] = int(n)
        return out

    def depth(self) -> int:
        return self.total("queued")

    def ping(self) -> bool:
        return True

    # ---- worker side
    def claim(self, worker: str, timeout: float = 1.0) -> Job | None:
        """The oldest queued job, now running under ``worker``; waits up to ``timeout`` s for one."""
        deadline = time.monotonic() + timeout
        while True:
            c = self._c
            c.execute("BEGIN IMMEDIATE")
            try:
                r = c.execute(f"SELECT {_COLS} FROM jobs WHERE state = 'queued' ORDER BY created LIMIT 1").fetchone()
                job = _job(r).claimed(worker) if r else None
                if job is not None:
                    c.execute("UPDATE jobs SET state=?, worker=?, started=?, updated=?, attempts=? WHERE id=?",
                              (job.state, job.worker, job.started, job.updated, job.attempts, job.id))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            if job is not None:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with self._wake:
                self._wake.wait(min(left, 0.5))  # other processes' submits are seen by polling

    def heartbeat(self, job_id: str, worker: str) -> None:  # leases are a Redis concept
        pass

    def progress(self, job_id: str, fraction: float, **info: Any) -> bool:
        """Record progress; False when the job is no longer running (cancelled): stop."""
        job = self._update(job_id, lambda j: j.progressed(fraction, **info))
        return job is not None and job.state == "running"

    def add_error(self, job_id: str, message: str) -> None:
        self._update(job_id, lambda j: j.with_error(message))

    def fail(self, job_id: str, message: str) -> None:
        self._update(job_id, lambda j: j.failed(message))

    def complete(self, job_id: str, result: dict[str, Any]) -> None:
        self._update(job_id, lambda j: j.completed(result))

    def release(self, job_id: str) -> None:  # claims are leases only in Redis
        pass

    def recover(self) -> int:
        """After a crash: jobs left ``running`` run again, or fail once they have used their attempts."""
        ids = [r[0] for r in self._c.execute("SELECT id FROM jobs WHERE state = 'running'").fetchall()]
        before = {i: self.get(i) for i in ids}
        return sum(self._update(i, lambda j: j.recovered(self.max_attempts)) != before[i] for i in ids)
