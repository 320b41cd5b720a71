"""Pictures of autoencoders and VAEs on the binarised 8×8 digits (fixed train/test split):

  docs/img/vae_reconstructions.png   test digits (top) and VAE reconstructions (bottom)
  docs/img/vae_samples.png           draws from the VAE's generative model (decoder means)
  docs/img/vae_interpolation.png     decoder means along straight lines between test codes
  docs/img/ae_denoising.png          clean / masked (30 %) / denoising-autoencoder output
  docs/img/vae_latent_map.png        a 2-D VAE's posterior means of the test digits, by label

    python examples/vae_digits.py [--out docs/img] [--epochs 150]
"""
from __future__ import annotations

import argparse
import os

import torch

import probgen as pg
from probgen.data import split
from probgen.models import VAE, Autoencoder


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def image_rows(rows, path, labels=None):
    """Rows of 8×8 images, one figure."""
    plt = _plt()
    n_rows, n_cols = len(rows), len(rows[0])
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * 0.6, n_rows * 0.62), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.imshow(row[c].reshape(8, 8), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0 and labels:
                ax.set_ylabel(labels[r], fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="docs/img")
    p.add_argument("--epochs", type=int, default=150)
    args = p.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    x, y = pg.load_dataset("digits-binary", with_target=True)
    x = x.float()
    x_train, x_test, y_train, y_test = split(x, y)
    opts = dict(steps=args.epochs, seed=0, lr=3e-3, batch_size=64, patience=20, progress=True)

    vae = pg.fit(VAE(8, (64, 128)), x_train, **opts)
    show = x_test[:12]
    image_rows([show, pg.infer(vae, show, query="reconstruct")], f"{args.out}/vae_reconstructions.png",
               ["test", "VAE"])
    h = vae.model.prior().sample((30,))
    image_rows(list(vae.model.mean(vae.params, vae.model.decode(vae.params, h)).reshape(3, 10, 64)),
               f"{args.out}/vae_samples.png")
    codes = pg.infer(vae, x_test[:8], query="encode")
    t = torch.linspace(0, 1, 10)[:, None]
    lines = [(1 - t) * codes[2 * i] + t * codes[2 * i + 1] for i in range(4)]
    image_rows([vae.model.mean(vae.params, vae.model.decode(vae.params, line)) for line in lines],
               f"{args.out}/vae_interpolation.png")

    dae = pg.fit(Autoencoder("denoising", (64, 128), code_dim=16, noise=0.3), x_train, **opts)
    g = torch.Generator().manual_seed(1)
    clean = x_test[:12]
    masked = clean * (torch.rand(clean.shape, generator=g) >= 0.3).float()
    image_rows([clean, masked, pg.infer(dae, masked, query="reconstruct")], f"{args.out}/ae_denoising.png",
               ["clean", "masked", "denoised"])

    vae2 = pg.fit(VAE(2, (64, 128)), x_train, **opts)
    z = pg.infer(vae2, x_test, query="encode")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    sc = ax.scatter(z[:, 0], z[:, 1], c=y_test, cmap="tab10", s=8)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel("h₁ (posterior mean)"), ax.set_ylabel("h₂")
    ax.set_title("2-D VAE, test digits", fontsize=9)
    fig.tight_layout()
    fig.savefig(f"{args.out}/vae_latent_map.png", dpi=80)
    plt.close(fig)
    for name, f in (("VAE-8", vae), ("VAE-2", vae2)):
        print(f"{name}: {len(f.history)} epochs, test -ELBO {-f.log_prob(x_test).mean().item():.2f}, "
              f"IWAE-500 NLL {-f.log_prob(x_test, num_samples=500).mean().item():.2f}")
    print(f"denoising AE: test reconstruction log-lik of masked inputs "
          f"{-torch.nn.functional.binary_cross_entropy(pg.infer(dae, masked, query='reconstruct'), clean, reduction='sum').item() / len(clean):.2f}")
    print(f"wrote pictures to {args.out}/")


if __name__ == "__main__":
    main()
