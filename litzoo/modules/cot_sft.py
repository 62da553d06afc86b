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

from typing import Any, Optional

import torch
import torch.nn.functional as F

from litzoo.bases.causal_lm import CausalLMModule
from litzoo.checks import check_non_negative_int, check_positive, check_positive_int
from litzoo.reasoning.generation import position_ids_from_mask
from litzoo.reasoning.meters import level_key


class CoTSFT(CausalLMModule):
    """Supervised fine-tuning of a causal LM on reasoning traces, loss on response tokens only.

    Args:
        model_config: plain values for a fresh model (``AutoConfig.for_model``; ``"model_type"``
            default ``"qwen2"``; ``None`` = the tiny CPU demo model,
            :data:`litzoo.reasoning.policy.TINY_QWEN2`). Ignored with ``pretrained_path``.
        pretrained_path: a local folder with a causal LM and its tokenizer (never the hub).
        extra_chars: characters added to the char tokenizer of a fresh model.
        lr, weight_decay, adam_betas, warmup_steps, total_steps, min_lr_ratio: AdamW with linear
            warm-up and cosine decay to ``min_lr_ratio * lr`` (``total_steps=0``: the trainer's estimate).
        eval_max_new_tokens: generation budget of the greedy validation answers.
        lora_rank, lora_alpha, lora_dropout, lora_target_modules: LoRA adapters (peft) on the policy, only they
            train (``lora_rank=0``: off, the whole policy trains; ``lora_alpha=None``: the rank; targets default
            :data:`litzoo.nets.lora.CAUSAL_LM_LORA_TARGETS`, the attention and MLP projections). ``export`` then
            writes a peft adapter folder (``export(..., merge_lora=True)``: the merged model).
        gradient_checkpointing, fsdp_blocks: recompute block activations in backward (same gradients, less memory);
            the block classes FSDP shards one by one (default: the library's; see ``LitzooModule.configure_model``).
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
        lora_rank: int = 0,
        lora_alpha: Optional[float] = None,
        lora_dropout: float = 0.0,
        lora_target_modules: Optional[list[str]] = None,
        gradient_checkpointing: bool = False,
        fsdp_blocks: Optional[list[str]] = None,
    ) -> None:
        super().__init__()
        check_positive("lr", lr)
        check_positive_int("eval_max_new_tokens", eval_max_new_tokens)
        check_non_negative_int("warmup_steps", warmup_steps)
        check_non_negative_int("total_steps", total_steps)
        self.save_hyperparameters()
        self.init_policy(("pass@1", "response_length"))

    @property
    def answer_max_new_tokens(self) -> int:
        return self.hparams.eval_max_new_tokens

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
        # Shift the labels, not the logits: slicing (B, T, V) logits copies them (296 MiB for a 152 k vocabulary at
        # 2 x 256 tokens) and scatters their gradient into a zeroed copy; the last position predicts nothing.
        labels = F.pad(batch["labels"][:, 1:], (0, 1), value=-100)  # (B, T)
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)

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
        values = self.greedy_scores(problems)
        self.meter.add([level_key(p) for p in problems.problems], **values)
