"""RLEvaluation: evaluation schedule in env steps, best checkpoint/export, reward curve, GIF, state."""

import json

import lightning as L
import numpy as np
import pytest
from PIL import Image

from litzoo.callbacks.rl_eval import RLEvaluation, record_episode_gif, save_reward_curve
from litzoo.datamodules.gym import GymDataModule
from litzoo.envs import GridWorld
from litzoo.modules.actor_critic import ActorCritic
from litzoo.rl.policy import evaluate_policy, load_policy




def grid(render_mode=None):
    # 2x3 grid, start top left, target bottom right; an episode ends when the target is reached
    # (or after 8 steps), so the return says how directly the policy walks there.
    return GridWorld(size=(2, 3), start=(0, 0), target=(1, 2), forbidden=[(0, 1)], max_episode_steps=8,
                     terminate_at_target=True, render_mode=render_mode)


def fit(tmp_path, callback, batches=60, epochs=1, ckpt_path=None):
    datamodule = GymDataModule(grid, num_envs=4, batches_per_epoch=batches)
    module = ActorCritic(gamma=0.9, lr=3e-3, log_every_n_env_steps=10**6)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[callback])
    trainer.fit(module, datamodule, ckpt_path=ckpt_path)
    return trainer, module


def test_evaluates_every_n_env_steps_and_keeps_the_best_policy(tmp_path):
    callback = RLEvaluation(every_n_env_steps=200, n_episodes=3, seed=5)
    trainer, module = fit(tmp_path, callback)  # 60 rollouts x 5 steps x 4 envs = 1200 env steps
    steps = [h["env_steps"] for h in callback.history]
    assert steps == [200, 400, 600, 800, 1000, 1200]  # rollouts of 20 steps land exactly on the period
    means = [h["mean_return"] for h in callback.history]
    assert callback.best_mean_return == max(means)
    for h in callback.history:
        assert h["mean_return"] == pytest.approx(np.mean(h["returns"])) and len(h["returns"]) == 3
    assert trainer.callback_metrics["eval/mean_return"] == pytest.approx(means[-1])

    out = tmp_path / "eval"
    assert json.loads((out / "history.json").read_text()) == callback.history
    with Image.open(out / "reward_curve.png") as image:
        assert image.format == "PNG" and image.size == (600, 400)
    # the exported best policy reproduces the best evaluation exactly (deterministic env and policy)
    best = load_policy(out / "best_policy", env=grid())
    again = evaluate_policy(best, grid, n_episodes=3, seed=5)["returns"]
    assert again.mean() == pytest.approx(callback.best_mean_return)
    # best.ckpt is a full checkpoint of the module at its best evaluation
    restored = ActorCritic.load_from_checkpoint(out / "best.ckpt", weights_only=True)
    assert evaluate_policy(restored.policy, grid, n_episodes=3, seed=5)["returns"].mean() == pytest.approx(
        callback.best_mean_return)
    assert 200 <= restored.env_steps <= 1200 and restored.env_steps % 200 == 0
    # a later improvement replaces the exported best policy (export refuses other non-empty folders)
    callback._write_outputs(trainer, module, improved=True)
    assert evaluate_policy(load_policy(out / "best_policy", env=grid()), grid, n_episodes=3, seed=5)["returns"].mean() \
        == pytest.approx(np.mean(evaluate_policy(module.policy, grid, n_episodes=3, seed=5)["returns"]))


def test_state_survives_a_checkpoint_and_evaluation_resumes_on_schedule(tmp_path):
    callback = RLEvaluation(every_n_env_steps=300, n_episodes=2, eval_on_train_end=False, plot=False)
    trainer, module = fit(tmp_path, callback, batches=20)  # 20 env steps per batch, 400 in all
    assert [h["env_steps"] for h in callback.history] == [300]
    ckpt = tmp_path / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed = RLEvaluation(every_n_env_steps=300, n_episodes=2, eval_on_train_end=False, plot=False)
    fit(tmp_path, resumed, batches=20, epochs=2, ckpt_path=ckpt)
    assert [h["env_steps"] for h in resumed.history] == [300, 600]  # 800 < the next due, 900
    assert resumed.best_mean_return == max(h["mean_return"] for h in resumed.history)


def test_gif_of_the_best_episode_is_written(tmp_path):
    callback = RLEvaluation(every_n_env_steps=200, n_episodes=1, gif=True, gif_fps=4, save_best_checkpoint=False)
    fit(tmp_path, callback, batches=20)
    with Image.open(tmp_path / "eval" / "best_episode.gif") as gif:
        # the episode of the first evaluation that reached the best return (identical frames are merged)
        first_best = next(h for h in callback.history if h["mean_return"] == callback.best_mean_return)
        assert 2 <= gif.n_frames <= first_best["lengths"][0] + 1


def test_gif_without_a_renderer_warns_and_training_goes_on(tmp_path):
    callback = RLEvaluation(every_n_env_steps=400, n_episodes=1, gif=True, save_best_checkpoint=False)
    datamodule = GymDataModule(lambda render_mode=None: grid(), num_envs=4, batches_per_epoch=20)  # never renders
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[callback])
    with pytest.warns(UserWarning, match="could not record a GIF"):
        trainer.fit(ActorCritic(gamma=0.9, log_every_n_env_steps=10**6), datamodule)
    assert callback.gif is False and [h["env_steps"] for h in callback.history] == [400]


def test_record_episode_gif_writes_one_frame_per_step_and_the_reward_curve_a_png(tmp_path):
    class DownThenRight:  # (0, 0) -down-> (1, 0) -right-> (1, 1) -right-> target (1, 2): 3 steps
        def predict(self, obs, deterministic=True):
            return {0: 2, 3: 1, 4: 1}[int(obs)]

    path = record_episode_gif(DownThenRight(), grid(render_mode="rgb_array"), tmp_path / "ep.gif", fps=4)
    with Image.open(path) as gif:
        assert gif.n_frames == 4 and gif.info["duration"] == 250
    history = [{"env_steps": s, "mean_return": m, "std_return": 0.5} for s, m in [(100, -3.0), (200, 1.0)]]
    with Image.open(save_reward_curve(history, tmp_path / "curve.png", title="test")) as image:
        assert image.format == "PNG" and image.size == (600, 400)


def test_invalid_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="every_n_env_steps=0"):
        RLEvaluation(every_n_env_steps=0)
    with pytest.raises(ValueError, match="not registered"):
        RLEvaluation(env_id="NoSuchEnv-v0")
