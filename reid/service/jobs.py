"""Footage jobs: the queue interface, the embedded SQLite-backed queue, and the workers.

``JobQueue`` is what the API and the workers need from a queue (submit / get / list / cancel on the
API side; claim / progress / add_error / fail / complete on the worker side). Two backends:

* :class:`SqliteJobQueue` (``REID_QUEUE=embedded``, the default): job records in
  ``<data_dir>/jobs.sqlite3``, so they survive restarts. :class:`EmbeddedRunner` runs jobs inside the
  service: each job in a child process (``REID_JOB_MODE=process``, crash-isolated: a decoder crash on
  a bad file cannot take the API down) or a thread. The child sends the finished tracklets back and
  the API commits them in one transaction.
* ``reid.service.queue_redis.RedisJobQueue`` (``REID_QUEUE=redis``): separate ``reid worker`` processes;
  their gallery writes travel back through Redis and the API applies them (docs/deploy.md).

Crash safety: a job's tracklets are committed in one transaction at its end
(``Gallery.add_records(..., unless_footage=<content hash>)``), so they are all there or none are, and
the same footage is never indexed twice. A job found ``running`` at start-up (the service died under
it) is queued again, up to ``REID_JOB_MAX_ATTEMPTS`` runs, then marked failed.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from reid.service.store import connect

log = logging.getLogger(__name__)

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("done", "failed", "cancelled")
STATES = (*ACTIVE_STATES, *FINAL_STATES)
JOBS_DB = "jobs.sqlite3"


class JobQueue(Protocol):
    """What the API and the workers use; RedisJobQueue has the same methods."""

    def submit(self, kind: str, params: dict[str, Any], job_id: str | None = None) -> dict[str, Any]: ...
    def get(self, job_id: str) -> dict[str, Any] | None: ...
    def list(self, limit: int = 100, offset: int = 0, state: str | None = None) -> list[dict[str, Any]]: ...
    def cancel(self, job_id: str) -> dict[str, Any] | None: ...
    def claim(self, worker: str, timeout: float = 1.0) -> dict[str, Any] | None: ...
    def progress(self, job_id: str, fraction: float, **info: Any) -> bool: ...
    def add_error(self, job_id: str, message: str) -> None: ...
    def fail(self, job_id: str, message: str) -> None: ...
    def counts(self) -> dict[str, int]: ...
    def depth(self) -> int: ...


def _now() -> float:
    return time.time()


class SqliteJobQueue:
    """Job records in one SQLite file (WAL), safe across threads and processes."""

    def __init__(self, path: Path | str, max_attempts: int = 2) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_attempts = max_attempts
        self._local = threading.local()
        self._wake = threading.Condition()
        c = self._c
        c.execute("""CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL, params TEXT NOT NULL,
            progress REAL NOT NULL DEFAULT 0, errors TEXT NOT NULL DEFAULT '[]',
            result TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL, updated REAL NOT NULL,
            started REAL, finished REAL, worker TEXT, attempts INTEGER NOT NULL DEFAULT 0)""")
        c.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created)")

    @property
    def _c(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return conn

    @staticmethod
    def _row(r: tuple) -> dict[str, Any]:
        keys = ("id", "kind", "state", "params", "progress", "errors", "result", "created", "updated",
                "started", "finished", "worker", "attempts")
        d = dict(zip(keys, r, strict=True))
        for k in ("params", "errors", "result"):
            d[k] = json.loads(d[k])
        return d

    def _update(self, job_id: str, fn: Callable[[dict[str, Any]], dict[str, Any] | None]) -> dict[str, Any] | None:
        """Read-modify-write one job in an immediate transaction (other processes wait)."""
        c = self._c
        c.execute("BEGIN IMMEDIATE")
        try:
            r = c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if r is None:
                c.execute("COMMIT")
                return None
            job = self._row(r)
            new = fn(dict(job))
            if new is not None and new != job:
                new["updated"] = _now()
                c.execute(
                    "UPDATE jobs SET state=?, progress=?, errors=?, result=?, updated=?, started=?, finished=?, "
                    "worker=?, attempts=? WHERE id=?",
                    (new["state"], new["progress"], json.dumps(new["errors"][-50:]), json.dumps(new["result"]),
                     new["updated"], new["started"], new["finished"], new["worker"], new["attempts"], job_id))
                job = new
            c.execute("COMMIT")
            return job
        except BaseException:
            c.execute("ROLLBACK")
            raise

    # ---- API side
    def submit(self, kind: str, params: dict[str, Any], job_id: str | None = None) -> dict[str, Any]:
        job_id = job_id or uuid.uuid4().hex[:16]
        now = _now()
        self._c.execute("INSERT INTO jobs (id, kind, state, params, created, updated) VALUES (?,?,?,?,?,?)",
                        (job_id, kind, "queued", json.dumps(params), now, now))
        with self._wake:
            self._wake.notify_all()
        return self.get(job_id)  # type: ignore[return-value]

    def get(self, job_id: str) -> dict[str, Any] | None:
        r = self._c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._row(r) if r else None

    def list(self, limit: int = 100, offset: int = 0, state: str | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        if state:
            rows = self._c.execute("SELECT * FROM jobs WHERE state = ? ORDER BY created DESC LIMIT ? OFFSET ?",
                                   (state, limit, offset)).fetchall()
        else:
            rows = self._c.execute("SELECT * FROM jobs ORDER BY created DESC LIMIT ? OFFSET ?",
                                   (limit, offset)).fetchall()
        return [self._row(r) for r in rows]

    def total(self, state: str | None = None) -> int:
        if state:
            return int(self._c.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()[0])
        return int(self._c.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """A queued job never starts; a running one stops at its next progress report."""
        return self._update(job_id, lambda j: None if j["state"] in FINAL_STATES else
                            {**j, "state": "cancelled", "finished": _now()})

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
    def claim(self, worker: str, timeout: float = 1.0) -> dict[str, Any] | None:
        """The oldest queued job, now running under ``worker``; waits up to ``timeout`` s for one."""
        deadline = time.monotonic() + timeout
        while True:
            c = self._c
            c.execute("BEGIN IMMEDIATE")
            try:
                r = c.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created LIMIT 1").fetchone()
                if r is not None:
                    now = _now()
                    c.execute("UPDATE jobs SET state='running', worker=?, started=?, updated=?, "
                              "attempts=attempts+1 WHERE id=?", (worker, now, now, r[0]))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            if r is not None:
                return self.get(r[0])
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with self._wake:
                self._wake.wait(min(left, 0.5))  # other processes' submits are seen by polling

    def heartbeat(self, job_id: str, worker: str) -> None:  # leases are a Redis concept
        pass

    def progress(self, job_id: str, fraction: float, **info: Any) -> bool:
        """Record progress; False when the job is no longer running (cancelled): stop."""
        job = self._update(job_id, lambda j: None if j["state"] != "running" else
                           {**j, "progress": max(0.0, min(1.0, float(fraction))),
                            "result": {**j["result"], **info}})
        return job is not None and job["state"] == "running"

    def add_error(self, job_id: str, message: str) -> None:
        self._update(job_id, lambda j: {**j, "errors": [*j["errors"], message]})

    def fail(self, job_id: str, message: str) -> None:
        self._update(job_id, lambda j: None if j["state"] in FINAL_STATES else
                     {**j, "state": "failed", "finished": _now(), "errors": [*j["errors"], message]})

    def complete(self, job_id: str, result: dict[str, Any]) -> None:
        self._update(job_id, lambda j: None if j["state"] in ("failed", "cancelled") else
                     {**j, "state": "done", "progress": 1.0, "finished": _now(),
                      "result": {**j["result"], **result}})

    def recover(self) -> int:
        """After a crash: jobs left ``running`` run again (tracklets commit atomically at the end, so
        nothing is half-indexed), or fail once they have used their attempts."""
        n = 0
        for r in self._c.execute("SELECT id FROM jobs WHERE state = 'running'").fetchall():
            def fix(j: dict[str, Any]) -> dict[str, Any] | None:
                if j["state"] != "running":
                    return None
                if j["attempts"] >= self.max_attempts:
                    return {**j, "state": "failed", "finished": _now(), "errors": [
                        *j["errors"], f"interrupted by a restart or crash {j['attempts']} time(s); giving up "
                        "(nothing of it was indexed); re-submit the footage to try again"]}
                return {**j, "state": "queued", "progress": 0.0, "worker": None, "errors": [
                    *j["errors"], "interrupted by a restart or crash; running it again from the start"]}
            job = self._update(r[0], fix)
            n += job is not None
        return n


# ----------------------------------------------------------------------------- running one job
def footage_params(path: Path, camera: str, start: float | None, filename: str | None,
                   meta: dict[str, Any] | None, fps: float | None = None, delete_after: bool = True,
                   request_id: str | None = None) -> dict[str, Any]:
    return {"path": str(path), "camera": camera, "start": start, "filename": filename, "meta": meta,
            "fps": fps, "delete_after": delete_after, "request_id": request_id}


def _job_of(params: dict[str, Any]) -> Any:
    from reid.ingest.pipeline import FootageJob

    return FootageJob(path=Path(params["path"]), camera=params["camera"], start=params.get("start"),
                      fps=params.get("fps"), source=params.get("filename"), meta=params.get("meta"),
                      footage_id=params.get("footage_id"))


def process_job(job: dict[str, Any], queue: Any, settings: Any, embed_tracklet: Callable,
                worker: str = "") -> Any:
    """Run the pipeline for one claimed job, reporting progress to ``queue``; returns the
    FootageResult, or None when cancelled or failed (the job record says which)."""
    from reid.ingest.decode import FootageError
    from reid.ingest.detect import DetectorError
    from reid.ingest.pipeline import Cancelled, PipelineConfig, Progress, process_footage

    job_id = job["id"]

    def report(p: Progress) -> bool:
        queue.heartbeat(job_id, worker)
        frac = p.frames_done / p.frames_total if p.frames_total else 0.0
        return bool(queue.progress(job_id, min(frac, 0.99), frames_done=p.frames_done,
                                   frames_total=p.frames_total, fps=round(p.fps, 1), tracklets=p.tracklets,
                                   realtime=round(p.realtime, 2) if p.realtime else None))

    try:
        res = process_footage(_job_of(job["params"]), PipelineConfig.from_settings(settings), embed_tracklet,
                              progress=report)
    except Cancelled:
        return None
    except (FootageError, DetectorError) as e:
        queue.fail(job_id, e.message if hasattr(e, "message") else str(e))
        return None
    except MemoryError:
        queue.fail(job_id, "out of memory while processing this footage (frames too large?)")
        return None
    except Exception as e:  # a bug or an unexpected decoder error: the job fails, the service stays up
        log.exception("footage job %s failed", job_id)
        queue.fail(job_id, f"processing failed: {type(e).__name__}: {e}")
        return None
    for msg in res.errors:
        queue.add_error(job_id, msg)
    return res


def commit_result(gallery: Any, res: Any) -> dict[str, Any]:
    """One transaction for the whole footage; nothing when that footage is already indexed."""
    from reid.service.records import gallery_entries

    entries = gallery_entries(res)
    added = gallery.add_records(entries, unless_footage=res.footage_id) if entries else []
    stats = res.stats()
    stats["tracklets"] = len(added)
    if entries and not added:
        stats["already_indexed"] = True
        stats["tracklets"] = gallery.store.count_footage(res.footage_id) \
            if hasattr(gallery.store, "count_footage") else 0
    stats["item_ids"] = [r.id for r in added][:1000]
    return stats


def _cleanup(job: dict[str, Any]) -> None:
    p = job.get("params") or {}
    if p.get("delete_after") and p.get("path"):
        try:
            Path(p["path"]).unlink(missing_ok=True)
        except OSError:
            pass


class _OrphanGuard:
    """The child's view of the queue: once the service that started it has died (SIGKILL), stop at
    the next progress report instead of racing the restarted service's own run of the job."""

    def __init__(self, queue: SqliteJobQueue, ppid: int) -> None:
        self.queue, self.ppid = queue, ppid

    def progress(self, job_id: str, fraction: float, **info: Any) -> bool:
        if os.getppid() != self.ppid:
            return False
        return self.queue.progress(job_id, fraction, **info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)


