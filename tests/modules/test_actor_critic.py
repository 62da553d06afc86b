"""ActorCritic (A2C and QAC): bad input, learning a contextual bandit, a continuous identity and a
tiny grid world (critic vs exact V^pi / q^pi), resume, load_from_checkpoint(weights_only=True),
bf16-mixed, the configs with train.py; slow: CartPole-v1."""


import gymnasium as gym
import numpy as np
import pytest
import torch

from litzoo.datamodules.gym import GymDataModule
from litzoo.envs import action_values, policy_evaluation, value_iteration
from litzoo.modules.actor_critic import ActorCritic
from litzoo.envs.toy import ContextBandit, ContinuousIdentity
from litzoo.rl.policy import evaluate_policy, load_policy

from rl_helpers import (
    CaptureStart,
    assert_loads_weights_only_and_exports_the_same_policy,
    bandit_policy_and_features,
    fit,
    run_train_py,
)



class RandomStart(gym.Wrapper):
    """Start episodes in a uniformly random state, so the critic sees every state."""

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.env.reset(seed=seed)
        return self.env.reset(options={"state": int(self.env.unwrapped.np_random.integers(self.env.unwrapped.num_states))})


def tiny_grid() -> gym.Env:
    # The registered id with one-hot observations: a 2x3 book-style grid, target bottom right, one
    # forbidden cell; the continuing task is cut every 20 steps (a truncation, so the learned values
    # are those of the infinite-horizon task that the exact solvers compute).
    return gym.make("litzoo/GridWorld-v0", size=(2, 3), target=(1, 2), forbidden=[(0, 1)], max_episode_steps=20,
                    obs_type="onehot")


def random_start_tiny_grid():
    return RandomStart(tiny_grid())


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, match", [
    ({"critic": "v"}, r"critic='v' is not one of \('advantage', 'q'\)"),
    ({"critic": "q", "normalize_advantage": True}, "normalize_advantage=True applies to critic='advantage'"),
    ({"gae_lambda": 1.5}, r"gae_lambda=1.5 must be in \[0, 1\]"),
    ({"n_steps": 0}, "n_steps=0"),
    ({"optimizer": "sgd"}, r"optimizer='sgd' is not supported; choose one of \['adamw', 'rmsprop'\]"),
    ({"rmsprop_alpha": 1.0}, r"rmsprop_alpha=1.0 must be in \(0, 1\)"),
])
def test_invalid_hyperparameters_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ActorCritic(**kwargs)


def test_default_gae_lambda_is_n_step_for_a2c_and_sarsa_for_qac():
    assert ActorCritic(critic="advantage").hparams.gae_lambda == 1.0
    assert ActorCritic(critic="q").hparams.gae_lambda == 0.0


# ------------------------------------------------------------------------------------------ learning
@pytest.mark.parametrize("optimizer, optimizer_class", [("adamw", torch.optim.AdamW), ("rmsprop", torch.optim.RMSprop)])
def test_a2c_learns_the_contextual_bandit_and_its_critic_the_exact_state_values(optimizer, optimizer_class):
    module = ActorCritic(critic="advantage", n_steps=1, lr=3e-3, optimizer=optimizer, log_every_n_env_steps=500)
    trainer = fit(module, GymDataModule(ContextBandit, num_envs=16, batches_per_epoch=300))
    assert type(trainer.optimizers[0]) is optimizer_class
    pi, features = bandit_policy_and_features(module)
    np.testing.assert_array_equal(pi.argmax(1), ContextBandit.R.argmax(1))
    assert pi.max(1).min() > 0.9
    v = module.critic(features).squeeze(-1).detach().numpy()
    np.testing.assert_allclose(v, (pi * ContextBandit.R).sum(1), atol=0.05)  # V^pi(c) = sum_a pi(a|c) R[c, a]
    assert module.env_steps == 16 * 300 and trainer.callback_metrics["rollout/ep_length"] == 1


def test_qac_learns_the_contextual_bandit_and_its_critic_the_exact_action_values():
    module = ActorCritic(critic="q", n_steps=1, lr=3e-3, log_every_n_env_steps=500)
    fit(module, GymDataModule(ContextBandit, num_envs=16, batches_per_epoch=300))
    pi, features = bandit_policy_and_features(module)
    np.testing.assert_array_equal(pi.argmax(1), ContextBandit.R.argmax(1))
    q = module.q_values(features).detach().numpy()
    # q^pi(c, a) = R[c, a] (one-step episodes); accurate where the policy acts
    assert (pi * np.abs(q - ContextBandit.R)).sum(1).max() < 0.05
    np.testing.assert_array_equal(q.argmax(1), ContextBandit.R.argmax(1))


def test_a2c_with_a_gaussian_policy_learns_the_continuous_identity():
    module = ActorCritic(critic="advantage", n_steps=1, lr=3e-3, log_every_n_env_steps=10**6)
    fit(module, GymDataModule(ContinuousIdentity, num_envs=16, batches_per_epoch=400))
    s = np.linspace(-1, 1, 21, dtype=np.float32)[:, None]
    mean_action = module.policy.predict(s)  # deterministic = the Gaussian's mean
    assert np.abs(mean_action - s).max() < 0.2, np.abs(mean_action - s).max()
    assert module.policy.actor.log_std.exp().item() < 0.8  # the std shrinks from 1 (exploration pays -std^2)


