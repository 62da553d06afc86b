r"""Feature maps :math:`\phi(s) \in \mathbb R^d` of grid-world states, for linear value-function approximation.

Shiyu Zhao, *Mathematical Foundations of Reinforcement Learning* (Springer, 2025), Ch. 8
("Value Function Approximation"): the state value is approximated by :math:`\hat v(s, w) = \phi(s)^\top w`
and learned by TD-linear (Zhao eq. 8.13),

.. math::  w_{t+1} = w_t + \alpha_t \big[r_{t+1} + \gamma\, \phi(s_{t+1})^\top w_t - \phi(s_t)^\top w_t\big]\, \phi(s_t).

Sutton & Barto, *Reinforcement Learning: An Introduction* (2nd ed., 2018), Ch. 9.5 (feature
construction for linear methods): polynomials (9.5.1), the Fourier basis (9.5.2, Konidaris, Osentoski
& Thomas 2011, "Value Function Approximation in Reinforcement Learning Using the Fourier Basis"),
tile coding (9.5.4).

A state ``s`` (row-major number, ``s = row * cols + col``, as in :class:`litzoo.envs.GridWorld`) is
first mapped to normalised coordinates :math:`x = \mathrm{col} / (\mathrm{cols} - 1)`,
:math:`y = \mathrm{row} / (\mathrm{rows} - 1)` in :math:`[0, 1]` (0 along a dimension of size 1), the
book's "(x, y) = the column and row indexes, normalised".

* :class:`OneHotFeatures`: :math:`\phi(s) = e_s`; linear TD with it *is* tabular TD (Zhao Sec. 8.2:
  the tabular case is the special case of linear approximation with one-hot features).
* :class:`PolynomialFeatures`: all monomials :math:`x^i y^j`, :math:`i + j \le` ``order``, of the
  centred coordinates in :math:`[-1, 1]` (Zhao's examples :math:`[1, x, y]`, :math:`[1, x, y, x^2, xy, y^2]`, ...).
  Centring keeps the constant and the odd terms nearly orthogonal over the grid, which conditions
  plain SGD far better than :math:`[0, 1]` coordinates do.
* :class:`FourierFeatures`: :math:`\cos(\pi (c_1 x + c_2 y))`, :math:`c \in \{0, \dots, \mathrm{order}\}^2`,
  with :math:`x, y \in [0, 1]` (the Fourier cosine basis of Konidaris et al. 2011, used in Zhao Ch. 8's examples).
* :class:`TileCoding`: ``num_tilings`` grids of ``tiles_per_dim`` x ``tiles_per_dim`` tiles over
  :math:`[0, 1]^2`, each shifted by a fraction of a tile (Sutton & Barto's asymmetric displacement
  :math:`(1, 3)`); a binary feature per tile, exactly ``num_tilings`` of them active. With tile
  coding, S&B suggest a step size of about :math:`1 / (10\,n)` for ``n = num_tilings`` active features.

Every map is a callable: ``features(states)`` with a batch of state numbers (B,) gives a (B, d) float
tensor; ``features.dim`` is d. Pure torch, no Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

FEATURES = ("onehot", "polynomial", "fourier", "tile")


def _check_grid_size(grid_size: Sequence[int]) -> tuple[int, int]:
    try:
        rows, cols = (int(n) for n in grid_size)
    except (TypeError, ValueError):
        raise ValueError(f"grid_size={grid_size!r} must be (rows, cols), two positive integers, e.g. (5, 5).") from None
    if rows < 1 or cols < 1:
        raise ValueError(f"grid_size={tuple(grid_size)} must be two positive integers (rows, cols).")
    return rows, cols


def _check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name}={value!r} must be an integer >= {minimum}.")
    return int(value)


class GridFeatures:
    """Base class: state numbers -> normalised coordinates; subclasses define :meth:`features` and ``dim``."""

    dim: int

    def __init__(self, grid_size: Sequence[int]) -> None:
        self.grid_size = _check_grid_size(grid_size)
        self.rows, self.cols = self.grid_size
        self.num_states = self.rows * self.cols

    def coordinates(self, states: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, y)`` in ``[0, 1]``: the normalised column and row of each state (float64)."""
        row = torch.div(states, self.cols, rounding_mode="floor").double()
        col = (states % self.cols).double()
        x = col / (self.cols - 1) if self.cols > 1 else torch.zeros_like(col)
        y = row / (self.rows - 1) if self.rows > 1 else torch.zeros_like(row)
        return x, y

    def states_of(self, obs: Tensor, obs_type: str) -> Tensor:
        """State numbers (long) of :class:`litzoo.envs.GridWorld` observations of ``obs_type``: ``"index"``,
        ``"onehot"`` or ``"coords"`` (a float ``(row, col)``)."""
        if obs_type == "index":
            return obs.long().reshape(-1)
        if obs_type == "onehot":
            return obs.argmax(-1)
        return (obs[..., 0].round() * self.cols + obs[..., 1].round()).long()

    def _states(self, states: Tensor | np.ndarray | Sequence[int] | int) -> Tensor:
        states = torch.as_tensor(states)
        if states.is_floating_point() or states.dtype == torch.bool:
            raise ValueError(f"states must be integer state numbers, got dtype {states.dtype}.")
        states = states.long().reshape(-1)
        if states.numel() and (states.min() < 0 or states.max() >= self.num_states):
            raise ValueError(
                f"states must lie in 0..{self.num_states - 1} (a {self.rows}x{self.cols} grid); got values in "
                f"{int(states.min())}..{int(states.max())}."
            )
        return states

    def features(self, states: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, states: Tensor | np.ndarray | Sequence[int] | int) -> Tensor:
        """``phi(states)``: (B, dim) float32 on the device of ``states``."""
        return self.features(self._states(states)).float()

    def matrix(self) -> np.ndarray:
        r"""The feature matrix :math:`\Phi` (S, d) of all states, float64 numpy (for exact fixed points)."""
        return self.features(torch.arange(self.num_states)).double().numpy()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(grid_size={self.grid_size}, dim={self.dim})"


