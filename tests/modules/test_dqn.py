"""DQN: learns the exact q* and optimal policy of Zhao's grid world (plain, Double, dueling); the
Huber/TD target by hand; the epsilon schedule and epsilon-greedy acting; truncation bootstraps and
termination does not; bad input; export, resume, load_from_checkpoint(weights_only=True), bf16-mixed,
2-process CPU DDP, the configs with train.py; slow: CartPole-v1 with rl-baselines3-zoo's hyperparameters."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch
from gymnasium import spaces

from litzoo.datamodules.gym import GymDataModule
from litzoo.envs import GridWorld, value_iteration
from litzoo.modules.dqn import DQN
from litzoo.rl.buffers import ReplayBatch
from litzoo.rl.policy import evaluate_policy, load_policy, space_to_spec

from dist_helpers import assert_clean_exit
from rl_helpers import CaptureStart, fit, run_train_py

REPO = Path(__file__).resolve().parents[2]
SMALL_GRID = dict(size=(3, 3), target=(2, 2), forbidden=((1, 1), (0, 2)))  # q* action gaps >= 0.54 at gamma 0.9



class RandomStartGridWorld(GridWorld):
    """The grid world with episodes starting in a uniformly random state (all states get visited)."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return super().reset(options={"state": int(self.np_random.integers(self.num_states))})


class OneState(gym.Env):
    """One state, two actions: reward 1 for action 0, 0 for action 1; ``terminate`` ends every step.

    Continuing (episodes only cut by a time limit): Q*(s, .) = (1, 0) + gamma V*, V* = 1 / (1 - gamma).
    Terminating: Q*(s, .) = (1, 0).
    """

    observation_space = spaces.Discrete(1)
    action_space = spaces.Discrete(2)

    def __init__(self, terminate: bool = False):
        self.terminate = terminate

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return 0, {}

    def step(self, action):
        return 0, float(action == 0), self.terminate, False, {}


def exact_q(gamma: float, **grid_kwargs) -> np.ndarray:
    """q*(s, a) = r(s, a) + gamma sum_s' p(s'|s, a) v*(s') from value iteration on the exact model."""
    P, R = GridWorld(**grid_kwargs).model()
    v, _ = value_iteration(P, R, gamma)
    return R + gamma * P @ v


def learned_q(module, num_states: int) -> np.ndarray:
    with torch.no_grad():
        return module.q_net(module.policy.encoder(torch.arange(num_states))).numpy()


def grid_dqn(steps: int, grid_kwargs: dict, **kwargs):
    """DQN on the grid world (gamma 0.9) from random starts, episodes truncated after 10 steps.

    The behaviour policy is uniform (epsilon = 1), as in Zhao's off-policy Q-learning examples: every
    (s, a) keeps being sampled, so q* is learnable everywhere (with epsilon 0.1 a rarely tried
    non-greedy action can keep a value 0.8 off, without changing the greedy policy).
    """
    defaults = dict(hidden_sizes=(64, 64), lr=1e-3, batch_size=128, buffer_size=5000, learning_starts=500, gamma=0.9,
                    train_freq=1, gradient_steps=1, target_update_interval=50, exploration_fraction=0.0,
                    exploration_final_eps=1.0, max_grad_norm=None, log_every_n_env_steps=500)
    module = DQN(**{**defaults, **kwargs})
    datamodule = GymDataModule(lambda: RandomStartGridWorld(max_episode_steps=10, **grid_kwargs), batches_per_epoch=steps)
    return module, datamodule


def assert_greedy_is_optimal(q: np.ndarray, q_star: np.ndarray) -> None:
    optimal = q_star >= q_star.max(axis=1, keepdims=True) - 1e-6  # the optimal action set (ties allowed)
    greedy = q.argmax(axis=1)
    wrong = np.flatnonzero(~optimal[np.arange(len(greedy)), greedy])
    assert wrong.size == 0, f"states {wrong.tolist()}: greedy {greedy[wrong]}, q* {q_star[wrong].round(3)}"


# ------------------------------------------------------------------------------------------ bad input
def test_box_action_space_raises_value_error_suggesting_ddpg():
    with pytest.raises(ValueError, match=r"DQN needs a Discrete action space.*Box\(shape=\(2,\).*DDPG or TD3.*litzoo\.modules\.ddpg"):
        DQN(observation_space=space_to_spec(spaces.Box(-1, 1, (3,))), action_space=space_to_spec(spaces.Box(-1, 1, (2,))))
    with pytest.raises(ValueError, match=r"Discrete action space.*Box\(shape=\(1,\), low=-2.0, high=2.0\)"):
        fit(DQN(), GymDataModule("Pendulum-v1", batches_per_epoch=1))


