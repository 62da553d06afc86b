r"""VP and VE SDEs over a DDPM-trained network (Song et al. 2021, "Score-Based Generative Modeling
through Stochastic Differential Equations", ICLR).

Forward SDE :math:`dx = f(x,t)\,dt + g(t)\,dw`, reverse-time SDE (Anderson 1982)
:math:`dx = [f - g^2\nabla_x\log p_t(x)]\,dt + g\,d\bar w`, and probability-flow ODE
:math:`dx/dt = f - \tfrac12 g^2\nabla_x\log p_t(x)`, all integrated from t=1 (prior) to t_eps.

**VP** (variance preserving, the continuous limit of DDPM):
:math:`dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dw` with
:math:`\beta(t) = -\frac{d}{dt}\log\bar\alpha(t)` of the schedule's log-linear interpolation
(:class:`~litzoo.diffusion.schedules.NoiseSchedule`), so
:math:`x_t \mid x_0 \sim \mathcal N(\sqrt{\bar\alpha(t)}x_0, (1-\bar\alpha(t))I)` exactly, and the score is
:math:`\nabla\log p_t(x) = -\hat\epsilon(x, t)/\sqrt{1-\bar\alpha(t)}`.
Default ``t_eps = 1/T`` (label 0, the smallest noise level the network was trained on).

**VE** (variance exploding, SMLD): :math:`dx = \sqrt{d\sigma^2/dt}\,dw`,
:math:`\sigma(t)=\sigma_{min}(\sigma_{max}/\sigma_{min})^t`; as in Song et al. the state at t=0 is the data
perturbed with :math:`\sigma_{min}`, so :math:`x_t \sim \mathcal N(x_0, \sigma(t)^2 I)`. A VP/DDPM-trained
network serves the VE SDE through the change of variables

.. math::
    x_{VE} = x_{VP}/\sqrt{\bar\alpha},\qquad \sigma^2 = (1-\bar\alpha)/\bar\alpha
    \iff \bar\alpha = 1/(1+\sigma^2),

so :math:`\hat\epsilon = \mathrm{model}(x_{VE}/\sqrt{1+\sigma^2},\ \mathrm{label}(t_{VP}(\sigma)))` and
:math:`\nabla\log p^{VE}_\sigma(x) = -\hat\epsilon/\sigma`. :meth:`VESDE.from_schedule` picks
:math:`\sigma_{min},\sigma_{max}` at labels 0 and T-1, so the whole VE time range [0, 1] stays inside the
noise levels the network was trained on (default ``t_eps = 0``).

A "model" is ``model(x, timestep) -> prediction`` (timestep: a ``(B,)`` vector of fractional labels),
read through ``schedule.prediction_type``. Outputs with a ``.sample`` field (diffusers ``UNet2DModel``)
are unwrapped.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from litzoo.diffusion.schedules import NoiseSchedule, _bcast, predict_eps

Model = Callable[[Tensor, Tensor], Tensor]


def call_model(model: Model, x: Tensor, timestep: Tensor) -> Tensor:
    """``model(x, timestep)``, unwrapping a diffusers ``UNet2DOutput``-style ``.sample`` field."""
    out = model(x, timestep)
    if not isinstance(out, Tensor) and hasattr(out, "sample"):
        out = out.sample
    return out


def as_time(t: Tensor | float, x: Tensor) -> Tensor:
    """Time in ``x``'s dtype and device: a scalar (the same t for the whole batch) or a ``(B,)`` vector.

    A scalar t stays scalar so that schedule quantities are computed once, not once per sample."""
    return torch.as_tensor(t, dtype=x.dtype, device=x.device)


def batch_labels(label: Tensor, x: Tensor) -> Tensor:
    """Network labels as the ``(B,)`` vector the model contract asks for."""
    return label.expand(x.shape[0]) if label.ndim == 0 else label


def _gaussian_logp(z: Tensor, std: float) -> Tensor:
    """log N(z; 0, std^2 I) summed over the non-batch dims."""
    d = z[0].numel()
    return -0.5 * d * math.log(2 * math.pi * std**2) - z.flatten(1).pow(2).sum(1) / (2 * std**2)


class SDE:
    """Common interface; subclasses give drift, diffusion, marginals, prior and score."""

    t_eps: float  # default end time of sampling / start time of likelihood

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError

    def diffusion(self, t: Tensor) -> Tensor:
        raise NotImplementedError

    def marginal_params(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(mean_coef, std) of x_t | x_0 ~ N(mean_coef * x_0, std^2 I)."""
        raise NotImplementedError

    def prior_sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None, **kw) -> Tensor:
        raise NotImplementedError

    def prior_logp(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def score(self, model: Model, schedule: NoiseSchedule, x: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError

    def discretize(self, x: Tensor, t: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
        r"""Forward step t-dt -> t as :math:`x_t = x_{t-dt} + f_d + G\,z` (Song et al.'s discretisation).

        Returns (f_d, G)."""
        raise NotImplementedError

    # -------------------------------------------------------------- derived quantities
    def reverse_drift(
        self, model: Model, schedule: NoiseSchedule, x: Tensor, t: Tensor, probability_flow: bool = False
    ) -> Tensor:
        r"""Reverse-SDE drift :math:`f - g^2 s`, or the PF-ODE velocity :math:`f - \frac12 g^2 s`."""
        t = as_time(t, x)
        g2 = _bcast(self.diffusion(t) ** 2, x)
        coef = 0.5 if probability_flow else 1.0
        return self.drift(x, t) - coef * g2 * self.score(model, schedule, x, t)

    def denoise(self, model: Model, schedule: NoiseSchedule, x: Tensor, t: Tensor) -> Tensor:
        r"""Tweedie: :math:`E[x_0\mid x_t] = (x_t + \mathrm{std}^2\,\nabla\log p_t(x_t))/\mathrm{mean\_coef}`."""
        t = as_time(t, x)
        mean_coef, std = self.marginal_params(t)
        return (x + _bcast(std**2, x) * self.score(model, schedule, x, t)) / _bcast(mean_coef, x)


class VPSDE(SDE):
    r""":math:`dx = -\frac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dw`, built from a :class:`NoiseSchedule`."""

    def __init__(self, schedule: NoiseSchedule) -> None:
        self.schedule = schedule
        self.t_eps = 1.0 / schedule.num_train_timesteps

    def beta(self, t: Tensor) -> Tensor:
        return self.schedule.beta(t)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return -0.5 * _bcast(self.beta(as_time(t, x)), x) * x

    def diffusion(self, t: Tensor) -> Tensor:
        return self.beta(t).sqrt()

    def marginal_params(self, t: Tensor) -> tuple[Tensor, Tensor]:
        ab = self.schedule.alpha_bar(t)
        return ab.sqrt(), (1 - ab).sqrt()

    def prior_sample(self, shape, generator=None, **kw) -> Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        return randn_tensor(tuple(shape), generator=generator, **kw)

    def prior_logp(self, z: Tensor) -> Tensor:
        return _gaussian_logp(z, 1.0)

    def score(self, model: Model, schedule: NoiseSchedule, x: Tensor, t: Tensor) -> Tensor:
        """Score of this SDE's marginal from the network trained with ``schedule``."""
        t = as_time(t, x)
        ab = schedule.alpha_bar(t)
        pred = call_model(model, x, batch_labels(schedule.timestep_label(t), x))
        eps = predict_eps(pred, x, ab, schedule.prediction_type)
        return -eps / _bcast((1 - ab).sqrt(), x)

    def discretize(self, x: Tensor, t: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
        # one DDPM-like step with alpha = ab(t)/ab(t-dt): x_t = sqrt(alpha) x_{t-dt} + sqrt(1-alpha) z
        t = as_time(t, x)
        alpha = self.step_alpha(t, dt)
        return (_bcast(alpha.sqrt(), x) - 1) * x, (1 - alpha).sqrt()

    def step_alpha(self, t: Tensor, dt: Tensor | float) -> Tensor:
        r""":math:`\bar\alpha(t)/\bar\alpha(t-dt)`, the per-step :math:`\alpha = 1-\beta` of a step of length dt."""
        return (self.schedule.log_alpha_bar(t) - self.schedule.log_alpha_bar(t - dt)).exp()


class VESDE(SDE):
    r""":math:`dx = \sqrt{d\sigma^2/dt}\,dw`, :math:`\sigma(t)=\sigma_{min}(\sigma_{max}/\sigma_{min})^t`."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not (0.0 < sigma_min < sigma_max):
            raise ValueError(
                f"sigma_min={sigma_min!r}, sigma_max={sigma_max!r} must satisfy 0 < sigma_min < sigma_max "
                "(Song et al. use 0.01 and 50; VESDE.from_schedule picks them from the DDPM schedule)."
            )
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.t_eps = 0.0

    @classmethod
    def from_schedule(cls, schedule: NoiseSchedule) -> "VESDE":
        """sigma range of the labels 0 .. T-1 the network was trained on: sigma^2 = (1 - ab)/ab."""
        ab = schedule.alphas_cumprod
        return cls(sigma_min=float(((1 - ab[0]) / ab[0]).sqrt()), sigma_max=float(((1 - ab[-1]) / ab[-1]).sqrt()))

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** torch.as_tensor(t)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def diffusion(self, t: Tensor) -> Tensor:
        return self.sigma(t) * math.sqrt(2 * math.log(self.sigma_max / self.sigma_min))

    def marginal_params(self, t: Tensor) -> tuple[Tensor, Tensor]:
        sigma = self.sigma(t)
        return torch.ones_like(sigma), sigma

    def prior_sample(self, shape, generator=None, **kw) -> Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        return self.sigma_max * randn_tensor(tuple(shape), generator=generator, **kw)

    def prior_logp(self, z: Tensor) -> Tensor:
        return _gaussian_logp(z, self.sigma_max)

    def score(self, model: Model, schedule: NoiseSchedule, x: Tensor, t: Tensor) -> Tensor:
        """Score of the VE marginal from a VP/DDPM network trained with ``schedule`` (see module docstring).

        Beyond the trained noise range the label is clamped to [-1, T-1] while the true alpha_bar is kept.
        """
        t = as_time(t, x)
        sigma = self.sigma(t.to(torch.float64))
        ab = 1.0 / (1.0 + sigma**2)
        label = schedule.timestep_label(schedule.t_from_alpha_bar(ab)).to(x.dtype)
        x_vp = x * _bcast(ab.sqrt(), x)
        pred = call_model(model, x_vp, batch_labels(label, x))
        eps = predict_eps(pred, x_vp, ab.to(x.dtype), schedule.prediction_type)
        return -eps / _bcast(sigma, x)

    def discretize(self, x: Tensor, t: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
        t = as_time(t, x)
        G2 = self.sigma(t) ** 2 - self.sigma(t - dt) ** 2
        return torch.zeros_like(x), G2.sqrt()


SDES = ("vp", "ve")


def make_sde(sde: str, schedule: NoiseSchedule) -> SDE:
    """``"vp"`` -> :class:`VPSDE` (schedule), ``"ve"`` -> :meth:`VESDE.from_schedule`."""
    if sde == "vp":
        return VPSDE(schedule)
    if sde == "ve":
        return VESDE.from_schedule(schedule)
    raise ValueError(f"sde={sde!r} is not supported; expected one of {SDES}.")
