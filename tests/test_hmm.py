"""HMM family: chain kernels against brute-force enumeration, Baum–Welch against
hmmlearn, EM monotonicity and parameter recovery, generic EM (probe method) against the
built-in HMM and against scikit-learn's mixture EM, bad input."""
import itertools
import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints

import probgen as pg
from probgen import registry
from probgen.models import HMM
from probgen.models.hmm import Sequences
from probgen.ops import chain

f64 = torch.float64




def _params(model, seed):
    p = model.init_params(None, seed=seed)
    if "loc" in p:
        p["loc"] = 3 * torch.randn(p["loc"].shape, generator=torch.Generator().manual_seed(seed), dtype=f64)
    return p


def _brute(p, log_emit, n):
    """log p(x) and the best path by enumerating all K^n state paths."""
    K = len(p["initial"])
    la, li = p["transition"].log(), p["initial"].log()
    scores = {}
    for path in itertools.product(range(K), repeat=n):
        s = li[path[0]] + log_emit[0, path[0]]
        for t in range(1, n):
            s = s + la[path[t - 1], path[t]] + log_emit[t, path[t]]
        scores[path] = float(s)
    m = max(scores.values())
    return m + math.log(sum(math.exp(v - m) for v in scores.values())), list(max(scores, key=scores.get))


@pytest.mark.parametrize("emission", ["categorical", "gaussian", "poisson"])
def test_forward_and_viterbi_equal_brute_force(emission):
    model = HMM(3, emission, dim=2 if emission == "gaussian" else None,
                n_symbols=4 if emission == "categorical" else None)
    p = _params(model, 1)
    if emission == "poisson":
        p["rate"] = torch.tensor([1.0, 4.0, 9.0], dtype=f64)
    x = model.sample(p, 4, seed=0, T=6)
    data = model.check_data([x[0], x[1, :4], x[2, :1], x[3]])        # padded, lengths 6, 4, 1, 6
    log_emit = model.log_emission(p, data)
    lp_tree = model.log_prob(p, data)
    lp_seq = chain._log_forward(p["initial"], p["transition"], log_emit, data.lengths)
    lp_fb, gamma, _ = chain.forward_backward(p["initial"], p["transition"], log_emit, data.lengths)
    paths, _ = chain.viterbi(p["initial"], p["transition"], log_emit, data.lengths)
    for b, n in enumerate(data.lengths.tolist()):
        ref, best = _brute(p, log_emit[b], n)
        # all three are exact up to float64 rounding of ~K^T terms
        for lp in (lp_tree, lp_seq, lp_fb):
            assert abs(float(lp[b]) - ref) < 1e-10 * (1 + abs(ref))
        assert paths[b, :n].tolist() == best
        assert (paths[b, n:] == -1).all()
        assert torch.allclose(gamma[b, :n].sum(-1), torch.ones(n, dtype=f64))


def test_posterior_marginals_equal_brute_force():
    model = HMM(3, "categorical", n_symbols=4)
    p = _params(model, 2)
    x = model.sample(p, 1, seed=3, T=5)
    fit = pg.fit(model, x, engine="exact", init=p, progress=False)
    gamma = pg.infer(fit, x, query="marginals")[0]
    log_emit = model.log_emission(p, model.check_data(x))[0]
    K, T = 3, 5
    post = torch.zeros(T, K, dtype=f64)
    la, li = p["transition"].log(), p["initial"].log()
    for path in itertools.product(range(K), repeat=T):
        s = li[path[0]] + log_emit[0, path[0]] + sum(la[path[t - 1], path[t]] + log_emit[t, path[t]]
                                                    for t in range(1, T))
        for t, k in enumerate(path):
            post[t, k] += torch.exp(s)
    post /= post.sum(-1, keepdim=True)
    assert torch.allclose(gamma, post, atol=1e-12)


