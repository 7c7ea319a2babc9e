"""CAN's exported pair scorer (``pair.onnx``, reid/models/can.py) in ONNX Runtime — torch-free, so
the service and ``reid eval --rerank can`` share it.

A shortlist from the index is re-scored pair by pair: the query's spatial map against each
candidate's (the image model's ``maps`` output; a tracklet's map is the mean of its frames'
maps, CAN's class prototype). The re-scored items are ordered by the pair score and put ahead
of the rest of the ranking, which keeps its order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reid.models.preprocess import read_onnx_metadata

PAIR_FILE = "pair.onnx"


class PairModelError(ValueError):
    """pair.onnx is missing, unreadable or does not fit the image model's maps."""


class PairModel:
    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int = 0,
                 expected_map: tuple[int, ...] | None = None):
        """``expected_map``: (C, h, w) of the image model's ``maps`` output, checked against the file."""
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise PairModelError(f"no CAN pair model at {path} (train one with `reid train-can`)")
        try:
            meta = read_onnx_metadata(str(path))
        except Exception as exc:  # onnx raises its own DecodeError types
            raise PairModelError(f"cannot read {path}: {exc}") from exc
        if meta.get("reid.kind") != "pair":
            raise PairModelError(f"{path} is not a pair model (reid.kind = {meta.get('reid.kind')!r})")
        h, w = (int(v) for v in meta["reid.map_grid"].split("x"))
        self.map_shape = (int(meta["reid.map_channels"]), h, w)
        self.path = path
        if expected_map is not None:
            self.check(expected_map)
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), sess_options=so,
                                            providers=providers or ["CPUExecutionProvider"])
        self.meta = meta

    def check(self, map_shape: tuple[int, ...]) -> None:
        """Refuse an image model whose maps this pair model was not trained on."""
        if tuple(map_shape) != self.map_shape:
            raise PairModelError(f"{self.path} scores maps of {self.map_shape} but the image model outputs "
                                 f"{tuple(map_shape)}: it was trained for another image model")

    def scores(self, query_map: np.ndarray, candidate_maps: np.ndarray) -> np.ndarray:
        """[K] pair scores of one query map [C, h, w] against K candidate maps [K, C, h, w]."""
        if len(candidate_maps) == 0:
            return np.zeros(0, np.float32)
        q = np.asarray(query_map, np.float32).reshape(1, *self.map_shape)
        c = np.asarray(candidate_maps, np.float32).reshape(-1, *self.map_shape)
        return np.asarray(self.session.run(None, {"query": q, "candidates": c})[0], np.float32)


def rerank_distances(dist: np.ndarray, query_maps: np.ndarray, gallery_maps: np.ndarray, pair: PairModel,
                     k: int) -> np.ndarray:
    """A copy of ``dist`` [Q, G] (1 − cos) where each query's k nearest gallery items are re-ordered
    by the pair score and kept ahead of all others (distance 1 − score − 3, below any cosine's)."""
    if k < 1:
        raise ValueError(f"rerank k must be ≥ 1, got {k}")
    out = dist.copy()
    k = min(k, dist.shape[1])
    top = np.argpartition(dist, k - 1, axis=1)[:, :k]
    for i, cand in enumerate(top):
        out[i, cand] = -2.0 - pair.scores(query_maps[i], gallery_maps[cand])
    return out
