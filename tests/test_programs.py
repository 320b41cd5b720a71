"""User Pyro programs under svi, mcmc and em: sampling, posterior queries, what
``pg.compatible`` lists, SVI's ELBO / optimiser / seeded start, and NUTS's words and
per-draw statistics — checked against analytic posteriors (Normal–Normal, Beta–Bernoulli)
and exact enumeration on tiny discrete models."""
import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import constraints

import probgen as pg


# ---- programs ---------------------------------------------------------------------------------

def normal_mean(x=None):
    """mu ~ N(0, 10²), x_n ~ N(mu, 1): the posterior of mu is Normal (conjugate)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("N", 4 if x is None else len(x)):
        pyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def needs_data(x):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("N", len(x)):
        pyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def coin(x=None):
    """p ~ Beta(1, 1), x_n ~ Bernoulli(p): the posterior is Beta(1 + k, 1 + N - k)."""
    p = pyro.sample("p", dist.Beta(1.0, 1.0))
    with pyro.plate("N", 20 if x is None else len(x)):
        pyro.sample("x", dist.Bernoulli(p), obs=x)


def coin_mixture(x=None):
    """Two biased coins, one chosen per toss: discrete latents, pyro.param parameters."""
    p = pyro.param("p", torch.tensor([0.3, 0.7]), constraint=constraints.unit_interval)
    w = pyro.param("w", torch.tensor([0.5, 0.5]), constraint=constraints.simplex)
    with pyro.plate("N", 30 if x is None else len(x)):
        z = pyro.sample("z", dist.Categorical(w))
        pyro.sample("x", dist.Bernoulli(p[z]), obs=x)


def chain(x=None):
    """A two-state hidden Markov chain with Gaussian emissions, unrolled (pyro.markov)."""
    init = pyro.param("init", torch.tensor([0.6, 0.4]), constraint=constraints.simplex)
    trans = pyro.param("trans", torch.tensor([[0.8, 0.2], [0.3, 0.7]]), constraint=constraints.simplex)
    locs = pyro.param("locs", torch.tensor([-1.0, 1.0]))
    z = None
    for t in pyro.markov(range(5 if x is None else len(x))):
        z = pyro.sample(f"z_{t}", dist.Categorical(init if z is None else trans[z]))
        pyro.sample(f"x_{t}", dist.Normal(locs[z], 1.0), obs=None if x is None else x[t])


MIX_WEIGHTS = torch.tensor([0.3, 0.7])


def located_mixture(x=None):
    """Component locations with a prior (continuous latents) and a local assignment."""
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    with pyro.plate("N", 8 if x is None else len(x)):
        z = pyro.sample("z", dist.Categorical(MIX_WEIGHTS))
        pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)


def shifted_mixture(x):
    """pyro.param locations plus a continuous latent shift: generic EM cannot fit it."""
    loc = pyro.param("loc", torch.tensor([-1.0, 1.0]))
    shift = pyro.sample("shift", dist.Normal(0.0, 1.0))
    with pyro.plate("N", len(x)):
        z = pyro.sample("z", dist.Categorical(torch.ones(2) / 2))
        pyro.sample("x", dist.Normal(loc[z] + shift, 1.0), obs=x)


def shifted_mixture_computing(x):
    """The same, but it computes with its data (x.double()): it cannot be traced without it."""
    loc = pyro.param("loc", torch.tensor([-1.0, 1.0], dtype=torch.float64))
    shift = pyro.sample("shift", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
    with pyro.plate("N", len(x)):
        z = pyro.sample("z", dist.Categorical(torch.ones(2, dtype=torch.float64) / 2))
        pyro.sample("x", dist.Normal(loc[z] + shift, 1.0), obs=x.double())


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def x4():
    return torch.randn(4, generator=_gen(0)) + 2.0


def _posterior(x):
    """Posterior of mu in normal_mean: N(m, s²), prior precision 1/100, unit noise."""
    prec = 1 / 100 + len(x)
    return float(x.sum()) / prec, math.sqrt(1 / prec)


# ---- 1. Fit.sample ---------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["svi", "mcmc"])
def test_sample_draws_every_site_from_the_posterior_and_the_model(engine, x4):
    steps = 1500 if engine == "svi" else 300
    fit = pg.fit(normal_mean, x4, engine=engine, steps=steps, seed=0, lr=0.05, progress=False) \
        if engine == "svi" else pg.fit(normal_mean, x4, engine=engine, steps=steps, seed=0, progress=False)
    n = 1000
    s = fit.sample(n, seed=1)
    assert set(s) == {"mu", "x"} and s["mu"].shape == (n,) and s["x"].shape == (n, 4)
    # same seed, same draws; another seed, others
    assert all(torch.equal(v, fit.sample(n, seed=1)[k]) for k, v in s.items())
    assert not torch.equal(s["mu"], fit.sample(n, seed=2)["mu"])
    # the observed sites are sampled from the model given each draw: x - mu ~ N(0, 1) exactly
    # (4σ bounds on the mean and the variance of the 4,000 residuals)
    r = s["x"] - s["mu"][:, None]
    assert abs(r.mean().item()) < 4 * math.sqrt(1 / r.numel())
    assert abs(r.var().item() - 1) < 4 * math.sqrt(2 / r.numel())
    m, sd = _posterior(x4)
    if engine == "mcmc":  # each run at one of the kept draws
        assert torch.isin(s["mu"], fit.state["samples"]["mu"]).all()
    else:  # guide draws: the guide is within 0.1 sd of the posterior (test_core); 4σ Monte Carlo
        assert abs(s["mu"].mean().item() - m) < 0.1 * sd + 4 * sd / math.sqrt(n)
        assert abs(s["mu"].std().item() - sd) < 0.1 * sd + 4 * sd / math.sqrt(2 * n)


@pytest.mark.parametrize("engine", ["svi", "mcmc"])
def test_sample_of_a_program_that_needs_its_data_says_how_to_write_it(engine, x4):
    fit = pg.fit(needs_data, x4, engine=engine, steps=5, seed=0, progress=False)
    with pytest.raises(ValueError, match=r"no data.*def model\(x=None\)"):
        fit.sample(3, seed=0)


# ---- 2. pg.infer: posterior, predictive, map --------------------------------------------------

def test_mcmc_posterior_is_the_nuts_draws(x4):
    fit = pg.fit(normal_mean, x4, engine="mcmc", steps=60, seed=0, progress=False)
    kept = fit.state["samples"]["mu"]
    assert torch.equal(pg.infer(fit, x4, query="posterior")["mu"], kept)   # routed to mcmc
    a = pg.infer(fit, x4, query="posterior", num_samples=20, seed=3)["mu"]
    assert len(a) == 20 and torch.isin(a, kept).all()
    assert torch.equal(a, pg.infer(fit, x4, query="posterior", num_samples=20, seed=3)["mu"])
    assert not torch.equal(a, pg.infer(fit, x4, query="posterior", num_samples=20, seed=4)["mu"])
    with pytest.raises(ValueError, match="at most 60"):
        pg.infer(fit, x4, query="posterior", num_samples=61)


def test_svi_posterior_and_predictive_match_the_conjugate_answer(x4):
    fit = pg.fit(normal_mean, x4, engine="svi", steps=1500, seed=0, lr=0.05, progress=False)
    m, sd = _posterior(x4)
    n = 4000
    post = pg.infer(fit, x4, query="posterior", num_samples=n, seed=0)
    assert set(post) == {"mu"} and post["mu"].shape == (n,)
    # the guide is within 0.1 sd of the exact posterior (tests/test_core.py); 4σ Monte Carlo
    assert abs(post["mu"].mean().item() - m) < 0.1 * sd + 4 * sd / math.sqrt(n)
    assert abs(post["mu"].std().item() - sd) < 0.1 * sd + 4 * sd / math.sqrt(2 * n)
    pred = pg.infer(fit, x4, query="predictive", num_samples=n, seed=0)
    assert set(pred) == {"x"} and pred["x"].shape == (n, 4)
    # x_rep,n ~ N(m, 1 + s²) (s² = 0.25 here, so the variance tells data from replicates)
    v = 1 + sd ** 2
    col = pred["x"][:, 0]
    assert abs(col.mean().item() - m) < 0.1 * sd + 4 * math.sqrt(v / n)
    assert abs(col.var().item() - v) < 0.05 + 4 * v * math.sqrt(2 / n)  # 0.05: the guide's sd error
    assert torch.equal(pred["x"], pg.infer(fit, x4, query="predictive", num_samples=n, seed=0)["x"])


def test_mcmc_predictive_matches_beta_bernoulli():
    x = (torch.rand(20, generator=_gen(1)) < 0.3).float()
    k, n_obs = int(x.sum()), len(x)
    fit = pg.fit(coin, x, engine="mcmc", steps=500, seed=0, progress=False)
    pred = pg.infer(fit, x, query="predictive", seed=0)["x"]
    assert pred.shape == (500, 20)
    exact = (1 + k) / (n_obs + 2)   # P(x_rep = 1 | data), the posterior mean of p
    # error of the NUTS mean of p (posterior sd ≈ 0.1, n_eff ≥ 100: ≤ 0.01) plus the Bernoulli
    # noise of 10,000 replicates (sd 0.005): 4σ of the two
    assert abs(pred.mean().item() - exact) < 4 * math.sqrt(0.01 ** 2 + 0.005 ** 2)


def test_svi_map_is_the_enumerated_joint_argmax():
    x = torch.tensor([-1.2, -0.1, 0.2, 1.4, 0.05])
    fit = pg.fit(chain, x, engine="svi", steps=20, seed=0, progress=False)
    answer = pg.infer(fit, x, query="map")
    assert set(answer) == {f"z_{t}" for t in range(5)}
    got = tuple(int(answer[f"z_{t}"]) for t in range(5))
    p = fit.params
    scores = {}
    for z in itertools.product(range(2), repeat=5):   # all 32 joint assignments
        lp = torch.log(p["init"][z[0]]) + sum(torch.log(p["trans"][a, b]) for a, b in zip(z, z[1:]))
        lp = lp + sum(dist.Normal(p["locs"][zt], 1.0).log_prob(xt) for zt, xt in zip(z, x))
        scores[z] = float(lp)
    best = max(scores, key=scores.get)
    assert sorted(scores.values())[-1] - sorted(scores.values())[-2] > 1e-6   # a unique maximum
    assert got == best


def test_mcmc_map_is_the_enumerated_argmax_at_the_posterior_mean():
    x = torch.tensor([-3.1, -2.4, -2.0, 0.1, 0.3, 2.2, 2.9, 3.5])
    fit = pg.fit(located_mixture, x, engine="mcmc", steps=100, seed=0, progress=False)
    z = pg.infer(fit, x, query="map")["z"]
    locs = fit.params["locs"]   # the posterior mean
    best, best_lp = None, -math.inf
    for cand in itertools.product(range(2), repeat=len(x)):   # all 256 joint assignments
        c = torch.tensor(cand)
        lp = float((MIX_WEIGHTS[c].log() + dist.Normal(locs[c], 1.0).log_prob(x)).sum())
        if lp > best_lp:
            best, best_lp = c, lp
    assert torch.equal(z, best)


def test_svi_posterior_of_discrete_sites_draws_the_exact_responsibilities():
    x = (torch.rand(30, generator=_gen(2)) < 0.6).float()
    fit = pg.fit(coin_mixture, x, engine="svi", steps=30, seed=0, progress=False)
    n = 2000
    z = pg.infer(fit, x, query="posterior", num_samples=n, seed=0)["z"]
    assert z.shape == (n, 30)
    p, w = fit.params["p"], fit.params["w"]
    like = w * torch.where(x[:, None] > 0, p, 1 - p)               # (N, 2)
    resp = like[:, 1] / like.sum(1)                                 # P(z_n = 1 | x_n), exact
    freq = z.float().mean(0)
    assert (freq - resp).abs().max() < 4 * math.sqrt(0.25 / n)      # 4σ of a Bernoulli mean


def test_infer_on_a_declaration_or_another_engine_is_refused(x4):
    with pytest.raises(ValueError, match="answers from a fit"):
        pg.infer(normal_mean, x4, engine="svi", query="posterior")
    fit = pg.fit(normal_mean, x4, engine="svi", steps=3, seed=0, progress=False)
    with pytest.raises(ValueError, match="unknown 'posterior' query options"):
        pg.infer(fit, x4, query="posterior", bogus=1)
    with pytest.raises(ValueError, match="unknown 'posterior' query options"):
        pg.infer(fit, x4, query="posterior", fit=fit)
    with pytest.raises(ValueError, match="answers queries"):
        pg.infer(fit, x4, query="marginals")
    with pytest.raises(ValueError, match="engine 'exact' does not fit"):
        pg.infer(fit, x4, query="posterior", engine="exact")
    with pytest.raises(ValueError, match="no discrete latent sites|has none"):
        pg.infer(fit, x4, query="map")


# ---- 3. pg.compatible and em ------------------------------------------------------------------

def test_compatible_lists_only_engines_that_fit_the_program():
    assert "em" not in pg.compatible(shifted_mixture)       # a continuous latent (shift)
    assert "em" not in pg.compatible(normal_mean)           # no pyro.param to fit
    assert "em" in pg.compatible(coin_mixture) and "mcmc" not in pg.compatible(coin_mixture)  # params, no priors
    assert "mcmc" not in pg.compatible(shifted_mixture)
    x = torch.randn(10, generator=_gen(0))
    with pytest.raises(ValueError, match="em.*does not fit.*all discrete"):
        pg.fit(shifted_mixture, x, engine="em", progress=False)


def test_em_refuses_on_the_data_what_compatible_could_not_see():
    """A program that computes with its data cannot be traced without it: em is listed, and
    the fit refuses it on the data with the reason."""
    assert "em" in pg.compatible(shifted_mixture_computing)
    with pytest.raises(ValueError, match=r"latent site.*discrete.*\['shift'\] are continuous"):
        pg.fit(shifted_mixture_computing, torch.randn(10), engine="em", progress=False)


def test_compatible_leaves_the_random_state_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    pg.compatible(lambda x=None: pyro.sample("u", dist.Normal(0.0, 1.0)))
    assert torch.equal(torch.rand(3), expected)


# ---- 4. generic EM on float32 data ------------------------------------------------------------

def test_generic_em_casts_float32_bernoulli_data():
    x64 = (torch.rand(30, generator=_gen(3)) < 0.6).double()
    a = pg.fit(coin_mixture, x64.float(), engine="em", steps=20, tol=None, progress=False)
    b = pg.fit(coin_mixture, x64, engine="em", steps=20, tol=None, progress=False)
    for k in ("p", "w"):   # the cast to float64 is exact: the same EM run
        assert torch.equal(a.params[k], b.params[k])
    assert torch.equal(a.log_prob(x64.float()), b.log_prob(x64))
    ll = [h["log_likelihood"] for h in a.history]
    assert all(v2 >= v1 - 1e-9 * abs(v1) for v1, v2 in zip(ll, ll[1:]))   # EM never decreases


# ---- 5. SVI options ---------------------------------------------------------------------------

@pytest.mark.parametrize("elbo", ["trace", "meanfield", "tracegraph", "renyi"])
def test_every_elbo_reaches_the_conjugate_posterior(elbo, x4):
    """The posterior is Gaussian, in the guide's family: the optimum of every one of these
    objectives is the exact posterior (each bound is tight there)."""
    fit = pg.fit(normal_mean, x4, engine="svi", steps=1500, seed=0, lr=0.05, elbo=elbo,
                 num_particles=2 if elbo == "renyi" else 1, progress=False)
    assert fit.options["elbo"] == elbo
    m, sd = _posterior(x4)
    loc = fit.state["guide"].median()["mu"].item()
    post = pg.infer(fit, x4, query="posterior", num_samples=2000, seed=0)["mu"]
    # SVI noise at the optimum (as tests/test_core.py, 0.1 sd) and 4σ of 2000 guide draws
    assert abs(loc - m) < 0.1 * sd
    assert abs(post.std().item() - sd) < 0.1 * sd + 4 * sd / math.sqrt(2 * 2000)


def test_elbo_and_optim_values_are_checked():
    x = (torch.rand(30, generator=_gen(3)) < 0.6).float()
    for elbo in ("meanfield", "tracegraph", "renyi"):
        with pytest.raises(ValueError, match=r"cannot sum out the discrete latent sites \['z'\].*elbo='trace'"):
            pg.fit(coin_mixture, x, engine="svi", steps=2, elbo=elbo, progress=False)
    with pytest.raises(ValueError, match=r"elbo must be one of \['trace', 'meanfield', 'tracegraph', 'renyi'\]"):
        pg.fit(coin_mixture, x, engine="svi", steps=2, elbo="enum", progress=False)
    with pytest.raises(ValueError, match=r"optim must be one of \['adam', 'adamw', 'sgd', 'rmsprop', 'clipped_adam', 'lbfgs'\]"):
        pg.fit(coin_mixture, x, engine="svi", steps=2, optim="adagrad", progress=False)
    for bad in ({"lr": 0}, {"lr": "fast"}, {"lr_decay": 0}, {"lr_decay": 1.5}, {"num_particles": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            pg.fit(coin_mixture, x, engine="svi", steps=2, progress=False, **bad)


def quadratic(x=None):
    """No latent sites: the SVI loss is exactly (a - 1)² / 2, so every step is computable."""
    a = pyro.param("a", torch.tensor(0.0))
    pyro.factor("f", -0.5 * (a - 1) ** 2)


def test_sgd_applies_lr_and_lr_decay_exactly():
    lr, decay, steps = 0.3, 0.1, 25
    fit = pg.fit(quadratic, None, engine="svi", steps=steps, optim="sgd", lr=lr, lr_decay=decay, progress=False)
    # gradient (a - 1); step t takes lr · decay^((t + 1) / steps)
    a = 0.0
    for t in range(steps):
        a -= lr * decay ** ((t + 1) / steps) * (a - 1)
    assert abs(fit.params["a"].item() - a) < 1e-6


@pytest.mark.parametrize("optim", ["adam", "clipped_adam"])
def test_adam_first_step_has_the_learning_rate(optim):
    # Adam's first bias-corrected step is lr · sign(gradient) (up to eps = 1e-8)
    fit = pg.fit(quadratic, None, engine="svi", steps=1, optim=optim, lr=0.2, lr_decay=1.0, progress=False)
    assert abs(fit.params["a"].item() - 0.2) < 1e-6


# ---- 6. the seed changes the SVI start --------------------------------------------------------

def two_component(x=None):
    """Pyro's GMM tutorial in one dimension: Dirichlet weights, Normal locations, unit noise."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    with pyro.plate("components", 2):
        locs = pyro.sample("locs", dist.Normal(0.0, 10.0))
    with pyro.plate("N", 40 if x is None else len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)


