"""Query latency: search-only (FAISS) and end-to-end (HTTP → decode → embed → search → metadata)
for one image, exact vs ANN, at several gallery sizes, with recall@10 of the ANN vs exact.

Synthetic gallery vectors (dim = the shipped default model's, read from its metadata): identities are
points in a 64-d latent space, each item a noisy view of its identity, mapped up by a fixed random matrix plus noise
and L2-normalised — structured like real embeddings (low intrinsic dimension), unlike i.i.d. noise,
on which no ANN index can have meaningful recall. Queries are fresh views of gallery identities.
Writes bench/query_latency.md.

    python bench/query_latency.py [--sizes 10000,100000,1000000] [--e2e-sizes 10000,100000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import SHARED, hardware, running_server, write_report  # noqa: E402

LATENT, PER_ID = 64, 4


def _shipped_dim() -> int:
    from reid.models.preprocess import read_onnx_metadata

    return int(read_onnx_metadata(str(REPO / "reid" / "models" / "default" / "image.onnx"))["reid.embedding_dim"])


DIM = _shipped_dim()  # the end-to-end rows search with the shipped model: its vectors' size


class Synth:
    """Deterministic chunked generator of clustered, normalised vectors."""

    def __init__(self, n: int, dim: int = DIM, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n, self.dim = n, dim
        self.proj = (rng.standard_normal((LATENT, dim)) / np.sqrt(LATENT)).astype(np.float32)
        self.ids = max(1, n // PER_ID)
        self.centers = rng.standard_normal((self.ids, LATENT)).astype(np.float32)
        self.seed = seed

    def _views(self, ident: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        z = self.centers[ident] + 0.35 * rng.standard_normal((len(ident), LATENT)).astype(np.float32)
        x = z @ self.proj + 0.15 * rng.standard_normal((len(ident), self.dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def chunks(self, size: int = 50000):
        for start in range(0, self.n, size):
            rng = np.random.default_rng(self.seed * 1000003 + start)
            stop = min(self.n, start + size)
            yield start, self._views(np.arange(start, stop) % self.ids, rng)

    def queries(self, nq: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed + 99)
        return self._views(rng.integers(0, self.ids, nq), rng)


def pct(a: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(a), q))


def time_single(index, q: np.ndarray, k: int = 10) -> tuple[list[float], np.ndarray]:
    lat, ids = [], []
    index.search(q[:1], k)
    for i in range(len(q)):
        t = time.perf_counter()
        _, found = index.search(q[i : i + 1], k)
        lat.append((time.perf_counter() - t) * 1000)
        ids.append(found[0])
    return lat, np.stack(ids)


def recall_at(exact: np.ndarray, approx: np.ndarray) -> float:
    return float(np.mean([len(set(e) & set(a)) / len(e) for e, a in zip(exact, approx, strict=True)]))


def nlist_for(n: int) -> int:
    return int(min(4096, max(64, 2 ** round(np.log2(np.sqrt(n))))))


def measure(
    name: str, base: float, ids_e: np.ndarray, index, q: np.ndarray, n: int, build: str, search_threads: int
) -> dict:
    import faiss

    faiss.omp_set_num_threads(search_threads)
    lat, ids = time_single(index, q)
    row = dict(
        n=n,
        index=name,
        p50=pct(lat, 50),
        p99=pct(lat, 99),
        recall=recall_at(ids_e, ids),
        speedup=base / pct(lat, 50),
        build=build,
    )
    print(row, flush=True)
    return row


def compare(
    n: int, chunks, q: np.ndarray, threads: int, search_threads: int, hnsw_max_n: int, label: str = "",
    milvus: bool = False, done=None,
) -> list[dict]:
    """Flat vs IVF-Flat (nprobe sweep) vs HNSW32 (full dimension; only up to ``hnsw_max_n``) vs
    PCA128 + HNSW32 with an exact re-rank of the candidates (``PCA128,HNSW32,RFlat``)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    nlist = nlist_for(n)
    anns: dict[str, tuple] = {f"IVF{nlist},Flat": ("nprobe=8", "nprobe=32", "nprobe=128")}
    if n <= hnsw_max_n:
        anns["HNSW32"] = ("efSearch=64", "efSearch=128", "efSearch=256")
    # k_factor_rf: candidates re-ranked exactly = k × this. SQfp16 scans half-size (fp16) vectors and
    # re-scores the best k × factor with the full ones: exact scores, half the memory traffic
    anns["SQfp16,RFlat"] = ("k_factor_rf=2", "k_factor_rf=8")
    anns["PCA128,HNSW32,RFlat"] = (
        "efSearch=64,k_factor_rf=4",
        "efSearch=128,k_factor_rf=8",
        "efSearch=256,k_factor_rf=16",
        "efSearch=512,k_factor_rf=32",
        "efSearch=1024,k_factor_rf=64",
    )
    # a denser graph (M=48) finds the true neighbours at a smaller efSearch: the 1M goal is
    # recall@10 ≥ 0.99 at ≥ 50× exact speed
    anns["PCA128,HNSW48,RFlat"] = ("efSearch=256,k_factor_rf=32", "efSearch=384,k_factor_rf=32",
                                   "efSearch=512,k_factor_rf=32")
    # one ANN index at a time next to the exact one (at 1M each full copy is 5 GB)
    flat = faiss.IndexFlatIP(DIM)
    for _, x in chunks():
        flat.add(x)
    faiss.omp_set_num_threads(search_threads)
    lat_e, ids_e = time_single(flat, q)
    del flat
    base = pct(lat_e, 50)
    rows = [dict(n=n, index=f"{label}Flat (exact)", p50=base, p99=pct(lat_e, 99), recall=1.0, speedup=1.0, build="")]
    print(rows[-1], flush=True)
    ps = faiss.ParameterSpace()
    train_n = min(n, max(40 * nlist, 50000))
    for name, grid in anns.items():
        faiss.omp_set_num_threads(threads)
        index = faiss.index_factory(DIM, name, faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        for start, x in chunks():
            if start == 0 and not index.is_trained:
                index.train(x[:train_n])
            index.add(x)
        secs = time.perf_counter() - t0
        for params in grid:
            ps.set_index_parameters(index, params)
            rows.append(measure(f"{label}{name} {params}", base, ids_e, index, q, n, f"{secs:.0f} s", search_threads))
        del index
    if milvus:
        if done:  # the FAISS rows are kept even if the Milvus part dies (at 1M it needs most of the RAM)
            done(rows)
        rows += milvus_rows(n, chunks, q, ids_e, base, label)
    return rows


def milvus_rows(n: int, chunks, q: np.ndarray, ids_e: np.ndarray, base: float, label: str) -> list[dict]:
    """The service's Milvus backend (reid/service/index_milvus.py) on embedded Milvus Lite: FLAT, plus
    IVF_FLAT (nprobe sweep) and, up to 100k, HNSW (ef sweep), each filled through the same client."""
    from reid.service.index_milvus import MilvusIndex
    from reid.service.store import IndexRows

    nlist = nlist_for(n)
    if n > 100_000:  # Milvus Lite answers in seconds at 1M: 50 queries are enough for p50 and recall
        q, ids_e = q[:50], ids_e[:50]
    kinds: list[tuple[str, dict, tuple]] = [("FLAT", {}, ({},))]
    if n <= 100_000:  # at 1M Milvus Lite's IVF_FLAT ran out of 24 GB (killed by the OOM killer, 2026-12-03)
        kinds.append(("IVF_FLAT", {"nlist": nlist}, ({"nprobe": 8}, {"nprobe": 32})))
        kinds.append(("HNSW", {}, ({"ef_search": 64}, {"ef_search": 128}, {"ef_search": 256})))
    rows = []
    for kind, build_kw, grid in kinds:
        with tempfile.TemporaryDirectory(prefix="milvus-bench-") as tmp:
            idx = MilvusIndex(DIM, str(Path(tmp) / "milvus.db"), "bench", kind, **build_kw)
            t0 = time.perf_counter()
            idx._create()
            for start, x in chunks():  # the service's own write path: upserts of IndexRows, 2,000 at a time
                for i in range(0, len(x), 2000):
                    m = len(x[i:i + 2000])
                    idx._upsert(idx.state, IndexRows(np.arange(start + i, start + i + m), x[i:i + 2000],
                                                     ["c"] * m, ["image"] * m, [None] * m, [None] * m))
            idx.client.flush("bench")
            idx.client.load_collection("bench")
            idx.search(q[:1], 10)  # the first search builds what is left of the index
            secs = time.perf_counter() - t0
            for params in grid:
                for key, value in params.items():
                    setattr(idx, key, value)
                name = f"{label}Milvus Lite {kind}" + "".join(f" {k}={v}" for k, v in params.items())
                lat, found = time_single(idx, q)
                row = dict(n=n, index=name, p50=pct(lat, 50), p99=pct(lat, 99), recall=recall_at(ids_e, found),
                           speedup=base / pct(lat, 50), build=f"{secs:.0f} s")
                print(row, flush=True)
                rows.append(row)
            idx.close()
    return rows


def search_only(sizes: list[int], nq: int, threads: int, search_threads: int, hnsw_max_n: int, done=None,
                milvus: bool = False) -> list[dict]:
    rows = []
    for n in sizes:
        syn = Synth(n)
        rows += compare(n, syn.chunks, syn.queries(nq), threads, search_threads, hnsw_max_n, milvus=milvus,
                        done=(lambda part, before=list(rows): done(before + part)) if done else None)
        if done:
            done(rows)
    return rows


def real_embeddings(threads: int, search_threads: int) -> list[dict]:
    """The same comparison on real embeddings: every CUHK03 crop in ../shared through the default model;
    queries are the camera-A crops of val, the gallery everything else."""
    from reid.models.preprocess import read_image
    from reid.service.embedder import Embedder
    from reid.service.settings import Settings

    root = SHARED / "data" / "cuhk03"
    paths = sorted(root.glob("*/*.jpg"))
    if not paths:
        return []
    emb = Embedder(Settings(intra_op_threads=threads))
    vecs = np.concatenate(
        [emb.embed([read_image(str(p)) for p in paths[i : i + 64]]) for i in range(0, len(paths), 64)]
    )
    emb.close()
    is_q = np.array([p.parent.name == "val" and int(p.stem.split("_")[1]) <= 4 for p in paths])
    g, q = vecs[~is_q], vecs[is_q]
    return compare(len(g), lambda: iter([(0, g)]), q, threads, search_threads, 10**9, label="real: ")


def populate(data_dir: Path, n: int) -> None:
    """A gallery of n synthetic items written straight into SQLite (no crops: search benchmark)."""
    from reid.service.embedder import file_digest, resolve_model
    from reid.service.gallery import DB_NAME
    from reid.service.store import ItemRecord, Store

    image, video = resolve_model(REPO / "reid" / "models" / "default")
    mid = file_digest(image, video)
    store = Store(data_dir / DB_NAME, "NORMAL")
    store.set_meta("model_id", mid)
    store.set_meta("dim", str(DIM))
    for start, x in Synth(n).chunks(20000):
        with store.transaction() as tx:
            for i, v in enumerate(x):
                Store.insert(
                    tx.c,
                    ItemRecord(
                        kind="image",
                        camera=f"cam{(start + i) % 8}",
                        model_id=mid,
                        ts_start=1.7e9 + start + i,
                        source=f"synthetic_{start + i}",
                    ),
                    v,
                )
    store.close()


def end_to_end(sizes: list[int], nq: int, threads: int) -> list[dict]:
    import httpx

    img = sorted((SHARED / "data" / "cuhk03" / "val").glob("*.jpg"))
    payload = img[0].read_bytes() if img else None
    if payload is None:
        import cv2

        payload = cv2.imencode(".jpg", np.full((160, 64, 3), 127, np.uint8))[1].tobytes()
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as td:
            data = Path(td) / "data"
            t0 = time.perf_counter()
            populate(data, n)
            fill = time.perf_counter() - t0
            for factory, extra in (("Flat", {}), ("SQfp16,RFlat", {"REID_INDEX_REFINE_FACTOR": "2"}),
                                   ("HNSW32", {"REID_INDEX_EF_SEARCH": "128", "REID_INDEX_THREADS": "2"})):
                env = {
                    "REID_DATA_DIR": str(data),
                    "REID_INDEX_FACTORY": factory,
                    "REID_INTRA_OP_THREADS": str(threads),
                    "REID_LOG_LEVEL": "WARNING",
                    **extra,
                }
                with running_server(env, timeout=1800) as (url, startup):
                    lat, took = [], []
                    with httpx.Client(base_url=url, timeout=60) as c:
                        for i in range(nq + 5):
                            t = time.perf_counter()
                            r = c.post(
                                "/query",
                                files={"files": ("q.jpg", payload, "image/jpeg")},
                                data={"top_k": "10"},
                            )
                            dt = (time.perf_counter() - t) * 1000
                            r.raise_for_status()
                            if i >= 5:
                                lat.append(dt)
                                took.append(r.json()["took_ms"])
                    rows.append(
                        dict(
                            n=n,
                            index=factory + (" k_factor_rf=2" if "RFlat" in factory else ""),
                            p50=pct(lat, 50),
                            p99=pct(lat, 99),
                            took50=pct(took, 50),
                            startup=startup,
                            fill=fill,
                        )
                    )
                    print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--e2e-sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2, help="threads for building / embedding")
    ap.add_argument("--search-threads", type=int, default=1, help="FAISS threads for one query (service default)")
    ap.add_argument("--out", default=str(REPO / "bench" / "query_latency.md"))
    ap.add_argument("--no-real", action="store_true", help="skip the rows measured on real CUHK03 embeddings")
    ap.add_argument("--hnsw-max", type=int, default=100000, help="largest gallery for full-dimension HNSW32")
    ap.add_argument("--milvus", action="store_true", help="also the Milvus backend (Milvus Lite; milvus extra)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    e2e_sizes = [int(s) for s in args.e2e_sizes.split(",") if s]
    real: list[dict] = []
    so: list[dict] = []
    e2e: list[dict] = []

    def write(status: str) -> None:
        report(args, real, so, e2e, status)

    # cheapest first, the report rewritten after every phase (the 1M build is long on 2 cores)
    if not args.no_real:
        real += real_embeddings(args.threads, args.search_threads)
    small, big = [n for n in sizes if n <= 100_000], [n for n in sizes if n > 100_000]
    so += search_only(
        small,
        args.queries,
        args.threads,
        args.search_threads,
        args.hnsw_max,
        done=lambda _: write("partial: running"),
        milvus=args.milvus,
    )
    write("partial: end-to-end running")
    e2e += end_to_end(e2e_sizes, min(args.queries, 100), args.threads)
    write("partial: 1M running")
    so += search_only(big, args.queries, args.threads, args.search_threads, args.hnsw_max,
                      done=lambda rows: report(args, real, so + rows, e2e, "partial: 1M running"), milvus=args.milvus)
    write("complete")


def report(args, real: list[dict], so: list[dict], e2e: list[dict], status: str) -> None:
    lines = [
        "# Query latency: exact vs ANN",
        "",
        f"Hardware: {hardware()}.",
        f"One run of `python bench/query_latency.py --sizes {args.sizes} --e2e-sizes {args.e2e_sizes}"
        f"{' --no-real' if args.no_real else ''}{' --milvus' if args.milvus else ''}`; "
        f"{args.threads} threads to build, {args.search_threads} FAISS thread(s) per query (the service "
        "default); one query at a time (batch 1), top-10." + ("" if status == "complete" else f" ({status})"),
        "",
        f"Gallery: synthetic {DIM}-d L2-normalised vectors with identity structure (64-d latent identities, "
        f"{PER_ID} noisy views each, random projection + noise); queries are fresh views of gallery "
        "identities. Recall@10 = overlap of the ANN top-10 with the exact top-10.",
        "",
        "## Search only (FAISS, in process)",
        "",
        *([] if any(int(n) > 100_000 for n in args.sizes.split(",") if n) else [
            "1M is measured separately (one ANN index at a time, no real rows): "
            "[query_latency_1m.md](query_latency_1m.md).", ""]),
        "Rows marked *real* use real embeddings instead: every CUHK03 crop in ../shared through the "
        "default model; queries = the camera-A crops of val, gallery = all the rest.",
        "",
        "| gallery | index | p50 ms | p99 ms | recall@10 | speed-up vs exact (p50) | build |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in real + so:
        lines.append(
            f"| {r['n']:,} | {r['index']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['recall']:.3f} | "
            f"{r['speedup']:.1f}× | {r['build']} |"
        )
    lines += [
        "",
        "## End to end (HTTP POST /query with one CUHK03 image: upload, decode, embed, search, metadata, JSON)",
        "",
        "| gallery | index | client p50 ms | client p99 ms | server took_ms p50 | server start s |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in e2e:
        lines.append(
            f"| {r['n']:,} | {r['index']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['took50']:.1f} | {r['startup']:.1f} |"
        )
    lines += [
        "",
        "Server start includes loading the model and building the index from SQLite (for IVF: "
        "k-means training); a restart with a current snapshot loads it instead.",
        f"End-to-end runs stop at the sizes listed because populating SQLite with 1M × {DIM * 4 // 1024} KB "
        "vectors and rebuilding at start takes minutes on this machine — the search-only table covers 1M.",
        f"Full-dimension HNSW32 is built only up to {args.hnsw_max:,} items (at 100k it takes minutes "
        "on these 2 cores); `PCA128,HNSW32,RFlat` searches a 128-d PCA projection with HNSW and re-ranks "
        "the candidates exactly with the full vectors, which keeps the build affordable. `SQfp16,RFlat` "
        "scans fp16 copies of the vectors (half the memory traffic of `Flat`, which is memory-bound here) and "
        "re-scores the best k × k_factor_rf with the float32 vectors, so its scores are exact and only a "
        "near-tie at the fp16 resolution (~1e-3) could change the ranking. PCA works here "
        "because the vectors have a low intrinsic dimension — check recall on your own embeddings (the "
        "*real* rows) before choosing it; the service takes the same factory string "
        "(`REID_INDEX_FACTORY`).",
        "*Milvus Lite* rows: the service's Milvus backend (`REID_INDEX_BACKEND=milvus`, "
        "reid/service/index_milvus.py) on embedded Milvus Lite, filled through the same upsert path; the "
        "time includes its gRPC round trip. Milvus Lite is a pure-Python engine that builds its index "
        "segments in the background, so its first parameter rows can be measured before that finished "
        "(HNSW's latency falls once it has). It is there for tests and single-machine convenience; for "
        "scale, point `REID_MILVUS_URI` at a Milvus server (compose `milvus` profile) — not measured "
        "here (no Docker engine on this machine).",
    ]
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
