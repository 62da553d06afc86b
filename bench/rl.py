"""RL benchmark: litzoo (Lightning Trainer + GymDataModule) vs Stable-Baselines3, same machine, one run.

    OMP_NUM_THREADS=1 python bench/rl.py                    # td3, ddpg, a2c; 3 seeds (~25 CPU-minutes)
    OMP_NUM_THREADS=1 python bench/rl.py --quick            # smoke run (a few CPU-minutes)
    OMP_NUM_THREADS=1 python bench/rl.py --algos td3 --seeds 0 1 2 --steps 20000 --jobs 2 \\
        --json runs/bench_rl.json --curve docs/td3_pendulum_reward_curve.png
    python bench/rl.py --plot-only runs/bench_rl.json --curve docs/td3_pendulum_reward_curve.png

Every row of :data:`ALGORITHMS` is one comparison: the env, a return threshold, a default budget in
env steps, the evaluation period, and two runners (litzoo, SB3) that train with the *same*
rl-baselines3-zoo hyperparameters and network sizes. Adding an algorithm = adding one row.

* litzoo trains exactly as a user would: ``L.Trainer(...).fit(module, GymDataModule(...))`` (CSV logger,
  no progress bar, no checkpoints); SB3 trains with ``model.learn`` (``verbose=0``).
* Both are evaluated by the same code at the same points: after the first update that ends at or past
  each multiple of ``eval_every`` env steps (litzoo: ``on_train_batch_end``; SB3: the start of the next
  collection), 10 deterministic episodes of :func:`litzoo.rl.policy.evaluate_policy` on fresh envs
  seeded 1_000_000 + i (SB3's model through a ``predict`` adapter). "steps to threshold" = env steps of
  the first evaluation whose mean return reaches the threshold (resolution: ``eval_every``); "final
  return" = the last evaluation; "mean return" = the mean of all evaluations (the area under the
  learning curve: far less noisy than a first crossing when the policy oscillates, as DQN's does).
  With 5 or more seeds the median table is followed by two-sided Mann-Whitney U tests of both sample-
  efficiency measures against SB3 (a run that never reached the threshold counts as the worst rank).
* Throughput: env steps per **CPU-second of the training process** (``time.process_time``; the machine
  is shared, so wall time mostly measures the neighbours), evaluation time subtracted. "all" counts the
  whole run, "learning" only the steps after the off-policy warm-up (``learning_starts`` random steps,
  which cost almost nothing in both libraries). Wall-clock env-steps/s are printed too.
* Each run is its own process (``--jobs`` of them at a time), ``torch.set_num_threads(1)``.

Hyperparameters (rl-baselines3-zoo ``hyperparams/*.yml``):

* TD3 / DDPG, Pendulum-v1 (td3.yml / ddpg.yml): gamma 0.98, buffer 200k, learning_starts 10k, Gaussian
  action noise sigma 0.1, lr 1e-3, batch 256, train_freq 1, gradient_steps 1, net_arch [400, 300],
  n_timesteps 20k (default budget here 15k to fit the shared 2-core machine: 5k updates).
* A2C, CartPole-v1 (a2c.yml): 8 envs, n_steps 5, ent_coef 0; SB3 defaults otherwise (RMSprop lr 7e-4,
  alpha 0.99, eps 1e-5, gamma 0.99, gae_lambda 1, vf_coef 0.5, max_grad_norm 0.5, [64, 64] tanh,
  orthogonal init); litzoo with ``optimizer="rmsprop"`` (the same recipe), and a ``litzoo-adamw`` row
  (litzoo's default optimizer, lr 1e-3). n_timesteps 500k (default budget here 100k).
* bf16-mixed rows (TD3, DDPG): the same litzoo run with ``Trainer(precision="bf16-mixed")``.
* ``--float32-blas`` adds a ``litzoo-blas`` row to TD3, DDPG and SAC: the float32 run with every matmul in torch's
  BLAS (``litzoo.nets.linear.set_cpu_float32_matmul("blas")``), the control for litzoo's oneDNN float32 linears.
* PPO, CartPole-v1 (ppo.yml: 8 envs, n_steps 32, batch 256, 20 epochs, gamma 0.98, gae_lambda 0.8, lr and clip
  range linear to 0 from 1e-3 / 0.2) and Pendulum-v1 (4 envs, VecNormalize of observations and rewards,
  n_steps 1024, batch 64, 10 epochs, gamma 0.9, lr 1e-3; the zoo's gSDE off in SB3 too, as for TRPO). SB3's
  Pendulum policy is scored through its VecNormalize statistics (litzoo's normaliser is in the policy).
* SAC, Pendulum-v1 (sac.yml: lr 1e-3; SB3 defaults otherwise: 256-256, batch 256, learning_starts 100,
  tau 0.005, gamma 0.99, ent_coef auto); budget 10 k env steps here (zoo 20 k); bf16-mixed row too.
* TRPO, CartPole-v1 / Pendulum-v1 (sb3-contrib trpo.yml) and DQN, CartPole-v1 (dqn.yml): rows ready,
  not in the default ``--algos`` (budget). TRPO Pendulum: the zoo's gSDE (``use_sde``) is switched off in
  SB3 too, since litzoo's TRPO has a state-independent Gaussian.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import gymnasium as gym
import numpy as np
import torch

EVAL_EPISODES = 10
EVAL_SEED = 1_000_000


# ----------------------------------------------------------------------------------- evaluation
class Recorder:
    """Evaluates every ``every`` env steps and keeps the learning curve and the clocks.

    ``train_cpu`` / ``train_wall`` at each evaluation = process time / wall time since the start of the
    run minus the time spent evaluating.
    """

    def __init__(self, env_id: str, every: int, n_episodes: int = EVAL_EPISODES) -> None:
        self.env_id, self.every, self.n_episodes = env_id, every, n_episodes
        self.curve: list[dict[str, float]] = []
        self.next_eval = every
        self.eval_cpu = self.eval_wall = 0.0
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    def start(self) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()

    def due(self, env_steps: int) -> bool:
        return env_steps >= self.next_eval

    def evaluate(self, env_steps: int, policy: Any) -> None:
        from litzoo.rl.policy import evaluate_policy

        if self.curve and self.curve[-1]["env_steps"] == env_steps:
            return
        cpu, wall = time.process_time(), time.perf_counter()
        train_cpu, train_wall = cpu - self.cpu0 - self.eval_cpu, wall - self.wall0 - self.eval_wall
        out = evaluate_policy(policy, lambda: gym.make(self.env_id), self.n_episodes, seed=EVAL_SEED)
        self.eval_cpu += time.process_time() - cpu
        self.eval_wall += time.perf_counter() - wall
        self.curve.append({"env_steps": int(env_steps), "mean_return": float(out["returns"].mean()),
                           "train_cpu": train_cpu, "train_wall": train_wall})
        self.next_eval = (env_steps // self.every + 1) * self.every


class SB3Predictor:
    """SB3's ``model.predict`` returns ``(action, state)``; evaluate_policy wants the action."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.model.predict(obs, deterministic=deterministic)[0]


