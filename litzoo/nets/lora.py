r"""LoRA adapters through peft: argument checks, injection, freezing, unloading and the diffusers file (no Lightning).

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models": a frozen linear map ``W`` (d_out x d_in) gets a
trainable low-rank update,

    h = W x + (alpha / r) B A dropout(x),    A: r x d_in,  B: d_out x r,  B = 0 at the start,

so the adapted model starts as the base and only ``r (d_in + d_out)`` numbers per layer train. ``merge`` folds
``W <- W + (alpha / r) B A`` (a plain model again, no inference overhead).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional, Sequence

import torch

from litzoo.checks import check_non_negative_int, check_positive, check_range

# diffusers' examples/dreambooth/train_dreambooth_lora_sd3.py: the joint-attention projections of both streams.
DIT_LORA_TARGETS = ("attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out", "attn.to_k",
                    "attn.to_out.0", "attn.to_q", "attn.to_v")
# The attention and MLP projections of Llama/Qwen2-style causal LMs (what TRL/peft recipes adapt).
CAUSAL_LM_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # the file diffusers' save/load_lora_weights use


def check_lora_args(rank: int, alpha: Optional[float], dropout: float,
                    target_modules: Optional[Sequence[str]]) -> None:
    """Raise a ``ValueError`` naming the argument for LoRA hyperparameters peft cannot take."""
    check_non_negative_int("lora_rank", rank)  # 0 = no adapters
    if alpha is not None:
        check_positive("lora_alpha", alpha)
    check_range("lora_dropout", dropout, 0.0, 1.0, high_open=True)
    if target_modules is not None and (isinstance(target_modules, str) or not target_modules
                                       or not all(isinstance(t, str) and t for t in target_modules)):
        raise ValueError(f"lora_target_modules={target_modules!r} must be a non-empty list of module names (e.g. "
                         "['to_q', 'to_v']), each matched as peft does: the full name or its last dotted parts.")


def _linear_names(model: torch.nn.Module) -> list[str]:
    """The short names LoRA can target: the last dotted part of each linear layer (two parts for ``to_out.0``)."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name:
            parts = name.split(".")
            names.add(".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1])
    return sorted(names)


def lora_config(model: torch.nn.Module, rank: int, alpha: Optional[float], dropout: float,
                target_modules: Sequence[str], task_type: Optional[str] = None):
    """A peft ``LoraConfig`` for ``model``; every target must match a module (peft matches a name or a dotted
    suffix), else a ``ValueError`` naming the linear layers there are. ``alpha=None`` is ``rank`` (scale 1, as
    diffusers' LoRA scripts do); diffusers' Gaussian init of ``A`` (``B = 0``)."""
    from peft import LoraConfig

    names = [n for n, _ in model.named_modules() if n]
    missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise ValueError(f"lora_target_modules {missing} match no module of the {type(model).__name__}. Its linear "
                         f"layers are named (last parts): {', '.join(_linear_names(model))}; set "
                         "lora_target_modules to some of those.")
    return LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha, lora_dropout=dropout,
                      target_modules=list(target_modules), init_lora_weights="gaussian", task_type=task_type)


def is_lora_parameter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def train_only_lora(module: torch.nn.Module) -> int:
    """``requires_grad`` on the adapter weights only (everything else in ``module`` frozen); returns their count."""
    trainable = 0
    for name, param in module.named_parameters():
        param.requires_grad_(is_lora_parameter(name))
        trainable += param.numel() if param.requires_grad else 0
    return trainable


def without_lora(model: torch.nn.Module, merge: bool) -> torch.nn.Module:
    """A copy of ``model`` with its LoRA layers replaced by their base layers: the frozen base (``merge=False``) or
    the adapted model as plain layers (``merge=True``: ``W + (alpha / r) B A``). ``model`` is left as it is."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            if merge:
                module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, module.get_base_layer())
    for attribute in ("peft_config", "_hf_peft_config_loaded"):  # diffusers/transformers' adapter bookkeeping
        if attribute in vars(model):
            delattr(model, attribute)
    return model


def save_sd3_lora(transformer: torch.nn.Module, out_dir: str | Path) -> Path:
    """``out_dir/pytorch_lora_weights.safetensors`` as ``StableDiffusion3Pipeline.save_lora_weights`` writes it
    (keys ``transformer.<module>.lora_A/B.weight``, the ``LoraConfig`` in the metadata so ``lora_alpha`` survives):
    ``pipe.load_lora_weights(out_dir)`` / ``transformer.load_lora_adapter(out_dir, weight_name=...)`` read it."""
    from diffusers import StableDiffusion3Pipeline
    from peft import get_peft_model_state_dict

    StableDiffusion3Pipeline.save_lora_weights(
        out_dir, transformer_lora_layers=get_peft_model_state_dict(transformer), weight_name=LORA_WEIGHT_NAME,
        transformer_lora_adapter_metadata=transformer.peft_config["default"].to_dict())
    return Path(out_dir) / LORA_WEIGHT_NAME
