"""The one MCMC driver (probgen.loops.mcmc), its diagnostics (probgen.diagnostics) and
ArviZ export, on models whose posterior is known exactly: a Normal–Normal program (NUTS)
and a two-node Bayesian network with missing cells, whose table posterior is a mixture of
Dirichlets over the 2^3 completions of its missing cells (Gibbs data augmentation)."""
import itertools
import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen as pg
from probgen import diagnostics as D
from probgen.loops.mcmc import chain_seed
from probgen.models import BayesianNetwork, GaussianMixture

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import arviz as az


def normal_mean(x=None):
    """mu ~ N(0, 10²), x_n ~ N(mu, 1)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("N", 4 if x is None else len(x)):
        pyro.sample("x", dist.Normal(mu, 1.0), obs=x)


X = torch.randn(20, generator=torch.Generator().manual_seed(0)) + 2.0


def normal_posterior(x):
    prec = 1 / 100 + len(x)
    return float(x.sum()) / prec, math.sqrt(1 / prec)


# ---- a two-node network A -> B, A missing in 3 of 12 rows ------------------------------------
NET = BayesianNetwork({"A": {"states": ["a0", "a1"], "cpt": [0.5, 0.5]},
                       "B": {"states": ["b0", "b1"], "parents": ["A"], "cpt": [[0.5, 0.5], [0.5, 0.5]]}})
ROWS = torch.tensor([[0, 0], [0, 0], [0, 1], [1, 1], [1, 1], [1, 1], [1, 0], [0, 0], [1, 1],
                     [-1, 0], [-1, 1], [-1, 1]])


def network_posterior_mean(rows, pseudo=1.0):
    """E[probs_A], E[probs_B] under Dirichlet(pseudo) priors: a mixture over every completion
    z of the missing cells, weighted by the Dirichlet-multinomial marginal likelihood of the
    completed data, of the conjugate posterior means (counts + pseudo) / (n + 2·pseudo)."""
    from scipy.special import gammaln

    def log_beta(a):
        return gammaln(a).sum() - gammaln(a.sum())

    missing = [i for i in range(len(rows)) if rows[i, 0] < 0]
    weights, mean_a, mean_b = [], [], []
    for z in itertools.product([0, 1], repeat=len(missing)):
        full = rows.clone()
        full[missing, 0] = torch.tensor(z)
        ca = np.bincount(full[:, 0].numpy(), minlength=2).astype(float)
        cb = np.zeros((2, 2))
        np.add.at(cb, (full[:, 0].numpy(), full[:, 1].numpy()), 1.0)
        logw = log_beta(ca + pseudo) + sum(log_beta(cb[a] + pseudo) for a in range(2))
        weights.append(logw)
        mean_a.append((ca + pseudo) / (ca.sum() + 2 * pseudo))
        mean_b.append((cb + pseudo) / (cb.sum(1, keepdims=True) + 2 * pseudo))
    w = np.exp(np.array(weights) - max(weights))
    w /= w.sum()
    return np.tensordot(w, np.array(mean_a), 1), np.tensordot(w, np.array(mean_b), 1)


@pytest.fixture(scope="module")
def nuts4():
    return pg.fit(normal_mean, X, engine="mcmc", steps=400, warmup=200, num_chains=4, seed=0, progress=False)


@pytest.fixture(scope="module")
def gibbs4():
    return pg.fit(NET, ROWS, engine="mcmc", steps=2000, warmup=200, num_chains=4, seed=0, progress=False)


def _within_mcse(table, name, truth):
    row = table.row(name)
    # 4 Monte Carlo standard errors: a 6e-5 two-sided chance per entry if the chain is right
    assert abs(row["mean"] - truth) < 4 * row["mcse"], (name, row, truth)


def test_nuts_four_chains_converge_to_the_conjugate_posterior(nuts4):
    table = nuts4.diagnostics()
    assert [r["parameter"] for r in table] == ["mu", "potential_energy"]
    for r in table:
        assert r["r_hat"] < 1.01, r
    mean, sd = normal_posterior(X)
    _within_mcse(table, "mu", mean)
    assert 0 < table.row("mu")["mcse"] < sd / 10          # 1600 kept draws: the error is small
    assert "r_hat" in str(table) and "mu" in str(table)


def test_gibbs_four_chains_converge_to_the_enumerated_posterior(gibbs4):
    table = gibbs4.diagnostics()
    want_a, want_b = network_posterior_mean(ROWS)
    for r in table:
        assert r["r_hat"] < 1.01, r
    for k in range(2):
        _within_mcse(table, f"probs_A[{k}]", want_a[k])
        for a in range(2):
            _within_mcse(table, f"probs_B[{a},{k}]", want_b[a, k])
    # the fit's tables are the posterior mean over every kept draw of every chain
    assert torch.allclose(gibbs4.params["probs_A"], gibbs4.state["draws"]["probs_A"].mean((0, 1)), atol=1e-12)


@pytest.mark.parametrize("which", ["nuts", "gibbs"])
def test_to_arviz_round_trips_through_arviz_summary(which, nuts4, gibbs4):
    fit = nuts4 if which == "nuts" else gibbs4
    idata = fit.to_arviz()
    for k, v in fit.state["draws"].items():
        assert idata.posterior[k].shape == tuple(v.shape)            # (chain, draw, ...)
        assert np.array_equal(idata.posterior[k].values, v.numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = az.summary(idata, round_to="none")
    ours = {r["parameter"]: r for r in fit.diagnostics()}
    # ArviZ sums NUTS's float32 draws in float32 (ours in float64): float32 round-off over
    # 1600 draws is below 1e-5 relative; the Gibbs draws are float64
    rel = 1e-5 if next(iter(fit.state["draws"].values())).dtype == torch.float32 else 1e-12
    for name, row in s.iterrows():
        mine = ours[name.replace(", ", ",")]
        assert mine["mean"] == pytest.approx(row["mean"], rel=rel, abs=1e-14)
        assert mine["sd"] == pytest.approx(row["sd"], rel=max(rel, 1e-10))
        assert mine["r_hat"] == pytest.approx(row["r_hat"], rel=1e-10)
        assert mine["ess"] == pytest.approx(row["ess_bulk"], rel=1e-10)
        assert mine["mcse"] == pytest.approx(row["mcse_mean"], rel=max(rel, 1e-10))
    if which == "nuts":
        stats = idata.sample_stats
        assert {"step_size", "accept_prob", "diverging", "potential_energy", "tree_depth",
                "n_steps"} <= set(stats.data_vars)
        assert stats["potential_energy"].shape == (4, 400) and stats["diverging"].dtype == bool


def test_nuts_reports_tree_depth_and_leapfrog_steps(nuts4):
    """A trajectory of d doublings holds at most 2^d − 1 leapfrog steps (the last doubling
    may stop half-way on a U-turn or a divergence, so at least 2^(d−1)), d ≤ max_tree_depth;
    with max_tree_depth=1 every trajectory is one leapfrog step. The history carries the same
    numbers per draw as ``sample_stats`` (chain, draw)."""
    stats = nuts4.state["sample_stats"]
    depth, n = stats["tree_depth"], stats["n_steps"]
    assert depth.shape == n.shape == (4, 400)
    assert bool(((depth >= 1) & (depth <= 10)).all())
    assert bool((n <= 2 ** depth - 1).all()) and bool((n >= 2 ** (depth - 1)).all())
    assert len(set(depth.flatten().tolist())) > 1          # the sampler adapts: not one fixed depth
    assert [h["tree_depth"] for h in nuts4.history if h["chain"] == 0] == depth[0].tolist()
    one = pg.fit(normal_mean, X, engine="mcmc", steps=20, warmup=20, seed=0, progress=False, max_tree_depth=1)
    assert one.state["sample_stats"]["tree_depth"].eq(1).all() and one.state["sample_stats"]["n_steps"].eq(1).all()
    assert {"diverging", "accept_prob", "step_size"} <= set(one.state["sample_stats"])


def test_diagnostics_match_arviz_on_autocorrelated_chains():
    rng = np.random.default_rng(0)
    phi = np.array([0.0, 0.5, 0.9, -0.5, 0.99])
    for chains, draws in [(4, 100), (2, 57), (3, 9), (4, 1000)]:   # odd lengths drop the middle draw
        x = np.zeros((chains, draws, 5))
        for t in range(1, draws):
            x[:, t] = phi * x[:, t - 1] + rng.normal(size=(chains, 5))
        x[:, :, 0] += 0.3 * np.arange(chains)[:, None]            # one parameter whose chains disagree
        ds = az.convert_to_dataset({"x": x})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = {"rank": az.rhat(ds, method="rank")["x"].values, "split": az.rhat(ds, method="split")["x"].values,
                   "bulk": az.ess(ds, method="bulk")["x"].values, "mean": az.ess(ds, method="mean")["x"].values,
                   "mcse": az.mcse(ds, method="mean")["x"].values}
        np.testing.assert_allclose(D.rhat(x), ref["rank"], rtol=1e-12)
        np.testing.assert_allclose(D.split_rhat(x), ref["split"], rtol=1e-12)
        np.testing.assert_allclose(D.ess(x), ref["bulk"], rtol=1e-10)
        np.testing.assert_allclose(D.ess(x, "mean"), ref["mean"], rtol=1e-10)
        np.testing.assert_allclose(D.mcse_mean(x), ref["mcse"], rtol=1e-10)
    assert D.rhat(x)[0] > 1.01                                      # the shifted chains are caught
    with pytest.raises(ValueError, match="at least 4 draws"):
        D.rhat(np.zeros((2, 3)))


def test_thin_keeps_every_kth_draw():
    full = pg.fit(normal_mean, X, engine="mcmc", steps=12, warmup=10, seed=3, progress=False)
    thin = pg.fit(normal_mean, X, engine="mcmc", steps=12, warmup=10, thin=3, seed=3, progress=False)
    assert torch.equal(thin.state["draws"]["mu"], full.state["draws"]["mu"][:, ::3])
    assert [h["potential_energy"] for h in thin.history] == [h["potential_energy"] for h in full.history][::3]
    g_full = pg.fit(NET, ROWS, engine="mcmc", steps=10, warmup=2, seed=1, progress=False)
    g_thin = pg.fit(NET, ROWS, engine="mcmc", steps=10, warmup=2, thin=4, seed=1, progress=False)
    assert torch.equal(g_thin.state["draws"]["probs_B"], g_full.state["draws"]["probs_B"][:, ::4])
    assert g_thin.state["draws"]["probs_B"].shape == (1, 3, 2, 2)   # ceil(10 / 4) kept draws


def test_num_chains_shapes_and_history():
    fit = pg.fit(normal_mean, X, engine="mcmc", steps=6, warmup=4, num_chains=3, seed=0, progress=False)
    assert fit.state["draws"]["mu"].shape == (3, 6) and fit.state["samples"]["mu"].shape == (18,)
    assert fit.state["sample_stats"]["accept_prob"].shape == (3, 6)
    assert [h["chain"] for h in fit.history] == [0] * 6 + [1] * 6 + [2] * 6
    assert [h["step"] for h in fit.history] == list(range(18))
    assert fit.options["num_chains"] == 3
    # the chains are independent: chain 1 is not a copy of chain 0
    assert not torch.equal(fit.state["draws"]["mu"][0], fit.state["draws"]["mu"][1])
    g = pg.fit(NET, ROWS, engine="mcmc", steps=5, warmup=3, num_chains=2, seed=0, progress=False)
    assert g.state["draws"]["probs_B"].shape == (2, 5, 2, 2)
    assert len(g.history) == 2 * 8 and sum(h["warmup"] for h in g.history) == 2 * 3


def test_vectorised_gibbs_chains_equal_one_chain_at_a_time():
    """The network's chains move side by side, each with its own generator seeded by
    chain_seed(seed, c): chain c of a vectorised run is the one-chain run with that seed."""
    many = pg.fit(NET, ROWS, engine="mcmc", steps=30, warmup=5, num_chains=3, seed=7, progress=False)
    for c in range(3):
        one = pg.fit(NET, ROWS, engine="mcmc", steps=30, warmup=5, seed=chain_seed(7, c), progress=False)
        for k, v in many.state["draws"].items():
            assert torch.equal(v[c], one.state["draws"][k][0]), (c, k)
    assert chain_seed(7, 0) == 7 and len({chain_seed(7, c) for c in range(3)}) == 3


def test_lda_chains_and_diagnostics():
    model, docs = pg.registry.models()["lda"].example(seed=0)
    one = pg.fit(model, docs, engine="mcmc", steps=8, warmup=4, seed=0, progress=False)
    two = pg.fit(model, docs, engine="mcmc", steps=8, warmup=4, num_chains=2, seed=0, progress=False)
    assert len(two.history) == 2 * 12 and two.state["kept"] == 16
    assert two.state["sample_stats"]["log_joint"].shape == (2, 8)
    # chain 0 of two chains is the one-chain run (vectorised: the records go sweep by sweep, chains in order)
    assert [h["chain"] for h in two.history[:4]] == [0, 1, 0, 1]
    assert [h["log_joint"] for h in two.history if h["chain"] == 0] == [h["log_joint"] for h in one.history]
    assert [r["parameter"] for r in two.diagnostics()] == ["log_joint"]


def test_callback_stops_the_chains():
    seen = []

    def stop_at_five(record):
        seen.append(record)
        return len(seen) == 5

    fit = pg.fit(normal_mean, X, engine="mcmc", steps=20, warmup=5, num_chains=2, seed=0, progress=False,
                 callback=stop_at_five)
    assert len(fit.history) == 5 and seen == fit.history
    assert fit.state["draws"]["mu"].shape == (1, 5)
    with pytest.raises(ValueError, match="callback must be a function"):
        pg.fit(NET, ROWS, engine="mcmc", steps=3, callback=5, progress=False)


def test_bad_budgets_and_non_mcmc_fits_are_refused():
    for bad in ({"num_chains": 0}, {"thin": 0}, {"warmup": -1}, {"num_chains": 1.5}):
        with pytest.raises(ValueError, match=list(bad)[0]):
            pg.fit(NET, ROWS, engine="mcmc", steps=3, progress=False, **bad)
    with pytest.raises(ValueError, match="unknown mcmc options"):
        pg.fit(normal_mean, X, engine="mcmc", steps=3, chains=2, progress=False)   # the old name
    em = pg.fit(GaussianMixture(2, 4), pg.load_dataset("iris").float(), engine="em", steps=3, seed=0)
    for call in (em.diagnostics, em.to_arviz):
        with pytest.raises(ValueError, match="MCMC driver"):
            call()
    short = pg.fit(NET, ROWS, engine="mcmc", steps=3, warmup=0, seed=0, progress=False)
    with pytest.raises(ValueError, match="at least 4 draws"):
        short.diagnostics()


def test_saved_mcmc_fit_keeps_its_draws(gibbs4, tmp_path):
    gibbs4.save(tmp_path / "fit.pt")
    again = pg.load(tmp_path / "fit.pt")
    assert str(again.diagnostics()) == str(gibbs4.diagnostics())
