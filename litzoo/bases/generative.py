"""What the denoising image generators (DDPM, RectifiedFlowDiT) share: :class:`GenerativeModule`."""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import torch
from torch import Tensor

from litzoo.base import LitzooModule
from litzoo.checks import check_non_negative, check_non_negative_int, check_positive, check_positive_int, check_range
from litzoo.nets.lora import lora_config, train_only_lora, without_lora
from litzoo.seeding import step_generator
from litzoo.sharding import gathered

#: first seed of the validation noise: batch i draws from ``VALIDATION_SEED + i`` (fixed across epochs)
VALIDATION_SEED = 10_000


def check_optimizer_args(lr: float, weight_decay: float, warmup_steps: int, total_steps: int,
                         adam_betas: tuple[float, float] = (0.9, 0.999)) -> None:
    """AdamW + warmup/cosine hyperparameters (:func:`litzoo.optim.adamw_with_warmup_cosine`), checked at construction
    rather than when ``fit`` builds the optimizer."""
    check_positive("lr", lr)
    check_non_negative("weight_decay", weight_decay)
    check_non_negative_int("warmup_steps", warmup_steps)
    if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) or total_steps < -1:
        raise ValueError(f"total_steps={total_steps!r} must be an integer: > 0 (cosine decay over that many steps), "
                         "0 (the trainer's estimate) or -1 (constant lr after warm-up).")
    if len(adam_betas) != 2:
        raise ValueError(f"adam_betas={adam_betas!r} must be two numbers, e.g. (0.9, 0.999).")
    for i, beta in enumerate(adam_betas):
        check_range(f"adam_betas[{i}]", beta, 0.0, 1.0, high_open=True)


def check_image_blocks(image_size: int, block_out_channels, norm_num_groups: int) -> None:
    """A diffusers UNet/autoencoder halves the resolution at every block but the last, and its GroupNorms split
    every block's channels into ``norm_num_groups``: raise a ``ValueError`` naming the fix otherwise."""
    if len(block_out_channels) == 0:
        raise ValueError("block_out_channels=() has no block; give at least one channel count, e.g. (32, 64).")
    for i, channels in enumerate(block_out_channels):
        check_positive_int(f"block_out_channels[{i}]", channels)
    check_positive_int("norm_num_groups", norm_num_groups)
    factor = 2 ** (len(block_out_channels) - 1)
    if image_size % factor:
        raise ValueError(
            f"image_size={image_size} cannot be taken by a network with {len(block_out_channels)} blocks "
            f"(block_out_channels={tuple(block_out_channels)}): it must be divisible by {factor}. "
            f"Use image_size={max(factor, image_size // factor * factor)} or fewer blocks.")
    bad = [c for c in block_out_channels if c % norm_num_groups]
    if bad:
        raise ValueError(f"norm_num_groups={norm_num_groups} must divide every block_out_channels entry; {bad} do not.")


