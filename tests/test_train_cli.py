"""train.py as a user runs it (tiny configs; a subprocess where a process of its own matters): metrics that survive a kill, the checkpoint writer it
installs, resume overrides that are reported when ignored, and fine-tuning from a checkpoint's weights."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

KILLER = textwrap.dedent("""
    import os, signal
    import lightning as L

    class KillAt(L.Callback):
        '''SIGKILL this process once the RL module has made ``update`` updates.'''

        def __init__(self, update: int):
            self.update = update

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if pl_module.num_updates >= self.update:
                os.kill(os.getpid(), signal.SIGKILL)
""")


def train_py(tmp_path: Path, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """``python train.py <args>`` in ``tmp_path`` (one thread; ``tmp_path`` importable for test callbacks)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                          cwd=tmp_path, timeout=timeout, env=env)


def test_rl_run_killed_with_sigkill_leaves_the_metrics_logged_so_far(tmp_path):
    (tmp_path / "killer.py").write_text(KILLER)
    # DQN on the grid world: 20 random steps, then one update per env step; logs every 20 env steps; killed
    # at update 70 (env step 90), i.e. after the logs at env steps 20, 40, 60 and 80.
    out = train_py(tmp_path, "fit", "--config", str(ROOT / "configs" / "dqn_gridworld.yaml"),
                   "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
                   "--trainer.max_steps", "1000", "--model.init_args.learning_starts", "20",
                   "--model.init_args.batch_size", "8", "--model.init_args.hidden_sizes", "[8]",
                   "--model.init_args.log_every_n_env_steps", "20",
                   "--trainer.callbacks", '[{"class_path": "killer.KillAt", "init_args": {"update": 70}}]')
    assert out.returncode == -9, out.stderr[-3000:]  # killed, not finished
    with open(tmp_path / "lightning_logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["time/env_steps"]) for r in rows] == [20.0, 40.0, 60.0, 80.0]
    assert all(r["train/loss"] for r in rows[1:])


PROBE = textwrap.dedent("""
    import lightning as L, torch

    class Probe(L.Callback):
        '''What fit starts from: the module's weights, lr and optimizer state at on_train_start.'''

        def __init__(self, out: str):
            self.out = out

        def on_train_start(self, trainer, pl_module):
            opt = trainer.optimizers[0]
            torch.save({"state_dict": pl_module.state_dict(), "hparams_lr": pl_module.hparams.lr,
                        "initial_lr": opt.param_groups[0].get("initial_lr", opt.param_groups[0]["lr"]),
                        "optimizer_state": len(opt.state), "global_step": trainer.global_step}, self.out)
""")

# DDPM on 8 Gaussians, an 8-wide MLP, 16 points a batch: a few steps take well under a second.
TINY = ["--config", str(ROOT / "configs" / "ddpm_toy2d.yaml"), "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "false", "--model.init_args.mlp_hidden", "8", "--model.init_args.mlp_depth", "1",
        "--data.init_args.batch_size", "16"]


def _callbacks(tmp_path: Path, probe: bool = True) -> list[str]:
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(tmp_path / "ckpts"), "save_last": True}}]
    if probe:
        (tmp_path / "probe.py").write_text(PROBE)
        callbacks.append({"class_path": "probe.Probe", "init_args": {"out": str(tmp_path / "start.pt")}})
    return ["--trainer.callbacks", json.dumps(callbacks)]


def _train_module():
    """train.py imported from the repository root."""
    sys.path.insert(0, str(ROOT))
    try:
        import train
    finally:
        sys.path.remove(str(ROOT))
    return train


