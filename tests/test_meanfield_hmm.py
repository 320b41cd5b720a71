"""Variational Bayes for HMMs (the ``meanfield`` engine on ``HMM(..., bayesian=True)``):
against hmmlearn's VariationalCategoricalHMM / VariationalGaussianHMM from the same start and
priors, the bound against brute-force enumeration, monotonicity and pruning of unused states."""
import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from torch.distributions import Dirichlet, kl_divergence

import probgen as pg
from probgen.models import HMM


def sticky(K):
    A = torch.full((K, K), 0.1 / (K - 1), dtype=torch.float64)
    A.fill_diagonal_(0.9)
    return A


def gaussian_data(D=1, seed=0, n=8, T=50, cov="diag"):
    model = HMM(3, "gaussian", dim=D, covariance=cov)
    loc = torch.tensor([[-6.0], [0.0], [6.0]], dtype=torch.float64).expand(3, D).clone()
    loc[:, -1] *= -1 if D > 1 else 1
    params = {"initial": torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), "transition": sticky(3), "loc": loc}
    if cov == "full":
        params["scale_tril"] = torch.eye(D, dtype=torch.float64).expand(3, D, D).clone()
    else:
        params["scale"] = torch.ones(3, D, dtype=torch.float64)
    x = model.sample(params, n, seed=seed, T=T)
    return [x[i, : T - 5 * (i % 3)] for i in range(n)]  # unequal lengths: padding is exercised


def categorical_data(seed=0, n=6, T=40):
    model = HMM(3, "categorical", n_symbols=5)
    probs = torch.tensor([[0.7, 0.2, 0.05, 0.03, 0.02], [0.05, 0.1, 0.7, 0.1, 0.05],
                          [0.02, 0.03, 0.05, 0.2, 0.7]], dtype=torch.float64)
    x = model.sample({"initial": torch.full((3,), 1 / 3, dtype=torch.float64), "transition": sticky(3),
                      "probs": probs}, n, seed=seed, T=T)
    return [x[i, : T - 4 * (i % 3)] for i in range(n)]


def run_hmmlearn(ref, start, x, steps):
    """hmmlearn from the same variational parameters, for exactly ``steps`` iterations."""
    X = np.concatenate([s.numpy().reshape(len(s), -1) for s in x])
    lengths = [len(s) for s in x]
    ref.init_params = ""
    ref.n_iter, ref.tol = steps, -np.inf
    # the monitor is built in the constructor, from the tol / n_iter given there
    ref.monitor_.n_iter, ref.monitor_.tol = steps, -np.inf
    ref.fit(X.astype(np.int64) if X.dtype.kind == "i" else X, lengths)
    return ref, np.array(ref.monitor_.history), sum(lengths)


def test_categorical_vb_equals_hmmlearn_from_the_same_start_and_priors():
    hl = pytest.importorskip("hmmlearn.vhmm")
    x = categorical_data()
    model = HMM(4, "categorical", n_symbols=5, bayesian=True, transition_prior=0.5, probs_prior=0.3)
    steps = 25
    start = pg.fit(model, x, steps=0, seed=3, progress=False).state["q"]   # our default start
    fit = pg.fit(model, x, steps=steps, tol=None, seed=3, init_posterior=start, progress=False)
    ref = hl.VariationalCategoricalHMM(4, n_features=5, transmat_prior=0.5, emissionprob_prior=0.3)
    ref.startprob_prior_, ref.transmat_prior_ = np.full(4, 0.25), np.full((4, 4), 0.5)
    ref.emissionprob_prior_ = np.full((4, 5), 0.3)
    ref.startprob_posterior_, ref.transmat_posterior_ = start["initial"].numpy(), start["transition"].numpy()
    ref.emissionprob_posterior_ = start["probs"].numpy()
    ref, bounds, _ = run_hmmlearn(ref, start, x, steps)
    ours = np.array([h["elbo"] for h in fit.history]) * len(x)             # per sequence -> total
    np.testing.assert_allclose(ours, bounds, rtol=1e-10)
    q = fit.state["q"]
    np.testing.assert_allclose(q["initial"].numpy(), ref.startprob_posterior_, rtol=1e-9)
    np.testing.assert_allclose(q["transition"].numpy(), ref.transmat_posterior_, rtol=1e-9)
    np.testing.assert_allclose(q["probs"].numpy(), ref.emissionprob_posterior_, rtol=1e-9)
    np.testing.assert_allclose(fit.params["transition"].numpy(), ref.transmat_, rtol=1e-9)
    np.testing.assert_allclose(fit.params["probs"].numpy(), ref.emissionprob_, rtol=1e-9)


