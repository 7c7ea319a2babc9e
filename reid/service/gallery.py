"""The gallery facade: the one place that writes and searches the gallery.

A write stores, in one SQLite transaction, the item's metadata, its vector and the paths of its
crops and thumbnail (files written before the commit), then mirrors the vector into the FAISS
cache. When ``add_*`` returns, the item is durable: a crash loses nothing and never leaves half an
item (a crash before the commit leaves at most orphan files, swept at the next start).

Callers (API routes, the footage worker, the CLI) use:

* :meth:`Gallery.add_images` — one item per image.
* :meth:`Gallery.add_tracklet` — one item for a sequence of crops of one person (footage).
* :meth:`Gallery.search`, :meth:`Gallery.get`, :meth:`Gallery.list`, :meth:`Gallery.delete`.

With a CAN pair model (``pair.onnx`` in the model directory) every item also gets a spatial map
(fp16, 8 KB for the default model; a tracklet's is the mean over up to ``MAP_FRAMES`` of its
frames), stored in the same transaction, and ``search(rerank="can")`` re-scores the index's
shortlist with it. Items stored without one (another model, a gallery opened without an
embedder) get theirs from their kept crops the first time they are shortlisted.

Crops are kept on disk (``items/<bucket>/<id>/``) so ``reid reindex`` can re-embed with a new model.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from reid.service.embedder import Embedder, ModelInfo
from reid.service.index import VectorIndex, exact_search
from reid.service.index_milvus import MilvusIndex
from reid.service.store import Filters, ItemRecord, Store

log = logging.getLogger(__name__)

DB_NAME = "reid.sqlite3"
MAP_FRAMES = 8  # a tracklet's CAN map: the mean over at most this many evenly spaced frames
LOCK_NAME = "gallery.lock"


class DataDirBusy(RuntimeError):
    """Another process holds the data directory in a way that excludes this use."""


def lock_data_dir(data_dir: Path, exclusive: bool) -> IO:
    """flock ``data_dir/gallery.lock``: every open Gallery holds it shared and ``reid reindex``
    exclusively, so a re-embed can never run under a live server, indexer or worker. The kernel
    drops the lock when its process dies (even by SIGKILL), so a crash leaves nothing stale."""
    data_dir.mkdir(parents=True, exist_ok=True)
    f = open(data_dir / LOCK_NAME, "a+")  # noqa: SIM115 (held for the Gallery's lifetime)
    try:
        fcntl.flock(f, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        if exclusive:
            raise DataDirBusy(f"{data_dir} is in use by a running `reid serve`, `reid index` or `reid worker`; "
                              "stop it before `reid reindex`") from None
        raise DataDirBusy(f"`reid reindex` is running on {data_dir}; start this after it has finished") from None
    return f


class _AlreadyIndexed(Exception):
    """Rolls back a footage write whose footage id is already in the gallery."""


class ItemsNotFound(LookupError):
    """Some of the gallery items a request names do not exist; the message names them."""

    def __init__(self, missing: Sequence[int]) -> None:
        super().__init__(f"gallery item{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} not found")


class ModelMismatch(RuntimeError):
    """The gallery's vectors come from another model than the configured one."""


@dataclass
class Crop:
    """A person crop: BGR pixels plus, optionally, the original encoded bytes (kept verbatim)."""

    bgr: np.ndarray
    data: bytes | None = None
    ext: str = ".jpg"


@dataclass
class NewItem:
    """What one write stores for an item: its row, vector, crops and, for footage, its scene."""

    record: ItemRecord
    vector: np.ndarray
    crops: Sequence[Crop]
    scene: Crop | None = None  # the frame the person was seen in, box marked (footage tracklets)


@dataclass
class Hit:
    record: ItemRecord
    score: float


