"""Stop training as soon as the loss stops being a finite number, and never write non-finite weights to disk."""

from __future__ import annotations

from typing import Any, Optional

import torch
from lightning.pytorch.callbacks import Callback


class NonFiniteLossError(FloatingPointError):
    """Raised by :class:`NaNGuard`; the message names the step and the loss value (or the non-finite tensors)."""


def _floating(tensors: Any) -> list[torch.Tensor]:
    """The floating-point tensors in a (nested) dict/list of tensors."""
    if torch.is_tensor(tensors):
        if hasattr(tensors, "to_local"):  # a sharded (FSDP2 DTensor) weight: this rank checks its own slice
            tensors = tensors.to_local()
        return [tensors] if tensors.is_floating_point() else []
    if isinstance(tensors, dict):
        return [t for v in tensors.values() for t in _floating(v)]
    if isinstance(tensors, (list, tuple)):
        return [t for v in tensors for t in _floating(v)]
    return []


def _non_finite_keys(named: dict[str, Any]) -> list[str]:
    """The names whose tensors hold a NaN or inf (one host sync for all of them)."""
    entries = [(name, t) for name, value in named.items() for t in _floating(value)]
    if not entries:
        return []
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(entries):
        by_device.setdefault(t.device, []).append(i)
    ok = [True] * len(entries)
    for indices in by_device.values():
        for i, flag in zip(indices, torch.stack([torch.isfinite(entries[i][1]).all() for i in indices]).tolist()):
            ok[i] = flag
    return sorted({name for (name, _), good in zip(entries, ok) if not good})


def fix_hint(pl_module: Any) -> str:
    """What to try against a diverging loss, for this kind of module (manual optimisation ignores the Trainer's
    ``gradient_clip_val``: Lightning refuses it there)."""
    if getattr(pl_module, "automatic_optimization", True):
        clip = "enable gradient clipping (--trainer.gradient_clip_val 1.0)"
    elif "max_grad_norm" in getattr(pl_module, "hparams", {}):
        now = pl_module.hparams["max_grad_norm"]
        clip = (f"clip the gradients with the module's own max_grad_norm (--model.init_args.max_grad_norm 0.5, "
                f"now {now}; {type(pl_module).__name__} optimises manually, so --trainer.gradient_clip_val does "
                "not apply)")
    else:
        clip = (f"clip the gradients in {type(pl_module).__name__}.training_step (it optimises manually, so "
                "--trainer.gradient_clip_val does not apply)")
    return f"Common fixes: lower the learning rate, {clip}, use bf16 instead of fp16."


