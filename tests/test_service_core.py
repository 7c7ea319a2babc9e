"""In-process tests of the service core: the inference worker (foreign model, micro-batching, video
model tracklets), the FAISS cache over SQLite (replay, rebuild, ANN training, deletes, filters), the
model tie and `reid reindex`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from reid.service.embedder import Embedder, ModelError, first_output_graph
from reid.service.gallery import DataDirBusy, Gallery, ModelMismatch, lock_data_dir, reindex
from reid.service.index import VectorIndex
from reid.service.settings import Settings
from reid.service.store import SCHEMA, Filters, ItemRecord, Store

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "reid" / "models" / "default"


def settings(tmp: Path, **kw) -> Settings:
    return Settings(data_dir=tmp / "data", intra_op_threads=1, **kw)


def crops(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (96 + 8 * i, 40 + 2 * i, 3), dtype=np.uint8) for i in range(n)]


def test_foreign_model_uses_configured_preprocessing(osnet_onnx: Path, tmp_path: Path) -> None:
    pre = json.dumps({"height": 256, "width": 128, "color": "RGB", "scale": 1 / 255})
    e = Embedder(settings(tmp_path, model=osnet_onnx, preprocess=pre))
    try:
        assert e.info.dim == 512 and (e.info.spec.height, e.info.spec.width) == (256, 128)
        assert e.info.arch == "foreign"
        x = e.embed(crops(3))
        assert x.shape == (3, 512)
        np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    finally:
        e.close()


def test_plain_embedding_runs_only_the_graph_the_embedding_needs(osnet_onnx: Path, tmp_path: Path) -> None:
    """ORT runs every node whatever outputs a call names, so the embedding path gets the graph cut
    down to its first output; the region features (VRSTC) still come from the whole graph."""
    full = onnx.load(str(DEFAULT / "image.onnx"))
    cut = onnx.load_from_string(first_output_graph(DEFAULT / "image.onnx"))
    assert [o.name for o in full.graph.output] == ["embeddings", "regions", "maps"]
    assert [o.name for o in cut.graph.output] == ["embeddings"]
    assert len(cut.graph.node) < len(full.graph.node)
    assert first_output_graph(osnet_onnx) is None  # one output already: nothing to cut
    e = Embedder(settings(tmp_path))
    try:
        assert len(e.embed_session.get_outputs()) == 1
        images = crops(5)
        x = e.embed(images)
        e.embed_tracklet(images)
        assert e._whole is None  # mean pooling, no CAN: the whole graph was never loaded
    finally:
        e.close()
    # VRSTC pooling needs the region features: then the whole graph is loaded too, with the same embeddings
    e = Embedder(settings(tmp_path, tracklet={"pooling": "vrstc"}))
    try:
        from reid.models.preprocess import preprocess

        assert e.vrstc is not None
        e.embed_tracklet(images)
        assert e._whole is not None and e.whole_session() is e._whole  # loaded once, then kept
        whole = e.whole_session().run(None, {e.input_name: preprocess(images, e.info.spec)})
        assert len(whole) == 3
        np.testing.assert_allclose(x, whole[0] / np.linalg.norm(whole[0], axis=1, keepdims=True), atol=1e-5)
        np.testing.assert_allclose(e.embed(images), x, atol=1e-6)
    finally:
        e.close()


def test_a_pair_model_beside_a_model_without_maps_is_a_clear_error(osnet_onnx: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(osnet_onnx, model / "image.onnx")  # one output: no maps for CAN
    (model / "pair.onnx").write_bytes(b"not checked: the maps are missing first")
    pre = json.dumps({"height": 256, "width": 128})
    with pytest.raises(ModelError, match="maps output"):
        Embedder(settings(tmp_path, model=model, preprocess=pre))


def test_a_corrupt_model_file_is_a_clear_error(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "image.onnx").write_bytes(b"not an ONNX file")
    with pytest.raises(ModelError, match="cannot load ONNX model .*image.onnx"):
        Embedder(settings(tmp_path, model=model))


def test_a_lone_request_does_not_wait_for_company(tmp_path: Path) -> None:
    sizes: list[int] = []
    e = Embedder(settings(tmp_path, max_wait_ms=3000, max_batch=8), on_batch=sizes.append)
    try:
        img = crops(1)
        e.embed(img)  # warm-up
        t = time.perf_counter()
        e.embed(img)
        assert time.perf_counter() - t < 1.5, "waited for a batch although nothing else was coming"
        assert sizes == [1, 1]
    finally:
        e.close()


def test_micro_batching_batches_concurrent_requests(tmp_path: Path) -> None:
    sizes: list[int] = []
    e = Embedder(settings(tmp_path, max_wait_ms=50, max_batch=8), on_batch=sizes.append)
    try:
        imgs = crops(8)
        single = np.concatenate([e.embed([im]) for im in imgs])
        sizes.clear()
        out: list[np.ndarray | None] = [None] * 8
        barrier = threading.Barrier(8)

        def work(i: int) -> None:
            barrier.wait()
            out[i] = e.embed([imgs[i]])[0]

        ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert max(sizes) > 1 and sum(sizes) == 8, sizes
        np.testing.assert_allclose(np.stack(out), single, atol=1e-4)
    finally:
        e.close()


def _tiny_model(path: Path, video: bool, t: int = 4) -> None:
    """A real ONNX graph: mean colour per channel → fixed linear map to 8 dims (no metadata needed
    beyond reid.*)."""
    w = np.arange(24, dtype=np.float32).reshape(3, 8) / 10 - 1
    if video:
        inp = helper.make_tensor_value_info("clips", TensorProto.FLOAT, ["b", t, 3, 32, 16])
        nodes = [helper.make_node("ReduceMean", ["clips", "axes"], ["m"], keepdims=0)]
        axes = np.array([1, 3, 4], np.int64)
    else:
        inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["b", 3, 32, 16])
        nodes = [helper.make_node("ReduceMean", ["images", "axes"], ["m"], keepdims=0)]
        axes = np.array([2, 3], np.int64)
    nodes.append(helper.make_node("MatMul", ["m", "w"], ["embeddings"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [inp],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["b", 8])],
        [
            helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes),
            helper.make_tensor("w", TensorProto.FLOAT, [3, 8], w.ravel()),
        ],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    for k, v in {"reid.input_height": "32", "reid.input_width": "16", "reid.embedding_dim": "8"}.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, path)


def test_video_model_embeds_tracklets_in_clips(tmp_path: Path) -> None:
    d = tmp_path / "tkp"
    d.mkdir()
    _tiny_model(d / "image.onnx", video=False)
    _tiny_model(d / "video.onnx", video=True, t=4)
    e = Embedder(settings(tmp_path, model=d))
    try:
        assert e.video_session is not None and e.info.clip_len == 4
        frames = crops(6, seed=1)
        v = e.embed_tracklet(frames)
        # by hand: clips [0..3], [4, 5, 0, 1] → mean colour → linear → normalise → mean → normalise
        from reid.models.preprocess import preprocess

        x = preprocess(frames, e.info.spec)
        w = np.arange(24, dtype=np.float32).reshape(3, 8) / 10 - 1
        clips = [x[[0, 1, 2, 3]], x[[4, 5, 0, 1]]]
        y = np.stack([c.mean(axis=(0, 2, 3)) @ w for c in clips])
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        ref = y.mean(0) / np.linalg.norm(y.mean(0))
        np.testing.assert_allclose(v, ref, atol=1e-5)
        # image model path for a single frame differs from the video path
        assert e.embed(frames[:1]).shape == (1, 8)
    finally:
        e.close()


def _fill(store: Store, n: int, dim: int, seed: int = 0, camera_every: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with store.transaction() as tx:
        for i, v in enumerate(vecs):
            cam = "rare" if camera_every and i % camera_every == 0 else "common"
            Store.insert(tx.c, ItemRecord(kind="image", camera=cam, model_id="m", ts_start=float(i)), v)
    return vecs


def test_index_snapshot_replays_missed_writes_and_rebuilds_when_corrupt(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    vecs = _fill(store, 200, 16)
    idx = VectorIndex(16)
    idx.build(store)
    idx.save(tmp_path / "index", "m")
    # writes after the snapshot: 50 adds and 3 deletes
    more = _fill(store, 50, 16, seed=1)
    for i in (1, 2, 250):
        store.delete(i)
    idx2 = VectorIndex(16)
    assert idx2.load(tmp_path / "index", "m", store)
    assert idx2.ntotal == store.count() == 247
    s, ids = idx2.search(more[-2:-1], 1)
    assert ids[0, 0] == 249 and s[0, 0] == pytest.approx(1.0, abs=1e-5)
    s, ids = idx2.search(vecs[0:1], 3)
    assert 1 not in ids[0]
    # another model's snapshot or a corrupt file → refused (the caller rebuilds)
    assert not VectorIndex(16).load(tmp_path / "index", "other-model", store)
    snap = json.loads((tmp_path / "index" / "index.json").read_text())["file"]
    (tmp_path / "index" / snap).write_bytes(b"garbage")
    assert not VectorIndex(16).load(tmp_path / "index", "m", store)


def test_ann_index_trains_when_large_enough_and_filters_keep_k(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    vecs = _fill(store, 300, 16, camera_every=50)
    idx = VectorIndex(16, "IVF8,Flat", min_train=500, nprobe=8)
    idx.build(store)
    assert idx.exact and not idx.wants_training()  # too small to train: exact stand-in
    _fill(store, 300, 16, seed=2)
    idx.sync(store)
    assert idx.wants_training()
    idx.build(store)
    assert not idx.exact and idx.ntotal == 600
    _, ids = idx.search(vecs[7:8], 1)
    assert ids[0, 0] == 8  # ids start at 1
    # HNSW cannot delete: tombstones hide deleted ids
    h = VectorIndex(16, "HNSW16")
    h.build(store)
    rec, gen = store.delete(8)
    assert rec is not None
    h.apply(store, gen, removed=[8])
    _, ids = h.search(vecs[7:8], 5)
    assert 8 not in ids[0]
    assert h.ntotal == 599


def test_sqfp16_refine_index_filters_inside_faiss_and_matches_exact(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    vecs = _fill(store, 400, 32, camera_every=7)
    flat, sq = VectorIndex(32), VectorIndex(32, "SQfp16,RFlat", refine_factor=2)
    flat.build(store)
    sq.build(store)
    assert not sq.exact
    subset = np.arange(1, 401, 7, dtype=np.int64)  # the "rare" camera's ids
    for q in vecs[:20:3]:
        s_exact, ids_exact = flat.search(q[None], 5, subset=subset)
        s_sq, ids_sq = sq.search(q[None], 5, subset=subset)  # raised RuntimeError before (no selector)
        assert set(ids_sq[0]) <= set(subset) and list(ids_sq[0]) == list(ids_exact[0])
        np.testing.assert_allclose(s_sq, s_exact, atol=1e-5)  # re-scored with the float32 vectors


@pytest.mark.parametrize("factory", ["HNSW16", "PCA16,HNSW16,RFlat"])
def test_gallery_filtered_search_returns_k_when_they_exist(tmp_path: Path, factory: str) -> None:
    # exact_filter_max=0 forces the ANN paths: an IDSelector (HNSW) or over-fetching (RFlat takes none)
    s = settings(tmp_path, index={"factory": factory, "exact_filter_max": 0, "min_train": 20})
    e = Embedder(s)
    g = Gallery(s, e, background=False)
    try:
        imgs = crops(30, seed=3)
        g.add_images(imgs[:27], "common", timestamp=1000.0)
        g.add_images(imgs[27:], "rare", timestamp=2000.0)
        if g.index.wants_training():
            g.index.build(g.store)
        assert not g.index.exact
        q = e.embed(imgs[:1])[0]
        hits = g.search(q, 3, Filters(cameras=["rare"]))
        assert len(hits) == 3 and {h.record.camera for h in hits} == {"rare"}
        hits = g.search(q, 5, Filters(since=1500.0))
        assert len(hits) == 3
        hits = g.search(q, 1)
        assert hits[0].record.source is None and hits[0].score == pytest.approx(1.0, abs=1e-5)
        t = g.add_tracklet(
            imgs[:4],
            "trk",
            ts_start=5.0,
            ts_end=9.0,
            footage_id="f1",
            frame_start=10,
            frame_end=40,
            box=[1, 2, 3, 4],
            meta={"track": 7},
        )
        got = g.get(t.id)
        assert got.kind == "tracklet" and got.n_frames == 4 and got.box == [1, 2, 3, 4]
        assert len(got.crops) == 4 and all(g.path(c).is_file() for c in got.crops)
        assert g.path(got.thumbnail).is_file()
    finally:
        g.close()
        e.close()


def test_model_tie_and_reindex(tmp_path: Path, osnet_onnx: Path, cuhk03_val: Path) -> None:
    from reid.models.preprocess import read_image

    s1 = settings(tmp_path)
    e1 = Embedder(s1)
    g1 = Gallery(s1, e1, background=False)
    imgs = [read_image(str(cuhk03_val / f"000{i}_00.jpg")) for i in range(5)]
    g1.add_images(imgs, "A")
    g1.add_tracklet(imgs[:3], "B")
    g1.close()
    e1.close()
    s2 = settings(tmp_path, model=osnet_onnx)
    e2 = Embedder(s2)
    try:
        with pytest.raises(ModelMismatch, match="reid reindex"):
            Gallery(s2, e2, background=False)
        # the CLI refuses before starting the server, naming the fix
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "reid.cli",
                "serve",
                "--model",
                str(osnet_onnx),
                "--data-dir",
                str(s2.data_dir),
                "--port",
                "1",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
        assert r.returncode == 2 and "reid reindex" in r.stderr and "Traceback" not in r.stderr
        assert reindex(s2, e2) == 6
        g2 = Gallery(s2, e2, background=False)
        try:
            assert g2.count() == 6 and g2.index.ntotal == 6
            hits = g2.search(e2.embed(imgs[2:3])[0], 1, Filters(kind="image"))
            # re-embedded from the kept crop (JPEG q95 for pixel arrays): the same item, near-identical
            assert (
                hits[0].record.id == 3 and hits[0].score > 0.9 and hits[0].record.model_id == e2.info.model_id
            )
        finally:
            g2.close()
    finally:
        e2.close()


def test_reindex_is_refused_while_the_data_dir_is_in_use(tmp_path: Path) -> None:
    s = settings(tmp_path)
    e = Embedder(s)
    try:
        g = Gallery(s, e, background=False)
        g.add_images(crops(2), "A")
        cmd = [sys.executable, "-m", "reid.cli", "reindex", "--data-dir", str(s.data_dir), "--model", str(s.model)]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert r.returncode == 1 and "in use by a running" in r.stderr and "Traceback" not in r.stderr
        assert g.count() == 2  # untouched
        g.close()
        # and the other way round: nothing opens the gallery while a reindex holds the data dir
        held = lock_data_dir(Path(s.data_dir), exclusive=True)
        try:
            with pytest.raises(DataDirBusy, match="reid reindex` is running"):
                Gallery(s, e, background=False)
            srv = [sys.executable, "-m", "reid.cli", "serve", "--data-dir", str(s.data_dir), "--model",
                   str(s.model), "--port", "1"]
            r = subprocess.run(srv, capture_output=True, text=True, cwd=REPO, timeout=120)
            assert r.returncode == 2 and "reid reindex` is running" in r.stderr
        finally:
            held.close()
        assert reindex(s, e) == 2  # free again (closing the Gallery released its lock)
    finally:
        e.close()


def test_cli_index_and_query(tmp_path: Path, cuhk03_val: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in sorted(cuhk03_val.glob("000[0-2]_0[5-9].jpg")):
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    data = tmp_path / "data"
    r = subprocess.run(
        [sys.executable, "-m", "reid.cli", "index", str(folder), "--camera", "B", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "indexed 15 images" in r.stdout and "broken.jpg" in r.stderr
    # a time the retention policy already expired is refused up front, naming the setting
    r = subprocess.run(
        [sys.executable, "-m", "reid.cli", "index", str(folder), "--camera", "C", "--data-dir", str(data),
         "--timestamp", "2020-01-01T00:00:00Z"],
        capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ, "REID_RETENTION_DAYS": "30"},
    )
    assert r.returncode == 2 and "REID_RETENTION_DAYS" in r.stderr and "Traceback" not in r.stderr, r.stderr

    def reid(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "reid.cli", *args, "--data-dir", str(data)],
                              capture_output=True, text=True, cwd=REPO, timeout=120)

    # erasure: never without a filter; a bad time is a CLI error; a camera filter deletes that camera
    for bad in ([], ["--since", "yesterday"], ["--kind", "person"]):
        r = reid("delete", *bad)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    r = reid("delete", "--camera", "nobody")
    assert r.returncode == 0 and "deleted 0 items" in r.stdout, r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "reid.cli",
            "query",
            str(folder / "0001_07.jpg"),
            "--top-k",
            "3",
            "--data-dir",
            str(data),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "0001_07.jpg" in r.stdout.splitlines()[3]  # first hit row: the same image
    r = reid("delete", "--camera", "B")
    assert r.returncode == 0 and "deleted 15 items" in r.stdout, r.stderr
    r = reid("query", str(folder / "0001_07.jpg"))
    assert r.returncode == 0 and "0001_07.jpg" not in r.stdout


def test_settings_sections_are_the_configs_they_feed(monkeypatch) -> None:
    """REID_<SECTION>_<FIELD> lands in the config object of that part, field for field."""
    from dataclasses import fields

    from reid.ingest.detect import DetectorConfig
    from reid.ingest.pipeline import PipelineConfig
    from reid.ingest.tracklets import TrackletConfig

    for name, value in (("REID_DETECTOR_NAME", "hog"), ("REID_DETECTOR_MIN_HEIGHT", "30"),
                        ("REID_TRACKLET_EMBED_FRAMES", "5"), ("REID_FOOTAGE_TRACK_MAX_AGE_S", "2.5"),
                        ("REID_INDEX_NPROBE", "7"), ("REID_MILVUS_INDEX", "hnsw"), ("REID_JOB_LEASE_S", "9")):
        monkeypatch.setenv(name, value)
    s = Settings()
    cfg = PipelineConfig.from_settings(s)
    assert (cfg.detector.name, cfg.detector.min_height) == ("hog", 30)
    assert (cfg.tracklets.embed_frames, cfg.track_max_age_s) == (5, 2.5)
    assert (s.index.nprobe, s.milvus.index, s.job.lease_s) == (7, "HNSW", 9.0)
    assert set(type(s.detector).model_fields) <= {f.name for f in fields(DetectorConfig)}
    assert set(type(s.tracklet).model_fields) - {"pooling"} <= {f.name for f in fields(TrackletConfig)}


def test_a_renamed_setting_is_refused_with_its_new_name(monkeypatch, tmp_path) -> None:
    from typer.testing import CliRunner

    from reid.cli import app
    from reid.service.settings import RENAMED, RenamedSetting

    for old, new in RENAMED.items():
        monkeypatch.setenv(old, "1")
        with pytest.raises(RenamedSetting, match=f"{old} is now {new}"):
            Settings()
        monkeypatch.delenv(old)
    monkeypatch.setenv("REID_DETECTOR", "")  # compose's empty "${REID_DETECTOR:-}" is no setting at all
    Settings()
    monkeypatch.setenv("REID_NPROBE", "16")
    res = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "data")])
    assert res.exit_code == 2 and "REID_NPROBE is now REID_INDEX_NPROBE" in res.output
    assert "Traceback" not in res.output


def test_choice_settings_are_case_insensitive_and_checked(monkeypatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("REID_DEVICE", "CPU")
    monkeypatch.setenv("REID_SQLITE_SYNCHRONOUS", "normal")
    monkeypatch.setenv("REID_JOB_MODE", "Thread")
    s = Settings()
    assert (s.device, s.sqlite_synchronous, s.job.mode) == ("cpu", "NORMAL", "thread")
    for name, bad in (("REID_DEVICE", "tpu"), ("REID_DETECTOR_FORMAT", "yolov9"), ("REID_QUEUE", "kafka")):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValidationError):
            Settings()
        monkeypatch.delenv(name)


def test_a_negative_retention_or_detection_rate_is_a_cli_error_naming_the_variable(monkeypatch, tmp_path) -> None:
    from typer.testing import CliRunner

    from reid.cli import app

    for name in ("REID_RETENTION_DAYS", "REID_FOOTAGE_DETECT_FPS"):
        monkeypatch.setenv(name, "-1")
        res = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "data")])
        assert res.exit_code == 2 and name in res.output and "Traceback" not in res.output, res.output
        monkeypatch.delenv(name)


def test_a_database_from_the_previous_release_gains_the_scene_column(tmp_path: Path) -> None:
    import sqlite3

    old_schema = SCHEMA.replace(",\n    scene TEXT", "")
    assert old_schema != SCHEMA
    db = tmp_path / "reid.sqlite3"
    c = sqlite3.connect(db)
    c.executescript(old_schema)
    c.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    c.execute("INSERT INTO items (kind, camera, model_id, created_at, vector) VALUES ('image', 'A', 'm', 1.0, ?)",
              (np.zeros(4, np.float32).tobytes(),))
    c.commit()
    c.close()
    store = Store(db)
    assert store.get(1).camera == "A" and store.get(1).scene is None  # the old row, readable
    with store.transaction() as tx:
        rec = ItemRecord(kind="tracklet", camera="B", model_id="m", scene="items/x/scene.jpg")
        rec.id = Store.insert(tx.c, rec, np.ones(4, np.float32))
        Store.set_files(tx.c, rec)
    assert store.get(rec.id).scene == "items/x/scene.jpg"
    Store(db)  # another process opening it finds the work done
    version = sqlite3.connect(db).execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == ("2",)


def test_retention_deletes_what_was_last_seen_too_long_ago(tmp_path: Path) -> None:
    """REID_RETENTION_DAYS: age runs from an item's end time, else its start, else when it was indexed.
    Expired items go from SQLite, the index and disk, in batches; a gallery with nothing to expire is
    not written to; the expiry query uses its index (a scan would cost every tick on a big gallery)."""
    day = 86400.0
    now = time.time()
    s = settings(tmp_path, retention_days=30)
    e = Embedder(s)
    g = Gallery(s, e, background=False)
    try:
        imgs = crops(7, seed=5)
        old = g.add_images(imgs[:3], "A", timestamp=now - 40 * day)
        recent = g.add_images(imgs[3:4], "A", timestamp=now - 20 * day)
        undated = g.add_images(imgs[4:5], "B")  # no timestamp: its age runs from now (indexed)
        # a tracklet that started long ago but was still seen recently stays
        long_seen = g.add_tracklet(imgs[5:7], "C", ts_start=now - 50 * day, ts_end=now - 10 * day)
        files = [g.path(c) for r in old for c in g.get(r.id).crops]
        assert all(f.is_file() for f in files)
        plan = " ".join(str(r) for r in g.store._r.execute(
            "EXPLAIN QUERY PLAN SELECT 1 FROM items WHERE COALESCE(ts_end, ts_start, created_at) < ?", (now,)))
        assert "items_seen" in plan, plan

        deleted, generation = g.store.delete_seen_before(now - 30 * day, limit=2)  # oldest first, in batches
        assert len(deleted) == 2
        g._forget(deleted, generation)  # the index and files follow, as in purge_expired
        assert g.purge_expired() == 1
        kept = {r.id for r in [*recent, *undated, long_seen]}
        assert g.store.all_ids() == kept and g.index.ntotal == 3
        assert not any(f.exists() for f in files)
        hits = g.search(e.embed(imgs[:1])[0], 10)
        assert {h.record.id for h in hits} == kept

        generation = g.store.generation()
        assert g.purge_expired() == 0 and g.store.generation() == generation  # nothing to do, nothing written
        g.settings = settings(tmp_path)  # retention 0: keep everything, however old
        (ancient,) = g.add_images(imgs[:1], "A", timestamp=0.0)
        assert g.purge_expired() == 0 and g.get(ancient.id) is not None

        # erasure by filter goes in batches too (ids in order), each one logged for index replay
        batch, generation = g.store.delete_matching(Filters(cameras=["A", "C"]), limit=1)
        assert [r.id for r in batch] == [recent[0].id] and generation > 0
        g._forget(batch, generation)
        assert g.delete_matching(Filters(cameras=["A", "C"])) == 2  # long_seen and ancient
        assert g.store.all_ids() == {undated[0].id} and g.index.ntotal == 1
        assert g.delete_matching(Filters(cameras=["A"])) == 0
    finally:
        g.close()
        e.close()
