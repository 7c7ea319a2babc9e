"""Structured JSON logs with a per-request id.

Every request gets an id (the client's ``X-Request-ID`` when it is sane, else a fresh one); it is
echoed in the response header and stamped on every log line emitted while the request is handled,
so one grep over the JSON logs follows a request through the API (and into a footage job, whose
submitter can pass it along).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import datetime, timezone
from typing import Any

REQUEST_ID_HEADER = "X-Request-ID"
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Attributes every LogRecord has; anything else was passed through ``extra=`` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, any ``extra=`` fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            out["request_id"] = rid
        for k, v in vars(record).items():
            if k not in _STANDARD and k not in out and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str | int = "INFO", json_logs: bool = True) -> None:
    """Route the root logger (and uvicorn's) to stderr, as JSON unless ``json_logs`` is off."""
    handler = logging.StreamHandler(sys.stderr)
    if json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if isinstance(level, int) else str(level).upper())
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # Our middleware logs each request with its id; uvicorn's access line would duplicate it.
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """ASGI middleware: set the request id, echo it back, log one access line per request.

    ``observe(method, route, status, seconds)`` is called after each HTTP request so metrics can
    record per-endpoint latency without a second middleware.
    """

    def __init__(self, app: ASGIApp, observe: Callable[[str, str, int, float], None] | None = None,
                 logger: logging.Logger | None = None) -> None:
        self.app = app
        self.observe = observe
        self.log = logger or logging.getLogger("reid.service.access")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for k, v in scope.get("headers") or []:
            if k.decode("latin-1").lower() == REQUEST_ID_HEADER.lower():
                incoming = v.decode("latin-1")
                break
        rid = incoming if incoming and _SANE_ID.match(incoming) else new_request_id()
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        t0 = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                hdrs = list(message.get("headers") or [])
                hdrs.append((REQUEST_ID_HEADER.lower().encode(), rid.encode()))
                message["headers"] = hdrs
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            dt = time.perf_counter() - t0
            route = _route_template(scope)
            if self.observe is not None:
                try:
                    self.observe(scope.get("method", ""), route, status, dt)
                except Exception:  # metrics must never break a request
                    self.log.exception("metrics observe failed")
            if route not in ("/healthz", "/metrics"):
                client = scope["state"].get("client")  # the API key's fingerprint (routes/deps.py)
                self.log.info("%s %s %d %.1fms%s", scope.get("method"), scope.get("path"), status, dt * 1000,
                              f" client={client}" if client else "",
                              extra={"method": scope.get("method"), "path": scope.get("path"),
                                     "route": route, "status": status, "duration_ms": round(dt * 1000, 2),
                                     **({"client": client} if client else {})})
            request_id_var.reset(token)


def _route_template(scope: Scope) -> str:
    """The matched route's path template (``/gallery/{item_id}``), so metrics labels stay bounded."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path and "{path" not in path:
        return path
    p = scope.get("path", "")
    # Unmatched paths: static files and 404s collapse to one label each.
    return "static" if p == "/" or "." in p.rsplit("/", 1)[-1] else "unmatched"
