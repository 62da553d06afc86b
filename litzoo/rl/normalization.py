r"""Running statistics and the observation / return normalisers built on them.

:class:`RunningMeanStd` keeps the mean and (population) variance of everything it has seen, merging
each batch with the parallel update of Chan, Golub & LeVeque ("Updating formulae and a pairwise
algorithm for computing sample variances", 1979), the batched form of Welford's (1962) algorithm.
For counts :math:`n_a, n_b`, means :math:`\mu_a, \mu_b` and variances :math:`\sigma_a^2, \sigma_b^2`,
with :math:`\delta = \mu_b - \mu_a` and :math:`n = n_a + n_b`:

.. math::

    \mu = \mu_a + \delta \frac{n_b}{n}, \qquad
    \sigma^2 = \frac{n_a \sigma_a^2 + n_b \sigma_b^2 + \delta^2 \, n_a n_b / n}{n}.

:class:`ObservationNormalizer` whitens observations, ``clip((o - mu) / sqrt(sigma^2 + eps))``.
:class:`ReturnNormalizer` scales rewards by the standard deviation of the running discounted
return :math:`G_t = \gamma G_{t-1} + r_t` (not of the rewards themselves, and without subtracting a
mean, which would change the optimal policy), as in OpenAI baselines' / SB3's ``VecNormalize``
(Engstrom et al., "Implementation Matters in Deep Policy Gradients", ICLR 2020, call it reward scaling).

All three are ``torch.nn.Module`` s holding their statistics as buffers, so they move with ``.to()``
and are saved in the ``state_dict`` of whatever module owns them (a LightningModule's checkpoint
included). Statistics are kept in float64 so that long runs do not drift.

Under ``torch.distributed`` (DDP, every rank stepping its own envs) :meth:`RunningMeanStd.update`
merges the batch moments of all ranks with one all-reduce of ``(n, sum x, sum x^2)``, so every rank
normalises with the same statistics and the policies, whose gradients are averaged, stay identical.
Every rank must then call ``update`` the same number of times (the collection loop does: ranks serve
equal batch counts).

On the CPU the per-env-step work (a batch of a few observations or rewards) runs in numpy on views of
the buffers: torch's per-operation dispatch (~3 us) dominates tensors this small, and the two normalisers
cost ~130 us of a ~450 us PPO vector step on Pendulum with 4 envs, ~80 us in numpy. The merge is the same
float64 operations in the same order (tested to the bit); a batch's own mean and variance can differ from
torch's in the last bit (the two reduce in another order). Tracing, export, compile and vmap take the torch
path (they must see torch operations).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _numpy_views(stats: Tensor, *tensors: Tensor) -> list[np.ndarray] | None:
    """numpy arrays sharing the memory of ``stats`` (a float64 statistic) and ``tensors`` when all are plain CPU
    tensors outside autograd that numpy can view, else ``None``: the torch path (another device, a tensor that
    needs a gradient, bf16, and under ``torch.jit.trace`` / ``torch.export`` / ``torch.compile`` / ``vmap``, which
    must see torch operations, not the data)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return None
    if stats.dtype != torch.float64:
        return None  # the merge is written for float64 statistics (a .float()-ed module keeps torch's)
    for t in (stats, *tensors):
        if (type(t) is not torch.Tensor or t.device.type != "cpu" or t.requires_grad or t.dtype == torch.bfloat16
                or t.is_neg() or t.is_conj()):
            return None
    return [stats.numpy(), *(t.numpy() for t in tensors)]


