"""PF-ODE log-likelihood (litzoo/diffusion/likelihood.py) against the closed-form Gaussian density.

With the ideal denoiser of N(mu, Sigma) data every marginal p_t is Gaussian, so both ends of the
instantaneous change of variables are known in closed form:
  log p_{t_eps}(x) = log p_1(z) + int_{t_eps}^1 div f~ dt,   z = x(1).
* Exact identity: with the true p_1 in place of the prior, the result must equal log p_{t_eps}(x) up to the
  ODE tolerance (rtol = atol = 1e-7 here -> ~1e-5 nats).
* Against the data density log N(x; mu, Sigma) the method has two small, known approximations:
  the prior N(0, I) differs from p_1 = N(sqrt(ab(1)) mu, ...) by about sqrt(ab(1)) mu.z
  (sqrt(ab(1)) = 0.0063, |mu| = 1.12, |z| <= 3.6 for these points: <= 0.026 nats), and p_{t_eps} differs from
  p_0 by O(1 - ab(t_eps)) = O(1e-4) (< 0.002 nats here). Tolerance: 0.03 nats.
"""

from __future__ import annotations

import math

import pytest
import torch

from litzoo.diffusion import PREDICTION_TYPES, NoiseSchedule, bits_per_dim, log_likelihood, make_sde

f64 = torch.float64
DATA_TOL = 0.03


def _points(gaussian, n: int = 12, seed: int = 0) -> torch.Tensor:
    """Draws of N(mu, 2.25 Sigma): typical points and some in the tails."""
    L = torch.linalg.cholesky(gaussian.SIGMA)
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=f64)
    return gaussian.MU + 1.5 * z @ L.T


def _marginal_logpdf(gaussian, sde, schedule, x, t):
    """log p_t(x) of the VP or VE marginal of N(mu, Sigma) data."""
    eye = torch.eye(2, dtype=f64)
    t = torch.tensor(t, dtype=f64)
    if sde == "vp":
        ab = schedule.alpha_bar(t)
        return gaussian.gaussian_logpdf(x, ab.sqrt() * gaussian.MU, ab * gaussian.SIGMA + (1 - ab) * eye)
    sigma = make_sde("ve", schedule).sigma(t)
    return gaussian.gaussian_logpdf(x, gaussian.MU, gaussian.SIGMA + sigma**2 * eye)


@pytest.mark.parametrize("prediction_type", PREDICTION_TYPES)
@pytest.mark.parametrize("sde", ["vp", "ve"])
def test_pf_ode_likelihood_with_exact_trace_matches_gaussian_density(sde, prediction_type, gaussian):
    schedule = NoiseSchedule(1000, prediction_type=prediction_type)
    x = _points(gaussian)
    out = log_likelihood(gaussian.GaussianIdealModel(schedule), schedule, x, sde=sde, exact_trace=True,
                         rtol=1e-7, atol=1e-7)
    sde_obj = make_sde(sde, schedule)
    z = out["z"]
    # exact identity: swap the N(0, I) / N(0, sigma_max^2 I) prior for the true t=1 marginal
    with_true_prior = out["logp"] - sde_obj.prior_logp(z) + _marginal_logpdf(gaussian, sde, schedule, z, 1.0)
    target = _marginal_logpdf(gaussian, sde, schedule, x, sde_obj.t_eps)
    torch.testing.assert_close(with_true_prior, target, rtol=0, atol=1e-4)
    # the quantity a user reads, against the data density
    assert (out["logp"] - gaussian.gaussian_logpdf(x)).abs().max() < DATA_TOL
    assert out["nfe"] > 0 and out["logp"].shape == (x.shape[0],)


@pytest.mark.parametrize("hutchinson", ["rademacher", "gaussian"])
def test_hutchinson_likelihood_is_unbiased_for_the_exact_trace_likelihood(hutchinson, gaussian, linear_schedule):
    """K = 200 independent probe vectors per point: the mean must sit within 5 standard errors (estimated from
    the K draws) of the exact-trace value, and within DATA_TOL + 5 SE of the Gaussian density."""
    model = gaussian.GaussianIdealModel(linear_schedule)
    x = _points(gaussian, n=8, seed=1)
    exact = log_likelihood(model, linear_schedule, x, exact_trace=True)["logp"]
    K = 200
    est = log_likelihood(model, linear_schedule, x.repeat(K, 1), hutchinson=hutchinson,
                         generator=torch.Generator().manual_seed(2))["logp"].reshape(K, 8)
    mean, se = est.mean(0), est.std(0) / math.sqrt(K)
    assert (se > 1e-3).all()  # the estimate is genuinely stochastic (not silently the exact trace)
    assert ((mean - exact).abs() <= 5 * se + 1e-4).all()
    assert ((mean - gaussian.gaussian_logpdf(x)).abs() <= DATA_TOL + 5 * se).all()


def test_likelihood_handles_image_shaped_batches_and_runs_under_no_grad(gaussian, linear_schedule):
    """(B, C, H, W) input is flattened per sample; Lightning's validation calls it under torch.no_grad()."""
    flat_model = gaussian.GaussianIdealModel(linear_schedule)

    def image_model(x, t):
        return flat_model(x.reshape(x.shape[0], 2), t).reshape(x.shape)

    x = _points(gaussian, n=4)
    ref = log_likelihood(flat_model, linear_schedule, x, exact_trace=True)
    with torch.no_grad():
        img = log_likelihood(image_model, linear_schedule, x.reshape(4, 1, 1, 2), exact_trace=True)
    torch.testing.assert_close(img["logp"], ref["logp"])
    assert img["z"].shape == (4, 1, 1, 2)


def test_bits_per_dim_is_nats_over_dims_ln2_plus_the_quantisation_offset(gaussian, linear_schedule):
    x = _points(gaussian, n=3)
    out = log_likelihood(gaussian.GaussianIdealModel(linear_schedule), linear_schedule, x, exact_trace=True,
                         data_range=(-1.0, 1.0))
    torch.testing.assert_close(out["bpd"], -out["logp"] / (2 * math.log(2)) + 7.0)
    # uniform data over 256 levels costs exactly 8 bits per dimension, whatever range it is scaled to
    d = 5
    for lo, hi in ((-1.0, 1.0), (0.0, 1.0), (0.0, 255.0)):
        logp_uniform = torch.tensor([-d * math.log(hi - lo)], dtype=f64)  # density 1/(hi-lo)^d
        assert bits_per_dim(logp_uniform, d, data_range=(lo, hi)).item() == pytest.approx(8.0)
    assert bits_per_dim(torch.tensor([-math.log(2.0)]), 1).item() == pytest.approx(1.0)  # no offset by default
    with pytest.raises(ValueError, match="data_range"):
        bits_per_dim(torch.zeros(1), 2, data_range=(1.0, -1.0))


@pytest.mark.parametrize("kwargs, match", [({"sde": "subvp"}, "sde"), ({"hutchinson": "normal"}, "hutchinson"),
                                           ({"t_eps": 1.0}, "t_eps"), ({"t_eps": 0.0, "sde": "vp"}, "t_eps")])
def test_log_likelihood_rejects_bad_arguments(kwargs, match, linear_schedule):
    with pytest.raises(ValueError, match=match):
        log_likelihood(lambda x, t: x, linear_schedule, torch.zeros(2, 2), **kwargs)
