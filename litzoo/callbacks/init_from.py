"""Fine-tuning: start a run from a checkpoint's weights, with new hyperparameters and a fresh optimizer.

``Trainer.fit(ckpt_path=...)`` resumes a run (weights, optimizer, schedulers, loop position, and under
LightningCLI the checkpoint's hyperparameters); :class:`InitFromCheckpoint` takes the weights only. ``train.py``
adds it for ``fit --init_from PATH``; with your own Trainer: ``callbacks=[InitFromCheckpoint(PATH)]``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from litzoo.base import CheckpointError, load_checkpoint


def _listed(keys: list[str], limit: int = 8) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_weights(module: torch.nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Copy the checkpoint's ``state_dict`` (read with ``weights_only=True``) into ``module``, strictly; returns
    the checkpoint. A :class:`~litzoo.base.CheckpointError` names every missing, unexpected and mis-shaped key
    when the architectures differ."""
    checkpoint = load_checkpoint(path)
    state, own = checkpoint["state_dict"], module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} (checkpoint {tuple(state[k].shape)}, module {tuple(own[k].shape)})"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        problems = [f"{label}: {_listed(keys)}" for label, keys in
                    (("missing in the checkpoint", missing), ("not in the module", unexpected),
                     ("different shapes", shapes)) if keys]
        source = checkpoint.get("litzoo_class", "an unknown class")
        raise CheckpointError(
            f"Cannot initialise {type(module).__name__} from {str(path)!r} (weights of {source}): the architectures "
            f"differ. {'; '.join(problems)}. Give the architecture hyperparameters the checkpoint was trained with "
            "(its 'hyper_parameters' entry, or the run's config.yaml); only the others (lr, schedules, ...) may change."
        )
    with torch.no_grad():
        module.load_state_dict(state, strict=True)
    return checkpoint


class InitFromCheckpoint(Callback):
    """Load a checkpoint's weights (strictly, ``weights_only``) into the module when ``fit`` starts; everything else
    is new: the module's hyperparameters, a fresh optimizer and schedule, step 0.

    The weights are those of the checkpoint's ``state_dict``: with an :class:`~litzoo.callbacks.EMA` callback in
    the checkpoint's run, the EMA weights. Loaded in ``on_fit_start``, after the module's ``setup`` (RL modules
    build their networks there) and after the optimizers were made (they hold the same parameter tensors).
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.ckpt_path is not None:
            raise ValueError(f"init_from={self.path!r} and ckpt_path={trainer.ckpt_path!r} both given: ckpt_path "
                             "resumes a run, init_from starts a new one from a checkpoint's weights. Give one.")
        load_weights(pl_module, self.path)
