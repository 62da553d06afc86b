"""train.py's default loggers (TensorBoard + CSV in one folder) and the images / GIFs the callbacks send them,
read back from the TensorBoard event file."""

import csv
import io
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from litzoo.callbacks import SampleGrid
from litzoo.callbacks.rl_eval import RLEvaluation
from litzoo.datamodules.gym import GymDataModule
from litzoo.datamodules.toy2d import Toy2DDataModule
from litzoo.envs import GridWorld
from litzoo.loggers import default_loggers
from litzoo.modules import DDPM
from litzoo.modules.actor_critic import ActorCritic


def grid(render_mode=None):
    return GridWorld(size=(2, 3), start=(0, 0), target=(1, 2), forbidden=[(0, 1)], max_episode_steps=8,
                     terminate_at_target=True, render_mode=render_mode)


def events(log_dir) -> EventAccumulator:
    return EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0}).Reload()


def test_both_loggers_share_the_next_free_version_folder(tmp_path):
    (tmp_path / "lightning_logs" / "version_0").mkdir(parents=True)
    csv_logger, tensorboard = default_loggers(tmp_path)
    assert csv_logger.log_dir == tensorboard.log_dir == str(tmp_path / "lightning_logs" / "version_1")


def test_rl_evaluation_sends_reward_curve_and_episode_gif_to_tensorboard_and_metrics_to_both(tmp_path):
    callback = RLEvaluation(every_n_env_steps=200, n_episodes=1, gif=True, gif_fps=4, save_best_checkpoint=False,
                            export_best=False)
    trainer = L.Trainer(max_epochs=1, logger=default_loggers(tmp_path), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[callback])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*exists and is not empty.*")  # CSV would delete its file
        trainer.fit(ActorCritic(gamma=0.9, lr=3e-3, log_every_n_env_steps=100),
                    GymDataModule(grid, num_envs=4, batches_per_epoch=20))  # 400 env steps: evals at 200, 400
    log_dir = tmp_path / "lightning_logs" / "version_0"
    assert trainer.log_dir == str(log_dir)
    acc = events(log_dir)
    steps = [h["env_steps"] for h in callback.history]
    assert steps == [200, 400]
    assert [e.step for e in acc.Images("eval/reward_curve")] == steps
    curve = acc.Images("eval/reward_curve")[-1]
    with Image.open(log_dir / "eval" / "reward_curve.png") as png:
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(curve.encoded_image_string))), np.asarray(png.convert("RGB")))
    gifs = acc.Images("eval/best_episode")
    improved = [h["env_steps"] for i, h in enumerate(callback.history)
                if h["mean_return"] > max([-np.inf] + [g["mean_return"] for g in callback.history[:i]])]
    assert [g.step for g in gifs] == improved  # one GIF per new best, the last equal to the file on disk
    assert gifs[-1].encoded_image_string == (log_dir / "eval" / "best_episode.gif").read_bytes()
    assert [e.value for e in acc.Scalars("eval/mean_return")] == [h["mean_return"] for h in callback.history]
    with open(log_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["eval/mean_return"]]
    assert [(int(r["step"]), float(r["eval/mean_return"])) for r in rows] == [
        (h["env_steps"], h["mean_return"]) for h in callback.history]
    assert [e.step for e in acc.Scalars("rollout/ep_return")] == [100, 200, 300, 400]


def test_sample_grid_sends_its_png_to_tensorboard(tmp_path):
    callback = SampleGrid(every_n_steps=2, n=8, steps=2, sampler="ddim")
    trainer = L.Trainer(max_steps=4, logger=default_loggers(tmp_path), enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[callback], limit_val_batches=0)
    trainer.fit(DDPM(data_dim=2, num_classes=None, mlp_hidden=8, mlp_depth=1),
                Toy2DDataModule(batch_size=16))
    log_dir = tmp_path / "lightning_logs" / "version_0"
    images = events(log_dir).Images("samples")
    assert [i.step for i in images] == [2, 4, 4]  # every 2 steps, then the final grid (EMA weights if any)
    with Image.open(log_dir / "samples" / "final.png") as png:
        expected = np.asarray(png.convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string))), expected)


def test_wandb_gets_the_reward_curves_as_images_and_the_episode_gif_as_a_video(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    callback = RLEvaluation(every_n_env_steps=200, n_episodes=1, gif=True, gif_fps=4, save_best_checkpoint=False,
                            export_best=False, dirpath=str(tmp_path / "eval"))
    trainer = L.Trainer(max_epochs=1, logger=WandbLogger(project="litzoo-test", offline=True, save_dir=str(tmp_path)),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path, callbacks=[callback])
    trainer.fit(ActorCritic(gamma=0.9, lr=3e-3, log_every_n_env_steps=100),
                GymDataModule(grid, num_envs=4, batches_per_epoch=20))
    trainer.logger.experiment.finish()
    (media,) = (tmp_path / "wandb").glob("offline-run-*/files/media")
    assert len(list((media / "images" / "eval").glob("reward_curve_*.png"))) == 2  # one per evaluation
    gifs = sorted((media / "videos" / "eval").glob("best_episode_*.gif"), key=lambda p: int(p.name.split("_")[2]))
    assert gifs and gifs[-1].read_bytes() == (tmp_path / "eval" / "best_episode.gif").read_bytes()
