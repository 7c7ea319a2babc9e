"""Accuracy on cameras the model never saw: bench/accuracy.md.

Every cell is one `reid eval` run (the command is listed in the report). Each evaluation set is
marked, per model, *in-domain* (the model trained on other images of the same cameras) or
*cross-domain* (it never saw those cameras); the cross-domain cells are what a user gets.
Results are kept in bench/accuracy.json so a rerun can measure only some models or sets; the
Markdown is rendered from all of them. Embedding speed is measured in each run for every model on
disk, side by side with the peer (round-robin, best of 3), and kept as a multiple of the peer's.

    python bench/datasets.py                      # once: Market-1501, Duke, Partial-REID/iLIDS, MOT17 crops
    python bench/accuracy.py                      # every model × every set
    python bench/accuracy.py --models osnet --sets duke,market
    python bench/accuracy.py --models '' --reranks kr,can50,can100,can200   # second stages (dev model)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from _common import DATASETS, SHARED, reid_eval, write_report  # noqa: E402

OSNET = SHARED / "weights" / "osnet_x0_25_msmt17.onnx"
OSNET_FLAGS = ["--height", "256", "--width", "128", "--color", "RGB", "--scale", str(1 / 255)]
RESULTS = REPO / "bench" / "accuracy.json"


@dataclass(frozen=True)
class EvalSet:
    label: str
    root: Path
    format: str
    modes: tuple[str, ...]
    about: str
    domain: str  # the training source that shares its cameras ("" = none of ours)
    short: str = ""  # column label in the ablation tables


SETS = {
    "cuhk03": EvalSet("CUHK03 val", SHARED / "data" / "cuhk03" / "val", "cuhk03", ("i2i", "i2v"),
                      "100 ids, camera A → camera B, 451 queries / 487 gallery", "cuhk03"),
    "market": EvalSet("Market-1501 test", DATASETS / "market1501", "market1501", ("i2i", "i2v"),
                      "750 ids, 6 cameras, 3,368 queries / 15,913 gallery (incl. distractors)", "market", "Market"),
    "duke": EvalSet("DukeMTMC-reID test", DATASETS / "dukemtmc", "dukemtmc", ("i2i", "i2v"),
                    "702 ids (+408 distractor ids), 8 cameras, 2,228 queries / 17,661 gallery", "duke", "Duke"),
    "partial_reid": EvalSet("Partial-REID", DATASETS / "partial" / "Partial-REID_Dataset", "partial_reid",
                            ("i2i",), "60 ids, occluded query → whole-body gallery, 300 / 300", ""),
    "partial_ilids": EvalSet("Partial-iLIDS", DATASETS / "partial" / "Partial_iLIDS", "partial_ilids", ("i2i",),
                             "119 ids, airport, occluded probe → gallery, 119 / 119", ""),
    "mot17": EvalSet("MOT17-mini GT tracks", DATASETS / "mot17_gt", "generic", ("i2i",),
                     "86 tracks of 7 street scenes: first frame → later frames of all tracks, 86 / 396", ""),
}
#: never used for any choice (model card): the honest estimate of accuracy on new cameras
HELD_OUT = ("partial_reid", "partial_ilids")
#: `reid blend` weights tried on the dev model (its ablation group below)
BLEND_WEIGHTS = (0.3, 0.5, 0.6, 0.7, 0.85)
#: `reid blend` weights tried on the averaged dev model
SWA_BLEND_WEIGHTS = (0.7, 0.85)
#: the two leave-one-place-out dev set-ups: the set judged on → (training sources, their SETS keys)
DEV_SOURCES = {"duke": ("CUHK03 + Market", ("cuhk03", "market")), "market": ("CUHK03 + Duke", ("cuhk03", "duke"))}
#: model soups of dev runs (the same start, data and schedule, one change each): key → (description,
#: [(checkpoint, config), …], the dev set they are judged on); the runs are averaged with equal weights
SOUPS = {
    "soup-mix": ("the dev run and the MixStyle run", [
        ("runs/osnet_cm2duke_retain_4ep/last.pt", "osnet_cm2duke_retain_4ep"),
        ("runs/osnet_cm2duke_mixstyle/last.pt", "osnet_cm2duke_mixstyle")], "duke"),
    "soup-patch": ("the dev run and the patch-augmentation run", [
        ("runs/osnet_cm2duke_retain_4ep/last.pt", "osnet_cm2duke_retain_4ep"),
        ("runs/osnet_cm2duke_patch/last.pt", "osnet_cm2duke_patch")], "duke"),
    "soup-mix-patch": ("the dev, MixStyle and patch runs", [
        ("runs/osnet_cm2duke_retain_4ep/last.pt", "osnet_cm2duke_retain_4ep"),
        ("runs/osnet_cm2duke_mixstyle/last.pt", "osnet_cm2duke_mixstyle"),
        ("runs/osnet_cm2duke_patch/last.pt", "osnet_cm2duke_patch")], "duke"),
    "soup-seed2": ("the dev run and a second plain run (seed 2)", [
        ("runs/osnet_cm2duke_retain_4ep/last.pt", "osnet_cm2duke_retain_4ep"),
        ("runs/osnet_cm2duke_seed2/last.pt", "osnet_cm2duke_seed2")], "duke"),
    "soup-alltest": ("a fresh run of the dev recipe (2026-12-07; alone 66.2 / 45.4 on Duke by `reid eval`) and the "
                     "with_test run", [
        ("runs/osnet_cm2duke_retain_4ep/last.pt", "osnet_cm2duke_retain_4ep"),
        ("runs/osnet_cm2duke_alltest/last.pt", "osnet_cm2duke_alltest")], "duke"),
    "soup-cd2market": ("the leave-Market-out run and its MixStyle run", [
        ("runs/osnet_cd2market/last.pt", "osnet_cd2market"),
        ("runs/osnet_cd2market_mixstyle/last.pt", "osnet_cd2market_mixstyle")], "market"),
}
SOUP_ROWS = tuple(k for name in SOUPS for k in (name, f"{name}-blend0.7"))
#: the ablation tables: one change at a time against each group's first row, all trained without
#: Duke and judged on Duke (cameras none of them trained on) — the set recipe choices are made on
ABLATION = {
    "From ImageNet (MobileNetV2, trained on CUHK03 + Market-1501)": {
        "cm2duke": "baseline: the v2.0 recipe (128×64, IBN-a layer1–3, jitter, no erasing)",
        "cm2duke-192": "input 192×96 instead of 128×64"},
    "From the MSMT17-trained OSNet-x0.25 (fine-tuned on CUHK03 + Market-1501, 256×128)": {
        "osnet": "baseline: the MSMT17 model as it is (no fine-tuning)",
        "osnet-cm2duke": "fine-tuned 2 epochs (backbone lr 1e-4, classifier 3.5e-4)",
        "osnet-cm2duke-retain": "… plus the retention loss (weight 1) to the MSMT17 backbone",
        "osnet-cm2duke-retain3": "retention weight 3 instead of 1",
        "osnet-cm2duke-retain10": "retention weight 10 instead of 1",
        "osnet-cm2duke-retain-4ep": "retention weight 1, 4 epochs (×0.1 at 3) instead of 2"},
    "Faster students: smaller inputs (128×64 = a quarter of the pixels), against the 256×128 dev model": {
        "osnet-cm2duke-retain-4ep": "baseline: 256×128, retention, 4 epochs (the dev model)",
        "osnet-cm2duke-128": "input 128×64 (same recipe)",
        "osnet-cm2duke-128-distill": "input 128×64 + distillation from the 256×128 dev model (weight 10)",
        "osnet-cm2duke-192": "input 192×96 (same recipe)",
        "osnet-cm2duke-192-distill": "input 192×96 + distillation (weight 10)"},
    "TKP: the dev model's image net taught by a video net (I2V: tracklets embedded by video.onnx)": {
        "osnet-cm2duke-retain-4ep": "baseline: the dev image model (tracklets: mean of frame embeddings)",
        "tkp-cm2duke-euclid-1ep": "TKP as the paper (propagation between raw features), stopped after 1 of 2 "
                                  "epochs: it drifted (retention term 0.38, CE above chance)",
        "tkp-cm2duke-freshcls-1ep": "TKP from the dev model, propagation between unit vectors (cosine net), "
                                    "retention on, a fresh classifier: stopped after epoch 1 of 2 (CE above chance)",
        "tkp-cm2duke": "… starting from the dev run's classifier too (same data, same labels), 2 epochs"},
    "Blending the dev model's weights with its MSMT17 start (`reid blend`, WiSE-FT; weight 1 = the dev model, "
    "0 = the MSMT17 model)": {
        "osnet-cm2duke-retain-4ep": "baseline: the dev model (weight 1)",
        **{f"blend{w:g}": f"weight {w:g}" for w in BLEND_WEIGHTS},
        "osnet": "weight 0: the MSMT17 model as it is"},
    "Augmentation against occlusion (the dev recipe, one change)": {
        "osnet-cm2duke-retain-4ep": "baseline: the dev model (no patch, no erasing)",
        "osnet-cm2duke-patch": "patch p 0.5: a rectangle (1–15 % of the area) of another training crop pasted in"},
    "Averaging the weights along the way (`optim.average_from: 2`: the mean after every step of epochs 2–4, "
    "SWA), one run of configs/osnet_cm2duke_swa.yaml": {
        "swa-last": "baseline: the run's last weights (the dev recipe, re-run)",
        "swa-avg": "the mean of the weights (averaged.pt)",
        "swa-last-blend0.7": "last weights blended 0.7 with the MSMT17 start (the v3.2 recipe)",
        **{f"swa-avg-blend{w:g}": f"the mean blended {w:g} with the MSMT17 start" for w in SWA_BLEND_WEIGHTS}},
    "Style mixing against camera shift (MixStyle after layer1 and layer2, p 0.5, α 0.1; the dev recipe, one change)": {
        "osnet-cm2duke-retain-4ep": "baseline: the dev model",
        "osnet-cm2duke-mixstyle": "MixStyle: each crop's channel mean / std mixed with another crop's (training only)",
        "blend0.7": "the dev model blended 0.7 with the MSMT17 start (the v3.2 recipe)",
        "mixstyle-blend0.7": "MixStyle, blended 0.7 with the MSMT17 start"},
    "Model soups: the weights of dev runs that differ in one training change, averaged (`reid blend A --start B "
    "--weight 0.5`), then blended with the MSMT17 start": {
        "osnet-cm2duke-retain-4ep": "baseline: the dev model (one run)",
        "blend0.7": "the dev model blended 0.7 with the MSMT17 start (the v3.2 recipe)",
        "osnet-cm2duke-seed2": "a second run of the dev recipe, seed 2 instead of 1 (no soup)",
        **{k: ("soup of " + SOUPS[k.partition("-blend")[0]][0]
               + (", blended 0.7 with the MSMT17 start" if "-blend" in k else ""))
           for k in SOUP_ROWS if SOUPS[k.partition("-blend")[0]][2] == "duke"}},
    "More identities: the training sets' test people too (`with_test` on Market-1501: 2,244 people instead of "
    "1,494; the same 4 epochs, so 1.8× the steps)": {
        "osnet-cm2duke-retain-4ep": "baseline: the dev model",
        "osnet-cm2duke-alltest": "+ Market-1501's 750 test people (query + gallery)",
        "blend0.7": "the dev model blended 0.7 with the MSMT17 start (the v3.2 recipe)",
        "alltest-blend0.7": "+ Market-1501's test people, blended 0.7"},
}
ABLATION_SET = "duke"
#: the shipped recipe replayed on the second dev set, against the peer (the MSMT17 model every run starts from)
MARKET_ABLATION = {
    "The shipped recipe on a second unseen place (fine-tuned on CUHK03 + DukeMTMC-reID)": {
        "osnet": "baseline: the MSMT17 model as it is (the peer)",
        "osnet-cd2market": "fine-tuned: the dev recipe (retention, 4 epochs)",
        "cd2market-blend0.7": "… blended 0.7 with the MSMT17 start (the v3.2 recipe)",
        "osnet-cd2market-mixstyle": "a second run with MixStyle (no soup)",
        "soup-cd2market": "soup of the two runs",
        "soup-cd2market-blend0.7": "soup of the two runs, blended 0.7 with the MSMT17 start (the v3.3 recipe)"}}
#: every ablation table: the set it is judged on → its groups
ABLATIONS = {ABLATION_SET: ABLATION, "market": MARKET_ABLATION}
#: second stages over the cosine ranking, on the leave-Duke-out dev model with a CAN trained on its
#: training sets (configs/can_cm2duke.yaml): judged on Duke like the ablation, also shown in-domain
#: (CUHK03) and on the held-out sets
RERANK_MODEL = "osnet-cm2duke-retain-4ep"
RERANK_SETS = ("duke", "cuhk03", "partial_reid", "partial_ilids")
_CAN = ["--rerank", "can", "--pair-model", "runs/can_cm2duke/pair.onnx", "--rerank-k"]
RERANKS = {
    "kr": ("k-reciprocal (k1 20, k2 6, λ 0.3)", ["--rerank", "kreciprocal"]),
    "can50": ("CAN pair model, rerank_k 50", [*_CAN, "50"]),
    "can100": ("CAN pair model, rerank_k 100", [*_CAN, "100"]),
    "can200": ("CAN pair model, rerank_k 200", [*_CAN, "200"]),
    "canneck100": ("CAN + the neck tuned with it (configs/can_cm2duke_neck.yaml), rerank_k 100",
                   ["--rerank", "can", "--pair-model", "runs/can_cm2duke_neck/pair.onnx", "--rerank-k", "100"]),
}


@dataclass(frozen=True)
class ModelRow:
    name: str
    path: str
    log: str  # training log(s) under the repo, comma-separated for a soup of several runs
    made_by: str
    trained_on: tuple[str, ...]  # SETS keys whose cameras it trained on


def _osnet_dev_run(config: str, what: str, judged_on: str = "duke") -> ModelRow:
    """A leave-one-place-out fine-tune of the MSMT17 OSNet: configs/<config>.yaml, log kept in bench/."""
    sources, trained_on = DEV_SOURCES[judged_on]
    return ModelRow(f"OSNet-x0.25 MSMT17 fine-tuned on {sources}{what} (dev run)", f"runs/{config}/export",
                    f"bench/training_logs/{config}.csv",
                    f"reid train configs/{config}.yaml; reid export runs/{config}/last.pt --out runs/{config}/export",
                    trained_on)


def _blend_command(checkpoint: str, weight: str, out: str, start: str = "msmt17") -> str:
    """The `reid blend` command: ``weight`` × the checkpoint + the rest × ``start`` (by default the
    MSMT17 model every OSNet run starts from: WiSE-FT)."""
    return f"reid blend {checkpoint} --start {start} --weight {weight} --out {out}"


def _blend_row(weight: float) -> ModelRow:
    """The dev model blended with its MSMT17 start (reid blend, WiSE-FT)."""
    return ModelRow(f"dev model blended with its MSMT17 start, weight {weight:g} (dev run)",
                    f"runs/osnet_cm2duke_blend{weight:g}", "bench/training_logs/osnet_cm2duke_retain_4ep.csv",
                    _blend_command("runs/osnet_cm2duke_retain_4ep/last.pt", f"{weight:g}",
                                   f"runs/osnet_cm2duke_blend{weight:g}"), ("cuhk03", "market"))


def _dev_blend_row(config: str, what: str, judged_on: str = "duke") -> ModelRow:
    """A dev run (configs/<config>.yaml) blended 0.7 with its MSMT17 start: the v3.2 recipe's last step."""
    out = f"runs/{config}/blend0.7"
    return ModelRow(f"{what}, blended 0.7 with its MSMT17 start (dev run)", out, f"bench/training_logs/{config}.csv",
                    f"reid train configs/{config}.yaml; " + _blend_command(f"runs/{config}/last.pt", "0.7", out),
                    DEV_SOURCES[judged_on][1])


