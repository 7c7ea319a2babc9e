"""What searching with confirmed sightings buys → bench/feedback.md.

The web page lets an investigator tick *same person* on hits and search with all of them
(GET /gallery/{id}/similar?also=…: the stored vectors averaged, the confirmed items left out). This
simulates that on labelled sets: for each query, the investigator looks at the first ``--look`` hits
and confirms the true matches among them (an oracle: real people also make mistakes); the query
photo and the confirmed items are averaged and searched again. Both are scored on the same targets,
the sightings not found yet: *reading on* is the first ranking past the hits already checked (what the
investigator does without the feature); *with the confirmed* is the second search, which still shows
the hits they rejected (the page leaves out only the confirmed ones), so it is not flattered. Same
protocol as `reid eval` otherwise (same-identity same-camera gallery items ignored; cosine;
non-interpolated AP).

    python bench/feedback.py [--look 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import DATASETS, SHARED, hardware, write_report  # noqa: E402

#: (label, model, dataset root, format, whether the model trained on other people from these cameras)
RUNS = [
    ("shipped default (v3.3)", REPO / "reid" / "models" / "default", DATASETS / "market1501", "market1501", True),
    ("OSNet-x0.25 peer (MSMT17)", SHARED / "weights" / "osnet_x0_25_msmt17.onnx", DATASETS / "dukemtmc", "dukemtmc",
     False),
]


def embed(model: Path, samples) -> np.ndarray:
    from reid.models.preprocess import PreprocessSpec, read_image
    from reid.training.evaluate import load_embedder

    spec = PreprocessSpec(height=256, width=128, color="RGB", scale=1 / 255) if model.suffix == ".onnx" else None
    emb = load_embedder(model, spec=spec, threads=2)
    out = [emb.embed_images([read_image(s.path) for s in samples[i:i + 256]]) for i in range(0, len(samples), 256)]
    x = np.concatenate(out).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def scores(order: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """(hit at rank 1, non-interpolated AP) of a ranked gallery (indices) against a boolean target mask."""
    hits = targets[order]
    n = int(hits.sum())
    if n == 0:
        return float("nan"), float("nan")
    ranks = np.flatnonzero(hits) + 1
    return float(hits[0]), float(np.mean(np.arange(1, n + 1) / ranks))


def simulate(q: np.ndarray, g: np.ndarray, split, look: int) -> dict:
    q_pid = np.array([s.pid for s in split.query])
    q_cam = np.array([s.camid for s in split.query])
    g_pid = np.array([s.pid for s in split.gallery])
    g_cam = np.array([s.camid for s in split.gallery])
    before_r1, before_ap, after_r1, after_ap, confirmed, scored = [], [], [], [], [], 0
    for i in range(len(q)):
        valid = ~((g_pid == q_pid[i]) & (g_cam == q_cam[i]))  # the standard junk: same person, same camera
        idx = np.flatnonzero(valid)
        first = idx[np.argsort(-(g[idx] @ q[i]), kind="stable")]
        true = g_pid == q_pid[i]
        found = [j for j in first[:look] if true[j]]
        remaining = valid.copy()
        remaining[found] = False
        targets = true & remaining
        if not targets.any():
            continue  # nothing left to find (or nothing to find at all)
        scored += 1
        confirmed.append(len(found))
        r1, ap = scores(first[look:], targets)  # without the feature: read on past what was checked
        before_r1.append(r1)
        before_ap.append(ap)
        v = q[i] + g[found].sum(axis=0)
        v /= np.linalg.norm(v)
        rest = np.flatnonzero(remaining)
        second = rest[np.argsort(-(g[rest] @ v), kind="stable")]
        r1, ap = scores(second, targets)
        after_r1.append(r1)
        after_ap.append(ap)
    return {"queries": scored, "confirmed": float(np.mean(confirmed)),
            "with_any": float(np.mean(np.array(confirmed) > 0)),
            "before": (100 * np.mean(before_r1), 100 * np.mean(before_ap)),
            "after": (100 * np.mean(after_r1), 100 * np.mean(after_ap))}


def main() -> None:
    from reid.training.datasets import load_split

    ap = argparse.ArgumentParser()
    ap.add_argument("--look", type=int, default=10, help="hits the investigator checks after the first search")
    args = ap.parse_args()
    rows = []
    for label, model, root, fmt, in_domain in RUNS:
        if not root.exists() or not model.exists():
            print(f"skip {label}: {root if not root.exists() else model} missing (python bench/datasets.py)")
            continue
        split = load_split(root, fmt)
        r = simulate(embed(model, split.query), embed(model, split.gallery), split, args.look)
        rows.append((label, fmt, in_domain, r))
        print(label, fmt, r, flush=True)
    lines = ["# Searching with confirmed sightings", "",
             f"Hardware: {hardware()}. One run of `python bench/feedback.py --look {args.look}`.", "",
             __doc__.split("\n\n")[1].replace("\n", " "), "",
             "| model | set | queries scored | sightings confirmed in the first search (mean) | queries with one or "
             "more | rank-1, reading on | rank-1, with the confirmed | mAP, reading on | mAP, with the "
             "confirmed |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, fmt, in_domain, r in rows:
        (b1, bap), (a1, aap) = r["before"], r["after"]
        lines.append(f"| {label} | {fmt} ({'in-domain' if in_domain else 'cameras it never saw'}) | {r['queries']} | "
                     f"{r['confirmed']:.2f} | {100 * r['with_any']:.0f} % | {b1:.1f} | **{a1:.1f}** | {bap:.1f} | "
                     f"**{aap:.1f}** |")
    lines += ["", "Rank-1 here: the next hit shown is one of the sightings still missing. Queries whose sightings "
              "were all confirmed already, or that have none, are not scored."]
    write_report(REPO / "bench" / "feedback.md", lines)


if __name__ == "__main__":
    main()
