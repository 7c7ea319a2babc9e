"""One training configuration, read from YAML (configs/*.yaml). Unknown keys are errors."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from reid.models.backbones import datasets_dir, shared_dir
from reid.models.networks import ModelConfig
from reid.training.datasets import Split, load_split, with_test_identities
from reid.training.transforms import AugmentConfig


def resolve_path(value: str) -> str:
    """Environment variables expanded; ``${REID_SHARED}`` defaults to ``../shared`` and
    ``${REID_DATASETS}`` (public benchmarks unpacked by ``bench/datasets.py``) to ``../datasets``."""
    for var, folder in (("REID_SHARED", shared_dir()), ("REID_DATASETS", datasets_dir())):
        value = value.replace("${" + var + "}", str(folder))
    return os.path.expandvars(value)


@dataclass
class SourceConfig:
    """One dataset on disk: a root folder and its layout (``reid.training.datasets.FORMATS``).
    ``with_test`` trains on its query and gallery people too (more identities; its test split can
    then measure nothing, so it cannot be ``data.eval``)."""

    root: str
    format: str
    with_test: bool = False

    def load(self) -> Split:
        split = load_split(resolve_path(self.root), self.format)
        return with_test_identities(split) if self.with_test else split

    def describe(self, split: Split) -> str:
        """How the trained-on metadata names this source, e.g. ``market1501 train + test (…)``."""
        return f"{self.format} {'train + test' if self.with_test else 'train'} ({len(split.train)} items)"

    def same_data(self, other: SourceConfig) -> bool:
        return (resolve_path(self.root), self.format) == (resolve_path(other.root), other.format)


@dataclass
class DataConfig:
    """Where training and periodic evaluation read from. ``train`` lists one or more datasets:
    their identities are kept apart (offset ids) and share one classifier; ``eval`` defaults to
    the first one's query/gallery split (put a *different* dataset there to watch cross-domain
    accuracy while training)."""

    train: list[SourceConfig] = field(default_factory=lambda: [SourceConfig("${REID_SHARED}/data/cuhk03",
                                                                            "cuhk03")])
    eval: SourceConfig | None = None

    def __post_init__(self) -> None:
        self.train = [s if isinstance(s, SourceConfig) else _build(SourceConfig, s, "data.train[]")
                      for s in self.train]
        if isinstance(self.eval, dict):
            self.eval = _build(SourceConfig, self.eval, "data.eval")
        if not self.train:
            raise ValueError("data.train: list at least one dataset")
        tested = self.eval or self.train[0]
        if any(src.with_test and src.same_data(tested) for src in self.train):
            raise ValueError(f"data.eval: {tested.root} trains with_test, so its test people are seen in "
                             "training; evaluate on another dataset")


@dataclass
class OptimConfig:
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    epochs: int = 60
    milestones: list[int] = field(default_factory=lambda: [20, 40])
    gamma: float = 0.1
    warmup_epochs: int = 0
    backbone_lr_scale: float = 1.0  # backbone + neck lr = lr × this (< 1 to fine-tune a re-ID-trained net)
    # from this epoch (1-based) on, also keep the running mean of the weights after every step and
    # write it as averaged.pt (stochastic weight averaging, dense as in SWAD: flatter minima transfer
    # better to unseen domains); 0 = off
    average_from: int = 0

    def __post_init__(self) -> None:
        if self.backbone_lr_scale < 0:
            raise ValueError(f"optim.backbone_lr_scale must be ≥ 0, got {self.backbone_lr_scale}")
        if not 0 <= self.average_from <= self.epochs:
            raise ValueError(f"optim.average_from must be 0 (off) or an epoch from 1 to optim.epochs "
                             f"({self.epochs}), got {self.average_from}")


@dataclass
class LossConfig:
    ce_epsilon: float = 0.1  # label smoothing (0 = plain CE, as TKP)
    triplet_margin: float = 0.3
    triplet_metric: str = "cosine"  # cosine (IANet) | euclidean (TKP)
    triplet_weight: float = 1.0
    # keep what a pretrained net knew: weight × (1 − cos) between the backbone's pooled feature and
    # the frozen initial backbone's, same image (learning without forgetting; before the neck, so
    # BN batch vs running statistics do not enter); 0 = off; image nets only
    retain_weight: float = 0.0
    # learn from a stronger net: weight × mean squared difference of the batch's cosine-similarity
    # matrices, student embedding vs the frozen teacher's (relational distillation: no projection
    # needed between widths or input sizes); ``distill_from`` = the teacher's training checkpoint
    distill_weight: float = 0.0
    distill_from: str | None = None
    # each identity's softmax over its own camera's identities only (reid adapt: tracklets of one
    # camera are different people, tracklets of two cameras may be one); needs one camera per id
    per_camera_ids: bool = False
    # TKP
    tkp_feature_weight: float = 1.0
    tkp_distance_weight: float = 1.0
    tkp_distance_norm: str = "code"  # code | talk

    def __post_init__(self) -> None:
        if self.retain_weight < 0:
            raise ValueError(f"loss.retain_weight must be ≥ 0, got {self.retain_weight}")
        if self.distill_weight < 0:
            raise ValueError(f"loss.distill_weight must be ≥ 0, got {self.distill_weight}")
        if self.distill_weight and not self.distill_from:
            raise ValueError("loss.distill_weight needs loss.distill_from (the teacher's training checkpoint)")


@dataclass
class TKPConfig:
    seq_len: int = 4
    stride: int = 8


@dataclass
class TrainConfig:
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tkp: TKPConfig = field(default_factory=TKPConfig)
    batch_ids: int = 16  # P
    num_instances: int = 4  # K
    camera_aware: bool = True  # each identity's K items spread over its cameras (training.sampler)
    seed: int = 1
    eval_every: int = 5
    eval_modes: list[str] = field(default_factory=lambda: ["i2i", "i2v"])
    output_dir: str = "runs/${name}"
    threads: int = 0  # 0 = torch default
    max_batches_per_epoch: int = 0  # 0 = full epochs (tests use a few)

    @property
    def out(self) -> Path:
        return Path(self.output_dir.replace("${name}", self.name))

    def to_dict(self) -> dict:
        return asdict(self)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "loss": LossConfig,
             "augment": AugmentConfig, "tkp": TKPConfig}


def _build(cls, values: dict, where: str):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(names)}")
    return cls(**values)


def config_from_dict(d: dict, where: str = "config") -> TrainConfig:
    d = dict(d)
    sections = {k: _build(cls, d.pop(k) or {}, f"{where}: {k}") for k, cls in _SECTIONS.items() if k in d}
    cfg = _build(TrainConfig, d, where)
    for k, v in sections.items():
        setattr(cfg, k, v)
    return cfg


def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return config_from_dict(d, str(path))