def _swa_row(key: str) -> ModelRow:
    """One model out of the dev run with weight averaging (configs/osnet_cm2duke_swa.yaml): its last
    or its averaged weights (``last`` / ``avg``), optionally blended with the MSMT17 start."""
    which, _, blended = key.removeprefix("swa-").partition("-blend")
    ckpt = "runs/osnet_cm2duke_swa/" + {"last": "last.pt", "avg": "averaged.pt"}[which]
    out = f"runs/osnet_cm2duke_swa/{which}" + (f"_blend{blended}" if blended else "")
    make = _blend_command(ckpt, blended, out) if blended else f"reid export {ckpt} --out {out}"
    what = {"last": "last weights", "avg": "mean of the weights, epochs 2–4"}[which]
    return ModelRow(f"dev recipe with weight averaging: {what}" + (f", blended {blended}" if blended else "")
                    + " (dev run)", out, "bench/training_logs/osnet_cm2duke_swa.csv",
                    f"reid train configs/osnet_cm2duke_swa.yaml; {make}", ("cuhk03", "market"))


def soup_commands(runs: list[str], out: str) -> list[str]:
    """`reid blend` steps that average ``runs`` with equal weights into ``out``: the running mean
    takes run k at weight 1/k (a two-run soup is one blend at 0.5)."""
    steps, current = [], runs[0]
    for k, run in enumerate(runs[1:], start=2):
        target = out if k == len(runs) else f"{out}_{k}"
        steps.append(_blend_command(run, f"{1 / k:.4g}", target, start=current))
        current = target
    return steps


