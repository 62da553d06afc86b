"""Evaluate an RL module's policy every N env steps: deterministic episodes on a separate env.

Writes into ``dirpath`` (default ``<log_dir>/eval``):

* ``reward_curve.png``: mean evaluation return (± one std over episodes) against env steps;
* ``history.json``: the same numbers (env steps, mean, std, every episode's return and length);
* ``best.ckpt`` (a full Lightning checkpoint) and ``best_policy/`` (``module.export``) when the
  mean return improves;
* ``best_episode.gif``: one episode of the best policy, when ``gif=True`` and the env renders
  ``rgb_array`` frames.

The module must expose ``policy`` (with ``predict``, see :mod:`litzoo.rl.policy`) and ``env_steps``
(what litzoo's RL modules do). Under DDP, rank 0 evaluates and broadcasts the result; every rank
logs it and takes part in saving the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

import gymnasium as gym
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from litzoo.loggers import log_gif, log_image
from litzoo.rl.policy import evaluate_policy


def save_reward_curve(history: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """PNG of mean evaluation return ± std against env steps (matplotlib's Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = np.array([h["env_steps"] for h in history], dtype=float)
    mean = np.array([h["mean_return"] for h in history])
    std = np.array([h["std_return"] for h in history])
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(steps, mean, marker="o", markersize=3, color="tab:blue", label="mean eval return")
    ax.fill_between(steps, mean - std, mean + std, color="tab:blue", alpha=0.2, label="± std over episodes")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def record_episode_gif(policy: Any, env: gym.Env, path: str | Path, seed: int = 0, max_frames: int = 500,
                       fps: int = 30, deterministic: bool = True) -> Path:
    """Run one episode of ``policy.predict`` on ``env`` (``render_mode="rgb_array"``) and save it as a GIF."""
    from PIL import Image

    obs, _ = env.reset(seed=seed)
    frames = [env.render()]
    for _ in range(max_frames - 1):
        obs, _, terminated, truncated, _ = env.step(policy.predict(obs, deterministic=deterministic))
        frames.append(env.render())
        if terminated or truncated:
            break
    if frames[0] is None:
        raise ValueError(f"{env} returned no frame from render(); create it with render_mode='rgb_array'.")
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=max(1, round(1000 / fps)), loop=0)
    return path


