"""The inference worker: ONNX Runtime sessions plus a micro-batcher.

Concurrent requests put preprocessed crops on one queue; a single worker thread drains it into
batches of up to ``max_batch`` (waiting at most ``max_wait_ms`` for company, and only while other
requests are still being preprocessed, so a lone query never waits) and runs the model
once per batch, so throughput under load approaches the batched throughput. Preprocessing comes
only from the model's ``reid.*`` metadata (or the ``preprocess`` setting for a foreign model).
Torch-free by design.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort

from reid.models.pair_model import PAIR_FILE, PairModel, PairModelError
from reid.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessSpec, onnx_metadata, preprocess
from reid.models.vrstc import VrstcConfig
from reid.models.vrstc import pool as vrstc_pool
from reid.service.settings import Settings

log = logging.getLogger(__name__)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ModelError(RuntimeError):
    """The model cannot be loaded or used as configured (message says what to change)."""


@dataclass
class ModelInfo:
    """What the service knows about the loaded model; ``model_id`` ties index vectors to it."""

    model_id: str
    dim: int
    spec: PreprocessSpec
    image_path: Path
    video_path: Path | None = None
    arch: str = "unknown"
    version: str = "0"
    trained_on: str = "unknown"
    precision: str = "fp32"  # "int8" for a `reid quantize` model
    clip_len: int | None = None
    providers: list[str] = field(default_factory=list)
    regions: int = 0  # the image model's second output: horizontal region features (VRSTC)
    vrstc_tau: float | None = None  # calibrated occlusion threshold (reid vrstc-calibrate)
    pair_path: Path | None = None  # CAN's pair model (pair.onnx beside image.onnx): rerank=can

    def describe(self) -> str:
        return (f"{self.image_path} (arch={self.arch}, version={self.version}, {self.precision}, "
                f"id={self.model_id})")


def resolve_model(path: Path) -> tuple[Path, Path | None]:
    """A model directory (image.onnx [+ video.onnx]) or a single .onnx file → the two paths."""
    path = Path(path)
    if path.is_dir():
        image = path / "image.onnx"
        if not image.is_file():
            raise ModelError(f"model directory {path} has no image.onnx")
        video = path / "video.onnx"
        return image, video if video.is_file() else None
    if path.is_file():
        return path, None
    raise ModelError(f"model not found: {path} (set REID_MODEL to a model directory or .onnx file)")


def file_digest(*paths: Path | None) -> str:
    h = hashlib.sha256()
    for p in paths:
        if p is not None:
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def choose_providers(device: str) -> list[str]:
    """CUDA when asked for or available (device=auto), always with CPU as the fallback."""
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not has_cuda:
        raise ModelError(
            "REID_DEVICE=cuda but onnxruntime has no CUDAExecutionProvider "
            "(install onnxruntime-gpu) — use REID_DEVICE=auto or cpu"
        )
    if device in ("cuda", "auto") and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _spec_from_config(raw: str) -> PreprocessSpec:
    d = json.loads(raw)
    if not isinstance(d, dict):
        raise ModelError("REID_PREPROCESS must be a JSON object")
    for k in ("mean", "std"):
        if k in d:
            d[k] = tuple(float(v) for v in d[k])
    try:
        return PreprocessSpec(**d)
    except TypeError as e:
        raise ModelError(f"bad REID_PREPROCESS: {e}") from e


def first_output_graph(model: Path | onnx.ModelProto) -> bytes | None:
    """The model cut down to what its first output (the embedding) needs, or None when that is
    all it computes. ORT inference builds run every node whatever outputs a call names
    (onnxruntime#16483), so without this each plain query also paid for the region features
    (VRSTC) and the spatial maps (CAN)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    outputs = [o.name for o in model.graph.output]
    if len(outputs) < 2:
        return None
    weights = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in weights]
    return onnx.utils.Extractor(model).extract_model(inputs, outputs[:1]).SerializeToString()