@pytest.mark.parametrize("critic", ["advantage", "q"])
def test_finds_the_optimal_grid_world_policy_and_its_critic_matches_exact_values(critic):
    module = ActorCritic(critic=critic, gamma=0.9, log_every_n_env_steps=10**6)
    fit(module, GymDataModule(random_start_tiny_grid, num_envs=16, batches_per_epoch=800))
    env = tiny_grid().unwrapped
    P, R = env.model()
    v_star, _ = value_iteration(P, R, gamma=0.9)
    with torch.no_grad():
        features = module.policy.encoder(torch.eye(env.num_states))
        pi = torch.softmax(module.policy.actor(features), -1).double().numpy()
    greedy = np.eye(env.num_actions)[pi.argmax(1)]
    np.testing.assert_allclose(policy_evaluation(P, R, greedy, gamma=0.9), v_star, atol=1e-8)  # optimal
    v_pi = policy_evaluation(P, R, pi, gamma=0.9)  # exact values of the learned stochastic policy
    if critic == "advantage":
        v = module.critic(features).squeeze(-1).detach().numpy()
        assert np.abs(v - v_pi).max() < 0.15, (v, v_pi)  # values 8.1 .. 10
    else:
        q = module.q_values(features).detach().numpy()
        q_pi = action_values(P, R, v_pi, gamma=0.9)
        assert np.abs((pi * q).sum(1) - v_pi).max() < 0.15, ((pi * q).sum(1), v_pi)
        assert (pi * np.abs(q - q_pi)).sum(1).max() < 0.15


# ------------------------------------------------------------------------------------------ Lightning
def test_bf16_mixed_precision_still_learns_the_bandit():
    module = ActorCritic(critic="advantage", n_steps=1, lr=3e-3, log_every_n_env_steps=500)
    fit(module, GymDataModule(ContextBandit, num_envs=16, batches_per_epoch=300), precision="bf16-mixed")
    pi, _ = bandit_policy_and_features(module)
    np.testing.assert_array_equal(pi.argmax(1), ContextBandit.R.argmax(1))
    assert pi.max(1).min() > 0.8


def test_resume_continues_env_steps_networks_and_normalisers_and_checkpoint_loads_weights_only(tmp_path):
    kwargs = dict(normalize_observations=True, normalize_rewards=True, log_every_n_env_steps=100)
    module = ActorCritic(**kwargs)
    trainer = fit(module, GymDataModule("CartPole-v1", num_envs=4, batches_per_epoch=20))
    ckpt = tmp_path / "run.ckpt"
    trainer.save_checkpoint(ckpt)
    assert module.env_steps == 20 * 5 * 4
    assert module.policy.encoder.normalizer.rms.count == 20 * 5 * 4  # every observation acted on

    obs = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    assert_loads_weights_only_and_exports_the_same_policy(module, ckpt, tmp_path / "policy", gym.make("CartPole-v1"), obs)

    resumed, capture = ActorCritic(**kwargs), CaptureStart()
    fit(resumed, GymDataModule("CartPole-v1", num_envs=4, batches_per_epoch=20), max_epochs=2, callbacks=[capture],
        ckpt_path=ckpt)
    assert capture.env_steps == 400 and resumed.env_steps == 800 and resumed.num_updates == 40
    for key, value in module.state_dict().items():  # networks and normaliser statistics
        torch.testing.assert_close(capture.state[key], value)


@pytest.mark.parametrize("config", ["a2c_cartpole.yaml", "qac_cartpole.yaml"])
def test_config_trains_with_train_py_and_exports_a_loadable_policy(tmp_path, monkeypatch, config):
    export, last = run_train_py(monkeypatch, tmp_path, config, "--trainer.max_steps", "3")
    policy = load_policy(export, env=gym.make("CartPole-v1"))
    assert policy.kind == "categorical"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["litzoo_class"] == "litzoo.modules.actor_critic.ActorCritic"
    assert checkpoint["litzoo_rl"]["env_steps"] == 3 * 5 * 8  # 3 rollouts of 5 steps x 8 envs


# ------------------------------------------------------------------------------------------ slow
@pytest.mark.slow
def test_a2c_solves_cartpole():
    module = ActorCritic(critic="advantage", log_every_n_env_steps=20_000)
    fit(module, GymDataModule("CartPole-v1", num_envs=8, batches_per_epoch=1000), max_epochs=-1, max_steps=5000)
    returns = evaluate_policy(module.policy, lambda: gym.make("CartPole-v1"), n_episodes=10, seed=10_000)["returns"]
    assert returns.mean() >= 475, returns


@pytest.mark.slow
def test_qac_improves_cartpole():
    """Zhao's QAC has no baseline, so single runs are erratic (seed 0 went 92 -> 304 and, after the acting
    path changed its random stream, 92 -> 125; seed 2 211 -> 203): judge it over three seeds."""
    before, after = [], []
    for seed in range(3):
        torch.manual_seed(seed)
        datamodule = GymDataModule("CartPole-v1", num_envs=8, batches_per_epoch=1000, seed=seed)
        module = ActorCritic(critic="q", observation_space=datamodule.observation_space, lr=1e-4, critic_lr=1e-3,
                             action_space=datamodule.action_space, log_every_n_env_steps=20_000, seed=seed)
        evaluate = lambda: evaluate_policy(module.policy, lambda: gym.make("CartPole-v1"), n_episodes=10,  # noqa: E731
                                           seed=10_000)["returns"].mean()
        before.append(evaluate())
        fit(module, datamodule, max_epochs=-1, max_steps=5000)  # 200k env steps
        after.append(evaluate())
    # measured: mean 104 -> 194 (per seed 92 -> 125, 9 -> 255, 211 -> 203)
    assert np.mean(after) >= max(150, np.mean(before) + 50), (before, after)
