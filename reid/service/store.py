"""SQLite metadata + vector store: the source of truth of the gallery.

One row per gallery item, vector included (float32 BLOB), in WAL mode; with a CAN pair model, each
item's spatial map (fp16 BLOB, tagged with the model that made it) in ``maps``. Every write transaction bumps
``meta.generation`` and deletions are logged, so the FAISS cache can tell whether it is current and
replay what it missed (adds: ``id > max_id``; deletes: ``deletions.gen > generation``).
Reads use one connection per thread; writes go through one connection behind one lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('image', 'tracklet')),
    camera TEXT NOT NULL,
    ts_start REAL,
    ts_end REAL,
    source TEXT,
    footage_id TEXT,
    frame_start INTEGER,
    frame_end INTEGER,
    box TEXT,
    meta TEXT,
    thumbnail TEXT,
    crops TEXT NOT NULL DEFAULT '[]',
    n_frames INTEGER NOT NULL DEFAULT 1,
    model_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    vector BLOB NOT NULL,
    scene TEXT
);
CREATE INDEX IF NOT EXISTS items_camera_ts ON items (camera, ts_start);
CREATE INDEX IF NOT EXISTS items_ts ON items (ts_start);
CREATE INDEX IF NOT EXISTS items_footage ON items (footage_id);
CREATE INDEX IF NOT EXISTS items_seen ON items (COALESCE(ts_end, ts_start, created_at));
CREATE TABLE IF NOT EXISTS deletions (gen INTEGER NOT NULL, id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS maps (id INTEGER PRIMARY KEY, model_id TEXT NOT NULL, map BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS deletions_gen ON deletions (gen);
"""

_COLS = (
    "id, kind, camera, ts_start, ts_end, source, footage_id, frame_start, frame_end, box, meta, "
    "thumbnail, crops, n_frames, model_id, created_at, scene"
)
SCHEMA_VERSION = 2  # 2: items.scene
#: when an item's person was last seen: its end time, else its start, else when it was indexed. Retention
#: counts from it; the expression is index ``items_seen``'s, word for word, so SQLite uses that index.
SEEN_AT = "COALESCE(ts_end, ts_start, created_at)"


@dataclass
class ItemRecord:
    """A gallery row without its vector. Timestamps are POSIX seconds (UTC)."""

    kind: str
    camera: str
    model_id: str = ""
    ts_start: float | None = None
    ts_end: float | None = None
    source: str | None = None
    footage_id: str | None = None
    frame_start: int | None = None
    frame_end: int | None = None
    box: list[float] | None = None
    meta: dict[str, Any] | None = None
    thumbnail: str | None = None
    crops: list[str] = field(default_factory=list)
    n_frames: int = 1
    created_at: float = 0.0
    id: int | None = None
    scene: str | None = None  # the frame a footage tracklet's person was seen in (file, box marked)


