r"""The exported policy: one file format shared by every RL module, loadable without Lightning.

A policy maps a raw observation to an environment action,

.. math::  a = g\big(f_\theta(\mathrm{enc}(o))\big),

with ``enc`` the :class:`ObservationEncoder` (one-hot / flatten, optional
running-statistics whitening), :math:`f_\theta` the actor network and ``g`` the map to the action
space, by ``kind``:

* ``"deterministic"`` (DDPG/TD3): :math:`f_\theta(s) \in [-1, 1]^k` is mapped affinely onto the Box
  bounds, :math:`a = \mathrm{low} + (f + 1)(\mathrm{high} - \mathrm{low})/2`.
* ``"squashed_gaussian"`` (SAC): :math:`f_\theta = \tanh(m_\theta)` (``deterministic=True``) or a sample
  :math:`\tanh(u)`, mapped onto the Box bounds like ``"deterministic"``.
* ``"gaussian"``: the mean (``deterministic=True``) or a sample of :math:`\mathcal N(m_\theta, \sigma^2)`,
  clipped to the Box bounds (the log-probabilities used in training are of the unclipped sample).
* ``"categorical"``: :math:`\arg\max_a \ell_\theta(s)_a` or a sample of the softmax, plus the space's ``start``.
* ``"greedy_q"`` (DQN): :math:`f_\theta = Q_\theta(s, \cdot)` is a :class:`QNetwork` (plain or dueling) and the
  action is always :math:`\arg\max_a Q_\theta(s, a)` plus the space's ``start`` (the exported policy is
  the greedy one; epsilon-greedy exploration belongs to training).

**Folder format** written by :meth:`Policy.save` (and by every module's ``export``):

* ``policy.safetensors``: the encoder's normalisation statistics (``encoder.normalizer.rms.*``) and
  the actor's weights, no pickle;
* ``policy.json``: ``{"format": "litzoo.policy", "version": 1, "kind", "observation_space",
  "action_space", "encoder": {...}, "actor": {...}, "metadata": {...}}`` — the spaces as plain specs
  (:func:`space_to_spec`) and the constructor arguments that rebuild the networks.

:func:`load_policy` rebuilds it and, given an ``env`` or spaces, checks that they match and says
what differs. :func:`evaluate_policy` runs episodes with any object that has ``predict``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from litzoo.model_card import policy_card, write_model_card
from litzoo.nets.actors_critics import ACTORS, QNetwork
from litzoo.rl.normalization import ObservationNormalizer

FORMAT = "litzoo.policy"
VERSION = 1
WEIGHTS_NAME = "policy.safetensors"
CONFIG_NAME = "policy.json"


#: every policy kind and the network class that ``load_policy`` rebuilds for it
POLICY_NETWORKS: dict[str, type[nn.Module]] = {**ACTORS, "greedy_q": QNetwork}
KINDS = tuple(POLICY_NETWORKS)
DISCRETE_KINDS = ("categorical", "greedy_q")
SQUASHED_KINDS = ("deterministic", "squashed_gaussian")  # actors acting in [-1, 1], mapped onto the bounds


# ----------------------------------------------------------------------------------------- encoder
class ObservationEncoder(nn.Module):
    """Raw observation batch -> float features ``(B, features_dim)``.

    Args:
        obs_shape: shape of one observation (``()`` for a ``Discrete`` state index).
        num_states: ``n`` of a ``Discrete`` observation space (one-hot encoding); ``None`` for a Box.
        start: the ``start`` of that ``Discrete`` space (its first state number).
        normalize: whiten Box observations with running mean/std (:class:`ObservationNormalizer`;
            call :meth:`update` with raw observations while collecting, never while evaluating).
        clip: clip of the whitened observations.
    """

    def __init__(
        self, obs_shape: Sequence[int], num_states: int | None = None, normalize: bool = False, clip: float = 10.0,
        start: int = 0,
    ) -> None:
        super().__init__()
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.num_states = None if num_states is None else int(num_states)
        if self.num_states is not None and (self.obs_shape != () or self.num_states < 1):
            raise ValueError(f"a Discrete observation has obs_shape=() and num_states >= 1; got {self.obs_shape}, {num_states}.")
        if normalize and self.num_states is not None:
            raise ValueError("normalize_observations=True needs Box observations; a Discrete one is one-hot encoded.")
        self.features_dim = self.num_states or math.prod(self.obs_shape)
        self.clip, self.start = float(clip), int(start)
        self.normalizer = ObservationNormalizer(self.obs_shape, clip=self.clip) if normalize else None

    def config(self) -> dict[str, Any]:
        return {"obs_shape": list(self.obs_shape), "num_states": self.num_states,
                "normalize": self.normalizer is not None, "clip": self.clip,
                "start": self.start}

    @torch.no_grad()
    def update(self, obs: Tensor) -> None:
        """Merge a batch of raw observations into the running statistics (no-op without normalisation)."""
        if self.normalizer is not None:
            self.normalizer.update(obs)

    def forward(self, obs: Tensor) -> Tensor:
        if self.num_states is not None:
            return nn.functional.one_hot(obs.long() - self.start, self.num_states).float()
        if self.normalizer is not None:
            obs = self.normalizer(obs)
        return obs.float().flatten(1)


# ----------------------------------------------------------------------------------------- spaces
def _compact(values: np.ndarray) -> float | list:
    """A bound array as one float when all entries are equal (the usual case), else a nested list."""
    values = np.asarray(values, dtype=np.float64)
    if values.size and np.all(values == values.flat[0]):
        return float(values.flat[0])
    return values.tolist()


def space_to_spec(space: gym.Space) -> dict[str, Any]:
    """A ``Box`` or ``Discrete`` space as a JSON-able dict (plain types only, so it fits a checkpoint)."""
    if isinstance(space, gym.spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "low": _compact(space.low), "high": _compact(space.high),
                "dtype": str(space.dtype)}
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    raise ValueError(
        f"space {space} ({type(space).__name__}) is not supported; litzoo's RL modules take Box or Discrete "
        "observation and action spaces. Flatten Dict/Tuple spaces with gymnasium.wrappers.FlattenObservation."
    )


def as_spec(space: gym.Space | dict[str, Any]) -> dict[str, Any]:
    """A space or a spec dict, as a checked spec dict."""
    if isinstance(space, gym.Space):
        return space_to_spec(space)
    if isinstance(space, dict) and space.get("type") in ("Box", "Discrete"):
        return space_to_spec(spec_to_space(space))  # round trip normalises and validates
    raise ValueError(f"{space!r} is neither a gymnasium Box/Discrete space nor a space spec dict with 'type'.")


def spec_to_space(spec: dict[str, Any]) -> gym.Space:
    """Inverse of :func:`space_to_spec`."""
    if spec["type"] == "Box":
        shape = tuple(spec["shape"])
        dtype = np.dtype(spec.get("dtype", "float32"))
        low = np.broadcast_to(np.asarray(spec["low"], dtype=np.float64), shape).astype(dtype)
        high = np.broadcast_to(np.asarray(spec["high"], dtype=np.float64), shape).astype(dtype)
        return gym.spaces.Box(low, high, shape=shape, dtype=dtype)
    if spec["type"] == "Discrete":
        return gym.spaces.Discrete(int(spec["n"]), start=int(spec.get("start", 0)))
    raise ValueError(f"unknown space type {spec['type']!r} in spec {spec}.")


def make_encoder(observation_space: gym.Space | dict[str, Any], normalize: bool = False, clip: float = 10.0) -> ObservationEncoder:
    """The :class:`ObservationEncoder` for an observation space (one-hot for Discrete, flatten for Box)."""
    spec = as_spec(observation_space)
    if spec["type"] == "Discrete":
        return ObservationEncoder((), num_states=spec["n"], start=spec.get("start", 0), normalize=normalize, clip=clip)
    return ObservationEncoder(spec["shape"], normalize=normalize, clip=clip)


def describe_spec(spec: dict[str, Any]) -> str:
    if spec["type"] == "Discrete":
        return f"Discrete(n={spec['n']}" + (f", start={spec['start']})" if spec.get("start") else ")")
    return f"Box(shape={tuple(spec['shape'])}, low={spec['low']}, high={spec['high']})"


def check_space(name: str, expected: dict[str, Any], space: gym.Space | dict[str, Any]) -> None:
    """Raise a ``ValueError`` saying what differs between the spec ``expected`` and ``space``."""
    try:
        actual = as_spec(space)
    except ValueError as err:
        raise ValueError(f"{name} mismatch: expected {describe_spec(expected)}, got {space}. {err}") from None
    problems: list[str] = []
    if actual["type"] != expected["type"]:
        problems.append(f"type {expected['type']} != {actual['type']}")
    elif actual["type"] == "Discrete":
        if actual["n"] != expected["n"]:
            problems.append(f"discrete n {expected['n']} != {actual['n']}")
        if actual.get("start", 0) != expected.get("start", 0):
            problems.append(f"discrete start {expected.get('start', 0)} != {actual.get('start', 0)}")
    elif tuple(actual["shape"]) != tuple(expected["shape"]):
        problems.append(f"shape {tuple(expected['shape'])} != {tuple(actual['shape'])}")
    else:
        shape = tuple(expected["shape"])
        for bound in ("low", "high"):
            want = np.broadcast_to(np.asarray(expected[bound], dtype=np.float64), shape)
            got = np.broadcast_to(np.asarray(actual[bound], dtype=np.float64), shape)
            if not np.allclose(want, got, rtol=1e-5, atol=1e-6):
                problems.append(f"bounds {bound} {expected[bound]} != {actual[bound]}")
    if problems:
        raise ValueError(
            f"{name} mismatch: the policy was trained on {describe_spec(expected)} but got {describe_spec(actual)} "
            f"({'; '.join(problems)}). Use the environment (and wrappers) the policy was trained with."
        )


# ----------------------------------------------------------------------------------------- policy
class Policy(nn.Module):
    """Observation -> environment action (see the module docstring); the object ``load_policy`` returns.

    The RL modules own one as ``self.policy`` (sharing its encoder with their critics), so training,
    evaluation and the exported file all run this same code.
    """

    low: Tensor
    high: Tensor

    def __init__(
        self,
        encoder: ObservationEncoder,
        actor: nn.Module,
        kind: str,
        observation_space: gym.Space | dict[str, Any],
        action_space: gym.Space | dict[str, Any],
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not one of {KINDS}.")
        self.encoder, self.actor, self.kind = encoder, actor, kind
        self.observation_spec, self.action_spec = as_spec(observation_space), as_spec(action_space)
        expected_action = "Discrete" if kind in DISCRETE_KINDS else "Box"
        if self.action_spec["type"] != expected_action:
            raise ValueError(f"a {kind!r} policy needs a {expected_action} action space, got {describe_spec(self.action_spec)}.")
        self.action_start = int(self.action_spec.get("start", 0))
        self.action_shape = tuple(self.action_spec.get("shape", ()))
        self.obs_shape = tuple(self.observation_spec.get("shape", ()))
        flat = (int(np.prod(self.action_shape)),)
        low = high = torch.zeros(flat)
        if expected_action == "Box":
            low = torch.as_tensor(np.broadcast_to(np.asarray(self.action_spec["low"], np.float32), self.action_shape).reshape(flat).copy())
            high = torch.as_tensor(np.broadcast_to(np.asarray(self.action_spec["high"], np.float32), self.action_shape).reshape(flat).copy())
            if kind in SQUASHED_KINDS and not (torch.isfinite(low).all() and torch.isfinite(high).all()):
                raise ValueError(
                    f"a deterministic (tanh) policy needs finite action bounds, got {describe_spec(self.action_spec)}; "
                    "rescale the actions with gymnasium.wrappers.RescaleAction or ClipAction first."
                )
        # Bounds come from the spaces (in policy.json / the hyperparameters), so they are not saved as weights.
        # Actors work on flat actions (B, prod(action_shape)); to_env_action restores the space's shape.
        self.register_buffer("low", low.clone(), persistent=False)
        self.register_buffer("high", high.clone(), persistent=False)

    # ------------------------------------------------------------------ actions
    def scale_action(self, action: Tensor) -> Tensor:
        """A deterministic actor's ``[-1, 1]`` output mapped onto ``[low, high]``."""
        return self.low + (action + 1.0) * 0.5 * (self.high - self.low)

    def unscale_action(self, action: Tensor) -> Tensor:
        return 2.0 * (action - self.low) / (self.high - self.low) - 1.0

    def to_env_action(self, action: Tensor) -> Tensor:
        """The actor's raw action (tanh output / Gaussian sample / class index) as the env expects it."""
        if self.kind in DISCRETE_KINDS:
            return action + self.action_start if self.action_start else action
        if self.kind in SQUASHED_KINDS:
            action = self.scale_action(action)
        else:  # clip the Gaussian sample to the bounds (inf bounds leave it unchanged)
            action = torch.maximum(torch.minimum(action, self.high), self.low)
        return action.reshape(action.shape[0], *self.action_shape)

    def forward(self, obs: Tensor, deterministic: bool = True, generator: torch.Generator | None = None) -> Tensor:
        """Batched raw observations ``(B, *obs_shape)`` -> env actions ``(B, *action_shape)``."""
        features = self.encoder(obs)
        if self.kind == "greedy_q":  # always greedy: exploration is a training-time device
            return self.to_env_action(self.actor(features).argmax(-1))
        if self.kind == "deterministic":
            raw = self.actor(features)
        elif deterministic:
            raw = self.actor(features) if self.kind != "categorical" else self.actor(features).argmax(-1)
        else:
            raw = self.actor.sample(features, generator)
        return self.to_env_action(raw.float() if self.kind != "categorical" else raw)

    @torch.no_grad()
    def sample_for_rollout(self, obs: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """The acting step of on-policy methods: ``(actions, env_actions, log_probs)`` for a rollout.

        Updates the observation-normalisation statistics with ``obs`` first (a no-op without
        normalisation); ``actions`` is what the buffer stores (raw Gaussian sample / class index),
        ``env_actions`` what the env gets.
        """
        self.encoder.update(obs)
        actions, log_probs = self.actor.sample_with_log_prob(self.encoder(obs), generator)
        return actions, self.to_env_action(actions), log_probs

    @torch.no_grad()
    def predict(self, obs: Any, deterministic: bool = True) -> np.ndarray:
        """SB3-like: numpy (or list) observation(s) in, numpy action(s) out.

        A single observation (shape ``obs_shape``, or a scalar for a Discrete space) gives a single
        action; a batch ``(B, *obs_shape)`` gives ``(B, *action_shape)``. Returns only the action
        (SB3's ``predict`` also returns a recurrent state; there is none here).
        """
        obs_array = np.asarray(obs)
        single = self._is_single(obs_array)
        batch = obs_array[None] if single else obs_array
        if self.observation_spec["type"] == "Discrete":
            start, n = self.observation_spec.get("start", 0), self.observation_spec["n"]
            if not np.issubdtype(batch.dtype, np.integer) or batch.min() < start or batch.max() >= start + n:
                raise ValueError(f"observation {obs!r} is not a state of {describe_spec(self.observation_spec)}.")
            tensor = torch.as_tensor(batch, dtype=torch.long)
        else:
            dtype = np.dtype(self.observation_spec.get("dtype", "float32"))
            tensor = torch.as_tensor(batch.astype(dtype if dtype == np.uint8 else np.float32, copy=False))
        device = next(self.actor.parameters()).device
        action = self(tensor.to(device), deterministic=deterministic).cpu().numpy()
        action = action.astype(np.int64) if self.kind in DISCRETE_KINDS else action.astype(np.float32)
        return action[0] if single else action

    def __repr__(self) -> str:
        return (f"Policy(kind={self.kind!r}, observation_space={describe_spec(self.observation_spec)}, "
                f"action_space={describe_spec(self.action_spec)})")

    def _is_single(self, obs: np.ndarray) -> bool:
        shape = tuple(obs.shape)
        if shape == self.obs_shape:
            return True
        if shape[1:] == self.obs_shape and len(shape) == len(self.obs_shape) + 1:
            return False
        raise ValueError(
            f"observation has shape {shape}; this policy expects {self.obs_shape} (one observation) or "
            f"(batch, *{self.obs_shape}) for {describe_spec(self.observation_spec)}."
        )

    # ------------------------------------------------------------------ files
    def config(self, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "kind": self.kind,
                "observation_space": self.observation_spec, "action_space": self.action_spec,
                "encoder": self.encoder.config(), "actor": self.actor.config(), "metadata": metadata or {}}

    def save(self, out_dir: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
        """Write ``policy.safetensors`` + ``policy.json`` + a ``README.md`` model card into ``out_dir`` (created if
        needed); ``metadata`` may hold ``algorithm``, ``env_id``, ``hyperparameters`` and ``metrics`` for the card."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, out_dir / WEIGHTS_NAME)
        (out_dir / CONFIG_NAME).write_text(json.dumps(self.config(metadata), indent=2))
        write_model_card(out_dir, **policy_card(out_dir, self.config(metadata)))
        return out_dir


def make_stochastic_policy(
    obs_spec: dict[str, Any], act_spec: dict[str, Any], hidden_sizes: Sequence[int], activation: str,
    orthogonal_init: bool, log_std_init: float = 0.0, normalize_observations: bool = False,
) -> Policy:
    """The on-policy methods' policy: a categorical actor for ``Discrete`` actions, a diagonal Gaussian with a
    state-independent log-std for ``Box`` actions, on the observation encoder of ``obs_spec``."""
    encoder = make_encoder(obs_spec, normalize=normalize_observations)
    d = encoder.features_dim
    if act_spec["type"] == "Discrete":
        actor = ACTORS["categorical"](d, int(act_spec["n"]), hidden_sizes, activation, orthogonal_init)
        return Policy(encoder, actor, "categorical", obs_spec, act_spec)
    act_dim = int(math.prod(act_spec["shape"]))
    actor = ACTORS["gaussian"](d, act_dim, hidden_sizes, activation, log_std_init, orthogonal_init)
    return Policy(encoder, actor, "gaussian", obs_spec, act_spec)


_DAMAGED = "The policy folder is damaged or was edited; export it again with `module.export(out_dir)`."
_CONFIG_FIELDS = ("kind", "observation_space", "action_space", "encoder", "actor")


def _read_policy_config(config_path: Path) -> dict[str, Any]:
    """``policy.json`` as a dict with every field :func:`load_policy` needs, or a ``ValueError`` naming the field."""
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path} is not valid JSON ({err}). {_DAMAGED}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} holds a {type(config).__name__}, not a JSON object. {_DAMAGED}")
    if config.get("format") != FORMAT or not isinstance(config.get("version", 0), int) or config.get("version", 0) > VERSION:
        raise ValueError(f"{config_path} is not a litzoo policy of version <= {VERSION} (format={config.get('format')!r}).")
    for field in _CONFIG_FIELDS:
        if field not in config:
            raise ValueError(f"{config_path} has no field {field!r}. {_DAMAGED}")
        if not isinstance(config[field], str if field == "kind" else dict):
            raise ValueError(f"{config_path}: field {field!r} must be a {'string' if field == 'kind' else 'JSON object'}, "
                             f"got {config[field]!r}. {_DAMAGED}")
    return config


@contextlib.contextmanager
def _field_errors(config_path: Path, field: str) -> Iterator[None]:
    """Turn what a bad ``policy.json`` field makes a constructor raise into a ``ValueError`` naming file and field."""
    try:
        yield
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"{config_path}: field {field!r} is invalid ({type(err).__name__}: {err}). {_DAMAGED}") from err


def _check_spec_field(config_path: Path, field: str, spec: dict[str, Any]) -> None:
    """A space spec of ``policy.json`` is a valid Box/Discrete (gymnasium's ``Box`` refuses NaN bounds and
    ``low > high``), checked with or without an env to compare with: the bounds scale and clip every action."""
    with _field_errors(config_path, field):
        as_spec(spec)


def _read_policy_weights(weights_path: Path, policy: nn.Module) -> dict[str, Tensor]:
    """The tensors of ``policy.safetensors``: readable, the names and shapes ``policy`` has, all finite."""
    if not weights_path.is_file():
        raise ValueError(f"{weights_path} is missing. {_DAMAGED}")
    try:
        tensors = load_file(weights_path)
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError, ValueError ...)
        raise ValueError(f"{weights_path} cannot be read as safetensors ({type(err).__name__}: {err}). {_DAMAGED}") from err
    expected = policy.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{weights_path} does not match {CONFIG_NAME}: missing tensors {missing}, unexpected "
                         f"{unexpected}. {_DAMAGED}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(f"{weights_path}: tensor {name!r} has shape {tuple(tensor.shape)}, {CONFIG_NAME} says "
                             f"{tuple(expected[name].shape)}. {_DAMAGED}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{weights_path}: tensor {name!r} holds NaN or infinite values. {_DAMAGED}")
    return tensors


def load_policy(
    path: str | os.PathLike,
    env: gym.Env | gym.vector.VectorEnv | None = None,
    observation_space: gym.Space | dict[str, Any] | None = None,
    action_space: gym.Space | dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> Policy:
    """Load a policy folder written by ``export`` / :meth:`Policy.save`; needs torch, gymnasium, safetensors.

    ``env`` (a single or vector env) or ``observation_space`` / ``action_space`` are checked against
    the spaces the policy was trained on; a mismatch raises a ``ValueError`` saying what differs
    (shape, bounds, discrete ``n``).
    """
    path = Path(path)
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise ValueError(f"{str(path)!r} has no {CONFIG_NAME}; pass the folder written by `module.export(out_dir)`.")
    config = _read_policy_config(config_path)
    kind = config["kind"]
    if kind not in POLICY_NETWORKS:
        raise ValueError(f"{config_path} has kind={kind!r}; this litzoo knows {KINDS}. Upgrade litzoo to load it.")
    for field in ("observation_space", "action_space"):
        _check_spec_field(config_path, field, config[field])
    with _field_errors(config_path, "encoder"):
        encoder = ObservationEncoder(**config["encoder"])
    with _field_errors(config_path, "actor"):
        actor = POLICY_NETWORKS[kind](**config["actor"])
    with _field_errors(config_path, "action_space"):
        policy = Policy(encoder, actor, kind, config["observation_space"], config["action_space"])
    policy.load_state_dict(_read_policy_weights(path / WEIGHTS_NAME, policy))
    policy.to(device).eval()
    if env is not None:
        check_space("observation space", policy.observation_spec, getattr(env, "single_observation_space", env.observation_space))
        check_space("action space", policy.action_spec, getattr(env, "single_action_space", env.action_space))
    if observation_space is not None:
        check_space("observation space", policy.observation_spec, observation_space)
    if action_space is not None:
        check_space("action space", policy.action_spec, action_space)
    return policy


# ----------------------------------------------------------------------------------------- evaluation
def evaluate_policy(
    policy: Any,
    env: gym.Env | Callable[[], gym.Env],
    n_episodes: int = 10,
    seed: int | None = 0,
    deterministic: bool = True,
    max_steps: int = 1_000_000,
) -> dict[str, np.ndarray]:
    """Undiscounted return and length of ``n_episodes`` episodes of ``policy.predict``.

    ``env`` is an env factory (the episodes then run side by side in a ``SyncVectorEnv``, env ``i``
    seeded ``seed + i``) or one env instance (episodes run one after another, seeded ``seed + i``).
    A truncated episode counts like a terminated one. ``max_steps`` guards against envs that never end.
    """
    if int(n_episodes) != n_episodes or n_episodes < 1:
        raise ValueError(f"n_episodes={n_episodes!r} must be a positive integer.")
    returns, lengths = np.zeros(n_episodes), np.zeros(n_episodes, dtype=np.int64)
    if isinstance(env, gym.Env):
        for i in range(n_episodes):
            obs, _ = env.reset(seed=None if seed is None else seed + i)
            for _ in range(max_steps):
                obs, reward, terminated, truncated, _ = env.step(policy.predict(obs, deterministic=deterministic))
                returns[i] += float(reward)
                lengths[i] += 1
                if terminated or truncated:
                    break
        return {"returns": returns, "lengths": lengths}
    envs = gym.vector.SyncVectorEnv([env] * n_episodes, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    try:
        obs, _ = envs.reset(seed=seed)
        running = np.ones(n_episodes, dtype=bool)
        for _ in range(max_steps):
            obs, reward, terminated, truncated, _ = envs.step(policy.predict(obs, deterministic=deterministic))
            returns += np.where(running, reward, 0.0)
            lengths += running
            running &= ~(terminated | truncated)
            if not running.any():
                break
    finally:
        envs.close()
    return {"returns": returns, "lengths": lengths}