def test_no_underflow_at_100000_steps():
    g = torch.Generator().manual_seed(0)
    K, T = 3, 100_000
    log_emit = 5 * torch.randn(1, T, K, generator=g, dtype=f64)   # likelihoods ~e^-100 per step
    A = torch.softmax(torch.randn(K, K, generator=g, dtype=f64), -1)
    pi = torch.softmax(torch.randn(K, generator=g, dtype=f64), -1)
    L = torch.tensor([T])
    tree = chain.log_evidence(pi, A, log_emit, L)
    # reference: the float64 log-space recursion in plain Python floats (math.log / exp of
    # shifted terms), one step at a time, no tensors and no scaling tricks
    la, le = np.log(A.numpy()).tolist(), log_emit[0].numpy().tolist()
    a = [math.log(v) + e for v, e in zip(pi.tolist(), le[0])]
    r = range(K)
    for t in range(1, T):
        m = max(a)
        ex = [math.exp(v - m) for v in a]
        a = [m + math.log(sum(ex[i] * math.exp(la[i][j]) for i in r)) + le[t][j] for j in r]
    m = max(a)
    ref = m + math.log(sum(math.exp(v - m) for v in a))
    # relative rounding of a sum of 10^5 float64 terms is far below 1e-9
    assert np.isfinite(float(tree)) and abs(float(tree) - ref) < 1e-9 * abs(ref)
    # the scaled forward-backward and Viterbi at the same length: no underflow either
    ll, gamma, xi = chain.forward_backward(pi, A, log_emit, L)
    assert abs(float(ll) - ref) < 1e-9 * abs(ref)
    assert torch.isfinite(gamma).all() and (gamma.sum(-1) - 1).abs().max() < 1e-12
    assert abs(float(xi.sum()) - (T - 1)) < 1e-9 * T         # T - 1 transitions in expectation
    path, score = chain.viterbi(pi, A, log_emit, L)
    assert np.isfinite(float(score)) and float(score) <= float(ll) and (path >= 0).all()
    z = path[0]
    joint = (pi.log()[z[0]] + A.log()[z[:-1], z[1:]].sum() + log_emit[0, torch.arange(T), z].sum())
    assert abs(float(joint) - float(score)) < 1e-9 * abs(float(score))   # the score is the path's


def _hmmlearn_setup(model, init, hl):
    if model.emission == "poisson":
        h = hl.PoissonHMM(model.k, n_iter=10, tol=-np.inf, init_params="", params="stl")
        h.lambdas_ = init["rate"][:, None].numpy()
    elif model.emission == "categorical":
        h = hl.CategoricalHMM(model.k, n_iter=10, tol=-np.inf, init_params="", params="ste",
                              n_features=model.n_symbols)
        h.emissionprob_ = init["probs"].numpy()
    else:
        # covars_prior=0, min_covar=0: hmmlearn's default prior adds 0.01 to every covariance
        h = hl.GaussianHMM(model.k, covariance_type=model.covariance, n_iter=10, tol=-np.inf,
                           init_params="", params="stmc", covars_prior=0.0, min_covar=0.0)
        h.means_ = init["loc"].numpy()
        h.covars_ = ((init["scale"] ** 2).numpy() if model.covariance == "diag"
                     else (init["scale_tril"] @ init["scale_tril"].mT).numpy())
    h.startprob_, h.transmat_ = init["initial"].numpy(), init["transition"].numpy()
    return h


@pytest.mark.parametrize("emission,cov", [("gaussian", "diag"), ("gaussian", "full"), ("categorical", None),
                                          ("poisson", None)])
