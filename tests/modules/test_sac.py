"""SAC: bad input; the squashed log-density vs a numerical change of variables; the soft target and the
temperature loss (its gradient's sign) on hand cases; an update moves each network by its own loss only; learning
a continuous identity with the entropy held at its target; resume, load_from_checkpoint(weights_only=True),
export through load_policy, bf16-mixed, the config with train.py; 2-process CPU DDP (PPO and SAC in one
launch); slow: Pendulum-v1."""

import functools
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from litzoo.datamodules.gym import GymDataModule
from litzoo.envs import toy
from litzoo.modules.sac import SAC
from litzoo.nets.actors_critics import SquashedGaussianActor
from litzoo.rl.losses import sac_soft_target, sac_temperature_loss
from litzoo.rl.policy import evaluate_policy, load_policy

from rl_helpers import (CaptureStart, assert_loads_weights_only_and_exports_the_same_policy,
                        assert_updates_per_batch_is_the_same_training, fit, run_train_py)

REPO = Path(__file__).resolve().parents[2]
ContinuousIdentity = functools.partial(toy.ContinuousIdentity, dim=2)  # a in [-2, 2]^2, reward -||a - s||^2


def small(**kwargs):
    defaults = dict(actor_hidden_sizes=(32, 32), critic_hidden_sizes=(64, 64), learning_starts=256, batch_size=64,
                    actor_lr=3e-3, critic_lr=3e-3, tau=0.05, log_every_n_env_steps=500)
    return SAC(**{**defaults, **kwargs})


# ------------------------------------------------------------------------------------------ bad input
def test_discrete_action_space_raises_value_error_suggesting_a_discrete_method():
    with pytest.raises(ValueError, match=r"SAC needs a continuous Box action space.*Discrete\(n=2\).*PPO"):
        SAC(observation_space=spaces.Box(-1, 1, (4,)), action_space=spaces.Discrete(2))


@pytest.mark.parametrize("kwargs, match", [
    ({"ent_coef": 0.0}, r"ent_coef=0.0 must be > 0 \(a fixed temperature alpha\) or None"),
    ({"ent_coef_init": -1.0}, "ent_coef_init=-1.0 must be a finite number > 0"),
    ({"train_freq": 0}, "train_freq=0 must be a positive integer"),
    ({"target_update_interval": 0}, "target_update_interval=0 must be a positive integer"),
    ({"tau": 1.5}, r"tau=1.5 must be in \[0, 1\]"),
    ({"batch_size": 512, "buffer_size": 256}, "buffer_size=256 is smaller than batch_size=512"),
    ({"target_entropy": float("nan")}, "target_entropy=nan must be a finite number or None"),
    ({"flush_denormals": None}, "flush_denormals=None must be True or False"),
])
def test_invalid_hyperparameters_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SAC(**kwargs)


def test_infinite_action_bounds_are_rejected_for_the_squashed_actor():
    with pytest.raises(ValueError, match="finite action bounds"):
        SAC(observation_space=spaces.Box(-1, 1, (2,)), action_space=spaces.Box(-np.inf, np.inf, (2,)))


# ------------------------------------------------------------------------------------------ the math
def test_squashed_log_density_matches_a_numerical_change_of_variables():
    # p(a) = d/da P(tanh(u) <= a) = d/da Phi((atanh(a) - m) / sigma), by central differences, per action dim;
    # independent dims: the log-densities add.
    torch.manual_seed(0)
    actor = SquashedGaussianActor(3, 2, hidden_sizes=(8,)).double()
    with torch.no_grad():
        actor.head.bias.copy_(torch.tensor([0.3, -1.5, 0.2, -0.7], dtype=torch.float64))  # means ~ (0.3, -1.5)
    features = torch.randn(64, 3, dtype=torch.float64)
    actions, log_probs = actor.sample_with_log_prob(features, torch.Generator().manual_seed(1))
    mean, log_std = actor.mean_log_std(features)
    normal = torch.distributions.Normal(mean.double(), log_std.double().exp())
    h = 1e-6
    cdf = lambda a: normal.cdf(torch.atanh(a))  # noqa: E731
    numerical = ((cdf(actions + h) - cdf(actions - h)) / (2 * h)).log().sum(-1)
    np.testing.assert_allclose(log_probs.detach().numpy(), numerical.detach().numpy(), rtol=1e-6, atol=1e-5)
    assert actions.abs().max() < 1 and actions.shape == (64, 2)


