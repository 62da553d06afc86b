r"""DDPM noise schedule and its continuous-time interpolation.

Discrete forward process (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Eq. 4):

.. math::
    q(x_i \mid x_0) = \mathcal N\big(\sqrt{\bar\alpha_i}\,x_0,\ (1-\bar\alpha_i) I\big),\qquad
    \bar\alpha_i = \prod_{j\le i} (1-\beta_j),\quad i = 0,\dots,T-1,

with ``beta_schedule="linear"`` (:math:`\beta_i` linear from ``beta_start`` to ``beta_end``, Ho et al.)
or ``"cosine"`` (Nichol & Dhariwal 2021, :math:`\bar\alpha(s)=\cos^2(\frac{s+0.008}{1.008}\frac\pi2)`,
:math:`\beta_i` capped at 0.999; diffusers' ``"squaredcos_cap_v2"``). The betas are *taken from*
``diffusers.DDPMScheduler(**scheduler_config())`` so that the numbers a network is trained with are
bit-identical to the scheduler exported beside it.

**Continuous-time convention** (used by the SDE view, :mod:`litzoo.diffusion.sde`). Discrete index
:math:`i` sits at time :math:`t_i = (i+1)/T`, and :math:`t=0` is clean data, :math:`\bar\alpha(0)=1`.
Between the knots :math:`0, 1/T, \dots, 1` the *log* of :math:`\bar\alpha` is linear:

.. math::
    \log\bar\alpha(t) = (1-\lambda)\log\bar\alpha_{k-1} + \lambda\log\bar\alpha_{k},\qquad
    k=\lfloor tT\rfloor,\ \lambda = tT-k,\ \bar\alpha_{-1}:=1,

so :math:`\beta(t) = -\tfrac{d}{dt}\log\bar\alpha(t) = -T\log(1-\beta_k)` is piecewise constant on
:math:`(k/T,(k+1)/T)`, and the VP SDE built from it reproduces the discrete marginals exactly at every
knot. The network is fed the fractional label ``timestep_label(t) = t*T - 1`` (so ``t_i`` -> ``i``).

Parameterisations (``prediction_type``), with :math:`x_t=\sqrt{\bar\alpha}x_0+\sqrt{1-\bar\alpha}\,\epsilon`:
``"epsilon"`` predicts :math:`\epsilon`; ``"v_prediction"`` predicts
:math:`v=\sqrt{\bar\alpha}\epsilon-\sqrt{1-\bar\alpha}x_0` (Salimans & Ho 2022, "Progressive
Distillation"); ``"sample"`` predicts :math:`x_0`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

BETA_SCHEDULES = ("linear", "cosine")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_DIFFUSERS_BETA_SCHEDULE = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"prediction_type={prediction_type!r} is not supported; expected one of {PREDICTION_TYPES}. "
            "Pass the parameterisation the network was trained with."
        )


def _bcast(v: Tensor | float, x: Tensor) -> Tensor:
    """Make a per-sample (B,) or scalar coefficient broadcast over the non-batch dims of ``x``."""
    v = torch.as_tensor(v, device=x.device)
    if v.ndim == 1 and x.ndim > 1:
        v = v.reshape(-1, *([1] * (x.ndim - 1)))
    return v.to(x.dtype) if v.is_floating_point() else v


def predict_eps(pred: Tensor, x_t: Tensor, alpha_bar: Tensor | float, prediction_type: str) -> Tensor:
    r"""Noise :math:`\hat\epsilon` implied by a network output ``pred`` at :math:`x_t`.

    ``alpha_bar`` is a scalar or a per-sample vector ``(B,)``.
    """
    _check_prediction_type(prediction_type)
    ab = _bcast(alpha_bar, x_t)
    if prediction_type == "epsilon":
        return pred
    if prediction_type == "v_prediction":  # eps = sqrt(1-ab) x_t + sqrt(ab) v
        return (1 - ab).sqrt() * x_t + ab.sqrt() * pred
    return (x_t - ab.sqrt() * pred) / (1 - ab).sqrt()  # "sample": pred is x0


def predict_x0(pred: Tensor, x_t: Tensor, alpha_bar: Tensor | float, prediction_type: str) -> Tensor:
    r"""Clean sample :math:`\hat x_0` implied by a network output ``pred`` at :math:`x_t`."""
    _check_prediction_type(prediction_type)
    ab = _bcast(alpha_bar, x_t)
    if prediction_type == "epsilon":  # Ho et al. Eq. 15
        return (x_t - (1 - ab).sqrt() * pred) / ab.sqrt()
    if prediction_type == "v_prediction":  # x0 = sqrt(ab) x_t - sqrt(1-ab) v
        return ab.sqrt() * x_t - (1 - ab).sqrt() * pred
    return pred


def training_target(x0: Tensor, eps: Tensor, alpha_bar: Tensor | float, prediction_type: str) -> Tensor:
    r"""Regression target for ``x_t = sqrt(ab) x0 + sqrt(1-ab) eps``: :math:`\epsilon`, :math:`v` or :math:`x_0`."""
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "v_prediction":
        ab = _bcast(alpha_bar, x0)
        return ab.sqrt() * eps - (1 - ab).sqrt() * x0
    return x0


class NoiseSchedule:
    """Discrete DDPM schedule (Ho et al. 2020) + its continuous-time interpolation.

    Args:
        num_train_timesteps: ``T``, number of discrete diffusion steps (>= 2).
        beta_schedule: ``"linear"`` (Ho et al.) or ``"cosine"`` (Nichol & Dhariwal 2021).
        beta_start, beta_end: first/last beta of the linear schedule, ``0 < beta_start < beta_end < 1``
            (ignored by ``"cosine"`` but still validated and exported).
        prediction_type: what the network predicts: ``"epsilon"``, ``"v_prediction"`` or ``"sample"``.
        clip_sample: clamp the predicted x0 to [-1, 1] in the diffusers samplers (``ddpm``/``ddim``)
            and in the final denoise step of the continuous samplers.

    Attributes:
        betas, alphas_cumprod: float64 tensors of shape ``(T,)``, identical in value to those of
            ``diffusers.DDPMScheduler(**self.scheduler_config())``.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        prediction_type: str = "epsilon",
        clip_sample: bool = False,
    ) -> None:
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
            raise ValueError(
                f"num_train_timesteps={num_train_timesteps!r} must be an int >= 2 (e.g. 1000, as in Ho et al.)."
            )
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule={beta_schedule!r} is not supported; expected one of {BETA_SCHEDULES}.")
        if not (0.0 < float(beta_start) < float(beta_end) < 1.0):
            raise ValueError(
                f"beta_start={beta_start!r}, beta_end={beta_end!r} must satisfy 0 < beta_start < beta_end < 1 "
                "(Ho et al. use 1e-4 and 0.02)."
            )
        _check_prediction_type(prediction_type)
        if not isinstance(clip_sample, bool):
            raise ValueError(f"clip_sample={clip_sample!r} must be a bool (True or False).")

        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample

        scheduler = self.ddpm_scheduler()
        self.betas: Tensor = scheduler.betas.to(torch.float64)
        self.alphas_cumprod: Tensor = scheduler.alphas_cumprod.to(torch.float64)
        # log alpha_bar at the knots t = 0, 1/T, ..., 1 (alpha_bar(0) = 1)
        self._log_ab_knots: Tensor = torch.cat([torch.zeros(1, dtype=torch.float64), self.alphas_cumprod.log()])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.scheduler_config().items() if k != "variance_type")
        return f"NoiseSchedule({args})"

    # ----------------------------------------------------------------- diffusers interop
    def scheduler_config(self) -> dict[str, Any]:
        """Keyword arguments for ``diffusers.DDPMScheduler`` (and, filtered, ``DDIMScheduler``)."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": _DIFFUSERS_BETA_SCHEDULE[self.beta_schedule],
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "prediction_type": self.prediction_type,
            "clip_sample": self.clip_sample,
            "variance_type": "fixed_small",
        }

    def ddpm_scheduler(self):
        """A fresh ``diffusers.DDPMScheduler`` with this schedule."""
        from diffusers import DDPMScheduler

        return DDPMScheduler(**self.scheduler_config())

    def ddim_scheduler(self):
        """A fresh ``diffusers.DDIMScheduler`` with this schedule (``set_alpha_to_one=True``: last step lands on x0)."""
        from diffusers import DDIMScheduler

        accepted = inspect.signature(DDIMScheduler.__init__).parameters
        return DDIMScheduler(**{k: v for k, v in self.scheduler_config().items() if k in accepted})

    # ----------------------------------------------------------------- continuous time
    def _interval(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Knot interval index k (t in [k/T, (k+1)/T]) and the fraction within it, in float64."""
        T = self.num_train_timesteps
        u = t.to(torch.float64).clamp(0.0, 1.0) * T
        k = u.floor().clamp(max=T - 1)
        return k.long(), u - k

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        """Log-linear interpolation of log(alpha_bar) between knots; t is clamped to [0, 1]."""
        t = torch.as_tensor(t)
        knots = self._log_ab_knots.to(t.device)
        k, frac = self._interval(t)
        out = (1 - frac) * knots[k] + frac * knots[k + 1]
        return out.to(t.dtype) if t.is_floating_point() else out

    def alpha_bar(self, t: Tensor) -> Tensor:
        r""":math:`\bar\alpha(t)`, continuous t in [0, 1]: ``alpha_bar(0)=1``, ``alpha_bar((i+1)/T)=alphas_cumprod[i]``.

        Computed in float64, returned in ``t``'s floating dtype.
        """
        t = torch.as_tensor(t)
        out = self.log_alpha_bar(t.to(torch.float64)).exp()
        return out.to(t.dtype) if t.is_floating_point() else out

    def beta(self, t: Tensor) -> Tensor:
        r""":math:`\beta(t) = -\frac{d}{dt}\log\bar\alpha(t)` of the interpolation (piecewise constant, right-continuous)."""
        t = torch.as_tensor(t)
        knots = self._log_ab_knots.to(t.device)
        k, _ = self._interval(t)
        out = (knots[k] - knots[k + 1]) * self.num_train_timesteps
        return out.to(t.dtype) if t.is_floating_point() else out

    def timestep_label(self, t: Tensor) -> Tensor:
        """Fractional label fed to the network at continuous time t: ``t*T - 1`` (t_i=(i+1)/T -> i)."""
        return torch.as_tensor(t) * self.num_train_timesteps - 1

    def t_from_label(self, label: Tensor) -> Tensor:
        """Inverse of :meth:`timestep_label`: ``(label + 1)/T``; integer labels give float64 times."""
        label = torch.as_tensor(label)
        if not label.is_floating_point():
            label = label.to(torch.float64)
        return (label + 1) / self.num_train_timesteps

    def t_from_alpha_bar(self, alpha_bar: Tensor) -> Tensor:
        """Inverse of :meth:`alpha_bar` (exact on the log-linear interpolation); clamped to [0, 1]."""
        alpha_bar = torch.as_tensor(alpha_bar)
        neg_log = -self._log_ab_knots.to(alpha_bar.device)  # increasing: 0 = -log ab(0) < ... < -log ab(1)
        target = -alpha_bar.to(torch.float64).log()
        T = self.num_train_timesteps
        hi = torch.searchsorted(neg_log, target.contiguous()).clamp(1, T)  # neg_log[hi-1] < target <= neg_log[hi]
        lo = hi - 1
        frac = ((target - neg_log[lo]) / (neg_log[hi] - neg_log[lo])).clamp(0.0, 1.0)
        out = (lo.to(torch.float64) + frac) / T
        return out.to(alpha_bar.dtype) if alpha_bar.is_floating_point() else out
