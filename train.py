"""One entry point for every litzoo method (LightningCLI, subclass mode).

    python train.py fit --config configs/ddpm_digits.yaml
    python train.py fit --config configs/ddpm_digits.yaml --trainer.precision bf16-mixed
    python train.py fit --config configs/ddpm_digits.yaml --trainer.devices 2 --trainer.strategy ddp
    python train.py fit --config configs/cot_sft_addition.yaml --trainer.devices 2 --trainer.strategy ModelParallelStrategy \
        --trainer.strategy.data_parallel_size 2 --trainer.strategy.tensor_parallel_size 1    # FSDP2 (README: at scale)
    python train.py fit --config configs/ddpm_digits.yaml --ckpt_path PATH       # resume a run exactly
    python train.py fit --config configs/ddpm_digits.yaml --init_from PATH      # fine-tune from its weights
    python train.py validate --config configs/ddpm_digits.yaml --ckpt_path PATH
    python train.py export --ckpt PATH --out DIR
    python train.py fit --model.help DDPM                                        # a method's own arguments

A bad value prints ``error: <reason>`` and exits 2 (``LITZOO_TRACEBACK=1``: the traceback); options are never
abbreviated. Progress: a bar over the run's steps in a terminal, a line every 30 s in a log file. Logs: TensorBoard and
``metrics.csv`` in ``<default_root_dir>/lightning_logs/version_N/`` (another logger: ``--trainer.logger CLASS``).
"""

import logging
import os
import sys
import warnings
from typing import Any, NoReturn, Optional

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
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
    if not path or path in ("last", "best", "hpc", "registry") or "://" in str(path):
        return  # Lightning's keywords and remote (fsspec) paths: the Trainer resolves and reads those
    checkpoint = load_checkpoint(path, mmap=True)  # the entries, not the tensors: Lightning reads the file next
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
               # None: not given; the module filled it in itself (seed, an RL module's spaces, class prompts)
               for k in given if k in used and given[k] != used[k] and given[k] is not None]
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


# ----------------------------------------------------------------- progress and noise
class _DropLightningTips(logging.Filter):
    """Lightning's adverts for its cloud services (litlogger, litmodels), printed by every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not ("Tip:" in message and ("litlogger" in message or "litmodels" in message))


def quiet_lightning_noise() -> None:
    """Drop what every run prints and no user can act on: Lightning's litlogger/litmodels adverts, torch's ``LeafSpec``
    deprecation (inside Lightning), and the small-epoch warning (logging every ``log_every_n_steps`` optimizer
    steps works across epochs: the digits configs have 14 batches an epoch and log every 50 steps, as meant)."""
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningTips) for f in rank_zero_log.filters):
        rank_zero_log.addFilter(_DropLightningTips())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")


def with_default_progress_bar(callbacks: Any, enable_progress_bar: Optional[bool]) -> Optional[list[Any]]:
    """``callbacks`` plus litzoo's step progress (:func:`~litzoo.callbacks.progress.default_progress_bar`: a bar
    in a terminal, periodic lines in a log file), unless they bring a progress bar or progress is disabled;
    ``None`` when nothing is to be added."""
    from lightning.pytorch.callbacks import ProgressBar

    from litzoo.callbacks.progress import default_progress_bar

    callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    if enable_progress_bar is False or any(isinstance(c, ProgressBar) for c in callbacks):
        return None
    return callbacks + [default_progress_bar()]


# ----------------------------------------------------------------- errors and help
class ConfigError(ValueError):
    """A class in the config refused its arguments: the message is the one clear reason (the root of jsonargparse's
    chain of wrapped errors); ``train.py`` prints it as one ``error:`` line, ``LITZOO_TRACEBACK=1`` the traceback."""


def root_cause_message(err: BaseException) -> str:
    """The message of the innermost exception that ``err`` wraps (``raise ... from``), without jsonargparse's dump
    of the whole rejected namespace."""
    while err.__cause__ is not None:
        err = err.__cause__
    return "\n".join(line for line in str(err).splitlines() if not line.startswith("Given value"))


HELP_EPILOG = """\
subcommands: fit, validate, test, predict (LightningCLI) and
  export   write a checkpoint's model as a diffusers / transformers / policy folder:
           train.py export --ckpt PATH --out DIR   (train.py export --help)
A method's arguments: train.py fit --model.help CLASS (e.g. --model.help DDPM; --data.help DigitsDataModule).
Errors print one line; LITZOO_TRACEBACK=1 shows the full traceback. Options are never abbreviated."""
SUBCOMMAND_EPILOG = """\
The options above are the Trainer's. A method's own arguments: --model.help CLASS, e.g.
  train.py fit --model.help DDPM        (--data.help DigitsDataModule for a datamodule)