# ----------------------------------------------------------------------------------- litzoo runners
# --updates-per-batch: litzoo's DDPG/TD3/SAC run this many env steps + updates per Lightning batch (the same training
# to the bit; evaluations happen at batch ends, up to that many env steps minus one after a multiple of eval_every).
# Set in main() before the runs fork.
UPDATES_PER_BATCH = 1


def _fit_litzoo(module: Any, datamodule: Any, steps: int, rec: Recorder, precision: str = "32-true") -> None:
    """``Trainer.fit`` until ``module.env_steps >= steps``, evaluating through a callback."""
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    class Evaluate(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if rec.due(pl_module.env_steps):
                rec.evaluate(pl_module.env_steps, pl_module.policy)
            if pl_module.env_steps >= steps:
                trainer.should_stop = True

    root = tempfile.mkdtemp(prefix="litzoo_bench_rl_")
    trainer = L.Trainer(max_steps=-1, max_epochs=-1, accelerator="cpu", devices=1, logger=CSVLogger(root),
                        precision=precision,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Evaluate()], default_root_dir=root)
    rec.start()
    trainer.fit(module, datamodule)
    rec.evaluate(module.env_steps, module.policy)


def litzoo_td3(seed: int, steps: int, rec: Recorder, twin: bool = True, precision: str = "32-true") -> None:
    from litzoo.datamodules.gym import GymDataModule
    from litzoo.modules.ddpg import DDPG, TD3

    torch.manual_seed(seed)
    module = (TD3 if twin else DDPG)(
        actor_hidden_sizes=(400, 300), critic_hidden_sizes=(400, 300), gamma=0.98, tau=0.005, actor_lr=1e-3,
        critic_lr=1e-3, batch_size=256, buffer_size=200_000, learning_starts=10_000, exploration_noise="gaussian",
        exploration_std=0.1, log_every_n_env_steps=1000, updates_per_batch=UPDATES_PER_BATCH, seed=seed)
    _fit_litzoo(module, GymDataModule("Pendulum-v1", num_envs=1, batches_per_epoch=1000, seed=seed), steps, rec,
                precision)


def litzoo_ddpg(seed: int, steps: int, rec: Recorder) -> None:
    litzoo_td3(seed, steps, rec, twin=False)


# bf16-mixed: the same run with ``Trainer(precision="bf16-mixed")`` (autocast; weights, optimizer and
# losses stay float32). The CPU's AVX512-BF16 matmuls run at ~2x the float32 rate, and ~80 % of a
# 400-300 TD3 update is matmuls. SB3 has no mixed-precision option.
def litzoo_td3_bf16(seed: int, steps: int, rec: Recorder) -> None:
    litzoo_td3(seed, steps, rec, precision="bf16-mixed")


def litzoo_ddpg_bf16(seed: int, steps: int, rec: Recorder) -> None:
    litzoo_td3(seed, steps, rec, twin=False, precision="bf16-mixed")


# --float32-blas: the float32 run with torch's BLAS for every matmul (no oneDNN linears; each run is its own process)
def _blas(runner: Callable[[int, int, Recorder], None]) -> Callable[[int, int, Recorder], None]:
    def run(seed: int, steps: int, rec: Recorder) -> None:
        from litzoo.nets.linear import set_cpu_float32_matmul

        set_cpu_float32_matmul("blas")
        runner(seed, steps, rec)
    return run


