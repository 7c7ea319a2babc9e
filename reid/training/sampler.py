"""Identity-balanced P×K batches (spec §1.7): each identity's items are shuffled and cut into
chunks of K (sampling with replacement when it has fewer than K); chunks are shuffled globally and
concatenated, so one batch of P·K holds P chunks.

Camera-aware (``camids`` given): each chunk takes its K items from the identity's cameras in
turn, so every positive pair the triplet loss sees crosses cameras whenever the identity was
seen by more than one — the invariance a search across *new* cameras needs."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class RandomIdentitySampler(Sampler[int]):
    def __init__(self, pids: Sequence[int], num_instances: int = 4, seed: int = 1,
                 camids: Sequence[int] | None = None):
        if num_instances < 1:
            raise ValueError("num_instances must be ≥ 1")
        if camids is not None and len(camids) != len(pids):
            raise ValueError(f"{len(camids)} camera ids for {len(pids)} items")
        self.num_instances = num_instances
        self.camids = camids
        self.index_by_pid: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            self.index_by_pid[pid].append(i)
        self.seed = seed
        self.epoch = 0
        k = num_instances
        self.length = sum(max(len(v), k) // k * k for v in self.index_by_pid.values())

    def set_epoch(self, epoch: int) -> None:
        """Reseed per epoch so a resumed run draws the same batches as an uninterrupted one."""
        self.epoch = epoch

    def chunks(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1000003 + self.epoch)
        k = self.num_instances
        chunks = []
        for pid in sorted(self.index_by_pid):
            idx = list(self.index_by_pid[pid])
            if self.camids is not None and len({self.camids[i] for i in idx}) > 1:
                chunks += self._camera_chunks(idx, rng)
                continue
            if len(idx) < k:
                idx = rng.choices(idx, k=k)
            rng.shuffle(idx)
            chunks += [idx[i:i + k] for i in range(0, len(idx) - k + 1, k)]
        rng.shuffle(chunks)
        return chunks

    def _camera_chunks(self, idx: list[int], rng: random.Random) -> list[list[int]]:
        """As many chunks as the plain rule gives; slot j of a chunk comes from the identity's
        cameras in a shuffled rotation, each camera's items drawn without replacement (refilled
        when used up), never the same item twice in a chunk while others are left."""
        k = self.num_instances
        by_cam: dict[int, list[int]] = defaultdict(list)
        for i in idx:
            by_cam[self.camids[i]].append(i)
        cams = sorted(by_cam)
        rng.shuffle(cams)
        pools: dict[int, list[int]] = {c: [] for c in cams}
        chunks, turn = [], 0
        for _ in range(max(len(idx), k) // k):
            chunk: list[int] = []
            for _ in range(k):
                for _ in range(len(cams)):  # next camera in turn that still has an unused item
                    cam = cams[turn % len(cams)]
                    turn += 1
                    if not pools[cam]:
                        pools[cam] = rng.sample(by_cam[cam], len(by_cam[cam]))
                    fresh = [i for i in pools[cam] if i not in chunk]
                    if fresh:
                        pools[cam].remove(fresh[-1])
                        chunk.append(fresh[-1])
                        break
                else:  # fewer than K distinct items: repeat one, as the plain rule does
                    chunk.append(rng.choice(idx))
            chunks.append(chunk)
        return chunks

    def __iter__(self) -> Iterator[int]:
        for chunk in self.chunks():
            yield from chunk

    def __len__(self) -> int:
        return self.length
