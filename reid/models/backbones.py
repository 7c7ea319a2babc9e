"""Backbones split into named stages so blocks (IA, non-local) can be inserted between blocks.

Every backbone exposes the same five stages, named by ResNet convention and output stride:
``stem`` (1/2 or 1/4), ``layer1`` (1/4), ``layer2`` (1/8), ``layer3`` (1/16), ``layer4`` (1/32, or
1/16 with last stride 1). A config therefore says ``ia_after: [layer2, layer3]`` for either net.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class BackboneInfo:
    channels: dict[str, int]  # output channels per stage
    strides: dict[str, int]  # output stride per stage
    out_channels: int


class Backbone(nn.Module):
    """An ordered dict of stages; each stage is an ``nn.Sequential`` of blocks."""

    def __init__(self, stages: dict[str, nn.Sequential], info: BackboneInfo):
        super().__init__()
        self.stages = nn.ModuleDict(stages)
        self.info = info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages.values():
            x = stage(x)
        return x


#: the folder that holds the checkout: ``../shared`` and ``../datasets`` default to its children
BESIDE_CHECKOUT = Path(__file__).resolve().parents[3]


def shared_dir() -> Path:
    """Where development data and weights live (``REID_SHARED``, default ``../shared``)."""
    return Path(os.environ.get("REID_SHARED", BESIDE_CHECKOUT / "shared"))


def datasets_dir() -> Path:
    """Where `bench/datasets.py` unpacks the public benchmarks (``REID_DATASETS``, default ``../datasets``)."""
    return Path(os.environ.get("REID_DATASETS", BESIDE_CHECKOUT / "datasets"))


def default_mobilenetv2_weights() -> Path:
    """../shared's copy when present, else the one `reid fetch-weights` puts in the cache."""
    shared = shared_dir() / "weights" / "mobilenetv2_imagenet.pt"
    if shared.is_file():
        return shared
    from reid.models.weights import default_weights_path

    return default_weights_path()