def _soup_row(key: str) -> ModelRow:
    """A soup of dev runs (SOUPS), optionally then blended with the MSMT17 start (``…-blend0.7``)."""
    name, _, blended = key.partition("-blend")
    what, runs, judged_on = SOUPS[name]
    out = f"runs/soups/{name}"
    steps = [f"reid train configs/{config}.yaml" for _, config in runs] + soup_commands([c for c, _ in runs], out)
    if blended:
        steps.append(_blend_command(out, blended, f"{out}_blend{blended}"))
        out = f"{out}_blend{blended}"
    return ModelRow(f"soup of {what}" + (f", blended {blended} with the MSMT17 start" if blended else "")
                    + " (dev run)", out, ",".join(f"bench/training_logs/{config}.csv" for _, config in runs),
                    "; ".join(steps), DEV_SOURCES[judged_on][1])


SWA_ROWS = ("swa-last", "swa-avg", "swa-last-blend0.7", *(f"swa-avg-blend{w:g}" for w in SWA_BLEND_WEIGHTS))

MODELS = {
    "v3.3": ModelRow("v3.3 = soup of v3.1 and its MixStyle run, blended 0.7 with the MSMT17 start (shipped default)",
                     "reid/models/default",
                     "reid/models/default/training_log.csv,reid/models/default/training_log_mixstyle.csv",
                     "reid train configs/osnet_multi_4ep.yaml; reid train configs/osnet_multi_mixstyle.yaml; "
                     "reid blend … --weight 0.5; reid blend … --start msmt17 --weight 0.7 "
                     "(reid/models/default/MODEL_CARD.md)", ("cuhk03", "market", "duke")),
    "v3.2": ModelRow("v3.2 = v3.1 blended 0.7 with its MSMT17 start (previous default)",
                     "runs/default-v3.2", "reid/models/default/training_log.csv",
                     "reid train configs/osnet_multi_4ep.yaml; reid export …; reid blend … --start msmt17 "
                     "--weight 0.7 (the file: git show 2a2db7f:reid/models/default/image.onnx)",
                     ("cuhk03", "market", "duke")),
    "v3.1": ModelRow("v3.1 OSNet-x0.25 MSMT17 fine-tuned on CUHK03 + Market + Duke, 4 epochs (previous default)",
                     "runs/default-v3.1", "reid/models/default/training_log.csv",
                     "reid train configs/osnet_multi_4ep.yaml (the file: git show 5b7de82:reid/models/default/"
                     "image.onnx)", ("cuhk03", "market", "duke")),
    "v3": ModelRow("v3.0 OSNet-x0.25 MSMT17 fine-tuned on CUHK03 + Market + Duke, 2 epochs (previous default)",
                   "runs/default-v3.0", "bench/training_logs/osnet_multi.csv",
                   "reid train configs/osnet_multi.yaml", ("cuhk03", "market", "duke")),
    "v2": ModelRow("v2.0 MobileNetV2-IBN, multi-dataset, FP32 (previous default)", "runs/default-v2.0",
                   "bench/training_logs/mobilenetv2_ibn_multi.csv", "reid train configs/mobilenetv2_ibn_multi.yaml",
                   ("cuhk03", "market", "duke")),
    "cm2duke": ModelRow("v2.0 recipe without Duke (cross-domain dev run), FP32", "runs/mobilenetv2_ibn_cm2duke/export",
                        "bench/training_logs/mobilenetv2_ibn_cm2duke.csv",
                        "reid train configs/mobilenetv2_ibn_cm2duke.yaml",
                        ("cuhk03", "market")),
    "cm2duke-192": ModelRow("ablation: v2.0 recipe without Duke, input 192×96",
                            "runs/mobilenetv2_ibn_cm2duke_192/export", "runs/mobilenetv2_ibn_cm2duke_192/log.csv",
                            "reid train configs/mobilenetv2_ibn_cm2duke_192.yaml", ("cuhk03", "market")),
    **{f"osnet-cm2duke{suffix}": _osnet_dev_run(f"osnet_cm2duke{suffix.replace('-', '_')}", what)
       for suffix, what in (("", ""), ("-retain", ", retention loss"), ("-retain3", ", retention weight 3"),
                            ("-retain10", ", retention weight 10"), ("-retain-4ep", ", retention, 4 epochs"),
                            ("-128", " at 128×64"), ("-128-distill", " at 128×64, distilled"), ("-192", " at 192×96"),
                            ("-192-distill", " at 192×96, distilled"),
                            ("-patch", ", retention, 4 epochs, patch aug."),
                            ("-mixstyle", ", retention, 4 epochs, MixStyle"),
                            ("-seed2", ", retention, 4 epochs, seed 2"),
                            ("-alltest", ", retention, 4 epochs, Market's test people too"))},
    **{f"osnet-cd2market{suffix}": _osnet_dev_run(f"osnet_cd2market{suffix.replace('-', '_')}", what, "market")
       for suffix, what in (("", ", retention, 4 epochs"), ("-mixstyle", ", retention, 4 epochs, MixStyle"))},
    "cd2market-blend0.7": _dev_blend_row("osnet_cd2market", "leave-Market-out dev model", "market"),
    "mixstyle-blend0.7": _dev_blend_row("osnet_cm2duke_mixstyle", "dev recipe with MixStyle"),
    "alltest-blend0.7": _dev_blend_row("osnet_cm2duke_alltest", "dev recipe with Market's test people too"),
    "tkp-cm2duke": ModelRow("TKP from the dev model (image net + non-local video net) on CUHK03 + Market (dev run)",
                            "runs/tkp_osnet_cm2duke/export", "bench/training_logs/tkp_osnet_cm2duke.csv",
                            "reid train configs/tkp_osnet_cm2duke.yaml", ("cuhk03", "market")),
    "tkp-cm2duke-freshcls-1ep": ModelRow("TKP from the dev model, fresh classifier, 1 epoch (dev run, stopped)",
                                         "runs/tkp_osnet_cm2duke_freshcls_1ep/export",
                                         "bench/training_logs/tkp_osnet_cm2duke_freshcls_1ep.csv",
                                         "git checkout 5b7de82 && reid train configs/tkp_osnet_cm2duke.yaml "
                                         "(stopped after epoch 1)", ("cuhk03", "market")),
    "tkp-cm2duke-euclid-1ep": ModelRow("TKP from the dev model, raw-feature propagation, 1 epoch (dev run, stopped)",
                                       "runs/tkp_osnet_cm2duke_euclid_1ep/export",
                                       "bench/training_logs/tkp_osnet_cm2duke_euclid_1ep.csv",
                                       "git checkout 5553ae6 && reid train configs/tkp_osnet_cm2duke.yaml "
                                       "(stopped after epoch 1)",
                                       ("cuhk03", "market")),
    **{f"blend{w:g}": _blend_row(w) for w in BLEND_WEIGHTS},
    **{k: _swa_row(k) for k in SWA_ROWS},
    **{k: _soup_row(k) for k in SOUP_ROWS},
    "v1.1-int8": ModelRow("v1.1 IANet-MobileNetV2, CUHK03 only, INT8 (previous default)", "runs/default-v1.1", "",
                          "git show 7bbe7f3:models/default/image.onnx", ("cuhk03",)),
    "osnet": ModelRow("OSNet-x0.25 (MSMT17, third-party peer)", str(OSNET), "", "—", ()),
}


