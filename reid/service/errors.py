"""Every error the API returns has one shape, :class:`reid.service.schemas.Error`:
``{"detail": "<message for a person>", "errors": [<field errors>] | null}`` — the same for our own
:class:`BadInput`, FastAPI's request validation (422), routing errors (404/405) and the last-resort
500. A 405 lists in ``Allow`` every method any route accepts at that path, and ``OPTIONS`` on an
API path answers 204 with that list."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from reid.ingest.decode import FootageError
from reid.service.uploads import BadInput

#: HTTP status of each kind of unusable footage (reid.ingest.decode.FootageError.kind)
FOOTAGE_STATUS = {"invalid": 400, "unsupported": 415, "too_large": 413}

log = logging.getLogger("reid.service")


def error_response(status: int, detail: str, errors: list | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "errors": errors}, status_code=status, headers=headers)


def _routes(routes: list) -> list:
    """Routes, with included routers flattened (FastAPI ≥ 0.160 keeps them as branch objects)."""
    out = []
    for route in routes:
        nested = getattr(route, "original_router", None)
        out += _routes(nested.routes) if nested is not None else [route]
    return out


def allowed_methods(app: FastAPI, scope: dict) -> list[str]:
    """Methods of every API route whose path matches (ignoring the method)."""
    methods: set[str] = set()
    for route in _routes(app.router.routes):
        route_methods = getattr(route, "methods", None)
        if not route_methods:
            continue  # mounts (the web page's static files)
        match, _ = route.matches({**scope, "method": next(iter(route_methods))})
        if match is Match.FULL:
            methods |= route_methods
    if methods:
        methods.add("OPTIONS")
    return sorted(methods)


def _summary(errors: list[dict]) -> str:
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path", "header"))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BadInput)
    async def _bad_input(request: Request, exc: BadInput) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @app.exception_handler(FootageError)
    async def _bad_footage(request: Request, exc: FootageError) -> JSONResponse:
        return error_response(FOOTAGE_STATUS.get(exc.kind, 400), exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder([{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()])
        return error_response(422, _summary(errors), errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        headers, status, detail = dict(exc.headers or {}), exc.status_code, str(exc.detail)
        # a 404 from the web page's files for an API path only means the method is wrong
        allow = allowed_methods(app, request.scope) if status in (404, 405) else []
        if allow:
            if request.method == "OPTIONS":
                return Response(status_code=204, headers={"Allow": ", ".join(allow)})
            status, detail, headers["Allow"] = 405, "Method Not Allowed", ", ".join(allow)
        return error_response(status, detail, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error (see the server log for this request id)")
