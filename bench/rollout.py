"""Rollout throughput: transformers ``generate`` vs litzoo's sampler on KimiRL's rollout shapes.

    OMP_NUM_THREADS=1 python bench/rollout.py                       # 3 tasks, 5 alternating repeats
    OMP_NUM_THREADS=1 python bench/rollout.py --tasks addition --repeats 3 --untrained
    OMP_NUM_THREADS=1 python bench/rollout.py --compile            # + litzoo's sampler on a torch.compile'd forward

The policy per task is bench/kimi.py's SFT warm-up (``--sft-steps``, cached in ``--cache-dir`` and
shared with bench/kimi.py), so response lengths look like RL's (most responses end with ``eos``
well before the budget; ``--untrained`` uses a fresh TINY_QWEN2 instead, whose responses run to the
budget: the worst case for early removal). One rollout = ``--prompts`` held-out prompts x ``k``
samples at temperature T with the task's ``max_new_tokens`` (bench/kimi.py's settings), drawn by
``litzoo.reasoning.generation.generate(sampler=...)``: ``"transformers"`` (``model.generate``) and
``"litzoo"`` (``sample``: prompt-shared prefill, early removal, the hand-written decoding step with a
preallocated KV cache); ``--compile`` adds ``sample`` with the model's forward per token, eager and
``torch.compile``'d. The two alternate, each repeat on fresh
prompts and seed; throughput = response tokens (up to and including ``eos``) per CPU-second of this
process (the machine is shared: wall time measures the neighbours). Prints a markdown table with
the median and the min-max spread over the repeats.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kimi import DEFAULT_TASKS, TASK_SPECS, datamodule, sft_checkpoint  # noqa: E402  (bench/kimi.py: same tasks and warm-ups)

from litzoo.reasoning.generation import generate, sample  # noqa: E402
from litzoo.reasoning.policy import build_policy, encode_prompt  # noqa: E402


def run(policy, tok, prompts, **kwargs):
    """``generate(sampler=...)``, or litzoo's ``sample`` with its options."""
    return generate(policy, tok, prompts, **kwargs) if "sampler" in kwargs else sample(policy, tok, prompts, **kwargs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), choices=list(DEFAULT_TASKS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8, help="prompts per rollout (KimiRL's batch)")
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--sft-steps", type=int, default=300, help="SFT warm-up steps of the policy (bench/kimi.py's)")
    parser.add_argument("--untrained", action="store_true", help="a fresh TINY_QWEN2: every response runs to the budget")
    parser.add_argument("--cache-dir", default="runs/bench_kimi")
    parser.add_argument("--compile", action="store_true",
                        help="also litzoo's sampler on a copy of the policy whose forward is torch.compile(dynamic=True) "
                             "(its compile CPU time is reported apart, not in the rate)")
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
            # Any cached warm-up of that many steps will do (throughput only needs realistic responses, not the
            # exact pool); else bench/kimi.py trains one.
            cached = sorted(Path(args.cache_dir).glob(f"sft_{name}_*_steps{args.sft_steps}_*/bench_sft.json"))
            path = cached[0].parent if cached else sft_checkpoint(name, spec, args.sft_steps, kimi_args)[0]
            model, tok = build_policy(pretrained_path=str(path))
        data = datamodule(spec, "rl", kimi_args, batch_size=args.prompts)
        data.setup("fit")
        prompts = [encode_prompt(tok, p.prompt) for p in data.val_problems]
        # name -> (policy, keyword arguments of sample / generate)
        variants = {"transformers": (model, {"sampler": "transformers"}), "litzoo": (model, {"sampler": "litzoo"})}
        if args.compile:  # the model's forward per token (not the static decoder), compiled
            compiled = copy.deepcopy(model)
            compiled.forward = torch.compile(compiled.forward, dynamic=True)
            variants["litzoo, model forward per token"] = (model, {"static_decoder": False})
            variants["litzoo, torch.compile'd model forward per token"] = (compiled, {"static_decoder": False})
        rates: dict[str, list[float]] = {v: [] for v in variants}
        lengths: dict[str, list[float]] = {v: [] for v in variants}
        for variant, (policy, kwargs) in variants.items():  # warm-up (and the compilation)
            start = time.process_time()
            run(policy, tok, prompts[:args.prompts], num_samples=args.k, max_new_tokens=spec.max_new_tokens,
                temperature=args.temperature, seed=0, **kwargs)
            if policy is not model:
                print(f"[{name}] {variant}: first call (compiling) {time.process_time() - start:.1f} CPU-s", flush=True)
        for r in range(args.repeats):
            batch = prompts[r * args.prompts:(r + 1) * args.prompts]
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for variant in order:
                policy, kwargs = variants[variant]
                rollout = run(policy, tok, batch, num_samples=args.k, max_new_tokens=spec.max_new_tokens,
                              temperature=args.temperature, seed=1000 + r, **kwargs)
                rates[variant].append(rollout.num_tokens / rollout.cpu_seconds)
                lengths[variant].append(rollout.lengths.float().mean().item())
        rows.append((name, spec.max_new_tokens, rates, lengths))
        print(f"[{name}] " + ", ".join(f"{s}: {statistics.median(v):.0f}" for s, v in rates.items()), flush=True)
    print("\n| task | max new tokens | sampler | mean response length | tokens per CPU-s, median [min-max] | "
          "speed-up over `generate` (ratio of medians) |")
    print("|---|---|---|---|---|---|")
    for name, budget, rates, lengths in rows:
        base = statistics.median(rates["transformers"])
        for variant, values in rates.items():
            label = "transformers `generate`" if variant == "transformers" else variant
            print(f"| {name} | {budget} | {label} | {statistics.mean(lengths[variant]):.1f} | "
                  f"{statistics.median(values):.0f} [{min(values):.0f}-{max(values):.0f}] | "
                  f"{statistics.median(values) / base:.2f}x |")

if __name__ == "__main__":
    main()