def model_path(row: ModelRow) -> Path:
    return REPO / row.path if (REPO / row.path).exists() else Path(row.path)


def train_minutes(log: str) -> str:
    """Training time from the row's log; a soup's row lists its runs' logs, comma-separated, and sums them."""
    paths = [REPO / part for part in log.split(",") if part]
    if not paths or not all(p.is_file() for p in paths):
        return "—"
    last = []
    for path in paths:
        with open(path) as f:
            last.append(list(csv.DictReader(f))[-1])
    minutes = sum(float(r["train_seconds"]) for r in last) / 60
    epochs = "+".join(r["epoch"] for r in last)
    return f"{minutes:.0f} min ({epochs} epochs)"


def embed_speeds(models: list[tuple[Path, bool]], images: list) -> list[float]:
    """img/s per model, measured round-robin (3 rounds, best kept) so load changes hit all alike."""
    from reid.models.preprocess import PreprocessSpec
    from reid.training.evaluate import OnnxEmbedder

    embedders = [OnnxEmbedder(m, spec=PreprocessSpec(height=256, width=128) if foreign else None, batch_size=64)
                 for m, foreign in models]
    best = [0.0] * len(embedders)
    for _ in range(3):
        for i, emb in enumerate(embedders):
            emb.embed_images(images[:64])  # warm-up
            t = time.perf_counter()
            emb.embed_images(images)
            best[i] = max(best[i], len(images) / (time.perf_counter() - t))
    return best


