"""A run stopped at a mid-epoch step (in-process; and killed with SIGKILL in a subprocess, slow) and resumed from
``last.ckpt`` repeats the uninterrupted run's per-step losses bit for bit (DDPM on digits: 12 batches per epoch,
a checkpoint after every step)."""

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
