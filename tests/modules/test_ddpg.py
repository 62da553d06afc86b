"""DDPG / TD3: bad input; learning a continuous identity and a scalar LQR (policy and critic vs the
closed-form solution, through one-step time limits); resume, load_from_checkpoint(weights_only=True),
bf16-mixed (TD3), the configs with train.py; slow: Pendulum-v1."""

import copy
import functools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from litzoo.datamodules.gym import GymDataModule
from litzoo.modules.ddpg import DDPG, TD3
from litzoo.envs import toy
from litzoo.rl.policy import evaluate_policy, load_policy, space_to_spec

from rl_helpers import (CaptureStart, assert_loads_weights_only_and_exports_the_same_policy,
                        assert_updates_per_batch_is_the_same_training, fit, run_train_py)



# One step: observe s ~ U[-1, 1]^2, act a in [-2, 2]^2, reward -||a - s||^2: mu*(s) = s, Q*(s, a) = -||a - s||^2.
ContinuousIdentity = functools.partial(toy.ContinuousIdentity, dim=2)


class ScalarLQR(gym.Env):
    """Discounted scalar LQR: s' = s + a, r = -(s^2 + a^2), s_0 ~ U[-1, 1]; a continuing task.

    With gamma = 0.9 the Riccati equation P = 1 + gamma P / (1 + gamma P) gives V*(s) = -P s^2,
    P = (0.8 + sqrt(4.24)) / 1.8 = 1.588, and mu*(s) = -K s, K = gamma P / (1 + gamma P) = 0.588.
    """

    def __init__(self):
        self.observation_space = spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = float(self.np_random.uniform(-1, 1))
        return np.array([self.s], np.float32), {}

    def step(self, action):
        a = float(np.clip(action[0], -1, 1))
        reward = -(self.s**2 + a**2)
        self.s = float(np.clip(self.s + a, -2, 2))
        return np.array([self.s], np.float32), reward, False, False, {}


LQR_P = (0.8 + math.sqrt(0.64 + 3.6)) / 1.8
LQR_K = 0.9 * LQR_P / (1 + 0.9 * LQR_P)


def small(cls=DDPG, **kwargs):
    defaults = dict(actor_hidden_sizes=(32, 32), critic_hidden_sizes=(64, 64), learning_starts=256, batch_size=64,
                    exploration_std=0.3, tau=0.05, log_every_n_env_steps=500)
    return cls(**{**defaults, **kwargs})


def identity_errors(module) -> tuple[float, float]:
    """max |mu(s) - s| and mean |Q(s, mu(s)) - Q*(s, mu(s))| on 256 fresh states."""
    s = torch.rand(256, 2, generator=torch.Generator().manual_seed(123)) * 2 - 1
    with torch.no_grad():
        a = module.policy(s)
        q = module.critic.q1(module.policy.encoder(s), module.policy.unscale_action(a))
    return (a - s).abs().max().item(), (q + (a - s).pow(2).sum(-1)).abs().mean().item()


# ------------------------------------------------------------------------------------------ bad input
def test_discrete_action_space_raises_value_error_suggesting_a_discrete_method():
    with pytest.raises(ValueError, match=r"Box action space.*Discrete\(n=2\).*ActorCritic.*DQN"):
        DDPG(observation_space=space_to_spec(spaces.Box(-1, 1, (4,))), action_space=space_to_spec(spaces.Discrete(2)))
    with pytest.raises(ValueError, match=r"TD3 needs a continuous Box action space.*Discrete\(n=2\)"):
        fit(TD3(), GymDataModule("CartPole-v1", batches_per_epoch=1))


@pytest.mark.parametrize("kwargs, match", [
    ({"exploration_noise": "uniform"}, "exploration_noise='uniform'"),
    ({"tau": 1.5}, r"tau=1.5 must be in \[0, 1\]"),
    ({"policy_delay": 0}, "policy_delay=0"),
    ({"actor_lr": 0.0}, "actor_lr=0.0"),
    ({"flush_denormals": 1}, "flush_denormals=1 must be True or False"),
])
def test_invalid_hyperparameters_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DDPG(**kwargs)


def test_infinite_action_bounds_are_rejected_for_the_tanh_actor():
    with pytest.raises(ValueError, match="finite action bounds"):
        DDPG(observation_space=spaces.Box(-1, 1, (2,)), action_space=spaces.Box(-np.inf, np.inf, (2,)))