def measure_speeds(results: dict) -> None:
    """Embedding speed of every model on disk as a multiple of the peer's, timed round-robin in one
    run: a ratio measured side by side holds on a busy machine, where img/s does not. Stored, so a
    model no longer on disk keeps the figure of the last run that had it."""
    from reid.models.preprocess import read_image

    crops = sorted((SHARED / "data" / "cuhk03" / "val").glob("*.jpg"))[:512]
    present = [k for k in MODELS if model_path(MODELS[k]).exists()]
    if not crops or "osnet" not in present:
        print("skip speeds: the peer or the CUHK03 val crops are missing", file=sys.stderr)
        return
    images = [read_image(str(p)) for p in crops]
    values = embed_speeds([(model_path(MODELS[k]), model_path(MODELS[k]) == OSNET) for k in present], images)
    peer = values[present.index("osnet")]
    for key, value in zip(present, values, strict=True):
        _store(results, f"speed|{key}", {"img_s": round(value, 1), "peer_img_s": round(peer, 1),
                                         "vs_peer": round(value / peer, 3), "date": time.strftime("%Y-%m-%d")})


def _store(results: dict, key: str, cell: dict) -> None:
    # re-read before writing: several runs (other models, other sets) may share the file
    results.update(json.loads(RESULTS.read_text()) if RESULTS.is_file() else {})
    results[key] = cell
    RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")


