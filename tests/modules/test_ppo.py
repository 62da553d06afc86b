"""PPO: bad input; the clipped surrogate, its gradient and the clipped value loss on hand-computed cases; the
minibatch/epoch schedule (which indices, how many AdamW steps, one trainer step per rollout); the target_kl early
stop; the lr/clip schedules; learning a contextual bandit and a continuous identity; resume,
load_from_checkpoint(weights_only=True), export, bf16-mixed, the configs with train.py (2-process CPU DDP: in
test_sac.py); slow: CartPole-v1 solved, Pendulum-v1 improved."""

import json
import math

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch

import litzoo.modules.ppo as ppo_module
from litzoo.datamodules.gym import GymDataModule
from litzoo.envs.toy import ContextBandit, ContinuousIdentity
from litzoo.modules.ppo import PPO
from litzoo.rl.buffers import shuffled_minibatch_indices
from litzoo.rl.losses import ppo_clipped_surrogate, ppo_value_loss
from litzoo.rl.policy import evaluate_policy, load_policy

from rl_helpers import (
    CaptureStart,
    assert_loads_weights_only_and_exports_the_same_policy,
    bandit_policy_and_features,
    fit,
    run_train_py,
)



# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, match", [
    ({"clip_range": 0.0}, "clip_range=0.0 must be a finite number > 0"),
    ({"clip_range_final": 0.3}, r"clip_range_final=0.3 must be in \[0, 0.2\]"),
    ({"lr_final": 1.0}, r"lr_final=1.0 must be in \[0, 0.0003\]"),
    ({"target_kl": 0.0}, r"target_kl=0.0 must be > 0 or None \(no early stop"),
    ({"clip_range_vf": -1.0}, r"clip_range_vf=-1.0 must be > 0 or None \(no value clipping\)"),
    ({"batch_size": 0}, "batch_size=0 must be a positive integer"),
    ({"n_epochs": 1.5}, "n_epochs=1.5 must be a positive integer"),
    ({"gae_lambda": 1.5}, r"gae_lambda=1.5 must be in \[0, 1\]"),
    ({"total_steps": 0}, "total_steps=0 must be a positive integer"),
])
def test_invalid_hyperparameters_raise_value_errors_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PPO(**kwargs)


# ------------------------------------------------------------------------------------------ losses
def test_clipped_surrogate_and_its_gradient_match_the_hand_computed_case():
    # epsilon = 0.2; one sample per case of min(r A, clip(r) A):
    #   r=1.5 A=+1 -> 1.2 (clipped: no gradient)   r=0.5 A=-1 -> -0.8 (clipped: no gradient)
    #   r=1.1 A=+2 -> 2.2 (inside)                 r=0.5 A=+1 -> 0.5 (below, but min keeps the unclipped r A)
    #   r=1.5 A=-1 -> -1.5 (above, min keeps r A)
    ratios = torch.tensor([1.5, 0.5, 1.1, 0.5, 1.5], dtype=torch.float64)
    advantages = torch.tensor([1.0, -1.0, 2.0, 1.0, -1.0], dtype=torch.float64)
    old = torch.tensor([-1.0, -0.5, -2.0, -0.3, -1.2], dtype=torch.float64)
    log_probs = (old + ratios.log()).requires_grad_(True)
    result = ppo_clipped_surrogate(log_probs, old, advantages, clip_range=0.2)
    assert result.loss.item() == pytest.approx(-(1.2 - 0.8 + 2.2 + 0.5 - 1.5) / 5, abs=1e-12)  # -0.32
    result.loss.backward()
    # d(-mean min)/d log pi = -A r / N where the unclipped term is the min, 0 where the clipped one is
    np.testing.assert_allclose(log_probs.grad.numpy(), [0.0, 0.0, -2.2 / 5, -0.5 / 5, 1.5 / 5], atol=1e-12)
    assert result.clip_fraction.item() == pytest.approx(4 / 5)
    assert result.approx_kl.item() == pytest.approx(float(((ratios - 1) - ratios.log()).mean()), abs=1e-12)


