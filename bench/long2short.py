"""Long2short that pays (issue 19 Sec. 3): shorter responses at (almost) the long-CoT model's accuracy.

    OMP_NUM_THREADS=1 python bench/long2short.py --tasks addition --quick       # smoke run (a few CPU-minutes)
    OMP_NUM_THREADS=1 python bench/long2short.py --tasks addition
    OMP_NUM_THREADS=1 python bench/long2short.py --tasks addition --tables-only  # the table from the saved results
    OMP_NUM_THREADS=1 python bench/long2short.py --tasks addition_optcheck --seeds 0 --train-sft  # traces of two lengths

On traces of two lengths every long2short method meets the target on two of the three tasks (3 seeds; commands
and tables in BENCHMARKS.md): on ``addition_optcheck`` (addition whose clean SFT traces leave out their check 30 % of the time) and
``max_gap_optcheck`` (maximum gap whose traces double-check every gap, ``MaxGapTask(check_gaps=True)``, and leave out
all checks 30 % of the time) with ``--rs-n 64 --dpo-long-factor 1.3 --dpo-rpo-alpha 1 --dpo-steps 100 --dpo-lr 1e-4``:
shortest rejection sampling, merging, RPO and the length penalty reach -41.0 to -45.7 % (addition) and -41 % (maximum
gap; the length penalty at ``--lp-weight 0.25``, chosen on the same held-out problems after weights 1 and 0.5
overshot there; 0.25 meets it on addition too) without losing accuracy. KimiRL without a length reward and the TRL
peer meet it on maximum gap only. On ``combination_sum_optcheck`` (every search subtraction added back,
``CombinationSumTask(check_steps=True)``; ``--lp-weight 0.25``) shortest rejection sampling, merging and the length
penalty meet it (-41.6 to -45.0 %), RPO does not (-3.8 points; -1.2 with ``--dpo-rpo-alpha 4``). The run below is plain
addition, whose traces always check.

Measured (addition, RL seeds 0 and 1, one process per seed: 388 and 386 process CPU-s; long model = bench/kimi.py's
cached SFT start; 2-core shared machine)::

    export OMP_NUM_THREADS=1
    python bench/long2short.py --tasks addition --seeds 0 --rs-sampler transformers
    python bench/long2short.py --tasks addition --seeds 1 --rs-sampler transformers
    python bench/long2short.py --tasks addition --seeds 0 1 --rs-sampler transformers --tables-only

| method | seeds | accuracy | Δ points | mean length | Δ length | target met | slip rate | slip / check tokens | CPU-s | notes |
|---|---|---|---|---|---|---|---|---|---|---|
| long-CoT model | - | 0.890 | - | 64.2 | - | - | 0.09 | 5.5 / 16.6 | - |  |
| shortest rejection sampling (8 samples x 512 problems, T = 0.5; SFT 100 steps) | 2 | 0.960 ± 0.020 | 7.0 ± 2.0 | 58.8 ± 0.0 | -8.5 ± 0.0 % | no | 0.00 ± 0.00 | 0.0 ± 0.0 / 16.6 ± 0.0 | 14 ± 0 | examples 508 ± 0 |
| merge (1-w) long + w short, w = 0.3 | 2 | 0.938 ± 0.007 | 4.8 ± 0.7 | 59.1 ± 0.3 | -8.0 ± 0.4 % | no | 0.01 ± 0.01 | 0.3 ± 0.3 / 16.6 ± 0.0 | 14 ± 0 |  |
| merge (1-w) long + w short, w = 0.5 | 2 | 0.958 ± 0.013 | 6.8 ± 1.3 | 58.9 ± 0.1 | -8.3 ± 0.2 % | no | 0.00 ± 0.00 | 0.1 ± 0.1 / 16.6 ± 0.0 | 14 ± 0 |  |
| merge (1-w) long + w short, w = 0.7 | 2 | 0.955 ± 0.010 | 6.5 ± 1.0 | 58.8 ± 0.0 | -8.5 ± 0.0 % | no | 0.00 ± 0.00 | 0.0 ± 0.0 / 16.6 ± 0.0 | 14 ± 0 |  |
| DPO (same samples; 20 steps, lr = 1e-05, beta = 0.1) | 2 | 0.535 ± 0.295 | -35.5 ± 29.5 | 58.6 ± 0.1 | -8.8 ± 0.2 % | no | 0.00 ± 0.00 | 0.0 ± 0.0 / 16.5 ± 0.0 | 14 ± 0 | pairs 890 ± 5 |
| KimiRL, length penalty (weight 1) | 2 | 0.975 ± 0.000 | 8.5 ± 0.0 | 58.8 ± 0.0 | -8.5 ± 0.0 % | no | 0.00 ± 0.00 | 0.0 ± 0.0 / 16.6 ± 0.0 | 90 ± 0 | steps 441 ± 8, train_reward_last 0.855 ± 0.031 |
| KimiRL, DAPO overlong (L_cache = 32) | 2 | 0.980 ± 0.010 | 9.0 ± 1.0 | 58.8 ± 0.0 | -8.5 ± 0.0 % | no | 0.00 ± 0.00 | 0.0 ± 0.0 / 16.6 ± 0.0 | 90 ± 0 | steps 424 ± 14, train_reward_last 0.885 ± 0.007 |
| KimiRL, no length lever (control) | 2 | 0.975 ± 0.010 | 8.5 ± 1.0 | 58.8 ± 0.0 | -8.5 ± 0.0 % | no | 0.00 ± 0.00 | 0.0 ± 0.0 / 16.6 ± 0.0 | 90 ± 0 | steps 359 ± 20, train_reward_last 0.869 ± 0.037 |
| peer: TRL GRPO, DAPO overlong (L_cache = 32) | 2 | 0.968 ± 0.003 | 7.8 ± 0.3 | 58.8 ± 0.0 | -8.5 ± 0.0 % | no | 0.00 ± 0.00 | 0.0 ± 0.0 / 16.6 ± 0.0 | 90 ± 0 | steps 345 ± 0, train_reward_last 0.873 ± 0.021 |

What the data says (addition):

* **The target (-30 % at <= 1 point loss) is not reachable on these traces by any method that learns from the
  model's own samples.** The long model's greedy response (64.2 tokens) is a clean trace (58.8 tokens: two column
  lines, ``sum``, ``chk``, answer) plus, in 9 % of the problems, a caught slip (5.5 tokens on average). Dropping
  every slip gives -8.6 %; -30 % needs the ``chk`` line (16.6 tokens) gone too (-34.4 %), and the model never writes
  a correct response without one: 0 of 4096 samples at T = 0.5 (the ``srs`` samples, seed 0), and in a one-off probe
  (not in this script: 8 samples each of 256 random level-2 problems) 5 of 2048 at T = 1.0 and 7 of 2048 at T = 1.5,
  none of them shorter than 50 characters. Shortest rejection sampling, DPO and every length reward can only
  re-weight what is sampled, so the floor is the clean trace, and every method reaches it: all end at 58.6-59.1
  tokens (-8.0 to -8.8 %), with (almost) no slip left. The format is locked by the SFT data (every trace has its
  check).
* **The length comes from the slips; the accuracy gain does not** (+4.8 to +9.0 points): of the long model's 22
  held-out misses (counted in a one-off probe), 19 are responses without a slip (and 15 of its 18 slip responses are
  right), so the gain is the extra training on correct traces (SFT on the shortest correct samples, the RL reward),
  not the shortening. Every method but DPO "pays" in the sense of shorter and more accurate, but none by 30 %.
* **The length levers add nothing beyond plain RL here**: KimiRL without a length term (control) reaches the same
  58.8 tokens at 0.975 ± 0.010; the length penalty (0.975 ± 0.000) and DAPO's overlong punishment (0.980 ± 0.010; it
  only touches responses over 96 tokens, i.e. the slip traces) are within noise of it (200 problems: a binomial SE
  of ~1 point besides the seed spread), as is TRL GRPO with DAPO's shaping (0.968 ± 0.003). Within 90 CPU-s RL
  removes the slips in all four; a long model that had RL first (``--long-rl-cpu-s 15``: 58.5 tokens, no slips)
  leaves nothing to shorten (srs and the length penalty: 0.0 %; 40-problem quick run).
* **Shortest rejection sampling and merging are the cheapest** (14 CPU-s, a sixth of the RL budget) for the same
  length and 1-2 points less accuracy than RL (srs 0.960 ± 0.020). Merging: w = 0.5-0.7 of the short (srs) model
  keeps its gain (0.958, 0.955); w = 0.3 keeps a few slips (0.938). Sampling at T = 1.0 (sample accuracy 0.41; the
  shortest correct of 8 samples averaged 64.4 tokens, longer than greedy) with 20 SFT steps at lr 3e-4 dropped
  accuracy to 0.45; T = 0.5 with lr 1e-4 kept 0.90 (40-problem quick runs; two settings changed at once).
* **DPO hurts accuracy** at every setting tried (quick runs, 20 steps, 40 problems: lr 3e-4 -> 0.00 and a broken
  format, 1e-4 -> 0.00, 3e-5 -> 0.075, 1e-5 -> 0.40; only wrong answers rejected, ``--dpo-long-factor 1e9``: 1e-5 ->
  0.575, 1e-4 -> 0.00; full runs, lr 1e-5: 0.830 and 0.240). Likely mechanism: 96 % of the rejected responses (92 %
  with wrong answers rejected only; one-off probe on 256 problems) are slip traces, which after ``fix`` redo the
  column arithmetic *correctly*; DPO pushes those tokens down and the 2-layer model's arithmetic breaks everywhere
  (e.g. ``7+4+0=12`` after 20 steps at 1e-5). DPO with an SFT term on the chosen response (RPO) would be the next
  thing to try.

Protocol, per task (the task specs, held-out-disjoint data, cached SFT warm-up, greedy evaluation and the two RL
runners are bench/kimi.py's, imported, not copied):

1. **The long-CoT model** is bench/kimi.py's cached SFT start (``--cache-dir``; long-CoT traces: plan, work,
   check; 30 % of them with a slip that the check catches and fixes), optionally after ``--long-rl-cpu-s``
   CPU-seconds of plain KimiRL (exported under ``--out``).
2. **Each long2short method from that model** (litzoo.reasoning.long2short; ``--methods``), each seed
   (``--seeds``) separately:

   * ``srs`` -- shortest rejection sampling: ``--rs-n`` samples at ``--rs-temperature`` for each of the first
     ``--rs-problems`` problems of the RL pool (never the held-out ones), the shortest correct one kept,
     ``sft_train`` on them (``--sft2-steps``, ``--sft2-lr``);
   * ``merge_w<w>`` -- weight merging ``(1 - w) theta_long + w theta_short`` with the ``srs`` model as the
     short-CoT model, for each ``--merge-weights`` ``w`` (its CPU-s are the ``srs`` model's: merging is free);
   * ``dpo`` -- ``dpo_pairs`` (chosen: shortest correct; rejected: wrong and longer, or correct and
     ``--dpo-long-factor`` (1.5) x longer) from the same samples, ``dpo_train`` (``--dpo-steps``, ``--dpo-lr``,
     ``--dpo-beta``; ``--dpo-rpo-alpha``: plus that times the chosen responses' NLL per token, RPO);
   * ``lp_rl`` -- KimiRL with the k1.5 length reward, ``length_penalty_weight = --lp-weight`` (1),
     ``--budget-cpu-s``;
   * ``kimi_overlong`` -- KimiRL with DAPO's soft overlong punishment (``overlong_buffer`` =
     ``--overlong-cache``, default a quarter of the max new tokens), ``--budget-cpu-s``;
   * ``kimi`` -- plain KimiRL (no length lever), the control for the two above;
   * ``grpo_dapo`` -- the peer: TRL ``GRPOTrainer`` with DAPO's recipe (``loss_type="dapo"``,
     ``scale_rewards="none"``, ``trl.rewards.get_soft_overlong_punishment``), ``--budget-cpu-s``.

   The RL settings (k, prompts per step, temperature, lr, tau, pool) are bench/kimi.py's defaults.
3. **Evaluation**: greedy accuracy and mean response length (tokens incl. ``eos``) on the held-out problems,
   the difference to the long model (accuracy in points, length in %), and whether the issue's target is met:
   length -30 % or more at <= 1 point accuracy loss (on the seed means). CPU-s: process CPU time of the
   method's sampling and training (evaluation excluded). The greedy responses are also split into their
   parts: the share with a slip (a ``fix`` line) and the tokens of the slip (everything up to the last ``fix``
   line) and of the ``chk`` lines, which says where a shorter response can come from.

One JSON per (task, method, seed) under ``--out/results_...``: a rerun resumes, ``--tables-only`` prints.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/kimi.py (which puts the repo root on the path)


def _load() -> None:
    """The heavy imports (torch, Lightning, transformers via bench/kimi.py), on first use only: the pure pieces
    below (and their fast tests) need none of them."""
    global K, torch, dpo_pairs, dpo_train, merge_policies, sample_responses, sft_train, shortest_correct
    global build_policy, save_policy
    import kimi as K
    import torch

    from litzoo.reasoning.long2short import (
        dpo_pairs, dpo_train, merge_policies, sample_responses, sft_train, shortest_correct)
    from litzoo.reasoning.policy import build_policy, save_policy

METHODS = ("srs", "merge", "dpo", "lp_rl", "kimi_overlong", "kimi", "grpo_dapo")
DEFAULT_METHODS = METHODS


# --------------------------------------------------------------------------- pure pieces (tested)
def delta_points(accuracy: float, base: float) -> float:
    """Accuracy change in percentage points."""
    return 100.0 * (accuracy - base)


def delta_pct(length: float, base: float) -> float:
    """Length change in % of the long model's length."""
    return 100.0 * (length / base - 1.0)


