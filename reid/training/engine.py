"""The training loop: identity-balanced batches → model → losses → Adam; a checkpoint after every
epoch (atomic), ``resume`` from the last one, a CSV/TensorBoard log and periodic evaluation.
Runs unchanged on CUDA (with AMP) or the CPU."""

from __future__ import annotations

import copy
import csv
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from reid.models.networks import TKP, build_model, image_branch, load_checkpoint
from reid.training.config import TrainConfig, resolve_path
from reid.training.datasets import DatasetError, Split, combine_train, tracklets
from reid.training.losses import (
    batch_hard_triplet,
    label_smoothed_ce,
    tkp_distance_loss,
    tkp_feature_loss,
    tkp_triplets,
)
from reid.training.sampler import RandomIdentitySampler
from reid.training.transforms import ClipTrainSet, ImageTrainSet


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Multi-step schedule (stepped at epoch starts, as the official code) with optional warm-up."""
    o = cfg.optim
    lr = o.lr * o.gamma ** sum(epoch >= m for m in o.milestones)
    if o.warmup_epochs and epoch < o.warmup_epochs:
        lr *= (epoch + 1) / (o.warmup_epochs + 1)
    return lr


class Trainer:
    def __init__(self, cfg: TrainConfig, device: str | None = None):
        self.cfg = cfg
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # flush denormals to zero: as weights shrink during training, denormal activations made CPU
        # epochs 2× slower here (no effect on a GPU, no measurable effect on accuracy)
        torch.set_flush_denormal(True)
        seed_everything(cfg.seed)
        data = cfg.data
        if cfg.loss.per_camera_ids and cfg.model.arch == "tkp":
            raise ValueError("loss.per_camera_ids applies to image nets (arch baseline/ianet), not tkp")
        sources = [src.load() for src in data.train]
        self.split = sources[0]
        self.eval_split = data.eval.load() if data.eval else sources[0]
        empty = [src.root for src, split in zip(data.train, sources, strict=True) if not split.train]
        if empty:
            raise DatasetError(f"no training images found in {', '.join(empty)}")
        train = combine_train(sources)
        cfg.model.num_classes = len({s.pid for s in train})
        self.same_camera = (_same_camera(train, cfg.model.num_classes).to(self.device) if cfg.loss.per_camera_ids
                            else None)
        self.trained_on = " + ".join(src.describe(split) for src, split in zip(data.train, sources, strict=True))
        if cfg.model.init_from:
            cfg.model.init_from = resolve_path(cfg.model.init_from)
        self.model = build_model(cfg.model)
        self.classifier_from = self._carry_classifier(cfg)
        self.model.to(self.device)
        self.is_tkp = isinstance(self.model, TKP)
        spec = cfg.model.preprocess
        if self.is_tkp:
            tracks = tracklets(train)
            self.dataset = ClipTrainSet(tracks, spec, cfg.augment, cfg.tkp.seq_len, cfg.tkp.stride, cfg.seed)
            pids, cams = [t.pid for t in tracks], [t.camid for t in tracks]
        else:
            self.dataset = ImageTrainSet(train, spec, cfg.augment, cfg.seed)
            pids, cams = [s.pid for s in train], [s.camid for s in train]
        self.sampler = RandomIdentitySampler(pids, cfg.num_instances, cfg.seed,
                                             camids=cams if cfg.camera_aware else None)
        self.loader = DataLoader(self.dataset, batch_size=cfg.batch_ids * cfg.num_instances,
                                 sampler=self.sampler, drop_last=True, num_workers=0)
        self.optimizer = torch.optim.Adam(_param_groups(self.model, cfg.optim.backbone_lr_scale),
                                          lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        # the initial (pretrained) image net, frozen, for the retention loss; built before any resume
        self.initial = None
        if cfg.loss.retain_weight:
            self.initial = copy.deepcopy(image_branch(self.model)).eval().requires_grad_(False)
        self.teacher, self.teacher_size = self._teacher(cfg)
        # the running mean of the weights (optim.average_from), buffers included: the head's BatchNorm
        # statistics are averaged with the weights they belong to
        self.averaged = AveragedModel(self.model, use_buffers=True) if cfg.optim.average_from else None
        self.amp = self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.out = cfg.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.start_epoch = 0
        self.train_seconds = 0.0

    def _carry_classifier(self, cfg: TrainConfig) -> str | None:
        """With ``init_from`` a checkpoint trained on the same datasets (so the same identity labels),
        start from its classifier too. A fresh classifier over 1,494 ids stayed above chance for a
        whole TKP epoch and dragged the image net from 64.8 to 31.4 Duke rank-1 (bench/accuracy.md)."""
        source = cfg.model.init_from
        if not source or not str(source).endswith((".pt", ".pth")):
            return None
        ckpt = torch.load(source, map_location="cpu", weights_only=False)
        theirs = ckpt.get("train_config", {}).get("data", {}).get("train", [])
        same_data = ([(resolve_path(d["root"]), d["format"], d.get("with_test", False)) for d in theirs]
                     == [(resolve_path(d.root), d.format, d.with_test) for d in cfg.data.train])
        weights = {k.removeprefix("classifier."): v for k, v in ckpt["model"].items() if k.startswith("classifier.")}
        head = self.model.classifier  # an image net's own, or the one TKP's two nets share: same name
        fits = head is not None and "weight" in weights and weights["weight"].shape == head.weight.shape
        if not (same_data and fits):
            return None
        head.load_state_dict(weights)
        return str(source)

    def _teacher(self, cfg: TrainConfig) -> tuple[nn.Module | None, tuple[int, int]]:
        """The frozen teacher for ``loss.distill_weight`` and the input size it embeds at."""
        if not cfg.loss.distill_weight:
            return None, (0, 0)
        if self.is_tkp:
            raise ValueError("loss.distill_weight applies to image nets (arch baseline/ianet), not tkp")
        model, tcfg, _ = load_checkpoint(resolve_path(cfg.loss.distill_from))
        mine, theirs = cfg.model.preprocess, tcfg.preprocess
        if (mine.color, mine.scale, mine.mean, mine.std) != (theirs.color, theirs.scale, theirs.mean, theirs.std):
            raise ValueError(f"the teacher {cfg.loss.distill_from} normalises pixels differently from this model")
        return image_branch(model).to(self.device).eval().requires_grad_(False), (theirs.height, theirs.width)

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint_path(self) -> Path:
        return self.out / "last.pt"

    def averaged_path(self) -> Path:
        return self.out / "averaged.pt"

    def save(self, epoch: int) -> None:
        model = {
            "model": self.model.state_dict(),
            "model_config": self.cfg.model.to_dict(),
            "train_config": self.cfg.to_dict(),
            "epoch": epoch,  # epochs completed
            "train_seconds": self.train_seconds,
            "trained_on": f"{self.trained_on}, {self.cfg.model.num_classes} ids",
        }
        state = {
            **model,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                    "dataset": self.dataset.rng.getstate()},
        }
        if self.averaged is not None:
            state["averaged"] = self.averaged.state_dict()
        _save_atomic(state, self.checkpoint_path())
        steps = int(self.averaged.n_averaged) if self.averaged is not None else 0
        if steps:  # a checkpoint like last.pt (export, eval, blend read it) holding the mean weights
            _save_atomic({**model, "model": self.averaged.module.state_dict(), "averaged_steps": steps},
                         self.averaged_path())

    def resume(self) -> bool:
        path = self.checkpoint_path()
        if not path.is_file():
            return False
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.averaged is not None and "averaged" in ckpt:
            self.averaged.load_state_dict(ckpt["averaged"])
        self.start_epoch = ckpt["epoch"]
        self.train_seconds = ckpt.get("train_seconds", 0.0)
        rng = ckpt["rng"]
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        self.dataset.rng.setstate(rng["dataset"])
        return True

    # -- one step ----------------------------------------------------------------------------
    def losses(self, x: torch.Tensor, pids: torch.Tensor) -> dict[str, torch.Tensor]:
        lc = self.cfg.loss
        if not self.is_tkp:
            logits, feat, pooled = self.model(x, with_pooled=True)
            allowed = self.same_camera[pids] if self.same_camera is not None else None
            losses = {"ce": label_smoothed_ce(logits, pids, lc.ce_epsilon, allowed),
                      "triplet": lc.triplet_weight * batch_hard_triplet(
                          feat, pids, margin=lc.triplet_margin, metric=lc.triplet_metric)}
            if self.initial is not None:
                losses["retain"] = self._retain(x, pooled)
            if self.teacher is not None:
                losses["distill"] = lc.distill_weight * self._distill(x, feat)
            return losses
        out = self.model(x)
        t = x.shape[1]
        frame_pids = pids.repeat_interleave(t)
        vid_frames = out["vid_frames"].reshape(-1, out["vid_frames"].shape[-1])
        losses = {"ce_vid": label_smoothed_ce(out["vid_logits"], pids, lc.ce_epsilon),
                  "ce_img": label_smoothed_ce(out["img_logits"], frame_pids, lc.ce_epsilon)}
        for k, v in tkp_triplets(out["img"], frame_pids, out["vid"], pids, lc.triplet_margin,
                                 lc.triplet_metric).items():
            losses[k] = lc.triplet_weight * v
        # propagation in the embedding's own geometry: raw features for a Euclidean net (the paper),
        # unit vectors for a cosine one — raw 512-d distances dwarfed every other loss and pulled
        # the image net away from its start (bench/accuracy.md, TKP ablation)
        img, vid_frames = ((F.normalize(out["img"], dim=1), F.normalize(vid_frames, dim=1))
                           if lc.triplet_metric == "cosine" else (out["img"], vid_frames))
        losses["tkp_f"] = lc.tkp_feature_weight * tkp_feature_loss(img, vid_frames)
        losses["tkp_d"] = lc.tkp_distance_weight * tkp_distance_loss(img, vid_frames, lc.tkp_distance_norm)
        if self.initial is not None:
            losses["retain"] = self._retain(x.reshape(-1, *x.shape[2:]), out["img_pooled"])
        return losses

    def _retain(self, x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """Learning without forgetting: weight × (1 − cos) between the image net's pooled feature
        and the frozen initial net's on the same crops."""
        with torch.no_grad():
            before = self.initial.pooled(x)
        return self.cfg.loss.retain_weight * (1 - F.cosine_similarity(pooled, before, dim=1)).mean()

    def _distill(self, x: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """Mean squared difference of the batch's cosine-similarity matrices, student vs teacher
        (the teacher sees the same crops resized to its own input: the same pixels, so the same
        normalisation applies)."""
        with torch.no_grad():
            xt = x if tuple(x.shape[2:]) == self.teacher_size else F.interpolate(
                x, size=self.teacher_size, mode="bilinear", align_corners=False)
            t = F.normalize(self.teacher(xt), dim=1)
        s = F.normalize(feat, dim=1)
        return ((s @ s.T - t @ t.T) ** 2).mean()

    def train_epoch(self, epoch: int, progress: Progress) -> dict[str, float]:
        self.model.train()
        lr = lr_at(self.cfg, epoch)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g["lr_scale"]
        self.sampler.set_epoch(epoch)
        n_batches = len(self.loader)
        if self.cfg.max_batches_per_epoch:
            n_batches = min(n_batches, self.cfg.max_batches_per_epoch)
        task = progress.add_task(f"epoch {epoch + 1}/{self.cfg.optim.epochs}", total=n_batches, info="")
        sums: dict[str, float] = {}
        seen, started = 0, time.time()
        for i, (x, pids) in enumerate(self.loader):
            if i >= n_batches:
                break
            if pids.unique().numel() < 2:
                continue  # no negatives in the batch
            x, pids = x.to(self.device, non_blocking=True), pids.to(self.device)
            with torch.autocast(self.device.type, enabled=self.amp):
                losses = self.losses(x, pids)
                loss = sum(losses.values())
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.averaged is not None and epoch + 1 >= self.cfg.optim.average_from:
                self.averaged.update_parameters(self.model)
            seen += x.shape[0] * (x.shape[1] if x.dim() == 5 else 1)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v.item()
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            rate = seen / (time.time() - started)
            progress.update(task, advance=1, info=f"loss {loss.item():.3f}  {rate:.0f} img/s")
            if not sys.stdout.isatty() and (i + 1) % 20 == 0:
                print(f"epoch {epoch + 1} batch {i + 1}/{n_batches} loss {sums['loss'] / (i + 1):.4f} "
                      f"{rate:.1f} img/s", flush=True)
        progress.remove_task(task)
        seconds = time.time() - started
        n = max(i + 1, 1)
        row = {k: v / n for k, v in sums.items()}
        row.update(epoch=epoch + 1, lr=lr, seconds=seconds, img_per_s=seen / max(seconds, 1e-9))
        return row

    def evaluate(self) -> dict[str, float]:
        from reid.training.evaluate import EmbeddingCache, TorchEmbedder, evaluate

        split: Split = self.eval_split
        if not split.query or not split.gallery:
            return {}
        cache = EmbeddingCache(TorchEmbedder(self.model, self.cfg.model))  # modes share images
        results = {}
        for mode in self.cfg.eval_modes:
            r = evaluate(split, cache.embedder, mode=mode, cache=cache)
            results.update({f"{mode}_{k}": r[k] for k in ("rank1", "mAP", "mINP")})
        self.model.train()
        return results

    def run(self, resume: bool = False) -> Path:
        if resume and self.resume():
            print(f"resumed from {self.checkpoint_path()} after epoch {self.start_epoch}", flush=True)
        elif self.classifier_from:
            print(f"classifier from {self.classifier_from} (same training data, same identity labels)", flush=True)
        (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        log_path = self.out / "log.csv"
        writer = _tensorboard(self.out)
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TextColumn("{task.fields[info]}"), TimeRemainingColumn()) as progress:
            for epoch in range(self.start_epoch, self.cfg.optim.epochs):
                row = self.train_epoch(epoch, progress)
                self.train_seconds += row["seconds"]
                last = epoch + 1 == self.cfg.optim.epochs
                if self.cfg.eval_every and ((epoch + 1) % self.cfg.eval_every == 0 or last):
                    try:
                        row.update(self.evaluate())
                    except Exception as exc:  # evaluation must never cost a training run
                        print(f"evaluation failed: {exc!r}", flush=True)
                row["train_seconds"] = self.train_seconds
                self.save(epoch + 1)
                _append_csv(log_path, row)
                if writer:
                    for k, v in row.items():
                        writer.add_scalar(k, v, epoch + 1)
                    writer.flush()
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
                      flush=True)
        if writer:
            writer.close()
        return self.checkpoint_path()


def _save_atomic(state: dict, path: Path) -> None:
    """A kill never leaves a half-written checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _same_camera(train: list, num_classes: int) -> torch.Tensor:
    """[classes, classes] bool: True where two identities belong to one camera."""
    camera_of: dict[int, int] = {}
    for s in train:
        if camera_of.setdefault(s.pid, s.camid) != s.camid:
            raise ValueError(f"loss.per_camera_ids needs every identity in one camera; id {s.pid} is in "
                             f"cameras {camera_of[s.pid]} and {s.camid}")
    cams = torch.tensor([camera_of[p] for p in range(num_classes)])
    return cams[:, None] == cams[None, :]


def _param_groups(model: torch.nn.Module, backbone_scale: float) -> list[dict]:
    """Classifier parameters at the base lr, everything else at ``backbone_scale`` × lr."""
    head, body = [], []
    for name, p in model.named_parameters():
        (head if name.startswith("classifier") else body).append(p)
    return [{"params": body, "lr_scale": backbone_scale}, {"params": head, "lr_scale": 1.0}]


def _append_csv(path: Path, row: dict) -> None:
    """One row per epoch; the header is widened when evaluation columns first appear."""
    rows = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tb"))