@pytest.mark.parametrize("D,cov", [(1, "diag"), (2, "full"), (3, "full")])
def test_gaussian_vb_equals_hmmlearn_from_the_same_start_and_priors(D, cov):
    hl = pytest.importorskip("hmmlearn.vhmm")
    x = gaussian_data(D, cov=cov)
    K = 4
    cp = 0.2 * np.eye(D) + 0.05 if cov == "full" else np.full(D, 0.2)
    priors = dict(mean_prior=np.linspace(-1, 1, D), mean_precision_prior=0.5, degrees_of_freedom_prior=D + 1.5,
                  covariance_prior=cp, initial_prior=0.7)
    model = HMM(K, "gaussian", dim=D, covariance=cov, bayesian=True, **priors)
    steps = 30
    start = pg.fit(model, x, steps=0, seed=1, progress=False).state["q"]
    fit = pg.fit(model, x, steps=steps, tol=None, seed=1, init_posterior=start, progress=False)
    ref = hl.VariationalGaussianHMM(K, covariance_type=cov)
    ref.n_features = D
    ref.startprob_prior_, ref.transmat_prior_ = np.full(K, 0.7), np.full((K, K), 1 / K)
    ref.means_prior_, ref.beta_prior_ = np.tile(priors["mean_prior"], (K, 1)), np.full(K, 0.5)
    ref.dof_prior_ = np.full(K, D + 1.5)
    ref.scale_prior_ = np.broadcast_to(cp, (K, D, D)).copy() if cov == "full" else np.tile(cp, (K, 1))
    ref.startprob_posterior_, ref.transmat_posterior_ = start["initial"].numpy(), start["transition"].numpy()
    ref.means_posterior_, ref.beta_posterior_ = start["m"].numpy(), start["beta"].numpy()
    ref.dof_posterior_, ref.scale_posterior_ = start["nu"].numpy(), start["W_inv"].numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's k-means (hmmlearn's _init, unused here) warns on some setups
        ref, bounds, n_steps = run_hmmlearn(ref, start, x, steps)
    # hmmlearn's bound leaves out the −D/2 log 2π of every step's Gaussian density
    ours = np.array([h["elbo"] for h in fit.history]) * len(x) + 0.5 * n_steps * D * math.log(2 * math.pi)
    np.testing.assert_allclose(ours, bounds, rtol=1e-10)
    q = fit.state["q"]
    np.testing.assert_allclose(q["m"].numpy(), ref.means_posterior_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(q["beta"].numpy(), ref.beta_posterior_, rtol=1e-9)
    np.testing.assert_allclose(q["nu"].numpy(), ref.dof_posterior_, rtol=1e-9)
    np.testing.assert_allclose(q["W_inv"].numpy(), ref.scale_posterior_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(q["transition"].numpy(), ref.transmat_posterior_, rtol=1e-9)
    cov_ours = (fit.params["scale_tril"] @ fit.params["scale_tril"].transpose(-1, -2) if cov == "full"
                else torch.diag_embed(fit.params["scale"] ** 2))
    np.testing.assert_allclose(cov_ours.numpy(), ref.covars_, rtol=1e-8, atol=1e-12)


def test_the_bound_equals_brute_force_enumeration_of_the_states():
    """ELBO = E_q[log p(x, z, θ)] − E_q[log q(z)] − E_q[log q(θ)], with q(z) the exact
    posterior of the sub-normalised chain enumerated over all K^T paths and the Dirichlet
    terms from torch.distributions (independent of the method's forward-backward and KL)."""
    x = [torch.tensor([0, 2, 1, 2]), torch.tensor([1, 1, 0])]
    model = HMM(2, "categorical", n_symbols=3, bayesian=True, probs_prior=0.7)
    fit = pg.fit(model, x, steps=1, tol=None, seed=0, progress=False)
    q0 = pg.fit(model, x, steps=0, seed=0, progress=False).state["q"]     # the q the first step used
    p = model.prior_hyperparameters(x)
    elog = {k: torch.digamma(q0[k]) - torch.digamma(q0[k].sum(-1, keepdim=True)) for k in ("initial", "transition",
                                                                                             "probs")}
    total = 0.0
    for seq in x:
        scores = []
        for z in itertools.product(range(2), repeat=len(seq)):
            s = elog["initial"][z[0]] + sum(elog["transition"][z[t - 1], z[t]] for t in range(1, len(seq)))
            scores.append(s + sum(elog["probs"][z[t], seq[t]] for t in range(len(seq))))
        scores = torch.stack(scores)
        qz = torch.softmax(scores, 0)
        total += float((qz * scores).sum() - (qz * torch.log(qz)).sum())   # E_q[log p̃] + H[q(z)]
    kl = sum(float(kl_divergence(Dirichlet(q0[k]), Dirichlet(p[k + "_prior"])).sum())
             for k in ("initial", "transition", "probs"))
    assert fit.history[0]["elbo"] * len(x) == pytest.approx(total - kl, rel=1e-12)


@pytest.mark.parametrize("emission,cov", [("categorical", None), ("gaussian", "diag"), ("gaussian", "full")])
def test_the_bound_never_decreases_and_unused_states_are_pruned(emission, cov):
    if emission == "categorical":
        x, model = categorical_data(n=20, T=60), HMM(5, "categorical", n_symbols=5, bayesian=True)
    else:
        x, model = gaussian_data(2, n=10, cov=cov), HMM(5, "gaussian", dim=2, covariance=cov, bayesian=True)
    # five states for three: eight restarts, each checked for monotonicity; the best bound wins.
    # A single restart from the default start ends with exactly three states 3-4 times in 8
    # (measured, seeds restart_seeds(0, 8), each case); the others stop in local optima that
    # keep a split state (or merge two), at a lower bound
    records = []
    fit = pg.fit(model, x, steps=500, tol=1e-10, seed=0, n_init=8, progress=False, callback=records.append)
    runs = np.split(np.array([r["elbo"] for r in records]), [i for i, r in enumerate(records) if r["step"] == 0][1:])
    assert len(runs) == 8
    for elbo in runs:
        # an E-step and an M-step each maximise the bound over one factor: rounding only
        assert (np.diff(elbo) >= -1e-12 * np.abs(elbo[1:])).all()
        assert elbo[-1] > elbo[0]
    counts = fit.state["state_counts"]
    assert fit.state["effective_states"] == 3, counts
    assert float(counts.sum()) == pytest.approx(sum(len(s) for s in x), rel=1e-12)
    assert counts.sort(descending=True).values[3:].max() < 1e-3 * float(counts.sum())


def test_vb_fit_is_usable_and_refuses_what_it_cannot_do():
    x = gaussian_data(1)
    fit = pg.fit(HMM(3, "gaussian", dim=1, bayesian=True), x, seed=0, progress=False)
    assert fit.engine == "meanfield" and fit.method == "hmm-vb" and fit.objective == "elbo"
    assert fit.converged is True
    assert fit.log_prob(x).shape == (len(x),)       # exact, at the posterior means
    assert sorted(fit.params["loc"][:, 0].round().tolist()) == [-6.0, 0.0, 6.0]
    assert pg.infer(fit, x, query="map").shape[0] == len(x)
    with pytest.raises(ValueError, match="engines that do"):
        pg.fit(HMM(3, "gaussian", dim=1, bayesian=True), x, engine="em")
    with pytest.raises(ValueError, match="pass bayesian=True"):
        HMM(3, "gaussian", dim=1, mean_precision_prior=2.0)
    with pytest.raises(ValueError, match="categorical or gaussian"):
        HMM(3, "poisson", bayesian=True)
    with pytest.raises(ValueError, match="not priors of a categorical"):
        HMM(3, "categorical", n_symbols=4, bayesian=True, mean_prior=0.0)
    with pytest.raises(ValueError, match="degrees_of_freedom_prior must exceed"):
        HMM(3, "gaussian", dim=3, covariance="full", bayesian=True, degrees_of_freedom_prior=1.5)
    with pytest.raises(ValueError, match="covariance_prior must be a scalar or have shape"):
        HMM(3, "gaussian", dim=2, bayesian=True, covariance_prior=np.ones(3))
    with pytest.raises(ValueError, match="init_posterior must be a dict"):
        pg.fit(HMM(3, "gaussian", dim=1, bayesian=True), x, init_posterior={"m": 0})
    with pytest.raises(ValueError, match="no number of free parameters"):
        HMM(3, "gaussian", dim=1, bayesian=True).num_free_params()