def litzoo_a2c(seed: int, steps: int, rec: Recorder, optimizer: str = "rmsprop", lr: float = 7e-4) -> None:
    from litzoo.datamodules.gym import GymDataModule
    from litzoo.modules.actor_critic import ActorCritic

    torch.manual_seed(seed)
    module = ActorCritic(critic="advantage", hidden_sizes=(64, 64), activation="tanh", n_steps=5, gamma=0.99,
                         gae_lambda=1.0, optimizer=optimizer, lr=lr, adam_eps=1e-5, ent_coef=0.0, vf_coef=0.5,
                         max_grad_norm=0.5, log_every_n_env_steps=10_000, seed=seed)
    _fit_litzoo(module, GymDataModule("CartPole-v1", num_envs=8, batches_per_epoch=1000, seed=seed), steps, rec)


def litzoo_a2c_adamw(seed: int, steps: int, rec: Recorder) -> None:
    litzoo_a2c(seed, steps, rec, optimizer="adamw", lr=1e-3)


def litzoo_trpo(seed: int, steps: int, rec: Recorder, env_id: str = "CartPole-v1") -> None:
    from litzoo.datamodules.gym import GymDataModule
    from litzoo.modules.trpo import TRPO

    torch.manual_seed(seed)
    if env_id == "CartPole-v1":
        kwargs = dict(n_steps=512, gamma=0.99, gae_lambda=0.98, cg_damping=1e-3, critic_lr=1e-3,
                      n_critic_updates=20, critic_batch_size=512)
    else:  # Pendulum-v1: n_steps 1024, gamma 0.9, 15 critic updates; SB3 defaults otherwise
        kwargs = dict(n_steps=1024, gamma=0.9, gae_lambda=0.95, cg_damping=0.1, critic_lr=1e-3,
                      n_critic_updates=15, critic_batch_size=128)
    module = TRPO(max_kl=0.01, cg_max_steps=15, line_search_max_iter=10, line_search_shrink=0.8,
                  normalize_advantage=True, log_every_n_env_steps=10_000, seed=seed, **kwargs)
    _fit_litzoo(module, GymDataModule(env_id, num_envs=2, batches_per_epoch=1000, seed=seed), steps, rec)


def litzoo_trpo_pendulum(seed: int, steps: int, rec: Recorder) -> None:
    litzoo_trpo(seed, steps, rec, env_id="Pendulum-v1")


def litzoo_dqn(seed: int, steps: int, rec: Recorder) -> None:
    from litzoo.datamodules.gym import GymDataModule
    from litzoo.modules.dqn import DQN

    torch.manual_seed(seed)
    module = DQN(hidden_sizes=(256, 256), lr=2.3e-3, buffer_size=100_000, batch_size=64, learning_starts=1000,
                 gamma=0.99, train_freq=256, gradient_steps=128, target_update_interval=10,
                 exploration_fraction=0.16, exploration_final_eps=0.04, total_env_steps=steps,
                 max_grad_norm=10.0, log_every_n_env_steps=10_000, seed=seed)
    _fit_litzoo(module, GymDataModule("CartPole-v1", num_envs=1, batches_per_epoch=1000, seed=seed), steps, rec)


def litzoo_ppo(seed: int, steps: int, rec: Recorder, env_id: str = "CartPole-v1", precision: str = "32-true") -> None:
    from litzoo.datamodules.gym import GymDataModule
    from litzoo.modules.ppo import PPO

    torch.manual_seed(seed)
    if env_id == "CartPole-v1":  # ppo.yml: 8 envs, lin_1e-3 / lin_0.2 over the run
        num_envs, kwargs = 8, dict(n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8, lr=1e-3,
                                   lr_final=0.0, clip_range=0.2, clip_range_final=0.0)
    else:  # Pendulum-v1: 4 envs, normalize (obs and rewards); gSDE off (see the module docstring)
        num_envs, kwargs = 4, dict(n_steps=1024, batch_size=64, n_epochs=10, gamma=0.9, gae_lambda=0.95, lr=1e-3,
                                   clip_range=0.2, normalize_observations=True, normalize_rewards=True)
    rollout = kwargs["n_steps"] * num_envs
    module = PPO(hidden_sizes=(64, 64), activation="tanh", ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5,
                 total_steps=math.ceil(steps / rollout), log_every_n_env_steps=10_000, seed=seed, **kwargs)
    _fit_litzoo(module, GymDataModule(env_id, num_envs=num_envs, batches_per_epoch=1000, seed=seed), steps, rec,
                precision)


def litzoo_ppo_pendulum(seed: int, steps: int, rec: Recorder) -> None:
    litzoo_ppo(seed, steps, rec, env_id="Pendulum-v1")


