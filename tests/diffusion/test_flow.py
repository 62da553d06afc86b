"""Rectified-flow math: exact velocity for Gaussian data, Euler/Heun transport, densities, shift."""

import math

import pytest
import torch

from litzoo.diffusion.flow import (
    FLOW_SAMPLERS,
    TIMESTEP_DENSITIES,
    gaussian_velocity,
    interpolate,
    resolution_shift,
    sample_flow,
    sample_timesteps,
    shift_time,
    time_grid,
    timestep_density,
    unshift_time,
    velocity_target,
)

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
SIGMA = torch.tensor([[1.5, 0.6], [0.6, 0.5]], dtype=torch.float64)  # correlated, non-isotropic


def test_interpolation_and_target_are_the_straight_path():
    x0, eps = torch.randn(5, 3, 2, 2), torch.randn(5, 3, 2, 2)
    t = torch.rand(5)
    z = interpolate(x0, eps, t)
    torch.testing.assert_close(interpolate(x0, eps, torch.zeros(5)), x0)
    torch.testing.assert_close(interpolate(x0, eps, torch.ones(5)), eps)
    # dz/dt along the path is the target, by finite differences
    h = 1e-3
    torch.testing.assert_close((interpolate(x0, eps, t + h) - z) / h, velocity_target(x0, eps), atol=1e-3, rtol=1e-3)


