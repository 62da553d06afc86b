r"""Soft Actor-Critic (SAC) with twin critics and automatic entropy temperature.

Haarnoja, Zhou, Abbeel, Levine, "Soft Actor-Critic: Off-Policy Maximum Entropy Deep RL with a Stochastic
Actor", ICML 2018 (arXiv:1801.01290); Haarnoja et al., "Soft Actor-Critic Algorithms and Applications"
(arXiv:1812.05905: twin Q, no V network, learned temperature). Details as in SB3's ``SAC``.

A tanh-squashed Gaussian actor :math:`a = \tanh(u),\ u \sim \mathcal N(m_\theta(s), \sigma_\theta(s)^2)` in
:math:`[-1, 1]^k` (mapped onto the Box bounds for the env; its log-density carries the change-of-variables
term :math:`-\sum_i \log(1 - \tanh^2 u_i)`, :class:`~litzoo.nets.actors_critics.SquashedGaussianActor`),
twin critics :math:`Q_{\phi_1}, Q_{\phi_2}` with Polyak targets :math:`Q_{\bar\phi_e}`, and a temperature
:math:`\alpha`, all learned from a replay buffer :math:`\mathcal D` (:mod:`litzoo.rl.losses`):

.. math::

    y &= r + \gamma (1 - d)\big(\min_{e} Q_{\bar\phi_e}(s', a') - \alpha \log\pi_\theta(a'|s')\big),
    \quad a' \sim \pi_\theta(\cdot|s') \\
    J_Q(\phi_e) &= \tfrac12\,\mathbb E_{\mathcal D}\big(Q_{\phi_e}(s, a) - y\big)^2, \qquad
    J_\pi(\theta) = \mathbb E_{s\sim\mathcal D,\ \epsilon}\big[\alpha \log\pi_\theta(\tilde a_\theta(s, \epsilon)|s)
        - \min_e Q_{\phi_e}(s, \tilde a_\theta(s, \epsilon))\big] \\
    J(\alpha) &= \mathbb E\big[-\log\alpha\,(\log\pi_\theta(a|s) + \bar{\mathcal H})\big],
    \qquad \bar\phi \leftarrow \tau\phi + (1 - \tau)\bar\phi,

with ``d`` = *terminated* (a truncated episode bootstraps from its real final observation), the actor's
reparameterised sample :math:`\tilde a_\theta`, and the target entropy :math:`\bar{\mathcal H} = -\dim\mathcal A`
(``target_entropy=None``); ``ent_coef`` fixes :math:`\alpha` instead. Exploration samples the actor
(uniform random actions for the first ``learning_starts`` env steps); every ``train_freq`` vector-env steps
``gradient_steps`` batches follow, and the targets move every ``target_update_interval`` updates.

Implementation (as :class:`~litzoo.modules.ddpg.DDPG`): the three losses are summed and take one backward
pass and one AdamW step with per-network learning rates; the critics are frozen in the actor's term and
:math:`\alpha` enters the target and actor loss detached, so each loss only moves its own parameters (the
actor's gradient sees this step's critic before its update, SB3 updates the critic first). The critics
are one batched ensemble (:class:`~litzoo.nets.actors_critics.QCritic`), targets move with one fused lerp.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any, Optional

import torch

from litzoo.bases.rl import RLModule, check_replay_sizes
from litzoo.checks import (
    check_bool, check_non_negative_int, check_positive, check_positive_or_none, check_positive_int, check_range,
)
from litzoo.nets.actors_critics import QCritic, SquashedGaussianActor, Temperature
from litzoo.optim import adamw_for_networks
from litzoo.rl.buffers import ReplayBatch
from litzoo.rl.collect import EnvRunner, step_into_replay
from litzoo.rl.losses import sac_soft_target, sac_temperature_loss
from litzoo.rl.policy import Policy, make_encoder
from litzoo.rl.utils import polyak_update


class SAC(RLModule):
    """SAC: squashed-Gaussian actor, twin soft Q critics with Polyak targets, learned temperature.

    Train it with a :class:`~litzoo.datamodules.gym.GymDataModule` of a Box-action env. One batch = one gradient
    step, or ``updates_per_batch`` of them (``max_steps`` counts gradient steps, as for DDPG/TD3).

    Args:
        observation_space, action_space: space specs or gymnasium spaces; ``None`` = from the datamodule in
            ``setup`` (then saved in the hyperparameters for ``load_from_checkpoint``).
        actor_hidden_sizes, critic_hidden_sizes, activation: MLP sizes.
        gamma: discount; tau: Polyak weight of the online critics in the target update.
        actor_lr, critic_lr, alpha_lr: AdamW learning rates (``alpha_lr=None``: ``actor_lr``).
        batch_size, buffer_size: replay minibatch and capacity (transitions per process).
        learning_starts: env steps (per process) of uniform random actions before learning.
        train_freq, gradient_steps: every ``train_freq`` vector-env steps, ``gradient_steps`` batches.
        updates_per_batch: env-stream batches (updates) per Lightning batch, the same training with Lightning's
            per-batch loop run less often (see :class:`~litzoo.modules.ddpg.DDPG`).
        target_update_interval: update the targets every this many gradient steps.
        ent_coef: a fixed temperature :math:`\\alpha`; ``None`` (default): learned, starting at ``ent_coef_init``.
        target_entropy: :math:`\\bar{\\mathcal H}`; ``None``: :math:`-\\dim\\mathcal A`.
        max_grad_norm: clip the global gradient norm (``None``: no clipping, as in the paper).
        flush_denormals: run the optimizer step with denormal floats flushed to zero (CPU; Adam's first moments of
            dead units sink into that ~100x slower range; :func:`litzoo.rl.utils.flush_denormals`).
        normalize_observations: whiten Box observations with running statistics (exported with the policy).
        save_replay_buffer: also store the replay buffer in checkpoints (exact resume, larger files).
        log_every_n_env_steps: how often losses and episode statistics are logged.
        seed: seeds exploration, the actor's samples and replay sampling (offset by rank). ``None`` (default):
            the global seed (``seed_everything`` / ``--seed_everything``, else 0), saved once taken.
    """

    ACTION_SPACES = ("Box",)
    ACTION_SPACE_HINT = "For discrete actions use litzoo.modules.PPO, ActorCritic, TRPO or DQN."

    def __init__(
        self,
        observation_space: Optional[dict] = None,
        action_space: Optional[dict] = None,
        actor_hidden_sizes: tuple[int, ...] = (256, 256),
        critic_hidden_sizes: tuple[int, ...] = (256, 256),
        activation: str = "relu",
        gamma: float = 0.99,
        tau: float = 0.005,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        alpha_lr: Optional[float] = None,
        batch_size: int = 256,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        train_freq: int = 1,
        gradient_steps: int = 1,
        updates_per_batch: int = 1,
        target_update_interval: int = 1,
        ent_coef: Optional[float] = None,
        ent_coef_init: float = 1.0,
        target_entropy: Optional[float] = None,
        max_grad_norm: Optional[float] = None,
        flush_denormals: bool = True,
        normalize_observations: bool = False,
        save_replay_buffer: bool = False,
        log_every_n_env_steps: int = 1000,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        check_range("gamma", gamma, 0, 1)
        check_range("tau", tau, 0, 1)
        for name, value in (("actor_lr", actor_lr), ("critic_lr", critic_lr), ("ent_coef_init", ent_coef_init)):
            check_positive(name, value)
        if alpha_lr is not None:
            check_positive("alpha_lr", alpha_lr)
        if ent_coef is not None and not ent_coef > 0:
            raise ValueError(f"ent_coef={ent_coef!r} must be > 0 (a fixed temperature alpha) or None (alpha learned "
                             "to keep the policy's entropy near target_entropy).")
        for name, value in (("batch_size", batch_size), ("buffer_size", buffer_size), ("train_freq", train_freq),
                            ("gradient_steps", gradient_steps), ("updates_per_batch", updates_per_batch),
                            ("target_update_interval", target_update_interval), ("log_every_n_env_steps", log_every_n_env_steps)):
            check_positive_int(name, value)
        check_non_negative_int("learning_starts", learning_starts)
        check_replay_sizes(batch_size, buffer_size, learning_starts)
        if target_entropy is not None and not math.isfinite(target_entropy):
            raise ValueError(f"target_entropy={target_entropy!r} must be a finite number or None (-dim(A)).")
        check_positive_or_none("max_grad_norm", max_grad_norm, "no clipping")
        check_bool("flush_denormals", flush_denormals)
        self.save_hyperparameters()
        self._init_rl_state(observation_space, action_space)

    # ----------------------------------------------------------------- networks
    def _build(self, obs_spec: dict[str, Any], act_spec: dict[str, Any]) -> None:
        h = self.hparams
        encoder = make_encoder(obs_spec, normalize=h.normalize_observations)
        self.act_dim = int(math.prod(act_spec["shape"]))
        actor = SquashedGaussianActor(encoder.features_dim, self.act_dim, h.actor_hidden_sizes, h.activation)
        self.policy = Policy(encoder, actor, "squashed_gaussian", obs_spec, act_spec)
        self.critic = QCritic(encoder.features_dim, self.act_dim, h.critic_hidden_sizes, h.activation, num_critics=2)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        learn = h.ent_coef is None
        self.temperature = Temperature(h.ent_coef_init if learn else h.ent_coef, learn=learn)
        self.target_entropy = float(-self.act_dim if h.target_entropy is None else h.target_entropy)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        h = self.hparams
        return adamw_for_networks([(self.policy.actor, h.actor_lr), (self.critic, h.critic_lr),
                                   (self.temperature, h.alpha_lr or h.actor_lr)], weight_decay=0.0)

    # ----------------------------------------------------------------- acting
    @torch.no_grad()
    def generate_batches(self, env: EnvRunner) -> Iterator[ReplayBatch]:
        """Act (uniform before ``learning_starts``, then a sample of the actor), store, and every ``train_freq``
        vector-env steps yield ``gradient_steps`` replay minibatches."""
        h = self.hparams
        self._env = env
        self._init_generator()
        buffer = self._replay_buffer(env.num_envs, (self.act_dim,))
        encoder, actor = self.policy.encoder, self.policy.actor
        while True:
            for _ in range(h.train_freq):
                encoder.update(env.obs)
                if self.env_steps < h.learning_starts:
                    actions = torch.rand((env.num_envs, self.act_dim), generator=self._generator, device=self.device) * 2 - 1
                else:
                    actions = actor.sample(encoder(env.obs), self._generator)
                step_into_replay(env, buffer, actions, self.policy.to_env_action(actions))
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
        log_alpha = self.temperature.log_alpha
        alpha = log_alpha.detach().exp()
        with torch.no_grad():  # y = r + gamma (1 - d) (min_e Q'_e(s', a') - alpha log pi(a'|s')),  a' ~ pi(.|s')
            next_actions, next_log_probs = actor.sample_with_log_prob(next_features, self._generator)
            q_next = self.critic_target(next_features, next_actions).float()
            y = sac_soft_target(batch.rewards, batch.dones, q_next, next_log_probs, alpha, h.gamma)
        q = self.critic(features, batch.actions).float()  # (2, B)
        critic_loss = 0.5 * (q - y).pow(2).mean(dim=1).sum()  # each critic's half MSE (SB3's scale)
        actions, log_probs = actor.sample_with_log_prob(features, self._generator)  # reparameterised
        self.critic.requires_grad_(False)  # the critics are constants in the actor's term
        q_pi = self.critic(features, actions).min(dim=0).values.float()
        self.critic.requires_grad_(True)
        actor_loss = (alpha * log_probs - q_pi).mean()
        loss = critic_loss + actor_loss
        if log_alpha.requires_grad:
            alpha_loss = sac_temperature_loss(log_alpha, log_probs, self.target_entropy)
            loss = loss + alpha_loss
        self._backward_and_step(optimizer, loss)
        self.num_updates += 1
        if self.num_updates % h.target_update_interval == 0:
            polyak_update(*self._polyak_lists(), tau=h.tau)

        def metrics() -> dict[str, Any]:
            return {"train/critic_loss": critic_loss.detach(), "train/actor_loss": actor_loss.detach(),
                    "train/q": q.detach().mean(), "train/alpha": alpha, "train/entropy": -log_probs.detach().mean()}

        self._log_if_due(metrics)

    def _polyak_lists(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if not hasattr(self, "_polyak_cache"):
            self._polyak_cache = ([*self.critic.parameters()], [*self.critic_target.parameters()])
        return self._polyak_cache