def _child_main(settings_json: str, job: dict[str, Any], queue_path: str, conn: Any) -> None:
    """Child process: embed with its own model session, send (stats, entries) back over ``conn``."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from reid.service.embedder import Embedder
    from reid.service.settings import Settings

    settings = Settings(**json.loads(settings_json))
    queue = _OrphanGuard(SqliteJobQueue(queue_path), os.getppid())
    embedder = Embedder(settings)
    try:
        res = process_job(job, queue, settings, embedder.embed_tracklet, worker=f"pid{os.getpid()}")
        conn.send(("result", res) if res is not None else ("none", None))
    finally:
        embedder.close()
        conn.close()


class EmbeddedRunner:
    """Runs footage jobs from a SqliteJobQueue inside the service and commits them to its gallery."""

    def __init__(self, queue: SqliteJobQueue, gallery: Any, embedder: Any, settings: Any,
                 workers: int = 1, mode: str = "process") -> None:
        self.queue, self.gallery, self.embedder, self.settings = queue, gallery, embedder, settings
        self.mode = mode
        self.workers = workers
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._procs: dict[str, Any] = {}

    def start(self) -> None:
        n = self.queue.recover()
        if n:
            log.warning("re-queued or failed %d footage job(s) interrupted by the last shutdown", n)
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, args=(f"embedded-{os.getpid()}-{i}",),
                                 name=f"footage-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for p in list(self._procs.values()):
            if p.is_alive():
                p.terminate()
        for t in self._threads:
            t.join(timeout)

    def _loop(self, name: str) -> None:
        while not self._stop.is_set():
            try:
                job = self.queue.claim(name, timeout=1.0)
            except sqlite3.Error:
                log.exception("job queue unavailable")
                self._stop.wait(2.0)
                continue
            if job is not None:
                self.run_or_fail(job, name)

    def run_or_fail(self, job: dict[str, Any], name: str) -> None:
        """Run a claimed job; an unexpected crash fails the job (with the reason) instead of the worker.
        A finished job's upload is deleted."""
        try:
            self.run(job, name)
        except Exception as e:
            log.exception("footage job %s crashed", job["id"])
            self.queue.fail(job["id"], f"internal error: {type(e).__name__}: {e}")
        finally:
            final = self.queue.get(job["id"])
            if final is not None and final["state"] in FINAL_STATES:
                _cleanup(final)

    def run(self, job: dict[str, Any], name: str = "embedded") -> None:
        from reid.ingest.decode import FootageError, content_hash

        job_id = job["id"]
        params = job["params"]
        try:
            fid = content_hash(params["path"])
        except (OSError, FootageError) as e:
            self.queue.fail(job_id, f"cannot read the uploaded footage: {e}")
            return
        params = {**params, "footage_id": fid}
        job = {**job, "params": params}
        n = self.gallery.store.count_footage(fid) if hasattr(self.gallery.store, "count_footage") else 0
        if n:
            self.queue.complete(job_id, {"footage_id": fid, "tracklets": n, "already_indexed": True})
            return
        if self.mode == "thread":
            res = process_job(job, self.queue, self.settings, self.embedder.embed_tracklet, name)
        else:
            res = self._run_child(job)
        if res is None:
            return
        current = self.queue.get(job_id)
        if current is None or current["state"] != "running":
            return  # cancelled while it ran: nothing is written
        self.queue.complete(job_id, commit_result(self.gallery, res))

    def _run_child(self, job: dict[str, Any]) -> Any:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child_main, name=f"footage-job-{job['id']}",
                           args=(self.settings.model_dump_json(), job, str(self.queue.path), child), daemon=True)
        proc.start()
        child.close()
        self._procs[job["id"]] = proc
        try:
            while True:
                if parent.poll(0.5):
                    try:
                        kind, res = parent.recv()
                    except EOFError:
                        break
                    proc.join(30)
                    return res if kind == "result" else None
                if not proc.is_alive():
                    break
                if self._stop.is_set():
                    proc.terminate()
                    return None
                st = self.queue.get(job["id"])
                if st is not None and st["state"] == "cancelled":
                    proc.terminate()
                    proc.join(5)
                    return None
            proc.join(5)
            st = self.queue.get(job["id"])
            if st is not None and st["state"] == "running":
                self.queue.fail(job["id"], f"the footage worker process died (exit code {proc.exitcode}) "
                                "while decoding this file; it is probably corrupt or uses an unsupported codec")
            return None
        finally:
            self._procs.pop(job["id"], None)
            parent.close()


