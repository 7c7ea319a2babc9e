"""Schemathesis against a real `reid serve` on 127.0.0.1 (issue 14): generated requests, valid and
invalid, for every operation in /openapi.json; any 5xx, any response that breaks the published
schema (status, content type, headers, body, Allow on 405) fails the test. Deterministic
generation, a few examples per operation, so it is repeatable and bounded (~1 min).

Excluded: ``positive_data_acceptance`` — an upload's bytes are ``format: binary`` in the schema,
so schema-valid random bytes are, correctly, refused as "not an image" (415)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_service_api import Server

ST = shutil.which("st") or str(Path(sys.executable).with_name("st"))


def test_schemathesis_finds_no_server_errors_or_schema_violations(tmp_path: Path) -> None:
    if not Path(ST).exists():
        pytest.skip("schemathesis not installed (pip install '.[dev]')")
    srv = Server(tmp_path / "data").start()
    try:
        out = subprocess.run(
            [ST, "run", f"{srv.url}/openapi.json", "--checks", "all",
             "--exclude-checks", "positive_data_acceptance", "--max-examples", "8",
             "--generation-deterministic", "--no-color", "--request-timeout", "60"],
            capture_output=True, text=True, timeout=900, cwd=tmp_path)  # its .schemathesis/ cache stays out of the repo
        report = out.stdout[-6000:] + out.stderr[-2000:]
        assert out.returncode == 0, report
        assert "Tested:" in out.stdout, report
        log = srv.log.read_text()
        assert "Traceback" not in log and " 500 " not in log, log[-3000:]
    finally:
        srv.stop()
