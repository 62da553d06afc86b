r"""Trust-region pieces of TRPO: conjugate gradient, Fisher-vector products, step size, line search.

Schulman, Levine, Moritz, Jordan, Abbeel, "Trust Region Policy Optimization", ICML 2015
(arXiv:1502.05477), Sec. 5-6 and Appendix C. TRPO maximises the surrogate advantage

.. math::  L_{\theta_{old}}(\theta) = \mathbb E_{s, a \sim \pi_{\theta_{old}}}
           \Big[\frac{\pi_\theta(a|s)}{\pi_{\theta_{old}}(a|s)}\, \hat A(s, a)\Big]
           \quad \text{s.t.} \quad
           \bar D_{KL}(\theta_{old}, \theta) = \mathbb E_s\big[D_{KL}(\pi_{\theta_{old}}(\cdot|s)\,\|\,\pi_\theta(\cdot|s))\big] \le \delta .

Around :math:`\theta_{old}` the objective is linear, :math:`L \approx g^\top (\theta - \theta_{old})` with
:math:`g = \nabla_\theta L`, and the mean KL quadratic (its value and gradient vanish there),
:math:`\bar D_{KL} \approx \tfrac12 (\theta - \theta_{old})^\top F (\theta - \theta_{old})` with
:math:`F = \nabla^2_\theta \bar D_{KL}\big|_{\theta_{old}}` the Fisher information matrix. The solution of
the approximated problem is the natural-gradient step

.. math::  s = F^{-1} g, \qquad \theta = \theta_{old} + \beta s, \qquad
           \beta = \sqrt{\frac{2\delta}{s^\top F s}}

(:math:`\beta` puts the step on the boundary of the quadratic trust region, :func:`natural_step_size`).
:math:`F` is never formed: :func:`conjugate_gradient` solves :math:`F s = g` with ``max_iter`` products
:math:`F v`, each one :func:`fisher_vector_product` = a second backward pass through
:math:`(\nabla_\theta \bar D_{KL})^\top v` ("double backprop", Appendix C.1), plus a damping
:math:`\lambda v` that keeps the system well conditioned. Because the quadratic model can be wrong,
:func:`backtracking_line_search` tries :math:`\theta_{old} + \kappa^k \beta s` for
:math:`k = 0, 1, \dots` and accepts the first step whose *measured* KL is :math:`\le \delta` and whose
surrogate improves; if none does the parameters are restored (the update is rejected).

Pure torch; under data parallelism pass ``reduce`` (an all-reduce mean) so every rank uses the
averaged gradient and Fisher-vector products and takes the same step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Optional

import torch
from torch import Tensor

Reduce = Optional[Callable[[Tensor], Tensor]]


# ----------------------------------------------------------------------------------- flat parameters
def flat_grad(
    output: Tensor, params: Sequence[Tensor], retain_graph: bool = False, create_graph: bool = False
) -> Tensor:
    """:math:`\\nabla_\\theta` ``output`` as one flat vector (zeros for parameters it does not depend on)."""
    grads = torch.autograd.grad(output, params, retain_graph=retain_graph, create_graph=create_graph,
                                allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def get_flat_params(params: Iterable[Tensor]) -> Tensor:
    """The parameters concatenated into one detached flat vector (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


@torch.no_grad()
def set_flat_params(params: Sequence[Tensor], flat: Tensor) -> None:
    """Write the flat vector ``flat`` back into ``params`` in place (the inverse of :func:`get_flat_params`)."""
    total = sum(p.numel() for p in params)
    if flat.numel() != total:
        raise ValueError(f"flat has {flat.numel()} entries but the parameters have {total}; pass a vector from "
                         "get_flat_params of the same parameters.")
    offset = 0
    for p in params:
        p.copy_(flat[offset: offset + p.numel()].view_as(p))
        offset += p.numel()


# ----------------------------------------------------------------------------------- linear algebra
def conjugate_gradient(Avp: Callable[[Tensor], Tensor], b: Tensor, max_iter: int = 10, tol: float = 1e-10) -> Tensor:
    r"""Approximately solve :math:`A x = b` for symmetric positive-definite :math:`A` given only ``Avp(v) = A v``.

    Hestenes-Stiefel CG from :math:`x_0 = 0`; stops after ``max_iter`` products or when the squared
    residual :math:`\|b - A x\|^2` falls below ``tol``. Exact after ``dim`` iterations in exact arithmetic.
    """
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r} must be a positive integer (e.g. 10).")
    x = torch.zeros_like(b)
    r = b.clone()  # residual b - A x
    p = b.clone()  # search direction
    r_dot_r = r.dot(r)
    for _ in range(int(max_iter)):
        if r_dot_r <= tol:
            break
        Ap = Avp(p)
        alpha = r_dot_r / p.dot(Ap)
        x += alpha * p
        r -= alpha * Ap
        new_r_dot_r = r.dot(r)
        p = r + (new_r_dot_r / r_dot_r) * p
        r_dot_r = new_r_dot_r
    return x