class OneHotFeatures(GridFeatures):
    r""":math:`\phi(s) = e_s \in \{0, 1\}^S`: the tabular representation (Zhao Sec. 8.2)."""

    def __init__(self, grid_size: Sequence[int]) -> None:
        super().__init__(grid_size)
        self.dim = self.num_states

    def features(self, states: Tensor) -> Tensor:
        return torch.nn.functional.one_hot(states, self.num_states).double()


class PolynomialFeatures(GridFeatures):
    r"""All monomials :math:`\bar x^i \bar y^j`, :math:`i + j \le` ``order``, of the centred coordinates
    :math:`\bar x = 2x - 1, \bar y = 2y - 1 \in [-1, 1]`; ``dim = (order + 1)(order + 2) / 2``.

    Ordered by total degree, then by falling power of x: ``order=2`` gives
    :math:`[1, \bar x, \bar y, \bar x^2, \bar x \bar y, \bar y^2]` (Zhao Ch. 8's examples; S&B 9.5.1).
    ``exponents`` lists the ``(i, j)`` of each feature.
    """

    def __init__(self, grid_size: Sequence[int], order: int = 2) -> None:
        super().__init__(grid_size)
        self.order = _check_positive_int("order", order, minimum=0)
        self.exponents = [(i, k - i) for k in range(self.order + 1) for i in range(k, -1, -1)]
        self.dim = len(self.exponents)

    def features(self, states: Tensor) -> Tensor:
        x, y = self.coordinates(states)
        x, y = 2 * x - 1, 2 * y - 1
        return torch.stack([x**i * y**j for i, j in self.exponents], dim=-1)


