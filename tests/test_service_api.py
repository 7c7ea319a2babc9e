"""End-to-end tests of the search service: a real `reid serve` (uvicorn) on 127.0.0.1, a real data
directory, real ONNX Runtime, FAISS and SQLite. Covers accuracy parity with a direct numpy
evaluation, persistence across restarts, SIGKILL during a burst of writes, bad input, API keys,
filters and concurrent queries during writes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from conftest import free_port

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "reid" / "models" / "default"
N_IDS = 30



class Server:
    """`python -m reid.cli serve` in a subprocess, on a free port, with its own data dir."""

    def __init__(self, data_dir: Path, model: Path = MODEL, **env: str) -> None:
        self.data_dir = data_dir
        self.model = model
        self.env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "REID_INTRA_OP_THREADS": "1",
            "REID_LOG_JSON": "false",
            "REID_INDEX_SAVE_INTERVAL_S": "1",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.log = data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Server:
        self.port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "reid.cli",
            "serve",
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--model",
            str(self.model),
            "--data-dir",
            str(self.data_dir),
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT
        )
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def cuhk_split(root: Path, n_ids: int) -> tuple[list[Path], list[Path]]:
    """(camera-A queries, camera-B gallery) for the first n_ids identities."""
    by_pid: dict[str, list[Path]] = defaultdict(list)
    for p in sorted(root.glob("*.jpg")):
        by_pid[p.stem.split("_")[0]].append(p)
    pids = sorted(by_pid)[:n_ids]
    qs = [p for pid in pids for p in by_pid[pid] if int(p.stem.split("_")[1]) <= 4]
    gs = [p for pid in pids for p in by_pid[pid] if int(p.stem.split("_")[1]) >= 5]
    return qs, gs


def reference_rank1(queries: list[Path], gallery: list[Path]) -> float:
    """rank-1 computed directly (onnxruntime + numpy + models.preprocess), as `reid eval` would."""
    import onnxruntime as ort

    from reid.models.preprocess import PreprocessSpec, preprocess, read_image, read_onnx_metadata

    path = str(MODEL / "image.onnx")
    spec = PreprocessSpec.from_metadata(read_onnx_metadata(path))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    def emb(paths: list[Path]) -> np.ndarray:
        out = [
            sess.run(None, {"images": preprocess([read_image(str(p)) for p in paths[i : i + 32]], spec)})[0]
            for i in range(0, len(paths), 32)
        ]
        x = np.concatenate(out)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    q, g = emb(queries), emb(gallery)
    best = (q @ g.T).argmax(axis=1)
    pid = lambda p: p.stem.split("_")[0]  # noqa: E731
    return float(np.mean([pid(queries[i]) == pid(gallery[j]) for i, j in enumerate(best)]))


def reid_eval_rank1(files: list[Path], folder: Path) -> float:
    """rank-1 from `reid eval --format cuhk03 --mode i2i` over exactly these files (as a fraction)."""
    folder.mkdir(exist_ok=True)
    for p in files:
        (folder / p.name).write_bytes(p.read_bytes())
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "reid.cli",
            "eval",
            "--model",
            str(MODEL),
            "--data",
            str(folder),
            "--format",
            "cuhk03",
            "--mode",
            "i2i",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")][-1]
    assert out["num_skipped"] == 0
    return out["rank1"] / 100.0


def post_images(client: httpx.Client, paths: list[Path], camera: str, **form: str) -> httpx.Response:
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    return client.post("/gallery", files=files, data={"camera": camera, **form})


def query(client: httpx.Client, paths: list[Path], **form) -> httpx.Response:
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
    return client.post("/query", files=files, data=form)


@pytest.fixture(scope="module")
def split(request) -> tuple[list[Path], list[Path]]:
    from conftest import shared_path

    root = shared_path("data", "cuhk03", "val")
    return cuhk_split(root, N_IDS)


@pytest.fixture(scope="module")
def server(tmp_path_factory, split):
    srv = Server(tmp_path_factory.mktemp("svc") / "data").start()
    yield srv
    srv.stop()


def test_rank1_matches_direct_eval_and_persists(server: Server, split) -> None:
    queries, gallery = split
    with httpx.Client(base_url=server.url, timeout=60) as c:
        # half as plain images (several requests), half as one zip
        half = len(gallery) // 2
        for i in range(0, half, 40):
            r = post_images(
                c,
                gallery[i : min(i + 40, half)],
                "B",
                timestamp="2024-05-01T12:00:00Z",
                meta='{"set": "val"}',
            )
            assert r.status_code == 201, r.text
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for p in gallery[half:]:
                zf.write(p, arcname=f"crops/{p.name}")
        r = c.post(
            "/gallery",
            files=[("files", ("rest.zip", buf.getvalue(), "application/zip"))],
            data={"camera": "B", "timestamp": "2024-05-01T12:00:00Z", "meta": '{"set": "val"}'},
        )
        assert r.status_code == 201, r.text
        assert c.get("/gallery").json()["total"] == len(gallery)

        def top1(p: Path) -> tuple[str, list]:
            res = query(c, [p], top_k=5).json()["results"]
            return Path(res[0]["source"]["name"]).name, [h["id"] for h in res]

        got = [top1(p) for p in queries]
        same = [g[0].split("_")[0] == q.stem.split("_")[0] for g, q in zip(got, queries, strict=True)]
        api_rank1 = float(np.mean(same))
        ref = reference_rank1(queries, gallery)
        eval_rank1 = reid_eval_rank1(queries + gallery, server.data_dir.parent / "subset")
        print("rank-1: API", api_rank1, "direct", ref, "reid eval", eval_rank1)
        # reid eval prints percent rounded to 4 decimals; one query of 146 would move it by 0.0068
        assert api_rank1 == pytest.approx(eval_rank1, abs=1e-6), (api_rank1, eval_rank1)
        assert api_rank1 == pytest.approx(ref, abs=1e-9), (api_rank1, ref)
        assert api_rank1 > 1.0 / N_IDS  # better than chance: the pipeline is really ranking
        hit = c.post(
            "/query",
            files=[("files", (queries[0].name, queries[0].read_bytes(), "image/jpeg"))],
            data={"top_k": "3"},
        ).json()
        assert hit["took_ms"] > 0 and len(hit["results"]) == 3
        h0 = hit["results"][0]
        assert h0["camera"] == "B" and h0["meta"] == {"set": "val"} and h0["kind"] == "image"
        assert h0["timestamp_start"].startswith("2024-05-01T12:00:00")
        assert c.get(h0["thumbnail_url"]).headers["content-type"] == "image/jpeg"
        assert h0["scene_url"] is None  # an uploaded crop has no scene (footage tracklets do)
        r = c.get(f"/gallery/{h0['id']}/scene")
        assert r.status_code == 404 and "no scene" in r.json()["detail"]

    server.stop()
    server.start()
    with httpx.Client(base_url=server.url, timeout=60) as c:
        ready = c.get("/readyz").json()
        assert ready["items"] == ready["index_size"] == len(gallery)
        from reid.models.preprocess import read_onnx_metadata

        shipped = read_onnx_metadata(str(MODEL / "image.onnx")).get("reid.precision", "fp32")
        assert ready["precision"] == shipped and ready["model"].endswith("image.onnx")  # the shipped default
        assert [top1_ids for _, top1_ids in got[:10]] == [
            [h["id"] for h in query(c, [q], top_k=5).json()["results"]] for q in queries[:10]
        ]


def test_filters_tracklets_and_delete(server: Server, split) -> None:
    check_filters_tracklets_and_delete(server, split)


def test_milvus_backend_serves_the_same_api(tmp_path: Path, split) -> None:
    """REID_INDEX_BACKEND=milvus (embedded Milvus Lite): filters pushed down, same answers, restart."""
    pytest.importorskip("pymilvus", reason="pip install 'reid-search[milvus]'")
    srv = Server(tmp_path / "data", REID_INDEX_BACKEND="milvus").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            assert c.get("/readyz").json()["index"] == "milvus:FLAT"
            assert post_images(c, split[1][:40], "B", timestamp="2024-05-01T12:00:00Z").status_code == 201
        check_filters_tracklets_and_delete(srv, split)
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            before = query(c, [split[0][0]], top_k=10).json()["results"]
        srv.stop()
        srv.start()
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            assert query(c, [split[0][0]], top_k=10).json()["results"] == before
    finally:
        srv.stop()


def check_filters_tracklets_and_delete(server: Server, split) -> None:
    """Camera/time filters, tracklets and delete, on a server whose gallery holds camera B crops."""
    queries, gallery = split
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = post_images(c, gallery[:3], "C", timestamp="2020-01-01T00:00:00Z")
        assert r.status_code == 201
        c_ids = [it["id"] for it in r.json()["items"]]
        # a selective camera filter still returns the k items that exist
        res = query(c, [queries[-1]], top_k=3, cameras="C").json()["results"]
        assert sorted(h["id"] for h in res) == sorted(c_ids)
        res = query(c, [queries[0]], top_k=50, exclude_cameras="B").json()["results"]
        assert {h["camera"] for h in res} == {"C"}
        res = query(c, [queries[0]], top_k=50, until="2021-01-01T00:00:00").json()["results"]
        assert sorted(h["id"] for h in res) == sorted(c_ids)
        res = query(c, [queries[0]], top_k=5, since="2023-01-01T00:00:00+00:00", cameras="B,C").json()[
            "results"
        ]
        assert len(res) == 5 and all(h["camera"] == "B" for h in res)
        res = query(c, [queries[0]], top_k=5, min_score=0.9999).json()["results"]
        assert all(h["score"] >= 0.9999 for h in res)
        assert c.get("/gallery", params={"camera": "C"}).json()["total"] == 3
        assert c.get("/gallery", params={"until": "2021-01-01"}).json()["total"] == 3
        # tracklet: several images become one item; a multi-frame query is a query tracklet
        r = post_images(c, gallery[3:6], "D", tracklet="true")
        assert r.status_code == 201, r.text
        (trk,) = r.json()["items"]
        assert trk["kind"] == "tracklet" and trk["n_frames"] == 3
        q = query(c, gallery[3:6], top_k=1, cameras="D").json()
        assert q["query"] == {"kind": "tracklet", "n_frames": 3, "rerank": "none"}
        assert q["results"][0]["id"] == trk["id"] and q["results"][0]["score"] > 0.999
        # delete: gone from listing, search and thumbnails
        assert c.delete(f"/gallery/{c_ids[0]}").status_code == 204
        assert c.get(f"/gallery/{c_ids[0]}").status_code == 404
        assert c.get(f"/gallery/{c_ids[0]}/thumbnail").status_code == 404
        assert c.delete(f"/gallery/{c_ids[0]}").status_code == 404
        res = query(c, [queries[0]], top_k=10, cameras="C").json()["results"]
        assert sorted(h["id"] for h in res) == sorted(c_ids[1:])
        # bulk delete: exactly what GET /gallery lists with the same filters; never without a filter
        total = c.get("/gallery").json()["total"]
        for params in ({}, {"since": "yesterday"}, {"kind": "person"}):
            r = c.delete("/gallery", params=params)
            assert r.status_code == 422 and r.json()["detail"], (params, r.text)
        assert c.get("/gallery").json()["total"] == total
        listed = c.get("/gallery", params={"camera": "C,D"}).json()
        assert listed["total"] == 3
        files = [server.data_dir / "items" / f"{i // 1000:05d}" / str(i) for i in (*c_ids[1:], trk["id"])]
        assert all(f.is_dir() for f in files)
        assert c.delete("/gallery", params={"camera": "C,D"}).json() == {"deleted": 3}
        assert c.get("/gallery").json()["total"] == total - 3
        assert query(c, [queries[0]], top_k=10, cameras="C,D").json()["results"] == []
        assert all(c.get(f"/gallery/{it['id']}").status_code == 404 for it in listed["items"])
        assert not any(f.exists() for f in files)
        assert c.delete("/gallery", params={"camera": "C"}).json() == {"deleted": 0}


def test_retention_policy_deletes_old_items_and_refuses_old_uploads(tmp_path: Path, split) -> None:
    """REID_RETENTION_DAYS on a real server: an upload already past it is refused (it would vanish at
    once); items that age past it are deleted by the API's background pass, undated ones count from
    when they were indexed."""
    _, gallery = split

    def iso(days_ago: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - days_ago * 86400))

    srv = Server(tmp_path / "data", REID_RETENTION_DAYS="30").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            r = post_images(c, gallery[:2], "A", timestamp=iso(40))
            assert r.status_code == 422 and "retention" in r.json()["detail"]
            dated = post_images(c, gallery[:2], "A", timestamp=iso(20)).json()["items"]
            undated = post_images(c, gallery[2:3], "B").json()["items"]
            time.sleep(2)  # a background pass or two: nothing is old enough yet
            assert c.get("/gallery").json()["total"] == 3
        srv.stop()
        srv.env["REID_RETENTION_DAYS"] = "15"  # the operator shortens the policy
        srv.start()
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            deadline = time.time() + 30
            while c.get("/gallery").json()["total"] != 1 and time.time() < deadline:
                time.sleep(0.2)
            assert [it["id"] for it in c.get("/gallery").json()["items"]] == [undated[0]["id"]]
            assert all(c.get(f"/gallery/{it['id']}/thumbnail").status_code == 404 for it in dated)
            hits = query(c, [gallery[0]], top_k=5).json()["results"]
            assert [h["id"] for h in hits] == [undated[0]["id"]]
            # `reid delete` from another process while the server runs: its next search knows
            r = subprocess.run([sys.executable, "-m", "reid.cli", "delete", "--camera", "B", "--model",
                                str(srv.model), "--data-dir", str(srv.data_dir)],
                               capture_output=True, text=True, cwd=REPO, timeout=120)
            assert r.returncode == 0 and "deleted 1 item\n" in r.stdout, r.stderr
            assert query(c, [gallery[0]], top_k=5).json()["results"] == []
            assert c.get("/readyz").json()["index_size"] == 0
    finally:
        srv.stop()


def test_similar_items_use_the_stored_item_as_the_query(server: Server, split) -> None:
    """GET /gallery/{id}/similar ranks like a POST /query of the item's own image, minus the item."""
    queries, gallery = split
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = post_images(c, gallery[:12], "S", timestamp="2022-06-01T00:00:00Z")
        assert r.status_code == 201, r.text
        first = r.json()["items"][0]["id"]
        by_photo = query(c, [gallery[0]], top_k=6, cameras="S").json()["results"]
        assert by_photo[0]["id"] == first  # the item's own photo finds it first
        res = c.get(f"/gallery/{first}/similar", params={"top_k": 5, "cameras": "S"})
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["query"] == {"kind": "image", "n_frames": 1, "rerank": "none"}
        assert [h["id"] for h in body["results"]] == [h["id"] for h in by_photo[1:]]
        assert [h["score"] for h in body["results"]] == pytest.approx([h["score"] for h in by_photo[1:]], abs=1e-4)
        # filters apply as in /query; a tracklet item is a query tracklet
        assert all(h["camera"] == "S" for h in c.get(f"/gallery/{first}/similar",
                                                      params={"cameras": "S", "top_k": 50}).json()["results"])
        trk = post_images(c, gallery[12:15], "S", tracklet="true").json()["items"][0]
        body = c.get(f"/gallery/{trk['id']}/similar", params={"top_k": 3}).json()
        assert body["query"]["kind"] == "tracklet" and body["query"]["n_frames"] == 3
        assert trk["id"] not in [h["id"] for h in body["results"]] and len(body["results"]) == 3
        # several sightings the investigator confirmed: averaged like a query tracklet of their photos,
        # all of them left out
        ids = [it["id"] for it in r.json()["items"][:2]]
        by_photos = query(c, gallery[:2], top_k=8, cameras="S").json()["results"]
        both = c.get(f"/gallery/{ids[0]}/similar", params={"top_k": 6, "cameras": "S", "also": ids[1:]}).json()
        expected = [h for h in by_photos if h["id"] not in ids][:6]
        assert [h["id"] for h in both["results"]] == [h["id"] for h in expected]
        assert [h["score"] for h in both["results"]] == pytest.approx([h["score"] for h in expected], abs=1e-3)
        # bad input: clear 4xx, nothing changes
        total = c.get("/gallery").json()["total"]
        r = c.get(f"/gallery/{first}/similar", params={"also": [999998, 999999]})
        assert r.status_code == 404 and "items 999998, 999999 not found" in r.json()["detail"]
        assert c.get(f"/gallery/{first}/similar", params={"also": [0]}).status_code == 422
        assert c.get("/gallery/999999/similar").status_code == 404
        assert "not found" in c.get("/gallery/999999/similar").json()["detail"]
        assert c.get(f"/gallery/{first}/similar", params={"top_k": 0}).status_code == 422
        assert c.get(f"/gallery/{first}/similar", params={"since": "yesterday"}).status_code in (400, 422)
        assert c.get(f"/gallery/{first}/similar", params={"rerank": "can"}).status_code == 422  # no pair.onnx
        assert c.get("/gallery").json()["total"] == total


