"""scikit-learn's bundled digits as tensors (no download, no Lightning): shared by the digits datamodule and the
digits classifier of :mod:`litzoo.metrics`, so real and generated images go through one pipeline."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DIGITS_IMAGE_SIZES = (8, 16, 32)


def digits_images(image_size: int = 8) -> tuple[Tensor, Tensor]:
    """All 1797 bundled scikit-learn digits as ``(images in [0, 1] of shape (N, 1, S, S), labels)``.

    The raw pixels are integers 0..16; ``image_size`` 16 or 32 upsamples bilinearly (the same
    resampling ``DigitsDataModule`` uses, so real and generated images share one pipeline).
    """
    if image_size not in DIGITS_IMAGE_SIZES:
        raise ValueError(
            f"image_size={image_size!r} is not supported; allowed values are {DIGITS_IMAGE_SIZES} "
            "(the 8x8 digits are upsampled by an integer factor)."
        )
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    if image_size != 8:
        images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
        images = images.clamp(0.0, 1.0)
    return images, labels
