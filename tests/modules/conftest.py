"""Fixtures shared by the generator tests (DDPM, RectifiedFlowDiT): a quiet CPU Trainer, a loss recorder, a
two-class image folder and a two-process CLI fit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch


class LossRecorder(L.Callback):
    """The training loss of every optimizer step, keyed by global step."""

    def __init__(self) -> None:
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses[trainer.global_step] = float(outputs["loss"])


def _cpu_trainer(root, max_steps=None, callbacks=(), **kwargs) -> L.Trainer:
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(max_steps=max_steps or -1, accelerator="cpu", devices=1, default_root_dir=root,
                     callbacks=list(callbacks), enable_progress_bar=False, enable_model_summary=False,
                     num_sanity_val_steps=0, **kwargs)


@pytest.fixture
def cpu_trainer():
    """A factory of quiet one-device CPU Trainers: ``cpu_trainer(root, max_steps=None, callbacks=(), **kwargs)``
    (no logger, no checkpointing unless asked, no sanity validation)."""
    return _cpu_trainer


@pytest.fixture
def loss_recorder():
    """The :class:`LossRecorder` callback class: ``recorder = loss_recorder()``, then ``recorder.losses[step]``."""
    return LossRecorder


def _brightness_folder(root, n=24):
    from PIL import Image

    from litzoo.datamodules import ImageFolderDataModule

    g = torch.Generator().manual_seed(0)
    for name, level in [("dark", 40), ("bright", 215)]:  # sorted: bright = 0, dark = 1
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = (level + torch.randint(-30, 30, (8, 8, 1), generator=g)).clamp(0, 255).to(torch.uint8)
            Image.fromarray(pixels[..., 0].numpy()).save(root / name / f"{i}.png")
    return ImageFolderDataModule(str(root), image_size=8, grayscale=True, batch_size=16, random_flip=False,
                                 val_fraction=0.25)


@pytest.fixture
def brightness_folder():
    """``brightness_folder(root)``: an ImageFolderDataModule over ``root/bright`` (label 0, pixel mean 0.84) and
    ``root/dark`` (label 1, mean 0.16), 24 noisy flat 8x8 images each: a condition a tiny model learns in seconds."""
    return _brightness_folder


def _cli_fit_two_processes(tmp_path, config: str, *overrides: str) -> tuple[Path, list[float]]:
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, str(root / "train.py"), "fit", "--config", str(root / config),
           "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.default_root_dir", str(tmp_path),
           "--trainer.enable_progress_bar", "false", "--trainer.check_val_every_n_epoch", "1", *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    log_dir = tmp_path / "lightning_logs" / "version_0"
    metrics = [line.split(",") for line in (log_dir / "metrics.csv").read_text().splitlines()]
    header, rows = metrics[0], metrics[1:]
    return log_dir, [float(r[header.index("val/loss")]) for r in rows if r[header.index("val/loss")]]


@pytest.fixture
def cli_fit_two_processes():
    """``cli_fit_two_processes(tmp_path, "configs/x.yaml", *overrides) -> (log_dir, val/loss values)``: run
    ``train.py fit`` with 2-process CPU DDP (one thread each) and read its CSV metrics."""
    return _cli_fit_two_processes
