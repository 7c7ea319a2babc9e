"""Footage jobs wired into the service: a video upload becomes a job (``app.state.submit_video``),
the job's tracklets end up in the one gallery, and ``reid worker`` runs jobs outside the API.

* ``REID_QUEUE=embedded`` (the default): job records in ``<data_dir>/jobs.sqlite3`` (they survive
  restarts); the service runs ``REID_JOB_WORKERS`` jobs at a time, each in a child process
  (``REID_JOB_MODE=process``: a decoder crash on a bad file cannot take the API down) or a thread,
  and commits each job's tracklets itself. ``REID_JOB_WORKERS=0 reid serve`` + ``reid worker``
  moves the work out of the API; the worker then writes the gallery (SQLite serialises writers).
* ``REID_QUEUE=redis``: separate ``reid worker`` processes send each job's tracklets to the API as
  one message; the API's consumer commits them (the API stays the only index writer).

Crash safety: a job's tracklets are committed in one transaction at its end
(``Gallery.add_records(..., unless_footage=<content hash>)``), so they are all there or none are,
and the same footage is never indexed twice. A job found ``running`` at start-up (the service died
under it) is queued again, up to ``REID_JOB_MAX_ATTEMPTS`` runs, then marked failed.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from reid.ingest.pipeline import FootageResult
from reid.jobs.model import FootageParams, Job
from reid.jobs.runner import JobRunner, work
from reid.jobs.sqlite_queue import JOBS_DB, SqliteJobQueue

log = logging.getLogger(__name__)


def check_footage(path: Path, settings: Any, name: str | None = None) -> None:
    """Cheap up-front check of an upload (opens it and decodes one frame) so that an empty, corrupt or
    unsupported file, or one with huge frames, is refused with a 4xx instead of becoming a job."""
    from reid.ingest.decode import Footage, FootageError

    try:
        Footage(path, max_pixels=settings.footage.max_pixels)
    except FootageError as e:  # the API maps its kind to a status (reid.service.errors)
        raise FootageError(e.message.replace(Path(path).name, name or Path(path).name), e.kind) from e


def _submitter(settings: Any, queue: Any, relative_to: Path | None) -> Any:
    """``app.state.submit_video``: check the upload, then queue a job for it (its path relative to the
    data dir when workers mount the volume elsewhere)."""
    from fastapi.concurrency import run_in_threadpool

    from reid.ingest.decode import FootageError
    from reid.jobs.redis_queue import QueueUnavailable
    from reid.service.uploads import BadInput

    async def submit_video(path: Path, filename: str | None, camera: str, timestamp: float | None,
                           meta: dict[str, Any] | None, fps: float | None = None, request_id: str | None = None,
                           **_: Any) -> str:
        try:
            await run_in_threadpool(check_footage, Path(path), settings, filename)
        except FootageError:
            Path(path).unlink(missing_ok=True)
            raise
        stored = Path(path).resolve().relative_to(relative_to.resolve()) if relative_to else Path(path)
        params = FootageParams(path=str(stored), camera=camera, start=timestamp, filename=filename, meta=meta,
                               fps=fps, request_id=request_id)
        try:
            job = await run_in_threadpool(queue.submit, params)
        except QueueUnavailable as e:
            Path(path).unlink(missing_ok=True)
            raise BadInput(str(e), 503) from e
        log.info("footage job %s queued: %s camera=%s", job.id, filename, camera, extra={"job_id": job.id})
        return job.id

    return submit_video


# ----------------------------------------------------------------------------- REID_QUEUE=embedded
def _commit_into(gallery: Any, queue: Any) -> Any:
    from reid.service.records import commit_result

    def deliver(job: Job, res: FootageResult) -> None:
        queue.complete(job.id, commit_result(gallery, res))

    return deliver


def install_embedded(app: Any, settings: Any) -> SqliteJobQueue:
    """Job records in the data dir's SQLite, jobs run by this service; the runner starts once the
    gallery is open (``on_ready``)."""
    queue = SqliteJobQueue(Path(settings.data_dir) / JOBS_DB, settings.job.max_attempts)
    stop = threading.Event()
    runners: list[JobRunner] = []

    def start(app: Any) -> None:
        n = queue.recover()
        if n:
            log.warning("re-queued or failed %d footage job(s) interrupted by the last shutdown", n)
        gallery = app.state.gallery
        for i in range(settings.job.workers):
            runner = JobRunner(queue, settings, app.state.embedder, _commit_into(gallery, queue), settings.job.mode,
                               indexed=gallery.store.count_footage)
            runners.append(runner)
            threading.Thread(target=work, args=(queue, runner, f"embedded-{os.getpid()}-{i}", stop),
                             kwargs={"transient": (sqlite3.Error,)}, name=f"footage-worker-{i}", daemon=True).start()

    def shutdown(app: Any) -> None:
        stop.set()
        for r in runners:
            r.stop()

    def queue_status(detail: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": "embedded", "ok": True, "depth": queue.depth(),
                               "workers": settings.job.workers}
        if detail:
            out["jobs"] = queue.counts()
        return out

    app.state.job_queue = queue
    app.state.submit_video = _submitter(settings, queue, None)
    app.state.queue_status = queue_status
    app.state.on_ready.append(start)
    app.state.on_shutdown.append(shutdown)
    return queue


def run_embedded_worker(settings: Any, stop: threading.Event | None = None, max_jobs: int | None = None) -> int:
    """`reid worker` with REID_QUEUE=embedded: jobs from the data dir's job table, tracklets written to
    the gallery directly (the API's index catches up from the store)."""
    from reid.service.embedder import Embedder
    from reid.service.gallery import Gallery

    name = f"{os.uname().nodename}-{os.getpid()}"
    queue = SqliteJobQueue(Path(settings.data_dir) / JOBS_DB, settings.job.max_attempts)
    embedder = Embedder(settings)
    gallery = Gallery(settings, embedder, background=False)
    runner = JobRunner(queue, settings, embedder, _commit_into(gallery, queue), "thread",
                       indexed=gallery.store.count_footage)
    log.info("worker %s taking footage jobs from %s", name, queue.path)
    try:
        return work(queue, runner, name, stop or threading.Event(), max_jobs, transient=(sqlite3.Error,))
    finally:
        gallery.close()
        embedder.close()


# ----------------------------------------------------------------------------- REID_QUEUE=redis
def _redis_queue(settings: Any) -> Any:
    from reid.jobs.redis_queue import RedisJobQueue

    return RedisJobQueue(settings.redis.url, settings.redis.prefix, settings.job.lease_s)


def install_redis(app: Any, settings: Any) -> Any:
    """Uploads become Redis jobs, a consumer thread commits the workers' tracklet batches to the
    app's gallery, readiness and metrics report the queue."""
    from reid.jobs.redis_queue import ResultConsumer, TrackletBatch, redact
    from reid.service.records import gallery_entries

    queue = _redis_queue(settings)

    def commit(batch: TrackletBatch) -> int:
        entries = gallery_entries(batch)
        return len(app.state.gallery.add_records(entries, unless_footage=batch.footage_id)) if entries else 0

    consumer = ResultConsumer(queue, commit, model_id=lambda: app.state.gallery.info.model_id)

    def queue_status(detail: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": "redis", "url": redact(settings.redis.url), "ok": queue.ping()}
        if out["ok"]:
            try:
                out["depth"] = queue.depth()
                out["pending_results"] = queue.pending_results()
                if detail:
                    out["jobs"] = queue.counts()
            except queue.redis_error as e:
                out.update(ok=False, error=str(e))
        return out

    app.state.job_queue = queue
    app.state.submit_video = _submitter(settings, queue, Path(settings.data_dir))
    app.state.queue_status = queue_status
    app.state.on_ready.append(lambda _app: consumer.start())
    app.state.on_shutdown.append(lambda _app: consumer.stop())
    return queue


def check_redis_worker(settings: Any) -> list[str]:
    """Problems that stop a Redis worker from working (empty = healthy): `reid worker --check`."""
    from reid.jobs.redis_queue import redact
    from reid.service.embedder import ModelError, resolve_model

    problems = []
    try:
        resolve_model(settings.model)
    except ModelError as e:
        problems.append(str(e))
    if not _redis_queue(settings).ping():
        problems.append(f"Redis unreachable at {redact(settings.redis.url)} (REID_REDIS_URL)")
    return problems


def run_redis_worker(settings: Any, worker_id: str | None = None, stop: threading.Event | None = None,
                     max_jobs: int | None = None) -> int:
    """`reid worker` with REID_QUEUE=redis: claim jobs until ``stop``; each job's tracklets go to the
    API as one :class:`~reid.jobs.redis_queue.TrackletBatch`, then ``finish``."""
    import socket

    from reid.jobs.redis_queue import QueueUnavailable, TrackletBatch, redact
    from reid.service.embedder import Embedder

    queue = _redis_queue(settings)
    if not queue.ping():
        raise QueueUnavailable(f"Redis unreachable at {redact(settings.redis.url)} (REID_REDIS_URL)")
    worker = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    embedder = Embedder(settings)

    def deliver(job: Job, res: FootageResult) -> None:
        t0 = time.perf_counter()
        if res.vectors:
            queue.send_batch(TrackletBatch(job.id, embedder.info.model_id, res.footage_id, res.job, res.tracklets,
                                           res.vectors))
        queue.finish(job.id, {**res.stats(), "worker": worker})
        log.info("job %s: %d tracklets sent in %.1fs", job.id, len(res.vectors), time.perf_counter() - t0,
                 extra={"job_id": job.id})

    log.info("worker %s ready: model %s, queue %s", worker, embedder.info.describe(), redact(settings.redis.url),
             extra={"worker": worker})
    try:
        runner = JobRunner(queue, settings, embedder, deliver, "thread")
        return work(queue, runner, worker, stop or threading.Event(), max_jobs, transient=(queue.redis_error,))
    finally:
        embedder.close()
