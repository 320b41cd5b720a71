"""Generative vs discriminative classifiers on discretised real data, under 5-fold
stratified cross-validation: AODE (Webb et al. 2005), naive Bayes, a per-class mixture
of categoricals (the generative classifier by Bayes' rule), and logistic regression
(scikit-learn, the discriminative baseline, on the same one-hot features).

    python benchmarks/aode.py [--bins 5] [--folds 5] [--json docs/benchmarks/aode.json]

Data: scikit-learn's bundled breast-cancer, wine and digits sets (loaded offline),
each feature cut into ``--bins`` quantile bins whose edges come from the training fold
only. Reports accuracy and log-loss (mean over folds) and fit+predict seconds.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import torch

import probgen as pg
from probgen.models import AODE, CategoricalMixture, GenerativeClassifier, NaiveBayes


def discretise(train: np.ndarray, test: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantile bins per feature, edges from ``train``; codes 0..bins-1."""
    out_tr, out_te = np.zeros(train.shape, np.int64), np.zeros(test.shape, np.int64)
    for j in range(train.shape[1]):
        edges = np.unique(np.quantile(train[:, j], np.linspace(0, 1, bins + 1)[1:-1]))
        out_tr[:, j] = np.searchsorted(edges, train[:, j], side="right")
        out_te[:, j] = np.searchsorted(edges, test[:, j], side="right")
    return out_tr, out_te


def classifiers(n_classes: int):
    def aode(xtr, ytr, xte):
        fit = pg.fit(AODE(m=1), (xtr, ytr))
        return pg.infer(fit, xte).numpy()

    def naive_bayes(xtr, ytr, xte):
        fit = pg.fit(NaiveBayes(), (xtr, ytr), progress=False)
        return pg.infer(fit, xte, engine="em").numpy()

    def mixture(xtr, ytr, xte):
        fit = pg.fit(GenerativeClassifier(CategoricalMixture(3)), (xtr, ytr), seed=0, steps=100, progress=False)
        return pg.infer(fit, xte, engine="em").numpy()

    def logistic(xtr, ytr, xte):
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import OneHotEncoder
        enc = OneHotEncoder(handle_unknown="ignore").fit(xtr)
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(enc.transform(xtr), ytr)
        return clf.predict_proba(enc.transform(xte))

    return {"AODE": aode, "naive Bayes": naive_bayes, "per-class mixture (3 comp.)": mixture,
            "logistic regression": logistic}


def main() -> None:
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold
    from _tables import parser
    ap = parser("aode", __doc__)
    ap.add_argument("--bins", type=int, default=5)
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    sets = {"breast-cancer": load_breast_cancer(return_X_y=True), "wine": load_wine(return_X_y=True),
            "digits": load_digits(return_X_y=True)}
    print(f"{args.folds}-fold stratified CV, features cut into {args.bins} quantile bins (edges from the "
          "training fold)\n")
    from _tables import emit, table
    columns = ["data (N x D, classes)", "classifier", "accuracy", "log-loss", f"fit+predict s ({args.folds} folds)"]
    print("| " + " | ".join(columns) + " |\n|---|---|---|---|---|")
    rows = []
    for name, (x, y) in sets.items():
        c = int(y.max()) + 1
        folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=0).split(x, y))
        for label, fn in classifiers(c).items():
            accs, losses, secs = [], [], 0.0
            for tr, te in folds:
                xtr, xte = discretise(x[tr], x[te], args.bins)
                t = time.perf_counter()
                p = fn(xtr, y[tr], xte)
                secs += time.perf_counter() - t
                accs.append(float((p.argmax(1) == y[te]).mean()))
                losses.append(log_loss(y[te], np.clip(p, 1e-15, 1), labels=list(range(c))))
            rows.append([f"{name} ({x.shape[0]} x {x.shape[1]}, {c})", label, f"{np.mean(accs):.3f}",
                         f"{np.mean(losses):.3f}", f"{secs:.1f}"])
            print("| " + " | ".join(rows[-1]) + " |", flush=True)
    emit(args.json, f"python benchmarks/aode.py --bins {args.bins} --folds {args.folds}",
         {"classifiers": table(columns, rows)}, show=False, peers=("scikit-learn",),
         note=f"{args.folds}-fold stratified cross-validation, features cut into {args.bins} quantile bins "
         "(edges from the training fold), 1 torch thread")


if __name__ == "__main__":
    main()
