"""Write a grid of samples as a PNG every N steps (and send it to the logger when it takes images)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

from litzoo.callbacks.ema import find_ema_module
from litzoo.loggers import log_image


def make_grid(images: torch.Tensor, nrow: int = 10, padding: int = 1) -> np.ndarray:
    """(N, C, H, W) images in [0, 1] -> (H', W', C) uint8 grid, ``nrow`` images per row."""
    if images.ndim != 4:
        raise ValueError(f"make_grid expects (N, C, H, W) images, got shape {tuple(images.shape)}.")
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    nrows = math.ceil(n / ncol)
    grid = torch.ones(c, nrows * (h + padding) + padding, ncol * (w + padding) + padding)
    for i, image in enumerate(images.detach().float().cpu().clamp(0, 1)):
        r, k = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[:, top : top + h, left : left + w] = image
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_image_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 10, upscale: int = 1) -> Path:
    """Save (N, C, H, W) images in [0, 1] as one PNG grid; ``upscale`` enlarges tiny images (nearest)."""
    grid = make_grid(images, nrow=nrow)
    image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if upscale > 1:
        image = image.resize((image.width * upscale, image.height * upscale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def save_scatter(points: torch.Tensor, path: str | os.PathLike, reference: Optional[torch.Tensor] = None) -> Path:
    """Scatter plot of 2-D samples (for toy data), optionally over reference data in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    if reference is not None:
        ax.scatter(*reference.cpu().T[:2], s=2, c="0.75", label="data")
    ax.scatter(*points.detach().float().cpu().T[:2], s=2, c="tab:blue", label="samples")
    # Robust limits: a few stray samples must not squash the picture of the bulk.
    pts = (reference if reference is not None else points).detach().float().cpu()
    lo, hi = pts.quantile(0.005, dim=0), pts.quantile(0.995, dim=0)
    pad = 0.25 * (hi - lo)
    ax.set_xlim(float(lo[0] - pad[0]), float(hi[0] + pad[0]))
    ax.set_ylim(float(lo[1] - pad[1]), float(hi[1] + pad[1]))
    ax.set_aspect("equal")
    if reference is not None:
        ax.legend(loc="upper right", markerscale=4)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


class SampleGrid(Callback):
    """Every ``every_n_steps`` optimizer steps (and at the end of fit), sample ``n`` images with the
    module's ``sample()`` API (EMA weights when an EMA callback runs) and write
    ``<log_dir>/samples/step_XXXXXX.png``. Class-conditional modules get one column per class."""

    def __init__(
        self,
        every_n_steps: int = 500,
        n: int = 50,
        steps: int = 50,
        sampler: Optional[str] = None,
        cfg_scale: float = 1.0,
        seed: int = 0,
        upscale: int = 4,
    ) -> None:
        if every_n_steps < 1 or n < 1 or steps < 1:
            raise ValueError("SampleGrid every_n_steps, n and steps must all be >= 1.")
        self.every_n_steps, self.n, self.steps, self.sampler = every_n_steps, n, steps, sampler
        self.cfg_scale, self.seed, self.upscale = cfg_scale, seed, upscale
        self.last_path: Optional[Path] = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > 0 and trainer.global_step % self.every_n_steps == 0:
            self._write(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        # On fit end Lightning has already copied the EMA weights into pl_module.
        self._write(trainer, pl_module, model=pl_module, name="final")

    @torch.no_grad()
    def _write(self, trainer, pl_module, model=None, name: Optional[str] = None) -> None:
        log_dir = trainer.log_dir or trainer.default_root_dir  # a collective under DDP: every rank must ask
        from litzoo.sharding import gathered, is_sharded

        if is_sharded(pl_module):  # every rank gathers the weights and samples (collectives); rank 0 writes
            with gathered(pl_module):
                return self._sample_and_write(trainer, pl_module, log_dir, model, name)
        if not trainer.is_global_zero:
            return
        self._sample_and_write(trainer, pl_module, log_dir, model, name)

    def _sample_and_write(self, trainer, pl_module, log_dir, model=None, name: Optional[str] = None) -> None:
        model = model or find_ema_module(trainer) or pl_module
        num_classes = getattr(pl_module, "num_classes", None)
        y = torch.arange(self.n, device=pl_module.device) % num_classes if num_classes else None
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        was_training = model.training
        model.eval()
        try:
            samples = model.sample(
                self.n, steps=self.steps, sampler=self.sampler, y=y, cfg_scale=self.cfg_scale, generator=generator
            )
        finally:
            model.train(was_training)
        if not trainer.is_global_zero:
            return
        out_dir = Path(log_dir) / "samples"
        path = out_dir / f"{name or f'step_{trainer.global_step:06d}'}.png"
        if samples.ndim == 4:
            # Column k = class k: put samples of the same class in a column.
            self.last_path = save_image_grid(samples, path, nrow=num_classes or 10, upscale=self.upscale)
        else:
            self.last_path = save_scatter(samples, path)
        log_image(trainer, "samples", path, step=trainer.global_step)
