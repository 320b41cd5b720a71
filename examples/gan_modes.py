"""Mode coverage of a GAN on 8 Gaussians in a ring: the non-saturating and the minimax
generator losses side by side (docs/img/gan_modes.png).

    python examples/gan_modes.py
"""
from __future__ import annotations

import math

import matplotlib
import torch

import probgen as pg
from probgen.models import GAN

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def ring(n: int, seed: int = 0, modes: int = 8, radius: float = 2.0, sd: float = 0.05):
    g = torch.Generator().manual_seed(seed)
    angles = 2 * math.pi * torch.arange(modes) / modes
    centres = radius * torch.stack([torch.cos(angles), torch.sin(angles)], -1)
    return centres[torch.randint(modes, (n,), generator=g)] + sd * torch.randn(n, 2, generator=g), centres


def main() -> None:
    torch.set_num_threads(1)
    x, centres = ring(8000)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    axes[0].scatter(x[:2000, 0], x[:2000, 1], s=2, alpha=0.4)
    axes[0].set_title("data")
    for ax, loss in zip(axes[1:], ("non-saturating", "minimax")):
        fit = pg.fit(GAN(2, latent_dim=2, hidden=(64, 64)), x, steps=3000, seed=0, lr=1e-3,
                     gradient_penalty=0.1, loss=loss, progress=False)
        s = fit.sample(4000, seed=0)
        near = torch.cdist(s, centres).min(1)
        counts = torch.bincount(near.indices[near.values < 0.5], minlength=8)
        ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.4, color="C1")
        ax.set_title(f"{loss}: {int((counts >= 0.025 * len(s)).sum())}/8 modes", fontsize=10)
        print(loss, "samples per mode:", counts.tolist())
    for ax in axes:
        ax.set_xlim(-2.8, 2.8)
        ax.set_ylim(-2.8, 2.8)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig("docs/img/gan_modes.png", dpi=90)


if __name__ == "__main__":
    main()
