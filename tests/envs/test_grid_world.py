"""Dynamics, numbering, model and gymnasium conformance of Zhao's grid world; its state round trip (with a
TimeLimit) for exact resumes."""

import importlib
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import litzoo.envs
from litzoo.envs import GridWorld

UP, RIGHT, DOWN, LEFT, STAY = range(5)


def env_at(cell, **kwargs):
    env = GridWorld(**kwargs)
    env.reset(seed=0, options={"state": cell})
    return env


def test_states_are_numbered_row_major_with_row_zero_on_top():
    env = GridWorld(size=(3, 4), target=(2, 3), forbidden=())
    for row in range(3):
        for col in range(4):
            assert env.state_of((row, col)) == row * 4 + col
            assert env.cell_of(row * 4 + col) == (row, col)
    obs, info = env.reset(options={"state": (0, 3)})
    assert obs == 3 and info["cell"] == (0, 3)
    obs, *_ = env.step(DOWN)  # one row down = +cols in the numbering
    assert obs == 7
    obs, *_ = env.step(UP)
    assert obs == 3


@pytest.mark.parametrize("cell,action", [((0, 0), UP), ((0, 0), LEFT), ((4, 4), DOWN), ((4, 4), RIGHT), ((2, 4), RIGHT)])
def test_moving_into_the_boundary_keeps_the_agent_in_place_and_costs_r_boundary(cell, action):
    env = env_at(cell, r_boundary=-3.0, r_forbidden=-1.0)
    obs, reward, terminated, truncated, info = env.step(action)
    assert info["cell"] == cell and obs == env.state_of(cell)
    assert reward == -3.0
    assert not terminated and not truncated


def test_forbidden_cells_can_be_entered_and_entering_or_staying_costs_r_forbidden():
    env = env_at((0, 1), r_forbidden=-10.0)
    _, reward, _, _, info = env.step(DOWN)  # (1, 1) is forbidden in the book's 5x5 layout
    assert info["cell"] == (1, 1) and reward == -10.0
    _, reward, _, _, info = env.step(STAY)
    assert info["cell"] == (1, 1) and reward == -10.0
    _, reward, _, _, info = env.step(LEFT)  # leaving to an ordinary cell
    assert info["cell"] == (1, 0) and reward == 0.0


def test_reaching_and_staying_at_the_target_earns_r_target_without_ending_the_episode():
    env = env_at((4, 2), r_target=2.5)
    _, reward, terminated, _, info = env.step(UP)
    assert info["cell"] == (3, 2) and reward == 2.5 and not terminated
    for _ in range(3):
        _, reward, terminated, _, info = env.step(STAY)
        assert info["cell"] == (3, 2) and reward == 2.5 and not terminated


def test_terminate_at_target_ends_the_episode_on_arrival():
    env = env_at((4, 2), terminate_at_target=True)
    _, reward, terminated, truncated, _ = env.step(LEFT)
    assert not terminated
    _, _, terminated, _, _ = env.step(RIGHT)
    assert not terminated
    _, reward, terminated, truncated, _ = env.step(UP)
    assert terminated and not truncated and reward == 1.0


def test_episode_is_truncated_exactly_after_max_episode_steps_and_reset_restarts_the_count():
    env = GridWorld(max_episode_steps=5)
    for _ in range(2):
        obs, _ = env.reset()
        assert obs == 0
        for t in range(1, 6):
            _, _, terminated, truncated, _ = env.step(STAY)
            assert not terminated
            assert truncated == (t == 5)


def test_no_truncation_when_max_episode_steps_is_none():
    env = env_at((0, 0), max_episode_steps=None)
    assert not any(env.step(STAY)[3] for _ in range(1000))


@pytest.mark.parametrize("obs_type", ["index", "onehot", "coords"])
def test_passes_gymnasium_env_checker(obs_type):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test
        check_env(GridWorld(obs_type=obs_type), skip_render_check=True)


@pytest.mark.parametrize("render_mode", ["ansi", "rgb_array"])
def test_passes_gymnasium_env_checker_with_rendering(render_mode):
    env = gym.make("litzoo/GridWorld-v0", render_mode=render_mode).unwrapped  # has a spec: all modes get checked
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)


def test_observation_types_encode_the_same_state():
    for cell in [(0, 0), (2, 3), (4, 1)]:
        s = GridWorld().state_of(cell)
        onehot, _ = GridWorld(obs_type="onehot").reset(options={"state": cell})
        coords, _ = GridWorld(obs_type="coords").reset(options={"state": s})
        np.testing.assert_array_equal(onehot, np.eye(25, dtype=np.float32)[s])
        np.testing.assert_array_equal(coords, np.array(cell, dtype=np.float32))
        assert onehot.dtype == coords.dtype == np.float32


def test_model_rows_are_deterministic_probability_distributions():
    P, R = GridWorld().model()
    assert P.shape == (25, 5, 25) and R.shape == (25, 5)
    np.testing.assert_array_equal(P.sum(axis=2), np.ones((25, 5)))
    assert set(np.unique(P)) == {0.0, 1.0}


