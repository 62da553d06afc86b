"""The 2-D toy distributions of :mod:`litzoo.data.toy2d` as a LightningDataModule.

Batches are ``(x, labels)``: the mixture component for ``8gaussians``, zeros otherwise.
"""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from litzoo.data.toy2d import GAUSSIAN_COV, GAUSSIAN_MEAN, check_toy2d_name, sample_toy2d
from litzoo.datamodules.sampling import map_style_loader
from litzoo.datamodules.seed import DataSeed

__all__ = ["Toy2DDataModule"]


class Toy2DDataModule(DataSeed, L.LightningDataModule):
    """Fixed sample of ``n_samples`` points from a 2-D toy (drawn once from ``seed``; ``None``, the default: the
    global seed of ``seed_everything`` / ``--seed_everything``, else 0).

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
        seed: Optional[int] = None,
        val_fraction: float = 0.1,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        check_toy2d_name(dataset)
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
