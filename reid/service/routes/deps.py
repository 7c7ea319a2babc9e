"""Shared request helpers: API-key check, state accessors, upload reading (form-field parsing:
:mod:`reid.service.inputs`)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any

from fastapi import Depends, Request, UploadFile

from reid.service.embedder import Embedder
from reid.service.gallery import Gallery
from reid.service.settings import Settings
from reid.service.uploads import BadInput

API_KEY_HEADER = "X-API-Key"


def _valid(key: str | None, keys: list[str]) -> bool:
    return key is not None and any(hmac.compare_digest(key.encode(), k.encode()) for k in keys)


def key_fingerprint(key: str) -> str:
    """What the access log records of the caller's key: the first 12 hex digits of its SHA-256, enough
    to tell the keys (and so the people or systems holding them) apart, never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def require_key(request: Request) -> None:
    """When API keys are configured, demand a valid ``X-API-Key`` (401 otherwise). GET requests may
    pass ``?api_key=`` instead so that <img src> thumbnails work in a browser. The key's fingerprint
    goes into the request's access-log line (``client``): who searched for whom, who erased what."""
    keys: list[str] = request.app.state.settings.keys
    if not keys:
        return
    key = request.headers.get(API_KEY_HEADER)
    if key is None and request.method == "GET":
        key = request.query_params.get("api_key")
    if not _valid(key, keys):
        raise BadInput(f"missing or invalid API key (send it in the {API_KEY_HEADER} header)", 401)
    request.state.client = key_fingerprint(key)


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def gallery_of(request: Request) -> Gallery:
    g = getattr(request.app.state, "gallery", None)
    if g is None:
        raise BadInput("the service is starting up; retry shortly", 503)
    return g


def embedder_of(request: Request) -> Embedder:
    e = getattr(request.app.state, "embedder", None)
    if e is None:
        raise BadInput("the service is starting up; retry shortly", 503)
    return e


def job_queue_of(request: Request) -> Any:
    q = getattr(request.app.state, "job_queue", None)
    if q is None:
        raise BadInput("footage jobs are not enabled on this server", 404)
    return q


# What route signatures ask for (FastAPI dependencies): the app's settings, gallery, model, job queue.
SettingsDep = Annotated[Settings, Depends(settings_of)]
GalleryDep = Annotated[Gallery, Depends(gallery_of)]
EmbedderDep = Annotated[Embedder, Depends(embedder_of)]
JobsDep = Annotated[Any, Depends(job_queue_of)]


async def read_files(files: list[UploadFile], settings: Settings) -> list[tuple[str, bytes]]:
    if not files:
        raise BadInput("no files uploaded (use the multipart field 'files')")
    if len(files) > settings.max_files:
        raise BadInput(f"too many files: {len(files)} (limit {settings.max_files} per request)", 413)
    out = []
    total = 0
    for i, f in enumerate(files):
        data = await f.read()
        total += len(data)
        if total > settings.max_upload_bytes:
            raise BadInput(
                f"images larger than the upload limit of {settings.max_upload_mb:g} MB in total", 413
            )
        out.append((f.filename or f"file{i}", data))
    return out
