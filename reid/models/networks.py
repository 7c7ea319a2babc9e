"""The re-ID networks: an image net (backbone [+ IA blocks] → GAP → neck → classifier), a video net
(backbone + non-local blocks → per-frame GAP → temporal mean) and TKP, which pairs the two with one
shared classifier. All are built from a :class:`ModelConfig`, which a checkpoint stores."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reid.models.backbones import Backbone, apply_ibn, build_backbone, insert_after
from reid.models.ia import IABlock
from reid.models.mixstyle import MixStyle
from reid.models.nonlocal_block import NonLocalBlock
from reid.models.preprocess import PreprocessSpec, onnx_metadata


@dataclass
class ModelConfig:
    """Everything needed to rebuild a network (saved inside checkpoints)."""

    arch: str = "baseline"  # baseline | ianet | tkp
    backbone: str = "mobilenetv2"
    last_stride: int = 1
    pretrained: str | None = "imagenet"  # "imagenet", a file path, or None
    # start from a trained reid image net: a training checkpoint (.pt) or an exported model (dir or
    # image.onnx); a TKP model starts both its nets from it (init_from_trained)
    init_from: str | None = None
    neck: str = "bn"  # bn | none | fc — BN1d after GAP (IANet), nothing (TKP code), fc+BN+ReLU (OSNet)
    num_classes: int = 0
    height: int = 256
    width: int = 128
    # IBN-a: half InstanceNorm in each block's first norm layer of these stages (models.ibn)
    ibn: list[str] = field(default_factory=list)
    # MixStyle after these stages: training-only style mixing, the identity at inference (models.mixstyle)
    mixstyle_after: list[str] = field(default_factory=list)
    # IA blocks
    ia_after: list[str] = field(default_factory=lambda: ["layer2", "layer3"])
    ia_kernel: int = 1
    ia_temperature: bool = True
    ia_combine: str = "softmax"
    ia_sigma_scale: float = 0.625
    # TKP video net: non-local blocks after these blocks (spec §2.1; MobileNetV2 mapping in README)
    nl_after: list[str] = field(default_factory=lambda: ["layer2.1", "layer2.2", "layer3.1", "layer3.3",
                                                         "layer3.5"])

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        return cls(**known)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def preprocess(self) -> PreprocessSpec:
        return PreprocessSpec(height=self.height, width=self.width)


def _backbone(cfg: ModelConfig) -> Backbone:
    backbone = build_backbone(cfg.backbone, last_stride=cfg.last_stride, weights=cfg.pretrained)
    if cfg.ibn:
        apply_ibn(backbone, cfg.ibn)
    for point in cfg.mixstyle_after:
        insert_after(backbone, point, lambda c, _s: MixStyle(c))
    return backbone


class ImageNet(nn.Module):
    """Backbone (+ IA blocks) → GAP → neck. Training returns (logits, feature); eval returns the
    feature used as the embedding (post-BN for a BN neck, as IANet's code tests on f_bn)."""

    def __init__(self, cfg: ModelConfig, with_ia: bool, classifier: bool = True):
        super().__init__()
        self.backbone = _backbone(cfg)
        if with_ia:
            for point in cfg.ia_after:
                insert_after(self.backbone, point, lambda c, _s: IABlock(
                    c, kernel=cfg.ia_kernel, temperature=cfg.ia_temperature,
                    combine=cfg.ia_combine, sigma_scale=cfg.ia_sigma_scale))
        self.neck, dim = _neck(cfg.neck, self.backbone)
        self.embedding_dim = dim
        self.classifier = nn.Linear(dim, cfg.num_classes) if classifier and cfg.num_classes else None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.pooled(x))

    def embedding_parts(self, x: torch.Tensor, n_regions: int,
                        grid: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(embedding [B, D], regions [B, n, D], spatial map [B, C, h, w]).

        Regions are ``n`` equal horizontal stripes of the feature map, average-pooled and passed
        through the same eval-mode neck (for an affine neck their mean equals the embedding; the
        ``fc`` neck's ReLU makes that approximate) — what VRSTC's occlusion scoring works on
        (models.vrstc). The map is the feature map average-pooled to ``grid`` (default
        :func:`map_grid`) — what CAN's cross-attention re-scores (models.can); its GAP is the
        full map's GAP, so the neck turns it into the embedding."""
        fmap = self.backbone(x)
        b, c, h, w = fmap.shape
        if h % n_regions:
            raise ValueError(f"feature map height {h} does not split into {n_regions} equal regions")
        stripes = fmap.reshape(b, c, n_regions, h // n_regions * w).mean(dim=3)  # [B, C, n]
        regions = self.neck(stripes.transpose(1, 2).reshape(b * n_regions, c)).reshape(b, n_regions, -1)
        gh, gw = grid or map_grid(h, w)
        maps = fmap.reshape(b, c, gh, h // gh, gw, w // gw).mean(dim=(3, 5))  # average pooling that exports
        return self.neck(F.adaptive_avg_pool2d(fmap, 1).flatten(1)), regions, maps

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's GAP feature, before the neck (what the retention loss compares)."""
        return F.adaptive_avg_pool2d(self.backbone(x), 1).flatten(1)

    def forward(self, x: torch.Tensor, with_pooled: bool = False):
        pooled = self.pooled(x)
        f = self.neck(pooled)
        if self.training and self.classifier is not None:
            return (self.classifier(f), f, pooled) if with_pooled else (self.classifier(f), f)
        return f


#: the spatial map CAN re-scores: 8×4 positions (m = 32), CAN's own scale (6×6 = 36), small enough
#: to store per gallery item (128 channels × 32 × fp16 = 8 KB for OSNet-x0.25)
MAP_GRID = (8, 4)


def map_grid(h: int, w: int) -> tuple[int, int]:
    """:data:`MAP_GRID` when the feature map pools to it evenly, else the map's own size."""
    gh, gw = MAP_GRID
    return (gh, gw) if h % gh == 0 and w % gw == 0 and h >= gh and w >= gw else (h, w)


class VideoNet(nn.Module):
    """Per-frame backbone with non-local blocks between frames, GAP per frame, temporal mean.

    Input [B, T, 3, H, W]. ``frame_features`` gives [B, T, D] (what TKP distils from)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.backbone = _backbone(cfg)
        for point in cfg.nl_after:
            insert_after(self.backbone, point, lambda c, _s: NonLocalBlock(c))
        self.neck, self.embedding_dim = _neck(cfg.neck, self.backbone)

    def frame_features(self, clips: torch.Tensor) -> torch.Tensor:
        b, t = clips.shape[0], clips.shape[1]
        x = clips.reshape(-1, *clips.shape[2:])
        for stage in self.backbone.stages.values():
            for block in stage:
                x = block(x, t) if getattr(block, "temporal", False) else block(x)
        f = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.neck(f).reshape(b, t, -1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.frame_features(clips).mean(dim=1)


class TKP(nn.Module):
    """Temporal knowledge propagation: an image net taught by a video net, one shared classifier.
    The two nets do not share weights (spec §2.1)."""

    def __init__(self, cfg: ModelConfig, with_ia: bool = False):
        super().__init__()
        self.image_net = ImageNet(cfg, with_ia=with_ia, classifier=False)
        self.video_net = VideoNet(cfg)
        self.classifier = nn.Linear(self.image_net.embedding_dim, cfg.num_classes)
        nn.init.normal_(self.classifier.weight, 0.0, 0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, clips: torch.Tensor):
        """clips [B, T, 3, H, W] → image frame feats [B·T, D] (and their GAP before the neck), video
        frame feats [B, T, D], video feats [B, D] and logits for both (TKP trains the image net on
        the clip's own frames)."""
        b, t = clips.shape[:2]
        img_pooled = self.image_net.pooled(clips.reshape(b * t, *clips.shape[2:]))
        img = self.image_net.neck(img_pooled)
        vid_frames = self.video_net.frame_features(clips)
        vid = vid_frames.mean(dim=1)
        return {"img": img, "img_pooled": img_pooled, "vid_frames": vid_frames, "vid": vid,
                "img_logits": self.classifier(img), "vid_logits": self.classifier(vid)}


def _neck(kind: str, backbone: Backbone) -> tuple[nn.Module, int]:
    """What follows GAP, and the embedding width it gives: ``bn`` (BNNeck, IANet), ``none`` (TKP's
    code) or ``fc`` (fc → BN → ReLU to 512-d, OSNet's head; initialised from the backbone's
    pretrained head when it has one)."""
    dim = backbone.info.out_channels
    if kind == "bn":
        return nn.BatchNorm1d(dim), dim
    if kind == "none":
        return nn.Identity(), dim
    if kind == "fc":
        from reid.models.osnet import EMBEDDING_DIM, embedding_head

        head = embedding_head(dim, EMBEDDING_DIM)
        state = getattr(backbone, "head_state", None)
        if state:
            missing, unexpected = head.load_state_dict(state, strict=False)
            # the export carries no BatchNorm step counter; anything else missing is a wrong file
            if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
                raise ValueError(f"pretrained head does not fit fc neck: missing {missing}, unexpected {unexpected}")
        return head, EMBEDDING_DIM
    raise ValueError(f"unknown neck {kind!r}; use 'bn', 'none' or 'fc'")


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.arch == "baseline":
        model: nn.Module = ImageNet(cfg, with_ia=False)
    elif cfg.arch == "ianet":
        model = ImageNet(cfg, with_ia=True)
    elif cfg.arch == "tkp":
        model = TKP(cfg)
    else:
        raise ValueError(f"unknown arch {cfg.arch!r}; use baseline, ianet or tkp")
    if cfg.init_from:
        init_from_trained(model, cfg.init_from)
    return model


@dataclass(frozen=True)
class TrainedImageNet:
    """A trained image net as stored, read once: its weights (backbone + neck, no classifier), its
    ``model_config`` values (None for a bare ``image.onnx``) and where it came from."""

    state: dict[str, torch.Tensor]
    config: dict | None
    trained_on: str
    version: str


def read_trained_image_net(source: str | Path) -> TrainedImageNet:
    """A reid training checkpoint or an exported model directory / ``image.onnx`` (its initialisers
    keep the module names)."""
    path = Path(source)
    if path.is_dir():
        path = path / "image.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{source} not found (a training checkpoint or a model directory)")
    if path.suffix == ".onnx":
        import json

        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(path))
        state = {t.name.removeprefix("net."): torch.from_numpy(numpy_helper.to_array(t).copy())
                 for t in model.graph.initializer if t.name.startswith("net.")}
        if not state:
            raise ValueError(f"{path} is not a reid export (no net.* weights)")
        meta = onnx_metadata(model)
        config_file = path.parent / "model_config.json"
        config = json.loads(config_file.read_text()) if config_file.is_file() else None
        return TrainedImageNet(state, config, meta.get("reid.trained_on", "unknown"), meta.get("reid.version", "0"))
    _, _, ckpt = load_checkpoint(str(path))
    prefix = "image_net." if ckpt["model_config"].get("arch") == "tkp" else ""
    state = {k.removeprefix(prefix): v for k, v in ckpt["model"].items()
             if k.startswith(prefix) and not k.removeprefix(prefix).startswith("classifier.")}
    return TrainedImageNet(state, ckpt["model_config"], ckpt.get("trained_on", "unknown"), "0")


def init_from_trained(model: nn.Module, source: str | Path) -> None:
    """Load a trained image net into ``model``'s image branch, and for TKP into its video net too
    (block by block, skipping the non-local blocks, which start as identities): TKP then starts
    from the best image model instead of ImageNet (issue 10)."""
    image = image_branch(model)
    try:
        state = read_trained_image_net(source).state
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"model.init_from: {exc}") from exc
    missing, unexpected = image.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("classifier.") and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"model.init_from: {source} does not fit this model: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    video = video_branch(model)
    if video is None:
        return
    for name, stage in image.backbone.stages.items():
        own = [b for b in video.backbone.stages[name] if not getattr(b, "_inserted", False)]
        for src, dst in zip(stage, own, strict=True):
            dst.load_state_dict(src.state_dict())
    video.neck.load_state_dict(image.neck.state_dict())


def image_branch(model: nn.Module) -> ImageNet:
    return model.image_net if isinstance(model, TKP) else model


def video_branch(model: nn.Module) -> VideoNet | None:
    return model.video_net if isinstance(model, TKP) else None


class NormalizedEmbedder(nn.Module):
    """What gets exported: the eval-mode embedding, L2-normalised inside the graph; with
    ``n_regions`` (image nets) also the unnormalised region features and the pooled spatial map
    (``embedding_parts``) as second and third outputs."""

    def __init__(self, net: nn.Module, n_regions: int = 0):
        super().__init__()
        self.net = net
        self.n_regions = n_regions

    def forward(self, x: torch.Tensor):
        if self.n_regions:
            emb, regions, maps = self.net.embedding_parts(x, self.n_regions)
            return F.normalize(emb, dim=1), regions, maps
        return F.normalize(self.net(x), dim=1)


def load_checkpoint(path: str, map_location: str = "cpu") -> tuple[nn.Module, ModelConfig, dict]:
    """Rebuild a model from a training checkpoint (no pretrained download: weights come from it)."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError/KeyError on non-checkpoints
        raise ValueError(f"{path} is not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "model_config" not in ckpt:
        raise ValueError(f"{path} is not a reid checkpoint (no model_config)")
    cfg = ModelConfig.from_dict({**ckpt["model_config"], "pretrained": None, "init_from": None})
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:  # e.g. saved with another block layout; keep the message short
        raise ValueError(f"{path}: weights do not match its model_config: "
                         f"{' '.join(str(exc).split())[:300]}") from exc
    model.eval()
    return model, cfg, ckpt
