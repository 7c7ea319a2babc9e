"""OSNet-x0.25 (Zhou et al., ICCV 2019, "Omni-Scale Feature Learning for Person Re-ID") as a
backbone, initialised from a re-ID-trained ONNX export of it.

Why: the largest public re-ID set (MSMT17: 4,101 people, 15 cameras) is not on this machine, and
a model trained on it is what transfers to new cameras. ``../shared/weights/osnet_x0_25_msmt17.onnx``
is such a model; fine-tuning it on our labelled sets adds their identities on top of MSMT17's.

The export has every BatchNorm folded into the conv before it, so this module has convs *with
bias and no BatchNorm*: the same function as the export, and it fine-tunes (there are no batch
statistics to drift). Its stages follow :mod:`reid.models.backbones`' convention:

========  ==========================================  ======  ==========
stage     blocks                                      stride  channels
========  ==========================================  ======  ==========
stem      7×7/2 conv, 3×3/2 max-pool                  4       16
layer1    2 omni-scale blocks, 1×1 conv + 2×2 avg-pool  8     64
layer2    2 omni-scale blocks, 1×1 conv + 2×2 avg-pool  16    96
layer3    2 omni-scale blocks                         16      128
layer4    1×1 conv                                    16      128
========  ==========================================  ======  ==========

:func:`load_osnet_onnx` copies the export's weights by the module path each ONNX node carries in
its name (``/conv2/conv2.0/conv2a/conv2/Conv_output_0`` → stage ``layer1``, block 0, …), so a
mismatch is an error naming the tensor, never a silent shift. The export's embedding head (fc
128→512, BatchNorm1d, ReLU) is returned too: ``neck: fc`` in a model config uses it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reid.models.backbones import Backbone, BackboneInfo, shared_dir

CHANNELS = (16, 64, 96, 128)
EMBEDDING_DIM = 512
# the export's top-level modules → this backbone's stages
_STAGE_OF = {"conv1": "stem", "conv2": "layer1", "conv3": "layer2", "conv4": "layer3", "conv5": "layer4"}


def default_osnet_onnx() -> Path:
    return shared_dir() / "weights" / "osnet_x0_25_msmt17.onnx"


class ConvReLU(nn.Sequential):
    """Conv (folded BN as its bias) followed by ReLU, or not."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, relu: bool = True):
        super().__init__()
        self.add_module("conv", nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=True))
        if relu:
            self.add_module("relu", nn.ReLU(inplace=True))