def test_baum_welch_equals_hmmlearn(emission, cov):
    hl = pytest.importorskip("hmmlearn.hmm")
    model = HMM(3, emission, dim=2 if emission == "gaussian" else None, covariance=cov or "diag",
                n_symbols=5 if emission == "categorical" else None)
    truth = _params(model, 3)
    if emission == "poisson":
        truth["rate"] = torch.tensor([1.0, 4.0, 10.0], dtype=f64)
    x = model.sample(truth, 12, seed=0, T=40)
    seqs = [x[i, : 20 + i] for i in range(12)]                   # different lengths
    init = model.init_params(seqs, seed=1)
    fit = pg.fit(model, seqs, engine="em", steps=10, init=init, tol=None, min_covar=0.0, progress=False)
    h = _hmmlearn_setup(model, init, hl)
    X = torch.cat(seqs).reshape(sum(len(s) for s in seqs), -1).numpy()
    L = [len(s) for s in seqs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h.fit(X, L)
        theirs = h.score(X, L)
        their_paths = h.decode(X, L)[1]
    ours = float(fit.log_prob(seqs).sum())
    # same algorithm in float64: agreement to rounding; 1e-6 relative is the bar
    assert abs(ours - theirs) < 1e-6 * abs(theirs)
    # our history is per sequence, hmmlearn's the data set's total
    assert np.allclose([r["log_likelihood"] * len(seqs) for r in fit.history], h.monitor_.history, rtol=1e-9)
    paths = pg.infer(fit, seqs, query="map")
    ours_paths = torch.cat([paths[i, :n] for i, n in enumerate(L)]).numpy()
    assert (ours_paths == their_paths).all()


def test_em_never_decreases_and_recovers_parameters():
    model = HMM(2, "gaussian", dim=1)
    truth = {"initial": torch.tensor([0.5, 0.5], dtype=f64),
             "transition": torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=f64),
             "loc": torch.tensor([[-2.0], [2.0]], dtype=f64), "scale": torch.tensor([[0.5], [1.0]], dtype=f64)}
    x = model.sample(truth, 20, seed=0, T=200)                   # 4,000 steps
    fit = pg.fit(model, x, engine="em", steps=200, seed=0, tol=1e-9, progress=False)
    ll = [r["log_likelihood"] for r in fit.history]
    # EM is monotone; allow float64 rounding of a sum of 4,000 terms
    assert all(b >= a - 1e-8 * abs(a) for a, b in zip(ll, ll[1:]))
    order = torch.argsort(fit.params["loc"][:, 0])                # labels are identifiable up to permutation
    est = {k: v[order] for k, v in fit.params.items()}
    est["transition"] = fit.params["transition"][order][:, order]
    # standard errors with ~2,000 steps per state are ~0.01–0.03; 0.1 is > 3 s.e.
    assert torch.allclose(est["loc"], truth["loc"], atol=0.1)
    assert torch.allclose(est["scale"], truth["scale"], atol=0.1)
    assert torch.allclose(est["transition"], truth["transition"], atol=0.05)


@pytest.mark.parametrize("emission", ["categorical", "poisson"])
def test_em_monotone_other_emissions(emission):
    model = HMM(3, emission, n_symbols=6 if emission == "categorical" else None)
    truth = _params(model, 4)
    if emission == "poisson":
        truth["rate"] = torch.tensor([1.0, 5.0, 12.0], dtype=f64)
    x = model.sample(truth, 10, seed=1, T=60)
    fit = pg.fit(model, x, engine="em", steps=30, seed=0, tol=None, progress=False)
    ll = [r["log_likelihood"] for r in fit.history]
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(ll, ll[1:]))
    assert ll[-1] > ll[0]


# ---- generic EM ---------------------------------------------------------------------------

def test_generic_em_equals_builtin_hmm():
    model = HMM(3, "categorical", n_symbols=4)
    truth = _params(model, 2)
    x = model.sample(truth, 4, seed=0, T=7)
    data = model.check_data([x[0], x[1, :5], x[2], x[3, :3]])      # unequal lengths (masked latents)
    init = model.init_params(data, seed=1)
    generic = registry.find_method(model, "em", "program")
    f1 = generic.fit(model, data, steps=10, seed=0, init=init, progress=False, tol=None)
    f2 = pg.fit(model, data, engine="em", steps=10, init=init, tol=None, progress=False)
    assert f2.method == "baum-welch"
    for k in f2.params:   # the same EM iterates; differences are float64 rounding
        assert torch.allclose(f1.params[k], f2.params[k], atol=1e-8, rtol=0)
    # both record the log-likelihood per sequence (the generic EM: per entry of the program's
    # outermost plate, here its plate over sequences)
    assert np.allclose([h["log_likelihood"] for h in f1.history],
                       [h["log_likelihood"] for h in f2.history], rtol=1e-10)


def _user_hmm(y):
    """A user's own one-sequence HMM: a Python loop under pyro.markov, scalar Normal emissions."""
    initial = pyro.param("initial", lambda: torch.ones(2, dtype=f64) / 2, constraint=constraints.simplex)
    A = pyro.param("transition", lambda: torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=f64),
                   constraint=constraints.simplex)
    mu = pyro.param("mu", lambda: torch.tensor([0.0, 1.0], dtype=f64))
    sd = pyro.param("sd", lambda: torch.ones(2, dtype=f64), constraint=constraints.positive)
    z = None
    for t in pyro.markov(range(len(y))):
        z = pyro.sample(f"z{t}", dist.Categorical(initial if z is None else A[z]))
        pyro.sample(f"y{t}", dist.Normal(mu[z], sd[z]), obs=y[t])


