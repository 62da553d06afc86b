"""Kimi k1.5 RL benchmark: litzoo's ``KimiRL`` vs TRL's ``GRPOTrainer`` from the same long-CoT SFT start.

    OMP_NUM_THREADS=1 python bench/kimi.py                                # all three tasks, prints markdown tables
    OMP_NUM_THREADS=1 python bench/kimi.py --quick                        # smoke run (minutes)
    OMP_NUM_THREADS=1 python bench/kimi.py --quick --harder --tasks addition   # + the harder level's columns
    OMP_NUM_THREADS=1 python bench/kimi.py --tasks addition --budget-cpu-s 300 --sft-steps 400

The BENCHMARKS.md numbers: one process per task (each measures its own CPU time; they may run in
parallel on a machine with free cores), then the merged tables from the saved results::

    export OMP_NUM_THREADS=1
    python bench/kimi.py --tasks addition --sft-steps 350 --budget-cpu-s 60
    python bench/kimi.py --tasks max_gap --sft-steps 4000 --budget-cpu-s 120
    python bench/kimi.py --tasks combination_sum --sft-steps 6000 --budget-cpu-s 120
    python bench/kimi.py --tasks max_gap combination_sum --budget-cpu-s 120 --tables-only

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
2. **RL from that folder, same CPU budget for both.** litzoo's ``KimiRL`` in a Lightning
   ``Trainer`` and TRL's ``GRPOTrainer`` (TRL defaults otherwise: DAPO token-level loss, rewards
   scaled by the group's std, clipped ratio, ``beta = 0``) get the same start, the same reward
   (litzoo's verifier: 1 if the answer after the last ``#`` is right), the same ``k`` samples per
   prompt and prompts per step, temperature, max new tokens, learning rate, AdamW betas, weight decay,
   grad clipping and the same problem pool (uniform sampling for both). Training stops when the
   process has spent ``--budget-cpu-s`` CPU-seconds in the training loop (a Lightning ``Callback``
   / a transformers ``TrainerCallback`` checks ``time.process_time()`` after every optimizer step,
   so a run overshoots by at most one step; the table shows the CPU time actually used).
   Budgets are in **process CPU time**, not wall time: the machine is shared by several jobs, so wall
   time mostly measures the neighbours. Run with ``OMP_NUM_THREADS=1``.
3. **Evaluation**: greedy accuracy on the same 200 held-out problems for the SFT start, after KimiRL
   and after GRPO, with litzoo's ``generate`` + verifier for all three, mean greedy response length
   (tokens, incl. ``eos``), and the rollout throughput during RL: response tokens (up to the first
   ``eos``) per CPU-second spent sampling (TRL: inside ``model.generate``; KimiRL: its sampler,
   ``--kimi-sampler``, default litzoo's own loop, see bench/rollout.py; ``transformers`` = the same
   ``model.generate`` as TRL). The held-out problems are disjoint from the SFT and RL pools **up to
   the task's symmetries** (``litzoo.reasoning.heldout.canonical_key``: candidate order for combination
   sum, input order for maximum gap; addition keeps operand order): their classes are left out of the
   pools (``HeldOutDisjointData``; ``check_disjoint`` verifies it on every run), since the 20000-problem
   SFT pool covers nearly every combination-sum class. ``--harder`` adds ``--num-eval`` problems of a
   harder, never-trained level per task (3-digit addition; maximum gap level 3, 5-8 integers;
   combination sum level 3, 3-5 candidates in 2-12, targets 6-16), whose classes the pools also leave out.

TRL sees plain prompts (no chat template): the prompt text as a string column (``"<bos>" + prompt``
for a tokenizer that does not add ``<bos>`` itself), which the char tokenizer encodes to exactly
litzoo's ``encode_prompt`` ids (checked at start); the tokenizer has a
pad token (``<pad>``). TRL's completions are decoded with special tokens skipped, as litzoo's are.
"""

from __future__ import annotations

import argparse
import json
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
    harder: int  # the never-trained harder level of --harder (the same task and options)
    harder_max_new_tokens: int  # its budget (>= its longest clean trace; combination sum: what fits the positions)


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
}
# Default SFT steps (batch 64) per task: addition as in the slow test of tests/modules/test_kimi_rl.py.
SFT_STEPS = {"addition": 350, "max_gap": 4000, "combination_sum": 6000}
# Length-grouped SFT batches pay on the long search traces (thousands of steps); on addition's 350 steps
# the length-homogeneous batches cost accuracy (0.105 grouped vs 0.885 shuffled, same seed and steps).
GROUP_BY_LENGTH = {"addition": 0, "max_gap": 50, "combination_sum": 50}


