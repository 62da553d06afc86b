"""Exact solvers against hand-solved MDPs, each other, and the values printed in Zhao's book."""

import warnings

import numpy as np
import pytest

from litzoo.envs import (
    GridWorld,
    action_values,
    greedy_errors,
    greedy_policy,
    policy_evaluation,
    policy_iteration,
    truncated_policy_iteration,
    value_errors,
    value_iteration,
)


def two_state_mdp():
    """States {0, 1}; action 0 = stay, action 1 = switch state. Rewards: staying at 0 pays 0.5,
    staying at 1 pays 1, switching pays 0."""
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[0, 1, 1] = P[1, 0, 1] = P[1, 1, 0] = 1.0
    R = np.array([[0.5, 0.0], [1.0, 0.0]])
    return P, R


def test_two_state_mdp_uniform_policy_values_match_hand_solution():
    # pi = 1/2 everywhere, gamma = 0.9. Bellman equation:
    #   v0 = 0.5 (0.5 + 0.9 v0) + 0.5 (0 + 0.9 v1)  ->  0.55 v0 - 0.45 v1 = 0.25
    #   v1 = 0.5 (1.0 + 0.9 v1) + 0.5 (0 + 0.9 v0)  -> -0.45 v0 + 0.55 v1 = 0.50
    # Adding: 0.1 (v0 + v1) = 0.75 -> v0 + v1 = 7.5; subtracting: v0 - v1 = -0.25.
    # So v0 = 3.625, v1 = 3.875.
    P, R = two_state_mdp()
    pi = np.full((2, 2), 0.5)
    for method in ("closed_form", "iterative"):
        np.testing.assert_allclose(policy_evaluation(P, R, pi, 0.9, method=method), [3.625, 3.875], atol=1e-8)


def test_two_state_mdp_optimum_matches_hand_solution():
    # Optimal: stay at 1 forever, v*(1) = 1 / (1 - 0.9) = 10; from 0 switch: v*(0) = 0 + 0.9 * 10 = 9,
    # which beats staying at 0 forever (0.5 / 0.1 = 5). q*(0, .) = (0.5 + 8.1, 9) = (8.6, 9);
    # q*(1, .) = (1 + 9, 0 + 8.1) = (10, 8.1).
    P, R = two_state_mdp()
    expected_pi = np.array([[0.0, 1.0], [1.0, 0.0]])
    for solve in (value_iteration, policy_iteration, lambda P, R, g: truncated_policy_iteration(P, R, g, j=3)):
        v, pi = solve(P, R, 0.9)
        np.testing.assert_allclose(v, [9.0, 10.0], atol=1e-8)
        np.testing.assert_array_equal(pi, expected_pi)
    np.testing.assert_allclose(action_values(P, R, np.array([9.0, 10.0]), 0.9), [[8.6, 9.0], [10.0, 8.1]])


def test_greedy_policy_is_one_hot_and_breaks_ties_toward_the_lowest_action():
    q = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [0.0, -1.0, 5.0], [1.0, 1.0 - 1e-12, 0.0]])
    np.testing.assert_array_equal(greedy_policy(q), [[0, 1, 0], [1, 0, 0], [0, 0, 1], [1, 0, 0]])
    # with a tolerance, near-ties count as ties
    np.testing.assert_array_equal(greedy_policy(np.array([[1.0 - 1e-12, 1.0]]), atol=1e-9), [[1, 0]])
    np.testing.assert_array_equal(greedy_policy(np.array([[1.0 - 1e-12, 1.0]])), [[0, 1]])


@pytest.fixture(scope="module")
def grid_model():
    return GridWorld().model()


@pytest.mark.parametrize("gamma", [0.5, 0.9])
def test_value_iteration_policy_iteration_and_truncated_pi_find_the_same_optimum(grid_model, gamma):
    P, R = grid_model
    v_vi, pi_vi = value_iteration(P, R, gamma)
    v_pi, pi_pi = policy_iteration(P, R, gamma)
    v_tpi, pi_tpi = truncated_policy_iteration(P, R, gamma, j=5)
    np.testing.assert_allclose(v_vi, v_pi, atol=1e-8)
    np.testing.assert_allclose(v_tpi, v_pi, atol=1e-8)
    # Every returned greedy policy is optimal: its exact value is v*.
    for pi in (pi_vi, pi_pi, pi_tpi):
        np.testing.assert_allclose(policy_evaluation(P, R, pi, gamma), v_pi, atol=1e-8)
    # v* solves the Bellman optimality equation.
    np.testing.assert_allclose(action_values(P, R, v_pi, gamma).max(axis=1), v_pi, atol=1e-8)


