"""The matmuls of a TD3/DDPG update (Pendulum, [400, 300] networks, batch 256), float32 vs bfloat16, one thread.

    OMP_NUM_THREADS=1 python bench/offpolicy_matmuls.py --repeats 5

Each shape is timed hot (the same operands over and over; the update's own operands are colder) as the median
of ``--repeats`` rounds of 300 calls; the spread is the min-max of the rounds. It shows where a bf16-mixed update's
time can and cannot go on a CPU with AMX: the big matmuls are ~5x faster in bf16, the tiny ones (K, N or M of
1-4: the first layer, the 1-wide output layer and their gradients) ~3-5x slower than in float32. The
"float32, litzoo" column is the same float32 matmul as litzoo's layers compute it (``litzoo.nets.linear`` with
the oneDNN backend: oneDNN for m*n*k >= 2**21, torch's BLAS below), beside torch's own (MKL).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from litzoo.nets import linear as L

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
    onednn = L._onednn_usable()
    L.set_cpu_float32_matmul("onednn" if onednn else "blas")
    print(f"CPU float32 matmul backend for the litzoo column: {L.cpu_float32_matmul()}\n")
    print("| matmul | shape | calls per update | float32 (torch) | float32, litzoo | bfloat16 | bf16 / fp32 torch |")
    print("|---|---|---|---|---|---|---|")
    kinds = ("float32", "litzoo", "bfloat16")
    total = dict.fromkeys(kinds, 0.0)
    for name, (m, k), (k2, n), calls in SHAPES:
        cells = {}
        for kind in kinds:
            dtype = torch.bfloat16 if kind == "bfloat16" else torch.float32
            a, b = torch.randn(m, k, dtype=dtype), torch.randn(k2, n, dtype=dtype)
            fn = (lambda: L.linear(a, b.t())) if kind == "litzoo" else (lambda: a @ b)
            rounds = [time_us(fn) for _ in range(args.repeats)]
            cells[kind] = statistics.median(rounds)
            total[kind] += calls * cells[kind]
            cells[kind, "s"] = f"{cells[kind]:.1f} [{min(rounds):.1f}-{max(rounds):.1f}]"
        print(f"| {name} | {m}x{k} @ {k2}x{n} | {calls} | {cells['float32', 's']} | {cells['litzoo', 's']} | "
              f"{cells['bfloat16', 's']} | {cells['bfloat16'] / cells['float32']:.2f} |")
    print(f"\nsum over one DDPG update's matmuls (hot): float32 {total['float32']:.0f} us (torch), "
          f"{total['litzoo']:.0f} us (litzoo), bfloat16 {total['bfloat16']:.0f} us")


if __name__ == "__main__":
    main()