def test_log_det_of_the_squash_stays_finite_where_tanh_saturates():
    u = torch.tensor([[0.0, 5.0, -20.0, 40.0]])
    log_det = SquashedGaussianActor.log_det_tanh(u)
    # log(1 - tanh^2 u) = log sech^2 u = log 4 - 2|u| - 2 log(1 + e^-2|u|), summed over the 4 dims
    exact = sum(math.log(4) - 2 * abs(x) - 2 * math.log1p(math.exp(-2 * abs(x))) for x in (0.0, 5.0, -20.0, 40.0))
    assert log_det.item() == pytest.approx(exact, rel=1e-6)
    assert torch.isfinite(log_det).all()  # the naive log(1 - tanh(u)^2) is -inf at |u| = 20 in float32


def test_soft_target_on_a_hand_case():
    rewards, dones = torch.tensor([1.0, 0.5, -1.0]), torch.tensor([0.0, 1.0, 0.0])
    next_q = torch.tensor([[2.0, 3.0, -4.0], [1.5, 4.0, -3.0]])  # (critics, B): min = 1.5, 3, -4
    next_log_probs = torch.tensor([-1.0, 0.2, 2.0])
    y = sac_soft_target(rewards, dones, next_q, next_log_probs, alpha=0.5, gamma=0.9)
    # 1 + 0.9 (1.5 + 0.5);  0.5 (terminated);  -1 + 0.9 (-4 - 1)
    torch.testing.assert_close(y, torch.tensor([2.8, 0.5, -5.5]))


@pytest.mark.parametrize("log_probs, sign", [(-0.5, 1.0), (2.0, -1.0)], ids=["entropy-above-target", "below-target"])
def test_temperature_loss_gradient_lowers_alpha_above_the_target_entropy_and_raises_it_below(log_probs, sign):
    log_alpha = torch.tensor(0.3, requires_grad=True)
    log_pi = torch.full((8,), log_probs, requires_grad=True)
    loss = sac_temperature_loss(log_alpha, log_pi, target_entropy=-1.0)
    loss.backward()
    # d/d log_alpha = -(E log pi + target) = H - target: positive (descent lowers alpha) when H = 0.5 > -1
    assert log_alpha.grad.item() == pytest.approx(-(log_probs - 1.0)) and math.copysign(1, log_alpha.grad.item()) == sign
    assert log_pi.grad is None or not log_pi.grad.any()  # the policy is not moved by the temperature's loss


