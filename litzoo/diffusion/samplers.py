r"""Samplers for a DDPM-trained network: discrete (diffusers) and continuous-time (SDE / ODE) ones.

A "model" is ``model(x, timestep) -> prediction`` (``timestep``: ``(B,)`` labels, integers for the
discrete samplers, fractional ``t*T - 1`` for the continuous ones), read through
``schedule.prediction_type``. Every sampler returns x0 in data space.

=================  ============================================================================
``"ddpm"``         Ancestral sampling, Ho et al. 2020 Alg. 2: exactly the loop of
                   ``diffusers.DDPMPipeline.__call__`` (same noise draws for the same generator),
                   ``steps`` strided ("leading") timesteps, ``variance_type="fixed_small"``.
``"ddim"``         Song, Meng & Ermon 2021 (DDIM) Eq. 12 through ``diffusers.DDIMScheduler``; ``eta=0``
                   deterministic, ``eta=1`` DDPM-like noise.
``"euler_maruyama"``  Reverse-time SDE :math:`dx = [f - g^2\nabla\log p_t]dt + g\,d\bar w`
                   (Song et al. 2021), Euler–Maruyama on a uniform grid t: 1 -> t_eps.
``"pc"``           Predictor–corrector, Song et al. 2021 Alg. 2 (VE) / Alg. 3 (VP): reverse-diffusion
                   predictor :math:`x \leftarrow x - f_d + G^2 s + G z`, then ``n_corrector`` Langevin
                   steps :math:`x \leftarrow x + \epsilon s + \sqrt{2\epsilon}z` with
                   :math:`\epsilon = 2\alpha(r\|z\|/\|s\|)^2`, r = ``snr`` (norms averaged over the
                   batch, as in the authors' code, so the step is the same for every sample).
``"pf_ode"``       Probability-flow ODE :math:`dx/dt = f - \frac12 g^2\nabla\log p_t`, Heun (2nd order)
                   on a uniform grid, 2 evaluations per step.
``"pf_ode_rk45"``  Same ODE, adaptive Dormand–Prince 5(4) (:func:`solve_ivp_dopri5`), per-sample step
                   size control with ``rtol``/``atol``; ``steps`` is ignored.
=================  ============================================================================

The continuous samplers start from the SDE prior at t=1 (VP: N(0, I); VE: N(0, sigma_max^2 I)),
integrate to ``t_eps`` (default: the time of label 0, the smallest trained noise level, see
:mod:`litzoo.diffusion.sde`) and finish with one Tweedie denoise step
:math:`\hat x_0 = E[x_0 \mid x_{t_{eps}}]` (Tweedie's formula, Efron 2011; Song et al.'s "denoise"), which removes the
residual noise of level t_eps at the cost of one evaluation. ``clip_sample`` clamps that final x0
to [-1, 1] (the drift itself is never clipped: that would change the dynamics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from litzoo.checks import check_positive_int
from litzoo.diffusion.schedules import NoiseSchedule, _bcast
from litzoo.diffusion.sde import SDE, SDES, Model, VPSDE, as_time, call_model, make_sde

SAMPLERS = ("ddpm", "ddim", "euler_maruyama", "pc", "pf_ode", "pf_ode_rk45")


def _tqdm(iterable=None, total=None, disable=True, desc=None):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, disable=disable, desc=desc, leave=False)


def _randn(x: Tensor, generator: torch.Generator | None) -> Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)


# ===================================================================== adaptive ODE solver
# Dormand & Prince (1980) RK5(4)7M tableau, as in scipy.integrate.RK45.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_E = (-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40)  # 5th - 4th order


@dataclass
class ODESolution:
    y: Tensor  # state at t1, shape of y0
    nfe: int  # batched evaluations of f
    n_steps: int  # iterations of the batched step loop (accepted or rejected)
    n_rejected: int  # rejected per-sample steps, summed over the batch


def _rms(v: Tensor) -> Tensor:
    return v.flatten(1).pow(2).mean(1).sqrt()


def solve_ivp_dopri5(
    f: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
    progress: bool = False,
) -> ODESolution:
    r"""Integrate :math:`dy/dt = f(t, y)` from t0 to t1 with adaptive Dormand–Prince 5(4), batched.

    ``f(t, y)`` gets a ``(B,)`` vector of per-sample times and must act row-wise (sample i's
    derivative depends only on row i). Each sample has its own step size, controlled as in
    ``scipy.integrate.RK45``: error norm ``rms(err / (atol + rtol * max(|y|, |y_new|)))`` over the
    non-batch dims, accept if < 1, step factor ``clip(0.9 * norm^(-1/5), 0.2, 10)``; the 5th-order
    solution is propagated (local extrapolation) and the last stage is reused (FSAL). Finished
    samples take zero-length steps while the rest of the batch goes on.
    """
    if rtol <= 0 or atol <= 0:
        raise ValueError(f"rtol={rtol!r}, atol={atol!r} must both be > 0 (e.g. 1e-5).")
    B = y0.shape[0]
    dev, dt = y0.device, y0.dtype
    direction = 1.0 if t1 >= t0 else -1.0
    span = abs(t1 - t0)

    def col(v: Tensor) -> Tensor:  # (B,) -> broadcastable against y
        return _bcast(v, y0)

    t = torch.full((B,), float(t0), dtype=torch.float64, device=dev)
    y = y0.clone()
    k1 = f(t.to(dt), y)
    nfe = 1

    # initial step (Hairer, Norsett & Wanner, "Solving ODEs I", II.4; scipy's select_initial_step)
    scale = atol + y.abs() * rtol
    d0, d1 = _rms(y / scale), _rms(k1 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1).to(torch.float64)
    h0 = h0.clamp(max=span)
    k_probe = f((t + direction * h0).to(dt), y + col(direction * h0) * k1)
    nfe += 1
    d2 = (_rms((k_probe - k1) / scale) / h0.to(dt)).to(torch.float64)
    dmax = torch.maximum(d1.to(torch.float64), d2)
    h1 = torch.where(dmax <= 1e-15, (h0 * 1e-3).clamp(min=1e-6), (0.01 / dmax) ** (1 / 5))
    h = torch.minimum(100 * h0, h1).clamp(max=span)

    done = torch.zeros(B, dtype=torch.bool, device=dev)
    n_steps = n_rejected = 0
    pbar = _tqdm(total=1000, disable=not progress, desc="dopri5")
    while not bool(done.all()):
        if n_steps >= max_steps:
            raise RuntimeError(
                f"solve_ivp_dopri5 did not reach t1={t1} within max_steps={max_steps} "
                f"(slowest sample at t={float(t[~done][0]):.3g}); loosen rtol/atol or raise max_steps."
            )
        remaining = (t1 - t).abs()
        last = h >= remaining
        h = torch.where(last, remaining, h)
        h = torch.where(done, torch.zeros_like(h), h)
        hs = direction * h  # signed, float64
        hs_y = col(hs)

        K = [k1]
        for s in range(1, 6):
            dy = sum(a * k for a, k in zip(_A[s], K))
            K.append(f((t + _C[s] * hs).to(dt), y + hs_y * dy))
        y_new = y + hs_y * sum(b * k for b, k in zip(_B, K))
        t_new = torch.where(last, torch.full_like(t, float(t1)), t + hs)
        k7 = f(t_new.to(dt), y_new)
        nfe += 6
        K.append(k7)
        err = hs_y * sum(e * k for e, k in zip(_E, K))
        err_norm = _rms(err / (atol + rtol * torch.maximum(y.abs(), y_new.abs()))).to(torch.float64)

        accept = (err_norm < 1) | done
        if not bool(torch.isfinite(err_norm[~done]).all()):
            raise RuntimeError("solve_ivp_dopri5: non-finite error estimate; the vector field returned inf/nan.")
        factor = (0.9 * err_norm.clamp(min=1e-300) ** (-1 / 5)).clamp(0.2, 10.0)  # clamp: err 0 -> max growth
        factor = torch.where(accept, factor, factor.clamp(max=0.9))
        n_rejected += int((~accept).sum())
        acc_y = col(accept)
        y = torch.where(acc_y, y_new, y)
        k1 = torch.where(acc_y, k7, k1)
        t = torch.where(accept, t_new, t)
        done = done | (accept & last)
        h = torch.where(done, h, h * factor)
        if bool((h[~done] < 1e-12 * max(span, 1e-12)).any()):
            raise RuntimeError("solve_ivp_dopri5: step size underflow; the ODE is too stiff for rtol/atol given.")
        n_steps += 1
        pbar.n = int(1000 * float(((t - t0).abs() / max(span, 1e-300)).min()))
        pbar.refresh()
    pbar.close()
    return ODESolution(y=y, nfe=nfe, n_steps=n_steps, n_rejected=n_rejected)


# ===================================================================== discrete samplers
def _discrete_loop(model: Model, scheduler, x: Tensor, steps: int, step_kwargs: dict, progress: bool, name: str):
    scheduler.set_timesteps(steps)
    for t in _tqdm(scheduler.timesteps, disable=not progress, desc=name):
        model_output = call_model(model, x, t.to(x.device).expand(x.shape[0]))
        x = scheduler.step(model_output, t, x, **step_kwargs).prev_sample
    return x, len(scheduler.timesteps)


def ddpm_sample(model, schedule, shape, *, steps, generator=None, device=None, dtype=None, progress=False):
    """``diffusers.DDPMPipeline.__call__``'s loop, without its final ``(x/2+0.5).clamp(0,1)``."""
    from diffusers.utils.torch_utils import randn_tensor

    x = randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)
    return _discrete_loop(model, schedule.ddpm_scheduler(), x, steps, {"generator": generator}, progress, "ddpm")


