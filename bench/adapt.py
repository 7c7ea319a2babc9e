"""`reid adapt` measured: does a model get better on new cameras from their unlabelled tracklets?
Writes bench/adapt.md.

The leave-Duke-out dev model (trained on CUHK03 + Market-1501, never on Duke) stands for the shipped
model, and DukeMTMC-reID's *training* images stand for a user's footage: cut into tracklets (one per
person and camera, as a tracker cuts them; at most 8 crops each, as the service keeps), indexed
into a real gallery with their labels dropped. `reid adapt` tunes the model on that gallery; then
`reid eval` tests both models on Duke's test split (other people, the same 8 cameras), and on sets
of other cameras to show what the adaptation costs elsewhere.

    python bench/datasets.py                      # once
    reid train configs/osnet_cm2duke_retain_4ep.yaml
    reid export runs/osnet_cm2duke_retain_4ep/last.pt --out runs/osnet_cm2duke_retain_4ep/export
    python bench/adapt.py [--epochs 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import DATASETS, SHARED, hardware, reid_eval, write_report  # noqa: E402

DEV_MODEL = REPO / "runs" / "osnet_cm2duke_retain_4ep" / "export"
WORK = REPO / "runs" / "adapt_duke"
#: (label, root, format): the target cameras first, then cameras neither model trained on nor adapted to
SETS = [("DukeMTMC-reID test (adapted to)", DATASETS / "dukemtmc", "dukemtmc"),
        ("Partial-REID", DATASETS / "partial" / "Partial-REID_Dataset", "partial_reid"),
        ("Partial-iLIDS", DATASETS / "partial" / "Partial_iLIDS", "partial_ilids"),
        ("CUHK03 val", SHARED / "data" / "cuhk03" / "val", "cuhk03")]
CROPS_PER_TRACKLET = 8


def build_gallery(model: Path, data_dir: Path) -> int:
    """Duke's training images as unlabelled tracklets in a real gallery; returns the tracklet count."""
    import numpy as np

    from reid.models.preprocess import read_image
    from reid.service.embedder import Embedder
    from reid.service.gallery import Gallery
    from reid.service.settings import Settings
    from reid.training.datasets import load_split, tracklets

    tracks = tracklets(load_split(DATASETS / "dukemtmc", "dukemtmc").train)
    settings = Settings(model=model, data_dir=data_dir)
    embedder = Embedder(settings)
    gallery = Gallery(settings, embedder, background=False)
    try:
        for t in tracks:
            pick = np.linspace(0, len(t.paths) - 1, min(len(t.paths), CROPS_PER_TRACKLET)).round().astype(int)
            gallery.add_tracklet([read_image(t.paths[i]) for i in sorted(set(pick))], f"duke-c{t.camid + 1}")
    finally:
        gallery.close()
        embedder.close()
    return len(tracks)


#: `reid adapt --blend` weights compared (1 = the adapted net as trained; 0.5 is the default)
BLENDS = (1.0, 0.7, 0.5, 0.3)
DEFAULT_BLEND = 0.5


def adapt(model: Path, data_dir: Path, run_dir: Path, out: Path, epochs: int, blend: float) -> str:
    """`reid adapt` as a user runs it (trains once; later calls resume the finished run and only
    blend and export); returns its summary line."""
    cmd = [sys.executable, "-m", "reid.cli", "adapt", "--model", str(model), "--data-dir", str(data_dir),
           "--out", str(out), "--epochs", str(epochs), "--run-dir", str(run_dir), "--resume", "--blend", str(blend)]
    out_text = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    return next(line for line in out_text.splitlines() if "tracklets (" in line).strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=DEV_MODEL, help="model directory to adapt")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "bench" / "adapt.md"))
    args = ap.parse_args()
    hw = hardware()
    data_dir, run_dir = WORK / "data", WORK / f"run_{args.epochs}ep"
    if not (data_dir / "reid.sqlite3").is_file():
        t0 = time.perf_counter()
        n = build_gallery(args.model, data_dir)
        print(f"indexed {n} Duke training tracklets in {time.perf_counter() - t0:.0f} s", flush=True)
    models = {w: WORK / f"model_{args.epochs}ep_blend{w:g}" for w in BLENDS}
    summary = ""
    for w, out in models.items():
        summary = adapt(args.model, data_dir, run_dir, out, args.epochs, w)
    with open(run_dir / "log.csv") as f:
        minutes = float(list(csv.DictReader(f))[-1]["train_seconds"]) / 60
    rows = []
    for label, root, fmt in SETS:
        if not root.exists():
            continue
        before = reid_eval("--model", str(args.model), "--data", str(root), "--format", fmt)
        after = {w: reid_eval("--model", str(m), "--data", str(root), "--format", fmt) for w, m in models.items()}
        default = after[DEFAULT_BLEND]
        d1, dm = default["rank1"] - before["rank1"], default["mAP"] - before["mAP"]
        cells = " | ".join(f"{r['rank1']:.1f} / {r['mAP']:.1f}" for r in after.values())
        rows.append(f"| {label} | {before['rank1']:.1f} / {before['mAP']:.1f} | {cells} | {d1:+.1f} / {dm:+.1f} |")
        print(rows[-1], flush=True)
    rel = os.path.relpath
    heads = " | ".join(f"blend {w:g}" + (" (as trained)" if w == 1 else " (default)" if w == DEFAULT_BLEND else "")
                       for w in BLENDS)
    write_report(args.out, [
        "# `reid adapt`: tuning to new cameras from their unlabelled tracklets",
        "",
        f"Hardware: {hw}. Written by `python bench/adapt.py --epochs {args.epochs}`.",
        "",
        f"Start: `{rel(args.model, REPO)}` (the leave-Duke-out dev model: CUHK03 + Market-1501, never Duke). "
        "The user's footage: DukeMTMC-reID's training images as tracklets (one per person and camera, at most "
        f"{CROPS_PER_TRACKLET} crops), indexed into a real gallery without labels — {summary}. "
        f"`reid adapt --epochs {args.epochs}` trained for {minutes:.0f} min, then wrote one model per `--blend` "
        "weight (the adapted weights' share; the rest are the starting model's, `reid blend`). Then `reid eval` "
        "(I2I, cosine, rank-1 / mAP %) on Duke's test split — other people, the same cameras — and on cameras "
        "the start saw (CUHK03) or neither saw (Partial-REID, Partial-iLIDS, held out: no choice uses them).",
        "",
        f"| test set | before | {heads} | Δ default |",
        "|---|---|" + "---|" * len(BLENDS) + "---|",
        *rows,
        "",
        f"The default `--blend {DEFAULT_BLEND:g}` was chosen on Duke test (the adapted cameras) and CUHK03 val "
        "(cameras it was not adapted to), never on the Partial sets.",
    ])


if __name__ == "__main__":
    main()