def _load_onnx(path: Path) -> tuple[onnx.ModelProto, bytes | None]:
    """The parsed model and its graph cut down to the embedding (first_output_graph)."""
    try:
        model = onnx.load(str(path))
        return model, first_output_graph(model)
    except Exception as e:  # onnx raises DecodeError and others for a bad file
        raise ModelError(f"cannot load ONNX model {path}: {e}") from e


def _session(path: Path, settings: Settings, providers: list[str], graph: bytes | None = None) -> ort.InferenceSession:
    """An ORT session of the file at ``path``, or of ``graph`` (a cut-down copy of it) when given."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = settings.intra_op_threads
    so.inter_op_num_threads = settings.inter_op_threads
    so.graph_optimization_level = _OPT_LEVELS[settings.graph_optimization]
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings.ort_spinning else "0")
    try:
        return ort.InferenceSession(graph or str(path), sess_options=so, providers=providers)
    except Exception as e:  # ORT (and onnx) raise several types for a bad file
        raise ModelError(f"cannot load ONNX model {path}: {e}") from e


def _l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class _Request:
    x: np.ndarray
    fut: Future  # [N, D] normalised embeddings
    regions: Future | None = None  # [N, R, D] region features, when asked for and the model has them


class Embedder:
    """Image (and optional video) embedding with dynamic micro-batching.

    ``embed(images)`` is thread-safe and blocking; ``embed_async`` is its asyncio twin. Outputs are
    always L2-normalised float32 rows (a foreign model's raw output gets normalised here).
    """

    def __init__(self, settings: Settings, on_batch: Callable[[int], None] | None = None) -> None:
        self.settings = settings
        self.on_batch = on_batch
        image_path, video_path = resolve_model(settings.model)
        providers = choose_providers(settings.device)
        model, embedding_graph = _load_onnx(image_path)  # parsed once: metadata, output names, the cut graph
        meta = onnx_metadata(model)
        self._outputs = [o.name for o in model.graph.output]
        # plain embeddings run the graph cut down to the embedding; the whole graph (region
        # features, spatial maps) is loaded on first use, by VRSTC pooling or a CAN pair model
        self.embed_session = _session(image_path, settings, providers, graph=embedding_graph)
        del model, embedding_graph
        inp = self.embed_session.get_inputs()[0]
        self.input_name = inp.name
        self._first_output = self.embed_session.get_outputs()[0].name
        spec = self._spec(meta, inp.shape, settings)
        self.video_session: ort.InferenceSession | None = None
        clip_len = None
        if video_path is not None:
            self.video_session = _session(video_path, settings, providers)
            vshape = self.video_session.get_inputs()[0].shape
            clip_len = vshape[1] if len(vshape) == 5 and isinstance(vshape[1], int) else settings.video_chunk
        dim = self._probe_dim(spec, meta)
        self.info = ModelInfo(
            model_id=file_digest(image_path, video_path),
            dim=dim,
            spec=spec,
            image_path=image_path,
            video_path=video_path,
            arch=meta.get("reid.arch", "foreign"),
            version=meta.get("reid.version", "0"),
            trained_on=meta.get("reid.trained_on", "unknown"),
            precision=meta.get("reid.precision", "fp32"),
            clip_len=clip_len,
            providers=self.embed_session.get_providers(),
            regions=int(meta.get("reid.regions", 0)) if len(self._outputs) > 1 else 0,
            vrstc_tau=float(meta["reid.vrstc_tau"]) if "reid.vrstc_tau" in meta else None,
        )
        self.vrstc = (VrstcConfig(tau=self.info.vrstc_tau) if settings.tracklet.pooling == "vrstc"
                      and self.info.regions and self.info.vrstc_tau is not None and video_path is None else None)
        self._providers = providers
        self._whole: ort.InferenceSession | None = None  # the whole graph: whole_session()
        self._whole_lock = threading.Lock()
        pair_path = image_path.parent / PAIR_FILE
        has_pair = Path(settings.model).is_dir() and pair_path.is_file()
        self.pair = self._pair_model(pair_path, settings, providers) if has_pair else None
        self.info.pair_path = self.pair.path if self.pair is not None else None
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._incoming, self._incoming_lock = 0, threading.Lock()  # submits still preprocessing
        self._thread = threading.Thread(target=self._worker, name="embed-batcher", daemon=True)
        self._thread.start()
        log.info("model loaded: %s dim=%d providers=%s", self.info.describe(), dim, self.info.providers)

    # --- setup -------------------------------------------------------------------------------------
    @staticmethod
    def _spec(meta: dict[str, str], shape: Sequence, settings: Settings) -> PreprocessSpec:
        if settings.preprocess:
            return _spec_from_config(settings.preprocess)
        if "reid.input_height" in meta:
            return PreprocessSpec.from_metadata(meta)
        if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
            log.warning(
                "model has no reid.* metadata: assuming RGB, /255, ImageNet mean/std at %sx%s "
                "(set REID_PREPROCESS to override)",
                shape[2],
                shape[3],
            )
            return PreprocessSpec(height=shape[2], width=shape[3], mean=IMAGENET_MEAN, std=IMAGENET_STD)
        raise ModelError(
            "model has no reid.* metadata and a dynamic input size: set REID_PREPROCESS, "
            'e.g. {"height":256,"width":128}'
        )

    def _pair_model(self, path: Path, settings: Settings, providers: list[str]) -> PairModel:
        """CAN's pair model (the model directory has one); image.onnx must output maps."""
        map_shape = self.embed_maps([np.zeros((8, 4, 3), np.uint8)]).shape[1:]  # a clear error without maps
        try:
            pair = PairModel(path, providers=providers, threads=settings.intra_op_threads)
            pair.check(map_shape)
        except PairModelError as e:
            raise ModelError(str(e)) from e
        return pair

    def whole_session(self) -> ort.InferenceSession:
        """The model with every output (``regions``, ``maps``), loaded on first use: only VRSTC
        pooling and CAN ask for those, and a large model's weights would otherwise sit twice in memory."""
        with self._whole_lock:
            if self._whole is None:
                self._whole = _session(self.info.image_path, self.settings, self._providers)
            return self._whole

    def embed_maps(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """[N, C, h, w] float32 spatial maps (image.onnx's ``maps`` output), for CAN re-scoring.
        Runs outside the micro-batcher: it is asked for a handful of crops at a time."""
        x = preprocess(list(images_bgr), self.info.spec)
        if "maps" not in self._outputs:
            raise ModelError(f"CAN's pair model ({PAIR_FILE}) needs image.onnx's maps output, which "
                             f"{self.info.image_path} lacks (export it again)")
        return np.asarray(self.whole_session().run(["maps"], {self.input_name: x})[0], np.float32)

    def _probe_dim(self, spec: PreprocessSpec, meta: dict[str, str]) -> int:
        zeros = np.zeros((1, 3, spec.height, spec.width), np.float32)
        out = self.embed_session.run([self._first_output], {self.input_name: zeros})
        dim = int(out[0].shape[-1])
        if "reid.embedding_dim" in meta and int(meta["reid.embedding_dim"]) != dim:
            raise ModelError(f"model metadata says dim {meta['reid.embedding_dim']} but it outputs {dim}")
        return dim

    # --- batching ----------------------------------------------------------------------------------
    def _worker(self) -> None:
        max_batch = self.settings.max_batch
        max_wait = self.settings.max_wait_ms / 1000.0
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            n = len(first.x)
            deadline = time.perf_counter() + max_wait
            stop = False
            while n < max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    left = deadline - time.perf_counter()
                    if left <= 0 or self._incoming == 0:  # nobody is preparing a request: don't wait
                        break
                    try:
                        nxt = self._queue.get(timeout=left)
                    except queue.Empty:
                        break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                n += len(nxt.x)
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[_Request]) -> None:
        try:
            x = np.concatenate([r.x for r in batch]) if len(batch) > 1 else batch[0].x
            # region features only when a request in this batch asked for them (tracklet pooling);
            # plain queries run the graph cut down to the embedding
            want = bool(self.info.regions) and any(r.regions is not None for r in batch)
            session, outputs = (self.whole_session(), None) if want else (self.embed_session, [self._first_output])
            outs, region_outs = [], []
            for i in range(0, len(x), self.settings.max_batch):
                chunk = x[i : i + self.settings.max_batch]
                result = session.run(outputs, {self.input_name: chunk})
                outs.append(result[0])
                if want:
                    region_outs.append(result[1])
                if self.on_batch is not None:
                    self.on_batch(len(chunk))
            y = _l2n(np.concatenate(outs))
            regions = np.concatenate(region_outs) if region_outs else None
        except Exception as e:  # hand the error to every waiter instead of killing the worker
            for r in batch:
                if not r.fut.done():
                    r.fut.set_exception(e)
            return
        i = 0
        for r in batch:
            if r.regions is not None:
                r.regions.set_result(regions[i : i + len(r.x)] if regions is not None else None)
            r.fut.set_result(y[i : i + len(r.x)])
            i += len(r.x)

    def submit(self, images_bgr: Sequence[np.ndarray], regions: Future | None = None) -> Future:
        """Queue crops for embedding; the future yields [N, D] normalised float32 (and ``regions``,
        if given, the [N, R, D] region features of a model that has them)."""
        fut: Future = Future()
        if len(images_bgr) == 0:
            fut.set_result(np.zeros((0, self.info.dim), np.float32))
            if regions is not None:
                regions.set_result(None)
            return fut
        with self._incoming_lock:  # announce it: the batcher waits for company only while some is coming
            self._incoming += 1
        try:
            x = preprocess(list(images_bgr), self.info.spec)
            self._queue.put(_Request(x, fut, regions))
        finally:
            with self._incoming_lock:
                self._incoming -= 1
        return fut

    def embed(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        return self.submit(images_bgr).result()

    async def embed_async(self, images_bgr: Sequence[np.ndarray]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        fut = await loop.run_in_executor(None, self.submit, images_bgr)
        return await asyncio.wrap_future(fut)

    # --- tracklets ---------------------------------------------------------------------------------
    def embed_tracklet(self, frames_bgr: Sequence[np.ndarray]) -> np.ndarray:
        """One vector for a sequence of crops of one person: the video model over clips of T frames
        when there is one, else the renormalised mean of the frame embeddings."""
        if len(frames_bgr) == 0:
            raise ValueError("a tracklet needs at least one frame")
        if self.vrstc is not None:  # occluded regions repaired from the other frames (reid/models/vrstc.py)
            regions: Future = Future()
            embeddings = self.submit(frames_bgr, regions).result()
            return vrstc_pool(regions.result(), self.vrstc, embeddings)
        if self.video_session is None:
            return _l2n(self.embed(frames_bgr).mean(axis=0))
        t = int(self.info.clip_len or self.settings.video_chunk)
        x = preprocess(list(frames_bgr), self.info.spec)
        n_clips = max(1, -(-len(x) // t))
        idx = np.arange(n_clips * t) % len(x)  # pad the last clip by cycling frames
        clips = x[idx].reshape(n_clips, t, *x.shape[1:])
        name = self.video_session.get_inputs()[0].name
        outs = [self.video_session.run(None, {name: clips[i : i + 8]})[0] for i in range(0, n_clips, 8)]
        return _l2n(_l2n(np.concatenate(outs)).mean(axis=0))

    async def embed_tracklet_async(self, frames_bgr: Sequence[np.ndarray]) -> np.ndarray:
        if self.video_session is None and self.vrstc is None:
            return _l2n((await self.embed_async(frames_bgr)).mean(axis=0))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.embed_tracklet, frames_bgr)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=5)
