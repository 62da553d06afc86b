"""Trust-region pieces: CG against a direct solve, the Fisher-vector product against the autograd
Hessian of the KL, the step-size formula against the quadratic KL model, and the line search
accepting a good step / rejecting a bad one (restoring the parameters)."""

import math

import pytest
import torch
from torch import nn

from litzoo.rl.trust_region import (
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    get_flat_params,
    make_fisher_vector_product,
    natural_step_size,
    set_flat_params,
)


def random_spd(n: int, seed: int = 0, condition: float = 10.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eigenvalues = torch.logspace(0, math.log10(condition), n, dtype=torch.float64)
    return Q @ torch.diag(eigenvalues) @ Q.T


def test_conjugate_gradient_solves_a_random_spd_system_to_tolerance():
    F = random_spd(20, condition=50.0)
    g = torch.randn(20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = conjugate_gradient(lambda v: F @ v, g, max_iter=60, tol=1e-24)
    torch.testing.assert_close(x, torch.linalg.solve(F, g), rtol=1e-9, atol=1e-9)


def test_conjugate_gradient_is_exact_in_n_steps_for_n_distinct_eigenvalues():
    # CG minimises over a Krylov space; 3 distinct eigenvalues -> exact after 3 products.
    Q, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    F = Q @ torch.diag(torch.tensor([1.0, 1, 1, 4, 4, 9, 9, 9], dtype=torch.float64)) @ Q.T
    g = torch.randn(8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    calls = []
    x = conjugate_gradient(lambda v: calls.append(1) or F @ v, g, max_iter=3, tol=0.0)
    assert len(calls) == 3
    torch.testing.assert_close(x, torch.linalg.solve(F, g), rtol=1e-9, atol=1e-9)


def test_conjugate_gradient_rejects_a_non_positive_iteration_count():
    with pytest.raises(ValueError, match="max_iter=0 must be a positive integer"):
        conjugate_gradient(lambda v: v, torch.ones(2), max_iter=0)


class TinyPolicy(nn.Module):
    """Categorical policy on 3 actions from 2 features: 2*4 + 4 + 4*3 + 3 = 27 parameters."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 3)).double()

    def forward(self, x):
        return self.net(x)


def _functional_logits(model: TinyPolicy, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    shapes = [p.shape for p in model.parameters()]
    chunks = torch.split(flat, [math.prod(s) for s in shapes])
    w1, b1, w2, b2 = (c.view(s) for c, s in zip(chunks, shapes))
    return torch.tanh(x @ w1.T + b1) @ w2.T + b2


def test_fisher_vector_product_equals_the_autograd_hessian_of_the_mean_kl_times_v():
    model = TinyPolicy()
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    params = list(model.parameters())
    theta_old = get_flat_params(params)
    old_log_p = torch.log_softmax(model(x), -1).detach()

    def mean_kl_at(flat):  # KL(pi_old || pi_theta), averaged over states
        log_p = torch.log_softmax(_functional_logits(model, flat, x), -1)
        return (old_log_p.exp() * (old_log_p - log_p)).sum(-1).mean()

    H = torch.autograd.functional.hessian(mean_kl_at, theta_old)
    v = torch.randn(theta_old.numel(), generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def kl_fn():
        log_p = torch.log_softmax(model(x), -1)
        return (old_log_p.exp() * (old_log_p - log_p)).sum(-1).mean()

    torch.testing.assert_close(fisher_vector_product(kl_fn, params, v), H @ v, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(fisher_vector_product(kl_fn, params, v, damping=0.1), H @ v + 0.1 * v,
                               rtol=1e-9, atol=1e-12)
    # the Hessian at theta_old is the Fisher matrix E_s E_a[grad log pi grad log pi^T]: symmetric PSD
    assert torch.linalg.eigvalsh(H).min() > -1e-12
    # the reduce hook sees F v before damping (under DDP: averaged over ranks)
    fvp = make_fisher_vector_product(kl_fn(), params, damping=0.5, reduce=lambda t: 2.0 * t)
    torch.testing.assert_close(fvp(v), 2.0 * (H @ v) + 0.5 * v, rtol=1e-9, atol=1e-12)


def test_natural_step_size_puts_the_step_on_the_quadratic_kl_boundary():
    F = random_spd(6, seed=6)
    s = torch.randn(6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    beta = natural_step_size(s, F @ s, max_kl=0.01)
    torch.testing.assert_close(beta, torch.sqrt(2 * 0.01 / (s @ F @ s)))
    step = beta * s
    torch.testing.assert_close(0.5 * step @ F @ step, torch.tensor(0.01, dtype=torch.float64))
    with pytest.raises(ValueError, match="max_kl=0.0 must be > 0"):
        natural_step_size(s, F @ s, max_kl=0.0)


def _quadratic_problem():
    """Surrogate L(theta) = c . theta, KL(theta) = 0.5 |theta - theta0|^2: the exact quadratic model."""
    theta = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    theta0 = theta.detach().clone()
    c = torch.tensor([1.0, 0.5], dtype=torch.float64)

    def evaluate():
        return c @ theta, 0.5 * ((theta - theta0) ** 2).sum()

    return theta, theta0, c, evaluate


def test_line_search_accepts_the_full_step_inside_the_trust_region():
    theta, theta0, c, evaluate = _quadratic_problem()
    step = 0.1 * c  # KL 0.5 * 0.01 * 1.25 = 0.00625 <= 0.01, improvement 0.125 > 0
    result = backtracking_line_search([theta], step, evaluate, c @ theta0, max_kl=0.01,
                                      expected_improvement=c @ step, accept_ratio=0.1)
    assert result.accepted and result.step_fraction == 1.0 and result.num_backtracks == 0
    torch.testing.assert_close(theta.detach(), theta0 + step)
    assert result.improvement == pytest.approx(float(c @ step)) and result.kl == pytest.approx(0.00625)


def test_line_search_backtracks_until_the_kl_fits():
    theta, theta0, c, evaluate = _quadratic_problem()
    step = 0.4 * c  # KL 0.1, half of it 0.025 (both > 0.01); a quarter of it 0.00625
    result = backtracking_line_search([theta], step, evaluate, c @ theta0, max_kl=0.01, shrink=0.5)
    assert result.accepted and result.num_backtracks == 2 and result.step_fraction == 0.25
    torch.testing.assert_close(theta.detach(), theta0 + 0.25 * step)


def test_line_search_rejects_a_step_that_lowers_the_surrogate_and_restores_the_parameters():
    theta, theta0, c, evaluate = _quadratic_problem()
    bad = -0.1 * c  # inside the trust region but downhill for L at every fraction
    result = backtracking_line_search([theta], bad, evaluate, c @ theta0, max_kl=0.01, max_iter=5)
    assert not result.accepted and result.num_backtracks == 5 and result.step_fraction == 0.0
    assert torch.equal(theta.detach(), theta0)


def test_line_search_with_accept_ratio_rejects_steps_far_below_the_linear_model():
    theta, theta0, c, _ = _quadratic_problem()

    def evaluate():  # the true surrogate improves only 1% as much as the linear model predicts
        return c @ theta0 + 0.01 * (c @ (theta - theta0)), 0.5 * ((theta - theta0) ** 2).sum()

    step = 0.1 * c
    result = backtracking_line_search([theta], step, evaluate, c @ theta0, max_kl=0.01,
                                      expected_improvement=c @ step, accept_ratio=0.1)
    assert not result.accepted and torch.equal(theta.detach(), theta0)


def test_flat_params_round_trip_and_flat_grad_matches_per_parameter_gradients():
    model = TinyPolicy()
    params = list(model.parameters())
    flat = get_flat_params(params)
    set_flat_params(params, flat + 1.0)
    torch.testing.assert_close(get_flat_params(params), flat + 1.0)
    x = torch.randn(5, 2, dtype=torch.float64)
    loss = model(x).pow(2).sum()
    g = flat_grad(loss, params, retain_graph=True)
    loss.backward()
    torch.testing.assert_close(g, torch.cat([p.grad.reshape(-1) for p in params]))
    with pytest.raises(ValueError, match="flat has 3 entries"):
        set_flat_params(params, torch.zeros(3))