@pytest.mark.parametrize("flush", [True, False])
def test_the_optimizer_step_alone_runs_with_denormals_flushed_when_asked(flush):
    import lightning as L

    from litzoo.rl.utils import flushing_denormals

    module = small(TD3, learning_starts=64, batch_size=16, actor_hidden_sizes=(8,), critic_hidden_sizes=(8,),
                   flush_denormals=flush)
    seen = []

    kernel = torch._fused_adamw_  # what both torch's step (the first) and fused_adamw_step (the rest) launch

    def spy(*args, **kwargs):
        seen.append(flushing_denormals())
        return kernel(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "_fused_adamw_", spy)
        trainer = fit(module, GymDataModule(ContinuousIdentity, num_envs=4, batches_per_epoch=3))
    assert len(trainer.optimizers[0].param_groups) == 1  # actor and critic share one group: one kernel per update
    assert seen == [flush] * 3
    assert not flushing_denormals()  # the caller's setting (off) is back after each step


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_the_direct_step_gives_lightnings_weights_and_step_count_to_the_bit_and_yields_to_step_hooks(precision):
    import lightning as L

    class ListensToStep(L.Callback):
        calls = 0

        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            self.calls += 1

    def run(callbacks):
        torch.manual_seed(0)
        module = small(TD3, learning_starts=64, batch_size=16, actor_hidden_sizes=(8,), critic_hidden_sizes=(8,),
                       seed=0)
        trainer = fit(module, GymDataModule(ContinuousIdentity, num_envs=4, batches_per_epoch=12, seed=0),
                      precision=precision, callbacks=callbacks)
        return module, trainer

    torch_steps: list[int] = []  # the direct run steps with fused_adamw_step's lists (torch's step only creates the
    original = torch.optim.AdamW.step  # state on the first; TD3's critic-only updates skip the actor in both)

    def counted(self, *args, **kwargs):
        torch_steps.append(id(self))
        return original(self, *args, **kwargs)

    listener = ListensToStep()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.AdamW, "step", counted)
        direct, t_direct = run([])
        hooked, t_hooked = run([listener])
    assert direct._direct_step and not hooked._direct_step and hooked._direct_backward
    assert torch_steps == [id(t_direct.optimizers[0])] + [id(t_hooked.optimizers[0])] * 12
    assert listener.calls == 12  # every update went through Lightning's optimizer step and its hooks
    assert t_direct.global_step == t_hooked.global_step == direct.num_updates == 12  # max_steps still counts updates
    for (name, a), (_, b) in zip(direct.state_dict().items(), hooked.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    adam_direct, adam_hooked = t_direct.optimizers[0].state_dict(), t_hooked.optimizers[0].state_dict()
    for key, state in adam_direct["state"].items():
        for name in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[name], adam_hooked["state"][key][name], rtol=0, atol=0)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_several_updates_per_batch_train_the_same_to_the_bit(precision):
    assert_updates_per_batch_is_the_same_training(
        functools.partial(small, TD3, learning_starts=64, batch_size=16, actor_hidden_sizes=(8,),
                          critic_hidden_sizes=(8,)),
        lambda batches: GymDataModule(ContinuousIdentity, num_envs=4, batches_per_epoch=batches, seed=0), precision)


def test_updates_per_batch_refuses_step_schedules_it_would_skip_and_a_fit_without_the_env_stream(tmp_path):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    from litzoo.callbacks.ema import EMA
    from litzoo.rl.buffers import ReplayBatch

    env = ContinuousIdentity()
    tiny = functools.partial(small, TD3, learning_starts=16, batch_size=16, actor_hidden_sizes=(8,),
                             critic_hidden_sizes=(8,), updates_per_batch=4, seed=0,
                             observation_space=env.observation_space, action_space=env.action_space)
    data = functools.partial(GymDataModule, ContinuousIdentity, num_envs=4, batches_per_epoch=2, seed=0)
    for callback, match in ((EMA(every_n_steps=2), r"EMA\(every_n_steps=2\) with updates_per_batch=4.*multiple of 4"),
                            (ModelCheckpoint(tmp_path, every_n_train_steps=5),
                             r"every_n_train_steps=5\) .*act only every 20 steps")):
        with pytest.raises(ValueError, match=match):
            fit(tiny(), data(), callbacks=[callback], enable_checkpointing=True)
    ok = ModelCheckpoint(tmp_path, every_n_train_steps=8, save_top_k=-1)
    fit(tiny(), data(batches_per_epoch=4), callbacks=[ok], enable_checkpointing=True)
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["epoch=0-step=16.ckpt", "epoch=0-step=8.ckpt"]

    class Scaled(TD3):
        def on_after_batch_transfer(self, batch, dataloader_idx):
            return batch

    with pytest.raises(ValueError, match="overrides on_after_batch_transfer"):
        fit(Scaled(learning_starts=16, batch_size=16, actor_hidden_sizes=(8,), critic_hidden_sizes=(8,),
                   updates_per_batch=2), data())
    offline = [ReplayBatch(torch.rand(16, 2), torch.rand(16, 2), torch.rand(16), torch.rand(16, 2), torch.zeros(16))] * 2
    with pytest.raises(ValueError, match="updates_per_batch=4 pulls more batches from the env stream.*GymDataModule"):
        fit(tiny(), DataLoader(offline, batch_size=None))
    module = tiny()
    fit(module, data())  # the stream of a finished fit is not pulled by the next one on other data
    with pytest.raises(ValueError, match="this fit has none"):
        fit(module, DataLoader(offline, batch_size=None))


