"""Replay and rollout buffers: storage order, sampling, checkpointing, termination vs truncation."""

import io

import numpy as np
import pytest
import torch

from litzoo.rl import ReplayBuffer, RolloutBuffer


def fill(buffer, steps, num_envs, start=0):
    """Add `steps` vector steps whose transition id k (obs = [k, -k], action = k, reward = k) counts up."""
    for step in range(steps):
        ids = torch.arange(num_envs, dtype=torch.float32) + start + step * num_envs
        obs = torch.stack([ids, -ids], dim=1)
        buffer.add(obs, ids[:, None], ids, obs + 0.5, torch.zeros(num_envs, dtype=torch.bool), torch.zeros(num_envs, dtype=torch.bool))


def test_replay_buffer_overwrites_the_oldest_transitions_first():
    buffer = ReplayBuffer(capacity=5, obs_shape=(2,), action_shape=(1,), num_envs=2)
    fill(buffer, steps=2, num_envs=2)
    assert len(buffer) == 4 and not buffer.full
    fill(buffer, steps=2, num_envs=2, start=4)  # ids 4..7; 5 and 6 wrap around to rows 0 and 1
    assert len(buffer) == 5 and buffer.full
    assert sorted(buffer.rewards.tolist()) == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert buffer.rewards.tolist() == [5.0, 6.0, 7.0, 3.0, 4.0]
    # every stored field stays aligned row by row
    torch.testing.assert_close(buffer.obs[:, 0], buffer.rewards)
    torch.testing.assert_close(buffer.next_obs[:, 1], -buffer.rewards + 0.5)
    torch.testing.assert_close(buffer.actions[:, 0], buffer.rewards)


def test_replay_buffer_samples_batches_of_the_right_shape_from_filled_rows_only():
    buffer = ReplayBuffer(capacity=100, obs_shape=(2,), action_shape=(1,), num_envs=4)
    fill(buffer, steps=3, num_envs=4)  # 12 of 100 rows used
    batch = buffer.sample(256, generator=torch.Generator().manual_seed(0))
    assert batch.obs.shape == batch.next_obs.shape == (256, 2)
    assert batch.actions.shape == (256, 1)
    assert batch.rewards.shape == batch.dones.shape == (256,)
    assert batch.dones.dtype == torch.float32
    assert set(batch.rewards.tolist()) <= set(range(12))
    assert len(set(batch.rewards.tolist())) == 12  # uniform over all filled rows (256 draws)
    torch.testing.assert_close(batch.obs[:, 0], batch.rewards)


def test_replay_buffer_sampling_is_reproducible_with_a_generator():
    buffer = ReplayBuffer(capacity=50, obs_shape=(2,), action_shape=(1,), num_envs=1)
    fill(buffer, steps=20, num_envs=1)
    a = buffer.sample(16, generator=torch.Generator().manual_seed(3))
    b = buffer.sample(16, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.obs, b.obs)


def test_replay_buffer_state_dict_round_trip_through_torch_save():
    buffer = ReplayBuffer(capacity=8, obs_shape=(2,), action_shape=(1,), num_envs=2)
    fill(buffer, steps=5, num_envs=2)  # wrapped: pos = 2
    blob = io.BytesIO()
    torch.save(buffer.state_dict(), blob)
    blob.seek(0)
    restored = ReplayBuffer(capacity=8, obs_shape=(2,), action_shape=(1,), num_envs=2)
    restored.load_state_dict(torch.load(blob))
    assert len(restored) == len(buffer) and restored.pos == buffer.pos == 2
    for name in ("obs", "actions", "rewards", "next_obs", "dones"):
        torch.testing.assert_close(getattr(restored, name), getattr(buffer, name))
    # both continue identically
    fill(buffer, steps=1, num_envs=2, start=100)
    fill(restored, steps=1, num_envs=2, start=100)
    torch.testing.assert_close(restored.rewards, buffer.rewards)


