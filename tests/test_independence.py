"""A fit is a value (issue 14): generated over the registry — every built-in model × every
engine ``pg.compatible`` lists, plus user Pyro programs — fitting never changes the
declaration it is given, a fit owns its parameters (its own copy of the declaration's
networks, its own Pyro param store), later fits leave every answer of an earlier fit
bit-identical, and one declaration fitted twice with one seed gives bit-identical params."""
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import probgen as pg
from probgen import registry


def normal_mean(x=None):
    mu = pyro.sample("mu", dist.Normal(0., 10.))
    with pyro.plate("N", 40 if x is None else len(x)):
        pyro.sample("x", dist.Normal(mu, 1.), obs=x)


def coin_mixture(x=None):
    p = pyro.param("p", torch.tensor([0.3, 0.7]), constraint=dist.constraints.unit_interval)
    w = pyro.param("w", torch.tensor([0.5, 0.5]), constraint=dist.constraints.simplex)
    with pyro.plate("N", 60 if x is None else len(x)):
        z = pyro.sample("z", dist.Categorical(w))
        pyro.sample("x", dist.Bernoulli(p[z]), obs=x)


PROGRAMS = {"normal_mean": (normal_mean, lambda s: torch.randn(40, generator=torch.Generator().manual_seed(s)) + s),
            "coin_mixture": (coin_mixture, lambda s: (torch.rand(60, generator=torch.Generator().manual_seed(s)) < 0.6).float())}


def _cases():
    cases = []
    for name, cls in sorted(registry.models().items()):
        model, _ = cls.example(seed=0)
        cases += [pytest.param("builtin", name, e, id=f"{name}-{e}") for e in pg.compatible(model)]
    for name, (fn, _) in PROGRAMS.items():
        cases += [pytest.param("program", name, e, id=f"{name}-{e}") for e in pg.compatible(fn)]
    return cases


def _example(kind, name, seed):
    if kind == "builtin":
        return registry.models()[name].example(seed=seed)
    fn, make = PROGRAMS[name]
    return fn, make(seed)


def _tensors(obj, path="", seen=None):
    """Every tensor reachable from ``obj`` (attributes, containers, module state), by path."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return {}
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return {path: obj.detach().clone()}
    if isinstance(obj, nn.Module):
        return {f"{path}.{k}": v.detach().clone() for k, v in obj.state_dict().items()}
    out = {}
    items = (obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple))
             else vars(obj).items() if hasattr(obj, "__dict__") and not callable(obj) or hasattr(obj, "_repr_fields")
             else ())
    for k, v in items:
        out.update(_tensors(v, f"{path}.{k}", seen))
    return out


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _answers(fit, data):
    return {"params": fit.params, "log_prob": fit.log_prob(data), "sample": fit.sample(5, seed=0)}


@pytest.mark.parametrize("kind,name,engine", _cases())
def test_fit_is_a_value(kind, name, engine):
    model, data = _example(kind, name, 0)
    declared = _tensors(model)
    a = pg.fit(model, data, engine=engine, steps=3, seed=0, progress=False)
    assert a.model is not model, "the fit trains its own copy of the declaration"
    before = _answers(a, data)
    # the same declaration, the same seed: bit-identical parameters (no warm start)
    b = pg.fit(model, data, engine=engine, steps=3, seed=0, progress=False)
    assert _same(b.params, a.params)
    # another declaration and other data in between
    other, other_data = _example(kind, name, 1)
    pg.fit(other, other_data, engine=engine, steps=3, seed=1, progress=False)
    assert _same(_answers(a, data), before), "a later fit changed an earlier fit's answers"
    assert _same(_tensors(model), declared), "pg.fit changed the declaration it was given"


def test_svi_program_fits_do_not_share_parameters():
    """The probe of issue 14: a second SVI fit of a program on other data changed the first
    fit's log_prob (both read Pyro's global param store)."""
    x, y = torch.randn(50), torch.randn(50) + 5
    a = pg.fit(normal_mean, x, engine="svi", steps=200, seed=0, progress=False)
    lp = a.log_prob(x)
    pg.fit(normal_mean, y, engine="svi", steps=200, seed=0, progress=False)
    assert torch.equal(a.log_prob(x), lp)
    assert len(pyro.get_param_store()) == 0, "pg.fit leaves the user's param store as it was"


def test_users_param_store_is_left_alone():
    pyro.param("users_own", torch.tensor(3.0))
    pg.fit(normal_mean, torch.randn(20), engine="svi", steps=5, seed=0, progress=False)
    assert list(pyro.get_param_store().keys()) == ["users_own"]
    assert pyro.param("users_own").item() == 3.0


def _flat(sample):
    """A draw as one float vector (tensors, dicts of tensors, lists of trees / sequences)."""
    if isinstance(sample, torch.Tensor):
        return sample.detach().double().flatten()
    if isinstance(sample, dict):
        return torch.cat([_flat(sample[k]) for k in sorted(sample)])
    if isinstance(sample, (list, tuple)):
        return torch.cat([_flat(s) for s in sample]) if sample else torch.zeros(0)
    return torch.tensor([float(hash(str(sample)) % 1000003)])


@pytest.mark.parametrize("kind,name,engine", _cases())
def test_samples_and_estimates_are_functions_of_their_seed(kind, name, engine):
    """Same seed, same draws (and the same Monte Carlo log_prob); another seed, other draws:
    50 draws of a fitted model coincide under two seeds only if it is (nearly) deterministic."""
    model, data = _example(kind, name, 0)
    fit = pg.fit(model, data, engine=engine, steps=3, seed=0, progress=False)
    a, b, c = fit.sample(50, seed=0), fit.sample(50, seed=0), fit.sample(50, seed=1)
    assert _same(a, b)
    assert not torch.equal(_flat(a), _flat(c))
    if fit.log_prob_kind != "exact":
        assert _same(fit.log_prob(data, seed=3), fit.log_prob(data, seed=3))
