"""One fused AdamW step on the off-policy modules' networks: torch's ``optimizer.step()`` vs litzoo's
``fused_adamw_step`` vs the bare ``torch._fused_adamw_`` kernels on the same lists (the floor).

    OMP_NUM_THREADS=1 python bench/adamw_step.py --repeats 7
    OMP_NUM_THREADS=1 python bench/adamw_step.py --repeats 7 --algos ddpg --weight-decay 0.01   # 2 groups

The networks are bench/rl.py's: DDPG's 400-300 actor and critic, SAC's 256-256 actor, twin critics and
temperature, all in one optimizer as the modules build it (``adamw_for_networks``: equal learning rates merge
into one group; ``--weight-decay`` > 0 puts DDPG's biases in a group of their own; SAC takes none). Each repeat times ``--calls`` steps of each variant, interleaved; the median over repeats and
its range are printed in microseconds per step. The gradients stay fixed (a step's cost does not depend on them).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def optimizer_for(algo: str, weight_decay: float = 0.0) -> torch.optim.AdamW:
    import gymnasium as gym

    from litzoo.modules.ddpg import DDPG
    from litzoo.modules.sac import SAC

    space = dict(observation_space=gym.spaces.Box(-8.0, 8.0, (3,)), action_space=gym.spaces.Box(-2.0, 2.0, (1,)))
    if algo == "sac":
        module = SAC(actor_hidden_sizes=(256, 256), critic_hidden_sizes=(256, 256), actor_lr=1e-3, critic_lr=1e-3,
                     **space)
    else:
        module = DDPG(actor_hidden_sizes=(400, 300), critic_hidden_sizes=(400, 300), actor_lr=1e-3, critic_lr=1e-3,
                      weight_decay=weight_decay, **space)
    optimizer = module.configure_optimizers()
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.randn_like(p) * 1e-3
    optimizer.step()  # creates the state
    return optimizer


def main() -> None:
    from litzoo.optim import fused_adamw_step

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algos", nargs="+", default=["ddpg", "sac"], choices=["ddpg", "sac"])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--weight-decay", type=float, default=0.0)
    args = p.parse_args()
    torch.set_num_threads(1)
    for algo in args.algos:
        optimizer = optimizer_for(algo, args.weight_decay)
        lists = [(group, *([optimizer.state[q][k] for q in group["params"]] for k in ("exp_avg", "exp_avg_sq", "step")),
                  group["params"], [q.grad for q in group["params"]]) for group in optimizer.param_groups]

        def kernels() -> None:  # the kernels fused_adamw_step launches, on lists built once here (the floor)
            with torch.no_grad():
                for group, exp_avgs, exp_avg_sqs, steps, params, grads in lists:
                    torch._foreach_add_(steps, 1)
                    torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                                        lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1],
                                        weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                                        grad_scale=None, found_inf=None)

        variants = {"optimizer.step()": optimizer.step, "fused_adamw_step": lambda: fused_adamw_step(optimizer),
                    "kernels alone": kernels}
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, step in variants.items():
                for _ in range(50):
                    step()
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    step()
                times[name].append((time.perf_counter() - t0) / args.calls * 1e6)
        n = sum(q.numel() for g in optimizer.param_groups for q in g["params"])
        print(f"{algo}: {n:,} parameters in {len(optimizer.param_groups)} group(s); us per step, median [range] of "
              f"{args.repeats} x {args.calls} calls")
        base = statistics.median(times["optimizer.step()"])
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:18s} {med:7.1f} [{min(ts):.1f}-{max(ts):.1f}]  {med / base:.2f}x")


if __name__ == "__main__":
    main()
