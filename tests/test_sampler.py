"""The P×K identity sampler: batch composition, epoch length and determinism (spec §1.7)."""

from __future__ import annotations

from collections import Counter

import pytest
from torch.utils.data import BatchSampler

from reid.training.sampler import RandomIdentitySampler

# identity → number of items: 6, 2 (fewer than K), 4, 9
PIDS = [10] * 6 + [20] * 2 + [30] * 4 + [40] * 9
K = 4


def _chunks(order: list[int]) -> list[list[int]]:
    return [order[i:i + K] for i in range(0, len(order), K)]


def test_length_and_chunk_composition():
    s = RandomIdentitySampler(PIDS, num_instances=K, seed=1)
    # Σ floor(max(n, K)/K)·K = 4 + 4 + 4 + 8
    assert len(s) == 20
    order = list(s)
    assert len(order) == 20
    chunks = _chunks(order)
    # every chunk of K consecutive indices is one identity
    assert all(len({PIDS[i] for i in c}) == 1 for c in chunks)
    per_pid = Counter(PIDS[c[0]] for c in chunks)
    assert per_pid == {10: 1, 20: 1, 30: 1, 40: 2}
    for c in chunks:
        if PIDS[c[0]] == 20:  # drawn with replacement from its 2 items
            assert set(c) <= {6, 7}
        else:  # otherwise distinct items
            assert len(set(c)) == K
    # the 9-item identity's two chunks do not reuse an item
    forty = [i for c in chunks if PIDS[c[0]] == 40 for i in c]
    assert len(set(forty)) == 8


def test_batches_are_p_chunks_of_k():
    s = RandomIdentitySampler(PIDS, num_instances=K, seed=3)
    batches = list(BatchSampler(s, batch_size=2 * K, drop_last=True))  # P = 2
    assert len(batches) == 2 and all(len(b) == 8 for b in batches)
    for b in batches:
        assert all(len({PIDS[i] for i in c}) == 1 for c in _chunks(b))


def test_deterministic_per_seed_and_epoch():
    a, b = RandomIdentitySampler(PIDS, K, seed=1), RandomIdentitySampler(PIDS, K, seed=1)
    assert list(a) == list(b)
    first = list(a)
    orders = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        orders.add(tuple(a))
    assert len(orders) > 1  # reshuffled per epoch
    a.set_epoch(0)
    assert list(a) == first  # and reproducible (resume draws the same batches)


def test_bad_k():
    with pytest.raises(ValueError):
        RandomIdentitySampler(PIDS, num_instances=0)
