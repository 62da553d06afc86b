"""Small networks that diffusers does not provide: a time-conditioned MLP denoiser for low-dim data."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of (possibly fractional) timesteps, as in DDPM's UNet."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class TimeMLP(nn.Module):
    """``f(x, t, y)``: an MLP on ``[x, emb(t) (+ emb(y))]`` with residual SiLU blocks.

    Enough for 2-D toy distributions, where a UNet makes no sense. ``num_classes`` adds a label
    embedding with one extra "null" row for classifier-free guidance.
    """

    def __init__(self, data_dim: int = 2, hidden: int = 128, depth: int = 3, time_dim: int = 64,
                 num_classes: int | None = None) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.class_embedding = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        self.inp = nn.Linear(data_dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
            for _ in range(depth)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, data_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        cond = self.time_mlp(sinusoidal_embedding(t, self.time_dim))
        if self.class_embedding is not None and y is not None:
            cond = cond + self.class_embedding(y)
        h = self.inp(x) + cond
        for block in self.blocks:
            h = h + block(h + cond)
        return self.out(h)
