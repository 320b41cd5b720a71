"""One evaluation for every generative model in probgen: fit each on two-moons and on
the binarised 8×8 digits, then report the kernel MMD² between 1,000 samples and held-out
data (Gaussian kernel, median-heuristic bandwidth fixed per data set) and the model's own
log-likelihood where it has one (exact, a bound or an estimate, as `log_prob_kind` says).
Writes docs/img/compare_<data>.png (sample grids) and prints Markdown tables.

    python examples/compare_generative.py [--quick] [--json docs/benchmarks/compare_generative.json]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import matplotlib
import torch

import probgen as pg
from probgen import registry
from probgen.data import load_dataset, split
from probgen.evaluate import evaluate, median_bandwidth

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def candidates(dim: int, binary: bool, quick: bool) -> list[tuple[str, object, dict]]:
    """(label, declaration, fit options) for every family that can model this data."""
    m = registry.models()
    s = 0.2 if quick else 1.0
    out = [
        ("GAN", m["gan"](dim, latent_dim=min(dim, 8), hidden=(128, 128)), dict(steps=int(4000 * s), lr=5e-4)),
        ("flow (NSF)", m["flow"](dim, kind="spline", transforms=4, hidden=(128, 128)), dict(steps=int(4000 * s))),
        ("EBM", m["ebm"](dim, hidden=(128, 128), sample_steps=100), dict(steps=int(2000 * s), k=20)),
        ("diffusion", m["diffusion"](dim, steps=100, schedule="cosine", hidden=(256, 256)),
         dict(steps=int(4000 * s))),
    ]
    if "vae" in m:
        lik = "bernoulli" if binary else "gaussian"
        try:
            out.append(("VAE", m["vae"](latent_dim=min(dim, 8), dims=[dim, 128], likelihood=lik),
                        dict(steps=int(200 * s))))
        except TypeError:
            pass
    if binary and "rbm" in m:
        out.append(("RBM", m["rbm"](dim, 100), dict(steps=int(50 * s))))
    if binary and "dbm" in m:
        try:
            out.append(("DBM", m["dbm"](dim, 100, 50), dict(steps=int(50 * s), pretrain=True)))
        except TypeError:
            pass
    return out


def run(name: str, x: torch.Tensor, binary: bool, quick: bool) -> tuple[list[str], list[list[str]]]:
    train, test = split(x, test_fraction=0.2, seed=0)
    h = median_bandwidth(test)
    rows, grids = [], []
    for label, model, opts in candidates(x.shape[1], binary, quick):
        t0 = time.perf_counter()
        try:
            fit = pg.fit(model, train, seed=0, progress=False, **opts)
            res = evaluate(fit, test, num_samples=1000, seed=0, bandwidth=h)
        except Exception as exc:  # report, do not hide: a row saying why
            rows.append([label, f"failed: {type(exc).__name__}: {str(exc)[:60]}", "", "", ""])
            continue
        secs = time.perf_counter() - t0
        lp = "—" if res["log_prob"] is None else f"{res['log_prob']:.2f}"
        rows.append([label, f"{res['mmd2']:.4f}", lp, res["log_prob_kind"], f"{secs:.0f}"])
        grids.append((label, fit.sample(64 if x.shape[1] > 2 else 1000, seed=1)))
    floor = evaluate_floor(train, test, h)
    rows.append(["training data (floor)", f"{floor:.4f}", "", "", ""])
    draw(name, grids, x.shape[1])
    return [name, "MMD² to test", "log p(test) per example", "kind", "seconds"], rows


def evaluate_floor(train: torch.Tensor, test: torch.Tensor, h: float) -> float:
    from probgen.evaluate import mmd2
    return mmd2(train[:1000], test, h)


def draw(name: str, grids: list, dim: int) -> None:
    fig, axes = plt.subplots(1, len(grids), figsize=(2.6 * len(grids), 2.8), squeeze=False)
    for ax, (label, s) in zip(axes[0], grids):
        s = s.detach().double()
        if dim == 2:
            ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.5)
            ax.set_xlim(-1.5, 2.5)
            ax.set_ylim(-1.0, 1.5)
        else:
            side = int(math.sqrt(dim))
            tiles = s[:64].reshape(8, 8, side, side).permute(0, 2, 1, 3).reshape(8 * side, 8 * side)
            ax.imshow(tiles, cmap="gray_r")
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(f"docs/img/compare_{name}.png", dpi=90)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the table(s) as JSON (docs/benchmarks/compare_generative.json; benchmarks/_tables.py)")
    args = ap.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
    from _tables import emit, table  # the benchmarks' shared JSON table format
    tables = {}
    for name, x, binary in [("two-moons", load_dataset("two-moons").float(), False),
                            ("digits", load_dataset("digits-binary").float(), True)]:
        tables[name] = table(*run(name, x, binary, args.quick))
    emit(args.json, "python examples/compare_generative.py" + (" --quick" if args.quick else ""), tables,
         note="No peer library: every row is probgen's, with its own log-likelihood kind")


if __name__ == "__main__":
    main()