def ddim_sample(model, schedule, shape, *, steps, eta=0.0, generator=None, device=None, dtype=None, progress=False):
    """``diffusers.DDIMPipeline``'s loop (initial noise by ``randn_tensor``), DDIM Eq. 12 with ``eta``."""
    from diffusers.utils.torch_utils import randn_tensor

    x = randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)
    kw = {"eta": eta, "generator": generator}
    return _discrete_loop(model, schedule.ddim_scheduler(), x, steps, kw, progress, "ddim")


# ===================================================================== continuous samplers
def _final_denoise(sde: SDE, model, schedule: NoiseSchedule, x: Tensor, t_eps: float) -> Tensor:
    x0 = sde.denoise(model, schedule, x, t_eps)
    return x0.clamp(-1, 1) if schedule.clip_sample else x0


def euler_maruyama_sample(model, schedule, sde: SDE, x: Tensor, ts: Tensor, generator=None, progress=False):
    r"""Reverse SDE, :math:`x_{t-h} = x_t - [f - g^2 s]h + g\sqrt h\,z` (h > 0 going backwards)."""
    for i in _tqdm(range(len(ts) - 1), disable=not progress, desc="euler_maruyama"):
        t, h = ts[i], ts[i] - ts[i + 1]
        drift = sde.reverse_drift(model, schedule, x, t)
        g = _bcast(sde.diffusion(as_time(t, x)), x)
        x = x - drift * h + g * h.sqrt() * _randn(x, generator)
    return x, len(ts) - 1