def test_generic_em_on_user_hmm_program_equals_baum_welch():
    model = HMM(2, "gaussian", dim=1)
    truth = model.init_params(None, seed=0)
    truth["loc"] = torch.tensor([[-1.0], [2.0]], dtype=f64)
    x = model.sample(truth, 1, seed=0, T=15)[0, :, 0]
    init = model.init_params(x, seed=1)
    user_init = {"initial": init["initial"], "transition": init["transition"],
                 "mu": init["loc"][:, 0], "sd": init["scale"][:, 0]}
    f1 = pg.fit(_user_hmm, x, engine="em", steps=10, init=user_init, tol=None, progress=False)
    f2 = pg.fit(model, x, engine="em", steps=10, init=init, tol=None, min_covar=0.0, progress=False)
    # the same EM iterates (closed-form table and Normal steps): equal to float64 rounding
    assert torch.allclose(f1.params["mu"], f2.params["loc"][:, 0], atol=1e-8, rtol=0)
    assert torch.allclose(f1.params["sd"], f2.params["scale"][:, 0], atol=1e-8, rtol=0)
    assert torch.allclose(f1.params["transition"], f2.params["transition"], atol=1e-8, rtol=0)
    # exact log-evidence of the user program (TraceEnum_ELBO) = the forward algorithm
    assert abs(float(f1.log_prob(x)) - float(f2.log_prob(x).sum())) < 1e-9


def _gmm(x):
    K, D = 3, x.shape[1]
    w = pyro.param("weights", lambda: torch.full((K,), 1.0 / K, dtype=f64), constraint=constraints.simplex)
    loc = pyro.param("loc", lambda: x[:K].clone())
    scale = pyro.param("scale", lambda: torch.ones(K, D, dtype=f64), constraint=constraints.positive)
    with pyro.plate("N", len(x)):
        z = pyro.sample("z", dist.Categorical(w))
        pyro.sample("x", dist.Normal(loc[z], scale[z]).to_event(1), obs=x)


def _gmm_full(x):
    K, D = 3, x.shape[1]
    w = pyro.param("weights", lambda: torch.full((K,), 1.0 / K, dtype=f64), constraint=constraints.simplex)
    loc = pyro.param("loc", lambda: x[:K].clone())
    tril = pyro.param("scale_tril", lambda: torch.eye(D, dtype=f64).expand(K, D, D).clone(),
                      constraint=constraints.lower_cholesky)
    with pyro.plate("N", len(x)):
        z = pyro.sample("z", dist.Categorical(w))
        pyro.sample("x", dist.MultivariateNormal(loc[z], scale_tril=tril[z]), obs=x)


@pytest.mark.parametrize("program,cov", [(_gmm, "diag"), (_gmm_full, "full")])
def test_generic_em_on_user_gmm_equals_sklearn(program, cov):
    mixture = pytest.importorskip("sklearn.mixture")
    x = pg.load_dataset("iris")[:, :2]
    g = torch.Generator().manual_seed(0)
    init = {"weights": torch.tensor([0.3, 0.3, 0.4], dtype=f64), "loc": x[[0, 60, 120]].clone()}
    cov0 = torch.cov(x.t())
    if cov == "diag":
        init["scale"] = cov0.diagonal().sqrt().expand(3, 2).clone() * (1 + 0.1 * torch.rand(3, 2, generator=g, dtype=f64))
        precisions = (init["scale"] ** -2).numpy()
    else:
        init["scale_tril"] = torch.linalg.cholesky(cov0).expand(3, 2, 2).clone()
        precisions = torch.linalg.inv(cov0).expand(3, 2, 2).numpy()
    fit = pg.fit(program, x, engine="em", steps=10, init=init, tol=None, progress=False)
    assert fit.method == "program"
    sk = mixture.GaussianMixture(3, covariance_type=cov, max_iter=10, tol=0.0, reg_covar=0.0,
                                 weights_init=init["weights"].numpy(), means_init=init["loc"].numpy(),
                                 precisions_init=precisions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(x.numpy())
    # the same EM iterates in float64: equal to rounding
    assert np.allclose(fit.params["weights"].numpy(), sk.weights_, atol=1e-8)
    assert np.allclose(fit.params["loc"].numpy(), sk.means_, atol=1e-8)
    ours_cov = (fit.params["scale"] ** 2 if cov == "diag"
                else fit.params["scale_tril"] @ fit.params["scale_tril"].mT).numpy()
    assert np.allclose(ours_cov, sk.covariances_, atol=1e-8)
    ll = [h["log_likelihood"] for h in fit.history]
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(ll, ll[1:]))


