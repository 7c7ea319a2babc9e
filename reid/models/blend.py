"""Weight-space blending of a fine-tuned image net with the net it started from (WiSE-FT,
Wortsman et al. 2022): ``w · fine-tuned + (1 − w) · start``, tensor by tensor.

Why: fine-tuning on a few labelled sets teaches their cameras and forgets some of what the start
(OSNet's MSMT17 training, 4,101 people) knew about others. The blend keeps most of both: on Duke,
a camera set neither net trained on, the leave-Duke-out dev model went from 64.8 to 66.3 rank-1 at
w = 0.7 (bench/accuracy.md, blend ablation); `reid adapt` blends the same way (bench/adapt.md).
It costs nothing at run time: the blended net is the same network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from reid.models.networks import ModelConfig, TrainedImageNet, build_model, image_branch, read_trained_image_net


@dataclass
class Blended:
    """The blended image net, its config, and the two models it was made from (each read once;
    ``start`` is None when the start is pretrained weights such as ``msmt17``)."""

    net: nn.Module
    cfg: ModelConfig
    tuned: TrainedImageNet
    start: TrainedImageNet | None


def _image_config(tuned: TrainedImageNet, source: str | Path) -> ModelConfig:
    """The config of the fine-tuned image net alone (a TKP checkpoint's image half, no classifier)."""
    if tuned.config is None:
        raise ValueError(f"{source}: no model_config.json (not a reid model directory)")
    values = tuned.config
    arch = "baseline" if values.get("arch") == "tkp" else values.get("arch", "baseline")
    return ModelConfig.from_dict({**values, "arch": arch, "pretrained": None, "init_from": None, "num_classes": 0})


def read_start(cfg: ModelConfig, start: str | Path) -> tuple[dict[str, torch.Tensor], TrainedImageNet | None]:
    """The start's weights: a reid model (checkpoint or model directory, returned too), or whatever
    the config's ``pretrained`` takes for this backbone (``msmt17``, a weights file)."""
    path = Path(start)
    if path.is_dir() or path.suffix in (".pt", ".pth"):
        model = read_trained_image_net(path)
        return model.state, model
    net = build_model(ModelConfig.from_dict({**cfg.to_dict(), "pretrained": str(start)}))
    return image_branch(net).state_dict(), None


def blend(finetuned: str | Path, start: str | Path, weight: float) -> Blended:
    """The fine-tuned image net with every float tensor (weights and BatchNorm statistics) moved to
    ``weight · fine-tuned + (1 − weight) · start``."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"blend weight must be in [0, 1], got {weight}")
    tuned = read_trained_image_net(finetuned)
    cfg = _image_config(tuned, finetuned)
    net = build_model(cfg)
    net.load_state_dict(tuned.state, strict=False)
    weights, (begin, start_model) = net.state_dict(), read_start(cfg, start)
    mismatched = [k for k, v in weights.items()
                  if v.is_floating_point() and (k not in begin or begin[k].shape != v.shape)]
    if mismatched:
        raise ValueError(f"{start} does not fit {finetuned}: {len(mismatched)} tensors differ or are missing "
                         f"(first: {', '.join(mismatched[:3])})")
    net.load_state_dict({k: weight * v + (1 - weight) * begin[k] if v.is_floating_point() else v
                         for k, v in weights.items()})
    return Blended(net.eval(), cfg, tuned, start_model)