def _as_crop(x: Crop | np.ndarray | Any) -> Crop:
    if isinstance(x, Crop):
        return x
    if isinstance(x, np.ndarray):
        return Crop(bgr=x)
    return Crop(bgr=x.bgr, data=getattr(x, "data", None), ext=getattr(x, "ext", ".jpg"))  # DecodedImage


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _encode_jpeg(bgr: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("cannot encode image")
    return buf.tobytes()


class Gallery:
    """Gallery over one data directory, tied to one model (see :class:`ModelMismatch`)."""

    def __init__(
        self,
        settings: Any,
        embedder: Embedder | None = None,
        info: ModelInfo | None = None,
        background: bool = True,
    ) -> None:
        if embedder is None and info is None:
            raise ValueError("Gallery needs an embedder or the model info")
        self.settings = settings
        self.embedder = embedder
        self.info: ModelInfo = info or embedder.info  # type: ignore[union-attr]
        self.data_dir = Path(settings.data_dir)
        self._lock = lock_data_dir(self.data_dir, exclusive=False)
        try:
            self._open(settings, background)
        except BaseException:
            self._lock.close()
            raise

    def _open(self, settings: Any, background: bool) -> None:
        self.store = Store(self.data_dir / DB_NAME, settings.sqlite_synchronous)
        self._check_model()
        self.index_dir = self.data_dir / "index"
        self.index = make_index(settings, self.info.dim, self.index_dir)
        t0 = time.perf_counter()
        if not self.index.load(self.index_dir, self.info.model_id, self.store):
            self.index.build(self.store)
            self.save()
        log.info("gallery ready: %d items (%.2fs)", self.index.ntotal, time.perf_counter() - t0)
        self._sweep_orphans()
        self._saved_generation = self.index.state.generation
        self._stop = threading.Event()
        self._bg: threading.Thread | None = None
        if background:
            self._bg = threading.Thread(target=self._background, name="index-saver", daemon=True)
            self._bg.start()

    # --- setup -------------------------------------------------------------------------------------
    def _check_model(self) -> None:
        stored = self.store.get_meta("model_id")
        n = self.store.count()
        if stored is not None and stored != self.info.model_id and n > 0:
            desc = self.store.get_meta("model_desc") or stored
            raise ModelMismatch(
                f"the gallery in {self.data_dir} holds {n} vectors from model {desc}, but the configured "
                f"model is {self.info.describe()}. Vectors from different models cannot be mixed: re-embed "
                f"the stored crops with `reid reindex --model {self.settings.model} --data-dir "
                f"{self.data_dir}` (with the service stopped), or set REID_MODEL back to the original model."
            )
        if stored != self.info.model_id:
            self.store.set_meta("model_id", self.info.model_id)
            self.store.set_meta("model_desc", self.info.describe())
            self.store.set_meta("dim", str(self.info.dim))

    def _item_dir(self, item_id: int) -> Path:
        return self.data_dir / "items" / f"{item_id // 1000:05d}" / str(item_id)

    def _sweep_orphans(self) -> None:
        """Remove crop folders of rows that never committed or were deleted (ids ≤ max committed)."""
        root = self.data_dir / "items"
        if not root.is_dir():
            return
        ids = self.store.all_ids()
        top = max(ids) if ids else 0
        removed = 0
        for bucket in root.iterdir():
            for d in bucket.iterdir() if bucket.is_dir() else []:
                if d.name.isdigit() and int(d.name) <= top and int(d.name) not in ids:
                    shutil.rmtree(d, ignore_errors=True)
                    removed += 1
        if removed:
            log.info("swept %d orphan crop folders", removed)

    # --- writes ------------------------------------------------------------------------------------
    def _need_embedder(self) -> Embedder:
        if self.embedder is None:
            raise RuntimeError("this Gallery was opened without an embedder")
        return self.embedder

    def add_images(
        self,
        images: Sequence[Crop | np.ndarray],
        camera: str,
        timestamp: float | None = None,
        meta: dict[str, Any] | None = None,
        sources: Sequence[str | None] | None = None,
        vectors: np.ndarray | None = None,
    ) -> list[ItemRecord]:
        """One gallery item per image, all committed together. ``vectors`` skips embedding."""
        crops = [_as_crop(x) for x in images]
        if vectors is None:
            vectors = self._need_embedder().embed([c.bgr for c in crops])
        entries = []
        for i, c in enumerate(crops):
            rec = ItemRecord(
                kind="image",
                camera=camera,
                ts_start=timestamp,
                ts_end=timestamp,
                source=sources[i] if sources else None,
                meta=meta,
                n_frames=1,
            )
            entries.append(NewItem(rec, vectors[i], [c]))
        return self.add_records(entries)

    def add_tracklet(
        self,
        frames: Sequence[Crop | np.ndarray],
        camera: str,
        ts_start: float | None = None,
        ts_end: float | None = None,
        source: str | None = None,
        footage_id: str | None = None,
        frame_start: int | None = None,
        frame_end: int | None = None,
        box: Sequence[float] | None = None,
        meta: dict[str, Any] | None = None,
        vector: np.ndarray | None = None,
        scene: Crop | np.ndarray | None = None,
    ) -> ItemRecord:
        """One gallery item for a tracklet (crops of one person over time).

        ``box`` is a representative [x, y, w, h] in the source frame; ``frame_start``/``frame_end``
        locate it in the footage ``footage_id``; ``scene`` is that frame with the person marked. The
        vector comes from the video model when the model has one, else the renormalised mean of
        frame embeddings (or pass ``vector``).
        """
        crops = [_as_crop(x) for x in frames]
        if not crops:
            raise ValueError("a tracklet needs at least one frame")
        if vector is None:
            vector = self._need_embedder().embed_tracklet([c.bgr for c in crops])
        rec = ItemRecord(
            kind="tracklet",
            camera=camera,
            ts_start=ts_start,
            ts_end=ts_end if ts_end is not None else ts_start,
            source=source,
            footage_id=footage_id,
            frame_start=frame_start,
            frame_end=frame_end,
            box=[float(v) for v in box] if box is not None else None,
            meta=meta,
            n_frames=len(crops),
        )
        return self.add_records([NewItem(rec, vector, crops, _as_crop(scene) if scene is not None else None)])[0]

    def add_records(self, entries: Sequence[NewItem], unless_footage: str | None = None) -> list[ItemRecord]:
        """The atomic write: rows + vectors + crop, thumbnail and scene files in one transaction.
        ``unless_footage`` (footage jobs): write nothing and return [] when items of that footage id
        already exist — checked inside the transaction, so re-submitted footage is never doubled."""
        if not entries:
            return []
        if unless_footage is not None:
            try:
                return self._add_records(entries, unless_footage)
            except _AlreadyIndexed:
                return []
        return self._add_records(entries, None)

    def _add_records(self, entries: Sequence[NewItem], unless_footage: str | None) -> list[ItemRecord]:
        vecs = np.stack([np.asarray(e.vector, np.float32).reshape(-1) for e in entries])
        if vecs.shape[1] != self.info.dim:
            raise ValueError(f"vector dim {vecs.shape[1]} != model dim {self.info.dim}")
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        maps = self.item_maps([[c.bgr for c in e.crops] for e in entries]) if self.pair else None
        now = time.time()
        out: list[ItemRecord] = []
        with self.store.transaction() as tx:
            if unless_footage is not None and Store.has_footage(tx.c, unless_footage):
                raise _AlreadyIndexed(unless_footage)
            for entry, vec in zip(entries, vecs, strict=True):
                rec = entry.record
                rec.model_id = self.info.model_id
                rec.created_at = now
                rec.id = Store.insert(tx.c, rec, vec)
                self._write_files(entry)
                Store.set_files(tx.c, rec)
                out.append(rec)
            if maps is not None:
                Store.put_maps(tx.c, [(r.id, self.info.model_id, m.tobytes()) for r, m in zip(out, maps, strict=True)])
        ids = np.asarray([r.id for r in out], np.int64)
        self.index.apply(self.store, tx.generation, ids=ids, vecs=vecs)
        return out

    def _write_files(self, entry: NewItem) -> None:
        """Write the item's files and set their paths (relative to the data dir) on its record."""
        rec, crops = entry.record, entry.crops
        d = self._item_dir(rec.id)
        if d.exists():  # left by a transaction that never committed
            shutil.rmtree(d)
        d.mkdir(parents=True)

        def put(name: str, data: bytes) -> str:
            _write_file(d / name, data)
            return str((d / name).relative_to(self.data_dir))

        rec.crops = [put(f"crop_{i:04d}{c.ext if c.data is not None else '.jpg'}",
                         c.data if c.data is not None else _encode_jpeg(c.bgr, 95)) for i, c in enumerate(crops)]
        mid = crops[len(crops) // 2].bgr
        th = self.settings.thumbnail_height
        h, w = mid.shape[:2]
        thumb = cv2.resize(mid, (max(1, round(w * th / h)), th), interpolation=cv2.INTER_AREA)
        rec.thumbnail = put("thumb.jpg", _encode_jpeg(thumb, 85))
        if entry.scene is not None:
            scene = entry.scene
            rec.scene = put("scene.jpg", scene.data if scene.data is not None else _encode_jpeg(scene.bgr, 85))

    def delete(self, item_id: int) -> bool:
        rec, gen = self.store.delete(item_id)
        return self._forget([rec] if rec else [], gen) == 1

    def delete_matching(self, filters: Filters) -> int:
        """Delete what ``list(filters)`` pages through, in batches so writers are never held up for
        long; → how many items went."""
        total = 0
        while n := self._forget(*self.store.delete_matching(filters)):
            total += n
        return total

    def purge_expired(self) -> int:
        """Apply the retention policy (``REID_RETENTION_DAYS``): delete items last seen longer ago,
        in batches so writers are never held up for long; → how many went."""
        days = self.settings.retention_days
        if not days:
            return 0
        cutoff, total = time.time() - days * 86400, 0
        while n := self._forget(*self.store.delete_seen_before(cutoff)):
            total += n
        if total:
            log.info("retention: deleted %d items last seen over %g days ago", total, days)
        return total

    def _forget(self, deleted: list[ItemRecord], generation: int) -> int:
        """After the store deleted rows: drop their vectors from the index and their files from disk."""
        if deleted:
            self.index.apply(self.store, generation, removed=[r.id for r in deleted])
            for rec in deleted:
                shutil.rmtree(self._item_dir(rec.id), ignore_errors=True)
        return len(deleted)

    # --- reads -------------------------------------------------------------------------------------
    def get(self, item_id: int) -> ItemRecord | None:
        return self.store.get(item_id)

    def list(self, filters: Filters, offset: int = 0, limit: int = 50) -> tuple[list[ItemRecord], int]:
        return self.store.list(filters, offset, limit)

    def path(self, rel: str) -> Path:
        return self.data_dir / rel

    def count(self) -> int:
        return self.store.count()

    def search(
        self, query: np.ndarray, k: int, filters: Filters | None = None, min_score: float | None = None,
        rerank: str | None = None, rerank_k: int = 100, query_map: np.ndarray | None = None,
    ) -> list[Hit]:
        """Top-k items by cosine similarity that pass the filters (k results whenever k exist).
        ``rerank="can"``: the ``rerank_k`` best are re-scored by CAN's pair model against
        ``query_map`` (:meth:`item_maps` of the query's frames) and ordered by that score, ahead
        of the rest; ``min_score`` applies to the score returned."""
        q = np.asarray(query, np.float32).reshape(1, -1)
        self.index.sync(self.store)
        filters = filters or Filters()
        n = max(k, rerank_k) if rerank == "can" else k
        if not filters.active():
            scores, ids = self.index.search(q, n)
            pairs = list(zip(ids[0].tolist(), scores[0].tolist(), strict=True))
        else:
            pairs = self._filtered(q, n, filters)
        pairs = [(i, s) for i, s in pairs if i >= 0]
        if rerank == "can":
            pairs = self._rerank_can(pairs[:rerank_k], query_map) + pairs[rerank_k:]
        pairs = [(i, s) for i, s in pairs if min_score is None or s >= min_score][:k]
        recs = self.store.get_many([i for i, _ in pairs])
        return [Hit(recs[i], float(s)) for i, s in pairs if i in recs]

    def similar(
        self, item_ids: Sequence[int], k: int, filters: Filters | None = None, min_score: float | None = None,
        rerank: str | None = None, rerank_k: int = 100,
    ) -> list[Hit]:
        """Items like stored ones, ranked with their stored vectors (averaged, as one person's) as the
        query and the items themselves left out: an investigator's next step from hits they confirmed
        (a tracklet, or several sightings, is often a better query than the photo that found them).
        CAN re-scores against the first item's map. :class:`ItemsNotFound` names the ids that do not exist."""
        ids = list(dict.fromkeys(item_ids))
        found, vectors = self.store.vectors(ids, self.info.dim)
        if len(found) < len(ids):
            raise ItemsNotFound(sorted(set(ids) - set(found.tolist())))
        q = vectors.mean(axis=0)
        q /= max(float(np.linalg.norm(q)), 1e-12)
        query_map = self.maps_of(ids[:1]).get(ids[0]) if rerank == "can" else None
        hits = self.search(q, k + len(ids), filters, min_score, rerank, rerank_k, query_map)
        return [h for h in hits if h.record.id not in ids][:k]

    def _rerank_can(self, shortlist: list[tuple[int, float]], query_map: np.ndarray | None) -> list[tuple[int, float]]:
        if self.pair is None or query_map is None:
            raise ValueError("CAN re-ranking needs a model directory with pair.onnx and the query's map")
        maps = self.maps_of([i for i, _ in shortlist])
        ids = [i for i, _ in shortlist if i in maps]  # an item deleted meanwhile drops out
        if not ids:
            return []
        scores = self.pair.scores(query_map, np.stack([maps[i] for i in ids]))
        order = np.argsort(-scores, kind="stable")
        return [(ids[j], float(scores[j])) for j in order]

    # --- CAN maps ------------------------------------------------------------------------------------
    @property
    def pair(self):
        """CAN's pair model (reid.models.pair_model.PairModel) of the loaded model, or None."""
        return self.embedder.pair if self.embedder is not None else None

    def item_maps(self, frame_lists: Sequence[Sequence[np.ndarray]], batch: int = 64) -> list[np.ndarray]:
        """One fp16 map per item: its frames' ``maps`` averaged (a tracklet is CAN's class
        prototype), over at most ``MAP_FRAMES`` evenly spaced frames; embedded in batches."""
        picked = [list(f) if len(f) <= MAP_FRAMES else
                  [f[int(i)] for i in np.linspace(0, len(f) - 1, MAP_FRAMES).round()] for f in frame_lists]
        flat = [im for frames in picked for im in frames]
        rows = np.concatenate([self._need_embedder().embed_maps(flat[i:i + batch]) for i in range(0, len(flat), batch)])
        bounds = np.cumsum([0] + [len(f) for f in picked])
        return [rows[a:b].mean(axis=0).astype(np.float16) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def maps_of(self, ids: list[int]) -> dict[int, np.ndarray]:
        """Stored maps of ``ids``; those missing or made by another model are made from the kept
        crops now and stored (items that no longer exist are left out)."""
        shape = self.pair.map_shape
        stored = self.store.maps(ids, self.info.model_id)
        got = {i: np.frombuffer(b, np.float16).reshape(shape) for i, b in stored.items()}
        missing = [i for i in ids if i not in got]
        if missing:
            recs = self.store.get_many(missing)
            frames = {i: [im for rel in recs[i].crops if (im := cv2.imread(str(self.data_dir / rel))) is not None]
                      for i in missing if i in recs}
            frames = {i: f for i, f in frames.items() if f}
            if frames:
                made = dict(zip(frames, self.item_maps(list(frames.values())), strict=True))
                with self.store.transaction() as tx:
                    Store.put_maps(tx.c, [(i, self.info.model_id, m.tobytes()) for i, m in made.items()])
                got.update(made)
        return got

    def _filtered(self, q: np.ndarray, k: int, filters: Filters) -> list[tuple[int, float]]:
        if self.index.filters_pushdown:  # Milvus evaluates the filters itself
            scores, ids = self.index.search(q, k, filters=filters)
            return list(zip(ids[0].tolist(), scores[0].tolist(), strict=True))
        subset = self.store.filter_ids(filters)
        if len(subset) == 0:
            return []
        if not self.index.exact and len(subset) <= self.settings.index.exact_filter_max:
            return self._exact_subset(q, k, subset)
        try:
            scores, ids = self.index.search(q, k, subset=subset)
            pairs = [(i, s) for i, s in zip(ids[0].tolist(), scores[0].tolist(), strict=True) if i >= 0]
        except RuntimeError:  # this index type cannot take an IDSelector: over-fetch and filter
            pairs = []
            allowed = set(subset.tolist())
            fetch = k * self.settings.index.overfetch
            while True:
                scores, ids = self.index.search(q, fetch)
                pairs = [
                    (i, s) for i, s in zip(ids[0].tolist(), scores[0].tolist(), strict=True) if i in allowed
                ]
                if len(pairs) >= k or fetch >= self.index.ntotal:
                    break
                fetch *= 4
        if len(pairs) < min(k, len(subset)) and len(subset) <= max(self.settings.index.exact_filter_max, 10 * k):
            return self._exact_subset(q, k, subset)
        return pairs

    def _exact_subset(self, q: np.ndarray, k: int, subset: np.ndarray) -> list[tuple[int, float]]:
        scores, ids = exact_search(self.store, self.info.dim, q[:1], k, subset)
        return [(i, s) for i, s in zip(ids[0].tolist(), scores[0].tolist(), strict=True) if i >= 0]

    # --- maintenance -------------------------------------------------------------------------------
    def save(self) -> None:
        self.index.save(self.index_dir, self.info.model_id)
        self._saved_generation = self.index.state.generation

    def _background(self) -> None:
        """Now and then: apply the retention policy, snapshot the FAISS cache, and train the configured
        ANN index once the gallery is large enough (built off-lock, swapped in after replaying concurrent
        writes)."""
        while not self._stop.wait(max(self.settings.index.save_interval_s, 0.5)):
            try:
                self.purge_expired()
                if self.index.wants_training():
                    self.index.build(self.store)
                    self._saved_generation = -1  # snapshot the trained index even if nothing else changed
                if self.index.state.generation != self._saved_generation:
                    self.save()
            except Exception:
                log.exception("background index maintenance failed")

    def close(self) -> None:
        self._stop.set()
        if self._bg is not None:
            self._bg.join(timeout=10)
        try:
            self.save()
        finally:
            self.index.close()
            self.store.close()
            self._lock.close()


def make_index(settings: Any, dim: int, index_dir: Path) -> VectorIndex | MilvusIndex:
    """The configured vector cache (``REID_INDEX_BACKEND``)."""
    cfg, milvus = settings.index, settings.milvus
    if cfg.backend == "milvus":
        uri = milvus.uri or str(index_dir / "milvus.db")
        return MilvusIndex(dim, uri, milvus.collection, milvus.index, cfg.ef_search, nprobe=cfg.nprobe)
    index = VectorIndex(dim, cfg.factory, cfg.min_train, cfg.nprobe, cfg.ef_search, cfg.refine_factor)
    index.search_threads = cfg.threads
    return index


def reindex(
    settings: Any, embedder: Embedder, progress: Callable[[int, int], None] | None = None, batch: int = 64
) -> int:
    """Re-embed every stored item from its kept crops with ``embedder``'s model, then switch the
    gallery to that model in one transaction (a crash midway leaves the old vectors in place)."""
    data_dir = Path(settings.data_dir)
    lock = lock_data_dir(data_dir, exclusive=True)
    store = Store(data_dir / DB_NAME, settings.sqlite_synchronous)
    info = embedder.info
    try:
        store.start_staging()
        total = store.count()
        done = 0
        for ids in store.id_batches(batch):
            got = store.get_many(ids)
            out: list[tuple[int, bytes]] = []
            for item_id in sorted(got):
                rec = got[item_id]
                frames = []
                for rel in rec.crops:
                    img = cv2.imread(str(data_dir / rel), cv2.IMREAD_COLOR)
                    if img is not None:
                        frames.append(img)
                if not frames:
                    raise RuntimeError(
                        f"item {item_id} has no readable crops under {data_dir}; cannot re-embed "
                        f"(delete it with DELETE /gallery/{item_id} and retry)"
                    )
                v = embedder.embed_tracklet(frames) if rec.kind == "tracklet" else embedder.embed(frames)[0]
                out.append((item_id, np.asarray(v, np.float32).tobytes()))
            store.stage_vectors(out)
            done += len(out)
            if progress:
                progress(done, total)
        with store.transaction() as tx:
            left = Store.swap_in_staged(tx.c, info.model_id)
            if left:
                raise RuntimeError(
                    f"{left} items were added during the reindex; stop the service and run it again"
                )
            store.set_meta("model_id", info.model_id, tx.c)
            store.set_meta("model_desc", info.describe(), tx.c)
            store.set_meta("dim", str(info.dim), tx.c)
        shutil.rmtree(data_dir / "index", ignore_errors=True)  # the cache is rebuilt at the next start
        return done
    finally:
        store.close()
        lock.close()
