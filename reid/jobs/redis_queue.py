"""The Redis job queue, for the compose deployment (API + separate workers).

Who writes what (the coordination rule, see docs/deploy.md):
- The API process is the only writer of the index and the metadata store. It saves an uploaded
  video under the shared data directory and submits a job here.
- A worker (``reid worker``) claims the job, decodes/detects/tracks/embeds, and sends the job's
  tracklets as ONE :class:`TrackletBatch` message on a Redis results list instead of touching the
  gallery. Progress, errors and the final state live in the job's Redis record.
- The API's :class:`ResultConsumer` thread pops those messages and commits each batch to the real
  gallery, then marks the job done. A crash between "worker finished" and "API applied" leaves the
  messages in Redis, so nothing is lost; a worker that dies mid-job loses its lease and the job
  goes back to the queue.

Keys (prefix ``reid`` by default): ``job:{id}`` (JSON record), ``jobs`` (zset by creation time),
``queue`` (pending ids), ``processing`` (claimed ids), ``lease:{id}`` (worker heartbeat, TTL),
``results`` (messages for the API), ``applying`` (taken by the API, not yet applied), ``written``
(items the API indexed per job).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reid.ingest.pipeline import FootageJob
from reid.ingest.tracklets import Tracklet
from reid.jobs.model import STATES, FootageParams, Job, new_job

log = logging.getLogger(__name__)


class QueueUnavailable(RuntimeError):
    """Redis cannot be reached (readiness reports it; submit turns it into a 503)."""


# ---------------------------------------------------------------- the one message a worker sends
@dataclass
class EncodedCrop:
    """A person crop as it travels: JPEG bytes (q95, what the gallery stores anyway) + pixels."""

    bgr: np.ndarray
    data: bytes
    ext: str = ".jpg"


@dataclass
class TrackletBatch:
    """A finished job's tracklets with their vectors: what the API commits in one transaction
    (``unless_footage``: footage indexed before is not doubled). JSON on the wire, no pickle."""

    job_id: str
    model_id: str | None
    footage_id: str
    job: FootageJob
    tracklets: list[Tracklet]
    vectors: list[np.ndarray]

    def to_json(self) -> str:
        import cv2

        def crop(c: Any) -> str:
            if isinstance(c, EncodedCrop):
                return base64.b64encode(c.data).decode()
            ok, buf = cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise ValueError("cannot JPEG-encode a crop")
            return base64.b64encode(buf.tobytes()).decode()

        images = ("crops", "scene")
        tracklets = [{**{f.name: getattr(t, f.name) for f in dataclasses.fields(t) if f.name not in images},
                      "crops": [crop(c) for c in t.crops], "scene": crop(t.scene) if t.scene is not None else None}
                     for t in self.tracklets]
        job = {**dataclasses.asdict(self.job), "path": str(self.job.path)}
        vectors = [base64.b64encode(np.asarray(v, "<f4").tobytes()).decode() for v in self.vectors]
        return json.dumps({"op": "tracklets", "job_id": self.job_id, "model_id": self.model_id,
                           "footage_id": self.footage_id, "job": job, "tracklets": tracklets, "vectors": vectors})

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> TrackletBatch:
        import cv2

        def crop(b64: str) -> EncodedCrop:
            data = base64.b64decode(b64)
            bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError("a crop in a tracklet batch is not a decodable image")
            return EncodedCrop(bgr, data)

        tracklets = [Tracklet(**{**t, "crops": [crop(c) for c in t["crops"]],
                                 "scene": crop(t["scene"]) if t.get("scene") else None}) for t in msg["tracklets"]]
        vectors = [np.frombuffer(base64.b64decode(v), "<f4").copy() for v in msg["vectors"]]
        job = FootageJob(**{**msg["job"], "path": Path(msg["job"]["path"])})
        return cls(msg["job_id"], msg.get("model_id"), msg["footage_id"], job, tracklets, vectors)


# ---------------------------------------------------------------- the queue
class RedisJobQueue:
    """Job records, pending queue, worker leases and the worker→API results channel in Redis."""

    def __init__(self, url: str, prefix: str = "reid", lease_seconds: float = 30.0,
                 client: Any | None = None) -> None:
        import redis  # optional dependency: only the compose deployment needs it

        self.url = url
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self.r = client or redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=None,
                                                health_check_interval=30)
        self.redis_error: type[Exception] = redis.RedisError

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # ---- health / metrics
    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except self.redis_error:
            return False

    def depth(self) -> int:
        """Jobs waiting for a worker."""
        return int(self.r.llen(self._k("queue")))

    def pending_results(self) -> int:
        """Worker messages the API has not applied yet."""
        return int(self.r.llen(self._k("results")))

    def total(self, state: str | None = None) -> int:
        if state is None:
            return int(self.r.zcard(self._k("jobs")))
        return self.counts().get(state, 0)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for job in self.list(limit=10_000):
            out[job.state] += 1
        return out

    # ---- API side
    def submit(self, params: FootageParams, job_id: str | None = None) -> Job:
        """Record a queued job and put it on the queue."""
        job = new_job(job_id or uuid.uuid4().hex[:16], params)
        try:
            pipe = self.r.pipeline()
            pipe.set(self._k("job", job.id), job.to_json())
            pipe.zadd(self._k("jobs"), {job.id: job.created})
            pipe.lpush(self._k("queue"), job.id)
            pipe.execute()
        except self.redis_error as e:
            raise QueueUnavailable(f"job queue unreachable at {self.url}: {e}") from e
        return job

    def get(self, job_id: str) -> Job | None:
        raw = self.r.get(self._k("job", job_id))
        return Job.from_json(raw) if raw else None

    def list(self, limit: int = 100, offset: int = 0, state: str | None = None) -> list[Job]:
        """Newest first."""
        ids = self.r.zrevrange(self._k("jobs"), 0, -1 if state else offset + limit - 1)
        if not ids:
            return []
        raws = self.r.mget([self._k("job", i.decode() if isinstance(i, bytes) else i) for i in ids])
        jobs = [Job.from_json(x) for x in raws if x]
        if state:
            return [j for j in jobs if j.state == state][offset:offset + limit]
        return jobs[offset:]

    def cancel(self, job_id: str) -> Job | None:
        """Queued jobs never start; a running job's worker sees the state and stops at its next check."""
        job = self._update(job_id, Job.cancelled)
        if job is not None:
            self.r.lrem(self._k("queue"), 0, job_id)
        return job

    # ---- worker side
    def claim(self, worker: str, timeout: float = 1.0) -> Job | None:
        """Block up to ``timeout`` s for a job; mark it running under this worker's lease."""
        self.requeue_expired()
        raw = self.r.blmove(self._k("queue"), self._k("processing"), timeout, "RIGHT", "LEFT")
        if raw is None:
            return None
        job_id = raw.decode() if isinstance(raw, bytes) else raw
        self.heartbeat(job_id, worker)
        job = self._update(job_id, lambda j: j.claimed(worker))
        if job is None or job.state != "running" or job.worker != worker:
            self.release(job_id)  # cancelled or deleted while queued
            return None
        return job

    def heartbeat(self, job_id: str, worker: str) -> None:
        self.r.set(self._k("lease", job_id), worker, px=int(self.lease_seconds * 1000))

    def progress(self, job_id: str, fraction: float, **info: Any) -> bool:
        """Record progress; returns False when the job was cancelled (the worker should stop)."""
        job = self._update(job_id, lambda j: j.progressed(fraction, **info))
        return job is not None and job.state == "running"

    def add_error(self, job_id: str, message: str) -> None:
        """A non-fatal problem (a bad frame, an unreadable chunk): shown with the job."""
        self._update(job_id, lambda j: j.with_error(message))

    def send_batch(self, batch: TrackletBatch) -> None:
        """The job's tracklets, for the API to commit."""
        self.r.rpush(self._k("results"), batch.to_json())

    def finish(self, job_id: str, result: dict[str, Any] | None = None) -> None:
        """Worker done: the job completes once the API has applied every batch sent before this."""
        pipe = self.r.pipeline()
        pipe.rpush(self._k("results"), json.dumps({"op": "finish", "job_id": job_id, "result": result or {}}))
        pipe.lrem(self._k("processing"), 0, job_id)
        pipe.delete(self._k("lease", job_id))
        pipe.execute()

    def fail(self, job_id: str, message: str) -> None:
        self._update(job_id, lambda j: j.failed(message))
        self.release(job_id)

    def complete(self, job_id: str, result: dict[str, Any]) -> None:
        self._update(job_id, lambda j: j.completed(result))

    def release(self, job_id: str) -> None:
        """The worker is done with a job it will not finish (failed or cancelled): drop its claim."""
        pipe = self.r.pipeline()
        pipe.lrem(self._k("processing"), 0, job_id)
        pipe.delete(self._k("lease", job_id))
        pipe.execute()

    def requeue_expired(self) -> int:
        """Put back jobs whose worker stopped heart-beating (crashed or was killed)."""
        n = 0
        for raw in self.r.lrange(self._k("processing"), 0, -1):
            job_id = raw.decode() if isinstance(raw, bytes) else raw
            if self.r.exists(self._k("lease", job_id)) or not self.r.lrem(self._k("processing"), 1, job_id):
                continue
            job = self._update(job_id, lambda j: j.requeued("worker lost; job re-queued"))
            if job is not None and job.state == "queued":
                self.r.lpush(self._k("queue"), job_id)
                n += 1
        return n

    # ---- API side: apply worker messages
    def pop_result(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """Next worker message, moved to the ``applying`` list until :meth:`ack` (so an API that dies
        while applying it gets it again at its next start: see :meth:`restore_unacked`)."""
        raw = self.r.blmove(self._k("results"), self._k("applying"), timeout, "LEFT", "RIGHT")
        if raw is None:
            return None
        msg = json.loads(raw)
        msg["_raw"] = raw
        return msg

    def ack(self, msg: dict[str, Any]) -> None:
        if "_raw" in msg:
            self.r.lrem(self._k("applying"), 1, msg["_raw"])

    def restore_unacked(self) -> int:
        """Put messages an earlier API process took but never finished applying back in front, in
        order. Re-applying is safe: batches commit with ``unless_footage`` (idempotent)."""
        n = 0
        while self.r.lmove(self._k("applying"), self._k("results"), "RIGHT", "LEFT") is not None:
            n += 1
        return n

    def count_written(self, job_id: str, n: int) -> None:
        """Items the API has written for a job so far (kept in Redis: survives an API restart)."""
        self.r.hincrby(self._k("written"), job_id, n)

    def pop_written(self, job_id: str) -> int:
        pipe = self.r.pipeline()
        pipe.hget(self._k("written"), job_id)
        pipe.hdel(self._k("written"), job_id)
        return int(pipe.execute()[0] or 0)

    # ---- internals
    def _update(self, job_id: str, transition: Callable[[Job], Job | None]) -> Job | None:
        """Optimistic read-modify-write of a job record (WATCH/MULTI), safe across processes; the job
        as it is afterwards (unchanged when the transition does not apply), None when missing."""
        import redis

        key = self._k("job", job_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        pipe.unwatch()
                        return None
                    job = Job.from_json(raw)
                    new = transition(job)
                    if new is None:
                        pipe.unwatch()
                        return job
                    pipe.multi()
                    pipe.set(key, new.to_json())
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue


class ResultConsumer:
    """API-side thread: commit workers' tracklet batches to the one real gallery, then complete
    their jobs. ``commit(batch) -> items added``; a batch that fails to commit fails its job (with
    the error shown) instead of being retried forever."""

    def __init__(self, queue: RedisJobQueue, commit: Callable[[TrackletBatch], int],
                 model_id: Callable[[], str] | None = None) -> None:
        self.queue = queue
        self.commit = commit
        self.model_id = model_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reid-result-consumer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            n = self.queue.restore_unacked()
            if n:
                log.warning("re-applying %d worker result(s) left unfinished by the previous API process", n)
        except Exception as e:
            log.warning("result consumer: %s", e)
        while not self._stop.is_set():
            try:
                msg = self.queue.pop_result(timeout=1.0)
            except Exception as e:  # Redis down: keep trying, readiness reports it
                log.warning("result consumer: %s", e)
                self._stop.wait(2.0)
                continue
            if msg is not None:
                self.handle(msg)
                try:
                    self.queue.ack(msg)
                except Exception as e:  # applied but not acked: it is applied again later (idempotent)
                    log.warning("result consumer: ack failed: %s", e)

    def handle(self, msg: dict[str, Any]) -> None:
        job_id = msg.get("job_id", "")
        try:
            if msg["op"] == "tracklets":
                job = self.queue.get(job_id)
                if job is not None and job.state == "cancelled":
                    return
                ours = self.model_id() if self.model_id is not None else None
                if ours and msg.get("model_id") and msg["model_id"] != ours:
                    raise ValueError(f"the worker embedded with model {msg['model_id']}, the gallery holds "
                                     f"model {ours}: give workers and API the same REID_MODEL")
                self.queue.count_written(job_id, self.commit(TrackletBatch.from_message(msg)))
            elif msg["op"] == "finish":
                result = dict(msg.get("result") or {})
                added = self.queue.pop_written(job_id)
                result["items_indexed"] = added
                if result.get("tracklets") and not added:  # the footage was indexed before
                    result["already_indexed"] = True
                self.queue.complete(job_id, result)
            else:
                raise ValueError(f"unknown message {msg['op']!r}")
        except Exception as e:
            log.exception("applying worker result for job %s failed", job_id)
            self.queue.fail(job_id, f"indexing failed in the API: {type(e).__name__}: {e}")


def redact(url: str) -> str:
    """redis://user:password@host → redis://user:***@host (for /readyz)."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    return f"{scheme}://{cred.split(':', 1)[0]}:***@{host}"
