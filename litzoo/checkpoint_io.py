"""Checkpoints written atomically in their own folder: a kill during a save never leaves a broken file.

Lightning's default writer serialises into a temp file under ``TMPDIR`` and moves it into place; when ``TMPDIR``
is on another filesystem (common on clusters) the move is a plain copy into the final path, and a kill during
that copy leaves a truncated ``last.ckpt``. :class:`AtomicCheckpointIO` writes a temp file next to the target,
fsyncs it and ``os.replace``-s it over the target (atomic within one filesystem), then fsyncs the folder: at any
instant the path holds either the previous checkpoint or the new one, complete.

``train.py`` installs it by default; with your own Trainer: ``L.Trainer(plugins=[AtomicCheckpointIO()])``. A sharded
run (``ModelParallelStrategy``) writes its distributed-checkpoint folder itself, without the CheckpointIO (Lightning
leaves the plugin unused there; ``train.py`` runs with it unchanged), and ``meta.pt`` last, by rank 0.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO


def _is_local(path: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(get_filesystem(path), LocalFileSystem)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` through a temp file in ``path``'s folder, fsync and ``os.replace``."""
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    # Leftovers of an earlier save of the same file that was killed mid-write.
    for stale in folder.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint gets what torch.save's open() would give
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (a crash of the machine, not only of the process)
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. a platform that cannot open folders; the replace is still atomic
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`~lightning.pytorch.plugins.io.TorchCheckpointIO` whose saves are atomic on local filesystems
    (see :func:`atomic_torch_save`); remote paths (``s3://`` ...) keep Lightning's own writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None or not _is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, os.fspath(path).removeprefix("file://"))
