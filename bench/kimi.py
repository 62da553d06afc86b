"""Kimi k1.5 RL benchmark: litzoo's ``KimiRL`` vs TRL's ``GRPOTrainer`` from the same long-CoT SFT start.

    OMP_NUM_THREADS=1 python bench/kimi.py                                # all three tasks, prints markdown tables
    OMP_NUM_THREADS=1 python bench/kimi.py --quick                        # smoke run (minutes)
    OMP_NUM_THREADS=1 python bench/kimi.py --quick --harder --tasks addition --seeds 0 1   # 2 seeds, harder level
    OMP_NUM_THREADS=1 python bench/kimi.py --tasks addition --budget-cpu-s 300 --sft-steps 400

The issue-19 protocol, one command per task (3 RL seeds from the one cached SFT start; KimiRL, TRL with its
defaults and TRL with DAPO's settings; the training level and the harder, never-trained one; each process
measures its own CPU time, so the three may run in parallel on a machine with free cores), then the merged
tables and the curves' PNG from the saved results::

    export OMP_NUM_THREADS=1
    python bench/kimi.py --tasks addition --sft-steps 350 --budget-cpu-s 120 --seeds 0 1 2 --harder
    python bench/kimi.py --tasks max_gap --sft-steps 4000 --budget-cpu-s 120 --seeds 0 1 2 --harder
    python bench/kimi.py --tasks combination_sum --sft-steps 6000 --budget-cpu-s 120 --seeds 0 1 2 --harder
    python bench/kimi.py --budget-cpu-s 120 --seeds 0 1 2 --harder --tables-only --tasks addition max_gap combination_sum \
        --curve docs/kimi_curves.png

RL on a level the SFT start finds hard (``--tasks max_gap_hard``: maximum gap's level-2 start, 0.43 greedy on
level 3, trained and evaluated on level 3, harder level 4; its held-out problems are checked disjoint from the
level-2 SFT pool too)::

    python bench/kimi.py --tasks max_gap_hard --sft-steps 4000 --budget-cpu-s 120 --seeds 0 1 2 --harder --lr 1e-5

``--tasks max_gap_long`` is the same RL with a harder level in reach: 9-10 integers of level 3's values (0-99), longer
inputs than any trained (``MaxGapTask(levels={4: (9, 10, 99)})``), where level 4's 3-digit values stay at 0 for every
policy.

Add ``--kimi-overlong`` (KimiRL with DAPO's overlong punishment), ``--kimi-sampling prioritized`` and/or
``--kimi-skip-uniform`` (its ``skip_uniform_groups``)
for KimiRL's own levers: a run with them is another KimiRL configuration, saved under its own name
(``kimi_overlong32_prioritized``...) beside plain KimiRL's results, so ``--trainers kimi --seeds 0 1 2
--kimi-overlong`` adds it to a finished protocol run without repeating TRL's, and ``--tables-only`` with
the same flags shows it (with TRL's runs) in the tables and the test. Results are one JSON per
(task, trainer configuration, RL seed) under ``--cache-dir/results_...``: an interrupted run resumes, a
finished one is not repeated, and ``--tables-only`` merges whatever ``--tasks/--trainers/--seeds`` name. Beside
each JSON, the run's final weights (``.pt``; ``load_weights`` gives the policy back), to score a level added later.

Per task (2-digit addition; maximum gap, LC 164, 3-6 integers in 0-99; combination sum, LC 39,
2-4 distinct candidates in 2-9, target 4-12):

1. **SFT warm-up, once per task, cached.** A tiny Qwen2 built from a config (litzoo's
   ``TINY_QWEN2``: 2 layers, width 64, ~80 k parameters, char-level tokenizer; 1024 positions for
   combination sum, whose longest traces are ~900 tokens) is trained by litzoo's ``CoTSFT`` on
   long-CoT traces (plan, work, check; 30 % of them contain a slip that the check catches and
   fixes) of a ``--sft-num-train`` problem pool (the RL pool is its first ``--num-train``
   problems) and exported to ``--cache-dir/sft_<task>_...``; the folder name pins the settings,
   the model config and the trace format (a checksum), and a later run with the same ones reuses
   it. AdamW, lr ``--sft-lr`` with 50 warm-up steps and cosine decay to 10 %, gradient clipping
   1.0, batches of 64, on the search tasks grouped by length (``group_by_length``: combination-sum
   traces range from 20 to 900 tokens; padded to the longest row, a step took 1.0 CPU-s, grouped
   0.37 CPU-s even with the ~25 % longer traces below; on addition's short warm-up grouping costs
   accuracy, so it is off there). Thousands of steps are
   needed on the search tasks (the accuracy only takes off as the learning rate decays), and the
   traces are written so that every step is local -- for maximum gap the inputs copied
   zero-padded before sorting and fixed-width lines with the running max, for combination sum the
   full path and the remainder restated on every search line. Maximum gap, same model: the
   earlier unpadded trace reached 0.25 after 2000 steps (a plain-loop run), fixed-width lines
   0.84 after 2000 and 0.80 after 5000 (sorting errors: 36 of the 40 misses), the added padded
   copy 0.965 after 4000. One warm-up per task rather than one mixed warm-up: the comparison is
   per task anyway, each task gets its own response budget, and an 80 k-parameter model spends its
   capacity on one trace format instead of three.
2. **RL from that folder, same CPU budget for every trainer and seed** (``--seeds``: the RL seed sets
   the torch seed, KimiRL's rollout seeds and its own stream of batches from the pool, TRL's ``seed`` and
   ``data_seed``; ``--seed`` is the data seed: held-out problems, pools, SFT). ``--trainers``: ``kimi``,
   litzoo's ``KimiRL`` in a Lightning ``Trainer``; ``grpo``, TRL's ``GRPOTrainer`` with its defaults
   (DAPO token-level loss, rewards scaled by the group's std, clipped ratio, ``beta = 0``); ``grpo_dapo``,
   TRL with DAPO's recipe as TRL spells it: ``loss_type="dapo"``, ``scale_rewards="none"`` and TRL's
   ``get_soft_overlong_punishment`` (DAPO eq. 13, ``L_cache = --overlong-cache``, default a quarter of
   the max new tokens) added to the verifier's reward (with one policy update per batch, as here, the
   ratio is 1 and DAPO's clip-higher changes nothing). All get the same start, the same reward
   (litzoo's verifier: 1 if the answer after the last ``#`` is right), the same ``k`` samples per
   prompt and prompts per step, temperature, max new tokens, learning rate, AdamW betas, weight decay,
   grad clipping and the same problem pool (uniform sampling; KimiRL: unless ``--kimi-sampling``). Training stops when the
   process has spent ``--budget-cpu-s`` CPU-seconds in the training loop (a Lightning ``Callback``
   / a transformers ``TrainerCallback`` checks ``time.process_time()`` after every optimizer step,
   so a run overshoots by at most one step; the table shows the CPU time actually used).
   Budgets are in **process CPU time**, not wall time: the machine is shared by several jobs, so wall
   time mostly measures the neighbours. Run with ``OMP_NUM_THREADS=1``.
3. **Evaluation**, after training (not in the budget), with litzoo's ``generate`` + verifier for the SFT
   start and every run: greedy pass@1 on the same 200 held-out problems, pass@k
   (``--pass-k``, the unbiased estimator ``1 - C(n-c, k) / C(n, k)`` from ``--pass-n`` samples per problem
   at the RL temperature, the same sampling seeds for every policy), mean greedy response length
   (tokens, incl. ``eos``); an accuracy-per-CPU-second curve: the policy's weights are copied in memory
   when the RL CPU time crosses each ``--curve-fractions`` of the budget and evaluated greedily on the
   first ``--curve-eval`` held-out problems after training (``--curve PATH``: a PNG of seed mean ± SE);
   and the rollout throughput during RL: response tokens (up to the first
   ``eos``) per CPU-second spent sampling (TRL: inside ``model.generate``; KimiRL: its sampler,
   ``--kimi-sampler``, default litzoo's own loop, see bench/rollout.py; ``transformers`` = the same
   ``model.generate`` as TRL). The held-out problems are disjoint from the SFT and RL pools **up to
   the task's symmetries** (``litzoo.reasoning.heldout.canonical_key``: candidate order for combination
   sum, input order for maximum gap; addition keeps operand order): their classes are left out of the
   pools (``HeldOutDisjointData``; ``check_disjoint`` verifies it on every run), since the 20000-problem
   SFT pool covers nearly every combination-sum class. ``--harder`` adds ``--num-eval`` problems of a
   harder, never-trained level per task (3-digit addition; maximum gap level 3, 5-8 integers;
   combination sum level 3, 3-5 candidates in 2-12, targets 6-16), whose classes the pools also leave out.

4. **Tables**: per task, each configuration's mean ± standard error (sd / sqrt(seeds)) of every metric
   on both levels, beside the SFT start; KimiRL against the best TRL configuration (by mean greedy pass@1
   on the training level): the difference, the difference in units of its standard error, and Welch's
   t-test (``scipy.stats.ttest_ind(equal_var=False)``) over seeds; for greedy pass@1 also the paired t-test over
   the held-out problems (each problem's result averaged over seeds, saved per problem as ``correct``); the
   curve's points; and, for the search tasks, greedy pass@1 per problem size (input / candidate count).

TRL sees plain prompts (no chat template): the prompt text as a string column (``"<bos>" + prompt``
for a tokenizer that does not add ``<bos>`` itself), which the char tokenizer encodes to exactly
litzoo's ``encode_prompt`` ids (checked at start); the tokenizer has a
pad token (``<pad>``). TRL's completions are decoded with special tokens skipped, as litzoo's are.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from litzoo.datamodules.reasoning import ReasoningDataModule
from litzoo.modules.cot_sft import CoTSFT
from litzoo.modules.kimi_rl import KimiRL
from litzoo.reasoning import Problem, get_task, partial_rollout
from litzoo.reasoning.generation import SAMPLERS, generate
from litzoo.reasoning.heldout import check_disjoint, draw_held_out, problem_keys, without_keys
from litzoo.reasoning.policy import TINY_QWEN2, build_policy, encode_prompt
from litzoo.reasoning.rewards import score


@dataclass(frozen=True)
class TaskSpec:
    task: str
    options: dict[str, Any]
    difficulty: int
    max_new_tokens: int  # RL and evaluation response budget (>= the clean traces' ~99.5th percentile)
    model: dict[str, Any]  # the policy's config (SFT builds it; KimiRL and TRL both load the SFT folder)
    harder: int  # the never-trained harder level of --harder (the same task; options: harder_options)
    harder_max_new_tokens: int  # its budget (>= its longest clean trace; combination sum: what fits the positions)
    sft_task: str | None = None  # RL from another task entry's SFT start (a level that start finds hard)
    harder_options: dict[str, Any] | None = None  # the harder level's task options, over ``options``
    sft_init: str | None = None  # its SFT continues from this task entry's cached SFT start, on its own traces
    sft_lr: float | None = None  # its SFT's peak learning rate (None: --sft-lr)
    max_trace_tokens: int | None = None  # only problems whose fully checked clean trace (+ eos) fits, in every set


# The tiny model for every task (the long-CoT traces are designed so that each step is a local
# lookup a 2-layer model can learn); combination sum needs longer position tables than the 512 of
# TINY_QWEN2: its longest level-2 trace is 912 tokens (99.5 % are under 640).
# Harder levels (--harder): 3-digit addition (clean traces <= 81 tokens), maximum gap level 3 (5-8 integers,
# <= 208), combination sum level 3 (3-5 candidates in 2-12, targets 6-16; 2.5 % of its clean traces are longer
# than the 960 tokens that fit the 1024 positions, so its held-out problems are drawn among those that fit).
TASK_SPECS = {
    "addition": TaskSpec("arithmetic", {"ops": "+"}, 2, 128, dict(TINY_QWEN2), 3, 128),
    "max_gap": TaskSpec("max_gap", {}, 2, 192, dict(TINY_QWEN2), 3, 256),
    "combination_sum": TaskSpec("combination_sum", {}, 2, 640, {**TINY_QWEN2, "max_position_embeddings": 1024}, 3, 960),
    # RL on a level the SFT start finds hard: maximum gap's level-2 start (0.43 greedy on level 3) trained and
    # evaluated on level 3 (5-8 integers, traces <= 208 tokens), harder level 4 (6-10 integers in 0-999, <= 325).
    "max_gap_hard": TaskSpec("max_gap", {}, 3, 256, dict(TINY_QWEN2), 4, 352, sft_task="max_gap"),
    # The same RL, harder level: longer inputs of the same values (9-10 integers in 0-99, traces <= 253 tokens; the
    # level-2 start answers 0.055 of them right greedily, from traces that copy only part of the inputs): k1.5's
    # length generalisation, where level 4's 3-digit values are out of reach for every policy (0 of 200).
    "max_gap_long": TaskSpec("max_gap", {}, 3, 256, dict(TINY_QWEN2), 4, 288, sft_task="max_gap",
                             harder_options={"levels": {4: (9, 10, 99)}}),
    # Long2short's task (bench/long2short.py): addition whose clean SFT traces leave out their check 30 % of the
    # time (ArithmeticTask check_rate), so the long model (which checks greedily) can learn to answer shorter.
    "addition_optcheck": TaskSpec("arithmetic", {"ops": "+", "check_rate": 0.7}, 2, 128, dict(TINY_QWEN2), 3, 128),
    # The same for maximum gap: every gap double-checked by adding it back (MaxGapTask check_gaps), and all checks
    # left out of 30 % of the clean traces: 183 tokens on average with the checks, 108 without (-41 %; clean traces
    # <= 242 tokens, level 3's <= 320; a slipped trace, up to 443, is cut at 256: the long model slips in none of its
    # greedy responses and 1 % of its samples). Its SFT continues maximum gap's (4000 steps from scratch on these
    # traces sorted badly: 0.26 greedy, nearly every miss in the sort line; the checks are ~40 % of the tokens).
    "max_gap_optcheck": TaskSpec("max_gap", {"check_rate": 0.7, "check_gaps": True}, 2, 256, dict(TINY_QWEN2), 3, 352,
                                 sft_init="max_gap", sft_lr=1e-3),
    # The same for combination sum: every search subtraction double-checked by adding it back (CombinationSumTask
    # check_steps), all checks left out of 30 % of the clean traces: 185 tokens with the checks, 91 without (-51 %;
    # level-2 draws that fit). The longest checked traces outgrow the 1024 positions (up to 1,519 tokens), so every
    # set keeps only problems whose checked trace fits 928 tokens (99.0 % of level-2 draws, 97.7 % of the distinct
    # problems in the SFT pool; a slipped trace then fits the positions with its prompt); the held-out sets are
    # combination sum's that fit (195 of 200). Its SFT continues combination sum's 6000-step start, keeping its positions.
    "combination_sum_optcheck": TaskSpec("combination_sum", {"check_rate": 0.7, "check_steps": True}, 2, 960,
                                         {**TINY_QWEN2, "max_position_embeddings": 1024}, 3, 960,
                                         sft_init="combination_sum", sft_lr=1e-3, max_trace_tokens=928),
}
DEFAULT_TASKS = ("addition", "max_gap", "combination_sum")
# Default SFT steps (batch 64) per task: addition as in the slow test of tests/modules/test_kimi_rl.py.
# An sft_task entry (max_gap_hard) takes its sft_task's.
SFT_STEPS = {"addition": 350, "max_gap": 4000, "combination_sum": 6000, "addition_optcheck": 350,
             "max_gap_optcheck": 1000, "combination_sum_optcheck": 1000}  # (the optcheck ones after their sft_init's)
# Length-grouped SFT batches pay on the long search traces (thousands of steps); on addition's 350 steps
# the length-homogeneous batches cost accuracy (0.105 grouped vs 0.885 shuffled, same seed and steps).
GROUP_BY_LENGTH = {"addition": 0, "max_gap": 50, "combination_sum": 50, "addition_optcheck": 0,
                   "max_gap_optcheck": 50, "combination_sum_optcheck": 50}


class HeldOutDisjointData(ReasoningDataModule):
    """The datamodule whose training pool leaves out every symmetry class (``canonical_key``: candidate order
    for combination sum, input order for maximum gap) of the held-out sets: its own ``val_problems`` (drawn
    first, as before) and ``reserved`` (the harder level's). The pool is the same seeded stream of distinct
    prompts with those classes removed, so the RL pool is still the first problems of the SFT pool. Holding
    classes out of the pool (rather than drawing held-out problems outside the pool) is needed because the
    20000-problem SFT pool covers nearly every class of combination sum level 2 (~1400 classes)."""

    reserved: frozenset = frozenset()
    fits: Any = None  # a problem -> bool filter on every set (TaskSpec.max_trace_tokens), or None
    rl_seed: int = 0  # the RL run's seed: its own stream of RL batches from the same pool (0: the data seed's)

    def draw_rl_batch(self):
        if self.tokenizer is None:
            self.setup("fit")  # the pools with the data seed, before it is swapped below
        data_seed = self.seed
        self.seed = data_seed + 1_000_003 * self.rl_seed  # the batch generator's seed string only
        try:
            return super().draw_rl_batch()
        finally:
            self.seed = data_seed

    def _draw(self, task, difficulty, n, split, exclude):
        fits = self.fits or (lambda p: True)  # noqa: E731
        if split != "train":  # the plain task's held-out problems, those that fit, never refilled: a task entry that
            # continues another's SFT start (sft_init) meets no problem that start trained on
            return [p for p in super()._draw(task, difficulty, n, split, exclude) if fits(p)]
        held = problem_keys(self.val_problems) | self.reserved
        drawn = without_keys(super()._draw(task, difficulty, n + n // 4 + 200, split, exclude), held)
        return [p for p in drawn if fits(p)][:n]

    def prepare_problems(self) -> None:
        super().prepare_problems()
        check_disjoint(self.val_problems, self.train_problems, "training pool")  # the promise, checked


def harder_label(spec: TaskSpec) -> str:
    """The harder level's name in the tables, its own definition when ``harder_options`` redefines it."""
    levels = (spec.harder_options or {}).get("levels", {})
    if spec.harder in levels:
        n_lo, n_hi, v_max = levels[spec.harder]
        return f"harder level {spec.harder} ({n_lo}-{n_hi} integers in 0-{v_max})"
    return f"harder level {spec.harder}"


def fits_within(task_name: str, options: dict[str, Any], limit: int):
    """``problem -> bool``: its clean trace with every check written, plus eos, has at most ``limit`` tokens
    (``check_rate`` 1: the longest clean trace, and no random draw, so a filter on it is deterministic)."""
    task = get_task(task_name, **{**options, "check_rate": 1.0})
    return lambda p: len(task.write_trace(p)) + 1 <= limit


def harder_problems(spec: TaskSpec, args) -> list[Problem]:
    """``--num-eval`` held-out problems of the task's harder level (seeded; independent of the pools, which
    leave out their classes), each with a clean trace that fits ``harder_max_new_tokens``; an ``sft_init`` entry's
    are its start's, those that fit (never others, which that start's pool may hold)."""
    options = {**spec.options, **(spec.harder_options or {})}
    fits = fits_within(spec.task, options, spec.harder_max_new_tokens)
    if spec.sft_init is not None:
        return [p for p in harder_problems(TASK_SPECS[spec.sft_init], args) if fits(p)]
    return draw_held_out(get_task(spec.task, **options), spec.harder, args.num_eval, zlib.crc32(f"harder/{spec.task}/{args.seed}".encode()),
                         exclude=set(), accept=fits)


def datamodule(spec: TaskSpec, mode: str, args, num_train: int | None = None, **kwargs) -> ReasoningDataModule:
    # The same seed and held-out size in both modes: the same 200 held-out problems (drawn before the
    # pool, so they do not depend on its size); the RL pool is the first problems of the SFT pool's level seed.
    data = HeldOutDisjointData(
        tasks=[spec.task], task_options={spec.task: spec.options} if spec.options else None,
        difficulties=[spec.difficulty], num_train=num_train or args.num_train, num_val=args.num_eval, mode=mode,
        trace="cot", seed=args.seed, **kwargs,
    )
    data.reserved = frozenset(problem_keys(harder_problems(spec, args)))
    if spec.max_trace_tokens is not None:
        data.fits = fits_within(spec.task, spec.options, spec.max_trace_tokens)
    return data


def rl_settings(args, *extra: str) -> dict[str, Any]:
    """The RL settings that change a result but not the results folder's name (saved with it and compared)."""
    return {k: getattr(args, k) for k in ("k", "prompts_per_step", "temperature", "lr", "tau", "num_train", *extra)}


def quiet_run() -> None:
    """One thread; no warnings, library log lines or progress bars in the benchmark's output."""
    import logging

    import transformers

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "transformers", "trl", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def quiet_trainer(max_steps: int, root: Path, callbacks=(), **kwargs) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0, callbacks=list(callbacks), default_root_dir=root, **kwargs)


