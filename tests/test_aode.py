"""AODE, naive Bayes and the generative classifier by Bayes' rule."""
import itertools
import math

import numpy as np
import pytest
import torch

import probgen as pg
from probgen.models import AODE, BayesianNetwork, CategoricalMixture, GenerativeClassifier, NaiveBayes


def hand_aode(X, y, x, m, a=1.0):
    """Webb et al. (2005) eq. for P(y | x), written with plain loops over the table."""
    X, y = np.asarray(X), np.asarray(y)
    n, d = X.shape
    classes = sorted(set(y.tolist()))
    nv = [int(X[:, j].max()) + 1 for j in range(d)]
    scores = []
    for c in classes:
        parents = [i for i in range(d) if (X[:, i] == x[i]).sum() >= m]
        if parents:
            total = 0.0
            for i in parents:
                f_yxi = ((y == c) & (X[:, i] == x[i])).sum()
                p = (f_yxi + a) / (n + a * len(classes) * nv[i])
                for j in range(d):
                    if j != i:
                        f = ((y == c) & (X[:, i] == x[i]) & (X[:, j] == x[j])).sum()
                        p *= (f + a) / (f_yxi + a * nv[j])
                total += p
            scores.append(total / len(parents))
        else:  # naive Bayes fallback
            f_y = (y == c).sum()
            p = (f_y + a) / (n + a * len(classes))
            for j in range(d):
                p *= (((y == c) & (X[:, j] == x[j])).sum() + a) / (f_y + a * nv[j])
            scores.append(p)
    s = np.array(scores)
    return s / s.sum()


