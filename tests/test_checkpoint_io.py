"""Checkpoints survive a kill during the write (AtomicCheckpointIO), also with TMPDIR on another filesystem."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from litzoo.base import load_checkpoint
from litzoo.checkpoint_io import AtomicCheckpointIO, atomic_torch_save

ROOT = Path(__file__).resolve().parents[1]

# A tiny fit saving last.ckpt after every step; the third save is killed (os._exit) halfway through writing
# checkpoint bytes into a file, whichever writer does it: torch.save into a real file (the atomic writer) or
# the copy from TMPDIR into the checkpoint folder (Lightning's default writer when TMPDIR is on another
# filesystem).
SCRIPT = textwrap.dedent("""
    import io, os, shutil, sys
    import lightning as L, torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader, TensorDataset
    from litzoo.checkpoint_io import AtomicCheckpointIO

    saves = [0]

    class Count(L.Callback):
        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            saves[0] += 1

    real_save, real_copyfile = torch.save, shutil.copyfile

    def dying_save(obj, f, *args, **kwargs):
        if saves[0] < 3 or isinstance(f, io.BytesIO):
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf)
        data = buf.getvalue()
        f.write(data[: len(data) // 2]); f.flush()
        os._exit(3)

    def dying_copyfile(src, dst, *args, **kwargs):
        if saves[0] < 3:
            return real_copyfile(src, dst, *args, **kwargs)
        data = open(src, "rb").read()
        with open(dst, "wb") as out:
            out.write(data[: len(data) // 2])
        os._exit(3)

    torch.save, shutil.copyfile = dying_save, dying_copyfile

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(64, 64)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    plugins = [AtomicCheckpointIO()] if sys.argv[2] == "atomic" else []
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=sys.argv[1], plugins=plugins,
                        callbacks=[Count(), ModelCheckpoint(dirpath=sys.argv[1], save_top_k=0, save_last=True,
                                                            every_n_train_steps=1)])
    trainer.fit(Tiny(), DataLoader(TensorDataset(torch.randn(48, 64)), batch_size=8))
""")


def _other_filesystem_than(path: Path) -> str | None:
    for candidate in ("/dev/shm", "/run/user", "/tmp"):
        writable = os.path.isdir(candidate) and os.access(candidate, os.W_OK)
        if writable and os.stat(candidate).st_dev != os.stat(path).st_dev:
            return candidate
    return None


def _killed_fit(tmp_path: Path, writer: str) -> subprocess.CompletedProcess:
    script = tmp_path / "fit.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    other = _other_filesystem_than(tmp_path)
    if other is not None:
        env["TMPDIR"] = other
    return subprocess.run([sys.executable, str(script), str(tmp_path / "ckpts"), writer], capture_output=True,
                          text=True, timeout=120, env=env)


def test_kill_during_checkpoint_write_leaves_previous_last_ckpt_loadable(tmp_path):
    out = _killed_fit(tmp_path, "atomic")
    assert out.returncode == 3, out.stderr[-3000:]  # really killed during the third save
    checkpoint = load_checkpoint(tmp_path / "ckpts" / "last.ckpt")
    assert checkpoint["global_step"] == 2  # the second save, complete
    assert set(checkpoint["state_dict"]) == {"layer.weight", "layer.bias"}


def test_atomic_save_replaces_in_place_and_cleans_leftovers_of_a_killed_save(tmp_path):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"a": torch.arange(3)}, target)
    (tmp_path / ".last.ckpt.dead.tmp").write_bytes(b"half a checkpoint")  # what a killed save leaves behind
    atomic_torch_save({"a": torch.arange(5)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.arange(5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_atomic_save_failure_keeps_the_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"a": torch.arange(3)}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"a": Unpicklable()}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_checkpoint_io_keeps_lightning_behaviour_for_storage_options(tmp_path):
    with pytest.raises(TypeError, match="storage_options"):
        AtomicCheckpointIO().save_checkpoint({"a": 1}, tmp_path / "x.ckpt", storage_options={"x": 1})


def test_atomic_save_gives_the_file_the_permissions_torch_save_would(tmp_path):
    # mkstemp creates 0600 files: a checkpoint must stay readable by the group/others the umask allows.
    umask = os.umask(0o022)
    try:
        atomic_torch_save({"state_dict": {}}, tmp_path / "a.ckpt")
        torch.save({"state_dict": {}}, tmp_path / "b.ckpt")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.ckpt").stat().st_mode & 0o777 == (tmp_path / "b.ckpt").stat().st_mode & 0o777 == 0o644
