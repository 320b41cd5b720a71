"""One contract over every registered engine × compatible built-in model: a short fit names
its objective and every history record has ``step`` and that objective (finite), it samples,
has a finite log_prob, refuses unknown log_prob / sample options, and survives a save/load
round trip; every method that takes ``tol`` runs all its steps with ``tol=None``."""
import math

import pytest
import torch

import probgen as pg
from probgen import registry


def _cases():
    cases = []
    for name, cls in sorted(registry.models().items()):
        model, data = cls.example(seed=0)
        for engine in pg.compatible(model):
            cases.append(pytest.param(name, engine, id=f"{name}-{engine}"))
    return cases


def _finite(v):
    return isinstance(v, (int, float)) and math.isfinite(v)


def _check_history(fit):
    for record in fit.history:
        assert isinstance(record.get("step"), int), f"history record without an integer step: {record}"
        assert fit.objective in record, f"history record without {fit.objective!r}: {record}"
        assert isinstance(record[fit.objective], float) and math.isfinite(record[fit.objective]), record
        for key, value in record.items():
            if key != "step" and isinstance(value, float):
                assert _finite(value), f"non-finite {key} in history: {record}"


def _coin_mixture(x):
    """A user program for the generic EM: two Bernoulli components, the assignment enumerated."""
    import pyro
    import pyro.distributions as dist
    from torch.distributions import constraints
    w = pyro.param("weights", lambda: torch.tensor([0.4, 0.6], dtype=torch.float64), constraint=constraints.simplex)
    p = pyro.param("probs", lambda: torch.tensor([0.3, 0.6], dtype=torch.float64), constraint=constraints.unit_interval)
    with pyro.plate("N", len(x)):
        z = pyro.sample("z", dist.Categorical(w))
        pyro.sample("x", dist.Bernoulli(p[z]), obs=x)


