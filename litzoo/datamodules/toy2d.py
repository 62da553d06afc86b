"""2-D toy distributions for generative models, as a function and a LightningDataModule.

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

Batches are ``(x, labels)``: the mixture component for ``8gaussians``, zeros otherwise.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from litzoo.datamodules.sampling import map_style_loader

__all__ = [
    "TOY2D_DATASETS",
    "EIGHT_GAUSSIANS_CENTERS",
    "EIGHT_GAUSSIANS_STD",
    "GAUSSIAN_MEAN",
    "GAUSSIAN_COV",
    "gaussian_distribution",
    "sample_toy2d",
    "Toy2DDataModule",
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


def _check_name(name: str) -> None:
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
    _check_name(name)
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


class Toy2DDataModule(L.LightningDataModule):
    """Fixed sample of ``n_samples`` points from a 2-D toy (drawn once from ``seed``).

    The training order is reshuffled each epoch from ``(seed, epoch)``, so resumed runs replay it.

    Attributes: ``data_dim = 2``, ``num_classes = None``; for ``dataset="gaussian"`` also
    ``mean`` and ``cov`` (the true parameters; ``None`` for the other datasets).
    """

    data_dim = 2
    num_classes = None

    def __init__(
        self,
        dataset: str = "8gaussians",
        n_samples: int = 20000,
        batch_size: int = 256,
        seed: int = 0,
        val_fraction: float = 0.1,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        _check_name(dataset)
        if n_samples < 2:
            raise ValueError(f"n_samples={n_samples} is too small; need >= 2 (one train and one val point).")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction} must lie strictly between 0 and 1, e.g. 0.1.")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1.")
        self.save_hyperparameters()
        self.dataset = dataset
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.seed = seed
        self.val_fraction = val_fraction
        self.num_workers = num_workers
        self.mean = GAUSSIAN_MEAN.clone() if dataset == "gaussian" else None
        self.cov = GAUSSIAN_COV.clone() if dataset == "gaussian" else None
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        generator = torch.Generator().manual_seed(self.seed)
        x, labels = sample_toy2d(self.dataset, self.n_samples, generator=generator, return_labels=True)
        # The points are i.i.d., so a contiguous split is already a random split.
        n_val = min(max(1, round(self.val_fraction * self.n_samples)), self.n_samples - 1)
        n_train = self.n_samples - n_val
        self.train_set = TensorDataset(x[:n_train], labels[:n_train])
        self.val_set = TensorDataset(x[n_train:], labels[n_train:])

    def _loader(self, dataset, train: bool) -> DataLoader:
        return map_style_loader(dataset, self.batch_size, self.seed, self.num_workers, train)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_set, train=False)
