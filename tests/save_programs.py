"""User Pyro programs for tests/test_save.py, defined in an importable module (not in a test
file): a saved fit names its program ``save_programs:<name>`` and a fresh process, with
``tests/`` on its path, imports it from there."""
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import config_enumerate


def normal_mean(x):
    """x_i ~ N(mu, 1), mu ~ N(0, 10²): one continuous latent (an autoguide under svi)."""
    mu = pyro.sample("mu", dist.Normal(0., 10.))
    with pyro.plate("N", len(x)):
        pyro.sample("x", dist.Normal(mu, 1.), obs=x)


def normal_mean_guide(x):
    """A guide function of one's own for `normal_mean`: its parameters are the fit's."""
    loc = pyro.param("mu_loc", torch.tensor(0.))
    scale = pyro.param("mu_scale", torch.tensor(1.), constraint=dist.constraints.positive)
    pyro.sample("mu", dist.Normal(loc, scale))


@config_enumerate
def mixture(x):
    """A two-component Normal mixture whose assignments are enumerated (``config_enumerate``)
    and whose weights are a latent Dirichlet draw; locations are learned parameters (svi)."""
    w = pyro.sample("w", dist.Dirichlet(torch.ones(2)))
    locs = pyro.param("locs", torch.tensor([-1., 1.]))
    with pyro.plate("N", len(x)):
        z = pyro.sample("z", dist.Categorical(w))
        pyro.sample("x", dist.Normal(locs[z], 1.), obs=x)


@config_enumerate
def bayesian_mixture(x):
    """As `mixture` with a prior on the locations (NUTS samples every continuous site)."""
    w = pyro.sample("w", dist.Dirichlet(torch.ones(2)))
    locs = pyro.sample("locs", dist.Normal(torch.tensor([-1., 1.]), 2.).to_event(1))
    with pyro.plate("N", len(x)):
        z = pyro.sample("z", dist.Categorical(w))
        pyro.sample("x", dist.Normal(locs[z], 1.), obs=x)


def data(n: int = 30) -> torch.Tensor:
    return torch.cat([torch.randn(n // 2, generator=torch.Generator().manual_seed(0)) - 2,
                      torch.randn(n - n // 2, generator=torch.Generator().manual_seed(1)) + 2])


def answers(fit, x) -> dict:
    """What a round trip must keep, as plain data (tensors, lists, dicts, strings): the
    fit's state keys (before it is evaluated: evaluation may fill caches), history,
    objective, log_prob_kind, params,
    ``log_prob(x)`` and ``sample(5, seed=0)`` (or the name of the error it raises). Used by
    the test and by the fresh process it starts."""
    state_keys = sorted(fit.state)
    try:
        sample = _plain(fit.sample(5, seed=0))
    except Exception as exc:  # a gap of the method itself: the loaded fit must fail alike
        sample = {"error": type(exc).__name__}
    return {"params": dict(fit.params), "log_prob": fit.log_prob(x), "sample": sample,
            "state_keys": state_keys, "history": fit.history, "objective": fit.objective,
            "log_prob_kind": fit.log_prob_kind}


def _plain(v):
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(u) for u in v]
    if isinstance(v, dict):
        return {str(k): _plain(u) for k, u in v.items()}
    return {"str": str(v)}  # a parse tree, say: its bracketed text
