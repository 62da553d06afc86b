"""Stop training as soon as the loss stops being a finite number."""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback


class NonFiniteLossError(FloatingPointError):
    """Raised by :class:`NaNGuard`; the message names the step and the loss value."""


class NaNGuard(Callback):
    """Raise :class:`NonFiniteLossError` when the training loss is NaN or inf.

    Continuing after a NaN only overwrites good weights (and EMA weights) with NaNs; stopping at
    once keeps the last checkpoint usable. Checking costs one device sync, so ``every_n_steps``
    can thin it out on GPUs.
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        if every_n_steps < 1:
            raise ValueError(f"NaNGuard every_n_steps must be >= 1, got {every_n_steps}.")
        self.every_n_steps = every_n_steps

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        # Checked before backward: the optimizer never applies NaN gradients, so the weights (and
        # the EMA) stay as they were after the last good step.
        if trainer.global_step % self.every_n_steps:
            return
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(
                f"Training loss is {loss.detach().float().cpu().item() if loss.numel() == 1 else 'non-finite'} "
                f"at global step {trainer.global_step} (epoch {trainer.current_epoch}). "
                "Stopped so the last checkpoint stays usable. Common fixes: lower the learning rate, "
                "enable gradient clipping (--trainer.gradient_clip_val 1.0), use bf16 instead of fp16."
            )