# --------------------------------------------------------------------------- SFT warm-up (cached)
def sft_start(name: str, steps: int, args, rl_data: ReasoningDataModule, hard: list[Problem],
              train: bool = True) -> tuple[Path, dict[str, Any]]:
    """Task ``name``'s SFT start (:func:`sft_checkpoint`): its own, or that of its ``sft_task``, whose SFT pool
    (another level) is then also checked disjoint from ``name``'s held-out problems up to symmetries."""
    spec = TASK_SPECS[name]
    if spec.sft_task is None:
        return sft_checkpoint(name, spec, steps, args, train=train)
    return sft_checkpoint(spec.sft_task, TASK_SPECS[spec.sft_task], steps, args, train=train,
                          held_out=rl_data.val_problems + hard)


def sft_checkpoint(name: str, spec: TaskSpec, steps: int, args, train: bool = True,
                   held_out: list[Problem] = ()) -> tuple[Path, dict[str, Any]]:
    """The cached SFT start (trained and exported if missing; ``train=False``: an error instead); ``held_out``:
    more problems its pool must not hold up to symmetries (another task entry's, RL from this start)."""
    group = GROUP_BY_LENGTH[name] if args.group_by_length is None else args.group_by_length
    data = datamodule(spec, "sft", args, num_train=args.sft_num_train, p_mistake=args.p_mistake,
                      batch_size=args.sft_batch_size, group_by_length=group)
    # The folder name pins the model config and the trace format (a checksum of the model config and
    # the first traces), so a changed trace writer never reuses a stale warm-up.
    data.prepare_problems()  # checks the held-out set is disjoint from the pool up to symmetries; the harder one:
    hard = harder_problems(spec, args)
    check_disjoint(hard + list(held_out), data.train_problems, "SFT pool")
    traces = "".join(data.response_text(p, i) for i, p in enumerate(data.train_problems[:50]))
    check = zlib.crc32((json.dumps(spec.model, sort_keys=True) + traces).encode())
    init = None
    if spec.sft_init is not None:  # the start it continues from: its name and weights in this one's checksum, so
        # a start rebuilt under the same name (SFT builds are not bitwise reproducible) never reuses a stale one
        init, _ = sft_checkpoint(spec.sft_init, TASK_SPECS[spec.sft_init], SFT_STEPS[spec.sft_init], args, train=train)
        init_pool = datamodule(TASK_SPECS[spec.sft_init], "sft", args, num_train=args.sft_num_train)
        init_pool.prepare_problems()  # what the start trained on: disjoint from this entry's held-out problems too
        check_disjoint(data.val_problems + hard + list(held_out), init_pool.train_problems,
                       f"SFT pool of the start it continues ({spec.sft_init})")
        check = zlib.crc32((init / "model.safetensors").read_bytes(), zlib.crc32(init.name.encode(), check))
    lr = spec.sft_lr or args.sft_lr
    tag = "x".join(str(spec.model[k]) for k in ("num_hidden_layers", "hidden_size"))
    out = Path(args.cache_dir) / (f"sft_{name}_{tag}_steps{steps}_n{args.sft_num_train}_lr{lr}_g{group}"
                                  f"_pm{args.p_mistake}_seed{args.seed}_sym" + (f"_from-{spec.sft_init}" if init else "")
                                  + f"_{check:08x}")
    info_path = out / "bench_sft.json"
    if info_path.exists():
        return out, {**json.loads(info_path.read_text()), "cached": True}
    if not train:
        raise FileNotFoundError(f"no cached SFT start {out}; build it with bench/kimi.py --tasks {name} "
                                f"--sft-steps {steps} --cache-dir {args.cache_dir} (or pass --train-sft)")
    torch.manual_seed(args.seed)
    module = CoTSFT(model_config=dict(spec.model), pretrained_path=str(init) if init else None, lr=lr, warmup_steps=50,
                    eval_max_new_tokens=spec.max_new_tokens)
    start = time.process_time()
    quiet_trainer(steps, out / "lightning", gradient_clip_val=1.0).fit(module, data)
    info = {"steps": steps, "cpu_s": time.process_time() - start,
            "params": sum(p.numel() for p in module.policy.parameters()), "init": init.name if init else None}
    module.export(out)
    shutil.rmtree(out / "lightning", ignore_errors=True)
    info_path.write_text(json.dumps(info))
    return out, {**info, "cached": False}