def _extra_tol_examples():
    """Cases for methods that take ``tol`` but that no built-in example reaches iteratively:
    the Bayesian mixture and the Bayesian HMM (meanfield), network EM with missing cells (exact, BP and mean-field
    E-steps), and the generic EM of a user program."""
    from probgen.models import GaussianMixture
    x = registry.models()["gmm"].example(seed=0)[1]
    bn, rows = registry.models()["bn"].example(seed=0)
    rows = rows.clone()
    rows[::2, 0] = -1
    coins = (torch.rand(80, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    hmm, seqs = registry.models()["hmm"].example(seed=0)
    bhmm = type(hmm)(hmm.k, "categorical", n_symbols=hmm.n_symbols, bayesian=True)
    return {"bgmm-meanfield": (GaussianMixture(2, x.shape[1], bayesian=True), x, "meanfield"),
            "bhmm-meanfield": (bhmm, seqs, "meanfield"),
            "bn_missing-em": (bn, rows, "em"), "bn_missing-bp": (bn, rows, "bp"),
            "bn_missing-meanfield": (bn, rows, "meanfield"), "program-em": (_coin_mixture, coins, "em")}


def _tol_cases():
    """Every model x engine cell whose method takes ``tol`` (read from its signature), and
    the extra examples."""
    cases = []
    for name, cls in sorted(registry.models().items()):
        model, data = cls.example(seed=0)
        for engine in pg.compatible(model):
            method = registry.find_method(model, engine)
            if "tol" in registry.named_options(method.fit, ()):
                cases.append(pytest.param(name, engine, id=f"{name}-{engine}"))
    return cases + [pytest.param(key, None, id=key) for key in _extra_tol_examples()]


def test_every_method_with_tol_is_covered():
    """A new method that takes ``tol`` is reached by the test below (or is given an example)."""
    covered = set()
    examples = [registry.models()[p.values[0]].example(seed=0) + (p.values[1],) for p in _tol_cases()
                if p.values[1] is not None] + list(_extra_tol_examples().values())
    for model, _, engine in examples:
        covered.add(type(registry.find_method(registry.as_declaration(model), engine)))
    with_tol = {type(m) for e in pg.engines() for m in registry.methods(e)
                if "tol" in registry.named_options(m.fit, ())}
    assert with_tol <= covered, f"methods taking tol without a tol=None example: {with_tol - covered}"


@pytest.mark.parametrize("name,engine", _tol_cases())
def test_tol_none_runs_every_step(name, engine):
    """``tol=None`` never stops early: the history has exactly ``steps`` records, one per
    iteration (a fit that is closed form for these data says so in ``state["closed_form"]``
    and has its one record)."""
    if engine is None:
        model, data, engine = _extra_tol_examples()[name]
    else:
        model, data = registry.models()[name].example(seed=0)
    steps = 7
    fit = pg.fit(model, data, engine=engine, steps=steps, seed=0, tol=None, progress=False)
    if fit.state.get("closed_form"):
        assert len(fit.history) == 1
    else:
        assert len(fit.history) == steps
        assert [r["step"] for r in fit.history] == list(range(steps))


@pytest.mark.parametrize("name,engine", _cases())
def test_contract(name, engine, tmp_path):
    model, data = registry.models()[name].example(seed=0)
    fit = pg.fit(model, data, engine=engine, steps=3, seed=0, progress=False)
    assert isinstance(fit, pg.Fit) and fit.engine == engine
    assert fit.params, "a fit has parameters"
    # one history vocabulary: every record has its step and the fit's objective, finite
    assert isinstance(fit.objective, str) and fit.objective, "a fit names its objective"
    _check_history(fit)
    s = fit.sample(5, seed=0)
    n = len(s) if not isinstance(s, dict) else len(next(iter(s.values())))
    assert n == 5
    lp = fit.log_prob(data)
    assert torch.isfinite(torch.as_tensor(lp)).all()
    assert fit.log_prob_kind in ("exact", "bound", "estimate")
    # strict: an unknown option is refused by the core, whatever the method
    with pytest.raises(ValueError, match="unknown log_prob options"):
        fit.log_prob(data, bogus=1)
    with pytest.raises(ValueError, match="unknown sample options"):
        fit.sample(2, seed=0, bogus=1)
    fit.save(tmp_path / "fit.pt")
    again = pg.load(tmp_path / "fit.pt")
    assert again.objective == fit.objective and again.history == fit.history
    assert torch.equal(torch.as_tensor(again.log_prob(data)), torch.as_tensor(lp))
    for k, v in fit.params.items():
        assert torch.equal(again.params[k], v)


@pytest.mark.parametrize("name", ["gan", "diffusion", "ebm"])
def test_monte_carlo_log_prob_is_a_function_of_its_seed(name):
    """The Parzen (GAN), variational-bound (diffusion) and importance-sampling (EBM) estimates
    draw their Monte Carlo noise from ``seed``: the same seed gives the same answer, another
    seed an independent draw (continuous noise: two draws are equal with probability 0)."""
    model, data = registry.models()[name].example(seed=0)
    fit = pg.fit(model, data, steps=3, seed=0, progress=False)
    assert fit.log_prob_kind != "exact"
    a, b, c = fit.log_prob(data, seed=1), fit.log_prob(data, seed=1), fit.log_prob(data, seed=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def _doubled(data):
    """The data set passed twice: every data item (row, sequence, sentence) twice."""
    return torch.cat([data, data]) if isinstance(data, torch.Tensor) else list(data) + list(data)


@pytest.mark.parametrize("name", ["gmm", "hmm", "bn", "pcfg"])
def test_history_is_per_example(name):
    """The history's objective is per data item the user passed: the EM of the data set
    passed twice, from the same start, records the same values. The two runs do the same
    arithmetic on sums of twice as many equal terms, so they differ by rounding only (about
    1e-16 relative per operation, mildly amplified over 5 EM iterations); a data-set total
    would differ by a factor of 2."""
    model, data = registry.models()[name].example(seed=0)
    if name == "bn":  # complete data are one closed-form step: hide cells so that EM iterates
        data = data.clone()
        data[::2, 0] = -1
        data[1::3, 3] = -1
    # the start of the data passed once (steps=0), given to both; the mixture from a random
    # start, so that its EM has somewhere to go (k-means++ lands on this example's optimum)
    options = {"init_method": "random"} if name == "gmm" else {}
    start = None if name == "pcfg" else \
        pg.fit(model, data, engine="em", steps=0, seed=0, progress=False, **options).params
    one = pg.fit(model, data, engine="em", steps=5, seed=0, init=start, tol=None, progress=False)
    two = pg.fit(model, _doubled(data), engine="em", steps=5, seed=0, init=start, tol=None, progress=False)
    a = [r[one.objective] for r in one.history]
    b = [r[two.objective] for r in two.history]
    assert len(a) == len(b) == 5
    assert a == pytest.approx(b, rel=1e-10, abs=0)
    assert a[-1] > a[0]  # EM moved: the comparison is not of five copies of the start
