"""Load while indexing: 50 query clients for 2 minutes against a real `reid serve` while an indexer
keeps adding crops → bench/soak.md. Reports errors, query p50/p99, writes acknowledged and found
afterwards (0 lost is the goal), and the server's resident memory (from /metrics) before and after.

    python bench/soak.py [--clients 50] [--seconds 120]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import SHARED, hardware, running_server, write_report  # noqa: E402

CUHK03 = SHARED / "data" / "cuhk03"


def rss_mb(url: str) -> float:
    import httpx

    m = re.search(r"^process_resident_memory_bytes ([0-9.e+]+)$", httpx.get(url + "/metrics").text, re.M)
    return float(m.group(1)) / 2**20 if m else float("nan")


async def soak(url: str, clients: int, seconds: float, crops: list[bytes]) -> dict:
    import httpx

    stop = time.perf_counter() + seconds
    lat: list[float] = []
    q_errors: list[str] = []
    acked: list[int] = []
    w_errors: list[str] = []

    async def query(c: httpx.AsyncClient, i: int) -> None:
        k = i
        while time.perf_counter() < stop:
            t = time.perf_counter()
            try:
                r = await c.post("/query", files={"files": ("q.jpg", crops[k % len(crops)], "image/jpeg")},
                                 data={"top_k": "10"})
                if r.status_code == 200:
                    lat.append((time.perf_counter() - t) * 1000)
                else:
                    q_errors.append(f"{r.status_code} {r.text[:80]}")
            except httpx.HTTPError as exc:
                q_errors.append(type(exc).__name__)
            k += clients

    async def index(c: httpx.AsyncClient) -> None:
        k = 0
        while time.perf_counter() < stop:
            batch = [("files", (f"{k + j}.jpg", crops[(k + j) % len(crops)], "image/jpeg")) for j in range(4)]
            k += 4
            try:
                r = await c.post("/gallery", files=batch, data={"camera": f"cam{k % 3}"})
                if r.status_code == 201:
                    acked.extend(it["id"] for it in r.json()["items"])
                else:
                    w_errors.append(f"{r.status_code} {r.text[:80]}")
            except httpx.HTTPError as exc:
                w_errors.append(type(exc).__name__)

    limits = httpx.Limits(max_connections=clients + 1, max_keepalive_connections=clients + 1)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        await asyncio.gather(index(c), *[query(c, i) for i in range(clients)])
    return {"lat": lat, "q_errors": q_errors, "acked": acked, "w_errors": w_errors}


def main() -> None:
    import httpx

    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=120)
    args = ap.parse_args()
    files = sorted((CUHK03 / "train").glob("*.jpg"))[:400]
    if not files:
        sys.exit(f"needs {CUHK03}/train")
    crops = [p.read_bytes() for p in files]
    with tempfile.TemporaryDirectory() as td, \
            running_server({"REID_DATA_DIR": str(Path(td) / "data"), "REID_LOG_LEVEL": "WARNING"}) as (url, _):
        asyncio.run(soak(url, 4, 3, crops))  # warm-up
        before = rss_mb(url)
        t0 = time.perf_counter()
        r = asyncio.run(soak(url, args.clients, args.seconds, crops))
        wall = time.perf_counter() - t0
        after = rss_mb(url)
        ready = httpx.get(url + "/readyz").json()
        stored, offset = set(), 0
        while True:
            page = httpx.get(url + "/gallery", params={"offset": offset, "limit": 500}).json()
            stored |= {it["id"] for it in page["items"]}
            offset += 500
            if offset >= page["total"]:
                break
    lost = [i for i in r["acked"] if i not in stored]
    lat = r["lat"]
    lines = [
        "# Load while indexing: 50 clients, 2 minutes",
        "",
        f"Hardware: {hardware()}.",
        f"One run of `python bench/soak.py --clients {args.clients} --seconds {args.seconds:g}`: a real `reid serve` "
        "(default model and settings, embedded storage, exact index) started empty; one indexer adds 4 CUHK03 train "
        f"crops per request without pause while {args.clients} clients (asyncio + httpx, same 2 cores) send one-image "
        "queries (top-10), for the whole period.",
        "",
        "| what | value |",
        "|---|---|",
        f"| queries answered | {len(lat)} ({len(lat) / wall:.1f}/s) |",
        f"| query p50 / p99 | {np.percentile(lat, 50):.0f} ms / {np.percentile(lat, 99):.0f} ms |" if lat else
        "| query p50 / p99 | — |",
        f"| query errors | {len(r['q_errors'])} {sorted(set(r['q_errors']))[:3] if r['q_errors'] else ''} |",
        f"| items written and acknowledged | {len(r['acked'])} ({len(r['acked']) / wall:.1f}/s) |",
        f"| write errors | {len(r['w_errors'])} {sorted(set(r['w_errors']))[:3] if r['w_errors'] else ''} |",
        f"| acknowledged items missing afterwards | {len(lost)} |",
        f"| /readyz items = index size | {ready['items']} = {ready['index_size']} |",
        f"| server RSS before → after | {before:.0f} MB → {after:.0f} MB |",
        "",
        f"Goal: 0 errors, 0 lost writes — {'met' if not (r['q_errors'] or r['w_errors'] or lost) else 'NOT met'}.",
    ]
    write_report(REPO / "bench" / "soak.md", lines)


if __name__ == "__main__":
    main()
