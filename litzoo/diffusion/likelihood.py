r"""Exact log-likelihood of a DDPM-trained network through the probability-flow ODE.

Song et al. 2021 ("Score-Based Generative Modeling through SDEs", App. D.2) with the instantaneous
change of variables of Chen et al. 2018 ("Neural Ordinary Differential Equations"): along the PF-ODE
:math:`dx/dt = \tilde f(x,t) = f(x,t) - \tfrac12 g(t)^2\nabla_x\log p_t(x)`,

.. math::
    \log p_{t_{eps}}(x(t_{eps})) = \log p_1(x(1)) + \int_{t_{eps}}^{1} \nabla\cdot\tilde f(x(t),t)\,dt .

The state :math:`(x, \int\nabla\cdot\tilde f)` is integrated from ``t_eps`` to 1 with the adaptive
Dormand–Prince solver of :mod:`litzoo.diffusion.samplers`; :math:`\log p_1` is the SDE prior
(VP: N(0, I), VE: N(0, sigma_max^2 I)). The divergence is either exact (``exact_trace=True``: one
backward pass per dimension, for low dimension) or Hutchinson's unbiased estimate
:math:`\nabla\cdot\tilde f \approx \epsilon^\top (\partial\tilde f/\partial x)\,\epsilon` (Hutchinson 1989;
Grathwohl et al. 2019, FFJORD) with one Rademacher or Gaussian :math:`\epsilon` per sample, held fixed
over the whole trajectory; averaging several calls reduces its variance.

``x`` is read as the state at ``t_eps`` (default: label 0, :math:`1-\bar\alpha\approx\beta_0`, e.g. 1e-4),
so the result is :math:`\log p_{t_{eps}}(x)`, a slightly smoothed data density.

Bits per dimension: :math:`\mathrm{bpd} = -\log p/(D\ln 2)`. For quantised data (``data_range=(lo, hi)``
holding ``n_bins`` levels, e.g. images in [-1, 1] with 256 levels) the density of uniformly dequantised
data is converted to the discrete scale of one bin per level by adding
:math:`\log_2(n_{bins}/(hi-lo))` (7 bits for [-1, 1] and 256 levels: Song et al.'s "offset"; 8 for [0, 1]).
The dequantisation noise itself is not added here; pass dequantised x for the variational bound.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from litzoo.diffusion.samplers import _check_t_eps, solve_ivp_dopri5
from litzoo.diffusion.schedules import NoiseSchedule
from litzoo.diffusion.sde import SDES, Model, make_sde

HUTCHINSON = ("rademacher", "gaussian")


def bits_per_dim(logp: Tensor, dim: int, data_range: tuple[float, float] | None = None, n_bins: int = 256) -> Tensor:
    """``-logp / (dim ln 2)``, plus ``log2(n_bins / (hi - lo))`` when ``data_range=(lo, hi)`` is given."""
    bpd = -logp / (dim * math.log(2))
    if data_range is not None:
        lo, hi = data_range
        if not hi > lo or n_bins < 1:
            raise ValueError(f"data_range={data_range!r} must be (lo, hi) with hi > lo, and n_bins={n_bins!r} >= 1.")
        bpd = bpd + math.log2(n_bins / (hi - lo))
    return bpd


def log_likelihood(
    model: Model,
    schedule: NoiseSchedule,
    x: Tensor,
    *,
    sde: str = "vp",
    exact_trace: bool = False,
    hutchinson: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
    t_eps: float | None = None,
    data_range: tuple[float, float] | None = None,
    n_bins: int = 256,
) -> dict:
    """PF-ODE log-likelihood of a batch ``x`` (B, ...) under a DDPM-trained ``model``.

    Returns a dict: ``logp`` (B,) nats per sample, ``bpd`` (B,) bits per dimension, ``nfe`` (batched
    vector-field evaluations; each costs one forward and, exact, D backward passes or, Hutchinson, one),
    ``z`` the latent x(1).
    """
    if sde not in SDES:
        raise ValueError(f"sde={sde!r} is not supported; expected one of {SDES}.")
    if hutchinson not in HUTCHINSON:
        raise ValueError(f"hutchinson={hutchinson!r} is not supported; expected one of {HUTCHINSON}.")
    sde_obj = make_sde(sde, schedule)
    t0 = sde_obj.t_eps if t_eps is None else float(t_eps)
    _check_t_eps(t_eps, t0, sde)

    shape, B, D = x.shape, x.shape[0], x[0].numel()
    if not exact_trace:
        if hutchinson == "rademacher":
            noise = torch.randint(0, 2, shape, generator=generator, device=generator.device if generator else None)
            noise = (2 * noise - 1).to(device=x.device, dtype=x.dtype)
        else:
            from diffusers.utils.torch_utils import randn_tensor

            noise = randn_tensor(shape, generator=generator, device=x.device, dtype=x.dtype)

    def augmented_field(t: Tensor, y: Tensor) -> Tensor:
        with torch.enable_grad():
            xt = y[:, :D].reshape(shape).detach().requires_grad_(True)
            v = sde_obj.reverse_drift(model, schedule, xt, t, probability_flow=True)
            if exact_trace:
                v_flat = v.reshape(B, D)
                div = torch.zeros(B, dtype=x.dtype, device=x.device)
                for i in range(D):
                    (g,) = torch.autograd.grad(v_flat[:, i].sum(), xt, retain_graph=i < D - 1)
                    div = div + g.reshape(B, D)[:, i]
            else:
                (g,) = torch.autograd.grad((v * noise).sum(), xt)
                div = (g * noise).reshape(B, D).sum(1)
        return torch.cat([v.detach().reshape(B, D), div.detach()[:, None]], dim=1)

    y0 = torch.cat([x.detach().reshape(B, D), torch.zeros(B, 1, dtype=x.dtype, device=x.device)], dim=1)
    sol = solve_ivp_dopri5(augmented_field, y0, t0, 1.0, rtol=rtol, atol=atol)
    z = sol.y[:, :D].reshape(shape)
    logp = sde_obj.prior_logp(z) + sol.y[:, D]
    return {"logp": logp, "bpd": bits_per_dim(logp, D, data_range, n_bins), "nfe": sol.nfe, "z": z}
