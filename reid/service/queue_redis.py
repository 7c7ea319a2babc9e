"""Redis-backed footage job queue, for the compose deployment (API + separate workers).

Who writes what (the coordination rule, see docs/deploy.md):
- The API process is the only writer of the index and the metadata store. It saves an uploaded
  video under the shared data directory and submits a job here.
- A worker (``reid worker``) claims the job, decodes/detects/tracks/embeds, and sends every
  gallery write it would have made as a message on a Redis results list instead of touching the
  index. Progress, errors and the final state live in the job's Redis record.
- The API's :class:`ResultConsumer` thread pops those messages and applies them to the real
  gallery, then marks the job done. A crash between "worker finished" and "API applied" leaves the
  messages in Redis, so nothing is lost; a worker that dies mid-job loses its lease and the job
  goes back to the queue.

Keys (prefix ``reid`` by default): ``job:{id}`` (JSON record), ``jobs`` (zset by creation time),
``queue`` (pending ids), ``processing`` (claimed ids), ``lease:{id}`` (worker heartbeat, TTL),
``results`` (write messages for the API), ``applying`` (taken by the API, not yet applied).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("done", "failed", "cancelled")


class QueueUnavailable(RuntimeError):
    """Redis cannot be reached (readiness reports it; submit turns it into a 503)."""


# ---------------------------------------------------------------- wire encoding (no pickle)
def encode(obj: Any) -> Any:
    """JSON-safe form of gallery-call arguments: ndarrays, bytes, paths, datetimes, dataclasses."""
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return {"__nd__": base64.b64encode(a.tobytes()).decode(), "dtype": a.dtype.str,
                "shape": list(a.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bytes | bytearray | memoryview):
        return {"__bytes__": base64.b64encode(bytes(obj)).decode()}
    if isinstance(obj, Path):
        return {"__path__": str(obj)}
    if isinstance(obj, datetime):
        return {"__dt__": obj.isoformat()}
    if isinstance(obj, date):
        return {"__date__": obj.isoformat()}
    if _is_crop(obj):  # person crops travel as JPEG (q95, what the gallery stores anyway), not raw pixels
        data = obj.data
        if data is None:
            import cv2

            ok, buf = cv2.imencode(".jpg", obj.bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise ValueError("cannot JPEG-encode a crop")
            data = buf.tobytes()
        return {"__crop__": base64.b64encode(data).decode(),
                "ext": obj.ext if obj.data is not None else ".jpg"}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        return {"__dc__": f"{cls.__module__}:{cls.__qualname__}",
                "fields": {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, dict):
        return {"__map__": [[encode(k), encode(v)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v) for v in obj]}
    if isinstance(obj, list):
        return [encode(v) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if hasattr(obj, "model_dump"):  # pydantic model
        return encode(obj.model_dump())
    raise TypeError(f"cannot send {type(obj).__name__} through the job queue")


_ALLOWED_DC_MODULES = ("reid.service.", "reid.models.preprocess")


def decode(obj: Any) -> Any:
    """Inverse of :func:`encode`. Dataclasses are rebuilt only from the service's own modules."""
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__nd__" in obj:
        buf = base64.b64decode(obj["__nd__"])
        return np.frombuffer(buf, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    if "__bytes__" in obj:
        return base64.b64decode(obj["__bytes__"])
    if "__crop__" in obj:
        import cv2

        from reid.service.gallery import Crop

        data = base64.b64decode(obj["__crop__"])
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError("a crop in a queue message is not a decodable image")
        return Crop(bgr=bgr, data=data, ext=obj.get("ext") or ".jpg")
    if "__path__" in obj:
        return Path(obj["__path__"])
    if "__dt__" in obj:
        return datetime.fromisoformat(obj["__dt__"])
    if "__date__" in obj:
        return date.fromisoformat(obj["__date__"])
    if "__tuple__" in obj:
        return tuple(decode(v) for v in obj["__tuple__"])
    if "__map__" in obj:
        return {_hashable(decode(k)): decode(v) for k, v in obj["__map__"]}
    if "__dc__" in obj:
        mod_name, _, qual = obj["__dc__"].partition(":")
        if not mod_name.startswith(_ALLOWED_DC_MODULES):
            raise ValueError(f"refusing to build {obj['__dc__']} from a queue message")
        import importlib

        cls: Any = importlib.import_module(mod_name)
        for part in qual.split("."):
            cls = getattr(cls, part)
        return cls(**{k: decode(v) for k, v in obj["fields"].items()})
    return {k: decode(v) for k, v in obj.items()}


def _is_crop(obj: Any) -> bool:
    cls = type(obj)
    return cls.__name__ == "Crop" and cls.__module__ == "reid.service.gallery"


def _hashable(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


def _now() -> float:
    return time.time()


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
        self._redis_error: type[Exception] = redis.RedisError

    # keys
    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # ---- health / metrics
    def ping(self) -> bool:
        try:
            return bool(self.r.ping())
        except self._redis_error:
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
        out = {s: 0 for s in (*ACTIVE_STATES, *FINAL_STATES)}
        for job in self.list(limit=10_000):
            out[job["state"]] = out.get(job["state"], 0) + 1
        return out

    # ---- API side
    def submit(self, kind: str, params: dict[str, Any], job_id: str | None = None) -> dict[str, Any]:
        """Record a queued job and put it on the queue; returns the job record."""
        job_id = job_id or uuid.uuid4().hex[:16]
        now = _now()
        job = {"id": job_id, "kind": kind, "state": "queued", "params": params, "progress": 0.0,
               "errors": [], "result": {}, "created": now, "updated": now, "started": None,
               "finished": None, "worker": None}
        try:
            pipe = self.r.pipeline()
            pipe.set(self._k("job", job_id), json.dumps(job))
            pipe.zadd(self._k("jobs"), {job_id: now})
            pipe.lpush(self._k("queue"), job_id)
            pipe.execute()
        except self._redis_error as e:
            raise QueueUnavailable(f"job queue unreachable at {self.url}: {e}") from e
        return job

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self._k("job", job_id))
        return json.loads(raw) if raw else None

    def list(self, limit: int = 100, offset: int = 0, state: str | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        ids = self.r.zrevrange(self._k("jobs"), 0, -1 if state else offset + limit - 1)
        if not ids:
            return []
        raws = self.r.mget([self._k("job", i.decode() if isinstance(i, bytes) else i) for i in ids])
        jobs = [json.loads(x) for x in raws if x]
        if state:
            jobs = [j for j in jobs if j["state"] == state]
        return jobs[offset:offset + limit] if state else jobs[offset:]

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Queued jobs never start; a running job's worker sees the state and stops at its next check."""
        job = self._update(job_id, lambda j: j if j["state"] in FINAL_STATES else
                           {**j, "state": "cancelled", "finished": _now()})
        if job is not None:
            self.r.lrem(self._k("queue"), 0, job_id)
        return job

    def delete(self, job_id: str) -> bool:
        """Forget a finished job (and cancel it first if it is still active)."""
        self.cancel(job_id)
        pipe = self.r.pipeline()
        pipe.delete(self._k("job", job_id))
        pipe.zrem(self._k("jobs"), job_id)
        pipe.hdel(self._k("written"), job_id)
        return bool(pipe.execute()[0])

    # ---- worker side
    def claim(self, worker: str, timeout: float = 1.0) -> dict[str, Any] | None:
        """Block up to ``timeout`` s for a job; mark it running under this worker's lease."""
        self.requeue_expired()
        raw = self.r.blmove(self._k("queue"), self._k("processing"), timeout, "RIGHT", "LEFT")
        if raw is None:
            return None
        job_id = raw.decode() if isinstance(raw, bytes) else raw
        self.r.set(self._k("lease", job_id), worker, px=int(self.lease_seconds * 1000))
        job = self._update(job_id, lambda j: j if j["state"] != "queued" else
                           {**j, "state": "running", "worker": worker, "started": _now()})
        if job is None or job["state"] != "running" or job.get("worker") != worker:
            self.r.lrem(self._k("processing"), 0, job_id)  # cancelled or deleted while queued
            self.r.delete(self._k("lease", job_id))
            return None
        return job

    def heartbeat(self, job_id: str, worker: str) -> None:
        self.r.set(self._k("lease", job_id), worker, px=int(self.lease_seconds * 1000))

    def progress(self, job_id: str, fraction: float, **info: Any) -> bool:
        """Record progress; returns False when the job was cancelled (the worker should stop)."""
        job = self._update(job_id, lambda j: j if j["state"] != "running" else
                           {**j, "progress": max(0.0, min(1.0, float(fraction))),
                            "result": {**j.get("result", {}), **info}})
        return job is not None and job["state"] == "running"

    def add_error(self, job_id: str, message: str) -> None:
        """A non-fatal problem (a bad frame, an unreadable chunk): shown with the job."""
        self._update(job_id, lambda j: {**j, "errors": [*j.get("errors", []), message][-50:]})

    def send_write(self, job_id: str, method: str, *args: Any, _model_id: str | None = None,
                   **kwargs: Any) -> None:
        """Queue one gallery call (``gallery.<method>(*args, **kwargs)``) for the API to apply;
        ``_model_id`` names the model that made the vectors (the API refuses another model's)."""
        msg = {"job_id": job_id, "op": "call", "method": method, "args": encode(list(args)),
               "kwargs": encode(kwargs), "model_id": _model_id}
        self.r.rpush(self._k("results"), json.dumps(msg))

    def finish(self, job_id: str, result: dict[str, Any] | None = None) -> None:
        """Worker done: the job completes once the API has applied every write sent before this."""
        msg = {"job_id": job_id, "op": "finish", "result": encode(result or {})}
        pipe = self.r.pipeline()
        pipe.rpush(self._k("results"), json.dumps(msg))
        pipe.lrem(self._k("processing"), 0, job_id)
        pipe.delete(self._k("lease", job_id))
        pipe.execute()

    def fail(self, job_id: str, message: str) -> None:
        self._update(job_id, lambda j: {**j, "state": "failed", "finished": _now(),
                                        "errors": [*j.get("errors", []), message][-50:]})
        pipe = self.r.pipeline()
        pipe.lrem(self._k("processing"), 0, job_id)
        pipe.delete(self._k("lease", job_id))
        pipe.execute()

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
            if self.r.exists(self._k("lease", job_id)):
                continue
            if self.r.lrem(self._k("processing"), 1, job_id):
                job = self._update(job_id, lambda j: j if j["state"] != "running" else
                                   {**j, "state": "queued", "worker": None, "progress": 0.0,
                                    "errors": [*j.get("errors", []), "worker lost; job re-queued"]})
                if job is not None and job["state"] == "queued":
                    self.r.lpush(self._k("queue"), job_id)
                    n += 1
        return n

    # ---- API side: apply worker writes
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
        order. Re-applying is safe: footage writes use ``unless_footage`` (idempotent)."""
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

    def complete(self, job_id: str, result: dict[str, Any]) -> None:
        self._update(job_id, lambda j: j if j["state"] in ("failed", "cancelled") else
                     {**j, "state": "done", "progress": 1.0, "finished": _now(),
                      "result": {**j.get("result", {}), **result}})

    # ---- internals
    def _update(self, job_id: str, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
        """Optimistic read-modify-write of a job record (WATCH/MULTI), safe across processes."""
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
                    job = fn(json.loads(raw))
                    job["updated"] = _now()
                    pipe.multi()
                    pipe.set(key, json.dumps(job))
                    pipe.execute()
                    return job
                except redis.WatchError:
                    continue


class ResultConsumer:
    """API-side thread: apply worker writes to the one real gallery, then complete their jobs.

    ``apply(method, args, kwargs)`` performs one gallery call; the app passes a function that
    looks the method up on its gallery. A message that fails to apply fails its job (with the
    error shown) instead of being retried forever.
    """

    def __init__(self, queue: RedisJobQueue, apply: Callable[[str, list[Any], dict[str, Any]], Any],
                 on_applied: Callable[[str, int], None] | None = None,
                 model_id: Callable[[], str] | None = None) -> None:
        self.queue = queue
        self.apply = apply
        self.model_id = model_id
        self.on_applied = on_applied
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
            if msg["op"] == "call":
                job = self.queue.get(job_id)
                if job is not None and job["state"] == "cancelled":
                    return
                ours = self.model_id() if self.model_id is not None else None
                if ours and msg.get("model_id") and msg["model_id"] != ours:
                    raise ValueError(f"the worker embedded with model {msg['model_id']}, the gallery holds "
                                     f"model {ours}: give workers and API the same REID_MODEL")
                out = self.apply(msg["method"], decode(msg["args"]), decode(msg["kwargs"]))
                added = len(out) if isinstance(out, list) else 1
                self.queue.count_written(job_id, added)
                if self.on_applied is not None:
                    self.on_applied(job_id, 1)
            elif msg["op"] == "finish":
                result = decode(msg.get("result") or {})
                added = self.queue.pop_written(job_id)
                result["items_indexed"] = added
                if result.get("tracklets") and not added:  # add_records(unless_footage=...) said no
                    result["already_indexed"] = True
                self.queue.complete(job_id, result)
        except Exception as e:
            log.exception("applying worker result for job %s failed", job_id)
            self.queue.fail(job_id, f"indexing failed in the API: {type(e).__name__}: {e}")


# ---------------------------------------------------------------- API wiring (REID_QUEUE=redis)
def install_api(app: Any, settings: Any) -> RedisJobQueue:
    """Make an app use Redis for footage jobs: uploads become Redis jobs, a consumer thread applies
    the workers' writes to the app's gallery, readiness and metrics report the queue."""
    queue = RedisJobQueue(settings.redis_url, settings.redis_prefix, settings.worker_lease_s)
    app.state.job_queue = queue
    data_dir = Path(settings.data_dir)

    async def submit_video(path: Path, filename: str | None, camera: str, timestamp: float | None,
                           meta: dict[str, Any] | None, fps: float | None = None, request_id: str | None = None,
                           **_: Any) -> str:
        from fastapi.concurrency import run_in_threadpool

        from reid.ingest.decode import FootageError
        from reid.service.jobs import check_footage, footage_params
        from reid.service.uploads import BadInput

        try:  # refuse undecodable footage now (4xx), like the embedded queue does
            await run_in_threadpool(check_footage, Path(path), settings, filename)
        except FootageError:
            Path(path).unlink(missing_ok=True)
            raise
        # Relative to the data dir: workers mount the same volume, maybe at another path.
        rel = Path(path).resolve().relative_to(data_dir.resolve())
        params = footage_params(rel, camera, timestamp, filename, meta, fps=fps, request_id=request_id)
        try:
            job = await run_in_threadpool(queue.submit, "footage", params)
        except QueueUnavailable as e:
            Path(path).unlink(missing_ok=True)
            raise BadInput(str(e), 503) from e
        log.info("footage job %s queued for %s", job["id"], filename, extra={"job_id": job["id"]})
        return str(job["id"])

    def queue_status(detail: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": "redis", "url": _redact(settings.redis_url), "ok": queue.ping()}
        if out["ok"]:
            try:
                out["depth"] = queue.depth()
                out["pending_results"] = queue.pending_results()
                if detail:
                    out["jobs"] = queue.counts()
            except queue._redis_error as e:
                out.update(ok=False, error=str(e))
        return out

    def apply(method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if method not in WRITE_METHODS:
            raise ValueError(f"workers may not call gallery.{method}")
        return getattr(app.state.gallery, method)(*args, **kwargs)

    consumer = ResultConsumer(queue, apply, model_id=lambda: app.state.gallery.info.model_id)

    app.state.submit_video = submit_video
    app.state.queue_status = queue_status
    app.state.on_ready.append(lambda _app: consumer.start())
    app.state.on_shutdown.append(lambda _app: consumer.stop())
    return queue


#: gallery methods a worker may ask the API to run (the write half of the Gallery API)
WRITE_METHODS = frozenset({"add_tracklet", "add_images", "add_records"})


def _redact(url: str) -> str:
    """redis://user:password@host → redis://user:***@host (for /readyz)."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    cred, host = rest.rsplit("@", 1)
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


class RemoteGallery:
    """What a worker hands the footage pipeline instead of a Gallery: writes go to the API via
    Redis, reads are answered from the model info only (a worker has no index)."""

    def __init__(self, queue: RedisJobQueue, job_id: str, info: Any, settings: Any) -> None:
        self.queue = queue
        self.job_id = job_id
        self.info = info
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.sent = 0

    def _send(self, method: str, *args: Any, **kwargs: Any) -> None:
        self.queue.send_write(self.job_id, method, *args, _model_id=getattr(self.info, "model_id", None),
                              **kwargs)
        self.sent += 1

    def add_tracklet(self, *args: Any, **kwargs: Any) -> None:
        self._send("add_tracklet", *args, **kwargs)

    def add_images(self, *args: Any, **kwargs: Any) -> None:
        self._send("add_images", *args, **kwargs)

    def add_records(self, *args: Any, **kwargs: Any) -> None:
        self._send("add_records", *args, **kwargs)


# ---------------------------------------------------------------- the worker (`reid worker`)
class _Heartbeat:
    """Refresh a job's lease in the background while the worker is busy with it."""

    def __init__(self, queue: RedisJobQueue, job_id: str, worker: str) -> None:
        self.queue, self.job_id, self.worker = queue, job_id, worker
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)

    def _run(self) -> None:
        period = max(0.05, self.queue.lease_seconds / 3)
        while not self._stop.wait(period):
            try:
                self.queue.heartbeat(self.job_id, self.worker)
            except Exception as e:  # Redis blip: the next beat may work; the lease has slack
                log.warning("lease refresh for job %s failed: %s", self.job_id, e)

    def __enter__(self) -> _Heartbeat:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(5)


def default_worker_id() -> str:
    import os
    import socket

    return f"{socket.gethostname()}-{os.getpid()}"


def check_worker(settings: Any) -> list[str]:
    """Problems that stop this worker from working (empty = healthy): `reid worker --check`."""
    from reid.service.embedder import ModelError, resolve_model

    problems = []
    try:
        resolve_model(settings.model)
    except ModelError as e:
        problems.append(str(e))
    queue = RedisJobQueue(settings.redis_url, settings.redis_prefix, settings.worker_lease_s)
    if not queue.ping():
        problems.append(f"Redis unreachable at {_redact(settings.redis_url)} (REID_REDIS_URL)")
    return problems


def run_worker(settings: Any, worker_id: str | None = None, stop: threading.Event | None = None,
               max_jobs: int | None = None) -> int:
    """Claim footage jobs from Redis until ``stop`` is set (or ``max_jobs`` ran); returns jobs run."""
    from reid.service.embedder import Embedder

    queue = RedisJobQueue(settings.redis_url, settings.redis_prefix, settings.worker_lease_s)
    if not queue.ping():
        raise QueueUnavailable(f"Redis unreachable at {_redact(settings.redis_url)} (REID_REDIS_URL)")
    worker = worker_id or default_worker_id()
    stop = stop or threading.Event()
    embedder = Embedder(settings)
    log.info("worker %s ready: model %s, queue %s", worker, embedder.info.describe(),
             _redact(settings.redis_url), extra={"worker": worker})
    done = 0
    try:
        while not stop.is_set() and (max_jobs is None or done < max_jobs):
            try:
                job = queue.claim(worker, timeout=1.0)
            except queue._redis_error as e:
                log.warning("cannot reach Redis (%s); retrying", e)
                stop.wait(2.0)
                continue
            if job is None:
                continue
            run_job(queue, job, embedder, settings, worker)
            done += 1
    finally:
        embedder.close()
    return done


def run_job(queue: RedisJobQueue, job: dict[str, Any], embedder: Any, settings: Any, worker: str) -> None:
    """Process one claimed job with the footage pipeline (``reid.service.jobs.process_job``, the same code
    the embedded runner uses) and send its tracklets to the API as ONE
    ``add_records(entries, unless_footage=<content hash>)`` call, so a job's tracklets are indexed
    together or not at all and footage indexed before is not doubled. Every outcome ends in
    finish (→ ``done`` once the API applied it), fail, or cancel."""
    from reid.service.jobs import process_job
    from reid.service.logging import request_id_var

    job_id = job["id"]
    params = dict(job.get("params") or {})
    token = request_id_var.set(params.get("request_id") or job_id)
    t0 = time.perf_counter()
    log.info("job %s: start %s", job_id, params.get("filename"), extra={"job_id": job_id, "worker": worker})
    try:
        path = Path(params["path"])
        if not path.is_absolute():  # relative to the data volume, wherever this worker mounts it
            path = Path(settings.data_dir) / path
        if not path.is_file():
            queue.fail(job_id, f"{params.get('filename') or path.name}: not found under this worker's "
                               f"REID_DATA_DIR ({settings.data_dir}); mount the API's data volume")
            return
        params["path"] = str(path)
        with _Heartbeat(queue, job_id, worker):
            res = process_job({**job, "params": params}, queue, settings, embedder.embed_tracklet, worker)
        if res is None:  # failed (recorded by process_job) or cancelled
            queue.release(job_id)
        else:
            from reid.service.records import gallery_entries

            sink = RemoteGallery(queue, job_id, embedder.info, settings)
            entries = gallery_entries(res)
            if entries:
                sink.add_records(entries, unless_footage=res.footage_id)
            stats = {**res.stats(), "worker": worker, "wall_seconds": round(time.perf_counter() - t0, 2)}
            queue.finish(job_id, stats)
            log.info("job %s: %d tracklets sent in %.1fs", job_id, len(entries), time.perf_counter() - t0,
                     extra={"job_id": job_id})
        final = queue.get(job_id)
        if params.get("delete_after") and (res is not None or (final and final["state"] in FINAL_STATES)):
            path.unlink(missing_ok=True)  # the crops are kept with the items; the upload is not needed
    except Exception as e:
        log.exception("job %s failed", job_id, extra={"job_id": job_id})
        queue.fail(job_id, f"worker error: {type(e).__name__}: {e}")
    finally:
        request_id_var.reset(token)
