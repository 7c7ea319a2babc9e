"""JSON logs and request ids (reid/service/logging.py)."""

from __future__ import annotations

import io
import json
import logging

from fastapi import FastAPI
from fastapi.testclient import TestClient

from reid.service.logging import JsonFormatter, RequestIdMiddleware, request_id_var


def _capture() -> tuple[logging.Logger, io.StringIO]:
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(JsonFormatter())
    lg = logging.getLogger("test.reid.json")
    lg.handlers[:] = [h]
    lg.setLevel(logging.INFO)
    lg.propagate = False
    return lg, buf


def test_json_lines_carry_fields_request_id_and_exception() -> None:
    lg, buf = _capture()
    token = request_id_var.set("rid-42")
    try:
        lg.info("indexed %d items", 3, extra={"camera": "lobby"})
        try:
            raise ValueError("boom")
        except ValueError:
            lg.exception("failed")
    finally:
        request_id_var.reset(token)
    first, second = (json.loads(x) for x in buf.getvalue().splitlines())
    assert first["msg"] == "indexed 3 items" and first["level"] == "INFO" and first["camera"] == "lobby"
    assert first["request_id"] == "rid-42" and first["ts"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]


def test_middleware_sets_echoes_and_logs_request_ids() -> None:
    lg, buf = _capture()
    seen: list[tuple[str, str, int]] = []
    app = FastAPI()

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict:
        logging.getLogger("test.reid.json").info("handler saw %s", request_id_var.get())
        return {"id": item_id}

    app.add_middleware(RequestIdMiddleware, observe=lambda m, r, s, t: seen.append((m, r, s)), logger=lg)
    with TestClient(app) as c:
        r = c.get("/items/7", headers={"X-Request-ID": "client-id.1"})
        assert r.headers["X-Request-ID"] == "client-id.1"
        r = c.get("/items/8", headers={"X-Request-ID": "bad id\twith spaces"})
        fresh = r.headers["X-Request-ID"]
        assert fresh != "bad id\twith spaces" and len(fresh) == 32
        assert c.get("/nope").status_code == 404
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert lines[0] == {**lines[0], "msg": "handler saw client-id.1", "request_id": "client-id.1"}
    access = [x for x in lines if x.get("route")]
    assert access[0]["status"] == 200 and access[0]["route"] == "/items/{item_id}"
    assert access[1]["request_id"] == fresh
    # metrics get the route template (bounded label set), not the raw path
    assert seen == [("GET", "/items/{item_id}", 200), ("GET", "/items/{item_id}", 200),
                    ("GET", "unmatched", 404)]
