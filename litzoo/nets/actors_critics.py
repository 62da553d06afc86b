r"""Actor and critic networks for the RL modules: observation encoder, MLPs, policy heads, Q critics.

Every network takes *features*, the output of :class:`litzoo.rl.policy.ObservationEncoder` (one-hot
for a ``Discrete`` observation, the flattened float observation for a ``Box``, optionally whitened
by running statistics), so actor, critic and target networks share one preprocessing. This module
depends on torch only.

* :class:`DeterministicActor` :math:`\mu_\theta(s) = \tanh(\mathrm{MLP}(s)) \in [-1, 1]^k` (DDPG/TD3;
  the caller maps ``[-1, 1]`` to the Box bounds).
* :class:`GaussianActor` :math:`\pi_\theta(a|s) = \mathcal N(m_\theta(s), \mathrm{diag}\,e^{2\log\sigma})`
  with a state-independent ``log_std`` (A2C/PPO, SB3's ``DiagGaussianDistribution``).
* :class:`SquashedGaussianActor` :math:`a = \tanh(u),\ u \sim \mathcal N(m_\theta(s), \sigma_\theta(s)^2)` with the
  log-det correction of the squash (SAC), and :class:`Temperature` (SAC's learned :math:`\alpha`).
* :class:`CategoricalActor` :math:`\pi_\theta(a|s) = \mathrm{softmax}(\ell_\theta(s))_a`.
* :class:`QCritic` :math:`Q_{\phi_e}(s, a)` for continuous actions, ``num_critics`` independent
  members evaluated as one batched matmul per layer (TD3's twin critics cost one kernel, not two), or one
  oneDNN matmul per member where :mod:`litzoo.nets.linear` sends large float32 matmuls.
* :func:`mlp` for state values :math:`V_\phi(s)` (``out_dim=1``) and discrete action values
  :math:`Q_\phi(s, \cdot)` (``out_dim=A``).

Initialisation: PyTorch's default (as CleanRL/SB3 for DDPG/TD3), or orthogonal with gain
:math:`\sqrt 2` on hidden layers and a chosen output gain (0.01 for policy logits/means, 1 for
values), as SB3 and the PPO implementation study (Andrychowicz et al. 2021) use for on-policy methods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from litzoo.nets.linear import Linear, onednn_linear, use_onednn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "leaky_relu": nn.LeakyReLU,
}


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not supported; choose one of {sorted(ACTIVATIONS)}.")


def _check_hidden(hidden_sizes: Sequence[int]) -> tuple[int, ...]:
    hidden = tuple(int(h) for h in hidden_sizes)
    if any(h < 1 for h in hidden) or any(int(h) != h for h in hidden_sizes):
        raise ValueError(f"hidden_sizes={tuple(hidden_sizes)} must be positive integers, e.g. (64, 64).")
    return hidden


def mlp(
    in_dim: int,
    out_dim: int,
    hidden_sizes: Sequence[int] = (64, 64),
    activation: str = "tanh",
    orthogonal_init: bool = False,
    output_gain: float = 1.0,
) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear(out_dim)``; orthogonal init with gain sqrt(2) / ``output_gain`` if asked."""
    _check_activation(activation)
    sizes = (int(in_dim), *_check_hidden(hidden_sizes))
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [Linear(a, b), ACTIVATIONS[activation]()]
    layers.append(Linear(sizes[-1], int(out_dim)))
    net = nn.Sequential(*layers)
    if orthogonal_init:
        linears = [m for m in net if isinstance(m, nn.Linear)]
        for i, layer in enumerate(linears):
            nn.init.orthogonal_(layer.weight, gain=output_gain if i == len(linears) - 1 else math.sqrt(2))
            nn.init.zeros_(layer.bias)
    return net


