"""Milvus as the vector cache (``REID_INDEX_BACKEND=milvus``), behind the same interface as the FAISS
:class:`reid.service.index.VectorIndex`.

SQLite stays the source of truth; the Milvus collection is a rebuildable cache of it, kept current
the same way as the FAISS index (replay by store generation: rows with ``id > max_id`` are upserted,
logged deletions deleted — both idempotent). Unlike FAISS it keeps each item's camera, kind and
time span beside the vector, so search filters are pushed down as a Milvus filter expression
instead of an id list from SQLite.

``REID_MILVUS_URI`` empty (the default) means embedded Milvus Lite in ``<data dir>/index/milvus.db``;
``http://host:19530`` means a Milvus server (the compose ``milvus`` profile). Milvus Lite opens its
file in one process only: a second process on the same data directory (``reid index`` while the
service runs) works *passively* — it writes SQLite, searches exactly from SQLite, and the process
that holds the file catches up at its next sync.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reid.service.index import exact_search
from reid.service.store import Filters, IndexRows, Store

log = logging.getLogger(__name__)

SIDECAR = "milvus.json"
INDEX_TYPES = ("FLAT", "HNSW", "IVF_FLAT")


class MilvusUnavailable(RuntimeError):
    """pymilvus is not installed or the Milvus server cannot be reached (message says which)."""


def milvus_filter(f: Filters) -> str:
    """The Milvus boolean expression for the same rows as ``Filters.sql()`` selects in SQLite."""
    q = json.dumps  # a double-quoted string literal with escapes, as Milvus expressions take
    parts: list[str] = []
    if f.cameras:
        parts.append(f"camera in [{', '.join(q(c) for c in f.cameras)}]")
    if f.exclude_cameras:
        parts.append(f"camera not in [{', '.join(q(c) for c in f.exclude_cameras)}]")
    if f.since is not None:  # SQL: COALESCE(ts_end, ts_start) >= since
        parts.append(f"(ts_end >= {f.since!r} or (ts_end is null and ts_start >= {f.since!r}))")
    if f.until is not None:
        parts.append(f"ts_start <= {f.until!r}")
    if f.kind:
        parts.append(f"kind == {q(f.kind)}")
    return " and ".join(parts)


@dataclass
class _State:
    generation: int = -1
    max_id: int = 0


class MilvusIndex:
    """One Milvus collection mirroring the store; one lock around every client call."""

    filters_pushdown = True

    def __init__(self, dim: int, uri: str, collection: str = "reid_items", index_type: str = "FLAT",
                 ef_search: int = 128, hnsw_m: int = 32, nlist: int = 1024, nprobe: int = 32) -> None:
        try:
            from pymilvus import MilvusClient
            from pymilvus.exceptions import MilvusException
        except ImportError as e:
            raise MilvusUnavailable("REID_INDEX_BACKEND=milvus needs pymilvus: pip install "
                                    "'reid-search[milvus]'") from e
        if index_type not in INDEX_TYPES:
            raise ValueError(f"milvus index type {index_type!r}: choose one of {', '.join(INDEX_TYPES)}")
        self.dim, self.uri, self.collection, self.index_type = dim, uri, collection, index_type
        self.ef_search, self.hnsw_m, self.nlist, self.nprobe = ef_search, hnsw_m, nlist, nprobe
        self.factory = f"milvus:{index_type}"
        self.lock = threading.RLock()
        self.state = _State()
        self.store: Store | None = None  # set by build/load: passive search reads it
        self.passive = False
        local = "://" not in uri
        if local:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client: Any = MilvusClient(uri)
        except MilvusException as e:
            if not local:
                raise MilvusUnavailable(f"cannot reach Milvus at {uri}: {e}") from e
            log.warning("Milvus Lite file %s is held by another process: this one writes SQLite only and "
                        "searches exactly; the holder's index catches up", uri)
            self.client, self.passive = None, True

    # --- the VectorIndex interface -----------------------------------------------------------------
    @property
    def exact(self) -> bool:
        return self.passive or self.index_type == "FLAT"

    @property
    def ntotal(self) -> int:
        if self.passive:
            return self.store.count() if self.store is not None else 0
        with self.lock:
            if not self.client.has_collection(self.collection):
                return 0
            return int(self.client.get_collection_stats(self.collection)["row_count"])

    def wants_training(self) -> bool:
        return False  # Milvus trains (IVF) and builds its own index segments

    def build(self, store: Store) -> None:
        """Drop the collection and refill it from SQLite."""
        self.store = store
        with self.lock:
            self.state = _State()
            if self.passive:
                self.state.generation = store.generation()
                return
            if self.client.has_collection(self.collection):
                self.client.drop_collection(self.collection)
            self._create()
            self._replay(self.state, store)
        log.info("milvus collection %s rebuilt: %d vectors (%s)", self.collection, self.ntotal, self.index_type)

    def sync(self, store: Store) -> None:
        with self.lock:
            if self.passive:
                self.state.generation = store.generation()
            else:
                self._replay(self.state, store)

    def apply(self, store: Store, generation: int, ids: np.ndarray | None = None,
              vecs: np.ndarray | None = None, removed: list[int] | None = None) -> None:
        """Mirror our own committed write; replay instead when another writer got in between."""
        with self.lock:
            st = self.state
            if self.passive:
                st.generation = generation
                return
            if generation != st.generation + 1:
                self._replay(st, store)
                return
            if ids is not None and len(ids):
                self._upsert(st, store.rows(ids, self.dim))
            if removed:
                self.client.delete(self.collection, ids=[int(i) for i in removed])
            st.generation = generation

    def search(self, q: np.ndarray, k: int, subset: np.ndarray | None = None,
               filters: Filters | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row, -1 where fewer exist; filters run inside Milvus."""
        q = np.ascontiguousarray(q, np.float32).reshape(-1, self.dim)
        if self.passive:
            return self._exact(q, k, subset, filters)
        expr = milvus_filter(filters) if filters is not None else ""
        if subset is not None:
            expr = " and ".join(e for e in (expr, f"id in [{', '.join(str(int(i)) for i in subset)}]") if e)
        params: dict[str, Any] = {"metric_type": "IP"}
        if self.index_type == "HNSW":
            params["params"] = {"ef": max(self.ef_search, k)}
        elif self.index_type == "IVF_FLAT":
            params["params"] = {"nprobe": self.nprobe}
        scores = np.zeros((len(q), k), np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        with self.lock:
            res = self.client.search(self.collection, data=q.tolist(), limit=k, filter=expr,
                                     search_params=params, output_fields=[])
        for row, hits in enumerate(res):
            for j, h in enumerate(hits[:k]):
                ids[row, j], scores[row, j] = int(h["id"]), float(h["distance"])
        return scores, ids

    def save(self, directory: Path, model_id: str) -> None:
        """Milvus persists its own data; record which store generation it reflects."""
        if self.passive:
            return
        with self.lock:
            if hasattr(self.client, "flush"):
                self.client.flush(self.collection)
            side = {"uri": self.uri, "collection": self.collection, "index_type": self.index_type,
                    "generation": self.state.generation, "max_id": self.state.max_id, "model_id": model_id,
                    "dim": self.dim}
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (SIDECAR + ".tmp")
        with open(tmp, "w") as f:
            json.dump(side, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / SIDECAR)

    def load(self, directory: Path, model_id: str, store: Store) -> bool:
        """Reuse the collection when it is for this model, catch up, and check the count."""
        self.store = store
        if self.passive:
            self.state.generation = store.generation()
            return True
        try:
            side = json.loads((directory / SIDECAR).read_text())
            key = (side["uri"], side["collection"], side["index_type"], side["model_id"], side["dim"])
        except (OSError, ValueError, KeyError):
            return False
        if key != (self.uri, self.collection, self.index_type, model_id, self.dim):
            log.info("milvus collection is for another model/index: rebuilding")
            return False
        with self.lock:
            if not self.client.has_collection(self.collection):
                return False
            self.client.load_collection(self.collection)  # a reopened collection starts released
            state = _State(int(side["generation"]), int(side["max_id"]))
            if state.generation > store.generation():
                log.warning("milvus collection is newer than the database: rebuilding")
                return False
            self._replay(state, store)
            if self.ntotal != store.count():
                log.warning("milvus collection disagrees with the database after replay: rebuilding")
                return False
            self.state = state
        return True

    def close(self) -> None:
        if self.client is not None:
            with self.lock:
                self.client.close()

    # --- internals ---------------------------------------------------------------------------------
    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("camera", DataType.VARCHAR, max_length=1024)
        schema.add_field("kind", DataType.VARCHAR, max_length=16)
        schema.add_field("ts_start", DataType.DOUBLE, nullable=True)
        schema.add_field("ts_end", DataType.DOUBLE, nullable=True)
        index = self.client.prepare_index_params()
        params = {"HNSW": {"M": self.hnsw_m, "efConstruction": 200}, "IVF_FLAT": {"nlist": self.nlist}}
        index.add_index(field_name="vector", index_type=self.index_type, metric_type="IP",
                        params=params.get(self.index_type, {}))
        # pymilvus asks Milvus Lite for AllocTimestamp, which Lite does not implement; the client goes
        # on without it, but grpc logs a traceback at ERROR: hide that one call's noise
        grpc_log = logging.getLogger("grpc._server")
        level = grpc_log.level
        grpc_log.setLevel(logging.CRITICAL)
        try:
            self.client.create_collection(self.collection, schema=schema, index_params=index)
        finally:
            grpc_log.setLevel(level)

    def _upsert(self, st: _State, rows: IndexRows) -> None:
        if not len(rows):
            return
        data = [{"id": int(i), "vector": v.tolist(), "camera": c, "kind": kd, "ts_start": a, "ts_end": b}
                for i, v, c, kd, a, b in zip(rows.ids, rows.vectors, rows.cameras, rows.kinds, rows.ts_start,
                                            rows.ts_end, strict=True)]
        self.client.upsert(self.collection, data)
        st.max_id = max(st.max_id, int(rows.ids.max()))

    def _replay(self, st: _State, store: Store) -> None:
        """Bring ``st`` up to the store (idempotent, like the FAISS index's replay)."""
        gen = store.generation()
        if gen == st.generation:
            return
        deleted = store.deleted_since(st.generation) if st.generation >= 0 else []
        for rows in store.iter_rows(self.dim, after_id=st.max_id, batch=2000):
            self._upsert(st, rows)
        if deleted:
            self.client.delete(self.collection, ids=[int(i) for i in deleted])
        st.generation = gen

    def _exact(self, q: np.ndarray, k: int, subset: np.ndarray | None,
               filters: Filters | None) -> tuple[np.ndarray, np.ndarray]:
        """Passive mode: brute force over SQLite (correct, slow; for CLI processes)."""
        assert self.store is not None
        wanted = self.store.filter_ids(filters or Filters()) if subset is None else subset
        return exact_search(self.store, self.dim, q, k, wanted)