def test_updates_per_batch_keeps_ema_and_step_checkpoints_on_schedule_also_after_a_resume_off_the_grid(tmp_path):
    from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint

    from litzoo.callbacks.ema import EMA

    tiny = functools.partial(small, TD3, learning_starts=16, batch_size=16, actor_hidden_sizes=(8,),
                             critic_hidden_sizes=(8,), updates_per_batch=4, seed=0)
    data = functools.partial(GymDataModule, ContinuousIdentity, num_envs=4, batches_per_epoch=100, seed=0)
    env = ContinuousIdentity()  # (EMA copies the module at setup: networks built from the spaces)
    module = tiny(observation_space=env.observation_space, action_space=env.action_space)
    ema, initial = EMA(decay=0.5, warmup=False, every_n_steps=4), copy.deepcopy(module.state_dict())
    fit(module, data(), max_steps=12, callbacks=[ema])
    assert int(ema._average_model.n_averaged) == 3  # one due step (0, 4, 8) crossed per batch of 4 updates
    assert not torch.equal(module.state_dict()["policy.actor.net.0.weight"], initial["policy.actor.net.0.weight"])
    with pytest.raises(ValueError, match="EMAWeightAveraging decides once per batch.*litzoo.callbacks.EMA"):
        fit(tiny(), data(), max_steps=4, callbacks=[EMAWeightAveraging()])
    # stopped off the grid of 4 (max_steps=6), resumed: the next batch runs 2 updates, then 4 again, so a
    # checkpoint every 8 steps still sees steps 8 and 16
    first = tiny()
    fit(first, data(), max_steps=6, callbacks=[ModelCheckpoint(tmp_path / "a", save_last=True)],
        enable_checkpointing=True)
    every_8 = ModelCheckpoint(tmp_path / "b", every_n_train_steps=8, save_top_k=-1)
    trainer = fit(tiny(), data(), max_steps=16, max_epochs=-1, callbacks=[every_8], enable_checkpointing=True,
                  ckpt_path=str(tmp_path / "a" / "last.ckpt"))
    assert trainer.global_step == 16
    assert sorted(p.name for p in (tmp_path / "b").glob("*.ckpt")) == ["epoch=0-step=16.ckpt", "epoch=0-step=8.ckpt"]


def test_ema_averages_networks_built_from_the_datamodule_as_those_built_from_the_spaces():
    # WeightAveraging copies the module in its setup, before the module's own: networks built from the
    # GymDataModule's spaces must exist by then (configure_model builds them), else the copy has no weights
    from litzoo.callbacks.ema import EMA

    env = ContinuousIdentity()
    data = functools.partial(GymDataModule, ContinuousIdentity, num_envs=4, batches_per_epoch=12, seed=0)
    class OwnSetup(TD3):  # a user's subclass whose setup adds to RLModule's
        def setup(self, stage):
            super().setup(stage)
            self.ready = True

    results = []
    for spaces_given in (True, False):
        torch.manual_seed(0)
        kwargs = dict(observation_space=env.observation_space, action_space=env.action_space) if spaces_given else {}
        module = small(TD3 if spaces_given else OwnSetup, learning_starts=16, batch_size=16, actor_hidden_sizes=(8,),
                       critic_hidden_sizes=(8,), seed=0, **kwargs)
        ema = EMA(decay=0.5, warmup=False)
        fit(module, data(), callbacks=[ema])
        results.append((int(ema._average_model.n_averaged), module.state_dict()))
    (n_given, given), (n_built, built) = results
    assert n_given == n_built == 12
    assert given.keys() == built.keys()
    for name in given:
        torch.testing.assert_close(built[name], given[name], rtol=0, atol=0, msg=name)


