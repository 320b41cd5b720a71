"""The Gaussian mixture with every engine, against oracles: scikit-learn's EM from the same
start, scipy densities, hand-computed posteriors, and parameter recovery from simulated
data."""
import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

import probgen as pg
from probgen.models import GaussianMixture
from probgen.models.mixture import CholeskyInverseWishart, FillTrilTransform
from probgen.ops import gaussian

TRUTH = {"weights": torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64),
         "loc": torch.tensor([[-4.0, 0.0], [0.0, 4.0], [4.0, -1.0]], dtype=torch.float64),
         "scale_tril": torch.tensor([[[1.0, 0.0], [0.4, 0.7]],
                                     [[0.8, 0.0], [-0.3, 1.0]],
                                     [[0.6, 0.0], [0.0, 0.6]]], dtype=torch.float64)}




def simulate(n, seed=0):
    return GaussianMixture(3, 2).sample(TRUTH, n, seed=seed)


def aligned(fit_loc, true_loc):
    """The permutation of fitted components closest to the truth (labels are arbitrary)."""
    k = len(true_loc)
    return min(itertools.permutations(range(k)), key=lambda p: float((fit_loc[list(p)] - true_loc).norm()))


def sklearn_from(init, covariance, iters):
    from sklearn.mixture import GaussianMixture as SkGMM
    f = init["scale_tril" if covariance == "full" else "scale"]
    prec = torch.cholesky_inverse(f) if covariance == "full" else 1.0 / f.square()
    return SkGMM(len(init["weights"]), covariance_type=covariance, max_iter=iters, tol=0.0,
                 weights_init=init["weights"].numpy(), means_init=init["loc"].numpy(),
                 precisions_init=prec.numpy())


# ---- EM ---------------------------------------------------------------------------------

