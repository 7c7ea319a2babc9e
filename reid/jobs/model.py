"""A footage job and the rules of its life, shared by both queues.

    queued ──claim──▶ running ──complete──▶ done
       │                 │ ├──fail──────▶ failed
       └──cancel──▶ cancelled ◀─cancel──┘ └──requeue (worker lost / crash)──▶ queued

Transitions are pure: each returns the new job, or None when it does not apply in the current
state (a finished job stays finished). The queues only store what they return.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

State = Literal["queued", "running", "done", "failed", "cancelled"]
ACTIVE_STATES: tuple[State, ...] = ("queued", "running")
FINAL_STATES: tuple[State, ...] = ("done", "failed", "cancelled")
STATES: tuple[State, ...] = (*ACTIVE_STATES, *FINAL_STATES)
MAX_ERRORS = 50  # kept per job (the newest)


@dataclass(frozen=True)
class FootageParams:
    """What a footage job is about. ``path`` is where the upload lies: absolute for the embedded
    queue, relative to the data dir for Redis (workers mount the volume elsewhere)."""

    path: str
    camera: str = ""
    start: float | None = None  # POSIX time of the first frame
    filename: str | None = None
    meta: dict[str, Any] | None = None
    fps: float | None = None
    delete_after: bool = True  # the upload is removed once the job is final
    request_id: str | None = None
    footage_id: str | None = None  # content hash, once known

    def local_path(self, data_dir: Path | str) -> Path:
        """Where this process finds the upload."""
        path = Path(self.path)
        return path if path.is_absolute() else Path(data_dir) / path


@dataclass(frozen=True)
class Job:
    id: str
    params: FootageParams
    kind: str = "footage"
    state: State = "queued"
    progress: float = 0.0
    errors: tuple[str, ...] = ()
    result: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0
    started: float | None = None
    finished: float | None = None
    worker: str | None = None
    attempts: int = 0

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def _with(self, **changes: Any) -> Job:
        return dataclasses.replace(self, updated=time.time(), **changes)

    # --- transitions -------------------------------------------------------------------------------
    def claimed(self, worker: str) -> Job | None:
        if self.state != "queued":
            return None
        return self._with(state="running", worker=worker, started=time.time(), attempts=self.attempts + 1)

    def progressed(self, fraction: float, **info: Any) -> Job | None:
        if self.state != "running":
            return None
        return self._with(progress=max(0.0, min(1.0, float(fraction))), result={**self.result, **info})

    def with_error(self, message: str) -> Job:
        return self._with(errors=(*self.errors, message)[-MAX_ERRORS:])

    def failed(self, message: str) -> Job | None:
        if self.final:
            return None
        return self._with(state="failed", finished=time.time(), errors=(*self.errors, message)[-MAX_ERRORS:])

    def cancelled(self) -> Job | None:
        if self.final:
            return None
        return self._with(state="cancelled", finished=time.time())

    def completed(self, result: dict[str, Any]) -> Job | None:
        if self.state in ("failed", "cancelled"):
            return None
        return self._with(state="done", progress=1.0, finished=time.time(), result={**self.result, **result})

    def requeued(self, reason: str) -> Job | None:
        """Its worker is gone (lost lease, crash): run it again from the start."""
        if self.state != "running":
            return None
        return self._with(state="queued", worker=None, progress=0.0, errors=(*self.errors, reason)[-MAX_ERRORS:])

    def recovered(self, max_attempts: int) -> Job | None:
        """At start-up, for a job the last process left running: again, or failed once its attempts
        are used up (its tracklets commit at the end, so nothing of it is half-indexed)."""
        if self.state != "running":
            return None
        if self.attempts >= max_attempts:
            return self.failed(f"interrupted by a restart or crash {self.attempts} time(s); giving up (nothing "
                               "of it was indexed); re-submit the footage to try again")
        return self.requeued("interrupted by a restart or crash; running it again from the start")

    # --- storage form ------------------------------------------------------------------------------
    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["errors"] = list(self.errors)
        return json.dumps(d)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Job:
        d = json.loads(raw)
        return cls(**{**d, "params": FootageParams(**d["params"]), "errors": tuple(d.get("errors") or ())})


def new_job(job_id: str, params: FootageParams) -> Job:
    now = time.time()
    return Job(id=job_id, params=params, created=now, updated=now)