def make_fisher_vector_product(
    kl: Tensor, params: Sequence[Tensor], damping: float = 0.0, reduce: Reduce = None
) -> Callable[[Tensor], Tensor]:
    r"""``v -> (F + damping I) v`` with :math:`F` the Hessian of the scalar ``kl`` w.r.t. ``params``.

    ``kl`` must be the mean :math:`D_{KL}(\pi_{\theta_{old}} \| \pi_\theta)` evaluated *at*
    :math:`\theta = \theta_{old}` (the old distribution detached), where its Hessian is the Fisher
    matrix. Its gradient is built once with ``create_graph=True``; each product is then one backward
    pass of :math:`(\nabla \bar D_{KL})^\top v`. ``reduce`` (e.g. an all-reduce mean over DDP ranks) is
    applied to :math:`F v` before the damping, so every rank gets the Fisher matrix of the whole batch.
    """
    if damping < 0:
        raise ValueError(f"damping={damping!r} must be >= 0 (e.g. 0.1).")
    grad_kl = flat_grad(kl, params, retain_graph=True, create_graph=True)

    def fvp(v: Tensor) -> Tensor:
        Fv = flat_grad(grad_kl.dot(v.detach()), params, retain_graph=True)
        if reduce is not None:
            Fv = reduce(Fv)
        return Fv + damping * v

    return fvp


def fisher_vector_product(
    kl_fn: Callable[[], Tensor], params: Sequence[Tensor], v: Tensor, damping: float = 0.0, reduce: Reduce = None
) -> Tensor:
    """One Fisher-vector product ``(F + damping I) v``; ``kl_fn()`` returns the mean KL at theta_old.

    For many products with the same parameters (conjugate gradient) use
    :func:`make_fisher_vector_product`, which differentiates the KL only once.
    """
    return make_fisher_vector_product(kl_fn(), params, damping, reduce)(v)


def natural_step_size(step_dir: Tensor, Fs: Tensor, max_kl: float) -> Tensor:
    r""":math:`\beta = \sqrt{2\delta / s^\top F s}`: the step :math:`\beta s` has quadratic KL model :math:`\delta`.

    ``step_dir`` is :math:`s`, ``Fs`` the product :math:`F s` (damped or not, as the caller chose).
    """
    if not max_kl > 0:
        raise ValueError(f"max_kl={max_kl!r} must be > 0 (the trust-region radius delta, e.g. 0.01).")
    sFs = step_dir.dot(Fs)
    # s^T F s > 0 for a positive-definite F; clamp so a degenerate direction gives a zero step, not NaN.
    return torch.sqrt(2.0 * max_kl / sFs.clamp_min(torch.finfo(sFs.dtype).tiny))


# ----------------------------------------------------------------------------------- line search
class LineSearchResult(NamedTuple):
    accepted: bool  # False: no tried step satisfied both conditions; the old parameters are back
    step_fraction: float  # kappa^k of the accepted step (0.0 when rejected)
    num_backtracks: int  # k: how many shorter steps were tried before the accepted one (all tried if rejected)
    improvement: float  # L(theta_new) - L(theta_old) (0.0 when rejected)
    kl: float  # measured mean KL(pi_old || pi_new) (0.0 when rejected)


@torch.no_grad()
def backtracking_line_search(
    params: Sequence[Tensor],
    full_step: Tensor,
    evaluate: Callable[[], tuple[Tensor, Tensor]],
    surrogate_old: float | Tensor,
    max_kl: float,
    expected_improvement: float | Tensor | None = None,
    max_iter: int = 10,
    shrink: float = 0.8,
    accept_ratio: float = 0.0,
) -> LineSearchResult:
    r"""Try :math:`\theta_{old} + \kappa^k\,` ``full_step``, :math:`k = 0, 1, ..`; keep the first acceptable one.

    ``evaluate()`` returns ``(surrogate, kl)`` at the parameters currently written into ``params``
    (the surrogate :math:`L(\theta)` and the mean :math:`D_{KL}(\pi_{old}\|\pi_\theta)`, reduced over ranks if
    data-parallel, so every rank decides alike). A step is accepted when ``kl <= max_kl`` and the
    improvement :math:`L(\theta) - L(\theta_{old}) > 0` and, if ``accept_ratio > 0``, at least
    ``accept_ratio`` times the linear model's ``expected_improvement`` :math:`\kappa^k g^\top \text{full\_step}`.
    If no step is accepted the old parameters are restored.
    """
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r} must be a positive integer (e.g. 10).")
    if not 0.0 < shrink < 1.0:
        raise ValueError(f"shrink={shrink!r} must be in (0, 1) (the backtracking factor kappa, e.g. 0.8).")
    if accept_ratio > 0 and expected_improvement is None:
        raise ValueError("accept_ratio > 0 compares with the linear model: pass expected_improvement = g . full_step.")
    theta_old = get_flat_params(params)
    surrogate_old = float(surrogate_old)
    expected = None if expected_improvement is None else float(expected_improvement)
    fraction = 1.0
    for k in range(int(max_iter)):
        set_flat_params(params, theta_old + fraction * full_step)
        surrogate, kl = evaluate()
        improvement, kl = float(surrogate) - surrogate_old, float(kl)
        enough = accept_ratio <= 0 or improvement >= accept_ratio * fraction * expected
        if math.isfinite(kl) and kl <= max_kl and improvement > 0 and enough:
            return LineSearchResult(True, fraction, k, improvement, kl)
        fraction *= shrink
    set_flat_params(params, theta_old)
    return LineSearchResult(False, 0.0, int(max_iter), 0.0, 0.0)