def _eval_cell(args: list[str]) -> dict:
    r = reid_eval(*args)
    return {"rank1": r["rank1"], "mAP": r["mAP"], "mINP": r["mINP"], "date": time.strftime("%Y-%m-%d"),
            "command": " ".join(["reid", "eval", *args])}


def measure(keys: list[str], sets: list[str], results: dict) -> None:
    for key in keys:
        row = MODELS[key]
        path = model_path(row)
        if not path.exists():
            print(f"skip {key}: {row.path} missing", file=sys.stderr)
            continue
        extra = OSNET_FLAGS if path == OSNET else []
        for set_key in sets:
            es = SETS[set_key]
            if not es.root.exists():
                print(f"skip {set_key}: {es.root} missing (python bench/datasets.py)", file=sys.stderr)
                continue
            for mode in es.modes:
                c = _eval_cell(["--model", row.path, "--data", str(es.root), "--format", es.format, "--mode", mode,
                                *extra])
                print(f"{key} {set_key} {mode}: {c['rank1']:.1f} / {c['mAP']:.1f} / {c['mINP']:.1f}", flush=True)
                _store(results, f"{key}|{set_key}|{mode}", c)


def measure_reranks(variants: list[str], sets: list[str], results: dict) -> None:
    row = MODELS[RERANK_MODEL]
    for set_key in [s for s in sets if s in RERANK_SETS]:
        es = SETS[set_key]
        for v in variants:
            c = _eval_cell(["--model", row.path, "--data", str(es.root), "--format", es.format, *RERANKS[v][1]])
            print(f"{RERANK_MODEL}+{v} {set_key}: {c['rank1']:.1f} / {c['mAP']:.1f} / {c['mINP']:.1f}", flush=True)
            _store(results, f"{RERANK_MODEL}+{v}|{set_key}|i2i", c)


