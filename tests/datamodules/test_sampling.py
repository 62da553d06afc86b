"""Tests for litzoo/datamodules/sampling.py."""

import torch

from litzoo.datamodules.sampling import LengthGroupedSampler


def test_length_grouped_sampler_yields_each_index_once_in_length_sorted_batches():
    lengths = [(7 * i) % 97 + 3 for i in range(203)]
    sampler = LengthGroupedSampler(lengths, batch_size=8, group_batches=5, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(203)) and len(sampler) == 203
    batches = [order[j:j + 8] for j in range(0, 200, 8)]  # 25 full batches, then 3 leftovers
    for batch in batches:  # each batch is a run of one length-sorted window of 40
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)
    # Padded cost sum(batch * max length) is far below a plain shuffle's (same seed and epoch).
    cost = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)  # noqa: E731
    plain = torch.randperm(203, generator=torch.Generator().manual_seed(3 * 100_003)).tolist()
    assert cost(batches) < 0.75 * cost([plain[j:j + 8] for j in range(0, 200, 8)])
    assert list(LengthGroupedSampler(lengths, 8, 5, seed=3)) == order  # seeded: a resume repeats it
    sampler.set_epoch(1)
    assert list(sampler) != order
