"""One runner for both queues: a claimed job → the footage pipeline → its result delivered.

:class:`JobRunner` runs one claimed job (in a child process for crash isolation, or in this
thread), reports progress to the job's queue, and hands the finished :class:`FootageResult` to
``deliver`` (the embedded service commits it to its gallery; a Redis worker sends it to the API).
:func:`work` is the one worker loop: claim, run, repeat.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reid.ingest.pipeline import FootageJob, FootageResult
from reid.jobs.model import FINAL_STATES, Job

log = logging.getLogger(__name__)

Deliver = Callable[[Job, FootageResult], None]


def footage_job(job: Job, data_dir: Path) -> FootageJob:
    p = job.params
    return FootageJob(path=p.local_path(data_dir), camera=p.camera, start=p.start, fps=p.fps, source=p.filename,
                      meta=p.meta, footage_id=p.footage_id)


def run_pipeline(job: Job, queue: Any, settings: Any, embed_tracklet: Callable,
                 worker: str = "") -> FootageResult | None:
    """The footage pipeline for one claimed job, reporting progress to ``queue``; the result, or None
    when it was cancelled or failed (the job record says which)."""
    from reid.ingest.decode import FootageError
    from reid.ingest.detect import DetectorError
    from reid.ingest.pipeline import Cancelled, PipelineConfig, Progress, process_footage

    def report(p: Progress) -> bool:
        queue.heartbeat(job.id, worker)
        frac = p.frames_done / p.frames_total if p.frames_total else 0.0
        return bool(queue.progress(job.id, min(frac, 0.99), frames_done=p.frames_done, frames_total=p.frames_total,
                                   fps=round(p.fps, 1), tracklets=p.tracklets,
                                   realtime=round(p.realtime, 2) if p.realtime else None))

    try:
        res = process_footage(footage_job(job, settings.data_dir), PipelineConfig.from_settings(settings),
                              embed_tracklet, progress=report)
    except Cancelled:
        return None
    except (FootageError, DetectorError) as e:
        queue.fail(job.id, getattr(e, "message", str(e)))
        return None
    except MemoryError:
        queue.fail(job.id, "out of memory while processing this footage (frames too large?)")
        return None
    except Exception as e:  # a bug or an unexpected decoder error: the job fails, the service stays up
        log.exception("footage job %s failed", job.id)
        queue.fail(job.id, f"processing failed: {type(e).__name__}: {e}")
        return None
    for msg in res.errors:
        queue.add_error(job.id, msg)
    return res


class _Heartbeat:
    """Refresh a job's lease in the background while the runner is busy with it (Redis leases)."""

    def __init__(self, queue: Any, job_id: str, worker: str, period: float) -> None:
        self.queue, self.job_id, self.worker, self.period = queue, job_id, worker, period
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                self.queue.heartbeat(self.job_id, self.worker)
            except Exception as e:  # a blip: the next beat may work; the lease has slack
                log.warning("lease refresh for job %s failed: %s", self.job_id, e)

    def __enter__(self) -> _Heartbeat:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)


class _OrphanGuard:
    """The child's view of the queue: once the service that started it has died (SIGKILL), stop at
    the next progress report instead of racing the restarted service's own run of the job."""

    def __init__(self, queue: Any, ppid: int) -> None:
        self.queue, self.ppid = queue, ppid

    def progress(self, job_id: str, fraction: float, **info: Any) -> bool:
        return os.getppid() == self.ppid and self.queue.progress(job_id, fraction, **info)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)


