"""`reid fetch-detector`: the pinned YOLOX-nano is downloaded (from a real HTTP server on 127.0.0.1
standing in for GitHub) or copied, checked by SHA-256, written atomically with its licence and
provenance; wrong files and unreachable servers fail clearly and never damage an install."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reid.cli import app
from reid.ingest import detector_weights as dw
from tests.conftest import free_port


@pytest.fixture
def pinned_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real HTTP server with a stand-in model and licence; the pins point at it."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "yolox_nano.onnx").write_bytes(b"stand-in model bytes" * 100)
    (root / "LICENSE").write_text("Apache License\nVersion 2.0\n")
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(SimpleHTTPRequestHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    for name, attr in (("yolox_nano.onnx", "YOLOX_NANO"), ("LICENSE", "YOLOX_LICENSE")):
        digest = hashlib.sha256((root / name).read_bytes()).hexdigest()
        monkeypatch.setattr(dw, attr, dw.PinnedFile(f"http://127.0.0.1:{port}/{name}", digest))
    yield root
    server.shutdown()
    server.server_close()


def test_download_installs_model_licence_and_provenance(pinned_server: Path, tmp_path: Path) -> None:
    dest = tmp_path / "detectors"
    path = dw.fetch_detector(dest)
    assert path == dest / "yolox_nano.onnx" and path.read_bytes() == (pinned_server / "yolox_nano.onnx").read_bytes()
    assert (dest / "yolox_nano.LICENSE").read_text().startswith("Apache License")
    prov = json.loads((dest / "yolox_nano.PROVENANCE.json").read_text())
    assert prov["commit"] == dw.COMMIT and prov["model"]["sha256"] == dw.YOLOX_NANO.sha256
    assert dw.installed_detector(dest) == path
    assert not list(dest.glob("*.partial"))
    # installed and intact: nothing is downloaded again (the server is gone)
    (pinned_server / "yolox_nano.onnx").unlink()
    assert dw.fetch_detector(dest) == path


def test_damaged_install_is_detected_and_repaired_with_force(pinned_server: Path, tmp_path: Path) -> None:
    dest = tmp_path / "detectors"
    path = dw.fetch_detector(dest)
    good = path.read_bytes()
    path.write_bytes(b"truncated")
    with pytest.raises(dw.DetectorWeightsError, match="SHA-256"):
        dw.fetch_detector(dest)
    assert dw.fetch_detector(dest, force=True).read_bytes() == good


def test_wrong_or_missing_source_file_leaves_the_install_alone(pinned_server: Path, tmp_path: Path) -> None:
    dest = tmp_path / "detectors"
    path = dw.fetch_detector(dest)
    before = path.read_bytes()
    other = tmp_path / "other.onnx"
    other.write_bytes(b"some other model")
    with pytest.raises(dw.DetectorWeightsError, match="expected"):
        dw.fetch_detector(dest, source=other, force=True)
    with pytest.raises(dw.DetectorWeightsError, match="no such file"):
        dw.fetch_detector(dest, source=tmp_path / "missing.onnx", force=True)
    assert path.read_bytes() == before
    # the right bytes from a local copy install, with the licence found beside them
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    (copy_dir / "yolox_nano.onnx").write_bytes(before)
    (copy_dir / "LICENSE").write_bytes((pinned_server / "LICENSE").read_bytes())
    assert dw.fetch_detector(tmp_path / "d2", source=copy_dir / "yolox_nano.onnx").read_bytes() == before


def test_unreachable_server_is_a_clear_cli_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dw, "YOLOX_NANO", dw.PinnedFile(f"http://127.0.0.1:{free_port()}/m.onnx", "0" * 64))
    res = CliRunner().invoke(app, ["fetch-detector", "--dest", str(tmp_path / "d")])
    assert res.exit_code == 1
    assert "cannot download" in res.output and "--from FILE" in res.output
    assert not (tmp_path / "d").exists()


def test_the_real_pinned_file_installs_from_a_local_copy(yolox_onnx: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["fetch-detector", "--from", str(yolox_onnx), "--dest", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert dw.installed_detector(tmp_path).read_bytes() == yolox_onnx.read_bytes()
