"""The minibatch loop the neural engines share (flow, diffusion, adversarial, energy)."""
from __future__ import annotations

from typing import Iterator

import torch

from probgen.random import generator


def minibatches(x: torch.Tensor, batch_size: int, steps: int, seed: int | None) -> Iterator[torch.Tensor]:
    """``steps`` minibatches of ``x`` (N, ...), reshuffled each epoch with a seeded generator."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    g = generator(seed)
    n = len(x)
    batch_size = min(batch_size, n)
    perm, pos = torch.randperm(n, generator=g), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        yield x[perm[pos:pos + batch_size]]
        pos += batch_size
