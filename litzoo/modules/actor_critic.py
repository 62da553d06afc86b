r"""Actor-critic methods: QAC (critic on action values) and A2C (critic on state values, advantage).

Shiyu Zhao, *Mathematical Foundations of Reinforcement Learning* (Springer, 2025), Ch. 10;
Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement Learning" (A2C is the synchronous
variant of A3C); Schulman et al. 2016 (GAE).

Both ascend the policy gradient :math:`\nabla_\theta J = \mathbb E\,[\nabla_\theta \ln \pi_\theta(a|s)\, \Psi]`
with a learned critic supplying :math:`\Psi`, on on-policy rollouts of ``n_steps`` steps of every
parallel env (:class:`~litzoo.rl.RolloutBuffer`):

**QAC** (``critic="q"``, Zhao Alg. 10.1). :math:`\Psi = q_w(s_t, a_t)`; the critic is learned by
Sarsa, i.e. TD on action values with the next action drawn from the same policy,

.. math::  w \leftarrow w + \alpha_w \big[r_{t+1} + \gamma\, q_w(s_{t+1}, a_{t+1}) - q_w(s_t, a_t)\big] \nabla_w q_w(s_t, a_t),

implemented as the loss :math:`(q_w(s_t,a_t) - y_t)^2` with the target :math:`y_t` from GAE run on
:math:`q_w(s_t, a_t)` in place of :math:`V(s_t)` (``gae_lambda=0`` gives exactly the Sarsa target;
:math:`\lambda > 0` the Sarsa(:math:`\lambda`)-style :math:`\lambda`-return). Where the rollout or a
truncated episode ends, :math:`q_w(s', a')` is replaced by its expectation
:math:`\sum_a \pi(a|s')\, q_w(s', a)` (discrete) or a sample (continuous).

**A2C** (``critic="advantage"``). :math:`\Psi = \hat A_t`, the GAE(:math:`\lambda`) advantage with a
learned state value :math:`v_w(s)` as baseline (``gae_lambda=1``: the n-step return of A2C), and

.. math::  L = -\frac1{TN}\sum \hat A_t \ln\pi_\theta(a_t|s_t) + c_v\, \frac1{TN}\sum \big(v_w(s_t) - \hat R_t\big)^2 - c_e\, \mathcal H[\pi_\theta(\cdot|s_t)],

with entropy bonus :math:`c_e` (``ent_coef``), value-loss weight :math:`c_v` (``vf_coef``) and the
gradient norm clipped to ``max_grad_norm``. QAC uses the same total loss with :math:`\Psi = q_w`.

Actions: ``Discrete`` spaces get a categorical policy, ``Box`` spaces a diagonal Gaussian with a
state-independent log-std (samples are clipped to the bounds for the env; log-probabilities are of
the unclipped sample). Truncated episodes bootstrap from their final observation (in the buffer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from litzoo.bases.rl import OnPolicyModule
from litzoo.checks import (
    check_choice, check_non_negative, check_positive, check_positive_or_none, check_positive_int, check_range,
)
from litzoo.nets.actors_critics import QCritic, mlp
from litzoo.optim import adamw_for_networks, rmsprop_for_networks
from litzoo.rl.buffers import RolloutBatch
from litzoo.rl.normalization import ReturnNormalizer
from litzoo.rl.utils import explained_variance

CRITICS = ("advantage", "q")
OPTIMIZERS = ("adamw", "rmsprop")


def _log_softmax(logits: Tensor) -> Tensor:
    """``log pi(.|s)`` of a categorical policy, clamped like ``Categorical.entropy`` (no ``0 * -inf``).

    Used instead of building a ``torch.distributions.Categorical`` per step: with CartPole-sized
    networks, the distribution object (its logsumexp normalisation, lazy ``probs``, broadcasting in
    ``log_prob``) costs more than the networks; the numbers are the same.
    """
    return torch.log_softmax(logits.float(), dim=-1).clamp(min=torch.finfo(torch.float32).min)


class ActorCritic(OnPolicyModule):
    """QAC (``critic="q"``) or A2C (``critic="advantage"``); one rollout = one batch = one gradient step.

    Args:
        critic: ``"advantage"`` (A2C: state-value baseline, advantages) or ``"q"`` (QAC: Sarsa action values).
        observation_space, action_space: space specs or gymnasium spaces; ``None`` = from the datamodule
            in ``setup`` (then saved in the hyperparameters for ``load_from_checkpoint``).
        hidden_sizes, activation, orthogonal_init: actor and critic MLPs (separate networks).
        n_steps: rollout length per env (batch = ``n_steps * num_envs`` steps).
        gamma: discount; gae_lambda: GAE's lambda (``None``: 1.0 for A2C, 0.0 = Sarsa for QAC).
        lr, critic_lr, adam_eps, weight_decay: AdamW (actor ``lr``, critic ``critic_lr or lr``). QAC has no
            baseline, so give its actor the slower time scale (``configs/qac_cartpole.yaml``: 1e-4 vs
            1e-3); with A2C's single 7e-4 it collapsed to one action on CartPole.
        optimizer, rmsprop_alpha: ``"adamw"`` (default) or ``"rmsprop"`` (the A2C paper's and the zoo's
            optimizer, :func:`litzoo.optim.rmsprop_for_networks`; ``adam_eps`` is then its epsilon).
        ent_coef, vf_coef, max_grad_norm: loss weights and gradient clipping (``None``: no clipping).
        normalize_advantage: standardise advantages per batch (A2C only).
        log_std_init: initial log-std of the Gaussian policy (Box actions).
        normalize_observations, normalize_rewards: running observation whitening (exported with the
            policy) and reward scaling by the std of the discounted return.
        log_every_n_env_steps: how often losses and episode statistics are logged.
        seed: seeds action sampling (offset by rank). ``None`` (default): the global
            seed (``seed_everything`` / ``--seed_everything``, else 0), saved once taken.
    """

    def __init__(
        self,
        critic: str = "advantage",
        observation_space: Optional[dict] = None,
        action_space: Optional[dict] = None,
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        orthogonal_init: bool = True,
        n_steps: int = 5,
        gamma: float = 0.99,
        gae_lambda: Optional[float] = None,
        lr: float = 7e-4,
        critic_lr: Optional[float] = None,
        adam_eps: float = 1e-5,
        weight_decay: float = 0.0,
        optimizer: str = "adamw",
        rmsprop_alpha: float = 0.99,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: Optional[float] = 0.5,
        normalize_advantage: bool = False,
        log_std_init: float = 0.0,
        normalize_observations: bool = False,
        normalize_rewards: bool = False,
        log_every_n_env_steps: int = 1000,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        if critic not in CRITICS:
            raise ValueError(f"critic={critic!r} is not one of {CRITICS} ('advantage': A2C, 'q': QAC).")
        if gae_lambda is None:
            gae_lambda = 1.0 if critic == "advantage" else 0.0
        check_range("gamma", gamma, 0, 1)
        check_range("gae_lambda", gae_lambda, 0, 1)
        check_positive_int("n_steps", n_steps)
        check_positive_int("log_every_n_env_steps", log_every_n_env_steps)
        for name, value in (("lr", lr), ("critic_lr", lr if critic_lr is None else critic_lr), ("adam_eps", adam_eps)):
            check_positive(name, value)
        for name, value in (("ent_coef", ent_coef), ("vf_coef", vf_coef), ("weight_decay", weight_decay)):
            check_non_negative(name, value)
        check_positive_or_none("max_grad_norm", max_grad_norm, "no clipping")
        check_choice("optimizer", optimizer, OPTIMIZERS)
        check_range("rmsprop_alpha", rmsprop_alpha, 0, 1, low_open=True, high_open=True)
        if normalize_advantage and critic == "q":
            raise ValueError("normalize_advantage=True applies to critic='advantage' (A2C); QAC weights by q itself.")
        self.save_hyperparameters()
        self.hparams.gae_lambda = float(gae_lambda)
        self._init_rl_state(observation_space, action_space)

    # ----------------------------------------------------------------- networks
    def _build(self, obs_spec: dict[str, Any], act_spec: dict[str, Any]) -> None:
        h = self.hparams
        d = self._build_policy(obs_spec, act_spec)
        if h.critic == "advantage":  # v_w(s)
            self.critic = mlp(d, 1, h.hidden_sizes, h.activation, h.orthogonal_init, output_gain=1.0)
        elif self.discrete:  # q_w(s, .) for all actions at once
            self.critic = mlp(d, self.act_dim, h.hidden_sizes, h.activation, h.orthogonal_init, output_gain=1.0)
        else:  # q_w(s, a) on [features, action]
            self.critic = QCritic(d, self.act_dim, h.hidden_sizes, h.activation, num_critics=1)
        self.return_normalizer = ReturnNormalizer(1, h.gamma) if h.normalize_rewards else None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        h = self.hparams
        networks = [(self.policy.actor, h.lr), (self.critic, h.critic_lr or h.lr)]
        if h.get("optimizer", "adamw") == "rmsprop":
            return rmsprop_for_networks(networks, h.weight_decay, eps=h.adam_eps, alpha=h.rmsprop_alpha)
        return adamw_for_networks(networks, h.weight_decay, eps=h.adam_eps)

    def q_values(self, features: Tensor, actions: Tensor | None = None) -> Tensor:
        """QAC's critic: ``q(s, a)`` of the given actions, or ``q(s, .)`` (B, A) for discrete actions."""
        if self.discrete:
            q = self.critic(features)
            return q if actions is None else q.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        return self.critic(features, actions).squeeze(0)

    def state_values(self, features: Tensor) -> Tensor:
        """A2C's ``v(s)``, or QAC's :math:`\\sum_a \\pi(a|s) q(s, a)` (a one-sample estimate for continuous actions)."""
        if self.hparams.critic == "advantage":
            return self.critic(features).squeeze(-1)
        actor = self.policy.actor
        if self.discrete:
            return (torch.softmax(actor(features).float(), -1) * self.q_values(features).float()).sum(-1)
        return self.q_values(features, actor.sample(features, self._generator))

    # ----------------------------------------------------------------- acting
    @torch.no_grad()
    def _value(self, obs: Tensor) -> Tensor:
        return self.state_values(self.policy.encoder(obs))

    @torch.no_grad()
    def _step_q_values(self, obs: Tensor, actions: Tensor) -> Tensor:
        return self.q_values(self.policy.encoder(obs), actions)

    def _scale_rewards(self, rewards: Tensor, dones: Tensor) -> Tensor:
        self.return_normalizer.update(rewards, dones)
        return self.return_normalizer(rewards)

    def _rollout_hooks(self, num_envs: int) -> tuple[Optional[Callable], Optional[Callable]]:
        """Reward scaling by the return's std (``normalize_rewards``); QAC stores ``q(s_t, a_t)`` as step values."""
        reward_transform = None
        if self.return_normalizer is not None:
            if self.return_normalizer.num_envs != num_envs:  # the running returns are per env
                fresh = ReturnNormalizer(num_envs, self.hparams.gamma).to(self.device)
                fresh.rms.load_state_dict(self.return_normalizer.rms.state_dict())
                self.return_normalizer = fresh
            reward_transform = self._scale_rewards
        return reward_transform, self._step_q_values if self.hparams.critic == "q" else None

    # ----------------------------------------------------------------- update
    def training_step(self, batch: RolloutBatch, batch_idx: int) -> None:
        h = self.hparams
        optimizer = self.optimizers()
        actor = self.policy.actor
        features = self.policy.encoder(batch.obs)
        if self.discrete:  # log pi(a|s) and H[pi] from one log-softmax (see _log_softmax)
            log_pi = _log_softmax(actor(features))
            log_probs = log_pi.gather(-1, batch.actions.long().unsqueeze(-1)).squeeze(-1)
        else:
            dist = actor.distribution(features)
            log_probs = actor.log_prob(dist, batch.actions).float()

        def mean_entropy() -> Tensor:
            if self.discrete:
                return -(log_pi.exp() * log_pi).sum(-1).mean()
            return actor.entropy(dist).float().mean()

        if h.critic == "advantage":  # A2C: advantage-weighted log-likelihood, value regression
            values = self.critic(features).squeeze(-1).float()
            advantages = batch.advantages
            if h.normalize_advantage and advantages.numel() > 1:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            policy_loss = -(advantages * log_probs).mean()
        else:  # QAC: q-weighted log-likelihood, Sarsa regression of q
            values = self.q_values(features, batch.actions).float()
            policy_loss = -(values.detach() * log_probs).mean()
        value_loss = F.mse_loss(values, batch.returns)
        loss = policy_loss + h.vf_coef * value_loss
        entropy = None
        if h.ent_coef > 0:  # otherwise (the zoo's A2C) it stays out of the graph: computed when logged only
            entropy = mean_entropy()
            loss = loss - h.ent_coef * entropy

        self._backward_and_step(optimizer, loss)
        self.num_updates += 1

        def metrics() -> dict[str, Any]:
            out = {"train/policy_loss": policy_loss.detach(), "train/value_loss": value_loss.detach(),
                   "train/entropy": (mean_entropy() if entropy is None else entropy).detach(),
                   "train/explained_variance": explained_variance(values.detach(), batch.returns)}
            if not self.discrete:
                out["train/std"] = actor.log_std.detach().exp().mean()
            return out

        self._log_if_due(metrics)

    @property
    def algorithm(self) -> str:
        return "A2C" if self.hparams.critic == "advantage" else "QAC"
