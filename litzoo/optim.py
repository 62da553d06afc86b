"""AdamW with decoupled weight decay, parameter groups, and the warmup + cosine schedule.

Every litzoo module builds its optimizer here, so "which parameters decay" is decided once.

Why AdamW and not Adam + L2 (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"):
Adam with an L2 penalty adds ``lambda * theta`` to the gradient ``g_t`` *before* the moment
estimates, so the decay term is rescaled by the adaptive denominator ``sqrt(v_hat_t) + eps``:
weights with large gradient history are barely regularised, weights with small ones too much.
AdamW takes the decay out of the loss and applies it directly to the weights,

    m_t = beta1 m_{t-1} + (1 - beta1) g_t
    v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
    theta_t = theta_{t-1} - lr * ( m_hat_t / (sqrt(v_hat_t) + eps)  +  lambda * theta_{t-1} ),

so every weight shrinks at the same relative rate ``lr * lambda`` whatever its gradient scale,
and the moments see only the loss gradient.

No decay on biases, normalisation weights, embeddings and positional tables: shrinking them
towards zero is not regularisation (a LayerNorm gain of 0 kills the signal; an embedding row
of a rare token would be decayed on every step it is not used).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks

# Modules whose weights never decay (normalisation gains and lookup tables).
_NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (
    nn.Embedding,
    nn.EmbeddingBag,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    getattr(nn, "RMSNorm", nn.LayerNorm),
)
# Parameters named like positional tables or norm gains in custom modules (diffusers' RMSNorm,
# transformers' Qwen2RMSNorm, learned context tokens ...).
# Matched against the parameter's own name (last dotted part), so a Linear *inside* a time-embedding
# MLP still decays.
_NO_DECAY_NAME = re.compile(r"^(bias|pos_embed\w*|position\w*|\w*norm\w*|context_tokens|null_\w*)$", re.I)


def no_decay_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters of ``model`` that must not be weight-decayed."""
    names: set[str] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if (
                isinstance(module, _NO_DECAY_MODULES)
                or "norm" in type(module).__name__.lower()
                or param.ndim < 2
                or _NO_DECAY_NAME.match(param_name)
            ):
                names.add(full)
    return names


def adamw_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two parameter groups for AdamW: decayed weights and the no-decay set (see module docstring)."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}.")
    no_decay = no_decay_parameter_names(model)
    decay_params, no_decay_params = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay_params if name in no_decay else decay_params).append(param)
    groups = [{"params": decay_params, "weight_decay": weight_decay}]
    if no_decay_params:
        groups.append({"params": no_decay_params, "weight_decay": 0.0})
    return groups


