"""What the reasoning fine-tuners of a causal LM (CoTSFT, KimiRL) share: :class:`CausalLMModule`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from litzoo.base import CheckpointError, LitzooModule, checkpoint_being_restored, load_checkpoint, prepare_export_dir
from litzoo.model_card import card_metadata, causal_lm_card, write_model_card
from litzoo.nets.lora import CAUSAL_LM_LORA_TARGETS, check_lora_args, lora_config, train_only_lora, without_lora
from litzoo.optim import adamw_with_warmup_cosine
from litzoo.reasoning.generation import generate
from litzoo.reasoning.meters import LevelMeter, level_keys
from litzoo.reasoning.policy import (
    build_policy,
    build_policy_from_spec,
    encode_chat_prompt,
    policy_spec,
    policy_spec_differences,
    save_policy,
)
from litzoo.reasoning.rewards import score
from litzoo.sharding import gathered

# The checkpoint entry with the policy's config and tokenizer (litzoo.reasoning.policy.policy_spec): a checkpoint
# rebuilds its policy without the folder its pretrained_path names, which may have moved or been overwritten.
POLICY_KEY = "causal_lm_policy"
LORA_BASE = "base"  # the subfolder of a LoRA export with the frozen base model (a transformers folder)


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
        if "lora_rank" in h:
            check_lora_args(h.lora_rank, h.lora_alpha, h.lora_dropout, h.lora_target_modules)
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
        self.add_lora()
        self.meter = LevelMeter(meter_metrics)

    def rebuild_policy(self, spec: dict[str, Any]) -> None:
        """Replace the policy and tokenizer by those of a :func:`~litzoo.reasoning.policy.policy_spec` (fresh
        weights, on the old policy's device); subclasses drop what they derived from the old policy."""
        device = next(self.policy.parameters()).device
        self.policy, self.tokenizer = build_policy_from_spec(spec)
        self.add_lora()
        self.policy.to(device)

    # ----------------------------------------------------------------- LoRA
    def add_lora(self) -> None:
        """Wrap the policy in a peft ``PeftModelForCausalLM`` with LoRA adapters from the hyperparameters
        ``lora_rank``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules`` (``None``:
        :data:`~litzoo.nets.lora.CAUSAL_LM_LORA_TARGETS`), as TRL does; only the adapters train from then on (the
        optimizer skips frozen weights). Nothing for ``lora_rank=0``.

        Checkpoints keep the whole state dict (frozen base included), like the checkpoints without adapters: a
        checkpoint rebuilds its policy without the folder ``pretrained_path`` names."""
        if not self.lora_rank:
            return
        from peft import get_peft_model

        h = self.hparams
        config = lora_config(self.policy, h.lora_rank, h.lora_alpha, h.lora_dropout,
                             h.lora_target_modules or CAUSAL_LM_LORA_TARGETS, task_type="CAUSAL_LM")
        self.policy = get_peft_model(self.policy, config)
        train_only_lora(self.policy)

    def _export_lora(self, out_dir: Path, card: dict[str, Any]) -> Path:
        """A peft adapter folder (``PeftModel.from_pretrained(base, out_dir)``) with the tokenizer, the frozen base
        model in ``out_dir/base`` (``AutoModelForCausalLM.from_pretrained``); ``adapter_config.json`` names that
        folder (absolute path) as ``base_model_name_or_path``, so ``AutoPeftModelForCausalLM`` finds it in place."""
        base_dir = save_policy(without_lora(self.policy.get_base_model(), merge=False), self.tokenizer,
                               out_dir / LORA_BASE, card=card)
        bos, chat = getattr(self.tokenizer, "bos_token", None), bool(getattr(self.tokenizer, "chat_template", None))
        write_model_card(base_dir, **causal_lm_card(base_dir, bos, chat_template=chat, **card), notes=(
            "**This folder is the frozen base of the LoRA adapters in the parent folder**: alone it is the model "
            "before fine-tuning. Load the adapters on it with `PeftModel.from_pretrained(base, parent_folder)`."))
        self.policy.save_pretrained(out_dir, safe_serialization=True)
        config_path = out_dir / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config_path.write_text(json.dumps({**config, "base_model_name_or_path": str(base_dir.resolve())}, indent=2))
        for file in base_dir.iterdir():  # the tokenizer, as save_policy wrote it (byte-level, left padding)
            if file.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template")):
                shutil.copy(file, out_dir / file.name)
        write_model_card(out_dir, **causal_lm_card(out_dir, bos, lora_base=LORA_BASE, chat_template=chat, **card))
        return out_dir

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
        """Greedy responses to prompt texts (e.g. ``"47+38="``; through the tokenizer's chat template if it has one).
        Sharded (FSDP2): a collective, so every rank must call it (with its own prompts)."""
        ids = [encode_chat_prompt(self.tokenizer, p) for p in prompts]
        with gathered(self.policy):
            return generate(self.policy, self.tokenizer, ids, greedy=True,
                            max_new_tokens=max_new_tokens or self.answer_max_new_tokens).texts

    def export(self, out_dir: str | os.PathLike, overwrite: bool = False, merge_lora: bool = False) -> Path:
        """A transformers folder: ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained(out_dir)``. With LoRA a
        peft adapter folder on the frozen base in ``out_dir/base`` (:meth:`_export_lora`), or with ``merge_lora`` the
        transformers folder of the merged model."""
        out_dir = prepare_export_dir(out_dir, overwrite)
        card = {"method": type(self).__name__, "recipe": dict(self.hparams),
                "max_new_tokens": self.answer_max_new_tokens, **card_metadata(self)}
        if self.lora_rank and not merge_lora:
            return self._export_lora(out_dir, card)
        policy = without_lora(self.policy.get_base_model(), merge=True) if self.lora_rank else self.policy
        return save_policy(policy, self.tokenizer, out_dir, card=card)

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
