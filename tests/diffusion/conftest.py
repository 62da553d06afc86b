"""Closed-form ideal denoiser for Gaussian data, shared by the diffusion tests.

Data x0 ~ N(mu, Sigma). Under the VP forward process x_t ~ N(sqrt(ab) mu, C), C = ab Sigma + (1-ab) I, so
    score(x_t) = -C^{-1} (x_t - sqrt(ab) mu),     eps* = E[eps | x_t] = -sqrt(1-ab) score,
    x0*  = E[x0 | x_t] = mu + sqrt(ab) Sigma C^{-1} (x_t - sqrt(ab) mu),   v* = sqrt(ab) eps* - sqrt(1-ab) x0*.
The three predictions are written here independently of litzoo's conversion functions, so a sampler
that reads them through the wrong formula produces the wrong distribution.

pytest runs with --import-mode=importlib, so tests reach these helpers through the ``gaussian`` fixture.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from litzoo.diffusion import NoiseSchedule

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
SIGMA = torch.tensor([[1.5, 0.6], [0.6, 0.5]], dtype=torch.float64)  # non-isotropic, correlated


class GaussianIdealModel:
    """``model(x, timestep)`` returning the exact posterior prediction for N(mu, Sigma) data."""

    def __init__(self, schedule: NoiseSchedule, mu: torch.Tensor = MU, sigma: torch.Tensor = SIGMA,
                 prediction_type: str | None = None) -> None:
        self.schedule = schedule
        self.mu, self.sigma = mu, sigma
        self.prediction_type = prediction_type or schedule.prediction_type
        self.lam, self.U = torch.linalg.eigh(sigma)  # Sigma = U diag(lam) U^T
        self.calls = 0

    def alpha_bar_of_label(self, timestep: torch.Tensor) -> torch.Tensor:
        # label i <-> t = (i+1)/T; integer labels hit alphas_cumprod[i] exactly (up to exp/log rounding)
        return self.schedule.alpha_bar(self.schedule.t_from_label(timestep.to(torch.float64)))

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        dtype = x.dtype
        x = x.to(torch.float64)
        labels, index = torch.unique(timestep, return_inverse=True)  # usually one label for the whole batch
        ab = self.alpha_bar_of_label(labels)[index].reshape(-1, 1)
        r = x - ab.sqrt() * self.mu  # (B, d)
        c_inv_diag = 1.0 / (ab * self.lam + (1 - ab))  # eigenvalues of C^{-1}, (B, d)
        c_inv_r = ((r @ self.U) * c_inv_diag) @ self.U.T
        eps = (1 - ab).sqrt() * c_inv_r
        x0 = self.mu + ab.sqrt() * (c_inv_r @ self.sigma)  # Sigma symmetric
        if self.prediction_type == "epsilon":
            out = eps
        elif self.prediction_type == "sample":
            out = x0
        else:
            out = ab.sqrt() * eps - (1 - ab).sqrt() * x0
        return out.to(dtype)


def gaussian_logpdf(x: torch.Tensor, mu: torch.Tensor = MU, sigma: torch.Tensor = SIGMA) -> torch.Tensor:
    d = x.shape[-1]
    r = x - mu
    sol = torch.linalg.solve(sigma, r.T).T
    return -0.5 * (r * sol).sum(-1) - 0.5 * torch.logdet(sigma) - 0.5 * d * math.log(2 * math.pi)


def whitened_moment_errors(x: torch.Tensor, mu: torch.Tensor = MU, sigma: torch.Tensor = SIGMA):
    """Sample mean/covariance in the frame where the target is N(0, I).

    If x are n exact draws of N(mu, Sigma), w = L^{-1}(x - mu) (Sigma = L L^T) are N(0, I): each component of
    mean(w) has standard error 1/sqrt(n), each diagonal entry of cov(w) sqrt(2/n), off-diagonal sqrt(1/n).
    Returns (max |mean(w)|, max |cov(w) - I|).
    """
    L = torch.linalg.cholesky(sigma)
    w = torch.linalg.solve_triangular(L, (x.to(torch.float64) - mu).T, upper=False).T
    mean_err = w.mean(0).abs().max()
    cov_err = (torch.cov(w.T) - torch.eye(w.shape[1], dtype=w.dtype)).abs().max()
    return float(mean_err), float(cov_err)


@pytest.fixture(scope="session")
def gaussian() -> SimpleNamespace:
    """MU, SIGMA, GaussianIdealModel, gaussian_logpdf, whitened_moment_errors."""
    return SimpleNamespace(MU=MU, SIGMA=SIGMA, GaussianIdealModel=GaussianIdealModel,
                           gaussian_logpdf=gaussian_logpdf, whitened_moment_errors=whitened_moment_errors)


@pytest.fixture(scope="session")
def linear_schedule() -> NoiseSchedule:
    return NoiseSchedule(1000, "linear")
