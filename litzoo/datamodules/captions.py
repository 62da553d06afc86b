"""Your own captioned images for text-to-image training, in the formats diffusers' training scripts read.

``data_path`` is one of

* an image folder with a ``metadata.jsonl`` (the ``datasets`` "imagefolder" convention): one JSON object per line
  with ``file_name`` (relative to the folder, subfolders allowed) and the caption column, e.g.
  ``{"file_name": "0001.png", "text": "a red square"}``;
* a ``datasets`` folder written by ``save_to_disk``, or ``.parquet`` file(s), with an ``image_column`` (a
  ``datasets`` ``Image`` feature, ``{"bytes", "path"}`` structs, or file paths relative to the table) and a
  ``caption_column`` (read by :func:`litzoo.data.tables.load_table`, memory-mapped).

Batches are ``{"images": (B, C, R, R) float32 in [-1, 1], "prompts": [B captions]}``: what
:class:`~litzoo.modules.RectifiedFlowDiT` with a text encoder takes (prompts through its CLIP text encoder). Each
image is read and decoded in ``__getitem__`` (nothing is held in memory but the file list or the memory-mapped
table), then as in diffusers' ``train_text_to_image.py``: the shorter side resized to ``resolution`` (bilinear),
a centre crop (``center_crop=True``) or a random crop, and a horizontal flip with probability 1/2
(``random_flip``). A caption cell holding a list of captions gives one of them at random (the first for
validation).

Seeded and resumable like the other image datamodules: the training order is reshuffled each epoch from
``(seed, epoch)`` (:class:`~litzoo.datamodules.sampling.EpochShuffleSampler`), and the crop, the flip and the
caption choice are functions of ``(seed, epoch, index)``, so a run resumed mid-epoch
(:class:`~litzoo.datamodules.sampling.ResumableDataLoader`) serves the same remaining batches. Validation
(``val_fraction`` of the rows, seeded) uses centre crops, no flips.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from litzoo.data.tables import check_columns, load_table, read_jsonl
from litzoo.datamodules.images import IMAGE_EXTENSIONS, split_indices
from litzoo.datamodules.sampling import map_style_loader
from litzoo.datamodules.seed import DataSeed
from litzoo.seeding import epoch_coin

__all__ = ["ImageCaptionDataModule", "crop_box"]

METADATA = "metadata.jsonl"


def crop_box(width: int, height: int, size: int, rng: random.Random | None) -> tuple[int, int, int, int]:
    """``(left, top, right, bottom)`` of a ``size`` square in a ``width x height`` image whose shorter side is
    ``size``: centred (torchvision's ``CenterCrop`` rounding) when ``rng`` is ``None``, else uniform."""
    if rng is None:
        left, top = int(round((width - size) / 2.0)), int(round((height - size) / 2.0))
    else:
        left, top = rng.randint(0, width - size), rng.randint(0, height - size)
    return left, top, left + size, top + size


class _CaptionDataset(Dataset):
    """Rows ``indices`` of a source; item ``i`` (or key ``(i, epoch)``) is ``{"images", "prompts"}`` decoded now."""

    def __init__(self, source: "_Source", indices: list[int], resolution: int, grayscale: bool, train: bool,
                 center_crop: bool, random_flip: bool, seed: int) -> None:
        self.source, self.indices, self.resolution, self.grayscale = source, indices, resolution, grayscale
        self.train, self.center_crop, self.random_flip, self.seed = train, center_crop, random_flip, seed

    @property
    def epoch_keyed(self) -> bool:  # the resumable train loader then passes (index, epoch) keys
        return self.train

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, None)
        image, caption = self.source.row(self.indices[index])
        # Randomness only in training, drawn from (seed, epoch, index): a resumed run repeats it.
        rng = random.Random(f"{self.seed}/{epoch}/{index}") if self.train and epoch is not None else None
        if isinstance(caption, (list, tuple)):
            if not caption:
                raise ValueError(f"row {self.indices[index]} has an empty list of captions.")
            caption = rng.choice(list(caption)) if rng is not None else caption[0]
        flip = self.random_flip and epoch is not None and self.train and epoch_coin(self.seed, epoch, index)
        return {"images": self.transform(image, None if self.center_crop else rng, flip), "prompts": str(caption)}

    def transform(self, image, rng: random.Random | None, flip: bool) -> Tensor:
        """Resize the shorter side to ``resolution`` (bilinear), crop (centre if ``rng`` is None), flip; [-1, 1]."""
        from PIL import Image

        image = image.convert("L" if self.grayscale else "RGB")
        w, h = image.size
        r = self.resolution
        scale = r / min(w, h)
        size = (max(r, round(w * scale)), max(r, round(h * scale)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        image = image.crop(crop_box(*image.size, r, rng))
        if flip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        channels = 1 if self.grayscale else 3
        x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(r, r, channels).permute(2, 0, 1)
        return x.float() / 127.5 - 1.0


class _Source:
    """Where the rows are: an image folder + metadata.jsonl (file paths, captions) or a memory-mapped table."""

    def __init__(self, files: list[Path] | None, captions: list[Any] | None, table=None, image_column: str = "",
                 caption_column: str = "", base: Path | None = None) -> None:
        self.files, self.captions, self.table = files, captions, table
        self.image_column, self.caption_column, self.base = image_column, caption_column, base

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.table)

    def row(self, i: int):
        from PIL import Image

        if self.files is not None:
            path, caption = self.files[i], self.captions[i]
            cell = path
        else:
            record = self.table[int(i)]
            cell, caption = record[self.image_column], record[self.caption_column]
        try:
            if isinstance(cell, Image.Image):  # a datasets Image feature, decoded for this row only
                image = cell
            elif isinstance(cell, dict) and cell.get("bytes") is not None:
                image = Image.open(io.BytesIO(cell["bytes"]))
            else:
                path = Path(cell["path"] if isinstance(cell, dict) else cell)
                image = Image.open(path if path.is_absolute() or self.base is None else self.base / path)
            image.load()
        except Exception as err:  # PIL raises OSError, SyntaxError, ValueError ... for bad files
            raise ValueError(f"could not read the image of row {i} ({cell if isinstance(cell, (str, Path)) else ''}): "
                             f"{err}. Fix or delete the file.") from err
        return image, caption


class ImageCaptionDataModule(DataSeed, L.LightningDataModule):
    """Captioned images: ``{"images", "prompts"}`` batches for text-conditioned generators (see the module doc).

    Args:
        data_path: an image folder with ``metadata.jsonl``, a ``save_to_disk`` folder or ``.parquet`` file(s).
        image_column: the image column of a table (an image folder's images come from ``file_name``).
        caption_column: the caption column (``"text"``, as in diffusers' scripts and the imagefolder convention).
        resolution: side of the square training images.
        center_crop: centre crops; ``False``: random crops (training only).
        random_flip: flip training images horizontally with probability 1/2.
        grayscale: one channel instead of RGB.
        val_fraction: share of the rows held out for validation (seeded); ``0``: no validation loader.
        batch_size, num_workers: the loaders'.
        seed: shuffling, crops, flips and the split derive from it; ``None``: the global seed.
        data_split: the split of a saved ``DatasetDict``.
        cache_dir: where ``datasets`` converts parquet files (``None``: its default cache).
    """

    num_classes = None
    class_prompts = None

    def __init__(
        self,
        data_path: str,
        image_column: str = "image",
        caption_column: str = "text",
        resolution: int = 32,
        center_crop: bool = False,
        random_flip: bool = False,
        grayscale: bool = False,
        val_fraction: float = 0.0,
        batch_size: int = 16,
        seed: Optional[int] = None,
        num_workers: int = 0,
        data_split: str = "train",
        cache_dir: Optional[str] = None,
    ) -> None:
        super().__init__()
        if resolution < 1:
            raise ValueError(f"resolution={resolution} must be a positive number of pixels, e.g. 32.")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1.")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction={val_fraction} must be in [0, 1), e.g. 0.1 (0: no validation).")
        self.save_hyperparameters()
        self.seed = seed
        self.image_size, self.in_channels = resolution, 1 if grayscale else 3
        self.source = self._open(Path(data_path))
        if len(self.source) < (2 if val_fraction > 0 else 1):
            raise ValueError(f"{data_path} has {len(self.source)} images; need at least "
                             f"{2 if val_fraction > 0 else 1} (val_fraction={val_fraction}).")
        self.train_set: _CaptionDataset | None = None
        self.val_set: _CaptionDataset | None = None

    def _open(self, path: Path) -> _Source:
        h = self.hparams
        if not path.exists():
            raise ValueError(f"data_path={str(path)!r} does not exist; give an image folder with {METADATA}, a "
                             "save_to_disk folder or parquet file(s).")
        if path.is_dir() and (path / METADATA).is_file():
            return self._open_image_folder(path)
        is_table = path.suffix == ".parquet" or (path.is_dir() and (
            any(path.glob("*.parquet")) or (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()))
        if not is_table:
            images = [p.name for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS][:3] \
                if path.is_dir() else []
            raise ValueError(
                f"data_path={str(path)!r} has no {METADATA}" + (f" (it holds images, e.g. {images})" if images else "")
                + f": write one line per image, e.g. {{\"file_name\": \"0001.png\", \"{h.caption_column}\": \"a red "
                "square\"}, or give a save_to_disk folder or parquet file(s).")
        table = load_table(path, h.data_split, h.cache_dir)
        check_columns(table, {"image_column": h.image_column, "caption_column": h.caption_column},
                      f"data_path={str(path)!r}")
        return _Source(None, None, table, h.image_column, h.caption_column, path if path.is_dir() else path.parent)

    def _open_image_folder(self, folder: Path) -> _Source:
        h = self.hparams
        rows = read_jsonl(folder / METADATA)
        if not rows:
            raise ValueError(f"{folder / METADATA} has no rows; write one line per image.")
        where = f"{folder / METADATA}"
        columns = list(dict.fromkeys(k for row in rows for k in row))
        for name, column in (("file_name", "file_name"), ("caption_column", h.caption_column)):
            missing = [i + 1 for i, row in enumerate(rows) if column not in row]
            if missing:
                what = "every line needs file_name" if name == "file_name" else f"caption_column={column!r}"
                raise ValueError(f"{where}: {what} is missing on line(s) {missing[:5]}; the columns are {columns}."
                                 + ("" if name == "file_name" else " Set caption_column to one of them."))
        files = [folder / row["file_name"] for row in rows]
        absent = [(i + 1, str(f.relative_to(folder))) for i, f in enumerate(files) if not f.is_file()]
        if absent:
            raise ValueError(f"{where} names image files that do not exist: {absent[:5]} (line, file_name)"
                             f"{' and more' if len(absent) > 5 else ''}; file_name is relative to {folder}.")
        return _Source(files, [row[h.caption_column] for row in rows])

    # ------------------------------------------------------------------ splits and loaders
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        h, n = self.hparams, len(self.source)
        if h.val_fraction > 0:
            train_idx, val_idx = (t.tolist() for t in split_indices(torch.zeros(n, dtype=torch.long),
                                                                     h.val_fraction, self.seed))
        else:
            train_idx, val_idx = list(range(n)), []
        common = dict(resolution=h.resolution, grayscale=h.grayscale, center_crop=h.center_crop, seed=self.seed)
        self.train_set = _CaptionDataset(self.source, train_idx, train=True, random_flip=h.random_flip, **common)
        self.val_set = _CaptionDataset(self.source, val_idx, train=False, random_flip=False, **common)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        return map_style_loader(self.train_set, self.hparams.batch_size, self.seed, self.hparams.num_workers, True)

    def val_dataloader(self):
        self.setup("validate")
        if not len(self.val_set):
            return []  # val_fraction=0: nothing to validate on
        return map_style_loader(self.val_set, self.hparams.batch_size, self.seed, self.hparams.num_workers, False)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return self.seed_state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.load_seed_state_dict(state)