def reverse_diffusion_predictor(model, schedule, sde: SDE, x: Tensor, t: Tensor, t_next: Tensor, generator=None):
    r"""Song et al.'s reverse-diffusion predictor: :math:`x \leftarrow x - f_d + G^2 s(x,t) + G z`, with
    (f_d, G) the discretised forward step t_next -> t.

    VP: :math:`(2-\sqrt{\alpha})x + (1-\alpha)s + \sqrt{1-\alpha}z`,
    :math:`\alpha=\bar\alpha(t)/\bar\alpha(t_{next})` (Alg. 3);
    VE: :math:`x + (\sigma_t^2-\sigma_{t_{next}}^2)s + \sqrt{\sigma_t^2-\sigma_{t_{next}}^2}z` (Alg. 2).
    """
    f_d, G = sde.discretize(x, t, t - t_next)
    G = _bcast(G, x)
    return x - f_d + G**2 * sde.score(model, schedule, x, t) + G * _randn(x, generator)


def langevin_corrector(model, schedule, sde: SDE, x: Tensor, t: Tensor, *, snr: float, n_steps: int, generator=None):
    r"""``n_steps`` of Langevin MCMC targeting :math:`p_t`: :math:`x \leftarrow x + \epsilon s + \sqrt{2\epsilon}z`,
    :math:`\epsilon = 2\alpha(r\|z\|/\|s\|)^2` (Song et al. Alg. 2/3; :math:`\alpha = 1-\beta` of one trained
    step for VP, 1 for VE).

    The norms are batch means (the authors' code), so every sample takes the same step and the update stays
    a valid unadjusted-Langevin step for p_t; being unadjusted it inflates the variance along a precision
    eigenvalue p by about a factor 1/(1 - eps p/2).
    """
    alpha = sde.step_alpha(t, 1.0 / schedule.num_train_timesteps) if isinstance(sde, VPSDE) else 1.0
    for _ in range(n_steps):
        s = sde.score(model, schedule, x, t)
        z = _randn(x, generator)
        s_norm = s.flatten(1).norm(dim=1).mean()
        z_norm = z.flatten(1).norm(dim=1).mean()
        eps = 2 * alpha * (snr * z_norm / s_norm) ** 2
        x = x + eps * s + (2 * eps).sqrt() * z
    return x


