"""`reid adapt`: fine-tune the model on the user's own indexed footage, without labels.

Every stored tracklet is a pseudo-identity seen by one camera. Within a camera, tracklets are
trained apart (a softmax over that camera's tracklets only: ``loss.per_camera_ids``, as TAUDL's
per-camera tracklet discrimination); across cameras nothing is pushed apart, because two tracklets
of different cameras may well be one person. The retention loss keeps the net near the model it
starts from, so a few hundred tracklets of new cameras tune it without undoing what the labelled
sets taught. The result is a new model directory; ``reid reindex`` switches a gallery to it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reid.training.config import TrainConfig, config_from_dict

#: the recipe: v3.1's fine-tuning settings (lr, backbone scale, retention, augmentation), with
#: the per-camera softmax and no triplet loss (its negatives would cross cameras)
RECIPE: dict[str, Any] = {
    "optim": {"lr": 3.5e-4, "backbone_lr_scale": 0.3, "weight_decay": 5.0e-4, "milestones": []},
    "loss": {"ce_epsilon": 0.1, "triplet_weight": 0.0, "retain_weight": 1.0, "per_camera_ids": True},
    "augment": {"flip": True, "pad": 4, "erasing": 0.0, "color_jitter": 0.5, "jitter_strength": 0.15,
                "grayscale": 0.05, "downscale": 0.2, "downscale_min": 0.5},
    "batch_ids": 16, "num_instances": 4, "camera_aware": False, "eval_every": 0,
}


class AdaptError(ValueError):
    """The gallery or the model cannot be adapted (named in the message)."""


@dataclass(frozen=True)
class Manifest:
    """The gallery's tracklets written as a training set (``<root>/train.csv``)."""

    root: Path
    tracklets: int
    cameras: int
    crops: int


def write_manifest(data_dir: Path, dest: Path, min_crops: int = 2) -> Manifest:
    """``dest/train.csv`` rows ``path,pid,camid``: one pid per stored tracklet with at least
    ``min_crops`` kept crops, one camid per camera name."""
    from reid.service.gallery import DB_NAME
    from reid.service.store import Filters, Store

    db = data_dir / DB_NAME
    if not db.is_file():
        raise AdaptError(f"no gallery in {data_dir} (no {DB_NAME}): index footage first")
    store = Store(db)
    rows: list[tuple[str, int, int]] = []
    cameras: dict[str, int] = {}
    pid = 0
    try:
        offset = 0
        while True:
            page, _ = store.list(Filters(kind="tracklet"), offset=offset, limit=1000)
            if not page:
                break
            offset += len(page)
            for rec in page:
                crops = [data_dir / c for c in rec.crops if (data_dir / c).is_file()]
                if len(crops) < min_crops:
                    continue
                cam = cameras.setdefault(rec.camera, len(cameras))
                rows += [(str(c), pid, cam) for c in crops]
                pid += 1
    finally:
        store.close()
    if pid < 2:
        raise AdaptError(f"{data_dir} holds {pid} tracklet(s) with ≥ {min_crops} kept crops; adapting needs "
                         "at least 2 (index footage with REID_TRACKLET_EMBED_FRAMES ≥ 2)")
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "pid", "camid"), *rows])
    return Manifest(dest, pid, len(cameras), len(rows))


def adapt_config(model_dir: Path, manifest: Manifest, run_dir: Path, epochs: int) -> TrainConfig:
    """The recipe on this gallery, starting from ``model_dir`` (an exported reid image model)."""
    config_file = model_dir / "model_config.json"
    if not config_file.is_file():
        raise AdaptError(f"{model_dir} has no model_config.json: adapt needs a model exported by `reid export`")
    model = json.loads(config_file.read_text())
    if model.get("arch") == "tkp":
        raise AdaptError(f"{model_dir} is a TKP image+video model; adapt tunes image models (arch baseline/ianet)")
    return config_from_dict({
        **RECIPE,
        "name": "adapt",
        "model": {**model, "pretrained": None, "init_from": str(model_dir), "num_classes": 0},
        "data": {"train": [{"root": str(manifest.root), "format": "generic"}]},
        "optim": {**RECIPE["optim"], "epochs": epochs},
        "output_dir": str(run_dir),
    }, "adapt")