def test_optimal_values_match_the_book_5x5_example():
    # Zhao, Mathematical Foundations of RL, Ch. 3 Sec. 3.5 (optimal state values of the 5x5 example,
    # printed to one decimal): r_boundary = r_forbidden = -1, r_target = 1, r_other = 0.
    book = {
        (0.9, -1.0): [[5.8, 5.6, 6.2, 6.5, 5.8],
                      [6.5, 7.2, 8.0, 7.2, 6.5],
                      [7.2, 8.0, 10.0, 8.0, 7.2],
                      [8.0, 10.0, 10.0, 10.0, 8.0],
                      [7.2, 9.0, 10.0, 9.0, 8.1]],
        (0.5, -1.0): [[0.0, 0.0, 0.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0, 0.0, 0.1],
                      [0.0, 0.0, 2.0, 0.1, 0.1],
                      [0.0, 2.0, 2.0, 2.0, 0.2],
                      [0.0, 1.0, 2.0, 1.0, 0.5]],
        # Same section, forbidden cells made costlier (r_forbidden = -10): the policy now detours.
        (0.9, -10.0): [[3.5, 3.9, 4.3, 4.8, 5.3],
                       [3.1, 3.5, 4.8, 5.3, 5.9],
                       [2.8, 2.5, 10.0, 5.9, 6.6],
                       [2.5, 10.0, 10.0, 10.0, 7.3],
                       [2.3, 9.0, 10.0, 9.0, 8.1]],
    }
    for (gamma, r_forbidden), table in book.items():
        P, R = GridWorld(r_forbidden=r_forbidden).model()
        v, _ = policy_iteration(P, R, gamma)
        np.testing.assert_allclose(v.reshape(5, 5), table, atol=0.05 + 1e-9, err_msg=f"gamma={gamma}, r_forbidden={r_forbidden}")


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 0.99])
def test_target_value_under_the_optimal_policy_is_r_target_over_one_minus_gamma(gamma):
    env = GridWorld(r_target=1.0)
    v, pi = policy_iteration(*env.model(), gamma)
    s_target = env.state_of(env.target)
    assert v[s_target] == pytest.approx(1.0 / (1.0 - gamma), abs=1e-8)
    assert pi[s_target, 4] == 1.0  # stay


def test_closed_form_and_iterative_evaluation_agree_for_random_stochastic_policies(grid_model):
    P, R = grid_model
    rng = np.random.default_rng(0)
    for gamma in (0.3, 0.9, 0.99):
        pi = rng.dirichlet(np.ones(5), size=25)
        v_exact = policy_evaluation(P, R, pi, gamma, method="closed_form")
        v_iter, info = policy_evaluation(P, R, pi, gamma, method="iterative", tol=1e-12, return_info=True)
        assert info.converged and info.iterations > 1
        np.testing.assert_allclose(v_iter, v_exact, atol=1e-9)
        # and v_exact solves the Bellman equation v = r_pi + gamma P_pi v
        np.testing.assert_allclose((pi * action_values(P, R, v_exact, gamma)).sum(axis=1), v_exact, atol=1e-10)


def test_random_mdp_solvers_agree():
    rng = np.random.default_rng(1)
    S, A = 12, 4
    P = rng.dirichlet(np.ones(S) * 0.3, size=(S, A))
    R = rng.normal(size=(S, A))
    v_vi, _ = value_iteration(P, R, 0.95)
    v_pi, pi = policy_iteration(P, R, 0.95)
    v_tpi, _ = truncated_policy_iteration(P, R, 0.95, j=10)
    np.testing.assert_allclose(v_vi, v_pi, atol=1e-7)
    np.testing.assert_allclose(v_tpi, v_pi, atol=1e-7)


def test_value_iteration_stopping_rule_bounds_the_error(grid_model):
    # ||v_{k+1} - v_k|| < tol  implies  ||v_{k+1} - v*|| <= gamma tol / (1 - gamma)  (contraction).
    P, R = grid_model
    gamma, tol = 0.9, 1e-3
    v_star, _ = policy_iteration(P, R, gamma)
    v, _, info = value_iteration(P, R, gamma, tol=tol, return_info=True)
    assert info.converged and info.residual < tol
    assert np.abs(v - v_star).max() <= gamma * tol / (1 - gamma)


