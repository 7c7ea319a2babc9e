"""Accuracy table for bench/accuracy.md: every row is measured by the same `reid eval` command
(printed beside it), plus training wall time (from the run's log.csv) and embedding img/s of the
row's image ONNX model measured side by side in this one run on this machine.

    python bench/accuracy.py                      # the rows below, models from runs/ and models/default
    python bench/accuracy.py --data DIR --format cuhk03
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import reid_eval, write_report  # noqa: E402

SHARED = Path(os.environ.get("REID_SHARED", REPO.parent / "shared"))
OSNET = SHARED / "weights" / "osnet_x0_25_msmt17.onnx"
OSNET_FLAGS = ["--height", "256", "--width", "128", "--color", "RGB", "--scale", str(1 / 255)]

# name, model path, training log, training command, eval modes
ROWS = [
    ("MobileNetV2 baseline (BN neck, CE + triplet)", "runs/baseline_mobilenetv2_cuhk03/export",
     "runs/baseline_mobilenetv2_cuhk03/log.csv", "reid train configs/baseline_mobilenetv2_cuhk03.yaml",
     ["i2i", "i2v"]),
    ("MobileNetV2 + IA blocks, FP32 export", "models/default-fp32",
     "models/default-fp32/training_log.csv", "reid train configs/ianet_mobilenetv2_cuhk03.yaml", ["i2i", "i2v"]),
    ("the same, INT8 (shipped default)", "models/default", "",
     "reid quantize models/default-fp32 --images …/cuhk03/train --out models/default", ["i2i", "i2v"]),
    ("baseline, 12-epoch schedule (earlier recipe)", "runs/baseline12_mobilenetv2_cuhk03/export",
     "runs/baseline12_mobilenetv2_cuhk03/log.csv", "the configs above with epochs 12, milestones [7, 10]",
     ["i2i", "i2v"]),
    ("+ IA blocks, 12-epoch schedule (v1.0.0 default)", "runs/ianet12_mobilenetv2_cuhk03/export",
     "runs/ianet12_mobilenetv2_cuhk03/log.csv", "the configs above with epochs 12, milestones [7, 10]",
     ["i2i", "i2v"]),
    ("TKP: MobileNetV2 image net taught by a non-local video net", "runs/tkp_mobilenetv2_cuhk03/export",
     "runs/tkp_mobilenetv2_cuhk03/log.csv", "reid train configs/tkp_mobilenetv2_cuhk03.yaml", ["i2i", "i2v"]),
    ("OSNet-x0.25 (MSMT17, third-party peer)", str(OSNET), "", "—", ["i2i", "i2v"]),
]


NOTES = """## Reading the table

- **Training time** is the sum of epoch times in the run's `log.csv`. The 24-epoch runs had the
  machine mostly to themselves (59–94 img/s); the 12-epoch and TKP runs shared the 2 cores with
  other jobs.
- **Schedule:** the same recipe trained for 24 instead of 12 epochs gains about 10 rank-1 points for
  both networks. The shipped default moved from the 12-epoch IANet (v1.0.0) to the 24-epoch one
  (v1.1.0) because of that comparison, which is a choice made on this val split (../shared has no
  separate test split); each run's own epoch is never picked on val (the final epoch is shipped,
  val is evaluated every 8 epochs for the log only).
- **IA blocks vs baseline:** at 12 epochs +2.6 rank-1 / +2.1 mAP; at 24 epochs the image-to-image
  difference is gone (+0.2 rank-1, −0.7 mAP, +0.9 mINP) and image-to-video keeps +3.0 rank-1 /
  +1.0 mAP. One seed each: differences of this size on 100 identities are within seed noise.
- **INT8:** the shipped model is `reid quantize`d: calibrated on 128 *train* crops, keeping the
  stem, layer1 and layer2 in FP32, chosen by agreement with the FP32 embeddings on held-out *train*
  crops, never by val accuracy. It costs 0.7 rank-1 / 0.4 mAP here (about 3 of 451 queries).
