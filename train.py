"""One entry point for every litzoo method (LightningCLI, subclass mode).

    python train.py fit --config configs/ddpm_digits.yaml
    python train.py fit --config configs/ddpm_digits.yaml --trainer.precision bf16-mixed
    python train.py fit --config configs/ddpm_digits.yaml --trainer.devices 2 --trainer.strategy ddp
    python train.py fit --config configs/ddpm_digits.yaml --ckpt_path PATH       # resume a run exactly
    python train.py fit --config configs/ddpm_digits.yaml --init_from PATH      # fine-tune from its weights
    python train.py validate --config configs/ddpm_digits.yaml --ckpt_path PATH
    python train.py export --ckpt PATH --out DIR
"""

import sys
from typing import Any, Optional

import lightning as L
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

import litzoo.callbacks  # noqa: F401  (so `class_path: EMA` etc. resolve without the package prefix)
import litzoo.datamodules  # noqa: F401
import litzoo.modules  # noqa: F401


def check_ckpt_path(config: Any) -> None:
    """Check a subcommand's ``ckpt_path`` before LightningCLI reads it: an unreadable file is litzoo's
    ``CheckpointError`` naming the file and what to do (torch's raw error otherwise), and a checkpoint of another
    method than the configured model is refused by name (LightningCLI would otherwise replace the configured
    model by the checkpoint's class and fail later with an unrelated message)."""
    import importlib

    from litzoo.base import check_checkpoint_class, load_checkpoint

    path = config.get("ckpt_path") if config is not None else None
    if not path or path in ("last", "best", "hpc", "registry"):  # Lightning's keywords, resolved by the Trainer
        return
    checkpoint = load_checkpoint(path)
    model = config.get("model")
    class_path = model.get("class_path") if hasattr(model, "get") else None
    if class_path and "." in class_path:
        module_name, _, name = class_path.rpartition(".")
        check_checkpoint_class(checkpoint, getattr(importlib.import_module(module_name), name))


# ----------------------------------------------------------------- resume vs fine-tune (--ckpt_path, --init_from)
def _model_init_args(config: Any) -> dict[str, Any]:
    """The model's class path and init args in a subcommand's config, as plain values (tuples as lists)."""
    def plain(value: Any) -> Any:
        if hasattr(value, "as_dict"):
            value = value.as_dict()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    model = plain(config.get("model")) if config is not None else None
    if not isinstance(model, dict):
        return {}
    init_args = model.get("init_args") or {}
    return {"class_path": model.get("class_path"), **{f"init_args.{k}": v for k, v in init_args.items()}}


def warn_ignored_resume_overrides(given: dict[str, Any], used: dict[str, Any], ckpt_path: str) -> Optional[str]:
    """Warn (and return the message) when ``--ckpt_path`` replaced given model settings by the checkpoint's.

    LightningCLI re-applies a checkpoint's saved hyperparameters on resume, so that the module matches the saved
    optimizer state; the values given in the config or on the command line are then silently dropped."""
    ignored = [f"  model.{k}: given {given[k]!r}, the checkpoint's {used.get(k)!r} is used"
               for k in given if k in used and given[k] != used[k]
               and not (k == "init_args.seed" and given[k] is None)]  # seed=None: the run's recorded seed, by design
    if not ignored:
        return None
    message = (
        f"--ckpt_path {ckpt_path} resumes the run exactly as saved: the checkpoint's hyperparameters replace these "
        "given values, which are IGNORED:\n" + "\n".join(ignored) + "\nTo train from the checkpoint's weights with "
        "new hyperparameters and a fresh optimizer, use --init_from PATH instead of --ckpt_path. (Trainer settings, "
        "e.g. --trainer.max_steps, do apply on resume.)"
    )
    rank_zero_warn(message, category=UserWarning)
    return message


def add_init_from_argument(parser: Any) -> None:
    parser.add_argument(
        "--init_from", type=Optional[str], default=None,
        help="fit only: start from this checkpoint's weights (strict, weights_only) with the given hyperparameters, "
             "a fresh optimizer and step 0 (fine-tuning); --ckpt_path instead resumes a run exactly.")


def add_init_from_callback(config: Any, trainer: L.Trainer, subcommand: Optional[str]) -> None:
    path = config.get("init_from") if config is not None else None
    if not path:
        return
    if subcommand != "fit":
        raise ValueError(f"--init_from is for fit (a new run from a checkpoint's weights); for {subcommand} give "
                         "the checkpoint with --ckpt_path.")
    if config.get("ckpt_path"):
        raise ValueError(f"--init_from {path} and --ckpt_path {config.get('ckpt_path')} both given: --ckpt_path "
                         "resumes a run exactly, --init_from starts a new one from a checkpoint's weights. Give one.")
    from litzoo.callbacks.init_from import InitFromCheckpoint

    trainer.callbacks.insert(0, InitFromCheckpoint(path))


# ----------------------------------------------------------------- checkpoint writer
def with_atomic_checkpoint_io(plugins: Any) -> list[Any]:
    """``plugins`` plus :class:`~litzoo.checkpoint_io.AtomicCheckpointIO` (a kill mid-save leaves the previous
    checkpoint loadable), unless they bring their own ``CheckpointIO``."""
    from lightning.fabric.plugins import CheckpointIO

    from litzoo.checkpoint_io import AtomicCheckpointIO

    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


class LitzooCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        add_init_from_argument(parser)

    def _subcommand_config(self) -> Any:
        return self.config.get(self.config.get("subcommand")) if "subcommand" in self.config else self.config

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        # The model settings as given, before LightningCLI applies a --ckpt_path's hyperparameters over them.
        self._given_model_args = _model_init_args(self._subcommand_config())

    def _parse_ckpt_path(self) -> None:
        # Lightning's hook that merges a checkpoint's hyperparameters into the config: check the file first.
        check_ckpt_path(self._subcommand_config())
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        config = self._subcommand_config()
        if config is not None and config.get("ckpt_path"):
            warn_ignored_resume_overrides(self._given_model_args, _model_init_args(config), config.get("ckpt_path"))

    def instantiate_classes(self) -> None:
        from litzoo.base import restoring_from

        # A --ckpt_path checkpoint may carry what the module's hyperparameters only point to (a causal LM's policy
        # config and tokenizer, whose pretrained_path folder may be gone): the module reads it while being built.
        config = self._subcommand_config()
        with restoring_from(config.get("ckpt_path") if config is not None else None):
            super().instantiate_classes()

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer_config = self._get(self.config_init, "trainer", default={}) or {}
        kwargs.setdefault("plugins", with_atomic_checkpoint_io(trainer_config.get("plugins")))
        trainer = super().instantiate_trainer(**kwargs)
        add_init_from_callback(self._subcommand_config(), trainer, self.config.get("subcommand"))
        return trainer


def main(args: Any = None, run: bool = True) -> LitzooCLI | None:
    argv = sys.argv[1:] if args is None else args
    if len(argv) > 0 and argv[0] == "export":
        from litzoo.export import main as export_main

        export_main(argv[1:])
        return None
    return LitzooCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    main()
