"""Identity-balanced P×K batches (spec §1.7): each identity's items are shuffled and cut into
chunks of K (sampling with replacement when it has fewer than K); chunks are shuffled globally and
concatenated, so one batch of P·K holds P chunks."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class RandomIdentitySampler(Sampler[int]):
    def __init__(self, pids: Sequence[int], num_instances: int = 4, seed: int = 1):
        if num_instances < 1:
            raise ValueError("num_instances must be ≥ 1")
        self.num_instances = num_instances
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
            if len(idx) < k:
                idx = rng.choices(idx, k=k)
            rng.shuffle(idx)
            chunks += [idx[i:i + k] for i in range(0, len(idx) - k + 1, k)]
        rng.shuffle(chunks)
        return chunks

    def __iter__(self) -> Iterator[int]:
        for chunk in self.chunks():
            yield from chunk

    def __len__(self) -> int:
        return self.length