class DeterministicActor(nn.Module):
    r"""DDPG's :math:`\mu_\theta(s) = \tanh(\mathrm{MLP}(s))`, actions in ``[-1, 1]^act_dim``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int] = (256, 256), activation: str = "relu") -> None:
        super().__init__()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden_sizes, self.activation = _check_hidden(hidden_sizes), activation
        self.net = mlp(obs_dim, act_dim, hidden_sizes, activation)

    def config(self) -> dict[str, Any]:
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "hidden_sizes": list(self.hidden_sizes),
                "activation": self.activation}

    def forward(self, features: Tensor) -> Tensor:
        return torch.tanh(self.net(features))


class GaussianActor(nn.Module):
    r"""Diagonal Gaussian policy with a state-independent ``log_std`` (one learned parameter per action dim)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        log_std_init: float = 0.0,
        orthogonal_init: bool = True,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden_sizes, self.activation = _check_hidden(hidden_sizes), activation
        self.mean = mlp(obs_dim, act_dim, hidden_sizes, activation, orthogonal_init, output_gain=0.01)
        self.log_std = nn.Parameter(torch.full((self.act_dim,), float(log_std_init)))

    def config(self) -> dict[str, Any]:
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "hidden_sizes": list(self.hidden_sizes),
                "activation": self.activation}

    def forward(self, features: Tensor) -> Tensor:
        """The mean action :math:`m_\\theta(s)` (the deterministic action)."""
        return self.mean(features)

    def distribution(self, features: Tensor) -> torch.distributions.Normal:
        mean = self.mean(features)
        # validate_args=False: the support checks cost more than the math for small batches
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean), validate_args=False)

    def sample(self, features: Tensor, generator: torch.Generator | None = None) -> Tensor:
        mean = self.mean(features)
        noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        return mean + self.log_std.exp() * noise

    def sample_with_log_prob(self, features: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        r"""``a = m + sigma * eps`` and :math:`\log\pi(a|s) = \sum_i -\epsilon_i^2/2 - \log\sigma_i - \log(2\pi)/2`.

        The acting path of on-policy methods: computed from the standard-normal ``eps`` directly, without a
        ``Normal`` object per env step (its construction and ``log_prob`` cost ~30 us, more than the 64-64
        network for a few envs); same numbers as :meth:`distribution` + :meth:`log_prob`.
        """
        mean = self.mean(features)
        noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        actions = mean + self.log_std.exp() * noise
        log_probs = (-0.5 * noise.float().pow(2) - self.log_std.float() - 0.5 * math.log(2 * math.pi)).sum(-1)
        return actions, log_probs

    def log_prob_and_entropy(self, features: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        r""":math:`\log\pi(a|s)` per row and the entropy :math:`\sum_i (\tfrac12 + \tfrac12\log 2\pi + \log\sigma_i)` (the
        same for every state: the log-std is state-independent), in float32, without a ``Normal`` object (the
        update path of PPO's minibatches; the same numbers as :meth:`distribution` + :meth:`log_prob`)."""
        log_std = self.log_std.float()
        z = (actions.float() - self.mean(features).float()) * torch.exp(-log_std)
        log_probs = (-0.5 * z.pow(2) - log_std).sum(-1) - 0.5 * math.log(2 * math.pi) * self.act_dim
        return log_probs, (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum()

    @staticmethod
    def log_prob(dist: torch.distributions.Normal, actions: Tensor) -> Tensor:
        return dist.log_prob(actions).sum(-1)  # independent dims: log-densities add

    @staticmethod
    def entropy(dist: torch.distributions.Normal) -> Tensor:
        return dist.entropy().sum(-1)


class SquashedGaussianActor(nn.Module):
    r"""SAC's actor: :math:`a = \tanh(u)`, :math:`u \sim \mathcal N(m_\theta(s), \mathrm{diag}\,\sigma_\theta(s)^2)`, actions in
    ``[-1, 1]^act_dim`` (mapped onto the Box bounds by the caller, as :class:`DeterministicActor`'s).

    Mean and log-std are state-dependent (one shared trunk, one head of ``2 * act_dim``); the log-std is clamped
    to ``[-20, 2]`` (the authors' and SB3's bounds). By the change of variables :math:`a = \tanh(u)` (Haarnoja et
    al. 2018, App. C),

    .. math::  \log\pi(a|s) = \log\mathcal N(u; m, \sigma^2) - \sum_i \log\big(1 - \tanh^2 u_i\big),
               \qquad \log(1 - \tanh^2 u) = 2\big(\log 2 - u - \mathrm{softplus}(-2u)\big),

    the right-hand form exact and finite for large :math:`|u|` (SB3 adds ``1e-6`` inside the log instead).
    ``forward`` is the deterministic action :math:`\tanh(m_\theta(s))`.
    """

    LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int] = (256, 256), activation: str = "relu") -> None:
        super().__init__()
        _check_activation(activation)
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden_sizes, self.activation = _check_hidden(hidden_sizes), activation
        layers: list[nn.Module] = []
        for a, b in zip((self.obs_dim, *self.hidden_sizes[:-1]), self.hidden_sizes):
            layers += [Linear(a, b), ACTIVATIONS[activation]()]
        self.trunk = nn.Sequential(*layers)
        self.head = Linear(self.hidden_sizes[-1] if self.hidden_sizes else self.obs_dim, 2 * self.act_dim)

    def config(self) -> dict[str, Any]:
        return {"obs_dim": self.obs_dim, "act_dim": self.act_dim, "hidden_sizes": list(self.hidden_sizes),
                "activation": self.activation}

    def mean_log_std(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`m_\theta(s)` and the clamped :math:`\log\sigma_\theta(s)` in float32 (the squash needs it under bf16)."""
        out = self.head(self.trunk(features))
        mean, log_std = out.to(torch.promote_types(out.dtype, torch.float32)).chunk(2, dim=-1)  # float64 stays
        return mean, log_std.clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)

    def forward(self, features: Tensor) -> Tensor:
        return torch.tanh(self.mean_log_std(features)[0])

    @staticmethod
    def log_det_tanh(u: Tensor) -> Tensor:
        """:math:`\sum_i \log(1 - \tanh^2 u_i)`, the log-Jacobian of the squash, summed over action dims."""
        return (2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))).sum(-1)

    def sample_with_log_prob(self, features: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """A reparameterised sample :math:`a = \tanh(m + \sigma\epsilon)` and :math:`\log\pi(a|s)` (class docstring)."""
        mean, log_std = self.mean_log_std(features)
        eps = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
        u = mean + log_std.exp() * eps
        log_normal = (-0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.tanh(u), log_normal - self.log_det_tanh(u)

    def sample(self, features: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.sample_with_log_prob(features, generator)[0]


class Temperature(nn.Module):
    r"""SAC's entropy temperature :math:`\alpha = e^{\log\alpha}`, learned in log space (always positive, and
    multiplicative steps) when ``learn``, else a constant."""

    def __init__(self, init: float = 1.0, learn: bool = True) -> None:
        super().__init__()
        if not init > 0:
            raise ValueError(f"the initial temperature must be > 0, got {init!r}.")
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init)), requires_grad=bool(learn))

    def forward(self) -> Tensor:
        return self.log_alpha.exp()


class CategoricalActor(nn.Module):
    r""":math:`\pi_\theta(\cdot|s) = \mathrm{softmax}(\ell_\theta(s))` over ``num_actions`` discrete actions."""

    def __init__(
        self,
        obs_dim: int,
        num_actions: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        orthogonal_init: bool = True,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = int(obs_dim), int(num_actions)
        self.hidden_sizes, self.activation = _check_hidden(hidden_sizes), activation
        self.logits = mlp(obs_dim, num_actions, hidden_sizes, activation, orthogonal_init, output_gain=0.01)

    def config(self) -> dict[str, Any]:
        return {"obs_dim": self.obs_dim, "num_actions": self.act_dim, "hidden_sizes": list(self.hidden_sizes),
                "activation": self.activation}

    def forward(self, features: Tensor) -> Tensor:
        return self.logits(features)

    def distribution(self, features: Tensor) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.logits(features).float(), validate_args=False)

    def sample(self, features: Tensor, generator: torch.Generator | None = None) -> Tensor:
        probs = torch.softmax(self.logits(features).float(), dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    def sample_with_log_prob(self, features: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        r"""``a ~ pi(.|s)`` and :math:`\log\pi(a|s)` from one log-softmax (no ``Categorical`` object per env step).

        Sampled by the Gumbel-max trick, :math:`a = \arg\max_i\, [\log\pi_i - \log(-\log u_i)]` with
        :math:`u_i \sim U(0, 1)`: exact, and half the cost of ``torch.multinomial`` on a few rows.
        """
        log_pi = torch.log_softmax(self.logits(features).float(), dim=-1)
        u = torch.rand(log_pi.shape, device=log_pi.device, generator=generator)
        actions = (log_pi - torch.log(-torch.log(u))).argmax(-1, keepdim=True)
        return actions.squeeze(-1), log_pi.gather(-1, actions).squeeze(-1)

    def log_prob_and_entropy(self, features: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`\log\pi(a|s)` and :math:`\mathcal H[\pi(\cdot|s)]` per row from one log-softmax (float32; no
        ``Categorical`` object; log-probabilities clamped like ``Categorical.entropy``, so no ``0 * -inf``)."""
        log_pi = torch.log_softmax(self.logits(features).float(), dim=-1).clamp(min=torch.finfo(torch.float32).min)
        return log_pi.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1), -(log_pi.exp() * log_pi).sum(-1)

    @staticmethod
    def log_prob(dist: torch.distributions.Categorical, actions: Tensor) -> Tensor:
        return dist.log_prob(actions.long())

    @staticmethod
    def entropy(dist: torch.distributions.Categorical) -> Tensor:
        return dist.entropy()