def meets_target(d_points: float, d_pct: float, length_cut: float = 30.0, max_loss: float = 1.0) -> bool:
    """The issue's target: length down by ``length_cut`` % or more, accuracy down by at most ``max_loss`` points."""
    return d_pct <= -length_cut and d_points >= -max_loss


def trace_parts(text: str) -> dict[str, int]:
    """Where a response's characters (= tokens of the char tokenizer) go: ``slip`` -- what a caught slip adds (0
    without one), ``check`` -- the other ``chk`` lines. A slip redone after a ``fix`` line (addition, maximum gap):
    everything up to and including the last ``fix`` line, the checks after it. A slip fixed in place (combination
    sum's ``fix drop <combination>``): each ``fix drop`` line and the failed sum just before it (the wrong
    combination's); the search and the other check lines are as long as a clean trace's (but for the slipped line's
    own few characters: ``=0 ok``, and with ``check_steps`` its failed add-back)."""
    lines = text.split("\n")
    fixes = [i for i, line in enumerate(lines) if line.startswith("fix")]
    if fixes and all(lines[i].startswith("fix drop ") for i in fixes):
        extra = set(fixes) | {i - 1 for i in fixes if i > 0 and lines[i - 1].startswith("chk")}
        slip = sum(len(lines[i]) + 1 for i in extra)
        check = sum(len(line) + 1 for i, line in enumerate(lines) if line.startswith("chk") and i not in extra)
        return {"slip": slip, "check": check, "has_slip": 1}
    cut = fixes[-1] + 1 if fixes else 0
    slip = sum(len(line) + 1 for line in lines[:cut])
    check = sum(len(line) + 1 for line in lines[cut:] if line.startswith("chk"))
    return {"slip": slip, "check": check, "has_slip": int(bool(fixes))}


