r"""Supervised warm-up on long chain-of-thought traces (the step before Kimi k1.5 RL).

Kimi Team, "Kimi k1.5: Scaling Reinforcement Learning with LLMs", arXiv:2501.12599, Sec. 2.2
("long-CoT supervised fine-tuning"): before RL, the policy learns from a small set of
verified reasoning traces -- planning, working, checking, correcting -- ending in a marked answer.

For a problem ``x`` with trace ``y = (y_1..y_T, eos)`` the loss is the negative log-likelihood of
the **response tokens only** (the prompt is context, not a target):

    L(theta) = - (1 / sum_i T_i) sum_i sum_{t <= T_i} log pi_theta(y_{i,t} | x_i, y_{i,<t}).

Validation logs the loss and the greedy accuracy (pass@1) of the generated answers per task
and difficulty, scored by the tasks' verifiers. ``export(out_dir)`` writes a transformers folder
(model + tokenizer) that :class:`~litzoo.modules.KimiRL` continues from (``pretrained_path``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from litzoo.base import LitzooModule
from litzoo.datamodules.reasoning import log_level_meter
from litzoo.optim import adamw_with_warmup_cosine
from litzoo.reasoning.rollout import (
    LevelMeter,
    build_policy,
    encode_prompt,
    generate,
    level_key,
    position_ids_from_mask,
    save_policy,
    score,
)


class CoTSFT(LitzooModule):
    """Supervised fine-tuning of a causal LM on reasoning traces, loss on response tokens only.

    Args:
        model_config: plain values for a fresh model (``AutoConfig.for_model``; ``"model_type"``
            default ``"qwen2"``; ``None`` = the tiny CPU demo model,
            :data:`litzoo.reasoning.rollout.TINY_QWEN2`). Ignored with ``pretrained_path``.
        pretrained_path: a local folder with a causal LM and its tokenizer (never the hub).
        extra_chars: characters added to the char tokenizer of a fresh model.
        lr, weight_decay, adam_betas, warmup_steps, total_steps, min_lr_ratio: AdamW with linear
            warm-up and cosine decay to ``min_lr_ratio * lr`` (``total_steps=0``: the trainer's estimate).
        eval_max_new_tokens: generation budget of the greedy validation answers.
    """

    def __init__(
        self,
        model_config: Optional[dict[str, Any]] = None,
        pretrained_path: Optional[str] = None,
        extra_chars: str = "",
        lr: float = 3e-3,
        weight_decay: float = 0.01,
        adam_betas: tuple[float, float] = (0.9, 0.98),
        warmup_steps: int = 50,
        total_steps: int = 0,
        min_lr_ratio: float = 0.1,
        eval_max_new_tokens: int = 128,
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise ValueError(f"lr={lr} must be > 0.")
        if eval_max_new_tokens < 1:
            raise ValueError(f"eval_max_new_tokens={eval_max_new_tokens} must be >= 1.")
        if warmup_steps < 0 or total_steps < 0:
            raise ValueError(f"warmup_steps={warmup_steps} and total_steps={total_steps} must be >= 0.")
        self.save_hyperparameters()
        self.policy, self.tokenizer = build_policy(model_config, pretrained_path, extra_chars)
        self._meter = LevelMeter(("pass@1", "response_length"))

    # ----------------------------------------------------------------- training
    def sft_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Mean NLL of the response tokens (``labels != -100``), shifted by one (next-token)."""
        length, limit = batch["input_ids"].shape[1], getattr(self.policy.config, "max_position_embeddings", None)
        if limit is not None and length > limit:
            # Positions past the table are not an error in every model: say so rather than train on garbage.
            raise ValueError(
                f"a prompt + trace of {length} tokens exceeds the model's max_position_embeddings={limit}; raise "
                "model_config['max_position_embeddings'] or use easier difficulties (shorter traces)."
            )
        logits = self.policy(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            position_ids=position_ids_from_mask(batch["attention_mask"]), use_cache=False,
        ).logits
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=-100)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if "labels" not in batch:
            raise ValueError("CoTSFT needs supervised batches; use ReasoningDataModule(mode='sft').")
        loss = self.sft_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        return loss

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        problems = batch["problems"]
        if "labels" in batch:
            self.log("val/loss", self.sft_loss(batch), prog_bar=True, sync_dist=True, batch_size=len(problems))
        rollout = generate(self.policy, self.tokenizer, problems.prompt_ids, greedy=True,
                           max_new_tokens=self.hparams.eval_max_new_tokens)
        correct = score(problems.problems, rollout.texts)
        self._meter.add([level_key(p) for p in problems.problems], **{"pass@1": correct, "response_length": rollout.lengths})

    def on_validation_epoch_end(self) -> None:
        log_level_meter(self, self._meter)

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
                        max_new_tokens=max_new_tokens or self.hparams.eval_max_new_tokens).texts

    def export(self, out_dir: str | os.PathLike) -> Path:
        """A transformers folder: ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained(out_dir)``."""
        return save_policy(self.policy, self.tokenizer, out_dir)
