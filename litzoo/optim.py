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
import weakref
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


class _FusedAdamWPlan:
    """One fused AdamW's tensors, listed once per group: parameters, moments and step counters, and what they were
    read from (the state dict, each group's parameter list, each parameter's state entry) to see when it changed."""

    __slots__ = ("state", "groups", "param_lists", "entries", "params", "exp_avgs", "exp_avg_sqs", "steps")

    def __init__(self, optimizer: torch.optim.AdamW, entries, params, exp_avgs, exp_avg_sqs, steps) -> None:
        # load_state_dict replaces the state dict and the group list; add_param_group grows the list; a group's
        # parameter can be swapped in place; a state reset (state.clear(), a new entry) replaces a parameter's entry,
        # or a tensor in it: each is checked every step
        self.state, self.groups = optimizer.state, optimizer.param_groups
        self.param_lists = [group["params"] for group in optimizer.param_groups]
        self.entries, self.params, self.exp_avgs, self.exp_avg_sqs, self.steps = entries, params, exp_avgs, exp_avg_sqs, steps

    def matches(self, optimizer: torch.optim.Optimizer) -> bool:
        groups, state = optimizer.param_groups, optimizer.state
        if state is not self.state or groups is not self.groups or len(groups) != len(self.params):
            return False
        for group, param_list, *lists in zip(groups, self.param_lists, self.params, self.entries, self.exp_avgs,
                                             self.exp_avg_sqs, self.steps):
            if group["params"] is not param_list or len(param_list) != len(lists[0]) or not _plain_fused_group(group):
                return False
            for current, p, entry, exp_avg, exp_avg_sq, step in zip(param_list, *lists):
                if (current is not p or state.get(p) is not entry or entry.get("exp_avg") is not exp_avg
                        or entry.get("exp_avg_sq") is not exp_avg_sq or entry.get("step") is not step):
                    return False
        return True


def _plain_fused_group(group: dict) -> bool:
    """A group whose step is the fused AdamW kernel with float lr and no amsgrad, maximize, capturable,
    differentiable or L2 (non-decoupled) decay: what the plan launches."""
    return (group["fused"] and not (group["amsgrad"] or group["maximize"] or group["capturable"]
                                    or group["differentiable"] or torch.is_tensor(group["lr"]))
            and group["decoupled_weight_decay"])


_PLANS: "weakref.WeakKeyDictionary[torch.optim.Optimizer, _FusedAdamWPlan]" = weakref.WeakKeyDictionary()


def _fused_adamw_plan(optimizer: torch.optim.Optimizer) -> _FusedAdamWPlan | None:
    """The plan for ``optimizer`` if :func:`fused_adamw_step` may step it itself, else None: a plain fused AdamW
    (no amsgrad, maximize, capturable, differentiable, L2 decay or tensor lr), one device and dtype per group, every
    parameter's state initialised (the first step is torch's, which creates it)."""
    if type(optimizer) is not torch.optim.AdamW:
        return None
    entries, params, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
    for group in optimizer.param_groups:
        if not group["params"] or not _plain_fused_group(group):
            return None
        if len({(p.device, p.dtype) for p in group["params"]}) != 1:
            return None
        states = [optimizer.state.get(p) for p in group["params"]]
        if any(not s or "step" not in s for s in states):
            return None
        entries.append(states)
        params.append(list(group["params"]))
        exp_avgs.append([s["exp_avg"] for s in states])
        exp_avg_sqs.append([s["exp_avg_sq"] for s in states])
        steps.append([s["step"] for s in states])
    return _FusedAdamWPlan(optimizer, entries, params, exp_avgs, exp_avg_sqs, steps)


def fused_adamw_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``, the same to the bit, with less Python around torch's fused AdamW kernel.

    ``step()`` wraps the ``torch._fused_adamw_`` kernel in per-step Python (profiler context, hook loops, a state
    look-up per parameter, regrouping the lists by device and dtype): for DDPG's 400-300 networks 133 us per step
    where the kernel takes 105 us (one CPU thread, ``bench/adamw_step.py``). Here the lists are built once and
    each step checks they still hold, collects the gradients, bumps the step counters and launches the same
    kernel per group with the group's current hyperparameters (111 us). The optimizer's own state tensors are
    updated, so its ``state_dict`` (checkpoints) and a later ``optimizer.step()`` are unaffected. Anything else --
    another optimizer, a setting the plan does not cover, step hooks, a patched ``step`` (an lr scheduler's
    counter), a gradient scaler, a sparse gradient, uninitialised or reset state -- takes ``optimizer.step()``
    (group settings are checked at every step); parameters without a gradient are skipped as torch skips them.
    Not kept: torch's profiler span for the step (``Optimizer.step#AdamW.step``) and its check against CUDA-graph
    capture with ``capturable=False``.
    """
    plan = _PLANS.get(optimizer)
    if plan is None or not plan.matches(optimizer):
        plan = _fused_adamw_plan(optimizer)
        if plan is None:
            return optimizer.step()
        _PLANS[optimizer] = plan
    if (optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks or "step" in vars(optimizer)
            or _global_optimizer_pre_hooks or _global_optimizer_post_hooks
            or getattr(optimizer, "grad_scale", None) is not None or getattr(optimizer, "found_inf", None) is not None):
        return optimizer.step()
    all_grads = [[p.grad for p in params] for params in plan.params]
    if any(g is not None and g.is_sparse for grads in all_grads for g in grads):
        return optimizer.step()  # (which refuses them before counting a step)
    with torch.no_grad():
        for group, params, grads, exp_avgs, exp_avg_sqs, steps in zip(
                optimizer.param_groups, plan.params, all_grads, plan.exp_avgs, plan.exp_avg_sqs, plan.steps):
            if any(g is None for g in grads):  # torch skips these (and their step counters): TD3's delayed actor
                keep = [i for i, g in enumerate(grads) if g is not None]
                params, grads, exp_avgs, exp_avg_sqs, steps = (
                    [xs[i] for i in keep] for xs in (params, grads, exp_avgs, exp_avg_sqs, steps))
                if not keep:
                    continue
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
