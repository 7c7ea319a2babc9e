"""Weight-space blending of a fine-tuned image net with the net it started from (WiSE-FT,
Wortsman et al. 2022): ``w · fine-tuned + (1 − w) · start``, tensor by tensor.

Why: fine-tuning on a few labelled sets teaches their cameras and forgets some of what the start
(OSNet's MSMT17 training, 4,101 people) knew about others. The blend keeps most of both: on Duke,
a camera set neither net trained on, the leave-Duke-out dev model went from 64.8 to 66.3 rank-1 at
w = 0.7 (bench/accuracy.md, blend ablation); `reid adapt` blends the same way (bench/adapt.md).
It costs nothing at run time: the blended net is the same network.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from reid.models.networks import ModelConfig, build_model, image_branch, trained_image_state


def model_config_of(source: str | Path) -> ModelConfig:
    """The image net's config of a reid checkpoint or exported model directory."""
    path = Path(source)
    if path.is_dir():
        file = path / "model_config.json"
        if not file.is_file():
            raise ValueError(f"{source}: no model_config.json (not a reid model directory)")
        values = json.loads(file.read_text())
    else:
        try:
            values = torch.load(path, map_location="cpu", weights_only=False)["model_config"]
        except Exception as exc:  # not a file, not a checkpoint, not a reid checkpoint
            raise ValueError(f"{source} is not a reid checkpoint ({type(exc).__name__}: {exc})") from exc
    arch = "baseline" if values.get("arch") == "tkp" else values.get("arch", "baseline")
    return ModelConfig.from_dict({**values, "arch": arch, "pretrained": None, "init_from": None, "num_classes": 0})


def start_state(cfg: ModelConfig, start: str | Path) -> dict[str, torch.Tensor]:
    """The start's weights: a reid model (checkpoint or model directory), or whatever the
    config's ``pretrained`` takes for this backbone (``msmt17``, a weights file)."""
    path = Path(start)
    if path.is_dir() or path.suffix in (".pt", ".pth"):
        return trained_image_state(path)
    net = build_model(ModelConfig.from_dict({**cfg.to_dict(), "pretrained": str(start)}))
    return image_branch(net).state_dict()


def blend(finetuned: str | Path, start: str | Path, weight: float) -> tuple[nn.Module, ModelConfig]:
    """The fine-tuned image net with every float tensor (weights and BatchNorm statistics) moved to
    ``weight · fine-tuned + (1 − weight) · start``."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"blend weight must be in [0, 1], got {weight}")
    cfg = model_config_of(finetuned)
    net = build_model(cfg)
    net.load_state_dict(trained_image_state(finetuned), strict=False)
    tuned, begin = net.state_dict(), start_state(cfg, start)
    mismatched = [k for k, v in tuned.items()
                  if v.is_floating_point() and (k not in begin or begin[k].shape != v.shape)]
    if mismatched:
        raise ValueError(f"{start} does not fit {finetuned}: {len(mismatched)} tensors differ or are missing "
                         f"(first: {', '.join(mismatched[:3])})")
    net.load_state_dict({k: weight * v + (1 - weight) * begin[k] if v.is_floating_point() else v
                         for k, v in tuned.items()})
    return net.eval(), cfg
