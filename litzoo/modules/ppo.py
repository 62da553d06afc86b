r"""Proximal Policy Optimization (PPO) with clipped surrogate objective and a GAE value critic.

Schulman, Wolski, Dhariwal, Radford, Klimov, "Proximal Policy Optimization Algorithms" (arXiv:1707.06347),
Alg. 1; advantages by GAE (Schulman et al. 2016). Details as in OpenAI baselines' PPO2 and SB3.

Per on-policy rollout of ``n_steps`` steps of every parallel env (:class:`~litzoo.rl.RolloutBuffer`,
GAE(:math:`\gamma,\lambda`) advantages :math:`\hat A_t` and :math:`\lambda`-returns :math:`\hat R_t`),
``n_epochs`` passes over the rollout in shuffled minibatches of ``batch_size`` each take one AdamW step on

.. math::

    L(\theta, \phi) = -\hat{\mathbb E}_t\big[\min\big(r_t(\theta)\hat A_t,\
        \mathrm{clip}(r_t(\theta), 1-\epsilon, 1+\epsilon)\hat A_t\big)\big]
        + c_1 \hat{\mathbb E}_t\big[(V_\phi(s_t) - \hat R_t)^2\big] - c_2\, \hat{\mathbb E}_t\,\mathcal H[\pi_\theta(\cdot|s_t)],

with :math:`r_t(\theta) = \pi_\theta(a_t|s_t)/\pi_{\theta_{old}}(a_t|s_t)`, :math:`\epsilon` = ``clip_range``,
:math:`c_1` = ``vf_coef``, :math:`c_2` = ``ent_coef`` (the loss functions are :mod:`litzoo.rl.losses`).
Options: advantages standardised per minibatch (``normalize_advantage``); value clipping around the
rollout's values (``clip_range_vf``, PPO2's pessimistic max); the gradient norm clipped to
``max_grad_norm``; ``target_kl``: the epochs stop at the first minibatch whose estimated
:math:`D_{KL}(\pi_{old}\|\pi_\theta)` exceeds :math:`1.5\,` ``target_kl`` (before its step, as SB3);
linear schedules of the learning rate and :math:`\epsilon` to ``lr_final`` / ``clip_range_final``
over the run's rollouts (the zoo's ``lin_`` values: final 0).

Actions: ``Discrete`` -> categorical, ``Box`` -> diagonal Gaussian with state-independent log-std
(samples clipped to the bounds for the env, log-probabilities of the unclipped sample).
``normalize_observations`` / ``normalize_rewards``: running observation whitening (exported with the
policy) and reward scaling by the std of the discounted return (SB3's ``VecNormalize``).

One rollout is one trainer step (``max_steps`` counts rollouts, as for ``ActorCritic`` and ``TRPO``).
Under DDP each rank collects its own rollout and minibatches; gradients are averaged over ranks at
every minibatch (:func:`all_reduce_gradients`) and the KL of the early stop too, so every rank takes
the same steps and stops at the same minibatch.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from litzoo.bases.rl import OnPolicyModule
from litzoo.checks import check_non_negative, check_positive, check_positive_or_none, check_positive_int, check_range
from litzoo.nets.actors_critics import mlp
from litzoo.optim import adamw_for_networks
from litzoo.rl.buffers import RolloutBatch, shuffled_minibatch_indices
from litzoo.rl.losses import ppo_clipped_surrogate, ppo_value_loss
from litzoo.rl.utils import explained_variance


class PPO(OnPolicyModule):
    """PPO-Clip: ``n_epochs`` x minibatches of AdamW steps per rollout on the clipped surrogate + value + entropy.

    Args:
        observation_space, action_space: space specs or gymnasium spaces; ``None`` = from the datamodule
            in ``setup`` (then saved in the hyperparameters for ``load_from_checkpoint``).
        hidden_sizes, activation, orthogonal_init: actor and critic MLPs (separate networks).
        n_steps: rollout length per env (rollout = ``n_steps * num_envs`` steps per rank).
        batch_size: minibatch size (the last minibatch of an epoch may be smaller); n_epochs: passes per rollout.
        gamma, gae_lambda: discount and GAE's lambda.
        clip_range, clip_range_final: :math:`\\epsilon`, linearly annealed to ``clip_range_final`` over the run
            (``None``: constant).
        clip_range_vf: value clipping around the rollout's values (``None``: off).
        ent_coef, vf_coef, max_grad_norm: loss weights and gradient clipping (``None``: no clipping).
        target_kl: stop the rollout's epochs once the approximate KL exceeds ``1.5 * target_kl`` (``None``: off).
        lr, lr_final, adam_eps, weight_decay: AdamW over actor and critic; ``lr_final``: linear decay to it
            over the run (``None``: constant).
        total_steps: the schedules' length in rollouts (``None``: the trainer's ``max_steps`` / epochs).
        normalize_advantage: standardise advantages per minibatch.
        log_std_init: initial log-std of the Gaussian policy (Box actions).
        normalize_observations, normalize_rewards: running observation whitening and reward scaling.
        log_every_n_env_steps: how often metrics and episode statistics are logged.
        seed: seeds action sampling and minibatches (offset by rank). ``None`` (default): the global
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
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float = 0.2,
        clip_range_final: Optional[float] = None,
        clip_range_vf: Optional[float] = None,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: Optional[float] = 0.5,
        target_kl: Optional[float] = None,
        lr: float = 3e-4,
        lr_final: Optional[float] = None,
        adam_eps: float = 1e-5,
        weight_decay: float = 0.0,
        total_steps: Optional[int] = None,
        normalize_advantage: bool = True,
        log_std_init: float = 0.0,
        normalize_observations: bool = False,
        normalize_rewards: bool = False,
        log_every_n_env_steps: int = 1000,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        for name, value in (("gamma", gamma), ("gae_lambda", gae_lambda)):
            check_range(name, value, 0, 1)
        for name, value in (("n_steps", n_steps), ("batch_size", batch_size), ("n_epochs", n_epochs),
                            ("log_every_n_env_steps", log_every_n_env_steps)):
            check_positive_int(name, value)
        if total_steps is not None:
            check_positive_int("total_steps", total_steps)
        check_positive("clip_range", clip_range)
        check_positive("lr", lr)
        check_positive("adam_eps", adam_eps)
        for name, value in (("ent_coef", ent_coef), ("vf_coef", vf_coef), ("weight_decay", weight_decay)):
            check_non_negative(name, value)
        if clip_range_final is not None:
            check_range("clip_range_final", clip_range_final, 0, clip_range)
        if lr_final is not None:
            check_range("lr_final", lr_final, 0, lr)
        check_positive_or_none("clip_range_vf", clip_range_vf, "no value clipping")
        check_positive_or_none("max_grad_norm", max_grad_norm, "no clipping")
        check_positive_or_none("target_kl", target_kl, "no early stop; typical values 0.01-0.05")
        self.save_hyperparameters()
        self._init_rl_state(observation_space, action_space)

    # ----------------------------------------------------------------- networks
    def _build(self, obs_spec: dict[str, Any], act_spec: dict[str, Any]) -> None:
        h = self.hparams
        d = self._build_policy(obs_spec, act_spec)
        self.critic = mlp(d, 1, h.hidden_sizes, h.activation, h.orthogonal_init, output_gain=1.0)  # V_phi(s)
        self.return_normalizer = self._make_return_normalizer()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        h = self.hparams
        optimizer = adamw_for_networks([(self.policy.actor, h.lr), (self.critic, h.lr)], h.weight_decay, eps=h.adam_eps)
        for group in optimizer.param_groups:  # the schedule scales from here (saved with the optimizer state)
            group.setdefault("initial_lr", group["lr"])
        return optimizer

    # ----------------------------------------------------------------- acting
    @torch.no_grad()
    def _value(self, obs: Tensor) -> Tensor:
        return self.critic(self.policy.encoder(obs)).squeeze(-1)

    def _rollout_hooks(self, num_envs: int) -> tuple[Any, None]:
        return self._reward_scaling(num_envs), None

    # ----------------------------------------------------------------- schedules
    def schedule_fraction(self) -> float:
        """The share of the run still to go at this rollout, ``1 - num_updates / total`` (1 at the first rollout)."""
        total = self.hparams.total_steps or (self.total_training_steps() if self._trainer is not None else 0)
        return 1.0 if not total else max(0.0, 1.0 - self.num_updates / total)

    def current_clip_range(self) -> float:
        h = self.hparams
        if h.clip_range_final is None:
            return float(h.clip_range)
        return float(h.clip_range_final + (h.clip_range - h.clip_range_final) * self.schedule_fraction())

    def _apply_lr_schedule(self, optimizer: torch.optim.Optimizer) -> None:
        h = self.hparams
        if h.lr_final is None:
            return
        scale = (h.lr_final + (h.lr - h.lr_final) * self.schedule_fraction()) / h.lr
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * scale

    # ----------------------------------------------------------------- update
    def _mean(self, x: Tensor) -> Tensor:
        """All-reduce mean over DDP ranks (identity on one process)."""
        return x if self._world_size <= 1 else self.trainer.strategy.reduce(x, reduce_op="mean")

    def minibatch_loss(self, batch: RolloutBatch, clip_range: float,
                       features: Optional[Tensor] = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The PPO loss of one minibatch and its diagnostics (``approx_kl`` decides the early stop); ``features``:
        the encoded ``batch.obs`` if already at hand."""
        h, actor = self.hparams, self.policy.actor
        features = self.policy.encoder(batch.obs) if features is None else features
        # closed forms, no distribution object per minibatch (it cost more than the 64-64 networks)
        log_probs, entropy = actor.log_prob_and_entropy(features, batch.actions)
        advantages = batch.advantages
        if h.normalize_advantage and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        surrogate = ppo_clipped_surrogate(log_probs, batch.log_probs.float(), advantages, clip_range)
        values = self.critic(features).squeeze(-1).float()
        value_loss = ppo_value_loss(values, batch.values, batch.returns, h.clip_range_vf)
        entropy = entropy.mean()
        loss = surrogate.loss + h.vf_coef * value_loss - h.ent_coef * entropy
        return loss, {"policy_loss": surrogate.loss.detach(), "value_loss": value_loss.detach(),
                      "entropy": entropy.detach(), "clip_fraction": surrogate.clip_fraction,
                      "approx_kl": surrogate.approx_kl}

    def training_step(self, batch: RolloutBatch, batch_idx: int) -> None:
        h = self.hparams
        optimizer = self.optimizers()
        self._apply_lr_schedule(optimizer)
        clip_range = self.current_clip_range()
        total = batch.returns.numel()
        with torch.no_grad():  # the encoder has no parameters and its statistics do not move during the update
            features = self.policy.encoder(batch.obs)
        steps, stats = 0, None
        for epoch, idx in shuffled_minibatch_indices(total, h.batch_size, h.n_epochs, self._generator, self.device):
            loss, info = self.minibatch_loss(RolloutBatch(*(x[idx] for x in batch)), clip_range, features[idx])
            if h.target_kl is not None and float(self._mean(info["approx_kl"])) > 1.5 * h.target_kl:
                stats = {**(stats or info), "stopped_at_epoch": torch.tensor(float(epoch))}
                break  # before this minibatch's step (SB3's rule); every rank sees the same mean KL
            # Lightning counts every LightningOptimizer.step as a trainer step: step the raw AdamW here and tick
            # the trainer once per rollout below, so that max_steps counts rollouts whatever the early stop.
            self._backward_and_step(optimizer, loss, raw=True)
            steps, stats = steps + 1, info
        optimizer.zero_grad(set_to_none=True)
        optimizer.step()  # no parameter has a gradient: AdamW changes nothing, the trainer counts one step
        self.num_updates += 1
        self.last_minibatch_steps = steps  # AdamW steps of this rollout (fewer than planned after an early stop)

        def metrics() -> dict[str, Any]:
            with torch.no_grad():
                values = self.critic(self.policy.encoder(batch.obs)).squeeze(-1).float()
            out = {f"train/{k}": v for k, v in stats.items()}
            out.update({"train/clip_range": clip_range, "train/minibatch_steps": steps,
                        "train/lr": optimizer.param_groups[0]["lr"],
                        "train/explained_variance": explained_variance(values, batch.returns)})
            if not self.discrete:
                out["train/std"] = self.policy.actor.log_std.detach().exp().mean()
            return out

        self._log_if_due(metrics)
