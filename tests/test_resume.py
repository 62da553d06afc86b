"""A run stopped at a mid-epoch step (in-process; and killed with SIGKILL in a subprocess, slow) and resumed from
``last.ckpt`` repeats the uninterrupted run's per-step losses bit for bit (DDPM on digits: 12 batches per epoch,
a checkpoint after every step). PPO and SAC runs crashed mid-epoch and resumed end with the uninterrupted run's
weights, normalisers, temperature and random stream bit for bit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STEPS, BATCHES_PER_EPOCH = 30, 12

SCRIPT = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from litzoo.datamodules import DigitsDataModule
from litzoo.modules import DDPM

torch.set_num_threads(1)
out, kill_at, ckpt = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None


class Record(L.Callback):  # the loss of every global step, appended and flushed at once
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_step == kill_at:  # last.ckpt of step kill_at is on disk: die as a crash would
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        with open(os.path.join(out, "losses.txt"), "a") as f:
            f.write(f"{{trainer.global_step}} {{outputs['loss'].item().hex()}}\\n")


L.seed_everything(0, verbose=False)
model = DDPM(block_out_channels=(8, 16), norm_num_groups=4, num_train_timesteps=50, warmup_steps=3)
dm = DigitsDataModule(batch_size=128, seed=0)
trainer = L.Trainer(accelerator="cpu", max_steps={steps}, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                    callbacks=[Record(), ModelCheckpoint(dirpath=out, save_last=True, every_n_train_steps=1)])
trainer.fit(model, dm, ckpt_path=ckpt)
"""


def _start(script: Path, out: Path, kill_at: int = -1, ckpt: str = "") -> subprocess.Popen:
    out.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, str(script), str(out), str(kill_at), ckpt], cwd=out, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen, returncode: int) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == returncode, err[-3000:]


def _losses(out: Path) -> dict[int, str]:
    return dict(line.split() for line in (out / "losses.txt").read_text().splitlines()) if out.exists() else {}


class _Crash(Exception):
    pass


def _fit(out: Path, crash_at: int = -1, ckpt: str | None = None) -> dict[int, str]:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from litzoo.datamodules import DigitsDataModule
    from litzoo.modules import DDPM

    losses: dict[int, str] = {}

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == crash_at:  # after last.ckpt of step crash_at was written
                raise _Crash

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses[trainer.global_step] = outputs["loss"].item().hex()

    L.seed_everything(0, verbose=False)
    model = DDPM(block_out_channels=(8, 16), norm_num_groups=4, num_train_timesteps=50, warmup_steps=3)
    trainer = L.Trainer(accelerator="cpu", max_steps=STEPS, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=out,
                        callbacks=[Record(), ModelCheckpoint(dirpath=out, save_last=True, every_n_train_steps=1)])
    try:
        trainer.fit(model, DigitsDataModule(batch_size=128, seed=0), ckpt_path=ckpt)
    except _Crash:
        pass
    return losses


@pytest.mark.parametrize("crash_at", [17])  # mid-epoch in epoch 1 (batch 5 of 12)
def test_run_resumed_after_a_crash_mid_epoch_repeats_the_uninterrupted_losses(tmp_path, crash_at):
    expected = _fit(tmp_path / "whole")
    assert len(expected) == STEPS and _fit(tmp_path / "part", crash_at) == {s: expected[s] for s in range(1, crash_at + 1)}
    got = _fit(tmp_path / "part", ckpt=str(tmp_path / "part" / "last.ckpt"))
    assert list(got) == list(range(crash_at + 1, STEPS + 1))  # every step once: none skipped, none repeated
    assert [s for s in got if got[s] != expected[s]] == []


@pytest.mark.slow  # three fresh Python processes importing torch + Lightning: ~20-50 s
def test_sigkilled_mid_epoch_run_resumes_with_the_uninterrupted_losses(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT.format(repo=str(REPO), steps=STEPS)))
    kill_at = random.choice([s for s in range(3, STEPS - 3) if s % BATCHES_PER_EPOCH])  # never an epoch boundary
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    runs = _start(script, whole), _start(script, killed, kill_at=kill_at)  # side by side: the imports dominate
    _wait(runs[0], 0)
    _wait(runs[1], -signal.SIGKILL)
    assert len(_losses(killed)) == kill_at
    _wait(_start(script, killed, ckpt=str(killed / "last.ckpt")), 0)
    expected, got = _losses(whole), _losses(killed)
    assert len(expected) == STEPS
    assert list(got) == list(expected)  # every step exactly once: none skipped, none repeated
    differ = [s for s in expected if got[s] != expected[s]]
    assert not differ, f"killed after step {kill_at}: losses differ at steps {differ}"


