"""Verifiable reasoning problems as a LightningDataModule: SFT traces or RL prompts.

A fixed, seeded pool of ``num_train`` problems is drawn from the chosen tasks and difficulty
levels (split evenly over the (task, difficulty) levels), plus a disjoint held-out set of
``num_val`` problems (drawn first, so it does not depend on ``num_train``). Tasks, verifiers and
trace writers are :mod:`litzoo.reasoning`'s.

``mode="sft"``: training batches are ``prompt + response`` token ids, right-padded, with
``labels`` equal to the ids on the response tokens (incl. ``eos``) and ``-100`` on the prompt and
padding, so the loss is on response tokens only. The response is the task's long chain of
thought (``trace="cot"``, optionally with deliberate slips that the trace catches and fixes,
``p_mistake``) or only the marked answer (``trace="direct"``). Traces differ a lot in length
(level-2 combination-sum traces run from ~20 to ~900 tokens), and a right-padded batch costs as
much as its longest row times its size, so ``group_by_length=G`` batches rows of similar length:
each epoch's shuffled order is cut into windows of ``G`` batches, each window is sorted by length
and cut into batches, and the batch order is shuffled (the ``group_by_length`` of transformers'
Trainer, which uses ``G = 50``).

``mode="rl"``: training batches are prompts and the problem objects for the verifier, drawn
each step from the pool: uniformly, by curriculum (easy -> hard over ``curriculum_steps``) and/or
prioritised by ``1 - success rate`` (Kimi k1.5 Sec. 2.3.4; the module reports results through
:meth:`ReasoningDataModule.record_results`). Under DDP all ranks draw one global batch from the
same seeded generator and each takes its own slice: different problems, the same count.

Your own problems (``data_path``): a jsonl file, parquet file(s) or ``datasets`` ``save_to_disk`` folder with a
prompt and an answer column (names configurable), scored by a verifier chosen by name or import path
(:mod:`litzoo.reasoning.verifiers`); SFT targets are the ``response_column`` (a worked solution) or else the answer.
The held-out set is ``val_data_path`` or ``num_val`` rows drawn (seeded) from the table; the rest is the training
pool (``tasks``, ``difficulties``, ``num_train``, ``trace`` and ``p_mistake`` do not apply). Prompts of a tokenizer
with a chat template go through it as one user turn (:func:`~litzoo.reasoning.policy.encode_chat_prompt`; this
holds for the built-in tasks too).

Validation batches (both modes) are the held-out prompts + problems (and, in SFT mode, their
supervised tokens). The tokenizer is the LightningModule's (``module.tokenizer``) when a
Trainer runs, else ``tokenizer_path`` or the char tokenizer; every task text is checked to be
representable (``check_tokenizer_covers``).
"""

from __future__ import annotations

import random
import zlib
from typing import Any, Iterator, Mapping, Optional, Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from litzoo.checks import check_choice, check_positive_int, check_range
from litzoo.datamodules.sampling import EpochShuffleSampler, LengthGroupedSampler, ResumableDataLoader
from litzoo.reasoning import TASKS, Problem, get_task
from litzoo.data.tables import check_columns, load_table
from litzoo.reasoning.policy import encode_chat_prompt, encode_response
from litzoo.reasoning.verifiers import get_verifier
from litzoo.reasoning.sampling import PrioritizedSampler, curriculum_level_weights
from litzoo.datamodules.seed import DataSeed

MODES = ("sft", "rl")
# The task name and difficulty of the problems read from a data_path table (their metrics: val/data_d0/...).
DATA_LEVEL = ("data", 0)
TRACES = ("cot", "direct")


class ProblemBatch:
    """The problems of a batch and their prompt ids.

    A plain container on purpose (not a list or dataclass): Lightning's device transfer walks
    lists and refuses frozen dataclasses, and there is nothing in here to move.
    """

    def __init__(self, problems: Sequence[Problem], prompt_ids: Sequence[Sequence[int]]) -> None:
        self.problems, self.prompt_ids = list(problems), [list(p) for p in prompt_ids]

    def __len__(self) -> int:
        return len(self.problems)

    def __iter__(self):
        return iter(self.problems)

    def __repr__(self) -> str:
        return f"ProblemBatch({len(self)} problems)"