def test_gaussian_velocity_is_the_conditional_mean_of_the_target():
    # Monte Carlo check of the closed form: regress eps - x0 on z_t in one t slice (linear-Gaussian => exact).
    g = torch.Generator().manual_seed(0)
    n, t = 400_000, 0.3
    L = torch.linalg.cholesky(SIGMA)
    x0 = MU + torch.randn(n, 2, generator=g, dtype=torch.float64) @ L.T
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    z = interpolate(x0, eps, torch.full((n,), t, dtype=torch.float64))
    target = velocity_target(x0, eps)
    features = torch.cat([z, torch.ones(n, 1, dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(features, target).solution
    probe = torch.tensor([[0.5, 0.2], [-1.0, 1.5], [2.0, -2.0]], dtype=torch.float64)
    fitted = torch.cat([probe, torch.ones(3, 1, dtype=torch.float64)], 1) @ coef
    exact = gaussian_velocity(MU, SIGMA)(probe, torch.full((3,), t, dtype=torch.float64))
    torch.testing.assert_close(fitted, exact, atol=0.02, rtol=0)


def _transport(sampler, steps, shift, n=100_000):
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = sample_flow(gaussian_velocity(MU, SIGMA), noise, steps=steps, sampler=sampler, shift=shift)
    return x.mean(0), torch.cov(x.T)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("sampler, steps", [("euler", 200), ("heun", 20)])
def test_samplers_driven_by_the_exact_velocity_reproduce_the_gaussian(sampler, steps, shift):
    mean, cov = _transport(sampler, steps, shift)
    # Monte Carlo error of 1e5 samples is ~0.005 on the mean; discretisation must stay below that scale.
    torch.testing.assert_close(mean, MU, atol=0.02, rtol=0)
    torch.testing.assert_close(cov, SIGMA, atol=0.03, rtol=0)


def test_heun_is_second_order_and_beats_euler_at_equal_steps():
    # Same noise, so the Monte Carlo error cancels; compare against a fine Heun solution.
    noise = torch.randn(2000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    v = gaussian_velocity(MU, SIGMA)
    ref = sample_flow(v, noise, steps=400, sampler="heun")
    err = {(s, k): (sample_flow(v, noise, steps=k, sampler=s) - ref).abs().max().item()
           for s in FLOW_SAMPLERS for k in (8, 16)}
    assert err[("heun", 8)] < 0.1 * err[("euler", 8)]
    assert 1.6 < err[("euler", 8)] / err[("euler", 16)] < 2.5  # first order: halving h halves the error
    assert 3.0 < err[("heun", 8)] / err[("heun", 16)] < 5.5  # second order: quarter


def test_shift_is_the_sd3_formula_and_unshift_inverts_it():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    for alpha in (0.5, 1.0, 3.0):
        shifted = shift_time(t, alpha)
        torch.testing.assert_close(shifted, alpha * t / (1 + (alpha - 1) * t))
        torch.testing.assert_close(unshift_time(shifted, alpha), t)
    # alpha > 1 moves every interior time towards noise; endpoints are fixed
    s = shift_time(t, 3.0)
    assert (s[1:-1] > t[1:-1]).all() and s[0] == 0 and s[-1] == 1
    assert shift_time(torch.tensor(0.5), 3.0) == 0.75
    assert resolution_shift(64 * 64, 32 * 32) == 2.0
    grid = time_grid(4, shift=3.0, dtype=torch.float64)
    torch.testing.assert_close(grid, shift_time(torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64), 3.0))


DENSITY_CASES = [
    ("uniform", {}),
    ("logit_normal", {"logit_mean": 0.0, "logit_std": 1.0}),
    ("logit_normal", {"logit_mean": 0.5, "logit_std": 0.6}),
    ("mode", {"mode_scale": 1.29}),
    ("mode", {"mode_scale": -0.5}),
    ("cosmap", {}),
    ("logit_normal", {"shift": 3.0}),
    ("uniform", {"shift": 0.5}),
]


@pytest.mark.parametrize("density, kwargs", DENSITY_CASES)
def test_timestep_samples_follow_their_documented_density(density, kwargs):
    n, bins = 400_000, 40
    t = sample_timesteps(n, density, generator=torch.Generator().manual_seed(0), dtype=torch.float64, **kwargs)
    assert t.min() > 0 - 1e-12 and t.max() < 1 + 1e-12
    hist = torch.histc(t, bins=bins, min=0, max=1) / (n / bins)
    # Bin average of the density by the midpoint rule on 50 sub-points per bin.
    fine = (torch.arange(bins * 50, dtype=torch.float64) + 0.5) / (bins * 50)
    expected = timestep_density(fine, density, **kwargs).view(bins, 50).mean(1)
    torch.testing.assert_close(hist, expected, atol=0.03 + 0.03 * expected.max().item(), rtol=0.05)


@pytest.mark.parametrize("density, kwargs", DENSITY_CASES)
def test_each_timestep_density_integrates_to_one(density, kwargs):
    m = 200_000
    t = (torch.arange(m, dtype=torch.float64) + 0.5) / m
    assert abs(timestep_density(t, density, **kwargs).mean().item() - 1.0) < 1e-3


def test_logit_normal_density_matches_its_formula_at_a_point():
    t = torch.tensor([0.3], dtype=torch.float64)
    logit = math.log(0.3 / 0.7)
    expected = math.exp(-((logit - 0.2) ** 2) / (2 * 0.8**2)) / (0.8 * math.sqrt(2 * math.pi) * 0.3 * 0.7)
    assert timestep_density(t, "logit_normal", logit_mean=0.2, logit_std=0.8).item() == pytest.approx(expected)
    assert timestep_density(t, "cosmap").item() == pytest.approx(2 / (math.pi * (1 - 0.6 + 2 * 0.09)))


def test_bad_arguments_name_the_argument_and_the_choices():
    with pytest.raises(ValueError, match=r"density='beta'.*logit_normal"):
        sample_timesteps(4, "beta")
    with pytest.raises(ValueError, match=r"sampler='rk4'.*heun"):
        sample_flow(lambda z, t: z, torch.zeros(2, 2), steps=2, sampler="rk4")
    with pytest.raises(ValueError, match="mode_scale"):
        sample_timesteps(4, "mode", mode_scale=3.0)
    with pytest.raises(ValueError, match="shift"):
        shift_time(torch.tensor(0.5), 0.0)
    with pytest.raises(ValueError, match="steps"):
        time_grid(0)
    assert set(TIMESTEP_DENSITIES) == {"uniform", "logit_normal", "mode", "cosmap"}
