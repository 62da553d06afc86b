"""The grid world of Shiyu Zhao, *Mathematical Foundations of Reinforcement Learning* (Springer, 2025).

A deterministic, finite MDP used throughout the book (Chapters 1-4) to illustrate state values, the
Bellman (optimality) equation, value iteration and policy iteration:

* **Cells** ``(row, col)`` with row 0 at the top. **States** are numbered row-major,
  ``s = row * cols + col`` (the book numbers them the same way, 1-based: s1..s25).
* **Actions**, in the book's order: ``0 = up, 1 = right, 2 = down, 3 = left, 4 = stay``
  (the book's a1..a5).
* **Dynamics** ``p(s'|s, a)`` are deterministic. Trying to leave the grid keeps the agent where it is.
  Forbidden cells *can* be entered (the book's convention; they are not walls), which is
  what makes the optimal policy sometimes cut through them when their penalty is small.
* **Rewards** ``r(s, a)``, decided in this order:
  ``r_boundary`` for an attempt to leave the grid; otherwise ``r_target`` when the next cell is the
  target (so *staying* at the target keeps earning ``r_target``); otherwise ``r_forbidden`` when the
  next cell is forbidden (so staying inside a forbidden cell keeps paying); otherwise ``r_other``.
* The target is **not** an absorbing/terminal state in the model (as in the book), so under an
  optimal policy ``v*(target) = r_target / (1 - gamma)``. ``terminate_at_target=True`` ends an
  episode there instead (useful for episodic learners); :meth:`GridWorld.model` is unaffected.

The defaults reproduce the book's 5x5 example (Chapter 3, Sec. 3.5 "factors that influence optimal
policies"): target at (row 3, col 2), forbidden cells (1,1), (1,2), (2,2), (3,1), (3,3), (4,1) and
``r_boundary = r_forbidden = -1, r_target = +1, r_other = 0`` (the book's Chapter 1 reward setting);
with ``gamma = 0.9`` its optimal values are the ones the book prints (checked in
``tests/envs/test_bellman.py``). Sec. 3.5 also raises ``r_forbidden`` to -10, pass
``r_forbidden=-10.0`` for that variant.

Episodes end by truncation after ``max_episode_steps`` steps (the task is continuing). The exact
model ``(P, R)`` for the solvers in :mod:`litzoo.envs.bellman` is :meth:`GridWorld.model`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

Cell = tuple[int, int]

UP, RIGHT, DOWN, LEFT, STAY = 0, 1, 2, 3, 4
#: (d_row, d_col) of each action, in the book's order a1..a5.
ACTION_DELTAS: tuple[Cell, ...] = ((-1, 0), (0, 1), (1, 0), (0, -1), (0, 0))
ACTION_NAMES: tuple[str, ...] = ("up", "right", "down", "left", "stay")
OBS_TYPES = ("index", "onehot", "coords")

# Book-like colours: forbidden cells amber, target cyan, policy green.
_COLOR_FORBIDDEN = (0.929, 0.694, 0.125)
_COLOR_TARGET = (0.301, 0.745, 0.933)
_COLOR_POLICY = (0.466, 0.674, 0.188)


class GridWorld(gym.Env):
    """Zhao's grid world as a :class:`gymnasium.Env` (registered as ``"litzoo/GridWorld-v0"``).

    Args:
        size: ``(rows, cols)`` of the grid.
        start: cell where :meth:`reset` puts the agent (may be any cell, forbidden ones included).
        target: the target cell; must not be forbidden.
        forbidden: forbidden cells (enterable, but entering or staying costs ``r_forbidden``).
        r_boundary: reward for trying to move off the grid (the agent stays in place).
        r_forbidden: reward for a step whose next cell is forbidden.
        r_target: reward for a step whose next cell is the target.
        r_other: reward for every other step.
        max_episode_steps: steps after which an episode is truncated; ``None`` never truncates.
        terminate_at_target: end the episode (``terminated=True``) when the agent reaches the target.
        obs_type: ``"index"`` gives the state number (``Discrete(S)``, for tabular methods);
            ``"onehot"`` a float32 one-hot vector ``Box(0, 1, (S,))``; ``"coords"`` the float32
            ``(row, col)`` of the cell, ``Box((0, 0), (rows-1, cols-1))`` (both for neural networks).
            ``info["state"]`` always carries the state number.
        render_mode: ``None``, ``"ansi"`` (text grid) or ``"rgb_array"`` (matplotlib image).
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        size: tuple[int, int] = (5, 5),
        start: Cell = (0, 0),
        target: Cell = (3, 2),
        forbidden: Sequence[Cell] = ((1, 1), (1, 2), (2, 2), (3, 1), (3, 3), (4, 1)),
        r_boundary: float = -1.0,
        r_forbidden: float = -1.0,
        r_target: float = 1.0,
        r_other: float = 0.0,
        max_episode_steps: int | None = 100,
        terminate_at_target: bool = False,
        obs_type: str = "index",
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        self.size = _check_size(size)
        self.rows, self.cols = self.size
        self.start = self._check_cell(start, "start")
        self.target = self._check_cell(target, "target")
        cells = [self._check_cell(c, f"forbidden[{i}]") for i, c in enumerate(forbidden)]
        self.forbidden = tuple(dict.fromkeys(cells))  # de-duplicated, order kept
        if self.target in self.forbidden:
            raise ValueError(
                f"target={self.target} is also listed in forbidden={self.forbidden}; its reward would be "
                "ambiguous. Remove it from `forbidden` or move the target."
            )
        for name, value in (("r_boundary", r_boundary), ("r_forbidden", r_forbidden),
                            ("r_target", r_target), ("r_other", r_other)):
            if not math.isfinite(float(value)):
                raise ValueError(f"{name}={value!r} must be a finite number.")
        self.r_boundary, self.r_forbidden = float(r_boundary), float(r_forbidden)
        self.r_target, self.r_other = float(r_target), float(r_other)
        if max_episode_steps is not None and (int(max_episode_steps) != max_episode_steps or max_episode_steps < 1):
            raise ValueError(
                f"max_episode_steps={max_episode_steps!r} must be a positive integer, or None to never truncate."
            )
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.terminate_at_target = bool(terminate_at_target)
        if obs_type not in OBS_TYPES:
            raise ValueError(f"obs_type={obs_type!r} is not one of {OBS_TYPES}.")
        self.obs_type = obs_type
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={render_mode!r} is not one of {self.metadata['render_modes']} (or None). "
                "To save a picture of values and a policy use `render_values(values, policy, path)`."
            )
        self.render_mode = render_mode

        self.num_states = self.rows * self.cols
        self.num_actions = len(ACTION_DELTAS)
        self.action_space = spaces.Discrete(self.num_actions)
        if obs_type == "index":
            self.observation_space = spaces.Discrete(self.num_states)
        elif obs_type == "onehot":
            self.observation_space = spaces.Box(0.0, 1.0, shape=(self.num_states,), dtype=np.float32)
        else:
            high = np.array([self.rows - 1, self.cols - 1], dtype=np.float32)
            self.observation_space = spaces.Box(np.zeros(2, dtype=np.float32), high, dtype=np.float32)

        self._cell: Cell = self.start
        self._elapsed_steps = 0

    # ----------------------------------------------------------------------------------- numbering
    def state_of(self, cell: Cell) -> int:
        """Row-major state number of ``cell = (row, col)``."""
        row, col = self._check_cell(cell, "cell")
        return row * self.cols + col

    def cell_of(self, state: int) -> Cell:
        """``(row, col)`` of state number ``state``."""
        if not 0 <= int(state) < self.num_states:
            raise ValueError(f"state={state!r} is outside 0..{self.num_states - 1}.")
        return divmod(int(state), self.cols)

    # ----------------------------------------------------------------------------------- dynamics
    def transition(self, cell: Cell, action: int) -> tuple[Cell, float]:
        """The deterministic model: ``(next_cell, reward)`` for taking ``action`` in ``cell``."""
        d_row, d_col = ACTION_DELTAS[action]
        row, col = cell[0] + d_row, cell[1] + d_col
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            return cell, self.r_boundary  # bounced off the boundary: stay put
        next_cell = (row, col)
        if next_cell == self.target:
            return next_cell, self.r_target
        if next_cell in self.forbidden:
            return next_cell, self.r_forbidden
        return next_cell, self.r_other

    def model(self) -> tuple[np.ndarray, np.ndarray]:
        """The exact MDP: ``P[s, a, s'] = p(s'|s, a)`` of shape (S, A, S) and ``R[s, a] = E[r|s, a]`` (S, A).

        The target is not absorbing here even with ``terminate_at_target=True`` (the book's model);
        that option only changes how :meth:`step` ends episodes.
        """
        P = np.zeros((self.num_states, self.num_actions, self.num_states))
        R = np.zeros((self.num_states, self.num_actions))
        for s in range(self.num_states):
            for a in range(self.num_actions):
                next_cell, reward = self.transition(self.cell_of(s), a)
                P[s, a, self.state_of(next_cell)] = 1.0
                R[s, a] = reward
        return P, R

    # ----------------------------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Put the agent at ``start``, or at ``options["state"]`` (a state number or a ``(row, col)``)."""
        super().reset(seed=seed)
        start = (options or {}).get("state", self.start)
        if isinstance(start, (int, np.integer)):
            self._cell = self.cell_of(int(start))
        else:
            self._cell = self._check_cell(start, 'options["state"]')
        self._elapsed_steps = 0
        return self._observation(), self._info()

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(
                f"action={action!r} is not in {self.action_space} "
                "(0=up, 1=right, 2=down, 3=left, 4=stay)."
            )
        self._cell, reward = self.transition(self._cell, int(action))
        self._elapsed_steps += 1
        terminated = self.terminate_at_target and self._cell == self.target
        truncated = self.max_episode_steps is not None and self._elapsed_steps >= self.max_episode_steps
        return self._observation(), reward, terminated, truncated, self._info()

    # ----------------------------------------------------------------------------------- state
    def get_state(self) -> dict[str, Any]:
        """Where the env is, in plain types (fits a ``weights_only`` checkpoint): the agent's cell, the
        episode's step count and the ``np_random`` state (``None`` before the first seeding)."""
        rng = None if self._np_random is None else self._np_random.bit_generator.state
        return {"cell": list(self._cell), "elapsed_steps": int(self._elapsed_steps), "np_random": rng}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`get_state`: the same actions then give the same observations and rewards."""
        self._cell = self._check_cell(state["cell"], 'state["cell"]')
        self._elapsed_steps = int(state["elapsed_steps"])
        if state.get("np_random") is not None:
            self.np_random.bit_generator.state = state["np_random"]

    def render(self):
        if self.render_mode == "ansi":
            rows = []
            for r in range(self.rows):
                line = ""
                for c in range(self.cols):
                    cell = (r, c)
                    line += "A" if cell == self._cell else "T" if cell == self.target else "#" if cell in self.forbidden else "."
                rows.append(line)
            return "\n".join(rows) + "\n"
        if self.render_mode == "rgb_array":
            return self.render_values(agent=self._cell)
        return None

    # ----------------------------------------------------------------------------------- pictures
    def render_values(
        self,
        values: np.ndarray | Sequence[float] | None = None,
        policy: np.ndarray | None = None,
        path: str | None = None,
        agent: Cell | None = None,
        precision: int = 1,
    ) -> np.ndarray:
        """Draw the grid like the book's figures and return it as an RGB array (H, W, 3) uint8.

        Forbidden cells are amber, the target cyan; ``values`` (length S) are written in the cells;
        ``policy`` (S x A probabilities) is drawn as arrows whose length grows with the probability,
        with a circle for "stay". When ``path`` is given the picture is also written there as a PNG.
        Uses matplotlib's Agg canvas directly, so no display and no global pyplot state are needed.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Circle, FancyArrow, Rectangle

        if values is not None:
            values = np.asarray(values, dtype=float).reshape(-1)
            if values.shape != (self.num_states,):
                raise ValueError(f"values has {values.size} entries; expected one per state, S={self.num_states}.")
        if policy is not None:
            policy = np.asarray(policy, dtype=float)
            if policy.shape != (self.num_states, self.num_actions):
                raise ValueError(
                    f"policy has shape {policy.shape}; expected (S, A) = ({self.num_states}, {self.num_actions})."
                )

        fig = Figure(figsize=(0.9 * self.cols + 0.6, 0.9 * self.rows + 0.6), dpi=100)
        canvas = FigureCanvasAgg(fig)
        ax = fig.add_axes((0.05, 0.05, 0.9, 0.9))
        ax.set_xlim(-0.5, self.cols - 0.5)
        ax.set_ylim(self.rows - 0.5, -0.5)  # row 0 at the top
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        for cell, color in [(c, _COLOR_FORBIDDEN) for c in self.forbidden] + [(self.target, _COLOR_TARGET)]:
            ax.add_patch(Rectangle((cell[1] - 0.5, cell[0] - 0.5), 1, 1, facecolor=color, edgecolor="none"))
        for k in range(self.rows + 1):
            ax.axhline(k - 0.5, color="gray", linewidth=1)
        for k in range(self.cols + 1):
            ax.axvline(k - 0.5, color="gray", linewidth=1)
        for s in range(self.num_states):
            row, col = self.cell_of(s)
            if values is not None:
                offset = 0.33 if policy is not None else 0.0  # numbers below, clear of the arrows
                ax.text(col, row + offset, f"{values[s]:.{precision}f}", ha="center", va="center", fontsize=9)
            if policy is not None:
                row = row - 0.1  # arrows drawn slightly above the cell centre
                for a, prob in enumerate(policy[s]):
                    if prob <= 0:
                        continue
                    if a == STAY:
                        ax.add_patch(Circle((col, row), 0.08 + 0.07 * prob, fill=False, edgecolor=_COLOR_POLICY, linewidth=1.5))
                    else:
                        d_row, d_col = ACTION_DELTAS[a]
                        length = 0.1 + 0.2 * prob
                        ax.add_patch(FancyArrow(col, row, d_col * length, d_row * length, width=0.02,
                                                head_width=0.1, head_length=0.08, color=_COLOR_POLICY,
                                                length_includes_head=True))
        if agent is not None:
            ax.plot([agent[1]], [agent[0]], marker="*", markersize=18, color="blue")
        canvas.draw()
        image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        if path is not None:
            fig.savefig(path, format="png")
        return image

    # ----------------------------------------------------------------------------------- helpers
    def _observation(self):
        s = self.state_of(self._cell)
        if self.obs_type == "index":
            return s
        if self.obs_type == "onehot":
            obs = np.zeros(self.num_states, dtype=np.float32)
            obs[s] = 1.0
            return obs
        return np.array(self._cell, dtype=np.float32)

    def _info(self) -> dict[str, Any]:
        return {"state": self.state_of(self._cell), "cell": self._cell}

    def _check_cell(self, cell: Any, name: str) -> Cell:
        try:
            row, col = (int(x) for x in cell)
        except (TypeError, ValueError):
            raise ValueError(f"{name}={cell!r} must be a (row, col) pair of integers.") from None
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            raise ValueError(
                f"{name}={cell!r} is outside the {self.rows}x{self.cols} grid; rows are 0..{self.rows - 1} "
                f"and cols 0..{self.cols - 1} (row 0 is the top row)."
            )
        return row, col


