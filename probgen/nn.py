"""Small default networks for the deep declarations (users may pass their own modules)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.SiLU, out_activation: nn.Module | None = None) -> nn.Sequential:
    """A multilayer perceptron ``sizes[0] -> ... -> sizes[-1]`` with ``activation`` between layers."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    if out_activation is not None:
        layers.append(out_activation)
    return nn.Sequential(*layers)


def copy_params(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of ``module``'s state dict: the ``params`` of a neural declaration."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def load_params(module: nn.Module, params: dict[str, torch.Tensor]) -> None:
    """Load ``params`` (possibly a subset, e.g. a user's ``init=``) into ``module``."""
    module.load_state_dict({**module.state_dict(), **params})


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer steps ``t`` (B,) -> (B, dim) (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class TimeMLP(nn.Module):
    """A denoiser ε_θ(x_t, t): an MLP on ``[x_t, embed(t)]``. Shapes: x (B, D), t (B,) -> (B, D)."""

    def __init__(self, dim: int, hidden: Sequence[int] = (128, 128), t_dim: int = 32):
        super().__init__()
        self.t_dim = t_dim
        self.net = mlp([dim + t_dim, *hidden, dim])

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, timestep_embedding(t, self.t_dim)], dim=-1))
