"""2-D toy distributions for generative models (no Lightning; the datamodule is
:class:`litzoo.datamodules.Toy2DDataModule`).

The datasets follow the FFJORD toy set (Grathwohl et al., 2019, "FFJORD: Free-form Continuous
Dynamics for Scalable Reversible Generative Models", arXiv:1810.01367, ``toy_data.py``), plus a
correlated Gaussian whose density is known in closed form:

* ``8gaussians``: ``x = mu_k + sigma * eps``, ``k ~ U{0..7}``, ``mu_k = r (cos(k pi/4), sin(k pi/4))``,
  ``r = 4/sqrt(2)``, ``sigma = 0.5/sqrt(2)`` (FFJORD's scale 4 and std 0.5, then divided by 1.414).
  Adjacent centres are 6.1 sigma apart, so 3-sigma discs do not overlap (see
  ``litzoo.metrics.eight_gaussians_coverage``).
* ``moons``: two interleaved half circles with noise 0.1 (as sklearn's ``make_moons``), mapped by
  ``2 x + (-1, -0.2)``.
* ``swissroll``: ``t = 1.5 pi (1 + 2u)``, ``x = (t cos t, t sin t) + N(0, I)``, divided by 5.
* ``checkerboard``: uniform on the 8 dark squares of a 4x4 board of side 2 on ``[-4, 4]^2``.
* ``gaussian``: ``N(GAUSSIAN_MEAN, GAUSSIAN_COV)`` — exact target for likelihood tests.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "TOY2D_DATASETS",
    "EIGHT_GAUSSIANS_CENTERS",
    "EIGHT_GAUSSIANS_STD",
    "GAUSSIAN_MEAN",
    "GAUSSIAN_COV",
    "check_toy2d_name",
    "gaussian_distribution",
    "sample_toy2d",
]

TOY2D_DATASETS = ("moons", "8gaussians", "swissroll", "checkerboard", "gaussian")

EIGHT_GAUSSIANS_RADIUS = 4.0 / math.sqrt(2.0)
EIGHT_GAUSSIANS_STD = 0.5 / math.sqrt(2.0)
_angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
EIGHT_GAUSSIANS_CENTERS = (EIGHT_GAUSSIANS_RADIUS * torch.stack([_angles.cos(), _angles.sin()], 1)).float()

GAUSSIAN_MEAN = torch.tensor([1.0, -0.5])
GAUSSIAN_COV = torch.tensor([[1.0, 0.6], [0.6, 0.5]])


def gaussian_distribution() -> torch.distributions.MultivariateNormal:
    """The ``gaussian`` dataset's law, ``N(GAUSSIAN_MEAN, GAUSSIAN_COV)``, for exact log-densities."""
    return torch.distributions.MultivariateNormal(GAUSSIAN_MEAN, covariance_matrix=GAUSSIAN_COV)


def check_toy2d_name(name: str) -> None:
    if name not in TOY2D_DATASETS:
        raise ValueError(f"dataset={name!r} is unknown; choose one of {TOY2D_DATASETS}.")


def sample_toy2d(
    name: str, n: int, generator: torch.Generator | None = None, return_labels: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """``n`` i.i.d. samples ``(n, 2)`` float32 of toy dataset ``name``.

    ``generator`` (CPU) makes the draw reproducible; ``None`` uses the global RNG. With
    ``return_labels`` also returns the LongTensor of mixture components (zeros except for
    ``8gaussians``).
    """
    check_toy2d_name(name)
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}.")
    g = generator
    labels = torch.zeros(n, dtype=torch.long)
    if name == "8gaussians":
        labels = torch.randint(8, (n,), generator=g)
        x = EIGHT_GAUSSIANS_CENTERS[labels] + EIGHT_GAUSSIANS_STD * torch.randn(n, 2, generator=g)
    elif name == "moons":
        t = math.pi * torch.rand(n, generator=g)
        inner = torch.rand(n, generator=g) < 0.5
        outer_xy = torch.stack([t.cos(), t.sin()], dim=1)
        inner_xy = torch.stack([1.0 - t.cos(), 0.5 - t.sin()], dim=1)
        x = torch.where(inner[:, None], inner_xy, outer_xy) + 0.1 * torch.randn(n, 2, generator=g)
        x = 2.0 * x + torch.tensor([-1.0, -0.2])
    elif name == "swissroll":
        t = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=g))
        x = torch.stack([t * t.cos(), t * t.sin()], dim=1) + torch.randn(n, 2, generator=g)
        x = x / 5.0
    elif name == "checkerboard":
        x1 = 4.0 * torch.rand(n, generator=g) - 2.0
        # Row within the column: [0, 1) or [-2, -1), then shifted up by 1 on odd columns.
        x2 = torch.rand(n, generator=g) - 2.0 * torch.randint(2, (n,), generator=g).float()
        x2 = x2 + torch.remainder(torch.floor(x1), 2.0)
        x = 2.0 * torch.stack([x1, x2], dim=1)
    else:  # gaussian
        scale_tril = torch.linalg.cholesky(GAUSSIAN_COV)
        x = GAUSSIAN_MEAN + torch.randn(n, 2, generator=g) @ scale_tril.T
    x = x.float()
    return (x, labels) if return_labels else x
