r"""Deep Q-network (DQN) with the Double-DQN target and the dueling architecture as options.

Mnih et al. 2015, "Human-level control through deep reinforcement learning" (DQN);
van Hasselt, Guez & Silver 2016, "Deep Reinforcement Learning with Double Q-learning" (Double DQN);
Wang et al. 2016, "Dueling Network Architectures for Deep Reinforcement Learning" (dueling).
Zhao, *Mathematical Foundations of Reinforcement Learning*, Sec. 8.4 (deep Q-learning).

An action-value network :math:`Q_\theta(s, \cdot)` learns from a replay buffer :math:`\mathcal D` of
transitions :math:`(s, a, r, s', d)` against a periodically copied target network :math:`Q_{\theta^-}`:

.. math::

    y &= r + \gamma\,(1 - d)\, \max_{a'} Q_{\theta^-}(s', a')
        \qquad\text{(DQN)} \\
    y &= r + \gamma\,(1 - d)\, Q_{\theta^-}\big(s', \arg\max_{a'} Q_\theta(s', a')\big)
        \qquad\text{(Double DQN: the online net picks, the target net values)} \\
    L(\theta) &= \mathbb E_{\mathcal D}\, \ell_\delta\big(Q_\theta(s, a) - y\big), \qquad
    \ell_\delta(x) = \begin{cases} \tfrac12 x^2 & |x| \le \delta \\ \delta\,(|x| - \tfrac12\delta) & \text{else} \end{cases}

(the Huber loss; Mnih et al.'s clipping of the TD error to :math:`[-1, 1]` is :math:`\delta = 1`), with
``d`` = *terminated*: a transition cut by a time limit is stored with ``d = 0`` and its real final
observation as :math:`s'` (:func:`litzoo.rl.collect.step_into_replay` and
:class:`litzoo.rl.buffers.ReplayBuffer`), so it bootstraps. Every ``target_update_interval`` env steps
:math:`\theta^- \leftarrow \tau\theta + (1 - \tau)\theta^-` (``tau = 1``: the paper's hard copy).
The dueling head (:class:`litzoo.rl.policy.QNetwork`) is
:math:`Q(s, a) = V(s) + A(s, a) - \mathrm{mean}_{a'} A(s, a')`.

Exploration is :math:`\epsilon`-greedy with uniform random actions for the first ``learning_starts``
env steps and a linear schedule over the total budget :math:`T` of env steps,

.. math::  \epsilon(t) = \epsilon_0 + (\epsilon_1 - \epsilon_0)\,\min\!\big(1,\; t / (f\,T)\big),

``f = exploration_fraction`` (Stable-Baselines3's ``get_linear_fn``). Every ``train_freq`` env steps
(after ``learning_starts``) comes a block of ``gradient_steps`` gradient steps on fresh replay
minibatches (SB3's ``train_freq``/``gradient_steps``). The target copy happens while collecting, as in
SB3: with ``train_freq=256, target_update_interval=10`` every block starts from a fresh copy.

Implementation: one Lightning batch = one block, sampled with one ``randint`` as a
``(gradient_steps, batch_size)`` :class:`~litzoo.rl.buffers.ReplayBatch`; ``training_step`` runs its
gradient steps (one ``optimizer.step()`` each, so ``trainer.global_step`` and ``max_steps`` still count
gradient steps; the last block is cut at ``max_steps``). Lightning's per-batch machinery then runs
once per block instead of once per gradient step, which was ~30 % of an update of the zoo's CartPole
network on CPU. AdamW uses the fused kernel also on CPU (:func:`litzoo.optim.fused_or_foreach`).

The exported policy (``kind="greedy_q"`` of :mod:`litzoo.rl.policy`) is the greedy
:math:`\arg\max_a Q_\theta(s, a)`: ``litzoo.load_policy(dir).predict(obs)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from litzoo.bases.rl import RLModule, check_replay_sizes
from litzoo.checks import (
    check_non_negative, check_non_negative_int, check_positive, check_positive_or_none, check_positive_int,
    check_range,
)
from litzoo.nets.actors_critics import QNetwork
from litzoo.optim import adamw_for_networks
from litzoo.rl.buffers import ReplayBatch
from litzoo.rl.collect import EnvRunner, step_into_replay
from litzoo.rl.policy import Policy, make_encoder
from litzoo.rl.utils import polyak_update


class DQN(RLModule):
    """DQN (Mnih et al. 2015), with ``double_q`` (van Hasselt et al. 2016) and ``dueling`` (Wang et al. 2016).

    Train it with a :class:`~litzoo.datamodules.gym.GymDataModule` of an env with a ``Discrete`` action
    space (observations: ``Box``, or ``Discrete`` state indices, which are one-hot encoded). One batch =
    one block of ``gradient_steps`` gradient steps; ``trainer.max_steps`` counts gradient steps (give
    ``ModelCheckpoint(every_n_train_steps=...)`` a multiple of ``gradient_steps``). All env-step counts
    are per process: the env steps of all of that process's ``num_envs`` envs (the datamodule's), so
    under DDP every rank runs this schedule on its own envs.

    Args:
        observation_space, action_space: space specs (:func:`litzoo.rl.policy.space_to_spec`) or gymnasium
            spaces; ``None``: taken from the datamodule in ``setup`` (then saved in the hyperparameters).
        hidden_sizes, activation: the Q network's MLP; ``dueling``: value and advantage heads on it.
        lr, weight_decay: AdamW (``weight_decay=0``: Adam, as SB3).
        buffer_size, batch_size: replay capacity (transitions) and minibatch size.
        learning_starts: env steps of uniform random actions before the first gradient step.
        gamma: discount.
        train_freq: env steps between blocks of gradient steps; gradient_steps: gradient steps per block.
        target_update_interval: env steps between target updates; tau: Polyak weight of the online
            network in that update (1.0: hard copy, the paper's).
        exploration_fraction, exploration_initial_eps, exploration_final_eps: the linear epsilon schedule
            (epsilon reaches its final value after ``exploration_fraction * total_env_steps`` env steps).
        total_env_steps: the budget ``T`` of the schedule. ``None``: derived from the trainer when
            training starts (``max_steps`` gradient steps or ``max_epochs * batches_per_epoch`` blocks,
            whichever ends first, converted with ``train_freq``, ``gradient_steps`` and ``learning_starts``;
            see :meth:`env_steps_for_updates`). Set it to match an SB3 budget exactly.
        huber_delta: the Huber loss's delta (1.0: SB3's ``smooth_l1_loss``).
        double_q: Double-DQN target; dueling: dueling head.
        max_grad_norm: clip the gradient norm (SB3's default 10; ``None``: no clipping).
        save_replay_buffer: also store the replay buffer in checkpoints (exact resume, larger files).
        log_every_n_env_steps: how often loss, mean Q, epsilon and episode statistics are logged.
        seed: seeds exploration and replay sampling (offset by rank). ``None`` (default): the global
            seed (``seed_everything`` / ``--seed_everything``, else 0), saved once taken.
    """

    ACTION_SPACES = ("Discrete",)  # it takes max_a Q(s, a) over a finite set
    ACTION_SPACE_HINT = ("For continuous actions use DDPG or TD3 (litzoo.modules.ddpg.DDPG / litzoo.modules.ddpg.TD3), "
                         "or discretise the actions with a wrapper.")

    def __init__(
        self,
        observation_space: Optional[dict] = None,
        action_space: Optional[dict] = None,
        hidden_sizes: tuple[int, ...] = (64, 64),
        activation: str = "relu",
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        buffer_size: int = 1_000_000,
        batch_size: int = 32,
        learning_starts: int = 100,
        gamma: float = 0.99,
        train_freq: int = 4,
        gradient_steps: int = 1,
        target_update_interval: int = 10_000,
        tau: float = 1.0,
        exploration_fraction: float = 0.1,
        exploration_initial_eps: float = 1.0,
        exploration_final_eps: float = 0.05,
        total_env_steps: Optional[int] = None,
        huber_delta: float = 1.0,
        double_q: bool = False,
        dueling: bool = False,
        max_grad_norm: Optional[float] = 10.0,
        save_replay_buffer: bool = False,
        log_every_n_env_steps: int = 1000,
        seed: Optional[int] = None,
    ) -> None:
        super().__init__()
        for name, value in (("gamma", gamma), ("exploration_fraction", exploration_fraction),
                            ("exploration_initial_eps", exploration_initial_eps),
                            ("exploration_final_eps", exploration_final_eps)):
            check_range(name, value, 0, 1)
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"tau={tau!r} must be in (0, 1] (1.0 = hard copy of the online network).")
        check_positive("lr", lr)
        check_positive("huber_delta", huber_delta)
        for name, value in (("batch_size", batch_size), ("buffer_size", buffer_size), ("train_freq", train_freq),
                            ("gradient_steps", gradient_steps), ("target_update_interval", target_update_interval),
                            ("log_every_n_env_steps", log_every_n_env_steps)):
            check_positive_int(name, value)
        check_non_negative_int("learning_starts", learning_starts)
        check_replay_sizes(batch_size, buffer_size, learning_starts)
        check_non_negative("weight_decay", weight_decay)
        if total_env_steps is not None and (int(total_env_steps) != total_env_steps or total_env_steps < 1):
            raise ValueError(f"total_env_steps={total_env_steps!r} must be a positive integer or None (from the trainer).")
        check_positive_or_none("max_grad_norm", max_grad_norm, "no clipping")
        self.save_hyperparameters()
        self.epsilon = float(exploration_initial_eps)
        self._total_env_steps: int | None = None if total_env_steps is None else int(total_env_steps)
        self._init_rl_state(observation_space, action_space)

    # ----------------------------------------------------------------- networks
    def _build(self, obs_spec: dict[str, Any], act_spec: dict[str, Any]) -> None:
        h = self.hparams
        encoder = make_encoder(obs_spec)  # one-hot for a Discrete state index, flatten for a Box
        self.num_actions = int(act_spec["n"])
        q_net = QNetwork(encoder.features_dim, self.num_actions, h.hidden_sizes, h.activation, dueling=h.dueling)
        self.policy = Policy(encoder, q_net, "greedy_q", obs_spec, act_spec)
        self.q_target = copy.deepcopy(q_net).requires_grad_(False)

    @property
    def q_net(self) -> QNetwork:
        """The online network :math:`Q_\\theta` (stored once, as ``policy.actor``)."""
        return self.policy.actor

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return adamw_for_networks([(self.q_net, self.hparams.lr)], self.hparams.weight_decay)

    # ----------------------------------------------------------------- exploration schedule
    def env_steps_for_updates(self, num_updates: int, num_envs: int = 1) -> int:
        """Env steps (per process) after which ``num_updates`` gradient steps have been served.

        Blocks of ``gradient_steps`` start at the first multiple of ``train_freq`` that is
        ``>= learning_starts`` and then every ``train_freq`` env steps (exact when ``num_envs``
        divides ``train_freq``; otherwise within one vector step).
        """
        h = self.hparams
        step = max(int(num_envs), 1)
        first = max(math.ceil(h.learning_starts / h.train_freq), 1) * h.train_freq
        first = math.ceil(first / step) * step
        blocks = max(math.ceil(num_updates / h.gradient_steps), 1)
        return first + (blocks - 1) * h.train_freq

    def exploration_rate(self, env_steps: int) -> float:
        """:math:`\\epsilon` after ``env_steps`` env steps (the linear schedule of the module docstring)."""
        h = self.hparams
        if h.exploration_fraction == 0.0:
            return float(h.exploration_final_eps)
        if self._total_env_steps is None:
            raise ValueError(
                "the epsilon schedule needs the total number of env steps: pass total_env_steps= to DQN, or train "
                "with a finite trainer budget (max_steps or max_epochs) so it is derived when training starts."
            )
        progress = min(1.0, env_steps / (h.exploration_fraction * self._total_env_steps))
        return float(h.exploration_initial_eps + (h.exploration_final_eps - h.exploration_initial_eps) * progress)

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.hparams.total_env_steps is None:
            trainer, h = self.trainer, self.hparams
            updates = math.inf if trainer.max_steps is None or trainer.max_steps < 0 else trainer.max_steps
            if trainer.max_epochs is not None and trainer.max_epochs >= 0:  # one batch = one block
                updates = min(updates, trainer.max_epochs * trainer.num_training_batches * h.gradient_steps)
            num_envs = getattr(getattr(trainer, "datamodule", None), "num_envs", 1)
            self._total_env_steps = None if math.isinf(updates) else self.env_steps_for_updates(int(updates), num_envs)

    # ----------------------------------------------------------------- acting
    @torch.no_grad()
    def generate_batches(self, env: EnvRunner) -> Iterator[ReplayBatch]:
        """Act epsilon-greedily, store, sync the target; every ``train_freq`` env steps yield a block:
        ``gradient_steps`` minibatches as one ``(gradient_steps, batch_size, ...)`` :class:`ReplayBatch`."""
        h = self.hparams
        self._env = env
        self._init_generator()
        generator, buffer = self._generator, self._replay_buffer(env.num_envs, (), torch.long)
        encoder, q_net, num_envs = self.policy.encoder, self.q_net, env.num_envs
        polyak_lists = ([*q_net.parameters()], [*self.q_target.parameters()])
        # Counters live in locals between blocks (setting a Module attribute costs ~2 us, twice per env
        # step); self.env_steps / self.epsilon are written back before every yield, where Lightning,
        # callbacks and checkpoints read them.
        env_steps, device = self.env_steps, self.device
        while True:
            before = env_steps
            epsilon = 1.0 if before < h.learning_starts else self.exploration_rate(before)
            # One draw per env step: (explore?, which random action) for every env, as Python floats: with one
            # or a few envs, list arithmetic costs less than the tensor ops it replaces.
            u = torch.rand(2 * num_envs, generator=generator, device=device).tolist()
            explore = [x < epsilon for x in u[:num_envs]]
            random_actions = [int(x * self.num_actions) for x in u[num_envs:]]  # uniform random action
            if all(explore):  # skip the forward pass when every env explores
                actions = torch.tensor(random_actions, device=device)
            else:
                actions = q_net(encoder(env.obs)).argmax(-1)
                if any(explore):
                    actions = torch.where(torch.tensor(explore, device=device),
                                          torch.tensor(random_actions, device=device), actions)
            step_into_replay(env, buffer, actions, self.policy.to_env_action(actions))
            env_steps = before + num_envs
            if env_steps // h.target_update_interval > before // h.target_update_interval:
                polyak_update(*polyak_lists, tau=h.tau)  # tau = 1: theta^- <- theta
            blocks = env_steps // h.train_freq - before // h.train_freq  # 1 per train_freq env steps
            if blocks and self._learning_started(env_steps):
                self.env_steps, self.epsilon = env_steps, epsilon
                n = blocks * h.gradient_steps
                sample = buffer.sample(n * h.batch_size, generator=generator)  # one draw for the whole block
                yield ReplayBatch(*(x.view(n, h.batch_size, *x.shape[1:]) for x in sample))

    # ----------------------------------------------------------------- update
    def td_loss(self, batch: ReplayBatch) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss, q, y)``: the Huber loss of :math:`Q_\\theta(s, a)` against the (Double-)DQN target ``y``."""
        encoder = self.policy.encoder
        discounts = self.hparams.gamma * (1.0 - batch.dones)  # dones = terminated only
        y = self.td_targets(encoder(batch.next_obs), batch.rewards, discounts)
        return self._td_loss(encoder(batch.obs), batch.actions, y)

    @torch.no_grad()
    def td_targets(self, next_features: Tensor, rewards: Tensor, discounts: Tensor) -> Tensor:
        """:math:`y = r + \\gamma (1 - d) Q_{\\theta^-}(s', a')`, ``a'`` greedy for :math:`Q_{\\theta^-}` (DQN) or for
        :math:`Q_\\theta` (Double DQN); ``discounts`` = :math:`\\gamma (1 - d)`."""
        q_next_all = self.q_target(next_features).float()
        if self.hparams.double_q:  # the online network picks a', the target network values it
            a_next = self.q_net(next_features).argmax(dim=-1, keepdim=True)
            q_next = q_next_all.gather(1, a_next).squeeze(1)
        else:
            q_next = q_next_all.max(dim=-1).values
        return rewards + discounts * q_next

    def _td_loss(self, features: Tensor, actions: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q = self.q_net(features).float().gather(1, actions.long().unsqueeze(1)).squeeze(1)
        return F.huber_loss(q, y, delta=self.hparams.huber_delta), q, y

    def training_step(self, batch: ReplayBatch, batch_idx: int) -> None:
        """One block: a gradient step on each of the ``batch.obs.shape[0]`` minibatches, in order."""
        h, trainer = self.hparams, self.trainer
        optimizer, params = self.optimizers(), self._parameters_list()
        steps, batch_size = batch.obs.shape[:2]
        if trainer.max_steps is not None and trainer.max_steps >= 0:  # end exactly at max_steps gradient steps
            steps = min(steps, trainer.max_steps - trainer.global_step)
        # Per block, not per minibatch: encode all observations and form gamma * (1 - done) in one op each.
        encoder = self.policy.encoder
        features = encoder(batch.obs[:steps].flatten(0, 1)).unflatten(0, (steps, batch_size)).unbind(0)
        next_features = encoder(batch.next_obs[:steps].flatten(0, 1))
        discounts = h.gamma * (1.0 - batch.dones[:steps].flatten())  # dones = terminated only
        rewards = batch.rewards[:steps].flatten()
        if h.double_q:  # a' comes from the online network, which moves every step: targets step by step
            targets = None
        else:
            # Q^- is only synced between env steps, so it is the same for every step of the block: compute all
            # targets up front, in forwards of ~512 rows (~25% less time per row than 64-row ones on a CPU).
            rows = max(1, 512 // batch_size) * batch_size
            targets = torch.cat([self.td_targets(*chunk) for chunk in zip(
                next_features.split(rows), rewards.split(rows), discounts.split(rows))]).view(steps, batch_size)
        actions = batch.actions.unbind(0)
        for i in range(steps):
            if targets is None:
                minibatch = slice(i * batch_size, (i + 1) * batch_size)
                y = self.td_targets(next_features[minibatch], rewards[minibatch], discounts[minibatch])
            else:
                y = targets[i]
            loss, q, _ = self._td_loss(features[i], actions[i], y)
            self._backward_and_step(optimizer, loss, params)
        self.num_updates += steps

        if steps:  # (a block cut to 0 steps at max_steps has no loss to log)
            self._log_if_due(lambda: {"train/loss": loss.detach(), "train/q": q.detach().mean(),
                                      "train/epsilon": self.epsilon})
