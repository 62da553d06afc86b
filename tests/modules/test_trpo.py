"""TRPO: bad input; one trust-region step keeps the measured KL <= delta and improves the surrogate
(discrete and Gaussian), a step in a bad direction is rejected with the parameters unchanged;
learning a contextual bandit (policy and critic vs exact values), a continuous identity and
Pendulum-v1; resume, load_from_checkpoint(weights_only=True), export, bf16-mixed, 2-process CPU DDP,
the configs with train.py; slow: CartPole-v1 solved, Pendulum-v1 near solved."""

import json
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

import litzoo.modules.trpo as trpo_module
from litzoo.datamodules.gym import GymDataModule
from litzoo.modules.trpo import TRPO
from litzoo.envs.toy import ContextBandit, ContinuousIdentity
from litzoo.rl.policy import evaluate_policy, load_policy

from rl_helpers import (
    CaptureStart,
    assert_loads_weights_only_and_exports_the_same_policy,
    bandit_policy_and_features,
    fit,
    run_train_py,
)

REPO = Path(__file__).resolve().parents[2]



# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, match", [
    ({"max_kl": 0.0}, r"max_kl=0.0 must be > 0: it is the trust-region radius .* such as 0.01"),
    ({"max_kl": -0.01}, r"max_kl=-0.01 must be > 0"),
    ({"n_steps": 0}, "n_steps=0 must be a positive integer"),
    ({"n_steps": 2.5}, "n_steps=2.5 must be a positive integer"),
    ({"cg_max_steps": 0}, "cg_max_steps=0 must be a positive integer"),
    ({"line_search_shrink": 1.0}, r"line_search_shrink=1.0 must be in \(0, 1\)"),
    ({"cg_damping": -0.1}, "cg_damping=-0.1 must be a finite number >= 0"),
    ({"gae_lambda": 1.5}, r"gae_lambda=1.5 must be in \[0, 1\]"),
    ({"critic_batch_size": 0}, "critic_batch_size=0 must be a positive integer or None"),
    ({"critic_lr": 0.0}, "critic_lr=0.0 must be a finite number > 0"),
])
def test_invalid_hyperparameters_raise_value_errors_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TRPO(**kwargs)


# ------------------------------------------------------------------------------------------ one step
def random_batch(action_space, n=256, obs_dim=4, seed=0):
    """A TRPO module, features, actions sampled from its policy, their log-probs and random advantages."""
    module = TRPO(observation_space=spaces.Box(-5, 5, (obs_dim,)), action_space=action_space, max_kl=0.01)
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, obs_dim, generator=g)
    actor = module.policy.actor
    with torch.no_grad():
        dist = actor.distribution(features)
        actions = dist.sample()
        log_probs = actor.log_prob(dist, actions)
    # advantages correlated with the action, so there is a real improvement direction
    a = actions.float().reshape(n, -1)[:, 0]
    advantages = (a - a.mean()) / a.std() + 0.3 * torch.randn(n, generator=g)
    return module, features, actions, log_probs, advantages


def measured_kl(module, old_actor_state, features):
    actor = module.policy.actor
    with torch.no_grad():
        new = actor.distribution(features)
        current = {k: v.clone() for k, v in actor.state_dict().items()}
        actor.load_state_dict(old_actor_state)
        old = actor.distribution(features)
        actor.load_state_dict(current)
        kl = torch.distributions.kl_divergence(old, new)
    return float((kl if kl.ndim == 1 else kl.sum(-1)).mean())


