"""Tests for litzoo/data/toy2d.py: the toy laws (shapes, moments, exact densities, reproducibility)."""

import math

import pytest
import torch

from litzoo.data.toy2d import (
    EIGHT_GAUSSIANS_CENTERS,
    EIGHT_GAUSSIANS_STD,
    GAUSSIAN_COV,
    GAUSSIAN_MEAN,
    TOY2D_DATASETS,
    gaussian_distribution,
    sample_toy2d,
)


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_gaussian_samples_have_the_stated_mean_and_covariance():
    x = sample_toy2d("gaussian", 200_000, generator=_g())
    # Standard errors: mean ~ sqrt(1/2e5) = 0.0022, covariance entries ~ 0.003.
    torch.testing.assert_close(x.mean(0), GAUSSIAN_MEAN, atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), GAUSSIAN_COV, atol=0.015, rtol=0)


def test_gaussian_distribution_is_the_sampled_law():
    law = gaussian_distribution()
    x = sample_toy2d("gaussian", 100_000, generator=_g(1))
    # E[-log p(x)] under the true law is its entropy: 1 + log(2 pi) + 0.5 log det(Sigma).
    entropy = 1 + math.log(2 * math.pi) + 0.5 * math.log(torch.linalg.det(GAUSSIAN_COV).item())
    assert -law.log_prob(x).mean().item() == pytest.approx(entropy, abs=0.01)
    assert law.entropy().item() == pytest.approx(entropy, rel=1e-6)


def test_eight_gaussians_labels_name_the_component_each_point_came_from():
    x, labels = sample_toy2d("8gaussians", 80_000, generator=_g(), return_labels=True)
    offsets = x - EIGHT_GAUSSIANS_CENTERS[labels]
    # ||x - mu_k||^2 / sigma^2 is chi-square with 2 dof: mean 2.
    assert (offsets.square().sum(1) / EIGHT_GAUSSIANS_STD**2).mean().item() == pytest.approx(2.0, abs=0.03)
    torch.testing.assert_close(offsets.mean(0), torch.zeros(2), atol=0.01, rtol=0)
    assert torch.bincount(labels, minlength=8).float().div(len(labels)).sub(1 / 8).abs().max() < 0.01
    # The modes are well separated: the nearest centre is the true one except in far tails.
    nearest = torch.cdist(x, EIGHT_GAUSSIANS_CENTERS).argmin(1)
    assert (nearest == labels).float().mean() > 0.995


def test_eight_gaussians_centers_lie_on_a_circle_at_45_degree_steps():
    radius = EIGHT_GAUSSIANS_CENTERS.norm(dim=1)
    torch.testing.assert_close(radius, torch.full((8,), 4 / math.sqrt(2)))
    angles = torch.atan2(EIGHT_GAUSSIANS_CENTERS[:, 1], EIGHT_GAUSSIANS_CENTERS[:, 0]).remainder(2 * math.pi)
    torch.testing.assert_close(angles, torch.arange(8) * math.pi / 4, atol=1e-5, rtol=0)


def test_checkerboard_fills_the_eight_dark_squares_uniformly():
    x = sample_toy2d("checkerboard", 40_000, generator=_g())
    assert x.abs().max() <= 4.0
    cells = torch.floor(x / 2).long() + 2  # 4x4 board of side-2 squares, indices 0..3
    parity = (cells[:, 0] + cells[:, 1]) % 2
    assert parity.unique().numel() == 1  # only one colour of square is used
    counts = torch.bincount(cells[:, 0] * 4 + cells[:, 1], minlength=16)
    occupied = counts[counts > 0].float() / len(x)
    assert len(occupied) == 8 and (occupied - 1 / 8).abs().max() < 0.01


def test_moons_lie_near_two_radius_two_arcs():
    x = sample_toy2d("moons", 20_000, generator=_g())
    # After x -> 2x + (-1, -0.2): outer arc centred at (-1, -0.2), inner at (1, 0.8), radius 2.
    d_outer = (x - torch.tensor([-1.0, -0.2])).norm(dim=1).sub(2).abs()
    d_inner = (x - torch.tensor([1.0, 0.8])).norm(dim=1).sub(2).abs()
    distance = torch.minimum(d_outer, d_inner)
    assert distance.median() < 0.2  # noise std 0.1 scaled by 2
    assert (d_outer < d_inner).float().mean().item() == pytest.approx(0.5, abs=0.02)


def test_swissroll_radius_tracks_its_angle():
    x = sample_toy2d("swissroll", 20_000, generator=_g())
    radius = 5 * x.norm(dim=1)  # t before noise, in [1.5 pi, 4.5 pi]
    assert radius.quantile(0.01) > 1.5 * math.pi - 2.5 and radius.quantile(0.99) < 4.5 * math.pi + 2.5


@pytest.mark.parametrize("name", TOY2D_DATASETS)
def test_every_dataset_is_reproducible_from_its_generator(name):
    a = sample_toy2d(name, 500, generator=_g(3))
    b = sample_toy2d(name, 500, generator=_g(3))
    c = sample_toy2d(name, 500, generator=_g(4))
    assert a.shape == (500, 2) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_unknown_dataset_name_lists_the_choices():
    with pytest.raises(ValueError, match="8gaussians"):
        sample_toy2d("spirals", 10)
