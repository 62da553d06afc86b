"""litzoo.rl.collect without Lightning: the runner's real final observations, truncation vs termination,
replay stepping and rollouts that bootstrap through truncation, env ids, and the envs' state for exact
resumes."""

import gymnasium as gym
import pytest
import torch

from litzoo.envs import GridWorld
from litzoo.rl.buffers import ReplayBuffer, RolloutBuffer
from litzoo.rl.collect import EnvRunner, check_env_id, collect_rollout, step_into_replay

from rl_helpers import Counter


def vector_env(make_env, num_envs: int) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv([make_env] * num_envs, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def runner(num_envs=1, max_episode_steps=3, **env_kwargs) -> EnvRunner:
    def make_env():
        env = Counter(**env_kwargs)
        return env if max_episode_steps is None else gym.wrappers.TimeLimit(env, max_episode_steps)

    env = EnvRunner(vector_env(make_env, num_envs))
    env.reset(seed=0)
    return env


def test_unregistered_env_id_raises_value_error_saying_how_to_register():
    with pytest.raises(ValueError, match=r"NoSuchEnv-v0.*not registered.*gymnasium\.register.*import the package"):
        check_env_id("NoSuchEnv-v0")
    with pytest.raises(ValueError, match=r"import mypkg"):
        check_env_id("MyPkg/NoSuchEnv-v0")
    check_env_id("litzoo/GridWorld-v0")  # litzoo's own envs are registered by importing litzoo.rl.collect


def test_runner_returns_the_real_final_observation_and_flags_truncation_not_termination():
    env = runner(max_episode_steps=3)
    action = torch.zeros(1, 1)
    for t in (1, 2):
        step = env.step(action)
        assert step.obs.item() == t and step.final_obs.item() == t and not step.truncated.item()
    step = env.step(action)  # the time limit ends the episode
    assert step.truncated.item() and not step.terminated.item()
    assert step.final_obs.item() == 3.0  # the real s_{t+1}
    assert step.obs.item() == 0.0 and env.obs.item() == 0.0  # already the next episode's first observation
    assert env.pop_episodes() == ([3.0], [3]) and env.pop_episodes() == ([], [])
    assert env.steps == 3


def test_runner_flags_termination_and_keeps_envs_independent():
    env = runner(num_envs=2, max_episode_steps=None, terminate_at=2)
    env.step(torch.zeros(2, 1))
    step = env.step(torch.zeros(2, 1))
    assert step.terminated.tolist() == [True, True] and step.truncated.tolist() == [False, False]
    assert step.final_obs[:, 0].tolist() == [2.0, 2.0] and step.obs[:, 0].tolist() == [0.0, 0.0]
    assert step.rewards.dtype == torch.float32 and step.obs.dtype == torch.float32


def test_runner_rejects_next_step_autoreset_vector_envs():
    envs = gym.vector.SyncVectorEnv([Counter])  # gymnasium's default NEXT_STEP mode
    with pytest.raises(ValueError, match="SAME_STEP"):
        EnvRunner(envs)


def test_step_into_replay_stores_the_final_observation_and_done_only_on_termination():
    env = runner(max_episode_steps=3)
    buffer = ReplayBuffer(10, (1,), (1,))
    for _ in range(3):
        step_into_replay(env, buffer, torch.zeros(1, 1), torch.zeros(1, 1))
    assert buffer.obs[:3, 0].tolist() == [0.0, 1.0, 2.0]
    assert buffer.next_obs[:3, 0].tolist() == [1.0, 2.0, 3.0]  # not the reset observation 0
    assert buffer.dones[:3].tolist() == [0.0, 0.0, 0.0]  # truncation is not termination


def test_collect_rollout_bootstraps_a_truncated_episode_from_its_final_observation():
    env = runner(max_episode_steps=3)
    buffer = RolloutBuffer(4, 1, (1,), (1,))
    value = lambda obs: 10.0 * obs[:, 0]  # V(s) = 10 * count  # noqa: E731

    def act(obs):
        return torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1)

    last_values = collect_rollout(env, buffer, act, value)
    assert buffer.obs[:, 0, 0].tolist() == [0.0, 1.0, 2.0, 0.0]
    assert buffer.values[:, 0].tolist() == [0.0, 10.0, 20.0, 0.0]  # V(s_t) of every stored step
    assert buffer.truncated[:, 0].tolist() == [False, False, True, False]
    assert buffer.final_values[2, 0].item() == 30.0  # V(final obs = 3), not V(reset obs = 0)
    assert last_values.tolist() == [10.0]  # V(s_T), s_T = 1
    gamma = 0.5
    _, returns = buffer.compute_returns_and_advantages(last_values, gamma, gae_lambda=1.0)
    # step 2 is cut by the time limit: 1 + gamma * V(3); step 3 bootstraps from V(s_T)
    torch.testing.assert_close(returns[:, 0], torch.tensor([1 + 0.5 * (1 + 0.5 * 16.0), 1 + 0.5 * 16.0, 16.0, 6.0]))


def test_collect_rollout_step_values_see_each_stored_observation_and_action():
    """QAC stores q(s_t, a_t): step_values gets the (T*N) stored observations and actions, in order."""
    env = runner(num_envs=2, max_episode_steps=10)
    buffer = RolloutBuffer(3, 2, (1,), (1,))

    def act(obs):
        actions = obs + 0.5  # a function of the state, so a mix-up of rows would show
        return actions, actions, torch.zeros(2)

    last_values = collect_rollout(env, buffer, act, lambda obs: -obs[:, 0],
                                  step_values=lambda obs, actions: 100 * obs[:, 0] + actions[:, 0])
    expected = 100 * buffer.obs[..., 0] + buffer.obs[..., 0] + 0.5
    assert buffer.obs[:, 0, 0].tolist() == [0.0, 1.0, 2.0]
    torch.testing.assert_close(buffer.values, expected)
    torch.testing.assert_close(last_values, -env.obs[:, 0])


def grid_runner(num_envs=2, max_episode_steps=5) -> EnvRunner:
    def make_env():
        return gym.wrappers.TimeLimit(GridWorld(obs_type="coords"), max_episode_steps)

    env = EnvRunner(vector_env(make_env, num_envs))
    env.reset(seed=3)
    return env


def test_runner_state_round_trip_continues_the_same_episodes_in_a_fresh_runner():
    actions = torch.randint(5, (12, 2), generator=torch.Generator().manual_seed(0))
    env = grid_runner()
    for a in actions[:4]:
        env.step(a)
    state = env.get_state()
    original = [env.step(a) for a in actions[4:]]  # crosses the TimeLimit of 5 steps
    restored = grid_runner()
    restored.step(actions[0])  # somewhere else, to be overwritten
    assert restored.set_state(state)
    for step, again in zip(original, (restored.step(a) for a in actions[4:])):
        for x, y in zip(step, again):
            assert torch.equal(x, y)
    assert any(step.truncated.any() for step in original)


def test_runner_state_is_refused_by_other_envs_and_absent_for_envs_without_get_state():
    state = grid_runner(max_episode_steps=5).get_state()
    other = grid_runner(num_envs=3)
    obs = other.obs.clone()
    assert not other.set_state(state) and torch.equal(other.obs, obs)  # another number of envs: unchanged
    bare = EnvRunner(vector_env(lambda: GridWorld(obs_type="coords"), 2))  # no TimeLimit around the grids
    bare.reset(seed=3)
    assert not bare.set_state(state)
    assert runner().get_state() is None  # Counter has no get_state()