# ------------------------------------------------------------------------------------------ RL modules (PPO, SAC)
# An RL run's data is its own experience: a resumed run repeats the uninterrupted one bit for bit only if it
# continues the same random stream (actions, minibatches, replay samples: saved per rank), the same normalisers,
# optimizer and replay buffer, *and* the same episodes. Gymnasium's classic envs cannot hand back their state, so
# these runs use rl_helpers.Counter (a deterministic reset) with every episode ending exactly where the crash
# comes: there the uninterrupted run autoresets and the resumed run resets, into the same observation.
def _rl_module(name: str):
    import torch

    from litzoo.modules.ppo import PPO
    from litzoo.modules.sac import SAC

    torch.manual_seed(0)  # the initial weights: the same in every run of a test
    if name == "PPO":  # 4 rollouts of 8 steps x 2 envs per epoch; episodes of 4 steps end at every rollout's end
        return PPO(hidden_sizes=(16, 16), n_steps=8, batch_size=4, n_epochs=2, lr_final=1e-4, clip_range_final=0.1,
                   normalize_observations=True, normalize_rewards=True, log_every_n_env_steps=10**9, seed=3)
    # SAC: update k follows env step 7 + k (learning_starts 8); episodes of 4 steps end after update 1, 5, 9, ...
    return SAC(actor_hidden_sizes=(16, 16), critic_hidden_sizes=(16, 16), learning_starts=8, batch_size=8,
               buffer_size=64, normalize_observations=True, save_replay_buffer=True, log_every_n_env_steps=10**9, seed=3)


def _rl_fit(name: str, crash_after: int = -1, ckpt_out=None, ckpt_path=None):
    import functools

    import lightning as L

    from litzoo.datamodules.gym import GymDataModule
    from rl_helpers import Counter, fit

    class CrashAfter(L.Callback):  # a job killed right after its periodic checkpoint
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == crash_after:
                trainer.save_checkpoint(ckpt_out)
                raise _Crash

    module = _rl_module(name)
    num_envs, batches = (2, 4) if name == "PPO" else (1, 8)
    datamodule = GymDataModule(functools.partial(Counter, terminate_at=4), num_envs=num_envs, batches_per_epoch=batches)
    try:
        fit(module, datamodule, max_epochs=2, callbacks=[CrashAfter()], ckpt_path=ckpt_path)
    except _Crash:
        pass
    return module


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
@pytest.mark.parametrize("name, crash_after", [("PPO", 6), ("SAC", 9)])  # mid-epoch 2, at an episode boundary
def test_rl_run_resumed_after_a_crash_is_bit_identical_to_the_uninterrupted_run(tmp_path, name, crash_after):
    import torch

    whole = _rl_fit(name)
    ckpt = tmp_path / "crash.ckpt"
    crashed = _rl_fit(name, crash_after, ckpt_out=ckpt)
    assert crashed.num_updates == crash_after
    resumed = _rl_fit(name, ckpt_path=ckpt)
    assert resumed.num_updates == whole.num_updates and resumed.env_steps == whole.env_steps
    state, expected = resumed.state_dict(), whole.state_dict()  # networks, targets, normalisers, temperature
    assert list(state) == list(expected)
    assert [k for k in expected if not torch.equal(state[k], expected[k])] == []
    assert torch.equal(resumed._generator.get_state(), whole._generator.get_state())

    # Control: the same checkpoint without the saved random stream (a fresh per-rank stream) diverges, so the
    # comparison above can fail.
    checkpoint = torch.load(ckpt, weights_only=True)
    del checkpoint["litzoo_rl"]["generator"]
    torch.save(checkpoint, tmp_path / "without_stream.ckpt")
    restarted = _rl_fit(name, ckpt_path=tmp_path / "without_stream.ckpt")
    assert restarted.num_updates == whole.num_updates
    assert any(not torch.equal(restarted.state_dict()[k], expected[k]) for k in expected)
