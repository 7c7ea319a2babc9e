"""`POST /query rerank=can` through a real server: CAN's pair model (pair.onnx beside image.onnx)
re-scores the FAISS shortlist from the maps stored with each item — or, for items stored before
the model had a pair model, from their kept crops, made on first use."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import httpx
import pytest
import torch
from test_service_api import MODEL, N_IDS, Server, cuhk_split, post_images, query


@pytest.fixture(scope="module")
def split():
    from conftest import shared_path

    return cuhk_split(shared_path("data", "cuhk03", "val"), N_IDS)


def _with_pair_model(dest: Path) -> Path:
    """The shipped model plus a pair.onnx (untrained attention, identity neck) for its maps."""
    from reid.models.can import CrossAttention, PairScorer
    from reid.models.export import export_pair
    from reid.service.embedder import Embedder
    from reid.service.settings import Settings

    shutil.copytree(MODEL, dest)
    (dest / "pair.onnx").unlink(missing_ok=True)
    embedder = Embedder(Settings(model=dest, data_dir=dest.parent / "probe", intra_op_threads=1))
    try:
        import numpy as np

        c, h, w = embedder.embed_maps([np.zeros((64, 32, 3), np.uint8)]).shape[1:]
    finally:
        embedder.close()
    torch.manual_seed(0)
    export_pair(PairScorer(CrossAttention(h * w)), dest / "pair.onnx", channels=c, grid=(h, w),
                trained_on="unit-test", image_arch="test")
    return dest


def _stored_maps(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "reid.sqlite3") as c:
        return c.execute("SELECT COUNT(*) FROM maps").fetchone()[0]


def test_rerank_can_through_the_server(tmp_path: Path, split) -> None:
    queries, gallery = split
    data = tmp_path / "data"
    plain = Server(data).start()  # the shipped model: no pair model, so no maps are stored
    try:
        with httpx.Client(base_url=plain.url, timeout=60) as c:
            assert c.get("/readyz").json()["rerankers"] == (["none", "can"] if (MODEL / "pair.onnx").exists()
                                                           else ["none"])
            assert post_images(c, gallery[:30], "B").status_code == 201
            if not (MODEL / "pair.onnx").exists():
                r = query(c, [queries[0]], rerank="can")
                assert r.status_code == 422 and "pair.onnx" in r.json()["detail"]
    finally:
        plain.stop()
    before = _stored_maps(data)
    srv = Server(data, model=_with_pair_model(tmp_path / "model")).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            assert c.get("/readyz").json()["rerankers"] == ["none", "can"]
            assert post_images(c, gallery[30:40], "C").status_code == 201  # stored with their maps
            assert _stored_maps(data) == before + 10
            # the same image in the gallery: CAN scores it 1 and first
            r = query(c, [gallery[35]], top_k=5, rerank="can")
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["query"]["rerank"] == "can"
            scores = [h["score"] for h in body["results"]]
            assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0, abs=1e-4)
            assert body["results"][0]["source"]["name"] == gallery[35].name
            # only the shortlist moves: rerank_k=3 re-orders the index's best 3, the rest keep their order
            none = [h["id"] for h in query(c, [queries[1]], top_k=8).json()["results"]]
            can3 = [h["id"] for h in query(c, [queries[1]], top_k=8, rerank="can", rerank_k=3).json()["results"]]
            assert set(can3[:3]) == set(none[:3]) and can3[3:] == none[3:]
            # the first items' maps were made from their kept crops on first use, and kept
            query(c, [queries[2]], top_k=40, rerank="can", rerank_k=40)
            assert _stored_maps(data) == 40
            # a multi-frame query is a tracklet: its map is its frames' mean
            t = query(c, gallery[30:33], top_k=3, rerank="can").json()
            assert t["query"] == {"kind": "tracklet", "n_frames": 3, "rerank": "can"} and len(t["results"]) == 3
            # a stored item as the query: its stored map is CAN's query map, the item itself left out
            gone = body["results"][0]["id"]
            like = c.get(f"/gallery/{gone}/similar", params={"top_k": 4, "rerank": "can"}).json()
            assert like["query"] == {"kind": "image", "n_frames": 1, "rerank": "can"}
            ids, scores = [h["id"] for h in like["results"]], [h["score"] for h in like["results"]]
            assert gone not in ids and len(ids) == 4 and scores == sorted(scores, reverse=True)
            assert ids[0] == body["results"][1]["id"]  # as a query of the item's own image, minus the item
            # deleting an item drops its map; re-ranking still works
            assert c.delete(f"/gallery/{gone}").status_code == 204
            assert _stored_maps(data) == 39
            r = query(c, [gallery[35]], top_k=5, rerank="can")
            assert r.status_code == 200 and gone not in [h["id"] for h in r.json()["results"]]
            # bad parameters: 422 with a message
            for form, field in (({"rerank": "foo"}, "rerank"), ({"rerank": "can", "rerank_k": "0"}, "rerank_k"),
                                ({"rerank_k": "5000"}, "rerank_k")):
                r = query(c, [queries[0]], **form)
                assert r.status_code == 422 and field in r.json()["detail"], r.text
    finally:
        srv.stop()
