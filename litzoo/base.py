"""What every litzoo LightningModule shares: checkpoint identity, clear checkpoint errors, export.

The plumbing shared by one family of methods lives in :mod:`litzoo.bases` (generators, RL, causal LMs)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import torch

from litzoo.seeding import global_seed


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or not a litzoo checkpoint."""


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with errors that say what is wrong and what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist (or is not a file). Check the path.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} ({path.stat().st_size} bytes) is corrupt or truncated and cannot be read "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Was it copied completely? "
            "Use an earlier checkpoint (e.g. the ModelCheckpoint 'last.ckpt') or re-save it."
        ) from err
    except Exception as err:  # pickle.UnpicklingError for non-weights objects, among others
        raise CheckpointError(
            f"Checkpoint {str(path)!r} cannot be loaded with weights_only=True ({type(err).__name__}: {err}). "
            "litzoo checkpoints hold only tensors and plain types; this file is not one of them."
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{str(path)!r} is not a Lightning checkpoint (no 'state_dict' entry).")
    return checkpoint


class LitzooModule(L.LightningModule):
    """Base class: records its class in checkpoints (so ``litzoo.export`` knows what to rebuild) and
    turns unreadable checkpoint files into a :class:`CheckpointError` naming the file."""

    _seed_from_global = False

    # ----------------------------------------------------------------- seed
    @property
    def seed(self) -> int:
        """The module's seed: the ``seed`` hyperparameter, or, when it was not given (``None``), the global seed
        (``seed_everything`` / ``--seed_everything``, else 0), taken once (at ``setup`` or first use) and written
        into the hyperparameters, so checkpoints and the logged hyperparameters hold the number."""
        if "seed" not in self.hparams:
            raise AttributeError(f"{type(self).__name__} has no seed hyperparameter.")
        if self.hparams.seed is None:
            self._set_seed(global_seed(), from_global=True)
        return int(self.hparams.seed)

    def _set_seed(self, seed: int, from_global: bool) -> None:
        self.hparams.seed = int(seed)
        if hasattr(self, "_hparams_initial"):  # what the loggers record
            self._hparams_initial["seed"] = int(seed)
        self._seed_from_global = from_global

    def setup(self, stage: str) -> None:
        """Take the global seed now if ``seed=None`` (subclasses overriding ``setup`` call this first)."""
        if "seed" in self.hparams:
            self.seed  # noqa: B018  (resolves and saves it)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A seed that followed the global one resumes as the checkpointed run's seed, whatever the global seed of
        # the resuming process (Trainer.fit(ckpt_path=...) with a fresh module); a seed given explicitly wins.
        saved = checkpoint.get("hyper_parameters", {}).get("seed")
        if "seed" in self.hparams and isinstance(saved, int) and (self.hparams.seed is None or self._seed_from_global):
            self._set_seed(saved, from_global=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["litzoo_class"] = f"{type(self).__module__}.{type(self).__qualname__}"

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):  # type: ignore[override]
        try:
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        except Exception:
            # If the file itself is unreadable, say so clearly; otherwise the original error stands.
            if isinstance(checkpoint_path, (str, os.PathLike)):
                load_checkpoint(checkpoint_path)
            raise

    def export(self, out_dir: str | os.PathLike) -> Path:
        """Write the method's ecosystem format (diffusers / transformers / safetensors folder)."""
        raise NotImplementedError(f"{type(self).__name__} has no export format yet.")