# --------------------------------------------------------------------------- measurement helpers
@dataclass
class GenMeter:
    """CPU time and response tokens of every ``model.generate`` call (rollouts of either trainer)."""

    eos_id: int
    cpu_s: float = 0.0
    tokens: int = 0
    calls: int = 0

    def wrap(self, model) -> None:
        original = model.generate

        def timed_generate(*a, **kw):
            in_len = (kw.get("input_ids") if kw.get("input_ids") is not None else a[0]).shape[1]
            start = time.process_time()
            out = original(*a, **kw)
            self.cpu_s += time.process_time() - start
            seqs = out.sequences if hasattr(out, "sequences") else out
            new = seqs[:, in_len:]
            is_eos = (new == self.eos_id).long()
            self.tokens += int(((is_eos.cumsum(-1) - is_eos) == 0).sum())  # up to and including the first eos
            self.calls += 1
            return out

        model.generate = timed_generate  # instance attribute: shadows the class method for this model only

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.tokens / self.cpu_s if self.cpu_s > 0 else float("nan")


def evaluate_with_texts(model, tokenizer, problems, max_new_tokens: int) -> tuple[dict[str, float], list[str]]:
    """Greedy accuracy, mean length and truncated share on ``problems``, and the responses themselves."""
    model.eval()
    ids = [encode_prompt(tokenizer, p.prompt) for p in problems]
    rollout = generate(model, tokenizer, ids, greedy=True, max_new_tokens=max_new_tokens)
    return ({"accuracy": score(problems, rollout.texts).mean().item(),
             "length": rollout.lengths.float().mean().item(),
             "truncated": 1.0 - rollout.finished.float().mean().item()}, rollout.texts)