class HeldOutDisjointData(ReasoningDataModule):
    """The datamodule whose training pool leaves out every symmetry class (``canonical_key``: candidate order
    for combination sum, input order for maximum gap) of the held-out sets: its own ``val_problems`` (drawn
    first, as before) and ``reserved`` (the harder level's). The pool is the same seeded stream of distinct
    prompts with those classes removed, so the RL pool is still the first problems of the SFT pool. Holding
    classes out of the pool (rather than drawing held-out problems outside the pool) is needed because the
    20000-problem SFT pool covers nearly every class of combination sum level 2 (~1400 classes)."""

    reserved: frozenset = frozenset()

    def _draw(self, task, difficulty, n, split, exclude):
        if split != "train":
            return super()._draw(task, difficulty, n, split, exclude)
        held = problem_keys(self.val_problems) | self.reserved
        return without_keys(super()._draw(task, difficulty, n + n // 4 + 200, split, exclude), held)[:n]

    def prepare_problems(self) -> None:
        super().prepare_problems()
        check_disjoint(self.val_problems, self.train_problems, "training pool")  # the promise, checked


def harder_problems(spec: TaskSpec, args) -> list[Problem]:
    """``--num-eval`` held-out problems of the task's harder level (seeded; independent of the pools, which
    leave out their classes), each with a clean trace that fits ``harder_max_new_tokens``."""
    task = get_task(spec.task, **spec.options)
    fits = lambda p: len(task.write_trace(p)) + 1 <= spec.harder_max_new_tokens  # noqa: E731 (+1: eos)
    return draw_held_out(task, spec.harder, args.num_eval, zlib.crc32(f"harder/{spec.task}/{args.seed}".encode()),
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
    return data


def quiet_trainer(max_steps: int, root: Path, callbacks=(), **kwargs) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     limit_val_batches=0, callbacks=list(callbacks), default_root_dir=root, **kwargs)


# --------------------------------------------------------------------------- SFT warm-up (cached)
def sft_checkpoint(name: str, spec: TaskSpec, steps: int, args) -> tuple[Path, dict[str, Any]]:
    group = GROUP_BY_LENGTH[name] if args.group_by_length is None else args.group_by_length
    data = datamodule(spec, "sft", args, num_train=args.sft_num_train, p_mistake=args.p_mistake,
                      batch_size=args.sft_batch_size, group_by_length=group)
    # The folder name pins the model config and the trace format (a checksum of the model config and
    # the first traces), so a changed trace writer never reuses a stale warm-up.
    data.prepare_problems()  # checks the held-out set is disjoint from the pool up to symmetries; the harder one:
    check_disjoint(harder_problems(spec, args), data.train_problems, "SFT pool")
    traces = "".join(data.response_text(p, i) for i, p in enumerate(data.train_problems[:50]))
    check = zlib.crc32((json.dumps(spec.model, sort_keys=True) + traces).encode())
    tag = "x".join(str(spec.model[k]) for k in ("num_hidden_layers", "hidden_size"))
    out = Path(args.cache_dir) / (f"sft_{name}_{tag}_steps{steps}_n{args.sft_num_train}_lr{args.sft_lr}_g{group}"
                                  f"_pm{args.p_mistake}_seed{args.seed}_sym"
                                  f"_{check:08x}")
    info_path = out / "bench_sft.json"
    if info_path.exists():
        return out, {**json.loads(info_path.read_text()), "cached": True}
    torch.manual_seed(args.seed)
    module = CoTSFT(model_config=dict(spec.model), lr=args.sft_lr, warmup_steps=50, eval_max_new_tokens=spec.max_new_tokens)
    start = time.process_time()
    quiet_trainer(steps, out / "lightning", gradient_clip_val=1.0).fit(module, data)
    info = {"steps": steps, "cpu_s": time.process_time() - start,
            "params": sum(p.numel() for p in module.policy.parameters())}
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


def evaluate(model, tokenizer, problems, max_new_tokens: int) -> dict[str, float]:
    model.eval()
    ids = [encode_prompt(tokenizer, p.prompt) for p in problems]
    rollout = generate(model, tokenizer, ids, greedy=True, max_new_tokens=max_new_tokens)
    return {"accuracy": score(problems, rollout.texts).mean().item(),
            "length": rollout.lengths.float().mean().item(),
            "truncated": 1.0 - rollout.finished.float().mean().item()}


# --------------------------------------------------------------------------- litzoo KimiRL
class CPUBudget(L.Callback):
    """Stop fitting once this process has spent ``budget_s`` CPU-seconds since training started."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s, self.start, self.used, self.steps, self.rewards = budget_s, 0.0, 0.0, 0, []

    def on_train_start(self, trainer, pl_module):
        self.start = time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps = trainer.global_step
        self.used = time.process_time() - self.start
        if "train/reward" in trainer.callback_metrics and pl_module.last_groups:
            self.rewards.append(float(trainer.callback_metrics["train/reward"]))
        if self.used >= self.budget_s:
            trainer.should_stop = True


def run_kimi(sft: Path, spec: TaskSpec, args, root: Path) -> tuple[Any, Any, dict[str, Any]]:
    torch.manual_seed(args.seed)
    module = KimiRL(pretrained_path=str(sft), k=args.k, temperature=args.temperature,
                    max_new_tokens=spec.max_new_tokens, tau=args.tau, iteration_steps=8, lr=args.lr,
                    adam_betas=(0.9, 0.99), weight_decay=0.0, max_grad_norm=1.0, eval_k=0, seed=args.seed,
                    sampler=args.kimi_sampler)
    meter = GenMeter(module.tokenizer.eos_token_id)
    budget = CPUBudget(args.budget_cpu_s)
    data = datamodule(spec, "rl", args, batch_size=args.prompts_per_step)
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
def run_trl(sft: Path, spec: TaskSpec, problems, args, root: Path) -> tuple[Any, Any, dict[str, Any]]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

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

        def on_step_end(self, targs, state, control, **kw):
            self.steps, self.used = state.global_step, time.process_time() - self.start
            if self.used >= self.budget_s:
                control.should_training_stop = True

        def on_log(self, targs, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                self.rewards.append(float(logs["reward"]))

    config = GRPOConfig(
        output_dir=str(root / "trl"), use_cpu=True, bf16=False, fp16=False, report_to=[], disable_tqdm=True,
        save_strategy="no", logging_steps=1, seed=args.seed, data_seed=args.seed, max_steps=10**6,
        per_device_train_batch_size=args.prompts_per_step * args.k, gradient_accumulation_steps=1,
        num_generations=args.k, max_completion_length=spec.max_new_tokens, temperature=args.temperature,
        top_k=0, top_p=1.0, beta=0.0, num_iterations=1, learning_rate=args.lr, lr_scheduler_type="constant",
        warmup_steps=0, adam_beta1=0.9, adam_beta2=0.99, weight_decay=0.0, max_grad_norm=1.0,
        gradient_checkpointing=False, dataloader_num_workers=0, remove_unused_columns=False,
    )
    meter = GenMeter(tokenizer.eos_token_id)
    meter.wrap(model)
    budget = TRLCPUBudget(args.budget_cpu_s)
    trainer = GRPOTrainer(model=model, reward_funcs=verifier, args=config, train_dataset=dataset,
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


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASK_SPECS), choices=list(TASK_SPECS))
    parser.add_argument("--budget-cpu-s", type=float, default=300.0, help="RL CPU-seconds per trainer and task")
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
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default="runs/bench_kimi")
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 SFT steps, 20 CPU-s RL, 40 eval problems")
    parser.add_argument("--kimi-sampler", default="litzoo", choices=SAMPLERS,
                        help="KimiRL's rollout sampler (transformers: model.generate, as TRL uses)")
    parser.add_argument("--harder", action="store_true",
                        help="also evaluate on --num-eval problems of a harder, never-trained level per task (3-digit "
                             "addition, maximum gap level 3, combination sum level 3), reported as extra columns")
    parser.add_argument("--tables-only", action="store_true",
                        help="print the tables of --tasks from the results saved in --cache-dir (e.g. after running "
                             "one process per task in parallel) without training")
    args = parser.parse_args(argv)
    if args.quick:
        args.sft_steps, args.budget_cpu_s, args.num_eval, args.num_train, args.sft_num_train = [60], 20.0, 40, 400, 400
    if args.sft_steps is None:
        sft_steps = dict(SFT_STEPS)
    elif len(args.sft_steps) in (1, len(args.tasks)):
        sft_steps = dict(zip(args.tasks, args.sft_steps * (len(args.tasks) // len(args.sft_steps))))
    else:
        parser.error(f"--sft-steps takes 1 or {len(args.tasks)} values (one per task), got {len(args.sft_steps)}")
    results = Path(args.cache_dir) / f"results_budget{args.budget_cpu_s:.0f}_eval{args.num_eval}_seed{args.seed}"
    if args.tables_only:
        saved = [json.loads((results / f"{name}.json").read_text()) for name in args.tasks
                 if (results / f"{name}.json").exists()]
        print_tables(args, [tuple(r) for s in saved for r in s["sft_rows"]], [tuple(r) for s in saved for r in s["rows"]])
        return
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    import logging

    for name in ("lightning", "lightning.pytorch", "transformers", "trl", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    import trl

    print(f"torch {torch.__version__}, lightning {L.__version__}, transformers {transformers.__version__}, "
          f"trl {trl.__version__}; threads {torch.get_num_threads()}; k={args.k}, {args.prompts_per_step} prompts/step, "
          f"T={args.temperature}, lr={args.lr}, tau={args.tau}, RL budget {args.budget_cpu_s:.0f} CPU-s per trainer and task, "
          f"SFT {sft_steps} steps x {args.sft_batch_size}, p_mistake {args.p_mistake}, {args.num_eval} held-out problems",
          flush=True)
    rows, sft_rows = [], []
    for name in args.tasks:
        spec = TASK_SPECS[name]
        t0 = time.time()
        sft, sft_info = sft_checkpoint(name, spec, sft_steps[name], args)
        data = datamodule(spec, "rl", args, batch_size=args.prompts_per_step)
        data.setup("fit")
        hard = harder_problems(spec, args) if args.harder else []
        check_disjoint(hard, data.train_problems, "RL pool")

        def evaluate_all(model, tok) -> dict[str, float]:
            result = evaluate(model, tok, data.val_problems, spec.max_new_tokens)
            if hard:
                result.update({f"harder_{k}": v for k, v in evaluate(model, tok, hard, spec.harder_max_new_tokens).items()})
            return result

        policy, tokenizer = build_policy(pretrained_path=str(sft))
        start = evaluate_all(policy, tokenizer)
        sft_rows.append((name, sft_info, start))
        rows.append((name, "SFT start (litzoo CoTSFT)", start, None))
        print(f"[{name}] SFT {sft_info} -> {start}  ({time.time() - t0:.0f} s wall)", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            for label, runner in [("litzoo KimiRL", lambda: run_kimi(sft, spec, args, Path(tmp))),
                                  ("TRL GRPOTrainer", lambda: run_trl(sft, spec, data.train_problems, args, Path(tmp)))]:
                t1 = time.time()
                model, tok, info = runner()
                result = evaluate_all(model, tok)
                rows.append((name, label, result, info))
                print(f"[{name}] {label}: {info} -> {result}  ({time.time() - t1:.0f} s wall)", flush=True)
                del model
        results.mkdir(parents=True, exist_ok=True)
        (results / f"{name}.json").write_text(json.dumps(
            {"sft_rows": [r for r in sft_rows if r[0] == name], "rows": [r for r in rows if r[0] == name]}))
    print_tables(args, sft_rows, rows)


def print_tables(args, sft_rows, rows) -> None:
    print("\n### SFT warm-ups (litzoo CoTSFT, long-CoT traces)\n")
    print("| task | max new tokens | SFT steps x batch | SFT CPU-s | params | greedy accuracy | mean length | truncated |")
    print("|---|---|---|---|---|---|---|---|")
    for name, info, ev in sft_rows:
        print(f"| {name} | {TASK_SPECS[name].max_new_tokens} | {info['steps']} x {args.sft_batch_size} | "
              f"{info['cpu_s']:.0f}{' (cached)' if info.get('cached') else ''} | {info['params'] / 1e3:.0f} k | "
              f"{ev['accuracy']:.3f} | {ev['length']:.1f} | {ev['truncated']:.3f} |")
    print(f"\n### RL from the SFT start, {args.budget_cpu_s:.0f} CPU-s each (k = {args.k}, "
          f"{args.prompts_per_step} prompts/step, T = {args.temperature}, lr = {args.lr})\n")
    harder = any("harder_accuracy" in ev for _, _, ev, _ in rows)
    print("| task | policy | greedy accuracy | mean length (tokens) | RL steps | RL CPU-s | sample reward (last 10 steps) "
          "| rollout tokens per CPU-s | generate share of CPU |"
          + (" harder level: greedy accuracy | harder level: mean length |" if harder else ""))
    print("|---|---|---|---|---|---|---|---|---|" + ("---|---|" if harder else ""))
    for name, label, ev, info in rows:
        extra = ""
        if harder:
            extra = (f" {ev['harder_accuracy']:.3f} (level {TASK_SPECS[name].harder}) | {ev['harder_length']:.1f} |"
                     if "harder_accuracy" in ev else " - | - |")
        if info is None:
            print(f"| {name} | {label} | {ev['accuracy']:.3f} | {ev['length']:.1f} | - | - | - | - | - |" + extra)
        else:
            print(f"| {name} | {label} | {ev['accuracy']:.3f} | {ev['length']:.1f} | {info['steps']} | "
                  f"{info['cpu_s']:.0f} | {info['train_reward_last']:.3f} | {info['gen_tok_per_cpu_s']:.0f} | "
                  f"{100 * info['gen_share']:.0f} % |" + extra)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
