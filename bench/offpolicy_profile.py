"""Per-update CPU cost of litzoo's off-policy modules (TD3/DDPG/SAC on Pendulum) vs SB3's ``train()``.

    OMP_NUM_THREADS=1 python bench/offpolicy_profile.py --algo td3 --precision 32-true --updates 1000
    OMP_NUM_THREADS=1 python bench/offpolicy_profile.py --algo sac --cprofile 25   # top functions by own time

Each mode measures CPU-seconds (``time.process_time``) per learning step (one env step + one update, as
bench/rl.py's "learning" throughput), after ``--warm`` learning steps:

* ``fit``: ``Trainer.fit`` as a user runs it (bench/rl.py's hyperparameters, warm-up of ``batch_size``
  random steps instead of 10 k: the update cost does not depend on it; ``--updates-per-batch``: the module's
  ``updates_per_batch``);
* ``sb3``: SB3's ``learn`` on the same shapes (its learning phase only).
``--cprofile N`` prints the N functions with the most own time in the ``fit`` run.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import logging
import pstats
import tempfile
import time
import warnings

import numpy as np
import torch

SHAPES = {"td3": (400, 300), "ddpg": (400, 300), "sac": (256, 256)}


def litzoo_module(algo: str, learning_starts: int, seed: int = 0, **kwargs):
    from litzoo.modules.ddpg import DDPG, TD3
    from litzoo.modules.sac import SAC

    torch.manual_seed(seed)
    hidden = SHAPES[algo]
    if algo == "sac":
        return SAC(actor_hidden_sizes=hidden, critic_hidden_sizes=hidden, actor_lr=1e-3, critic_lr=1e-3,
                   batch_size=256, buffer_size=200_000, learning_starts=learning_starts, seed=seed, **kwargs)
    return (TD3 if algo == "td3" else DDPG)(
        actor_hidden_sizes=hidden, critic_hidden_sizes=hidden, gamma=0.98, actor_lr=1e-3, critic_lr=1e-3,
        batch_size=256, buffer_size=200_000, learning_starts=learning_starts, exploration_std=0.1, seed=seed, **kwargs)


def fit(algo: str, precision: str, updates: int, warm: int, profile: int = 0, updates_per_batch: int = 1) -> float:
    import lightning as L

    from litzoo.datamodules.gym import GymDataModule

    module = litzoo_module(algo, 256, updates_per_batch=updates_per_batch)
    clock: dict[str, float] = {}

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            n = pl_module.num_updates  # (jumps by updates_per_batch per batch)
            if n >= warm and "t0" not in clock:
                clock["t0"], clock["n0"] = time.process_time(), n
                if profile:
                    clock["prof"] = cProfile.Profile()
                    clock["prof"].enable()
            if n >= warm + updates and "t1" not in clock:
                if profile:
                    clock["prof"].disable()
                clock["t1"], clock["n1"] = time.process_time(), n
                trainer.should_stop = True

    root = tempfile.mkdtemp(prefix="litzoo_offpolicy_profile_")
    trainer = L.Trainer(max_steps=-1, max_epochs=-1, accelerator="cpu", devices=1, precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[Clock()], default_root_dir=root)
    trainer.fit(module, GymDataModule("Pendulum-v1", num_envs=1, batches_per_epoch=1000, seed=0))
    if profile:
        pstats.Stats(clock["prof"]).sort_stats(os.environ.get("SORT", "tottime")).print_stats(profile)
    return (clock["t1"] - clock["t0"]) / (clock["n1"] - clock["n0"])


def sb3(algo: str, updates: int, warm: int) -> float:
    from stable_baselines3 import DDPG, SAC, TD3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise

    starts = 256
    clock: dict[str, float] = {}

    class Clock(BaseCallback):
        def _on_step(self) -> bool:
            n = self.num_timesteps - starts
            if n == warm:
                clock["t0"] = time.process_time()
            if n == warm + updates:
                clock["t1"] = time.process_time()
                return False
            return True

    hidden = list(SHAPES[algo])
    if algo == "sac":
        model = SAC("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, learning_starts=starts, buffer_size=200_000,
                    policy_kwargs=dict(net_arch=hidden), seed=0, device="cpu")
    else:
        model = (TD3 if algo == "td3" else DDPG)(
            "MlpPolicy", "Pendulum-v1", gamma=0.98, buffer_size=200_000, learning_starts=starts, learning_rate=1e-3,
            batch_size=256, action_noise=NormalActionNoise(np.zeros(1), 0.1 * np.ones(1)),
            policy_kwargs=dict(net_arch=hidden), seed=0, device="cpu")
    model.learn(total_timesteps=starts + warm + updates + 10, callback=Clock())
    return (clock["t1"] - clock["t0"]) / updates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", choices=sorted(SHAPES), default="td3")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--updates", type=int, default=1000)
    p.add_argument("--warm", type=int, default=100)
    p.add_argument("--modes", nargs="+", default=["fit", "sb3"], choices=["fit", "sb3"])
    p.add_argument("--cprofile", type=int, default=0)
    p.add_argument("--updates-per-batch", type=int, default=1, help="litzoo: env steps + updates per Lightning batch")
    args = p.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    out = {}
    if "fit" in args.modes:
        out["fit"] = fit(args.algo, args.precision, args.updates, args.warm, args.cprofile, args.updates_per_batch)
    if "sb3" in args.modes:
        out["sb3"] = sb3(args.algo, args.updates, args.warm)
    print(f"{args.algo} {args.precision}: " + ", ".join(f"{k} {v * 1e3:.3f} ms/step ({1 / v:.0f} steps/CPU-s)"
                                                        for k, v in out.items()))
    if len(out) == 2:
        print(f"litzoo/SB3 speed ratio: {out['sb3'] / out['fit']:.3f}")


if __name__ == "__main__":
    main()
