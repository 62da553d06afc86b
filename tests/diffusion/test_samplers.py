"""Samplers (litzoo/diffusion/samplers.py) driven by the exact denoiser of Gaussian data.

With the ideal predictor of N(mu, Sigma) data (conftest.py) every sampler must return N(mu, Sigma), up to
(a) sampling noise and (b) its discretisation error. We check moments in the whitened frame
w = L^{-1}(x - mu), Sigma = L L^T, where the target is N(0, I):

* sampling noise, n = 10_000 draws: each component of mean(w) has standard error 1/sqrt(n) = 0.010, each
  diagonal entry of cov(w) sqrt(2/n) = 0.014 (off-diagonal 0.010). We allow 5 standard errors
  (two-sided tail 6e-7 per checked number, ~1e-4 over the whole file).
* discretisation budget BIAS = 0.02 on top. The step counts below are chosen so that the bias, measured
  at n = 1e5 or, for the deterministic samplers, exactly through their affine push-forward
  (``test_deterministic_samplers_push_the_prior_forward_onto_the_data_gaussian``), stays under it:
  ddpm/ddim(eta=1) at 1000 steps ~0.019 (the "fixed_small" posterior variance ignores Var[x0 | x_t]),
  ddim(eta=0) 500 steps ~0.012, Euler-Maruyama 500 steps ~0.013, PC 500 steps snr=0.05 ~0.01,
  Heun 100 (VP) / 200 (VE) steps <0.004, RK45 <0.001; all samplers also carry a ~0.005 mean offset from
  starting at N(0, I) instead of the exact t=1 marginal (sqrt(alpha_bar(1)) = 0.006).

So a sampler passes iff |mean(w)| <= 0.07 and |cov(w) - I| <= 0.091 entrywise; a 10% error in a
variance, or a mean off by 0.1 standard deviations, fails (see ``test_moment_check_rejects_a_wrong_model``).
"""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMPipeline, DDPMPipeline, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from litzoo.diffusion import SAMPLERS, NoiseSchedule, VPSDE, sample, solve_ivp_dopri5
from litzoo.diffusion.samplers import langevin_corrector

f64 = torch.float64
N = 10_000
BIAS = 0.02
TOL_MEAN = 5 / math.sqrt(N) + BIAS
TOL_COV = 5 * math.sqrt(2 / N) + BIAS

CASES = {
    "ddpm": dict(sampler="ddpm", steps=1000),
    "ddim_eta0": dict(sampler="ddim", steps=500, eta=0.0),
    "ddim_eta1": dict(sampler="ddim", steps=1000, eta=1.0),
    "em_vp": dict(sampler="euler_maruyama", steps=500, sde="vp"),
    "em_ve": dict(sampler="euler_maruyama", steps=500, sde="ve"),
    "pc_vp": dict(sampler="pc", steps=500, sde="vp", snr=0.05),
    "pc_ve": dict(sampler="pc", steps=500, sde="ve", snr=0.05),
    "pf_ode_vp": dict(sampler="pf_ode", steps=100, sde="vp"),
    "pf_ode_ve": dict(sampler="pf_ode", steps=200, sde="ve"),
    "rk45_vp": dict(sampler="pf_ode_rk45", sde="vp"),
    "rk45_ve": dict(sampler="pf_ode_rk45", sde="ve"),
}
# Every sampler with the epsilon network runs by default. The v / x0 conversions are covered cheaply and
# without sampling noise by the push-forward test below (diffusers' DDIM step, the VP score and the VE score,
# which every continuous sampler shares); the full moment runs for them, and the cosine schedule, are slow.
_slow = pytest.mark.slow
MOMENT_RUNS = [("linear", "epsilon", name) for name in CASES] + [
    pytest.param("linear", pt, name, marks=_slow)
    for pt in ("v_prediction", "sample")
    for name in ("ddpm", "ddim_eta0", "ddim_eta1", "em_vp", "em_ve", "pc_vp", "rk45_vp", "rk45_ve")
] + [
    pytest.param("cosine", "epsilon", name, marks=_slow) for name in ("ddpm", "ddim_eta0", "em_vp", "pc_vp", "rk45_vp")
]


