"""ValueFunctionApproximation (Zhao Ch. 8) on the book's 5x5 grid world, checked against exact values:
TD-linear with one-hot features = tabular TD reaches v_pi; with polynomial / Fourier features it reaches
the TD fixed point w* = (Phi^T D (I - gamma P_pi) Phi)^-1 Phi^T D r_pi (computed here in numpy), whose
error to v_pi falls as the order grows; Q-learning and Sarsa find optimal policies (exact policy
evaluation of the greedy policy vs value iteration); bad input; checkpoints; a run resumed after a crash
is bit-identical to an uninterrupted one; 2-process CPU DDP is the single-process update on both ranks'
transitions; plot; the config."""

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from litzoo.datamodules.gym import GymDataModule
from litzoo.envs import GridWorld, policy_evaluation
from litzoo.modules.value_function_approximation import ValueFunctionApproximation
from litzoo.rl.features import make_features

from rl_helpers import CaptureStart, fit

REPO = Path(__file__).resolve().parents[2]
GAMMA = 0.9


def uniform_policy_model():
    """P_pi, r_pi, v_pi of the uniform random policy on the book's grid, and its stationary distribution."""
    P, R = GridWorld().model()
    S, A = R.shape
    pi = np.full((S, A), 1.0 / A)
    P_pi, r_pi = np.einsum("sa,sat->st", pi, P), (pi * R).sum(1)
    eigvals, eigvecs = np.linalg.eig(P_pi.T)
    d = np.real(eigvecs[:, np.argmin(np.abs(eigvals - 1.0))])
    return P_pi, r_pi, policy_evaluation(P, R, pi, GAMMA), d / d.sum()


def td_fixed_point(Phi, P_pi, r_pi, d):
    """w* solving the projected Bellman equation Phi^T D (I - gamma P_pi) Phi w = Phi^T D r_pi (S&B 9.12)."""
    D = np.diag(d)
    return np.linalg.solve(Phi.T @ D @ (np.eye(len(d)) - GAMMA * P_pi) @ Phi, Phi.T @ D @ r_pi)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, match", [
    ({"algorithm": "dqn"}, r"algorithm='dqn' is not one of \('td_linear', 'sarsa', 'q_learning'\)"),
    ({"features": "rbf"}, r"features='rbf' is not supported; choose one of \['onehot'"),
    ({"policy": "greedy"}, r"policy='greedy' is not one of \('uniform', 'optimal'\)"),
    ({"gamma": 1.0}, r"gamma=1.0 must be in \[0, 1\)"),
    ({"alpha": 0.0}, "alpha=0.0 must be a finite number > 0"),
    ({"epsilon": 1.5}, r"epsilon=1.5 must be in \[0, 1\]"),
    ({"n_steps": 0}, "n_steps=0 must be a positive integer"),
    ({"policy": [[1.0, 0.0]], "grid_size": (1, 1), "num_actions": 5}, r"S x A = 1 x 5 matrix"),
])
def test_invalid_hyperparameters_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ValueFunctionApproximation(**kwargs)


def test_a_non_grid_world_env_raises_a_value_error_naming_the_fix():
    with pytest.raises(ValueError, match=r"needs litzoo's GridWorld.*got CartPoleEnv"):
        fit(ValueFunctionApproximation(), GymDataModule("CartPole-v1", batches_per_epoch=2))
    with pytest.raises(ValueError, match="terminate_at_target=True"):
        ValueFunctionApproximation().attach(GridWorld(terminate_at_target=True))


# ------------------------------------------------------------------------------------------ TD-linear
def test_td_linear_with_one_hot_features_is_tabular_td_and_reaches_v_pi():
    # One-hot features: the TD fixed point is v_pi itself for any state distribution that visits every
    # state, so only the stochastic-approximation error remains; alpha_k = alpha / (1 + k / 1000).
    # Episodes start at (0, 0) and are truncated after 100 steps: bootstrapping through the truncation
    # is what makes the continuing task's v_pi (values -4.5 .. -2.9) the target (treating it as a
    # termination would pull the values towards 0).
    module = ValueFunctionApproximation(algorithm="td_linear", features="onehot", alpha=1.5, alpha_decay_steps=1000,
                                        n_steps=2, log_every_n_env_steps=10**9)
    trainer = fit(module, GymDataModule("litzoo/GridWorld-v0", num_envs=32, batches_per_epoch=1500))
    errors = module.compare_with_exact()
    assert errors["rmse"] < 0.15 and errors["max_error"] < 0.4, errors  # measured 0.05-0.08 / 0.11-0.25 (4 seeds)
    assert module.env_steps == 32 * 2 * 1500
    assert float(trainer.callback_metrics["exact/rmse"]) == pytest.approx(errors["rmse"])  # logged at epoch end


