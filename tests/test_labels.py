"""Labels are true: an "exact" answer is exact, a "bound" is below the exact value, and every
built-in ``Fit.log_prob`` has one shape ``(N,)``.

Normalisation checks sum exp(log_prob) over a whole small discrete domain: in float64 the
only error is rounding, so 1e-9 is generous (a few hundred terms, each with relative error
~1e-15)."""
import itertools

import pytest
import torch

import probgen as pg
from probgen import registry
from probgen.models import DBM, DBN, VAE, Autoencoder, BoltzmannMachine, GaussianMixture


def _grid(cards):
    return torch.tensor(list(itertools.product(*[range(c) for c in cards])))


def _domain(name, model, data):
    """The whole (small) discrete domain of ``model``'s data, or None."""
    if name in ("bm", "rbm", "dbm", "dbn"):
        return _grid([2] * model.layers[0].size).double()
    if name == "bn":
        return _grid(model.cards)
    if name == "factor_graph":
        return _grid(list(model.variables.values()))
    if name == "catmix":
        return _grid([int(c) + 1 for c in data.max(0).values])
    if name in ("aode", "naive_bayes", "bayes_classifier"):  # the joint p(x, y) over (features, class)
        x, y = data
        g = _grid([int(c) + 1 for c in x.max(0).values] + [int(y.max()) + 1])
        return g[:, :-1], g[:, -1]
    if name == "hmm":  # every sequence of length 3
        return [torch.tensor(s) for s in itertools.product(range(model.n_symbols), repeat=3)]
    return None


def _cases():
    for name, cls in sorted(registry.models().items()):
        model, data = cls.example(seed=0)
        if _domain(name, model, data) is not None:
            for engine in pg.compatible(model):
                yield name, engine


@pytest.mark.parametrize("name,engine", list(_cases()))
def test_exact_log_prob_sums_to_one(name, engine):
    model, data = registry.models()[name].example(seed=0)
    fit = pg.fit(model, data, engine=engine, steps=3, seed=0)
    if fit.log_prob_kind != "exact":
        pytest.skip(f"{engine} gives a {fit.log_prob_kind} for {name}")
    domain = _domain(name, model, data)
    lp = fit.log_prob(domain).double()
    assert lp.shape == (len(domain[0] if isinstance(domain, tuple) else domain),)
    assert float(torch.logsumexp(lp, 0).exp()) == pytest.approx(1.0, abs=1e-9)


# ---- exact marginals of energy models: enumeration, not mean field ----------------------
def _brute_marginals(energy, x, hidden_sizes):
    """E[h | v] by enumerating every hidden configuration with weights exp(−E)."""
    hs = _grid([2] * sum(hidden_sizes)).double()
    out = []
    for v in x:
        logw = torch.stack([-energy(v, h) for h in hs])
        w = torch.softmax(logw, 0)
        out.append(w @ hs)
    return torch.stack(out)


def _random_params(model, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g, dtype=torch.float64) for k, s in model.param_shapes().items()}


def test_exact_marginals_of_a_bm_with_laterals_are_enumeration():
    model = BoltzmannMachine(3, 4)
    p = _random_params(model, 1)
    R = p["R"] + p["R"].T
    S = p["S"] + p["S"].T
    p["R"], p["S"] = R - torch.diag(torch.diagonal(R)), S - torch.diag(torch.diagonal(S))
    x = _grid([2] * 3).double()

    def energy(v, h):
        return -(p["b"] @ v + p["c"] @ h + v @ p["W"] @ h + v @ p["R"] @ v + h @ p["S"] @ h)

    fit = pg.fit(model, x, engine="exact", init=p, steps=0)
    got = pg.infer(fit, x, engine="exact")
    want = _brute_marginals(energy, x, [4])
    assert torch.allclose(got[1], want, atol=1e-9, rtol=0)
    mf = pg.infer(fit, x, engine="meanfield")[1]
    assert (mf - want).abs().max() > 1e-3  # the regression: mean field is not the exact answer