def litzoo_sac(seed: int, steps: int, rec: Recorder, precision: str = "32-true") -> None:
    from litzoo.datamodules.gym import GymDataModule
    from litzoo.modules.sac import SAC

    torch.manual_seed(seed)
    module = SAC(actor_hidden_sizes=(256, 256), critic_hidden_sizes=(256, 256), gamma=0.99, tau=0.005, actor_lr=1e-3,
                 critic_lr=1e-3, batch_size=256, buffer_size=1_000_000, learning_starts=100,
                 log_every_n_env_steps=1000, updates_per_batch=UPDATES_PER_BATCH, seed=seed)
    _fit_litzoo(module, GymDataModule("Pendulum-v1", num_envs=1, batches_per_epoch=1000, seed=seed), steps, rec,
                precision)


def litzoo_sac_bf16(seed: int, steps: int, rec: Recorder) -> None:
    litzoo_sac(seed, steps, rec, precision="bf16-mixed")


# ----------------------------------------------------------------------------------- SB3 runners
def _learn_sb3(model: Any, steps: int, rec: Recorder, predictor: type = SB3Predictor) -> None:
    from stable_baselines3.common.callbacks import BaseCallback

    class Evaluate(BaseCallback):
        # At the start of a collection, i.e. right after the update that followed the previous one: the
        # same point as litzoo's on_train_batch_end (an evaluation in _on_step would see the policy one
        # update older than litzoo's does at the same env-step count).
        def _on_rollout_start(self) -> None:
            if rec.due(self.num_timesteps):
                rec.evaluate(self.num_timesteps, predictor(self.model))

        def _on_step(self) -> bool:
            return True

    rec.start()
    model.learn(total_timesteps=steps, callback=Evaluate())
    rec.evaluate(model.num_timesteps, predictor(model))


def sb3_td3(seed: int, steps: int, rec: Recorder, twin: bool = True) -> None:
    from stable_baselines3 import DDPG, TD3
    from stable_baselines3.common.noise import NormalActionNoise

    model = (TD3 if twin else DDPG)(
        "MlpPolicy", "Pendulum-v1", gamma=0.98, buffer_size=200_000, learning_starts=10_000, learning_rate=1e-3,
        batch_size=256, train_freq=1, gradient_steps=1, tau=0.005,
        action_noise=NormalActionNoise(np.zeros(1), 0.1 * np.ones(1)),
        policy_kwargs=dict(net_arch=[400, 300]), seed=seed, device="cpu", verbose=0)
    _learn_sb3(model, steps, rec)


def sb3_ddpg(seed: int, steps: int, rec: Recorder) -> None:
    sb3_td3(seed, steps, rec, twin=False)


def sb3_a2c(seed: int, steps: int, rec: Recorder) -> None:
    from stable_baselines3 import A2C
    from stable_baselines3.common.env_util import make_vec_env

    model = A2C("MlpPolicy", make_vec_env("CartPole-v1", n_envs=8, seed=seed), n_steps=5, ent_coef=0.0,
                seed=seed, device="cpu", verbose=0)
    _learn_sb3(model, steps, rec)


def sb3_trpo(seed: int, steps: int, rec: Recorder, env_id: str = "CartPole-v1") -> None:
    from sb3_contrib import TRPO
    from stable_baselines3.common.env_util import make_vec_env

    if env_id == "CartPole-v1":
        kwargs = dict(n_steps=512, batch_size=512, cg_damping=1e-3, gae_lambda=0.98, gamma=0.99,
                      learning_rate=1e-3, n_critic_updates=20)
    else:
        kwargs = dict(n_steps=1024, gamma=0.9, n_critic_updates=15, use_sde=False)
    model = TRPO("MlpPolicy", make_vec_env(env_id, n_envs=2, seed=seed), seed=seed, device="cpu", verbose=0,
                 **kwargs)
    _learn_sb3(model, steps, rec)


def sb3_trpo_pendulum(seed: int, steps: int, rec: Recorder) -> None:
    sb3_trpo(seed, steps, rec, env_id="Pendulum-v1")


def sb3_dqn(seed: int, steps: int, rec: Recorder) -> None:
    from stable_baselines3 import DQN

    model = DQN("MlpPolicy", "CartPole-v1", learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
                learning_starts=1000, gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128,
                exploration_fraction=0.16, exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256]),
                seed=seed, device="cpu", verbose=0)
    _learn_sb3(model, steps, rec)


class VecNormalizePredictor(SB3Predictor):
    """SB3's ``VecNormalize`` whitens observations in the env wrapper, not in the policy: apply its statistics."""

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.model.predict(self.model.get_vec_normalize_env().normalize_obs(obs), deterministic=deterministic)[0]


def sb3_ppo(seed: int, steps: int, rec: Recorder, env_id: str = "CartPole-v1") -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    def linear(start: float) -> Callable[[float], float]:
        return lambda progress_remaining: progress_remaining * start

    if env_id == "CartPole-v1":
        env = make_vec_env(env_id, n_envs=8, seed=seed)
        kwargs = dict(n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8,
                      learning_rate=linear(1e-3), clip_range=linear(0.2), ent_coef=0.0)
    else:
        env = VecNormalize(make_vec_env(env_id, n_envs=4, seed=seed), gamma=0.9)
        kwargs = dict(n_steps=1024, batch_size=64, n_epochs=10, gamma=0.9, gae_lambda=0.95, learning_rate=1e-3,
                      clip_range=0.2, ent_coef=0.0, use_sde=False)
    model = PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)
    _learn_sb3(model, steps, rec, VecNormalizePredictor if env_id != "CartPole-v1" else SB3Predictor)