def test_replay_buffer_state_dict_of_a_partly_filled_buffer_holds_only_filled_rows():
    buffer = ReplayBuffer(capacity=1000, obs_shape=(2,), action_shape=(1,))
    fill(buffer, steps=3, num_envs=1)
    state = buffer.state_dict()
    assert state["obs"].shape == (3, 2)
    restored = ReplayBuffer(capacity=1000, obs_shape=(2,), action_shape=(1,))
    restored.load_state_dict(state)
    assert len(restored) == 3 and restored.rewards[:3].tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(capacity=10, obs_shape=(2,), action_shape=(1,)).load_state_dict(state)
    with pytest.raises(ValueError, match="obs"):
        ReplayBuffer(capacity=1000, obs_shape=(3,), action_shape=(1,)).load_state_dict(state)


def test_replay_buffer_stores_termination_as_done_so_truncated_transitions_bootstrap():
    # Env 0 is truncated by a time limit, env 1 reaches a terminal state, env 2 goes on.
    buffer = ReplayBuffer(capacity=3, obs_shape=(1,), action_shape=(), num_envs=3, action_dtype=torch.long)
    final_obs = torch.tensor([[5.0], [6.0], [7.0]])  # the real observations the step led to
    buffer.add(
        obs=torch.zeros(3, 1), action=np.array([0, 1, 2]), reward=np.ones(3), next_obs=final_obs,
        terminated=np.array([False, True, False]), truncated=np.array([True, False, False]),
    )
    assert buffer.dones.tolist() == [0.0, 1.0, 0.0]
    # The TD target y = r + gamma (1 - done) V(next_obs), with V(s) = s, bootstraps through truncation only.
    gamma = 0.9
    targets = buffer.rewards + gamma * (1 - buffer.dones) * buffer.next_obs[:, 0]
    torch.testing.assert_close(targets, torch.tensor([1 + 0.9 * 5, 1.0, 1 + 0.9 * 7]))
    assert buffer.actions.dtype == torch.long and buffer.actions.tolist() == [0, 1, 2]


def test_replay_buffer_keeps_real_final_observations_from_a_same_step_autoreset_vector_env():
    import gymnasium as gym

    import litzoo.envs  # noqa: F401  (registers litzoo/GridWorld-v0)

    # Env 0 walks right into the target at (0, 2) and terminates after 2 steps; env 1 walks down
    # and is truncated after 3 steps at (3, 0). Both are reset to (0, 0) in the same step.
    envs = gym.make_vec(
        "litzoo/GridWorld-v0", num_envs=2, vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        target=(0, 2), terminate_at_target=True, max_episode_steps=3, obs_type="coords",
    )
    buffer = ReplayBuffer(capacity=6, obs_shape=(2,), action_shape=(), num_envs=2, action_dtype=torch.long)
    obs, _ = envs.reset(seed=0)
    for _ in range(3):
        actions = np.array([1, 2])  # right, down
        next_obs, rewards, terminated, truncated, info = envs.step(actions)
        real_next_obs = next_obs.copy()
        for i in np.flatnonzero(info.get("_final_obs", [])):
            real_next_obs[i] = info["final_obs"][i]
        buffer.add(obs, actions, rewards, real_next_obs, terminated, truncated)
        obs = next_obs
    # rows: (t0, env0), (t0, env1), (t1, env0), (t1, env1), (t2, env0), (t2, env1)
    assert buffer.next_obs.tolist() == [[0, 1], [1, 0], [0, 2], [2, 0], [0, 1], [3, 0]]
    assert buffer.obs.tolist() == [[0, 0], [0, 0], [0, 1], [1, 0], [0, 0], [2, 0]]
    assert buffer.dones.tolist() == [0, 0, 1, 0, 0, 0]  # the truncated row (last) still bootstraps
    assert buffer.rewards.tolist() == [0, 0, 1, 0, 0, 0]
    envs.close()


