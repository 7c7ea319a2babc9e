"""Training CAN's cross-attention re-scorer (reid/models/can.py) on top of a frozen image net.

Why frozen: a joint fine-tune of the backbone with pairwise attention costs P·K·P forward passes
of attention per batch *and* the backbone's backward pass — out of reach on 2 CPU cores — and it
would change the embedding the index is built from. With the image net frozen its spatial maps are
computed once (``maps.npy`` in the run directory, fp16) and the attention trains on them in
minutes; the score at initialisation is exactly the index's cosine (see ``attended_pool``).

CAN's two losses, restated for identities (its few-shot "classes" become the identities of a
P×K batch, its support set the other K − 1 crops of each identity):

* **nearest-neighbour loss**: every crop i is attended against the prototype of every identity j
  in the batch (mean map of j's crops, i itself left out), and the pair scores, ×``scale`` (CAN's
  ``scale_cls`` = 7), are logits of a P-way classification of i's identity;
* **global loss**: the crop's features attended against its own identity's prototype are
  classified over all training identities (label-smoothed cross-entropy).

Loss = global + ``nn_weight`` (0.5, CAN's weighting) × nearest-neighbour. Horizontal flips of the
cached maps stand in for image flips. Checkpoints every epoch; ``--resume`` continues.
"""

from __future__ import annotations

import copy
import csv
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from reid.models.can import CrossAttention, PairScorer, attended_pool
from reid.models.networks import image_branch, load_checkpoint
from reid.models.preprocess import preprocess, read_image
from reid.training.config import SourceConfig, _build, resolve_path
from reid.training.datasets import Sample, combine_train
from reid.training.engine import seed_everything
from reid.training.sampler import RandomIdentitySampler

PAIR_FILE = "pair.onnx"


@dataclass
class CanConfig:
    """configs/can_*.yaml. ``image_checkpoint``: the image net's training checkpoint (its maps and
    its neck); ``train``: the datasets whose training identities CAN learns from."""

    image_checkpoint: str
    train: list[SourceConfig]
    name: str = "can"
    epochs: int = 6
    lr: float = 1e-3
    weight_decay: float = 5e-4
    batch_ids: int = 16  # P
    num_instances: int = 4  # K
    nn_weight: float = 0.5
    scale: float = 7.0
    ce_epsilon: float = 0.1
    tune_neck: bool = False
    seed: int = 1
    threads: int = 0
    output_dir: str = "runs/${name}"
    max_batches_per_epoch: int = 0  # 0 = full epochs (tests use a few)

    def __post_init__(self) -> None:
        self.train = [s if isinstance(s, SourceConfig) else _build(SourceConfig, s, "train[]") for s in self.train]
        if not self.train:
            raise ValueError("train: list at least one dataset")
        if self.epochs < 1 or self.lr <= 0 or self.nn_weight < 0 or self.num_instances < 2:
            raise ValueError("need epochs ≥ 1, lr > 0, nn_weight ≥ 0 and num_instances ≥ 2 (a prototype "
                             "needs another crop of the identity)")

    @property
    def out(self) -> Path:
        return Path(self.output_dir.replace("${name}", self.name))


def load_can_config(path: str | Path) -> CanConfig:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    d = yaml.safe_load(path.read_text()) or {}
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return _build(CanConfig, d, str(path))


