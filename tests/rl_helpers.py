"""Helpers shared by the RL module tests (``tests/conftest.py`` puts this folder on ``sys.path``)."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import lightning as L
import numpy as np
import torch
from gymnasium import spaces

from litzoo.rl.policy import load_policy

REPO = Path(__file__).resolve().parents[1]


def fit(module, datamodule, **trainer_kwargs) -> L.Trainer:
    """One quiet epoch (no logger, checkpoints, progress bar) unless ``trainer_kwargs`` say otherwise;
    ``ckpt_path=`` resumes."""
    kwargs = dict(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False)
    kwargs.update(trainer_kwargs)
    ckpt_path = kwargs.pop("ckpt_path", None)
    trainer = L.Trainer(**kwargs)
    trainer.fit(module, datamodule, ckpt_path=ckpt_path)
    return trainer


def bandit_policy_and_features(module):
    """pi(.|c) for the two contexts of ``litzoo.envs.toy.ContextBandit`` and their encoded features."""
    with torch.no_grad():
        features = module.policy.encoder(torch.arange(2))
        return torch.softmax(module.policy.actor(features), -1).numpy(), features


def assert_loads_weights_only_and_exports_the_same_policy(module, ckpt, out_dir, env, obs):
    """``load_from_checkpoint(ckpt, weights_only=True)`` gives a module that acts like ``module`` on ``obs``, and so
    does its export read back by ``load_policy`` (checked against ``env``'s spaces). Returns the loaded module."""
    loaded = type(module).load_from_checkpoint(ckpt, weights_only=True)
    expected = module.policy.predict(obs)
    np.testing.assert_array_equal(loaded.policy.predict(obs), expected)
    loaded.export(out_dir)
    np.testing.assert_array_equal(load_policy(out_dir, env=env).predict(obs), expected)
    return loaded


def assert_updates_per_batch_is_the_same_training(make_module, make_data, precision: str) -> None:
    """``updates_per_batch=4`` over 3 Lightning batches trains exactly as 12 batches of one update (weights,
    AdamW state, random stream, counters), and stops at ``max_steps`` (10) inside a batch; ``make_module(**kw)``
    and ``make_data(batches_per_epoch)`` build the module and its GymDataModule."""

    def run(k: int, batches: int, **trainer_kwargs):
        torch.manual_seed(0)
        module = make_module(updates_per_batch=k, seed=0)
        trainer = fit(module, make_data(batches), precision=precision, **trainer_kwargs)
        return module, trainer

    (one, t_one), (four, t_four) = run(1, 12), run(4, 3)
    assert t_one.global_step == t_four.global_step == one.num_updates == four.num_updates == 12
    assert one.env_steps == four.env_steps
    for (name, a), (_, b) in zip(one.state_dict().items(), four.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    for a, b in zip(t_one.optimizers, t_four.optimizers):
        for key, state in a.state_dict()["state"].items():
            for name, value in state.items():
                torch.testing.assert_close(value, b.state_dict()["state"][key][name], rtol=0, atol=0)
    assert torch.equal(one._generator.get_state(), four._generator.get_state())
    (ten, t_ten), (cut, t_cut) = run(1, 12, max_steps=10), run(4, 3, max_steps=10)
    assert t_ten.global_step == t_cut.global_step == cut.num_updates == 10 and ten.env_steps == cut.env_steps
    for (name, a), (_, b) in zip(ten.state_dict().items(), cut.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


class CaptureStart(L.Callback):
    """What a (resumed) run starts from: env steps, the state dict, and the replay buffer's size at the first
    batch (``None`` for on-policy modules)."""

    def on_train_start(self, trainer, module):
        self.env_steps = module.env_steps
        self.state = {k: v.clone() for k, v in module.state_dict().items()}
        self.buffer_size = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.buffer_size is None and getattr(module, "_buffer", None) is not None:
            self.buffer_size = len(module._buffer)


def run_train_py(monkeypatch, tmp_path: Path, config: str, *overrides: str) -> tuple[Path, Path]:
    """``python train.py fit --config configs/<config> <overrides>`` in-process; returns (export folder,
    last checkpoint)."""
    sys.path.insert(0, str(REPO))
    try:
        import train
    finally:
        sys.path.remove(str(REPO))
    monkeypatch.setattr(sys, "argv", ["train.py", "fit", "--config", str(REPO / "configs" / config),
                                      "--trainer.default_root_dir", str(tmp_path),
                                      "--trainer.enable_progress_bar", "false", *overrides])
    train.main()
    (export,) = tmp_path.glob("lightning_logs/version_*/export")
    (last,) = tmp_path.glob("lightning_logs/version_*/checkpoints/last.ckpt")
    return export, last


class Counter(gym.Env):
    """obs = number of steps taken in the episode; reward 1 per step; terminates at ``terminate_at``."""

    def __init__(self, terminate_at=None, render_mode=None):
        self.observation_space = spaces.Box(0.0, 1000.0, (1,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.terminate_at, self.render_mode = terminate_at, render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return np.array([self.t], np.float32), 1.0, terminated, False, {}
