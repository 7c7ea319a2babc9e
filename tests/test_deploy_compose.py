"""docker-compose.yml is valid (Debian's offline `docker-compose config`) and keeps its promises:
API + worker + Redis, one named data volume, health checks, a GPU reservation behind a profile."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"


def _config(*args: str) -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed (apt-get install -y docker-compose)")
    out = subprocess.run([exe, "-f", str(COMPOSE), *args, "config"], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_config_is_valid_and_complete() -> None:
    cfg = _config()
    services = cfg["services"]
    default = {n for n, s in services.items() if not s.get("profiles")}
    assert default == {"redis", "api", "worker"}, "the gpu worker must stay behind its profile"
    assert services["worker-gpu"]["profiles"] == ["gpu"]
    assert sorted(cfg["volumes"]) == ["milvus-data", "reid-data"]
    for name in ("api", "worker"):
        svc = services[name]
        assert svc["healthcheck"]["test"], name
        env = svc["environment"]
        assert env["REID_QUEUE"] == "redis"
        assert env["REID_REDIS_URL"].startswith("redis://redis:")
        assert [v for v in svc["volumes"] if str(v).startswith("reid-data:/data")], name
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["api"]["command"][:2] == ["reid", "serve"]
    assert services["worker"]["command"][:2] == ["reid", "worker"]
    assert services["api"]["ports"], "the API must be published"
    assert "ports" not in services["worker"], "workers take jobs from Redis, they serve nothing"
    assert services["redis"]["healthcheck"]["test"]


def test_gpu_profile_reserves_a_gpu() -> None:
    services = _config()["services"]
    gpu = services["worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)
    assert gpu["build"]["target"] == "gpu"
    assert gpu["command"][:2] == ["reid", "worker"]


def test_milvus_profile_is_a_server_with_its_own_volume() -> None:
    services = _config("--profile", "milvus")["services"]
    milvus = services["milvus"]
    assert milvus["profiles"] == ["milvus"] and milvus["healthcheck"]["test"]
    assert [v for v in milvus["volumes"] if str(v).startswith("milvus-data:")]
    assert "19530" not in str(milvus.get("ports", "")), "Milvus stays on the compose network"
    for name in ("api", "worker"):  # the backend is chosen by the shared REID_* environment
        assert {"REID_INDEX_BACKEND", "REID_MILVUS_URI"} <= set(services[name]["environment"])
        assert services[name]["build"]["args"]["EXTRAS"] == "redis"


def test_dockerfile_is_multistage_nonroot_without_torch() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = [line.split()[-1] for line in text.splitlines() if line.startswith("FROM ")]
    assert {"build", "gpu", "cpu"} <= set(stages) and stages[-1] == "cpu", stages
    assert "USER reid" in text and "HEALTHCHECK" in text
    assert "onnxruntime-gpu" in text and "faiss-gpu" in text
    installs = [line for line in text.splitlines() if "pip " in line]
    assert installs and not [line for line in installs if "torch" in line or "train" in line]
