"""Tests for litzoo/reasoning/sampling.py: curriculum and prioritised problem sampling."""

import pytest
import torch

from litzoo.reasoning.sampling import PrioritizedSampler, curriculum_level_weights


def _sampler_with_success(rates, attempts=4):
    sampler = PrioritizedSampler(len(rates))
    for i, rate in enumerate(rates):
        successes = round(rate * attempts)
        sampler.update([i] * attempts, [1.0] * successes + [0.0] * (attempts - successes))
    return sampler


def test_prioritized_frequencies_are_proportional_to_one_minus_success_rate():
    sampler = _sampler_with_success([0.0, 0.25, 0.5, 0.75, 1.0])
    assert sampler.success_rate.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    n = 200_000
    draws = sampler.sample(n, torch.Generator().manual_seed(0), replacement=True)
    freq = torch.bincount(draws, minlength=5).double() / n
    expected = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64) / 2.5
    # binomial standard error is at most sqrt(0.25 / n) ~ 0.0011; allow 4 of them
    assert (freq - expected).abs().max() < 0.0045
    assert freq[4] == 0  # a solved problem is never drawn with min_weight = 0


def test_base_weights_multiply_the_priorities_and_unattempted_problems_count_as_unsolved():
    sampler = _sampler_with_success([0.5, 0.0, 0.0])
    sampler.attempts[2] = 0  # problem 2 never attempted: s = 0, weight 1
    sampler.successes[2] = 0
    base = torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64)
    draws = sampler.sample(100_000, torch.Generator().manual_seed(1), base_weights=base)
    freq = torch.bincount(draws, minlength=3).double() / 100_000
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.0, 3.0], dtype=torch.float64) / 3.5, atol=0.005, rtol=0)


def test_all_solved_falls_back_to_base_weights_and_min_weight_keeps_solved_problems_alive():
    sampler = _sampler_with_success([1.0, 1.0])
    assert set(sampler.sample(50, torch.Generator().manual_seed(0)).tolist()) == {0, 1}
    floored = PrioritizedSampler(2, min_weight=0.1)
    floored.update([0, 1], [1.0, 0.0])
    assert floored.weights().tolist() == [0.1, 1.0]


def test_decay_forgets_old_failures():
    plain, decayed = PrioritizedSampler(1), PrioritizedSampler(1, decay=0.5)
    for s in [0.0] * 6 + [1.0] * 3:
        plain.update([0], [s])
        decayed.update([0], [s])
    assert plain.success_rate.item() == pytest.approx(3 / 9)
    # discounted: successes 1 + .5 + .25 = 1.75 over attempts sum_{i<9} .5^i
    assert decayed.success_rate.item() == pytest.approx(1.75 / sum(0.5**i for i in range(9)))


def test_sampling_without_replacement_gives_distinct_problems():
    sampler = PrioritizedSampler(10)
    draws = sampler.sample(10, torch.Generator().manual_seed(0), replacement=False)
    assert sorted(draws.tolist()) == list(range(10))


def test_state_dict_round_trip_and_size_mismatch_error():
    sampler = _sampler_with_success([0.5, 0.25])
    other = PrioritizedSampler(2)
    other.load_state_dict(sampler.state_dict())
    assert other.success_rate.tolist() == [0.5, 0.25]
    with pytest.raises(ValueError, match="same datamodule settings"):
        PrioritizedSampler(3).load_state_dict(sampler.state_dict())


def test_update_validates_ids():
    with pytest.raises(ValueError, match=r"problem ids must be in \[0, 2\)"):
        PrioritizedSampler(2).update([2], [1.0])
    with pytest.raises(ValueError, match="success values"):
        PrioritizedSampler(2).update([0, 1], [1.0])


def test_curriculum_unlocks_levels_from_easy_to_hard():
    assert curriculum_level_weights([3, 1, 2], 0.0) == {1: 1.0, 2: 0.0, 3: 0.0}
    assert curriculum_level_weights([1, 2, 3], 0.34) == {1: 0.5, 2: 0.5, 3: 0.0}
    assert curriculum_level_weights([1, 2, 3], 0.7) == {1: 1 / 3, 2: 1 / 3, 3: 1 / 3}
    assert curriculum_level_weights([1, 2, 3], 5.0) == {1: 1 / 3, 2: 1 / 3, 3: 1 / 3}
    with pytest.raises(ValueError, match="empty"):
        curriculum_level_weights([], 0.5)