def _bernoulli_mixture(logits_param):
    def program(x):
        D = x.shape[1]
        w = pyro.param("weights", lambda: torch.tensor([0.4, 0.6], dtype=f64), constraint=constraints.simplex)
        if logits_param:  # not a table: Q is maximised numerically
            logits = pyro.param("logits", lambda: torch.tensor([[-1.0] * D, [1.0] * D], dtype=f64) * 0.5)
            probs = torch.sigmoid(logits)
        else:
            probs = pyro.param("probs", lambda: torch.sigmoid(torch.tensor([[-1.0] * D, [1.0] * D], dtype=f64) * 0.5),
                               constraint=constraints.unit_interval)
        with pyro.plate("N", len(x)):
            z = pyro.sample("z", dist.Categorical(w))
            pyro.sample("x", dist.Bernoulli(probs[z]).to_event(1), obs=x)
    return program


def test_generic_em_numeric_m_step_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    z = torch.rand(200, generator=g) < 0.5
    x = (torch.rand(200, 4, generator=g, dtype=f64) < torch.where(z[:, None], 0.8, 0.2)).to(f64)
    closed = pg.fit(_bernoulli_mixture(False), x, engine="em", steps=5, tol=None, progress=False)
    numeric = pg.fit(_bernoulli_mixture(True), x, engine="em", steps=5, tol=None, progress=False)
    # L-BFGS maximises the same Q to its tolerance; the iterates agree closely, not to rounding
    assert torch.allclose(torch.sigmoid(numeric.params["logits"]), closed.params["probs"], atol=1e-5)
    assert torch.allclose(numeric.params["weights"], closed.params["weights"], atol=1e-5)
    ll = [h["log_likelihood"] for h in numeric.history]
    assert all(b >= a - 1e-9 * abs(a) for a, b in zip(ll, ll[1:]))


def test_generic_em_refuses_continuous_latents():
    def program(x):
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=f64), 1.0))
        s = pyro.param("s", lambda: torch.ones((), dtype=f64), constraint=constraints.positive)
        with pyro.plate("N", len(x)):
            pyro.sample("x", dist.Normal(mu, s), obs=x)
    # pg.compatible already sees the continuous latent (the program traced without data)
    assert "em" not in pg.compatible(program)
    with pytest.raises(ValueError, match="em.*does not fit.*latent sites are all discrete"):
        pg.fit(program, torch.zeros(5, dtype=f64), engine="em", progress=False)


# ---- other engines, queries, graph, data ---------------------------------------------------

def test_svi_and_mcmc_enumerate_states():
    model, data = HMM.example(seed=0)
    exact = model.log_prob(model.init_params(data, seed=0), data)
    fit = pg.fit(model, data, engine="svi", steps=60, seed=0, lr=0.05, progress=False)
    assert fit.log_prob_kind == "exact"
    # SVI with enumerated states maximises the exact likelihood: it must beat the start
    assert float(fit.log_prob(data).sum()) > float(exact.sum())
    mc = pg.fit(model, data, engine="mcmc", steps=10, warmup=10, seed=0, max_tree_depth=4, progress=False)
    assert sorted(mc.state["lifted"]) == ["initial", "probs", "transition"]
    assert torch.allclose(mc.params["transition"].sum(-1), torch.ones(2, dtype=f64))


def test_graph_is_the_unrolled_chain(tmp_path):
    g = pg.graph(HMM(3, "gaussian", dim=2), T=4)
    assert set(g.edges) == {("z_0", "z_1"), ("z_1", "z_2"), ("z_2", "z_3")} | {(f"z_{t}", f"x_{t}") for t in range(4)}
    assert g.nodes["z_2"]["kind"] == "latent" and g.nodes["x_2"]["kind"] == "observed"
    gp = pg.graph(HMM(3, "gaussian", dim=2), T=3, params=True)
    assert gp.nodes["transition"]["kind"] == "param" and ("scale", "x_1") in gp.edges
    path = pg.render(g, str(tmp_path / "hmm.dot"))
    assert "z_0" in open(path).read()


