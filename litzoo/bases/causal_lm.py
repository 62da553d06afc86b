"""What the reasoning fine-tuners of a causal LM (CoTSFT, KimiRL) share: :class:`CausalLMModule`."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from litzoo.base import LitzooModule, prepare_export_dir
from litzoo.model_card import card_metadata
from litzoo.optim import adamw_with_warmup_cosine
from litzoo.reasoning.generation import generate
from litzoo.reasoning.meters import LevelMeter, level_keys
from litzoo.reasoning.policy import build_policy, encode_prompt, save_policy
from litzoo.reasoning.rewards import score


class CausalLMModule(LitzooModule):
    """Plumbing shared by the causal-LM modules: the policy, greedy answers, export, AdamW, per-level logs.

    Subclasses call :meth:`init_policy` after ``save_hyperparameters()`` with the hyperparameters
    ``model_config``, ``pretrained_path``, ``extra_chars`` (the policy, see
    :func:`litzoo.reasoning.policy.build_policy`) and ``lr``, ``weight_decay``, ``adam_betas``,
    ``warmup_steps``, ``total_steps``, ``min_lr_ratio`` (the optimizer), and set
    :attr:`answer_max_new_tokens` (the generation budget of :meth:`answer` and greedy validation).
    Validation adds to ``self.meter``, logged per task and difficulty at the end of the epoch.
    """

    policy: torch.nn.Module
    meter: LevelMeter

    def init_policy(self, meter_metrics: Sequence[str]) -> None:
        """``self.policy, self.tokenizer`` from the hyperparameters, and the validation meter."""
        h = self.hparams
        self.policy, self.tokenizer = build_policy(h.model_config, h.pretrained_path, h.extra_chars)
        self.meter = LevelMeter(meter_metrics)

    @property
    def answer_max_new_tokens(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must say how many tokens an answer may have.")

    # ----------------------------------------------------------------- validation
    def greedy_scores(self, problems) -> dict[str, Tensor]:
        """Greedy responses to a ``ProblemBatch`` (``problems``, ``prompt_ids``): verifier pass@1 and lengths."""
        rollout = generate(self.policy, self.tokenizer, problems.prompt_ids, greedy=True,
                           max_new_tokens=self.answer_max_new_tokens)
        return {"pass@1": score(problems.problems, rollout.texts), "response_length": rollout.lengths}

    def on_validation_epoch_end(self) -> None:
        self.log_level_meter(self.meter)

    def log_level_meter(self, meter: LevelMeter, prefix: str = "val") -> None:
        """Log a :class:`LevelMeter`'s means (overall and per task/difficulty), summed over DDP ranks.

        The rows follow the datamodule's ``levels`` so that every rank gathers the same table, also for a
        level one rank did not see.
        """
        levels = getattr(getattr(self.trainer, "datamodule", None), "levels", None)
        keys = level_keys(levels) if levels else None
        reduce = (lambda t: self.all_gather(t.to(self.device)).sum(0)) if self.trainer.world_size > 1 else None
        for name, value in meter.summarize(keys, reduce).items():
            self.log(f"{prefix}/{name}", value.float(), prog_bar=name == "pass@1")

    # ----------------------------------------------------------------- optimizer
    def configure_optimizers(self):
        h = self.hparams
        total = h.total_steps or self.trainer.estimated_stepping_batches
        return adamw_with_warmup_cosine(
            self.policy, lr=h.lr, weight_decay=h.weight_decay, betas=h.adam_betas, warmup_steps=h.warmup_steps,
            total_steps=int(total) if math.isfinite(total) else 0, min_lr_ratio=h.min_lr_ratio,
        )

    # ----------------------------------------------------------------- use
    @torch.no_grad()
    def answer(self, prompts: list[str], max_new_tokens: Optional[int] = None) -> list[str]:
        """Greedy responses to prompt texts (e.g. ``"47+38="``)."""
        ids = [encode_prompt(self.tokenizer, p) for p in prompts]
        return generate(self.policy, self.tokenizer, ids, greedy=True,
                        max_new_tokens=max_new_tokens or self.answer_max_new_tokens).texts

    def export(self, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
        """A transformers folder: ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained(out_dir)``."""
        return save_policy(self.policy, self.tokenizer, prepare_export_dir(out_dir, overwrite), card={
            "method": type(self).__name__, "recipe": dict(self.hparams), "max_new_tokens": self.answer_max_new_tokens,
            **card_metadata(self)})
