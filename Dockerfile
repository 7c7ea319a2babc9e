# syntax=docker/dockerfile:1
# Serving image: the package's base dependencies only (no torch, no training extras). Two targets:
#   docker build -t reid-search:cpu .                  -> CPU (default: the last stage)
#   docker build -t reid-search:gpu --target gpu .     -> CUDA 12 + cuDNN 9, onnxruntime-gpu, GPU FAISS
# Both run `reid serve` as the unprivileged user "reid"; compose runs `reid worker` from the same image.
ARG PYTHON_VERSION=3.11
ARG CUDA_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

# ---------- build: our wheel, plus wheels of every base dependency for the CPU image ----------
FROM python:${PYTHON_VERSION}-slim AS build
# optional extras baked into the image: redis (the compose queue); add milvus for REID_INDEX_BACKEND=milvus
ARG EXTRAS=redis
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md* LICENSE ./
COPY reid ./reid
RUN pip wheel --no-deps --wheel-dir /pkg . \
 && pip wheel --wheel-dir /wheels "$(ls /pkg/*.whl)[${EXTRAS}]"

# ---------- GPU target ----------
FROM ${CUDA_IMAGE} AS gpu
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    REID_DATA_DIR=/data REID_HOST=0.0.0.0 REID_PORT=8000 REID_DEVICE=cuda
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=build /pkg /pkg
# The base install pulls onnxruntime + faiss-cpu; swap them for the CUDA builds (same import names).
# onnxruntime-gpu >= 1.19 is built for CUDA 12 / cuDNN 9, which the CUDA_IMAGE above provides.
ARG EXTRAS=redis
RUN pip install "$(ls /pkg/*.whl)[${EXTRAS}]" \
 && pip uninstall -y onnxruntime faiss-cpu \
 && pip install "onnxruntime-gpu>=1.19" "faiss-gpu-cu12>=1.8" \
 && rm -rf /pkg
# The default person detector (pinned YOLOX-nano, Apache-2.0) is fetched at build time, never at run time.
ENV REID_CACHE=/app/cache
RUN reid fetch-detector
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin reid \
 && mkdir -p /data && chown reid /data
USER reid
WORKDIR /app
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('REID_PORT','8000'), timeout=4)"]
CMD ["reid", "serve"]

# ---------- CPU target (default) ----------
FROM python:${PYTHON_VERSION}-slim AS cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    REID_DATA_DIR=/data REID_HOST=0.0.0.0 REID_PORT=8000
COPY --from=build /pkg /pkg
COPY --from=build /wheels /wheels
ARG EXTRAS=redis
RUN pip install --no-index --find-links /wheels "$(ls /pkg/*.whl)[${EXTRAS}]" && rm -rf /pkg /wheels
ENV REID_CACHE=/app/cache
RUN reid fetch-detector
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin reid \
 && mkdir -p /data && chown reid /data
USER reid
WORKDIR /app
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('REID_PORT','8000'), timeout=4)"]
CMD ["reid", "serve"]