@pytest.mark.parametrize("cls", [DBM, DBN])
def test_exact_marginals_of_deep_models_are_enumeration(cls):
    model = cls(3, 3, 2)
    p = _random_params(model, 2)
    x = _grid([2] * 3).double()

    def energy(v, h):  # DBM: undirected chain; DBN: −log p(v | h1) − log p*(h1, h2)
        h1, h2 = h[:3], h[3:]
        top = -(p["b1"] @ h1 + p["b2"] @ h2 + h1 @ p["W2"] @ h2)
        if cls is DBM:
            return top - (p["b0"] @ v + v @ p["W1"] @ h1)
        f = p["b0"] + p["W1"] @ h1
        return top - (v * f - torch.nn.functional.softplus(f)).sum()

    fit = pg.fit(model, x, engine="exact", init=p, steps=0)
    got = pg.infer(fit, x, engine="exact")
    want = _brute_marginals(energy, x, [3, 2])
    assert torch.allclose(torch.cat([got[1], got[2]], 1), want, atol=1e-9, rtol=0)



def test_exact_marginals_refuse_beyond_enumeration():
    from probgen.inference._energy_eval import exact_marginals
    model = BoltzmannMachine(2, 3)
    p = model.init_params(seed=0)
    with pytest.raises(ValueError, match="meanfield.*mcmc"):
        exact_marginals(model, p, torch.zeros(1, 2, dtype=torch.float64), max_bits=2)

# ---- one shape: every Fit.log_prob is (N,) ----------------------------------------------
@pytest.mark.parametrize("cls", [VAE, Autoencoder])
def test_mcmc_log_prob_is_per_example(cls):
    model, data = cls.example(seed=0)
    fit = pg.fit(model, data, engine="mcmc", steps=2, warmup=2, seed=0)
    lp = fit.log_prob(data)
    assert lp.shape == (len(data),)
    assert torch.isfinite(lp).all()


# ---- tol=None runs every step ----------------------------------------------------------
@pytest.mark.parametrize("name,engine", [("gmm", "em"), ("catmix", "em"), ("bn", "em"), ("bgmm", "meanfield"),
                                         ("lda", "meanfield"), ("hmm", "em"), ("pcfg", "em")])
def test_tol_none_runs_all_steps(name, engine):
    if name == "bgmm":  # the meanfield engine fits the Bayesian mixture
        data = registry.models()["gmm"].example(seed=0)[1]
        model = GaussianMixture(2, data.shape[1], bayesian=True)
    else:
        model, data = registry.models()[name].example(seed=0)
    if name == "bn":  # complete data are fitted in closed form: hide a column in part
        data = data.clone()
        data[::2, 0] = -1
    fit = pg.fit(model, data, engine=engine, steps=7, seed=0, tol=None)
    assert len(fit.history) == 7


def test_bad_tol_is_a_value_error():
    model, data = registry.models()["gmm"].example(seed=0)
    with pytest.raises(ValueError, match="tol must be None"):
        pg.fit(model, data, engine="em", steps=3, tol=-1.0)


# ---- a bound is below the exact value ---------------------------------------------------
def _lda_exact(doc, topics, alpha):
    """log p(w | topics, α) with θ ~ Dirichlet(α) integrated out, by enumerating every topic
    assignment z: p(z | α) is Dirichlet-multinomial, p(w | z) = Π topics[z_i, w_i]."""
    K, L = topics.shape[0], len(doc)
    terms = []
    for z in itertools.product(range(K), repeat=L):
        n = torch.bincount(torch.tensor(z), minlength=K).double()
        log_pz = (torch.lgamma(alpha.sum()) - torch.lgamma(alpha.sum() + L)
                  + (torch.lgamma(alpha + n) - torch.lgamma(alpha)).sum())
        terms.append(log_pz + sum(torch.log(topics[k, w]) for k, w in zip(z, doc.tolist())))
    return torch.logsumexp(torch.stack(terms), 0)


