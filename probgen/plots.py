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
    """Samples as the picture that fits them: a grid of images when each row is a square
    image (e.g. 64 = 8×8 digits); strips (one row per example, a colour per value) for
    discrete rows such as state sequences or binary units; a scatter for 2-D points and a
    histogram for 1-D ones; the examples as text for ragged samples (documents, sentences,
    trees)."""
    plt = _plt()
    if isinstance(x, (list, tuple)) and (not x or not all(isinstance(i, torch.Tensor) for i in x)
                                         or len({tuple(i.shape) for i in x}) > 1):
        _text_panel(plt, x)
    else:
        x = torch.stack(list(x)) if isinstance(x, (list, tuple)) else torch.as_tensor(x)
        x = x.detach().cpu().double()
        x = x.reshape(len(x), -1)
        d = x.shape[1]
        side = int(round(math.sqrt(d)))
        discrete = bool((x == x.round()).all()) and x.numel() > 0 and int(x.max() - x.min()) < 20
        if image_shape is not None or (side * side == d and d >= 16):
            h, w = image_shape or (side, side)
            cols = min(len(x), 10)
            rows = math.ceil(len(x) / cols)
            fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 0.9), squeeze=False)
            for i, ax in enumerate(axes.flat):
                ax.axis("off")
                if i < len(x):
                    ax.imshow(x[i].reshape(h, w), cmap="gray_r", interpolation="nearest")
        elif discrete and d > 1:
            rows = x[:50]
            fig, ax = plt.subplots(figsize=(min(12, 2 + 0.12 * d), min(8, 1 + 0.25 * len(rows))))
            levels = int(rows.max() - rows.min()) + 1
            im = ax.imshow(rows, aspect="auto", interpolation="nearest",
                           cmap=plt.get_cmap("tab10" if levels <= 10 else "tab20", levels))
            fig.colorbar(im, ax=ax, label="value")
            ax.set_xlabel("position (time step / variable)")
            ax.set_ylabel("example")
        elif d >= 10:  # long continuous rows (sequences): one line per example
            fig, ax = plt.subplots(figsize=(8, 3.2))
            for row in x[:10]:
                ax.plot(row, lw=0.9, alpha=0.8)
            ax.set_xlabel("position (time step / dimension)")
            ax.set_ylabel("value")
        else:
            fig, ax = plt.subplots(figsize=(4, 4))
            if d == 1:
                ax.hist(x[:, 0], bins=40)
            else:
                ax.scatter(x[:, 0], x[:, 1], s=4, alpha=0.6)
                if d > 2:
                    ax.set_title(f"first two of {d} dimensions", fontsize=8)
    fig = plt.gcf()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _text_panel(plt: Any, items: Any, limit: int = 20) -> None:
    """The first ``limit`` examples written out, one per line (documents as token codes,
    trees in bracket notation)."""
    lines = []
    for item in list(items)[:limit]:
        if isinstance(item, torch.Tensor):
            item = " ".join(str(v) for v in item.reshape(-1).tolist())
        text = str(item).replace("\n", " ")
        lines.append(text if len(text) <= 110 else text[:107] + "...")
    fig, ax = plt.subplots(figsize=(10, 0.6 + 0.28 * max(len(lines), 1)))
    ax.axis("off")
    ax.text(0, 1, "\n".join(lines) or "(no samples)", family="monospace", fontsize=8, va="top", ha="left",
            transform=ax.transAxes)
