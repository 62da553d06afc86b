"""train.py as a user runs it (subprocesses, tiny configs): metrics that survive a kill, the checkpoint writer it
installs, resume overrides that are reported when ignored, and fine-tuning from a checkpoint's weights."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
