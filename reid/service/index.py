"""FAISS index as a rebuildable cache of the vectors held in SQLite.

Inner product on L2-normalised vectors (= cosine). Exact (``Flat``) by default; any factory string
by config. A trainable factory (IVF, PQ …) stays exact until the gallery reaches the training size,
then is trained on the stored vectors and swapped in. Indexes that cannot delete (HNSW) keep
tombstones that search skips. The snapshot on disk names the store generation it reflects; at start
it is loaded and the missed writes are replayed from SQLite (or it is rebuilt from scratch).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from reid.service.store import Store

log = logging.getLogger(__name__)


def training_size(factory: str, min_train: int) -> int:
    """Vectors needed before a trainable factory is worth training (FAISS wants ~39 per IVF cell)."""
    m = re.search(r"IVF(\d+)", factory)
    return max(min_train, 39 * int(m.group(1)) if m else 0)


def exact_search(store: Store, dim: int, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, ids) per query row by brute force over the stored vectors of ``ids`` (-1 where
    fewer exist): small filtered subsets, and indexes that cannot answer themselves."""
    got, mat = store.vectors(ids, dim)
    scores = np.zeros((len(q), k), np.float32)
    out = np.full((len(q), k), -1, np.int64)
    if len(got):
        s = q @ mat.T
        for row in range(len(q)):
            top = np.argsort(-s[row])[:k]
            out[row, : len(top)], scores[row, : len(top)] = got[top], s[row, top]
    return scores, out


def needs_training(factory: str, dim: int) -> bool:
    return not faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT).is_trained


@dataclass
class _State:
    index: faiss.Index
    exact: bool
    generation: int = 0
    max_id: int = 0
    tombstones: set[int] = field(default_factory=set)


