"""The third-party OSNet-x0.25 (MSMT17) ONNX model on the full CUHK03 val split through `reid eval`,
to check the evaluator against the numbers quoted for it (rank-1 51.9, mAP 52.2, i2i). Writes
bench/eval_osnet_peer.md with every exact command.

    python bench/eval_osnet_peer.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._common import SHARED, hardware  # noqa: E402

OSNET = SHARED / "weights" / "osnet_x0_25_msmt17.onnx"
DATA = SHARED / "data" / "cuhk03" / "val"
FLAGS = ["--height", "256", "--width", "128", "--color", "RGB", "--scale", "0.00392156862745098",
         "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--threads", "1"]
RUNS = [
    ("i2i", []), ("i2v", []), ("v2v", []), ("v2i", []),
    ("i2i", ["--ap", "trapezoid"]), ("i2i", ["--flip"]), ("i2i", ["--rerank", "kreciprocal"]), ("i2i", ["--aqe"]),
]


def main() -> None:
    hw = hardware()
    rows = []
    for mode, extra in RUNS:
        cmd = ["reid", "eval", "--model", str(OSNET), "--data", str(DATA), "--format", "cuhk03",
               "--mode", mode, *FLAGS, *extra]
        exe = [str(Path(sys.executable).parent / "reid"), *cmd[1:]]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        out = subprocess.run(exe, cwd=REPO, capture_output=True, text=True, check=True, env=env).stdout
        r = json.loads(out.strip().splitlines()[-1])
        rows.append((" ".join(cmd), r))
        print(json.dumps(r), flush=True)
    lines = [
        "# OSNet-x0.25 (MSMT17) peer on CUHK03 val, through `reid eval`",
        "",
        f"Hardware: {hw}. Written by `python bench/eval_osnet_peer.py`.",
        "",
        "Protocol: query = camera A crops, gallery = camera B crops (938 images, 100 ids); same-pid",
        "same-camera gallery items are junk; distance 1 − cos; AP non-interpolated unless `--ap trapezoid`.",
        "i2v/v2v/v2i use one pseudo-tracklet per identity and camera (query = its first image); without a",
        "video model a tracklet is the renormalised mean of its frame embeddings.",
        "",
        "| mode | options | rank-1 | rank-5 | rank-10 | mAP | mINP | queries (skipped) | gallery | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (_, r), (mode, extra) in zip(rows, RUNS, strict=True):
        lines.append(f"| {mode} | {' '.join(extra) or '—'} | {r['rank1']:.1f} | {r['rank5']:.1f} | "
                     f"{r['rank10']:.1f} | {r['mAP']:.1f} | {r['mINP']:.1f} | "
                     f"{r['num_query']} ({r['num_skipped']}) | {r['num_gallery']} | {r['seconds']:.1f} |")
    lines += ["", "Reference quoted in the issue for this model (i2i): rank-1 51.9, mAP 52.2.", "",
              "Commands:", ""]
    lines += [f"    {cmd}" for cmd, _ in rows]
    (REPO / "bench" / "eval_osnet_peer.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