@pytest.mark.parametrize("kwargs, match", [
    ({"tau": 0.0}, r"tau=0.0 must be in \(0, 1\]"),
    ({"exploration_final_eps": 1.5}, r"exploration_final_eps=1.5 must be in \[0, 1\]"),
    ({"train_freq": 0}, "train_freq=0 must be a positive integer"),
    ({"huber_delta": -1.0}, "huber_delta=-1.0 must be a finite number > 0"),
    ({"total_env_steps": 0}, "total_env_steps=0"),
])
def test_invalid_hyperparameters_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DQN(**kwargs)


def test_an_unbounded_run_without_total_env_steps_says_how_to_set_the_epsilon_budget():
    module = DQN(observation_space=spaces.Box(-1, 1, (4,)), action_space=spaces.Discrete(2))
    with pytest.raises(ValueError, match="total_env_steps="):
        module.exploration_rate(10)


# ------------------------------------------------------------------------------------------ exact pieces
def test_td_loss_is_the_huber_loss_of_the_dqn_and_double_dqn_targets_computed_by_hand():
    obs_space, act_space = spaces.Box(-1, 1, (3,)), spaces.Discrete(4)
    plain = DQN(observation_space=obs_space, action_space=act_space, hidden_sizes=(8,), gamma=0.9, huber_delta=2.0)
    with torch.no_grad():  # a target network that differs from the online one, as between two syncs
        for p in plain.q_target.parameters():
            p.add_(torch.randn_like(p))
    double = DQN(observation_space=obs_space, action_space=act_space, hidden_sizes=(8,), gamma=0.9, huber_delta=2.0,
                 double_q=True)
    double.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(1)
    batch = ReplayBatch(torch.rand(8, 3, generator=g) * 2 - 1, torch.randint(4, (8,), generator=g),
                        torch.randn(8, generator=g) * 2, torch.rand(8, 3, generator=g) * 2 - 1,
                        torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    with torch.no_grad():
        q, q_next, q_next_target = (net(x).double().numpy() for net, x in ((plain.q_net, batch.obs),
                                    (plain.q_net, batch.next_obs), (plain.q_target, batch.next_obs)))
    r, d, a = batch.rewards.double().numpy(), batch.dones.double().numpy(), batch.actions.numpy()

    def huber(x, delta=2.0):
        return 0.5 * x * x if abs(x) <= delta else delta * (abs(x) - 0.5 * delta)

    y_dqn = [r[i] + 0.9 * (1 - d[i]) * max(q_next_target[i]) for i in range(8)]
    y_double = [r[i] + 0.9 * (1 - d[i]) * q_next_target[i][int(np.argmax(q_next[i]))] for i in range(8)]
    for module, y in ((plain, y_dqn), (double, y_double)):
        loss, q_sa, targets = module.td_loss(batch)
        errors = [q[i][a[i]] - y[i] for i in range(8)]
        torch.testing.assert_close(targets.double(), torch.tensor(y, dtype=torch.float64), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(q_sa.double(), torch.tensor([q[i][a[i]] for i in range(8)]), rtol=1e-6, atol=1e-6)
        assert loss.item() == pytest.approx(np.mean([huber(e) for e in errors]), rel=1e-6)
        assert any(abs(e) <= 2.0 for e in errors) and any(abs(e) > 2.0 for e in errors)  # both Huber branches
    assert targets[1] == batch.rewards[1] and targets[4] == batch.rewards[4]  # terminated: no bootstrap
    assert not np.allclose(y_dqn, y_double)  # the two targets really differ on this batch


def test_dueling_head_makes_the_state_value_the_mean_action_value():
    module = DQN(observation_space=spaces.Box(-1, 1, (3,)), action_space=spaces.Discrete(4), hidden_sizes=(16, 16),
                 dueling=True)
    net, x = module.q_net, torch.randn(32, 3)
    with torch.no_grad():
        h = net.trunk(x)
        advantage = net.advantage(h)
        torch.testing.assert_close(net(x), net.value(h) + advantage - advantage.mean(-1, keepdim=True))
        torch.testing.assert_close(net(x).mean(-1), net.value(h).squeeze(-1))  # V(s) = mean_a Q(s, a)


def test_epsilon_schedule_is_linear_over_the_exploration_fraction_then_constant():
    module = DQN(observation_space=spaces.Box(-1, 1, (4,)), action_space=spaces.Discrete(2),
                 exploration_initial_eps=1.0, exploration_final_eps=0.1, exploration_fraction=0.25, total_env_steps=1000)
    rates = [module.exploration_rate(t) for t in (0, 50, 125, 250, 251, 999, 5000)]
    assert rates == pytest.approx([1.0, 0.82, 0.55, 0.1, 0.1, 0.1, 0.1], abs=1e-12)
    constant = DQN(observation_space=spaces.Box(-1, 1, (4,)), action_space=spaces.Discrete(2), exploration_fraction=0.0,
                   exploration_final_eps=0.2)
    assert constant.exploration_rate(0) == constant.exploration_rate(10**6) == 0.2  # no budget needed


def test_total_env_steps_derived_from_the_trainer_is_where_the_run_ends():
    # max_steps = 51 gradient steps in blocks of 2 every 4 env steps from env step 100: the run ends at
    # 100 + 25 * 4 = 200 env steps, the schedule's budget T, after 1 step of the 26th block.
    module = DQN(hidden_sizes=(16,), learning_starts=100, train_freq=4, gradient_steps=2, batch_size=16,
                 exploration_fraction=1.0, exploration_final_eps=0.0, log_every_n_env_steps=50)
    trainer = fit(module, GymDataModule("CartPole-v1", batches_per_epoch=1000), max_steps=51)
    assert module._total_env_steps == module.env_steps == 200 and module.num_updates == 51 == trainer.global_step
    assert module.epsilon == module.exploration_rate(199) == pytest.approx(1 - 199 / 200)  # the last step's


@pytest.mark.parametrize("epsilon", [0.0, 0.5, 1.0])
def test_actions_are_greedy_with_probability_one_minus_epsilon(epsilon):
    # A fixed network (no training step runs), 2 envs: the stored actions agree with argmax Q on a
    # fraction 1 - eps + eps / A of the steps (A = 2 actions).
    datamodule = GymDataModule("CartPole-v1", num_envs=2)
    datamodule.setup("fit")
    env = datamodule.env
    module = DQN(*datamodule.space_specs(), hidden_sizes=(16,), learning_starts=0, train_freq=2000, batch_size=4,
                 exploration_fraction=0.0, exploration_final_eps=epsilon)
    env.reset(seed=0)
    next(module.generate_batches(env))  # collects 2000 env steps, then serves the first minibatch
    buffer = module._buffer
    with torch.no_grad():
        greedy = module.q_net(module.policy.encoder(buffer.obs[:2000])).argmax(-1)
    agreement = (buffer.actions[:2000] == greedy).float().mean().item()
    assert len(buffer) == module.env_steps == 2000
    assert agreement == pytest.approx(1 - epsilon / 2, abs=0.035)  # 3 standard errors at eps = 1
    datamodule.teardown("fit")


# ------------------------------------------------------------------------------------------ learning
def test_dqn_learns_the_exact_optimal_action_values_and_policy_of_the_book_grid_world(tmp_path):
    # Zhao's 5x5 grid world (gamma 0.9; q* in [4.0, 10.0], smallest gap between an optimal and a
    # non-optimal action 0.1). Episodes are cut after 10 steps, so reaching v*(target) = 10 also
    # needs the bootstrap through truncation. |Q - q*| < 0.05 everywhere already implies the policy.
    q_star = exact_q(0.9)
    module, datamodule = grid_dqn(4000, {})
    trainer = fit(module, datamodule)
    q = learned_q(module, 25)
    assert np.abs(q - q_star).max() < 0.03, np.abs(q - q_star).max()  # measured: 0.003
    assert_greedy_is_optimal(q, q_star)
    assert module.env_steps == 500 + 3999 and trainer.global_step == module.num_updates == 4000
    assert trainer.callback_metrics["train/epsilon"] == 1.0
    # the exported greedy policy acts the same without Lightning, on raw state indices
    module.export(tmp_path / "policy")
    policy = load_policy(tmp_path / "policy", env=GridWorld())
    np.testing.assert_array_equal(policy.predict(np.arange(25)), q.argmax(1))
    assert policy.predict(7) == q[7].argmax()


def test_double_dueling_dqn_learns_the_exact_q_and_optimal_policy_of_a_small_grid_world():
    # Both options at once (each one's math is checked exactly above); separately they learn as well
    # (measured, 1500 steps: max |Q - q*| 0.023 double, 0.017 dueling, 0.027 both).
    q_star = exact_q(0.9, **SMALL_GRID)
    module, datamodule = grid_dqn(1500, SMALL_GRID, lr=2e-3, learning_starts=200, target_update_interval=25,
                                  double_q=True, dueling=True)
    fit(module, datamodule)
    q = learned_q(module, 9)
    assert_greedy_is_optimal(q, q_star)
    assert np.abs(q - q_star).max() < 0.1, np.abs(q - q_star).max()  # measured: < 0.03


@pytest.mark.parametrize("terminate, q_star", [(False, [2.0, 1.0]), (True, [1.0, 0.0])])
def test_truncated_transitions_bootstrap_and_terminated_ones_do_not(terminate, q_star):
    # One-step episodes of OneState with gamma 0.5: cut by a time limit (truncated), the state keeps
    # its value V* = 2 and Q* = (1 + 1, 0 + 1); ended by the MDP (terminated), Q* = (1, 0).
    module = DQN(hidden_sizes=(16,), lr=1e-2, gamma=0.5, learning_starts=64, batch_size=64, target_update_interval=10,
                 train_freq=1, exploration_fraction=0.0, exploration_final_eps=1.0, max_grad_norm=None)
    datamodule = GymDataModule(lambda: OneState(terminate), batches_per_epoch=500,
                               max_episode_steps=None if terminate else 1)
    fit(module, datamodule)
    np.testing.assert_allclose(learned_q(module, 1)[0], q_star, atol=0.05)
    assert module._buffer.dones[: len(module._buffer)].eq(float(terminate)).all()


def test_dqn_learns_the_small_grid_world_in_bf16_mixed_precision():
    q_star = exact_q(0.9, **SMALL_GRID)
    module, datamodule = grid_dqn(1500, SMALL_GRID, lr=2e-3, learning_starts=200, target_update_interval=25)
    trainer = fit(module, datamodule, precision="bf16-mixed")
    assert math.isfinite(float(trainer.callback_metrics["train/loss"]))
    q = learned_q(module, 9)
    assert_greedy_is_optimal(q, q_star)
    assert np.abs(q - q_star).max() < 0.2, np.abs(q - q_star).max()  # bf16 spacing at 8..10 is 0.0625


# ------------------------------------------------------------------------------------------ export, checkpoints
def test_exported_dueling_policy_loads_without_lightning_and_takes_the_same_actions(tmp_path):
    module = DQN(observation_space=spaces.Box(-10, 10, (3,)), action_space=spaces.Discrete(4, start=-1),
                 hidden_sizes=(16, 16), dueling=True)
    module.export(tmp_path / "policy")
    policy = load_policy(tmp_path / "policy", action_space=spaces.Discrete(4, start=-1))
    obs = np.random.default_rng(0).uniform(-10, 10, (64, 3)).astype(np.float32)
    with torch.no_grad():
        expected = module.q_net(torch.from_numpy(obs)).argmax(-1).numpy() - 1  # the space starts at -1
    assert policy.kind == "greedy_q" and len(set(expected)) > 1
    np.testing.assert_array_equal(policy.predict(obs), expected)
    np.testing.assert_array_equal(module.policy.predict(obs), expected)
    assert policy.predict(obs[5]) == expected[5]
    config = json.loads((tmp_path / "policy" / "policy.json").read_text())
    assert config["actor"]["dueling"] is True and config["metadata"]["algorithm"] == "DQN"


def test_resume_continues_env_steps_networks_and_replay_buffer_and_checkpoint_loads_weights_only(tmp_path):
    def small():
        return DQN(hidden_sizes=(16, 16), learning_starts=64, train_freq=4, gradient_steps=2, batch_size=16,
                   save_replay_buffer=True, total_env_steps=1000, log_every_n_env_steps=50)

    module = small()
    # 13 batches = 13 blocks of 2 gradient steps, every 4 env steps from env step 64
    trainer = fit(module, GymDataModule("CartPole-v1", batches_per_epoch=13))
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    assert module.env_steps == 64 + 4 * 12 == 112 and module.num_updates == 26 == trainer.global_step

    loaded = DQN.load_from_checkpoint(ckpt, weights_only=True)
    assert loaded.env_steps == 112
    obs = np.random.default_rng(0).uniform(-1, 1, (16, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.policy.predict(obs), module.policy.predict(obs))

    resumed, capture = small(), CaptureStart()
    fit(resumed, GymDataModule("CartPole-v1", batches_per_epoch=13), max_epochs=2, callbacks=[capture], ckpt_path=ckpt)
    assert capture.env_steps == 112  # the count continues ...
    for key, value in module.state_dict().items():  # ... from the saved networks (target included)
        torch.testing.assert_close(capture.state[key], value)
    assert capture.buffer_size == 112 + 4  # the saved buffer, plus the env steps of the first new block
    assert resumed.env_steps == 64 + 4 * 25 and resumed.num_updates == 52


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lightning as L
    import torch
    from litzoo.datamodules.gym import GymDataModule
    from litzoo.modules.dqn import DQN

    torch.set_num_threads(1)
    out = sys.argv[1]

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if not hasattr(self, "seed"):
                self.seed = trainer.datamodule.env.seed
                self.first_obs = module._buffer.obs[0].tolist()
        def on_train_end(self, trainer, module):
            flat = torch.cat([p.detach().flatten() for p in module.parameters()])  # online and target
            record = {"seed": self.seed, "first_obs": self.first_obs, "env_steps": module.env_steps,
                      "updates": module.num_updates, "params": flat.tolist(),
                      "logged_env_steps": float(trainer.callback_metrics["time/env_steps"])}
            with open(f"{out}/rank{trainer.global_rank}.json", "w") as f:
                json.dump(record, f)

    module = DQN(hidden_sizes=(16, 16), learning_starts=32, train_freq=4, gradient_steps=2, batch_size=16,
                 target_update_interval=8, total_env_steps=200, log_every_n_env_steps=4)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                        callbacks=[Record()], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, GymDataModule("CartPole-v1", num_envs=2, batches_per_epoch=8))

    import atexit, torch.distributed as dist
    from dist_helpers import gloo_threads
    alive, threads = dist.is_initialized(), gloo_threads()
    atexit._run_exitfuncs()  # what the interpreter runs at exit: the module's hook destroys the gloo group
    with open(f"{out}/exit{trainer.global_rank}.json", "w") as f:
        json.dump({"alive_after_fit": alive, "alive_after_exit_hooks": dist.is_initialized(),
                   "gloo_threads_before": threads, "gloo_threads_after": gloo_threads()}, f)
    """
)


def test_two_process_cpu_ddp_ranks_explore_different_episodes_and_keep_identical_weights(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, cwd=REPO, timeout=300,
                          capture_output=True, text=True, env=env)
    assert_clean_exit(proc.stderr)
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["seed"] != rank1["seed"] and rank0["first_obs"] != rank1["first_obs"]  # different episodes
    # 16 batches = 16 blocks of 2 gradient steps every 4 env steps from env step 32 (2 envs per rank)
    assert rank0["env_steps"] == rank1["env_steps"] == 32 + 15 * 4 and rank0["updates"] == rank1["updates"] == 32
    np.testing.assert_array_equal(rank0["params"], rank1["params"])  # different data, averaged gradients
    assert rank0["logged_env_steps"] == 2 * 92  # env steps of both ranks
    for r in (0, 1):  # the gloo group outlives the fit and is destroyed at exit (its threads end), not in finalisation
        ended = json.loads((tmp_path / f"exit{r}.json").read_text())
        assert ended["alive_after_fit"] and not ended["alive_after_exit_hooks"]
        assert ended["gloo_threads_before"] > 0 and ended["gloo_threads_after"] == 0, ended


DDP_RESUME_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lightning as L
    import torch
    from litzoo.datamodules.gym import GymDataModule
    from litzoo.modules.dqn import DQN

    torch.set_num_threads(1)
    out, phase = sys.argv[1], sys.argv[2]

    class Recorded(DQN):
        def _init_generator(self):  # the stream a resumed rank starts from, before it draws anything
            super()._init_generator()
            self.first_generator_state = self._generator.get_state().tolist()

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if phase == "resume" and batch_idx == 0 and trainer.current_epoch == 1:
                buffer = module._buffer
                record = {"generator": module.first_generator_state, "obs": buffer.obs[:saved].tolist(),
                          "actions": buffer.actions[:saved].tolist()}
                with open(f"{out}/resumed{trainer.global_rank}.json", "w") as f:
                    json.dump(record, f)

    saved = 32 + 7 * 4  # env steps per rank after the first epoch: 8 blocks from env step 32
    module = Recorded(hidden_sizes=(16, 16), learning_starts=32, train_freq=4, gradient_steps=2, batch_size=16,
                      target_update_interval=8, total_env_steps=200, save_replay_buffer=True)
    trainer = L.Trainer(max_epochs=1 if phase == "first" else 2, accelerator="cpu", devices=2, strategy="ddp",
                        logger=False, callbacks=[Record()], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    datamodule = GymDataModule("CartPole-v1", num_envs=2, batches_per_epoch=8)
    if phase == "first":
        trainer.fit(module, datamodule)
        buffer = module._buffer
        record = {"generator": module._generator.get_state().tolist(), "size": len(buffer),
                  "obs": buffer.obs[:len(buffer)].tolist(), "actions": buffer.actions[:len(buffer)].tolist()}
        with open(f"{out}/saved{trainer.global_rank}.json", "w") as f:
            json.dump(record, f)
        trainer.save_checkpoint(f"{out}/ddp.ckpt")  # on every rank, as Lightning requires
    else:
        trainer.fit(module, datamodule, ckpt_path=f"{out}/ddp.ckpt")
    """
)


def test_a_two_process_ddp_resume_gives_every_rank_its_own_replay_buffer_and_random_stream(tmp_path):
    script = tmp_path / "ddp_resume.py"
    script.write_text(DDP_RESUME_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for phase in ("first", "resume"):
        subprocess.run([sys.executable, str(script), str(tmp_path), phase], check=True, cwd=REPO, timeout=300,
                       capture_output=True, env=env)
    saved = [json.loads((tmp_path / f"saved{r}.json").read_text()) for r in (0, 1)]
    resumed = [json.loads((tmp_path / f"resumed{r}.json").read_text()) for r in (0, 1)]
    assert saved[0]["size"] == saved[1]["size"] == 32 + 7 * 4  # transitions of both envs of a rank
    assert saved[0]["obs"] != saved[1]["obs"] and saved[0]["generator"] != saved[1]["generator"]
    for rank in (0, 1):  # each rank gets its own transitions and stream back, not rank 0's
        assert resumed[rank]["obs"] == saved[rank]["obs"] and resumed[rank]["actions"] == saved[rank]["actions"]
        assert resumed[rank]["generator"] == saved[rank]["generator"]


@pytest.mark.parametrize("config, env_id", [("dqn_cartpole.yaml", "CartPole-v1"), ("dqn_gridworld.yaml", "litzoo/GridWorld-v0")])
def test_config_trains_with_train_py_and_exports_a_loadable_policy(tmp_path, monkeypatch, config, env_id):
    export, last = run_train_py(monkeypatch, tmp_path, config, "--trainer.max_steps", "3", "--model.init_args.learning_starts", "50")
    policy = load_policy(export, env=gym.make(env_id))
    assert policy.kind == "greedy_q"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["litzoo_class"] == "litzoo.modules.dqn.DQN"
    assert checkpoint["litzoo_rl"]["env_steps"] >= 50
    assert (export.parent / "eval" / "reward_curve.png").is_file()


# ------------------------------------------------------------------------------------------ slow
class BestEvaluation(L.Callback):
    """Every ``every`` env steps: mean return of 10 greedy episodes; keeps the best and all of them."""

    def __init__(self, every: int):
        self.every, self.next, self.history = every, every, []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if module.env_steps >= self.next:
            self.next += self.every
            returns = evaluate_policy(module.policy, lambda: gym.make("CartPole-v1"), n_episodes=10, seed=10_000)
            self.history.append((module.env_steps, float(returns["returns"].mean())))


@pytest.mark.slow
def test_dqn_solves_cartpole_with_the_zoo_hyperparameters():
    # rl-baselines3-zoo dqn.yml, CartPole-v1: 5e4 env steps = 24576 gradient steps (blocks of 128 every
    # 256 env steps from env step 1024). With these hyperparameters DQN (SB3's too) reaches 500 and
    # then oscillates (measured, seed 0: SB3 500 at 5k steps and 19 at 50k; litzoo 500 at 45k and 145 at
    # 50k), so the test asks for the best of the evaluations every 5000 env steps, as RLEvaluation keeps it
    # (measured, seeds 0/1/2: best 500 each, reached at 45k/40k/25k env steps).
    module = DQN(hidden_sizes=(256, 256), lr=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000,
                 gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
                 exploration_final_eps=0.04, total_env_steps=50_000, log_every_n_env_steps=5000)
    evaluation = BestEvaluation(5000)
    fit(module, GymDataModule("CartPole-v1", batches_per_epoch=1000), max_steps=24_576, max_epochs=-1,
        callbacks=[evaluation])
    assert module.env_steps == 1024 + 191 * 256
    assert max(r for _, r in evaluation.history) >= 400, evaluation.history
