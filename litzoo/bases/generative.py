"""What the denoising image generators (DDPM, RectifiedFlowDiT) share: :class:`GenerativeModule`."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from litzoo.base import LitzooModule


class GenerativeModule(LitzooModule):
    """Training plumbing shared by the denoising generators (``DDPM``, ``RectifiedFlowDiT``).

    Subclasses define ``self.num_classes``, the hyperparameters ``seed``, ``lr``, ``weight_decay``,
    ``adam_betas``, ``warmup_steps``, ``total_steps``, ``eval_every_n_epochs``, ``eval_samples_per_class``,
    ``eval_steps``, and ``sample(n, steps=, y=, generator=, **eval_sample_kwargs)``.
    """

    #: extra keyword arguments of ``sample`` at evaluation (e.g. DDPM's sampler)
    def eval_sample_kwargs(self) -> dict[str, Any]:
        return {}

    def optimized_module(self) -> torch.nn.Module:
        """What AdamW trains (its no-decay groups are found by :func:`litzoo.optim.adamw_param_groups`)."""
        return self

    def _step_generator(self) -> torch.Generator:
        # Noise is a function of (seed, step, rank): a resumed run draws exactly the same noise.
        seed = (self.hparams.seed * 1_000_003 + self.global_step) * 1024 + self.global_rank
        return torch.Generator(device=self.device).manual_seed(seed)

    def _log_validation_loss(self, per_sample: Tensor, t_fraction: Tensor) -> None:
        """``val/loss`` and the loss in 4 bins of ``t`` in [0, 1]: where along the noise path the model is weak
        (near noise: layout, near data: detail)."""
        self.log("val/loss", per_sample.mean(), prog_bar=True, sync_dist=True)
        bins = (t_fraction * 4).long().clamp(max=3)
        for k in range(4):
            mask = bins == k
            if mask.any():
                self.log(f"val/loss_t{k}", per_sample[mask].mean(), sync_dist=True)

    def _eval_due(self) -> bool:
        every = self.hparams.eval_every_n_epochs
        return bool(every) and bool(self.num_classes) and (self.current_epoch + 1) % every == 0

    def _log_class_accuracy(self) -> Tensor:
        """Sample ``eval_samples_per_class`` images of every class, log their class accuracy (the package's digits
        classifier) and return them."""
        from litzoo.metrics import class_accuracy

        h = self.hparams
        y = torch.arange(h.eval_samples_per_class * self.num_classes, device=self.device) % self.num_classes
        generator = torch.Generator(device=self.device).manual_seed(h.seed + self.global_rank)
        images = self.sample(len(y), steps=h.eval_steps, y=y, generator=generator, **self.eval_sample_kwargs())
        self.log("val/class_accuracy", class_accuracy(images.cpu(), y.cpu()), sync_dist=True)
        return images

    def _check_data_classes(self, datamodule: Any) -> None:
        data_classes = getattr(datamodule, "num_classes", None)
        if self.num_classes and data_classes is not None and data_classes > self.num_classes:
            raise ValueError(f"The data has {data_classes} classes but {type(self).__name__} num_classes="
                             f"{self.num_classes}; set model.num_classes={data_classes}.")

    def configure_optimizers(self):
        from litzoo.optim import adamw_with_warmup_cosine

        h = self.hparams
        total = h.total_steps or self.trainer.estimated_stepping_batches
        return adamw_with_warmup_cosine(
            self.optimized_module(), lr=h.lr, weight_decay=h.weight_decay, betas=h.adam_betas,
            warmup_steps=h.warmup_steps, total_steps=int(total) if math.isfinite(total) else 0,
        )