def evaluate(model, tokenizer, problems, max_new_tokens: int) -> dict[str, float]:
    return evaluate_with_texts(model, tokenizer, problems, max_new_tokens)[0]


def evaluate_per_problem(model, tokenizer, problems, max_new_tokens: int) -> dict[str, Any]:
    """:func:`evaluate`, plus ``correct``: each problem's greedy result as a string of ``0``/``1`` (in the held-out
    order, the same for every policy), for tests paired over problems."""
    result, texts = evaluate_with_texts(model, tokenizer, problems, max_new_tokens)
    return {**result, "correct": "".join(str(int(c)) for c in score(problems, texts).tolist()),
            "prompts_crc": prompts_crc(problems)}


def prompts_crc(problems) -> str:
    """A checksum of the problems' prompts in order, saved with their per-problem results: the tables pair those
    results with re-drawn problems (or another run's) only when it matches."""
    return f"{zlib.crc32(chr(10).join(p.prompt for p in problems).encode()):08x}"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021, "Evaluating Large Language
    Models Trained on Code", eq. 1): ``1 - C(n - c, k) / C(n, k)``."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 1 <= k={k} <= n={n} and 0 <= c={c} <= n.")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def sampled_pass_at_k(model, tokenizer, problems, max_new_tokens: int, n: int, k: int, temperature: float,
                      seed: int, chunk: int = 25) -> float:
    """Mean unbiased pass@k over ``problems``: ``n`` samples each at ``temperature`` (litzoo's sampler; the same
    seeds for every policy), in chunks of ``chunk`` problems to bound the KV cache."""
    model.eval()
    total = 0.0
    for start in range(0, len(problems), chunk):
        part = problems[start:start + chunk]
        rollout = generate(model, tokenizer, [encode_prompt(tokenizer, p.prompt) for p in part], num_samples=n,
                           temperature=temperature, max_new_tokens=max_new_tokens, seed=seed + start, sampler="litzoo")
        correct = score([p for p in part for _ in range(n)], rollout.texts).view(len(part), n).sum(-1)
        total += sum(pass_at_k(n, int(c), k) for c in correct)
    return total / len(problems)


# --------------------------------------------------------------------------- statistics over seeds
def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error ``sd / sqrt(n)`` (sample sd; ``nan`` for one value)."""
    if not values:
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan"))


def compare(a: list[float], b: list[float]) -> dict[str, float]:
    """``a`` vs ``b`` (per-seed values): difference of means, that difference in units of its standard error
    ``sqrt(se_a^2 + se_b^2)``, and Welch's unequal-variance t-test (``t``, two-sided ``p``)."""
    from scipy.stats import ttest_ind

    (ma, sa), (mb, sb) = mean_se(a), mean_se(b)
    se = math.sqrt(sa**2 + sb**2)
    z = (ma - mb) / se if se > 0 else float("nan")
    if len(a) > 1 and len(b) > 1 and se > 0:
        test = ttest_ind(a, b, equal_var=False)
        t, p = float(test.statistic), float(test.pvalue)
    else:
        t = p = float("nan")
    return {"diff": ma - mb, "diff_se_units": z, "t": t, "p": p}


