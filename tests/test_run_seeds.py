"""Seeds that mean something (issue 15 §2): a module's / datamodule's ``seed=None`` follows the global seed
(``seed_everything`` / ``--seed_everything``), taken once and kept by checkpoints and resumes; model and data seeds
are settable independently (the logger's hyperparameter merge no longer refuses two different ``seed`` values)."""

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger

from litzoo.datamodules.gym import GymDataModule
from litzoo.datamodules.toy2d import Toy2DDataModule
from litzoo.modules.ddpg import TD3
from litzoo.modules.ddpm import DDPM
from litzoo.modules.dqn import DQN

from rl_helpers import fit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def global_seed(monkeypatch):
    """``global_seed(n)``: ``lightning.seed_everything(n)``; PL_GLOBAL_SEED is restored after the test."""
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")

    def set_seed(n: int) -> None:
        L.seed_everything(n, verbose=False)

    return set_seed


def _td3_run(**module_kwargs):
    """150 env steps of Pendulum (100 random, then 50 updates): the replay buffer and the final weights."""
    module = TD3(actor_hidden_sizes=[16], critic_hidden_sizes=[16], batch_size=16, buffer_size=1000,
                 learning_starts=100, **module_kwargs)
    datamodule = GymDataModule("Pendulum-v1", batches_per_epoch=50, max_episode_steps=50)
    fit(module, datamodule)
    buffer = module._buffer
    return (buffer.obs[:150].clone(), buffer.actions[:150].clone(),
            torch.cat([p.detach().flatten() for p in module.parameters()]))


def _dqn_run():
    """150 env steps of CartPole (epsilon-greedy from step 0, updates from step 50): the buffer and the weights."""
    module = DQN(hidden_sizes=[16], batch_size=16, buffer_size=1000, learning_starts=50, exploration_fraction=0.5,
                 total_env_steps=150, log_every_n_env_steps=1000)
    fit(module, GymDataModule("CartPole-v1", batches_per_epoch=100))
    return (module._buffer.obs[:150].clone(), module._buffer.actions[:150].clone(),
            torch.cat([p.detach().flatten() for p in module.parameters()]))


def _assert_runs_follow_the_global_seed(run, global_seed):
    runs = {}
    for seed in (0, 1, 7, 1):
        global_seed(seed)
        runs.setdefault(seed, []).append(run())
    for a, b in zip(runs[1][0], runs[1][1]):  # the same seed twice: the same run, bit for bit
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for s, t in ((0, 1), (0, 7), (1, 7)):  # env resets, exploration and updates all differ
        for a, b in zip(runs[s][0], runs[t][0]):
            assert not torch.equal(a, b)
        assert not torch.equal(runs[s][0][0][0], runs[t][0][0][0])  # the first reset (the env seed)
    return runs


def test_td3_env_seeds_exploration_and_updates_follow_the_global_seed(global_seed):
    runs = _assert_runs_follow_the_global_seed(_td3_run, global_seed)
    for s, t in ((0, 1), (0, 7), (1, 7)):  # the random warm-up actions come from the module's own generator
        assert not torch.equal(runs[s][0][1][:100], runs[t][0][1][:100])


def test_dqn_env_seeds_and_exploration_follow_the_global_seed(global_seed):
    _assert_runs_follow_the_global_seed(_dqn_run, global_seed)


def test_an_explicit_seed_ignores_the_global_seed_and_seed_zero_is_the_old_default(global_seed):
    global_seed(0)
    default = _td3_run()
    global_seed(0)
    explicit_zero = _td3_run(seed=0)
    global_seed(5)
    torch.manual_seed(0)  # the same initial weights as above: only the global seed differs
    explicit_zero_under_5 = _td3_run(seed=0)
    for a, b in zip(default, explicit_zero):
        assert torch.equal(a, b)
    # the envs follow the datamodule's (global) seed, the module's exploration its explicit seed 0
    assert not torch.equal(default[0], explicit_zero_under_5[0])
    assert torch.equal(default[1][:100], explicit_zero_under_5[1][:100])


def test_ddpm_training_noise_follows_the_global_seed(global_seed):
    def losses(seed):
        torch.manual_seed(0)  # the same weights and data whatever the global seed: only the noise may differ
        module = DDPM(data_dim=2, num_classes=None, mlp_hidden=16, mlp_depth=2, warmup_steps=0, lr=1e-3)
        recorded = []

        class Record(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                recorded.append(float(outputs["loss"]))

        global_seed(seed)
        fit(module, Toy2DDataModule(n_samples=200, batch_size=32, seed=0), max_steps=3, callbacks=[Record()],
            limit_val_batches=0)
        assert module.hparams.seed == seed
        return recorded

    first, second, other, third = losses(3), losses(3), losses(4), losses(5)
    assert first == second
    assert len({tuple(first), tuple(other), tuple(third)}) == 3


def test_the_seed_is_taken_once_and_kept_by_load_from_checkpoint_and_resume(global_seed, tmp_path):
    global_seed(5)
    module = TD3(actor_hidden_sizes=[8], critic_hidden_sizes=[8], batch_size=8, learning_starts=20)
    datamodule = GymDataModule("Pendulum-v1", batches_per_epoch=10, max_episode_steps=50)
    trainer = fit(module, datamodule, default_root_dir=tmp_path)
    assert module.seed == 5 and datamodule.seed == 5 and module.hparams.seed == 5
    ckpt = tmp_path / "td3.ckpt"
    trainer.save_checkpoint(ckpt)
    global_seed(9)  # another global seed now: the checkpointed run keeps its own
    assert TD3.load_from_checkpoint(ckpt, weights_only=True).seed == 5
    resumed, resumed_data = TD3(actor_hidden_sizes=[8], critic_hidden_sizes=[8], batch_size=8, learning_starts=20), \
        GymDataModule("Pendulum-v1", batches_per_epoch=10, max_episode_steps=50)
    fit(resumed, resumed_data, max_epochs=2, ckpt_path=ckpt)
    assert resumed.seed == 5 and resumed_data.seed == 5
    # an explicit seed wins over the checkpoint's
    explicit, explicit_data = TD3(actor_hidden_sizes=[8], critic_hidden_sizes=[8], batch_size=8, learning_starts=20,
                                  seed=3), GymDataModule("Pendulum-v1", batches_per_epoch=10, max_episode_steps=50,
                                                         seed=4)
    fit(explicit, explicit_data, max_epochs=2, ckpt_path=ckpt)
    assert explicit.seed == 3 and explicit_data.seed == 4


def test_model_and_data_seeds_differ_with_a_logger_from_python(tmp_path):
    module = TD3(actor_hidden_sizes=[8], critic_hidden_sizes=[8], batch_size=8, learning_starts=10, seed=1)
    datamodule = GymDataModule("Pendulum-v1", batches_per_epoch=2, seed=2)
    fit(module, datamodule, logger=CSVLogger(tmp_path), max_steps=2)
    hparams = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "hparams.yaml").read_text())
    assert (hparams["seed"], hparams["data_seed"]) == (1, 2)


def test_model_and_data_seeds_set_independently_from_the_cli(tmp_path):
    cmd = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs" / "td3_pendulum.yaml"),
           "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
           "--trainer.max_steps", "2", "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(tmp_path),
           "--trainer.callbacks", "[]", "--model.init_args.learning_starts", "10", "--model.init_args.seed", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("PL_GLOBAL_SEED", None)
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    hparams = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "hparams.yaml").read_text())
    assert (hparams["seed"], hparams["data_seed"]) == (1, 0)  # data: the config's seed_everything 0