def _schedule(beta_schedule: str, prediction_type: str = "epsilon") -> NoiseSchedule:
    return NoiseSchedule(1000, beta_schedule, prediction_type=prediction_type)


@pytest.mark.parametrize("beta_schedule, prediction_type, case", MOMENT_RUNS)
def test_sampler_with_ideal_denoiser_reproduces_gaussian_mean_and_covariance(beta_schedule, prediction_type, case,
                                                                            gaussian):
    schedule = _schedule(beta_schedule, prediction_type)
    model = gaussian.GaussianIdealModel(schedule)
    x, nfe = sample(model, schedule, (N, 2), generator=torch.Generator().manual_seed(0), dtype=f64,
                    return_nfe=True, **CASES[case])
    assert x.shape == (N, 2) and x.dtype == f64
    assert nfe == model.calls  # the reported number of evaluations is the true one
    mean_err, cov_err = gaussian.whitened_moment_errors(x)
    assert mean_err <= TOL_MEAN, f"{case}: whitened mean off by {mean_err:.4f} > {TOL_MEAN:.3f}"
    assert cov_err <= TOL_COV, f"{case}: whitened covariance off by {cov_err:.4f} > {TOL_COV:.3f}"


@pytest.mark.parametrize("wrong", ["covariance", "mean"])
def test_moment_check_rejects_a_wrong_model(wrong, gaussian):
    """The tolerances above have power: a denoiser for slightly different data is detected."""
    schedule = _schedule("linear")
    mu, sigma = gaussian.MU, gaussian.SIGMA
    if wrong == "covariance":
        sigma = 1.15 * sigma
    else:
        mu = mu + 0.15 * torch.diagonal(sigma).sqrt()
    model = gaussian.GaussianIdealModel(schedule, mu=mu, sigma=sigma)
    x = sample(model, schedule, (N, 2), sampler="pf_ode", steps=100, generator=torch.Generator().manual_seed(0),
               dtype=f64)
    mean_err, cov_err = gaussian.whitened_moment_errors(x)
    assert mean_err > TOL_MEAN if wrong == "mean" else cov_err > TOL_COV


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize(
    "case, tol_mean, tol_cov",
    [("ddim_eta0", 0.01, BIAS), ("pf_ode_vp", 0.01, 2e-3), ("pf_ode_ve", 0.01, 6e-3), ("rk45_vp", 0.01, 2e-3),
     ("rk45_ve", 0.01, 2e-3)],
)
def test_deterministic_samplers_push_the_prior_forward_onto_the_data_gaussian(case, tol_mean, tol_cov,
                                                                              prediction_type, gaussian):
    """No sampling noise: with a linear denoiser a deterministic sampler is an affine map x = A z + b of its
    prior noise z ~ N(0, I), so its output law is exactly N(b, A A^T). Recover A, b from 64 draws (the prior
    is the first randn_tensor draw of the generator) and compare with (mu, Sigma) directly; this measures
    the discretisation bias quoted in the module docstring."""
    schedule = _schedule("linear", prediction_type)
    n = 64
    x = sample(gaussian.GaussianIdealModel(schedule), schedule, (n, 2), generator=torch.Generator().manual_seed(0),
               dtype=f64, **CASES[case])
    z = randn_tensor((n, 2), generator=torch.Generator().manual_seed(0), dtype=f64)
    Z = torch.cat([z, torch.ones(n, 1, dtype=f64)], 1)
    coef = torch.linalg.lstsq(Z, x).solution
    assert (Z @ coef - x).abs().max() < 1e-3  # affine up to the adaptive solver's per-sample steps
    A, b = coef[:2].T, coef[2]
    L = torch.linalg.cholesky(gaussian.SIGMA)
    A_w = torch.linalg.solve_triangular(L, A, upper=False)
    b_w = torch.linalg.solve_triangular(L, (b - gaussian.MU)[:, None], upper=False)[:, 0]
    assert b_w.abs().max() < tol_mean
    assert (A_w @ A_w.T - torch.eye(2, dtype=f64)).abs().max() < tol_cov