def test_nan_guard_rolls_back_to_the_batch_start_and_says_which_step_under_updates_per_batch():
    from litzoo.callbacks.nan_guard import NaNGuard, NonFiniteLossError

    class PoisonedAt6(TD3):
        def _backward_and_step(self, optimizer, loss, *args, **kwargs):
            return super()._backward_and_step(optimizer, loss * float("nan") if self.num_updates == 6 else loss,
                                              *args, **kwargs)

    def build():
        torch.manual_seed(0)
        return PoisonedAt6(actor_hidden_sizes=(8,), critic_hidden_sizes=(8,), learning_starts=64, batch_size=16,
                           seed=0, updates_per_batch=4)

    data = functools.partial(GymDataModule, ContinuousIdentity, num_envs=4, batches_per_epoch=10, seed=0)
    fit(after_4 := build(), data(), max_steps=4)
    module = build()
    with pytest.raises(NonFiniteLossError, match="at global step 6 .*rolled back to those before step 4;"):
        fit(module, data(), max_steps=20, callbacks=[NaNGuard(every_n_steps=2)])
    for (name, a), (_, b) in zip(module.state_dict().items(), after_4.state_dict().items()):
        if name.startswith(("policy", "critic", "actor_target", "critic_target")):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # a fit that raised ran no on_train_end: the next fit still does not pull from its env stream
    from torch.utils.data import DataLoader

    from litzoo.rl.buffers import ReplayBatch

    offline = [ReplayBatch(torch.rand(16, 2), torch.rand(16, 2), torch.rand(16), torch.rand(16, 2), torch.zeros(16))] * 2
    with pytest.raises(ValueError, match="this fit has none"):
        fit(module, DataLoader(offline, batch_size=None))


# ------------------------------------------------------------------------------------------ learning
def test_ddpg_learns_the_continuous_identity_and_its_critic_the_exact_q():
    module = small()
    trainer = fit(module, GymDataModule(ContinuousIdentity, num_envs=4, batches_per_epoch=1500))
    policy_error, critic_error = identity_errors(module)
    assert policy_error < 0.25, policy_error  # actions span [-2, 2]: the scaling to the bounds is right
    assert critic_error < 0.1, critic_error
    assert module.env_steps == 256 + 4 * 1499 and module.num_updates == 1500 == trainer.global_step
    # logged episode statistics: one-step episodes whose return -||a - s||^2 is now the exploration
    # noise's cost, E||sigma * half_range * eps||^2 = 2 * (0.3 * 2)^2 = 0.72 (a bit less: actions are clipped)
    assert -1.0 < trainer.callback_metrics["rollout/ep_return"] < -0.4
    assert trainer.callback_metrics["rollout/ep_length"] == 1


def test_td3_learns_the_continuous_identity_in_bf16_mixed_precision():
    # TD3's twin critics, target smoothing and delayed actor, all under CPU bf16 autocast.
    module = small(TD3)
    trainer = fit(module, GymDataModule(ContinuousIdentity, num_envs=4, batches_per_epoch=1200), precision="bf16-mixed")
    assert module.critic.num_critics == 2 and module.hparams.policy_delay == 2
    assert math.isfinite(float(trainer.callback_metrics["train/critic_loss"]))
    policy_error, critic_error = identity_errors(module)
    assert policy_error < 0.3, policy_error
    assert critic_error < 0.15, critic_error


def test_ddpg_bootstraps_through_time_limits_and_learns_the_exact_lqr_solution():
    # Every episode is cut after ONE step (a truncation, not a termination). Only a learner that
    # bootstraps from the final observation can find the far-sighted optimum mu*(s) = -0.588 s and
    # V*(s) = -1.588 s^2; treating the cut as terminal learns the myopic a = 0 (measured: errors 0.62, 0.60).
    module = small(gamma=0.9, learning_starts=500)
    fit(module, GymDataModule(ScalarLQR, num_envs=4, batches_per_epoch=1200, max_episode_steps=1))
    s = torch.linspace(-1, 1, 41)[:, None]
    with torch.no_grad():
        a = module.policy(s)
        q = module.critic.q1(module.policy.encoder(s), module.policy.unscale_action(a))
    assert (a + LQR_K * s).abs().max() < 0.1
    assert (q + LQR_P * s[:, 0] ** 2).abs().max() < 0.2  # Q(s, mu(s)) = V(s); values down to -1.59