def _child_main(settings_json: str, job_json: str, queue_path: str, conn: Any) -> None:
    """Child process: embed with its own model session, send the result back over ``conn``."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from reid.jobs.sqlite_queue import SqliteJobQueue
    from reid.service.embedder import Embedder
    from reid.service.settings import Settings

    settings = Settings(**json.loads(settings_json))
    queue = _OrphanGuard(SqliteJobQueue(queue_path), os.getppid())
    embedder = Embedder(settings)
    try:
        res = run_pipeline(Job.from_json(job_json), queue, settings, embedder.embed_tracklet, f"pid{os.getpid()}")
        conn.send(("result", res) if res is not None else ("none", None))
    finally:
        embedder.close()
        conn.close()


class JobRunner:
    """Runs claimed jobs: checks the upload, skips footage already indexed, runs the pipeline
    (``mode``: ``process`` = a child process per job, crash-isolated; ``thread`` = here), hands the
    result to ``deliver`` and removes the upload once the job is final."""

    def __init__(self, queue: Any, settings: Any, embedder: Any, deliver: Deliver, mode: str = "thread",
                 indexed: Callable[[str], int] | None = None) -> None:
        self.queue, self.settings, self.embedder, self.deliver = queue, settings, embedder, deliver
        self.mode, self.indexed = mode, indexed
        self.stopping = threading.Event()
        self._procs: dict[str, Any] = {}

    def run(self, job: Job, worker: str) -> None:
        """Run one claimed job; an unexpected crash fails the job (with the reason), not the worker."""
        from reid.service.logging import request_id_var

        token = request_id_var.set(job.params.request_id or job.id)
        delivered = False
        try:
            delivered = self._run(job, worker)
        except Exception as e:
            log.exception("footage job %s crashed", job.id)
            self.queue.fail(job.id, f"internal error: {type(e).__name__}: {e}")
        finally:
            request_id_var.reset(token)
            final = self.queue.get(job.id)
            if job.params.delete_after and (delivered or (final is not None and final.state in FINAL_STATES)):
                # the crops are kept with the items; the upload is not needed any more
                footage_job(job, self.settings.data_dir).path.unlink(missing_ok=True)

    def _run(self, job: Job, worker: str) -> bool:
        """True once the result was delivered."""
        import dataclasses

        from reid.ingest.decode import FootageError, content_hash

        path = footage_job(job, self.settings.data_dir).path
        try:
            fid = content_hash(path)
        except (OSError, FootageError) as e:
            self.queue.fail(job.id, f"{job.params.filename or path.name}: cannot read the uploaded footage "
                            f"under this worker's REID_DATA_DIR ({self.settings.data_dir}; mount the API's data "
                            f"volume): {e}")
            return False
        job = dataclasses.replace(job, params=dataclasses.replace(job.params, footage_id=fid))
        n = self.indexed(fid) if self.indexed is not None else 0
        if n:
            self.queue.complete(job.id, {"footage_id": fid, "tracklets": n, "already_indexed": True})
            return False
        log.info("job %s: start %s", job.id, job.params.filename, extra={"job_id": job.id, "worker": worker})
        lease = getattr(self.queue, "lease_seconds", None)  # only Redis claims expire
        with _Heartbeat(self.queue, job.id, worker, max(0.05, lease / 3)) if lease else contextlib.nullcontext():
            if self.mode == "process":
                res = self._run_child(job)
            else:
                res = run_pipeline(job, self.queue, self.settings, self.embedder.embed_tracklet, worker)
        current = self.queue.get(job.id)
        if res is None or current is None or current.state != "running":
            self.queue.release(job.id)
            return False  # failed, or cancelled while it ran: nothing is written
        self.deliver(job, res)
        return True

    def _run_child(self, job: Job) -> FootageResult | None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child_main, name=f"footage-job-{job.id}",
                           args=(self.settings.model_dump_json(), job.to_json(), str(self.queue.path), child),
                           daemon=True)
        proc.start()
        child.close()
        self._procs[job.id] = proc
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
                st = self.queue.get(job.id)
                if self.stopping.is_set() or (st is not None and st.state == "cancelled"):
                    proc.terminate()
                    proc.join(5)
                    return None
            proc.join(5)
            st = self.queue.get(job.id)
            if st is not None and st.state == "running":
                self.queue.fail(job.id, f"the footage worker process died (exit code {proc.exitcode}) while "
                                "decoding this file; it is probably corrupt or uses an unsupported codec")
            return None
        finally:
            self._procs.pop(job.id, None)
            parent.close()

    def stop(self) -> None:
        self.stopping.set()
        for p in list(self._procs.values()):
            if p.is_alive():
                p.terminate()


def work(queue: Any, runner: JobRunner, worker: str, stop: threading.Event, max_jobs: int | None = None,
         transient: tuple[type[Exception], ...] = (OSError,)) -> int:
    """The worker loop: claim a job, run it, repeat until ``stop`` (or ``max_jobs`` ran). A queue that
    is briefly unreachable (``transient`` errors) is retried every 2 s; returns the jobs run."""
    done = 0
    while not stop.is_set() and (max_jobs is None or done < max_jobs):
        try:
            job = queue.claim(worker, timeout=1.0)
        except transient as e:
            log.warning("job queue unavailable (%s); retrying", e)
            stop.wait(2.0)
            continue
        if job is not None:
            runner.run(job, worker)
            done += 1
    return done