def cli(monkeypatch, capsys, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """``python train.py <args>`` in ``tmp_path`` (importable for test callbacks), in-process: the same ``run_main``
    (its error lines and exit statuses) without a second interpreter start-up (~10 s each, most of these tests'
    time; ``train_py`` keeps the ones that need a process of their own). Returns (exit status, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    train = _train_module()  # imported first: its import-time warnings are not this command's
    capsys.readouterr()
    with warnings.catch_warnings():  # warnings as a fresh interpreter shows them: on stderr, not in pytest's record
        warnings.resetwarnings()
        for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        try:
            train.run_main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    out = capsys.readouterr()
    return code, out.out, out.err


def _main(*args: str, run: bool = True):
    """``train.main(args)`` in-process, with ``sys.argv`` holding just the program (LightningCLI warns otherwise)."""
    argv, sys.argv = sys.argv, ["train.py"]
    try:
        return _train_module().main(list(args), run=run)
    finally:
        sys.argv = argv


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """last.ckpt of a 3-step run with lr 0.003 (train.py in-process: no second interpreter start-up)."""
    tmp_path = tmp_path_factory.mktemp("trained")
    _main("fit", *TINY, "--trainer.default_root_dir", str(tmp_path), "--trainer.max_steps", "3",
          *_callbacks(tmp_path, probe=False))
    return tmp_path / "ckpts" / "last.ckpt"


def test_resume_names_every_ignored_override_and_the_fine_tuning_option(tmp_path, trained, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, tmp_path, "fit", *TINY, "--trainer.default_root_dir", str(tmp_path),
                       "--trainer.max_steps", "4", "--ckpt_path", str(trained), "--model.init_args.lr", "1e-4",
                       "--model.init_args.warmup_steps", "5", *_callbacks(tmp_path))
    assert code == 0, err[-3000:]
    lines = err.splitlines()
    start = next(i for i, line in enumerate(lines) if "which are IGNORED:" in line)
    assert f"--ckpt_path {trained} resumes the run exactly as saved" in lines[start]
    assert lines[start + 1:start + 4] == [
        "  model.init_args.lr: given 0.0001, the checkpoint's 0.003 is used",
        "  model.init_args.warmup_steps: given 5, the checkpoint's 100 is used",
        "To train from the checkpoint's weights with new hyperparameters and a fresh optimizer, use --init_from PATH "
        "instead of --ckpt_path. (Trainer settings, e.g. --trainer.max_steps, do apply on resume.)"]
    start_state = torch.load(tmp_path / "start.pt", weights_only=True)
    assert start_state["hparams_lr"] == 0.003 and start_state["initial_lr"] == 0.003  # as the warning says
    assert start_state["global_step"] == 3 and start_state["optimizer_state"] > 0  # a real resume


def test_init_from_starts_from_the_checkpoint_weights_with_new_hyperparameters_and_a_fresh_optimizer(
        tmp_path, trained, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, tmp_path, "fit", *TINY, "--trainer.default_root_dir", str(tmp_path),
                       "--trainer.max_steps", "1", "--init_from", str(trained), "--model.init_args.lr", "1e-4",
                       *_callbacks(tmp_path))
    assert code == 0, err[-3000:]
    assert "IGNORED" not in err
    start_state = torch.load(tmp_path / "start.pt", weights_only=True)
    saved = torch.load(trained, weights_only=True)["state_dict"]
    assert start_state["state_dict"].keys() == saved.keys()
    assert all(torch.equal(start_state["state_dict"][k], saved[k]) for k in saved)
    assert start_state["hparams_lr"] == 1e-4 and start_state["initial_lr"] == 1e-4
    assert start_state["global_step"] == 0 and start_state["optimizer_state"] == 0


def test_init_from_another_architecture_names_the_mismatched_keys(tmp_path, trained, monkeypatch, capsys):
    from litzoo.base import CheckpointError

    with pytest.raises(CheckpointError, match="^Cannot initialise DDPM from") as info:
        cli(monkeypatch, capsys, tmp_path, "fit", *TINY, "--trainer.default_root_dir", str(tmp_path),
            "--trainer.max_steps", "1", "--init_from", str(trained), "--model.init_args.mlp_hidden", "16",
            *_callbacks(tmp_path, probe=False))
    assert "different shapes: " in str(info.value) and "(checkpoint (8, 2), module (16, 2))" in str(info.value)
    assert not (tmp_path / "ckpts").exists()


def test_train_py_writes_checkpoints_atomically_and_refuses_init_from_with_ckpt_path(tmp_path, trained):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from litzoo.checkpoint_io import AtomicCheckpointIO

    cli = _main(*TINY, "--trainer.default_root_dir", str(tmp_path), run=False)
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    user_io = TorchCheckpointIO()
    assert _train_module().with_atomic_checkpoint_io([user_io]) == [user_io]  # a user's own writer is kept
    with pytest.raises(ValueError, match="--init_from .* and --ckpt_path .* both given"):
        _main("fit", *TINY, "--trainer.default_root_dir", str(tmp_path), "--init_from", str(trained),
              "--ckpt_path", str(trained))


def test_fit_with_another_methods_checkpoint_names_both_classes(tmp_path, trained):
    from litzoo.base import CheckpointError

    # A DDPM checkpoint with the DQN grid-world config: LightningCLI alone would swap in DDPM with the
    # checkpoint's hyperparameters and fail later on the grid world's batches with an unrelated message.
    with pytest.raises(_train_module().ConfigError,
                       match=r"written by litzoo\.modules\.ddpm\.DDPM, not by litzoo\.modules\.dqn\.DQN") as info:
        _main("fit", "--config", str(ROOT / "configs" / "dqn_gridworld.yaml"), "--trainer.default_root_dir",
              str(tmp_path), "--ckpt_path", str(trained))
    assert isinstance(info.value.__cause__, CheckpointError)  # run_main prints it as one error line


def test_progress_in_a_log_file_shows_steps_of_total_and_loss_and_no_lightning_noise(tmp_path):
    # stdout to a file, as under nohup or a cluster job: Lightning's default Rich bar printed nothing there.
    # log_every_n_steps above the epoch's batches: the "smaller than the logging interval" warning's trigger.
    i = TINY.index("--trainer.enable_progress_bar")
    args = TINY[:i] + TINY[i + 2:]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with open(tmp_path / "stdout.log", "w") as stdout:
        out = subprocess.run([sys.executable, str(ROOT / "train.py"), "fit", *args, "--trainer.max_steps", "5",
                              "--trainer.default_root_dir", str(tmp_path), "--trainer.log_every_n_steps", "100000",
                              "--trainer.logger", "true", "--trainer.callbacks", "[]"],
                             stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in (tmp_path / "stdout.log").read_text().splitlines() if line.startswith("step ")]
    assert len(lines) == 2, lines  # the first step (a sign of life) and the last; then every 30 s
    assert re.fullmatch(r"step 1/5 \(20%\) loss \d\.\d+ [\d.]+ it/s ETA \d+s", lines[0]), lines
    assert re.fullmatch(r"step 5/5 \(100%\) loss \d\.\d+ [\d.]+ it/s done in \d+s", lines[1]), lines
    for noise in ("litlogger", "LeafSpec", "smaller than the logging interval", "exists and is not empty"):
        assert noise not in out.stderr, out.stderr


def test_default_loggers_write_the_same_losses_to_tensorboard_and_metrics_csv_in_one_folder(tmp_path):
    i = TINY.index("--trainer.logger")
    _main("fit", *TINY[:i], *TINY[i + 2:], "--trainer.max_steps", "4", "--trainer.log_every_n_steps", "1",
          "--trainer.default_root_dir", str(tmp_path), "--trainer.callbacks", "[]")
    log_dir = tmp_path / "lightning_logs" / "version_0"
    with open(log_dir / "metrics.csv") as f:
        csv_losses = [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(f) if r.get("train/loss")]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(log_dir)).Reload().Scalars("train/loss")
    assert len(csv_losses) == 4 and [e.step for e in scalars] == [step for step, _ in csv_losses]
    assert [e.value for e in scalars] == pytest.approx([loss for _, loss in csv_losses])  # float32 in the event file


def test_a_bad_value_prints_one_clear_error_line_and_exits_2(tmp_path, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, tmp_path, "fit", *TINY, "--trainer.default_root_dir", str(tmp_path),
                       "--model.init_args.prediction_type", "foo")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) <= 15 and "Traceback" not in err, err
    assert lines[-2:] == ["error: prediction_type='foo' is not supported; choose one of ['epsilon', 'eps', "
                          "'v_prediction', 'v', 'sample', 'x0'].", "(LITZOO_TRACEBACK=1 shows the full traceback)"]
    # LITZOO_TRACEBACK=1: the exception itself, with its traceback (in-process: the same run_main).
    monkeypatch.setenv("LITZOO_TRACEBACK", "1")
    monkeypatch.setattr(sys, "argv", ["train.py", "fit", *TINY, "--model.init_args.prediction_type", "foo"])
    with pytest.raises(_train_module().ConfigError, match=r"^prediction_type='foo' is not supported") as info:
        _train_module().run_main()
    assert isinstance(info.value.__cause__, ValueError)  # jsonargparse's wrapper, kept in the chain


def test_abbreviated_options_are_refused(tmp_path, monkeypatch, capsys):
    # argparse's default took --trainer.max_step for --trainer.max_steps: a misspelling silently ran a full run.
    code, out, err = cli(monkeypatch, capsys, tmp_path, "fit", *TINY, "--trainer.default_root_dir", str(tmp_path),
                         "--trainer.max_step", "2")
    assert code == 2
    assert err.strip().splitlines() == [  # no 50-line option dump: the usage line, the help, the error
        "usage: train.py fit [options]", "tip: For details of accepted options run: train.py fit --help",
        "error: unrecognized arguments: --trainer.max_step 2",
        "--trainer.max_step: did you mean --trainer.max_steps or --trainer.max_time or --trainer.min_steps?"]
    assert not (tmp_path / "lightning_logs").exists() and "step " not in out


def test_an_unreadable_ckpt_path_prints_one_error_naming_the_file_and_exits_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "cut.ckpt").write_bytes(b"garbage!")
    code, _, err = cli(monkeypatch, capsys, tmp_path, "fit", *TINY, "--ckpt_path", str(tmp_path / "cut.ckpt"))
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines() == [
        f"error: Checkpoint '{tmp_path / 'cut.ckpt'}' (8 bytes) is corrupt or truncated (or not a checkpoint at all): "
        "it is not the zip archive torch.save writes. Was it copied completely? Use an earlier checkpoint (e.g. the "
        "ModelCheckpoint 'last.ckpt') or re-save it.", "(LITZOO_TRACEBACK=1 shows the full traceback)"]


def test_help_names_export_and_how_to_see_a_methods_arguments(tmp_path, monkeypatch, capsys):
    code, out, _ = cli(monkeypatch, capsys, tmp_path, "--help")
    assert code == 0
    assert "  export   write a checkpoint's model" in out
    assert "train.py export --ckpt PATH --out DIR" in out and "train.py fit --model.help CLASS" in out
    with pytest.raises(SystemExit) as info:
        _main("fit", "--help")
    fit_help = capsys.readouterr().out.splitlines()
    assert info.value.code == 0 and fit_help[-3:] == [
        "The options above are the Trainer's. A method's own arguments: --model.help CLASS, e.g.",
        "  train.py fit --model.help DDPM        (--data.help DigitsDataModule for a datamodule)",
        "and set one with --model.init_args.NAME VALUE. Each configs/*.yaml names its quick-run flags in its header."]


def test_a_relative_pretrained_path_from_another_directory_names_the_path_the_cwd_and_the_fix(
        tmp_path, monkeypatch, capsys):
    code, _, err = cli(monkeypatch, capsys, tmp_path, "fit", "--config", str(ROOT / "configs" / "kimi_rl_addition.yaml"))
    assert code == 2
    error = err.strip().splitlines()[-2]
    assert error.startswith("error: pretrained_path='runs/cot_sft_addition/export' is not a local folder")
    assert f"resolved from the working directory {str(tmp_path)!r}" in error and "give an absolute path" in error


def test_resume_warning_ignores_values_the_module_filled_in_itself():
    # seed=None, an RL module's observation/action spaces, class prompts: None in the config, set by the module
    # and saved; a resume that restores them ignores nothing the user gave.
    warn = _train_module().warn_ignored_resume_overrides
    assert warn({"init_args.observation_space": None, "init_args.seed": None},
                {"init_args.observation_space": {"type": "Box"}, "init_args.seed": 0}, "x.ckpt") is None
    message = warn({"init_args.lr": 1e-4}, {"init_args.lr": 3e-3}, "x.ckpt")
    assert "  model.init_args.lr: given 0.0001, the checkpoint's 0.003 is used" in message