def rl_settings(args) -> dict[str, Any]:
    """bench/kimi.py's settings that change a result but not the results folder's name."""
    return K.rl_settings(args, "overlong_cache", "num_eval")


def is_fresh(path: Path, long_path: Path, settings: dict[str, Any]) -> bool:
    """A saved result counts only for the same long model and the same RL settings."""
    if not path.exists():
        return False
    saved = json.loads(path.read_text())
    return saved["long"] == str(long_path) and saved.get("settings") == settings


# --------------------------------------------------------------------------- evaluation
def evaluate(model, tokenizer, problems, max_new_tokens: int) -> dict[str, float]:
    """bench/kimi.py's greedy evaluation (the same call and metrics) plus the responses' parts."""
    metrics, texts = K.evaluate_with_texts(model, tokenizer, problems, max_new_tokens)
    parts = [trace_parts(t) for t in texts]
    return {**metrics,
            "slip_rate": statistics.fmean(p["has_slip"] for p in parts),
            "slip_tokens": statistics.fmean(p["slip"] for p in parts),
            "check_tokens": statistics.fmean(p["check"] for p in parts)}


def sample_stats(samples) -> dict[str, float]:
    """What the sampled responses offer: their mean length, the mean shortest correct one, slip rates."""
    lengths = [len(r) for s in samples for r in s.responses]
    best = [(s, shortest_correct(s)) for s in samples]
    best = [(s, j) for s, j in best if j is not None]
    return {"problems": len(samples), "with_correct": len(best) / max(len(samples), 1),
            "sample_length": statistics.fmean(lengths),
            "sample_accuracy": statistics.fmean(r for s in samples for r in s.rewards),
            "sample_slip_rate": statistics.fmean(trace_parts(t)["has_slip"] for s in samples for t in s.texts),
            # a response without any check line: the only way under the clean trace's length (see the report)
            "correct_without_check": statistics.fmean(
                r >= 1.0 and trace_parts(t)["check"] == 0 for s in samples for t, r in zip(s.texts, s.rewards)),
            "shortest_correct_length": statistics.fmean(len(s.responses[j]) for s, j in best) if best else float("nan"),
            "shortest_correct_slip_rate": statistics.fmean(trace_parts(s.texts[j])["has_slip"] for s, j in best)
            if best else float("nan")}


