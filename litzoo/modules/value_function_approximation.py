r"""Value-function approximation on the grid world: TD-linear, Sarsa and Q-learning with features.

Shiyu Zhao, *Mathematical Foundations of Reinforcement Learning* (Springer, 2025), Ch. 8; Sutton &
Barto, *Reinforcement Learning: An Introduction* (2nd ed.), Ch. 9-10. Features :math:`\phi` come from
:mod:`litzoo.rl.features` (one-hot, polynomial, Fourier, tile coding).

**TD-linear** (``algorithm="td_linear"``, Zhao Sec. 8.2, eq. 8.13) evaluates a fixed policy
:math:`\pi` with :math:`\hat v(s, w) = \phi(s)^\top w` by the semi-gradient TD(0) update

.. math::  w_{t+1} = w_t + \alpha_t \big[r_{t+1} + \gamma\, \phi(s_{t+1})^\top w_t - \phi(s_t)^\top w_t\big]\, \phi(s_t).

With states sampled from the stationary distribution :math:`d_\pi` (:math:`D = \mathrm{diag}(d_\pi)`) and
Robbins-Monro step sizes it converges to the TD fixed point (Zhao Sec. 8.2; S&B eq. 9.12;
Tsitsiklis & Van Roy 1997), the solution of the projected Bellman equation

.. math::  w^* = \big(\Phi^\top D (I - \gamma P_\pi) \Phi\big)^{-1} \Phi^\top D\, r_\pi,

which is :math:`v_\pi` itself when the features can represent it (one-hot: tabular TD) and otherwise
satisfies :math:`\|\Phi w^* - v_\pi\|_D \le \frac{1}{\sqrt{1-\gamma^2}} \min_w \|\Phi w - v_\pi\|_D` (Tsitsiklis & Van
Roy 1997; S&B eq. 9.14 states the looser :math:`\overline{VE}(w_{TD}) \le \min_w \overline{VE}(w) / (1-\gamma)`).

**Sarsa / Q-learning with function approximation** (``"sarsa"`` and ``"q_learning"``,
Zhao Sec. 8.3; S&B Ch. 10.1) learn :math:`\hat q(s, a, w) = \phi(s, a)^\top w` with :math:`\phi(s, a) = e_a \otimes \phi(s)`
(the state features stacked per action, i.e. one weight row per action) by

.. math::  w \leftarrow w + \alpha \big[r + \gamma\, \hat q(s', a') - \hat q(s, a)\big] \nabla_w \hat q(s, a)
           \quad\text{(Sarsa, } a' \sim \pi_\epsilon(\cdot|s')\text{)}, \qquad
           \big[r + \gamma \max_{a'} \hat q(s', a') - \hat q(s, a)\big] \text{ (Q-learning)},

acting :math:`\epsilon`-greedily with respect to :math:`\hat q`. ``hidden_sizes`` non-empty swaps the
linear map for a small MLP on the same features (then it is deep-Q-style semi-gradient TD).

Batches: ``n_steps`` steps of every env of the :class:`~litzoo.datamodules.gym.GymDataModule`; one
batch is one SGD step on :math:`\frac12 \mathrm{mean}(y - \hat q)^2` with the TD target :math:`y` held
fixed, i.e. the book's update with the semi-gradient averaged over the batch (``n_steps=1,
num_envs=1`` is the book's update exactly). Only ``terminated`` transitions drop the bootstrap term;
a truncated episode (the grid world's continuing task cut by ``max_episode_steps``) bootstraps from
its real final state. The learned values are compared with the exact ones of
:mod:`litzoo.envs.bellman` (:meth:`compare_with_exact`, logged at every epoch end; :meth:`plot` draws
them with :func:`litzoo.envs.plots.plot_values_side_by_side`).

**Resume.** A checkpoint holds, besides the weights, ``env_steps``, ``num_updates`` and the action sampler's
generator (:class:`~litzoo.bases.rl.RLModule`), the collection in flight: the envs'
:meth:`~litzoo.rl.collect.EnvRunner.get_state` (observations; every grid world's cell, step counter and
``np_random`` state; its ``TimeLimit``'s step count) and the actions already drawn for the observations (Sarsa's
:math:`a_{t+1}` is drawn before the update that uses it). ``Trainer.fit(ckpt_path=...)`` then continues the very
episodes and random stream: a resumed single-process run gives the same weights as an uninterrupted one (with
``vectorization="sync"``, the default; async envs restart their episodes).

**DDP.** Every rank steps its own envs with its own random stream (seed offset by rank), the gradients of each
update are averaged over the ranks (one all-reduce, then the same SGD step on every rank, so the weights stay
identical): one update is the book's update with the semi-gradient averaged over ``world_size * n_steps * num_envs``
transitions, i.e. a larger batch; the TD fixed point is unchanged. The ``alpha`` and ``epsilon`` schedules count
updates and *this rank's* env steps. A DDP checkpoint holds every rank's random stream
(:class:`~litzoo.bases.rl.RLModule` gathers them; resumed on as many ranks, each continues its own), but no envs:
the collection state is saved by single-process runs only, so a resumed DDP run restarts the episodes on every rank.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple, Optional, Union

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn

from litzoo.bases.rl import RLModule
from litzoo.checks import check_choice, check_positive, check_positive_int, check_range
from litzoo.envs.bellman import greedy_errors, greedy_policy, policy_evaluation, value_errors, value_iteration
from litzoo.envs.grid_world import GridWorld
from litzoo.envs.plots import plot_values_side_by_side
from litzoo.nets.actors_critics import mlp
from litzoo.rl.collect import EnvRunner
from litzoo.rl.features import FEATURES, GridFeatures, make_features

ALGORITHMS = ("td_linear", "sarsa", "q_learning")
POLICIES = ("uniform", "optimal")


class VFABatch(NamedTuple):
    """``n_steps * num_envs`` transitions, flattened; states are state numbers (row-major)."""

    states: Tensor  # s_t, long
    actions: Tensor  # a_t, long
    rewards: Tensor  # r_{t+1}, float32
    next_states: Tensor  # the real s_{t+1} (also where the episode ended)
    next_actions: Tensor  # Sarsa's a_{t+1} ~ pi_eps(.|s_{t+1}); unused by the other algorithms
    terminated: Tensor  # bool: s_{t+1} is terminal (value 0); truncation still bootstraps


class ValueFunctionApproximation(RLModule):
    """TD-linear policy evaluation, or Sarsa / Q-learning control, with features on the grid world.

    Args:
        algorithm: ``"td_linear"`` (evaluate ``policy``), ``"sarsa"`` or ``"q_learning"`` (control).
        features: ``"onehot"``, ``"polynomial"``, ``"fourier"`` or ``"tile"`` (:mod:`litzoo.rl.features`).
        order: order of the polynomial / Fourier features.
        num_tilings, tiles_per_dim: tile coding.
        hidden_sizes: ``()`` = linear in the features (the book's methods); e.g. ``(32,)`` = a tanh MLP on them.
        policy: td_linear's target (and behaviour) policy: ``"uniform"`` (the book's uniform random
            policy), ``"optimal"`` (greedy w.r.t. the exact v*), or an S x A matrix of probabilities.
        alpha: the step size (SGD learning rate).
        alpha_decay_steps: ``None`` keeps alpha constant; otherwise :math:`\\alpha_k = \\alpha / (1 + k / K)`
            after ``k`` updates (a Robbins-Monro schedule, :math:`\\sum \\alpha_k = \\infty`,
            :math:`\\sum \\alpha_k^2 < \\infty`: what convergence to the TD fixed point needs).
        gamma: discount, in [0, 1).
        epsilon: exploration of the epsilon-greedy behaviour (Sarsa, Q-learning); ``epsilon_final``
            (``None``: constant) is reached linearly after ``epsilon_decay_env_steps`` env steps.
        n_steps: steps of every env per batch (one SGD step per batch).
        grid_size, num_actions: the grid; ``None`` = from the datamodule's env in ``setup`` (then saved,
            so ``load_from_checkpoint`` rebuilds the weights).
        log_every_n_env_steps: how often the TD error and episode statistics are logged.
        seed: seeds the action sampling (offset by rank). ``None`` (default): the global
            seed (``seed_everything`` / ``--seed_everything``, else 0), saved once taken.
    """

    def __init__(
        self,
        algorithm: str = "td_linear",
        features: str = "polynomial",
        order: int = 2,
        num_tilings: int = 4,
        tiles_per_dim: int = 3,
        hidden_sizes: tuple[int, ...] = (),
        policy: Union[str, list[list[float]]] = "uniform",
        alpha: float = 0.05,
        alpha_decay_steps: Optional[int] = None,
        gamma: float = 0.9,
        epsilon: float = 0.1,
        epsilon_final: Optional[float] = None,
        epsilon_decay_env_steps: int = 50_000,
        n_steps: int = 1,
        grid_size: Optional[tuple[int, int]] = None,
        num_actions: Optional[int] = None,
        log_every_n_env_steps: int = 10_000,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm={algorithm!r} is not one of {ALGORITHMS}: 'td_linear' evaluates a policy, "
                             "'sarsa' and 'q_learning' learn an optimal one.")
        check_choice("features", features, FEATURES)
        if isinstance(policy, str) and policy not in POLICIES:
            raise ValueError(f"policy={policy!r} is not one of {POLICIES}, nor an S x A matrix of probabilities.")
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma={gamma!r} must be in [0, 1): the exact values (I - gamma P_pi)^-1 r_pi need gamma < 1.")
        check_positive("alpha", alpha)
        check_range("epsilon", epsilon, 0, 1)
        if epsilon_final is not None:
            check_range("epsilon_final", epsilon_final, 0, 1)
        for name, value in (("n_steps", n_steps), ("log_every_n_env_steps", log_every_n_env_steps),
                            ("epsilon_decay_env_steps", epsilon_decay_env_steps)):
            check_positive_int(name, value)
        if alpha_decay_steps is not None:
            check_positive_int("alpha_decay_steps", alpha_decay_steps)
        self.save_hyperparameters()
        self._init_rl_state()
        self.phi: GridFeatures | None = None
        self.net: nn.Module | None = None
        self._grid: GridWorld | None = None
        self._exact: dict[str, np.ndarray] = {}
        self._obs_type = "index"
        self._actions: Tensor | None = None  # actions drawn for env.obs, to be taken at the next step
        if grid_size is not None and num_actions is not None:
            self._build(tuple(grid_size), int(num_actions))

    # ----------------------------------------------------------------- features and weights
    def _build(self, grid_size: tuple[int, int], num_actions: int) -> None:
        h = self.hparams
        h.grid_size, h.num_actions = [int(n) for n in grid_size], int(num_actions)  # saved for load_from_checkpoint
        self.phi = make_features(h.features, grid_size, h.order, h.num_tilings, h.tiles_per_dim)
        # Phi (S, d) once; phi(s) is then a row lookup.
        self.register_buffer("Phi", self.phi(torch.arange(self.phi.num_states)), persistent=False)
        out = 1 if h.algorithm == "td_linear" else num_actions  # q(s, .) = W phi(s): one weight row per action
        if len(h.hidden_sizes) == 0:
            self.net = nn.Linear(self.phi.dim, out, bias=False)
            nn.init.zeros_(self.net.weight)  # w_0 = 0, as in the book's examples
        else:
            self.net = mlp(self.phi.dim, out, h.hidden_sizes, "tanh")
        if h.algorithm == "td_linear" and not isinstance(h.policy, str):
            self._set_policy(h.policy)

    def _set_policy(self, policy: Any) -> None:
        S, A = self.phi.num_states, self.hparams.num_actions
        pi = np.asarray(policy, dtype=np.float64)
        if pi.shape != (S, A) or (pi < 0).any() or not np.allclose(pi.sum(1), 1.0, atol=1e-6):
            raise ValueError(
                f"policy must be 'uniform', 'optimal' or an S x A = {S} x {A} matrix of probabilities (rows summing "
                f"to 1); got an array of shape {pi.shape}."
            )
        self.register_buffer("pi", torch.as_tensor(pi, dtype=torch.float32, device=self.Phi.device), persistent=False)

    def _networks_built(self) -> bool:
        return self.net is not None

    def _build_from_trainer(self) -> None:  # RLModule's setup / configure_model: the grid, not spaces
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not callable(getattr(datamodule, "make_env", None)):
            raise ValueError("ValueFunctionApproximation trains on the grid world: use "
                             "GymDataModule(env_id='litzoo/GridWorld-v0').")
        env = datamodule.make_env()
        env.close()
        self.attach(env.unwrapped)

    def attach(self, grid: GridWorld) -> None:
        """Use ``grid`` (a :class:`~litzoo.envs.GridWorld`) as the env: build the weights if needed, resolve
        ``policy`` and compute the exact values once (``setup`` calls it with the datamodule's env)."""
        grid = getattr(grid, "unwrapped", grid)
        if not isinstance(grid, GridWorld):
            raise ValueError(
                f"ValueFunctionApproximation needs litzoo's GridWorld (env_id='litzoo/GridWorld-v0'), whose exact model "
                f"its values are compared with; got {type(grid).__name__}."
            )
        if grid.terminate_at_target:
            raise ValueError(
                "The grid world has terminate_at_target=True, but the exact values (GridWorld.model()) are those of the "
                "continuing task; pass env_kwargs={'terminate_at_target': False}."
            )
        if self.net is None:
            self._build(grid.size, grid.num_actions)
        elif tuple(self.hparams.grid_size) != tuple(grid.size) or self.hparams.num_actions != grid.num_actions:
            raise ValueError(
                f"The module was built for a {tuple(self.hparams.grid_size)} grid with {self.hparams.num_actions} "
                f"actions, the env is {grid.size} with {grid.num_actions}; use a matching env or a new module."
            )
        self._grid, self._obs_type = grid, grid.obs_type
        self._exact = self._exact_values(grid)
        if self.hparams.algorithm == "td_linear":
            self._set_policy(self._exact["pi"])

    def _exact_values(self, grid: GridWorld) -> dict[str, np.ndarray]:
        """The model ``(P, R)``, :math:`v^*`, :math:`\\pi^*` and, for td_linear, the policy ``pi`` and :math:`v_\\pi`."""
        h = self.hparams
        P, R = grid.model()
        v_star, pi_star = value_iteration(P, R, h.gamma)
        exact = {"P": P, "R": R, "v_star": v_star, "pi_star": pi_star}
        if h.algorithm == "td_linear":
            if isinstance(h.policy, str):
                pi = np.full(R.shape, 1.0 / R.shape[1]) if h.policy == "uniform" else pi_star
            else:
                pi = np.asarray(h.policy, dtype=np.float64)
            exact["pi"], exact["v_pi"] = pi, policy_evaluation(P, R, pi, h.gamma)
        return exact

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # Plain SGD, not AdamW: SGD on 1/2 (y - q_hat)^2 with y fixed *is* the book's update
        # w += alpha * delta * grad q_hat, whose limit is the TD fixed point (projected Bellman equation).
        # Adam's per-coordinate rescaling changes the update direction (it is no longer a stochastic
        # approximation of the expected TD update), and weight decay would move the fixed point.
        return torch.optim.SGD(self.net.parameters(), lr=self.hparams.alpha)

    # ----------------------------------------------------------------- values
    def _state_of(self, obs: Tensor) -> Tensor:
        return self.phi.states_of(obs, self._obs_type)

    def q_hat(self, states: Tensor) -> Tensor:
        """``v_hat(s)`` (B,) for td_linear; ``q_hat(s, .)`` (B, A) for Sarsa / Q-learning."""
        out = self.net(self.Phi[states])
        return out.squeeze(-1) if self.hparams.algorithm == "td_linear" else out

    @torch.no_grad()
    def values(self) -> np.ndarray:
        """Learned values of every state (S,): ``v_hat`` (td_linear) or :math:`\\max_a \\hat q(s, a)`."""
        out = self.q_hat(torch.arange(self.phi.num_states, device=self.Phi.device)).double().cpu().numpy()
        return out if out.ndim == 1 else out.max(1)

    @torch.no_grad()
    def action_values(self) -> np.ndarray:
        """Learned ``q_hat`` (S, A) (Sarsa / Q-learning)."""
        if self.hparams.algorithm == "td_linear":
            raise ValueError("algorithm='td_linear' learns state values only; use values().")
        return self.q_hat(torch.arange(self.phi.num_states, device=self.Phi.device)).double().cpu().numpy()

    def greedy_policy(self) -> np.ndarray:
        """The greedy policy of ``q_hat`` as an S x A one-hot matrix (ties to the lowest action)."""
        return greedy_policy(self.action_values())

    # ----------------------------------------------------------------- acting
    def epsilon(self) -> float:
        h = self.hparams
        if h.epsilon_final is None:
            return h.epsilon
        frac = min(1.0, self.env_steps / h.epsilon_decay_env_steps)
        return h.epsilon + frac * (h.epsilon_final - h.epsilon)

    def alpha(self) -> float:
        h = self.hparams
        return h.alpha if h.alpha_decay_steps is None else h.alpha / (1.0 + self.num_updates / h.alpha_decay_steps)

    @torch.no_grad()
    def _behaviour(self, states: Tensor) -> Tensor:
        """td_linear: ``a ~ pi(.|s)``; Sarsa / Q-learning: epsilon-greedy in ``q_hat`` (random tie-breaks)."""
        g = self._generator
        if self.hparams.algorithm == "td_linear":
            return torch.multinomial(self.pi[states], 1, generator=g).squeeze(-1)
        q = self.q_hat(states)
        ties = q >= q.max(-1, keepdim=True).values - 1e-9  # zero-initialised q: every action ties
        greedy = (ties * torch.rand(q.shape, generator=g, device=q.device)).argmax(-1)
        random = torch.randint(q.shape[-1], states.shape, generator=g, device=q.device)
        explore = torch.rand(states.shape, generator=g, device=q.device) < self.epsilon()
        return torch.where(explore, random, greedy)

    def generate_batches(self, env: EnvRunner) -> Iterator[VFABatch]:
        """Act with the behaviour policy for ``n_steps`` steps of every env; yield the transitions."""
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ValueError(f"ValueFunctionApproximation needs Discrete actions, got {env.action_space}.")
        self._env = env
        self._init_generator()
        n = self.hparams.n_steps
        if not self._restore_collection(env):
            self._actions = self._behaviour(self._state_of(env.obs))
        states, actions = self._state_of(env.obs), self._actions
        while True:
            fields: list[list[Tensor]] = [[] for _ in VFABatch._fields]
            for _ in range(n):
                step = env.step(actions)
                next_states = self._state_of(step.final_obs)  # the real s_{t+1}
                new_states = self._state_of(step.obs)  # where each env goes on (a reset state after an episode end)
                new_actions = self._behaviour(new_states)
                next_actions = new_actions
                done = step.terminated | step.truncated
                if self.hparams.algorithm == "sarsa" and done.any():
                    # a_{t+1} at the real s_{t+1} of an ended episode: sampled, never taken.
                    next_actions = torch.where(done, self._behaviour(next_states), new_actions)
                for f, x in zip(fields, (states, actions, step.rewards, next_states, next_actions, step.terminated)):
                    f.append(x)
                states, actions = new_states, new_actions
            self._actions = actions
            self.env_steps += n * env.num_envs
            yield VFABatch(*(torch.cat(f) for f in fields))

    # ----------------------------------------------------------------- checkpointed collection state
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # Not under DDP (the checkpoint would hold rank 0's envs only), nor for async envs (get_state() is None).
        envs = None if self._env is None or self._actions is None or self._world_size > 1 else self._env.get_state()
        if envs is not None:
            checkpoint["litzoo_rl"]["collection"] = {"envs": envs, "actions": self._actions.cpu()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        collection = checkpoint.get("litzoo_rl", {}).get("collection")
        if collection is not None:
            self._pending["collection"] = collection

    def _restore_collection(self, env: EnvRunner) -> bool:
        """Put the envs back where the checkpointed run left them (after the datamodule's reset); ``False`` if there
        is nothing to restore or the envs do not match it (then collection starts afresh)."""
        saved = self._pending.pop("collection", None)
        if saved is None or "envs" not in saved or self._world_size > 1 or not env.set_state(saved["envs"]):
            return False
        self._actions = saved["actions"].to(env.device)
        return True

    # ----------------------------------------------------------------- update
    def training_step(self, batch: VFABatch, batch_idx: int) -> None:
        h = self.hparams
        optimizer = self.optimizers()
        for group in optimizer.param_groups:
            group["lr"] = self.alpha()
        with torch.no_grad():  # the TD target y is held fixed: a semi-gradient method
            q_next = self.q_hat(batch.next_states)
            if h.algorithm == "sarsa":
                q_next = q_next.gather(-1, batch.next_actions[:, None]).squeeze(-1)
            elif h.algorithm == "q_learning":
                q_next = q_next.max(-1).values
            y = batch.rewards + h.gamma * (~batch.terminated) * q_next
        q = self.q_hat(batch.states)
        if h.algorithm != "td_linear":
            q = q.gather(-1, batch.actions[:, None]).squeeze(-1)
        td_error = y - q
        loss = 0.5 * td_error.pow(2).mean()  # grad = -mean(delta * grad q): SGD step = the book's update

        self._backward_and_step(optimizer, loss, self.net.parameters())
        self.num_updates += 1

        def metrics() -> dict[str, Any]:
            out = {"train/td_error": td_error.detach().abs().mean(), "train/alpha": self.alpha()}
            if h.algorithm != "td_linear":
                out["train/epsilon"] = self.epsilon()
            return out

        self._log_if_due(metrics)

    def on_train_epoch_end(self) -> None:
        if not self._exact:
            return
        out = {f"exact/{k}": float(v) for k, v in self.compare_with_exact().items()}
        for key, value in out.items():
            # identical on every rank (so are the weights); sync_dist is a no-op mean that DDP logging asks for
            self.log(key, value, logger=False, prog_bar=key == "exact/rmse", sync_dist=True)
        if self.trainer.is_global_zero:
            for logger in self.trainer.loggers:
                logger.log_metrics(out, step=int(self.env_steps) * self.trainer.world_size)

    # ----------------------------------------------------------------- comparison with exact values
    def _grid_and_exact(self, env: Optional[gym.Env], caller: str) -> tuple[GridWorld, dict[str, np.ndarray]]:
        if env is not None:
            grid = getattr(env, "unwrapped", env)
            if not isinstance(grid, GridWorld):
                raise ValueError(f"{caller} needs a GridWorld env, got {type(grid).__name__}.")
            return grid, self._exact_values(grid)
        if not self._exact:
            raise ValueError(f"No env yet: pass {caller}(env=GridWorld(...)) or train the module first.")
        return self._grid, self._exact

    def compare_with_exact(self, env: Optional[gym.Env] = None) -> dict[str, float]:
        """Errors of the learned values against :mod:`litzoo.envs.bellman`'s exact ones.

        td_linear: ``rmse`` and ``max_error`` of :math:`\\hat v` against :math:`v_\\pi`
        (:func:`~litzoo.envs.bellman.value_errors`); Sarsa / Q-learning: those of :math:`\\max_a \\hat q` against
        :math:`v^*` and how good the greedy policy is (:func:`~litzoo.envs.bellman.greedy_errors`).
        ``env``: a GridWorld (or a gymnasium env wrapping one); ``None`` = the training env.
        """
        grid, exact = self._grid_and_exact(env, "compare_with_exact")
        if self.net is None:
            self.attach(grid)
        if self.hparams.algorithm == "td_linear":
            return value_errors(self.values(), exact["v_pi"])
        start = grid.state_of(grid.start)
        return greedy_errors(self.action_values(), exact["P"], exact["R"], self.hparams.gamma, start)

    def plot(self, path: Optional[str] = None, env: Optional[gym.Env] = None) -> np.ndarray:
        """Learned (left) vs exact (right) values as the book draws them; control methods also draw the greedy
        and an optimal policy. Writes a PNG to ``path`` if given; returns the RGB image (H, W, 3)."""
        grid, exact = self._grid_and_exact(env, "plot")
        errors = self.compare_with_exact(grid)
        if self.hparams.algorithm == "td_linear":
            learned, truth = (self.values(), None), (exact["v_pi"], None)
            titles = (f"TD-linear, {self._describe_features()}", "exact $v_\\pi$ (Bellman equation)")
        else:
            learned, truth = (self.values(), self.greedy_policy()), (exact["v_star"], exact["pi_star"])
            name = "Sarsa" if self.hparams.algorithm == "sarsa" else "Q-learning"
            titles = (f"{name}, {self._describe_features()}: $\\max_a \\hat q$, greedy",
                      "exact $v^*$, $\\pi^*$ (value iteration)")
        return plot_values_side_by_side(grid, learned, truth, titles,
                                        f"RMSE {errors['rmse']:.3f}, max error {errors['max_error']:.3f}", path)

    def _describe_features(self) -> str:
        h = self.hparams
        extra = {"polynomial": f" order {h.order}", "fourier": f" order {h.order}",
                 "tile": f" {h.num_tilings}x{h.tiles_per_dim}x{h.tiles_per_dim}"}.get(h.features, "")
        return f"{h.features}{extra} (d={self.phi.dim})"

    def export(self, out_dir, overwrite: bool = False):
        raise NotImplementedError("ValueFunctionApproximation has no policy folder: its result is the value table "
                                  "(values(), action_values(), compare_with_exact(), plot()).")
