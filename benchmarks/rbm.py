"""RBM training speed and quality: probgen vs scikit-learn's BernoulliRBM, in one process
with the same number of threads.

  (a) binarised 8×8 digits (train split), 64 hidden, batch 20, lr 0.05, 30 epochs
  (b) 60,000 × 784 generated binary data, 500 hidden, batch 100, EPOCHS_B epochs
  (c) a 12-hidden RBM trained the same way as (a) by both: exact test log-likelihood
      (enumerating 2^12 hidden states) on the fixed test split.

Speed: both train with PCD-1 (scikit-learn's algorithm: persistent chains, one Gibbs
step, n_chains = batch size); probgen in its default float32 training precision (and,
for reference, float64). Quality: exact test log-likelihood of both PCD-1 and probgen's
default CD-1, three seeds each. Times are CPU seconds of this process (with --threads 1,
the default, the least disturbed by other jobs on a shared machine), after a warm-up fit.
Run:  python benchmarks/rbm.py [--quick] [--epochs-b N] [--json docs/benchmarks/rbm.json]
"""
from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.neural_network import BernoulliRBM
from threadpoolctl import threadpool_limits

import probgen as pg
from probgen.data import split
from probgen.models import RBM


def sk_fit(x, n_hidden, batch, lr, epochs, seed=0):
    rbm = BernoulliRBM(n_components=n_hidden, batch_size=batch, learning_rate=lr, n_iter=epochs,
                       random_state=seed)
    t = time.process_time()
    rbm.fit(x)
    return rbm, (time.process_time() - t) / epochs


def pg_fit(x, n_hidden, batch, lr, epochs, seed=0, dtype="float32", persistent=True):
    t = time.process_time()
    fit = pg.fit(RBM(x.shape[1], n_hidden), x, engine="mcmc", steps=epochs, batch_size=batch, lr=lr,
                 persistent=persistent, seed=seed, progress=False, dtype=dtype)
    return fit, (time.process_time() - t) / epochs


def exact_test_ll(params, x_train, x_test):
    model = RBM(x_test.shape[1], params["W"].shape[1])
    fit = pg.fit(model, x_train, engine="exact", init=params, steps=0)
    assert fit.log_prob_kind == "exact"
    return float(fit.log_prob(x_test).mean())


def sk_params(rbm):
    return {"W": torch.as_tensor(rbm.components_.T.copy()), "b": torch.as_tensor(rbm.intercept_visible_),
            "c": torch.as_tensor(rbm.intercept_hidden_)}


def main():
    from _tables import parser
    ap = parser("rbm", __doc__)
    ap.add_argument("--quick", action="store_true", help="fewer epochs and rows in (b)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs-b", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pg.set_num_threads(args.threads)  # probgen's calls use the same count (their default is 1)
    rows = []
    with threadpool_limits(args.threads):
        x = pg.load_dataset("digits-binary")
        x_train, x_test = split(x)
        xn = x_train.numpy()
        # warm-up: the first fit of a process pays imports and first-call costs (both dtypes)
        pg_fit(x_train[:100], 64, 20, 0.05, 1), pg_fit(x_train[:100], 64, 20, 0.05, 1, dtype="float64")
        sk_fit(xn[:100], 64, 20, 0.05, 1)
        # (a)
        _, sk_a = sk_fit(xn, 64, 20, 0.05, 30)
        _, pg_a = pg_fit(x_train, 64, 20, 0.05, 30)
        _, pg_a64 = pg_fit(x_train, 64, 20, 0.05, 30, dtype="float64")
        rows.append(("(a) digits 1438×64, 64 hidden, batch 20, 30 epochs", sk_a, pg_a))
        rows.append(("(a) same, probgen dtype='float64'", sk_a, pg_a64))
        # (b)
        n_b = 10000 if args.quick else 60000
        ep_b = 1 if args.quick else args.epochs_b
        rng = np.random.default_rng(0)
        protos = rng.random((10, 784)) < 0.3
        xb = np.logical_xor(protos[rng.integers(10, size=n_b)], rng.random((n_b, 784)) < 0.05).astype(np.float64)
        _, sk_b = sk_fit(xb, 500, 100, 0.05, ep_b)
        _, pg_b = pg_fit(torch.from_numpy(xb), 500, 100, 0.05, ep_b)
        _, pg_b64 = pg_fit(torch.from_numpy(xb), 500, 100, 0.05, ep_b, dtype="float64")
        rows.append((f"(b) generated {n_b}×784, 500 hidden, batch 100, {ep_b} epochs", sk_b, pg_b))
        rows.append(("(b) same, probgen dtype='float64'", sk_b, pg_b64))
        # (c) three seeds each
        seeds = range(3)
        ll = {"scikit-learn BernoulliRBM (PCD-1)": [], "probgen RBM, PCD-1 (persistent=True)": [],
              "probgen RBM, CD-1 (the default)": []}
        for seed in seeds:
            sk12, _ = sk_fit(xn, 12, 20, 0.05, 30, seed=seed)
            ll["scikit-learn BernoulliRBM (PCD-1)"].append(exact_test_ll(sk_params(sk12), x_train, x_test))
            for name, pers in (("probgen RBM, PCD-1 (persistent=True)", True), ("probgen RBM, CD-1 (the default)", False)):
                f, _ = pg_fit(x_train, 12, 20, 0.05, 30, seed=seed, persistent=pers)
                ll[name].append(exact_test_ll(f.params, x_train, x_test))
    print(f"threads: {args.threads}")
    from _tables import emit, table
    emit(args.json, "python benchmarks/rbm.py" + (" --quick" if args.quick else ""), {
        "speed": table(["case", "scikit-learn CPU s/epoch", "probgen CPU s/epoch", "speed-up"],
                       [[name, f"{s:.4f}", f"{p:.4f}", f"{s / p:.2f}×"] for name, s, p in rows], ["", "r", "r", "r"]),
        "quality": table(["12-hidden RBM, batch 20, lr 0.05, 30 epochs",
                          f"exact test log-likelihood, nats/image (seeds {', '.join(map(str, seeds))})", "mean"],
                         [[name, ", ".join(f"{v:.2f}" for v in vals), f"{np.mean(vals):.2f}"] for name, vals in ll.items()],
                         ["", "r", "r"])}, peers=("scikit-learn",), note=f"{args.threads} thread(s) each")


if __name__ == "__main__":
    main()