def build_adamw(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.0,
    betas: Iterable[float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over :func:`adamw_param_groups`, with the fused kernel (:func:`fused_or_foreach`)."""
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}.")
    return _adamw(adamw_param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps)


def _adamw(groups: list[dict], **kwargs) -> torch.optim.AdamW:
    optimizer = torch.optim.AdamW(groups, **kwargs, **fused_or_foreach([p for g in groups for p in g["params"]]))
    # A fused optimizer advertises that its step unscales fp16 gradients itself; Lightning's mixed-precision
    # plugin then refuses gradient clipping (also for bf16, which has no scaler). Without the flag a GradScaler
    # unscales the gradients before the step, as for any other optimizer, so clipping sees true gradients.
    optimizer._step_supports_amp_scaling = False
    return optimizer


def fused_or_foreach(params: Sequence[torch.Tensor]) -> dict[str, bool]:
    """AdamW kernel choice: ``fused`` (one kernel for all parameters) on CPU, CUDA and MPS, else ``foreach``.

    torch's default on CPU is the per-tensor Python loop. On CPU the fused kernel is also ~2.7x
    faster than the foreach chain (TD3's 400-300 nets: 0.26 vs 0.70 ms per step; A2C's 64-64 nets:
    0.05 vs 0.14 ms, 1 thread), which is most of an update's non-matmul time in small RL networks.
    """
    fusable = bool(params) and all(p.device.type in ("cpu", "cuda", "mps") and p.is_floating_point() for p in params)
    return {"fused": True} if fusable else {"foreach": True}


def _plain_fused_group(group: dict) -> bool:
    """A group whose step is the fused AdamW kernel with float lr and no amsgrad, maximize, capturable,
    differentiable or L2 (non-decoupled) decay: what :func:`fused_adamw_step` launches itself."""
    return (group["fused"] and not (group["amsgrad"] or group["maximize"] or group["capturable"]
                                    or group["differentiable"] or torch.is_tensor(group["lr"]))
            and group["decoupled_weight_decay"])


def fused_adamw_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, the same to the bit, with less Python around torch's fused AdamW kernel.

    ``step()`` wraps the ``torch._fused_adamw_`` kernel in per-step Python (profiler context, hook loops, dynamo and
    grad-mode wrappers, regrouping the lists by device and dtype): for DDPG's 400-300 networks ~139 us per step
    where the kernel takes ~108 us (one CPU thread, ``bench/adamw_step.py``). Here each step reads the lists from
    the groups and the optimizer's own state (so checkpoints, state resets and added groups are followed as torch
    follows them), bumps the step counters and launches the same kernel per group (~116 us). Parameters without a
    gradient are skipped as torch skips them. Anything else -- another optimizer, a group setting the kernel call
    here does not cover, step hooks, a patched ``step`` (an lr scheduler's counter), a gradient scaler, a sparse
    gradient, a parameter without state yet, mixed devices or dtypes in a group -- takes ``optimizer.step()``,
    decided before anything is changed. Not kept: torch's profiler span for the step
    (``Optimizer.step#AdamW.step``) and its check against CUDA-graph capture with ``capturable=False``.
    """
    if (type(optimizer) is not torch.optim.AdamW or optimizer._optimizer_step_pre_hooks
            or optimizer._optimizer_step_post_hooks or "step" in vars(optimizer)
            or _global_optimizer_pre_hooks or _global_optimizer_post_hooks
            or getattr(optimizer, "grad_scale", None) is not None or getattr(optimizer, "found_inf", None) is not None):
        return optimizer.step()
    state, work = optimizer.state, []
    for group in optimizer.param_groups:
        if not _plain_fused_group(group):
            return optimizer.step()
        params, grads, exp_avgs, exp_avg_sqs, steps = lists = [], [], [], [], []
        for p in group["params"]:
            grad = p.grad
            if grad is None:  # torch skips it (and its step counter): TD3's actor on critic-only updates
                continue
            entry = state.get(p)
            if not entry or grad.is_sparse:  # torch's step creates the state / refuses sparse gradients
                return optimizer.step()
            params.append(p), grads.append(grad), steps.append(entry["step"])
            exp_avgs.append(entry["exp_avg"]), exp_avg_sqs.append(entry["exp_avg_sq"])
        if params and len({(p.device, p.dtype) for p in params}) > 1:
            return optimizer.step()
        if params:
            work.append((group, lists))
    with torch.no_grad():
        for group, (params, grads, exp_avgs, exp_avg_sqs, steps) in work:
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=group["lr"],
                                beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                                maximize=False, grad_scale=None, found_inf=None)


def _merged_groups(networks: Sequence[tuple[torch.nn.Module, float]], weight_decay: float) -> list[dict]:
    """Per-network ``(lr, weight_decay)`` groups from :func:`adamw_param_groups`, equal ones merged."""
    merged: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for net, lr in networks:
        for group in adamw_param_groups(net, weight_decay):
            merged.setdefault((float(lr), group["weight_decay"]), []).extend(group["params"])
    return [{"params": params, "lr": lr, "weight_decay": wd} for (lr, wd), params in merged.items() if params]


def adamw_for_networks(
    networks: Sequence[tuple[torch.nn.Module, float]], weight_decay: float = 0.0, eps: float = 1e-8
) -> torch.optim.AdamW:
    """One AdamW over several networks, each with its own learning rate.

    Parameter groups come from :func:`litzoo.optim.adamw_param_groups` (no decay on biases and
    norms); groups with equal ``(lr, weight_decay)`` are merged, because every group costs its own
    chain of foreach kernels per step — with tiny RL networks that overhead, not the arithmetic,
    dominates an update. Fused kernel (:func:`fused_or_foreach`).
    """
    groups = _merged_groups(networks, weight_decay)
    return _adamw(groups, lr=groups[0]["lr"], eps=eps)


def rmsprop_for_networks(
    networks: Sequence[tuple[torch.nn.Module, float]], weight_decay: float = 0.0, eps: float = 1e-5,
    alpha: float = 0.99,
) -> torch.optim.RMSprop:
    """RMSprop (Tieleman & Hinton 2012) over the same groups, for recipes that are defined with it.

    A2C (Mnih et al. 2016) and its rl-baselines3-zoo settings use RMSprop: no momentum and no bias
    correction, so with ``v_0 = 0`` the first steps are up to ``1/sqrt(1 - alpha)`` = 10x the lr and
    shrink to ~lr as ``v`` fills; AdamW's bias-corrected steps are ~lr from the start, which is why
    the same lr learns CartPole more slowly with AdamW. Its ``weight_decay`` is torch's L2 penalty
    (coupled, unlike AdamW's); the no-decay groups still apply.
    """
    groups = _merged_groups(networks, weight_decay)
    return torch.optim.RMSprop(groups, lr=groups[0]["lr"], alpha=alpha, eps=eps, foreach=True)


def warmup_cosine_lambda(warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
    """Multiplier on the base lr: linear warmup for ``warmup_steps``, then cosine to ``min_lr_ratio``.

    ``total_steps <= 0`` means "no decay after warmup" (constant lr).
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}.")

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if total_steps <= warmup_steps:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return multiplier


def adamw_with_warmup_cosine(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: Iterable[float] = (0.9, 0.999),
    warmup_steps: int = 0,
    total_steps: int = 0,
    min_lr_ratio: float = 0.0,
) -> dict:
    """What a LightningModule's ``configure_optimizers`` returns: AdamW + per-step warmup/cosine."""
    optimizer = build_adamw(model, lr=lr, weight_decay=weight_decay, betas=betas)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine_lambda(warmup_steps, total_steps, min_lr_ratio)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
