"""Image datamodules for the generative methods: the bundled digits and a user's image folder.

Both yield batches ``(images, labels)`` with images ``(B, C, S, S)`` float32 in ``[-1, 1]`` (the
``x_0`` range DDPM and rectified flow assume) and labels a LongTensor, and expose
``image_size``, ``in_channels`` and ``num_classes`` before ``setup`` so a model can be built
from them (e.g. LightningCLI argument linking), and ``class_prompts`` (a text prompt per label, or
None) for text-conditioned models.

* :class:`DigitsDataModule`: scikit-learn's 1797 8x8 digits (Alpaydin & Kaynak, UCI "Optical
  Recognition of Handwritten Digits"), shipped with scikit-learn — no download. Optionally
  upsampled (bilinear) to 16 or 32 pixels.
* :class:`ImageFolderDataModule`: ``root/*.png`` (unlabelled) or ``root/<class>/*.png``
  (labelled by sorted class folder). Every image is decoded, converted, resized (shorter side)
  and centre-cropped once in ``setup`` and kept as uint8, so a corrupt file fails there, naming
  the file, instead of mid-epoch; only the random flip happens per batch (a function of ``(seed, epoch,
  image)``, so a resumed run repeats it).

Latent models: when the module being fitted returns an encoder from ``latent_encoder()`` (e.g.
:class:`~litzoo.modules.RectifiedFlowDiT` with ``vae_path`` and ``cache_latents=True``), the train loader
serves the train split encoded once (:func:`litzoo.data.latents.encode_split`, on the module's device)
instead of the images; ``train_set`` itself is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn, TrainerStatus
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from litzoo.data.digits import DIGITS_IMAGE_SIZES, digits_images
from litzoo.data.latents import CachedLatents, encode_split
from litzoo.datamodules.sampling import map_style_loader
from litzoo.datamodules.seed import DataSeed
from litzoo.seeding import keyed_coin

__all__ = ["DigitsDataModule", "ImageFolderDataModule", "IMAGE_EXTENSIONS"]

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _check_common(batch_size: int, val_fraction: float) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1.")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must lie strictly between 0 and 1, e.g. 0.1.")


def split_indices(labels: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Deterministic ``(train, val)`` indices: stratified by label when every class can give one
    image to each side, otherwise a seeded random split. ``val`` holds ``max(1, round(f N))``."""
    from sklearn.model_selection import train_test_split

    n = len(labels)
    if n < 2:
        raise ValueError(f"need at least 2 images to split into train and val; got {n}.")
    n_val = min(max(1, round(val_fraction * n)), n - 1)
    counts = torch.bincount(labels)
    counts = counts[counts > 0]
    # sklearn's stratified split needs >= 2 images per class and room for every class on each side.
    stratify = len(counts) > 1 and bool(counts.min() >= 2) and len(counts) <= min(n_val, n - n_val)
    train_idx, val_idx = train_test_split(
        torch.arange(n).numpy(),
        test_size=n_val,
        stratify=labels.numpy() if stratify else None,
        random_state=seed,
    )
    # Sorted so the datasets keep the source order; shuffling is the train loader's job.
    return torch.as_tensor(train_idx).sort().values, torch.as_tensor(val_idx).sort().values


class _ImageDataModule(DataSeed, L.LightningDataModule):
    """Shared loaders; subclasses fill ``train_set`` / ``val_set`` in ``setup``."""

    def __init__(self, batch_size: int, num_workers: int, seed: Optional[int]) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._latents: tuple[object, Dataset, CachedLatents] | None = None  # (module, split, its latents)

    def _loader(self, dataset, train: bool) -> DataLoader:
        return map_style_loader(dataset, self.batch_size, self.seed, self.num_workers, train)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self._train_split(), train=True)

    def _train_split(self) -> Dataset:
        """``train_set``, or its latents while a module that asks for them (``latent_encoder()``) is fitted."""
        trainer = self.trainer
        fitting = trainer is not None and trainer.state.fn == TrainerFn.FITTING and (
            trainer.state.status == TrainerStatus.RUNNING)
        module = trainer.lightning_module if fitting else None
        encode = module.latent_encoder() if hasattr(module, "latent_encoder") else None
        if encode is None:
            return self.train_set
        if self._latents is None or self._latents[0] is not module or self._latents[1] is not self.train_set:
            self._latents = (module, self.train_set, encode_split(self.train_set, encode, module.device))
        return self._latents[2]

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return self._loader(self.val_set, train=False)