class VectorIndex:
    """Thread-safe wrapper: one lock around every FAISS call (adds and searches)."""

    filters_pushdown = False  # filters become an id subset from SQLite (IDSelector)

    def __init__(
        self, dim: int, factory: str = "Flat", min_train: int = 1000, nprobe: int = 32, ef_search: int = 128,
        refine_factor: int = 8,
    ) -> None:
        self.dim = dim
        self.factory = factory
        self.min_train = training_size(factory, min_train)
        self.trainable = needs_training(factory, dim)
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.refine_factor = refine_factor
        self.search_threads = 1  # FAISS OpenMP threads per search (REID_INDEX_THREADS; 0 = default)
        self.lock = threading.RLock()
        self.state = _State(self._empty(exact=self.trainable or factory == "Flat"), exact=True)
        self.state.exact = self._is_flat(self.state)

    # --- construction ------------------------------------------------------------------------------
    def _empty(self, exact: bool) -> faiss.Index:
        if exact:
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        inner = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        self._tune(inner)
        return faiss.IndexIDMap2(inner)

    def _tune(self, inner: faiss.Index) -> None:
        """Set nprobe / efSearch wherever they apply (also inside PCA… and …,RFlat wrappers)."""
        ps = faiss.ParameterSpace()
        for name, value in (("nprobe", self.nprobe), ("efSearch", self.ef_search),
                            ("k_factor_rf", self.refine_factor)):
            try:
                ps.set_index_parameter(inner, name, value)
            except RuntimeError:
                pass

    @staticmethod
    def _is_flat(state: _State) -> bool:
        inner = (
            faiss.downcast_index(state.index.index) if isinstance(state.index, faiss.IndexIDMap2) else None
        )
        return isinstance(inner, faiss.IndexFlat)

    @property
    def exact(self) -> bool:
        return self.state.exact

    @property
    def ntotal(self) -> int:
        return int(self.state.index.ntotal) - len(self.state.tombstones)

    def build(self, store: Store) -> None:
        """Rebuild from SQLite (train when the configured factory needs it and there is enough data)."""
        gen, n, _ = store.state()
        exact = self.factory == "Flat" or (self.trainable and n < self.min_train)
        index = self._empty(exact=exact)
        if not exact and self.trainable:
            train = self._training_sample(store, n)
            log.info("training %s on %d vectors", self.factory, len(train))
            index.index.train(train)
        state = _State(index, exact=False, generation=-1)
        state.exact = self._is_flat(state)
        self._replay(state, store, gen_hint=gen)
        with self.lock:
            self._replay(state, store)  # writes that landed while building
            self.state = state
        log.info("index built: %s, %d vectors, exact=%s", self.factory, self.ntotal, state.exact)

    def _training_sample(self, store: Store, n: int) -> np.ndarray:
        limit = max(self.min_train, 256 * 100)
        m = re.search(r"IVF(\d+)", self.factory)
        if m:
            limit = max(limit, 64 * int(m.group(1)))
        take = min(n, limit)
        keep = (
            set(np.random.default_rng(0).choice(n, size=take, replace=False).tolist()) if take < n else None
        )
        parts, pos = [], 0
        for _ids, vecs in store.iter_vectors(self.dim):
            if keep is None:
                parts.append(vecs)
            else:
                sel = [i for i in range(len(vecs)) if pos + i in keep]
                parts.append(vecs[sel])
            pos += len(vecs)
        return np.ascontiguousarray(np.concatenate(parts)) if parts else np.zeros((0, self.dim), np.float32)

    def wants_training(self) -> bool:
        """True when an exact stand-in should now be replaced by the trained configured index."""
        return self.trainable and self.state.exact and self.ntotal >= self.min_train

    # --- updates -----------------------------------------------------------------------------------
    def _add(self, state: _State, ids: np.ndarray, vecs: np.ndarray) -> None:
        if len(ids) == 0:
            return
        state.index.add_with_ids(np.ascontiguousarray(vecs, np.float32), np.ascontiguousarray(ids, np.int64))
        state.max_id = max(state.max_id, int(ids.max()))

    def _remove(self, state: _State, ids: list[int]) -> None:
        ids = [i for i in ids if i <= state.max_id]
        if not ids:
            return
        try:
            state.index.remove_ids(np.asarray(ids, np.int64))
        except RuntimeError:  # e.g. HNSW cannot delete: skip them at search time
            state.tombstones.update(ids)

    def _replay(self, state: _State, store: Store, gen_hint: int | None = None) -> None:
        """Bring ``state`` up to the store: add rows with id > max_id, remove logged deletions.
        Idempotent, so a write racing with the replay is simply picked up by the next one."""
        gen = store.generation() if gen_hint is None else gen_hint
        if gen == state.generation:
            return
        deleted = store.deleted_since(state.generation) if state.generation >= 0 else []
        for ids, vecs in store.iter_vectors(self.dim, after_id=state.max_id):
            self._add(state, ids, vecs)
        self._remove(state, deleted)
        state.generation = gen

    def sync(self, store: Store) -> None:
        """Catch up with writes made by this or another process (cheap when nothing changed)."""
        with self.lock:
            self._replay(self.state, store)

    def apply(
        self,
        store: Store,
        generation: int,
        ids: np.ndarray | None = None,
        vecs: np.ndarray | None = None,
        removed: list[int] | None = None,
    ) -> None:
        """Mirror our own committed write (which produced ``generation``). If another writer got in
        between, replay from the store instead, which also picks up this write."""
        with self.lock:
            st = self.state
            if generation != st.generation + 1:
                self._replay(st, store)
                return
            if ids is not None and vecs is not None:
                self._add(st, ids, vecs)
            if removed:
                self._remove(st, removed)
            st.generation = generation

    # --- search ------------------------------------------------------------------------------------
    def search(
        self, q: np.ndarray, k: int, subset: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) for each query row; ``subset`` restricts to those ids (IDSelector).
        Missing slots have id -1. Raises RuntimeError when the index cannot filter."""
        q = np.ascontiguousarray(q, np.float32).reshape(-1, self.dim)
        if self.search_threads:  # OpenMP's thread count is per calling thread: set it where we search
            faiss.omp_set_num_threads(self.search_threads)
        with self.lock:
            st = self.state
            kk = min(k + len(st.tombstones), max(int(st.index.ntotal), 1))
            if subset is None:
                scores, ids = st.index.search(q, kk)
            else:
                sel = faiss.IDSelectorBatch(np.ascontiguousarray(subset, np.int64))
                scores, ids = st.index.search(
                    q, min(kk, len(subset) + len(st.tombstones)), params=self._params(sel)
                )
            if st.tombstones:
                mask = np.isin(ids, np.fromiter(st.tombstones, np.int64))
                ids = np.where(mask, -1, ids)
        return scores, ids

    def _params(self, sel: faiss.IDSelector) -> faiss.SearchParameters:
        inner = faiss.downcast_index(self.state.index.index)
        if isinstance(inner, faiss.IndexRefine) and isinstance(faiss.downcast_index(inner.base_index),
                                                               faiss.IndexFlatCodes):
            # e.g. SQfp16,RFlat: IndexRefine takes no selector itself, so filter its scanning base
            # with the selector translated to the IDMap's internal ids (FAISS's IDMap would not)
            base = faiss.SearchParameters()
            base.sel = faiss.IDSelectorTranslated(self.state.index.id_map, sel)
            params = faiss.IndexRefineSearchParameters()
            params.k_factor, params.base_index_params = float(self.refine_factor), base
            params.keep_alive = (base, base.sel, sel)  # SWIG holds raw pointers only
            return params
        if hasattr(inner, "hnsw"):
            return faiss.SearchParametersHNSW(sel=sel, efSearch=self.ef_search)
        if isinstance(inner, faiss.IndexIVF):
            return faiss.SearchParametersIVF(sel=sel, nprobe=self.nprobe)
        return faiss.SearchParameters(sel=sel)

    def close(self) -> None:
        """Nothing to release (the snapshot is written by :meth:`save`)."""

    # --- persistence -------------------------------------------------------------------------------
    def save(self, directory: Path, model_id: str) -> None:
        """Snapshot to ``faiss-<gen>.index`` then atomically repoint ``index.json`` at it."""
        directory.mkdir(parents=True, exist_ok=True)
        with self.lock:
            st = self.state
            name = f"faiss-{st.generation}.index"
            tmp = directory / (name + ".tmp")
            faiss.write_index(st.index, str(tmp))
            os.replace(tmp, directory / name)
            side = {
                "file": name,
                "generation": st.generation,
                "max_id": st.max_id,
                "model_id": model_id,
                "factory": self.factory,
                "dim": self.dim,
                "exact": st.exact,
                "tombstones": sorted(st.tombstones),
            }
        tmpj = directory / "index.json.tmp"
        with open(tmpj, "w") as f:
            json.dump(side, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmpj, directory / "index.json")
        for p in directory.glob("faiss-*.index*"):
            if p.name != name:
                p.unlink(missing_ok=True)

    def load(self, directory: Path, model_id: str, store: Store) -> bool:
        """Load the snapshot and replay what it missed; False (caller rebuilds) if unusable."""
        side_p = directory / "index.json"
        if not side_p.is_file():
            return False
        try:
            side = json.loads(side_p.read_text())
            if (side["model_id"], side["factory"], side["dim"]) != (model_id, self.factory, self.dim):
                log.info("index snapshot is for another model/factory: rebuilding")
                return False
            index = faiss.read_index(str(directory / side["file"]))
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            log.warning("index snapshot unreadable (%s): rebuilding", e)
            return False
        if not isinstance(index, faiss.IndexIDMap2):
            index = faiss.downcast_index(index)
        if not isinstance(index, faiss.IndexIDMap2):
            return False
        state = _State(
            index,
            exact=bool(side["exact"]),
            generation=int(side["generation"]),
            max_id=int(side["max_id"]),
            tombstones=set(side.get("tombstones", [])),
        )
        self._tune(faiss.downcast_index(index.index))
        if state.generation > store.generation():
            log.warning("index snapshot is newer than the database: rebuilding")
            return False
        with self.lock:
            self._replay(state, store)
            if int(state.index.ntotal) - len(state.tombstones) != store.count():
                log.warning("index snapshot disagrees with the database after replay: rebuilding")
                return False
            self.state = state
        return True
