"""The core API on a user's own Pyro program: fit with svi and mcmc, graph, save/load, errors."""
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen as pg


def normal_mean(x):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("N", len(x)):
        pyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def posterior(x):
    """Conjugate posterior of mu: prior N(0, 10²), unit-variance likelihood."""
    prec = 1 / 100 + len(x)
    return float(x.sum()) / prec, math.sqrt(1 / prec)


@pytest.fixture
def x():
    return torch.randn(40, generator=torch.Generator().manual_seed(0)) + 3.0


def test_user_program_svi_matches_conjugate_posterior(x):
    fit = pg.fit(normal_mean, x, engine="svi", steps=1500, seed=0, lr=0.05, progress=False)
    mean, sd = posterior(x)
    guide = fit.state["guide"]
    loc, scale = guide.locs.mu.item(), guide.scales.mu.item()
    # SVI noise on the optimum: a few percent of the posterior sd is ample with 1500 steps
    assert abs(loc - mean) < 0.1 * sd
    assert abs(scale - sd) < 0.1 * sd


def test_user_program_nuts_matches_conjugate_posterior(x):
    fit = pg.fit(normal_mean, x, engine="mcmc", steps=400, seed=0, progress=False)
    mean, sd = posterior(x)
    s = fit.state["samples"]["mu"]
    # 400 correlated draws, n_eff >= 100: the mean's Monte Carlo error is below sd/10; 4σ margin
    assert abs(s.mean().item() - mean) < 0.4 * sd
    assert abs(s.std().item() - sd) < 0.25 * sd


def test_program_graph(x):
    g = pg.graph(normal_mean, x)
    assert dict(g.nodes(data="kind")) == {"mu": "latent", "x": "observed"}
    assert list(g.edges) == [("mu", "x")]
    assert g.nodes["x"]["plates"] == ("N",) and g.graph["plates"] == {"N": 40}


def test_save_load_round_trip(tmp_path, x):
    fit = pg.fit(normal_mean, x, engine="svi", steps=50, seed=0, progress=False)
    fit.save(tmp_path / "f.pt")
    again = pg.load(tmp_path / "f.pt")
    assert torch.equal(again.log_prob(x), fit.log_prob(x))
    assert again.history == fit.history
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".probgen-")]


def test_seed_reproduces(x):
    a = pg.fit(normal_mean, x, engine="svi", steps=20, seed=3, progress=False)
    b = pg.fit(normal_mean, x, engine="svi", steps=20, seed=3, progress=False)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


def test_unknown_engine_names_the_ones_that_fit(x):
    with pytest.raises(ValueError, match=r"unknown engine 'bogus'.*svi"):
        pg.fit(normal_mean, x, engine="bogus")


def test_data_with_nan_is_refused(x):
    x = x.clone()
    x[3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        pg.fit(normal_mean, x, engine="svi", steps=1)


def test_bad_steps_and_init(x):
    with pytest.raises(ValueError, match="steps"):
        pg.fit(normal_mean, x, engine="svi", steps=-1)
    with pytest.raises(ValueError, match="init"):
        pg.fit(normal_mean, x, engine="svi", init=[1, 2])


def test_load_rejects_foreign_file(tmp_path):
    p = tmp_path / "x.pt"
    p.write_bytes(b"not a fit")
    with pytest.raises(ValueError, match="not a probgen fit"):
        pg.load(p)


def test_probgen_calls_use_their_thread_setting_and_restore_the_callers(monkeypatch):
    """probgen's calls run with pg.num_threads() torch threads (default 1: measured in
    benchmarks/threads.py) and leave torch's setting as the caller had it."""
    import probgen.threads as threads
    seen = []
    from probgen.models import GaussianMixture
    model, x = GaussianMixture(2, 2), torch.randn(30, 2, dtype=torch.float64)
    method = pg.registry.find_method(model, "em")
    real = type(method).fit

    def spy(self, *a, **k):
        seen.append(torch.get_num_threads())
        return real(self, *a, **k)

    monkeypatch.setattr(type(method), "fit", spy)
    monkeypatch.setattr(threads, "_setting", None)
    monkeypatch.delenv("PROBGEN_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    pg.fit(model, x, engine="em", steps=1, seed=0, progress=False)
    assert set(seen) == {1} and torch.get_num_threads() == before
    monkeypatch.setenv("PROBGEN_NUM_THREADS", "bad")
    with pytest.raises(ValueError, match="PROBGEN_NUM_THREADS"):
        pg.fit(model, x, engine="em", steps=1, progress=False)
    pg.set_num_threads(None)  # leave torch's setting alone
    seen.clear()
    pg.fit(model, x, engine="em", steps=1, seed=0, progress=False)
    assert set(seen) == {before}
    with pytest.raises(ValueError, match="threads must be"):
        pg.set_num_threads(-1)