def test_langevin_corrector_pulls_a_wrong_distribution_onto_the_marginal(gaussian):
    """The corrector alone (no predictor) turns N(0, 9 I) into p_t = N(sqrt(ab) mu, ab Sigma + (1-ab) I).

    At t=0.2 p_t has precisions ~0.66 and ~2.05; at snr=0.1 the step is eps ~ 2 snr^2 E|z|^2 / E|s|^2 ~ 0.015,
    so 500 steps shrink the initial variance error by exp(-2 * 500 * eps * 0.66) ~ 5e-5, and the unadjusted
    step inflates variance by ~eps p / 2 <= 1.5%, inside BIAS."""
    schedule = _schedule("linear")
    sde = VPSDE(schedule)
    t = torch.tensor(0.2, dtype=f64)
    ab = schedule.alpha_bar(t)
    x = 3 * torch.randn(N, 2, generator=torch.Generator().manual_seed(1), dtype=f64)
    x = langevin_corrector(gaussian.GaussianIdealModel(schedule), schedule, sde, x, t, snr=0.1, n_steps=500,
                           generator=torch.Generator().manual_seed(2))
    mean_err, cov_err = gaussian.whitened_moment_errors(
        x, ab.sqrt() * gaussian.MU, ab * gaussian.SIGMA + (1 - ab) * torch.eye(2, dtype=f64))
    assert mean_err <= TOL_MEAN and cov_err <= TOL_COV


# ----------------------------------------------------------------------------- diffusers parity
def _tiny_unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4).eval()


def _record_last_prev_sample(scheduler) -> dict:
    """Keep the pipeline's final x0 before its (x/2 + 0.5).clamp(0, 1)."""
    record, step = {}, scheduler.step

    def recording_step(*args, **kwargs):
        out = step(*args, **kwargs)
        record["x"] = out.prev_sample
        return out

    scheduler.step = recording_step
    return record


@pytest.mark.parametrize("beta_schedule, prediction_type", [("linear", "epsilon"), ("cosine", "v_prediction")])
def test_ddpm_sampler_equals_diffusers_ddpm_pipeline(beta_schedule, prediction_type):
    schedule = NoiseSchedule(100, beta_schedule, prediction_type=prediction_type)
    unet = _tiny_unet()
    pipe = DDPMPipeline(unet=unet, scheduler=schedule.ddpm_scheduler())
    pipe.set_progress_bar_config(disable=True)
    record = _record_last_prev_sample(pipe.scheduler)
    with torch.no_grad():
        images = pipe(batch_size=3, generator=torch.Generator().manual_seed(7), num_inference_steps=20,
                      output_type="pt").images
    ours = sample(unet, schedule, (3, 1, 8, 8), sampler="ddpm", steps=20, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours, record["x"], rtol=0, atol=1e-5)
    torch.testing.assert_close((ours / 2 + 0.5).clamp(0, 1), images, rtol=0, atol=1e-5)
    assert ours.std() > 0.1  # a non-degenerate output, so the comparison means something


