"""The one Settings object of the service: every knob is an environment variable ``REID_<NAME>``.

Knobs of one part sit in a section named after it — ``REID_INDEX_NPROBE`` is ``settings.index.nprobe``
— whose fields match the config object that part takes. docs/service.md has the table. Keep
defaults embedded and local (no external server needed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from reid.models import SHIPPED_MODEL

#: variables renamed when the settings were grouped into sections (reid-search 0.2.0), and the frame stride
#: that became a detection rate (0.4.0; docs/footage.md): an old name is refused with the new one, never
#: silently ignored
RENAMED = {
    "REID_DETECTOR": "REID_DETECTOR_NAME",
    "REID_MIN_BOX_HEIGHT": "REID_DETECTOR_MIN_HEIGHT",
    "REID_BG_SUBTRACTION": "REID_DETECTOR_BG_SUBTRACTION",
    "REID_DETECT_STRIDE": "REID_FOOTAGE_DETECT_FPS",
    "REID_FOOTAGE_DETECT_STRIDE": "REID_FOOTAGE_DETECT_FPS",
    "REID_TRACK_MAX_AGE_S": "REID_FOOTAGE_TRACK_MAX_AGE_S",
    "REID_TRACKLET_FRAMES": "REID_TRACKLET_EMBED_FRAMES",
    "REID_FAISS_THREADS": "REID_INDEX_THREADS",
    "REID_NPROBE": "REID_INDEX_NPROBE",
    "REID_EF_SEARCH": "REID_INDEX_EF_SEARCH",
    "REID_REFINE_FACTOR": "REID_INDEX_REFINE_FACTOR",
    "REID_SAVE_INTERVAL_S": "REID_INDEX_SAVE_INTERVAL_S",
    "REID_OVERFETCH": "REID_INDEX_OVERFETCH",
    "REID_EXACT_FILTER_MAX": "REID_INDEX_EXACT_FILTER_MAX",
    "REID_WORKER_LEASE_S": "REID_JOB_LEASE_S",
}


class RenamedSetting(ValueError):
    """An environment variable from before the settings sections."""


def refuse_renamed(environ: Mapping[str, str]) -> None:
    old = [name for name in RENAMED if environ.get(name)]
    if old:
        raise RenamedSetting("renamed settings: " + "; ".join(f"{name} is now {RENAMED[name]}" for name in old))


# choices are case-insensitive in the environment (REID_DEVICE=CUDA works)
_lower = BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)
_upper = BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)


class IndexSettings(BaseModel):
    """``REID_INDEX_*``: the vector cache beside SQLite (reid.service.index / index_milvus)."""

    backend: Annotated[Literal["faiss", "milvus"], _lower] = Field(
        "faiss", description="faiss (in process) or milvus (Milvus Lite in the data dir, or a Milvus server at "
        "REID_MILVUS_URI; filters pushed down; needs the milvus extra)")
    factory: str = Field("Flat", description='FAISS factory string, e.g. "Flat", "HNSW32", '
                         '"IVF4096,PQ32x4fs" (inner product on L2-normalised vectors)')
    min_train: int = Field(1000, ge=1, description="smallest gallery that trains a trainable index "
                           "(IVF also needs 39×nlist); below it search is exact")
    threads: int = Field(1, ge=0, description="FAISS OpenMP threads (1 is fastest for one query at a time on a "
                         "busy CPU; 0 = FAISS default)")
    nprobe: int = Field(32, ge=1, description="IVF cells visited per query (FAISS IVF, Milvus IVF_FLAT)")
    ef_search: int = Field(128, ge=1, description="HNSW efSearch (FAISS HNSW, Milvus HNSW)")
    refine_factor: int = Field(8, ge=1, description="…,RFlat indexes: re-rank top_k × this candidates exactly")
    save_interval_s: float = Field(30.0, ge=0, description="seconds between FAISS cache snapshots")
    overfetch: int = Field(4, ge=1, description="ANN over-fetch factor when filtering by metadata")
    exact_filter_max: int = Field(50000, ge=0, description="filtered subsets up to this size are searched "
                                  "exactly (ANN indexes)")



class MilvusSettings(BaseModel):
    """``REID_MILVUS_*``: the Milvus backend (REID_INDEX_BACKEND=milvus)."""

    uri: str = Field("", description="Milvus server, e.g. http://milvus:19530 (empty: embedded Milvus Lite at "
                     "<data dir>/index/milvus.db)")
    collection: str = Field("reid_items", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$",
                            description="Milvus collection (one per deployment)")
    index: Annotated[Literal["FLAT", "HNSW", "IVF_FLAT"], _upper] = Field(
        "FLAT", description="Milvus index type (HNSW uses REID_INDEX_EF_SEARCH; IVF_FLAT REID_INDEX_NPROBE)")



class DetectorSettings(BaseModel):
    """``REID_DETECTOR_*``: the footage person detector (reid.ingest.detect.DetectorConfig)."""

    name: str = Field("auto", description="auto (YOLOX-nano once `reid fetch-detector` installed it, else HOG), "
                      "hog (built in, no weights) or a path to an ONNX detector (NanoDet, YOLOv5, YOLOv8 or YOLOX "
                      "export)")
    format: Annotated[Literal["auto", "nanodet", "yolov5", "yolov8", "yolox"], _lower] = Field(
        "auto", description="ONNX detector output layout (auto = by output shapes)")
    conf: float | None = Field(None, ge=0, description="detection threshold (default: hog 0.3 SVM margin, "
                               "YOLOX 0.3, other ONNX 0.35 score)")
    nms: float = Field(0.45, gt=0, le=1, description="NMS IoU threshold")
    min_height: int = Field(48, ge=1, description="ignore detections shorter than this (pixels)")
    input_width: int = Field(384, ge=0, description="HOG: resize frames to this width (0 = as is); larger finds "
                             "smaller people, slower")
    input_size: int = Field(640, ge=0, multiple_of=32, description="YOLOX: long side of the network input "
                            "(frames keep their aspect ratio; 0 = the model file's size)")
    bg_subtraction: bool = Field(False, description="HOG: skip static frames / background boxes (static cameras)")
    threads: int = Field(1, ge=0, description="ONNX detector intra-op threads (0 = ORT default)")



class FootageSettings(BaseModel):
    """``REID_FOOTAGE_*``: decoding and tracking (reid.ingest.pipeline.PipelineConfig) and upload limits."""

    detect_fps: float = Field(5.0, ge=0, description="detect and track this many times per second of footage, "
                              "whatever its frame rate (0 = every frame)")
    track_max_age_s: float = Field(1.5, gt=0, description="a track survives this long without a detection")
    fps: float | None = Field(None, gt=0, description="fps for footage without timestamps (raw .264, frame "
                              "folders without seqinfo.ini); default 25")
    max_pixels: int = Field(3840 * 2160, ge=1, description="refuse footage with larger frames")
    max_mb: float = Field(2048.0, gt=0, description="max video upload size via POST /gallery (MB); index "
                          "bigger footage with `reid index`")


class TrackletSettings(BaseModel):
    """``REID_TRACKLET_*``: cutting tracks into tracklets (reid.ingest.tracklets.TrackletConfig) and
    pooling their frames into one vector."""

    min_frames: int = Field(3, ge=1, description="drop tracklets with fewer detections")
    min_height: int = Field(64, ge=1, description="drop tracklets whose median box is shorter")
    max_seconds: float = Field(10.0, gt=0, description="cut longer tracks into several tracklets")
    embed_frames: int = Field(8, ge=1, description="frames embedded and kept per tracklet")
    scene_side: int = Field(640, ge=0, description="long side (px) of the scene kept per tracklet: the frame "
                            "of its best crop, the person's box marked (about 50 KB as JPEG); 0 = keep none")
    pooling: Annotated[Literal["mean", "vrstc"], _lower] = Field(
        "mean", description="how an image model pools a tracklet's frames: mean averages the frame vectors; "
        "vrstc repairs occluded body regions from the other frames first (reid/models/vrstc.py; needs a model "
        "with a calibrated reid.vrstc_tau, else mean). Mean is the default: bench/occlusion.md")



class JobSettings(BaseModel):
    """``REID_JOB_*``: footage jobs (reid.jobs)."""

    workers: int = Field(1, ge=0, description="embedded queue: footage jobs run at once (0 = none, e.g. an API "
                         "that only queues)")
    mode: Annotated[Literal["process", "thread"], _lower] = Field(
        "process", description="embedded queue: process (a child process per job, crash-isolated) or thread")
    max_attempts: int = Field(2, ge=1, description="runs of a job interrupted by a crash before it fails")
    lease_s: float = Field(30.0, gt=0, description="redis queue: a worker silent this long loses its job "
                           "(re-queued)")



class RedisSettings(BaseModel):
    """``REID_REDIS_*``: the Redis job queue (REID_QUEUE=redis)."""

    url: str = Field("redis://127.0.0.1:6379/0", description="Redis for REID_QUEUE=redis")
    prefix: str = Field("reid", description="key prefix in Redis (several deployments, one Redis)")


class Settings(BaseSettings):
    # env_ignore_empty: an empty REID_X (compose's "${REID_X:-}") means "use the default".
    # sections: REID_INDEX_NPROBE → index.nprobe (split once, after the section name)
    model_config = SettingsConfigDict(env_prefix="REID_", extra="ignore", protected_namespaces=(),
                                      env_ignore_empty=True, env_nested_delimiter="_", env_nested_max_split=1)

    # --- storage -------------------------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="all state: SQLite, FAISS cache, crops, thumbnails")
    sqlite_synchronous: Annotated[Literal["OFF", "NORMAL", "FULL", "EXTRA"], _upper] = Field(
        "FULL", description="SQLite synchronous mode (FULL survives power loss)")
    retention_days: float = Field(0.0, ge=0, description="delete items whose person was last seen more than "
                                  "this many days ago (end time, else start, else when indexed), checked "
                                  "every REID_INDEX_SAVE_INTERVAL_S by the API; 0 = keep forever")

    # --- model / inference ---------------------------------------------------------------------
    model: Path = Field(
        SHIPPED_MODEL,
        description="model directory (image.onnx [+ video.onnx]) or a single .onnx file",
    )
    preprocess: str | None = Field(
        None,
        description="JSON preprocessing for a model without reid.* metadata, e.g. "
        '{"height":256,"width":128,"color":"RGB","scale":0.00392156862745098}',
    )
    device: Annotated[Literal["auto", "cpu", "cuda"], _lower] = Field("auto", description="auto = CUDA when available")
    intra_op_threads: int = Field(0, ge=0, description="ORT intra-op threads (0 = ORT default)")
    inter_op_threads: int = Field(1, ge=0, description="ORT inter-op threads")
    graph_optimization: Annotated[Literal["disable", "basic", "extended", "all"], _lower] = Field(
        "all", description="ORT graph optimisation level")
    ort_spinning: bool = Field(False, description="let idle ORT threads spin-wait (steals cores from search)")
    max_batch: int = Field(32, ge=1, description="micro-batch: max images per model run")
    max_wait_ms: float = Field(3.0, ge=0, description="micro-batch: max wait to fill a batch")
    video_chunk: int = Field(8, ge=1, description="frames per clip for a video model with dynamic T")

    # --- API -----------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    keep_alive_s: float = Field(75.0, gt=0, description="HTTP keep-alive: longer than clients' own idle "
                                "timeouts (httpx, browsers: ≤ 5–60 s), so a client never reuses a "
                                "connection the server is closing")
    api_keys: str = Field("", description="comma-separated API keys; empty = no auth")
    api_key: str = Field("", description="a single API key (merged with api_keys)")
    metrics_public: bool = Field(False, description="serve /metrics without an API key")
    max_upload_mb: float = Field(50.0, gt=0, description="max request body size (MB)")
    max_files: int = Field(256, ge=1, description="max images per request (zip members count)")
    max_image_pixels: int = Field(16_000_000, ge=1, description="max width×height of one image")
    max_query_frames: int = Field(32, ge=1, description="max frames used from a query clip")
    thumbnail_height: int = Field(128, ge=16, description="thumbnail height in pixels")
    log_level: str = "INFO"
    log_json: bool = True

    # --- job queue (footage) -------------------------------------------------------------------
    queue: Annotated[Literal["embedded", "redis"], _lower] = Field(
        "embedded",
        description="embedded (in-process, SQLite job state) or redis "
        "(separate `reid worker` processes; the API stays the only index writer)",
    )
    job: JobSettings = Field(default_factory=JobSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)

    # --- sections: REID_<SECTION>_<FIELD>, each feeding one config object -------------------------
    index: IndexSettings = Field(default_factory=IndexSettings)
    milvus: MilvusSettings = Field(default_factory=MilvusSettings)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    footage: FootageSettings = Field(default_factory=FootageSettings)
    tracklet: TrackletSettings = Field(default_factory=TrackletSettings)

    def __init__(self, **values: Any) -> None:
        refuse_renamed(os.environ)
        super().__init__(**values)


    @field_validator("preprocess")
    @classmethod
    def _pre(cls, v: str | None) -> str | None:
        if v:
            json.loads(v)
        return v or None

    @property
    def keys(self) -> list[str]:
        """All valid API keys (``api_keys`` and ``api_key`` merged)."""
        raw = ",".join([self.api_keys, self.api_key])
        return [k.strip() for k in raw.split(",") if k.strip()]

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