def _time_limits(env: gym.Env) -> list[gym.wrappers.TimeLimit]:
    layers = []
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            layers.append(env)
        env = env.env
    return layers


def get_env_state(env: gym.Env) -> dict[str, Any]:
    """The state of a (wrapped) :class:`GridWorld`: its :meth:`~GridWorld.get_state` and the step count of every
    ``TimeLimit`` around it (outermost first), which gymnasium keeps in a private attribute."""
    return {"env": env.unwrapped.get_state(), "time_limits": [layer._elapsed_steps for layer in _time_limits(env)]}


def set_env_state(env: gym.Env, state: dict[str, Any]) -> None:
    """Put ``env`` (the same wrapper stack as when :func:`get_env_state` was taken) back into ``state``."""
    layers = _time_limits(env)
    if len(layers) != len(state["time_limits"]):
        raise ValueError(f"the state has {len(state['time_limits'])} TimeLimit step counts, the env {len(layers)} "
                         "TimeLimit wrappers: restore it into an env made the same way (same max_episode_steps).")
    env.unwrapped.set_state(state["env"])
    for layer, steps in zip(layers, state["time_limits"]):
        layer._elapsed_steps = steps  # None before the first reset


def _check_size(size: Any) -> tuple[int, int]:
    try:
        rows, cols = size
    except (TypeError, ValueError):
        raise ValueError(f"size={size!r} must be a (rows, cols) pair of positive integers.") from None
    if int(rows) != rows or int(cols) != cols or rows < 1 or cols < 1:
        raise ValueError(f"size={size!r} must be a (rows, cols) pair of positive integers.")
    return int(rows), int(cols)