def cell(results: dict, key: str, set_key: str, mode: str) -> list[str]:
    r = results.get(f"{key}|{set_key}|{mode}")
    return [f"{r[m]:.1f}" for m in ("rank1", "mAP", "mINP")] if r else ["—"] * 3


def render(results: dict, speeds: dict[str, float]) -> list[str]:
    keys = [k for k in MODELS if any(r.startswith(k + "|") for r in results)]
    lines = [
        "# Accuracy on cameras the model never saw",
        "",
        f"Made by `python bench/accuracy.py` (last run {time.strftime('%Y-%m-%d')}; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPU cores, no GPU). Rank-1 / mAP / mINP in %, cosine, non-interpolated AP, no re-ranking, "
        "no flip; same-identity same-camera gallery items are ignored (standard protocol). **×** = cross-domain "
        "(the model never saw these cameras), **in** = in-domain (it trained on other people from these cameras). "
        "I2V: first query frame → gallery pseudo-tracklets (one per identity and camera); V2V: query "
        "pseudo-tracklets → gallery pseudo-tracklets (on Duke every query tracklet is one image, so V2V = I2V "
        "there); a tracklet is the mean of its frame embeddings, or the "
        "model's video.onnx when it has one (TKP). Embedding speed: ONNX Runtime, CPU, batch 64, 512 CUHK03 "
        "crops, img/s as a multiple of the peer's (OSNet-x0.25) timed round-robin in the same run (best of 3); "
        "each model's figure is from the last run that had it on disk (`speed|…` in accuracy.json: date, img/s). "
        "Datasets: `python bench/datasets.py`.",
        "",
        f"**Held out** — {', '.join(SETS[s].label for s in HELD_OUT)}: no choice (recipe, epochs, data, "
        "quantisation) was made on them; they are the honest estimate for new cameras.",
        "",
        "## Summary: image → image rank-1 / mAP",
        "",
        "| model | " + " | ".join(SETS[s].label for s in SETS) + " | training | embed speed × peer | made by |",
        "|---|" + "---|" * (len(SETS) + 3),
    ]
    for key in keys:
        row = MODELS[key]
        cells = []
        for s, es in SETS.items():
            r1, mAP, _ = cell(results, key, s, "i2i")
            mark = "in" if es.domain and es.domain in row.trained_on else "×"
            cells.append(f"{r1} / {mAP} {mark}" if r1 != "—" else "—")
        speed = f"{speeds[key]:.2f}×" if key in speeds else "—"
        lines.append(f"| {row.name} | {' | '.join(cells)} | {train_minutes(row.log)} | {speed} | `{row.made_by}` |")
    for s, es in SETS.items():
        lines += ["", f"## {es.label} — {es.about}", "",
                  "| model | domain | " + " | ".join(f"{m.upper()} R1 | {m.upper()} mAP | {m.upper()} mINP"
                                                      for m in es.modes) + " |",
                  "|---|---|" + "---|" * (3 * len(es.modes))]
        for key in keys:
            if not any(f"{key}|{s}|{m}" in results for m in es.modes):
                continue
            mark = "in-domain" if es.domain and es.domain in MODELS[key].trained_on else "cross-domain"
            cells = [c for m in es.modes for c in cell(results, key, s, m)]
            lines.append(f"| {MODELS[key].name} | {mark} | {' | '.join(cells)} |")
    for set_key, groups in ABLATIONS.items():
        for title, group in groups.items():
            lines += _render_ablation(results, speeds, title, group, set_key)
    lines += _render_reranks(results)
    lines += ["", "## Commands", "", "Each cell above is the JSON line of one of these:", ""]
    lines += [f"    {results[k]['command']}" for k in sorted(results) if k.split("|")[0].split("+")[0] in keys]
    return lines