@pytest.mark.parametrize("kwargs", [{}, {"size": (3, 4), "target": (0, 3), "forbidden": ((1, 1),), "r_other": 0.25}])
def test_model_agrees_with_step_for_every_state_and_action(kwargs):
    env = GridWorld(**kwargs)
    P, R = env.model()
    for s in range(env.num_states):
        for a in range(env.num_actions):
            env.reset(options={"state": s})
            next_s, reward, *_ = env.step(a)
            assert P[s, a, next_s] == 1.0, (s, a)
            assert R[s, a] == reward, (s, a)


def test_registered_id_makes_the_env_and_reimport_does_not_register_twice():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(litzoo.envs)
    env = gym.make("litzoo/GridWorld-v0", size=(2, 2), target=(1, 1), forbidden=(), obs_type="onehot")
    assert env.unwrapped.max_episode_steps == 100 and env.spec.max_episode_steps is None  # no TimeLimit added
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [1, 0, 0, 0])
    env.step(RIGHT)
    obs, reward, _, _, _ = env.step(DOWN)
    np.testing.assert_array_equal(obs, [0, 0, 0, 1])
    assert reward == 1.0
    truncations = [env.step(STAY)[3] for _ in range(98)]
    assert truncations == [False] * 97 + [True]  # the env's own limit: 2 + 98 = 100 steps


def test_ansi_render_marks_agent_target_and_forbidden_cells():
    env = GridWorld(size=(2, 3), target=(1, 2), forbidden=((0, 1),), render_mode="ansi")
    env.reset()
    assert env.render() == "A#.\n..T\n"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"size": (0, 5)}, "size"),
        ({"size": 5}, "size"),
        ({"target": (5, 0)}, "target"),
        ({"start": (-1, 0)}, "start"),
        ({"forbidden": ((1, 1), (0, 7))}, r"forbidden\[1\]"),
        ({"target": (1, 1)}, "target"),  # (1, 1) is forbidden by default
        ({"r_target": float("nan")}, "r_target"),
        ({"max_episode_steps": 0}, "max_episode_steps"),
        ({"obs_type": "pixels"}, "obs_type"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_invalid_arguments_raise_value_errors_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GridWorld(**kwargs)


def test_step_rejects_actions_outside_the_action_space():
    env = env_at((0, 0))
    with pytest.raises(ValueError, match="action"):
        env.step(5)


class RandomStartGridWorld(GridWorld):
    """Episodes start in a random state drawn from ``np_random``, so a restored env must carry its generator."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return super().reset(options={"state": int(self.np_random.integers(self.num_states))})


def play(env, actions):
    """Observations, rewards and done flags for ``actions``, resetting where an episode ends."""
    out = []
    for a in actions:
        obs, reward, terminated, truncated, _ = env.step(int(a))
        out.append((np.asarray(obs).tolist(), reward, terminated, truncated))
        if terminated or truncated:
            out.append(("reset", np.asarray(env.reset()[0]).tolist()))
    return out


@pytest.mark.parametrize("obs_type", ["index", "coords"])
def test_get_state_set_state_round_trip_continues_identically(obs_type):
    actions = np.random.default_rng(0).integers(5, size=40)
    env = RandomStartGridWorld(obs_type=obs_type, max_episode_steps=7)
    env.reset(seed=1)
    play(env, actions[:5])
    state = env.get_state()
    expected = play(env, actions[5:])  # several episodes, each starting in a state drawn from np_random
    restored = RandomStartGridWorld(obs_type=obs_type, max_episode_steps=7)
    restored.reset(seed=99)  # another cell, step count and generator, all overwritten
    restored.set_state(state)
    assert play(restored, actions[5:]) == expected
    assert sum(row[0] == "reset" for row in expected) >= 4


def test_get_state_is_plain_data_that_survives_a_weights_only_checkpoint(tmp_path):
    import torch

    env = GridWorld()
    env.reset(seed=0)
    env.step(RIGHT)
    torch.save({"state": env.get_state()}, tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)["state"]
    assert state["cell"] == [0, 1] and state["elapsed_steps"] == 1 and state["np_random"] is not None
    with pytest.raises(ValueError, match=r'state\["cell"\].*outside the 5x5 grid'):
        env.set_state({**state, "cell": [7, 0]})


def test_get_env_state_carries_the_time_limit_of_a_made_env_through_set_env_state():
    def make():
        return gym.make("litzoo/GridWorld-v0", max_episode_steps=4)  # gymnasium's TimeLimit(4) around the grid

    env, restored = make(), make()
    env.reset(seed=0)
    env.step(RIGHT), env.step(RIGHT)
    state = litzoo.envs.get_env_state(env)
    assert state["time_limits"] == [2] and state["env"]["elapsed_steps"] == 2
    restored.reset(seed=5)
    litzoo.envs.set_env_state(restored, state)
    assert [restored.step(DOWN)[3] for _ in range(2)] == [False, True]  # truncated by the TimeLimit after 4 steps
    with pytest.raises(ValueError, match="TimeLimit"):
        litzoo.envs.set_env_state(GridWorld(), state)