def pc_sample(model, schedule, sde: SDE, x: Tensor, ts: Tensor, *, snr, n_corrector, generator=None, progress=False):
    """Song et al. 2021 Alg. 2/3: reverse-diffusion predictor t_i -> t_{i+1}, then Langevin corrector at t_{i+1}."""
    for i in _tqdm(range(len(ts) - 1), disable=not progress, desc="pc"):
        x = reverse_diffusion_predictor(model, schedule, sde, x, ts[i], ts[i + 1], generator)
        x = langevin_corrector(model, schedule, sde, x, ts[i + 1], snr=snr, n_steps=n_corrector, generator=generator)
    return x, (len(ts) - 1) * (1 + n_corrector)


def pf_ode_heun_sample(model, schedule, sde: SDE, x: Tensor, ts: Tensor, progress=False):
    r"""Probability-flow ODE with Heun's method (explicit trapezoid), 2 evaluations per step."""
    for i in _tqdm(range(len(ts) - 1), disable=not progress, desc="pf_ode"):
        t, t_next = ts[i], ts[i + 1]
        dt = t_next - t  # negative
        v1 = sde.reverse_drift(model, schedule, x, t, probability_flow=True)
        x_euler = x + dt * v1
        v2 = sde.reverse_drift(model, schedule, x_euler, t_next, probability_flow=True)
        x = x + dt * 0.5 * (v1 + v2)
    return x, 2 * (len(ts) - 1)


def pf_ode_rk45_sample(model, schedule, sde: SDE, x: Tensor, t_eps: float, *, rtol, atol, progress=False):
    """Probability-flow ODE from t=1 to t_eps with :func:`solve_ivp_dopri5`."""

    def velocity(t: Tensor, y: Tensor) -> Tensor:
        return sde.reverse_drift(model, schedule, y, t, probability_flow=True)

    sol = solve_ivp_dopri5(velocity, x, 1.0, t_eps, rtol=rtol, atol=atol, progress=progress)
    return sol.y, sol.nfe


# ===================================================================== entry point
def _check_t_eps(t_eps, t_end: float, sde: str) -> None:
    lower_ok = t_end > 0.0 if sde == "vp" else t_end >= 0.0
    if not (lower_ok and t_end < 1.0):
        raise ValueError(
            f"t_eps={t_eps!r} must be in {'(0, 1)' if sde == 'vp' else '[0, 1)'} for sde={sde!r} (the VP score "
            "-eps/sqrt(1 - alpha_bar) is singular at t=0); leave it None for the time of label 0."
        )


def _infer_device_dtype(model, device, dtype, generator):
    param = None
    if isinstance(model, torch.nn.Module):
        param = next(model.parameters(), None)
    if device is None:  # a plain function/closure has no parameters: fall back on the generator's device
        device = param.device if param is not None else (generator.device if generator is not None else "cpu")
    if dtype is None:
        dtype = param.dtype if param is not None else torch.float32
    return torch.device(device), dtype


