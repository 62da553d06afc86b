"""Bad input, corrupt files: clear errors at construction or load, never silent (issue 15 §7)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from gymnasium import spaces
from PIL import Image
from safetensors.torch import load_file, save_file

from litzoo.base import CheckpointError, load_checkpoint
from litzoo.datamodules.images import ImageFolderDataModule
from litzoo.export import export_checkpoint
from litzoo.modules.ddpg import DDPG, TD3
from litzoo.modules.ddpm import DDPM
from litzoo.modules.dqn import DQN
from litzoo.rl.policy import load_policy

REPO = Path(__file__).resolve().parents[1]
OBS, ACT = spaces.Box(-1.0, 1.0, (3,), np.float32), spaces.Box(-2.0, 2.0, (1,), np.float32)


def _td3(**kwargs):
    return TD3(observation_space=OBS, action_space=ACT, actor_hidden_sizes=[8], critic_hidden_sizes=[8], **kwargs)


def _checkpoint(module, path):
    """A checkpoint as a Trainer writes it (litzoo_class, hyperparameters, state dict), without training."""
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


# ----------------------------------------------------------------------------------------- hyperparameters
@pytest.mark.parametrize("kwargs, match", [
    ({"lr": -1}, "lr=-1"),
    ({"warmup_steps": -10}, "warmup_steps=-10"),
    ({"total_steps": -2}, "total_steps=-2"),
    ({"block_out_channels": ()}, "block_out_channels=()"),
    ({"norm_num_groups": 0}, "norm_num_groups=0"),
])
def test_ddpm_rejects_bad_hyperparameters_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")):
        DDPM(**kwargs)


def test_ddpm_sample_with_zero_steps_is_an_error_not_the_default_1000():
    module = DDPM(data_dim=2, num_classes=None, mlp_hidden=8, mlp_depth=1)
    with pytest.raises(ValueError, match="steps=0"):
        module.sample(2, steps=0)


@pytest.mark.parametrize("cls, kwargs, match", [
    (DQN, {"buffer_size": 8, "batch_size": 16}, "buffer_size=8 is smaller than batch_size=16"),
    (TD3, {"buffer_size": 100, "batch_size": 32, "learning_starts": 200}, "learning_starts=200 exceeds buffer_size=100"),
    (DDPG, {"buffer_size": 10, "batch_size": 32, "learning_starts": 0}, "buffer_size=10 is smaller"),
])
def test_replay_sizes_that_cannot_work_are_rejected(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


# ----------------------------------------------------------------------------------------- checkpoints
def test_random_bytes_give_a_checkpoint_error_without_torchs_weights_only_advice(tmp_path):
    path = tmp_path / "random.ckpt"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    for load in (load_checkpoint, TD3.load_from_checkpoint):
        with pytest.raises(CheckpointError, match="random.ckpt") as err:
            load(path)
        assert "weights_only=False" not in str(err.value) and "file an issue" not in str(err.value)


def test_train_py_fit_from_a_truncated_checkpoint_raises_checkpoint_error(tmp_path):
    good = _checkpoint(_td3(), tmp_path / "good.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cmd = [sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs" / "td3_pendulum.yaml"),
           "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", str(truncated)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]  # one error line, no traceback
    assert out.stderr.startswith(f"error: Checkpoint '{truncated}'") and "is corrupt or truncated" in out.stderr


def test_a_td3_checkpoint_does_not_load_as_ddpg_nor_a_dqn_checkpoint_as_td3(tmp_path):
    td3_ckpt = _checkpoint(_td3(), tmp_path / "td3.ckpt")
    with pytest.raises(CheckpointError, match="written by litzoo.modules.ddpg.TD3, not by litzoo.modules.ddpg.DDPG"):
        DDPG.load_from_checkpoint(td3_ckpt)
    assert isinstance(TD3.load_from_checkpoint(td3_ckpt), TD3)  # the right class still loads
    dqn_ckpt = _checkpoint(DQN(OBS, spaces.Discrete(2), hidden_sizes=[8]), tmp_path / "dqn.ckpt")
    with pytest.raises(CheckpointError, match="written by litzoo.modules.dqn.DQN"):
        TD3.load_from_checkpoint(dqn_ckpt)


def test_fit_with_another_modules_checkpoint_names_both_classes(tmp_path):
    from litzoo.datamodules.gym import GymDataModule

    dqn_ckpt = _checkpoint(DQN(spaces.Box(-np.inf, np.inf, (4,), np.float32), spaces.Discrete(2), hidden_sizes=[8]),
                           tmp_path / "dqn.ckpt")
    td3 = TD3(actor_hidden_sizes=[8], critic_hidden_sizes=[8])
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(CheckpointError, match="written by litzoo.modules.dqn.DQN, not by litzoo.modules.ddpg.TD3"):
        trainer.fit(td3, GymDataModule("Pendulum-v1", batches_per_epoch=1), ckpt_path=dqn_ckpt)


# ----------------------------------------------------------------------------------------- policy folders
def _exported(tmp_path):
    out = _td3().export(tmp_path / "policy")
    return out, out / "policy.json", out / "policy.safetensors"


def _edit_json(path, change):
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("tamper, match", [
    (lambda j, w: j.write_text("{not json"), r"policy.json is not valid JSON"),
    (lambda j, w: _edit_json(j, lambda c: c.pop("actor")), r"policy.json has no field 'actor'"),
    (lambda j, w: _edit_json(j, lambda c: c["actor"].update(bogus=1)), r"policy.json: field 'actor' is invalid"),
    (lambda j, w: _edit_json(j, lambda c: c["action_space"].update(low=[3.0])), r"policy.json: field 'action_space' is invalid.*low"),
    (lambda j, w: _edit_json(j, lambda c: c["action_space"].update(low=[float("nan")])), r"policy.json: field 'action_space' is invalid.*nan"),
    (lambda j, w: w.write_bytes(b"\x00garbage" * 10), r"policy.safetensors cannot be read as safetensors"),
    (lambda j, w: save_file({k: v.fill_(float("nan")) for k, v in load_file(w).items()}, w),
     r"policy.safetensors: tensor '.*' holds NaN"),
    (lambda j, w: save_file({k: v for k, v in list(load_file(w).items())[1:]}, w), r"policy.safetensors does not match"),
])
def test_a_tampered_policy_folder_names_the_file_and_the_field(tmp_path, tamper, match):
    folder, config, weights = _exported(tmp_path)
    tamper(config, weights)
    with pytest.raises(ValueError, match=match):
        load_policy(folder)  # no env given: the folder is checked on its own


# ----------------------------------------------------------------------------------------- images, exports
def test_a_16_bit_png_is_scaled_by_its_bit_depth_not_clipped_to_white(tmp_path):
    Image.fromarray(np.array([[0, 32768], [65535, 257]], dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(np.array([[0, 128], [255, 1]], dtype=np.uint8)).save(tmp_path / "flat.png")
    datamodule = ImageFolderDataModule(str(tmp_path), image_size=2, grayscale=True)
    assert datamodule._load(tmp_path / "deep.png").flatten().tolist() == [0, 128, 255, 1]
    assert torch.equal(datamodule._load(tmp_path / "deep.png"), datamodule._load(tmp_path / "flat.png"))


def test_export_into_a_folder_holding_another_export_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    _td3().export(out)
    ddpm = DDPM(data_dim=2, num_classes=None, mlp_hidden=8, mlp_depth=1)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ddpm.export(out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "policy.json", "policy.safetensors"]  # untouched
    ddpm.export(out, overwrite=True)
    assert not (out / "policy.json").exists() and (out / "model.safetensors").is_file()  # no merge
    ckpt = _checkpoint(_td3(), tmp_path / "td3.ckpt")
    with pytest.raises(FileExistsError):
        export_checkpoint(ckpt, out)
    export_checkpoint(ckpt, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "policy.json", "policy.safetensors"]
