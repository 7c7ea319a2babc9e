"""The API description, behind the same key as the data: ``/openapi.json`` and the interactive
``/docs``. A browser cannot send a header, so both also take ``?api_key=`` (GET only, never
logged: the access log records the path without the query string)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from reid.service.routes.deps import require_key

router = APIRouter(dependencies=[Depends(require_key)], include_in_schema=False)


@router.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def docs(request: Request) -> HTMLResponse:
    key = request.query_params.get("api_key")
    url = "/openapi.json" + (f"?api_key={quote(key)}" if key else "")
    return get_swagger_ui_html(openapi_url=url, title=f"{request.app.title} — API")
