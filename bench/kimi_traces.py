"""Are bench/kimi.py's right answers on maximum gap worked out, or lucky? Its saved runs read back and checked.

    OMP_NUM_THREADS=1 python bench/kimi_traces.py --task max_gap_long --seeds 0 1 2 3 4 \
        --results runs/bench_kimi_long_lr2e-5/results_budget480_eval200_seed0_pass8of8_curve50_harder

The verifier scores the answer after the last ``#`` only. A maximum-gap trace first copies the inputs (the ``pad``
line), and the policy then works on that copy: a right answer from a copy that misses some inputs is luck (the
largest gap of the copied subset happens to be the largest gap of all of them). For the SFT start and every saved
run (``load_weights``: the run's final weights, bench/kimi.py; their re-scored answers must equal the run's saved
per-problem results), per held-out level and input count: greedy accuracy, the share of responses whose ``pad``
line copies every input (as a multiset, in any order), the accuracy among those, and how many inputs the ``pad``
line holds on average. The held-out problems are bench/kimi.py's (the same ``--seed`` / ``--num-eval``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kimi  # noqa: E402  (bench/kimi.py: its task specs, held-out problems, evaluation and saved runs)

from litzoo.reasoning.base import Problem  # noqa: E402
from litzoo.reasoning.policy import build_policy  # noqa: E402
from litzoo.reasoning.rewards import score  # noqa: E402


def pad_values(text: str) -> list[int] | None:
    """The numbers of the response's ``pad`` line (None: no ``pad`` line, or a malformed one)."""
    pad = next((line for line in text.splitlines() if line.startswith("pad ")), None)
    try:
        return None if pad is None else [int(x) for x in pad.split()[1:]]
    except ValueError:
        return None


def copied_inputs(problem: Problem, text: str) -> int:
    """How many of the problem's inputs the response's ``pad`` line holds (a multiset intersection: a wrong or extra
    value adds nothing; no ``pad`` line or a malformed one: 0)."""
    return sum((Counter(pad_values(text) or ()) & Counter(problem.data["nums"])).values())


def copies_every_input(problem: Problem, text: str) -> bool:
    """Whether the response's ``pad`` line holds exactly the problem's inputs (zero-padded, any order)."""
    return Counter(pad_values(text) or ()) == Counter(problem.data["nums"])


def check(model, tokenizer, problems: list[Problem], max_new_tokens: int, want: str | None = None
          ) -> dict[int, tuple[float, float, float, float]]:
    """Per input count: (accuracy, share copying every input, accuracy among those (nan if none), mean inputs
    copied). ``want``: the run's saved per-problem results (``correct``), which the re-scored answers must equal."""
    _, texts = kimi.evaluate_with_texts(model, tokenizer, problems, max_new_tokens)
    right = [int(c) for c in score(problems, texts).tolist()]
    if want is not None and "".join(map(str, right)) != want:
        raise RuntimeError("the reloaded policy does not reproduce its run's saved per-problem results: weights or "
                           "problems differ from the run's")
    out = {}
    for n in sorted({len(p.data["nums"]) for p in problems}):
        idx = [i for i, p in enumerate(problems) if len(p.data["nums"]) == n]
        full = [i for i in idx if copies_every_input(problems[i], texts[i])]
        out[n] = (statistics.fmean(right[i] for i in idx), len(full) / len(idx),
                  statistics.fmean(right[i] for i in full) if full else float("nan"),
                  statistics.fmean(copied_inputs(problems[i], texts[i]) for i in idx))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True, help="bench/kimi.py's results folder of the runs")
    parser.add_argument("--task", default="max_gap_long", choices=[k for k, v in kimi.TASK_SPECS.items()
                                                                   if v.task == "max_gap"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--seed", type=int, default=0, help="bench/kimi.py's data seed (as in the folder's name)")
    parser.add_argument("--num-eval", type=int, default=200, help="held-out problems (as in the folder's name)")
    parser.add_argument("--num-train", type=int, default=4000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    levels = kimi.held_out_levels(kimi.TASK_SPECS[args.task], args)
    results = Path(args.results)
    runs = sorted(p for p in results.glob(f"{args.task}__*__rl*.pt") if int(p.stem.rsplit("rl", 1)[1]) in args.seeds)
    for json_path in sorted(results.glob(f"{args.task}__*__rl*.json")):
        if int(json_path.stem.rsplit("rl", 1)[1]) in args.seeds and not json_path.with_suffix(".pt").exists():
            parser.error(f"{json_path.name} has no saved weights ({json_path.with_suffix('.pt').name}): a run saved "
                         "before bench/kimi.py kept them, or one killed between its JSON and its weights")
    if not runs:
        parser.error(f"no saved runs {args.task}__*__rl{{{args.seeds}}}.pt in {results}")
    start = json.loads((results / f"{args.task}__sft.json").read_text())
    rows: dict[str, list[dict]] = {}
    policies = [("SFT start", build_policy(pretrained_path=start["sft"]), start["eval"])]
    policies += [(path, None, None) for path in runs]
    for label, loaded, ev in policies:
        if loaded is None:  # a saved run: its weights, and its JSON's per-problem results to check them against
            policy, tokenizer, saved = kimi.load_weights(label)
            if saved["task"] != args.task:
                parser.error(f"{label.name} is a run of {saved['task']}, not --task {args.task}")
            ev = json.loads(label.with_suffix(".json").read_text())["eval"]
            label = kimi.trainer_label(saved["trainer"])
        else:
            policy, tokenizer = loaded
        rows.setdefault(label, []).append({name: check(policy, tokenizer, problems, budget, ev.get(prefix + "correct"))
                                           for prefix, name, problems, budget in levels})
        print(f"{label}: done", file=sys.stderr, flush=True)
    print("\n| policy | seeds | level | inputs | greedy pass@1 | every input copied | pass@1 with every input copied "
          "(over the seeds with any) | inputs copied (mean) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, seeds in rows.items():
        for _, name, _, _ in levels:
            for n in seeds[0][name]:
                cells = [[s[name][n][j] for s in seeds] for j in range(4)]
                known = [[x for x in xs if not math.isnan(x)] for xs in cells]
                mean = [f"{statistics.fmean(xs):.3f}" if xs else "-" for xs in known[:3]]
                print(f"| {label} | {len(seeds) if label != 'SFT start' else '-'} | {name} | {n} | {mean[0]} | {mean[1]} | "
                      f"{mean[2]} | {statistics.fmean(cells[3]):.2f} |")


if __name__ == "__main__":
    main()