def test_td_fixed_point_error_to_v_pi_falls_as_the_feature_order_grows():
    P_pi, r_pi, v_pi, d = uniform_policy_model()
    for name in ("polynomial", "fourier"):
        errors = []
        for order in (1, 2, 3):
            Phi = make_features(name, (5, 5), order).matrix()
            errors.append(np.sqrt(d @ (Phi @ td_fixed_point(Phi, P_pi, r_pi, d) - v_pi) ** 2))
        assert errors[0] > errors[1] > errors[2], (name, errors)
    Phi = make_features("onehot", (5, 5)).matrix()  # tabular: the fixed point is v_pi
    np.testing.assert_allclose(Phi @ td_fixed_point(Phi, P_pi, r_pi, d), v_pi, atol=1e-10)


@pytest.mark.parametrize("features", ["polynomial", "fourier"])
def test_td_linear_converges_to_the_exact_td_fixed_point(features):
    # Episodes never end (GridWorld(max_episode_steps=None)), so the sampled states follow the stationary
    # distribution d_pi of the uniform policy (uniform here: P_pi is doubly stochastic), the D of w*.
    P_pi, r_pi, v_pi, d = uniform_policy_model()
    Phi = make_features(features, (5, 5), order=1).matrix()
    w_star = td_fixed_point(Phi, P_pi, r_pi, d)
    module = ValueFunctionApproximation(algorithm="td_linear", features=features, order=1, alpha=0.5,
                                        alpha_decay_steps=200, n_steps=2, log_every_n_env_steps=10**9)
    fit(module, GymDataModule(functools.partial(GridWorld, max_episode_steps=None), num_envs=32, batches_per_epoch=1500))
    w = module.net.weight.detach().double().numpy().ravel()
    distance = lambda v: float(np.sqrt(d @ v**2))  # ||.||_D
    # measured over 4 seeds: ||Phi (w - w*)||_D 0.014-0.077, |w - w*| / |w*| 0.005-0.023
    assert distance(Phi @ (w - w_star)) < 0.1
    assert np.linalg.norm(w - w_star) / np.linalg.norm(w_star) < 0.04
    # the fixed point, not v_pi: these features cannot represent v_pi (||Phi w* - v_pi||_D ~ 0.2)
    assert distance(Phi @ w_star - v_pi) > 0.19
    assert distance(Phi @ (w - w_star)) < 0.5 * distance(Phi @ w - v_pi)


# ------------------------------------------------------------------------------------------ control
def test_q_learning_with_one_hot_features_finds_the_optimal_policy_in_every_state():
    # Off-policy: a uniform random behaviour (epsilon = 1) visits every state; the greedy policy of
    # q_hat is then evaluated exactly and compared with v* from value iteration.
    module = ValueFunctionApproximation(algorithm="q_learning", features="onehot", alpha=3.0, epsilon=1.0, n_steps=2,
                                        log_every_n_env_steps=10**9)
    fit(module, GymDataModule("litzoo/GridWorld-v0", num_envs=16, batches_per_epoch=1500))
    errors = module.compare_with_exact()
    assert errors["greedy_value_optimal"] == 1.0 and errors["greedy_action_optimal"] == 1.0, errors
    assert errors["start_gap"] < 1e-9
    assert errors["q_rmse"] < 1.5, errors  # measured 0.33-0.81 (4 seeds); q* spans -1.9 .. 10


def test_sarsa_with_one_hot_features_finds_an_optimal_policy_from_the_start_state():
    # On-policy with epsilon 0.3 -> 0 over 40k env steps: a Sarsa agent with fixed epsilon learns the
    # safer epsilon-greedy path around the forbidden cells (gap 1.1 at the start); as epsilon -> 0 it
    # learns the optimal one. States it rarely visits from (0, 0) need not be optimal yet.
    module = ValueFunctionApproximation(algorithm="sarsa", features="onehot", alpha=2.0, epsilon=0.3, epsilon_final=0.0,
                                        epsilon_decay_env_steps=40_000, n_steps=2, log_every_n_env_steps=10**9)
    fit(module, GymDataModule("litzoo/GridWorld-v0", num_envs=16, batches_per_epoch=1500))
    errors = module.compare_with_exact()
    assert errors["start_gap"] < 1e-9, errors
    assert errors["greedy_value_optimal"] >= 0.6, errors  # measured 0.68-0.92 (4 seeds)
    assert module.epsilon() == 0.0