class FourierFeatures(GridFeatures):
    r"""The Fourier cosine basis :math:`\phi_c(s) = \cos(\pi (c_1 x + c_2 y))`, :math:`c \in \{0..\mathrm{order}\}^2`,
    :math:`x, y \in [0, 1]`; ``dim = (order + 1)^2`` (Konidaris et al. 2011; S&B 9.5.2; Zhao Ch. 8).

    ``c = (0, 0)`` is the constant feature 1. ``coefficients`` (dim, 2) lists the ``c`` of each feature,
    ``c_1`` (the x = column frequency) major.
    """

    def __init__(self, grid_size: Sequence[int], order: int = 2) -> None:
        super().__init__(grid_size)
        self.order = _check_positive_int("order", order, minimum=0)
        c = torch.arange(self.order + 1, dtype=torch.float64)
        self.coefficients = torch.cartesian_prod(c, c).reshape(-1, 2)
        self.dim = self.coefficients.shape[0]

    def features(self, states: Tensor) -> Tensor:
        x, y = self.coordinates(states)
        xy = torch.stack([x, y], dim=-1)  # (B, 2)
        return torch.cos(math.pi * xy @ self.coefficients.to(xy.device).T)


class TileCoding(GridFeatures):
    r"""``num_tilings`` offset tilings of ``[0, 1]^2``, each ``tiles_per_dim`` tiles of width
    :math:`w = 1/\mathrm{tiles\_per\_dim}` per dimension; binary features (S&B 9.5.4).

    Tiling ``k`` is shifted by :math:`(k \cdot (1, 3) / n) \bmod 1` tile widths (S&B's asymmetric
    displacement, so the tilings' boundaries do not line up along the diagonal); to still cover
    ``[0, 1]`` each tiling has ``tiles_per_dim + 1`` tiles per dimension, hence
    ``dim = num_tilings * (tiles_per_dim + 1)^2``. Every state activates exactly ``num_tilings``
    features (one per tiling): nearby states share tiles, far-apart ones share none, which is the
    generalisation tile coding buys.
    """

    def __init__(self, grid_size: Sequence[int], num_tilings: int = 4, tiles_per_dim: int = 3) -> None:
        super().__init__(grid_size)
        self.num_tilings = _check_positive_int("num_tilings", num_tilings)
        self.tiles_per_dim = _check_positive_int("tiles_per_dim", tiles_per_dim)
        self.tiles_per_tiling = (self.tiles_per_dim + 1) ** 2
        self.dim = self.num_tilings * self.tiles_per_tiling
        k = torch.arange(self.num_tilings, dtype=torch.float64)[:, None]
        self.offsets = (k * torch.tensor([1.0, 3.0], dtype=torch.float64) / self.num_tilings) % 1.0  # in tile widths

    def active(self, states: Tensor | np.ndarray | Sequence[int] | int) -> Tensor:
        """Indices (B, num_tilings) of the active feature in each tiling."""
        return self._active(self._states(states))

    def _active(self, states: Tensor) -> Tensor:
        x, y = self.coordinates(states)
        xy = torch.stack([x, y], dim=-1)[:, None, :] * self.tiles_per_dim  # in tile widths, (B, 1, 2)
        tile = torch.floor(xy + self.offsets.to(xy.device)).long()  # (B, n, 2), entries in 0..tiles_per_dim
        tile = tile.clamp_(0, self.tiles_per_dim)  # guards against round-off at x = 1
        index = tile[..., 1] * (self.tiles_per_dim + 1) + tile[..., 0]
        return index + torch.arange(self.num_tilings, device=xy.device) * self.tiles_per_tiling

    def features(self, states: Tensor) -> Tensor:
        out = torch.zeros(states.shape[0], self.dim, dtype=torch.float64, device=states.device)
        return out.scatter_(1, self._active(states), 1.0)


def make_features(
    name: str,
    grid_size: Sequence[int],
    order: int = 2,
    num_tilings: int = 4,
    tiles_per_dim: int = 3,
) -> GridFeatures:
    """The feature map called ``name`` (one of :data:`FEATURES`) for a ``grid_size = (rows, cols)`` grid."""
    if name == "onehot":
        return OneHotFeatures(grid_size)
    if name == "polynomial":
        return PolynomialFeatures(grid_size, order)
    if name == "fourier":
        return FourierFeatures(grid_size, order)
    if name == "tile":
        return TileCoding(grid_size, num_tilings, tiles_per_dim)
    raise ValueError(
        f"features={name!r} is not one of {FEATURES}: 'onehot' (tabular), 'polynomial' / 'fourier' (set `order`), "
        "'tile' (set `num_tilings`, `tiles_per_dim`)."
    )