and set one with --model.init_args.NAME VALUE. Each configs/*.yaml names its quick-run flags in its header."""


class LitzooArgumentParser(LightningArgumentParser):
    """A usage error is three lines: a one-line usage, the help pointer and ``error: <message>`` (argparse prints
    the whole option list first: 50 lines for ``fit``), and an unknown option names the nearest known ones."""

    def print_usage(self, file: Any = None) -> None:
        print(f"usage: {self.prog.replace(' [options]', '')} [options]", file=file)

    def error(self, message: str, ex: Optional[Exception] = None) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            import difflib

            known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            given = [a.split("=")[0] for a in message.split(":", 1)[1].split() if a.startswith("--")]
            close = {o: difflib.get_close_matches(o, known, n=3, cutoff=0.8) for o in given}
            hints = [f"{o}: did you mean {' or '.join(c)}?" for o, c in close.items() if c]
            message = "\n".join([message, *hints])
        super().error(message, ex)


def parser_kwargs() -> dict[str, Any]:
    """No abbreviated options (argparse's default would take ``--trainer.max_step`` for ``--trainer.max_steps``
    and ``--trainer.max_step 100`` silently for another option), and a help that names ``export`` too."""
    import argparse

    from jsonargparse import DefaultHelpFormatter

    class KeepEpilogLines(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
        pass

    strict = {"allow_abbrev": False, "formatter_class": KeepEpilogLines}
    return {**strict, "description": "litzoo: train, evaluate and export every litzoo method.", "epilog": HELP_EPILOG,
            **{cmd: {**strict, "epilog": SUBCOMMAND_EPILOG} for cmd in ("fit", "validate", "test", "predict")}}


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
        try:
            check_ckpt_path(self._subcommand_config())
        except ValueError as err:  # CheckpointError: the file, what is wrong with it and what to do
            raise ConfigError(root_cause_message(err)) from err
        super()._parse_ckpt_path()
        self._parse_sharded_ckpt_path()

    def _parse_sharded_ckpt_path(self) -> None:
        """Lightning's merge above reads checkpoint files only: do the same for a sharded checkpoint folder
        (ModelParallelStrategy), whose hyperparameters are in its ``meta.pt``."""
        from pathlib import Path

        from litzoo.base import load_checkpoint

        config = self._subcommand_config()
        path = config.get("ckpt_path") if config is not None else None
        if not path or not Path(path).is_dir():
            return
        hparams = dict(load_checkpoint(path, mmap=True).get("hyper_parameters", {}))
        hparams.pop("_instantiator", None)
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        if hparams:
            self.config = self.parser.parse_object({self.config.subcommand: {"model": hparams}}, self.config)

    def before_instantiate_classes(self) -> None:
        config = self._subcommand_config()
        if config is not None and config.get("ckpt_path"):
            warn_ignored_resume_overrides(self._given_model_args, _model_init_args(config), config.get("ckpt_path"))

    def instantiate_classes(self) -> None:
        from litzoo.base import restoring_from

        # A --ckpt_path checkpoint may carry what the module's hyperparameters only point to (a causal LM's policy
        # config and tokenizer, whose pretrained_path folder may be gone): the module reads it while being built.
        config = self._subcommand_config()
        try:
            with restoring_from(config.get("ckpt_path") if config is not None else None):
                super().instantiate_classes()
        except ValueError as err:  # CheckpointError too: a bad value or file, said clearly at its root
            raise ConfigError(root_cause_message(err)) from err

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        trainer_config = self._get(self.config_init, "trainer", default={}) or {}
        kwargs.setdefault("plugins", with_atomic_checkpoint_io(trainer_config.get("plugins")))
        if "logger" not in kwargs and trainer_config.get("logger") in (None, True):  # not given, or the default
            from litzoo.loggers import default_loggers

            kwargs["logger"] = default_loggers(trainer_config.get("default_root_dir"))
        if "callbacks" not in kwargs:
            callbacks = with_default_progress_bar(trainer_config.get("callbacks"),
                                                  trainer_config.get("enable_progress_bar"))
            if callbacks is not None:
                kwargs["callbacks"] = callbacks
        trainer = super().instantiate_trainer(**kwargs)
        add_init_from_callback(self._subcommand_config(), trainer, self.config.get("subcommand"))
        return trainer


def main(args: Any = None, run: bool = True) -> LitzooCLI | None:
    argv = sys.argv[1:] if args is None else args
    if len(argv) > 0 and argv[0] == "export":
        from litzoo.export import main as export_main

        export_main(argv[1:])
        return None
    quiet_lightning_noise()
    return LitzooCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs=parser_kwargs(),
        parser_class=LitzooArgumentParser,
        args=args,
        run=run,
    )


def run_main() -> None:
    """``main()`` for the command line: a :class:`ConfigError` becomes ``error: <message>`` and exit status 2
    (argparse's for a usage error); ``LITZOO_TRACEBACK=1`` keeps the traceback. In-process callers of
    :func:`main` get the exception."""
    try:
        main()
    except ConfigError as err:
        if os.environ.get("LITZOO_TRACEBACK", "") not in ("", "0"):
            raise
        print(f"error: {err}\n(LITZOO_TRACEBACK=1 shows the full traceback)", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    run_main()
