"""Evaluation: embed a split's query and gallery with any embedder, rank, score.

Embedders (duck-typed, see :class:`Embedder`):

* :class:`OnnxEmbedder` — an exported model directory (``image.onnx`` [+ ``video.onnx``]) or a
  single ``.onnx`` file; preprocessing comes from the file's ``reid.*`` metadata, or from an
  explicit :class:`PreprocessSpec` for a foreign model. Torch-free.
* :class:`TorchEmbedder` — a live ``reid.models.networks`` model (checkpoints, periodic evaluation in
  training). torch is imported lazily so ONNX evaluation never needs it.

Modes (query → gallery). An *image item* is one frame; a *tracklet item* is a list of frames
(``datasets.tracklets``: real tracklets where samples carry a trackid, otherwise one
pseudo-tracklet per identity and camera):

* ``i2i`` — query images vs gallery images. Samples without a trackid are used one by one; a real
  tracklet contributes its first frame (TKP's I2I on MARS).
* ``i2v`` — the FIRST frame of each query tracklet vs gallery tracklets (TKP test protocol).
* ``v2v`` — query tracklets vs gallery tracklets.
* ``v2i`` — query tracklets vs gallery images (as in ``i2i``).

A tracklet's embedding: the embedder's video model when it has one (``embed_clips``: all frames in
consecutive 32-frame chunks, weighted by frame count), else the mean of its normalised frame
embeddings, renormalised (``pooling="mean"``), or VRSTC pooling (``pooling="vrstc"``: occluded
body regions repaired from the other frames first, reid/models/vrstc.py; needs an ONNX model with a
``regions`` output). Distance is 1 − cosine of L2-normalised embeddings.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from reid.models.pair_model import PAIR_FILE
from reid.models.preprocess import PreprocessSpec, preprocess, read_image, read_onnx_metadata
from reid.training.datasets import Sample, Split, tracklets
from reid.training.metrics import cosine_distance, evaluate_ranking, l2_normalize

MODES = ("i2i", "i2v", "v2v", "v2i")
CHUNK_FRAMES = 32  # TKP test.py: gallery videos in consecutive 32-frame chunks


@runtime_checkable
class Embedder(Protocol):
    """``embed_images`` maps BGR uint8 crops to L2-normalised float32 [N, D]. An embedder with a
    video model also has ``embed_clips(list of frame lists) -> [N, D]`` (one row per tracklet,
    normalised) and ``has_video = True``."""

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


def _chunks(frames: Sequence, size: int = CHUNK_FRAMES) -> list[Sequence]:
    return [frames[i:i + size] for i in range(0, len(frames), size)]


class OnnxEmbedder:
    """ONNX Runtime on the CPU, batched. ``path``: a model directory or one ``.onnx`` file."""

    def __init__(self, path: str | Path, spec: PreprocessSpec | None = None, batch_size: int = 64,
                 threads: int = 0):
        import onnxruntime as ort

        from reid.service.embedder import (  # one rule for "what is a model path" and what to run
            ModelError,
            first_output_graph,
            resolve_model,
        )

        path = Path(path)
        if path.is_file() and path.suffix.lower() != ".onnx":
            raise ValueError(f"not an ONNX file or model directory: {path}")
        try:
            image, self.video_path = resolve_model(path)
        except ModelError as exc:
            raise ValueError(str(exc)) from exc
        self.image_path = image
        try:
            meta = read_onnx_metadata(str(image))
        except Exception as exc:  # onnx raises its own DecodeError types
            raise ValueError(f"cannot read ONNX model {image}: {exc}") from exc
        if spec is None:
            try:
                spec = PreprocessSpec.from_metadata(meta)
            except KeyError as exc:
                raise ValueError(f"{image} has no reid.* preprocessing metadata; give the preprocessing "
                                 "explicitly (--height/--width/--color/--scale/--mean/--std)") from exc
        self.spec = spec
        self.meta = meta
        self.batch_size = batch_size
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        try:
            cpu = ["CPUExecutionProvider"]
            self._img = ort.InferenceSession(str(image), sess_options=so, providers=cpu)
            graph = first_output_graph(image)  # plain embedding runs skip the regions / maps branches
            self._img_embed = ort.InferenceSession(graph, sess_options=so, providers=cpu) if graph else self._img
            self._vid = (ort.InferenceSession(str(self.video_path), sess_options=so, providers=cpu)
                         if self.video_path else None)
        except Exception as exc:
            raise ValueError(f"ONNX Runtime cannot load {image}: {exc}") from exc
        self._img_in = self._img.get_inputs()[0].name
        self._outputs = [o.name for o in self._img.get_outputs()]
        self.has_video = self._vid is not None
        self.has_regions = len(self._outputs) > 1 and "reid.regions" in meta
        self.has_maps = "maps" in self._outputs and "reid.map_grid" in meta
        self.vrstc_tau = float(meta["reid.vrstc_tau"]) if "reid.vrstc_tau" in meta else None
        self.pair_path = path / PAIR_FILE if path.is_dir() else None
        self.name = str(path)

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return self._run(images, [])[0]

    def embed_parts(self, images: Sequence[np.ndarray], regions: bool = False,
                    maps: bool = False) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(normalised embeddings [N, D], region features [N, R, D] — VRSTC —, spatial maps
        [N, C, h, w] — CAN); each extra is None unless asked for."""
        if regions and not self.has_regions:
            raise ValueError(f"{self.name} has no regions output, which VRSTC pooling needs (export it again "
                             "with `reid export`)")
        if maps and not self.has_maps:
            raise ValueError(f"{self.name} has no maps output, which CAN re-ranking needs (export it again "
                             "with `reid export`)")
        extra = [self._outputs[1]] * regions + ["maps"] * maps
        got = list(self._run(images, extra))
        return got[0], got.pop(1) if regions else None, got[1] if maps else None

    def _run(self, images: Sequence[np.ndarray], extra: list[str]) -> tuple[np.ndarray, ...]:
        """The embeddings and the ``extra`` outputs."""
        names = [self._outputs[0], *extra]
        session = self._img if extra else self._img_embed
        parts: list[list[np.ndarray]] = [[] for _ in names]
        for i in range(0, len(images), self.batch_size):
            batch = preprocess(list(images[i:i + self.batch_size]), self.spec)
            for rows, result in zip(parts, session.run(names, {self._img_in: batch}), strict=True):
                rows.append(np.asarray(result, np.float32))
        if not parts[0]:
            return (np.zeros((0, 0), np.float32), *(None for _ in extra))
        return (l2_normalize(np.concatenate(parts[0]).reshape(len(images), -1)),
                *(np.concatenate(rows) for rows in parts[1:]))

    def embed_clips(self, clips: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
        """One embedding per tracklet: video.onnx on each 32-frame chunk, chunk outputs averaged
        with weights = frame counts, renormalised. (video.onnx normalises each chunk, so this is
        the TKP frame mean only when a tracklet fits one chunk.)"""
        if self._vid is None:
            raise RuntimeError(f"{self.name} has no video.onnx")
        name = self._vid.get_inputs()[0].name
        rows = []
        for frames in clips:
            acc, n = 0.0, 0
            for chunk in _chunks(list(frames)):
                x = preprocess(list(chunk), self.spec)[None]
                acc = acc + np.asarray(self._vid.run(None, {name: x})[0], np.float32)[0] * len(chunk)
                n += len(chunk)
            rows.append(acc / max(n, 1))
        return l2_normalize(np.stack(rows)) if rows else np.zeros((0, 0), np.float32)


class TorchEmbedder:
    """A ``reid.models.networks`` model: the image branch for frames, the TKP video branch (if any) for
    tracklets: per-frame features of every 32-frame chunk, mean over all frames (TKP test.py).
    The model's train/eval mode is restored after each call."""

    def __init__(self, model, cfg, batch_size: int = 64, spec: PreprocessSpec | None = None):
        from reid.models.networks import image_branch, video_branch

        self.model = model
        self.spec = spec or cfg.preprocess
        self.batch_size = batch_size
        self._image = image_branch(model)
        self._video = video_branch(model)
        self.has_video = self._video is not None
        self.name = f"torch:{getattr(cfg, 'arch', 'model')}"

    def _device(self):
        return next(self.model.parameters()).device

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        was = self.model.training
        self.model.eval()
        out = []
        try:
            with torch.no_grad():
                for i in range(0, len(images), self.batch_size):
                    x = torch.from_numpy(preprocess(list(images[i:i + self.batch_size]), self.spec))
                    out.append(F.normalize(self._image(x.to(self._device())).float(), dim=1).cpu().numpy())
        finally:
            self.model.train(was)
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def embed_clips(self, clips: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        if self._video is None:
            raise RuntimeError("this model has no video branch")
        was = self.model.training
        self.model.eval()
        rows = []
        try:
            with torch.no_grad():
                for frames in clips:
                    feats = []
                    for chunk in _chunks(list(frames)):
                        x = torch.from_numpy(preprocess(list(chunk), self.spec))[None].to(self._device())
                        feats.append(self._video.frame_features(x)[0].float())
                    rows.append(F.normalize(torch.cat(feats).mean(0), dim=0).cpu().numpy())
        finally:
            self.model.train(was)
        return np.stack(rows) if rows else np.zeros((0, 0), np.float32)


def load_embedder(path: str | Path, spec: PreprocessSpec | None = None, threads: int = 0):
    """A model directory or ``.onnx`` file → :class:`OnnxEmbedder`; a ``.pt``/``.pth`` training
    checkpoint → :class:`TorchEmbedder` (CPU)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model not found: {path}")
    if path.is_dir() or path.suffix.lower() == ".onnx":
        return OnnxEmbedder(path, spec=spec, threads=threads)
    if path.suffix.lower() in (".pt", ".pth"):
        try:
            import torch

            from reid.models.networks import load_checkpoint
        except ImportError as exc:
            raise ValueError(f"evaluating a checkpoint needs torch (pip install '.[train]'): {exc}") from exc

        if threads:
            torch.set_num_threads(threads)
        try:
            model, cfg, _ = load_checkpoint(str(path))
        except (RuntimeError, KeyError, OSError, ValueError) as exc:
            raise ValueError(f"cannot load checkpoint {path}: {exc}") from exc
        return TorchEmbedder(model, cfg, spec=spec)
    raise ValueError(f"unknown model type {path} (expected a model directory, .onnx or .pt)")


# -- items and embedding -------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One ranked entity: a single image or a tracklet (``paths`` in frame order)."""

    pid: int
    camid: int
    paths: tuple[str, ...]


def image_items(samples: list[Sample]) -> list[Item]:
    """Samples without a trackid one by one; a real tracklet by its first frame."""
    items = [Item(s.pid, s.camid, (s.path,)) for s in samples if s.trackid < 0]
    items += [Item(t.pid, t.camid, t.paths[:1]) for t in tracklets([s for s in samples if s.trackid >= 0])]
    return items


def first_frame_items(samples: list[Sample]) -> list[Item]:
    return [Item(t.pid, t.camid, t.paths[:1]) for t in tracklets(samples)]


def tracklet_items(samples: list[Sample]) -> list[Item]:
    return [Item(t.pid, t.camid, t.paths) for t in tracklets(samples)]


class EmbeddingCache:
    """Per-image embeddings keyed by path, for one embedder, one flip setting and one tracklet
    pooling: an image that appears in several item sets or modes is decoded and embedded once.
    ``vrstc`` (a :class:`reid.models.vrstc.VrstcConfig`) switches tracklet pooling to VRSTC;
    ``maps`` also keeps each image's spatial map (CAN re-ranking)."""

    def __init__(self, embedder, flip: bool = False, batch_size: int = 64, vrstc=None, maps: bool = False):
        self.embedder, self.flip, self.batch_size, self.vrstc, self.want_maps = embedder, flip, batch_size, vrstc, maps
        for wanted, attr, why in ((vrstc is not None, "has_regions", "a regions output, which VRSTC pooling"),
                                  (maps, "has_maps", "a maps output, which CAN re-ranking")):
            if wanted and not getattr(embedder, attr, False):
                raise ValueError(f"{getattr(embedder, 'name', 'this model')} has no {why} needs "
                                 "(export it again with `reid export`)")
        self.vectors: dict[str, np.ndarray] = {}
        self.regions: dict[str, np.ndarray] = {}
        self.maps: dict[str, np.ndarray] = {}
        self.clips: dict[tuple[str, ...], np.ndarray] = {}

    def _embed(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        regions = self.vrstc is not None
        if not regions and not self.want_maps:
            e, r, m = self.embedder.embed_images(images), None, None
        else:
            e, r, m = self.embedder.embed_parts(images, regions=regions, maps=self.want_maps)
        if self.flip:
            flipped = [cv2.flip(im, 1) for im in images]
            if r is None and m is None:
                return l2_normalize(e + self.embedder.embed_images(flipped)), None, None
            ef, rf, mf = self.embedder.embed_parts(flipped, regions=regions, maps=self.want_maps)
            e = l2_normalize(e + ef)
            r = (r + rf) / 2 if r is not None else None
            m = (m + mf[..., ::-1]) / 2 if m is not None else None  # the flipped map, flipped back
        return e, r, m

    def images(self, paths: Sequence[str]) -> np.ndarray:
        todo = list(dict.fromkeys(p for p in paths if p not in self.vectors))
        for i in range(0, len(todo), self.batch_size):
            part = todo[i:i + self.batch_size]
            vectors, regions, maps = self._embed([read_image(p) for p in part])
            for j, p in enumerate(part):
                self.vectors[p] = vectors[j]
                if regions is not None:
                    self.regions[p] = regions[j]
                if maps is not None:
                    self.maps[p] = maps[j].astype(np.float16)
        return np.stack([self.vectors[p] for p in paths]) if paths else np.zeros((0, 0), np.float32)

    def item_maps(self, items: list[Item]) -> np.ndarray:
        """[N, C, h, w]: each item's spatial map, a tracklet's the mean of its frames' (CAN's prototype)."""
        self.images([p for it in items for p in it.paths])
        return np.stack([np.mean([self.maps[p] for p in it.paths], axis=0, dtype=np.float32) for it in items])

    def items(self, items: list[Item], video: bool) -> np.ndarray:
        """One row per item. Single images come from the image cache; tracklets from the video
        model when ``video`` and the embedder has one, else the renormalised frame mean."""
        if not items:
            return np.zeros((0, 0), np.float32)
        if video and self.vrstc is not None and not getattr(self.embedder, "has_video", False):
            from reid.models.vrstc import pool

            self.images([p for it in items for p in it.paths])
            return np.stack([pool(np.stack([self.regions[p] for p in it.paths]), self.vrstc,
                                  np.stack([self.vectors[p] for p in it.paths])) for it in items])
        if not video or not getattr(self.embedder, "has_video", False):
            flat = [p for it in items for p in it.paths]
            frames = self.images(flat)
            bounds = np.cumsum([0] + [len(it.paths) for it in items])
            sums = np.add.reduceat(frames, bounds[:-1], axis=0)
            return l2_normalize(sums)
        out = []
        for it in items:
            if it.paths not in self.clips:
                frames = [read_image(p) for p in it.paths]
                e = self.embedder.embed_clips([frames])[0]
                if self.flip:
                    e = l2_normalize(e + self.embedder.embed_clips([[cv2.flip(f, 1) for f in frames]])[0])
                self.clips[it.paths] = e
            out.append(self.clips[it.paths])
        return np.stack(out)


def mode_items(split: Split, mode: str) -> tuple[list[Item], list[Item], bool, bool]:
    """(query items, gallery items, query is video, gallery is video) for ``mode``."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    qv, gv = mode[0] == "v", mode[2] == "v"
    if qv:
        q = tracklet_items(split.query)
    else:
        q = first_frame_items(split.query) if gv else image_items(split.query)
    g = tracklet_items(split.gallery) if gv else image_items(split.gallery)
    return q, g, qv, gv


@dataclass
class Ranking:
    """Everything one evaluation computed (the CLI's visualiser reads it)."""

    metrics: dict
    dist: np.ndarray
    query: list[Item]
    gallery: list[Item]


RERANKERS = ("kreciprocal", "can")


def rank(split: Split, embedder, mode: str = "i2i", flip: bool = False, ap: str = "noninterp",
         rerank: str | None = None, aqe: bool = False, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
         aqe_k: int = 5, aqe_alpha: float = 3.0, cache: EmbeddingCache | None = None,
         vrstc=None, rerank_k: int = 100, pair_model: str | Path | None = None) -> Ranking:
    """``vrstc``: a :class:`reid.models.vrstc.VrstcConfig` to pool tracklets with VRSTC (else mean).
    ``rerank``: ``kreciprocal`` (k1, k2, lambda_value) or ``can`` — each query's ``rerank_k``
    nearest re-scored by CAN's pair model (``pair_model``, default the model directory's pair.onnx)."""
    if rerank not in (None, *RERANKERS):
        raise ValueError(f"unknown re-ranking {rerank!r}; choose one of {RERANKERS}")
    if rerank_k < 1:
        raise ValueError(f"rerank_k must be ≥ 1, got {rerank_k}")
    started = time.time()
    q_items, g_items, qv, gv = mode_items(split, mode)
    if not q_items or not g_items:
        raise ValueError(f"{split.name}: {mode} needs a non-empty query and gallery "
                         f"(got {len(q_items)} queries, {len(g_items)} gallery items)")
    pair = None
    if rerank == "can":
        from reid.models.pair_model import PairModel

        if (qv or gv) and getattr(embedder, "has_video", False):
            raise ValueError("CAN re-ranking scores image maps; this model embeds tracklets with its video model")
        pair_model = pair_model or getattr(embedder, "pair_path", None)
        if pair_model is None:
            raise ValueError(f"{getattr(embedder, 'name', 'this model')}: CAN re-ranking needs an exported "
                             "model directory with pair.onnx (or give the pair model)")
        pair = PairModel(pair_model)
    want_maps = pair is not None
    if (cache is None or cache.embedder is not embedder or cache.flip != flip or cache.vrstc != vrstc
            or (want_maps and not cache.want_maps)):
        cache = EmbeddingCache(embedder, flip, vrstc=vrstc, maps=want_maps)
    qf = cache.items(q_items, qv)
    gf = cache.items(g_items, gv)
    if aqe:
        from reid.training.rerank import average_query_expansion

        qf, gf = average_query_expansion(qf, gf, k=aqe_k, alpha=aqe_alpha)
    if rerank == "kreciprocal":
        from reid.training.rerank import k_reciprocal_rerank

        dist = k_reciprocal_rerank(qf, gf, k1=k1, k2=k2, lambda_value=lambda_value)
    else:
        dist = cosine_distance(qf, gf)
    if pair is not None:
        from reid.models.pair_model import rerank_distances

        q_maps, g_maps = cache.item_maps(q_items), cache.item_maps(g_items)
        pair.check(q_maps.shape[1:])
        dist = rerank_distances(dist, q_maps, g_maps, pair, rerank_k)
    m = evaluate_ranking(dist, [i.pid for i in q_items], [i.pid for i in g_items],
                         [i.camid for i in q_items], [i.camid for i in g_items], ap=ap)
    metrics = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}
    metrics.update(protocol=f"{split.name}: same-pid same-camera gallery items are junk; "
                            f"queries without a true match skipped; {ap} AP; 1-cos distance",
                   mode=mode, num_gallery=len(g_items), flip=flip, ap=ap, rerank=rerank or "none", aqe=aqe,
                   tracklet_pooling="vrstc" if vrstc is not None else "mean",
                   video_model=bool((qv or gv) and getattr(embedder, "has_video", False)),
                   seconds=round(time.time() - started, 3))
    if rerank == "can":
        metrics["rerank_k"] = rerank_k
    return Ranking(metrics, dist, q_items, g_items)


def evaluate(split: Split, embedder, mode: str = "i2i", flip: bool = False, ap: str = "noninterp",
             rerank: str | None = None, aqe: bool = False, cache: EmbeddingCache | None = None, **kw) -> dict:
    """Metrics (rank1/5/10, mAP, mINP in percent; num_query scored, num_skipped, num_gallery)
    plus protocol, mode and seconds. Pass one :class:`EmbeddingCache` to several calls (same
    embedder, same weights, same flip) to embed shared images once."""
    return rank(split, embedder, mode, flip=flip, ap=ap, rerank=rerank, aqe=aqe, cache=cache, **kw).metrics