@pytest.mark.parametrize("engine", ["meanfield", "svi"])
def test_lda_bound_is_below_the_exact_log_prob(engine):
    model, data = registry.models()["lda"].example(seed=0)
    fit = pg.fit(model, data, engine=engine, steps=3, seed=0)
    assert fit.log_prob_kind == "bound"
    topics, alpha = fit.params["topics"].double(), fit.params["alpha"].double()
    docs = [torch.tensor([0, 1, 2]), torch.tensor([1, 1]), torch.tensor([3, 0, 3, 2])]
    bound = fit.log_prob(docs).double()
    exact = torch.stack([_lda_exact(d, topics, alpha) for d in docs])
    assert bound.shape == (len(docs),)
    # the fold-in's fixed-point tolerance only loosens the bound; rounding is ~1e-12
    assert (bound <= exact + 1e-9).all(), (bound, exact)


def test_converged_is_the_relative_change_rule():
    from probgen.registry import converged
    assert not converged(None, -1.0, 1e-3)            # no previous value: never
    assert not converged(-1.0, -1.0, None)            # tol=None: never
    assert converged(-100.0, -100.05, 1e-3)           # |Δ| / |prev| = 5e-4 < 1e-3
    assert not converged(-1.0, -1.005, 1e-3)          # the same |Δ| scale is 5e-3 relative here
    assert converged(-1000.0, -999.5, 1e-3) and not converged(-1000.0, -998.0, 1e-3)  # both directions
    assert not converged(0.0, 1e-300, 1e-3)           # prev = 0: divided by the smallest float, not 0
    assert converged(0.0, 0.0, 1e-3)


# ---- one name per word: the old names are unknown options ------------------------------
def test_old_monte_carlo_and_burn_in_names_are_refused():
    from probgen.models import RBM
    model, data = VAE.example(seed=0)
    fit = pg.fit(model, data, steps=1, seed=0, progress=False)
    with pytest.raises(ValueError, match="unknown log_prob options.*known: num_samples"):
        fit.log_prob(data, k=5)
    assert fit.log_prob(data, num_samples=3).shape == (len(data),)
    model, data = RBM.example(seed=0)
    fit = pg.fit(model, data, steps=1, seed=0, progress=False)
    with pytest.raises(ValueError, match="unknown sample options.*warmup"):
        fit.sample(2, seed=0, burn_in=10)
    assert fit.sample(2, seed=0, warmup=10).shape[0] == 2
    bn, rows = registry.models()["bn"].example(seed=0)
    with pytest.raises(ValueError, match="unknown mcmc options.*warmup"):
        pg.fit(bn, rows, engine="mcmc", steps=2, burn_in=1, progress=False)
    with pytest.raises(ValueError, match="unknown .*query options.*known: .*num_samples"):
        pg.infer(bn, {bn.variables[0]: 0}, engine="mcmc", steps=10)


@pytest.mark.parametrize("which", ["bm-laterals", "dbm"])
def test_mcmc_marginals_are_gibbs_estimates_of_the_exact_ones(which):
    """The ``mcmc`` engine's marginals are Monte Carlo estimates of the exact posterior (not
    mean-field values under another label). R independent chains per visible row give R
    independent estimates; their mean is within 5 standard errors of enumeration."""
    if which == "dbm":
        model, p = DBM(3, 3, 2), _random_params(DBM(3, 3, 2), 2)
    else:
        model = BoltzmannMachine(3, 4)
        p = _random_params(model, 1)
        for k in ("R", "S"):
            m = p[k] + p[k].T
            p[k] = m - torch.diag(torch.diagonal(m))
    x = _grid([2] * 3).double()
    fit = pg.fit(model, x, engine="exact", init=p, steps=0)
    want = torch.cat(pg.infer(fit, x, engine="exact")[1:], 1)
    reps = 40
    mc = pg.infer(fit, x.repeat(reps, 1), engine="mcmc", num_samples=200, warmup=50, seed=0)
    est = torch.cat(mc[1:], 1).reshape(reps, len(x), -1)
    se = est.std(0) / reps ** 0.5
    assert ((est.mean(0) - want).abs() <= 5 * se + 1e-12).all()
    mf = torch.cat(pg.infer(fit, x, engine="meanfield")[1:], 1)
    assert (mf - want).abs().max() > 10 * se.max()  # mean field is a different answer
    again = pg.infer(fit, x.repeat(reps, 1), engine="mcmc", num_samples=200, warmup=50, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(mc[1:], again[1:]))  # a function of its seed
