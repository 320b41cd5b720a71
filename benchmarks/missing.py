"""EM on data with missing cells: probgen's exact-marginal EM against the usual workaround
(fill the gaps — column means, or scikit-learn's ``IterativeImputer`` — then fit
scikit-learn's ``GaussianMixture`` / hmmlearn's ``GaussianHMM`` on the filled data).

Data: simulated from a known model, cells missing completely at random at 10 / 30 / 50%
(no row / step entirely missing in the mixture; in the HMM, a step may be missing whole),
in the training and in a held-out set alike.
* GMM: K = 4 components, D = 6, full covariances with strong correlations; 4,000 training
  and 2,000 held-out rows.
* HMM: K = 3 states, Gaussian emissions D = 4, full covariances; 40 training and 20
  held-out sequences of 200 steps.

Score: the held-out log-likelihood of the observed cells — the exact marginal
log p(x_obs) under each method's fitted parameters (probgen's ``log_prob``, which sums the
missing cells out, evaluates every method's parameters alike) — per row (GMM) or per step
(HMM), the mean over ``--seeds`` seeds, with the truth's score as the ceiling; and the
seconds of imputation + fitting. Every fit: one start (probgen's default k-means++ /
scikit-learn's default k-means; hmmlearn's default k-means), up to 200 iterations, each
library's default tolerance. One thread each (torch, threadpoolctl); times are CPU seconds
of the process (``time.process_time``: on a machine shared with other jobs, wall-clock
time measures the neighbours).

Run: python benchmarks/missing.py [--quick] [--seeds 3]; writes docs/benchmarks/missing.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import probgen as pg
from probgen.models import HMM, GaussianMixture

RATES = (0.1, 0.3, 0.5)


def mcar(x: torch.Tensor, rate: float, g: torch.Generator, keep_rows: bool) -> torch.Tensor:
    miss = torch.rand(x.shape, generator=g) < rate
    if keep_rows:  # at least one observed cell per row
        miss[miss.all(-1), 0] = False
    return x.masked_fill(miss, float("nan"))


def fillers():
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, SimpleImputer
    return {"mean imputation": lambda: SimpleImputer(strategy="mean"),
            "IterativeImputer": lambda: IterativeImputer(max_iter=10, random_state=0)}


def gmm_truth(seed: int):
    g = torch.Generator().manual_seed(seed)
    k, d = 4, 6
    loc = 3.0 * torch.randn(k, d, generator=g, dtype=torch.float64)
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64)
    cov = a @ a.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=torch.float64)   # correlated dims
    return GaussianMixture(k, d), {"weights": torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64),
                                   "loc": loc, "scale_tril": torch.linalg.cholesky(cov)}


def run_gmm(rate: float, seed: int, n: int, n_test: int) -> dict:
    from sklearn.mixture import GaussianMixture as SkGMM
    model, truth = gmm_truth(seed)
    g = torch.Generator().manual_seed(seed + 1)
    x, xt = model.sample(truth, n, seed=seed + 2), model.sample(truth, n_test, seed=seed + 3)
    x, xt = mcar(x, rate, g, True), mcar(xt, rate, g, True)

    def score(params):
        return float(pg.fit(model, xt, engine="exact", init=params, progress=False).log_prob(xt).mean())

    out = {"truth": score(truth)}
    t = time.process_time()
    fit = pg.fit(model, x, seed=seed, steps=200, progress=False)
    out["probgen EM"] = (score(fit.params), time.process_time() - t)
    for name, make in fillers().items():
        t = time.process_time()
        filled = make().fit_transform(x.numpy())
        sk = SkGMM(model.k, covariance_type="full", max_iter=200, random_state=seed).fit(filled)
        secs = time.process_time() - t
        params = {"weights": torch.as_tensor(sk.weights_), "loc": torch.as_tensor(sk.means_),
                  "scale_tril": torch.linalg.cholesky(torch.as_tensor(sk.covariances_))}
        out[f"{name} + sklearn"] = (score(params), secs)
    return out


def hmm_truth(seed: int):
    g = torch.Generator().manual_seed(seed)
    k, d = 3, 4
    model = HMM(k, "gaussian", dim=d, covariance="full")
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64)
    cov = a @ a.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=torch.float64)
    trans = torch.full((k, k), 0.05, dtype=torch.float64) + 0.85 * torch.eye(k, dtype=torch.float64)
    return model, {"initial": torch.full((k,), 1.0 / k, dtype=torch.float64), "transition": trans / trans.sum(1, keepdim=True),
                   "loc": 2.0 * torch.randn(k, d, generator=g, dtype=torch.float64),
                   "scale_tril": torch.linalg.cholesky(cov)}


def run_hmm(rate: float, seed: int, b: int, b_test: int, T: int) -> dict:
    from hmmlearn.hmm import GaussianHMM
    model, truth = hmm_truth(seed)
    g = torch.Generator().manual_seed(seed + 1)
    x, xt = model.sample(truth, b, seed=seed + 2, T=T), model.sample(truth, b_test, seed=seed + 3, T=T)
    x, xt = mcar(x, rate, g, False), mcar(xt, rate, g, False)
    steps = b_test * T

    def score(params):
        f = pg.fit(model, xt, engine="exact", init=params, progress=False)
        return float(f.log_prob(xt).sum()) / steps

    out = {"truth": score(truth)}
    t = time.process_time()
    fit = pg.fit(model, x, seed=seed, steps=200, progress=False)
    out["probgen EM"] = (score(fit.params), time.process_time() - t)
    flat = x.reshape(b * T, -1).numpy()
    for name, make in fillers().items():
        t = time.process_time()
        filled = make().fit_transform(flat)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            h = GaussianHMM(model.k, covariance_type="full", n_iter=200, random_state=seed).fit(filled, [T] * b)
        secs = time.process_time() - t
        params = {"initial": torch.as_tensor(h.startprob_), "transition": torch.as_tensor(h.transmat_),
                  "loc": torch.as_tensor(h.means_), "scale_tril": torch.linalg.cholesky(torch.as_tensor(h.covars_))}
        out[f"{name} + hmmlearn"] = (score(params), secs)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="smaller data, one seed")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--json", "--out", dest="out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks", "missing.json"))
    a = p.parse_args()
    torch.set_num_threads(1)
    seeds = 1 if a.quick else a.seeds
    sizes = dict(n=1000, n_test=500, b=10, b_test=5, T=100) if a.quick else dict(n=4000, n_test=2000, b=40, b_test=20, T=200)
    rows = []
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for family, fn, kw in (("GMM", run_gmm, dict(n=sizes["n"], n_test=sizes["n_test"])),
                               ("HMM", run_hmm, dict(b=sizes["b"], b_test=sizes["b_test"], T=sizes["T"]))):
            for rate in RATES:
                results = [fn(rate, s, **kw) for s in range(seeds)]
                for method in results[0]:
                    if method == "truth":
                        continue
                    ll = float(np.mean([r[method][0] for r in results]))
                    secs = float(np.mean([r[method][1] for r in results]))
                    row = {"family": family, "missing": rate, "method": method, "heldout_log_lik": ll,
                           "truth_log_lik": float(np.mean([r["truth"] for r in results])), "seconds": secs,
                           "seeds": seeds}
                    rows.append(row)
                    print(f"{family} {int(rate * 100):2d}% {method:32s} held-out {ll:9.4f} "
                          f"(truth {row['truth_log_lik']:9.4f})  {secs:7.2f} s", flush=True)
    meta = {"what": "held-out log-likelihood of the observed cells (GMM: per row; HMM: per step), mean over seeds",
            "sizes": sizes, "threads": 1, "seconds": "CPU seconds (time.process_time) of imputation + fit",
            "torch": torch.__version__}
    if not a.quick:
        with open(a.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
        print("wrote", os.path.normpath(a.out))
    print("\n" + table({"meta": meta, "rows": rows}))


def table(doc: dict) -> str:
    """The docs' table (Markdown) from the JSON ``main`` writes: gap to truth = the generating
    parameters' held-out score minus the method's."""
    out = ["| model | missing | method | held-out log-lik (observed cells) | truth | gap to truth | CPU s |",
           "|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        out.append(f"| {r['family']} | {round(r['missing'] * 100)}% | {r['method']} | {r['heldout_log_lik']:.4f} "
                   f"| {r['truth_log_lik']:.4f} | {r['truth_log_lik'] - r['heldout_log_lik']:.4f} | {r['seconds']:.2f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
