"""Shared fixtures. Tests that need ../shared (data, weights, footage) skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("REID_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """Path inside ../shared, or skip the test when it is not there."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"needs {p} (set REID_SHARED)")
    return p


@pytest.fixture
def cuhk03_val() -> Path:
    return shared_path("data", "cuhk03", "val")


@pytest.fixture
def osnet_onnx() -> Path:
    return shared_path("weights", "osnet_x0_25_msmt17.onnx")
