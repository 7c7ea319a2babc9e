"""Liveness, readiness and Prometheus metrics (health needs no API key)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from reid.ingest.detect import describe_detector
from reid.service.routes.deps import require_key
from reid.service.schemas import Error, Ready

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready,
            responses={503: {"description": "not ready (starting, or the job queue is unreachable)"}})
def readyz(request: Request):
    """The model is loaded and the index agrees with the database."""
    g = getattr(request.app.state, "gallery", None)
    if g is None or not getattr(request.app.state, "ready", False):
        return JSONResponse({"status": "starting"}, status_code=503)
    g.index.sync(g.store)
    info = g.info
    n = g.count()
    # The footage job queue (Redis in the compose deployment) must be reachable too.
    queue_status = getattr(request.app.state, "queue_status", None)
    queue = queue_status() if queue_status is not None else None
    if queue is not None and not queue.get("ok", False):
        return JSONResponse({"status": "queue unreachable", "queue": queue}, status_code=503)
    return Ready(
        queue=queue,
        status="ready",
        items=n,
        index_size=g.index.ntotal,
        model_id=info.model_id,
        model=str(info.image_path),
        precision=info.precision,
        dim=info.dim,
        index=g.index.factory,
        exact=g.index.exact,
        providers=info.providers,
        detector=describe_detector(g.settings.detector.name),
        rerankers=["none", "can"] if g.pair is not None else ["none"],
    )


@router.get("/metrics", response_class=PlainTextResponse, responses={
    200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format"},
    401: {"model": Error, "description": "missing or invalid API key"}})
def metrics(request: Request) -> Response:
    """Prometheus metrics (needs the API key unless REID_METRICS_PUBLIC=true)."""
    if not request.app.state.settings.metrics_public:
        require_key(request)
    m = request.app.state.metrics
    g = getattr(request.app.state, "gallery", None)
    if g is not None:
        m.index_size.set(g.index.ntotal)
        m.items.set(g.count())
    queue_status = getattr(request.app.state, "queue_status", None)
    if queue_status is not None:
        q = queue_status(detail=True)
        if q.get("depth") is not None:
            m.queue_depth.set(q["depth"])
        for state, n in (q.get("jobs") or {}).items():
            m.jobs.labels(state).set(n)
        if q.get("pending_results") is not None:
            m.pending_results.set(q["pending_results"])
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)
