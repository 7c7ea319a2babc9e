"""Peak memory and time of k-reciprocal re-ranking (reid/training/rerank.py, k1=20, k2=6, λ=0.3) for
Q × G problems up to 20 000 × 20 000, each size in a fresh process (peak RSS from getrusage).
Synthetic clustered 512-d embeddings: ~10 items per identity. Writes bench/rerank_memory.md.

    python bench/rerank_memory.py [--sizes 2000 10000 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHILD = """
import json, resource, sys, time
import numpy as np
sys.path.insert(0, {repo!r})
from reid.training.rerank import k_reciprocal_rerank
n = {n}
rng = np.random.default_rng(0)
ids = rng.integers(0, max(2 * n // 10, 1), 2 * n)
centers = rng.standard_normal((ids.max() + 1, 512)).astype(np.float32)
x = centers[ids] + 0.8 * rng.standard_normal((2 * n, 512)).astype(np.float32)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.time()
d = k_reciprocal_rerank(x[:n], x[n:], k1=20, k2=6, lambda_value=0.3)
sec = time.time() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"n": n, "seconds": sec, "peak_mb": peak / 1024, "inputs_mb": base / 1024,
                  "output_mb": d.nbytes / 2**20}}))
"""


def main() -> None:
    from bench._common import hardware

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 20000])
    args = ap.parse_args()
    hw = hardware()
    rows = []
    for n in args.sizes:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), n=n)], capture_output=True,
                             text=True, check=True, env=env).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(r), flush=True)
        rows.append(r)
    lines = ["# k-reciprocal re-ranking: peak memory and time", "",
             f"Hardware: {hw}; one thread. Written by `python bench/rerank_memory.py`.", "",
             "Q = G = n, 512-d synthetic clustered embeddings, k1 = 20, k2 = 6, λ = 0.3. Peak RSS is the",
             "whole process (Python + numpy + the inputs); the float32 Q×G result alone is `result MB`.", "",
             "| Q × G | seconds | peak RSS MB | before re-ranking MB | result MB |", "|---|---|---|---|---|"]
    lines += [f"| {r['n']} × {r['n']} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | {r['inputs_mb']:.0f} | "
              f"{r['output_mb']:.0f} |" for r in rows]
    (REPO / "bench" / "rerank_memory.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
