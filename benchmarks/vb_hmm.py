"""Variational Bayes for HMMs: probgen's ``meanfield`` ``hmm-vb`` vs hmmlearn's
``VariationalCategoricalHMM`` / ``VariationalGaussianHMM``, side by side in one process.

K = 8 states on B sequences × T steps simulated from a random HMM (categorical with 32
symbols; Gaussian D = 4, full covariances), the same priors (hmmlearn's defaults) and the
same starting variational parameters (probgen's default start, given to hmmlearn with
``init_params=""``), a fixed number of VB iterations each (``tol=None`` / ``tol=-inf``);
seconds per iteration, against both of hmmlearn's implementations ("log", its default, and
"scaling"), and the relative difference of the final bounds (hmmlearn's bound leaves out
−D/2 log 2π per step, added back). One thread each (torch.set_num_threads(1),
threadpoolctl for NumPy); a one-iteration warm-up fit first (Numba's compiled kernels).

Run: python benchmarks/vb_hmm.py [--quick] [--json docs/benchmarks/vb_hmm.json]
"""
from __future__ import annotations

import math
import sys
import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import probgen as pg
from probgen.models import HMM


def case(kind: str, B: int, T: int, K: int = 8, D: int = 4, V: int = 32, iters: int = 20,
         implementation: str = "log") -> dict:
    from hmmlearn import vhmm
    g = torch.Generator().manual_seed(0)
    if kind == "categorical":
        m, gen = HMM(K, "categorical", n_symbols=V, bayesian=True), HMM(K, "categorical", n_symbols=V)
        x = gen.sample(gen.init_params(None, seed=0), B, seed=0, T=T)
        ref = vhmm.VariationalCategoricalHMM(K, n_features=V, init_params="", n_iter=iters, tol=-np.inf,
                                             implementation=implementation)
        X, D = x.numpy().reshape(-1, 1), 0
    else:
        m, gen = HMM(K, "gaussian", dim=D, covariance=kind, bayesian=True), HMM(K, "gaussian", dim=D, covariance=kind)
        p = gen.init_params(torch.randn(100, D, generator=g, dtype=torch.float64), seed=0)
        p["loc"] = 3 * torch.randn(K, D, generator=g, dtype=torch.float64)
        x = gen.sample(p, B, seed=0, T=T)
        ref = vhmm.VariationalGaussianHMM(K, covariance_type=kind, init_params="", n_iter=iters, tol=-np.inf,
                                          implementation=implementation)
        ref.n_features, X = D, x.numpy().reshape(-1, D)
    start = pg.fit(m, x, steps=0, seed=0, progress=False).state["q"]
    prior = {k: v.numpy() for k, v in m.prior_hyperparameters(x).items()}
    ref.startprob_prior_, ref.transmat_prior_ = prior["initial_prior"], prior["transition_prior"]
    ref.startprob_posterior_, ref.transmat_posterior_ = start["initial"].numpy(), start["transition"].numpy()
    if kind == "categorical":
        ref.emissionprob_prior_, ref.emissionprob_posterior_ = prior["probs_prior"], start["probs"].numpy()
    else:
        ref.means_prior_, ref.beta_prior_ = prior["mean_prior"], prior["mean_precision_prior"]
        ref.dof_prior_, ref.scale_prior_ = prior["degrees_of_freedom_prior"], prior["covariance_prior"]
        ref.means_posterior_, ref.beta_posterior_, ref.dof_posterior_, ref.scale_posterior_ = (
            start[k].numpy() for k in ("m", "beta", "nu", "W_inv"))
    pg.fit(m, x, steps=1, tol=None, init_posterior=start, progress=False)   # warm-up: compiled kernels
    t = time.perf_counter()
    fit = pg.fit(m, x, steps=iters, tol=None, init_posterior=start, progress=False)
    ours = (time.perf_counter() - t) / iters
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        ref.fit(X, [T] * B)
        theirs = (time.perf_counter() - t) / iters
    bound = fit.history[-1]["elbo"] * B + 0.5 * B * T * D * math.log(2 * math.pi)
    rel = abs(bound - ref.monitor_.history[-1]) / abs(ref.monitor_.history[-1])
    return {"case": f"{kind} K={K}" + (f" V={V}" if kind == "categorical" else f" D={D}") + f" (hmmlearn {implementation})",
            "probgen": ours, "hmmlearn": theirs, "rel": rel}


def main(quick: bool = False, json_path: str | None = None) -> None:
    torch.set_num_threads(1)
    B, T = (20, 100) if quick else (100, 500)
    print(f"{B} sequences x {T} steps, 20 VB iterations from the same start\n")
    from _tables import emit, table
    columns = ["case", "probgen s/iter", "hmmlearn s/iter", "speed-up", "final ELBO rel. diff"]
    print("| " + " | ".join(columns) + " |\n|---|---|---|---|---|")
    rows = []
    for kind in ("categorical", "full"):
        for implementation in ("log", "scaling"):
            r = case(kind, B, T, implementation=implementation)
            rows.append([r['case'], f"{r['probgen']:.4f}", f"{r['hmmlearn']:.4f}", f"{r['hmmlearn'] / r['probgen']:.1f}x",
                         f"{r['rel']:.1e}"])
            print("| " + " | ".join(rows[-1]) + " |", flush=True)
    emit(json_path, "python benchmarks/vb_hmm.py" + (" --quick" if quick else ""), {"vb": table(columns, rows)}, show=False,
         peers=("hmmlearn",), note=f"{B} sequences x {T} steps, 20 VB iterations from the same start, 1 thread each")


if __name__ == "__main__":
    from _tables import parser
    ap = parser("vb_hmm", __doc__)
    ap.add_argument("--quick", action="store_true", help="20 sequences x 100 steps")
    a = ap.parse_args()
    main(a.quick, a.json)