class GenerativeModule(LitzooModule):
    """Training plumbing shared by the denoising generators (``DDPM``, ``RectifiedFlowDiT``).

    Subclasses define ``self.num_classes`` and ``self.null_class`` (the label of the learned null condition),
    the hyperparameters ``seed``, ``lr``, ``weight_decay``, ``adam_betas``, ``warmup_steps``, ``total_steps``,
    ``eval_every_n_epochs``, ``eval_samples_per_class``, ``eval_steps``, and

    * ``_unpack(batch) -> (x_0, condition)``;
    * ``loss(x_0, condition, generator, drop=True, reduce=True) -> (loss, t)`` with ``t`` in [0, 1]
      (``drop``: replace the condition by the null one with probability ``class_dropout``; ``reduce``: the
      batch mean, else the per-sample losses);
    * ``sample(n, steps=, y=, generator=, **eval_sample_kwargs)``.
    """

    # ----------------------------------------------------------------- training
    def training_step(self, batch, batch_idx: int) -> Tensor:
        x0, condition = self._unpack(batch)
        loss, _ = self.loss(x0, condition, self._step_generator())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x0))  # dict batches: no guessing (and no warning)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x0, condition = self._unpack(batch)
        generator = torch.Generator(device=self.device).manual_seed(VALIDATION_SEED + batch_idx)
        per_sample, t = self.loss(x0, condition, generator, drop=False, reduce=False)
        self._log_validation_loss(per_sample, t)
        self._collect_validation_images(x0)

    def _collect_validation_images(self, x0: Tensor) -> None:
        """Keep validation images for an evaluation at epoch end (e.g. DDPM's FID); nothing by default."""

    def _step_generator(self) -> torch.Generator:
        # Noise is a function of (seed, step, rank): a resumed run draws exactly the same noise.
        return step_generator(self.seed, self.global_step, self.global_rank, device=self.device)

    def optimized_module(self) -> torch.nn.Module:
        """What AdamW trains (its no-decay groups are found by :func:`litzoo.optim.adamw_param_groups`)."""
        return self

    def configure_optimizers(self):
        from litzoo.optim import adamw_with_warmup_cosine

        h = self.hparams
        return adamw_with_warmup_cosine(self.optimized_module(), lr=h.lr, weight_decay=h.weight_decay, betas=h.adam_betas,
                                        warmup_steps=h.warmup_steps, total_steps=self.total_training_steps())

    # ----------------------------------------------------------------- LoRA
    def add_lora(self, model: torch.nn.Module, default_targets) -> None:
        """LoRA adapters on ``model`` from the hyperparameters ``lora_rank``, ``lora_alpha``, ``lora_dropout``,
        ``lora_target_modules`` (``None``: ``default_targets``) through diffusers' ``add_adapter``, as diffusers' LoRA
        scripts do; from then on only the adapters train (the rest of the module, class tokens included, is frozen,
        and :meth:`configure_optimizers` skips frozen parameters). Nothing for ``lora_rank=0``.

        Checkpoints keep the whole state dict (frozen base included): a resume or ``load_from_checkpoint`` needs
        nothing but the file, as without adapters."""
        if not self.lora_rank:
            return
        h = self.hparams
        model.add_adapter(lora_config(model, h.lora_rank, h.lora_alpha, h.lora_dropout,
                                      h.lora_target_modules or default_targets))
        train_only_lora(self)

    def exported_network(self, model: torch.nn.Module, merge_lora: bool) -> torch.nn.Module:
        """What an export saves of ``model``: itself without adapters, else a copy without the LoRA layers, the frozen
        base (the adapters go to their own file) or, with ``merge_lora``, the base with the adapters merged in."""
        return without_lora(model, merge=merge_lora) if self.lora_rank else model

    # ----------------------------------------------------------------- data checks
    def _datamodule(self) -> Any:
        """The trainer's datamodule, or ``None`` (no trainer, or plain dataloaders)."""
        return getattr(self.trainer, "datamodule", None) if self._trainer is not None else None

    def _check_data_classes(self, datamodule: Any) -> None:
        data_classes = getattr(datamodule, "num_classes", None)
        if self.num_classes and data_classes is not None and data_classes > self.num_classes:
            raise ValueError(f"The data has {data_classes} classes but {type(self).__name__} num_classes="
                             f"{self.num_classes}; set model.num_classes={data_classes}.")

    # ----------------------------------------------------------------- labels and guidance
    def _unconditional_error(self) -> str:
        return f"y was given but this {type(self).__name__} is unconditional (num_classes=None)."

    def _labels(self, n: int, y) -> Optional[Tensor]:
        """``y`` as ``n`` class labels on the module's device (a scalar is repeated); ``None`` stays ``None``."""
        if y is None:
            return None
        if not self.num_classes:
            raise ValueError(self._unconditional_error())
        y = torch.as_tensor(y, device=self.device, dtype=torch.long)
        if y.ndim == 0:
            y = y.expand(n)
        if y.shape != (n,) or y.min() < 0 or y.max() >= self.num_classes:
            raise ValueError(f"y must be {n} class labels in [0, {self.num_classes}), got shape {tuple(y.shape)}.")
        return y

    def denoiser(self, y: Optional[Tensor] = None, cfg_scale: float = 1.0) -> Callable[[Tensor, Tensor], Tensor]:
        """``model(x, t) -> prediction`` for the samplers, with labels and classifier-free guidance bound in."""
        null = None if y is None else {"y": torch.full_like(y, self.null_class)}
        return self._guided({"y": y}, null, cfg_scale)

    def _guided(self, cond: dict, null: Optional[dict], cfg_scale: float) -> Callable[[Tensor, Tensor], Tensor]:
        """Classifier-free guidance (Ho & Salimans 2022), one batched call for both branches:
        ``f_cfg = f(x, t, null) + w (f(x, t, c) - f(x, t, null))``; ``null=None`` or ``w = 1`` is ``f(x, t, c)``."""
        if null is None or cfg_scale == 1.0:
            return lambda x, t: self(x, t, **cond)

        def guided(x: Tensor, t: Tensor) -> Tensor:
            t = t.expand(x.shape[0]) if t.ndim == 0 else t
            both = {k: torch.cat([cond[k], null[k]]) for k in cond}
            f_cond, f_null = self(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)
            return f_null + cfg_scale * (f_cond - f_null)

        return guided

    # ----------------------------------------------------------------- evaluation
    #: extra keyword arguments of ``sample`` at evaluation (e.g. DDPM's sampler)
    def eval_sample_kwargs(self) -> dict[str, Any]:
        return {}

    def _log_validation_loss(self, per_sample: Tensor, t_fraction: Tensor) -> None:
        """``val/loss`` and the loss in 4 bins of ``t`` in [0, 1]: where along the noise path the model is weak
        (near noise: layout, near data: detail)."""
        self.log("val/loss", per_sample.mean(), prog_bar=True, sync_dist=True, batch_size=len(per_sample))
        bins = (t_fraction * 4).long().clamp(max=3)
        for k in range(4):
            mask = bins == k
            if mask.any():
                self.log(f"val/loss_t{k}", per_sample[mask].mean(), sync_dist=True, batch_size=int(mask.sum()))

    def _eval_due(self) -> bool:
        every = self.hparams.eval_every_n_epochs
        return bool(every) and bool(self.num_classes) and (self.current_epoch + 1) % every == 0

    def _log_class_accuracy(self) -> Tensor:
        """Sample ``eval_samples_per_class`` images of every class, log their class accuracy (the package's digits
        classifier) and return them."""
        from litzoo.metrics import class_accuracy

        h = self.hparams
        y = torch.arange(h.eval_samples_per_class * self.num_classes, device=self.device) % self.num_classes
        generator = torch.Generator(device=self.device).manual_seed(self.seed + self.global_rank)
        with gathered(self):  # sharded: the weights gathered once, not at every sampling step
            images = self.sample(len(y), steps=h.eval_steps, y=y, generator=generator, **self.eval_sample_kwargs())
        self.log("val/class_accuracy", class_accuracy(images.cpu(), y.cpu()), sync_dist=True)
        return images
