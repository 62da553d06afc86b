"""A train split encoded once into latents (no Lightning): :func:`encode_split` and its :class:`CachedLatents`.

A latent flow (Rombach et al. 2022) trains on ``to_latents(x)`` of a frozen VAE. The posterior *mode* is
deterministic, so the latents of a split are the same every epoch: encoding them once saves the encoder pass
of every later step, and the cache equals ``to_latents(x)`` exactly (a resumed run sees the same data).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from litzoo.seeding import keyed_coin


class CachedLatents(Dataset):
    """A train split's latents, computed once: item i is ``{"latents": z_i, "y": label_i}``.

    ``images`` is the split they were encoded from. Where that split flips images at random
    (``random_flip``), the latents of the flipped images are cached too and drawn with probability 1/2: by
    :func:`~litzoo.seeding.epoch_coin` of ``(split seed, epoch, index)`` for an ``(index, epoch)`` key (what a
    resumable train loader passes, so a resume repeats the flips), at random for a plain index.
    """

    def __init__(self, images: Dataset, latents: Tensor, labels: Optional[Tensor],
                 flipped: Optional[Tensor] = None) -> None:
        self.images, self.latents, self.labels, self.flipped = images, latents, labels, flipped

    def __len__(self) -> int:
        return len(self.latents)

    @property
    def epoch_keyed(self) -> bool:
        return self.flipped is not None

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, use_flip = keyed_coin(key, getattr(self.images, "seed", 0)) if self.flipped is not None else (key, False)
        item = {"latents": (self.flipped if use_flip else self.latents)[index]}
        if self.labels is not None:
            item["y"] = self.labels[index]
        return item


@torch.no_grad()
def encode_split(split: Dataset, encode: Callable[[Tensor], Tensor], device: torch.device | str = "cpu",
                 batch_size: int = 256) -> CachedLatents:
    """Encode ``split`` (items ``(image, label)`` or images) once with ``encode`` on ``device``."""
    random_flip = bool(getattr(split, "random_flip", False))
    if random_flip:
        split.random_flip = False  # read the images as they are stored; the flips are cached separately
    latents, flipped, labels = [], [], []
    try:
        for batch in DataLoader(split, batch_size=batch_size, shuffle=False):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if isinstance(batch, (tuple, list)) and len(batch) > 1:
                labels.append(batch[1])
            x = x.to(device)
            latents.append(encode(x).cpu())
            if random_flip:
                flipped.append(encode(x.flip(-1)).cpu())
    finally:
        if random_flip:
            split.random_flip = random_flip
    return CachedLatents(split, torch.cat(latents), torch.cat(labels) if labels else None,
                         torch.cat(flipped) if flipped else None)
