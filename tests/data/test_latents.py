"""encode_split / CachedLatents (litzoo/data/latents.py): a train split encoded once, flips included."""

import torch

from litzoo.data.latents import CachedLatents, encode_split
from litzoo.datamodules import ImageFolderDataModule


def _encoder():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 4, 2, stride=2)  # a fixed stand-in for a VAE's posterior mode
    return torch.no_grad()(conv)


def test_cache_of_a_randomly_flipped_split_holds_both_orientations(tmp_path):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    (tmp_path / "data").mkdir()
    for i in range(6):
        Image.fromarray(torch.randint(0, 255, (8, 8), generator=g, dtype=torch.uint8).numpy()).save(
            tmp_path / "data" / f"{i}.png")
    dm = ImageFolderDataModule(str(tmp_path / "data"), image_size=8, grayscale=True, random_flip=True,
                               val_fraction=0.2)
    dm.setup("fit")
    encode = _encoder()
    cache = encode_split(dm.train_set, encode)
    x = dm.train_set.images.float() / 127.5 - 1.0  # the stored (unflipped) images
    torch.testing.assert_close(cache.latents, encode(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache.flipped, encode(x.flip(-1)), atol=1e-5, rtol=1e-5)
    assert dm.train_set.random_flip  # restored after reading the images unflipped
    seen = {bool(torch.equal(cache[0]["latents"], cache.flipped[0])) for _ in range(40)}
    assert seen == {True, False}  # both orientations are drawn


def test_cache_of_a_labelled_split_is_its_latents_and_labels_in_order():
    images, labels = torch.randn(10, 1, 8, 8), torch.arange(10) % 3
    split = torch.utils.data.TensorDataset(images, labels)
    encode = _encoder()
    cache = encode_split(split, encode, batch_size=4)
    assert isinstance(cache, CachedLatents) and cache.images is split and cache.flipped is None and len(cache) == 10
    torch.testing.assert_close(cache.latents, encode(images))
    assert torch.equal(cache.labels, labels) and torch.equal(cache[3]["y"], labels[3])