@pytest.mark.parametrize("action_space", [spaces.Discrete(3), spaces.Box(-1, 1, (2,))], ids=["categorical", "gaussian"])
def test_one_trust_region_step_keeps_the_measured_kl_within_max_kl_and_improves_the_surrogate(action_space):
    module, features, actions, log_probs, advantages = random_batch(action_space)
    actor = module.policy.actor
    before = {k: v.clone() for k, v in actor.state_dict().items()}
    surrogate = lambda: float((torch.exp(actor.log_prob(actor.distribution(features), actions) - log_probs)  # noqa: E731
                               * advantages).mean())
    with torch.no_grad():
        L_before = surrogate()
    result, _ = module.trust_region_step(features, actions, log_probs, advantages)
    kl = measured_kl(module, before, features)
    with torch.no_grad():
        L_after = surrogate()
    assert result.accepted
    assert 0.0 < kl <= 0.01 * (1 + 1e-4), kl
    assert kl == pytest.approx(result.kl, rel=1e-4)
    # the quadratic model puts the full step on the KL boundary: the accepted step uses a real share of it
    assert kl > 0.01 * 0.8 ** (2 * result.num_backtracks) * 0.3
    assert L_after - L_before == pytest.approx(result.improvement, rel=1e-4) and result.improvement > 0


def test_a_step_in_a_bad_direction_is_rejected_and_the_parameters_are_unchanged(monkeypatch):
    module, features, actions, log_probs, advantages = random_batch(spaces.Discrete(3))
    before = [p.detach().clone() for p in module.policy.actor.parameters()]
    # The "natural gradient" replaced by its negative: every fraction of it lowers the surrogate.
    solve = trpo_module.conjugate_gradient
    monkeypatch.setattr(trpo_module, "conjugate_gradient", lambda Avp, b, max_iter: -solve(Avp, b, max_iter))
    result, _ = module.trust_region_step(features, actions, log_probs, advantages)
    assert not result.accepted and result.num_backtracks == module.hparams.line_search_max_iter
    for p, q in zip(module.policy.actor.parameters(), before):
        assert torch.equal(p.detach(), q)


def test_negated_advantages_with_a_huge_trust_region_still_never_lower_the_surrogate():
    # delta = 10: the quadratic model is badly wrong this far out; the line search backtracks or rejects.
    module, features, actions, log_probs, advantages = random_batch(spaces.Discrete(3), seed=1)
    module.hparams.max_kl = 10.0
    actor = module.policy.actor
    with torch.no_grad():
        L = lambda: float((torch.exp(actor.log_prob(actor.distribution(features), actions) - log_probs)  # noqa: E731
                           * -advantages).mean())
        L_before = L()
    result, _ = module.trust_region_step(features, actions, log_probs, -advantages)
    with torch.no_grad():
        assert L() >= L_before
    assert result.kl <= 10.0


# ------------------------------------------------------------------------------------------ learning
class RecordSteps(L.Callback):
    """The logged KL and line-search outcome of every update (logging every rollout)."""

    def __init__(self):
        self.kl, self.accepted = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.kl.append(float(trainer.callback_metrics["train/kl"]))
        self.accepted.append(int(trainer.callback_metrics["train/line_search_accepted"]))


def test_learns_the_contextual_bandit_and_its_critic_the_exact_state_values():
    module, record = TRPO(n_steps=8, max_kl=0.05, critic_lr=3e-3, log_every_n_env_steps=128), RecordSteps()
    trainer = fit(module, GymDataModule(ContextBandit, num_envs=16, batches_per_epoch=60), callbacks=[record])
    pi, features = bandit_policy_and_features(module)
    np.testing.assert_array_equal(pi.argmax(1), ContextBandit.R.argmax(1))
    assert pi.max(1).min() > 0.9, pi
    v = module.critic(features).squeeze(-1).detach().numpy()
    np.testing.assert_allclose(v, (pi * ContextBandit.R).sum(1), atol=0.05)  # V^pi(c) = sum_a pi(a|c) R[c, a]
    # every step within the trust region; early steps (far from the optimum) are all accepted
    assert max(record.kl) <= 0.05 and all(record.accepted[:20]) and min(record.kl[:20]) > 0, record.kl
    assert module.env_steps == 60 * 8 * 16 and trainer.global_step == 60  # one trainer step per rollout


