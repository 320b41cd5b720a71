"""EM for a full-covariance Gaussian mixture: probgen vs scikit-learn, side by side.

N=100,000 points, D=16, K=16, the same data and the same initial parameters, 20
iterations with tol=0 (both run every iteration), both on the same number of threads
(torch.set_num_threads and threadpoolctl for NumPy's BLAS). Prints seconds per
iteration, the ratio, and the final log-likelihood (mean per example) of each.

    python benchmarks/gmm.py [--n 100000] [--d 16] [--k 16] [--iters 20] [--threads 2] [--repeats 3]
        [--json docs/benchmarks/gmm.json]   # one row per --threads, merged into the file's rows
"""
from __future__ import annotations

import argparse
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="best of this many timed runs each")
    p.add_argument("--json", default=None, metavar="PATH", help="write the table(s) as JSON (docs/benchmarks/gmm.json; benchmarks/_tables.py)")
    a = p.parse_args()

    from sklearn.mixture import GaussianMixture as SkGMM
    from threadpoolctl import threadpool_limits

    import probgen as pg
    from probgen.models import GaussianMixture

    torch.set_num_threads(a.threads)
    pg.set_num_threads(a.threads)  # probgen's calls use the same count (their default is 1)
    x = simulate(a.n, a.d, a.k)
    xt = torch.from_numpy(x)
    model = GaussianMixture(a.k, a.d, "full")
    init = model.init_params(xt, seed=0)
    precisions = torch.cholesky_inverse(init["scale_tril"]).numpy()

    def run_probgen():
        return pg.fit(model, xt, engine="em", steps=a.iters, tol=0.0, init=init, progress=False)

    def run_sklearn():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SkGMM(a.k, covariance_type="full", max_iter=a.iters, tol=0.0, n_init=1,
                         weights_init=init["weights"].numpy(), means_init=init["loc"].numpy(),
                         precisions_init=precisions).fit(x)

    times = {"probgen": [], "sklearn": []}
    cpu = {"probgen": [], "sklearn": []}

    def timed(name, fn):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        times[name].append(time.perf_counter() - t)
        cpu[name].append(time.process_time() - c)
        return out

    with threadpool_limits(limits=a.threads):
        for _ in range(a.repeats):  # interleaved, so both see the same machine load
            fit = timed("probgen", run_probgen)
            sk = timed("sklearn", run_sklearn)
    ll_pg = fit.history[-1]["log_likelihood"]
    ll_sk = float(sk.lower_bound_)
    # scikit-learn's fit also runs one final E-step after the loop: count its iterations + 1
    # (a conservative count for probgen: that E-step is half an iteration)
    s_pg = min(times["probgen"]) / a.iters
    s_sk = min(times["sklearn"]) / (a.iters + 1)
    c_pg = min(cpu["probgen"]) / a.iters
    c_sk = min(cpu["sklearn"]) / (a.iters + 1)
    rel = abs(ll_pg - ll_sk) / abs(ll_sk)
    mean_diff = float(np.abs(fit.params["loc"].numpy() - sk.means_).max())
    print(f"GMM EM, full covariance: N={a.n:,} D={a.d} K={a.k}, {a.iters} iterations, tol=0, "
          f"{a.threads} threads, best of {a.repeats}")
    print(f"| {'library':<22} | {'s / iteration':>13} | {'CPU s / iteration':>17} | {'final log-lik / example':>24} |")
    print(f"|{'-' * 24}|{'-' * 15}|{'-' * 19}|{'-' * 26}|")
    print(f"| {'scikit-learn ' + __import__('sklearn').__version__:<22} | {s_sk:13.4f} | {c_sk:17.4f} | {ll_sk:24.12f} |")
    print(f"| {'probgen (em)':<22} | {s_pg:13.4f} | {c_pg:17.4f} | {ll_pg:24.12f} |")
    print(f"speed-up (wall): {s_sk / s_pg:.2f}x   speed-up (CPU time): {c_sk / c_pg:.2f}x   "
          f"log-likelihood relative difference: {rel:.1e}   max |means difference|: {mean_diff:.1e}")
    print("(on a machine shared with other jobs, wall time is noisy; with --threads 1 the CPU "
          "time is the cleaner measure)")
    from _tables import emit, table
    # one row per thread count: run once per --threads; --json merges the rows by thread count
    emit(a.json, "python benchmarks/gmm.py --threads T", {"threads": table(
        ["threads", f"scikit-learn s/iter", "probgen s/iter", "speed-up (wall)", "speed-up (CPU time)",
         "log-lik relative difference"],
        [[a.threads, f"{s_sk:.3f}", f"{s_pg:.3f}", f"{s_sk / s_pg:.1f}×", f"{c_sk / c_pg:.1f}×",
          "0" if rel == 0 else f"{rel:.1e}"]])}, merge=True, peers=("scikit-learn",),
         note=f"N = {a.n:,}, D = {a.d}, K = {a.k}, full covariance, {a.iters} iterations, best of {a.repeats}")


if __name__ == "__main__":
    main()