# --------------------------------------------------------------------------- the long model
def long_model(name: str, spec, args) -> tuple[Path, dict[str, Any]]:
    """bench/kimi.py's cached SFT start, or (``--long-rl-cpu-s``) that after plain KimiRL, exported under ``--out``."""
    sft, sft_info = K.sft_checkpoint(name, spec, args.sft_steps, args, train=args.train_sft)
    if not args.long_rl_cpu_s:
        return sft, {"sft": sft_info}
    out = Path(args.out) / f"long_{sft.name}_kimi{args.long_rl_cpu_s:.0f}"
    info_path = out / "long_info.json"
    if info_path.exists():
        return out, json.loads(info_path.read_text())
    rl_args = copy.copy(args)
    rl_args.budget_cpu_s, rl_args.kimi_overlong = args.long_rl_cpu_s, False
    with tempfile.TemporaryDirectory() as tmp:
        policy, tok, info = K.run_kimi(sft, spec, rl_args, Path(tmp), 0, K.BudgetSnapshots(args.long_rl_cpu_s, []))
    save_policy(policy, tok, out)
    info = {"sft": sft_info, "rl": info}
    info_path.write_text(json.dumps(info))
    return out, info


# --------------------------------------------------------------------------- the methods
class Runner:
    """One task and seed: runs a method (sharing the rejection samples and the ``srs`` model between methods)."""

    def __init__(self, name, spec, long_path: Path, pool, args, seed: int, results: Path) -> None:
        self.name, self.spec, self.long_path, self.pool, self.args, self.seed = name, spec, long_path, pool, args, seed
        self.results = results
        self._samples = None

    def load_long(self):
        return build_policy(pretrained_path=str(self.long_path))

    def samples(self):
        """``--rs-n`` samples of the long model for the first ``--rs-problems`` pool problems, and their CPU-s."""
        if self._samples is None:
            policy, tok = self.load_long()
            policy.eval()
            start = time.process_time()
            samples = sample_responses(policy, tok, self.pool[:self.args.rs_problems], self.args.rs_n,
                                       temperature=self.args.rs_temperature, max_new_tokens=self.spec.max_new_tokens,
                                       seed=1_000_003 * self.seed + 7, sampler=self.args.rs_sampler)
            self._samples = samples, time.process_time() - start
        return self._samples

    def short_path(self) -> Path:
        return self.results / f"{self.name}__srs__seed{self.seed}.pt"

    def run(self, method: str):
        """``(model, tokenizer, info)`` of ``method`` (``info["cpu_s"]``: its sampling + training CPU-s)."""
        args, seed = self.args, self.seed
        torch.manual_seed(seed)
        if method in ("srs", "dpo"):
            samples, sample_cpu = self.samples()
            policy, tok = self.load_long()
            start = time.process_time()
            if method == "srs":
                data = [(s.prompt_ids, s.responses[j]) for s in samples if (j := shortest_correct(s)) is not None]
                losses = sft_train(policy, tok, data, lr=args.sft2_lr, steps=args.sft2_steps, batch_size=16, seed=seed)
                torch.save(policy.state_dict(), self.short_path())  # the short-CoT model of the merges
                extra = {"examples": len(data)}
            else:
                pairs = dpo_pairs(samples, long_factor=args.dpo_long_factor)
                losses = dpo_train(policy, tok, pairs, beta=args.dpo_beta, lr=args.dpo_lr, steps=args.dpo_steps,
                                   batch_size=16, seed=seed, rpo_alpha=args.dpo_rpo_alpha)
                extra = {"pairs": len(pairs)}
            train_cpu = time.process_time() - start
            return policy, tok, {"cpu_s": sample_cpu + train_cpu, "sample_cpu_s": sample_cpu, "train_cpu_s": train_cpu,
                                 "loss_first": losses[0], "loss_last": statistics.fmean(losses[-10:]),
                                 "samples": sample_stats(samples), **extra}
        if method.startswith("merge_w"):
            w = float(method[len("merge_w"):])
            srs = json.loads((self.results / f"{self.name}__srs__seed{seed}.json").read_text())
            long_policy, tok = self.load_long()
            short_policy, _ = self.load_long()
            short_policy.load_state_dict(torch.load(self.short_path(), weights_only=True))
            start = time.process_time()
            merged = merge_policies([long_policy, short_policy], [1.0 - w, w])
            merge_cpu = time.process_time() - start
            return merged, tok, {"cpu_s": srs["info"]["cpu_s"] + merge_cpu, "merge_cpu_s": merge_cpu, "w_short": w}
        rl_args = copy.copy(args)
        rl_args.kimi_overlong = method == "kimi_overlong"
        snapshots = K.BudgetSnapshots(args.budget_cpu_s, [])
        with tempfile.TemporaryDirectory() as tmp:
            if method == "grpo_dapo":
                return K.run_trl(self.long_path, self.spec, self.pool, rl_args, Path(tmp), seed, snapshots, dapo=True)
            lp = {}
            if method == "lp_rl":
                lp = dict(length_penalty_weight=args.lp_weight, length_penalty_warmup_steps=args.lp_warmup)
            return K.run_kimi(self.long_path, self.spec, rl_args, Path(tmp), seed, snapshots, **lp)