def test_concurrent_queries_during_writes(server: Server, split) -> None:
    queries, gallery = split
    errors: list[str] = []
    written: list[int] = []

    def writer() -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for p in gallery[:12]:
                r = post_images(c, [p], "W")
                if r.status_code != 201:
                    errors.append(r.text)
                else:
                    written.append(r.json()["items"][0]["id"])

    def reader(i: int) -> int:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            n = 0
            for q in queries[i::4][:10]:
                r = query(c, [q], top_k=5)
                if r.status_code != 200 or len(r.json()["results"]) != 5:
                    errors.append(r.text)
                n += 1
            return n

    t = threading.Thread(target=writer)
    t.start()
    with ThreadPoolExecutor(4) as ex:
        done = sum(ex.map(reader, range(4)))
    t.join()
    assert not errors, errors[:3]
    assert done == 40 and len(written) == 12
    with httpx.Client(base_url=server.url, timeout=60) as c:
        res = query(c, [gallery[0]], top_k=20, cameras="W").json()["results"]
        assert sorted(h["id"] for h in res) == sorted(written)
        m = c.get("/metrics").text
        assert 'reid_http_request_duration_seconds_count{method="POST",route="/query"}' in m
        assert "reid_embed_batch_size_bucket" in m and "reid_index_size" in m