class RLEvaluation(Callback):
    """Every ``every_n_env_steps`` env steps (all ranks together) run ``n_episodes`` episodes.

    Args:
        every_n_env_steps: evaluation period in env steps (summed over ranks).
        n_episodes: episodes per evaluation (run side by side in a vector env).
        deterministic: use the policy's deterministic action (mean / argmax); ``False`` samples.
        seed: episode ``i`` of every evaluation is reset with ``seed + i`` (evaluations are comparable).
        env_id, env_kwargs, max_episode_steps: the evaluation env; default: the datamodule's ``make_env``.
        dirpath: output folder (default ``<log_dir>/eval``).
        save_best_checkpoint, export_best: write ``best.ckpt`` / ``best_policy/`` on improvement.
        plot: write ``reward_curve.png`` after each evaluation.
        gif, gif_max_frames, gif_fps: record ``best_episode.gif`` of each new best policy.
        eval_on_train_end: evaluate once more when training ends.

    ``eval/mean_return`` (and ``eval/std_return``, ``eval/mean_length``) are logged (x-axis: env
    steps) and put in ``trainer.callback_metrics``, so ``ModelCheckpoint(monitor="eval/mean_return",
    mode="max")`` also works. ``best_mean_return`` and ``history`` are kept in checkpoints.
    """

    def __init__(
        self,
        every_n_env_steps: int = 10_000,
        n_episodes: int = 10,
        deterministic: bool = True,
        seed: int = 1_000_000,
        env_id: Optional[str] = None,
        env_kwargs: Optional[dict[str, Any]] = None,
        max_episode_steps: Optional[int] = None,
        dirpath: Optional[str] = None,
        save_best_checkpoint: bool = True,
        export_best: bool = True,
        plot: bool = True,
        gif: bool = False,
        gif_max_frames: int = 500,
        gif_fps: int = 30,
        eval_on_train_end: bool = True,
    ) -> None:
        for name, value in (("every_n_env_steps", every_n_env_steps), ("n_episodes", n_episodes),
                            ("gif_max_frames", gif_max_frames), ("gif_fps", gif_fps)):
            if int(value) != value or value < 1:
                raise ValueError(f"RLEvaluation {name}={value!r} must be a positive integer.")
        if env_id is not None:
            from litzoo.rl.collect import check_env_id

            check_env_id(env_id)
        self.every_n_env_steps, self.n_episodes, self.deterministic, self.seed = every_n_env_steps, n_episodes, deterministic, seed
        self.env_id, self.env_kwargs, self.max_episode_steps = env_id, dict(env_kwargs or {}), max_episode_steps
        self.dirpath = dirpath
        self.save_best_checkpoint, self.export_best, self.plot = save_best_checkpoint, export_best, plot
        self.gif, self.gif_max_frames, self.gif_fps = gif, gif_max_frames, gif_fps
        self.eval_on_train_end = eval_on_train_end
        self.history: list[dict[str, Any]] = []
        self.best_mean_return = -float("inf")
        self._next_eval = every_n_env_steps
        self._dir: Optional[Path] = None
        self._title = ""

    # ------------------------------------------------------------------ environment
    def _env_factory(self, trainer, render_mode: Optional[str] = None) -> Callable[[], gym.Env]:
        if self.env_id is not None:
            kwargs = dict(self.env_kwargs, **({"render_mode": render_mode} if render_mode else {}))
            return lambda: gym.make(self.env_id, max_episode_steps=self.max_episode_steps, **kwargs)
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "make_env"):
            raise ValueError("RLEvaluation needs env_id=... or a datamodule with make_env() (GymDataModule).")
        return lambda: datamodule.make_env(render_mode=render_mode)

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer, pl_module, stage: str) -> None:
        # log_dir is a collective under DDP: resolve it on every rank, here.
        self._dir = Path(self.dirpath) if self.dirpath else Path(trainer.log_dir or trainer.default_root_dir) / "eval"
        datamodule = getattr(trainer, "datamodule", None)
        env_id = self.env_id or getattr(datamodule, "env_id", "")
        self._title = env_id if isinstance(env_id, str) else getattr(env_id, "__name__", "")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._total_steps(trainer, pl_module) >= self._next_eval:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        steps = self._total_steps(trainer, pl_module)
        if self.eval_on_train_end and (not self.history or self.history[-1]["env_steps"] != steps):
            self.evaluate(trainer, pl_module, module_log=False)  # self.log is not allowed in on_train_end

    @staticmethod
    def _total_steps(trainer, pl_module) -> int:
        return int(getattr(pl_module, "env_steps", 0)) * trainer.world_size

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, trainer, pl_module, module_log: bool = True) -> dict[str, Any]:
        """Run the episodes (rank 0), share the result, log it, save best checkpoint/export/plot/GIF."""
        steps = self._total_steps(trainer, pl_module)
        self._next_eval = (steps // self.every_n_env_steps + 1) * self.every_n_env_steps
        result: dict[str, Any] = {}
        if trainer.is_global_zero:
            policy = pl_module.policy
            was_training = policy.training
            policy.eval()
            try:
                out = evaluate_policy(policy, self._env_factory(trainer), self.n_episodes, seed=self.seed,
                                      deterministic=self.deterministic)
            finally:
                policy.train(was_training)
            result = {"env_steps": steps, "mean_return": float(out["returns"].mean()),
                      "std_return": float(out["returns"].std()), "mean_length": float(out["lengths"].mean()),
                      "returns": out["returns"].tolist(), "lengths": out["lengths"].tolist()}
        result = trainer.strategy.broadcast(result, src=0)
        self.history.append(result)
        for key in ("mean_return", "std_return", "mean_length"):
            if module_log:
                pl_module.log(f"eval/{key}", result[key], logger=False, prog_bar=key == "mean_return")
            else:
                trainer.callback_metrics[f"eval/{key}"] = torch.tensor(result[key])
        if trainer.is_global_zero:
            metrics = {f"eval/{k}": result[k] for k in ("mean_return", "std_return", "mean_length")}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=steps)
        improved = result["mean_return"] > self.best_mean_return
        if improved:
            self.best_mean_return = result["mean_return"]
            if self.save_best_checkpoint:
                trainer.save_checkpoint(self._dir / "best.ckpt", weights_only=False)  # every rank: it synchronises
        if trainer.is_global_zero:
            self._write_outputs(trainer, pl_module, improved)
            rank_zero_info(f"eval at {steps} env steps: mean return {result['mean_return']:.2f} "
                           f"± {result['std_return']:.2f} (best {self.best_mean_return:.2f})")
        return result

    def _write_outputs(self, trainer, pl_module, improved: bool) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        (self._dir / "history.json").write_text(json.dumps(self.history, indent=1))
        if self.plot:
            save_reward_curve(self.history, self._dir / "reward_curve.png", title=self._title)
            log_image(trainer, "eval/reward_curve", self._dir / "reward_curve.png", step=self.history[-1]["env_steps"])
        if improved and self.export_best:
            pl_module.export(self._dir / "best_policy", overwrite=True)  # its own folder: the new best replaces the old
        if improved and self.gif:
            try:
                env = self._env_factory(trainer, render_mode="rgb_array")()
                try:
                    record_episode_gif(pl_module.policy, env, self._dir / "best_episode.gif", seed=self.seed,
                                       max_frames=self.gif_max_frames, fps=self.gif_fps, deterministic=self.deterministic)
                    log_gif(trainer, "eval/best_episode", self._dir / "best_episode.gif",
                            step=self.history[-1]["env_steps"])
                finally:
                    env.close()
            except Exception as err:  # a missing renderer (e.g. pygame) must not stop training
                rank_zero_warn(f"RLEvaluation: could not record a GIF ({type(err).__name__}: {err}); gif disabled.")
                self.gif = False

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "best_mean_return": self.best_mean_return, "next_eval": self._next_eval}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.best_mean_return = float(state_dict.get("best_mean_return", -float("inf")))
        self._next_eval = int(state_dict.get("next_eval", self.every_n_env_steps))


__all__ = ["RLEvaluation", "record_episode_gif", "save_reward_curve"]
