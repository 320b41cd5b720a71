"""Online (stepwise) EM on a stream of chunks vs scikit-learn's batch ``GaussianMixture`` on
the whole array, side by side in one process.

N rows (default 1,000,000), D=8, K=8 full-covariance components, simulated. probgen reads
them as a generator of ``--chunk``-row NumPy chunks (what a reader of a file too large for
memory would yield; each chunk is a copy, dropped once used) and fits ``online=True``
(``batch_size`` rows per update, ``--passes`` passes: a callable returning a fresh generator
when more than one), one thread. scikit-learn fits the whole array with its defaults
(``tol=1e-3``, ``max_iter=100``) from the **same start** (probgen's k-means++ start on the
first chunk, passed as ``weights_init`` / ``means_init`` / ``precisions_init``; the online
fit gets it as ``init=``, and its cost is printed apart), one BLAS
thread (threadpoolctl). probgen's batch EM (``tol=1e-5``, from the same start) is a third
row for reference. Reported: seconds (best of ``--repeats``, interleaved), the ratio to
scikit-learn, and the final mean log-likelihood per row on the whole array (``fit.log_prob``;
scikit-learn's ``score``).

    python benchmarks/online.py [--n 1000000] [--d 8] [--k 8] [--chunk 50000] [--batch 5000]
                                [--passes 1] [--repeats 2] [--out docs/benchmarks/online.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import numpy as np
import torch


def simulate(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (k, d))
    z = rng.integers(0, k, n)
    a = rng.normal(0, 0.5, (k, d, d))
    return centers[z] + np.einsum("nij,nj->ni", a[z], rng.normal(size=(n, d))) + 0.3 * rng.normal(size=(n, d))


HEADER = ("| run | seconds | ratio to scikit-learn | log-likelihood / row | iterations |\n"
          "|---|---|---|---|---|")


def table_row(r: dict) -> str:
    """One docs-table row from a JSON row (the table: ``HEADER`` and these rows)."""
    return (f"| {r['name']} | {r['seconds']:.2f} | {r['ratio']:.2f} | {r['log_likelihood']:.4f} | "
            f"{r['iterations']} |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--chunk", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=5_000)
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    a = p.parse_args()

    from sklearn.mixture import GaussianMixture as SkGMM
    from threadpoolctl import threadpool_limits

    import probgen as pg
    from probgen.models import GaussianMixture

    x = simulate(a.n, a.d, a.k)
    xt = torch.from_numpy(x)
    model = GaussianMixture(a.k, a.d, "full")

    def chunks():
        for lo in range(0, a.n, a.chunk):
            yield x[lo:lo + a.chunk].copy()

    # the online fit's own start (k-means++ on the first chunk, seed 0: what pg.fit(online=True)
    # does), given to all three runs, so that each row times EM alone from one start
    def run_start():
        return model.init_params(torch.from_numpy(x[:a.chunk].copy()), seed=0)

    init = run_start()
    precisions = torch.cholesky_inverse(init["scale_tril"]).numpy()

    def run_online():
        data = chunks() if a.passes == 1 else chunks
        return pg.fit(model, data, online=True, batch_size=a.batch, steps=a.passes, tol=None, init=init,
                      progress=False)

    def run_batch():
        return pg.fit(model, xt, init=init, progress=False)

    def run_sklearn():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SkGMM(a.k, covariance_type="full", n_init=1, weights_init=init["weights"].numpy(),
                         means_init=init["loc"].numpy(), precisions_init=precisions).fit(x)

    times: dict[str, list[float]] = {"online": [], "batch": [], "sklearn": [], "start": []}
    out = {}
    with threadpool_limits(limits=1):
        torch.set_num_threads(1)
        for _ in range(a.repeats):  # interleaved, so all see the same machine load
            for name, fn in (("start", run_start), ("online", run_online), ("sklearn", run_sklearn),
                             ("batch", run_batch)):
                t = time.perf_counter()
                out[name] = fn()
                times[name].append(time.perf_counter() - t)
    on, sk, ba = out["online"], out["sklearn"], out["batch"]
    ll = {"online": float(on.log_prob(xt).mean()), "batch": float(ba.log_prob(xt).mean()),
          "sklearn": float(sk.score(x))}
    sec = {k: min(v) for k, v in times.items()}
    start_seconds = sec["start"]
    rows = [
        {"name": f"probgen online EM, {a.passes} pass(es) over {a.chunk:,}-row chunks, batch_size={a.batch:,}",
         "seconds": sec["online"], "ratio": sec["online"] / sec["sklearn"], "log_likelihood": ll["online"],
         "iterations": f"{on.state['online']['t']} updates"},
        {"name": "scikit-learn GaussianMixture, whole array (tol=1e-3)", "seconds": sec["sklearn"], "ratio": 1.0,
         "log_likelihood": ll["sklearn"], "iterations": f"{sk.n_iter_} EM iterations"},
        {"name": "probgen batch EM, whole array (tol=1e-5)", "seconds": sec["batch"],
         "ratio": sec["batch"] / sec["sklearn"], "log_likelihood": ll["batch"],
         "iterations": f"{len(ba.history)} EM iterations"},
    ]
    print(f"N={a.n:,} D={a.d} K={a.k} full; one thread each; best of {a.repeats}")
    print(HEADER)
    for r in rows:
        print(table_row(r))
    print(f"the start (k-means++ on one {a.chunk:,}-row chunk): {start_seconds:.2f} s")
    print(f"online - scikit-learn log-likelihood: {ll['online'] - ll['sklearn']:+.4f} per row "
          f"({(ll['online'] - ll['sklearn']) / abs(ll['sklearn']):+.2%})")
    if a.out:
        meta = {"n": a.n, "d": a.d, "k": a.k, "chunk": a.chunk, "batch": a.batch, "passes": a.passes,
                "repeats": a.repeats, "start_seconds": start_seconds, "machine": platform.processor() or platform.machine(),
                "torch": torch.__version__}
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:  # a list of rows (the README table's), each with the setup
            json.dump([{**r, "setup": meta} for r in rows], f, indent=1)


if __name__ == "__main__":
    main()