def test_an_update_moves_each_network_by_its_own_loss_only():
    """One training step through the Trainer: the critics' gradient is that of the critic loss alone (the actor's
    term, which also runs through the critics, does not leak into them), and the targets move by tau towards the
    updated critics. ContinuousIdentity's episodes last one step (dones = 1), so the soft target is y = r."""
    import copy

    import lightning as L

    module, seen = small(learning_starts=64, batch_size=32, tau=0.25), {}

    class Grab(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.update(batch=batch, critic=copy.deepcopy(module.critic), target=copy.deepcopy(module.critic_target))

        def on_before_optimizer_step(self, trainer, module, optimizer):
            seen["grads"] = [p.grad.clone() for p in module.critic.parameters()]
            seen["alpha_grad"] = module.temperature.log_alpha.grad.clone()

    fit(module, GymDataModule(ContinuousIdentity, num_envs=2, batches_per_epoch=1), callbacks=[Grab()])
    batch, critic = seen["batch"], seen["critic"]
    assert bool((batch.dones == 1).all())
    q = critic(module.policy.encoder(batch.obs), batch.actions)
    (0.5 * (q - batch.rewards).pow(2).mean(1).sum()).backward()
    for got, want in zip(seen["grads"], (p.grad for p in critic.parameters())):
        torch.testing.assert_close(got, want)
    for before, online, target in zip(seen["target"].parameters(), module.critic.parameters(),
                                      module.critic_target.parameters()):
        torch.testing.assert_close(target, before + 0.25 * (online.detach() - before))  # Polyak with tau = 0.25
    assert seen["alpha_grad"].item() != 0.0  # the temperature is learned in the same step


def test_a_fixed_temperature_is_a_constant_outside_the_optimizer():
    module = SAC(observation_space=spaces.Box(-1, 1, (3,)), action_space=spaces.Box(-2, 2, (2,)), ent_coef=0.2)
    assert module.temperature().item() == pytest.approx(0.2) and not module.temperature.log_alpha.requires_grad
    optimized = {id(p) for group in module.configure_optimizers().param_groups for p in group["params"]}
    assert id(module.temperature.log_alpha) not in optimized
    assert optimized == {id(p) for p in (*module.policy.actor.parameters(), *module.critic.parameters())}
    learned = SAC(observation_space=spaces.Box(-1, 1, (3,)), action_space=spaces.Box(-2, 2, (2,)))
    assert learned.target_entropy == -2.0 and learned.temperature().item() == 1.0  # -dim(A), alpha_0 = 1


# ------------------------------------------------------------------------------------------ learning
def test_learns_the_continuous_identity_and_holds_the_entropy_at_its_target():
    module = small(ent_coef_init=0.1, alpha_lr=1e-2)  # alpha falls to ~0.04 within the run
    trainer = fit(module, GymDataModule(ContinuousIdentity, num_envs=4, batches_per_epoch=600))
    s = torch.rand(256, 2, generator=torch.Generator().manual_seed(123)) * 2 - 1
    with torch.no_grad():
        error = (module.policy(s) - s).abs().max().item()  # deterministic: 2 tanh(m(s)) on [-2, 2]
    assert error < 0.25, error
    entropy = float(trainer.callback_metrics["train/entropy"])  # -E log pi(a|s), in the actor's [-1, 1] units
    assert abs(entropy - (-2.0)) < 0.35, entropy  # target -dim(A) = -2 (measured -2.08; -1.37 with alpha_0 = 1)
    assert module.env_steps == 256 + 4 * 599 and module.num_updates == 600 == trainer.global_step


# ------------------------------------------------------------------------------------------ Lightning
def test_bf16_mixed_precision_still_learns_the_identity():
    module = small(ent_coef_init=0.1, alpha_lr=1e-2)
    fit(module, GymDataModule(ContinuousIdentity, num_envs=4, batches_per_epoch=600), precision="bf16-mixed")
    s = torch.rand(256, 2, generator=torch.Generator().manual_seed(123)) * 2 - 1
    with torch.no_grad():
        error = (module.policy(s) - s).abs().max().item()
    assert error < 0.3, error


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_several_updates_per_batch_train_the_same_to_the_bit(precision):
    assert_updates_per_batch_is_the_same_training(
        functools.partial(small, learning_starts=64, batch_size=16, actor_hidden_sizes=(8,), critic_hidden_sizes=(8,)),
        lambda batches: GymDataModule(ContinuousIdentity, num_envs=4, batches_per_epoch=batches, seed=0), precision)


def test_resume_continues_env_steps_networks_replay_buffer_and_temperature_and_exports(tmp_path):
    module = small(save_replay_buffer=True, learning_starts=64, train_freq=2, gradient_steps=3)
    trainer = fit(module, GymDataModule(ContinuousIdentity, num_envs=2, batches_per_epoch=30))
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    first_steps = module.env_steps
    assert first_steps == 64 + 2 * 2 * 9  # 30 batches = 10 blocks of 3, one block per 2 vector steps after warm-up

    obs = np.random.default_rng(0).uniform(-1, 1, (16, 2)).astype(np.float32)
    loaded = assert_loads_weights_only_and_exports_the_same_policy(module, ckpt, tmp_path / "policy",
                                                                   ContinuousIdentity(), obs)
    assert loaded.env_steps == first_steps
    config = json.loads((tmp_path / "policy" / "policy.json").read_text())
    assert config["kind"] == "squashed_gaussian" and config["metadata"]["algorithm"] == "SAC"
    # the exported deterministic action is the bounds-scaled tanh of the mean
    with torch.no_grad():
        mean = module.policy.actor.mean_log_std(module.policy.encoder(torch.as_tensor(obs)))[0]
    np.testing.assert_allclose(load_policy(tmp_path / "policy").predict(obs), 2 * torch.tanh(mean).numpy(), atol=1e-6)

    resumed, capture = small(save_replay_buffer=True, learning_starts=64, train_freq=2, gradient_steps=3), CaptureStart()
    fit(resumed, GymDataModule(ContinuousIdentity, num_envs=2, batches_per_epoch=30), max_epochs=2,
        callbacks=[capture], ckpt_path=ckpt)
    assert capture.env_steps == first_steps
    for key, value in module.state_dict().items():  # networks, targets and log alpha
        torch.testing.assert_close(capture.state[key], value)
    assert capture.buffer_size == first_steps + 4  # the saved buffer, plus the first new block's 2 vector steps
    assert resumed.env_steps == first_steps + 2 * 2 * 10 and resumed.num_updates == 60


def test_config_trains_with_train_py_and_exports_a_loadable_policy(tmp_path, monkeypatch):
    export, last = run_train_py(monkeypatch, tmp_path, "sac_pendulum.yaml", "--trainer.max_steps", "3",
                                "--model.init_args.learning_starts", "50")
    policy = load_policy(export, env=gym.make("Pendulum-v1"))
    assert policy.kind == "squashed_gaussian"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["litzoo_class"] == "litzoo.modules.sac.SAC"
    assert checkpoint["litzoo_rl"]["env_steps"] == 52  # 50 random steps, then one per update
    obs = np.random.default_rng(0).uniform(-1, 1, (8, 3)).astype(np.float32)
    actions = policy.predict(obs)
    assert actions.shape == (8, 1) and np.abs(actions).max() <= 2.0  # Pendulum's torque bounds


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lightning as L
    import torch
    from litzoo.datamodules.gym import GymDataModule
    from litzoo.envs.toy import ContinuousIdentity
    from litzoo.modules import PPO, SAC

    torch.set_num_threads(1)
    out = sys.argv[1]

    class Record(L.Callback):
        def __init__(self, name):
            self.name = name
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == 0:
                self.first_obs = batch.obs[0].tolist()
        def on_train_end(self, trainer, module):
            flat = torch.cat([p.detach().flatten() for p in module.parameters()])
            record = {"first_obs": self.first_obs, "env_steps": module.env_steps, "updates": module.num_updates,
                      "params": flat.tolist(), "adam": int(trainer.optimizers[0].state[
                          next(module.critic.parameters())]["step"])}
            with open(f"{out}/{self.name}{trainer.global_rank}.json", "w") as f:
                json.dump(record, f)

    def trainer(name):
        return L.Trainer(max_epochs=1, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                         callbacks=[Record(name)], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)

    trainer("ppo").fit(PPO(hidden_sizes=(16, 16), n_steps=32, batch_size=16, n_epochs=4, lr=1e-2, target_kl=0.02,
                           normalize_observations=True, log_every_n_env_steps=64),
                       GymDataModule("CartPole-v1", num_envs=2, batches_per_epoch=3))
    trainer("sac").fit(SAC(actor_hidden_sizes=(16, 16), critic_hidden_sizes=(16, 16), learning_starts=32, batch_size=16,
                           normalize_observations=True, log_every_n_env_steps=64),
                       GymDataModule(ContinuousIdentity, num_envs=2, batches_per_epoch=20))
    """
)


def test_two_process_cpu_ddp_ranks_see_different_episodes_and_keep_identical_weights_ppo_and_sac(tmp_path):
    script = tmp_path / "ddp_ppo_sac.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=REPO, env=env, timeout=300,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, env_steps, updates in (("ppo", 3 * 32 * 2, 3), ("sac", 32 + 2 * 19, 20)):
        rank0, rank1 = (json.loads((tmp_path / f"{name}{r}.json").read_text()) for r in (0, 1))
        assert rank0["first_obs"] != rank1["first_obs"], name  # different episodes (and minibatches) ...
        assert rank0["env_steps"] == rank1["env_steps"] == env_steps and rank0["updates"] == rank1["updates"] == updates
        # ... yet the same weights (PPO: also the same number of AdamW steps, the early stop decided on the KL
        # averaged over ranks): gradients averaged in one all-reduce per step
        np.testing.assert_array_equal(rank0["params"], rank1["params"])
        assert rank0["adam"] == rank1["adam"], name


# ------------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_solves_pendulum():
    """configs/sac_pendulum.yaml's recipe (the zoo's: lr 1e-3, 256-256, learning_starts 100) for 8000 env steps."""
    datamodule = GymDataModule("Pendulum-v1", batches_per_epoch=8000)
    module = SAC(actor_lr=1e-3, critic_lr=1e-3, learning_starts=100, log_every_n_env_steps=10**6)
    fit(module, datamodule)
    returns = evaluate_policy(module.policy, lambda: gym.make("Pendulum-v1"), n_episodes=10, seed=10_000)["returns"]
    assert returns.mean() >= -200, returns


@pytest.mark.parametrize("method", ["sac", "td3", "dqn"])
def test_a_resume_without_the_replay_buffer_refills_learning_starts_transitions_before_updating(tmp_path, method):
    # The env-step count comes back from the checkpoint, the buffer (save_replay_buffer=False) does not: the first
    # updates of the resumed run must not sample a buffer of 1, 2, 3 ... transitions.
    import lightning as L

    from litzoo.modules import DQN, TD3
    from rl_helpers import Counter

    sizes: list[int] = []

    class BufferSize(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            sizes.append(len(module._buffer))

    def module():
        kw = dict(learning_starts=32, batch_size=16, buffer_size=64, log_every_n_env_steps=10**9, seed=3)
        if method == "dqn":
            return DQN(hidden_sizes=[8], train_freq=1, gradient_steps=1, **kw)
        cls = SAC if method == "sac" else TD3
        return cls(actor_hidden_sizes=(8,), critic_hidden_sizes=(8,), **kw)

    env = functools.partial(Counter, terminate_at=4) if method != "dqn" else "CartPole-v1"
    data = lambda: GymDataModule(env, num_envs=1, batches_per_epoch=8)  # noqa: E731
    fit(module(), data(), callbacks=[BufferSize()])
    assert sizes[0] == 32  # a fresh run: the first update after learning_starts env steps, as before
    trainer = fit(module(), data())
    trainer.save_checkpoint(tmp_path / "no_buffer.ckpt")
    sizes.clear()
    fit(module(), data(), max_epochs=2, callbacks=[BufferSize()], ckpt_path=tmp_path / "no_buffer.ckpt")
    assert sizes and sizes[0] == 32  # refilled first