- **TKP is under-trained**: 2 epochs (the paper trains 150) because two MobileNetV2s over 4-frame
  clips cost about 4× an image epoch here. Its I2V is far below the baseline's: the target
  "TKP's I2V ≥ the baseline's I2V" is **not met** on this budget, and TKP is not shipped.
- The commercial peer's 84 / 81 is not reached."""


def train_minutes(log: str) -> str:
    path = REPO / log
    if not log or not path.is_file():
        return "—"
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return f"{float(rows[-1]['train_seconds']) / 60:.0f} min ({rows[-1]['epoch']} epochs)"


def embed_speeds(models: list[tuple[str, list[str]]], images: list) -> list[float]:
    """img/s per model, measured round-robin (3 rounds, best kept) so load changes hit all alike."""
    from models.preprocess import PreprocessSpec
    from training.evaluate import OnnxEmbedder

    embedders = [OnnxEmbedder(m, spec=PreprocessSpec(height=256, width=128) if extra else None, batch_size=64)
                 for m, extra in models]
    best = [0.0] * len(embedders)
    for _ in range(3):
        for i, emb in enumerate(embedders):
            emb.embed_images(images[:64])  # warm-up
            t = time.perf_counter()
            emb.embed_images(images)
            best[i] = max(best[i], len(images) / (time.perf_counter() - t))
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(SHARED / "data" / "cuhk03" / "val"))
    ap.add_argument("--format", default="cuhk03")
    ap.add_argument("--out", default=str(REPO / "bench" / "accuracy.md"))
    args = ap.parse_args()
    from models.preprocess import read_image

    data = Path(args.data)
    speed_images = [read_image(str(p)) for p in sorted(data.glob("*.jpg"))[:512]]
    lines = [
        "# Accuracy on CUHK03 val (development benchmark)",
        "",
        f"Made by `python bench/accuracy.py` on {time.strftime('%Y-%m-%d')}; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, no GPU. Query = camera A, gallery = camera B of the 100 val identities "
        "(938 images); I2V: query = first camera-A frame, gallery = camera-B pseudo-tracklets. "
        "Rank-1 / mAP / mINP in %, non-interpolated AP, no re-ranking, no flip. Embedding img/s = ONNX Runtime, "
        "CPU, batch 64, 512 crops, all models timed round-robin in the same run (best of 3).",
        "",
        "| model | I2I R1 | I2I mAP | I2I mINP | I2V R1 | I2V mAP | I2V mINP | training | embed img/s | "
        "made by |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    commands, rows, speed_models = [], [], []
    for name, model, log, train_cmd, modes in ROWS:
        path = REPO / model if (REPO / model).exists() else Path(model)
        if not path.exists():
            print(f"skip {name}: {model} missing", file=sys.stderr)
            continue
        extra = OSNET_FLAGS if model == str(OSNET) else []
        cells = []
        for mode in modes:
            cmd = ["--model", model, "--data", str(data), "--format", args.format, "--mode", mode, *extra]
            r = reid_eval(*cmd)
            commands.append(" ".join(["reid", "eval", *cmd]))
            cells += [f"{r['rank1']:.1f}", f"{r['mAP']:.1f}", f"{r['mINP']:.1f}"]
        rows.append((name, cells, train_minutes(log), train_cmd))
        speed_models.append((str(path), extra))
    speeds = embed_speeds(speed_models, speed_images)
    for (name, cells, minutes, train_cmd), speed in zip(rows, speeds, strict=True):
        lines.append(f"| {name} | {' | '.join(cells)} | {minutes} | {speed:.0f} | `{train_cmd}` |")
        print(lines[-1], flush=True)
    lines += ["", NOTES, "", "Eval commands (one JSON line each):", "", *[f"    {c}" for c in commands], ""]
    write_report(args.out, lines)


if __name__ == "__main__":
    main()
