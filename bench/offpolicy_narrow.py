"""Does running the narrow layers of a bf16-mixed DDPG/SAC update in float32 pay on a CPU? (It did not here.)

    OMP_NUM_THREADS=1 python bench/offpolicy_narrow.py --algo ddpg
    OMP_NUM_THREADS=1 python bench/offpolicy_narrow.py --algo sac

A bf16 matmul with a dimension of 1-16 takes 1.5-7x float32's time on this CPU (oneDNN's ~40 us floor per call,
``bench/offpolicy_matmuls.py``), so the first layers (K = obs + action dims), the 1-wide outputs and their
gradients look like free time. This times one update's forward and backward (critic, target critic, actor and the
actor's term through the critic; Pendulum shapes, batch 256, under CPU autocast) with the layers whose input or
output is at most 16 wide run in float32 (``all``), only the output layers (``out``), only the input layers
(``in``), or none (``none``, the library's), interleaved in one process: median and range of ``--repeats`` rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from litzoo.nets.actors_critics import DeterministicActor, EnsembleLinear, QCritic, SquashedGaussianActor

NARROW = 16


def _float32(fn, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", enabled=False):
        return fn(x.float())


class Float32Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _float32(super().forward, x)


class Float32Ensemble(EnsembleLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _float32(super().forward, x)


def narrow_in_float32(net: nn.Module, variant: str) -> nn.Module:
    """Swap the class of each layer the variant runs in float32 (same parameters)."""
    for m in net.modules():
        if isinstance(m, nn.Linear):
            i, o = m.in_features, m.out_features
        elif isinstance(m, EnsembleLinear):
            i, o = m.weight.shape[1], m.weight.shape[2]
        else:
            continue
        if (variant in ("all", "in") and i <= NARROW) or (variant in ("all", "out") and o <= NARROW):
            m.__class__ = Float32Linear if isinstance(m, nn.Linear) else Float32Ensemble
    return net


def networks(algo: str, variant: str):
    torch.manual_seed(0)
    hidden, critics = ((400, 300), 1) if algo == "ddpg" else ((256, 256), 2)
    actor = SquashedGaussianActor(3, 1, hidden) if algo == "sac" else DeterministicActor(3, 1, hidden)
    nets = (QCritic(3, 1, hidden, num_critics=critics), QCritic(3, 1, hidden, num_critics=critics), actor,
            DeterministicActor(3, 1, hidden))
    return tuple(narrow_in_float32(n, variant) for n in nets)


def update(algo: str, critic, target, actor, actor_target, obs, actions, next_obs) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            if algo == "sac":
                next_actions, next_log_probs = actor.sample_with_log_prob(next_obs)
                y = target(next_obs, next_actions).float().min(0).values - 0.1 * next_log_probs
            else:
                y = target(next_obs, actor_target(next_obs)).float().min(0).values
        q = critic(obs, actions).float()
        critic.requires_grad_(False)
        if algo == "sac":
            a, log_probs = actor.sample_with_log_prob(obs)
            actor_loss = (0.1 * log_probs - critic(obs, a).min(0).values.float()).mean()
        else:
            actor_loss = -critic.q1(obs, actor(obs)).float().mean()
        critic.requires_grad_(True)
        loss = (q - y).pow(2).mean() + actor_loss
    for p in [*critic.parameters(), *actor.parameters()]:
        p.grad = None
    loss.backward()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algo", choices=["ddpg", "sac"], default="ddpg")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--updates", type=int, default=60, help="updates per round")
    args = p.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(256, 3, generator=g), torch.rand(256, 1, generator=g) * 2 - 1, torch.randn(256, 3, generator=g))
    variants = ["none", "all", "out", "in"]
    nets = {v: networks(args.algo, v) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v in variants:  # interleaved: the machine's load drifts alike for all
            for _ in range(5):
                update(args.algo, *nets[v], *batch)
            t0 = time.process_time()
            for _ in range(args.updates):
                update(args.algo, *nets[v], *batch)
            times[v].append((time.process_time() - t0) / args.updates * 1e3)
    base = statistics.median(times["none"])
    for v in variants:
        med = statistics.median(times[v])
        print(f"{args.algo} {v:4s}: {med:.3f} ms/update [{min(times[v]):.3f}-{max(times[v]):.3f}], "
              f"{med / base:.3f}x the all-bf16 time")


if __name__ == "__main__":
    main()