class DigitsDataModule(_ImageDataModule):
    """scikit-learn's 8x8 digits in ``[-1, 1]``, shape ``(1, image_size, image_size)``, labels 0-9.

    The train/val split is stratified by digit and fixed by ``seed`` (``None``, the default: the global seed of
    ``seed_everything`` / ``--seed_everything``, else 0); the training order is
    reshuffled each epoch from ``(seed, epoch)``.
    """

    num_classes = 10
    in_channels = 1
    # The prompt of label k for text-conditioned models ("a photo of the digit three").
    class_prompts = tuple(f"a photo of the digit {name}" for name in DIGIT_NAMES)

    def __init__(
        self,
        image_size: int = 8,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        seed: Optional[int] = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, seed)
        if image_size not in DIGITS_IMAGE_SIZES:
            raise ValueError(
                f"image_size={image_size!r} is not supported; allowed values are {DIGITS_IMAGE_SIZES} "
                "(8 is native, 16 and 32 are bilinear upsamplings)."
            )
        _check_common(batch_size, val_fraction)
        self.save_hyperparameters()
        self.image_size = image_size
        self.val_fraction = val_fraction

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images_01, labels = digits_images(self.image_size)
        images = images_01 * 2.0 - 1.0
        train_idx, val_idx = split_indices(labels, self.val_fraction, self.seed)
        self.train_set = TensorDataset(images[train_idx], labels[train_idx])
        self.val_set = TensorDataset(images[val_idx], labels[val_idx])


class _UInt8ImageDataset(Dataset):
    """Pre-processed uint8 images ``(N, C, S, S)``; returns ``([-1, 1] float image, label)``.

    With ``random_flip`` the train loader (:class:`~litzoo.datamodules.sampling.ResumableDataLoader`) asks
    for items by ``(index, epoch)`` and the flip is :func:`~litzoo.seeding.epoch_coin` of ``(seed, epoch,
    index)``: a resumed run flips every image as the uninterrupted one did. A plain index flips at random.
    """

    def __init__(self, images: Tensor, labels: Tensor, random_flip: bool, seed: int = 0) -> None:
        self.images = images
        self.labels = labels
        self.random_flip = random_flip
        self.seed = seed

    @property
    def epoch_keyed(self) -> bool:
        return self.random_flip

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, Tensor]:
        index, flip = keyed_coin(key, self.seed) if self.random_flip else (key, False)
        x = self.images[index].float() / 127.5 - 1.0
        return (x.flip(-1) if flip else x), self.labels[index]