class EnsembleLinear(nn.Module):
    """``num_members`` independent ``nn.Linear(in_dim, out_dim)`` layers applied as one batched matmul (one oneDNN
    matmul per member where :func:`litzoo.nets.linear.use_onednn` says so: oneDNN has no batched float32 one here).

    Input ``(E, B, in_dim)`` (or ``(B, in_dim)``, shared by all members), output ``(E, B, out_dim)``.
    Each member is initialised as ``nn.Linear`` would be.
    """

    def __init__(self, num_members: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's kaiming_uniform(a=sqrt(5)) bound, and its bias bound
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def _onednn(self, x: Tensor) -> bool:
        if x.ndim == 3 and x.shape[0] != self.weight.shape[0]:
            return False  # baddbmm's shape error
        return use_onednn(x.shape[-2], x.shape[-1], self.weight.shape[-1], x, self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self._onednn(x):  # unbind: one gradient stack for all members, not a zero-filled (E, in, out) per member
            members = zip(self.weight.unbind(0), self.bias.unbind(0))
            return torch.stack([onednn_linear(x if x.ndim == 2 else x[e], w.t(), b[0])
                                for e, (w, b) in enumerate(members)])
        if x.ndim == 2:
            x = x.expand(self.weight.shape[0], *x.shape)
        return torch.baddbmm(self.bias, x, self.weight)

    def member(self, x: Tensor, e: int) -> Tensor:
        """Member ``e`` alone on ``(B, in_dim)`` inputs: ``x @ W_e + b_e``, ``(B, out_dim)``."""
        if self._onednn(x):
            return onednn_linear(x, self.weight[e].t(), self.bias[e, 0])
        return torch.addmm(self.bias[e], x, self.weight[e])


class QCritic(nn.Module):
    r"""``num_critics`` action-value networks :math:`Q_{\phi_e}(s, a)` on ``[features, action]``.

    ``forward`` returns ``(num_critics, B)``; :meth:`q1` evaluates the first member only (the one
    TD3's actor maximises).
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int] = (256, 256), activation: str = "relu",
        num_critics: int = 1,
    ) -> None:
        super().__init__()
        _check_activation(activation)
        if int(num_critics) != num_critics or num_critics < 1:
            raise ValueError(f"num_critics={num_critics!r} must be a positive integer (2 for TD3's twin critics).")
        self.num_critics = int(num_critics)
        sizes = (int(obs_dim) + int(act_dim), *_check_hidden(hidden_sizes), 1)
        self.layers = nn.ModuleList(EnsembleLinear(self.num_critics, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.act = ACTIVATIONS[activation]()

    def forward(self, features: Tensor, actions: Tensor) -> Tensor:
        h = torch.cat([features, actions.to(features.dtype)], dim=-1)
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h.squeeze(-1)

    def q1(self, features: Tensor, actions: Tensor) -> Tensor:
        h = torch.cat([features, actions.to(features.dtype)], dim=-1)
        for i, layer in enumerate(self.layers):
            h = layer.member(h, 0)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h.squeeze(-1)


class QNetwork(nn.Module):
    r"""Action values :math:`Q_\theta(s, \cdot) \in \mathbb R^{A}` of a discrete action space (DQN).

    ``dueling=False``: one MLP ``features -> hidden -> A`` (Mnih et al. 2015). ``dueling=True`` (Wang et al.
    2016, "Dueling Network Architectures for Deep RL", eq. 9): the hidden layers are shared and two
    linear heads give :math:`V(s)` and :math:`A(s, a)`,

    .. math::  Q(s, a) = V(s) + A(s, a) - \frac1{|\mathcal A|} \sum_{a'} A(s, a'),

    so that :math:`V(s) = \mathrm{mean}_a Q(s, a)` (the mean makes V and A identifiable).
    """

    def __init__(
        self, obs_dim: int, num_actions: int, hidden_sizes: Sequence[int] = (64, 64), activation: str = "relu",
        dueling: bool = False,
    ) -> None:
        super().__init__()
        _check_activation(activation)
        self.obs_dim, self.act_dim = int(obs_dim), int(num_actions)
        self.hidden_sizes, self.activation, self.dueling = _check_hidden(hidden_sizes), activation, bool(dueling)
        if not self.dueling:
            self.q = mlp(obs_dim, num_actions, self.hidden_sizes, activation)
            return
        layers: list[nn.Module] = []
        for a, b in zip((self.obs_dim, *self.hidden_sizes[:-1]), self.hidden_sizes):
            layers += [Linear(a, b), ACTIVATIONS[activation]()]
        self.trunk = nn.Sequential(*layers)
        last = self.hidden_sizes[-1] if self.hidden_sizes else self.obs_dim
        self.value = Linear(last, 1)
        self.advantage = Linear(last, self.act_dim)

    def config(self) -> dict[str, Any]:
        return {"obs_dim": self.obs_dim, "num_actions": self.act_dim, "hidden_sizes": list(self.hidden_sizes),
                "activation": self.activation, "dueling": self.dueling}

    def forward(self, features: Tensor) -> Tensor:
        """``(B, obs_dim)`` features -> ``(B, A)`` action values."""
        if not self.dueling:
            return self.q(features)
        h = self.trunk(features)
        advantage = self.advantage(h)
        return self.value(h) + advantage - advantage.mean(dim=-1, keepdim=True)


ACTORS: dict[str, type[nn.Module]] = {
    "deterministic": DeterministicActor,
    "gaussian": GaussianActor,
    "squashed_gaussian": SquashedGaussianActor,
    "categorical": CategoricalActor,
}