TINY_X = [[0, 1, 2], [0, 1, 1], [1, 0, 2], [1, 1, 0], [0, 0, 2], [1, 0, 1], [0, 1, 0], [1, 1, 2]]
TINY_Y = [0, 0, 1, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("m", [0, 1, 4, 100])
def test_aode_equals_hand_computation(m):
    X, y = torch.tensor(TINY_X), torch.tensor(TINY_Y)
    fit = pg.fit(AODE(m=m), (X, y))
    queries = torch.tensor(list(itertools.product(range(2), range(2), range(3))))
    got = pg.infer(fit, queries, query="marginals")
    for q, row in zip(queries.tolist(), got):
        np.testing.assert_allclose(row.numpy(), hand_aode(TINY_X, TINY_Y, q, m), atol=1e-12)
    assert torch.equal(pg.infer(fit, queries, query="map"), got.argmax(-1))


def test_aode_joint_is_a_distribution_and_samples_follow_it():
    X, y = torch.tensor(TINY_X), torch.tensor(TINY_Y)
    model = AODE()
    fit = pg.fit(model, (X, y))
    grid = torch.tensor(list(itertools.product(range(2), range(2), range(3))))
    total = sum(torch.exp(fit.log_prob((grid, torch.full((len(grid),), c)))).sum().item() for c in range(2))
    assert total == pytest.approx(1.0, abs=1e-12)  # the average of normalised SPODEs
    s = fit.sample(20000, seed=0)
    code = (s["y"] * 12 + s["X"][:, 0] * 6 + s["X"][:, 1] * 3 + s["X"][:, 2]).numpy()
    freq = np.bincount(code, minlength=24) / 20000
    want = np.concatenate([torch.exp(fit.log_prob((grid, torch.full((12,), c)))).numpy() for c in range(2)])
    np.testing.assert_allclose(freq, want, atol=5 * math.sqrt(0.25 / 20000))  # 5 standard errors


def xor_data(n, seed):
    """y = x0 XOR x1 (flipped with probability 0.1) plus two noise features: the class
    depends on a pair of features, which naive Bayes cannot represent."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, (n, 4))
    y = (x[:, 0] ^ x[:, 1]) ^ (rng.random(n) < 0.1)
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


def test_aode_beats_naive_bayes_on_dependent_features():
    X, y = xor_data(600, 0)
    Xt, yt = xor_data(2000, 1)
    aode = pg.fit(AODE(), (X, y))
    nb = pg.fit(NaiveBayes(), (X, y), progress=False)
    acc_aode = (pg.infer(aode, Xt, query="map") == yt).double().mean().item()
    acc_nb = (pg.infer(nb, Xt, query="map", engine="em") == yt).double().mean().item()
    # AODE conditions x1 on (y, x0) and recovers the XOR (Bayes rate 0.9); naive Bayes
    # sees no marginal dependence between any single feature and y (chance, 0.5)
    assert acc_aode > 0.85 and acc_nb < 0.6
    ll_aode = torch.log(pg.infer(aode, Xt)[torch.arange(len(yt)), yt]).mean()
    ll_nb = torch.log(pg.infer(nb, Xt, engine="em")[torch.arange(len(yt)), yt]).mean()
    assert ll_aode > ll_nb


def test_naive_bayes_equals_sklearn_categorical_nb():
    sk = pytest.importorskip("sklearn.naive_bayes")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    X = np.where(rng.random((300, 5)) < 0.5, y[:, None], rng.integers(0, 3, (300, 5)))
    fit = pg.fit(NaiveBayes(pseudo_count=1.0), (X, y), progress=False)
    ours = pg.infer(fit, X[:50], engine="em").numpy()
    theirs = sk.CategoricalNB(alpha=1.0).fit(X, y).predict_proba(X[:50])
    np.testing.assert_allclose(ours, theirs, atol=1e-10)


def test_generative_classifier_with_network_class_conditionals():
    """Bayes' rule over per-class Bayesian networks (fitted exactly by counting) equals the
    posterior of one network with the class as a root parent of every feature's table."""
    spec = {"a": {"states": 2}, "b": {"states": 2, "parents": ["a"]}, "c": {"states": 3, "parents": ["b"]}}
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    a = (rng.random(400) < 0.3 + 0.4 * y).astype(int)
    b = np.where(rng.random(400) < 0.8, a, 1 - a)
    c = (b + y + rng.integers(0, 2, 400)) % 3
    X = np.stack([a, b, c], 1)
    clf = GenerativeClassifier(BayesianNetwork(spec))
    fit = pg.fit(clf, (X, y), engine="exact")
    post = pg.infer(fit, X[:20], engine="exact")
    big = BayesianNetwork({"y": {"states": 2}, "a": {"states": 2, "parents": ["y"]},
                           "b": {"states": 2, "parents": ["y", "a"]}, "c": {"states": 3, "parents": ["y", "b"]}})
    joint = pg.fit(big, np.concatenate([y[:, None], X], 1), engine="exact")
    want = pg.infer(joint, {"a": [str(v) for v in a[:20]], "b": [str(v) for v in b[:20]],
                            "c": [str(v) for v in c[:20]]}, variables=["y"])["y"]
    np.testing.assert_allclose(post.numpy(), want.numpy(), atol=1e-12)


def test_classifier_input_errors():
    with pytest.raises(ValueError, match=r"pair \(X, y\)"):
        pg.fit(AODE(), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="not a non-negative integer code"):
        pg.fit(AODE(), (torch.tensor([[0, -1]]), torch.tensor([0])))
    with pytest.raises(ValueError, match="X has 2 rows but y has 1"):
        pg.fit(AODE(), (torch.zeros(2, 2), torch.tensor([0])))
    fit = pg.fit(AODE(), (torch.tensor(TINY_X), torch.tensor(TINY_Y)))
    with pytest.raises(ValueError, match="feature 2 has values 0..2"):
        pg.infer(fit, torch.tensor([[0, 0, 5]]))
    with pytest.raises(ValueError, match="must be fitted first"):
        pg.infer(AODE(), torch.tensor([[0, 0, 1]]))
    with pytest.raises(ValueError, match="m .the frequency limit"):
        AODE(m=-1)
    with pytest.raises(ValueError, match="exact log_prob"):
        GenerativeClassifier(object())


def test_categorical_mixture_em_increases_likelihood():
    model, x = CategoricalMixture.example()
    model = CategoricalMixture(2, pseudo_count=0.0)
    fit = pg.fit(model, x, steps=50, seed=0, progress=False)
    lls = [h["log_likelihood"] for h in fit.history]
    assert all(b >= a - 1e-9 for a, b in zip(lls, lls[1:]))
    lp = fit.log_prob(x)
    grid = torch.tensor(list(itertools.product(range(3), repeat=4)))
    assert torch.exp(fit.log_prob(grid)).sum().item() == pytest.approx(1.0, abs=1e-12)
    assert lp.shape == (len(x),)


def test_generative_classifier_with_gaussian_mixture_class_conditionals():
    """The README's continuous example: a two-component mixture per iris class. Bayes' rule
    with well-fitted class densities separates iris almost perfectly (LDA/QDA reach ~98%)."""
    from probgen.models import GaussianMixture
    X, y = pg.load_dataset("iris", with_target=True)
    fit = pg.fit(GenerativeClassifier(GaussianMixture(2, dim=4)), (X, y), engine="em", seed=0, progress=False)
    post = pg.infer(fit, X, query="marginals", engine="em")
    assert post.shape == (150, 3)
    assert torch.allclose(post.sum(1), torch.ones(150, dtype=post.dtype), atol=1e-9)
    assert (post.argmax(1) == y).float().mean() > 0.95


def test_bayes_rule_fit_reports_whether_every_class_fit_converged():
    """``fit.converged`` of a Bayes'-rule classifier is every class-conditional fit's: one EM
    step cannot meet tol=1e-3 from a random start, 500 steps do on iris."""
    from probgen.models import GaussianMixture
    X, y = pg.load_dataset("iris", with_target=True)
    model = GenerativeClassifier(GaussianMixture(2, dim=4))
    with pytest.warns(pg.ConvergenceWarning):
        short = pg.fit(model, (X, y), engine="em", steps=1, tol=1e-3, seed=0, progress=False)
    assert short.converged is False and short.state["class_converged"] == [False, False, False]
    long = pg.fit(model, (X, y), engine="em", steps=500, tol=1e-3, seed=0, progress=False)
    assert long.converged is True and long.state["class_converged"] == [True, True, True]
