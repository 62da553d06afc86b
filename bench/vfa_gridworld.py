"""Value-function approximation (Zhao, *Mathematical Foundations of RL*, Ch. 8) on the book's 5x5 grid world.

Trains every (algorithm, features) pair of ``ValueFunctionApproximation`` for the same number of env
steps and compares the learned values with the exact ones from ``litzoo.envs.bellman``:

* ``td_linear`` evaluates the uniform random policy (gamma 0.9) from never-ending episodes, so states are
  sampled from its stationary distribution d_pi (uniform here); "TD fixed point RMSE" is the error of
  w* = (Phi^T D (I - gamma P_pi) Phi)^-1 Phi^T D r_pi, the best TD-linear can do with those features.
* ``sarsa`` / ``q_learning`` learn from 100-step episodes started at (0, 0); their RMSE is that of
  max_a q_hat against v*, "greedy optimal" the fraction of states from which the greedy policy of q_hat
  earns v* (exact policy evaluation), "from start" whether it is optimal from the start state.

CPU seconds are the process CPU time of each training run (``time.process_time``), not wall time: the
machine is shared. Writes ``docs/vfa_gridworld.png`` (learned vs exact values for three runs).

    OMP_NUM_THREADS=1 python bench/vfa_gridworld.py [--batches 1500] [--seed 0]
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch

from litzoo.datamodules.gym import GymDataModule
from litzoo.envs import GridWorld
from litzoo.modules.value_function_approximation import ValueFunctionApproximation
from litzoo.rl.features import make_features

GAMMA = 0.9
NUM_ENVS, N_STEPS = 32, 2  # 64 transitions per SGD step

# (algorithm, features, feature kwargs, module kwargs). Step sizes: alpha ~ 1.5 / max_s ||phi(s)||^2 for
# TD-linear with alpha_k = alpha / (1 + k / K); the control runs use the settings of the tests.
RUNS = [
    ("td_linear", "onehot", {}, {"alpha": 1.5, "alpha_decay_steps": 1000}),
    ("td_linear", "polynomial", {"order": 1}, {"alpha": 0.5, "alpha_decay_steps": 200}),
    ("td_linear", "polynomial", {"order": 2}, {"alpha": 0.25, "alpha_decay_steps": 400}),
    ("td_linear", "polynomial", {"order": 3}, {"alpha": 0.15, "alpha_decay_steps": 600}),
    ("td_linear", "fourier", {"order": 1}, {"alpha": 0.4, "alpha_decay_steps": 200}),
    ("td_linear", "fourier", {"order": 2}, {"alpha": 0.17, "alpha_decay_steps": 400}),
    ("td_linear", "fourier", {"order": 3}, {"alpha": 0.1, "alpha_decay_steps": 600}),
    ("td_linear", "tile", {"num_tilings": 4, "tiles_per_dim": 3}, {"alpha": 0.4, "alpha_decay_steps": 600}),
    ("sarsa", "onehot", {}, {"alpha": 2.0, "epsilon": 0.3, "epsilon_final": 0.0, "epsilon_decay_env_steps": 80_000}),
    ("sarsa", "tile", {"num_tilings": 4, "tiles_per_dim": 3},
     {"alpha": 0.5, "epsilon": 0.3, "epsilon_final": 0.0, "epsilon_decay_env_steps": 80_000}),
    ("q_learning", "onehot", {}, {"alpha": 3.0, "epsilon": 1.0}),
    ("q_learning", "tile", {"num_tilings": 4, "tiles_per_dim": 3}, {"alpha": 0.75, "epsilon": 1.0}),
    ("q_learning", "fourier", {"order": 3}, {"alpha": 0.3, "epsilon": 1.0}),
]


def td_fixed_point_rmse(features: str, feature_kwargs: dict) -> float:
    """RMSE (= ||.||_D, d_pi is uniform) of the TD fixed point of the uniform policy to v_pi."""
    from litzoo.envs import policy_evaluation

    P, R = GridWorld().model()
    S, A = R.shape
    pi = np.full((S, A), 1.0 / A)
    P_pi, r_pi = np.einsum("sa,sat->st", pi, P), (pi * R).sum(1)
    eigvals, eigvecs = np.linalg.eig(P_pi.T)
    d = np.real(eigvecs[:, np.argmin(np.abs(eigvals - 1.0))])
    D = np.diag(d / d.sum())
    Phi = make_features(features, (5, 5), **feature_kwargs).matrix()
    # lstsq: tile coding's Phi has unused tiles (a singular system; any solution gives the same Phi w*)
    w = np.linalg.lstsq(Phi.T @ D @ (np.eye(S) - GAMMA * P_pi) @ Phi, Phi.T @ D @ r_pi, rcond=None)[0]
    return float(np.sqrt(np.mean((Phi @ w - policy_evaluation(P, R, pi, GAMMA)) ** 2)))


def train(algorithm: str, features: str, feature_kwargs: dict, kwargs: dict, batches: int, seed: int):
    module = ValueFunctionApproximation(algorithm=algorithm, features=features, gamma=GAMMA, n_steps=N_STEPS,
                                        seed=seed, log_every_n_env_steps=10**9, **feature_kwargs, **kwargs)
    env_id = functools.partial(GridWorld, max_episode_steps=None) if algorithm == "td_linear" else "litzoo/GridWorld-v0"
    datamodule = GymDataModule(env_id, num_envs=NUM_ENVS, batches_per_epoch=batches, seed=seed)
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    start = time.process_time()
    trainer.fit(module, datamodule)
    return module, time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=1500, help="SGD steps per run (64 env steps each)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", default=str(Path(__file__).resolve().parents[1] / "docs" / "vfa_gridworld.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    rows, pictures = [], []
    for algorithm, features, feature_kwargs, kwargs in RUNS:
        module, cpu = train(algorithm, features, feature_kwargs, kwargs, args.batches, args.seed)
        errors = module.compare_with_exact()
        label = features + "".join(f" {k}={v}" for k, v in feature_kwargs.items())
        if algorithm == "td_linear":
            extra = (f"{td_fixed_point_rmse(features, feature_kwargs):.3f}", "-", "-")
        else:
            extra = ("-", f"{errors['greedy_value_optimal']:.2f}", "yes" if errors["start_gap"] < 1e-9 else "no")
        rows.append((algorithm, label, str(module.phi.dim), f"{errors['rmse']:.3f}", f"{errors['max_error']:.3f}", *extra,
                     str(module.env_steps), f"{cpu:.1f}"))
        print(" | ".join(rows[-1]), flush=True)
        if (algorithm, features, feature_kwargs.get("order")) in {("td_linear", "fourier", 3),
                                                                  ("td_linear", "polynomial", 1),
                                                                  ("q_learning", "onehot", None)}:
            pictures.append(module.plot())

    header = ("algorithm", "features", "dim", "RMSE vs exact", "max error", "TD fixed point RMSE",
              "greedy optimal (states)", "optimal from start", "env steps", "CPU s")
    print(f"\nBook 5x5 grid world, gamma {GAMMA}, seed {args.seed}; td_linear: uniform policy vs exact v_pi; "
          "sarsa/q_learning: max_a q_hat vs exact v*. CPU s = process CPU time (1 thread).\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")

    from matplotlib.image import imsave

    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    imsave(args.png, np.concatenate(pictures, axis=0))
    print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