def test_padded_input_with_lengths_equals_list():
    model = HMM(2, "categorical", n_symbols=3)
    p = model.init_params(None, seed=0)
    seqs = [torch.tensor([0, 1, 2, 1]), torch.tensor([2, 2])]
    padded = Sequences(torch.tensor([[0, 1, 2, 1], [2, 2, 0, 0]]), torch.tensor([4, 2]))
    assert torch.equal(model.log_prob(p, seqs), model.log_prob(p, padded))
    assert torch.allclose(model.log_prob(p, [seqs[1]]), model.log_prob(p, torch.tensor([2, 2])))


@pytest.mark.parametrize("model,data,match", [
    (HMM(2, "gaussian", dim=2), [torch.zeros(5, 3)], "shape"),
    (HMM(2, "categorical", n_symbols=3), [torch.tensor([0, 1, 3])], "outside"),
    (HMM(2, "categorical", n_symbols=3), [torch.tensor([0.0, 1.5])], "integers"),
    (HMM(2, "gaussian", dim=1), [torch.tensor([0.0, 1.0]), torch.tensor([float("nan")] * 2)], "entirely missing"),
    (HMM(2, "gaussian", dim=1), [torch.tensor([0.0, float("inf")])], "inf"),
    (HMM(2, "categorical", n_symbols=3), [torch.tensor([0, -2, 1])], "non-negative"),
    (HMM(2, "gaussian", dim=1), [torch.tensor([0.0, 1.0]), torch.zeros(0)], "length zero"),
    (HMM(2, "poisson"), [torch.tensor([1.0, -1.0])], "non-negative"),
    (HMM(2, "categorical", n_symbols=3), [], "no sequences"),
    (HMM(2, "categorical", n_symbols=3), Sequences(torch.zeros(2, 3), torch.tensor([3, 0])), "zero-length"),
])
def test_bad_input(model, data, match):
    with pytest.raises(ValueError, match=match):
        pg.fit(model, data, engine="em", progress=False)


def test_bad_options_and_constructor():
    model, data = HMM.example()
    with pytest.raises(ValueError, match="known: tol"):
        pg.fit(model, data, engine="em", bogus=1, progress=False)
    with pytest.raises(ValueError, match="n_symbols"):
        HMM(2, "categorical")
    with pytest.raises(ValueError, match="emission"):
        HMM(2, "binomial")
    with pytest.raises(ValueError, match="Fit"):
        pg.infer(model, data, query="map")


def test_sunspots_default_data_and_for_data():
    x = HMM.load_named_data("sunspots")
    assert x.shape == (309,) and float(x[0]) == 5.0
    model = HMM.for_data(x)
    assert model.emission == "gaussian" and model.dim == 1
    fit = pg.fit(model, x, seed=0, steps=20, progress=False)
    assert fit.engine == "em" and len(pg.infer(fit, x, query="map")[0]) == 309


# ---- the fast kernels against the plain step-by-step ones ------------------------------------

def _viterbi_loop_reference(init, trans, log_emit, lengths):
    """The plain Viterbi recursion, one sequence and one step at a time in Python floats, with
    stored backpointers and first-index ties (as hmmlearn's C loop): the oracle for
    ``chain.viterbi``'s batched layout and its backtrack."""
    la, li = torch.log(trans).tolist(), torch.log(init).tolist()
    K = len(li)
    paths, scores = [], []
    for b, n in enumerate(lengths.tolist()):
        le = log_emit[b].tolist()
        d = [li[k] + le[0][k] for k in range(K)]
        back = []
        for t in range(1, n):
            prev = [max(range(K), key=lambda i: (d[i] + la[i][j], -i)) for j in range(K)]
            d = [d[prev[j]] + la[prev[j]][j] + le[t][j] for j in range(K)]
            back.append(prev)
        s = max(range(K), key=lambda k: (d[k], -k))
        scores.append(d[s])
        path = [s]
        for prev in reversed(back):
            s = prev[s]
            path.append(s)
        paths.append(path[::-1])
    return paths, scores