def test_delta_guide_start_depends_on_the_seed():
    g = _gen(0)
    x = torch.cat([torch.randn(20, generator=g) - 4, torch.randn(20, generator=g) + 4])
    fits = {s: pg.fit(two_component, x, engine="svi", guide="delta", steps=300, lr=0.1, seed=s, progress=False)
            for s in range(3)}
    again = pg.fit(two_component, x, engine="svi", guide="delta", steps=300, lr=0.1, seed=0, progress=False)
    assert all(torch.equal(again.params[k], v) for k, v in fits[0].params.items())   # bit-identical
    assert not torch.equal(fits[0].params["locs"], fits[1].params["locs"])           # another start
    # with separated clusters (8 sd apart) the MAP has each location at its cluster's mean
    # (shrunk by the N(0, 10²) prior by a factor 20 / 20.01); a symmetric start would leave
    # both locations at the overall mean 0 for ever
    target = torch.stack([x[:20].sum(), x[20:].sum()]) / (20 + 1 / 100)
    separated = [s for s, f in fits.items() if torch.allclose(f.params["locs"].sort().values, target, atol=0.05)]
    assert separated, {s: f.params["locs"] for s, f in fits.items()}


# ---- 7. NUTS words and statistics ------------------------------------------------------------

def test_nuts_history_records_each_draws_statistics(x4):
    fit = pg.fit(normal_mean, x4, engine="mcmc", steps=40, warmup=40, num_chains=2, seed=0, progress=False)
    method = fit._method()
    assert method.objective == "potential_energy"
    mu = fit.state["samples"]["mu"]
    assert len(fit.history) == len(mu) == 80
    assert [h["step"] for h in fit.history] == list(range(80))
    assert [h["chain"] for h in fit.history] == [0] * 40 + [1] * 40
    for h, m in zip(fit.history, mu):
        assert set(h) == {"step", "chain", "step_size", "accept_prob", "diverging", "potential_energy",
                          "tree_depth", "n_steps"}
        assert isinstance(h["diverging"], bool) and 0 <= h["accept_prob"] <= 1
        assert all(isinstance(h[k], float) and math.isfinite(h[k])
                   for k in ("step_size", "accept_prob", "potential_energy"))
        # mu is unconstrained: the potential energy is -log p(mu, x), exactly
        exact = -(dist.Normal(0.0, 10.0).log_prob(m) + dist.Normal(m, 1.0).log_prob(x4).sum())
        assert abs(h["potential_energy"] - float(exact)) < 1e-4 * (1 + abs(float(exact)))
    for c in (0, 1):  # adaptation ends with the warm-up: one step size per chain
        assert len({h["step_size"] for h in fit.history if h["chain"] == c}) == 1
    assert fit.state["divergences"] == sum(h["diverging"] for h in fit.history)