def test_value_loss_clips_pessimistically_around_the_rollout_values():
    values = torch.tensor([1.0, 3.0, 0.0], requires_grad=True)
    old, returns = torch.tensor([0.0, 2.0, 0.0]), torch.tensor([2.0, 2.0, 1.0])
    # unclipped (v - R)^2 = 1, 1, 1; clipped v = 0.5, 2.5, 0 -> (v_c - R)^2 = 2.25, 0.25, 1; max = 2.25, 1, 1
    loss = ppo_value_loss(values, old, returns, clip_range_vf=0.5)
    assert loss.item() == pytest.approx((2.25 + 1 + 1) / 3)
    loss.backward()  # sample 0: the clipped term wins, and it has no gradient in v; the others 2 (v - R) / 3
    np.testing.assert_allclose(values.grad.numpy(), [0.0, 2 / 3, -2 / 3], atol=1e-7)
    assert ppo_value_loss(values, old, returns).item() == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_closed_form_log_probs_and_entropy_equal_torch_distributions(kind):
    from litzoo.nets.actors_critics import CategoricalActor, GaussianActor

    actor = GaussianActor(3, 2, log_std_init=-0.4) if kind == "gaussian" else CategoricalActor(3, 4)
    features = torch.randn(16, 3)
    actions = torch.randn(16, 2) if kind == "gaussian" else torch.randint(4, (16,))
    dist = actor.distribution(features)
    log_probs, entropy = actor.log_prob_and_entropy(features, actions)
    torch.testing.assert_close(log_probs, actor.log_prob(dist, actions))
    torch.testing.assert_close(entropy.expand(16), actor.entropy(dist))


