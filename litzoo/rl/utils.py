r"""Small helpers shared by the RL modules.

* :func:`polyak_update`: soft target-network update (Lillicrap et al., "Continuous control with deep
  reinforcement learning" (DDPG), ICLR 2016; used by TD3 and SAC):
  :math:`\theta' \leftarrow \tau\,\theta + (1 - \tau)\,\theta'`, with :math:`\tau` the weight of the
  *online* network (e.g. 0.005; ``tau = 1`` is a hard copy, as DQN's periodic target sync).
* :func:`flush_denormals`: a context in which the CPU flushes denormal floats to zero (why: Adam's first moment
  of a dead ReLU unit decays geometrically into the denormal range and stays there, where every CPU
  operation on it is ~100x slower).
* :func:`explained_variance`: :math:`1 - \mathrm{Var}[y - \hat y] / \mathrm{Var}[y]`, the fraction of the
  return variance a critic explains (1 perfect, 0 no better than a constant, < 0 worse).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor


@torch.no_grad()
def polyak_update(source_params: Iterable[Tensor], target_params: Iterable[Tensor], tau: float) -> None:
    r"""In place, without gradients: ``target <- tau * source + (1 - tau) * target`` for each pair.

    Pass e.g. ``online.parameters()`` and ``target.parameters()`` (and the two networks'
    ``buffers()`` if they hold running statistics). Floating-point tensors are interpolated with one
    fused ``torch._foreach_lerp_`` call; integer tensors (e.g. BatchNorm's ``num_batches_tracked``)
    are copied.
    """
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau={tau!r} must be in [0, 1] (the weight of the source/online network; e.g. 0.005).")
    sources, targets = list(source_params), list(target_params)
    if len(sources) != len(targets):
        raise ValueError(
            f"got {len(sources)} source and {len(targets)} target tensors; pass matching lists, "
            "e.g. online.parameters() and target.parameters() of two identical networks."
        )
    float_src, float_tgt = [], []
    for i, (src, tgt) in enumerate(zip(sources, targets)):
        if src.shape != tgt.shape:
            raise ValueError(f"tensor {i}: source shape {tuple(src.shape)} != target shape {tuple(tgt.shape)}.")
        if tgt.is_floating_point():
            float_src.append(src.to(tgt))
            float_tgt.append(tgt)
        else:
            tgt.copy_(src)
    if float_tgt:
        # lerp(target, source, tau) = target + tau * (source - target); exact copy at tau = 1.
        torch._foreach_lerp_(float_tgt, float_src, float(tau))


def flushing_denormals() -> bool:
    """Whether the CPU currently flushes denormal floats to zero (``torch.set_flush_denormal`` has no getter)."""
    return torch.tensor(1e-40, dtype=torch.float32, device="cpu").item() == 0.0  # whatever the default dtype/device


@contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[None]:
    """Within the block, CPU floats below ``torch.finfo(torch.float32).tiny`` (1.2e-38) are read and written as 0
    (``torch.set_flush_denormal``, the FTZ/DAZ flags of this thread); the caller's setting comes back after.

    An AdamW step of a 400-300 critic spends more time on the denormal first moments of its dead units than
    on everything else: with beta1 = 0.9 a zero gradient shrinks the moment into the denormal range in
    ~800 steps, and the smallest denormal times 0.9 rounds back to itself, so it never reaches 0. Values so
    small change no parameter (a weight of 1e-3 plus 1e-38 rounds to itself). No effect on CUDA tensors or
    on a CPU without the flags; with several intra-op threads only the calling thread flushes.
    """
    if not enabled or flushing_denormals() or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


@torch.no_grad()
def explained_variance(y_pred: Tensor, y_true: Tensor) -> Tensor:
    """``1 - Var[y_true - y_pred] / Var[y_true]`` as a 0-dim tensor (NaN when ``Var[y_true] == 0``)."""
    if y_pred.shape != y_true.shape:
        raise ValueError(f"y_pred {tuple(y_pred.shape)} and y_true {tuple(y_true.shape)} must have the same shape.")
    var_y = y_true.var(unbiased=False)
    if var_y == 0:
        return torch.tensor(float("nan"), device=y_true.device)
    return 1.0 - (y_true - y_pred).var(unbiased=False) / var_y