class ImageFolderDataModule(_ImageDataModule):
    """Images from ``root``, resized (shorter side) and centre-cropped to ``image_size``, in ``[-1, 1]``.

    Layout: either ``root/<class_name>/**/<image>`` — labels are the indices of the sorted class
    names (``class_names``, ``num_classes``) — or images directly in ``root`` — labels all 0 and
    ``num_classes = None``. Hidden files and folders are ignored. ``random_flip`` flips training
    images horizontally with probability 1/2 (never validation images).

    All images are decoded once in ``setup`` and held in memory as uint8
    (``N * C * image_size^2`` bytes), which fits the small folders these methods train on.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 32,
        grayscale: bool = False,
        random_flip: bool = True,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        seed: Optional[int] = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, num_workers, seed)
        if image_size < 1:
            raise ValueError(f"image_size={image_size} must be a positive number of pixels, e.g. 32.")
        _check_common(batch_size, val_fraction)
        self.save_hyperparameters()
        self.root = Path(root)
        self.image_size = image_size
        self.grayscale = grayscale
        self.random_flip = random_flip
        self.val_fraction = val_fraction
        self.in_channels = 1 if grayscale else 3
        # Scanning is cheap and fixes num_classes before the model is built; decoding waits for setup.
        self.files, self.labels, self.class_names = self._scan(self.root)
        self.num_classes = None if self.class_names is None else len(self.class_names)
        # Text-conditioned models use the folder name as the prompt of its label.
        self.class_prompts = None if self.class_names is None else list(self.class_names)

    @staticmethod
    def _images_in(folder: Path, recursive: bool) -> list[Path]:
        found = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
            found += [
                Path(dirpath) / f
                for f in sorted(filenames)
                if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
            ]
        return found

    @classmethod
    def _scan(cls, root: Path) -> tuple[list[Path], Tensor, list[str] | None]:
        if not root.is_dir():
            raise FileNotFoundError(f"image folder root={str(root)!r} does not exist or is not a directory.")
        subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        per_class = {d.name: cls._images_in(d, recursive=True) for d in subdirs}
        top_level = cls._images_in(root, recursive=False)
        if any(per_class.values()):
            if top_level:
                raise ValueError(
                    f"{root} mixes class subfolders ({', '.join(per_class)}) with {len(top_level)} loose images "
                    f"(e.g. {top_level[0].name}); move the loose images into a class folder or remove the "
                    "subfolders."
                )
            empty = [name for name, files in per_class.items() if not files]
            if empty:
                raise ValueError(
                    f"class folders {empty} in {root} contain no images ({', '.join(IMAGE_EXTENSIONS)}); "
                    "add images or remove them so the class indices are what you expect."
                )
            class_names = list(per_class)
            files = [f for name in class_names for f in per_class[name]]
            labels = [i for i, name in enumerate(class_names) for _ in per_class[name]]
            return files, torch.tensor(labels, dtype=torch.long), class_names
        if not top_level:
            raise ValueError(
                f"no image files found in {root} (looked for {', '.join(IMAGE_EXTENSIONS)}, directly in the "
                "folder or in one subfolder per class)."
            )
        return top_level, torch.zeros(len(top_level), dtype=torch.long), None

    def _load(self, path: Path) -> Tensor:
        from PIL import Image

        try:
            with Image.open(path) as image:
                if image.mode in ("I", "I;16", "I;16B", "I;16L"):
                    # 16-bit grayscale (PNG): PIL's convert("L") clips 0..65535 at 255 (white); scale by the depth.
                    # numpy reads PIL's 16-bit modes in their own byte order.
                    import numpy as np

                    levels = np.asarray(image, dtype=np.float64) / 257.0
                    image = Image.fromarray(np.clip(np.round(levels), 0, 255).astype(np.uint8))
                image = image.convert("L" if self.grayscale else "RGB")  # decodes the whole file
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError ... for bad files
            raise ValueError(f"could not read image file {path}: {err}. Fix or delete the file.") from err
        # Shorter side to image_size (antialiased), then centre crop.
        w, h = image.size
        scale = self.image_size / min(w, h)
        new_w, new_h = max(self.image_size, round(w * scale)), max(self.image_size, round(h * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=None)
        left, top = (new_w - self.image_size) // 2, (new_h - self.image_size) // 2
        image = image.crop((left, top, left + self.image_size, top + self.image_size))
        x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        return x.view(self.image_size, self.image_size, self.in_channels).permute(2, 0, 1)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images = torch.stack([self._load(path) for path in self.files])
        train_idx, val_idx = split_indices(self.labels, self.val_fraction, self.seed)
        self.train_set = _UInt8ImageDataset(images[train_idx], self.labels[train_idx], self.random_flip, self.seed)
        self.val_set = _UInt8ImageDataset(images[val_idx], self.labels[val_idx], random_flip=False)