def test_video_uploads_go_to_the_footage_hook(server: Server) -> None:
    """A video on POST /gallery is routed to app.state.submit_video (the footage worker's hook), not
    decoded as an image: a damaged one is refused there with a 4xx that says so; mixing a video with
    images is refused by the route."""
    video = ("clip.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64, "video/mp4")
    with httpx.Client(base_url=server.url, timeout=60) as c:
        r = c.post("/gallery", files=[("files", video)], data={"camera": "A"})
        assert 400 <= r.status_code < 500 and "video" in r.json()["detail"], r.text
        jpg = ("a.jpg", b"\xff\xd8\xff" + b"\x00" * 10, "image/jpeg")
        r = c.post("/gallery", files=[("files", video), ("files", jpg)], data={"camera": "A"})
        assert r.status_code == 422 and "one video per request" in r.json()["detail"]


def _bad_inputs(split) -> list[tuple[str, dict, dict, int, str]]:
    _, gallery = split
    jpg = gallery[0].read_bytes()
    big = cv2.imencode(".png", np.zeros((1100, 1000, 3), np.uint8))[1].tobytes()
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("notes.txt", "hello")
    img = lambda name, data, ct="image/jpeg": [("files", (name, data, ct))]  # noqa: E731
    return [
        (
            "/gallery",
            {"files": img("a.txt", b"hello world", "text/plain")},
            {"camera": "A"},
            415,
            "not a supported",
        ),
        ("/gallery", {"files": img("e.jpg", b"")}, {"camera": "A"}, 400, "empty"),
        ("/gallery", {"files": img("t.jpg", jpg[:200])}, {"camera": "A"}, 400, "corrupt"),
        (
            "/gallery",
            {"files": img("z.zip", zbuf.getvalue(), "application/zip")},
            {"camera": "A"},
            400,
            "no images",
        ),
        (
            "/gallery",
            {"files": img("z.zip", b"PK\x03\x04garbage", "application/zip")},
            {"camera": "A"},
            400,
            "zip",
        ),
        ("/gallery", {"files": img("big.png", big, "image/png")}, {"camera": "A"}, 413, "pixels"),
        ("/gallery", {"files": img("a.jpg", jpg) * 6}, {"camera": "A"}, 413, "too many"),
        ("/gallery", {"files": img("a.jpg", jpg)}, {}, 422, ""),
        ("/gallery", {"files": img("a.jpg", jpg)}, {"camera": "  "}, 422, "camera"),
        (
            "/gallery",
            {"files": img("a.jpg", jpg)},
            {"camera": "A", "timestamp": "yesterday"},
            422,
            "ISO 8601",
        ),
        ("/gallery", {"files": img("a.jpg", jpg)}, {"camera": "A", "meta": "{bad"}, 422, "JSON"),
        ("/gallery", {"files": img("a.jpg", jpg)}, {"camera": "A", "meta": "[1, 2]"}, 422, "object"),
        (
            "/gallery",
            {"files": img("a.jpg", b"\xff\xd8\xff" + np.random.default_rng(0).bytes(3000))},
            {"camera": "A"},
            400,
            "corrupt",
        ),
        (
            "/gallery",
            {"files": img("huge.jpg", b"\xff\xd8\xff" + b"\x00" * (3 << 20))},
            {"camera": "A"},
            413,
            "limit",
        ),
        ("/gallery", {}, {"camera": "A"}, 422, ""),
        ("/query", {"files": img("huge.jpg", b"\xff\xd8\xff" + b"\x00" * (3 << 20))}, {}, 413, "limit"),
        ("/query", {"files": img("a.jpg", jpg)}, {"top_k": "0"}, 422, ""),
        ("/query", {"files": img("a.jpg", jpg)}, {"top_k": "1001"}, 422, ""),
        ("/query", {"files": img("a.jpg", jpg)}, {"top_k": "ten"}, 422, ""),
        ("/query", {"files": img("a.jpg", jpg)}, {"since": "2024-13-45"}, 422, "ISO 8601"),
        (
            "/query",
            {"files": img("a.jpg", jpg)},
            {"since": "2024-02-01", "until": "2024-01-01"},
            422,
            "after",
        ),
        ("/query", {"files": img("a.jpg", jpg)}, {"min_score": "2"}, 422, ""),
        ("/query", {"files": img("a.txt", b"hello", "text/plain")}, {}, 415, "not a supported"),
        (
            "/query",
            {"files": img("c.mp4", b"\x00\x00\x00\x18ftypisom" + b"\x01" * 100, "video/mp4")},
            {},
            415,
            "no decodable",
        ),
    ]


def test_bad_input_and_api_keys(tmp_path: Path, split) -> None:
    srv = Server(
        tmp_path / "data",
        REID_API_KEYS="k1, k2",
        REID_MAX_FILES="5",
        REID_MAX_UPLOAD_MB="2",
        REID_MAX_IMAGE_PIXELS="1000000",
    ).start()
    try:
        _, gallery = split
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            # auth on: health is open, everything else needs a valid key
            assert c.get("/healthz").status_code == 200
            assert c.get("/readyz").status_code == 200
            for method, path in [
                ("GET", "/gallery"),
                ("GET", "/gallery/1"),
                ("GET", "/metrics"),
                ("DELETE", "/gallery/1"),
                ("POST", "/query"),
                ("POST", "/gallery"),
            ]:
                r = c.request(method, path)
                assert r.status_code == 401, (method, path, r.status_code)
                assert "API key" in r.json()["detail"]
            assert c.get("/gallery", headers={"X-API-Key": "nope"}).status_code == 401
            assert c.get("/gallery", headers={"X-API-Key": "k2"}).status_code == 200
            # the API description is behind the key too (header, or ?api_key= for a browser)
            for path in ("/openapi.json", "/docs"):
                assert c.get(path).status_code == 401, path
                assert c.get(path, headers={"X-API-Key": "k1"}).status_code == 200, path
            assert "/gallery" in c.get("/openapi.json", params={"api_key": "k2"}).json()["paths"]
            assert "openapi.json?api_key=k2" in c.get("/docs", params={"api_key": "k2"}).text
            assert c.post("/gallery", params={"api_key": "k1"}).status_code == 401  # query key: GET only
            # the documented exception: the web page's static files (no data in them)
            assert c.get("/").status_code == 200 and "<html" in c.get("/").text.lower()
            assert c.get("/redoc").status_code == 404
            c.headers["X-API-Key"] = "k1"
            r = post_images(c, gallery[:1], "A")
            assert r.status_code == 201
            item = r.json()["items"][0]
            # thumbnails may carry the key as a query parameter (for <img src>)
            assert httpx.get(srv.url + item["thumbnail_url"], params={"api_key": "k2"}).status_code == 200
            for path, files, data, status, needle in _bad_inputs(split):
                r = c.post(path, files=files.get("files"), data=data)
                assert r.status_code == status, (path, data, needle, r.status_code, r.text[:200])
                assert needle in r.json()["detail"] if needle else True
            assert c.get("/gallery/999999").status_code == 404
            assert c.get("/gallery/abc").status_code == 422
            assert c.get("/gallery", params={"limit": 0}).status_code == 422
            assert c.get("/gallery", params={"since": "x"}).status_code == 422
            assert c.get("/gallery").json()["total"] == 1  # nothing half-added by the bad requests
            assert c.delete("/gallery", params={"camera": "nobody"}).json() == {"deleted": 0}
        log = srv.log.read_text()
        assert "Traceback" not in log and " 500 " not in log
        assert "k2" not in log and "api_key" not in log  # keys sent as ?api_key= never reach the log
        # who did what: each authorised request's line names its key by fingerprint, never the key
        from reid.service.routes.deps import key_fingerprint

        fp1, fp2 = key_fingerprint("k1"), key_fingerprint("k2")
        assert fp1 != fp2 and "k1" not in log
        lines = log.splitlines()
        assert any("POST /gallery 201" in ln and f"client={fp1}" in ln for ln in lines)  # the upload, by k1
        assert any("GET /gallery/" in ln and f"client={fp2}" in ln for ln in lines)  # the thumbnail, by k2
        assert "erased 0 items matching {'camera': ['nobody']}" in log
    finally:
        srv.stop()


def body_camera_min(spec: dict) -> int:
    ref = spec["paths"]["/gallery"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    return spec["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]["camera"]["minLength"]


def test_errors_share_one_schema_and_integers_are_bounded(tmp_path: Path, split) -> None:
    """Outside fuzzing found 500s on huge integers and error bodies that did not match the
    published schema; every error is now {"detail": str, "errors": list | null} and declared."""
    srv = Server(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            spec = c.get("/openapi.json").json()
            huge = "99999999999999999999999"
            for method, path, params in [
                ("GET", f"/gallery/{huge}", None), ("GET", f"/gallery/{huge}/thumbnail", None),
                ("DELETE", f"/gallery/{huge}", None), ("GET", f"/gallery/1/crops/{huge}", None),
                ("GET", "/gallery", {"offset": huge}), ("GET", "/jobs", {"offset": huge}),
                ("GET", "/gallery", {"offset": -1}), ("GET", "/jobs", {"state": "null"}),
                ("GET", "/gallery", {"kind": "video"}), ("GET", "/gallery/0", None),
            ]:
                r = c.request(method, path, params=params)
                assert r.status_code == 422, (method, path, params, r.status_code, r.text)
                body = r.json()
                assert isinstance(body["detail"], str) and body["detail"], body
                assert isinstance(body["errors"], list) and body["errors"][0]["loc"], body
            for r in (c.post("/gallery"), c.post("/query"), c.post("/gallery", data={"camera": "A"})):
                assert r.status_code == 422 and "files" in r.json()["detail"], r.text
            r = c.get("/gallery/123456")
            assert r.status_code == 404 and r.json() == {"detail": "gallery item 123456 not found", "errors": None}
            # the schema says the same: every API operation declares the Error model for 4xx
            error_ref = "#/components/schemas/Error"
            for path, ops in spec["paths"].items():
                if path in ("/healthz", "/readyz", "/metrics"):
                    continue  # no key, no input
                for method, op in ops.items():
                    for code in ("401", "404", "422"):
                        schema = op["responses"][code]["content"]["application/json"]["schema"]
                        assert schema["$ref"] == error_ref, (method, path, code)
            assert set(spec["components"]["schemas"]["Error"]["properties"]) == {"detail", "errors"}
            gallery_params = {p["name"]: p for p in spec["paths"]["/gallery"]["get"]["parameters"]}
            assert gallery_params["offset"]["schema"]["maximum"] == 2**63 - 1
            assert set(gallery_params["kind"]["schema"]["anyOf"][0]["enum"]) == {"image", "tracklet"}
            jobs_params = {p["name"]: p for p in spec["paths"]["/jobs"]["get"]["parameters"]}
            assert "cancelled" in jobs_params["state"]["schema"]["anyOf"][0]["enum"]
            assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
            for path in ("/gallery", "/query"):  # upload constraints are in the schema, not only in the code
                ref = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
                body = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]
                assert body["files"]["minItems"] == 1, body["files"]
            assert body_camera_min(spec) == 1
            # 405 and OPTIONS name every method of the path, DELETE included
            for path in ("/gallery/1", "/jobs/abc"):
                r = c.put(path)
                assert r.status_code == 405 and "DELETE" in r.headers["allow"] and "GET" in r.headers["allow"]
                assert r.json()["detail"] == "Method Not Allowed"
                r = c.options(path)
                assert r.status_code == 204 and "DELETE" in r.headers["allow"], r.headers
        log = srv.log.read_text()
        assert "Traceback" not in log and " 500 " not in log
    finally:
        srv.stop()


def test_sigkill_during_writes_loses_nothing(tmp_path: Path, split) -> None:
    _, gallery = split
    srv = Server(tmp_path / "data").start()
    acked: dict[int, str] = {}
    stop = threading.Event()
    lock = threading.Lock()

    def writer(i: int) -> None:
        k = 0
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            while not stop.is_set():
                p = gallery[(i * 7 + k) % len(gallery)]
                k += 1
                try:
                    r = post_images(c, [p, gallery[(i + k) % len(gallery)]], f"cam{i}", meta=f'{{"k": {k}}}')
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    with lock:
                        for it in r.json()["items"]:
                            acked[it["id"]] = f"cam{i}"

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    t0 = time.time()
    while len(acked) < 40 and time.time() - t0 < 30:
        time.sleep(0.02)
    srv.kill9()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 40
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            ready = c.get("/readyz").json()
            assert ready["items"] == ready["index_size"]
            listed = {it["id"]: it for it in c.get("/gallery", params={"limit": 500}).json()["items"]}
            assert ready["items"] == len(listed)
            missing = [i for i in acked if i not in listed]
            assert not missing, f"acknowledged items lost: {missing}"
            assert all(listed[i]["camera"] == cam for i, cam in acked.items())
            # nothing half-written: every stored item has its thumbnail and its vector is searchable
            for it in listed.values():
                assert c.get(it["thumbnail_url"]).status_code == 200
            res = query(c, gallery[:1], top_k=len(listed)).json()["results"]
            assert {h["id"] for h in res} == set(listed)
    finally:
        srv.stop()
