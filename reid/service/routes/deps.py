"""Shared request helpers: API-key check, state accessors, form-field parsing."""

from __future__ import annotations

import hmac
import json
from datetime import datetime, timezone
from typing import Any

from fastapi import Request, UploadFile

from reid.service.embedder import Embedder
from reid.service.gallery import Gallery
from reid.service.settings import Settings
from reid.service.store import Filters
from reid.service.uploads import BadInput

API_KEY_HEADER = "X-API-Key"


def _valid(key: str | None, keys: list[str]) -> bool:
    return key is not None and any(hmac.compare_digest(key.encode(), k.encode()) for k in keys)


def require_key(request: Request) -> None:
    """When API keys are configured, demand a valid ``X-API-Key`` (401 otherwise). GET requests may
    pass ``?api_key=`` instead so that <img src> thumbnails work in a browser."""
    keys: list[str] = request.app.state.settings.keys
    if not keys:
        return
    key = request.headers.get(API_KEY_HEADER)
    if key is None and request.method == "GET":
        key = request.query_params.get("api_key")
    if not _valid(key, keys):
        raise BadInput(f"missing or invalid API key (send it in the {API_KEY_HEADER} header)", 401)


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


def parse_time(value: str | None, field: str) -> float | None:
    """ISO 8601 → POSIX seconds (naive times are taken as UTC)."""
    if value is None or value == "":
        return None
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as e:
        raise BadInput(f"{field}: not an ISO 8601 time: {value!r} (e.g. 2024-05-01T12:30:00Z)", 422) from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def parse_meta(value: str | None, limit: int = 16384) -> dict[str, Any] | None:
    if value is None or value == "":
        return None
    if len(value) > limit:
        raise BadInput(f"meta: larger than {limit} bytes", 413)
    try:
        meta = json.loads(value)
    except json.JSONDecodeError as e:
        raise BadInput(f"meta: not valid JSON ({e.msg} at position {e.pos})", 422) from e
    if not isinstance(meta, dict):
        raise BadInput('meta: must be a JSON object, e.g. {"note": "lobby"}', 422)
    return meta


def parse_camera(value: str | None, required: bool = True) -> str | None:
    if value is None or not value.strip():
        if required:
            raise BadInput("camera: required (a non-empty name)", 422)
        return None
    value = value.strip()
    if len(value) > 128 or any(ord(ch) < 32 for ch in value):
        raise BadInput("camera: at most 128 printable characters", 422)
    return value


def split_list(values: list[str] | str | None) -> list[str] | None:
    """Repeated fields and/or comma-separated values → one list (None when empty)."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    out = [p.strip() for v in values for p in v.split(",") if p.strip()]
    return out or None


def build_filters(
    cameras: list[str] | str | None,
    exclude: list[str] | str | None,
    since: str | None,
    until: str | None,
    kind: str | None = None,
) -> Filters:
    f = Filters(
        cameras=split_list(cameras),
        exclude_cameras=split_list(exclude),
        since=parse_time(since, "since"),
        until=parse_time(until, "until"),
        kind=kind or None,
    )
    if f.since is not None and f.until is not None and f.since > f.until:
        raise BadInput("since is after until", 422)
    if f.kind not in (None, "image", "tracklet"):
        raise BadInput("kind: image or tracklet", 422)
    return f


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
