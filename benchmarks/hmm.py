"""Baum–Welch and Viterbi: probgen vs hmmlearn, side by side in one process.

GaussianHMM K=8, D=4 (diag and full) and CategoricalHMM K=8 with 32 symbols, on 200
sequences × 500 steps simulated from a random HMM; 10 Baum–Welch iterations from
identical initial parameters (hmmlearn: init_params="", covars_prior=0, min_covar=0 so
that both run the plain maximum-likelihood M-step), against both of hmmlearn's
implementations (its default "log" and its faster "scaling"); Viterbi on all sequences
(one warm-up call, then the best of 5 calls each, the same decode call hmmlearn users make). Both use
one thread (torch.set_num_threads(1); threadpoolctl limits NumPy's BLAS to one).
probgen's forward–backward and Viterbi loops are compiled by Numba on first use (then
cached on disk): a tiny fit runs first, and its time is printed separately.

Run: python benchmarks/hmm.py [--quick] [--json docs/benchmarks/hmm.json]
"""
from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import probgen as pg
from probgen.models import HMM


def case(name, model, B, T, iters, hl, implementation):
    g = torch.Generator().manual_seed(0)
    truth = model.init_params(None, seed=7)
    if "loc" in truth:
        truth["loc"] = 2.0 * torch.randn(truth["loc"].shape, generator=g, dtype=torch.float64)
    x = model.sample(truth, B, seed=0, T=T)
    data = model.check_data(x)
    init = model.init_params(data, seed=1)
    X = x.reshape(B * T, -1).numpy()
    lengths = [T] * B
    if model.emission == "categorical":
        h = hl.CategoricalHMM(model.k, n_iter=iters, tol=-np.inf, init_params="", params="ste",
                              n_features=model.n_symbols, implementation=implementation)
        h.emissionprob_ = init["probs"].numpy()
    else:
        h = hl.GaussianHMM(model.k, covariance_type=model.covariance, n_iter=iters, tol=-np.inf,
                           init_params="", params="stmc", covars_prior=0.0, min_covar=0.0,
                           implementation=implementation)
        h.means_ = init["loc"].numpy()
        h.covars_ = ((init["scale"] ** 2).numpy() if model.covariance == "diag"
                     else (init["scale_tril"] @ init["scale_tril"].mT).numpy())
    h.startprob_, h.transmat_ = init["initial"].numpy(), init["transition"].numpy()

    t0 = time.perf_counter()
    fit = pg.fit(model, data, engine="em", steps=iters, init=init, tol=None, min_covar=0.0, progress=False)
    ours_fit = (time.perf_counter() - t0) / iters
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h.fit(X, lengths)
    their_fit = (time.perf_counter() - t0) / iters

    ll_ours = float(fit.log_prob(data).sum())
    ll_theirs = h.score(X, lengths)
    # Viterbi: one untimed call each, then the best of 5 (one call is ~3-80 ms, where a busy
    # machine's noise and first-touch memory costs show)
    pg.infer(fit, data, query="map")
    h.decode(X, lengths, algorithm="viterbi")
    ours_vit, their_vit = float("inf"), float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        paths = pg.infer(fit, data, query="map").reshape(-1).numpy()
        ours_vit = min(ours_vit, time.perf_counter() - t0)
        t0 = time.perf_counter()
        their_paths = h.decode(X, lengths, algorithm="viterbi")[1]
        their_vit = min(their_vit, time.perf_counter() - t0)
    return {"case": name, "ours_iter": ours_fit, "their_iter": their_fit, "ours_vit": ours_vit,
            "their_vit": their_vit, "rel_ll": abs(ll_ours - ll_theirs) / abs(ll_theirs),
            "same_paths": float((paths == their_paths).mean())}


def main(quick: bool = False, json_path: str | None = None) -> None:
    from hmmlearn import hmm as hl
    B, T, iters = (40, 200, 5) if quick else (200, 500, 10)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tiny = HMM(2, "categorical", n_symbols=3)
    pg.infer(pg.fit(tiny, [torch.tensor([0, 1, 2, 1])], engine="em", steps=1, tol=None, progress=False),
             [torch.tensor([0, 1])], query="map")
    first = time.perf_counter() - t0
    rows = []
    with threadpool_limits(1):
        for name, model in [("GaussianHMM diag K=8 D=4", HMM(8, "gaussian", dim=4, covariance="diag")),
                            ("GaussianHMM full K=8 D=4", HMM(8, "gaussian", dim=4, covariance="full")),
                            ("CategoricalHMM K=8 V=32", HMM(8, "categorical", n_symbols=32))]:
            # hmmlearn's default implementation ("log") and its faster "scaling" one
            for implementation in ("log", "scaling"):
                rows.append(case(f"{name} (hmmlearn {implementation})", model, B, T, iters, hl, implementation))
    print(f"{B} sequences x {T} steps, {iters} Baum-Welch iterations, 1 thread each")
    print(f"first probgen call (compiles the Numba kernels, or loads them from the disk cache): {first:.2f} s\n")
    from _tables import emit, table
    emit(json_path, "python benchmarks/hmm.py" + (" --quick" if quick else ""), peers=("hmmlearn",),
         note=f"{B} sequences x {T} steps, {iters} Baum-Welch iterations, 1 thread each", tables={"baum_welch": table(
        ["case", "probgen s/iter", "hmmlearn s/iter", "speed-up", "probgen Viterbi s", "hmmlearn Viterbi s",
         "speed-up", "log-lik rel. diff", "same Viterbi states"],
        [[r['case'], f"{r['ours_iter']:.3f}", f"{r['their_iter']:.3f}", f"{r['their_iter'] / r['ours_iter']:.1f}x",
          f"{r['ours_vit']:.3f}", f"{r['their_vit']:.3f}", f"{r['their_vit'] / r['ours_vit']:.1f}x",
          f"{r['rel_ll']:.1e}", f"{100 * r['same_paths']:.2f}%"] for r in rows])})


if __name__ == "__main__":
    from _tables import parser
    ap = parser("hmm", __doc__)
    ap.add_argument("--quick", action="store_true", help="40 sequences x 200 steps, 5 iterations")
    a = ap.parse_args()
    main(quick=a.quick, json_path=a.json)