def test_nuts_log_prob_count_is_num_samples(x4):
    fit = pg.fit(normal_mean, x4, engine="mcmc", steps=50, seed=0, progress=False)
    with pytest.raises(ValueError, match="unknown log_prob options"):
        fit.log_prob(x4, max_draws=5)
    lp = fit.log_prob(x4, num_samples=5)
    draws = fit.state["samples"]["mu"][torch.linspace(0, 49, 5).long()]   # evenly spaced
    per = dist.Normal(draws[:, None], 1.0).log_prob(x4)                   # (5, N)
    assert torch.allclose(lp, torch.logsumexp(per, 0) - math.log(5), atol=1e-5)


def fixed_weight_coins(x=None):
    """Float32 constants (the weights) next to EM's float64 parameters."""
    p = pyro.param("p", torch.tensor([0.3, 0.7]), constraint=constraints.unit_interval)
    with pyro.plate("N", 30 if x is None else len(x)):
        z = pyro.sample("z", dist.Categorical(torch.ones(2) / 2))
        pyro.sample("x", dist.Bernoulli(p[z]), obs=x)


def test_generic_em_mixes_float32_constants_and_float64_parameters():
    x = (torch.rand(30, generator=_gen(4)) < 0.6).float()
    fit = pg.fit(fixed_weight_coins, x, engine="em", steps=10, tol=None, progress=False)
    p = fit.params["p"]
    assert p.dtype == torch.float64
    x64 = x.double()
    # log p(x) = Σ_n log Σ_k ½ Bernoulli(x_n; p_k), by hand
    exact = torch.log(0.5 * (p[None, :] ** x64[:, None] * (1 - p[None, :]) ** (1 - x64[:, None])).sum(1)).sum()
    # the weights' log-probabilities are computed in float32 (the program's constants): 30 terms
    # of float32 rounding (6e-8 relative of log ½) bound the difference by ~1.3e-6
    assert abs(float(fit.log_prob(x)) - float(exact)) < 1e-5