def load_by_position(module: nn.Module, weights_path: str | Path) -> None:
    """Load a state_dict whose tensors are in ``module``'s order but under other names."""
    if not Path(weights_path).is_file():
        raise FileNotFoundError(f"weights file not found: {weights_path} (run `reid fetch-weights` for the "
                                "ImageNet MobileNetV2 weights, or set pretrained: null)")
    try:
        src = torch.load(str(weights_path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises KeyError/UnpicklingError/RuntimeError for non-checkpoints
        why = f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{weights_path}: not a PyTorch state_dict file ({why})") from exc
    if not isinstance(src, dict) or not all(isinstance(v, torch.Tensor) for v in src.values()):
        raise ValueError(f"{weights_path}: expected a state_dict (name → tensor), got {type(src).__name__}")
    dst = module.state_dict()
    src_t = [v for v in src.values()]
    dst_keys = list(dst.keys())
    if len(src_t) != len(dst_keys):
        # some exports drop BatchNorm's num_batches_tracked counters
        dst_keys = [k for k in dst_keys if not k.endswith("num_batches_tracked")]
        src_t = [v for k, v in src.items() if not k.endswith("num_batches_tracked")]
    if len(src_t) != len(dst_keys):
        raise ValueError(f"{weights_path}: {len(src_t)} tensors, backbone expects {len(dst_keys)}")
    new = {}
    for k, v in zip(dst_keys, src_t, strict=True):
        if tuple(dst[k].shape) != tuple(v.shape):
            raise ValueError(f"{weights_path}: tensor for {k} has shape {tuple(v.shape)}, "
                             f"expected {tuple(dst[k].shape)}")
        new[k] = v
    module.load_state_dict(new, strict=False)


def mobilenetv2(last_stride: int = 2, weights: str | Path | None = "imagenet") -> Backbone:
    """torchvision MobileNetV2 features, grouped by output stride; ImageNet init by default."""
    from torchvision.models import mobilenet_v2

    features = mobilenet_v2().features
    if weights == "imagenet":
        weights = default_mobilenetv2_weights()
    if weights:
        load_by_position(features, weights)
    if last_stride == 1:
        features[14].conv[1][0].stride = (1, 1)  # the depthwise conv of the first 1/32 block
    f = list(features)
    stages = {
        "stem": nn.Sequential(*f[0:2]),
        "layer1": nn.Sequential(*f[2:4]),
        "layer2": nn.Sequential(*f[4:7]),
        "layer3": nn.Sequential(*f[7:14]),
        "layer4": nn.Sequential(*f[14:19]),
    }
    info = BackboneInfo(
        channels={"stem": 16, "layer1": 24, "layer2": 32, "layer3": 96, "layer4": 1280},
        strides={"stem": 2, "layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32 // (2 // last_stride)},
        out_channels=1280,
    )
    return Backbone(stages, info)


def resnet50(last_stride: int = 1, weights: str | Path | None = None) -> Backbone:
    """torchvision ResNet-50 (v1.5); random init unless a state_dict file is given."""
    from torchvision.models import resnet50 as tv_resnet50

    net = tv_resnet50()
    if weights == "imagenet":
        raise ValueError("no ImageNet ResNet-50 weights ship offline: give a state_dict file path or null")
    if weights:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)
    if last_stride == 1:
        net.layer4[0].conv2.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
    stages = {
        "stem": nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
        "layer1": net.layer1,
        "layer2": net.layer2,
        "layer3": net.layer3,
        "layer4": net.layer4,
    }
    info = BackboneInfo(
        channels={"stem": 64, "layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
        strides={"stem": 4, "layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32 // (2 // last_stride)},
        out_channels=2048,
    )
    return Backbone(stages, info)


def _osnet_x0_25(last_stride: int = 1, weights: str | Path | None = "msmt17") -> Backbone:
    from reid.models.osnet import osnet_x0_25

    if weights == "imagenet":
        raise ValueError("no ImageNet OSNet weights ship offline: use pretrained: msmt17 (the re-ID-trained "
                         "export in ../shared), an OSNet-x0.25 ONNX path, or null")
    return osnet_x0_25(last_stride, weights)


BACKBONES: dict[str, Callable[..., Backbone]] = {"mobilenetv2": mobilenetv2, "resnet50": resnet50,
                                                 "osnet_x0_25": _osnet_x0_25}


def build_backbone(name: str, **kwargs) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def apply_ibn(backbone: Backbone, stages: list[str], ratio: float = 0.5) -> None:
    """IBN-a in the named stages: every block's first BatchNorm becomes half InstanceNorm
    (``reid.models.ibn``). Call it after loading pretrained weights."""
    from reid.models.ibn import convert_first_batchnorm

    for name in stages:
        if name not in backbone.stages:
            raise ValueError(f"unknown stage {name!r} for ibn; stages: {STAGES}")
        for block in backbone.stages[name]:
            convert_first_batchnorm(block, ratio)


def insert_after(backbone: Backbone, point: str, make_block: Callable[[int, int], nn.Module]) -> None:
    """Insert ``make_block(channels, stride)`` after ``point``: a stage name (after its last block)
    or ``stage.i`` (after block i of that stage)."""
    stage_name, _, idx = point.partition(".")
    if stage_name not in backbone.stages:
        raise ValueError(f"unknown stage {stage_name!r} in insertion point {point!r}; stages: {STAGES}")
    stage = backbone.stages[stage_name]
    blocks = list(stage)
    # ``stage.i`` counts the backbone's own blocks: earlier insertions must not shift the indices
    own = [j for j, b in enumerate(blocks) if not getattr(b, "_inserted", False)]
    if idx == "":
        pos = len(blocks) - 1
    else:
        i = int(idx)
        if not 0 <= i < len(own):
            raise ValueError(f"{point!r}: stage {stage_name} has {len(own)} blocks")
        pos = own[i + 1] - 1 if i + 1 < len(own) else len(blocks) - 1
    channels = _out_channels(blocks[: pos + 1], backbone.info.channels[stage_name])
    block = make_block(channels, backbone.info.strides[stage_name])
    block._inserted = True
    blocks.insert(pos + 1, block)
    backbone.stages[stage_name] = nn.Sequential(*blocks)


def _out_channels(blocks: list[nn.Module], default: int) -> int:
    """Output channels after a run of blocks: the last conv's out_channels or an inserted block's."""
    for block in reversed(blocks):
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        if convs:
            return convs[-1].out_channels
        if hasattr(block, "channels"):
            return block.channels
    return default
