r"""Deep deterministic policy gradient (DDPG) and its TD3 refinements.

Lillicrap et al. 2016, "Continuous control with deep reinforcement learning" (DDPG);
Fujimoto, van Hoof & Meger 2018, "Addressing Function Approximation Error in Actor-Critic
Methods" (TD3). Silver et al. 2014 for the deterministic policy gradient.

A deterministic actor :math:`\mu_\theta(s) \in [-1, 1]^k` (mapped affinely onto the Box bounds for
the env) and critics :math:`Q_{\phi_1}, \dots` learn from a replay buffer :math:`\mathcal D`:

.. math::

    y &= r + \gamma\,(1 - d)\,\min_{e} Q_{\phi'_e}\big(s', \mathrm{clip}(\mu_{\theta'}(s') + \epsilon, -1, 1)\big),
    \qquad \epsilon = \mathrm{clip}(\mathcal N(0, \tilde\sigma^2), -c, c) \\
    L(\phi_e) &= \mathbb E_{\mathcal D}\,\big(Q_{\phi_e}(s, a) - y\big)^2, \qquad
    J(\theta) = \mathbb E_{\mathcal D}\, Q_{\phi_1}(s, \mu_\theta(s)), \qquad
    \phi' \leftarrow \tau \phi + (1 - \tau)\phi',

with ``d`` = *terminated* (a truncated episode bootstraps from its real final observation).
DDPG is one critic, :math:`\tilde\sigma = 0` and an actor/target update every step; TD3 adds
twin critics (the minimum fights overestimation), target policy smoothing
(:math:`\tilde\sigma = 0.2, c = 0.5`) and delayed actor and target updates (``policy_delay = 2``).
Exploration: :math:`a = \mathrm{clip}(\mu_\theta(s) + \mathcal N(0, \sigma^2), -1, 1)` (Gaussian) or
Ornstein–Uhlenbeck noise as in the DDPG paper; uniform random actions for the first
``learning_starts`` env steps.

Implementation: the critic loss (all critics at once: one batched matmul per layer) and the actor
loss (critic frozen) are summed and take one backward pass and one AdamW step with per-network
learning rates, so the actor's gradient sees the critic of this step before its update (SB3 and
CleanRL update the critic first; the difference is one step of lag). Target networks are
updated with one fused ``torch._foreach_lerp_``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any, Optional

import torch

from litzoo.bases.rl import RLModule, check_replay_sizes
from litzoo.checks import (
    check_bool, check_choice, check_non_negative, check_non_negative_int, check_positive, check_positive_or_none,
    check_positive_int, check_range,
)
from litzoo.nets.actors_critics import DeterministicActor, QCritic
from litzoo.optim import adamw_for_networks
from litzoo.rl.buffers import ReplayBatch
from litzoo.rl.collect import EnvRunner, step_into_replay
from litzoo.rl.policy import Policy, make_encoder
from litzoo.rl.utils import polyak_update

EXPLORATION_NOISES = ("gaussian", "ou", "none")


class DDPG(RLModule):
    """DDPG (and TD3 with ``twin_critics``, ``policy_delay=2``, ``target_policy_noise=0.2``; see :class:`TD3`).

    Train it with a :class:`~litzoo.datamodules.gym.GymDataModule` of a Box-action env. One batch =
    one gradient step (``updates_per_batch`` of them with that option); ``gradient_steps`` batches are drawn per
    vector-env step after ``learning_starts`` env steps, so ``trainer.max_steps`` counts gradient steps.

    Args:
        observation_space, action_space: space specs (:func:`litzoo.rl.policy.space_to_spec`) or gymnasium
            spaces; leave ``None`` to take them from the datamodule in ``setup`` (they are then saved
            in the hyperparameters, so ``load_from_checkpoint`` rebuilds the networks).
        actor_hidden_sizes, critic_hidden_sizes, activation: MLP sizes.
        gamma: discount; tau: Polyak weight of the online network in the target update.
        actor_lr, critic_lr, weight_decay: AdamW (one optimizer, one parameter group per network).
        batch_size, buffer_size: replay minibatch and capacity (transitions per process).
        learning_starts: env steps (per process) of uniform random actions before learning.
        gradient_steps: gradient steps (batches) per vector-env step.
        updates_per_batch: env-stream batches (updates) per Lightning batch: the same training, with Lightning's
            per-batch loop once per ``updates_per_batch`` updates (:meth:`~litzoo.bases.rl.RLModule.batches_of_step`);
            per-batch hooks and counters (``batches_per_epoch``, ``on_train_batch_end``) then act once per that many, and
            step schedules must be multiples of it (checked: :func:`~litzoo.bases.rl.check_updates_per_batch`).
        exploration_noise: ``"gaussian"``, ``"ou"`` (Ornstein–Uhlenbeck, ``ou_theta``, ``ou_dt``) or ``"none"``;
            ``exploration_std`` is its sigma in units of the half action range.
        twin_critics, policy_delay, target_policy_noise, target_noise_clip: the TD3 options.
        max_grad_norm: clip the global gradient norm (``None``: no clipping, as in the papers).
        flush_denormals: run the optimizer step with denormal floats flushed to zero (CPU; Adam's first moments of
            dead units sink into that ~100x slower range; :func:`litzoo.rl.utils.flush_denormals`).
        normalize_observations: whiten Box observations with running statistics (exported with the policy).
        save_replay_buffer: also store the replay buffer in checkpoints (exact resume, larger files).
        log_every_n_env_steps: how often losses and episode statistics are logged.
        seed: seeds exploration noise and replay sampling (offset by rank). ``None`` (default): the global
            seed (``seed_everything`` / ``--seed_everything``, else 0), saved once taken.
    """

    ACTION_SPACES = ("Box",)
    ACTION_SPACE_HINT = ("For discrete actions use litzoo.modules.actor_critic.ActorCritic (critic='advantage' for A2C, "
                         "'q' for QAC), TRPO or DQN.")

    def __init__(
        self,
        observation_space: Optional[dict] = None,
        action_space: Optional[dict] = None,
        actor_hidden_sizes: tuple[int, ...] = (256, 256),
        critic_hidden_sizes: tuple[int, ...] = (256, 256),
        activation: str = "relu",
        gamma: float = 0.99,
        tau: float = 0.005,
        actor_lr: float = 1e-3,
        critic_lr: float = 1e-3,
        weight_decay: float = 0.0,
        batch_size: int = 256,
        buffer_size: int = 1_000_000,
        learning_starts: int = 10_000,
        gradient_steps: int = 1,
        updates_per_batch: int = 1,
        exploration_noise: str = "gaussian",
        exploration_std: float = 0.1,
        ou_theta: float = 0.15,
        ou_dt: float = 1e-2,
        twin_critics: bool = False,
        policy_delay: int = 1,
        target_policy_noise: float = 0.0,
        target_noise_clip: float = 0.5,
        max_grad_norm: Optional[float] = None,
        flush_denormals: bool = True,
        normalize_observations: bool = False,
        save_replay_buffer: bool = False,
        log_every_n_env_steps: int = 1000,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        check_choice("exploration_noise", exploration_noise, EXPLORATION_NOISES)
        check_range("gamma", gamma, 0, 1)
        check_range("tau", tau, 0, 1)
        check_positive("actor_lr", actor_lr)
        check_positive("critic_lr", critic_lr)
        for name, value in (("batch_size", batch_size), ("buffer_size", buffer_size), ("gradient_steps", gradient_steps),
                            ("updates_per_batch", updates_per_batch), ("policy_delay", policy_delay),
                            ("log_every_n_env_steps", log_every_n_env_steps)):
            check_positive_int(name, value)
        check_non_negative_int("learning_starts", learning_starts)
        check_replay_sizes(batch_size, buffer_size, learning_starts)
        for name, value in (("exploration_std", exploration_std), ("target_policy_noise", target_policy_noise),
                            ("target_noise_clip", target_noise_clip), ("ou_theta", ou_theta), ("ou_dt", ou_dt),
                            ("weight_decay", weight_decay)):
            check_non_negative(name, value)
        check_positive_or_none("max_grad_norm", max_grad_norm, "no clipping")
        check_bool("flush_denormals", flush_denormals)
        self.save_hyperparameters()
        self._init_rl_state(observation_space, action_space)

    # ----------------------------------------------------------------- networks
    def _build(self, obs_spec: dict[str, Any], act_spec: dict[str, Any]) -> None:
        h = self.hparams
        encoder = make_encoder(obs_spec, normalize=h.normalize_observations)
        self.act_dim = int(math.prod(act_spec["shape"]))
        actor = DeterministicActor(encoder.features_dim, self.act_dim, h.actor_hidden_sizes, h.activation)
        self.policy = Policy(encoder, actor, "deterministic", obs_spec, act_spec)
        self.critic = QCritic(encoder.features_dim, self.act_dim, h.critic_hidden_sizes, h.activation,
                              num_critics=2 if h.twin_critics else 1)
        self.actor_target = copy.deepcopy(actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        h = self.hparams
        return adamw_for_networks([(self.policy.actor, h.actor_lr), (self.critic, h.critic_lr)], h.weight_decay)

    # ----------------------------------------------------------------- acting
    def _exploration_noise(self, shape: tuple[int, ...], ou_state: torch.Tensor) -> torch.Tensor:
        h = self.hparams
        eps = torch.randn(shape, generator=self._generator, device=self.device)
        if h.exploration_noise == "ou":  # dx = theta (0 - x) dt + sigma sqrt(dt) eps  (SB3's discretisation)
            ou_state += -h.ou_theta * ou_state * h.ou_dt + h.exploration_std * math.sqrt(h.ou_dt) * eps
            return ou_state
        return h.exploration_std * eps if h.exploration_noise == "gaussian" else torch.zeros_like(eps)

    @torch.no_grad()
    def generate_batches(self, env: EnvRunner) -> Iterator[ReplayBatch]:
        """Act (random before ``learning_starts``, then mu + noise), store, and yield replay minibatches."""
        h = self.hparams
        self._env = env
        self._init_generator()
        buffer = self._replay_buffer(env.num_envs, (self.act_dim,))
        ou_state = torch.zeros(env.num_envs, self.act_dim, device=self.device)
        while True:
            self.policy.encoder.update(env.obs)
            if self.env_steps < h.learning_starts:
                actions = torch.rand((env.num_envs, self.act_dim), generator=self._generator, device=self.device) * 2 - 1
            else:
                actions = self.policy.actor(self.policy.encoder(env.obs))
                actions = (actions + self._exploration_noise(actions.shape, ou_state)).clamp(-1.0, 1.0)
            step = step_into_replay(env, buffer, actions, self.policy.to_env_action(actions))
            if h.exploration_noise == "ou":  # a new episode starts its noise process from 0
                ou_state[step.terminated | step.truncated] = 0.0
            self.env_steps += env.num_envs
            if self._learning_started(self.env_steps):
                for _ in range(h.gradient_steps):
                    yield buffer.sample(h.batch_size, generator=self._generator)

    # ----------------------------------------------------------------- update
    def training_step(self, batch: ReplayBatch, batch_idx: int) -> None:
        for minibatch in self.batches_of_step(batch):  # updates_per_batch of them (the same training)
            self.update(minibatch)

    def update(self, batch: ReplayBatch) -> None:
        h = self.hparams
        optimizer = self.optimizers()
        encoder, actor = self.policy.encoder, self.policy.actor
        features, next_features = encoder(batch.obs), encoder(batch.next_obs)
        with torch.no_grad():  # y = r + gamma (1 - d) min_e Q'_e(s', mu'(s') + clipped noise)
            next_actions = self.actor_target(next_features)
            if h.target_policy_noise > 0:  # TD3 target policy smoothing
                eps = torch.randn(next_actions.shape, generator=self._generator, device=self.device)
                eps = (eps * h.target_policy_noise).clamp(-h.target_noise_clip, h.target_noise_clip)
                next_actions = (next_actions + eps).clamp(-1.0, 1.0)
            q_next = self.critic_target(next_features, next_actions).min(dim=0).values.float()
            y = batch.rewards + h.gamma * (1.0 - batch.dones) * q_next
        q = self.critic(features, batch.actions).float()  # (num_critics, B)
        critic_loss = (q - y).pow(2).mean(dim=1).sum()  # each critic's MSE; summed = separate updates
        loss = critic_loss
        update_actor = self.num_updates % h.policy_delay == 0
        if update_actor:  # maximise Q_1(s, mu(s)); the critic is a constant in this term
            self.critic.requires_grad_(False)
            actor_loss = -self.critic.q1(features, actor(features)).float().mean()
            self.critic.requires_grad_(True)
            loss = loss + actor_loss
            self._last_actor_loss = actor_loss.detach()
        self._backward_and_step(optimizer, loss)
        if update_actor:  # TD3 also delays the target updates
            polyak_update(*self._polyak_lists(), tau=h.tau)
        self.num_updates += 1

        def metrics() -> dict[str, Any]:
            out = {"train/critic_loss": critic_loss.detach(), "train/q": q.detach().mean()}
            if getattr(self, "_last_actor_loss", None) is not None:
                out["train/actor_loss"] = self._last_actor_loss
            return out

        self._log_if_due(metrics)

    def _polyak_lists(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if not hasattr(self, "_polyak_cache"):
            online = [*self.policy.actor.parameters(), *self.critic.parameters()]
            target = [*self.actor_target.parameters(), *self.critic_target.parameters()]
            self._polyak_cache = (online, target)
        return self._polyak_cache


class TD3(DDPG):
    """TD3 (Fujimoto et al. 2018): :class:`DDPG` with twin critics, target policy smoothing
    (noise 0.2 clipped at 0.5) and delayed actor/target updates (every 2nd step) by default."""

    def __init__(
        self,
        twin_critics: bool = True,
        policy_delay: int = 2,
        target_policy_noise: float = 0.2,
        target_noise_clip: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(twin_critics=twin_critics, policy_delay=policy_delay, target_policy_noise=target_policy_noise,
                         target_noise_clip=target_noise_clip, **kwargs)