# ------------------------------------------------------------------------------------------ plumbing
def test_checkpoint_reloads_the_weights_and_plot_draws_learned_and_exact_values(tmp_path):
    module = ValueFunctionApproximation(algorithm="q_learning", features="tile", alpha=0.2, n_steps=2,
                                        log_every_n_env_steps=10**9)
    trainer = fit(module, GymDataModule("litzoo/GridWorld-v0", num_envs=4, batches_per_epoch=20),
                  enable_checkpointing=True, default_root_dir=tmp_path)
    path = trainer.checkpoint_callback.best_model_path
    loaded = ValueFunctionApproximation.load_from_checkpoint(path)
    assert loaded.env_steps == module.env_steps == 160
    np.testing.assert_allclose(loaded.action_values(), module.action_values())
    assert loaded.compare_with_exact(GridWorld()) == pytest.approx(module.compare_with_exact())
    image = module.plot(str(tmp_path / "vfa.png"))
    assert (tmp_path / "vfa.png").stat().st_size > 0
    assert image.ndim == 3 and image.shape[1] > image.shape[0]  # two grids side by side


class CrashAfter(L.Callback):
    """Saves a checkpoint after update ``step`` (where ``ModelCheckpoint(every_n_train_steps=step)`` saves) and
    then raises, like a job killed right after its periodic checkpoint."""

    def __init__(self, step: int, path):
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            raise RuntimeError("simulated crash")


def collection_state(module):
    """Where the run left its envs: each grid world's cell, step counter and ``np_random`` state, the TimeLimit's
    step count (``EnvRunner.get_state``), the observations and the actions already drawn for them."""
    state = module._env.get_state()
    return state["envs"], state["obs"].tolist(), module._actions.tolist()


class RandomStartGridWorld(GridWorld):
    """The grid world with episodes starting in a random state drawn from the env's ``np_random``."""

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return super().reset(options={"state": int(self.np_random.integers(self.num_states))})


# Lightning's warning that a mid-epoch resume of a plain dataloader is unreliable: the module restores the stream.
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
@pytest.mark.parametrize("algorithm, crash_after, env_id", [
    ("td_linear", 45, "litzoo/GridWorld-v0"), ("sarsa", 45, "litzoo/GridWorld-v0"),
    ("q_learning", 45, "litzoo/GridWorld-v0"), ("sarsa", 30, "litzoo/GridWorld-v0"), ("sarsa", 45, RandomStartGridWorld),
])
def test_a_run_resumed_after_a_crash_is_bit_identical_to_an_uninterrupted_one(tmp_path, algorithm, crash_after, env_id):
    # 3 epochs of 30 updates; the crash comes mid-epoch 2 (45) or after the last update of epoch 1 (30), with
    # every env mid-episode (TimeLimit 7, 2 env steps per update). Sarsa's a_{t+1} is drawn before the update
    # that uses it; RandomStartGridWorld draws its start states from np_random. Only with the envs, observations
    # and drawn actions in the checkpoint does the resumed run continue the same episodes and random stream
    # (measured: without the cells and step counters, without the drawn actions, or without np_random for the
    # random starts, the weights differ); the control below resumes without any of them.
    kwargs = dict(algorithm=algorithm, features="tile", alpha=0.2, epsilon=0.5, epsilon_final=0.05,
                  epsilon_decay_env_steps=300, n_steps=2, log_every_n_env_steps=10**9)

    def datamodule():
        return GymDataModule(env_id, num_envs=4, batches_per_epoch=30, max_episode_steps=7)

    uninterrupted = ValueFunctionApproximation(**kwargs)
    fit(uninterrupted, datamodule(), max_epochs=3)
    crashed = ValueFunctionApproximation(**kwargs)
    ckpt = tmp_path / "crash.ckpt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(crashed, datamodule(), max_epochs=3, callbacks=[CrashAfter(crash_after, ckpt)])

    resumed, capture = ValueFunctionApproximation(**kwargs), CaptureStart()
    fit(resumed, datamodule(), max_epochs=3, callbacks=[capture], ckpt_path=ckpt)
    assert capture.env_steps == crash_after * 8  # it went on from the crash, not from scratch
    assert resumed.env_steps == uninterrupted.env_steps == 90 * 8
    assert resumed.num_updates == uninterrupted.num_updates == 90
    assert torch.equal(resumed.net.weight, uninterrupted.net.weight)  # bit for bit
    assert torch.equal(resumed._generator.get_state(), uninterrupted._generator.get_state())
    assert collection_state(resumed) == collection_state(uninterrupted)

    # Control: the same checkpoint without the collection state restarts the episodes and draws other actions.
    checkpoint = torch.load(ckpt, weights_only=True)
    del checkpoint["litzoo_rl"]["collection"]
    torch.save(checkpoint, tmp_path / "without_collection.ckpt")
    restarted = ValueFunctionApproximation(**kwargs)
    fit(restarted, datamodule(), max_epochs=3, ckpt_path=tmp_path / "without_collection.ckpt")
    assert restarted.num_updates == 90 and not torch.equal(restarted.net.weight, uninterrupted.net.weight)


