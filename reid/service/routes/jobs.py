"""Footage job endpoints: list, status, cancel (jobs are created by POST /gallery with a video)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from reid.jobs.model import Job
from reid.service.routes.deps import JobsDep, SettingsDep, require_key
from reid.service.schemas import ERROR_RESPONSES, JobState, Offset
from reid.service.uploads import BadInput

JobId = Annotated[str, PathParam(min_length=1, max_length=128, description="job id from POST /gallery")]
router = APIRouter(tags=["jobs"], dependencies=[Depends(require_key)], responses=ERROR_RESPONSES)


class JobOut(BaseModel):
    id: str
    state: JobState
    kind: str = "footage"
    camera: str | None = None
    filename: str | None = None
    start: datetime | None = Field(None, description="time of the footage's first frame")
    progress: float = Field(0.0, description="fraction of frames processed, 0…1")
    frames_done: int | None = None
    frames_total: int | None = None
    fps: float | None = Field(None, description="footage frames processed per second")
    realtime: float | None = Field(None, description="footage seconds processed per wall-clock second")
    tracklets: int | None = Field(None, description="tracklets found so far (indexed, once done)")
    already_indexed: bool = Field(False, description="the same footage (content hash) was indexed before")
    errors: list[str] = Field(default_factory=list)
    result: dict[str, Any] = Field(default_factory=dict)
    created: datetime | None = None
    started: datetime | None = None
    finished: datetime | None = None
    attempts: int | None = None


class JobList(BaseModel):
    jobs: list[JobOut]
    total: int


def _dt(ts: float | None) -> datetime | None:
    return datetime.fromtimestamp(ts, timezone.utc) if ts is not None else None


def job_out(j: Job) -> JobOut:
    p, r = j.params, j.result
    return JobOut(
        id=j.id, state=j.state, kind=j.kind, camera=p.camera or None, filename=p.filename, start=_dt(p.start),
        progress=j.progress, frames_done=r.get("frames_done"), frames_total=r.get("frames_total"), fps=r.get("fps"),
        realtime=r.get("realtime"), tracklets=r.get("tracklets"), already_indexed=bool(r.get("already_indexed")),
        errors=list(j.errors), result={k: v for k, v in r.items() if k != "item_ids"},
        created=_dt(j.created), started=_dt(j.started), finished=_dt(j.finished), attempts=j.attempts,
    )


@router.get("/jobs", response_model=JobList)
def list_jobs(
    q: JobsDep,
    state: Annotated[JobState | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> JobList:
    """Footage jobs, newest first."""
    jobs = q.list(limit=limit, offset=offset, state=state)
    total = q.total(state)
    return JobList(jobs=[job_out(j) for j in jobs], total=total)


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(q: JobsDep, job_id: JobId) -> JobOut:
    """State, progress (frames done / total, fps), tracklets found and errors of one job."""
    j = q.get(job_id)
    if j is None:
        raise BadInput(f"job {job_id} not found", 404)
    return job_out(j)


@router.delete("/jobs/{job_id}", response_model=JobOut)
def cancel_job(q: JobsDep, settings: SettingsDep, job_id: JobId) -> JobOut:
    """Cancel a queued or running job (nothing of it gets indexed); a finished job is left as it is."""
    before = q.get(job_id)
    if before is None:
        raise BadInput(f"job {job_id} not found", 404)
    q.cancel(job_id)
    j = q.get(job_id)
    assert j is not None
    if before.state == "queued" and j.state == "cancelled":
        _drop_upload(settings, j)  # no worker will ever open it (a running job's worker cleans up itself)
    return job_out(j)


def _drop_upload(settings: Any, job: Job) -> None:
    if job.params.delete_after and job.params.path:
        job.params.local_path(settings.data_dir).unlink(missing_ok=True)
