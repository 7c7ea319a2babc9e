"""App factory: ``create_app(settings)`` wires the embedder, the gallery, the routers, metrics,
request ids, the upload size limit and (when reid/service/web exists) the web UI at "/".

Run with ``reid serve`` or ``uvicorn service.app:create_app --factory``.
Hooks for other parts: ``app.state.submit_video`` (footage jobs, see routes/gallery.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from reid import __version__
from reid.ingest.detect import describe_detector
from reid.service.embedder import Embedder
from reid.service.errors import install_error_handlers
from reid.service.gallery import Gallery, ModelMismatch
from reid.service.index_milvus import MilvusUnavailable
from reid.service.logging import RequestIdMiddleware
from reid.service.metrics import Metrics
from reid.service.routes import docs as docs_routes
from reid.service.routes import gallery as gallery_routes
from reid.service.routes import health as health_routes
from reid.service.routes import jobs as jobs_routes
from reid.service.routes import query as query_routes
from reid.service.settings import Settings
from reid.service.uploads import BadInput

log = logging.getLogger("reid.service")
WEB_DIR = Path(__file__).resolve().parent / "web"


class BodyLimit:
    """Refuse request bodies over the limit with 413 (by Content-Length, and while streaming).
    ``big_paths`` (footage uploads) get ``big_bytes``; image uploads are also capped per request in
    routes/deps.read_files."""

    def __init__(self, app, max_bytes: int, big_bytes: int = 0, big_paths: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.big_bytes = max(big_bytes, max_bytes)
        self.big_paths = big_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.big_bytes if scope.get("path") in self.big_paths else self.max_bytes
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _json(send, 413, f"request body is larger than the limit of {limit} bytes")
            return
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise BadInput(f"request body is larger than the limit of {limit} bytes", 413)
            return msg

        await self.app(scope, limited, send)


async def _json(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail, "errors": None}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        embedder = Embedder(settings, on_batch=metrics.batch.observe)
        try:
            gallery = Gallery(settings, embedder)
        except (ModelMismatch, MilvusUnavailable) as e:
            log.error("%s", e)
            embedder.close()
            raise
        app.state.embedder, app.state.gallery = embedder, gallery
        log.info("footage detector: %s", describe_detector(settings.detector.name))
        for hook in app.state.on_ready:  # e.g. the Redis result consumer (reid/service/footage_jobs.py)
            hook(app)
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            for hook in app.state.on_shutdown:
                hook(app)
            gallery.close()
            embedder.close()

    app = FastAPI(
        title="reid search",
        version=__version__,
        lifespan=lifespan,
        description="Person re-identification search: index people once, search many times.",
        openapi_url=None, docs_url=None, redoc_url=None,  # served below, behind the API key
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.ready = False
    app.state.submit_video = None  # set by the footage worker: see routes/gallery.py
    app.state.on_ready, app.state.on_shutdown = [], []  # callables(app), run inside the lifespan
    app.state.queue_status = None  # callable -> {"backend", "ok", ...}; /readyz and /metrics use it
    if settings.queue == "redis":  # separate `reid worker` processes; the API stays the only writer
        from reid.service.footage_jobs import install_redis

        install_redis(app, settings)
    else:  # embedded: jobs in SQLite under the data dir, run by this process
        from reid.service.footage_jobs import install_embedded

        install_embedded(app, settings)

    install_error_handlers(app)

    app.include_router(health_routes.router)
    app.include_router(docs_routes.router)
    app.include_router(gallery_routes.router)
    app.include_router(query_routes.router)
    app.include_router(jobs_routes.router)

    footage_bytes = int(settings.footage.max_mb * 1024 * 1024)  # videos via POST /gallery
    app.add_middleware(BodyLimit, max_bytes=settings.max_upload_bytes, big_bytes=footage_bytes,
                       big_paths=("/gallery",))
    app.add_middleware(RequestIdMiddleware, observe=metrics.observe)
    if WEB_DIR.is_dir():  # the web UI (built by its own helper); mounted last so API routes win
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app
