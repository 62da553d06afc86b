"""NoiseSchedule, parameterisation conversions and the VP/VE SDEs built on them (litzoo/diffusion/schedules.py,
litzoo/diffusion/sde.py)."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from litzoo.diffusion import PREDICTION_TYPES, VESDE, VPSDE, NoiseSchedule, predict_eps, predict_x0, training_target

f64 = torch.float64


# ----------------------------------------------------------------------------- discrete schedule
def test_linear_betas_follow_ho_et_al_and_cosine_alpha_bar_follows_nichol_dhariwal():
    lin = NoiseSchedule(1000, "linear", beta_start=1e-4, beta_end=0.02)
    assert lin.betas.dtype == f64 and lin.alphas_cumprod.dtype == f64
    # diffusers builds them in float32, so agreement is to float32 rounding
    torch.testing.assert_close(lin.betas, torch.linspace(1e-4, 0.02, 1000, dtype=f64), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(lin.alphas_cumprod, torch.cumprod(1 - lin.betas, 0), rtol=1e-5, atol=0)

    cos = NoiseSchedule(1000, "cosine")

    def f(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    expected = torch.tensor([f((i + 1) / 1000) / f(0) for i in range(999)], dtype=f64)  # telescoping product
    torch.testing.assert_close(cos.alphas_cumprod[:-1], expected, rtol=2e-4, atol=1e-9)
    assert cos.betas[-1].item() == pytest.approx(0.999, rel=1e-6)  # the cap of "squaredcos_cap_v2"


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_scheduler_config_rebuilds_bit_identical_diffusers_schedulers(beta_schedule):
    s = NoiseSchedule(200, beta_schedule, prediction_type="v_prediction", clip_sample=True)
    cfg = s.scheduler_config()
    assert cfg["beta_schedule"] == {"linear": "linear", "cosine": "squaredcos_cap_v2"}[beta_schedule]
    assert cfg["variance_type"] == "fixed_small"
    ddpm = DDPMScheduler(**cfg)
    assert torch.equal(ddpm.alphas_cumprod.to(f64), s.alphas_cumprod)
    assert ddpm.config.prediction_type == "v_prediction" and ddpm.config.clip_sample is True
    ddim = s.ddim_scheduler()
    assert isinstance(ddim, DDIMScheduler) and torch.equal(ddim.alphas_cumprod.to(f64), s.alphas_cumprod)
    assert ddim.config.prediction_type == "v_prediction"


# ----------------------------------------------------------------------------- continuous time
@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_alpha_bar_passes_through_every_discrete_knot_and_is_one_at_zero(beta_schedule):
    s = NoiseSchedule(1000, beta_schedule)
    t_i = (torch.arange(1000, dtype=f64) + 1) / 1000
    torch.testing.assert_close(s.alpha_bar(t_i), s.alphas_cumprod, rtol=1e-12, atol=0)
    assert s.alpha_bar(torch.tensor(0.0, dtype=f64)).item() == 1.0
    grid = torch.linspace(0, 1, 20001, dtype=f64)
    assert (s.alpha_bar(grid).diff() < 0).all()  # strictly decreasing: more noise as t grows


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_beta_of_t_is_minus_dlog_alpha_bar_dt_continuous_and_matches_the_discrete_rate(beta_schedule):
    s = NoiseSchedule(1000, beta_schedule)
    t = torch.rand(200, generator=torch.Generator().manual_seed(0), dtype=f64) * 0.99 + 0.005
    h = 1e-7
    fd = -(s.log_alpha_bar(t + h) - s.log_alpha_bar(t - h)) / (2 * h)
    torch.testing.assert_close(s.beta(t), fd, rtol=1e-5, atol=1e-6)
    # continuous at the knots (a log-linear interpolation would jump there)
    knots = torch.arange(1, 999, dtype=f64) / 1000
    torch.testing.assert_close(s.beta(knots - 1e-12), s.beta(knots + 1e-12), rtol=1e-6, atol=1e-9)
    assert (s.beta(torch.linspace(0, 1, 10001, dtype=f64)) >= 0).all()
    if beta_schedule == "linear":
        # discrete step i spans [i/T, (i+1)/T] and removes -log(1 - beta_i) of log alpha_bar there, so at the
        # midpoint beta(t) ~ -T log(1 - beta_i) ~ T beta_i (Song et al. Eq. 11: the continuous limit of DDPM)
        t_mid = (torch.arange(1000, dtype=f64) + 0.5) / 1000
        torch.testing.assert_close(s.beta(t_mid), -1000 * torch.log1p(-s.betas), rtol=5e-3, atol=0)


def test_timestep_label_maps_t_i_to_index_i_and_t_from_label_inverts_it(linear_schedule):
    s = linear_schedule
    i = torch.arange(1000)
    t_i = (i.to(f64) + 1) / 1000
    torch.testing.assert_close(s.timestep_label(t_i), i.to(f64), rtol=0, atol=1e-9)
    torch.testing.assert_close(s.t_from_label(i), t_i, rtol=0, atol=1e-15)
    frac = torch.tensor([-0.5, 3.25, 998.75], dtype=f64)
    torch.testing.assert_close(s.timestep_label(s.t_from_label(frac)), frac)


@pytest.mark.parametrize("beta_schedule", ["linear", "cosine"])
def test_t_from_alpha_bar_inverts_alpha_bar(beta_schedule):
    s = NoiseSchedule(1000, beta_schedule)
    t = torch.rand(1000, generator=torch.Generator().manual_seed(1), dtype=f64)
    torch.testing.assert_close(s.t_from_alpha_bar(s.alpha_bar(t)), t, rtol=0, atol=1e-10)
    # outside the trained range the time is clamped to [0, 1]
    out = s.t_from_alpha_bar(torch.tensor([1.0, 1e-30], dtype=f64))
    assert out.tolist() == [0.0, 1.0]


# ----------------------------------------------------------------------------- parameterisations
@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_prediction_conversions_agree_with_diffusers_and_invert_the_target(prediction_type):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, 4, 4, generator=g), torch.randn(6, 3, 4, 4, generator=g)
    sched = DDPMScheduler(**NoiseSchedule(prediction_type=prediction_type).scheduler_config())
    timesteps = torch.tensor([0, 10, 200, 500, 900, 999])
    ab = sched.alphas_cumprod[timesteps]
    x_t = sched.add_noise(x0, eps, timesteps)
    target = training_target(x0, eps, ab, prediction_type)
    if prediction_type == "v_prediction":  # Salimans & Ho's v, as diffusers computes it
        torch.testing.assert_close(target, sched.get_velocity(x0, eps, timesteps))
    torch.testing.assert_close(predict_x0(target, x_t, ab, prediction_type), x0, rtol=1e-4, atol=2e-4)
    # eps from an x0-prediction divides by sqrt(1-ab): ill-conditioned at t=0, so compare t >= 10 there
    keep = slice(1, None) if prediction_type == "sample" else slice(None)
    torch.testing.assert_close(predict_eps(target, x_t, ab, prediction_type)[keep], eps[keep], rtol=1e-4, atol=2e-4)
    # the x0 diffusers' DDPM step derives from the same output
    for j, t in enumerate(timesteps):
        out = sched.step(target[j : j + 1], int(t), x_t[j : j + 1], generator=g)
        ours = predict_x0(target[j : j + 1], x_t[j : j + 1], ab[j], prediction_type)
        torch.testing.assert_close(out.pred_original_sample, ours)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"num_train_timesteps": 1}, "num_train_timesteps"),
        ({"num_train_timesteps": 10.0}, "num_train_timesteps"),
        ({"beta_schedule": "sigmoid"}, "beta_schedule"),
        ({"beta_start": 0.0}, "beta_start"),
        ({"beta_start": 0.03, "beta_end": 0.02}, "beta_start"),
        ({"prediction_type": "noise"}, "prediction_type"),
        ({"clip_sample": "yes"}, "clip_sample"),
    ],
)
def test_invalid_schedule_arguments_raise_value_error_naming_the_argument(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        NoiseSchedule(**kwargs)


def test_conversions_reject_unknown_prediction_type():
    x = torch.zeros(2, 2)
    for fn in (predict_eps, predict_x0):
        with pytest.raises(ValueError, match="prediction_type.*'epsilon'"):
            fn(x, x, 0.5, "eps")
    with pytest.raises(ValueError, match="prediction_type"):
        training_target(x, x, 0.5, "x0")


# ----------------------------------------------------------------------------- SDEs
def test_vp_sde_marginals_solve_its_moment_odes_and_hit_the_discrete_marginals(linear_schedule):
    sde = VPSDE(linear_schedule)
    t = torch.rand(100, generator=torch.Generator().manual_seed(2), dtype=f64) * 0.98 + 0.01
    h = 1e-6
    mean, std = sde.marginal_params(t)
    d_mean = (sde.marginal_params(t + h)[0] - sde.marginal_params(t - h)[0]) / (2 * h)
    d_var = (sde.marginal_params(t + h)[1] ** 2 - sde.marginal_params(t - h)[1] ** 2) / (2 * h)
    beta = sde.beta(t)
    # dx = f dt + g dw with f = -beta x / 2:  dm/dt = -beta m / 2,  dv/dt = -beta v + g^2 (g^2 = beta)
    torch.testing.assert_close(d_mean, -0.5 * beta * mean, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(d_var, -beta * std**2 + sde.diffusion(t) ** 2, rtol=1e-5, atol=1e-6)
    t_i = torch.tensor([1, 250, 1000], dtype=f64) / 1000
    torch.testing.assert_close(sde.marginal_params(t_i)[0] ** 2, linear_schedule.alphas_cumprod[[0, 249, 999]])
    x = torch.randn(4, 2, dtype=f64)
    torch.testing.assert_close(sde.drift(x, t[:4]), -0.5 * beta[:4, None] * x)


def test_ve_sde_variance_grows_as_integrated_g_squared(linear_schedule):
    sde = VESDE.from_schedule(linear_schedule)
    ab = linear_schedule.alphas_cumprod
    assert sde.sigma_min == pytest.approx(math.sqrt((1 - ab[0]) / ab[0]))
    assert sde.sigma_max == pytest.approx(math.sqrt((1 - ab[-1]) / ab[-1]))
    t = torch.linspace(0.01, 0.99, 50, dtype=f64)
    h = 1e-6
    d_var = (sde.marginal_params(t + h)[1] ** 2 - sde.marginal_params(t - h)[1] ** 2) / (2 * h)
    torch.testing.assert_close(d_var, sde.diffusion(t) ** 2, rtol=1e-6, atol=0)
    assert torch.equal(sde.drift(torch.ones(3, 2), t[:3]), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(sigma_min=1.0, sigma_max=0.5)


def test_prior_logp_is_the_gaussian_density_of_the_prior(linear_schedule):
    z = torch.randn(5, 3, 2, generator=torch.Generator().manual_seed(3), dtype=f64)
    for sde, std in ((VPSDE(linear_schedule), 1.0), (VESDE(0.01, 50.0), 50.0)):
        ref = torch.distributions.Normal(0.0, std).log_prob(z).sum((1, 2))
        torch.testing.assert_close(sde.prior_logp(z), ref)
        draws = sde.prior_sample((20000, 1), generator=torch.Generator().manual_seed(4), dtype=f64)
        assert draws.std().item() == pytest.approx(std, rel=0.03)  # 3% ~ 4 standard errors of a std at n=20000


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
def test_vp_and_ve_scores_of_the_ideal_denoiser_equal_the_analytic_gaussian_score(prediction_type, gaussian):
    MU, SIGMA = gaussian.MU, gaussian.SIGMA
    s = NoiseSchedule(1000, "linear", prediction_type=prediction_type)
    model = gaussian.GaussianIdealModel(s)
    g = torch.Generator().manual_seed(5)
    x = 3 * torch.randn(64, 2, generator=g, dtype=f64)
    t = torch.rand(64, generator=g, dtype=f64) * 0.9 + 0.05
    eye = torch.eye(2, dtype=f64)

    vp = VPSDE(s)
    ab = s.alpha_bar(t)[:, None, None]
    cov = ab * SIGMA + (1 - ab) * eye  # x_t ~ N(sqrt(ab) mu, cov)
    ref = -torch.linalg.solve(cov, (x - ab[:, :, 0].sqrt() * MU)[..., None])[..., 0]
    torch.testing.assert_close(vp.score(model, s, x, t), ref, rtol=1e-8, atol=1e-8)

    ve = VESDE.from_schedule(s)
    sigma = ve.sigma(t)[:, None, None]
    ref_ve = -torch.linalg.solve(SIGMA + sigma**2 * eye, (x - MU)[..., None])[..., 0]  # x ~ N(mu, Sigma + sigma^2 I)
    torch.testing.assert_close(ve.score(model, s, x, t), ref_ve, rtol=1e-7, atol=1e-9)
    # Tweedie denoise is the posterior mean E[x0 | x] = mu + Sigma (Sigma + sigma^2 I)^{-1} (x - mu)
    x0_ref = MU + (SIGMA @ torch.linalg.solve(SIGMA + sigma**2 * eye, (x - MU)[..., None]))[..., 0]
    torch.testing.assert_close(ve.denoise(model, s, x, t), x0_ref, rtol=1e-7, atol=1e-9)


def test_ve_sde_queries_the_network_at_labels_0_to_T_minus_1_over_its_time_range(linear_schedule):
    seen = []

    def spy(x, timestep):
        seen.append(timestep.clone())
        return torch.zeros_like(x)

    ve = VESDE.from_schedule(linear_schedule)
    ve.score(spy, linear_schedule, torch.zeros(3, 2, dtype=f64), torch.tensor([0.0, 0.5, 1.0], dtype=f64))
    label = seen[0]
    assert label[0].item() == pytest.approx(0.0, abs=1e-6) and label[2].item() == pytest.approx(999.0, abs=1e-6)
    assert 0 < label[1].item() < 999