class RunningMeanStd(nn.Module):
    """Running mean and population variance (ddof=0) over the leading (batch) dimension.

    Before the first update ``mean = 0`` and ``var = 1``, so normalising is then the identity.
    ``sync_ranks`` (default True) merges every update across ``torch.distributed`` ranks when a process
    group is initialised (see the module docstring).
    """

    mean: Tensor
    var: Tensor
    count: Tensor

    def __init__(self, shape: Sequence[int] = (), sync_ranks: bool = True) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.sync_ranks = sync_ranks
        self.register_buffer("mean", torch.zeros(self.shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(self.shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @property
    def std(self) -> Tensor:
        return self.var.sqrt()

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Merge a batch ``x`` of shape (B, *shape) into the statistics."""
        x = torch.as_tensor(x).to(device=self.mean.device, dtype=torch.float64)
        if tuple(x.shape[1:]) != self.shape or x.shape[0] == 0:
            raise ValueError(
                f"update() got shape {tuple(x.shape)}; expected a non-empty batch (B, *{self.shape})."
            )
        if self.sync_ranks and _world_size() > 1:
            # Pool the raw sums (count, sum x, sum x^2) of all ranks: one all-reduce per update.
            n = torch.full((1,) + self.shape, float(x.shape[0]), dtype=torch.float64, device=x.device)
            sums = torch.stack([n[0], x.sum(dim=0), x.square().sum(dim=0)])
            dist.all_reduce(sums)
            count, mean = sums[0].flatten()[0], sums[1] / sums[0]
            var = (sums[2] / sums[0] - mean.square()).clamp_min(0.0)
            self.update_from_moments(mean, var, int(count.item()))
            return
        views = _numpy_views(self.mean, self.var, self.count, x)
        if views is not None:
            xs = views[3]
            with np.errstate(all="ignore"):  # inf/nan propagate silently, as in torch
                self._merge(*views[:3], xs.mean(axis=0), xs.var(axis=0), float(xs.shape[0]))
            return
        self.update_from_moments(x.mean(dim=0), x.var(dim=0, unbiased=False), x.shape[0])

    @torch.no_grad()
    def update_from_moments(self, batch_mean: Tensor, batch_var: Tensor, batch_count: int) -> None:
        """Chan et al.'s parallel merge of (mean, var, count) with a batch's moments."""
        n_b = torch.as_tensor(float(batch_count), dtype=torch.float64, device=self.count.device)
        self._merge(self.mean, self.var, self.count, batch_mean.to(self.mean), batch_var.to(self.var), n_b)

    @staticmethod
    def _merge(mean, var, count, batch_mean, batch_var, n_b):  # noqa: ANN001, ANN205 - numpy arrays or tensors alike
        """The merge in place, written once for numpy arrays and tensors (same operations, same order)."""
        n_a = count + 0.0  # a copy: ``count`` is overwritten below
        n = n_a + n_b
        delta = batch_mean - mean
        m2 = var * n_a + batch_var * n_b + delta * delta * n_a * n_b / n
        mean += delta * n_b / n
        var[...] = m2 / n
        count[...] = n

    def normalize(self, x: Tensor, epsilon: float = 1e-8, clip: float | None = None) -> Tensor:
        """``(x - mean) / sqrt(var + epsilon)``, optionally clipped to ``[-clip, clip]``; keeps x's dtype
        (float32 for integer inputs)."""
        x = torch.as_tensor(x)
        out_dtype = x.dtype if x.is_floating_point() else torch.float32
        views = _numpy_views(self.mean, self.var, x)
        if views is not None:
            mean, var, xs = views
            with np.errstate(all="ignore"):
                y = (xs.astype(np.float64) - mean) / np.sqrt(var + epsilon)
                if clip is not None:
                    y = np.clip(y, -clip, clip)
            return torch.from_numpy(y).to(out_dtype)
        y = (x.to(self.mean) - self.mean) / (self.var + epsilon).sqrt()
        if clip is not None:
            y = y.clamp(-clip, clip)
        return y.to(out_dtype)


class ObservationNormalizer(nn.Module):
    """Whitens observations with running statistics: ``clip((obs - mean) / sqrt(var + epsilon))``.

    Call :meth:`update` with each batch of new (raw) observations during training only, and
    :meth:`normalize` (or the module itself) wherever the policy sees an observation.
    """

    def __init__(self, shape: Sequence[int], clip: float | None = 10.0, epsilon: float = 1e-8) -> None:
        super().__init__()
        if clip is not None and not clip > 0:
            raise ValueError(f"clip={clip!r} must be > 0, or None to disable clipping.")
        self.clip, self.epsilon = clip, epsilon
        self.rms = RunningMeanStd(shape)

    def update(self, obs: Tensor) -> None:
        self.rms.update(obs)

    def normalize(self, obs: Tensor) -> Tensor:
        return self.rms.normalize(obs, self.epsilon, self.clip)

    def forward(self, obs: Tensor) -> Tensor:
        return self.normalize(obs)


class ReturnNormalizer(nn.Module):
    r"""Scales rewards by the running std of the discounted return (reward scaling, ``VecNormalize``).

    Per vector-env step call :meth:`update` with the raw rewards and the episode-end flags
    (``terminated | truncated``), then :meth:`normalize` the same rewards:
    ``clip(r / sqrt(var(G) + epsilon))``. The per-env running returns ``G`` are transient and not
    saved in the ``state_dict``; the statistics are.
    """

    returns: Tensor

    def __init__(self, num_envs: int, gamma: float, clip: float | None = 10.0, epsilon: float = 1e-8) -> None:
        super().__init__()
        if int(num_envs) != num_envs or num_envs < 1:
            raise ValueError(f"num_envs={num_envs!r} must be a positive integer.")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma={gamma!r} must be in [0, 1]; use the agent's discount factor.")
        if clip is not None and not clip > 0:
            raise ValueError(f"clip={clip!r} must be > 0, or None to disable clipping.")
        self.num_envs, self.gamma, self.clip, self.epsilon = int(num_envs), float(gamma), clip, epsilon
        self.rms = RunningMeanStd(())
        self.register_buffer("returns", torch.zeros(self.num_envs, dtype=torch.float64), persistent=False)

    @torch.no_grad()
    def update(self, rewards: Tensor, dones: Tensor) -> None:
        """``G <- gamma * G + r``; merge ``G`` into the statistics; restart ``G`` where an episode ended."""
        rewards = torch.as_tensor(rewards).to(self.returns)
        dones = torch.as_tensor(dones).to(device=self.returns.device, dtype=torch.bool)
        if rewards.shape != (self.num_envs,) or dones.shape != (self.num_envs,):
            raise ValueError(
                f"rewards and dones must have shape ({self.num_envs},); got {tuple(rewards.shape)} and {tuple(dones.shape)}."
            )
        views = _numpy_views(self.returns, rewards, dones)
        if views is not None:  # numpy on the CPU: see the module docstring
            returns, r, d = views
            with np.errstate(all="ignore"):
                returns *= self.gamma
                returns += r
            self.rms.update(self.returns)  # one sample per env
            returns[d] = 0.0
            return
        self.returns.mul_(self.gamma).add_(rewards)
        self.rms.update(self.returns)
        self.returns.masked_fill_(dones, 0.0)

    def normalize(self, rewards: Tensor) -> Tensor:
        rewards = torch.as_tensor(rewards)
        out_dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
        views = _numpy_views(self.rms.var, rewards)
        if views is not None:
            var, r = views
            with np.errstate(all="ignore"):
                scaled = r.astype(np.float64) / np.sqrt(var + self.epsilon)
                if self.clip is not None:
                    scaled = np.clip(scaled, -self.clip, self.clip)
            return torch.from_numpy(scaled).to(out_dtype)
        scaled = rewards.to(self.rms.var) / (self.rms.var + self.epsilon).sqrt()
        if self.clip is not None:
            scaled = scaled.clamp(-self.clip, self.clip)
        return scaled.to(out_dtype)

    def forward(self, rewards: Tensor) -> Tensor:
        return self.normalize(rewards)