def test_minibatch_indices_are_one_fresh_permutation_per_epoch_cut_in_order():
    got = list(shuffled_minibatch_indices(10, 4, n_epochs=2, generator=torch.Generator().manual_seed(5)))
    assert [e for e, _ in got] == [0, 0, 0, 1, 1, 1] and [len(i) for _, i in got] == [4, 4, 2] * 2
    g = torch.Generator().manual_seed(5)
    expected = [torch.randperm(10, generator=g) for _ in range(2)]
    for epoch in range(2):
        torch.testing.assert_close(torch.cat([i for e, i in got if e == epoch]), expected[epoch], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------ the update schedule
def record_minibatches(monkeypatch, module):
    """Record every minibatch's indices and the approximate KL measured before its (possible) step."""
    seen = {"indices": [], "kl": []}
    original_indices, original_loss = ppo_module.shuffled_minibatch_indices, module.minibatch_loss

    def indices(*args, **kwargs):
        for epoch, idx in original_indices(*args, **kwargs):
            seen["indices"].append((epoch, idx.clone()))
            yield epoch, idx

    def loss(batch, clip_range, features=None):
        out = original_loss(batch, clip_range, features)
        seen["kl"].append(float(out[1]["approx_kl"]))
        return out

    monkeypatch.setattr(ppo_module, "shuffled_minibatch_indices", indices)
    monkeypatch.setattr(module, "minibatch_loss", loss)
    return seen


def adam_steps(module, trainer):
    return int(trainer.optimizers[0].state[module.critic[0].weight]["step"])


def test_each_rollout_takes_n_epochs_times_minibatches_adamw_steps_and_one_trainer_step(monkeypatch):
    module = PPO(n_steps=10, batch_size=8, n_epochs=3, log_every_n_env_steps=10**9)
    seen = record_minibatches(monkeypatch, module)
    trainer = fit(module, GymDataModule("CartPole-v1", num_envs=2, batches_per_epoch=2))
    assert trainer.global_step == 2 and module.num_updates == 2  # max_steps counts rollouts
    assert adam_steps(module, trainer) == 2 * 3 * math.ceil(20 / 8) and module.last_minibatch_steps == 9
    assert [len(i) for _, i in seen["indices"]] == [8, 8, 4] * 3 * 2
    for r in range(2):  # per rollout and epoch: every one of the 20 steps exactly once
        for epoch in range(3):
            idx = torch.cat([i for k, (e, i) in enumerate(seen["indices"][9 * r: 9 * r + 9]) if e == epoch])
            assert sorted(idx.tolist()) == list(range(20))
    assert seen["kl"][0] == 0.0  # the first minibatch is scored by the very policy that acted


def test_target_kl_stops_the_epochs_at_the_first_minibatch_over_one_and_a_half_target(monkeypatch):
    # A large lr makes the KL grow within the first rollout's epochs.
    module = PPO(n_steps=64, batch_size=16, n_epochs=10, lr=3e-2, target_kl=0.01, log_every_n_env_steps=1)
    seen = record_minibatches(monkeypatch, module)
    trainer = fit(module, GymDataModule("CartPole-v1", num_envs=2, batches_per_epoch=1))
    planned = 10 * 128 // 16
    stop = next(i for i, kl in enumerate(seen["kl"]) if kl > 1.5 * 0.01)
    assert 0 < stop < planned and len(seen["kl"]) == stop + 1  # nothing scored after the stop
    assert module.last_minibatch_steps == stop and adam_steps(module, trainer) == stop  # no step for the stopper
    assert trainer.global_step == 1
    assert trainer.callback_metrics["train/stopped_at_epoch"] == seen["indices"][stop][0]


def test_linear_schedules_reach_the_final_values_over_the_run(monkeypatch):
    module = PPO(n_steps=4, batch_size=8, n_epochs=1, lr=1e-3, lr_final=0.0, clip_range=0.2, clip_range_final=0.1,
                 log_every_n_env_steps=1)
    lrs, clips = [], []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            lrs.append(float(trainer.callback_metrics["train/lr"]))
            clips.append(float(trainer.callback_metrics["train/clip_range"]))

    fit(module, GymDataModule("CartPole-v1", num_envs=2, batches_per_epoch=4), callbacks=[Record()])
    # 4 rollouts (max_epochs=1 x 4 batches): rollout k uses the fraction 1 - k / 4
    np.testing.assert_allclose(lrs, [1e-3, 7.5e-4, 5e-4, 2.5e-4], rtol=1e-6)
    np.testing.assert_allclose(clips, [0.2, 0.175, 0.15, 0.125], rtol=1e-6)


# ------------------------------------------------------------------------------------------ learning
def test_learns_the_contextual_bandit_and_its_critic_the_exact_state_values():
    module = PPO(n_steps=8, batch_size=32, n_epochs=4, lr=3e-3, log_every_n_env_steps=10**9)
    trainer = fit(module, GymDataModule(ContextBandit, num_envs=16, batches_per_epoch=40))
    pi, features = bandit_policy_and_features(module)
    np.testing.assert_array_equal(pi.argmax(1), ContextBandit.R.argmax(1))
    assert pi.max(1).min() > 0.9, pi
    v = module.critic(features).squeeze(-1).detach().numpy()
    np.testing.assert_allclose(v, (pi * ContextBandit.R).sum(1), atol=0.05)  # V^pi(c) = sum_a pi(a|c) R[c, a]
    assert module.env_steps == 40 * 8 * 16 and trainer.global_step == 40


def test_gaussian_policy_learns_the_continuous_identity():
    module = PPO(n_steps=8, batch_size=32, n_epochs=4, lr=3e-3, log_every_n_env_steps=10**6)
    fit(module, GymDataModule(ContinuousIdentity, num_envs=16, batches_per_epoch=60))
    s = np.linspace(-1, 1, 21, dtype=np.float32)[:, None]
    assert np.abs(module.policy.predict(s) - s).max() < 0.2, np.abs(module.policy.predict(s) - s).max()
    assert module.policy.actor.log_std.exp().item() < 0.6  # exploration costs -std^2: the std shrinks from 1


# ------------------------------------------------------------------------------------------ Lightning
def test_bf16_mixed_precision_gaussian_policy_learns_the_continuous_identity():
    # The Gaussian path (bf16 means under autocast, float32 log-std and losses); the categorical one is A2C's/TRPO's.
    module = PPO(n_steps=8, batch_size=32, n_epochs=4, lr=3e-3, log_every_n_env_steps=10**6)
    fit(module, GymDataModule(ContinuousIdentity, num_envs=16, batches_per_epoch=60), precision="bf16-mixed")
    s = np.linspace(-1, 1, 21, dtype=np.float32)[:, None]
    assert np.abs(module.policy.predict(s) - s).max() < 0.2  # measured 0.10


def test_resume_continues_env_steps_networks_normalisers_and_checkpoint_loads_weights_only(tmp_path):
    kwargs = dict(n_steps=16, batch_size=16, n_epochs=2, normalize_observations=True, normalize_rewards=True,
                  lr_final=0.0, log_every_n_env_steps=64)
    module = PPO(**kwargs)
    trainer = fit(module, GymDataModule("CartPole-v1", num_envs=2, batches_per_epoch=5))
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    assert module.env_steps == 5 * 16 * 2 and trainer.global_step == 5
    assert module.policy.encoder.normalizer.rms.count == 5 * 16 * 2  # every observation acted on
    assert module.return_normalizer.rms.count == 5 * 16 * 2

    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    assert_loads_weights_only_and_exports_the_same_policy(module, ckpt, tmp_path / "policy", gym.make("CartPole-v1"), obs)
    assert json.loads((tmp_path / "policy" / "policy.json").read_text())["metadata"]["algorithm"] == "PPO"

    resumed, capture = PPO(**kwargs), CaptureStart()
    fit(resumed, GymDataModule("CartPole-v1", num_envs=2, batches_per_epoch=5), max_epochs=2, callbacks=[capture],
        ckpt_path=ckpt)
    assert capture.env_steps == 160 and resumed.env_steps == 320 and resumed.num_updates == 10
    for key, value in module.state_dict().items():  # networks and normaliser statistics
        torch.testing.assert_close(capture.state[key], value)


@pytest.mark.parametrize("config, env_id, kind, rollout", [("ppo_cartpole.yaml", "CartPole-v1", "categorical", 32 * 8),
                                                           ("ppo_pendulum.yaml", "Pendulum-v1", "gaussian", 1024 * 4)])
def test_config_trains_with_train_py_and_exports_a_loadable_policy(tmp_path, monkeypatch, config, env_id, kind, rollout):
    export, last = run_train_py(monkeypatch, tmp_path, config, "--trainer.max_steps", "2",
                                "--model.init_args.n_epochs", "1")
    policy = load_policy(export, env=gym.make(env_id))
    assert policy.kind == kind
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["litzoo_class"] == "litzoo.modules.ppo.PPO"
    assert checkpoint["litzoo_rl"]["env_steps"] == 2 * rollout


# 2-process CPU DDP: tests/modules/test_sac.py runs PPO and SAC in one launch (one process start for both).


# ------------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_solves_cartpole(tmp_path):
    """configs/ppo_cartpole.yaml's recipe (the zoo's); solved = the best policy RLEvaluation keeps scores >= 475 on
    20 episodes, re-checked on other episodes from its export."""
    from litzoo.callbacks import RLEvaluation

    module = PPO(n_steps=32, batch_size=256, n_epochs=20, gamma=0.98, gae_lambda=0.8, lr=1e-3, lr_final=0.0,
                 clip_range=0.2, clip_range_final=0.0, total_steps=390, log_every_n_env_steps=10**6)
    evaluation = RLEvaluation(every_n_env_steps=10240, n_episodes=20, dirpath=str(tmp_path), plot=False)
    fit(module, GymDataModule("CartPole-v1", num_envs=8, batches_per_epoch=300), callbacks=[evaluation])
    assert evaluation.best_mean_return >= 475, [(h["env_steps"], h["mean_return"]) for h in evaluation.history]
    best = load_policy(tmp_path / "best_policy")
    returns = evaluate_policy(best, lambda: gym.make("CartPole-v1"), n_episodes=20, seed=10_000)["returns"]
    assert returns.mean() >= 475, returns


@pytest.mark.slow
def test_improves_pendulum():
    datamodule = GymDataModule("Pendulum-v1", num_envs=4, batches_per_epoch=25)
    module = PPO(observation_space=datamodule.observation_space, action_space=datamodule.action_space,
                 n_steps=1024, batch_size=64, n_epochs=10, gamma=0.9, gae_lambda=0.95, lr=1e-3,
                 normalize_observations=True, normalize_rewards=True, log_every_n_env_steps=10**6)
    before = evaluate_policy(module.policy, lambda: gym.make("Pendulum-v1"), n_episodes=10, seed=10_000)["returns"].mean()
    fit(module, datamodule)
    after = evaluate_policy(module.policy, lambda: gym.make("Pendulum-v1"), n_episodes=10, seed=10_000)["returns"].mean()
    # measured (seed 0): -214 after 25 rollouts of 4 x 1024 steps (~40 CPU-s)
    assert after >= -400, (before, after)


@pytest.mark.parametrize("name", ["PPO", "TRPO"])
def test_fp16_loss_scaling_is_refused_at_setup_since_the_module_steps_its_optimizer_itself(name):
    # On a GPU, precision="16-mixed" brings a GradScaler that never sees PPO's minibatch steps or TRPO's step:
    # scaled gradients would reach AdamW unscaled, and inf steps would not be skipped.
    import lightning as L
    from lightning.pytorch.plugins import MixedPrecision

    import litzoo.modules

    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = L.Trainer(max_steps=1, plugins=[plugin], logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    with pytest.raises(ValueError, match=f"{name} steps its optimizer itself.*use --trainer.precision bf16-mixed"):
        trainer.fit(getattr(litzoo.modules, name)(n_steps=8), GymDataModule("CartPole-v1", num_envs=1))


# ------------------------------------------------------------------------------------------ the direct backward
class ListensToBackward(L.Callback):
    """A callback on the backward hooks: Lightning's own manual_backward path must then run (and call it)."""

    def __init__(self) -> None:
        self.calls = 0

    def on_after_backward(self, trainer, pl_module) -> None:
        self.calls += 1


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_the_direct_backward_gives_lightnings_weights_to_the_bit_and_yields_to_backward_hooks(precision):
    def run(callbacks):
        torch.manual_seed(0)
        module = PPO(n_steps=16, batch_size=8, n_epochs=2, max_grad_norm=0.5, log_every_n_env_steps=10**9, seed=0)
        fit(module, GymDataModule("Pendulum-v1", num_envs=2, batches_per_epoch=3, seed=0), precision=precision,
            callbacks=callbacks)
        return module

    direct = run([])
    listener = ListensToBackward()
    hooked = run([listener])
    assert direct._direct_backward and not hooked._direct_backward
    assert listener.calls == 3 * 2 * 4  # every AdamW step of the 3 rollouts went through Lightning's hooks
    for (name, a), (_, b) in zip(direct.state_dict().items(), hooked.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
