"""Tests for litzoo/datamodules/images.py: digits and image-folder datamodules."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from litzoo.datamodules.images import DigitsDataModule, ImageFolderDataModule, split_indices


# ---------------------------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("image_size", [8, 16, 32])
def test_digits_batches_have_shape_range_and_labels(image_size):
    dm = DigitsDataModule(image_size=image_size, batch_size=32)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, image_size)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 1, image_size, image_size) and images.dtype == torch.float32
    assert labels.shape == (32,) and labels.dtype == torch.long
    everything = torch.cat([dm.train_set.tensors[0], dm.val_set.tensors[0]])
    assert everything.min() == -1.0 and everything.max() == 1.0  # pixel 0 -> -1, pixel 16 -> +1
    all_labels = torch.cat([dm.train_set.tensors[1], dm.val_set.tensors[1]])
    assert sorted(all_labels.unique().tolist()) == list(range(10))


def test_digits_are_the_raw_pixels_scaled_to_minus_one_one_on_a_disjoint_split():
    from sklearn.datasets import load_digits

    raw = load_digits()
    raw_x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # 0..16 -> -1..1
    raw_y = torch.tensor(raw.target)
    dm = DigitsDataModule(image_size=8, val_fraction=0.1, seed=0)
    dm.setup()
    train_idx, val_idx = split_indices(raw_y, 0.1, seed=0)
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert len(train_idx) + len(val_idx) == 1797 and len(val_idx) == round(0.1 * 1797)
    torch.testing.assert_close(dm.train_set.tensors[0], raw_x[train_idx], rtol=0, atol=1e-6)
    torch.testing.assert_close(dm.val_set.tensors[0], raw_x[val_idx], rtol=0, atol=1e-6)
    assert torch.equal(dm.train_set.tensors[1], raw_y[train_idx])
    assert torch.equal(dm.val_set.tensors[1], raw_y[val_idx])


def test_digits_split_is_deterministic_and_stratified():
    def split(seed):
        dm = DigitsDataModule(val_fraction=0.1, seed=seed)
        dm.setup()
        return dm.train_set.tensors, dm.val_set.tensors

    (train_x, train_y), (val_x, val_y) = split(0)
    (train_x2, _), (val_x2, _) = split(0)
    assert torch.equal(train_x, train_x2) and torch.equal(val_x, val_x2)
    assert not torch.equal(val_x, split(1)[1][0])
    # Stratified: each digit's share of the validation set matches its share overall (+-1 image).
    all_y = torch.cat([train_y, val_y])
    expected = torch.bincount(all_y, minlength=10).float() * len(val_y) / len(all_y)
    assert (torch.bincount(val_y, minlength=10).float() - expected).abs().max() <= 1.0


def test_upscaled_digits_are_bilinear_versions_of_the_same_images():
    small, big = DigitsDataModule(image_size=8), DigitsDataModule(image_size=32)
    small.setup()
    big.setup()
    x8, y8 = small.train_set.tensors
    x32, y32 = big.train_set.tensors
    assert torch.equal(y8, y32)  # the split does not depend on the size
    # Bilinear interpolation commutes with the affine map [0, 16] -> [-1, 1].
    expected = F.interpolate(x8, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(x32, expected, rtol=0, atol=1e-5)
    # ...and is a faithful enlargement: shrinking it back stays close to the 8-px digit.
    correlation = torch.corrcoef(torch.stack([F.avg_pool2d(x32, 4).flatten(), x8.flatten()]))[0, 1]
    assert correlation > 0.95
    assert x32.min() >= -1.0 and x32.max() <= 1.0


def test_invalid_image_size_names_the_allowed_values():
    with pytest.raises(ValueError, match=r"\(8, 16, 32\)"):
        DigitsDataModule(image_size=28)


def test_train_loader_reshuffles_each_epoch_reproducibly_and_drops_only_a_ragged_last_batch():
    dm = DigitsDataModule(batch_size=100, seed=0)

    def epoch_labels(epoch, module=dm):
        loader = module.train_dataloader()
        loader.sampler.set_epoch(epoch)  # what Lightning does at the start of each epoch
        return [labels for _, labels in loader]

    first = epoch_labels(0)
    assert all(len(labels) == 100 for labels in first)
    assert len(first) == len(dm.train_set) // 100
    assert not torch.equal(torch.cat(first), dm.train_set.tensors[1][: 100 * len(first)])  # shuffled
    assert not torch.equal(torch.cat(first), torch.cat(epoch_labels(1)))
    # A fresh datamodule (e.g. a resumed run) replays the same order for the same epoch.
    assert torch.equal(torch.cat(epoch_labels(1)), torch.cat(epoch_labels(1, DigitsDataModule(batch_size=100))))
    val_a = torch.cat([y for _, y in dm.val_dataloader()])
    val_b = torch.cat([y for _, y in dm.val_dataloader()])
    assert torch.equal(val_a, val_b) and len(val_a) == len(dm.val_set)


def test_batch_larger_than_dataset_keeps_every_image():
    dm = DigitsDataModule(batch_size=5000)
    batches = list(dm.train_dataloader())
    assert len(batches) == 1 and len(batches[0][0]) == len(dm.train_set)


def test_split_indices_falls_back_to_seeded_split_for_tiny_classes():
    labels = torch.tensor([0, 0, 0, 0, 1])  # class 1 cannot be on both sides
    train, val = split_indices(labels, 0.4, seed=0)
    assert sorted(train.tolist() + val.tolist()) == list(range(5)) and len(val) == 2
    again = split_indices(labels, 0.4, seed=0)
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------
def _save(path, color, size=(40, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_flat_folder_is_unlabelled_rgb_in_minus_one_one(tmp_path):
    for i in range(6):
        _save(tmp_path / f"img{i}.png", (255, 0, 128))
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=4, val_fraction=0.2)
    assert dm.num_classes is None and dm.class_names is None and dm.in_channels == 3
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 16, 16) and labels.dtype == torch.long and (labels == 0).all()
    # 255 -> 1, 0 -> -1, 128 -> 128/127.5 - 1.
    expected = torch.tensor([1.0, -1.0, 128 / 127.5 - 1]).view(1, 3, 1, 1).expand_as(images)
    torch.testing.assert_close(images, expected)
    assert len(dm.train_set) == 5 and len(dm.val_set) == 1


def test_class_subfolders_become_sorted_labels(tmp_path):
    colors = {"zebra": 250, "ant": 10, "moth": 130}
    for name, value in colors.items():
        for i in range(5):
            _save(tmp_path / name / f"{i}.png", value, mode="L")
    _save(tmp_path / "moth" / "nested" / "extra.png", 130, mode="L")  # nested files count for the class
    (tmp_path / "notes.txt").write_text("not an image")  # ignored
    dm = ImageFolderDataModule(str(tmp_path), image_size=8, grayscale=True, batch_size=64, val_fraction=0.2)
    assert dm.class_names == ["ant", "moth", "zebra"] and dm.num_classes == 3 and dm.in_channels == 1
    dm.setup()
    images = torch.cat([dm.train_set.images, dm.val_set.images])
    labels = torch.cat([dm.train_set.labels, dm.val_set.labels])
    assert images.shape == (16, 1, 8, 8)
    for label, name in enumerate(dm.class_names):
        assert (images[labels == label] == colors[name]).all()
    assert torch.bincount(labels).tolist() == [5, 6, 5]
    assert sorted(dm.val_set.labels.tolist()) == [0, 1, 2]  # stratified: one of each class


def test_shorter_side_is_resized_then_center_cropped(tmp_path):
    image = Image.new("RGB", (96, 32), (255, 0, 0))
    image.paste((0, 255, 0), (24, 0, 72, 32))  # green middle; the centre 32x32 crop lies inside it
    image.paste((0, 0, 255), (72, 0, 96, 32))
    image.save(tmp_path / "wide.png")
    image.save(tmp_path / "wide2.png")
    dm = ImageFolderDataModule(str(tmp_path), image_size=16, random_flip=False)
    dm.setup()
    x, _ = dm.val_set[0]
    assert x.shape == (3, 16, 16)
    torch.testing.assert_close(x, torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 16, 16))


def test_grayscale_converts_rgb_files(tmp_path):
    for i in range(3):
        _save(tmp_path / f"{i}.jpg", (200, 200, 200))
    dm = ImageFolderDataModule(str(tmp_path), image_size=4, grayscale=True)
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape[1:] == (1, 4, 4)
    assert images.sub(200 / 127.5 - 1).abs().max() < 0.05  # JPEG is lossy


def test_random_flip_flips_training_images_only(tmp_path):
    image = Image.new("L", (8, 8), 0)
    image.paste(255, (0, 0, 4, 8))  # white left half
    for i in range(10):
        image.save(tmp_path / f"{i}.png")
    dm = ImageFolderDataModule(str(tmp_path), image_size=8, grayscale=True, val_fraction=0.2)
    dm.setup()
    torch.manual_seed(0)
    left_white = [bool(dm.train_set[0][0][0, 0, 0] > 0) for _ in range(200)]
    assert 60 < sum(left_white) < 140  # flipped about half of the time
    assert all(dm.val_set[0][0][0, 0, 0] > 0 for _ in range(50))
    no_flip = ImageFolderDataModule(str(tmp_path), image_size=8, grayscale=True, random_flip=False)
    no_flip.setup()
    assert all(no_flip.train_set[0][0][0, 0, 0] > 0 for _ in range(50))


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_corrupt_file_fails_at_setup_naming_the_file(tmp_path, content):
    for i in range(3):
        _save(tmp_path / "cls" / f"{i}.png", (1, 2, 3), size=(64, 64))
    bad = tmp_path / "cls" / "bad.png"
    if content == "garbage":
        bad.write_bytes(b"this is not a png")
    else:
        pixels = torch.randint(0, 256, (64 * 64 * 3,), dtype=torch.uint8).numpy().tobytes()
        Image.frombytes("RGB", (64, 64), pixels).save(bad)
        bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])
    dm = ImageFolderDataModule(str(tmp_path))
    with pytest.raises(ValueError, match="bad.png") as info:
        dm.setup("fit")
    assert str(bad) in str(info.value)


def test_empty_folder_error_lists_the_extensions(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"\.png.*\.jpg"):
        ImageFolderDataModule(str(tmp_path))


def test_missing_folder_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        ImageFolderDataModule(str(tmp_path / "does_not_exist"))


def test_mixed_layout_and_empty_class_folder_are_rejected(tmp_path):
    _save(tmp_path / "a" / "0.png", 0, mode="L")
    _save(tmp_path / "loose.png", 0, mode="L")
    with pytest.raises(ValueError, match="loose"):
        ImageFolderDataModule(str(tmp_path))
    (tmp_path / "loose.png").unlink()
    (tmp_path / "b").mkdir()
    with pytest.raises(ValueError, match=r"\['b'\]"):
        ImageFolderDataModule(str(tmp_path))