def sample(
    model: Model,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    sampler: str = "ddpm",
    steps: int = 50,
    generator: torch.Generator | None = None,
    sde: str = "vp",
    eta: float = 0.0,
    snr: float = 0.16,
    n_corrector: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    progress: bool = False,
    t_eps: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    return_nfe: bool = False,
) -> Tensor | tuple[Tensor, int]:
    """Draw ``shape[0]`` samples x0 (data space) from a DDPM-trained ``model``; see the module docstring.

    Args:
        sampler: one of :data:`SAMPLERS`.
        steps: number of steps (discrete: ``set_timesteps(steps)``, <= T; continuous: uniform grid
            from 1 to t_eps). Ignored by ``"pf_ode_rk45"``.
        sde: ``"vp"`` or ``"ve"`` for the continuous samplers (``ddpm``/``ddim`` are VP-only).
        eta: DDIM noise scale (0: deterministic DDIM, 1: DDPM posterior variance).
        snr, n_corrector: Langevin corrector of ``"pc"``.
        rtol, atol: tolerances of ``"pf_ode_rk45"``.
        t_eps: end time of the continuous samplers (default: the SDE's ``t_eps``, label 0).
        device, dtype: of the samples; default: those of the model's first parameter (an ``nn.Module``), else
            the generator's device / float32, else cpu. Pass ``device`` when ``model`` is a plain closure.
        return_nfe: also return the number of (batched) network evaluations.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r} is not supported; expected one of {SAMPLERS}.")
    if sde not in SDES:
        raise ValueError(f"sde={sde!r} is not supported; expected one of {SDES}.")
    if sampler in ("ddpm", "ddim") and sde != "vp":
        raise ValueError(
            f"sampler={sampler!r} is a discrete VP (DDPM) sampler and cannot use sde={sde!r}; pass sde='vp' or "
            "choose a continuous sampler ('euler_maruyama', 'pc', 'pf_ode', 'pf_ode_rk45')."
        )
    check_positive_int("steps", steps)
    if sampler in ("ddpm", "ddim") and steps > schedule.num_train_timesteps:
        raise ValueError(
            f"steps={steps} exceeds num_train_timesteps={schedule.num_train_timesteps}; the discrete samplers "
            "can only visit trained timesteps, so pass steps <= num_train_timesteps."
        )
    if eta < 0:
        raise ValueError(f"eta={eta!r} must be >= 0 (0: DDIM, 1: DDPM-like).")
    if snr <= 0:
        raise ValueError(f"snr={snr!r} must be > 0 (Song et al. use 0.16 for VE, 0.01-0.17 for VP).")
    if isinstance(n_corrector, bool) or not isinstance(n_corrector, int) or n_corrector < 0:
        raise ValueError(f"n_corrector={n_corrector!r} must be an int >= 0.")
    if rtol <= 0 or atol <= 0:
        raise ValueError(f"rtol={rtol!r}, atol={atol!r} must both be > 0 (e.g. 1e-5).")
    shape = tuple(int(s) for s in shape)
    device, dtype = _infer_device_dtype(model, device, dtype, generator)

    with torch.no_grad():
        if sampler == "ddpm":
            x, nfe = ddpm_sample(model, schedule, shape, steps=steps, generator=generator, device=device,
                                 dtype=dtype, progress=progress)
        elif sampler == "ddim":
            x, nfe = ddim_sample(model, schedule, shape, steps=steps, eta=eta, generator=generator, device=device,
                                 dtype=dtype, progress=progress)
        else:
            sde_obj = make_sde(sde, schedule)
            t_end = sde_obj.t_eps if t_eps is None else float(t_eps)
            _check_t_eps(t_eps, t_end, sde)
            x = sde_obj.prior_sample(shape, generator, device=device, dtype=dtype)
            ts = torch.linspace(1.0, t_end, steps + 1, dtype=dtype, device=device)
            if sampler == "euler_maruyama":
                x, nfe = euler_maruyama_sample(model, schedule, sde_obj, x, ts, generator, progress)
            elif sampler == "pc":
                x, nfe = pc_sample(model, schedule, sde_obj, x, ts, snr=snr, n_corrector=n_corrector,
                                   generator=generator, progress=progress)
            elif sampler == "pf_ode":
                x, nfe = pf_ode_heun_sample(model, schedule, sde_obj, x, ts, progress)
            else:
                x, nfe = pf_ode_rk45_sample(model, schedule, sde_obj, x, t_end, rtol=rtol, atol=atol,
                                            progress=progress)
            x = _final_denoise(sde_obj, model, schedule, x, t_end)
            nfe += 1
    return (x, nfe) if return_nfe else x
