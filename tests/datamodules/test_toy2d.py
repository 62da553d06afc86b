"""Tests for litzoo/datamodules/toy2d.py: the datamodule's batches, split and data order."""

import pytest
import torch

from litzoo.data.toy2d import EIGHT_GAUSSIANS_CENTERS, EIGHT_GAUSSIANS_STD, GAUSSIAN_COV, GAUSSIAN_MEAN
from litzoo.datamodules.toy2d import Toy2DDataModule


def test_unknown_dataset_name_lists_the_choices():
    with pytest.raises(ValueError, match="checkerboard"):
        Toy2DDataModule(dataset="spirals")


def test_datamodule_batches_and_split():
    dm = Toy2DDataModule(dataset="8gaussians", n_samples=1000, batch_size=64, seed=0, val_fraction=0.1)
    assert dm.data_dim == 2 and dm.num_classes is None and dm.mean is None
    dm.setup("fit")
    assert len(dm.train_set) == 900 and len(dm.val_set) == 100
    x, labels = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 2) and x.dtype == torch.float32
    assert labels.dtype == torch.long and labels.shape == (64,)
    # Labels are the mixture components: each point sits near its labelled centre.
    assert (x - EIGHT_GAUSSIANS_CENTERS[labels]).norm(dim=1).max() < 5 * EIGHT_GAUSSIANS_STD
    assert all(len(batch[0]) == 64 for batch in dm.train_dataloader())  # drop_last
    assert sum(len(batch[0]) for batch in dm.val_dataloader()) == 100


def test_datamodule_data_is_fixed_by_seed_and_train_val_are_disjoint():
    def data(seed):
        dm = Toy2DDataModule(dataset="moons", n_samples=300, seed=seed)
        dm.setup()
        return dm.train_set.tensors[0], dm.val_set.tensors[0]

    train, val = data(0)
    train_again, val_again = data(0)
    assert torch.equal(train, train_again) and torch.equal(val, val_again)
    assert not torch.equal(train, data(1)[0])
    assert torch.cdist(train, val).min() > 0  # no point is in both


def test_gaussian_datamodule_exposes_its_true_parameters():
    dm = Toy2DDataModule(dataset="gaussian", n_samples=50_000)
    torch.testing.assert_close(dm.mean, GAUSSIAN_MEAN)
    torch.testing.assert_close(dm.cov, GAUSSIAN_COV)
    dm.setup()
    x, labels = dm.train_set.tensors
    assert (labels == 0).all()
    torch.testing.assert_close(x.mean(0), dm.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), dm.cov, atol=0.04, rtol=0)


def test_train_order_depends_only_on_seed_and_epoch():
    def order(epoch, seed=0):
        loader = Toy2DDataModule(dataset="gaussian", n_samples=500, batch_size=50, seed=seed).train_dataloader()
        loader.sampler.set_epoch(epoch)
        return torch.cat([x for x, _ in loader])

    assert torch.equal(order(2), order(2))  # a resumed run replays the epoch
    assert not torch.equal(order(2), order(3))
    assert not torch.equal(order(2), order(2, seed=1))


def test_small_dataset_is_one_full_batch():
    dm = Toy2DDataModule(dataset="gaussian", n_samples=20, batch_size=256)
    batches = list(dm.train_dataloader())
    assert len(batches) == 1 and len(batches[0][0]) == 18  # not dropped although smaller than a batch


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_samples": 1}, "n_samples"), ({"val_fraction": 1.0}, "val_fraction"), ({"batch_size": 0}, "batch_size")],
)
def test_invalid_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Toy2DDataModule(**kwargs)