# ----------------------------------------------------------------------------- wiring into the app
def check_footage(path: Path, settings: Any, name: str | None = None) -> None:
    """Cheap up-front check of an upload (opens it and decodes one frame) so that an empty, corrupt or
    unsupported file, or one with huge frames, is refused with a 4xx instead of becoming a job."""
    from reid.ingest.decode import Footage, FootageError

    try:
        Footage(path, max_pixels=settings.footage_max_pixels)
    except FootageError as e:  # the API maps its kind to a status (reid.service.errors)
        raise FootageError(e.message.replace(Path(path).name, name or Path(path).name), e.kind) from e


def install_embedded(app: Any, settings: Any) -> SqliteJobQueue:
    """REID_QUEUE=embedded: job records in the data dir's SQLite, jobs run by this service
    (``REID_JOB_WORKERS`` at a time). Sets ``app.state.submit_video`` / ``job_queue`` /
    ``queue_status``; the runner starts once the gallery is open (``on_ready``)."""
    from fastapi.concurrency import run_in_threadpool

    from reid.ingest.decode import FootageError

    queue = SqliteJobQueue(Path(settings.data_dir) / JOBS_DB, settings.job_max_attempts)
    runner: list[EmbeddedRunner] = []

    def start(app: Any) -> None:
        if settings.job_workers > 0:
            r = EmbeddedRunner(queue, app.state.gallery, app.state.embedder, settings, settings.job_workers,
                               settings.job_mode)
            r.start()
            runner.append(r)

    def stop(app: Any) -> None:
        for r in runner:
            r.stop()

    async def submit_video(path: Path, filename: str | None, camera: str, timestamp: float | None,
                           meta: dict[str, Any] | None, fps: float | None = None, request_id: str | None = None,
                           **_: Any) -> str:
        try:
            await run_in_threadpool(check_footage, Path(path), settings, filename)
        except FootageError:
            Path(path).unlink(missing_ok=True)
            raise
        params = footage_params(Path(path), camera, timestamp, filename, meta, fps=fps, request_id=request_id)
        job = await run_in_threadpool(queue.submit, "footage", params)
        log.info("footage job %s queued: %s camera=%s", job["id"], filename, camera)
        return str(job["id"])

    def queue_status(detail: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": "embedded", "ok": True, "depth": queue.depth(),
                               "workers": settings.job_workers}
        if detail:
            out["jobs"] = queue.counts()
        return out

    app.state.job_queue = queue
    app.state.submit_video = submit_video
    app.state.queue_status = queue_status
    app.state.on_ready.append(start)
    app.state.on_shutdown.append(stop)
    return queue