@dataclass
class Filters:
    """Metadata filters shared by listing and search. A time filter keeps items whose
    [ts_start, ts_end] interval overlaps [since, until]; items without a timestamp are dropped."""

    cameras: list[str] | None = None
    exclude_cameras: list[str] | None = None
    since: float | None = None
    until: float | None = None
    kind: str | None = None

    def active(self) -> bool:
        return bool(
            self.cameras
            or self.exclude_cameras
            or self.since is not None
            or self.until is not None
            or self.kind
        )

    def sql(self) -> tuple[str, list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if self.cameras:
            where.append(f"camera IN ({','.join('?' * len(self.cameras))})")
            args += self.cameras
        if self.exclude_cameras:
            where.append(f"camera NOT IN ({','.join('?' * len(self.exclude_cameras))})")
            args += self.exclude_cameras
        if self.since is not None:
            where.append("COALESCE(ts_end, ts_start) >= ?")
            args.append(self.since)
        if self.until is not None:
            where.append("ts_start <= ?")
            args.append(self.until)
        if self.kind:
            where.append("kind = ?")
            args.append(self.kind)
        return (" WHERE " + " AND ".join(where)) if where else "", args


_INDEX_COLS = "id, vector, camera, kind, ts_start, ts_end"


@dataclass
class IndexRows:
    """A batch of items as a vector index sees them: ids, vectors and the columns filters use."""

    ids: np.ndarray  # int64 [N]
    vectors: np.ndarray  # float32 [N, dim]
    cameras: list[str]
    kinds: list[str]
    ts_start: list[float | None]
    ts_end: list[float | None]

    @classmethod
    def of(cls, rows: list[tuple], dim: int) -> IndexRows:
        n = len(rows)
        vecs = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(n, dim) if n else \
            np.zeros((0, dim), np.float32)
        return cls(np.fromiter((r[0] for r in rows), np.int64, count=n), vecs, [r[2] for r in rows],
                   [r[3] for r in rows], [r[4] for r in rows], [r[5] for r in rows])

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Tx:
    c: sqlite3.Connection
    generation: int = -1


def _row(r: tuple) -> ItemRecord:
    return ItemRecord(
        id=r[0],
        kind=r[1],
        camera=r[2],
        ts_start=r[3],
        ts_end=r[4],
        source=r[5],
        footage_id=r[6],
        frame_start=r[7],
        frame_end=r[8],
        box=json.loads(r[9]) if r[9] else None,
        meta=json.loads(r[10]) if r[10] else None,
        thumbnail=r[11],
        crops=json.loads(r[12] or "[]"),
        n_frames=r[13],
        model_id=r[14],
        created_at=r[15],
        scene=r[16],
    )


def connect(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """The one way this project opens SQLite: autocommit (explicit BEGIN), WAL, a 30 s busy wait,
    usable from any thread (each user keeps its own connection per thread)."""
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class Store:
    """The SQLite database file under the data directory."""

    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.synchronous = synchronous.upper()
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._wconn = self._connect()
        with self._write_lock:
            self._wconn.executescript(SCHEMA)
            self._wconn.execute("INSERT OR IGNORE INTO meta VALUES ('generation', '0')")
            self._migrate()

    def _migrate(self) -> None:
        """Bring a database made by an older release to SCHEMA_VERSION, in one transaction (several
        processes may open it at once: the first one migrates, the others find it done)."""
        c = self._wconn
        c.execute("BEGIN IMMEDIATE")
        try:
            columns = {r[1] for r in c.execute("PRAGMA table_info(items)")}
            if "scene" not in columns:
                c.execute("ALTER TABLE items ADD COLUMN scene TEXT")
            version = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if version is None or int(version[0]) < SCHEMA_VERSION:  # a newer release's number stays
                c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, self.synchronous)

    @property
    def _r(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    # --- writes --------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        """One write transaction (BEGIN IMMEDIATE … COMMIT) that bumps the generation. Committed
        (durably, per ``synchronous``) when the block exits; rolled back on any exception.
        ``tx.generation`` is the new generation once the block has exited."""
        with self._write_lock:
            c = self._wconn
            c.execute("BEGIN IMMEDIATE")
            tx = Tx(c)
            try:
                yield tx
                c.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
                tx.generation = int(c.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    @staticmethod
    def insert(c: sqlite3.Connection, rec: ItemRecord, vector: np.ndarray) -> int:
        cur = c.execute(
            "INSERT INTO items (kind, camera, ts_start, ts_end, source, footage_id, frame_start, frame_end, "
            "box, meta, thumbnail, crops, n_frames, model_id, created_at, vector) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                rec.kind,
                rec.camera,
                rec.ts_start,
                rec.ts_end,
                rec.source,
                rec.footage_id,
                rec.frame_start,
                rec.frame_end,
                json.dumps(rec.box) if rec.box is not None else None,
                json.dumps(rec.meta) if rec.meta is not None else None,
                rec.thumbnail,
                json.dumps(rec.crops),
                rec.n_frames,
                rec.model_id,
                rec.created_at or time.time(),
                np.ascontiguousarray(vector, np.float32).tobytes(),
            ),
        )
        return int(cur.lastrowid)

    @staticmethod
    def set_files(c: sqlite3.Connection, rec: ItemRecord) -> None:
        """Inside a transaction: the paths of the item's thumbnail, crops and scene."""
        c.execute("UPDATE items SET thumbnail = ?, crops = ?, scene = ? WHERE id = ?",
                  (rec.thumbnail, json.dumps(rec.crops), rec.scene, rec.id))

    def delete(self, item_id: int) -> tuple[ItemRecord | None, int]:
        """Delete one row → (the deleted record or None, generation)."""
        recs, gen = self._delete_where(" WHERE id = ?", [item_id])
        return (recs[0] if recs else None), gen

    def delete_matching(self, filters: Filters, limit: int = 5000) -> tuple[list[ItemRecord], int]:
        """Delete up to ``limit`` of the rows ``list(filters)`` pages through → (deleted records,
        generation); call again until none are left (each batch is one short write)."""
        where, args = filters.sql()
        return self._delete_where(where, args, f" ORDER BY id LIMIT {int(limit)}")

    def delete_seen_before(self, cutoff: float, limit: int = 5000) -> tuple[list[ItemRecord], int]:
        """Delete up to ``limit`` rows last seen before ``cutoff`` (POSIX s), oldest first."""
        return self._delete_where(f" WHERE {SEEN_AT} < ?", [cutoff], f" ORDER BY {SEEN_AT} LIMIT {int(limit)}")

    def _delete_where(self, where: str, args: list[Any], order: str = "") -> tuple[list[ItemRecord], int]:
        """Delete the rows ``SELECT … FROM items<where><order>`` finds, in one transaction whose deletions
        are logged for index replay (another process's index catches up from the log). Checks with a read
        first: finding nothing writes nothing (a retention pass on an idle gallery bumps no generation)."""
        if self._r.execute(f"SELECT 1 FROM items{where} LIMIT 1", args).fetchone() is None:
            return [], -1
        with self.transaction() as tx:
            c = tx.c
            rows = c.execute(f"SELECT {_COLS} FROM items{where}{order}", args).fetchall()
            if rows:
                ids = [(r[0],) for r in rows]
                gen = int(c.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0]) + 1
                c.executemany("DELETE FROM items WHERE id = ?", ids)
                c.executemany("DELETE FROM maps WHERE id = ?", ids)
                c.executemany("INSERT INTO deletions VALUES (?, ?)", [(gen, i) for (i,) in ids])
        return [_row(r) for r in rows], tx.generation

    @staticmethod
    def put_maps(c: sqlite3.Connection, rows: list[tuple[int, str, bytes]]) -> None:
        """Inside a transaction: (item id, model id, fp16 map bytes) rows, replacing older ones."""
        c.executemany("INSERT OR REPLACE INTO maps VALUES (?, ?, ?)", rows)

    def set_meta(self, key: str, value: str, c: sqlite3.Connection | None = None) -> None:
        if c is not None:
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
            return
        with self._write_lock:
            self._wconn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # --- reads ---------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        r = self._r.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return r[0] if r else None

    def state(self) -> tuple[int, int, int]:
        """(generation, row count, max id) read in one snapshot."""
        c = self._r
        c.execute("BEGIN")
        try:
            gen = int(c.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])
            n, mx = c.execute("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM items").fetchone()
        finally:
            c.execute("COMMIT")
        return gen, int(n), int(mx)

    def generation(self) -> int:
        return int(self._r.execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def count(self, filters: Filters | None = None) -> int:
        where, args = (filters or Filters()).sql()
        return int(self._r.execute(f"SELECT COUNT(*) FROM items{where}", args).fetchone()[0])

    def cameras(self) -> list[tuple[str, int, float | None, float | None]]:
        """(camera, items, first ts_start, last ts_end) per camera, for browsing (uses items_camera_ts)."""
        rows = self._r.execute("SELECT camera, COUNT(*), MIN(ts_start), MAX(COALESCE(ts_end, ts_start)) "
                               "FROM items GROUP BY camera ORDER BY camera").fetchall()
        return [(r[0], int(r[1]), r[2], r[3]) for r in rows]

    def get(self, item_id: int) -> ItemRecord | None:
        r = self._r.execute(f"SELECT {_COLS} FROM items WHERE id = ?", (item_id,)).fetchone()
        return _row(r) if r else None

    def get_many(self, ids: list[int]) -> dict[int, ItemRecord]:
        out: dict[int, ItemRecord] = {}
        for i in range(0, len(ids), 900):
            part = ids[i : i + 900]
            q = f"SELECT {_COLS} FROM items WHERE id IN ({','.join('?' * len(part))})"
            for r in self._r.execute(q, part):
                out[r[0]] = _row(r)
        return out

    def list(self, filters: Filters, offset: int = 0, limit: int = 50) -> tuple[list[ItemRecord], int]:
        where, args = filters.sql()
        total = int(self._r.execute(f"SELECT COUNT(*) FROM items{where}", args).fetchone()[0])
        rows = self._r.execute(
            f"SELECT {_COLS} FROM items{where} ORDER BY id LIMIT ? OFFSET ?", [*args, limit, offset]
        ).fetchall()
        return [_row(r) for r in rows], total

    def maps(self, ids: list[int], model_id: str) -> dict[int, bytes]:
        """The stored spatial maps of ``ids`` made by ``model_id`` (others are stale or missing)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        q = f"SELECT id, map FROM maps WHERE model_id = ? AND id IN ({marks})"
        return {int(i): m for i, m in self._r.execute(q, (model_id, *ids))}

    def filter_ids(self, filters: Filters) -> np.ndarray:
        where, args = filters.sql()
        rows = self._r.execute(f"SELECT id FROM items{where}", args).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def vectors(self, ids: np.ndarray | list[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of the given ids (those that still exist), as (ids, [N, dim])."""
        got_ids: list[int] = []
        vecs: list[bytes] = []
        ids = [int(i) for i in ids]
        for i in range(0, len(ids), 900):
            part = ids[i : i + 900]
            q = f"SELECT id, vector FROM items WHERE id IN ({','.join('?' * len(part))})"
            for r in self._r.execute(q, part):
                got_ids.append(r[0])
                vecs.append(r[1])
        mat = (
            np.frombuffer(b"".join(vecs), np.float32).reshape(len(vecs), dim)
            if vecs
            else np.zeros((0, dim), np.float32)
        )
        return np.asarray(got_ids, np.int64), mat

    def iter_rows(self, dim: int, after_id: int = 0, batch: int = 20000) -> Iterator[IndexRows]:
        """All rows with id > after_id, in id order, in batches: vectors plus the filterable columns
        (what a vector store that filters by itself, such as Milvus, keeps beside each vector)."""
        last = after_id
        conn = self._connect()  # own snapshot-free cursor, safe from any thread
        try:
            while True:
                rows = conn.execute(f"SELECT {_INDEX_COLS} FROM items WHERE id > ? ORDER BY id LIMIT ?",
                                    (last, batch)).fetchall()
                if not rows:
                    return
                yield IndexRows.of(rows, dim)
                last = int(rows[-1][0])
        finally:
            conn.close()

    def rows(self, ids: np.ndarray | list[int], dim: int) -> IndexRows:
        """The rows of the given ids that still exist (same columns as :meth:`iter_rows`)."""
        ids = [int(i) for i in ids]
        got: list[tuple] = []
        for i in range(0, len(ids), 900):
            part = ids[i : i + 900]
            got += self._r.execute(f"SELECT {_INDEX_COLS} FROM items WHERE id IN ({','.join('?' * len(part))}) "
                                   "ORDER BY id", part).fetchall()
        return IndexRows.of(got, dim)

    def iter_vectors(
        self, dim: int, after_id: int = 0, batch: int = 20000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids, vectors) with id > after_id, in id order, in batches."""
        for rows in self.iter_rows(dim, after_id, batch):
            yield rows.ids, rows.vectors

    @staticmethod
    def has_footage(c: sqlite3.Connection, footage_id: str) -> bool:
        """Inside a transaction: is any item from this footage (content hash) stored?"""
        return c.execute("SELECT 1 FROM items WHERE footage_id = ? LIMIT 1", (footage_id,)).fetchone() is not None

    # --- re-embedding (`reid reindex`): new vectors are staged beside the old, then swapped in at once
    def start_staging(self) -> None:
        with self.transaction() as tx:
            tx.c.execute("DROP TABLE IF EXISTS reindex_vectors")
            tx.c.execute("CREATE TABLE reindex_vectors (id INTEGER PRIMARY KEY, vector BLOB NOT NULL)")

    def id_batches(self, batch: int) -> Iterator[list[int]]:
        last = 0
        while rows := self._r.execute("SELECT id FROM items WHERE id > ? ORDER BY id LIMIT ?",
                                      (last, batch)).fetchall():
            yield [r[0] for r in rows]
            last = rows[-1][0]

    def stage_vectors(self, rows: list[tuple[int, bytes]]) -> None:
        with self.transaction() as tx:
            tx.c.executemany("INSERT OR REPLACE INTO reindex_vectors VALUES (?, ?)", rows)

    @staticmethod
    def swap_in_staged(c: sqlite3.Connection, model_id: str) -> int:
        """Inside a transaction: staged vectors replace the stored ones; returns the items still
        from another model (added while re-embedding), for the caller to refuse the swap."""
        c.execute("UPDATE items SET vector = (SELECT r.vector FROM reindex_vectors r WHERE r.id = items.id),"
                  " model_id = ? WHERE id IN (SELECT id FROM reindex_vectors)", (model_id,))
        left = int(c.execute("SELECT COUNT(*) FROM items WHERE model_id != ?", (model_id,)).fetchone()[0])
        if not left:
            c.execute("DROP TABLE reindex_vectors")
            c.execute("DELETE FROM maps WHERE model_id != ?", (model_id,))  # remade on demand (Gallery.maps_of)
        return left

    def deleted_since(self, generation: int) -> list[int]:
        return [r[0] for r in self._r.execute("SELECT id FROM deletions WHERE gen > ?", (generation,))]

    def count_footage(self, footage_id: str) -> int:
        """Items already indexed from one footage (content hash): re-submissions are not redone."""
        q = "SELECT COUNT(*) FROM items WHERE footage_id = ?"
        return int(self._r.execute(q, (footage_id,)).fetchone()[0])

    def all_ids(self) -> set[int]:
        return {r[0] for r in self._r.execute("SELECT id FROM items")}

    def model_ids(self) -> list[str]:
        return [r[0] for r in self._r.execute("SELECT DISTINCT model_id FROM items")]

    def close(self) -> None:
        self._wconn.close()
