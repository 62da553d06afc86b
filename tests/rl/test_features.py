"""Feature maps of grid-world states (litzoo.rl.features): shapes, one-hot = identity, polynomial and
Fourier values worked out by hand, tile coding's active-feature count and overlap, bad input."""

import math

import numpy as np
import pytest
import torch

from litzoo.rl.features import (
    FourierFeatures,
    OneHotFeatures,
    PolynomialFeatures,
    TileCoding,
    make_features,
)

GRID = (5, 5)


@pytest.mark.parametrize("features, dim", [
    (OneHotFeatures(GRID), 25),
    (PolynomialFeatures(GRID, order=3), 10),  # (3 + 1)(3 + 2) / 2 monomials
    (FourierFeatures(GRID, order=2), 9),  # (2 + 1)^2 frequency pairs
    (TileCoding(GRID, num_tilings=4, tiles_per_dim=3), 4 * 16),  # 4 tilings of (3 + 1)^2 tiles
])
def test_a_batch_of_states_maps_to_a_float_matrix_of_width_dim(features, dim):
    out = features(torch.tensor([0, 7, 24]))
    assert features.dim == dim
    assert out.shape == (3, dim) and out.dtype == torch.float32
    assert features.matrix().shape == (25, dim)


def test_one_hot_features_of_all_states_are_the_identity():
    np.testing.assert_array_equal(OneHotFeatures((3, 4)).matrix(), np.eye(12))


def test_polynomial_features_are_the_monomials_of_centred_coordinates():
    phi = PolynomialFeatures(GRID, order=2)
    assert phi.exponents == [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]  # 1, x, y, x^2, xy, y^2
    # state 0 = (row 0, col 0): x = y = -1; state 7 = (row 1, col 2): x = 0, y = -0.5; state 19 = (3, 4): x = 1, y = 0.5
    expected = [[1, -1, -1, 1, 1, 1], [1, 0, -0.5, 0, 0, 0.25], [1, 1, 0.5, 1, 0.5, 0.25]]
    np.testing.assert_allclose(phi([0, 7, 19]).numpy(), expected, atol=1e-7)


def test_fourier_features_are_cosines_of_the_frequency_pairs():
    phi = FourierFeatures(GRID, order=1)
    np.testing.assert_array_equal(phi.coefficients.numpy(), [[0, 0], [0, 1], [1, 0], [1, 1]])
    # state 7 = (row 1, col 2): x = 0.5, y = 0.25 -> cos(0), cos(pi/4), cos(pi/2), cos(3 pi/4)
    r = math.sqrt(0.5)
    np.testing.assert_allclose(phi([7]).numpy(), [[1, r, 0, -r]], atol=1e-6)
    # a 1 x 3 grid (only x varies): c = (0, 0), (1, 0), (2, 0) give cos(0), cos(pi x), cos(2 pi x), x = 0, 0.5, 1
    row = FourierFeatures((1, 3), order=2)([0, 1, 2]).numpy()
    np.testing.assert_allclose(row[:, [0, 3, 6]], [[1, 1, 1], [1, 0, -1], [1, -1, 1]], atol=1e-6)


def test_tile_coding_activates_exactly_one_binary_feature_per_tiling():
    phi = TileCoding(GRID, num_tilings=4, tiles_per_dim=3)
    features = phi.matrix()
    assert set(np.unique(features)) == {0.0, 1.0}
    np.testing.assert_array_equal(features.sum(1), 4)
    active = phi.active(torch.arange(25))
    for k in range(4):  # tiling k owns the feature block [16 k, 16 (k + 1))
        assert ((active[:, k] >= 16 * k) & (active[:, k] < 16 * (k + 1))).all()


def test_tile_coding_nearby_states_share_tiles_and_far_ones_do_not():
    phi = TileCoding(GRID, num_tilings=4, tiles_per_dim=3)
    shared = phi.matrix() @ phi.matrix().T  # number of tiles two states have in common
    right, below = 1, 5
    for s in range(25):
        row, col = divmod(s, 5)
        if col < 4:
            assert shared[s, s + right] >= 1
        if row < 4:
            assert shared[s, s + below] >= 1
    assert shared[0, 24] == 0 and shared[4, 20] == 0  # opposite corners
    assert np.diag(shared).tolist() == [4] * 25
    # the offset tilings resolve every cell even though a single 3x3 tiling could not
    assert len({tuple(r) for r in phi.matrix()}) == 25


def test_make_features_builds_each_map_by_name():
    assert isinstance(make_features("onehot", GRID), OneHotFeatures)
    assert make_features("polynomial", GRID, order=4).dim == 15
    assert make_features("fourier", GRID, order=3).dim == 16
    assert make_features("tile", GRID, num_tilings=2, tiles_per_dim=4).dim == 2 * 25


@pytest.mark.parametrize("build, match", [
    (lambda: make_features("rbf", GRID), r"features='rbf' is not one of \('onehot', 'polynomial', 'fourier', 'tile'\)"),
    (lambda: PolynomialFeatures(GRID, order=-1), "order=-1 must be an integer >= 0"),
    (lambda: TileCoding(GRID, num_tilings=0), "num_tilings=0 must be an integer >= 1"),
    (lambda: OneHotFeatures((0, 5)), r"grid_size=\(0, 5\)"),
    (lambda: OneHotFeatures(GRID)([25]), r"states must lie in 0..24"),
    (lambda: OneHotFeatures(GRID)(torch.tensor([0.5])), "integer state numbers"),
])
def test_bad_input_raises_value_errors_that_name_it(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_states_of_reads_every_grid_world_observation_type():
    from litzoo.envs import GridWorld

    phi = make_features("onehot", (3, 4))
    for obs_type in ("index", "onehot", "coords"):
        env = GridWorld(size=(3, 4), target=(2, 3), forbidden=(), obs_type=obs_type)
        obs = [env.reset(options={"state": s})[0] for s in range(12)]
        assert phi.states_of(torch.as_tensor(np.array(obs)), obs_type).tolist() == list(range(12))
