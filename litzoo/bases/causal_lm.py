"""What the reasoning fine-tuners of a causal LM (CoTSFT, KimiRL) share: :class:`CausalLMModule`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from litzoo.base import CheckpointError, LitzooModule, checkpoint_being_restored, load_checkpoint, prepare_export_dir
from litzoo.model_card import card_metadata
from litzoo.optim import adamw_with_warmup_cosine
from litzoo.reasoning.generation import generate
from litzoo.reasoning.meters import LevelMeter, level_keys
from litzoo.reasoning.policy import (
    build_policy,
    build_policy_from_spec,
    encode_prompt,
    policy_spec,
    policy_spec_differences,
    save_policy,
)
from litzoo.reasoning.rewards import score
from litzoo.sharding import gathered

# The checkpoint entry with the policy's config and tokenizer (litzoo.reasoning.policy.policy_spec): a checkpoint
# rebuilds its policy without the folder its pretrained_path names, which may have moved or been overwritten.
POLICY_KEY = "causal_lm_policy"


def stored_policy_spec(checkpoint_path: str) -> Optional[dict[str, Any]]:
    """The policy spec a checkpoint file carries, else ``None`` (also for an unreadable file: its load fails later
    with the error that says why). Memory-mapped: the weights are not read."""
    try:  # a sharded checkpoint folder too (its meta.pt carries the spec)
        checkpoint = load_checkpoint(checkpoint_path, mmap=True)
    except Exception:
        return None
    return checkpoint.get(POLICY_KEY) if isinstance(checkpoint, dict) else None


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
        """``self.policy, self.tokenizer`` from the hyperparameters, and the validation meter.

        Rebuilt from a checkpoint (``load_from_checkpoint``, ``train.py fit --ckpt_path``) that carries the policy's
        config and tokenizer, the policy is built from those: ``pretrained_path`` is not read (the weights come from
        the checkpoint), so the folder may have moved or been overwritten since.
        """
        h = self.hparams
        restoring = checkpoint_being_restored()
        stored = stored_policy_spec(restoring) if restoring else None
        if stored is not None:
            self.policy, self.tokenizer = build_policy_from_spec(stored)
        else:
            if restoring and h.pretrained_path is not None and not Path(h.pretrained_path).is_dir():
                raise CheckpointError(
                    f"Checkpoint {restoring!r} does not carry its policy's config and tokenizer (written by an "
                    f"older litzoo), and the folder it started from, pretrained_path={h.pretrained_path!r}, is gone. "
                    f"Give the folder's new place: {type(self).__name__}.load_from_checkpoint(ckpt, "
                    "pretrained_path='NEW/FOLDER') (its config and tokenizer are read; the weights come from the "
                    "checkpoint), or put the folder back.")
            try:
                self.policy, self.tokenizer = build_policy(h.model_config, h.pretrained_path, h.extra_chars)
            except ValueError as err:
                if h.pretrained_path is None or Path(h.pretrained_path).is_dir():
                    raise
                raise ValueError(
                    f"{err} To resume or export a checkpoint of a run that started from a folder since moved: "
                    f"checkpoints carry the policy, so use {type(self).__name__}.load_from_checkpoint(ckpt) or "
                    "train.py fit --ckpt_path ckpt.") from None
        self.meter = LevelMeter(meter_metrics)

    def rebuild_policy(self, spec: dict[str, Any]) -> None:
        """Replace the policy and tokenizer by those of a :func:`~litzoo.reasoning.policy.policy_spec` (fresh
        weights, on the old policy's device); subclasses drop what they derived from the old policy."""
        device = next(self.policy.parameters()).device
        self.policy, self.tokenizer = build_policy_from_spec(spec)
        self.policy.to(device)

    @property
    def answer_max_new_tokens(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must say how many tokens an answer may have.")

    # ----------------------------------------------------------------- validation
    def greedy_scores(self, problems) -> dict[str, Tensor]:
        """Greedy responses to a ``ProblemBatch`` (``problems``, ``prompt_ids``): verifier pass@1 and lengths."""
        with gathered(self.policy):  # sharded: each rank stops at its own length (see litzoo.sharding.gathered)
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
        return adamw_with_warmup_cosine(self.policy, lr=h.lr, weight_decay=h.weight_decay, betas=h.adam_betas,
                                        warmup_steps=h.warmup_steps, total_steps=self.total_training_steps(),
                                        min_lr_ratio=h.min_lr_ratio)

    # ----------------------------------------------------------------- use
    @torch.no_grad()
    def answer(self, prompts: list[str], max_new_tokens: Optional[int] = None) -> list[str]:
        """Greedy responses to prompt texts (e.g. ``"47+38="``)."""
        ids = [encode_prompt(self.tokenizer, p) for p in prompts]
        with gathered(self.policy):
            return generate(self.policy, self.tokenizer, ids, greedy=True,
                            max_new_tokens=max_new_tokens or self.answer_max_new_tokens).texts

    def export(self, out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
        """A transformers folder: ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained(out_dir)``."""
        return save_policy(self.policy, self.tokenizer, prepare_export_dir(out_dir, overwrite), card={
            "method": type(self).__name__, "recipe": dict(self.hparams), "max_new_tokens": self.answer_max_new_tokens,
            **card_metadata(self)})

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[POLICY_KEY] = policy_spec(self.policy, self.tokenizer)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        stored = checkpoint.get(POLICY_KEY)
        if stored is None:  # an older checkpoint: the module's policy must match its state dict
            return
        differences = policy_spec_differences(policy_spec(self.policy, self.tokenizer), stored)
        if differences:
            # e.g. Trainer.fit(ckpt_path=...) with pretrained_path overwritten by a new SFT run: the run resumes with
            # the policy it was trained with.
            rank_zero_warn(
                f"The checkpoint's policy differs from this {type(self).__name__}'s (built from pretrained_path="
                f"{self.hparams.pretrained_path!r}, model_config={self.hparams.model_config!r}) in: "
                f"{', '.join(differences)}. The checkpoint's config and tokenizer are used.", category=UserWarning)
            self.rebuild_policy(stored)
