"""RBM, DBN and DBM on the binarised 8×8 digits: train, estimate test log-likelihoods
with annealed importance sampling, and draw samples, filters and the model graphs.

    python examples/boltzmann_digits.py            # writes docs/img/boltzmann_*.png|svg
    python examples/boltzmann_digits.py --quick    # a smoke run
    python examples/boltzmann_digits.py --json docs/benchmarks/boltzmann_digits.json   # the docs' table

Test log-likelihood (nats per image, the fixed 20 % test split): log p*(v) with the hidden
units summed out (RBM: exactly; DBM: the odd layer exactly, the even one by importance
sampling from the mean-field posterior; DBN: importance sampling from the bottom-up
recognition pass), minus log Z by AIS (Salakhutdinov & Murray 2008).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

import probgen as pg
from probgen.data import split
from probgen.graph import render
from probgen.models import DBM, DBN, RBM
from probgen.plots import save_samples_png

IMG = os.path.join(os.path.dirname(__file__), "..", "docs", "img")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=IMG)
    ap.add_argument("--json", default=None, metavar="PATH", help="write the table(s) as JSON (docs/benchmarks/boltzmann_digits.json; benchmarks/_tables.py)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    epochs = 3 if args.quick else 100
    temps = 500 if args.quick else 10000
    os.makedirs(args.out, exist_ok=True)
    x_train, x_test = split(pg.load_dataset("digits-binary"))
    common = dict(batch_size=20, lr=0.05, momentum=0.5, seed=0, progress=not args.quick)
    # (the DBM's lr applies to pretraining too; S&H 2009 train the joint model with a small rate)
    runs = {
        "RBM 64-100, CD-1": (RBM(64, 100), dict(engine="mcmc", steps=epochs, **common)),
        "RBM 64-100, PCD-1 (lr 0.01, 100 chains)": (
            RBM(64, 100), dict(engine="mcmc", steps=epochs, persistent=True, n_chains=100, **dict(common, lr=0.01))),
        "DBN 64-100-50, stacked RBMs (CD-1)": (DBN(64, 100, 50), dict(engine="mcmc", steps=epochs, **common)),
        "DBM 64-100-50, pretrained (CD-1) + mean-field/PCD-5 (lr 0.002, 100 chains)": (
            DBM(64, 100, 50), dict(engine="meanfield", steps=epochs, pretrain=True, pretrain_steps=epochs,
                                   n_chains=100, k=5, **dict(common, lr=0.002))),
    }
    rows = []
    for name, (model, opts) in runs.items():
        t = time.perf_counter()
        fit = pg.fit(model, x_train, **opts)
        train_s = time.perf_counter() - t
        z = fit.log_partition("ais", chains=100, temperatures=temps)
        ll_test = float(fit.log_prob(x_test, temperatures=temps).mean())
        ll_train = float(fit.log_prob(x_train[:500], temperatures=temps).mean())
        rows.append((name, ll_train, ll_test, z.value, z.stderr, fit.log_prob_kind, train_s))
        tag = type(model).__name__.lower() + ("_pcd" if "PCD-1" in name else "")
        save_samples_png(fit.sample(30, seed=1), os.path.join(args.out, f"boltzmann_{tag}_samples.png"))
        if tag == "rbm_pcd":
            W = fit.params["W"].T[:30]  # one 8×8 filter per hidden unit
            save_samples_png((W - W.min()) / (W.max() - W.min()),
                             os.path.join(args.out, "boltzmann_rbm_filters.png"))
        if tag in ("dbn", "dbm"):
            try:
                render(model, os.path.join(args.out, f"boltzmann_{tag}.svg"))
            except ValueError as exc:  # no Graphviz
                print(exc)
    render(RBM(6, 4), os.path.join(args.out, "boltzmann_rbm_units.svg"), expand=True)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
    from _tables import emit, table  # the benchmarks' shared JSON table format
    emit(args.json, "python examples/boltzmann_digits.py" + (" --quick" if args.quick else ""), {"digits": table(
        ["model", "train LL", "test LL", "log Z (AIS) ± s.e.", "kind", "train s"],
        [[name, f"{tr:.2f}", f"{te:.2f}", f"{z:.2f} ± {se:.2f}", kind, f"{s:.0f}"] for name, tr, te, z, se, kind, s in rows],
        ["", "r", "r", "r", "", "r"])}, note="No peer library: probgen's own AIS estimates")


if __name__ == "__main__":
    main()