def sb3_ppo_pendulum(seed: int, steps: int, rec: Recorder) -> None:
    sb3_ppo(seed, steps, rec, env_id="Pendulum-v1")


def sb3_sac(seed: int, steps: int, rec: Recorder) -> None:
    from stable_baselines3 import SAC

    model = SAC("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, seed=seed, device="cpu", verbose=0)
    _learn_sb3(model, steps, rec)


# ----------------------------------------------------------------------------------- plain PyTorch
def plain_td3(seed: int, steps: int, rec: Recorder) -> None:
    """CleanRL-style single-file TD3 loop (``td3_continuous_action.py``) on the same networks and
    hyperparameters: Lightning's and litzoo's overhead = the gap between this row and litzoo's."""
    import copy

    from litzoo.nets.actors_critics import DeterministicActor, QCritic

    torch.manual_seed(seed)
    env = gym.make("Pendulum-v1")
    low, high = env.action_space.low, env.action_space.high
    actor, critic = DeterministicActor(3, 1, (400, 300)), QCritic(3, 1, (400, 300), num_critics=2)
    actor_t, critic_t = copy.deepcopy(actor), copy.deepcopy(critic)
    a_opt, c_opt = torch.optim.Adam(actor.parameters(), 1e-3), torch.optim.Adam(critic.parameters(), 1e-3)
    cap, learning_starts, batch, gamma, tau = 200_000, 10_000, 256, 0.98, 0.005
    obs_b, next_b = torch.zeros(cap, 3), torch.zeros(cap, 3)
    act_b, rew_b, done_b = torch.zeros(cap, 1), torch.zeros(cap), torch.zeros(cap)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rec.start()
    for t in range(steps):
        if t < learning_starts:
            a = rng.uniform(-1, 1, 1).astype(np.float32)
        else:
            with torch.no_grad():
                a = actor(torch.as_tensor(obs).unsqueeze(0))[0].numpy()
            a = np.clip(a + rng.normal(0, 0.1, 1), -1, 1).astype(np.float32)
        next_obs, r, term, trunc, _ = env.step(low + (a + 1) * 0.5 * (high - low))
        obs_b[t % cap], next_b[t % cap] = torch.as_tensor(obs), torch.as_tensor(next_obs)
        act_b[t % cap], rew_b[t % cap], done_b[t % cap] = torch.as_tensor(a), float(r), float(term)
        obs = next_obs
        if term or trunc:
            obs, _ = env.reset()
        if t + 1 >= learning_starts:
            idx = torch.randint(min(t + 1, cap), (batch,))
            s, a_, r_, s2, d = obs_b[idx], act_b[idx], rew_b[idx], next_b[idx], done_b[idx]
            with torch.no_grad():
                noise = (torch.randn_like(a_) * 0.2).clamp(-0.5, 0.5)
                y = r_ + gamma * (1 - d) * critic_t(s2, (actor_t(s2) + noise).clamp(-1, 1)).min(0).values
            c_loss = (critic(s, a_) - y).pow(2).mean(1).sum()
            c_opt.zero_grad()
            c_loss.backward()
            c_opt.step()
            if (t + 1 - learning_starts) % 2 == 0:
                a_loss = -critic.q1(s, actor(s)).mean()
                a_opt.zero_grad()
                a_loss.backward()
                a_opt.step()
                with torch.no_grad():
                    for net, tgt in ((actor, actor_t), (critic, critic_t)):
                        torch._foreach_lerp_(list(tgt.parameters()), list(net.parameters()), tau)
        if rec.due(t + 1):

            class Greedy:
                def predict(self, o, deterministic=True):
                    with torch.no_grad():
                        a = actor(torch.as_tensor(o, dtype=torch.float32)).numpy()
                    return low + (a + 1) * 0.5 * (high - low)

            rec.evaluate(t + 1, Greedy())


# ----------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Benchmark:
    """One comparison row: runners take ``(seed, env_steps, recorder)``."""

    env_id: str
    threshold: float  # mean deterministic eval return that counts as solved
    budget: int  # default env steps per run
    eval_every: int  # env steps between evaluations
    warmup: int  # off-policy learning_starts (excluded from the "learning" throughput)
    runners: dict[str, Callable[[int, int, Recorder], None]] = field(default_factory=dict)


ALGORITHMS: dict[str, Benchmark] = {
    "td3": Benchmark("Pendulum-v1", -200.0, 15_000, 1000, 10_000,
                     {"litzoo": litzoo_td3, "litzoo-bf16": litzoo_td3_bf16, "sb3": sb3_td3,
                      "litzoo-blas": _blas(litzoo_td3)}),
    "ddpg": Benchmark("Pendulum-v1", -200.0, 15_000, 1000, 10_000,
                      {"litzoo": litzoo_ddpg, "litzoo-bf16": litzoo_ddpg_bf16, "sb3": sb3_ddpg,
                       "litzoo-blas": _blas(litzoo_ddpg)}),
    "a2c": Benchmark("CartPole-v1", 475.0, 100_000, 10_000, 0,
                     {"litzoo": litzoo_a2c, "litzoo-adamw": litzoo_a2c_adamw, "sb3": sb3_a2c}),
    # Not in the default --algos (budget): zoo budgets 100k (TRPO) and 50k (DQN) env steps.
    "trpo": Benchmark("CartPole-v1", 475.0, 100_000, 10_240, 0, {"litzoo": litzoo_trpo, "sb3": sb3_trpo}),
    "trpo_pendulum": Benchmark("Pendulum-v1", -200.0, 100_000, 10_240, 0,
                               {"litzoo": litzoo_trpo_pendulum, "sb3": sb3_trpo_pendulum}),
    "dqn": Benchmark("CartPole-v1", 475.0, 50_000, 2500, 1000, {"litzoo": litzoo_dqn, "sb3": sb3_dqn}),
    # PPO (zoo budgets 1e5 env steps) and SAC (zoo: 2e4; 10 k here for the shared machine): not in the default
    # --algos (budget).
    "ppo": Benchmark("CartPole-v1", 475.0, 100_000, 10_240, 0, {"litzoo": litzoo_ppo, "sb3": sb3_ppo}),
    "ppo_pendulum": Benchmark("Pendulum-v1", -200.0, 100_000, 8192, 0,
                              {"litzoo": litzoo_ppo_pendulum, "sb3": sb3_ppo_pendulum}),
    "sac": Benchmark("Pendulum-v1", -200.0, 10_000, 1000, 100,
                     {"litzoo": litzoo_sac, "litzoo-bf16": litzoo_sac_bf16, "sb3": sb3_sac,
                      "litzoo-blas": _blas(litzoo_sac)}),
    # Lightning-free reference loop on TD3's networks (--algos td3_plain).
    "td3_plain": Benchmark("Pendulum-v1", -200.0, 15_000, 1000, 10_000, {"plain": plain_td3, "litzoo": litzoo_td3}),
}
DEFAULT_ALGOS = ("td3", "ddpg", "a2c")


def available(name: str) -> Optional[str]:
    """``None`` if the row's litzoo module imports, else why not (TRPO/DQN are written separately)."""
    module = {"trpo": "litzoo.modules.trpo", "trpo_pendulum": "litzoo.modules.trpo", "dqn": "litzoo.modules.dqn",
              "ppo": "litzoo.modules.ppo", "ppo_pendulum": "litzoo.modules.ppo", "sac": "litzoo.modules.sac"}
    try:
        if name in module:
            __import__(module[name])
        if name.startswith("trpo"):
            __import__("sb3_contrib")
    except Exception as err:  # noqa: BLE001 - any import failure means "skip this row"
        return f"{type(err).__name__}: {err}"
    return None


# ----------------------------------------------------------------------------------- running
def run_one(job: tuple[str, str, int, int]) -> dict[str, Any]:
    algo, library, seed, steps = job
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    bench = ALGORITHMS[algo]
    rec = Recorder(bench.env_id, bench.eval_every)
    bench.runners[library](seed, steps, rec)
    return {"algo": algo, "library": library, "seed": seed, "steps": steps, "curve": rec.curve,
            "eval_cpu": rec.eval_cpu}


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    bench = ALGORITHMS[run["algo"]]
    curve = run["curve"]
    last = curve[-1]
    reached = next((p["env_steps"] for p in curve if p["mean_return"] >= bench.threshold), None)
    learning = [p for p in curve if p["env_steps"] >= bench.warmup]
    first = learning[0] if len(learning) > 1 else {"env_steps": 0, "train_cpu": 0.0, "train_wall": 0.0}
    if bench.warmup == 0:
        first = {"env_steps": 0, "train_cpu": 0.0, "train_wall": 0.0}
    return {
        "steps_to_threshold": reached,
        "final_return": last["mean_return"],
        "best_return": max(p["mean_return"] for p in curve),
        # After the warm-up only: SB3 starts a collection (and is scored) during TD3's random warm-up, litzoo does not.
        "mean_return": float(np.mean([p["mean_return"] for p in curve if p["env_steps"] >= bench.warmup])),
        "sps_cpu": last["env_steps"] / last["train_cpu"],
        "sps_cpu_learning": (last["env_steps"] - first["env_steps"]) / (last["train_cpu"] - first["train_cpu"]),
        "sps_wall": last["env_steps"] / last["train_wall"],
        "train_cpu": last["train_cpu"],
    }


def fmt_steps(x: Optional[float]) -> str:
    return "not reached" if x is None or math.isinf(x) else f"{x:,.0f}"


def print_tables(runs: list[dict[str, Any]]) -> None:
    print(f"\ntorch {torch.__version__}, 1 thread; evaluation: {EVAL_EPISODES} deterministic episodes; "
          "env-steps/s over the training process's CPU time (evaluation excluded)\n")
    print("| algorithm | env | library | seed | env steps | steps to threshold | final return | best return "
          "| mean return | env-steps/CPU-s (all) | env-steps/CPU-s (learning) | env-steps/wall-s | train CPU-s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        s, b = summarise(run), ALGORITHMS[run["algo"]]
        print(f"| {run['algo']} | {b.env_id} (>= {b.threshold:g}) | {run['library']} | {run['seed']} | "
              f"{run['curve'][-1]['env_steps']:,} | {fmt_steps(s['steps_to_threshold'])} | {s['final_return']:.1f} | "
              f"{s['best_return']:.1f} | {s['mean_return']:.1f} | {s['sps_cpu']:.0f} | {s['sps_cpu_learning']:.0f} | "
              f"{s['sps_wall']:.0f} | {s['train_cpu']:.0f} |")
    print("\nMedian over seeds (steps to threshold: median of the seeds that reached it, and how many did):\n")
    print("| algorithm | library | seeds reaching threshold | steps to threshold | final return | mean return "
          "| env-steps/CPU-s (all) | env-steps/CPU-s (learning) | env-steps/wall-s "
          "| env-steps/CPU-s (learning) / SB3's, median of same-seed pairs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    tests = []
    for algo in dict.fromkeys(r["algo"] for r in runs):
        med: dict[str, dict[str, float]] = {}
        for library in dict.fromkeys(r["library"] for r in runs if r["algo"] == algo):
            sums = [summarise(r) for r in runs if r["algo"] == algo and r["library"] == library]
            reached = [s["steps_to_threshold"] for s in sums if s["steps_to_threshold"] is not None]
            med[library] = {k: statistics.median(s[k] for s in sums)
                            for k in ("final_return", "mean_return", "sps_cpu", "sps_cpu_learning", "sps_wall")}
            med[library]["reached"] = statistics.median(reached) if reached else None
            med[library]["n_reached"], med[library]["n"] = len(reached), len(sums)
        # Same-seed runs of the two libraries ran side by side (interleaved jobs), so their ratio cancels
        # most of the load drift of a shared machine; the median of those ratios is the headline number.
        ref_library = "sb3" if "sb3" in med else "plain" if "plain" in med else None
        rate = {(r["library"], r["seed"]): summarise(r)["sps_cpu_learning"] for r in runs if r["algo"] == algo}
        for library, m in med.items():
            pairs = [v / rate[(ref_library, seed)] for (lib, seed), v in rate.items()
                     if lib == library and (ref_library, seed) in rate]
            ratio = f"{statistics.median(pairs):.2f}x" if pairs else "-"
            print(f"| {algo} | {library} | {m['n_reached']}/{m['n']} | {fmt_steps(m['reached'])} | "
                  f"{m['final_return']:.1f} | {m['mean_return']:.1f} | {m['sps_cpu']:.0f} | {m['sps_cpu_learning']:.0f} "
                  f"| {m['sps_wall']:.0f} | {ratio} |")
            if ref_library == "sb3" and library != "sb3":
                tests.append(sample_efficiency_test(runs, algo, library))
    tests = [t for t in tests if t]
    if tests:
        print("\nSample efficiency vs SB3, two-sided Mann-Whitney U over seeds (p > 0.05: no detectable difference):\n")
        print("| algorithm | library | seeds | steps to threshold (never reached = worst): median litzoo / SB3, p "
              "| mean return: median litzoo / SB3, p |")
        print("|---|---|---|---|---|")
        for line in tests:
            print(line)


def sample_efficiency_test(runs: list[dict[str, Any]], algo: str, library: str, min_seeds: int = 5) -> Optional[str]:
    """A table row comparing ``library`` with SB3 on steps to threshold and mean return (None: < min_seeds)."""
    from scipy.stats import mannwhitneyu

    def values(lib: str) -> tuple[list[float], list[float]]:
        sums = [summarise(r) for r in runs if r["algo"] == algo and r["library"] == lib]
        never = math.inf  # a run that never reached the threshold ranks behind every run that did
        return ([never if s["steps_to_threshold"] is None else s["steps_to_threshold"] for s in sums],
                [s["mean_return"] for s in sums])

    (steps_a, mean_a), (steps_b, mean_b) = values(library), values("sb3")
    if min(len(steps_a), len(steps_b)) < min_seeds:
        return None
    p_steps = mannwhitneyu(steps_a, steps_b).pvalue
    p_mean = mannwhitneyu(mean_a, mean_b).pvalue
    return (f"| {algo} | {library} | {len(steps_a)} / {len(steps_b)} | {fmt_steps(statistics.median(steps_a))} / "
            f"{fmt_steps(statistics.median(steps_b))}, p = {p_steps:.2f} | {statistics.median(mean_a):.1f} / "
            f"{statistics.median(mean_b):.1f}, p = {p_mean:.2f} |")


def plot_curve(runs: list[dict[str, Any]], algo: str, path: str) -> None:
    """Eval return vs env steps: mean over seeds, one colour per library; band = min/max over seeds, or with 10 or
    more seeds the 95 % confidence interval of the mean (Student t; min/max then only shows that some seed hit 0
    and 500)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bench = ALGORITHMS[algo]
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = {"litzoo": "tab:blue", "litzoo-bf16": "tab:purple", "litzoo-adamw": "tab:cyan", "sb3": "tab:orange",
              "plain": "tab:green", "litzoo-blas": "tab:gray"}
    labels = {"litzoo": "litzoo (Lightning)", "litzoo-bf16": "litzoo, bf16-mixed", "litzoo-adamw": "litzoo, AdamW",
              "sb3": "Stable-Baselines3", "plain": "plain PyTorch loop", "litzoo-blas": "litzoo, float32 BLAS only"}
    for library in dict.fromkeys(r["library"] for r in runs if r["algo"] == algo):
        curves = [r["curve"] for r in runs if r["algo"] == algo and r["library"] == library]
        steps = sorted(set.intersection(*(set(p["env_steps"] for p in c) for c in curves)))
        values = np.array([[next(p["mean_return"] for p in c if p["env_steps"] == s) for s in steps] for c in curves])
        color = colors.get(library)
        if len(curves) >= 10:
            from scipy.stats import t as student_t

            half_width = student_t.ppf(0.975, len(curves) - 1) * values.std(0, ddof=1) / np.sqrt(len(curves))
            low, high, band = values.mean(0) - half_width, values.mean(0) + half_width, "band: 95 % CI of the mean"
        else:
            low, high, band = values.min(0), values.max(0), "band: min/max"
        ax.plot(steps, values.mean(0), color=color, marker="o", markersize=3,
                label=f"{labels.get(library, library)} ({len(curves)} seeds; {band})")
        ax.fill_between(steps, low, high, color=color, alpha=0.2)
    ax.axhline(bench.threshold, color="gray", linestyle="--", linewidth=1, label=f"threshold {bench.threshold:g}")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"eval return ({EVAL_EPISODES} deterministic episodes)")
    ax.set_title(f"{algo.upper()} on {bench.env_id}: mean eval return over seeds")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    print(f"\nwrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", nargs="+", default=list(DEFAULT_ALGOS), choices=sorted(ALGORITHMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None,
                        help="env-step budget for every algorithm (default: each row's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, short budgets")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (each its own process, 1 thread)")
    parser.add_argument("--json", default=None, help="also write all curves and clocks here")
    parser.add_argument("--curve", default=None, help="PNG of eval return vs env steps for --curve-algo")
    parser.add_argument("--curve-algo", default="td3")
    parser.add_argument("--plot-only", nargs="+", default=None,
                        help="--json file(s): print their tables / plot them, train nothing")
    parser.add_argument("--updates-per-batch", type=int, default=1,
                        help="litzoo DDPG/TD3/SAC: env steps + updates per Lightning batch (the same training; "
                             "evaluations at batch ends)")
    parser.add_argument("--float32-blas", action="store_true",
                        help="TD3/DDPG/SAC: also a litzoo-blas row (float32, every matmul in torch's BLAS)")
    args = parser.parse_args()
    global UPDATES_PER_BATCH
    UPDATES_PER_BATCH = args.updates_per_batch

    if args.plot_only:
        runs = [r for path in args.plot_only for r in json.loads(Path(path).read_text())["runs"]]
    else:
        seeds = [0] if args.quick else args.seeds
        jobs = []
        for algo in args.algos:
            why = available(algo)
            if why is not None:
                print(f"skipping {algo}: {why}")
                continue
            bench = ALGORITHMS[algo]
            steps = args.steps or (bench.warmup + 2 * bench.eval_every if args.quick and bench.warmup
                                   else 2 * bench.eval_every if args.quick else bench.budget)
            for seed in seeds:  # interleave libraries: both see the same neighbours on a shared machine
                jobs += [(algo, library, seed, steps) for library in bench.runners
                         if library != "litzoo-blas" or args.float32_blas]
        print(f"{len(jobs)} runs, {args.jobs} at a time, litzoo off-policy updates per batch "
              f"{UPDATES_PER_BATCH}: {jobs}", flush=True)
        # Import the packages before forking: every run uses the code as it was at launch.
        import lightning  # noqa: F401
        import stable_baselines3  # noqa: F401

        import litzoo.datamodules.gym  # noqa: F401
        import litzoo.modules.actor_critic  # noqa: F401
        import litzoo.modules.ddpg  # noqa: F401
        import litzoo.rl.policy  # noqa: F401

        for algo in args.algos:
            if available(algo) is None and algo in ("trpo", "trpo_pendulum", "dqn", "ppo", "ppo_pendulum", "sac"):
                __import__("litzoo.modules." + algo.split("_")[0])
        runs = []

        def save() -> None:
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
        if args.jobs > 1:
            with mp.get_context("fork").Pool(args.jobs, maxtasksperchild=1) as pool:
                for run in pool.imap(run_one, jobs):
                    runs.append(run)
                    save()
                    print(f"done {run['algo']} {run['library']} seed {run['seed']}: {summarise(run)}", flush=True)
        else:
            for job in jobs:  # a fresh process per run: no torch/global state leaks between runs
                with mp.get_context("fork").Pool(1) as pool:
                    run = pool.apply(run_one, (job,))
                runs.append(run)
                save()
                print(f"done {run['algo']} {run['library']} seed {run['seed']}: {summarise(run)}", flush=True)
    print_tables(runs)
    if args.curve:
        plot_curve(runs, args.curve_algo, args.curve)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