class LightConv3x3(nn.Module):
    """1×1 pointwise (no bias) then 3×3 depthwise (+ folded BN) and ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=True)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)))


class ChannelGate(nn.Module):
    """The unified aggregation gate, shared by the four streams of a block."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # adaptive_avg_pool2d exports as GlobalAveragePool, which ONNX Runtime runs faster than ReduceMean
        g = torch.sigmoid(self.fc2(torch.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * g


class OSBlock(nn.Module):
    """Omni-scale residual block: four streams of 1–4 light 3×3 convs (receptive fields 3–9),
    fused by one channel gate, then a 1×1 expansion and the residual."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 4
        self.conv1 = ConvReLU(cin, mid)
        self.conv2a = LightConv3x3(mid)
        self.conv2b = nn.Sequential(*[LightConv3x3(mid) for _ in range(2)])
        self.conv2c = nn.Sequential(*[LightConv3x3(mid) for _ in range(3)])
        self.conv2d = nn.Sequential(*[LightConv3x3(mid) for _ in range(4)])
        self.gate = ChannelGate(mid)
        self.conv3 = ConvReLU(mid, cout, relu=False)
        self.downsample = ConvReLU(cin, cout, relu=False) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        x2 = sum(self.gate(stream(x1)) for stream in (self.conv2a, self.conv2b, self.conv2c, self.conv2d))
        identity = self.downsample(x) if self.downsample is not None else x
        return torch.relu(self.conv3(x2) + identity)


def _transition(channels: int) -> nn.Sequential:
    return nn.Sequential(ConvReLU(channels, channels), nn.AvgPool2d(2, stride=2))


def embedding_head(cin: int = CHANNELS[-1], dim: int = EMBEDDING_DIM) -> nn.Sequential:
    """fc → BatchNorm1d → ReLU: the export's embedding layer (the ``fc`` neck)."""
    return nn.Sequential(nn.Linear(cin, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True))


def osnet_x0_25(last_stride: int = 1, weights: str | Path | None = "msmt17") -> Backbone:
    """OSNet-x0.25; ``weights``: ``"msmt17"`` (../shared's export), an ONNX file, or None (random).

    ``last_stride`` is accepted for the common backbone signature; OSNet's last stage has stride 1
    by design (16×8 map at 256×128)."""
    c0, c1, c2, c3 = CHANNELS
    stages = {
        "stem": nn.Sequential(ConvReLU(3, c0, 7, stride=2), nn.MaxPool2d(3, stride=2, padding=1)),
        "layer1": nn.Sequential(OSBlock(c0, c1), OSBlock(c1, c1), _transition(c1)),
        "layer2": nn.Sequential(OSBlock(c1, c2), OSBlock(c2, c2), _transition(c2)),
        "layer3": nn.Sequential(OSBlock(c2, c3), OSBlock(c3, c3)),
        "layer4": nn.Sequential(ConvReLU(c3, c3)),
    }
    info = BackboneInfo(
        channels={"stem": c0, "layer1": c1, "layer2": c2, "layer3": c3, "layer4": c3},
        strides={"stem": 4, "layer1": 8, "layer2": 16, "layer3": 16, "layer4": 16},
        out_channels=c3,
    )
    backbone = Backbone(stages, info)
    backbone.head_state = None  # the export's fc/BN weights, for an ``fc`` neck
    if weights == "msmt17":
        weights = default_osnet_onnx()
    if weights:
        backbone.head_state = load_osnet_onnx(backbone, weights)
    return backbone


def _module_path(output_name: str) -> str:
    """``/conv2/conv2.0/conv2b/conv2b.1/conv1/Conv_output_0`` → ``layer1.0.conv2b.1.conv1``.

    Each ONNX scope is the child's full dotted name, so the path is built from what each scope
    adds to its parent; torch appends ``_1``, ``_2`` to a module reused (the shared gate)."""
    scopes = output_name.strip("/").split("/")[:-1]
    parts: list[str] = []
    parent = ""
    for scope in scopes:
        rel = scope[len(parent) + 1:] if parent and scope.startswith(parent + ".") else scope
        parent = scope
        if rel.rsplit("_", 1)[-1].isdigit() and "_" in rel:
            rel = rel.rsplit("_", 1)[0]
        parts.append(rel)
    path = ".".join(parts)
    top, _, rest = path.partition(".")
    stage = _STAGE_OF.get(top)
    if stage is None:
        raise KeyError(top)
    if top in ("conv1", "conv5"):  # single-module stages: conv1.conv → stem.0.conv
        return f"{stage}.0.{rest}"
    return f"{stage}.{rest}"


def load_osnet_onnx(backbone: Backbone, path: str | Path) -> dict[str, torch.Tensor]:
    """Copy an OSNet-x0.25 ONNX export's conv weights into ``backbone``; return its head's
    state (``0.weight/bias`` = fc, ``1.*`` = BatchNorm1d) for :func:`embedding_head`."""
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"OSNet weights not found: {path} (give an OSNet-x0.25 ONNX export)")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX file at all
        raise ValueError(f"{path} is not an ONNX file ({type(exc).__name__}); give an OSNet-x0.25 ONNX export") from exc
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    params = dict(backbone.stages.named_parameters())
    filled: set[str] = set()
    head: dict[str, torch.Tensor] = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            try:
                where = _module_path(node.output[0])
            except KeyError as exc:
                raise ValueError(f"{path}: unexpected conv {node.output[0]} (not an OSNet export?)") from exc
            for tensor, suffix in zip(node.input[1:], ("weight", "bias"), strict=False):
                name = f"{where}.{suffix}"
                if name not in params:
                    raise ValueError(f"{path}: {node.output[0]} has no place in OSNet-x0.25 ({name})")
                if tuple(params[name].shape) != tuple(init[tensor].shape):
                    raise ValueError(f"{path}: {name} has shape {tuple(init[tensor].shape)}, "
                                     f"expected {tuple(params[name].shape)} (not x0.25?)")
                with torch.no_grad():
                    params[name].copy_(init[tensor])
                filled.add(name)
        elif node.op_type == "Gemm":
            head["0.weight"], head["0.bias"] = init[node.input[1]], init[node.input[2]]
        elif node.op_type == "BatchNormalization":
            for key, tensor in zip(("weight", "bias", "running_mean", "running_var"), node.input[1:], strict=True):
                head[f"1.{key}"] = init[tensor]
    missing = sorted(set(params) - filled)
    if missing:
        raise ValueError(f"{path}: no weights for {len(missing)} OSNet tensors, e.g. {missing[:3]}")
    return head