class NaNGuard(Callback):
    """Raise :class:`NonFiniteLossError` when the training loss is NaN or inf, leaving the module with the weights
    of the last finite step; and refuse (raise) to write any checkpoint whose weights or optimizer state are not
    finite, whatever ``every_n_steps``.

    * ``every_n_steps=1`` (default): every loss is checked before its backward pass (one host sync per step), so
      the optimizer never applies a NaN step and the weights stay those of the last finite step. No extra memory.
    * ``every_n_steps=n > 1`` (cheaper on GPUs, where a per-step sync stalls the pipeline): the losses' finiteness
      is accumulated in a device flag and synced every ``n`` batches. Meanwhile a NaN step may reach the weights,
      so the guard keeps a snapshot, on the device, of the module's floating-point parameters and buffers as they
      were at the start of the last batch preceded only by finite losses (one masked copy per batch, no sync).
      When the check finds a NaN loss at step ``k`` it copies the snapshot back: the module ends with its weights
      after step ``k - 1``, exactly (with several updates per batch, RL modules' ``updates_per_batch``: as they were
      at the start of step ``k``'s batch; the error names that step). Cost: one more copy of the module's weights
      in device memory and a copy's worth of memory traffic per batch. The optimizer state (e.g. Adam moments) and the in-memory EMA weights
      of the steps after ``k`` are not rolled back: resume from the last checkpoint, which is finite.
    * When training ends and before any checkpoint is written, the pending flag is synced; before a save the
      module's, the EMA's and the optimizer state's tensors are checked too: a non-finite one raises instead of
      writing (one sync per save).
    """

    def __init__(self, every_n_steps: int = 1) -> None:
        if every_n_steps < 1:
            raise ValueError(f"NaNGuard every_n_steps must be >= 1, got {every_n_steps}.")
        self.every_n_steps = every_n_steps
        self._reset()

    def _reset(self) -> None:
        self._bad: Optional[torch.Tensor] = None  # device bool: a non-finite loss was seen (not yet raised)
        self._first_step: Optional[torch.Tensor] = None  # device int64: global step of the first one
        self._first_value: Optional[torch.Tensor] = None  # device float: its loss value
        self._tensors: list[torch.Tensor] = []  # the module's floating parameters and buffers
        self._snapshot: list[torch.Tensor] = []
        self._snapshot_step: Any = 0  # global step before which the snapshot's weights were (int or device tensor)
        self._batches = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._reset()

    def on_train_end(self, trainer, pl_module) -> None:
        # A NaN after the last periodic check must not reach exports (ExportOnFitEnd) or later saves.
        try:
            self._check(trainer, pl_module)
        finally:
            self._tensors, self._snapshot = [], []  # free the snapshot's device memory

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._tensors, self._snapshot = [], []

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        if self.every_n_steps == 1:
            return
        # The snapshot's step is kept with it: a batch may hold several updates (RL modules' updates_per_batch), so
        # the weights restored are those before the batch's first update, not always before the bad one.
        with torch.no_grad():
            if not self._snapshot:
                self._tensors = [t for t in (*pl_module.parameters(), *pl_module.buffers()) if t.is_floating_point()]
                self._snapshot = [t.detach().clone() for t in self._tensors]
                self._snapshot_step = trainer.global_step
            elif self._bad is None:  # no loss seen yet: every earlier one was finite
                torch._foreach_copy_(self._snapshot, [t.detach() for t in self._tensors])
                self._snapshot_step = trainer.global_step
            else:  # keep the snapshot once a non-finite loss was seen, without a sync
                for snap, t in zip(self._snapshot, self._tensors):
                    torch.where(self._bad, snap, t.detach(), out=snap)
                kept = torch.as_tensor(self._snapshot_step, device=self._bad.device)
                self._snapshot_step = torch.where(self._bad, kept, trainer.global_step)

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        loss = loss.detach()
        if self.every_n_steps == 1:
            # Before backward: the optimizer never applies NaN gradients, so the weights (and the EMA) stay as
            # they were after the last finite step.
            if not torch.isfinite(loss).all():
                value = loss.float().cpu().item() if loss.numel() == 1 else "non-finite"
                raise NonFiniteLossError(
                    f"Training loss is {value} at global step {trainer.global_step} (epoch {trainer.current_epoch}). "
                    f"Stopped before it reached the weights, so they and the last checkpoint stay usable. "
                    f"{fix_hint(pl_module)}"
                )
            return
        finite = torch.isfinite(loss).all()
        value = loss.float().sum()
        if self._bad is None:
            self._bad = torch.zeros((), dtype=torch.bool, device=loss.device)
            self._first_step = torch.full((), -1, dtype=torch.int64, device=loss.device)
            self._first_value = torch.zeros((), dtype=torch.float32, device=loss.device)
        new = ~finite & ~self._bad
        self._first_step = torch.where(new, trainer.global_step, self._first_step)
        self._first_value = torch.where(new, value, self._first_value)
        self._bad = self._bad | ~finite

    def on_train_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._batches += 1
        if self.every_n_steps > 1 and self._batches % self.every_n_steps == 0:
            self._check(trainer, pl_module)

    def _check(self, trainer, pl_module) -> None:
        """Sync the device flag; on a non-finite loss restore the snapshot and raise."""
        if self._bad is None or not bool(self._bad):
            return
        step, value, restored = int(self._first_step), float(self._first_value), int(self._snapshot_step)
        with torch.no_grad():
            torch._foreach_copy_([t.detach() for t in self._tensors], self._snapshot)
        raise NonFiniteLossError(
            f"Training loss is {value} at global step {step} (found by the check at global step "
            f"{trainer.global_step}, every_n_steps={self.every_n_steps}). The module's weights were rolled back to "
            f"those before step {restored}; no checkpoint with non-finite weights was written. {fix_hint(pl_module)}"
        )

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # Raising here stops Trainer.save_checkpoint before anything reaches the disk.
        self._check(trainer, pl_module)
        from litzoo.callbacks.ema import find_ema_module

        named: dict[str, Any] = dict(checkpoint.get("state_dict", {}))
        named.update({f"current_model_state.{k}": v for k, v in checkpoint.get("current_model_state", {}).items()})
        ema = find_ema_module(trainer)
        if ema is not None:
            named.update({f"EMA.{k}": v for k, v in ema.state_dict().items()})
        for i, state in enumerate(checkpoint.get("optimizer_states", [])):
            named.update({f"optimizer_states[{i}].param {k}": v for k, v in state.get("state", {}).items()})
        bad = _non_finite_keys(named)
        if trainer.world_size > 1 and any(hasattr(v, "to_local") for v in named.values()):
            # Sharded: each rank checked its own slice. Every rank must raise together, or the clean ranks enter the
            # distributed checkpoint save (a collective) and wait forever for the one that raised.
            if trainer.strategy.reduce_boolean_decision(bool(bad), all=False) and not bad:
                bad = ["(the shards of another rank)"]
        if bad:
            shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
            raise NonFiniteLossError(
                f"Refusing to write a checkpoint at global step {trainer.global_step}: non-finite values in {shown}. "
                f"The last checkpoint on disk stays the latest finite one. {fix_hint(pl_module)}"
            )