class CanModel(nn.Module):
    """Cross-attention + the image net's neck (+ a training-only identity classifier)."""

    def __init__(self, positions: int, neck: nn.Module, dim: int, num_classes: int, tune_neck: bool):
        super().__init__()
        self.attention = CrossAttention(positions)
        self.neck = neck.eval().requires_grad_(tune_neck)
        self.classifier = nn.Linear(dim, num_classes)

    def train(self, mode: bool = True):
        super().train(mode)
        self.neck.eval()  # its BN keeps the running statistics the embedding was made with
        return self

    def pair_features(self, p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ap, aq = self.attention(p, q)
        return self.neck(attended_pool(ap)), self.neck(attended_pool(aq))

    def scorer(self) -> PairScorer:
        return PairScorer(copy.deepcopy(self.attention), copy.deepcopy(self.neck)).eval()


def batch_losses(model: CanModel, maps: torch.Tensor, labels: torch.Tensor, cfg: CanConfig) -> dict[str, torch.Tensor]:
    """The two CAN losses on one P×K batch of maps [B, C, h, w] with global identity ``labels``."""
    ids, local = torch.unique(labels, return_inverse=True)  # local: position of each crop's id in ``ids``
    n_ids = len(ids)
    onehot = F.one_hot(local, n_ids).to(maps.dtype)  # [B, P]
    sums = torch.einsum("bp,bchw->pchw", onehot, maps)
    counts = onehot.sum(dim=0)
    b = len(maps)
    # prototype of identity j for crop i, leaving i out of its own identity's mean
    own = onehot[:, :, None, None, None] * maps[:, None]  # [B, P, C, h, w]
    protos = (sums[None] - own) / (counts[None] - onehot).clamp(min=1)[:, :, None, None, None]
    queries = maps[:, None].expand_as(protos)
    fq, fp = model.pair_features(queries.reshape(b * n_ids, *maps.shape[1:]),
                                 protos.reshape(b * n_ids, *maps.shape[1:]))
    scores = F.cosine_similarity(fq, fp, dim=1).view(b, n_ids)
    nn_loss = F.cross_entropy(cfg.scale * scores, local)
    own_features = fq.view(b, n_ids, -1)[torch.arange(b), local]
    global_loss = F.cross_entropy(model.classifier(own_features), labels, label_smoothing=cfg.ce_epsilon)
    acc = (scores.argmax(dim=1) == local).float().mean()
    return {"loss": global_loss + cfg.nn_weight * nn_loss, "global": global_loss, "nn": nn_loss, "nn_acc": acc}


def compute_maps(net: nn.Module, samples: list[Sample], spec, batch: int = 64) -> np.ndarray:
    """[N, C, h, w] fp16 spatial maps (the export's ``maps`` output) of ``samples``."""
    rows = []
    with torch.no_grad():
        for i in range(0, len(samples), batch):
            x = torch.from_numpy(preprocess([read_image(s.path) for s in samples[i:i + batch]], spec))
            rows.append(net.embedding_parts(x, 1)[2].numpy().astype(np.float16))
    return np.concatenate(rows)


class CanTrainer:
    def __init__(self, cfg: CanConfig):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.set_flush_denormal(True)
        seed_everything(cfg.seed)
        model, self.image_cfg, _ = load_checkpoint(resolve_path(cfg.image_checkpoint))
        self.net = image_branch(model).eval()
        sources = [s.load() for s in cfg.train]
        self.samples = combine_train(sources)
        self.trained_on = " + ".join(s.describe(sp) for s, sp in zip(cfg.train, sources, strict=True))
        self.out = cfg.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.maps = self._cached_maps()
        self.labels = torch.tensor([s.pid for s in self.samples])
        positions = self.maps.shape[2] * self.maps.shape[3]
        self.model = CanModel(positions, copy.deepcopy(self.net.neck), self.net.embedding_dim,
                              int(self.labels.max()) + 1, cfg.tune_neck)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sampler = RandomIdentitySampler(self.labels.tolist(), cfg.num_instances, cfg.seed,
                                             camids=[s.camid for s in self.samples])
        self.start_epoch = 0

    def _cached_maps(self) -> np.ndarray:
        """The frozen net's maps of every training crop, computed once per run directory."""
        path, key_path = self.out / "maps.npy", self.out / "maps.json"
        key = {"checkpoint": str(Path(resolve_path(self.cfg.image_checkpoint)).resolve()),
               "items": len(self.samples), "first": self.samples[0].path, "last": self.samples[-1].path}
        if path.is_file() and key_path.is_file():
            stored = json.loads(key_path.read_text())
            if {k: stored.get(k) for k in key} == key:
                return np.load(path, mmap_mode="r")
        started = time.time()
        maps = compute_maps(self.net, self.samples, self.image_cfg.preprocess)
        np.save(path, maps)
        key_path.write_text(json.dumps({**key, "seconds": round(time.time() - started, 1)}))
        return maps

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "can_last.pt"

    def resume(self) -> bool:
        if not self.checkpoint_path.is_file():
            return False
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = state["epoch"] + 1
        torch.set_rng_state(state["rng"])
        return True

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg
        self.model.train()
        self.sampler.set_epoch(epoch)
        order = list(iter(self.sampler))
        size = cfg.batch_ids * cfg.num_instances
        n_batches = len(order) // size
        if cfg.max_batches_per_epoch:
            n_batches = min(n_batches, cfg.max_batches_per_epoch)
        totals: dict[str, float] = {}
        for bi in range(n_batches):
            idx = np.sort(np.asarray(order[bi * size:(bi + 1) * size]))
            maps = torch.from_numpy(np.asarray(self.maps[idx], np.float32))
            flip = torch.rand(len(idx)) < 0.5
            maps[flip] = maps[flip].flip(dims=[3])
            losses = batch_losses(self.model, maps, self.labels[idx], cfg)
            self.optimizer.zero_grad()
            losses["loss"].backward()
            self.optimizer.step()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach())
        return {k: v / max(n_batches, 1) for k, v in totals.items()}

    def run(self, resume: bool = False) -> Path:
        if resume:
            self.resume()
        log = self.out / "can_log.csv"
        for epoch in range(self.start_epoch, self.cfg.epochs):
            started = time.time()
            stats = self.train_epoch(epoch)
            stats = {"epoch": epoch + 1, **{k: round(v, 4) for k, v in stats.items()},
                     "seconds": round(time.time() - started, 1)}
            new = not log.is_file() or epoch == 0
            with open(log, "w" if epoch == 0 else "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(stats))
                if new:
                    w.writeheader()
                w.writerow(stats)
            torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "epoch": epoch, "rng": torch.get_rng_state(), "config": asdict(self.cfg)},
                       self.checkpoint_path)
            print(json.dumps(stats), flush=True)
        return self.export(self.out / PAIR_FILE)

    def export(self, path: Path) -> Path:
        from reid.models.export import export_pair

        grid = self.maps.shape[2:]
        return export_pair(self.model.scorer(), path, channels=self.maps.shape[1], grid=(grid[0], grid[1]),
                           trained_on=self.trained_on, image_arch=f"{self.image_cfg.arch}-{self.image_cfg.backbone}")

