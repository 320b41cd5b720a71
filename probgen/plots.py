"""Pictures shared by the families: sample grids, 2-D scatters, training curves."""
from __future__ import annotations

import math
from typing import Any

import torch


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_samples_png(x: Any, path: str, *, title: str | None = None, image_shape: tuple | None = None) -> None:
    """Samples as a picture: a grid of images when each row is a square image
    (e.g. 64 = 8×8 digits), a scatter for 2-D points, a pair of marginals otherwise."""
    plt = _plt()
    x = torch.as_tensor(x).detach().cpu().double()
    x = x.reshape(len(x), -1)
    d = x.shape[1]
    side = int(round(math.sqrt(d)))
    if image_shape is not None or (side * side == d and d >= 16):
        h, w = image_shape or (side, side)
        cols = min(len(x), 10)
        rows = math.ceil(len(x) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < len(x):
                ax.imshow(x[i].reshape(h, w), cmap="gray_r", interpolation="nearest")
    else:
        fig, ax = plt.subplots(figsize=(4, 4))
        if d == 1:
            ax.hist(x[:, 0], bins=40)
        else:
            ax.scatter(x[:, 0], x[:, 1], s=4, alpha=0.6)
            if d > 2:
                ax.set_title(f"first two of {d} dimensions", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
