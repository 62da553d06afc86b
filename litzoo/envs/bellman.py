r"""Exact dynamic-programming solvers for finite MDPs (numpy), following Shiyu Zhao,
*Mathematical Foundations of Reinforcement Learning* (Springer, 2025), Chapters 2-4.

**Model.** ``P[s, a, s'] = p(s'|s, a)`` with shape (S, A, S) and ``R[s, a] = E[r | s, a]`` with shape
(S, A), e.g. from :meth:`litzoo.envs.GridWorld.model`. A **policy** is an S x A matrix ``pi[s, a]``
of action probabilities (every row sums to 1). Under ``pi`` the state-transition matrix and the
expected one-step rewards are

.. math::  [P_\pi]_{s s'} = \sum_a \pi(a|s)\, p(s'|s,a), \qquad [r_\pi]_s = \sum_a \pi(a|s)\, r(s,a).

**Bellman equation** (Ch. 2). The state values of ``pi`` are the unique solution of

.. math::  v_\pi = r_\pi + \gamma P_\pi v_\pi \quad\Longrightarrow\quad v_\pi = (I - \gamma P_\pi)^{-1} r_\pi ,

and action values are :math:`q(s,a) = r(s,a) + \gamma \sum_{s'} p(s'|s,a)\, v(s')`.

**Bellman optimality equation** (Ch. 3). The optimal state values are the unique solution of

.. math::  v = \max_\pi \,(r_\pi + \gamma P_\pi v) =: f(v), \qquad\text{i.e.}\quad v(s) = \max_a q(s, a),

and any policy greedy with respect to :math:`q_{v^*}` is optimal.

**Why the iterations converge.** For ``0 <= gamma < 1`` both maps :math:`T_\pi v = r_\pi + \gamma P_\pi v`
and :math:`f` are :math:`\gamma`-contractions in the sup norm: since every row of :math:`P_\pi` is a
probability vector, :math:`\|T_\pi v_1 - T_\pi v_2\|_\infty \le \gamma \|v_1 - v_2\|_\infty`, and a max of
such maps is one too (:math:`|\max_a x_a - \max_a y_a| \le \max_a |x_a - y_a|`). By the Banach
fixed-point (contraction mapping) theorem each has exactly one fixed point, and :math:`v_{k+1} = T v_k`
reaches it from any :math:`v_0` geometrically: :math:`\|v_k - v^*\|_\infty \le \gamma^k \|v_0 - v^*\|_\infty`.
Stopping when :math:`\|v_{k+1} - v_k\|_\infty < \mathrm{tol}` guarantees
:math:`\|v_{k+1} - v^*\|_\infty \le \gamma\,\mathrm{tol} / (1 - \gamma)`. Policy iteration also
terminates: each improvement step gives :math:`v_{\pi_{k+1}} \ge v_{\pi_k}`, and there are finitely many
deterministic policies.

Solvers: :func:`policy_evaluation` (closed form or iterative), :func:`action_values`,
:func:`greedy_policy`, :func:`value_iteration` (Alg. 4.1), :func:`policy_iteration` (Alg. 4.2),
:func:`truncated_policy_iteration` (Alg. 4.3). Pass ``return_info=True`` to also get a
:class:`BellmanInfo` with the iteration counts. Comparisons of learned values with exact ones:
:func:`value_errors`, :func:`greedy_errors`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

_PROB_ATOL = 1e-8  # how far a probability row may sum from 1 (floating-point slack)


@dataclass(frozen=True)
class BellmanInfo:
    """How a solver ran.

    Attributes:
        iterations: outer iterations: value updates (value iteration, iterative evaluation) or
            improvement steps (policy iteration, truncated policy iteration). 0 for a closed-form solve.
        converged: whether the stopping rule was met before ``max_iter``.
        residual: the last sup-norm change :math:`\\|v_{k+1} - v_k\\|_\\infty` (iterative solvers), the
            Bellman residual :math:`\\|r_\\pi + \\gamma P_\\pi v - v\\|_\\infty` (closed-form evaluation), or
            the optimality residual :math:`\\|\\max_a q_v - v\\|_\\infty` (policy iteration).
        evaluation_sweeps: Bellman-expectation sweeps spent inside policy evaluation
            (truncated policy iteration: ``iterations * j``; 0 when evaluation is exact).
    """

    iterations: int
    converged: bool
    residual: float
    evaluation_sweeps: int = 0


# --------------------------------------------------------------------------------------------- pieces
def action_values(P: np.ndarray, R: np.ndarray, v: np.ndarray, gamma: float) -> np.ndarray:
    r"""Action values :math:`q(s,a) = r(s,a) + \gamma \sum_{s'} p(s'|s,a) v(s')`, shape (S, A)."""
    P, R = _check_mdp(P, R)
    gamma = _check_gamma(gamma)
    v = _check_values(v, P.shape[0], "v")
    return R + gamma * (P @ v)


def greedy_policy(q: np.ndarray, atol: float = 0.0) -> np.ndarray:
    """The deterministic greedy policy of ``q`` (S, A) as an S x A one-hot matrix.

    Ties go to the **lowest action index** (among actions within ``atol`` of the row maximum), so the
    result is reproducible; for the grid world that means up < right < down < left < stay.
    """
    q = np.asarray(q, dtype=float)
    if q.ndim != 2:
        raise ValueError(f"q has shape {q.shape}; expected (S, A) action values.")
    is_best = q >= q.max(axis=1, keepdims=True) - atol
    policy = np.zeros_like(q)
    policy[np.arange(q.shape[0]), is_best.argmax(axis=1)] = 1.0  # argmax of booleans = first True
    return policy


# --------------------------------------------------------------------------------------------- solvers
def policy_evaluation(
    P: np.ndarray,
    R: np.ndarray,
    policy: np.ndarray,
    gamma: float,
    method: str = "closed_form",
    tol: float = 1e-10,
    max_iter: int = 100_000,
    v0: np.ndarray | None = None,
    return_info: bool = False,
):
    r"""State values :math:`v_\pi` of ``policy`` by solving the Bellman equation :math:`v = r_\pi + \gamma P_\pi v`.

    Args:
        method: ``"closed_form"`` solves :math:`(I - \gamma P_\pi) v = r_\pi` directly (exact, O(S^3));
            ``"iterative"`` repeats :math:`v_{k+1} = r_\pi + \gamma P_\pi v_k` from ``v0`` (zeros by default)
            until :math:`\|v_{k+1} - v_k\|_\infty < \mathrm{tol}` or ``max_iter`` updates.
    Returns:
        ``v`` of shape (S,), or ``(v, info)`` when ``return_info`` is true.
    """
    P, R = _check_mdp(P, R)
    S, A = R.shape
    policy = _check_policy(policy, S, A)
    gamma = _check_gamma(gamma)
    P_pi = np.einsum("sa,sat->st", policy, P)
    r_pi = (policy * R).sum(axis=1)
    if method == "closed_form":
        v = np.linalg.solve(np.eye(S) - gamma * P_pi, r_pi)
        info = BellmanInfo(iterations=0, converged=True, residual=float(np.abs(r_pi + gamma * P_pi @ v - v).max()))
    elif method == "iterative":
        _check_iteration_args(tol, max_iter)
        v = np.zeros(S) if v0 is None else _check_values(v0, S, "v0").copy()
        residual, k = np.inf, 0
        while k < max_iter and residual >= tol:
            v_next = r_pi + gamma * P_pi @ v
            residual = float(np.abs(v_next - v).max())
            v, k = v_next, k + 1
        info = BellmanInfo(iterations=k, converged=residual < tol, residual=residual)
        _warn_if_not_converged("policy_evaluation", info, max_iter)
    else:
        raise ValueError(f"method={method!r} is not one of ('closed_form', 'iterative').")
    return (v, info) if return_info else v


def value_iteration(
    P: np.ndarray,
    R: np.ndarray,
    gamma: float,
    tol: float = 1e-10,
    max_iter: int = 100_000,
    v0: np.ndarray | None = None,
    return_info: bool = False,
):
    r"""Value iteration (Zhao, Alg. 4.1): :math:`v_{k+1}(s) = \max_a q_k(s, a)`, the fixed-point iteration of
    the Bellman optimality equation.

    Stops when :math:`\|v_{k+1} - v_k\|_\infty < \mathrm{tol}`; then :math:`\|v - v^*\|_\infty \le \gamma\,
    \mathrm{tol}/(1-\gamma)`. Returns ``(v, policy)`` with ``policy`` greedy for the returned ``v``
    (ties to the lowest action index), or ``(v, policy, info)`` when ``return_info`` is true.
    """
    P, R = _check_mdp(P, R)
    S = P.shape[0]
    gamma = _check_gamma(gamma)
    _check_iteration_args(tol, max_iter)
    v = np.zeros(S) if v0 is None else _check_values(v0, S, "v0").copy()
    residual, k = np.inf, 0
    while k < max_iter and residual >= tol:
        v_next = (R + gamma * (P @ v)).max(axis=1)
        residual = float(np.abs(v_next - v).max())
        v, k = v_next, k + 1
    info = BellmanInfo(iterations=k, converged=residual < tol, residual=residual)
    _warn_if_not_converged("value_iteration", info, max_iter)
    policy = greedy_policy(R + gamma * (P @ v))
    return (v, policy, info) if return_info else (v, policy)


def policy_iteration(
    P: np.ndarray,
    R: np.ndarray,
    gamma: float,
    policy0: np.ndarray | None = None,
    tol: float = 1e-10,
    max_iter: int = 1_000,
    return_info: bool = False,
):
    r"""Policy iteration (Zhao, Alg. 4.2): exact evaluation :math:`v_{\pi_k} = (I - \gamma P_{\pi_k})^{-1}
    r_{\pi_k}`, then improvement :math:`\pi_{k+1} = \mathrm{greedy}(q_{\pi_k})`.

    Starts from ``policy0`` (the uniform random policy by default). Stops when the greedy policy no
    longer changes, or when an improvement step no longer raises any value by ``tol`` (then
    :math:`v_{\pi}` already satisfies the Bellman optimality equation; this stops floating-point ties
    from flipping between equally good policies). Returns ``(v, policy)`` with ``v`` the values of the
    returned policy, or ``(v, policy, info)`` when ``return_info`` is true.
    """
    P, R = _check_mdp(P, R)
    S, A = R.shape
    gamma = _check_gamma(gamma)
    _check_iteration_args(tol, max_iter)
    policy = np.full((S, A), 1.0 / A) if policy0 is None else _check_policy(policy0, S, A).copy()
    v_prev, converged, k = None, False, 0
    while k < max_iter:
        v = policy_evaluation(P, R, policy, gamma, method="closed_form")
        k += 1
        if v_prev is not None:
            if float(np.abs(v - v_prev).max()) < tol:
                converged = True
                break
        improved = greedy_policy(R + gamma * (P @ v))
        if np.array_equal(improved, policy):
            converged = True
            break
        policy, v_prev = improved, v
    # Report how far the result is from solving the Bellman optimality equation: ||max_a q_v - v||.
    residual = float(np.abs((R + gamma * (P @ v)).max(axis=1) - v).max())
    info = BellmanInfo(iterations=k, converged=converged, residual=residual)
    _warn_if_not_converged("policy_iteration", info, max_iter)
    return (v, policy, info) if return_info else (v, policy)


def truncated_policy_iteration(
    P: np.ndarray,
    R: np.ndarray,
    gamma: float,
    j: int,
    tol: float = 1e-10,
    max_iter: int = 100_000,
    v0: np.ndarray | None = None,
    return_info: bool = False,
):
    r"""Truncated policy iteration (Zhao, Alg. 4.3; the book's :math:`j_{\rm truncate}` is ``j``).

    Each iteration improves the policy, :math:`\pi_{k+1} = \mathrm{greedy}(q_{v_k})`, then runs only ``j``
    sweeps of iterative policy evaluation started from :math:`v_k`:
    :math:`v^{(i+1)} = r_{\pi_{k+1}} + \gamma P_{\pi_{k+1}} v^{(i)}`, :math:`v_{k+1} = v^{(j)}`.
    ``j = 1`` is exactly value iteration; ``j -> inf`` is policy iteration. Stops when
    :math:`\|v_{k+1} - v_k\|_\infty < \mathrm{tol}`. Returns ``(v, policy)`` with ``policy`` greedy
    for the returned ``v``, or ``(v, policy, info)`` when ``return_info`` is true.
    """
    P, R = _check_mdp(P, R)
    S = P.shape[0]
    gamma = _check_gamma(gamma)
    _check_iteration_args(tol, max_iter)
    if int(j) != j or j < 1:
        raise ValueError(f"j={j!r} must be a positive integer (number of evaluation sweeps per iteration).")
    v = np.zeros(S) if v0 is None else _check_values(v0, S, "v0").copy()
    residual, k = np.inf, 0
    while k < max_iter and residual >= tol:
        policy = greedy_policy(R + gamma * (P @ v))
        P_pi = np.einsum("sa,sat->st", policy, P)
        r_pi = (policy * R).sum(axis=1)
        v_next = v
        for _ in range(int(j)):
            v_next = r_pi + gamma * P_pi @ v_next
        residual = float(np.abs(v_next - v).max())
        v, k = v_next, k + 1
    info = BellmanInfo(iterations=k, converged=residual < tol, residual=residual, evaluation_sweeps=k * int(j))
    _warn_if_not_converged("truncated_policy_iteration", info, max_iter)
    policy = greedy_policy(R + gamma * (P @ v))
    return (v, policy, info) if return_info else (v, policy)


# --------------------------------------------------------------------------------------------- comparisons
def value_errors(v_hat: np.ndarray, v: np.ndarray) -> dict[str, float]:
    """``rmse`` and ``max_error`` of estimated state values ``v_hat`` against exact ones ``v`` (uniform over states)."""
    err = np.asarray(v_hat) - np.asarray(v)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "max_error": float(np.abs(err).max())}


def greedy_errors(q_hat: np.ndarray, P: np.ndarray, R: np.ndarray, gamma: float, start: int) -> dict[str, float]:
    r"""How good estimated action values ``q_hat`` (S, A) are for control, against the exact optimum of ``(P, R)``.

    ``rmse`` / ``max_error`` of :math:`\max_a \hat q` against :math:`v^*`; ``q_rmse`` of :math:`\hat q` against
    :math:`q^*`; ``greedy_action_optimal``: the fraction of states whose greedy action is optimal;
    ``greedy_value_optimal``: the fraction of states from which the greedy policy earns :math:`v^*` (exact policy
    evaluation); ``start_gap``: :math:`v^*(s_0) - v_{\mathrm{greedy}}(s_0)` for ``s_0 = start``.
    """
    v_star, _ = value_iteration(P, R, gamma)
    q_star = action_values(P, R, v_star, gamma)
    greedy = greedy_policy(q_hat)
    v_greedy = policy_evaluation(P, R, greedy, gamma)
    tol = 1e-6 * max(1.0, float(np.abs(v_star).max()))
    return {
        **value_errors(q_hat.max(1), v_star),
        "q_rmse": float(np.sqrt(np.mean((q_hat - q_star) ** 2))),
        "greedy_action_optimal": float(np.mean(q_star[np.arange(len(v_star)), greedy.argmax(1)] >= v_star - tol)),
        "greedy_value_optimal": float(np.mean(v_greedy >= v_star - tol)),
        "start_gap": float(v_star[start] - v_greedy[start]),
    }


# --------------------------------------------------------------------------------------------- checks
def _check_mdp(P: np.ndarray, R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    P = np.asarray(P, dtype=float)
    R = np.asarray(R, dtype=float)
    if P.ndim != 3 or P.shape[0] != P.shape[2]:
        raise ValueError(f"P has shape {P.shape}; expected (S, A, S) with P[s, a, s'] = p(s'|s, a).")
    if R.shape != P.shape[:2]:
        raise ValueError(f"R has shape {R.shape}; expected (S, A) = {P.shape[:2]} to match P.")
    if not (np.isfinite(P).all() and np.isfinite(R).all()):
        raise ValueError("P and R must be finite (found NaN or inf).")
    if (P < 0).any() or not np.allclose(P.sum(axis=2), 1.0, atol=_PROB_ATOL):
        s, a = np.unravel_index(np.abs(P.sum(axis=2) - 1.0).argmax(), P.shape[:2])
        raise ValueError(
            f"P[s, a, :] must be a probability distribution over next states; e.g. P[{s}, {a}, :] sums to "
            f"{P[s, a].sum():.6g} (min entry {P.min():.3g}). Normalise each row to sum to 1."
        )
    return P, R


def _check_policy(policy: np.ndarray, S: int, A: int) -> np.ndarray:
    policy = np.asarray(policy, dtype=float)
    if policy.shape != (S, A):
        raise ValueError(f"policy has shape {policy.shape}; expected (S, A) = ({S}, {A}) action probabilities.")
    if not np.isfinite(policy).all() or (policy < 0).any() or not np.allclose(policy.sum(axis=1), 1.0, atol=_PROB_ATOL):
        bad = int(np.abs(policy.sum(axis=1) - 1.0).argmax())
        raise ValueError(
            f"policy rows must be probability vectors (non-negative, summing to 1); row {bad} is {policy[bad]}."
        )
    return policy


def _check_gamma(gamma: float) -> float:
    if not 0.0 <= gamma < 1.0:
        raise ValueError(
            f"gamma={gamma!r} must be in [0, 1): the Bellman operators are contractions only for gamma < 1 "
            "(and I - gamma P_pi is then invertible)."
        )
    return float(gamma)


def _check_values(v: np.ndarray, S: int, name: str) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    if v.shape != (S,):
        raise ValueError(f"{name} has shape {v.shape}; expected ({S},), one value per state.")
    return v


def _check_iteration_args(tol: float, max_iter: int) -> None:
    if not tol > 0:
        raise ValueError(f"tol={tol!r} must be > 0.")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter={max_iter!r} must be a positive integer.")


def _warn_if_not_converged(name: str, info: BellmanInfo, max_iter: int) -> None:
    if not info.converged:
        warnings.warn(
            f"{name} stopped after max_iter={max_iter} iterations with residual {info.residual:.3g} "
            "(not converged); raise max_iter or tol.",
            RuntimeWarning,
            stacklevel=3,
        )