def _random_chain(K, lengths, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    log_emit = scale * torch.randn(len(lengths), T, K, generator=g, dtype=f64)
    A = torch.softmax(torch.randn(K, K, generator=g, dtype=f64), -1)
    pi = torch.softmax(torch.randn(K, generator=g, dtype=f64), -1)
    return pi, A, log_emit, torch.tensor(lengths)


def _autograd_posteriors(pi, A, log_emit, L):
    """The oracle of Eisner (2016): with log Z = Σ_b log p(x_b) from the
    differentiable log-space forward algorithm, γ = ∂ log Z / ∂ log_emit and
    ξ = A ⊙ ∂ log Z / ∂ A (A read as free weights, not renormalised)."""
    le, A_ = log_emit.clone().requires_grad_(), A.clone().requires_grad_()
    ll = chain._log_forward(pi, A_, le, L)
    d_le, d_A = torch.autograd.grad(ll.sum(), (le, A_), allow_unused=True)
    return ll.detach(), d_le, A * d_A if d_A is not None else torch.zeros_like(A)  # T = 1: no transitions


@pytest.mark.parametrize("lengths", [[1], [7, 7, 7], [9, 1, 4, 9, 2], [40, 13, 27]])
@pytest.mark.parametrize("layout", ["batch-major", "state-major"])
def test_forward_backward_equals_autograd_of_log_evidence(lengths, layout):
    pi, A, log_emit, L = _random_chain(4, lengths, seed=len(lengths))
    if layout == "state-major":      # the (B, T, K) view of a (K, T, B) buffer, as log_emission gives
        log_emit = log_emit.permute(2, 1, 0).contiguous().permute(2, 1, 0)
    ll, gamma, xi = chain.forward_backward(pi, A, log_emit, L)
    ll0, gamma0, xi0 = _autograd_posteriors(pi, A, log_emit, L)
    # the same quantities by different sums (scaled probability space vs log space and
    # reverse-mode differentiation): agreement to float64 rounding, far below 1e-10
    assert torch.allclose(ll, ll0, rtol=1e-12, atol=0)
    assert torch.allclose(gamma, gamma0, rtol=0, atol=1e-12)
    assert torch.allclose(xi, xi0, rtol=1e-10, atol=1e-12)
    assert (gamma[chain.pad_mask(L, log_emit.shape[1])].sum(-1) - 1).abs().max() < 1e-12
    assert (gamma[~chain.pad_mask(L, log_emit.shape[1])] == 0).all()


def test_forward_backward_scaling_survives_tiny_likelihoods():
    # transitions into the state with the best emission are ~1e-40 and the other states'
    # emissions e^-400 below it: unscaled, the forward mass would underflow float64 within a
    # few steps; per-step scaling keeps every quantity exact
    K, T = 3, 30
    A = torch.tensor([[1.0, 1e-40, 1.0], [1.0, 1e-40, 1.0], [1.0, 1e-40, 1.0]], dtype=f64)
    A = A / A.sum(-1, keepdim=True)
    pi = torch.tensor([0.2, 0.6, 0.2], dtype=f64)
    log_emit = torch.tensor([-400.0, 0.0, -400.0], dtype=f64).expand(2, T, K).clone()
    L = torch.tensor([T, 17])
    ll, gamma, xi = chain.forward_backward(pi, A, log_emit, L)
    ll0, gamma0, xi0 = _autograd_posteriors(pi, A, log_emit, L)      # log space: no scaling at all
    assert torch.isfinite(ll).all() and torch.allclose(ll, ll0, rtol=1e-12, atol=0)
    assert torch.allclose(gamma, gamma0, rtol=0, atol=1e-12)
    assert torch.allclose(xi, xi0, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lengths", [[1], [6, 6], [12, 1, 5, 12, 3], [60, 23, 41]])
def test_viterbi_equals_step_by_step_reference(lengths):
    pi, A, log_emit, L = _random_chain(5, lengths, seed=10 + len(lengths))
    paths, scores = chain.viterbi(pi, A, log_emit, L)
    ref_paths, ref_scores = _viterbi_loop_reference(pi, A, log_emit, L)
    for b, n in enumerate(lengths):
        assert paths[b, :n].tolist() == ref_paths[b] and (paths[b, n:] == -1).all()
    # the same additions in the same order: equal up to the last bit or so
    assert torch.allclose(scores, torch.tensor(ref_scores, dtype=f64), rtol=1e-14, atol=0)


def test_viterbi_ties_go_to_the_lowest_state():
    # states 0 and 1 are exact copies (same emissions, symmetric transitions): every path
    # through one has a twin through the other with the same score, so every step is a tie
    A = torch.tensor([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2], [0.3, 0.3, 0.4]], dtype=f64)
    pi = torch.tensor([0.4, 0.4, 0.2], dtype=f64)
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], dtype=f64)
    model = HMM(3, "categorical", n_symbols=3)
    seqs = [torch.tensor([0, 0, 2, 1, 0, 2, 2, 0]), torch.tensor([1, 0, 2]), torch.tensor([2])]
    data = model.check_data(seqs)
    p = {"initial": pi, "transition": A, "probs": probs}
    log_emit = model.log_emission(p, data)
    paths, scores = chain.viterbi(pi, A, log_emit, data.lengths)
    ref_paths, _ = _viterbi_loop_reference(pi, A, log_emit, data.lengths)
    ours = [paths[b, :len(s)].tolist() for b, s in enumerate(seqs)]
    assert ours == ref_paths
    assert 1 not in sum(ours, [])          # state 1 only ever ties with state 0

    def score(b, z):
        return (math.log(pi[z[0]]) + sum(float(log_emit[b, t, k]) for t, k in enumerate(z))
                + sum(math.log(A[i, j]) for i, j in zip(z, z[1:])))
    for b, s in enumerate(seqs):           # and it is a most probable path (brute force)
        best = _brute(p, log_emit[b], len(s))[1]
        assert abs(score(b, ours[b]) - score(b, best)) < 1e-12 * (1 + abs(score(b, best)))
        assert abs(float(scores[b]) - score(b, best)) < 1e-12 * (1 + abs(score(b, best)))
    hl = pytest.importorskip("hmmlearn.hmm")
    # hmmlearn breaks these ties differently (observed: towards state 1 inside the path), so
    # only its optimal score is comparable here
    h = hl.CategoricalHMM(3, n_features=3, init_params="", params="")
    h.startprob_, h.transmat_, h.emissionprob_ = pi.numpy(), A.numpy(), probs.numpy()
    X = torch.cat(seqs).reshape(-1, 1).numpy()
    their_score = h.decode(X, [len(s) for s in seqs], algorithm="viterbi")[0]
    assert abs(their_score - float(scores.sum())) < 1e-12 * abs(their_score)


