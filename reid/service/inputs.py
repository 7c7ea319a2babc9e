"""Parsing of user input shared by the HTTP routes and the CLI: times, meta JSON, camera names,
lists and search filters. A problem is a :class:`BadInput` carrying the HTTP status it maps to."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

from reid.service.store import Filters
from reid.service.uploads import BadInput


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


def check_retained(ts: float | None, retention_days: float, field: str) -> None:
    """Refuse a time the retention policy has already expired: its items would be deleted at once."""
    if ts is not None and retention_days and ts < time.time() - retention_days * 86400:
        raise BadInput(f"{field}: {datetime.fromtimestamp(ts, timezone.utc):%Y-%m-%dT%H:%M:%SZ} is older than "
                       f"the retention period ({retention_days:g} days, REID_RETENTION_DAYS): it would be "
                       "deleted at once", 422)


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
