"""Exact resume of every map-style datamodule from any batch (litzoo/datamodules/sampling.py ResumableDataLoader):
after ``state_dict()`` mid-epoch and ``load_state_dict()`` into a fresh datamodule's loader, the batches equal the
uninterrupted run's, random flips included; and the same through a Trainer that is killed and resumed."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from litzoo.datamodules.images import DigitsDataModule, ImageFolderDataModule
from litzoo.datamodules.reasoning import ReasoningDataModule
from litzoo.datamodules.toy2d import Toy2DDataModule


def _image_folder(root):
    image = Image.new("L", (8, 8), 0)
    image.paste(255, (0, 0, 4, 8))  # white left half: a flip is visible
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(20):
            image.save(root / f"c{c}" / f"{i}.png")
    return root


FACTORIES = {
    "digits": lambda tmp: DigitsDataModule(batch_size=64, seed=3),
    "image_folder": lambda tmp: ImageFolderDataModule(str(_image_folder(tmp / "img")), image_size=8, grayscale=True,
                                                      batch_size=4, val_fraction=0.1, seed=3),
    "toy2d": lambda tmp: Toy2DDataModule(n_samples=400, batch_size=16, seed=3),
    "reasoning_sft": lambda tmp: ReasoningDataModule(tasks=["arithmetic"], difficulties=[2], num_train=120, num_val=8,
                                                     batch_size=8, seed=3),
    "reasoning_sft_grouped": lambda tmp: ReasoningDataModule(tasks=["arithmetic"], difficulties=[1, 2],
                                                             num_train=120, num_val=8, batch_size=8, seed=3,
                                                             group_by_length=3),
}


def _tensors(batch):
    if isinstance(batch, dict):
        return [batch[k] for k in sorted(batch) if isinstance(batch[k], torch.Tensor)]
    return list(batch)


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(_tensors(a), _tensors(b), strict=True))


def _epoch(loader, epoch):
    loader.sampler.set_epoch(epoch)  # what Lightning does at every epoch start
    return list(loader)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_mid_epoch_state_resumes_with_the_next_batch(tmp_path, name):
    dm = FACTORIES[name](tmp_path)
    loader = dm.train_dataloader()
    n = len(loader)
    assert n >= 5
    full = _epoch(loader, 1)
    next_epoch = _epoch(loader, 2)
    k = n // 2 + 1
    loader.sampler.set_epoch(1)
    it = iter(loader)
    for _ in range(k):
        next(it)
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches": k}

    resumed = FACTORIES[name](tmp_path).train_dataloader()  # a new process: fresh datamodule and loader
    resumed.load_state_dict(state)
    rest = _epoch(resumed, 1)
    assert len(rest) == n - k and all(_same(a, b) for a, b in zip(rest, full[k:], strict=True))
    assert resumed.state_dict() == {"epoch": 2, "batches": 0}  # a finished epoch: the next starts afresh
    assert all(_same(a, b) for a, b in zip(_epoch(resumed, 2), next_epoch, strict=True))  # then whole epochs


def test_state_at_an_epoch_end_resumes_at_the_next_epochs_first_batch(tmp_path):
    loader = FACTORIES["toy2d"](tmp_path).train_dataloader()
    expected = _epoch(loader, 1)
    assert loader.state_dict() == {"epoch": 2, "batches": 0}  # epoch 1 ended
    for state in ({"epoch": 1, "batches": 0}, {"epoch": 0, "batches": 7}):  # epoch 0 done / cut at 7 batches
        resumed = FACTORIES["toy2d"](tmp_path).train_dataloader()
        resumed.load_state_dict(state)
        assert all(_same(a, b) for a, b in zip(_epoch(resumed, 1), expected, strict=True))  # epoch 1 whole


def test_random_flips_are_a_function_of_seed_epoch_and_image(tmp_path):
    from litzoo.seeding import epoch_coin

    dm = FACTORIES["image_folder"](tmp_path)
    dm.setup()
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(4)
    order = [i for batch in loader.batch_sampler for i in batch]
    images = torch.cat([x for x, _ in loader])
    flipped = images[:, 0, 0, 0] < 0  # the white half moved to the right
    expected = torch.tensor([epoch_coin(3, 4, i) for i in order])
    assert torch.equal(flipped, expected) and 0.25 < expected.float().mean() < 0.75
    assert not torch.equal(expected, torch.tensor([epoch_coin(3, 5, i) for i in order]))  # new flips per epoch
    assert bool(dm.val_dataloader().dataset[0][0][0, 0, 0] > 0)  # never a validation image


def test_resume_with_worker_processes_repeats_batches_and_flips(tmp_path):
    def make():
        return ImageFolderDataModule(str(_image_folder(tmp_path / "img")), image_size=8, grayscale=True,
                                     batch_size=4, seed=3, num_workers=2)

    loader = make().train_dataloader()
    loader.sampler.set_epoch(1)
    it = iter(loader)
    seen = [next(it) for _ in range(3)]  # the workers have prefetched more than these
    state = loader.state_dict()
    rest = list(it)
    resumed = make().train_dataloader()
    resumed.load_state_dict(state)
    assert state == {"epoch": 1, "batches": 3} and len(seen) + len(rest) == len(loader)
    assert all(_same(a, b) for a, b in zip(_epoch(resumed, 1), rest, strict=True))