def test_emission_table_lookup_equals_dense_emissions():
    # categorical emissions reach the kernels as a (K, V) table indexed by the symbols;
    # the dense (B, T, K) tensor of the same numbers must give identical answers
    model = HMM(3, "categorical", n_symbols=5)
    p = _params(model, 4)
    x = model.sample(p, 4, seed=2, T=9)
    data = model.check_data([x[0], x[1, :3], x[2, :1], x[3, :7]])
    table, dense = model.emission_table(p, data), model.log_emission(p, data)
    assert table.index is not None and table.table.shape == (3, 5)
    assert torch.equal(table.dense(), dense)
    args = (p["initial"], p["transition"])
    for a, b in zip(chain.forward_backward(*args, table, data.lengths), chain.forward_backward(*args, dense, data.lengths)):
        assert torch.allclose(a, b, rtol=1e-13, atol=1e-15)    # same sums, same order: rounding only
    paths_t, score_t = chain.viterbi(*args, table, data.lengths)
    paths_d, score_d = chain.viterbi(*args, dense, data.lengths)
    assert torch.equal(paths_t, paths_d) and torch.equal(score_t, score_d)


def test_viterbi_with_more_states_than_int8_backpointers_hold():
    # K > 127 switches the backpointer buffer to int32
    pi, A, log_emit, L = _random_chain(130, [5, 3], seed=9)
    paths, scores = chain.viterbi(pi, A, log_emit, L)
    ref_paths, ref_scores = _viterbi_loop_reference(pi, A, log_emit, L)
    assert max(max(r) for r in ref_paths) > 127          # a state int8 could not hold is on a path
    assert [paths[0].tolist(), paths[1, :3].tolist()] == ref_paths
    assert torch.allclose(scores, torch.tensor(ref_scores, dtype=f64), rtol=1e-14, atol=0)