def test_ou_noise_follows_its_discretised_stochastic_differential_equation():
    module = DDPG(observation_space=spaces.Box(-1, 1, (1,)), action_space=spaces.Box(-1, 1, (3,)),
                  exploration_noise="ou", exploration_std=0.2, ou_theta=0.5, ou_dt=0.1)
    module._generator = torch.Generator().manual_seed(0)
    state = torch.zeros(2, 3)
    first = module._exploration_noise((2, 3), state).clone()
    second = module._exploration_noise((2, 3), state)
    generator = torch.Generator().manual_seed(0)
    eps1, eps2 = torch.randn((2, 3), generator=generator), torch.randn((2, 3), generator=generator)
    x1 = 0.2 * math.sqrt(0.1) * eps1  # x_{k+1} = x_k - theta x_k dt + sigma sqrt(dt) eps, from x_0 = 0
    torch.testing.assert_close(first, x1)
    torch.testing.assert_close(second, x1 - 0.5 * x1 * 0.1 + 0.2 * math.sqrt(0.1) * eps2)


# ------------------------------------------------------------------------------------------ Lightning
def test_resume_continues_env_steps_networks_and_replay_buffer_and_checkpoint_loads_weights_only(tmp_path):
    module = small(save_replay_buffer=True, learning_starts=64)
    trainer = fit(module, GymDataModule(ContinuousIdentity, num_envs=2, batches_per_epoch=50))
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    first_steps = module.env_steps
    assert first_steps == 64 + 2 * 49

    obs = np.random.default_rng(0).uniform(-1, 1, (16, 2)).astype(np.float32)
    loaded = assert_loads_weights_only_and_exports_the_same_policy(module, ckpt, tmp_path / "policy",
                                                                   ContinuousIdentity(), obs)
    assert loaded.env_steps == first_steps

    resumed, capture = small(save_replay_buffer=True, learning_starts=64), CaptureStart()
    fit(resumed, GymDataModule(ContinuousIdentity, num_envs=2, batches_per_epoch=50), max_epochs=2,
        callbacks=[capture], ckpt_path=ckpt)
    assert capture.env_steps == first_steps  # the count continues ...
    for key, value in module.state_dict().items():  # ... from the saved networks (targets included)
        torch.testing.assert_close(capture.state[key], value)
    assert capture.buffer_size == first_steps + 2  # the saved buffer, plus the first new vector step
    assert resumed.env_steps == first_steps + 2 * 50 and resumed.num_updates == 100


@pytest.mark.parametrize("config, cls", [("ddpg_pendulum.yaml", "DDPG"), ("td3_pendulum.yaml", "TD3")])
def test_config_trains_with_train_py_and_exports_a_loadable_policy(tmp_path, monkeypatch, config, cls):
    export, last = run_train_py(monkeypatch, tmp_path, config, "--trainer.max_steps", "3", "--model.init_args.learning_starts", "50")
    policy = load_policy(export, env=gym.make("Pendulum-v1"))
    assert policy.kind == "deterministic"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["litzoo_class"] == f"litzoo.modules.ddpg.{cls}"
    assert checkpoint["litzoo_rl"]["env_steps"] == 52  # 50 random steps, then one per update
    assert (export.parent / "eval" / "reward_curve.png").is_file()
    from litzoo.export import main as export_main  # `python -m litzoo.export CKPT OUT` rebuilds from the checkpoint

    export_main([str(last), str(tmp_path / "exported")])
    obs = np.random.default_rng(0).uniform(-1, 1, (8, 3)).astype(np.float32)
    np.testing.assert_array_equal(load_policy(tmp_path / "exported").predict(obs), policy.predict(obs))


# ------------------------------------------------------------------------------------------ slow
def pendulum_run(cls, seed: int = 0):
    module = cls(actor_hidden_sizes=(64, 64), critic_hidden_sizes=(64, 64), gamma=0.98, learning_starts=1000,
                 seed=seed, log_every_n_env_steps=2000)
    fit(module, GymDataModule("Pendulum-v1", batches_per_epoch=1000, seed=seed), max_steps=9000, max_epochs=-1)
    return evaluate_policy(module.policy, lambda: gym.make("Pendulum-v1"), n_episodes=10, seed=10_000)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [DDPG, TD3])
def test_solves_pendulum(cls):
    result = pendulum_run(cls)
    assert result["returns"].mean() >= -200, result["returns"]
