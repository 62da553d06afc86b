"""What every litzoo LightningModule shares: checkpoint identity, clear checkpoint errors, export.

The plumbing shared by one family of methods lives in :mod:`litzoo.bases` (generators, RL, causal LMs)."""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import gc
import io
import math
import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any, Iterator, Optional

import lightning as L
import torch

from litzoo.seeding import global_seed


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or not a litzoo checkpoint."""


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    mmap: bool = False) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with errors that say what is wrong and what to do. ``mmap=True``
    maps the tensors instead of reading them (a check of a large checkpoint's entries costs no memory).

    A folder is a sharded checkpoint (FSDP2 / ``ModelParallelStrategy``: a distributed-checkpoint folder with its
    ``.metadata`` and Lightning's ``meta.pt``): its shards are consolidated into one state dict (``mmap=True``: only
    ``meta.pt`` is read, ``state_dict`` is then empty)."""
    path = Path(path)
    if path.is_dir():
        return load_sharded_checkpoint(path, weights=not mmap, map_location=map_location)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist (or is not a file). Check the path.")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; torch.load would try a legacy pickle
        raise CheckpointError(
            f"Checkpoint {str(path)!r} ({path.stat().st_size} bytes) is corrupt or truncated (or not a checkpoint "
            "at all): it is not the zip archive torch.save writes. Was it copied completely? Use an earlier checkpoint (e.g. "
            "the ModelCheckpoint 'last.ckpt') or re-save it.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} ({path.stat().st_size} bytes) is corrupt or truncated and cannot be read "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Was it copied completely? "
            "Use an earlier checkpoint (e.g. the ModelCheckpoint 'last.ckpt') or re-save it."
        ) from err
    except Exception as err:  # pickle.UnpicklingError for non-weights objects, among others
        # torch's text advises weights_only=False (arbitrary code execution): keep only what it could not unpickle.
        reason = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if str(err) else ""
        raise CheckpointError(
            f"Checkpoint {str(path)!r} holds objects other than tensors and plain types ({reason}). litzoo "
            "checkpoints hold only those, and are loaded safely (weights_only=True); this file is not one of them."
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{str(path)!r} is not a Lightning checkpoint (no 'state_dict' entry).")
    return checkpoint


def load_sharded_checkpoint(path: Path, weights: bool = True, map_location: Any = "cpu") -> dict[str, Any]:
    """A sharded checkpoint folder as one Lightning checkpoint dict (see :func:`load_checkpoint`); the optimizer
    states are left out (a resume reads them through the strategy, an export needs none)."""
    from litzoo.sharding import DCP_METADATA, load_dcp_folder

    meta = path / "meta.pt"
    if not (path / DCP_METADATA).is_file():
        raise CheckpointError(
            f"Checkpoint {str(path)!r} is a folder but not a sharded (distributed) checkpoint: it has no "
            f"{DCP_METADATA!r} file ({', '.join(sorted(e.name for e in path.iterdir())[:5]) or 'it is empty'}). "
            "Give a checkpoint file, or the folder a ModelParallelStrategy run saved (e.g. checkpoints/last.ckpt).")
    if not meta.is_file():
        raise CheckpointError(
            f"Sharded checkpoint {str(path)!r} has no 'meta.pt' (Lightning's hyperparameters and loop state, "
            "written by rank 0 after the shards): the save was interrupted or the folder copied partly. Use an "
            "earlier checkpoint.")
    checkpoint = _load_meta(meta, map_location)
    if weights:
        from torch.distributed.checkpoint.api import CheckpointException  # a BaseException

        try:
            checkpoint["state_dict"] = load_dcp_folder(path)["state_dict"]
        except (Exception, CheckpointException) as err:
            raise CheckpointError(f"Sharded checkpoint {str(path)!r} cannot be read ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0] if str(err) else ''}): a shard is missing or "
                                  "truncated. Use an earlier checkpoint.") from err
    else:
        checkpoint["state_dict"] = {}
    return checkpoint


def _load_meta(meta: Path, map_location: Any) -> dict[str, Any]:
    try:
        checkpoint = torch.load(meta, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{str(meta)!r} of a sharded checkpoint cannot be read safely ({type(err).__name__}); the "
                              "save was interrupted or the file is not Lightning's. Use an earlier checkpoint.") from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{str(meta)!r} is not Lightning's checkpoint metadata.")
    return checkpoint


def prepare_export_dir(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """The folder an ``export`` writes into, created if missing. A non-empty folder is refused unless
    ``overwrite=True``, which empties it first: two exports in one folder would merge (files of the first left
    beside the second's, e.g. a stale ``model_index.json``) and load as neither."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"Export folder {str(out_dir)!r} is a file; give a folder path.")
    entries = sorted(out_dir.iterdir()) if out_dir.is_dir() else []
    if entries:
        if not overwrite:
            shown = ", ".join(e.name for e in entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise FileExistsError(
                f"Export folder {str(out_dir)!r} is not empty ({shown}): exporting into it would mix two exports. "
                "Give a new or empty folder, or pass overwrite=True (`python -m litzoo.export CKPT OUT --overwrite`) "
                "to delete its contents first.")
        for entry in entries:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def check_checkpoint_class(checkpoint: dict[str, Any], cls: type) -> None:
    """Refuse a checkpoint written by another litzoo class than ``cls`` (or one of its base classes): e.g. a TD3
    checkpoint loads into DDPG without a state-dict error (same networks, twin critics) but is not a DDPG."""
    written_by = checkpoint.get("litzoo_class")
    if not written_by:
        return  # not written by a litzoo module (or before classes were recorded): the state dict decides
    accepted = {f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__}
    if written_by not in accepted:
        name = written_by.rpartition(".")[2]
        raise CheckpointError(
            f"This checkpoint was written by {written_by}, not by {cls.__module__}.{cls.__qualname__}: load it with "
            f"{name}.load_from_checkpoint(...), or train with the {name} config (train.py: --config of that method, "
            f"or --model {written_by}). `python -m litzoo.export CKPT OUT` picks the right class itself.")


_RESTORING: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("litzoo_restoring", default=None)


@contextlib.contextmanager
def restoring_from(checkpoint_path: Any) -> Iterator[None]:
    """Modules constructed inside are rebuilt from the checkpoint file ``checkpoint_path`` (anything else, e.g.
    ``None`` or a file object: no checkpoint), which their ``__init__`` may read through
    :func:`checkpoint_being_restored`: e.g. a causal LM takes its policy's config and tokenizer from it, as the folder
    its ``pretrained_path`` names may be gone. Used by :meth:`LitzooModule.load_from_checkpoint` and by ``train.py``
    for ``--ckpt_path``."""
    is_file = isinstance(checkpoint_path, (str, os.PathLike)) and Path(checkpoint_path).exists()  # a file or a folder
    token = _RESTORING.set(str(checkpoint_path) if is_file else None)
    try:
        yield
    finally:
        _RESTORING.reset(token)


def checkpoint_being_restored() -> Optional[str]:
    """The checkpoint file the module being constructed is rebuilt from (:func:`restoring_from`), else ``None``."""
    return _RESTORING.get()


_exit_hook_registered = False


def destroy_process_group_at_exit() -> None:
    """Destroy ``torch.distributed``'s process groups when the process exits, if they still exist then, and free them
    (registered once per process, by every litzoo module's ``setup`` under ``torch.distributed``; scripts that set up
    ``torch.distributed`` themselves can call it too).

    Why: Lightning registers this only for NCCL. A gloo group (DDP or FSDP2 on CPU) left to the interpreter's
    finalisation can kill a finished run with SIGABRT ("terminate called without an active exception";
    pytorch/pytorch#190489: per pytorch/pytorch#179291, a gloo thread releasing a collective's tensor takes the GIL,
    and a thread that takes it while Python finalises is ended inside C++). Destroying a group joins its threads only
    once nothing references it, and ``destroy_process_group`` does not drop the references that torch's own objects
    hold (device meshes, kept by DTensor's caches, and FSDP2's mesh infos), so the handler drops those too
    (:func:`_release_group_references`). Like Lightning's NCCL handler it also runs after a failed run; the
    destroy is local to the process (a rank blocked in a collective never reaches exit)."""
    global _exit_hook_registered
    import torch.distributed as dist

    if not _exit_hook_registered and dist.is_available() and dist.is_initialized():
        atexit.register(_destroy_process_group)
        _exit_hook_registered = True


def _destroy_process_group() -> None:
    import signal

    import torch.distributed as dist

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl+C now would leave it half destroyed
    try:
        if dist.is_initialized():
            dist.destroy_process_group()
        _release_group_references()  # also when the user destroyed the groups: that leaves these references too
    finally:  # None: a handler installed from C, which Python cannot put back
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def _release_group_references() -> None:
    """Drop the references to (destroyed) process groups that ``torch.distributed``'s own objects keep, so the
    groups are freed and gloo joins its threads now, while Python is whole: device meshes (kept after a sharded run
    by DTensor's caches and Lightning's strategy) hold them in ``_pg_registry``, FSDP2's mesh infos as attributes.
    Nothing else is touched: a group still referenced elsewhere (the user's own objects, a live DDP wrapper's
    reducer, FSDP2's optional process-group allocators) keeps its threads until finalisation."""
    from torch.distributed import ProcessGroup
    from torch.distributed.device_mesh import DeviceMesh

    holders: tuple[type, ...] = (DeviceMesh,)
    fsdp = sys.modules.get("torch.distributed.fsdp._fully_shard._fsdp_common")  # private; not loaded: no mesh infos
    if fsdp is not None and hasattr(fsdp, "DataParallelMeshInfo"):
        holders += (fsdp.DataParallelMeshInfo,)
    for obj in gc.get_objects():
        # type(), not isinstance: no proxy's __class__ (and its warnings); the instance dict: frozen dataclasses too
        state = getattr(obj, "__dict__", None) if issubclass(type(obj), holders) else None
        for key, value in state.items() if isinstance(state, dict) else ():
            if isinstance(value, ProcessGroup):
                state[key] = None
            elif isinstance(value, dict) and any(isinstance(v, ProcessGroup) for v in value.values()):
                value.clear()
    gc.collect()  # what only a cycle still held (a DDP wrapper, a trainer) goes now, with its groups


class LitzooModule(L.LightningModule):
    """Base class: records its class in checkpoints (so ``litzoo.export`` knows what to rebuild) and
    turns unreadable checkpoint files into a :class:`CheckpointError` naming the file."""

    _seed_from_global = False

    def total_training_steps(self) -> int:
        """The learning-rate schedule's length: the ``total_steps`` hyperparameter, else the Trainer's estimate of
        the run's optimizer steps (0 when the run is unbounded: no decay)."""
        total = self.hparams.get("total_steps") or self.trainer.estimated_stepping_batches
        return int(total) if math.isfinite(total) else 0

    # ----------------------------------------------------------------- seed
    @property
    def lora_rank(self) -> int:
        """The LoRA rank (hyperparameter ``lora_rank`` of the modules that take it; 0 = no adapters, all trains)."""
        return int(self.hparams.get("lora_rank") or 0)

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
        """Take the global seed now if ``seed=None``; under ``torch.distributed``, destroy its process groups at exit
        (:func:`destroy_process_group_at_exit`). Subclasses overriding ``setup`` call this first."""
        if "seed" in self.hparams:
            self.seed  # noqa: B018  (resolves and saves it)
        destroy_process_group_at_exit()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint_class(checkpoint, type(self))
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
            with restoring_from(checkpoint_path):
                if isinstance(checkpoint_path, (str, os.PathLike)) and Path(checkpoint_path).is_dir():
                    # a sharded checkpoint folder: its shards consolidated, handed to Lightning as one file
                    buffer = io.BytesIO()
                    torch.save(load_checkpoint(checkpoint_path), buffer)
                    buffer.seek(0)
                    return super().load_from_checkpoint(buffer, *args, **kwargs)
                return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        except Exception:
            # If the file itself is unreadable, say so clearly; otherwise the original error stands.
            if isinstance(checkpoint_path, (str, os.PathLike)):
                # another class's hyperparameters fail in __init__ before on_load_checkpoint could say why
                check_checkpoint_class(load_checkpoint(checkpoint_path), cls)
            raise

    # ----------------------------------------------------------------- sharded training
    def sharded_roots(self) -> list[torch.nn.Module]:
        """The submodules FSDP shards, each with its blocks (:func:`litzoo.sharding.default_roots`: the trainable
        children, and the library models inside them, which run through their own ``forward``)."""
        from litzoo.sharding import default_roots

        return default_roots(self)

    def extra_sharded_modules(self) -> list[torch.nn.Module]:
        """Modules outside the module tree sharded too, with the same blocks (e.g. KimiRL's frozen ``pi_ref``)."""
        return []

    def configure_model(self) -> None:
        """Lightning's hook before the optimizer is made: activation checkpointing (``gradient_checkpointing``),
        then sharding. FSDP2 (``fully_shard`` of every block, then of every root; bf16 compute for
        ``precision="bf16-mixed"``) when the strategy gives a device mesh (``ModelParallelStrategy``); with
        Lightning's ``FSDPStrategy`` (FSDP1, GPUs) the block classes become its auto-wrap policy unless one was given.
        ``fsdp_blocks`` (class names) overrides the blocks. A no-op otherwise, and once sharded (fit, then test)."""
        from litzoo import sharding

        if self.hparams.get("gradient_checkpointing") and not getattr(self, "_checkpointing", False):
            sharding.enable_gradient_checkpointing(self.sharded_roots())
            self._checkpointing = True
        strategy = getattr(self._trainer, "strategy", None) if self._trainer is not None else None
        blocks = self.hparams.get("fsdp_blocks")
        if type(strategy).__name__ == "FSDPStrategy" and not strategy.kwargs.get("auto_wrap_policy"):
            from torch.distributed.fsdp.wrap import ModuleWrapPolicy

            roots = self.sharded_roots()
            classes = set(sharding.block_classes(torch.nn.ModuleList(roots), blocks) if blocks else
                          [c for root in roots for c in sharding.block_classes(root)])
            strategy.kwargs["auto_wrap_policy"] = ModuleWrapPolicy(classes)
        if self.device_mesh is None or sharding.is_sharded(self):
            return
        roots = self.extra_sharded_modules() + self.sharded_roots()
        if not roots:
            raise ValueError(f"{type(self).__name__} has no trainable submodule to shard (ModelParallelStrategy / FSDP).")
        sharding.shard(roots, sharding.data_parallel_mesh(self.device_mesh), blocks,
                       sharding.mixed_precision_policy(self.trainer.precision))
        sharding.check_trainable_sharded(self)

    def export(self, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the method's ecosystem format (diffusers / transformers / safetensors folder) into ``out_dir``, which
        must be new or empty unless ``overwrite=True`` (:func:`prepare_export_dir`)."""
        raise NotImplementedError(f"{type(self).__name__} has no export format yet.")