def test_gaussian_policy_learns_the_continuous_identity():
    module = TRPO(n_steps=8, max_kl=0.05, critic_lr=3e-3, log_every_n_env_steps=10**6)
    fit(module, GymDataModule(ContinuousIdentity, num_envs=16, batches_per_epoch=80))
    s = np.linspace(-1, 1, 21, dtype=np.float32)[:, None]
    mean_action = module.policy.predict(s)  # deterministic = the Gaussian's mean
    assert np.abs(mean_action - s).max() < 0.2, np.abs(mean_action - s).max()
    assert module.policy.actor.log_std.exp().item() < 0.6  # exploration costs -std^2: the std shrinks from 1


def pendulum_return(module):
    return evaluate_policy(module.policy, lambda: gym.make("Pendulum-v1"), n_episodes=10, seed=10_000)["returns"].mean()


@pytest.mark.slow  # ~20 CPU-s; the fast suite keeps the bandit/identity learning tests
def test_improves_pendulum_within_forty_thousand_env_steps():
    datamodule = GymDataModule("Pendulum-v1", num_envs=2, batches_per_epoch=20)
    module = TRPO(observation_space=datamodule.observation_space, action_space=datamodule.action_space,
                  n_steps=1024, gamma=0.9, n_critic_updates=20, log_every_n_env_steps=10**6)
    before = pendulum_return(module)
    fit(module, datamodule)
    after = pendulum_return(module)
    # measured (seed 0): -1055 -> -400 after 20 rollouts of 2 x 1024 steps
    assert after >= before + 300, (before, after)


# ------------------------------------------------------------------------------------------ Lightning
def test_bf16_mixed_precision_still_learns_the_bandit_and_keeps_the_kl_bound():
    module = TRPO(n_steps=8, max_kl=0.05, critic_lr=3e-3, log_every_n_env_steps=128)
    trainer = fit(module, GymDataModule(ContextBandit, num_envs=16, batches_per_epoch=60), precision="bf16-mixed")
    pi, _ = bandit_policy_and_features(module)
    np.testing.assert_array_equal(pi.argmax(1), ContextBandit.R.argmax(1))
    assert pi.max(1).min() > 0.8
    assert trainer.callback_metrics["train/kl"] <= 0.05  # the trust-region step runs in float32


def test_resume_continues_env_steps_and_networks_and_checkpoint_loads_weights_only(tmp_path):
    kwargs = dict(n_steps=32, normalize_observations=True, log_every_n_env_steps=64)
    module = TRPO(**kwargs)
    trainer = fit(module, GymDataModule("CartPole-v1", num_envs=2, batches_per_epoch=5))
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    assert module.env_steps == 5 * 32 * 2 and trainer.global_step == 5
    assert module.policy.encoder.normalizer.rms.count == 5 * 32 * 2  # every observation acted on

    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    assert_loads_weights_only_and_exports_the_same_policy(module, ckpt, tmp_path / "policy", gym.make("CartPole-v1"), obs)
    assert json.loads((tmp_path / "policy" / "policy.json").read_text())["metadata"]["algorithm"] == "TRPO"

    resumed, capture = TRPO(**kwargs), CaptureStart()
    fit(resumed, GymDataModule("CartPole-v1", num_envs=2, batches_per_epoch=5), max_epochs=2, callbacks=[capture],
        ckpt_path=ckpt)
    assert capture.env_steps == 320 and resumed.env_steps == 640 and resumed.num_updates == 10
    for key, value in module.state_dict().items():  # networks and normaliser statistics
        torch.testing.assert_close(capture.state[key], value)


@pytest.mark.parametrize("config, env_id, kind", [("trpo_cartpole.yaml", "CartPole-v1", "categorical"),
                                                  ("trpo_pendulum.yaml", "Pendulum-v1", "gaussian")])