# ----------------------------------------------------------------------------- `reid worker` (embedded)
def run_embedded_worker(settings: Any, stop: threading.Event | None = None, max_jobs: int | None = None) -> int:
    """`reid worker` with REID_QUEUE=embedded: take jobs from the data dir's job table and write the
    gallery directly (SQLite serialises writers; the API's index catches up from the store). Lets a
    box run footage outside the API process: `REID_JOB_WORKERS=0 reid serve` + `reid worker`."""
    from reid.service.embedder import Embedder
    from reid.service.gallery import Gallery

    stop = stop or threading.Event()
    name = f"{os.uname().nodename}-{os.getpid()}"
    queue = SqliteJobQueue(Path(settings.data_dir) / JOBS_DB, settings.job_max_attempts)
    embedder = Embedder(settings)
    gallery = Gallery(settings, embedder, background=False)
    runner = EmbeddedRunner(queue, gallery, embedder, settings, workers=0, mode="thread")
    log.info("worker %s taking footage jobs from %s", name, queue.path)
    done = 0
    try:
        while not stop.is_set() and (max_jobs is None or done < max_jobs):
            job = queue.claim(name, timeout=1.0)
            if job is None:
                continue
            runner.run_or_fail(job, name)
            done += 1
    finally:
        gallery.close()
        embedder.close()
    return done