def test_ddim_sampler_equals_diffusers_ddim_pipeline():
    schedule = NoiseSchedule(100, "linear")
    unet = _tiny_unet()
    pipe = DDIMPipeline(unet=unet, scheduler=schedule.ddim_scheduler())
    pipe.set_progress_bar_config(disable=True)
    record = _record_last_prev_sample(pipe.scheduler)
    with torch.no_grad():
        pipe(batch_size=2, generator=torch.Generator().manual_seed(3), eta=0.5, num_inference_steps=10,
             output_type="pt")
    ours = sample(unet, schedule, (2, 1, 8, 8), sampler="ddim", steps=10, eta=0.5,
                  generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, record["x"], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------- adaptive solver
def test_dopri5_solves_a_linear_ode_to_the_requested_tolerance_in_both_directions():
    k = torch.linspace(0.5, 5.0, 8, dtype=f64)[:, None]
    calls = []

    def f(t, y):
        calls.append(1)
        return -k * y

    y0 = torch.ones(8, 1, dtype=f64)
    errors = {}
    for tol in (1e-4, 1e-8):
        sol = solve_ivp_dopri5(f, y0, 0.0, 2.0, rtol=tol, atol=tol)
        errors[tol] = (sol.y - torch.exp(-2.0 * k)).abs().max().item()
    assert errors[1e-8] < 1e-7 and errors[1e-4] < 1e-3 and errors[1e-8] < errors[1e-4] / 100
    calls.clear()
    # backwards, a growing solution from e^-10: atol must be far below the initial values (4.5e-5)
    back = solve_ivp_dopri5(f, torch.exp(-2.0 * k), 2.0, 0.0, rtol=1e-8, atol=1e-14)
    torch.testing.assert_close(back.y, y0, rtol=0, atol=1e-6)
    assert back.nfe == len(calls)


def test_dopri5_per_sample_step_control_makes_each_result_independent_of_the_batch():
    k = torch.tensor([[1.0], [50.0]], dtype=f64)  # a stiff neighbour must not change the easy sample's steps

    def f(t, y):
        return -k[: y.shape[0]] * y + torch.cos(t)[:, None]

    alone = solve_ivp_dopri5(f, torch.ones(1, 1, dtype=f64), 0.0, 1.0)
    both = solve_ivp_dopri5(f, torch.ones(2, 1, dtype=f64), 0.0, 1.0)
    assert torch.equal(alone.y[0], both.y[0])
    assert both.nfe > alone.nfe


# ----------------------------------------------------------------------------- interface
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sampler": "dpm_solver"}, "sampler"),
        ({"sde": "subvp", "sampler": "pc"}, "sde"),
        ({"sde": "ve", "sampler": "ddpm"}, "sde"),
        ({"steps": 0}, "steps"),
        ({"steps": -5, "sampler": "pf_ode"}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"steps": 1001, "sampler": "ddim"}, "steps"),
        ({"eta": -1.0, "sampler": "ddim"}, "eta"),
        ({"snr": 0.0, "sampler": "pc"}, "snr"),
        ({"n_corrector": -1, "sampler": "pc"}, "n_corrector"),
        ({"rtol": 0.0, "sampler": "pf_ode_rk45"}, "rtol"),
        ({"t_eps": 0.0, "sampler": "pf_ode"}, "t_eps"),
        ({"t_eps": 1.0, "sampler": "pf_ode", "sde": "ve"}, "t_eps"),
    ],
)
def test_sample_rejects_bad_arguments_with_value_error(kwargs, match, linear_schedule):
    def never_called(x, t):
        raise AssertionError("validation must happen before sampling")

    with pytest.raises(ValueError, match=match):
        sample(never_called, linear_schedule, (2, 2), **kwargs)


def test_every_documented_sampler_runs_through_sample(linear_schedule, gaussian):
    model = gaussian.GaussianIdealModel(linear_schedule)
    for sampler in SAMPLERS:
        x = sample(model, linear_schedule, (4, 2), sampler=sampler, steps=5, generator=torch.Generator().manual_seed(0))
        assert x.shape == (4, 2) and x.dtype == torch.float32 and torch.isfinite(x).all()


def test_progress_bar_is_shown_only_when_asked(linear_schedule, gaussian, capsys):
    model = gaussian.GaussianIdealModel(linear_schedule)
    for sampler in ("ddim", "pf_ode_rk45"):
        sample(model, linear_schedule, (2, 2), sampler=sampler, steps=5, progress=False)
        assert capsys.readouterr().err == ""
        sample(model, linear_schedule, (2, 2), sampler=sampler, steps=5, progress=True)
        assert "%|" in capsys.readouterr().err  # tqdm's bar


def test_clip_sample_clamps_the_final_x0_of_the_continuous_samplers(gaussian):
    # (ddpm/ddim hand clip_sample to diffusers: see test_scheduler_config_rebuilds_bit_identical_diffusers_schedulers)
    schedule = NoiseSchedule(1000, clip_sample=True)
    model = gaussian.GaussianIdealModel(schedule, mu=torch.tensor([3.0, -3.0], dtype=f64))
    for sampler in ("euler_maruyama", "pf_ode"):
        x = sample(model, schedule, (64, 2), sampler=sampler, steps=20, generator=torch.Generator().manual_seed(0))
        assert x.abs().max() <= 1.0 and (x.abs() == 1.0).any()
