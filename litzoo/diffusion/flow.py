r"""Rectified flow: interpolation, velocity target, timestep densities, shift, Euler and Heun samplers.

Liu et al. 2023, "Flow Straight and Fast"; Lipman et al. 2023, "Flow Matching for Generative
Modeling"; Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image
Synthesis" (SD3). Time runs as in SD3 and diffusers' ``FlowMatchEulerDiscreteScheduler``:
``t = 0`` is data, ``t = 1`` is noise.

Forward process and training target (SD3 §2, eq. 1 and the rectified-flow choice a_t = 1 - t, b_t = t)::

    z_t = (1 - t) x_0 + t eps,          eps ~ N(0, I)
    v   = dz_t / dt = eps - x_0                         (the network regresses v_theta(z_t, t) onto it)

The minimiser of E || v_theta(z_t, t) - (eps - x_0) ||^2 is v*(z, t) = E[eps - x_0 | z_t = z], and the
ODE dz/dt = v*(z, t) run from t = 1 (z ~ N(0, I)) to t = 0 transports noise to the data distribution.

Timestep densities pi(t) on (0, 1) (SD3 §3.1); each is sampled as t = f(u) for a simple u:

* ``uniform``:            u ~ U(0, 1), t = u.                         pi(t) = 1
* ``logit_normal(m, s)``: u ~ N(m, s^2), t = sigmoid(u).
                          pi(t) = 1 / (s sqrt(2 pi)) * 1 / (t (1 - t)) * exp(-(logit(t) - m)^2 / (2 s^2))
* ``mode(s)`` (mode sampling with heavy tails), u ~ U(0, 1),
                          t = f_mode(u) = 1 - u - s (cos^2(pi u / 2) - 1 + u),
                          pi(t) = 1 / |f_mode'(f_mode^{-1}(t))|,  f_mode'(u) = -1 - s + s (pi / 2) sin(pi u);
                          monotone (a density) for -1 <= s <= 2 / (pi - 2).
* ``cosmap``:             u ~ U(0, 1), t = 1 - 1 / (tan(pi u / 2) + 1).  pi(t) = 2 / (pi (1 - 2 t + 2 t^2))

Resolution-dependent shift (SD3 §5.3.2): at higher resolution the same noise level destroys less
of the image, so time is moved towards noise by

    t' = alpha t / (1 + (alpha - 1) t),       inverse t = t' / (alpha - (alpha - 1) t'),

with alpha = sqrt(m / n) for m pixels (tokens) versus the n of the base resolution. A shifted
training density is pi'(t') = pi(t) * dt/dt' = pi(t) * alpha / (alpha - (alpha - 1) t')^2. The
same map is applied to the sampling grid (as ``FlowMatchEulerDiscreteScheduler(shift=alpha)`` does).

Samplers: Euler and Heun (2nd order, Karras et al. 2022 Alg. 1 without churn) over the shifted grid
t_0 = 1 > t_1 > ... > t_N = 0, for any ``model(z, t) -> v`` with ``t`` of shape (batch,).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from litzoo.checks import check_choice

TIMESTEP_DENSITIES = ("uniform", "logit_normal", "mode", "cosmap")
FLOW_SAMPLERS = ("euler", "heun")

VelocityModel = Callable[[Tensor, Tensor], Tensor]


def check_mode_scale(mode_scale: float) -> None:
    upper = 2.0 / (math.pi - 2.0)
    if not -1.0 <= mode_scale <= upper:
        raise ValueError(f"mode_scale={mode_scale} makes f_mode non-monotone (no density); use a value in "
                         f"[-1, {upper:.4f}] (SD3 uses 1.29).")


# --------------------------------------------------------------------------------- process
def interpolate(x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
    """z_t = (1 - t) x0 + t eps, with ``t`` of shape (batch,) broadcast over the other dimensions."""
    t = t.view(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * eps


def velocity_target(x0: Tensor, eps: Tensor) -> Tensor:
    """v = eps - x0, the time derivative of z_t."""
    return eps - x0


def gaussian_velocity(mu: Tensor, sigma: Tensor) -> VelocityModel:
    """The exact rectified-flow velocity v*(z, t) = E[eps - x0 | z_t = z] for data x0 ~ N(mu, Sigma).

    z_t ~ N((1 - t) mu, C) with C = (1 - t)^2 Sigma + t^2 I, Cov(x0, z) = (1 - t) Sigma, Cov(eps, z) = t I, so
    E[x0 | z] = mu + (1 - t) Sigma C^{-1} (z - (1 - t) mu),  E[eps | z] = t C^{-1} (z - (1 - t) mu) and
    v*(z, t) = (t I - (1 - t) Sigma) C^{-1} (z - (1 - t) mu) - mu.  A reference for exact sampler tests.
    """
    d = mu.shape[0]
    eye = torch.eye(d, dtype=sigma.dtype, device=sigma.device)

    def v(z: Tensor, t: Tensor) -> Tensor:
        t = t.to(sigma.dtype).expand(z.shape[0]).view(-1, 1, 1)
        cov = (1 - t) ** 2 * sigma + t**2 * eye
        centred = z.to(sigma.dtype) - (1 - t[:, :, 0]) * mu
        solved = torch.linalg.solve(cov, centred.unsqueeze(-1))
        return ((t * eye - (1 - t) * sigma) @ solved).squeeze(-1) - mu

    return v


# --------------------------------------------------------------------------------- shift
def shift_time(t: Tensor, shift: float) -> Tensor:
    """t' = alpha t / (1 + (alpha - 1) t) (SD3 §5.3.2); alpha = ``shift`` > 0, alpha = 1 is the identity."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0 (1.0 = no shift; SD3 uses 3.0 at 1024px), got {shift}.")
    return shift * t / (1 + (shift - 1) * t)


