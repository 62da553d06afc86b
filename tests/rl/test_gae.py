"""GAE against its definition as a discounted sum of TD errors, and its lambda = 0 / 1 closed forms."""

import pytest
import torch

from litzoo.rl import compute_gae


def random_rollout(T=7, N=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, N, generator=g, dtype=torch.float64)
    values = torch.randn(T, N, generator=g, dtype=torch.float64)
    dones = torch.rand(T, N, generator=g) < 0.3  # dones[t]: s_t starts a new episode
    last_values = torch.randn(N, generator=g, dtype=torch.float64)
    last_dones = torch.rand(N, generator=g) < 0.3
    return rewards, values, dones, last_values, last_dones


def reference_gae(rewards, values, dones, last_values, last_dones, gamma, lam):
    """Straight from Schulman et al. 2016, Eq. 16: A_t = sum_l (gamma lam)^l delta_{t+l}, the sum running
    until the episode ends (no bootstrap across it) or the rollout ends (bootstrap with last_values)."""
    T, N = rewards.shape
    next_values = torch.cat([values[1:], last_values[None]])
    ends = torch.cat([dones[1:], last_dones[None]])  # step t ends an episode
    advantages = torch.zeros(T, N, dtype=torch.float64)
    for n in range(N):
        for t in range(T):
            total = 0.0
            for l in range(T - t):
                k = t + l
                delta = rewards[k, n] + (0.0 if ends[k, n] else gamma * next_values[k, n]) - values[k, n]
                total += (gamma * lam) ** l * delta
                if ends[k, n]:
                    break
            advantages[t, n] = total
    return advantages


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.5), (1.0, 1.0), (0.8, 0.0)])
def test_gae_matches_the_discounted_sum_of_td_errors(gamma, lam):
    rollout = random_rollout()
    advantages, returns = compute_gae(*rollout, gamma=gamma, gae_lambda=lam)
    expected = reference_gae(*rollout, gamma, lam)
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected + rollout[1])


def test_lambda_zero_gives_td0_errors_and_one_step_targets():
    rewards, values, dones, last_values, last_dones = random_rollout(seed=1)
    gamma = 0.9
    advantages, returns = compute_gae(rewards, values, dones, last_values, last_dones, gamma, 0.0)
    next_values = torch.cat([values[1:], last_values[None]])
    not_end = 1.0 - torch.cat([dones[1:], last_dones[None]]).double()
    torch.testing.assert_close(returns, rewards + gamma * not_end * next_values)
    torch.testing.assert_close(advantages, rewards + gamma * not_end * next_values - values)


def test_lambda_one_gives_bootstrapped_discounted_returns():
    # One env, T = 5, an episode ends after step 1 (dones[2] = 1); rollout ends mid-episode.
    gamma = 0.5
    rewards = torch.tensor([[1.0], [2.0], [4.0], [8.0], [16.0]], dtype=torch.float64)
    values = torch.tensor([[3.0], [-1.0], [0.5], [2.0], [7.0]], dtype=torch.float64)
    dones = torch.tensor([[0], [0], [1], [0], [0]], dtype=torch.bool)
    last_values = torch.tensor([10.0], dtype=torch.float64)
    _, returns = compute_gae(rewards, values, dones, last_values, torch.tensor([False]), gamma, 1.0)
    # First episode: G_1 = 2, G_0 = 1 + 0.5 * 2 = 2 (no bootstrap: it ended).
    # Second episode, bootstrapped with V(s_5) = 10: G_4 = 16 + 0.5 * 10 = 21, G_3 = 8 + 10.5 = 18.5,
    # G_2 = 4 + 9.25 = 13.25.
    torch.testing.assert_close(returns[:, 0], torch.tensor([2.0, 2.0, 13.25, 18.5, 21.0], dtype=torch.float64))
    # And if the rollout's last step ended an episode, the bootstrap value is ignored.
    _, returns = compute_gae(rewards, values, dones, last_values, torch.tensor([True]), gamma, 1.0)
    torch.testing.assert_close(returns[2:, 0], torch.tensor([4 + 0.5 * 8 + 0.25 * 16, 8 + 0.5 * 16, 16.0], dtype=torch.float64))


def test_dones_zero_is_never_used():
    rewards, values, dones, last_values, last_dones = random_rollout(seed=2)
    flipped = dones.clone()
    flipped[0] = ~flipped[0]
    a, _ = compute_gae(rewards, values, dones, last_values, last_dones, 0.99, 0.95)
    b, _ = compute_gae(rewards, values, flipped, last_values, last_dones, 0.99, 0.95)
    torch.testing.assert_close(a, b)


def test_outputs_carry_no_gradient():
    rewards, values, dones, last_values, last_dones = random_rollout()
    values.requires_grad_(True)
    advantages, returns = compute_gae(rewards, values, dones, last_values, last_dones, 0.99, 0.95)
    assert not advantages.requires_grad and not returns.requires_grad


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda r: r._replace(values=r.values[:-1]), "share one"),
        (lambda r: r._replace(last_values=r.last_values[:-1]), "last_values"),
    ],
)
def test_mismatched_shapes_raise_value_error(change, match):
    from collections import namedtuple

    Rollout = namedtuple("Rollout", "rewards values dones last_values last_dones")
    rollout = change(Rollout(*random_rollout()))
    with pytest.raises(ValueError, match=match):
        compute_gae(*rollout, gamma=0.99, gae_lambda=0.95)


@pytest.mark.parametrize("gamma,lam,match", [(1.5, 0.9, "gamma"), (0.99, -0.1, "gae_lambda")])
def test_out_of_range_gamma_or_lambda_raises_value_error(gamma, lam, match):
    with pytest.raises(ValueError, match=match):
        compute_gae(*random_rollout(), gamma=gamma, gae_lambda=lam)


def test_compute_gae_accepts_bfloat16_inputs_and_returns_float32():
    rewards = torch.tensor([[1.0], [2.0]], dtype=torch.bfloat16)
    values = torch.tensor([[0.5], [0.25]], dtype=torch.bfloat16)
    dones = torch.zeros(2, 1, dtype=torch.bool)
    advantages, returns = compute_gae(rewards, values, dones, torch.tensor([1.0]), torch.tensor([False]), 0.5, 1.0)
    assert advantages.dtype == torch.float32
    # R_1 = 2 + 0.5 * 1 = 2.5, R_0 = 1 + 0.5 * 2.5 = 2.25
    torch.testing.assert_close(returns[:, 0], torch.tensor([2.25, 2.5]))