def _level_seed(seed: int, task: str, difficulty: int, split: str) -> int:
    # A stable per-level seed (str hash() is salted per process, crc32 is not): the same level
    # draws the same problems whatever the task list order, on every rank and every run.
    return zlib.crc32(f"{seed}/{task}/{difficulty}/{split}".encode())


class _SFTDataset(Dataset):
    def __init__(self, items: list[tuple[int, list[int], list[int]]]) -> None:
        self.items = items  # (problem index, prompt ids, response ids)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


class _IndexDataset(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class _ProblemStream(IterableDataset):
    """Yields ``steps_per_epoch`` RL batches per epoch, drawn lazily so the priorities are fresh."""

    def __init__(self, datamodule: "ReasoningDataModule", steps_per_epoch: int) -> None:
        self.dm, self.steps_per_epoch = datamodule, steps_per_epoch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.dm._resume_from is not None:  # first epoch after a resume
            self.dm._rl_batches, self.dm._resume_from = self.dm._resume_from, None
        for _ in range(self.steps_per_epoch):
            yield self.dm.draw_rl_batch()


class ReasoningDataModule(DataSeed, L.LightningDataModule):
    """Problems, traces and prompts for :class:`~litzoo.modules.CoTSFT` and :class:`~litzoo.modules.KimiRL`.

    Args:
        tasks: task names from :data:`litzoo.reasoning.TASKS`.
        task_options: constructor options per task, e.g. ``{"arithmetic": {"ops": "+"}}``.
        difficulties: levels used for every task, or a mapping task -> levels.
        num_train: size of the training pool (split evenly over the levels).
        num_val: size of the held-out set (split evenly over the levels).
        mode: ``"sft"`` (supervised traces) or ``"rl"`` (prompts for rollouts).
        trace: ``"cot"`` (chain of thought) or ``"direct"`` (answer only) responses in SFT mode.
        p_mistake: probability that a CoT trace contains a slip that its check catches and fixes.
        curriculum: RL mode: unlock difficulty levels easy -> hard over ``curriculum_steps`` batches.
        prioritized: RL mode: sample problems with probability proportional to ``1 - success rate``
            (a resumed run then draws from the same statistics, but Lightning's one-batch prefetch
            means a batch may see one step more or less of them than in an uninterrupted run).
        priority_decay, priority_min_weight: see :class:`~litzoo.reasoning.sampling.PrioritizedSampler`.
        rl_steps_per_epoch: RL batches per epoch (``None``: one pass over the pool's worth of prompts).
        seed: the pool, the held-out set, the traces and the RL draws all derive from it; ``None`` (default): the
            global seed (``seed_everything`` / ``--seed_everything``, else 0).
        batch_size: problems per batch and rank.
        val_batch_size: problems per validation batch.
        tokenizer_path: local tokenizer folder used when no LightningModule provides a tokenizer.
        num_workers: DataLoader workers (SFT mode; RL draws need the live priorities, so 0 there).
        group_by_length: SFT mode: batches per length-sorted window (:class:`LengthGroupedSampler`;
            e.g. 50), ``0`` = plain shuffling. Cuts padding, i.e. CPU time per step, on tasks whose
            traces vary in length.
        data_path: your own problems instead of ``tasks``: a ``.jsonl`` file, ``.parquet`` file(s) or a
            ``save_to_disk`` folder (:func:`litzoo.data.tables.load_table`).
        val_data_path: the held-out problems in the same formats; ``None``: ``num_val`` rows drawn from ``data_path``.
        prompt_column, answer_column: the columns of the prompt text and of the reference answer.
        response_column: SFT mode: a column with a worked response to train on; ``None``: the answer text itself.
        verifier: how a response is checked against the answer: ``"exact_int"``, ``"exact_string"``,
            ``"last_number"``, ``"boxed"`` or ``"package.module:function"`` (see :mod:`litzoo.reasoning.verifiers`).
        data_split: the split of a saved ``DatasetDict``.
        cache_dir: where ``datasets`` converts parquet files (``None``: its default cache).
    """

    def __init__(
        self,
        tasks: Sequence[str] = ("arithmetic",),
        task_options: Mapping[str, Mapping[str, Any]] | None = None,
        difficulties: Sequence[int] | Mapping[str, Sequence[int]] = (2,),
        num_train: int = 5000,
        num_val: int = 200,
        mode: str = "sft",
        trace: str = "cot",
        p_mistake: float = 0.0,
        curriculum: bool = False,
        curriculum_steps: int = 1000,
        prioritized: bool = False,
        priority_decay: float = 1.0,
        priority_min_weight: float = 0.0,
        rl_steps_per_epoch: int | None = None,
        seed: Optional[int] = None,
        batch_size: int = 32,
        val_batch_size: int = 200,
        tokenizer_path: str | None = None,
        num_workers: int = 0,
        group_by_length: int = 0,
        data_path: str | None = None,
        val_data_path: str | None = None,
        prompt_column: str = "prompt",
        answer_column: str = "answer",
        response_column: str | None = None,
        verifier: str = "exact_string",
        data_split: str = "train",
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if isinstance(tasks, str):
            tasks = [tasks]
        if not tasks:
            raise ValueError("tasks must name at least one task, e.g. tasks=['arithmetic'].")
        check_choice("mode", mode, MODES)
        check_choice("trace", trace, TRACES)
        if group_by_length < 0:
            raise ValueError(f"group_by_length={group_by_length} must be >= 0 (0 = off, e.g. 50 batches per window).")
        for name, value in [("num_train", num_train), ("num_val", num_val), ("batch_size", batch_size),
                            ("val_batch_size", val_batch_size), ("curriculum_steps", curriculum_steps)]:
            check_positive_int(name, value)
        if rl_steps_per_epoch is not None and rl_steps_per_epoch < 1:
            raise ValueError(f"rl_steps_per_epoch={rl_steps_per_epoch} must be >= 1 or None.")
        check_range("p_mistake", p_mistake, 0.0, 1.0)
        for name in tasks:
            if name not in TASKS:
                get_task(name)  # raises the registry's error naming the allowed tasks
        task_options = dict(task_options or {})
        unknown = set(task_options) - set(tasks)
        if unknown:
            raise ValueError(f"task_options names {sorted(unknown)} which are not in tasks={list(tasks)}.")
        self.tasks = {name: get_task(name, **dict(task_options.get(name, {}))) for name in tasks}
        # (task, difficulty) levels, validated against each task's allowed difficulties.
        self.levels: list[tuple[str, int]] = []
        for name, task in self.tasks.items():
            if isinstance(difficulties, Mapping):
                if name not in difficulties:
                    raise ValueError(f"difficulties has no entry for task {name!r}; give one per task in {list(tasks)}.")
                levels = difficulties[name]
            else:
                levels = difficulties
            if isinstance(levels, int) or not len(levels):
                raise ValueError(f"difficulties for task {name!r} must be a non-empty list of levels, got {levels!r}.")
            for d in levels:
                task.check_difficulty(d)
            self.levels += [(name, int(d)) for d in dict.fromkeys(levels)]
        self._tables = None
        if data_path is not None:
            get_verifier(verifier)  # an unknown name or a bad import path fails here, not at the first reward
            if curriculum:
                raise ValueError("curriculum=True needs difficulty levels, which a data_path table has not; set "
                                 "curriculum=False (prioritized=True still adapts to what the policy solves).")
            columns = {"prompt_column": prompt_column, "answer_column": answer_column, "response_column": response_column}
            self._tables = [load_table(data_path, data_split, cache_dir)]
            check_columns(self._tables[0], columns, f"data_path={data_path!r}")
            if val_data_path is not None:
                self._tables.append(load_table(val_data_path, data_split, cache_dir))
                check_columns(self._tables[1], columns, f"val_data_path={val_data_path!r}")
            elif num_val >= len(self._tables[0]):
                raise ValueError(f"num_val={num_val} leaves no training problems in data_path={data_path!r} "
                                 f"({len(self._tables[0])} rows); lower num_val or give val_data_path.")
            self.levels = [DATA_LEVEL]
        elif val_data_path is not None:
            raise ValueError("val_data_path is the held-out part of data_path; give data_path too.")
        self.save_hyperparameters()
        if self._tables is not None:  # read the rows now, so a bad one fails at construction
            self._tables = [self._table_problems(table) for table in self._tables]
        self.mode, self.trace, self.batch_size, self.seed = mode, trace, batch_size, seed
        self.tokenizer = None
        self.train_problems: list[Problem] = []
        self.val_problems: list[Problem] = []
        self.sampler: PrioritizedSampler | None = None
        # Draw index of the next RL batch, and how many batches the module has reported back
        # (Lightning prefetches one batch, so "drawn" runs one ahead of "trained on"; a resume
        # restarts from the reported count so no batch is skipped).
        self._rl_batches = 0
        self._rl_consumed: int | None = None
        self._resume_from: int | None = None
        self._level_of: torch.Tensor | None = None

    # ------------------------------------------------------------------ problems
    def _draw(self, task: str, difficulty: int, n: int, split: str, exclude: set[str]) -> list[Problem]:
        rng = random.Random(_level_seed(self.seed, task, difficulty, split))
        out, seen = [], set(exclude)
        for _ in range(50 * n):
            if len(out) == n:
                break
            p = self.tasks[task].generate(difficulty, rng)
            if p.prompt not in seen:
                seen.add(p.prompt)
                out.append(p)
        return out

    @staticmethod
    def _split(total: int, parts: int) -> list[int]:
        return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]

    def prepare_problems(self) -> None:
        """Draw the held-out set, then the training pool (disjoint from it); idempotent."""
        if self.train_problems:
            return
        h = self.hparams
        if self._tables is not None:
            self._prepare_table_problems()
            return
        val_counts = self._split(h.num_val, len(self.levels))
        train_counts = self._split(h.num_train, len(self.levels))
        val_prompts: set[str] = set()
        for (task, d), n in zip(self.levels, val_counts):
            probs = self._draw(task, d, n, "val", set()) if n else []
            self.val_problems += probs
            val_prompts |= {p.prompt for p in probs}
        for (task, d), n in zip(self.levels, train_counts):
            probs = self._draw(task, d, n, "train", val_prompts) if n else []
            if len(probs) < n:
                rank_zero_warn(
                    f"{task} difficulty {d} has only {len(probs)} distinct problems outside the held-out set; "
                    f"the pool has {len(probs)} instead of {n} of them."
                )
            self.train_problems += probs
        if not self.train_problems:
            raise ValueError("the training pool is empty: the chosen levels have no problems outside the held-out set.")
        level_index = {lv: i for i, lv in enumerate(self.levels)}
        self._level_of = torch.tensor([level_index[(p.task, p.difficulty)] for p in self.train_problems])
        if h.prioritized:
            self.sampler = PrioritizedSampler(len(self.train_problems), h.priority_decay, h.priority_min_weight)

    def _table_problems(self, table) -> list[Problem]:
        h = self.hparams
        columns = [h.prompt_column, h.answer_column] + ([h.response_column] if h.response_column else [])
        rows = table.select_columns(columns).to_list()
        for i, row in enumerate(rows):
            if not isinstance(row[h.prompt_column], str) or not row[h.prompt_column] or row[h.answer_column] is None:
                raise ValueError(f"row {i} of the problems has prompt {row[h.prompt_column]!r} and answer "
                                 f"{row[h.answer_column]!r}; every row needs a non-empty prompt text and an answer.")
        return [Problem(*DATA_LEVEL, str(row[h.prompt_column]), str(row[h.answer_column]),
                        {"verifier": h.verifier, "response": row.get(h.response_column) if h.response_column else None})
                for row in rows]

    def _prepare_table_problems(self) -> None:
        """The pool and the held-out set from the tables: ``val_data_path``'s rows, or ``num_val`` rows of
        ``data_path`` drawn with the seed (the pool keeps the file order of the rest)."""
        problems = self._tables[0]
        if len(self._tables) > 1:
            self.val_problems, self.train_problems = self._tables[1], problems
            shared = {p.prompt for p in self.val_problems} & {p.prompt for p in problems}
            if shared:  # validation would score memorised answers
                rank_zero_warn(f"{len(shared)} of the {len(self.val_problems)} problems of val_data_path="
                               f"{self.hparams.val_data_path!r} are also in data_path (e.g. {min(shared)!r}): the "
                               "held-out scores then include training problems. Remove them from one of the files.")
        else:
            held = set(random.Random(_level_seed(self.seed, *DATA_LEVEL, "val")).sample(range(len(problems)),
                                                                                      self.hparams.num_val))
            self.val_problems = [p for i, p in enumerate(problems) if i in held]
            self.train_problems = [p for i, p in enumerate(problems) if i not in held]
        self._level_of = torch.zeros(len(self.train_problems), dtype=torch.long)
        if self.hparams.prioritized:
            h = self.hparams
            self.sampler = PrioritizedSampler(len(self.train_problems), h.priority_decay, h.priority_min_weight)

    def _resolve_tokenizer(self):
        module = getattr(self.trainer, "lightning_module", None) if self._trainer_attached() else None
        tokenizer = getattr(module, "tokenizer", None)
        tokenizer = self.tokenizer if tokenizer is None else tokenizer
        if tokenizer is None:
            if self.hparams.tokenizer_path is not None:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(self.hparams.tokenizer_path, local_files_only=True)
            else:
                from litzoo.text.tokenizer import build_char_tokenizer

                tokenizer = build_char_tokenizer()
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token; responses could never end.")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def _trainer_attached(self) -> bool:
        return getattr(self, "trainer", None) is not None

    def response_text(self, problem: Problem, index: int) -> str:
        if self._tables is not None:  # a table's worked response, else its answer
            response = problem.data.get("response")
            return problem.answer if response is None else str(response)
        task = self.tasks[problem.task]
        if self.trace == "direct":
            return task.write_direct(problem)
        rng = random.Random(_level_seed(self.seed, problem.task, index, "trace"))
        return task.write_trace(problem, rng, self.hparams.p_mistake)

    def setup(self, stage: str | None = None) -> None:
        from litzoo.text.tokenizer import check_tokenizer_covers

        self.prepare_problems()
        tokenizer = self._resolve_tokenizer()
        if tokenizer is self.tokenizer and getattr(self, "_train_items", None) is not None:
            return
        self.tokenizer = tokenizer
        train_texts = [(p, self.response_text(p, i)) for i, p in enumerate(self.train_problems)]
        val_texts = [(p, self.response_text(p, 1_000_000 + i)) for i, p in enumerate(self.val_problems)]
        check_tokenizer_covers(tokenizer, [p.prompt + r for p, r in train_texts + val_texts])
        self._train_items = [(i, encode_chat_prompt(tokenizer, p.prompt), encode_response(tokenizer, r))
                             for i, (p, r) in enumerate(train_texts)]
        self._val_items = [(i, encode_chat_prompt(tokenizer, p.prompt), encode_response(tokenizer, r))
                           for i, (p, r) in enumerate(val_texts)]

    # ------------------------------------------------------------------ distributed info
    def _rank_world(self) -> tuple[int, int]:
        if self._trainer_attached():
            return self.trainer.global_rank, self.trainer.world_size
        return 0, 1

    # ------------------------------------------------------------------ RL draws
    def rl_weights(self) -> torch.Tensor:
        """Base probability of each pool problem: curriculum weight of its level / level size."""
        counts = torch.bincount(self._level_of, minlength=len(self.levels)).double()
        level_w = torch.ones(len(self.levels), dtype=torch.float64)
        if self.hparams.curriculum:
            progress = self._rl_batches / self.hparams.curriculum_steps
            for task in self.tasks:
                idx = [i for i, (t, _) in enumerate(self.levels) if t == task]
                w = curriculum_level_weights([self.levels[i][1] for i in idx], progress)
                for i in idx:
                    level_w[i] = w[self.levels[i][1]]
        return (level_w / counts.clamp(min=1))[self._level_of]

    def draw_rl_batch(self) -> dict[str, Any]:
        """The next RL batch of this rank: ``problem_ids`` (B,) and ``problems`` (a :class:`ProblemBatch`)."""
        if self.tokenizer is None:
            self.setup("fit")
        rank, world = self._rank_world()
        n = self.batch_size * world
        generator = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}/rl/{self._rl_batches}".encode()))
        base = self.rl_weights()
        if self.sampler is not None:
            ids = self.sampler.sample(n, generator, base_weights=base, replacement=False)
        else:
            replacement = n > int((base > 0).sum())
            ids = torch.multinomial(base, n, replacement=replacement, generator=generator)
        self._rl_batches += 1
        ids = ids[rank * self.batch_size:(rank + 1) * self.batch_size]
        problems = [self.train_problems[i] for i in ids.tolist()]
        prompts = [self._train_items[i][1] for i in ids.tolist()]
        return {"problem_ids": ids, "problems": ProblemBatch(problems, prompts)}

    def record_results(self, problem_ids: torch.Tensor, success: torch.Tensor) -> None:
        """Called once per RL training batch: feed verifier results (of all ranks, so every rank keeps
        the same priorities; may be empty) back to the prioritised sampler, and count the batch."""
        self._rl_consumed = (self._rl_consumed or 0) + 1
        if self.sampler is not None and len(problem_ids):
            self.sampler.update(problem_ids.cpu(), success.cpu())

    # ------------------------------------------------------------------ loaders
    def _collate(self, items, problems: Sequence[Problem]) -> dict[str, Any]:
        """Right-padded ``prompt + response`` ids, ``labels`` = ids on the response, -100 elsewhere."""
        pad = self.tokenizer.pad_token_id
        width = max(len(p) + len(r) for _, p, r in items)
        input_ids = torch.full((len(items), width), pad, dtype=torch.long)
        labels = torch.full((len(items), width), -100, dtype=torch.long)
        attention_mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (_, p, r) in enumerate(items):
            seq = torch.tensor(p + r)
            input_ids[row, : len(seq)] = seq
            attention_mask[row, : len(seq)] = 1
            labels[row, len(p): len(seq)] = torch.tensor(r)
        return {
            "input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
            "problem_ids": torch.tensor([i for i, _, _ in items]),
            "problems": ProblemBatch([problems[i] for i, _, _ in items], [p for _, p, _ in items]),
        }

    def _collate_train(self, items) -> dict[str, Any]:
        return self._collate(items, self.train_problems)

    def _collate_val(self, indices: list[int]) -> dict[str, Any]:
        batch = self._collate([self._val_items[i] for i in indices], self.val_problems)
        if self.mode == "rl":  # RL validation generates from the prompts only
            batch = {k: batch[k] for k in ("problem_ids", "problems")}
        return batch

    def train_dataloader(self) -> DataLoader:
        if self.tokenizer is None:
            self.setup("fit")
        if self.mode == "rl":
            rank, world = self._rank_world()
            steps = self.hparams.rl_steps_per_epoch or max(1, len(self.train_problems) // (self.batch_size * world))
            return DataLoader(_ProblemStream(self, steps), batch_size=None, num_workers=0)
        dataset = _SFTDataset(self._train_items)
        if self.hparams.group_by_length:
            sampler = LengthGroupedSampler([len(p) + len(r) for _, p, r in self._train_items], self.batch_size,
                                           self.hparams.group_by_length, self.seed)
        else:
            sampler = EpochShuffleSampler(dataset, self.seed)
        # Resumable: a mid-epoch checkpoint holds the loader's position (see ResumableDataLoader).
        return ResumableDataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler,
            collate_fn=self._collate_train, drop_last=len(dataset) > self.batch_size,
            num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        if self.tokenizer is None:
            self.setup("validate")
        return DataLoader(_IndexDataset(len(self._val_items)), batch_size=self.hparams.val_batch_size,
                          shuffle=False, collate_fn=self._collate_val)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        consumed = self._rl_batches if self._rl_consumed is None else self._rl_consumed
        state: dict[str, Any] = {"rl_batches": consumed}
        if self.sampler is not None:
            state["sampler"] = self.sampler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rl_batches = int(state.get("rl_batches", 0))
        self._rl_consumed = self._resume_from = self._rl_batches
        if "sampler" in state:
            self.prepare_problems()
            if self.sampler is None:
                raise ValueError("the checkpoint has prioritised-sampler state but prioritized=False; resume with prioritized=True.")
            self.sampler.load_state_dict(state["sampler"])
