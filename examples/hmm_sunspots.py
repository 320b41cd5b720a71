"""Regime switching in the yearly sunspot numbers (1700–2008) with a Gaussian HMM.

A 3-state HMM with Gaussian emissions is fitted by Baum–Welch (several random starts,
the best log-likelihood kept); the Viterbi path labels each year with a regime (quiet,
moderate, active). The plot shows the series coloured by Viterbi state.

Run: python examples/hmm_sunspots.py [out.png]   (default docs/img/hmm_sunspots.png)
"""
from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import probgen as pg  # noqa: E402
from probgen.models import HMM  # noqa: E402


def main(out: str = "docs/img/hmm_sunspots.png") -> None:
    x = HMM.load_named_data("sunspots")                      # (309,) yearly means
    years = torch.arange(1700, 1700 + len(x))
    model = HMM(3, "gaussian", dim=1)
    fits = [pg.fit(model, x, engine="em", steps=200, seed=s, progress=False) for s in range(5)]
    fit = max(fits, key=lambda f: f.history[-1]["log_likelihood"])
    order = torch.argsort(fit.params["loc"][:, 0])           # name states by their mean
    rank = torch.empty_like(order)
    rank[order] = torch.arange(3)
    path = rank[pg.infer(fit, x, query="map")[0]]
    post = pg.infer(fit, x, query="marginals")[0][:, order]
    names = ["quiet", "moderate", "active"]
    print(f"log-likelihood {float(fit.log_prob(x).sum()):.2f} after {len(fit.history)} iterations")
    for r, k in enumerate(order.tolist()):
        print(f"{names[r]:9s} mean {float(fit.params['loc'][k, 0]):6.1f}  sd {float(fit.params['scale'][k, 0]):5.1f}"
              f"  stay {float(fit.params['transition'][k, k]):.2f}  years {int((path == r).sum())}")

    colours = ["tab:blue", "tab:orange", "tab:red"]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 4.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot(years, x, color="0.75", lw=0.8, zorder=1)
    for r in range(3):
        sel = path == r
        ax.scatter(years[sel], x[sel], s=9, color=colours[r], label=names[r], zorder=2)
    ax.set_ylabel("sunspot number")
    ax.set_title("Yearly sunspots coloured by Viterbi state (3-state Gaussian HMM, Baum–Welch)")
    ax.legend(loc="upper left", fontsize=8, ncol=3)
    ax2.stackplot(years, post.t().numpy(), colors=colours, alpha=0.8)
    ax2.set_ylabel("p(state)")
    ax2.set_xlabel("year")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