def test_truncated_pi_with_one_sweep_is_value_iteration_and_more_sweeps_need_fewer_iterations(grid_model):
    P, R = grid_model
    v_vi, pi_vi, info_vi = value_iteration(P, R, 0.9, return_info=True)
    v_1, pi_1, info_1 = truncated_policy_iteration(P, R, 0.9, j=1, return_info=True)
    assert info_1.iterations == info_vi.iterations
    np.testing.assert_allclose(v_1, v_vi, atol=1e-12)
    np.testing.assert_array_equal(pi_1, pi_vi)
    iterations = [truncated_policy_iteration(P, R, 0.9, j=j, return_info=True)[2].iterations for j in (1, 3, 10, 50)]
    _, _, info_pi = policy_iteration(P, R, 0.9, return_info=True)
    assert iterations == sorted(iterations, reverse=True) and iterations[0] > iterations[-1]
    assert info_pi.iterations <= iterations[-1]


def test_policy_iteration_values_never_decrease(grid_model):
    # Policy improvement theorem: v_{pi_{k+1}} >= v_{pi_k} elementwise.
    P, R = grid_model
    previous = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # stopping early on purpose
        for k in range(1, 8):
            v, _ = policy_iteration(P, R, 0.9, max_iter=k)
            if previous is not None:
                assert (v >= previous - 1e-10).all()
            previous = v


def test_not_converging_within_max_iter_warns_and_reports_it(grid_model):
    P, R = grid_model
    with pytest.warns(RuntimeWarning, match="max_iter"):
        _, _, info = value_iteration(P, R, 0.9, max_iter=5, return_info=True)
    assert not info.converged and info.iterations == 5


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda P, R: policy_evaluation(P, R, np.full((25, 5), 0.3), 0.9), "policy rows"),
        (lambda P, R: policy_evaluation(P, R, np.full((25, 4), 0.25), 0.9), "policy has shape"),
        (lambda P, R: policy_evaluation(P, R, np.full((25, 5), 0.2), 0.9, method="exact"), "method"),
        (lambda P, R: value_iteration(P, R, 1.0), "gamma"),
        (lambda P, R: value_iteration(P * 0.5, R, 0.9), "probability distribution"),
        (lambda P, R: value_iteration(P, R[:, :4], 0.9), "R has shape"),
        (lambda P, R: truncated_policy_iteration(P, R, 0.9, j=0), "j="),
        (lambda P, R: action_values(P, R, np.zeros(24), 0.9), "v has shape"),
    ],
)
def test_invalid_inputs_raise_value_errors(grid_model, call, match):
    with pytest.raises(ValueError, match=match):
        call(*grid_model)


def test_render_values_writes_a_png_of_the_optimal_values_and_policy(tmp_path):
    import matplotlib.image

    env = GridWorld()
    v, pi = policy_iteration(*env.model(), 0.9)
    path = tmp_path / "optimal.png"
    image = env.render_values(v, pi, path=str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert matplotlib.image.imread(str(path)).shape[:2] == image.shape[:2]
    # the target (cyan) and forbidden (amber) cells are coloured: 1 and 6 of the 25 cells
    def share(color):
        return np.all(np.abs(image.astype(int) - np.array(color) * 255) <= 2, axis=-1).mean()
    target, forbidden = share((0.301, 0.745, 0.933)), share((0.929, 0.694, 0.125))
    assert target > 0.005 and 4 < forbidden / target < 8
    # drawing the policy and numbers changes the picture
    assert not np.array_equal(image, env.render_values())


def test_value_errors_are_rmse_and_max_error_over_states():
    errors = value_errors(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 2.0]))
    assert errors == {"rmse": pytest.approx(1.0), "max_error": 2.0}


def test_greedy_errors_are_zero_for_the_exact_q_star_and_see_a_wrong_greedy_action():
    env = GridWorld()
    P, R = env.model()
    v_star, _ = value_iteration(P, R, 0.9)
    q_star = action_values(P, R, v_star, 0.9)
    start = env.state_of(env.start)
    exact = greedy_errors(q_star, P, R, 0.9, start)
    assert exact["rmse"] < 1e-8 and exact["q_rmse"] < 1e-8 and exact["start_gap"] < 1e-8
    assert exact["greedy_action_optimal"] == exact["greedy_value_optimal"] == 1.0
    q = q_star.copy()
    q[start] = 0.0
    q[start, 4] = q_star[start].max()  # "stay" at the start is the greedy action now: never reaches the target
    wrong = greedy_errors(q, P, R, 0.9, start)
    assert wrong["greedy_action_optimal"] == 1 - 1 / 25 and wrong["start_gap"] > 1.0