def method_list(args) -> list[str]:
    out = []
    for m in args.methods:
        out += [f"merge_w{w:g}" for w in args.merge_weights] if m == "merge" else [m]
    if any(m.startswith("merge_w") for m in out) and "srs" not in out:
        out.insert(0, "srs")  # the merges' short-CoT model
    return sorted(out, key=lambda m: 0 if m == "srs" else 1)


def label(method: str, args, spec) -> str:
    if method.startswith("merge_w"):
        return f"merge (1-w) long + w short, w = {method[7:]}"
    return {"srs": f"shortest rejection sampling ({args.rs_n} samples x {args.rs_problems} problems, "
                   f"T = {args.rs_temperature}; SFT {args.sft2_steps} steps)",
            "dpo": f"{'RPO' if args.dpo_rpo_alpha else 'DPO'} (same samples; {args.dpo_steps} steps, lr = {args.dpo_lr:g}, "
                   f"beta = {args.dpo_beta}" + (f", alpha = {args.dpo_rpo_alpha:g}" if args.dpo_rpo_alpha else "")
                   + (", wrong answers rejected only" if args.dpo_long_factor >= 1e6 else "") + ")",
            "lp_rl": f"KimiRL, length penalty (weight {args.lp_weight:g}"
                     + (f", warm-up {args.lp_warmup} steps" if args.lp_warmup else "") + ")",
            "kimi_overlong": f"KimiRL, DAPO overlong (L_cache = {K.overlong_cache(spec, args)})",
            "kimi": "KimiRL, no length lever (control)",
            "grpo_dapo": f"peer: TRL GRPO, DAPO overlong (L_cache = {K.overlong_cache(spec, args)})"}[method]


