"""Tests for litzoo/callbacks/progress.py: the progress line's format, ProgressLog's lines in a run, and the
terminal bar counting the run's steps."""

import io
import re

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from litzoo.callbacks.progress import (ProgressLog, StepProgressBar, default_progress_bar, format_duration,
                                       format_progress_line, format_value, line_metrics)


def test_progress_line_format():
    assert (format_progress_line(500, 2000, {"loss": 0.03124}, 12.3)
            == "step 500/2000 (25%) loss 0.03124 12.3 it/s ETA 2m02s")
    assert (format_progress_line(800, 10000, {"critic_loss": 0.8712, "env_steps": 1600.0, "return": -1203.4}, 6.1)
            == "step 800/10000 (8%) critic_loss 0.8712 env_steps 1600 return -1203 6.1 it/s ETA 25m08s")
    assert (format_progress_line(2000, 2000, {"loss": 0.5}, 20.0, elapsed=125)
            == "step 2000/2000 (100%) loss 0.5 20 it/s done in 2m05s")
    assert format_progress_line(7, None, {}, None) == "step 7"  # unbounded run, no rate yet: no total, no ETA


def test_durations_and_values():
    assert [format_duration(s) for s in (0, 44.6, 60, 122, 3599, 3600, 3900, 90061)] == [
        "0s", "45s", "1m00s", "2m02s", "59m59s", "1h00m", "1h05m", "25h01m"]
    assert [format_value(v) for v in (torch.tensor(0.031234), 1600.0, -3.0, 0.0, 1e-5, 123456.7)] == [
        "0.03123", "1600", "-3", "0", "1e-05", "1.235e+05"]


def test_line_metrics_short_names_losses_first_and_the_rl_loss_from_callback_metrics():
    # A supervised module: its progress-bar metrics, v_num dropped, train/ prefix dropped.
    assert line_metrics({"v_num": 0, "val/loss": 0.7, "train/loss": 0.5}, {}) == {"val/loss": 0.7, "loss": 0.5}
    assert list(line_metrics({"val/pass@1": 0.5, "train/loss": 0.2}, {})) == ["loss", "val/pass@1"]
    # An RL module: env steps and return on the bar, its loss only in callback_metrics.
    rl = line_metrics({"time/env_steps": 1600.0, "rollout/ep_return": -1203.4},
                      {"train/q": 3.0, "train/critic_loss": 0.87, "time/env_steps": 1600.0})
    assert rl == {"critic_loss": 0.87, "env_steps": 1600.0, "return": -1203.4}


class Regression(L.LightningModule):
    """y = 2x by SGD, logging its loss to the progress bar and keeping each step's value."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.losses = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = ((self.w * x - y) ** 2).mean()
        self.losses.append(loss.item())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _fit(tmp_path, progress, steps=16):
    x = torch.linspace(-1, 1, 64).unsqueeze(1)  # 8 batches an epoch: 16 steps are 2 epochs
    module = Regression()
    trainer = L.Trainer(max_steps=steps, callbacks=[progress], default_root_dir=tmp_path, logger=False,
                        enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(TensorDataset(x, 2 * x), batch_size=8))
    return module


def test_progress_log_prints_the_first_every_nth_and_last_step_with_that_steps_loss(tmp_path):
    stream = io.StringIO()
    module = _fit(tmp_path, ProgressLog(every_n_seconds=1e9, every_n_steps=5, stream=stream))
    lines = stream.getvalue().splitlines()
    pattern = re.compile(r"step (\d+)/16 \((\d+)%\) loss (\S+) (\S+) it/s (ETA \d+s|done in \d+s)")
    matches = [pattern.fullmatch(line) for line in lines]
    assert all(matches), lines
    assert [int(m[1]) for m in matches] == [1, 5, 10, 15, 16]
    assert [int(m[2]) for m in matches] == [6, 31, 62, 93, 100]
    # Each line shows the loss of the step it reports (step k ran training_step number k).
    assert [m[3] for m in matches] == [format_value(module.losses[int(m[1]) - 1]) for m in matches]
    assert matches[-1][5].startswith("done in") and all(m[5].startswith("ETA") for m in matches[:-1])


def test_progress_log_checks_its_arguments():
    with pytest.raises(ValueError, match="every_n_seconds"):
        ProgressLog(every_n_seconds=0)
    with pytest.raises(ValueError, match="every_n_steps"):
        ProgressLog(every_n_steps=-1)


def test_step_progress_bar_counts_the_runs_steps_across_epochs(tmp_path):
    seen = []

    class Probe(L.Callback):
        def on_train_batch_end(self, trainer, *_):
            bar = trainer.progress_bar_callback.train_progress_bar
            seen.append((trainer.current_epoch, bar.n, bar.total, bar.desc))

    bar = StepProgressBar()
    x = torch.linspace(-1, 1, 64).unsqueeze(1)
    trainer = L.Trainer(max_steps=16, callbacks=[bar, Probe()], default_root_dir=tmp_path, logger=False,
                        enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(Regression(), DataLoader(TensorDataset(x, 2 * x), batch_size=8))
    # One bar for the run: not reset at the second epoch, total = max_steps (not the epoch's 8 batches).
    assert [(e, n, t) for e, n, t, _ in seen] == [(k // 8, k + 1, 16) for k in range(16)]
    assert all(desc.startswith("Training") for *_, desc in seen)


class FakeStream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_default_progress_bar_is_a_bar_in_a_terminal_and_lines_in_a_file():
    assert type(default_progress_bar(FakeStream(True))) is StepProgressBar
    log = default_progress_bar(FakeStream(False))
    assert type(log) is ProgressLog and log.every_n_seconds == 30.0
