"""The Milvus backend against a real Milvus Lite: same answers as FAISS, filters pushed down with the
same meaning as the SQL ones, restart (reuse + replay of missed writes), rebuild for another model,
a second process on the same data dir, and the HTTP API on a real server."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="pip install 'reid-search[milvus]'")

from reid.service.embedder import Embedder  # noqa: E402
from reid.service.gallery import Gallery  # noqa: E402
from reid.service.index_milvus import MilvusIndex, milvus_filter  # noqa: E402
from reid.service.settings import Settings  # noqa: E402
from reid.service.store import Filters, ItemRecord, Store  # noqa: E402
from tests.test_service_core import crops  # noqa: E402

DIM = 16

SECOND_PROCESS = """
import json, sys
import numpy as np
from reid.service.embedder import Embedder
from reid.service.gallery import Gallery
from reid.service.settings import Settings
from tests.test_service_core import crops
s = Settings(data_dir=sys.argv[1], intra_op_threads=1, index={"backend": "milvus"})
e = Embedder(s)
g = Gallery(s, e, background=False)
imgs = crops(12, seed=5)
late = g.add_images(imgs[:1], "late", timestamp=3000.0)[0]
top = g.search(e.embed(imgs[9:10])[0], 1)[0].record.id
print(json.dumps([late.id, g.index.passive, top]))
g.close()
e.close()
"""


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def milvus_db(tmp_path):
    try:
        idx = MilvusIndex(DIM, str(tmp_path / "probe.db"), "probe")
    except Exception as e:  # noqa: BLE001 — whatever stops Milvus Lite from starting here
        pytest.skip(f"Milvus Lite cannot start: {e}")
    idx.close()
    return tmp_path / "index" / "milvus.db"


def fill_store(path, rng) -> tuple[Store, np.ndarray]:
    """40 items over 3 cameras, both kinds, with and without timestamps (some with no end)."""
    store = Store(path)
    vecs = unit(rng, 40)
    with store.transaction() as tx:
        for i in range(40):
            ts = None if i % 7 == 0 else float(100 * i)
            end = None if (ts is None or i % 5 == 0) else ts + 50
            rec = ItemRecord(kind="tracklet" if i % 3 == 0 else "image", camera=f'cam "{i % 3}"',
                             ts_start=ts, ts_end=end, model_id="m")
            Store.insert(tx.c, rec, vecs[i])
    return store, vecs


FILTERS = [
    Filters(cameras=['cam "1"']),
    Filters(exclude_cameras=['cam "0"', 'cam "2"']),
    Filters(since=1225.0),
    Filters(until=1000.0),
    Filters(since=500.0, until=2500.0, kind="image"),
    Filters(cameras=['cam "0"', 'cam "2"'], kind="tracklet", since=0.0),
]


@pytest.mark.parametrize("f", FILTERS, ids=[milvus_filter(f) for f in FILTERS])
def test_pushed_down_filters_select_what_sql_selects(milvus_db, tmp_path, f: Filters) -> None:
    store, vecs = fill_store(tmp_path / "g.sqlite", np.random.default_rng(0))
    idx = MilvusIndex(DIM, str(milvus_db), "items")
    try:
        idx.build(store)
        _, ids = idx.search(vecs[:1], 40, filters=f)
        got = set(ids[0][ids[0] >= 0].tolist())
        assert got == set(store.filter_ids(f).tolist()) and got
    finally:
        idx.close()
        store.close()


def test_same_answers_as_faiss_and_restart_replays_missed_writes(milvus_db, tmp_path) -> None:
    rng = np.random.default_rng(1)
    store, vecs = fill_store(tmp_path / "g.sqlite", rng)
    from reid.service.index import VectorIndex

    flat = VectorIndex(DIM)
    flat.build(store)
    idx = MilvusIndex(DIM, str(milvus_db), "items")
    idx.build(store)
    q = unit(rng, 3)
    s_f, i_f = flat.search(q, 10)
    s_m, i_m = idx.search(q, 10)
    np.testing.assert_array_equal(i_m, i_f)
    np.testing.assert_allclose(s_m, s_f, atol=1e-5)
    idx.save(tmp_path / "index", "m")
    idx.close()
    # while the index is closed, another writer adds one item and deletes another
    with store.transaction() as tx:
        new_id = Store.insert(tx.c, ItemRecord(kind="image", camera="late", model_id="m"), q[0])
    store.delete(int(i_f[0][0]))
    idx = MilvusIndex(DIM, str(milvus_db), "items")
    try:
        assert idx.load(tmp_path / "index", "m", store)  # reused, not rebuilt
        assert idx.ntotal == store.count() == 40
        _, ids = idx.search(q[:1], 2)
        assert ids[0][0] == new_id and int(i_f[0][0]) not in ids[0]
        assert not idx.load(tmp_path / "index", "another-model", store)  # → the caller rebuilds
    finally:
        idx.close()
        store.close()


def test_gallery_on_milvus_with_a_second_process_on_the_data_dir(milvus_db, tmp_path) -> None:
    s = Settings(data_dir=tmp_path / "data", intra_op_threads=1, index={"backend": "milvus"})
    e = Embedder(s)
    g = Gallery(s, e, background=False)
    try:
        imgs = crops(12, seed=5)
        g.add_images(imgs[:9], "hall", timestamp=1000.0)
        rare = g.add_images(imgs[9:], "door", timestamp=2000.0)
        q = e.embed(imgs[9:10])[0]
        hits = g.search(q, 5, Filters(cameras=["door"]))
        assert [h.record.camera for h in hits] == ["door"] * 3 and hits[0].record.id == rare[0].id
        assert len(g.search(q, 20, Filters(since=1500.0))) == 3
        # a second process on the same data dir (`reid index` while the service runs): Milvus Lite's
        # file is taken, so it writes SQLite only and searches exactly; the first catches up
        other = subprocess.run([sys.executable, "-c", SECOND_PROCESS, str(s.data_dir)], capture_output=True,
                               text=True, timeout=300)
        assert other.returncode == 0, other.stderr
        late_id, passive, top = json.loads(other.stdout.strip().splitlines()[-1])
        assert passive and top == rare[0].id
        late = g.get(late_id)
        assert g.search(e.embed(imgs[:1])[0], 1, Filters(cameras=["late"]))[0].record.id == late.id
        assert g.delete(rare[0].id)
        assert rare[0].id not in [h.record.id for h in g.search(q, 20)]
        assert g.index.ntotal == g.count() == 12
        before = [(h.record.id, round(h.score, 5)) for h in g.search(q, 12)]
    finally:
        g.close()
    g = Gallery(s, e, background=False)  # restart: the collection is reused and agrees with SQLite
    try:
        assert g.index.ntotal == 12 and [(h.record.id, round(h.score, 5)) for h in g.search(q, 12)] == before
    finally:
        g.close()
        e.close()


def test_an_unreachable_milvus_server_or_a_bad_setting_is_a_clean_cli_error(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from reid.cli import app
    from tests.conftest import free_port

    img = tmp_path / "q.jpg"
    import cv2

    cv2.imwrite(str(img), crops(1)[0])
    monkeypatch.setenv("REID_INDEX_BACKEND", "milvus")
    monkeypatch.setenv("REID_MILVUS_URI", f"http://127.0.0.1:{free_port()}")
    for args in (["query", str(img)], ["serve"]):
        res = CliRunner().invoke(app, [*args, "--data-dir", str(tmp_path / "data")])
        assert res.exit_code == 2 and "cannot reach Milvus" in res.output, res.output
        assert "Traceback" not in res.output
    monkeypatch.setenv("REID_INDEX_BACKEND", "qdrant")
    res = CliRunner().invoke(app, ["query", str(img), "--data-dir", str(tmp_path / "data")])
    assert res.exit_code == 2 and "REID_INDEX_BACKEND" in res.output and "'qdrant'" in res.output
    monkeypatch.delenv("REID_INDEX_BACKEND")
    monkeypatch.setenv("REID_DETECTOR_INPUT_SIZE", "100")
    res = CliRunner().invoke(app, ["query", str(img), "--data-dir", str(tmp_path / "data")])
    assert res.exit_code == 2 and "REID_DETECTOR_INPUT_SIZE" in res.output
    monkeypatch.delenv("REID_DETECTOR_INPUT_SIZE")
    monkeypatch.setenv("REID_GRAPH_OPTIMIZATION", "fast")  # a typo was silently "all" before
    res = CliRunner().invoke(app, ["query", str(img), "--data-dir", str(tmp_path / "data")])
    assert res.exit_code == 2 and "REID_GRAPH_OPTIMIZATION" in res.output and "'extended'" in res.output