def unshift_time(t_shifted: Tensor, shift: float) -> Tensor:
    """The inverse of :func:`shift_time`: t = t' / (alpha - (alpha - 1) t')."""
    if shift <= 0:
        raise ValueError(f"shift must be > 0, got {shift}.")
    return t_shifted / (shift - (shift - 1) * t_shifted)


def resolution_shift(num_tokens: int, base_num_tokens: int) -> float:
    """alpha = sqrt(m / n): the shift for ``num_tokens`` pixels/latent tokens relative to a base resolution."""
    if num_tokens < 1 or base_num_tokens < 1:
        raise ValueError(f"num_tokens and base_num_tokens must be >= 1, got {num_tokens}, {base_num_tokens}.")
    return math.sqrt(num_tokens / base_num_tokens)


# --------------------------------------------------------------------------------- timestep densities
def _f_mode(u: Tensor, s: float) -> Tensor:
    return 1 - u - s * (torch.cos(math.pi / 2 * u) ** 2 - 1 + u)


def sample_timesteps(n: int, density: str = "logit_normal", *, logit_mean: float = 0.0, logit_std: float = 1.0,
                     mode_scale: float = 1.29, shift: float = 1.0, generator: Optional[torch.Generator] = None,
                     device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """``n`` training timesteps t in (0, 1) drawn from ``density`` (see module docstring), then shifted."""
    check_choice("density", density, TIMESTEP_DENSITIES)
    if density == "logit_normal":
        if logit_std <= 0:
            raise ValueError(f"logit_std must be > 0, got {logit_std}.")
        u = torch.randn(n, generator=generator, device=device, dtype=dtype) * logit_std + logit_mean
        t = torch.sigmoid(u)
    else:
        u = torch.rand(n, generator=generator, device=device, dtype=dtype)
        if density == "uniform":
            t = u
        elif density == "mode":
            check_mode_scale(mode_scale)
            t = _f_mode(u, mode_scale)
        else:  # cosmap
            t = 1 - 1 / (torch.tan(math.pi / 2 * u) + 1)
    return shift_time(t, shift) if shift != 1.0 else t


def _f_mode_inverse(t: Tensor, s: float, iterations: int = 60) -> Tensor:
    # f_mode decreases from 1 (u=0) to 0 (u=1): bisection is exact to 2^-60.
    lo, hi = torch.zeros_like(t), torch.ones_like(t)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        above = _f_mode(mid, s) > t
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return (lo + hi) / 2


def timestep_density(t: Tensor, density: str = "logit_normal", *, logit_mean: float = 0.0, logit_std: float = 1.0,
                     mode_scale: float = 1.29, shift: float = 1.0) -> Tensor:
    """pi(t) of :func:`sample_timesteps` with the same arguments (the shift included), for t in (0, 1)."""
    check_choice("density", density, TIMESTEP_DENSITIES)
    jacobian = torch.ones_like(t)
    if shift != 1.0:  # pi'(t') = pi(t) dt/dt'
        jacobian = shift / (shift - (shift - 1) * t) ** 2
        t = unshift_time(t, shift)
    if density == "uniform":
        pdf = torch.ones_like(t)
    elif density == "logit_normal":
        logit = torch.log(t) - torch.log1p(-t)
        pdf = torch.exp(-((logit - logit_mean) ** 2) / (2 * logit_std**2)) / (
            logit_std * math.sqrt(2 * math.pi) * t * (1 - t))
    elif density == "mode":
        check_mode_scale(mode_scale)
        u = _f_mode_inverse(t, mode_scale)
        pdf = 1 / (1 + mode_scale - mode_scale * math.pi / 2 * torch.sin(math.pi * u)).abs()
    else:  # cosmap
        pdf = 2 / (math.pi * (1 - 2 * t + 2 * t**2))
    return pdf * jacobian


# --------------------------------------------------------------------------------- samplers
def time_grid(steps: int, shift: float = 1.0, device=None, dtype: torch.dtype = torch.float32) -> Tensor:
    """t_i = shift(1 - i / N), i = 0..N: from noise (1) to data (0), denser near t = 1 when shift > 1."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    return shift_time(torch.linspace(1, 0, steps + 1, device=device, dtype=dtype), shift)


@torch.no_grad()
def sample_flow(model: VelocityModel, noise: Tensor, *, steps: int, sampler: str = "euler", shift: float = 1.0,
                grid: Optional[Tensor] = None) -> Tensor:
    """Integrate dz/dt = v(z, t) from z_1 = ``noise`` at t = 1 to t = 0 and return z_0.

    Euler:  z_{i+1} = z_i + (t_{i+1} - t_i) v(z_i, t_i)                         (``steps`` evaluations)
    Heun:   z~ = Euler step;  z_{i+1} = z_i + (t_{i+1} - t_i) (v(z_i, t_i) + v(z~, t_{i+1})) / 2   (2 ``steps``)
    ``grid`` overrides the shifted uniform grid (it must run from high t to low t).
    """
    check_choice("sampler", sampler, FLOW_SAMPLERS)
    ts = time_grid(steps, shift, device=noise.device) if grid is None else grid.to(noise.device)
    z = noise
    for t, t_next in zip(ts[:-1], ts[1:]):
        v = model(z, t.expand(z.shape[0]))
        dt = (t_next - t).to(z.dtype)
        z_euler = z + dt * v
        if sampler == "euler":
            z = z_euler
        else:
            v_next = model(z_euler, t_next.expand(z.shape[0]))
            z = z + dt * (v + v_next) / 2
    return z