DDP_SCRIPT = textwrap.dedent(
    """
    import functools, sys
    import lightning as L
    import torch
    from litzoo.datamodules.gym import GymDataModule
    from litzoo.envs import GridWorld
    from litzoo.modules.value_function_approximation import ValueFunctionApproximation

    torch.set_num_threads(1)
    out = sys.argv[1]

    class Record(L.Callback):
        def on_train_start(self, trainer, module):
            self.w0, self.batches = module.net.weight.detach().clone(), []
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.batches.append(batch)
        def on_train_end(self, trainer, module):
            fields = {k: torch.stack([getattr(b, k) for b in self.batches]) for k in ("states", "rewards", "next_states")}
            torch.save({"w0": self.w0, "w": module.net.weight.detach().clone(), "env_steps": module.env_steps,
                        "updates": module.num_updates, "rmse": float(trainer.callback_metrics["exact/rmse"]),
                        "logged_env_steps": float(trainer.callback_metrics["time/env_steps"]), **fields},
                       f"{out}/rank{trainer.global_rank}.pt")

    # the single-process fixed-point test's setting, its 32 envs split over 2 ranks
    module = ValueFunctionApproximation(algorithm="td_linear", features="polynomial", order=1, alpha=0.5,
                                        alpha_decay_steps=200, n_steps=2, log_every_n_env_steps=48_000)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                        callbacks=[Record()], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, GymDataModule(functools.partial(GridWorld, max_episode_steps=None), num_envs=16,
                                      batches_per_epoch=1500))
    """
)


def test_two_process_cpu_ddp_is_the_single_process_update_on_both_ranks_transitions_and_reaches_the_td_fixed_point(tmp_path):
    script = tmp_path / "ddp_vfa.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, cwd=REPO, timeout=300,
                   capture_output=True, env=env)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["env_steps"] == rank1["env_steps"] == 1500 * 2 * 16 and rank0["updates"] == rank1["updates"] == 1500
    assert rank0["logged_env_steps"] == 2 * 48_000  # env steps of both ranks
    assert (rank0["states"] != rank1["states"]).float().mean() > 0.5  # each rank samples its own trajectories
    assert torch.equal(rank0["w"], rank1["w"]) and rank0["rmse"] == rank1["rmse"]  # ... yet the weights agree

    # Replay the book's update w += alpha_k mean(delta phi(s)) in float64 from w_0 = 0 on the transitions of
    # both ranks pooled into one batch: DDP is that single-process update (averaged gradients, not summed,
    # not one rank's), to float32 rounding; rank 0's transitions alone end ~0.08 away (measured).
    Phi = torch.as_tensor(make_features("polynomial", (5, 5), order=1).matrix())
    pooled = {k: torch.cat([rank0[k], rank1[k]], 1) for k in ("states", "rewards", "next_states")}

    def replay(batches):
        w = torch.zeros(Phi.shape[1], dtype=torch.float64)
        for k, (s, r, s_next) in enumerate(zip(batches["states"], batches["rewards"].double(), batches["next_states"])):
            delta = r + GAMMA * Phi[s_next] @ w - Phi[s] @ w  # GridWorld(max_episode_steps=None): nothing ends
            w = w + 0.5 / (1 + k / 200) * (delta[:, None] * Phi[s]).mean(0)
        return w

    w = rank0["w"].double().ravel()
    assert torch.count_nonzero(rank0["w0"]) == 0
    torch.testing.assert_close(w, replay(pooled), rtol=0, atol=1e-5)  # measured 1.2e-6
    assert (w - replay(rank0)).abs().max() > 1e-2

    # and, as in one process, it reaches the TD fixed point w* (not v_pi, which these features cannot represent)
    P_pi, r_pi, v_pi, d = uniform_policy_model()
    w_star = td_fixed_point(Phi.numpy(), P_pi, r_pi, d)
    assert np.sqrt(d @ (Phi.numpy() @ (w.numpy() - w_star)) ** 2) < 0.1
    assert np.linalg.norm(w.numpy() - w_star) / np.linalg.norm(w_star) < 0.04


@pytest.mark.slow  # a fresh interpreter importing every litzoo module: ~10 s CPU
def test_config_trains_with_train_py(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs" / "vfa_gridworld.yaml"),
         "--trainer.max_steps", "3", "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
         "--trainer.enable_progress_bar", "false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "max_steps=3" in result.stderr + result.stdout
