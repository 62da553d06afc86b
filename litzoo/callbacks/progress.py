"""Progress a person can read: the run's optimizer steps out of its total, loss, speed and time left.

Lightning's default (Rich) bar counts the batches of the current epoch ("Epoch 166/-2" when only ``max_steps``
bounds the run) and, with stdout not a terminal (nohup, CI, a cluster job), prints nothing until the run ends.
:func:`default_progress_bar` is what ``train.py`` installs unless a progress bar is given:

* a terminal: :class:`StepProgressBar`, a TQDM bar over ``global_step / max_steps`` (rate and ETA by tqdm);
* otherwise: :class:`ProgressLog`, one line every ``every_n_seconds`` (and after the first and the last step)::

      step 500/2000 (25%) loss 0.0312 12.3 it/s ETA 2m02s
      step 800/10000 (8%) critic_loss 0.871 env_steps 1600 return -1203 6.1 it/s ETA 25m08s

The metrics are the progress-bar ones (logged with ``prog_bar=True``; RL modules: ``rollout/ep_return`` shown
as ``return`` and ``time/env_steps`` as ``env_steps``), plus the first ``train/...loss`` when none of them is a
loss (the RL modules log theirs to the logger only).
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Mapping, Optional, TextIO

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf

from litzoo.checks import check_non_negative_int, check_positive

# Long metric names shortened in a progress line; any other "train/" prefix is dropped too.
SHORT_NAMES = {"rollout/ep_return": "return", "time/env_steps": "env_steps"}


def run_total(trainer: "L.Trainer") -> Optional[int]:
    """The optimizer steps the run will make: ``max_steps``, else the trainer's estimate; ``None`` if unbounded."""
    if trainer.max_steps is not None and trainer.max_steps >= 0:
        return int(trainer.max_steps)
    try:
        total = trainer.estimated_stepping_batches
    except Exception:  # e.g. no sized dataloader: an unknown total is not an error for a progress display
        return None
    return int(total) if math.isfinite(total) else None


def format_duration(seconds: float) -> str:
    """``45s``, ``2m02s``, ``1h05m``: compact and fixed-width enough to read in a log."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_value(value: Any) -> str:
    value = float(value.item() if hasattr(value, "item") else value)
    return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.4g}"


def line_metrics(progress_bar_metrics: Mapping[str, Any], callback_metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics of a progress line, short-named, losses first: the progress-bar metrics, plus the first
    ``train/...loss`` of ``callback_metrics`` when none of them is a loss."""
    metrics = {k: v for k, v in progress_bar_metrics.items() if k != "v_num"}
    if not any("loss" in k for k in metrics):
        loss = next((k for k in callback_metrics if k.startswith("train/") and k.endswith("loss")), None)
        if loss is not None:
            metrics = {loss: callback_metrics[loss], **metrics}
    named = {SHORT_NAMES.get(k, k.removeprefix("train/")): v for k, v in metrics.items()}
    return dict(sorted(named.items(), key=lambda kv: "loss" not in kv[0]))  # stable: losses first


def format_progress_line(step: int, total: Optional[int], metrics: Mapping[str, Any],
                         rate: Optional[float], elapsed: Optional[float] = None) -> str:
    """``step 500/2000 (25%) loss 0.0312 12.3 it/s ETA 2m02s`` (``rate`` in steps per second; without a total:
    ``step 500 ...`` and no ETA; at the total: ``done in <elapsed>`` instead of the ETA)."""
    parts = [f"step {step}/{total} ({100 * step // total if total else 100}%)" if total is not None else f"step {step}"]
    parts += [f"{name} {format_value(value)}" for name, value in metrics.items()]
    if rate is not None and rate > 0:
        parts.append(f"{rate:.3g} it/s")
        if total is not None and step < total:
            parts.append(f"ETA {format_duration((total - step) / rate)}")
    if total is not None and step >= total and elapsed is not None:
        parts.append(f"done in {format_duration(elapsed)}")
    return " ".join(parts)


