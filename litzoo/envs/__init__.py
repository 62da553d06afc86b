"""Small environments with exact models, and exact dynamic-programming solvers for them; one-step
sanity-check envs with known optimal policies (``toy``); the grid world's state for exact resumes
(:meth:`GridWorld.get_state`, :func:`get_env_state` with its ``TimeLimit``) and pictures (``plots``).

Importing this package registers ``"litzoo/GridWorld-v0"`` with gymnasium, so
``gymnasium.make("litzoo/GridWorld-v0", ...)`` works. The environment truncates its own episodes
(``GridWorld(max_episode_steps=100)``), so no ``TimeLimit`` is registered; note that
``gymnasium.make(..., max_episode_steps=N)`` does not reach the env but wraps it in gymnasium's
``TimeLimit(N)``: both limits then apply and the smaller one truncates.
"""

import gymnasium

from litzoo.envs.bellman import (
    BellmanInfo,
    action_values,
    greedy_errors,
    greedy_policy,
    policy_evaluation,
    policy_iteration,
    truncated_policy_iteration,
    value_errors,
    value_iteration,
)
from litzoo.envs.grid_world import ACTION_NAMES, GridWorld, get_env_state, set_env_state
from litzoo.envs.toy import ContextBandit, ContinuousIdentity

GRID_WORLD_ID = "litzoo/GridWorld-v0"

# Guard: re-importing (e.g. importlib.reload in notebooks) must not re-register and warn.
if GRID_WORLD_ID not in gymnasium.registry:
    gymnasium.register(id=GRID_WORLD_ID, entry_point="litzoo.envs.grid_world:GridWorld")

__all__ = [
    "ACTION_NAMES",
    "GRID_WORLD_ID",
    "BellmanInfo",
    "ContextBandit",
    "ContinuousIdentity",
    "GridWorld",
    "action_values",
    "get_env_state",
    "greedy_errors",
    "greedy_policy",
    "policy_evaluation",
    "policy_iteration",
    "set_env_state",
    "truncated_policy_iteration",
    "value_errors",
    "value_iteration",
]
