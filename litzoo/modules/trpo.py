r"""Trust Region Policy Optimization (TRPO) with a GAE value critic.

Schulman, Levine, Moritz, Jordan, Abbeel, "Trust Region Policy Optimization", ICML 2015
(arXiv:1502.05477); advantages by GAE (Schulman et al. 2016, arXiv:1506.02438), as in their
"practical algorithm" and in SB3-contrib's ``TRPO``.

Per on-policy rollout of ``n_steps`` steps of every parallel env (:class:`~litzoo.rl.RolloutBuffer`):

1. **Advantages** :math:`\hat A_t` by GAE(:math:`\gamma, \lambda`) with the critic :math:`V_w`
   (standardised per batch if ``normalize_advantage``).
2. **Policy step** (no optimizer): maximise the surrogate under the KL trust region :math:`\delta`
   (``max_kl``),

   .. math::  \max_\theta\ L(\theta) = \frac1{TN}\sum_t \frac{\pi_\theta(a_t|s_t)}{\pi_{\theta_{old}}(a_t|s_t)}\hat A_t
              \quad\text{s.t.}\quad \frac1{TN}\sum_t D_{KL}\big(\pi_{\theta_{old}}(\cdot|s_t)\,\|\,\pi_\theta(\cdot|s_t)\big) \le \delta,

   by the natural gradient :math:`s = F^{-1} g` (``cg_max_steps`` conjugate-gradient iterations on
   damped Fisher-vector products), the step :math:`\beta s` with :math:`\beta = \sqrt{2\delta / s^\top F s}`,
   and a backtracking line search (factor ``line_search_shrink``) that accepts the first step with
   measured KL :math:`\le \delta` and a positive surrogate improvement, else keeps :math:`\theta_{old}`
   (:mod:`litzoo.rl.trust_region`). The step runs in float32 whatever the trainer's precision:
   conjugate gradient and a KL of order :math:`10^{-2}` do not survive bf16 rounding.
3. **Critic**: ``n_critic_updates`` epochs of AdamW on :math:`(V_w(s_t) - \hat R_t)^2` over shuffled
   minibatches of ``critic_batch_size`` (the GAE :math:`\lambda`-returns :math:`\hat R_t`).

Under DDP each rank collects its own rollout; the policy gradient :math:`g`, every Fisher-vector
product and the line search's surrogate and KL are averaged over ranks (so all ranks solve the same
system and take the same step), and the critic's gradients with :func:`all_reduce_gradients`.

One rollout is one trainer step (``max_steps`` counts rollouts, as for ``ActorCritic``). Actions:
``Discrete`` -> categorical policy, ``Box`` -> diagonal Gaussian with state-independent log-std
(samples clipped to the bounds for the env, log-probabilities of the unclipped sample).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from litzoo.bases.rl import OnPolicyModule, all_reduce_gradients
from litzoo.checks import check_non_negative, check_positive, check_positive_int, check_range
from litzoo.nets.actors_critics import mlp
from litzoo.optim import adamw_for_networks
from litzoo.rl.buffers import RolloutBatch
from litzoo.rl.trust_region import (
    LineSearchResult,
    backtracking_line_search,
    conjugate_gradient,
    flat_grad,
    make_fisher_vector_product,
    natural_step_size,
)
from litzoo.rl.utils import explained_variance


class TRPO(OnPolicyModule):
    """TRPO: natural-gradient policy step in a KL trust region, GAE value critic fitted by AdamW.

    Args:
        observation_space, action_space: space specs or gymnasium spaces; ``None`` = from the datamodule
            in ``setup`` (then saved in the hyperparameters for ``load_from_checkpoint``).
        hidden_sizes, activation, orthogonal_init: actor and critic MLPs (separate networks).
        n_steps: rollout length per env (batch = ``n_steps * num_envs`` steps).
        gamma, gae_lambda: discount and GAE's lambda.
        max_kl: the trust-region radius :math:`\\delta` on the mean KL(old || new).
        cg_max_steps, cg_damping: conjugate-gradient iterations and the damping :math:`\\lambda` of
            :math:`(F + \\lambda I) v`.
        line_search_max_iter, line_search_shrink: backtracking tries and factor :math:`\\kappa`.
        line_search_accept_ratio: also require improvement >= ratio * the linear model's (0: off, as SB3).
        critic_lr, n_critic_updates, critic_batch_size, adam_eps, weight_decay: the critic's AdamW epochs
            and minibatch size (``None``: the whole rollout).
        normalize_advantage: standardise advantages per batch.
        log_std_init: initial log-std of the Gaussian policy (Box actions).
        normalize_observations: running observation whitening (exported with the policy).
        log_every_n_env_steps: how often metrics and episode statistics are logged.
        seed: seeds action sampling and critic minibatches (offset by rank). ``None`` (default): the global
            seed (``seed_everything`` / ``--seed_everything``, else 0), saved once taken.
    """

    steps_optimizer_itself = True  # AdamW steps per minibatch / the trust-region step: no fp16 scaler

    def __init__(
        self,
        observation_space: Optional[dict] = None,
        action_space: Optional[dict] = None,
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        orthogonal_init: bool = True,
        n_steps: int = 512,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        max_kl: float = 0.01,
        cg_max_steps: int = 15,
        cg_damping: float = 0.1,
        line_search_max_iter: int = 10,
        line_search_shrink: float = 0.8,
        line_search_accept_ratio: float = 0.0,
        critic_lr: float = 1e-3,
        n_critic_updates: int = 10,
        critic_batch_size: Optional[int] = 128,
        adam_eps: float = 1e-8,
        weight_decay: float = 0.0,
        normalize_advantage: bool = True,
        log_std_init: float = 0.0,
        normalize_observations: bool = False,
        log_every_n_env_steps: int = 1000,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        if not max_kl > 0:
            raise ValueError(f"max_kl={max_kl!r} must be > 0: it is the trust-region radius delta on the mean "
                             "KL(pi_old || pi_new); use a small positive value such as 0.01.")
        for name, value in (("gamma", gamma), ("gae_lambda", gae_lambda),
                            ("line_search_accept_ratio", line_search_accept_ratio)):
            check_range(name, value, 0, 1)
        for name, value in (("n_steps", n_steps), ("cg_max_steps", cg_max_steps),
                            ("line_search_max_iter", line_search_max_iter), ("n_critic_updates", n_critic_updates),
                            ("log_every_n_env_steps", log_every_n_env_steps)):
            check_positive_int(name, value)
        if critic_batch_size is not None and (int(critic_batch_size) != critic_batch_size or critic_batch_size < 1):
            raise ValueError(f"critic_batch_size={critic_batch_size!r} must be a positive integer or None "
                             "(the whole rollout as one batch).")
        if not 0.0 < line_search_shrink < 1.0:
            raise ValueError(f"line_search_shrink={line_search_shrink!r} must be in (0, 1), e.g. 0.8 "
                             "(each backtracking try shortens the step by this factor).")
        check_positive("critic_lr", critic_lr)
        check_positive("adam_eps", adam_eps)
        check_non_negative("cg_damping", cg_damping)
        check_non_negative("weight_decay", weight_decay)
        self.save_hyperparameters()
        self._line_search = {"accepted": 0, "rejected": 0}  # since the last log
        self._init_rl_state(observation_space, action_space)

    # ----------------------------------------------------------------- networks
    def _build(self, obs_spec: dict[str, Any], act_spec: dict[str, Any]) -> None:
        h = self.hparams
        d = self._build_policy(obs_spec, act_spec)
        self.critic = mlp(d, 1, h.hidden_sizes, h.activation, h.orthogonal_init, output_gain=1.0)  # V_w(s)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        h = self.hparams  # the critic only: the actor moves by the trust-region step
        return adamw_for_networks([(self.critic, h.critic_lr)], h.weight_decay, eps=h.adam_eps)

    # ----------------------------------------------------------------- acting
    @torch.no_grad()
    def _value(self, obs: Tensor) -> Tensor:
        return self.critic(self.policy.encoder(obs)).squeeze(-1)

    # ----------------------------------------------------------------- update
    def _mean(self, x: Tensor) -> Tensor:
        """All-reduce mean over DDP ranks (identity on one process); every rank has the same batch size."""
        if self._world_size <= 1:
            return x
        return self.trainer.strategy.reduce(x, reduce_op="mean")

    def _kl(self, old: torch.distributions.Distribution, new: torch.distributions.Distribution) -> Tensor:
        kl = torch.distributions.kl_divergence(old, new)
        return (kl if self.discrete else kl.sum(-1)).mean()  # independent Gaussian dims: KLs add

    def trust_region_step(self, features: Tensor, actions: Tensor, log_probs_old: Tensor,
                          advantages: Tensor) -> tuple[LineSearchResult, dict[str, Tensor]]:
        """One TRPO policy update on a batch (float32); returns the line-search result and diagnostics."""
        h, actor = self.hparams, self.policy.actor
        params = [p for p in actor.parameters() if p.requires_grad]
        with torch.no_grad():
            dist = actor.distribution(features)
            old = (torch.distributions.Categorical(logits=dist.logits.detach(), validate_args=False) if self.discrete
                   else torch.distributions.Normal(dist.loc.detach(), dist.scale.detach(), validate_args=False))

        def surrogate(dist: torch.distributions.Distribution) -> Tensor:
            ratio = torch.exp(actor.log_prob(dist, actions) - log_probs_old)  # pi_theta / pi_old (behaviour)
            return (ratio * advantages).mean()

        dist = actor.distribution(features)
        L_old = surrogate(dist)
        # g of the whole (all-rank) batch; retain the graph: the KL below shares the forward pass
        g = self._mean(flat_grad(L_old, params, retain_graph=True))
        Fvp = make_fisher_vector_product(self._kl(old, dist), params, h.cg_damping,
                                         self._mean if self._world_size > 1 else None)
        step_dir = conjugate_gradient(Fvp, g, h.cg_max_steps)  # s ~ F^-1 g
        beta = natural_step_size(step_dir, Fvp(step_dir), h.max_kl)
        full_step = beta * step_dir
        L_old_all = self._mean(L_old.detach())

        def evaluate() -> tuple[Tensor, Tensor]:
            new = actor.distribution(features)
            return self._mean(surrogate(new)), self._mean(self._kl(old, new))

        result = backtracking_line_search(
            params, full_step, evaluate, L_old_all, h.max_kl, expected_improvement=g.dot(full_step),
            max_iter=h.line_search_max_iter, shrink=h.line_search_shrink, accept_ratio=h.line_search_accept_ratio,
        )
        with torch.no_grad():
            entropy = actor.entropy(actor.distribution(features)).mean()
        return result, {"expected_improvement": g.dot(full_step).detach(), "entropy": entropy}

    def training_step(self, batch: RolloutBatch, batch_idx: int) -> None:
        h = self.hparams
        with torch.no_grad():
            features = self.policy.encoder(batch.obs).float()
        advantages = batch.advantages
        if h.normalize_advantage and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        with torch.autocast(device_type=self.device.type, enabled=False):  # CG and a 1e-2 KL need float32
            result, info = self.trust_region_step(features, batch.actions, batch.log_probs.float(), advantages)
        self._line_search["accepted" if result.accepted else "rejected"] += 1

        # Critic: n_critic_updates epochs of minibatch regression on the lambda-returns.
        optimizer = self.optimizers()
        total = batch.returns.numel()
        size = total if h.critic_batch_size is None else min(int(h.critic_batch_size), total)
        steps = h.n_critic_updates * math.ceil(total / size)
        done = 0
        for _ in range(h.n_critic_updates):
            order = torch.randperm(total, generator=self._generator, device=self._generator.device).to(self.device)
            for start in range(0, total, size):
                idx = order[start: start + size]
                value_loss = F.mse_loss(self.critic(features[idx]).squeeze(-1).float(), batch.returns[idx])
                optimizer.zero_grad(set_to_none=True)
                self.manual_backward(value_loss)
                all_reduce_gradients(self.trainer, self.critic.parameters())
                done += 1
                # Lightning counts every LightningOptimizer.step as a trainer step; step the raw AdamW
                # for all but the last minibatch so that one rollout = one step (max_steps = rollouts).
                (optimizer.step if done == steps else optimizer.optimizer.step)()
        self.num_updates += 1

        def metrics() -> dict[str, Any]:
            with torch.no_grad():
                values = self.critic(features).squeeze(-1).float()
            out = {"train/kl": result.kl, "train/surrogate_improvement": result.improvement,
                   "train/expected_improvement": info["expected_improvement"],
                   "train/step_fraction": result.step_fraction,
                   "train/line_search_accepted": self._line_search["accepted"],
                   "train/line_search_rejected": self._line_search["rejected"],
                   "train/entropy": info["entropy"],
                   "train/value_loss": F.mse_loss(values, batch.returns),
                   "train/explained_variance": explained_variance(values, batch.returns)}
            if not self.discrete:
                out["train/std"] = self.policy.actor.log_std.detach().exp().mean()
            return out

        if self._log_if_due(metrics):
            self._line_search = {"accepted": 0, "rejected": 0}  # counts since the last log