class ProgressLog(ProgressBar):
    """Progress as plain lines (a log file, a job's output): see the module docstring.

    Args:
        every_n_seconds: a line at most this often (plus the first and the last step).
        every_n_steps: also a line every this many steps (0: by time only).
        stream: where the lines go (default ``sys.stdout`` at print time).
    """

    def __init__(self, every_n_seconds: float = 30.0, every_n_steps: int = 0, stream: Optional[TextIO] = None):
        super().__init__()
        check_positive("every_n_seconds", every_n_seconds)
        check_non_negative_int("every_n_steps", every_n_steps)
        self.every_n_seconds, self.every_n_steps, self.stream = every_n_seconds, every_n_steps, stream
        self._enabled = True
        self._total: Optional[int] = None
        self._start: tuple[float, int] = (0.0, 0)  # (time, step) at the start of fit
        self._last: tuple[float, int] = (0.0, 0)  # (time, step) of the last line

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _print(self, trainer: "L.Trainer", line: str) -> None:
        if self._enabled and trainer.is_global_zero:
            print(line, file=self.stream or sys.stdout, flush=True)

    def on_train_start(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        self._total = run_total(trainer)
        self._start = self._last = (time.perf_counter(), trainer.global_step)

    def on_train_batch_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now, step = time.perf_counter(), trainer.global_step
        last_time, last_step = self._last
        due = (last_step == self._start[1] or now - last_time >= self.every_n_seconds
               or (self.every_n_steps and step // self.every_n_steps > last_step // self.every_n_steps)
               or (self._total is not None and step >= self._total))
        if step == last_step or not due:
            return
        rate = (step - last_step) / (now - last_time) if now > last_time else None
        metrics = line_metrics(self.get_metrics(trainer, pl_module), trainer.callback_metrics)
        self._print(trainer, format_progress_line(step, self._total, metrics, rate, now - self._start[0]))
        self._last = (now, step)

    def on_train_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        # A run stopped before its total (max_epochs, a stopping callback): its last step still gets a line.
        now, step = time.perf_counter(), trainer.global_step
        if step > self._last[1]:
            rate = (step - self._last[1]) / (now - self._last[0]) if now > self._last[0] else None
            metrics = line_metrics(self.get_metrics(trainer, pl_module), trainer.callback_metrics)
            self._print(trainer, format_progress_line(step, self._total, metrics, rate, now - self._start[0]))
            self._last = (now, step)

    def on_validation_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        if trainer.sanity_checking:
            return
        val = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if val:
            self._print(trainer, f"validation at step {trainer.global_step}: "
                        + " ".join(f"{k.removeprefix('val/')} {format_value(v)}" for k, v in val.items()))


class StepProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar counting the run's optimizer steps (``global_step / max_steps``, continuing from the
    resumed step) instead of the current epoch's batches, so its rate and ETA are the whole run's."""

    def on_train_start(self, trainer: "L.Trainer", *_: Any) -> None:
        super().on_train_start()
        bar = self.train_progress_bar
        bar.reset(total=convert_inf(run_total(trainer)))
        bar.initial = bar.n = trainer.global_step  # tqdm's rate counts from here: a resumed run's real speed
        bar.set_description("Training")

    def on_train_epoch_start(self, trainer: "L.Trainer", *_: Any) -> None:
        pass  # one bar for the whole run: no reset per epoch

    def on_train_batch_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar, step = self.train_progress_bar, trainer.global_step
        if bar is not None and step > bar.n and self._should_update(step, bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes

    def on_train_epoch_end(self, trainer: "L.Trainer", pl_module: "L.LightningModule") -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))


def default_progress_bar(stream: Optional[TextIO] = None) -> ProgressBar:
    """:class:`StepProgressBar` when ``stream`` (default stdout) is a terminal, else :class:`ProgressLog`."""
    stream = sys.stdout if stream is None else stream
    is_tty = getattr(stream, "isatty", lambda: False)()
    return StepProgressBar() if is_tty else ProgressLog(stream=None if stream is sys.stdout else stream)
