"""Loggers: ``train.py``'s default pair (TensorBoard + CSV in one folder) and images / GIFs sent to any logger.

Lightning's own default is TensorBoard *or* CSV (whichever is installed); litzoo writes both into
``lightning_logs/version_N/``: ``tensorboard --logdir runs/`` for curves, images and episode GIFs, ``metrics.csv``
for scripts and pandas. Images and GIFs go to every logger that takes them: TensorBoard (``add_image``; a GIF as an
animated image summary), and W&B-style loggers (``log_image`` / ``log_video``); CSV takes none (the files stay on
disk beside it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from PIL import Image


def default_loggers(root_dir: Optional[str | os.PathLike] = None, name: str = "lightning_logs") -> list[Logger]:
    """A CSV and a TensorBoard logger writing into the same ``<root_dir>/<name>/version_N`` (one version for both,
    the next free one). CSV comes first: it is ``trainer.logger`` (and sets ``trainer.log_dir``, the same folder),
    and it creates the folder, since it warns about (and deletes) a ``metrics.csv`` in a folder that is not empty."""
    root = str(root_dir) if root_dir is not None else os.getcwd()
    csv = CSVLogger(root, name=name)
    return [csv, TensorBoardLogger(root, name=name, version=csv.version, default_hp_metric=False)]


def _is_tensorboard(logger: Logger) -> bool:
    return hasattr(getattr(logger, "experiment", None), "add_image")


def log_image(trainer: Any, key: str, image: str | os.PathLike | np.ndarray, step: int) -> None:
    """Send one image (a file or an ``(H, W, 3)`` uint8 array) to every logger of ``trainer`` that takes images."""
    array = np.asarray(Image.open(image).convert("RGB")) if isinstance(image, (str, os.PathLike)) else image
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # W&B, Neptune, MLflow-style loggers
            logger.log_image(key=key, images=[array], step=step)
        elif _is_tensorboard(logger):
            logger.experiment.add_image(key, array, step, dataformats="HWC")


def log_gif(trainer: Any, key: str, path: str | os.PathLike, step: int) -> None:
    """Send a GIF file to every logger of ``trainer`` that shows animations: TensorBoard (its image plugin plays an
    encoded GIF: the summary torch's ``add_video`` writes, built from our file since ``add_video`` needs moviepy to
    re-encode frames) and W&B-style loggers' ``log_video``."""
    path = Path(path)
    for logger in trainer.loggers:
        if hasattr(logger, "log_video"):
            logger.log_video(key=key, videos=[str(path)], step=step)
        elif _is_tensorboard(logger):
            from tensorboard.compat.proto.summary_pb2 import Summary

            with Image.open(path) as gif:
                width, height = gif.size
            encoded = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=path.read_bytes())
            writer = logger.experiment._get_file_writer()  # SummaryWriter's writer: no public add-a-summary call
            writer.add_summary(Summary(value=[Summary.Value(tag=key, image=encoded)]), step)
            writer.flush()


__all__ = ["default_loggers", "log_gif", "log_image"]