def test_replay_buffer_drops_invalid_rows_and_accepts_unbatched_single_env_input():
    buffer = ReplayBuffer(capacity=10, obs_shape=(2,), action_shape=(1,), num_envs=3)
    ids = torch.tensor([0.0, 1.0, 2.0])
    obs = torch.stack([ids, ids], 1)
    buffer.add(obs, ids[:, None], ids, obs, torch.zeros(3), torch.zeros(3), valid=torch.tensor([True, False, True]))
    assert len(buffer) == 2 and buffer.rewards[:2].tolist() == [0.0, 2.0]

    single = ReplayBuffer(capacity=4, obs_shape=(2,), action_shape=(1,))
    single.add(np.array([1.0, 2.0]), np.array([0.5]), 3.0, np.array([1.5, 2.5]), False, True)
    assert len(single) == 1 and single.rewards[0] == 3.0 and single.obs[0].tolist() == [1.0, 2.0]


def test_replay_buffer_rejects_bad_shapes_and_empty_sampling():
    buffer = ReplayBuffer(capacity=10, obs_shape=(2,), action_shape=(1,), num_envs=2)
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(4)
    with pytest.raises(ValueError, match="obs has shape"):
        buffer.add(torch.zeros(3, 2), torch.zeros(2, 1), torch.zeros(2), torch.zeros(2, 2), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(capacity=1, obs_shape=(2,), action_shape=(1,), num_envs=2)


# ---------------------------------------------------------------------------------------- rollout
def rollout_buffer(T=3, N=2):
    return RolloutBuffer(num_steps=T, num_envs=N, obs_shape=(1,), action_shape=())


def test_rollout_buffer_bootstraps_truncated_steps_with_final_values_but_not_terminated_ones():
    # Env 0: truncated at t = 1 with V(final_obs) = 10, then a new episode.
    # Env 1: terminated at t = 1 (final_values given but must be ignored), then a new episode.
    gamma = 0.5
    buffer = rollout_buffer()
    zeros = torch.zeros(2)
    buffer.add(torch.zeros(2, 1), zeros, zeros, values=zeros, rewards=torch.tensor([1.0, 1.0]),
               terminated=torch.tensor([False, False]), truncated=torch.tensor([False, False]))
    buffer.add(torch.zeros(2, 1), zeros, zeros, values=zeros, rewards=torch.tensor([2.0, 2.0]),
               terminated=torch.tensor([False, True]), truncated=torch.tensor([True, False]),
               final_values=torch.tensor([10.0, 99.0]))
    buffer.add(torch.zeros(2, 1), zeros, zeros, values=zeros, rewards=torch.tensor([4.0, 4.0]),
               terminated=torch.tensor([False, False]), truncated=torch.tensor([False, False]))
    _, returns = buffer.compute_returns_and_advantages(last_values=torch.tensor([8.0, 8.0]), gamma=gamma, gae_lambda=1.0)
    # env 0: G_1 = 2 + 0.5 * 10 = 7, G_0 = 1 + 0.5 * 7 = 4.5, G_2 = 4 + 0.5 * 8 = 8
    # env 1: G_1 = 2 (terminal), G_0 = 1 + 0.5 * 2 = 2, G_2 = 8
    torch.testing.assert_close(returns, torch.tensor([[4.5, 2.0], [7.0, 2.0], [8.0, 8.0]]))
    assert buffer.rewards[1].tolist() == [2.0, 2.0]  # raw rewards are kept for logging


def test_rollout_buffer_does_not_bootstrap_steps_both_terminated_and_truncated():
    buffer = rollout_buffer(T=1, N=1)
    buffer.add(torch.zeros(1, 1), 0.0, 0.0, values=0.0, rewards=1.0, terminated=True, truncated=True,
               final_values=float("nan"))
    _, returns = buffer.compute_returns_and_advantages(torch.tensor([5.0]), gamma=0.9, gae_lambda=0.95)
    assert returns.tolist() == [[1.0]]


def test_rollout_buffer_requires_final_values_when_an_env_is_truncated():
    buffer = rollout_buffer()
    with pytest.raises(ValueError, match="final_values"):
        buffer.add(torch.zeros(2, 1), torch.zeros(2), torch.zeros(2), torch.zeros(2), torch.ones(2),
                   terminated=torch.tensor([False, False]), truncated=torch.tensor([False, True]))


def test_rollout_buffer_advantages_are_returns_minus_values_and_match_a_td0_hand_computation():
    gamma = 0.9
    buffer = rollout_buffer(T=2, N=1)
    buffer.add(torch.zeros(1, 1), 0.0, -0.3, values=1.0, rewards=0.5, terminated=False, truncated=False)
    buffer.add(torch.zeros(1, 1), 1.0, -0.7, values=2.0, rewards=1.5, terminated=False, truncated=False)
    advantages, returns = buffer.compute_returns_and_advantages(torch.tensor([3.0]), gamma=gamma, gae_lambda=0.0)
    # TD(0): A_0 = 0.5 + 0.9 * 2 - 1 = 1.3, A_1 = 1.5 + 0.9 * 3 - 2 = 2.2
    torch.testing.assert_close(advantages[:, 0], torch.tensor([1.3, 2.2]))
    torch.testing.assert_close(returns, advantages + buffer.values)


def test_rollout_buffer_get_yields_every_step_once_in_shuffled_minibatches():
    T, N = 4, 3
    buffer = RolloutBuffer(num_steps=T, num_envs=N, obs_shape=(2,), action_shape=(1,))
    for t in range(T):
        ids = torch.arange(N, dtype=torch.float32) + t * N
        buffer.add(torch.stack([ids, ids], 1), ids[:, None], ids, ids, torch.zeros(N),
                   torch.zeros(N, dtype=torch.bool), torch.zeros(N, dtype=torch.bool))
    buffer.compute_returns_and_advantages(torch.zeros(N), gamma=0.99, gae_lambda=0.95)
    (full,) = list(buffer.get())
    assert full.obs.shape == (12, 2) and full.actions.shape == (12, 1)
    assert full.log_probs.tolist() == list(range(12))  # time-major flattening
    batches = list(buffer.get(batch_size=5, generator=torch.Generator().manual_seed(0)))
    assert [len(b.log_probs) for b in batches] == [5, 5, 2]
    seen = torch.cat([b.log_probs for b in batches])
    assert sorted(seen.tolist()) == list(range(12)) and seen.tolist() != list(range(12))
    for b in batches:  # fields stay aligned after shuffling
        torch.testing.assert_close(b.obs[:, 0], b.log_probs)
        torch.testing.assert_close(b.values, b.log_probs)


def test_rollout_buffer_guards_its_life_cycle():
    buffer = rollout_buffer(T=1, N=1)
    with pytest.raises(ValueError, match="fill it"):
        buffer.compute_returns_and_advantages(torch.zeros(1), 0.99, 0.95)
    buffer.add(torch.zeros(1, 1), 0.0, 0.0, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="compute_returns_and_advantages"):
        next(buffer.get())
    with pytest.raises(ValueError, match="full"):
        buffer.add(torch.zeros(1, 1), 0.0, 0.0, 0.0, 0.0, False, False)
    buffer.reset()
    assert buffer.step == 0 and not buffer.full


def test_rollout_buffer_values_given_later_with_set_values_give_the_same_returns():
    """values=None per step + one set_values((T, N)) = the values passed step by step; forgetting it is an error."""
    gamma, lam = 0.9, 0.8
    rewards, values = torch.tensor([[1.0, -1.0], [0.5, 2.0]]), torch.tensor([[0.3, 0.1], [-0.2, 0.7]])
    terminated = torch.tensor([[False, True], [False, False]])
    per_step, deferred = rollout_buffer(T=2, N=2), rollout_buffer(T=2, N=2)
    for t in range(2):
        args = (torch.zeros(2, 1), torch.zeros(2), torch.zeros(2))
        per_step.add(*args, values[t], rewards[t], terminated[t], torch.zeros(2, dtype=torch.bool))
        deferred.add(*args, None, rewards[t], terminated[t], torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="set_values"):
        deferred.compute_returns_and_advantages(torch.zeros(2), gamma, lam)
    with pytest.raises(ValueError, match=r"expected \(num_steps, num_envs\) = \(2, 2\)"):
        deferred.set_values(values.flatten())
    deferred.set_values(values)
    expected = per_step.compute_returns_and_advantages(torch.tensor([1.0, 2.0]), gamma, lam)
    for got, want in zip(deferred.compute_returns_and_advantages(torch.tensor([1.0, 2.0]), gamma, lam), expected):
        torch.testing.assert_close(got, want)