# --------------------------------------------------------------------------- table
def report(args, results: Path) -> None:
    for name in args.tasks:
        spec = K.TASK_SPECS[name]
        long_file = results / f"{name}__long.json"
        if not long_file.exists():
            continue
        long = json.loads(long_file.read_text())
        base = long["eval"]
        held_out = K.datamodule(spec, "rl", args)  # counted, not assumed: a task entry may keep fewer (max_trace_tokens)
        held_out.prepare_problems()
        print(f"\n### {name}: long2short from the long-CoT model ({Path(long['long']).name}); "
              f"{len(held_out.val_problems[:args.eval_limit])} held-out problems, greedy; seeds {args.seeds}\n")
        print("| method | seeds | accuracy | Δ points | mean length | Δ length | target met | slip rate | "
              "slip / check tokens | CPU-s | notes |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        print(f"| long-CoT model | - | {base['accuracy']:.3f} | - | {base['length']:.1f} | - | - | "
              f"{base['slip_rate']:.2f} | {base['slip_tokens']:.1f} / {base['check_tokens']:.1f} | - | "
              f"{long.get('note', '')} |")
        for method in method_list(args):
            # only results of this long model and these RL settings (a seed run by another process may differ)
            rows = [json.loads(p.read_text()) for s in args.seeds
                    if is_fresh(p := results / f"{name}__{method}__seed{s}.json", Path(long["long"]), rl_settings(args))]
            if not rows:
                continue
            ev = lambda k: [r["eval"][k] for r in rows]  # noqa: E731
            dp = [delta_points(a, base["accuracy"]) for a in ev("accuracy")]
            dl = [delta_pct(x, base["length"]) for x in ev("length")]
            met = meets_target(statistics.fmean(dp), statistics.fmean(dl))
            note = ", ".join(f"{k} {K.fmt([r['info'][k] for r in rows], 0 if k != 'train_reward_last' else 3)}"
                             for k in ("steps", "examples", "pairs", "train_reward_last") if k in rows[0]["info"])
            print(f"| {label(method, args, spec)} | {len(rows)} | {K.fmt(ev('accuracy'))} | {K.fmt(dp, 1)} | "
                  f"{K.fmt(ev('length'), 1)} | {K.fmt(dl, 1)} % | {'yes' if met else 'no'} | "
                  f"{K.fmt(ev('slip_rate'), 2)} | "
                  f"{K.fmt(ev('slip_tokens'), 1)} / {K.fmt(ev('check_tokens'), 1)} | "
                  f"{K.fmt([r['info']['cpu_s'] for r in rows], 0)} | {note} |")
        # where can the length come from: the long model's own greedy responses and samples
        s = long.get("samples")
        clean = clean_lengths(spec, args)  # (drawn again: cheap, and the same for every results folder)
        no_slip = base["length"] - base["slip_tokens"]
        no_check = no_slip - base["check_tokens"]
        print(f"\nWhere length can come from ({name}, long model's greedy responses): {base['length']:.1f} tokens; "
              f"without the slips {no_slip:.1f} ({delta_pct(no_slip, base['length']):+.1f} %); without slips and "
              f"checks {no_check:.1f} ({delta_pct(no_check, base['length']):+.1f} %). Clean traces of the task: "
              f"{clean['clean_length']:.1f} tokens, without the check lines "
              f"{clean['clean_no_check_length']:.1f}; with a slip {clean['slip_length']:.1f}.")
        if s:
            print(f"Long model's samples (pool, T = {args.rs_temperature}, n = {args.rs_n}): mean length "
                  f"{s['sample_length']:.1f}, accuracy {s['sample_accuracy']:.3f}, "
                  f"slip rate {s['sample_slip_rate']:.2f}; "
                  f"shortest correct of n: {s['shortest_correct_length']:.1f} tokens "
                  f"({delta_pct(s['shortest_correct_length'], base['length']):+.1f} % vs greedy), slip rate "
                  f"{s['shortest_correct_slip_rate']:.2f}; correct samples without a check line: "
                  f"{s.get('correct_without_check', float('nan')):.4f} of all samples.")
    sys.stdout.flush()


