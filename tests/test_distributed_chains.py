"""MCMC chains spread over 2 local gloo ranks (issue 16, item 4): rank r runs its contiguous
block of the ``num_chains`` chains, each seeded by its global index (``chain_seed``), and
the draws, statistics and history are gathered into one Fit on every rank. NUTS runs its
chains one after another and network Gibbs gives each chain its own generator, so chain c is
the same computation on a rank as in the 1-process run: the draws are equal exactly."""
from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch

import probgen as pg
from probgen.models import BayesianNetwork

from ranks import run_ranks


def normal_mean(x):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("N", len(x)):
        pyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def nuts_fit():
    x = torch.tensor([0.3, -0.4, 1.2, 0.9, 0.1, 0.5])
    return pg.fit(normal_mean, x, engine="mcmc", steps=25, warmup=15, num_chains=4, seed=11, progress=False)


def gibbs_data():
    bn = BayesianNetwork.load_bundled("cancer")
    x = bn.sample(None, 60, seed=0).clone()
    g = torch.Generator().manual_seed(1)
    x[torch.rand(x.shape, generator=g) < 0.2] = -1  # missing cells: Gibbs augments them
    return bn, x


def gibbs_fit():
    bn, x = gibbs_data()
    return pg.fit(bn, x, engine="mcmc", steps=20, warmup=5, num_chains=4, seed=12, progress=False)


def plain(fit) -> dict:
    return {"params": {k: v.numpy().copy() for k, v in fit.params.items()},
            "draws": {k: v.numpy().copy() for k, v in fit.state["draws"].items()},
            "stats": {k: v.numpy().copy() for k, v in fit.state["sample_stats"].items()},
            "history": fit.history, "diagnostics": [dict(r) for r in fit.diagnostics()]}


def rank_chains() -> list:
    return [plain(nuts_fit()), plain(gibbs_fit())]


def assert_equal(a: dict, b: dict) -> None:
    for part in ("params", "draws", "stats"):
        assert set(a[part]) == set(b[part]), part
        for k in a[part]:
            np.testing.assert_array_equal(a[part][k], b[part][k], err_msg=f"{part} {k}")
    assert a["history"] == b["history"]
    assert a["diagnostics"] == b["diagnostics"]


def test_two_ranks_of_four_chains_equal_the_one_process_fit():
    ranked = run_ranks(rank_chains)
    for i, local in enumerate((plain(nuts_fit()), plain(gibbs_fit()))):
        assert next(iter(local["draws"].values())).shape[0] == 4
        assert_equal(ranked[0][i], local)
        assert_equal(ranked[1][i], local)