def scores(result: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's metrics for the progress lines (the per-problem ``correct`` strings and checksums left out)."""
    return {k: v for k, v in result.items() if not k.endswith(("correct", "prompts_crc"))}


def save_weights(path: Path, state: dict[str, torch.Tensor], saved: dict[str, Any]) -> None:
    """A run's final weights (~0.3 MB) with what they belong to (SFT folder, settings, task, trainer, seed), written
    whole or not at all (a temporary file renamed), after the run's JSON. :func:`load_weights` reads them back."""
    tmp = path.with_suffix(".pt.tmp")
    torch.save({**saved, "state_dict": state}, tmp)
    tmp.replace(path)


def load_weights(path: Path):
    """The policy of a saved run: the SFT folder's model with the run's final weights, and its tokenizer (to score a
    level added later without retraining)."""
    saved = torch.load(path, weights_only=True)
    policy, tokenizer = build_policy(pretrained_path=saved["sft"])
    policy.load_state_dict(saved["state_dict"])
    return policy, tokenizer, saved


def per_problem_means(evals: list[dict[str, Any]], prefix: str = "") -> tuple[list[float] | None, str | None]:
    """Each problem's greedy result (``correct``) averaged over ``evals`` (one per seed), and the problems' checksum
    (``prompts_crc``; None for runs saved before it); ``(None, None)`` if a run has no per-problem results or the
    runs' problems differ (lengths or checksums)."""
    marks = [e.get(prefix + "correct", "") for e in evals]
    crcs = {e[prefix + "prompts_crc"] for e in evals if prefix + "prompts_crc" in e}
    if not marks or not marks[0] or len({len(m) for m in marks}) != 1 or len(crcs) > 1:
        return None, None
    return [statistics.fmean(int(m[i]) for m in marks) for i in range(len(marks[0]))], next(iter(crcs), None)


def held_out_levels(spec: TaskSpec, args, harder: bool = True) -> list[tuple[str, str, list[Problem], int]]:
    """The task's held-out levels as evaluated: (result key prefix, name, problems, max new tokens), re-drawn from the
    seeds (``--seed``, ``--num-eval``, ``--num-train``) -- the training level's, then the harder one's."""
    held = datamodule(spec, "rl", args, batch_size=8)
    held.setup("fit")
    levels = [("", f"level {spec.difficulty}", held.val_problems, spec.max_new_tokens)]
    return levels + ([("harder_", harder_label(spec), harder_problems(spec, args), spec.harder_max_new_tokens)]
                     if harder else [])


def compare_per_problem(a: list[dict[str, Any]], b: list[dict[str, Any]], prefix: str = "") -> dict[str, float]:
    """``a`` vs ``b`` (per-seed evaluations) paired over problems: each problem's greedy result (``correct``) averaged
    over a configuration's seeds, then the paired t-test over problems (``scipy.stats.ttest_rel``). It asks whether
    the difference holds across problems *given these seeds* (Welch's test over seeds asks it given these
    problems); n/a under 2 seeds a side, for results of other problems (``prompts_crc``, where saved) or without
    per-problem results (runs saved before them), and when every problem differs by the same amount."""
    from scipy.stats import ttest_rel

    nan = {"t": float("nan"), "p": float("nan")}
    (xa, crc_a), (xb, crc_b) = per_problem_means(a, prefix), per_problem_means(b, prefix)
    if min(len(a), len(b)) < 2 or xa is None or xb is None or len(xa) != len(xb):
        return nan
    if None not in (crc_a, crc_b) and crc_a != crc_b:  # results of other problems
        return nan
    if len({u - v for u, v in zip(xa, xb)}) < 2:  # no spread: t is +-inf or undefined
        return nan
    test = ttest_rel(xa, xb)
    return {"t": float(test.statistic), "p": float(test.pvalue)}


class BudgetSnapshots:
    """In-memory copies of the policy's weights the first time the CPU time spent crosses each fraction of the
    budget (a step can cross several: each gets that step's weights and CPU time), evaluated after training."""

    def __init__(self, budget_s: float, fractions) -> None:
        self.budget_s, self.fractions = budget_s, sorted(fractions)
        self.taken: list[tuple[float, float, dict[str, torch.Tensor]]] = []  # (fraction, CPU-s used, state_dict)

    def due(self, used: float) -> list[float]:
        done = {f for f, _, _ in self.taken}
        return [f for f in self.fractions if f not in done and used >= f * self.budget_s]

    def take(self, used: float, model) -> None:
        due = self.due(used)
        if due:
            state = {name: t.detach().clone() for name, t in model.state_dict().items()}
            self.taken += [(f, used, state) for f in due]


# --------------------------------------------------------------------------- litzoo KimiRL
class CPUBudget(L.Callback):
    """Stop fitting once this process has spent ``budget_s`` CPU-seconds since training started."""

    def __init__(self, budget_s: float, snapshots: BudgetSnapshots) -> None:
        self.budget_s, self.start, self.used, self.steps, self.rewards = budget_s, 0.0, 0.0, 0, []
        self.snapshots = snapshots

    def on_train_start(self, trainer, pl_module):
        self.start = time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps = trainer.global_step
        self.used = time.process_time() - self.start
        if "train/reward" in trainer.callback_metrics and pl_module.last_groups:
            self.rewards.append(float(trainer.callback_metrics["train/reward"]))
        self.snapshots.take(self.used, pl_module.policy)
        if self.used >= self.budget_s:
            trainer.should_stop = True


def overlong_cache(spec: TaskSpec, args) -> int:
    return args.overlong_cache or spec.max_new_tokens // 4


def run_kimi(sft: Path, spec: TaskSpec, args, root: Path, seed: int, snapshots: BudgetSnapshots, **module_kwargs):
    """KimiRL from ``sft`` for ``--budget-cpu-s``; ``module_kwargs`` go to ``KimiRL`` (bench/long2short.py: the length
    penalty)."""
    torch.manual_seed(seed)
    module = KimiRL(pretrained_path=str(sft), k=args.k, temperature=args.temperature,
                    max_new_tokens=spec.max_new_tokens, tau=args.tau, iteration_steps=kimi_option(args, "iteration_steps"),
                    segment_tokens=kimi_option(args, "segment_tokens"), lr=args.lr,
                    skip_uniform_groups=kimi_option(args, "kimi_skip_uniform"),
                    adam_betas=(0.9, 0.99), weight_decay=0.0, max_grad_norm=1.0, eval_k=0, seed=seed,
                    sampler=args.kimi_sampler, overlong_buffer=overlong_cache(spec, args) if args.kimi_overlong else None,
                    **module_kwargs)
    meter = GenMeter(module.tokenizer.eos_token_id)
    budget = CPUBudget(args.budget_cpu_s, snapshots)
    data = datamodule(spec, "rl", args, batch_size=args.prompts_per_step, prioritized=args.kimi_sampling == "prioritized")
    data.rl_seed = seed
    # KimiRL's rollouts go through partial_rollout.generate (either sampler): count its Rollouts' tokens and the
    # CPU time each spent sampling (for sampler="transformers", the time inside model.generate).
    original = partial_rollout.generate

    def timed_generate(*a, **kw):
        rollout = original(*a, **kw)
        meter.cpu_s, meter.tokens, meter.calls = meter.cpu_s + rollout.cpu_seconds, meter.tokens + rollout.num_tokens, meter.calls + 1
        return rollout

    partial_rollout.generate = timed_generate
    try:
        quiet_trainer(10**6, root, [budget]).fit(module, data)
    finally:
        partial_rollout.generate = original
    return module.policy, module.tokenizer, {
        "steps": budget.steps, "cpu_s": budget.used, "gen_tok_per_cpu_s": meter.tokens_per_cpu_s,
        "gen_share": meter.cpu_s / budget.used if budget.used else float("nan"),
        "train_reward_last": statistics.mean(budget.rewards[-10:]) if budget.rewards else float("nan"),
    }


# --------------------------------------------------------------------------- TRL GRPOTrainer
def run_trl(sft: Path, spec: TaskSpec, problems, args, root: Path, seed: int, snapshots: BudgetSnapshots,
            dapo: bool = False):
    """TRL's GRPOTrainer; ``dapo``: DAPO's recipe as TRL spells it -- token-level loss (``loss_type="dapo"``,
    TRL's default too), no std scaling of the rewards (``scale_rewards="none"``) and the soft overlong punishment
    (``trl.rewards.get_soft_overlong_punishment``, eq. 13, ``L_cache = --overlong-cache``) added to the reward."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from trl.rewards import get_soft_overlong_punishment

    tokenizer = AutoTokenizer.from_pretrained(sft, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(sft, local_files_only=True)
    task = get_task(spec.task, **spec.options)
    # Plain string prompts (no chat template). litzoo's exported tokenizer adds "<bos>" itself; one that does
    # not gets it in the string ("<bos>" is a special token of the char tokenizer). Either way the prompt
    # encodes to exactly litzoo's encode_prompt ids -- checked, not assumed.
    adds_bos = tokenizer("1")["input_ids"][:1] == [tokenizer.bos_token_id]
    bos = "" if adds_bos else tokenizer.bos_token
    for p in problems[:50]:
        got = tokenizer(bos + p.prompt)["input_ids"]
        if got != encode_prompt(tokenizer, p.prompt):
            raise RuntimeError(f"TRL prompt ids {got} differ from litzoo's {encode_prompt(tokenizer, p.prompt)}")
    dataset = Dataset.from_dict({"prompt": [bos + p.prompt for p in problems], "problem_index": list(range(len(problems)))})

    def verifier(prompts, completions, problem_index, **kwargs) -> list[float]:
        return [task.verify(problems[i], c) for i, c in zip(problem_index, completions)]

    class TRLCPUBudget(TrainerCallback):
        def __init__(self, budget_s: float) -> None:
            self.budget_s, self.start, self.used, self.steps, self.rewards = budget_s, 0.0, 0.0, 0, []

        def on_train_begin(self, targs, state, control, **kw):
            self.start = time.process_time()

        def on_step_end(self, targs, state, control, model=None, **kw):
            self.steps, self.used = state.global_step, time.process_time() - self.start
            snapshots.take(self.used, model)
            if self.used >= self.budget_s:
                control.should_training_stop = True

        def on_log(self, targs, state, control, logs=None, **kw):
            if logs and "rewards/verifier/mean" in logs:  # the verifier's reward (without the overlong term)
                self.rewards.append(float(logs["rewards/verifier/mean"]))

    variant = dict(loss_type="dapo", scale_rewards="none") if dapo else {}
    config = GRPOConfig(
        output_dir=str(root / "trl"), use_cpu=True, bf16=False, fp16=False, report_to=[], disable_tqdm=True,
        save_strategy="no", logging_steps=1, seed=seed, data_seed=seed, max_steps=10**6,
        per_device_train_batch_size=args.prompts_per_step * args.k, gradient_accumulation_steps=1,
        num_generations=args.k, max_completion_length=spec.max_new_tokens, temperature=args.temperature,
        top_k=0, top_p=1.0, beta=0.0, num_iterations=1, learning_rate=args.lr, lr_scheduler_type="constant",
        warmup_steps=0, adam_beta1=0.9, adam_beta2=0.99, weight_decay=0.0, max_grad_norm=1.0,
        gradient_checkpointing=False, dataloader_num_workers=0, remove_unused_columns=False, **variant,
    )
    rewards = [verifier] + ([get_soft_overlong_punishment(spec.max_new_tokens, overlong_cache(spec, args))] if dapo else [])
    meter = GenMeter(tokenizer.eos_token_id)
    meter.wrap(model)
    budget = TRLCPUBudget(args.budget_cpu_s)
    torch.manual_seed(seed)
    trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[budget])
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout (disable_tqdm=True)
    trainer.remove_callback(ProgressCallback)
    trainer.train()
    return trainer.model, tokenizer, {
        "steps": budget.steps, "cpu_s": budget.used, "gen_tok_per_cpu_s": meter.tokens_per_cpu_s,
        "gen_share": meter.cpu_s / budget.used if budget.used else float("nan"),
        "train_reward_last": statistics.mean(budget.rewards[-10:]) if budget.rewards else float("nan"),
    }


TRAINERS = ("kimi", "grpo", "grpo_dapo")


# KimiRL options with a flag here (bench/long2short.py's arguments lack them: the defaults apply there)
KIMI_DEFAULTS = {"iteration_steps": 8, "segment_tokens": None, "kimi_skip_uniform": False}


def kimi_option(args, name: str):
    return getattr(args, name, KIMI_DEFAULTS[name])


def trainer_key(trainer: str, spec: TaskSpec, args) -> str:
    """The results file name of a trainer configuration (its options that change the run, spelled out)."""
    if trainer == "kimi":
        ref, seg = kimi_option(args, "iteration_steps"), kimi_option(args, "segment_tokens")
        return "kimi" + (f"_overlong{overlong_cache(spec, args)}" if args.kimi_overlong else "") + (
            f"_{args.kimi_sampling}" if args.kimi_sampling != "uniform" else "") + (
            f"_{args.kimi_sampler}" if args.kimi_sampler != "litzoo" else "") + (
            f"_ref{ref}" if ref != KIMI_DEFAULTS["iteration_steps"] else "") + (
            f"_seg{seg}" if seg is not None else "") + (
            "_skipuniform" if kimi_option(args, "kimi_skip_uniform") else "")
    return trainer + (f"_overlong{overlong_cache(spec, args)}" if trainer == "grpo_dapo" else "")


def trainer_label(key: str) -> str:
    if key.startswith("kimi"):
        return "litzoo KimiRL" + (f" ({key[5:].replace('_', ', ')})" if key != "kimi" else "")
    if key.startswith("grpo_dapo"):
        return f"TRL GRPO, DAPO (no std scaling, overlong L_cache={key.rsplit('overlong', 1)[1]})"
    return "TRL GRPOTrainer (defaults)"


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), choices=list(TASK_SPECS),
                        help="max_gap_hard: RL and evaluation on maximum gap level 3 from the level-2 SFT start "
                             "(harder level 4); max_gap_long: the same, harder level 9-10 integers in 0-99")
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS), choices=TRAINERS,
                        help="kimi: litzoo KimiRL; grpo: TRL GRPOTrainer with its defaults; grpo_dapo: TRL with "
                             "loss_type='dapo', scale_rewards='none' and the soft overlong punishment")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="RL seeds (each trainer runs once per seed, all from the same cached SFT start)")
    parser.add_argument("--budget-cpu-s", type=float, default=300.0, help="RL CPU-seconds per trainer, task and seed")
    parser.add_argument("--sft-steps", type=int, nargs="+", default=None,
                        help=f"SFT steps: one value for every task or one per --tasks entry (default {SFT_STEPS})")
    parser.add_argument("--sft-batch-size", type=int, default=64)
    parser.add_argument("--sft-lr", type=float, default=3e-3, help="CoTSFT peak learning rate (warm-up, cosine decay)")
    parser.add_argument("--group-by-length", type=int, default=None,
                        help=f"SFT batches per length-sorted window (ReasoningDataModule group_by_length; 0 = off; "
                             f"default per task {GROUP_BY_LENGTH})")
    parser.add_argument("--p-mistake", type=float, default=0.3, help="share of SFT traces with a caught-and-fixed slip")
    parser.add_argument("--k", type=int, default=8, help="samples per prompt (TRL num_generations)")
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--tau", type=float, default=0.1, help="KimiRL squared-log-ratio weight")
    parser.add_argument("--num-train", type=int, default=4000, help="RL problem pool (both trainers)")
    parser.add_argument("--sft-num-train", type=int, default=20000,
                        help="SFT problem pool (thousands of SFT steps would repeat a 4000-problem pool ~80 times)")
    parser.add_argument("--num-eval", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="data seed: held-out problems, pools and the SFT warm-up")
    parser.add_argument("--cache-dir", default="runs/bench_kimi")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 60 SFT steps (unless --sft-steps), 20 CPU-s RL, 40 eval problems, pass@4, "
                             "20-problem curves")
    parser.add_argument("--kimi-sampler", default="litzoo", choices=SAMPLERS,
                        help="KimiRL's rollout sampler (transformers: model.generate, as TRL uses)")
    parser.add_argument("--kimi-overlong", action="store_true",
                        help="KimiRL with DAPO's soft overlong punishment (overlong_buffer = --overlong-cache)")
    parser.add_argument("--kimi-sampling", default="uniform", choices=("uniform", "prioritized"),
                        help="KimiRL's problem sampling (prioritized: by 1 - success rate, k1.5 Sec. 2.3.4; TRL "
                             "samples uniformly)")
    parser.add_argument("--iteration-steps", type=int, default=KIMI_DEFAULTS["iteration_steps"],
                        help="KimiRL's pi_ref reset period in RL steps (k1.5: pi_ref is the policy at the start of "
                             "each iteration); a very large value: never reset")
    parser.add_argument("--kimi-skip-uniform", action="store_true",
                        help="KimiRL's skip_uniform_groups: groups whose k rewards are all equal (no policy gradient) "
                             "leave the forward/backward pass")
    parser.add_argument("--segment-tokens", type=int, default=None,
                        help="KimiRL's partial rollouts: at most this many new tokens per response per step (k1.5 "
                             "Sec. 2.6.2; unfinished responses continue in later steps); default off")
    parser.add_argument("--overlong-cache", type=int, default=None,
                        help="DAPO's L_cache in tokens (grpo_dapo, --kimi-overlong); default: a quarter of the "
                             "task's max new tokens")
    parser.add_argument("--pass-k", type=int, default=8, help="pass@k at the RL temperature (0: off)")
    parser.add_argument("--pass-n", type=int, default=None, help="samples per problem for pass@k (default: k)")
    parser.add_argument("--curve-eval", type=int, default=50,
                        help="held-out problems for the accuracy-per-CPU-second curve (greedy, first N)")
    parser.add_argument("--curve-fractions", type=float, nargs="+", default=[0.25, 0.5, 0.75, 1.0],
                        help="budget fractions at which the policy is snapshotted for the curve")
    parser.add_argument("--curve", default=None, help="write the curves as a PNG here (e.g. docs/kimi_curves.png)")
    parser.add_argument("--harder", action="store_true",
                        help="also evaluate on --num-eval problems of a harder, never-trained level per task (3-digit "
                             "addition, maximum gap level 3, combination sum level 3; max_gap_hard: level 4; "
                             "max_gap_long: 9-10 integers in 0-99), reported as extra columns")
    parser.add_argument("--tables-only", action="store_true",
                        help="print the tables of --tasks / --trainers / --seeds from the results saved in "
                             "--cache-dir (e.g. after one process per task) without training")
    args = parser.parse_args(argv)
    if args.quick:
        args.sft_steps = args.sft_steps or [60]
        args.budget_cpu_s, args.num_eval, args.num_train, args.sft_num_train = 20.0, 40, 400, 400
        args.pass_k, args.curve_eval = min(args.pass_k, 4), min(args.curve_eval, 20)
    args.pass_n = args.pass_n or args.pass_k
    if args.pass_k and args.pass_n < args.pass_k:
        parser.error(f"--pass-n {args.pass_n} must be >= --pass-k {args.pass_k}")
    for name in args.tasks:
        if args.overlong_cache is not None and not 1 <= args.overlong_cache <= TASK_SPECS[name].max_new_tokens:
            parser.error(f"--overlong-cache {args.overlong_cache} must be in [1, {TASK_SPECS[name].max_new_tokens}] "
                         f"({name}'s max new tokens)")
    if args.sft_steps is None:
        sft_steps = {name: SFT_STEPS[TASK_SPECS[name].sft_task or name] for name in args.tasks}
    elif len(args.sft_steps) in (1, len(args.tasks)):
        sft_steps = dict(zip(args.tasks, args.sft_steps * (len(args.tasks) // len(args.sft_steps))))
    else:
        parser.error(f"--sft-steps takes 1 or {len(args.tasks)} values (one per task), got {len(args.sft_steps)}")
    # One JSON per (task, trainer, seed) and one per task's SFT start: an interrupted run resumes where it stopped.
    results = Path(args.cache_dir) / (f"results_budget{args.budget_cpu_s:.0f}_eval{args.num_eval}_seed{args.seed}"
                                      f"_pass{args.pass_k}of{args.pass_n}_curve{args.curve_eval}"
                                      + ("_harder" if args.harder else ""))
    settings = rl_settings(args, "curve_fractions")
    if args.tables_only:
        report(args, results, settings)
        return
    quiet_run()
    import transformers
    import trl

    print(f"torch {torch.__version__}, lightning {L.__version__}, transformers {transformers.__version__}, "
          f"trl {trl.__version__}; threads {torch.get_num_threads()}; k={args.k}, {args.prompts_per_step} prompts/step, "
          f"T={args.temperature}, lr={args.lr}, tau={args.tau}, RL budget {args.budget_cpu_s:.0f} CPU-s per trainer, task "
          f"and seed, RL seeds {args.seeds}, SFT {sft_steps} steps x {args.sft_batch_size}, p_mistake {args.p_mistake}, "
          f"{args.num_eval} held-out problems", flush=True)
    results.mkdir(parents=True, exist_ok=True)
    for name in args.tasks:
        spec = TASK_SPECS[name]
        t0 = time.time()
        data = datamodule(spec, "rl", args, batch_size=args.prompts_per_step)
        data.setup("fit")
        hard = harder_problems(spec, args) if args.harder else []
        check_disjoint(hard, data.train_problems, "RL pool")
        sft, sft_info = sft_start(name, sft_steps[name], args, data, hard)
        curve_problems = data.val_problems[:args.curve_eval]

        def evaluate_all(model, tok) -> dict[str, float]:
            levels = [("", data.val_problems, spec.max_new_tokens)] + ([("harder_", hard, spec.harder_max_new_tokens)] if hard else [])
            result = {}
            for prefix, problems, max_new in levels:
                result.update({prefix + k: v for k, v in evaluate_per_problem(model, tok, problems, max_new).items()})
                if args.pass_k:
                    result[f"{prefix}pass@k"] = sampled_pass_at_k(model, tok, problems, max_new, args.pass_n, args.pass_k,
                                                                  args.temperature, seed=args.seed * 1_000_003 + 17)
            return result

        def load(path: Path):  # a saved result of this SFT start and these settings, else None
            if not path.exists():
                return None
            saved = json.loads(path.read_text())
            return saved if saved.get("sft") == str(sft) and saved.get("settings") == settings else None

        sft_path = results / f"{name}__sft.json"
        start = load(sft_path)
        if start is None:
            policy, tokenizer = build_policy(pretrained_path=str(sft))
            start = {"sft": str(sft), "settings": settings, "sft_info": sft_info, "eval": evaluate_all(policy, tokenizer),
                     "curve0": evaluate(policy, tokenizer, curve_problems, spec.max_new_tokens)["accuracy"]}
            sft_path.write_text(json.dumps(start))
        print(f"[{name}] SFT {sft_info} -> {scores(start['eval'])}  ({time.time() - t0:.0f} s wall)", flush=True)
        for trainer in args.trainers:
            key = trainer_key(trainer, spec, args)
            for seed in args.seeds:
                path = results / f"{name}__{key}__rl{seed}.json"
                if load(path) is not None:
                    print(f"[{name}] {key} seed {seed}: saved in {path}", flush=True)
                    continue
                t1 = time.time()
                snapshots = BudgetSnapshots(args.budget_cpu_s, args.curve_fractions)
                with tempfile.TemporaryDirectory() as tmp:
                    if trainer == "kimi":
                        model, tok, info = run_kimi(sft, spec, args, Path(tmp), seed, snapshots)
                    else:
                        model, tok, info = run_trl(sft, spec, data.train_problems, args, Path(tmp), seed, snapshots,
                                                   dapo=trainer == "grpo_dapo")
                final = {k: v.detach().clone() for k, v in model.state_dict().items()}
                result = evaluate_all(model, tok)
                curve = []  # after training (not in the budget): the snapshots' greedy accuracy on the curve subset
                for fraction, used, state in snapshots.taken:
                    model.load_state_dict(state)
                    curve.append((fraction, used, evaluate(model, tok, curve_problems, spec.max_new_tokens)["accuracy"]))
                saved = {"sft": str(sft), "settings": settings, "task": name, "trainer": key, "seed": seed}
                path.write_text(json.dumps({**saved, "info": info, "eval": result, "curve": curve}))
                save_weights(path.with_suffix(".pt"), final, saved)
                print(f"[{name}] {key} seed {seed}: {info} -> {scores(result)}, curve {[(round(u), a) for _, u, a in curve]}  "
                      f"({time.time() - t1:.0f} s wall)", flush=True)
                del model
    report(args, results, settings)


# --------------------------------------------------------------------------- tables and curves
def collect(args, results: Path, settings) -> dict[str, Any]:
    """The saved results of --tasks x --trainers x --seeds (settings as now): per task its SFT start and
    ``runs[key] = [per-seed results]``."""
    out = {}
    for name in args.tasks:
        spec = TASK_SPECS[name]
        sft_path = results / f"{name}__sft.json"
        if not sft_path.exists():
            continue
        start = json.loads(sft_path.read_text())
        runs = {}
        for trainer in args.trainers:
            key = trainer_key(trainer, spec, args)
            rows = [json.loads((results / f"{name}__{key}__rl{s}.json").read_text()) for s in args.seeds
                    if (results / f"{name}__{key}__rl{s}.json").exists()]
            rows = [r for r in rows if r["sft"] == start["sft"] and r["settings"] == settings]
            if rows:
                runs[key] = rows
        out[name] = {"start": start, "runs": runs}
    return out


def fmt(values: list[float], digits: int = 3) -> str:
    mean, se = mean_se(values)
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {se:.{digits}f}" if not math.isnan(se) else "")


def report(args, results: Path, settings) -> None:
    data = collect(args, results, settings)
    print("\n### SFT warm-ups (litzoo CoTSFT, long-CoT traces)\n")
    print("| task | max new tokens | SFT steps x batch | SFT CPU-s | params | greedy pass@1 | mean length | truncated |")
    print("|---|---|---|---|---|---|---|---|")
    for name, d in data.items():
        info, ev = d["start"]["sft_info"], d["start"]["eval"]
        print(f"| {name} | {TASK_SPECS[name].max_new_tokens} | {info['steps']} x {args.sft_batch_size} | "
              f"{info['cpu_s']:.0f}{' (cached)' if info.get('cached') else ''} | {info['params'] / 1e3:.0f} k | "
              f"{ev['accuracy']:.3f} | {ev['length']:.1f} | {ev['truncated']:.3f} |")
    harder = args.harder
    pk = f"pass@{args.pass_k} (n = {args.pass_n}, T = {args.temperature})" if args.pass_k else None
    print(f"\n### RL from the SFT start, {args.budget_cpu_s:.0f} CPU-s per run (k = {args.k}, {args.prompts_per_step} "
          f"prompts/step, T = {args.temperature}, lr = {args.lr}); mean ± standard error over seeds {args.seeds}\n")
    cols = ["greedy pass@1"] + ([pk] if pk else []) + ["mean length (tokens)"]
    head = cols + ([f"harder level: {c}" for c in cols] if harder else [])
    print("| task | policy | seeds | " + " | ".join(head) + " | RL steps | RL CPU-s | sample reward (last 10 steps) | "
          "rollout tokens per CPU-s |")
    print("|---|---|---|" + "---|" * (len(head) + 4))
    for name, d in data.items():
        def cells(evs):
            out = []
            for prefix in [""] + (["harder_"] if harder else []):
                out += [fmt([e[prefix + "accuracy"] for e in evs])]
                out += [fmt([e[prefix + "pass@k"] for e in evs])] if pk else []
                out += [fmt([e[prefix + "length"] for e in evs], 1)]
            return out

        print(f"| {name} | SFT start | - | " + " | ".join(cells([d["start"]["eval"]])) + " | - | - | - | - |")
        for key, rows in d["runs"].items():
            infos = [r["info"] for r in rows]
            print(f"| {name} | {trainer_label(key)} | {len(rows)} | " + " | ".join(cells([r["eval"] for r in rows]))
                  + f" | {fmt([i['steps'] for i in infos], 0)} | {fmt([i['cpu_s'] for i in infos], 0)} | "
                  f"{fmt([i['train_reward_last'] for i in infos])} | {fmt([i['gen_tok_per_cpu_s'] for i in infos], 0)} |")
    # KimiRL vs the best TRL configuration (by mean greedy pass@1 on the training level) per task and metric
    print("\n### KimiRL vs the best TRL configuration (difference of seed means; Welch's t-test)\n")
    print("| task | metric | KimiRL | best TRL | difference | difference / SE | Welch t | p | paired over problems: t | p |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, d in data.items():
        kimi = next((rows for key, rows in d["runs"].items() if key.startswith("kimi")), None)
        trl_runs = {key: rows for key, rows in d["runs"].items() if not key.startswith("kimi")}
        if kimi is None or not trl_runs:
            continue
        best = max(trl_runs, key=lambda key: mean_se([r["eval"]["accuracy"] for r in trl_runs[key]])[0])
        metrics = [("accuracy", "greedy pass@1")] + ([("pass@k", f"pass@{args.pass_k}")] if pk else [])
        metrics += [("length", "mean length")]
        for prefix, level in [("", f"level {TASK_SPECS[name].difficulty}")] + (
                [("harder_", harder_label(TASK_SPECS[name]))] if harder else []):
            for metric, label in metrics:
                a = [r["eval"][prefix + metric] for r in kimi]
                b = [r["eval"][prefix + metric] for r in trl_runs[best]]
                c = compare(a, b)
                digits = 1 if metric == "length" else 3
                na = lambda x, spec: "n/a" if math.isnan(x) else format(x, spec)  # noqa: E731 (one seed / no spread)
                paired = {"t": float("nan"), "p": float("nan")}
                if metric == "accuracy":
                    paired = compare_per_problem([r["eval"] for r in kimi], [r["eval"] for r in trl_runs[best]], prefix)
                print(f"| {name} | {label}, {level} | {fmt(a, digits)} | {fmt(b, digits)} ({best}) | "
                      f"{c['diff']:+.{digits}f} | {na(c['diff_se_units'], '+.1f')} | {na(c['t'], '.2f')} | "
                      f"{na(c['p'], '.3f')} | {na(paired['t'], '.2f')} | {na(paired['p'], '.3f')} |")
    # the accuracy-per-CPU-second curves as numbers (the PNG with --curve)
    print(f"\n### Greedy pass@1 on the first {args.curve_eval} held-out problems vs RL CPU-s (snapshots at "
          f"{args.curve_fractions} of the budget)\n")
    print("| task | policy | " + " | ".join(f"{f:g} x budget" for f in args.curve_fractions) + " |")
    print("|---|---|" + "---|" * len(args.curve_fractions))
    for name, d in data.items():
        print(f"| {name} | SFT start (0 CPU-s) | " + " | ".join([f"{d['start']['curve0']:.3f}"] * len(args.curve_fractions)) + " |")
        for key, rows in d["runs"].items():
            cells = []
            for i in range(len(args.curve_fractions)):
                points = [r["curve"][i] for r in rows if len(r["curve"]) > i]
                cells.append(f"{fmt([p[2] for p in points])} @ {statistics.fmean(p[1] for p in points):.0f} s" if points else "-")
            print(f"| {name} | {trainer_label(key)} | " + " | ".join(cells) + " |")
    sys.stdout.flush()
    if args.curve:
        plot_curves(args, data, Path(args.curve))
    report_by_size(args, data)


def problem_size(problem: Problem) -> int | None:
    """What makes a problem of a search task long: its input count (maximum gap) or candidate count (combination
    sum); ``None`` for addition, whose problems of a level are all of one size."""
    return len(problem.data.get("nums", problem.data.get("candidates", ()))) or None


def report_by_size(args, data: dict[str, Any]) -> None:
    """Greedy pass@1 per problem size on each level, from the per-problem results (``correct``) and the same seeded
    held-out problems: where a trainer's gains are (e.g. maximum gap: which input counts)."""
    print("\n### Greedy pass@1 by problem size (inputs / candidates; problems of that size), mean over seeds\n")
    print("| task | level | policy | by size |")
    print("|---|---|---|---|")
    for name, d in data.items():
        spec = TASK_SPECS[name]
        if spec.task == "arithmetic":  # one size per level
            continue
        for prefix, level, problems, _ in held_out_levels(spec, args, harder=args.harder):
            sizes = [problem_size(p) for p in problems]
            rows = [("SFT start", [d["start"]["eval"]])] + [(trainer_label(k), [r["eval"] for r in v])
                                                             for k, v in d["runs"].items()]
            for label, evals in rows:
                means, crc = per_problem_means(evals, prefix)
                if means is None or len(means) != len(problems) or crc not in (None, prompts_crc(problems)):
                    print(f"| {name} | {level} | {label} | n/a (runs without per-problem results of these problems) |")
                    continue
                cells = []
                for size in sorted(set(sizes)):
                    idx = [i for i, z in enumerate(sizes) if z == size]
                    cells.append(f"{size}: {statistics.fmean(means[i] for i in idx):.3f} ({len(idx)})")
                print(f"| {name} | {level} | {label} | " + ", ".join(cells) + " |")


def plot_curves(args, data: dict[str, Any], path: Path) -> None:
    """Greedy accuracy (curve subset) vs RL CPU-seconds per task: seed mean, ± SE band, the SFT start at 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(data), figsize=(4.5 * len(data), 3.6), squeeze=False)
    for ax, (name, d) in zip(axes[0], data.items()):
        for key, rows in d["runs"].items():
            xs, ys, ses = [0.0], [d["start"]["curve0"]], [0.0]
            for i in range(len(args.curve_fractions)):
                points = [r["curve"][i] for r in rows if len(r["curve"]) > i]
                if points:
                    mean, se = mean_se([p[2] for p in points])
                    xs.append(statistics.fmean(p[1] for p in points))
                    ys.append(mean)
                    ses.append(0.0 if math.isnan(se) else se)
            line = ax.plot(xs, ys, marker="o", label=trainer_label(key))[0]
            ax.fill_between(xs, [y - s for y, s in zip(ys, ses)], [y + s for y, s in zip(ys, ses)],
                            color=line.get_color(), alpha=0.2)
        ax.set_title(f"{name} (seeds {args.seeds})")
        ax.set_xlabel("RL CPU-seconds")
        ax.set_ylabel(f"greedy pass@1 ({args.curve_eval} held-out)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"curves: {path}")


if __name__ == "__main__":
    main()
