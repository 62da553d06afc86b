"""Exponential moving average of the weights, on top of Lightning's own ``WeightAveraging``.

Lightning swaps the EMA weights in for validation, saves them as the checkpoint's ``state_dict``
(the raw weights go to ``current_model_state`` and are restored on resume) and copies them into
the module when training ends, so sampling, evaluation, ``load_from_checkpoint`` and export all
see EMA weights. We only add the decay warm-up that short runs need.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from lightning.pytorch.callbacks import WeightAveraging


def ema_decay(decay: float, num_averaged: int, warmup: bool = True) -> float:
    """Decay used for the ``num_averaged``-th update: ``min(decay, (1 + n) / (10 + n))`` with warm-up.

    A plain 0.999 EMA remembers its random initialisation for thousands of steps; the warm-up
    (as in diffusers' ``EMAModel`` and Tensorflow's ``ExponentialMovingAverage(num_updates=)``)
    lets the average follow the weights early on.
    """
    if not warmup:
        return decay
    return min(decay, (1.0 + num_averaged) / (10.0 + num_averaged))


class EMA(WeightAveraging):
    """EMA weights: ``theta_ema <- d * theta_ema + (1 - d) * theta`` after every ``every_n_steps`` optimizer steps."""

    def __init__(
        self,
        decay: float = 0.999,
        warmup: bool = True,
        every_n_steps: int = 1,
        start_step: int = 0,
        device: Optional[str] = None,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}.")
        if every_n_steps < 1:
            raise ValueError(f"EMA every_n_steps must be >= 1, got {every_n_steps}.")

        def multi_avg_fn(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
            # One fused in-place update per (device, dtype) group: cheaper than a per-tensor avg_fn.
            if not averaged[0].is_floating_point():  # integer buffers (e.g. BatchNorm step counts) are copied
                torch._foreach_copy_(averaged, current)
                return
            torch._foreach_lerp_(averaged, current, 1.0 - ema_decay(decay, int(num_averaged), warmup))

        super().__init__(device=device, use_buffers=True, multi_avg_fn=multi_avg_fn)
        self.decay, self.warmup, self.every_n_steps, self.start_step = decay, warmup, every_n_steps, start_step

    def setup(self, trainer, pl_module, stage: str) -> None:
        # The average is a deep copy updated from the live weights: sharded (FSDP), every rank holds a slice, and
        # Lightning's WeightAveraging copies and swaps whole modules: refuse rather than average slices silently.
        if type(trainer.strategy).__name__ in ("ModelParallelStrategy", "FSDPStrategy", "DeepSpeedStrategy"):
            raise ValueError(f"EMA does not support sharded training ({type(trainer.strategy).__name__}): drop the EMA "
                             "callback, or train with DDP (--trainer.strategy ddp) when the model fits one device.")
        with warnings.catch_warnings():
            # Lightning warns that averaging cannot shard whenever configure_model is overridden (every litzoo
            # module's is: sharding, RL networks from the env's spaces); sharded strategies are refused above.
            warnings.filterwarnings("ignore", message="You're using the WeightAveraging callback with a model that "
                                                      "overrides the configure_model")
            super().setup(trainer, pl_module, stage)

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_step_idx = trainer.global_step - 1  # the steps before this fit (a resume) are not due again

    def should_update(self, step_idx: Optional[int] = None, epoch_idx: Optional[int] = None) -> bool:
        """Whether a due step (``>= start_step``, a multiple of ``every_n_steps``) was among the optimizer steps
        since the last call: one per batch normally (then just ``step_idx`` itself), several when a batch runs
        several updates (RL modules' ``updates_per_batch``)."""
        if step_idx is None:
            return False
        last, self._last_step_idx = getattr(self, "_last_step_idx", step_idx - 1), step_idx
        first = max(last + 1, self.start_step)  # the first step of the range that may be due
        return first <= step_idx and (first + (-first) % self.every_n_steps) <= step_idx

    @property
    def averaged_module(self) -> Optional[torch.nn.Module]:
        """The EMA copy of the LightningModule during fit (``None`` before fit starts)."""
        return None if self._average_model is None else self._average_model.module


def find_ema_module(trainer) -> Optional[torch.nn.Module]:
    """The EMA copy of the module if an :class:`EMA` (or any WeightAveraging) callback runs, else ``None``."""
    for callback in getattr(trainer, "callbacks", []):
        if isinstance(callback, WeightAveraging) and getattr(callback, "_average_model", None) is not None:
            return callback._average_model.module
    return None
