"""Rollout throughput: transformers ``generate`` vs litzoo's sampler on KimiRL's rollout shapes.

    OMP_NUM_THREADS=1 python bench/rollout.py                       # 3 tasks, 5 alternating repeats
    OMP_NUM_THREADS=1 python bench/rollout.py --tasks addition --repeats 3 --untrained

The policy per task is bench/kimi.py's SFT warm-up (``--sft-steps``, cached in ``--cache-dir`` and
shared with bench/kimi.py), so response lengths look like RL's (most responses end with ``eos``
well before the budget; ``--untrained`` uses a fresh TINY_QWEN2 instead, whose responses run to the
budget: the worst case for early removal). One rollout = ``--prompts`` held-out prompts x ``k``
samples at temperature T with the task's ``max_new_tokens`` (bench/kimi.py's settings), drawn by
``litzoo.reasoning.generation.generate(sampler=...)``: ``"transformers"`` (``model.generate``) and
``"litzoo"`` (``sample``: prompt-shared prefill, early removal). The two alternate, each repeat on fresh
prompts and seed; throughput = response tokens (up to and including ``eos``) per CPU-second of this
process (the machine is shared: wall time measures the neighbours). Prints a markdown table with
the median and the min-max spread over the repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kimi import TASK_SPECS, datamodule, sft_checkpoint  # noqa: E402  (bench/kimi.py: same tasks and warm-ups)

from litzoo.reasoning.generation import generate  # noqa: E402
from litzoo.reasoning.policy import build_policy, encode_prompt  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASK_SPECS), choices=list(TASK_SPECS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8, help="prompts per rollout (KimiRL's batch)")
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--sft-steps", type=int, default=300, help="SFT warm-up steps of the policy (bench/kimi.py's)")
    parser.add_argument("--untrained", action="store_true", help="a fresh TINY_QWEN2: every response runs to the budget")
    parser.add_argument("--cache-dir", default="runs/bench_kimi")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    # bench/kimi.py's defaults for what sft_checkpoint reads
    kimi_args = argparse.Namespace(seed=0, num_train=4000, num_eval=args.prompts * args.repeats, sft_num_train=20000,
                                   p_mistake=0.3, sft_batch_size=64, sft_lr=3e-3, group_by_length=None,
                                   cache_dir=args.cache_dir)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {torch.get_num_threads()}; "
          f"k={args.k}, {args.prompts} prompts, T={args.temperature}, {args.repeats} alternating repeats, policy: "
          f"{'untrained TINY_QWEN2' if args.untrained else f'SFT {args.sft_steps} steps'}", flush=True)
    rows = []
    for name in args.tasks:
        spec = TASK_SPECS[name]
        if args.untrained:
            torch.manual_seed(0)
            model, tok = build_policy(dict(spec.model))
        else:
            path, _ = sft_checkpoint(name, spec, args.sft_steps, kimi_args)
            model, tok = build_policy(pretrained_path=str(path))
        data = datamodule(spec, "rl", kimi_args, batch_size=args.prompts)
        data.setup("fit")
        prompts = [encode_prompt(tok, p.prompt) for p in data.val_problems]
        rates: dict[str, list[float]] = {"transformers": [], "litzoo": []}
        lengths: dict[str, list[float]] = {"transformers": [], "litzoo": []}
        generate(model, tok, prompts[:2], num_samples=2, max_new_tokens=4, seed=0, sampler="litzoo")  # warm-up
        generate(model, tok, prompts[:2], num_samples=2, max_new_tokens=4, seed=0, sampler="transformers")
        for r in range(args.repeats):
            batch = prompts[r * args.prompts:(r + 1) * args.prompts]
            order = ("transformers", "litzoo") if r % 2 == 0 else ("litzoo", "transformers")
            for sampler in order:
                rollout = generate(model, tok, batch, num_samples=args.k, max_new_tokens=spec.max_new_tokens,
                                   temperature=args.temperature, seed=1000 + r, sampler=sampler)
                rates[sampler].append(rollout.num_tokens / rollout.cpu_seconds)
                lengths[sampler].append(rollout.lengths.float().mean().item())
        rows.append((name, spec.max_new_tokens, rates, lengths))
        print(f"[{name}] " + ", ".join(f"{s}: {statistics.median(v):.0f}" for s, v in rates.items()), flush=True)
    print("\n| task | max new tokens | mean response length (transformers / litzoo) | transformers `generate` tok/CPU-s "
          "median [min-max] | litzoo sampler tok/CPU-s median [min-max] | speed-up (ratio of medians) |")
    print("|---|---|---|---|---|---|")
    for name, budget, rates, lengths in rows:
        t, z = rates["transformers"], rates["litzoo"]
        print(f"| {name} | {budget} | {statistics.mean(lengths['transformers']):.1f} / "
              f"{statistics.mean(lengths['litzoo']):.1f} | {statistics.median(t):.0f} [{min(t):.0f}-{max(t):.0f}] | "
              f"{statistics.median(z):.0f} [{min(z):.0f}-{max(z):.0f}] | {statistics.median(z) / statistics.median(t):.2f}x |")


if __name__ == "__main__":
    main()
