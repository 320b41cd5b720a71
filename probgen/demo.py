"""``probgen demo``: one declaration, three engines.

Fits ``GaussianMixture(3, 4)`` (full covariances) to the bundled iris measurements with
``em`` (closed-form EM, several restarts), ``svi`` (gradient ascent on the exact marginal
likelihood, the assignment enumerated out) and ``mcmc`` (NUTS over the parameters lifted
to the declaration's default priors), prints a side-by-side table — log-likelihood per
example and seconds — and writes into ``out``:

  gmm.svg (or gmm.dot without Graphviz)   the model's graph
  history.png                              EM log-likelihood and SVI loss per step
  clusters.png                             iris (petal length × width) coloured by the EM
                                           MAP assignment, with each engine's means
  samples.png                              draws from the EM fit
  em.pt                                    the EM fit (``probgen sample probgen-demo/em.pt``)

``quick=True`` runs a handful of steps (a few seconds; used by the tests).
"""
from __future__ import annotations

import os
import shutil
import time

import torch

import probgen as pg
from probgen.models import GaussianMixture


def run_demo(out: str = "probgen-demo", quick: bool = False, seed: int = 0) -> list[dict]:
    """Run the demo, print the table, write the pictures; returns the table rows."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 150 × 4 data: threads would only add synchronisation
    try:
        return _run(out, quick, seed)
    finally:
        torch.set_num_threads(threads)


def _run(out: str, quick: bool, seed: int) -> list[dict]:
    os.makedirs(out, exist_ok=True)
    x, labels = pg.load_dataset("iris", with_target=True)
    model = GaussianMixture(3, x.shape[1], "full")
    plan = [
        ("em", dict(steps=5 if quick else 200, n_init=1 if quick else 5)),
        ("svi", dict(steps=20 if quick else 500, lr=0.05)),
        # quick: shallow trees, so a chain that has had no time to adapt stays cheap
        ("mcmc", dict(steps=5, warmup=5, max_tree_depth=3) if quick
         else dict(steps=100, warmup=120, max_tree_depth=6, jit_compile=True)),
    ]
    rows, fits = [], {}
    print(f"GaussianMixture(3, 4, full) on iris ({len(x)} examples, 4 features)")
    for engine, options in plan:
        print(f"  fitting with {engine} ...", flush=True)
        t0 = time.perf_counter()
        fit = pg.fit(model, x, engine=engine, seed=seed, progress=False, **options)
        seconds = time.perf_counter() - t0
        ll = float(fit.log_prob(x).mean())
        fits[engine] = fit
        rows.append({"engine": engine, "method": fit.method, "steps": options["steps"],
                     "log_lik": ll, "kind": fit.log_prob_kind, "seconds": seconds})
    print(format_table(rows))
    agree = _agreement(fits["em"], fits, x)
    print("agreement of MAP assignments with em: "
          + ", ".join(f"{e} {a:.0%}" for e, a in agree.items()))
    written = [_graph(model, out), _history(fits, out), _clusters(fits, x, out)]
    from probgen.plots import save_samples_png
    save_samples_png(fits["em"].sample(300, seed=seed), os.path.join(out, "samples.png"),
                     title="300 draws from the EM fit")
    fits["em"].save(os.path.join(out, "em.pt"))
    written += [os.path.join(out, "samples.png"), os.path.join(out, "em.pt")]
    print("wrote " + ", ".join(written))
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"| {'engine':<6} | {'method':<8} | {'steps':>5} | {'log-lik / example':>17} | {'kind':<8} | {'seconds':>7} |"
    lines = [head, "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"]
    for r in rows:
        lines.append(f"| {r['engine']:<6} | {r['method']:<8} | {r['steps']:>5} | {r['log_lik']:>17.4f} | "
                     f"{r['kind']:<8} | {r['seconds']:>7.2f} |")
    return "\n".join(lines)


def _agreement(ref: pg.Fit, fits: dict, x: torch.Tensor) -> dict[str, float]:
    """Fraction of examples whose MAP component matches em's, under the best matching of
    component labels (labels are arbitrary: K! permutations, K = 3)."""
    import itertools
    base = pg.infer(ref, x, query="map")
    out = {}
    for engine, fit in fits.items():
        if engine == "em":
            continue
        other = pg.infer(fit, x, query="map")  # exact posterior at this fit's parameters
        k = ref.model.k
        out[engine] = max(float((torch.tensor(p)[other] == base).double().mean())
                          for p in itertools.permutations(range(k)))
    return out


def _graph(model: GaussianMixture, out: str) -> str:
    if shutil.which("dot"):
        path = os.path.join(out, "gmm.svg")
    else:  # say so: the .dot is text, not the picture the user expects
        path = os.path.join(out, "gmm.dot")
        print("probgen demo: Graphviz's `dot` program is not installed, so the graph is written as "
              f"{path} only; install it (e.g. `apt-get install graphviz`) for gmm.svg")
    pg.render(model, path)
    return path


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _history(fits: dict, out: str) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    em = fits["em"].history
    axes[0].plot([h["step"] for h in em], [h["log_likelihood"] for h in em], marker=".")
    axes[0].set(title="em", xlabel="iteration", ylabel="log-likelihood / example")
    svi = fits["svi"].history
    axes[1].plot([h["step"] for h in svi], [h["loss"] for h in svi])
    axes[1].set(title="svi", xlabel="step", ylabel="loss (−log-likelihood)")
    fig.tight_layout()
    path = os.path.join(out, "history.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _clusters(fits: dict, x: torch.Tensor, out: str) -> str:
    plt = _plt()
    i, j = 2, 3  # petal length, petal width: where iris's clusters show
    fig, ax = plt.subplots(figsize=(4.5, 4))
    z = pg.infer(fits["em"], x, query="map")
    ax.scatter(x[:, i], x[:, j], c=z, s=10, cmap="viridis", alpha=0.7)
    for engine, marker in (("em", "X"), ("svi", "P"), ("mcmc", "*")):
        loc = fits[engine].params["loc"]
        ax.scatter(loc[:, i], loc[:, j], marker=marker, s=120, edgecolor="k", facecolor="w", label=engine)
    ax.set(xlabel="petal length (cm)", ylabel="petal width (cm)", title="iris: EM clusters, fitted means")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, "clusters.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