@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_em_equals_sklearn_from_the_same_start(covariance):
    x = pg.load_dataset("iris")
    model = GaussianMixture(3, 4, covariance)
    init = model.init_params(x, seed=3, method="random")
    fit = pg.fit(model, x, engine="em", steps=25, tol=0.0, init=init, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = sklearn_from(init, covariance, 25).fit(x.numpy())
    # same algorithm in float64: the two differ only by rounding (~1e-13 here), far inside 1e-6
    assert len(fit.history) == sk.n_iter_ == 25
    assert fit.history[-1]["log_likelihood"] == pytest.approx(sk.lower_bound_, rel=1e-6)
    np.testing.assert_allclose(fit.params["loc"].numpy(), sk.means_, rtol=1e-6)
    np.testing.assert_allclose(fit.params["weights"].numpy(), sk.weights_, rtol=1e-6)
    cov = fit.params["scale_tril"] @ fit.params["scale_tril"].mT if covariance == "full" \
        else fit.params["scale"].square()
    np.testing.assert_allclose(cov.numpy(), sk.covariances_, rtol=1e-6)


@pytest.mark.parametrize("covariance,method", [("full", "random"), ("diag", "kmeans++"), ("spherical", "random")])
def test_em_log_likelihood_never_decreases(covariance, method):
    x = simulate(400, seed=1)
    model = GaussianMixture(4, 2, covariance)  # one component too many: a slow, long ascent
    fit = pg.fit(model, x, engine="em", steps=60, tol=0.0, seed=2, init_method=method, progress=False)
    ll = [h["log_likelihood"] for h in fit.history]
    # EM's monotonicity is exact; allow only float64 rounding of a mean of 400 terms
    assert all(b >= a - 1e-12 * abs(a) for a, b in zip(ll, ll[1:]))
    assert ll[-1] > ll[0]


def test_em_recovers_parameters():
    x = simulate(3000, seed=0)
    fit = pg.fit(GaussianMixture(3, 2), x, engine="em", seed=0, n_init=3, progress=False)
    p = list(aligned(fit.params["loc"], TRUTH["loc"]))
    # standard errors with N_k >= 600: means ~ 1/sqrt(600) = 0.04, weights ~ sqrt(.25/3000) = 0.01,
    # covariance entries ~ sqrt(2/600) = 0.06; tolerances are about 3-4 standard errors
    torch.testing.assert_close(fit.params["loc"][p], TRUTH["loc"], atol=0.15, rtol=0)
    torch.testing.assert_close(fit.params["weights"][p], TRUTH["weights"], atol=0.04, rtol=0)
    cov = lambda l: l @ l.mT  # noqa: E731
    torch.testing.assert_close(cov(fit.params["scale_tril"][p]), cov(TRUTH["scale_tril"]), atol=0.2, rtol=0)
    assert fit.state["converged"]


def test_em_restarts_keep_the_best_and_seed_reproduces():
    x = simulate(300, seed=4)
    model = GaussianMixture(3, 2)
    one = pg.fit(model, x, engine="em", seed=5, n_init=1, init_method="random", progress=False)
    many = pg.fit(model, x, engine="em", seed=5, n_init=4, init_method="random", progress=False)
    again = pg.fit(model, x, engine="em", seed=5, n_init=4, init_method="random", progress=False)
    assert many.history[-1]["log_likelihood"] >= one.history[-1]["log_likelihood"] - 1e-12
    assert torch.equal(many.params["loc"], again.params["loc"])


def test_em_partial_init_and_reg_covar():
    x = simulate(200, seed=6)
    model = GaussianMixture(3, 2, "diag")
    fit = pg.fit(model, x, engine="em", steps=1, tol=0.0, seed=0, init={"loc": TRUTH["loc"]},
                 reg_covar=0.5, progress=False)
    assert (fit.params["scale"].square() >= 0.5).all()  # the floor is added to every variance


# ---- exact log-density, sampling, initialisation -------------------------------------

@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
def test_log_prob_matches_scipy(covariance):
    model = GaussianMixture(3, 2, covariance)
    x = simulate(50, seed=7)
    params = model.init_params(x, seed=0)
    f = params[model.factor_name]
    if covariance == "full":
        covs = f @ f.mT
    elif covariance == "diag":
        covs = torch.diag_embed(f.square())
    else:
        covs = f.square()[:, None, None] * torch.eye(2, dtype=torch.float64)
    dens = sum(float(params["weights"][k]) * stats.multivariate_normal(params["loc"][k].numpy(), covs[k].numpy()).pdf(x.numpy())
               for k in range(3))
    np.testing.assert_allclose(model.log_prob(params, x).numpy(), np.log(dens), rtol=1e-10)


def test_log_gaussian_is_chunked_exactly():
    x = simulate(300, seed=8)
    model = GaussianMixture(3, 2)
    p = model.init_params(x, seed=0)
    whole = gaussian.log_gaussian(x, p["loc"], p["scale_tril"], "full", chunk=10_000)
    pieces = gaussian.log_gaussian(x, p["loc"], p["scale_tril"], "full", chunk=7)
    torch.testing.assert_close(whole, pieces, rtol=1e-12, atol=1e-12)


def test_sample_moments():
    model = GaussianMixture(3, 2)
    x, z = model.sample(TRUTH, 20000, seed=0, return_assignments=True)
    assert x.shape == (20000, 2) and x.dtype == torch.float64
    freq = torch.bincount(z, minlength=3).double() / len(z)
    torch.testing.assert_close(freq, TRUTH["weights"], atol=0.015, rtol=0)  # ~4 standard errors
    mean = (TRUTH["weights"][:, None] * TRUTH["loc"]).sum(0)
    torch.testing.assert_close(x.mean(0), mean, atol=0.1, rtol=0)  # sd of the mean ~ 3.4/sqrt(2e4)
    assert torch.equal(model.sample(TRUTH, 5, seed=1), model.sample(TRUTH, 5, seed=1))


def test_init_params_seeded_and_valid():
    x = simulate(100, seed=9)
    model = GaussianMixture(3, 2)
    a, b = model.init_params(x, seed=1), model.init_params(x, seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    model.check_params(a)  # valid shapes / supports


# ---- exact queries -----------------------------------------------------------------

def test_exact_marginals_and_map_by_hand():
    model = GaussianMixture(3, 2)
    x = torch.tensor([[-4.0, 0.1], [0.2, 3.5], [1.5, 1.0]], dtype=torch.float64)
    fit = pg.fit(model, x, engine="exact", init=TRUTH, progress=False)
    resp = pg.infer(fit, x, query="marginals")
    joint = np.stack([TRUTH["weights"][k].item() * stats.multivariate_normal(
        TRUTH["loc"][k].numpy(), (TRUTH["scale_tril"][k] @ TRUTH["scale_tril"][k].T).numpy()).pdf(x.numpy())
        for k in range(3)], 1)
    np.testing.assert_allclose(resp.numpy(), joint / joint.sum(1, keepdims=True), rtol=1e-9)
    assert pg.infer(fit, x, query="map").tolist() == joint.argmax(1).tolist()
    np.testing.assert_allclose(fit.log_prob(x).numpy(), np.log(joint.sum(1)), rtol=1e-10)
    assert fit.log_prob_kind == "exact"


def test_infer_needs_parameters():
    with pytest.raises(ValueError, match="no parameters"):
        pg.infer(GaussianMixture(3, 2), simulate(10), query="map")
    fit = pg.fit(GaussianMixture(3, 2), simulate(30), engine="exact", seed=0, progress=False)
    with pytest.raises(ValueError, match="queries"):
        pg.infer(fit, simulate(10), query="sample")


# ---- svi and mcmc --------------------------------------------------------------------

FAR_START = {"weights": torch.full((3,), 1 / 3, dtype=torch.float64),
             "loc": TRUTH["loc"] + torch.tensor([[1.5, -1.0], [-1.0, 1.0], [1.0, 1.5]], dtype=torch.float64),
             "scale_tril": 1.5 * torch.eye(2, dtype=torch.float64).expand(3, 2, 2).clone()}


def test_svi_reaches_the_em_maximum_from_a_far_start():
    x = simulate(600, seed=10)
    model = GaussianMixture(3, 2)
    fit = pg.fit(model, x, engine="svi", steps=400, lr=0.05, seed=0, init=FAR_START, progress=False)
    em = pg.fit(model, x, engine="em", init=FAR_START, tol=1e-10, steps=500, progress=False)
    assert fit.log_prob_kind == "exact"  # the assignment is enumerated out: the exact likelihood
    ll_svi, ll_em = float(fit.log_prob(x).mean()), float(em.log_prob(x).mean())
    # both maximise the same likelihood; Adam's last iterate sits within ~1e-3 nats / example
    assert ll_svi == pytest.approx(ll_em, abs=5e-3)
    torch.testing.assert_close(fit.params["loc"], em.params["loc"], atol=0.05, rtol=0)
    torch.testing.assert_close(fit.params["loc"], TRUTH["loc"], atol=0.25, rtol=0)  # ~5 SE at N_k >= 120


def test_mcmc_lifts_a_plain_mixture_and_recovers_parameters():
    x = simulate(150, seed=11)
    model = GaussianMixture(3, 2, "spherical")
    fit = pg.fit(model, x, engine="mcmc", steps=60, warmup=60, seed=0, progress=False)
    assert fit.state["lifted"] == ["loc", "scale", "weights"]
    assert fit.log_prob_kind == "estimate"
    assert fit.state["samples"]["loc"].shape == (60, 3, 2)
    draws = fit.sample(40, seed=1)  # posterior predictive: one posterior draw per example, seeded
    assert draws.shape == (40, 2) and torch.equal(draws, fit.sample(40, seed=1))
    p = list(aligned(fit.params["loc"], TRUTH["loc"]))
    # posterior sd of a mean with N_k >= 30 points of sd <= 1 is <= 0.2; 0.5 is 2.5 sd
    torch.testing.assert_close(fit.params["loc"][p], TRUTH["loc"], atol=0.5, rtol=0)
    torch.testing.assert_close(fit.params["weights"][p], TRUTH["weights"], atol=0.12, rtol=0)
    em = pg.fit(model, x, engine="em", seed=0, progress=False)
    # the posterior predictive of the training data sits just below the maximum likelihood
    ll = float(fit.log_prob(x).mean())
    assert float(em.log_prob(x).mean()) - 0.25 < ll < float(em.log_prob(x).mean()) + 0.05


def test_bayesian_mixture_svi_and_mcmc():
    # N_k >= 60 points per component: the Normal–Wishart prior (mean_precision_prior = 1)
    # shrinks each mean towards the data mean by 1 / (1 + N_k) of the distance, < 0.1 here
    x = simulate(300, seed=12)
    model = GaussianMixture(3, 2, bayesian=True)
    assert "em" not in pg.compatible(model)
    with pytest.raises(ValueError, match="engines that do"):
        pg.fit(model, x, engine="em")
    h = model.prior_hyperparameters(x)
    assert h["weight_concentration_prior"] == pytest.approx(1 / 3) and h["degrees_of_freedom_prior"] == 2
    torch.testing.assert_close(h["covariance_prior"], torch.from_numpy(np.cov(x.numpy().T)))
    svi = pg.fit(model, x, engine="svi", steps=300, lr=0.05, seed=0, guide="normal", progress=False)
    assert set(svi.params) == {"weights", "loc", "scale_tril"}  # the guide's medians
    p = list(aligned(svi.params["loc"], TRUTH["loc"]))
    torch.testing.assert_close(svi.params["loc"][p], TRUTH["loc"], atol=0.4, rtol=0)
    delta = pg.fit(model, x, engine="svi", steps=5, seed=0, guide="delta", progress=False)
    assert torch.isfinite(delta.log_prob(x)).all()
    mc = pg.fit(model, x[:60], engine="mcmc", steps=10, warmup=10, seed=0, progress=False)
    assert mc.state["lifted"] == [] and set(mc.state["samples"]) == {"weights", "loc", "scale_tril"}
    assert torch.isfinite(mc.log_prob(x)).all() and mc.log_prob_kind == "estimate"


def test_cholesky_inverse_wishart_density():
    d, nu = 3, 5.0
    cp = torch.tensor([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 0.5]], dtype=torch.float64)
    prior = CholeskyInverseWishart(torch.tensor(nu, dtype=torch.float64), cp)
    L = prior.sample((4,))
    sigma = L @ L.mT
    # oracle: scipy's inverse-Wishart density of Σ (scale = covariance_prior) times |∂Σ/∂L|
    jac = d * math.log(2) + (torch.arange(d, 0, -1) * torch.log(torch.diagonal(L, dim1=-2, dim2=-1))).sum(-1)
    want = torch.tensor([stats.invwishart(df=nu, scale=cp.numpy()).logpdf(s.numpy()) for s in sigma]) + jac
    torch.testing.assert_close(prior.log_prob(L), want, rtol=1e-9, atol=1e-9)
    t = FillTrilTransform()
    torch.testing.assert_close(t(t.inv(L)), L)


# ---- bad input ---------------------------------------------------------------------

@pytest.mark.parametrize("bad,match", [
    (torch.zeros(5, 3), r"shape \(N, 2\)"),
    (torch.zeros(2, 5, 2), r"shape \(N, 2\)"),
    (torch.tensor([[float("nan"), float("nan")]]), "entirely missing"),
    (torch.tensor([[0.0, float("inf")]]), "inf"),
    (torch.zeros(0, 2), "empty"),
    ("text", "numeric"),
])
def test_bad_data(bad, match):
    for engine in ("em", "svi", "exact"):
        with pytest.raises(ValueError, match=match):
            pg.fit(GaussianMixture(2, 2), bad, engine=engine, steps=1)


def test_nan_cells_are_missing_values_for_em_and_exact_only():
    x = simulate(30)
    x[0, 1] = float("nan")
    for engine in ("svi", "mcmc"):
        with pytest.raises(ValueError, match=r"missing cells \(NaN\)"):
            pg.fit(GaussianMixture(3, 2), x, engine=engine, steps=1)
    for engine in ("em", "exact"):
        assert torch.isfinite(pg.fit(GaussianMixture(3, 2), x, engine=engine, steps=1, progress=False).log_prob(x)).all()


def test_bad_engines_options_and_arguments():
    x = simulate(30)
    model = GaussianMixture(2, 2)
    with pytest.raises(ValueError, match=r"unknown engine 'nope'.*\['exact', 'em', 'svi', 'mcmc'\]"):
        pg.fit(model, x, engine="nope")
    with pytest.raises(ValueError, match="adversarial|unknown engine"):
        pg.fit(model, x, engine="adversarial")
    with pytest.raises(ValueError, match="unknown em options.*known: tol"):
        pg.fit(model, x, engine="em", learning_rate=3)
    with pytest.raises(ValueError, match="n_init"):
        pg.fit(model, x, engine="em", n_init=0)
    with pytest.raises(ValueError, match="fewer than k"):
        pg.fit(GaussianMixture(5, 2), x[:3], engine="em")
    with pytest.raises(ValueError, match=r"init\[.loc.\] has shape \(3, 2\); GaussianMixture expects \(2, 2\)"):
        pg.fit(model, x, engine="em", init={"loc": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="covariance must be one of"):
        GaussianMixture(2, 2, "tied")
    with pytest.raises(ValueError, match="positive integer"):
        GaussianMixture(0, 2)
    with pytest.raises(ValueError, match="degrees_of_freedom_prior"):
        GaussianMixture(2, 3, bayesian=True, degrees_of_freedom_prior=1.0)


def test_fused_threaded_em_step_equals_e_then_m_step():
    x = simulate(500, seed=13)
    model = GaussianMixture(3, 2)
    p = model.init_params(x, seed=0, method="random")
    log_norm, resp = model.e_step(p, x)
    want = model.m_step(x, resp)
    torch.set_num_threads(2)  # two row blocks on two Python threads (chunk=64 → 7 chunks)
    try:
        got_ln, w, loc, f = gaussian.em_step_full(x, p["weights"], p["loc"], p["scale_tril"], chunk=64)
    finally:
        torch.set_num_threads(1)
    # the fused step expands ‖L⁻¹(x − μ)‖² about the data mean: rounding-level differences only
    torch.testing.assert_close(got_ln, log_norm, rtol=1e-10, atol=1e-10)
    for got, key in ((w, "weights"), (loc, "loc"), (f, "scale_tril")):
        torch.testing.assert_close(got, want[key], rtol=1e-10, atol=1e-10)
