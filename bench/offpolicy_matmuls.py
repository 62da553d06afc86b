"""The matmuls of a TD3/DDPG update (Pendulum, [400, 300] networks, batch 256), float32 vs bfloat16, one thread.

    OMP_NUM_THREADS=1 python bench/offpolicy_matmuls.py --repeats 5

Each shape is timed hot (the same operands over and over; the update's own operands are colder) as the median
of ``--repeats`` rounds of 300 calls; the spread is the min-max of the rounds. It shows where a bf16-mixed update's
time can and cannot go on a CPU with AMX: the big matmuls are ~5x faster in bf16, the tiny ones (K, N or M of
1-4: the first layer, the 1-wide output layer and their gradients) ~3-5x slower than in float32.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

# (name, (M, K), (K, N), calls per DDPG update in bf16-mixed: forward = critic, target critic, Q1 in the
# actor's term, actor, target actor; backward = the critic's weight and input gradients, Q1's input gradients
# (the critic is frozen in the actor's term), the actor's weight and input gradients)
SHAPES = [
    ("hidden 400->300, forward", (256, 400), (400, 300), 5),
    ("hidden 400->300, input gradient", (256, 300), (300, 400), 3),
    ("hidden 400->300, weight gradient", (400, 256), (256, 300), 2),
    ("first layer K=4, forward", (256, 4), (4, 400), 5),
    ("first layer, weight gradient", (4, 256), (256, 400), 2),
    ("first layer, input gradient (Q1 -> action)", (256, 400), (400, 4), 1),
    ("output layer N=1, forward", (256, 300), (300, 1), 5),
    ("output layer, input gradient (K=1)", (256, 1), (1, 300), 3),
    ("output layer, weight gradient (M=1)", (1, 256), (256, 300), 2),
]


def time_us(fn, calls: int = 300) -> float:
    for _ in range(20):
        fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, 1 thread; microseconds per call, median [min-max] of {args.repeats} rounds\n")
    print("| matmul | shape | calls per update | float32 | bfloat16 | bf16 / fp32 |")
    print("|---|---|---|---|---|---|")
    total = {torch.float32: 0.0, torch.bfloat16: 0.0}
    for name, (m, k), (k2, n), calls in SHAPES:
        cells = {}
        for dtype in (torch.float32, torch.bfloat16):
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k2, n, dtype=dtype)
            rounds = [time_us(lambda: a @ b) for _ in range(args.repeats)]
            cells[dtype] = statistics.median(rounds)
            total[dtype] += calls * cells[dtype]
            cells[dtype, "s"] = f"{cells[dtype]:.1f} [{min(rounds):.1f}-{max(rounds):.1f}]"
        print(f"| {name} | {m}x{k} @ {k2}x{n} | {calls} | {cells[torch.float32, 's']} | {cells[torch.bfloat16, 's']} | "
              f"{cells[torch.bfloat16] / cells[torch.float32]:.2f} |")
    print(f"\nsum over one DDPG update's matmuls (hot): float32 {total[torch.float32]:.0f} us, "
          f"bfloat16 {total[torch.bfloat16]:.0f} us")


if __name__ == "__main__":
    main()