def clean_lengths(spec, args, n: int = 500) -> dict[str, float]:
    """The task's own traces (response tokens incl. eos): clean (with the task's ``check_rate``), clean without its
    ``chk`` lines, with a slip; the same problems and trace draws every time."""
    from litzoo.reasoning import get_task

    task = get_task(spec.task, **spec.options)
    problems = [task.generate(spec.difficulty, 10_000 + i) for i in range(n)]
    if spec.max_trace_tokens is not None:  # the task entry's problems: those whose checked trace fits
        problems = list(filter(K.fits_within(spec.task, spec.options, spec.max_trace_tokens), problems))
    clean = [task.write_trace(p, rng=i) for i, p in enumerate(problems)]
    slip = [task.write_trace(p, rng=i, p_mistake=1.0) for i, p in enumerate(problems)]
    return {"clean_length": statistics.fmean(len(t) + 1 for t in clean),
            "clean_no_check_length": statistics.fmean(len(t) + 1 - trace_parts(t)["check"] for t in clean),
            "slip_length": statistics.fmean(len(t) + 1 for t in slip)}


def results_tag(args) -> str:
    """The results folder's name: it pins every setting that changes a result (a changed one never reuses a stale
    JSON); settings added later mark only values other than the earlier runs' (no
    ``rpo`` without RPO, ``_rslitzoo`` only for litzoo's sampler), so the earlier folders keep their names."""
    return (f"results_long{args.long_rl_cpu_s:.0f}_budget{args.budget_cpu_s:.0f}_eval{args.eval_limit or args.num_eval}"
            f"_rs{args.rs_n}x{args.rs_problems}T{args.rs_temperature:g}_sft{args.sft2_steps}lr{args.sft2_lr:g}"
            f"_dpo{args.dpo_steps}lr{args.dpo_lr:g}b{args.dpo_beta:g}"
            + (f"lf{args.dpo_long_factor:g}" if args.dpo_long_factor != 1.5 else "")
            + (f"rpo{args.dpo_rpo_alpha:g}" if args.dpo_rpo_alpha else "")
            + (f"_lp{args.lp_weight:g}" if args.lp_weight != 1.0 else "") + f"_lpw{args.lp_warmup}"
            + ("_rslitzoo" if args.rs_sampler == "litzoo" else "") + f"_seed{args.seed}")


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["addition"],
                        choices=("addition", "addition_optcheck", "max_gap", "max_gap_optcheck", "combination_sum",
                                 "combination_sum_optcheck"))
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget-cpu-s", type=float, default=90.0, help="RL CPU-s per RL method, task and seed")
    parser.add_argument("--long-rl-cpu-s", type=float, default=0.0,
                        help="the long model = the SFT start after this many CPU-s of plain KimiRL (0: the SFT start)")
    parser.add_argument("--rs-problems", type=int, default=512, help="RL-pool problems sampled for srs / DPO")
    parser.add_argument("--rs-n", type=int, default=8, help="samples per problem for srs / DPO")
    parser.add_argument("--rs-temperature", type=float, default=0.5, help="(1.0: noisy correct samples, see above)")
    parser.add_argument("--rs-sampler", default="litzoo", choices=("litzoo", "transformers"),
                        help="the samples' sampler (sample_responses); transformers: model.generate, the runs before "
                             "2026-12-07 23:00 (their results folders carry no sampler tag)")
    parser.add_argument("--sft2-steps", type=int, default=100, help="srs: SFT steps (batch 16) on the shortest samples")
    parser.add_argument("--sft2-lr", type=float, default=1e-4)
    parser.add_argument("--dpo-steps", type=int, default=20)
    parser.add_argument("--dpo-lr", type=float, default=1e-5)
    parser.add_argument("--dpo-beta", type=float, default=0.1)
    parser.add_argument("--dpo-rpo-alpha", type=float, default=0.0,
                        help="dpo_train rpo_alpha: plus this times the chosen responses' NLL per token (RPO; 0: DPO)")
    parser.add_argument("--dpo-long-factor", type=float, default=1.5,
                        help="dpo_pairs: a correct response this many times the chosen's length is rejected too "
                             "(1e9: only wrong answers are rejected)")
    parser.add_argument("--merge-weights", type=float, nargs="+", default=[0.3, 0.5, 0.7],
                        help="merge: weight w of the short-CoT (srs) model")
    parser.add_argument("--lp-weight", type=float, default=1.0, help="lp_rl: KimiRL length_penalty_weight")
    parser.add_argument("--lp-warmup", type=int, default=0, help="KimiRL length_penalty_warmup_steps")
    parser.add_argument("--out", default="runs/long2short")
    parser.add_argument("--quick", action="store_true", help="smoke run: 15 CPU-s RL, 40 eval problems, 64 sampled "
                                                             "problems, 20 SFT / DPO steps")
    parser.add_argument("--tables-only", action="store_true")
    parser.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N held-out problems only")
    # bench/kimi.py's settings (the SFT start's folder name and the RL runners read them)
    parser.add_argument("--cache-dir", default="runs/bench_kimi", help="bench/kimi.py's SFT cache (read)")
    parser.add_argument("--sft-steps", type=int, default=None, help="default: bench/kimi.py's per task")
    parser.add_argument("--train-sft", action="store_true",
                        help="train and cache the SFT start if --cache-dir has none (default: stop with an error)")
    for flag, default in [("--sft-batch-size", 64), ("--sft-num-train", 20000), ("--num-train", 4000),
                          ("--num-eval", 200), ("--seed", 0), ("--k", 8), ("--prompts-per-step", 8)]:
        parser.add_argument(flag, type=int, default=default)
    for flag, default in [("--sft-lr", 3e-3), ("--p-mistake", 0.3), ("--temperature", 0.5), ("--lr", 5e-5),
                          ("--tau", 0.1)]:
        parser.add_argument(flag, type=float, default=default)
    parser.add_argument("--group-by-length", type=int, default=None)
    parser.add_argument("--overlong-cache", type=int, default=None)
    args = parser.parse_args(argv)
    for flag, value in [("--dpo-rpo-alpha", args.dpo_rpo_alpha), ("--lp-weight", args.lp_weight)]:
        if not value >= 0:  # before the sampling and RL that would come first
            parser.error(f"{flag} {value} must be >= 0")
    _load()
    args.kimi_sampler, args.kimi_sampling, args.kimi_overlong = "litzoo", "uniform", False
    if args.quick:
        # (--num-eval stays: it picks the held-out set and with it the pool and the cached SFT folder's checksum)
        args.budget_cpu_s, args.eval_limit, args.rs_problems = 15.0, 40, 64
        args.sft2_steps, args.dpo_steps = 20, 20
    results = Path(args.out) / results_tag(args)
    if args.tables_only:
        report(args, results)
        return
    K.quiet_run()
    results.mkdir(parents=True, exist_ok=True)
    total = time.process_time()
    for name in args.tasks:
        spec = K.TASK_SPECS[name]
        task_args = copy.copy(args)
        task_args.sft_steps = args.sft_steps or K.SFT_STEPS[name]
        long_path, long_info = long_model(name, spec, task_args)
        data = K.datamodule(spec, "rl", task_args, batch_size=args.prompts_per_step)
        data.setup("fit")
        held_out = data.val_problems[:args.eval_limit]
        long_file = results / f"{name}__long.json"
        settings = rl_settings(args)
        if not is_fresh(long_file, long_path, settings):
            policy, tok = build_policy(pretrained_path=str(long_path))
            long = {"long": str(long_path), "info": long_info, "eval": evaluate(policy, tok, held_out,
                                                                                spec.max_new_tokens),
                    "settings": settings}
            long_file.write_text(json.dumps(long))
        long = json.loads(long_file.read_text())
        print(f"[{name}] long model {long_path.name}: {long['eval']}", flush=True)
        for seed in args.seeds:
            runner = Runner(name, spec, long_path, data.train_problems, task_args, seed, results)
            for method in method_list(args):
                path = results / f"{name}__{method}__seed{seed}.json"
                if is_fresh(path, long_path, settings):
                    continue
                t0 = time.time()
                model, tok, info = runner.run(method)
                result = evaluate(model, tok, held_out, spec.max_new_tokens)
                path.write_text(json.dumps({"task": name, "method": method, "seed": seed, "long": str(long_path),
                                            "settings": settings, "info": info, "eval": result}))
                if "samples" in info and "samples" not in long:  # the long model's samples, for the report
                    long["samples"] = info["samples"]
                    long_file.write_text(json.dumps(long))
                print(f"[{name}] {method} seed {seed}: {info} -> {result} ({time.time() - t0:.0f} s wall)", flush=True)
    print(f"process CPU-s: {time.process_time() - total:.0f}")
    report(args, results)


if __name__ == "__main__":
    main()