def test_config_trains_with_train_py_and_exports_a_loadable_policy(tmp_path, monkeypatch, config, env_id, kind):
    export, last = run_train_py(monkeypatch, tmp_path, config, "--trainer.max_steps", "2",
                                "--model.init_args.n_critic_updates", "1")
    policy = load_policy(export, env=gym.make(env_id))
    assert policy.kind == kind
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["litzoo_class"] == "litzoo.modules.trpo.TRPO"
    n_steps = 512 if env_id == "CartPole-v1" else 1024
    assert checkpoint["litzoo_rl"]["env_steps"] == 2 * n_steps * 2  # 2 rollouts of n_steps x 2 envs


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lightning as L
    import torch
    from litzoo.datamodules.gym import GymDataModule
    from litzoo.modules.trpo import TRPO

    torch.set_num_threads(1)
    out = sys.argv[1]

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 0:
                self.first_obs = batch.obs[0].tolist()
        def on_train_end(self, trainer, module):
            flat = torch.cat([p.detach().flatten() for p in module.parameters()])
            record = {"first_obs": self.first_obs, "env_steps": module.env_steps, "updates": module.num_updates,
                      "params": flat.tolist(), "kl": float(trainer.callback_metrics["train/kl"])}
            with open(f"{out}/rank{trainer.global_rank}.json", "w") as f:
                json.dump(record, f)

    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                        callbacks=[Record()], enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(TRPO(hidden_sizes=(16, 16), n_steps=64, n_critic_updates=2, critic_batch_size=32,
                     log_every_n_env_steps=64), GymDataModule("CartPole-v1", num_envs=2, batches_per_epoch=4))
    """
)


def test_two_process_cpu_ddp_ranks_see_different_episodes_and_take_the_same_trust_region_steps(tmp_path):
    script = tmp_path / "ddp_trpo.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=REPO, env=env, timeout=300,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["first_obs"] != rank1["first_obs"]  # different episodes ...
    assert rank0["env_steps"] == rank1["env_steps"] == 4 * 64 * 2 and rank0["updates"] == rank1["updates"] == 4
    # ... yet identical actor and critic after 4 updates: gradient, Fisher products, line search and
    # critic gradients were averaged, so both ranks took the same steps
    np.testing.assert_array_equal(rank0["params"], rank1["params"])
    assert rank0["kl"] == rank1["kl"] and 0 < rank0["kl"] <= 0.01


# ------------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_solves_cartpole(tmp_path):
    """configs/trpo_cartpole.yaml's recipe (the zoo's); solved = the best policy RLEvaluation keeps scores >= 475,
    re-checked on other episodes from its export. TRPO on CartPole reaches 500 and can swing back (a run that
    scored 500 after 30 rollouts ended at 240 after 40), so the last policy is not the measure.
    bench/rl.py: 475 at 10 k env steps in 4 of 5 seeds, 51 k in the fifth."""
    from litzoo.callbacks import RLEvaluation

    module = TRPO(n_steps=512, gamma=0.99, gae_lambda=0.98, cg_damping=1e-3, critic_lr=1e-3, n_critic_updates=20,
                  critic_batch_size=512, normalize_advantage=True, log_every_n_env_steps=10**6)
    evaluation = RLEvaluation(every_n_env_steps=5120, n_episodes=20, dirpath=str(tmp_path), plot=False)
    fit(module, GymDataModule("CartPole-v1", num_envs=2, batches_per_epoch=60), callbacks=[evaluation])
    assert evaluation.best_mean_return >= 475, [(h["env_steps"], h["mean_return"]) for h in evaluation.history]
    best = load_policy(tmp_path / "best_policy")
    returns = evaluate_policy(best, lambda: gym.make("CartPole-v1"), n_episodes=20, seed=10_000)["returns"]
    assert returns.mean() >= 475, returns


@pytest.mark.slow
def test_nearly_solves_pendulum():
    datamodule = GymDataModule("Pendulum-v1", num_envs=2, batches_per_epoch=50)
    module = TRPO(observation_space=datamodule.observation_space, action_space=datamodule.action_space,
                  n_steps=1024, gamma=0.9, n_critic_updates=20, log_every_n_env_steps=10**6)
    fit(module, datamodule)
    # measured (seed 0): -1055 before, -146 after 50 rollouts (102400 env steps)
    assert pendulum_return(module) >= -250