def _render_ablation(results: dict, speeds: dict[str, float], title: str, group: dict[str, str],
                     set_key: str) -> list[str]:
    """One ablation group judged on ``set_key``: each change against the group's first row."""
    done = [k for k in group if f"{k}|{set_key}|i2i" in results]
    if not done:
        return []
    base, name = results[f"{done[0]}|{set_key}|i2i"], SETS[set_key].short
    lines = ["", f"## Ablation — {title}: judged on {SETS[set_key].label} (cameras none of them saw)", "",
             ("Recipe choices are made here, never on the held-out sets." if set_key == ABLATION_SET else
              f"A check of the choices made on {SETS[ABLATION_SET].short}: none is made here.")
             + " Δ = change against the group's first row.", "",
             f"| change | {name} R1 | {name} mAP | Δ R1 | Δ mAP | {name} I2V R1 / mAP | CUHK03 val R1 | training "
             "| embed speed × peer |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k in done:
        r = results[f"{k}|{set_key}|i2i"]
        video = " / ".join(cell(results, k, set_key, "i2v")[:2])
        speed = f"{speeds[k]:.2f}×" if k in speeds else "—"
        lines.append(f"| {group[k]} | {r['rank1']:.1f} | {r['mAP']:.1f} | {r['rank1'] - base['rank1']:+.1f} | "
                     f"{r['mAP'] - base['mAP']:+.1f} | {video} | {cell(results, k, 'cuhk03', 'i2i')[0]} | "
                     f"{train_minutes(MODELS[k].log)} | {speed} |")
    return lines


def _render_reranks(results: dict) -> list[str]:
    done = [v for v in RERANKS if any(f"{RERANK_MODEL}+{v}|{s}|i2i" in results for s in RERANK_SETS)]
    if not done:
        return []
    lines = ["", f"## Re-ranking — a second stage over the cosine ranking, on the {MODELS[RERANK_MODEL].name}", "",
             f"Judged on {SETS[ABLATION_SET].label} like the ablation (the CAN pair models trained on the dev model's "
             "own training sets, CUHK03 + Market-1501, with the image net frozen: reid/training/can.py); CUHK03 val is "
             "in-domain, the Partial sets held out. Δ = against no re-ranking. Latency and storage: "
             "[can_rerank.md](can_rerank.md).", "",
             "| second stage | " + " | ".join(f"{SETS[s].label} R1 / mAP (Δ R1)" for s in RERANK_SETS) + " |",
             "|---|" + "---|" * len(RERANK_SETS)]

    def cells(key: str) -> list[str]:
        out = []
        for s in RERANK_SETS:
            r, base = results.get(f"{key}|{s}|i2i"), results.get(f"{RERANK_MODEL}|{s}|i2i")
            delta = f" ({r['rank1'] - base['rank1']:+.1f})" if r and base and key != RERANK_MODEL else ""
            out.append(f"{r['rank1']:.1f} / {r['mAP']:.1f}{delta}" if r else "—")
        return out

    lines.append(f"| none (cosine) | {' | '.join(cells(RERANK_MODEL))} |")
    lines += [f"| {RERANKS[v][0]} | {' | '.join(cells(f'{RERANK_MODEL}+{v}'))} |" for v in done]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}")
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated: {', '.join(SETS)}")
    ap.add_argument("--reranks", default="", help=f"comma-separated second stages to measure on {RERANK_MODEL} "
                    f"({', '.join(RERANKS)}); with --models '' only these")
    ap.add_argument("--out", default=str(REPO / "bench" / "accuracy.md"))
    args = ap.parse_args()
    keys, sets = [k for k in args.models.split(",") if k], args.sets.split(",")
    variants = [v for v in args.reranks.split(",") if v]
    unknown = [k for k in keys if k not in MODELS] + [s for s in sets if s not in SETS] + \
        [v for v in variants if v not in RERANKS]
    if unknown:
        ap.error(f"unknown model or set: {', '.join(unknown)}")
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    measure(keys, sets, results)
    measure_reranks(variants, sets, results)
    measure_speeds(results)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else results
    speeds = {k.removeprefix("speed|"): v["vs_peer"] for k, v in results.items() if k.startswith("speed|")}
    write_report(args.out, render(results, speeds))


if __name__ == "__main__":
    main()
