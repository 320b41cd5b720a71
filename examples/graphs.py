"""Write the structure pictures shown in the README (docs/img/graph_*.svg).

    python examples/graphs.py [--out docs/img]

A Gaussian mixture with plates, an HMM unrolled by pyro.markov, a small factor graph
(bipartite and Markov-network forms) and two plates that overlap without nesting.
"""
from __future__ import annotations

import argparse
import os

import pyro
import pyro.distributions as dist
import torch

import probgen as pg
from probgen.models import FactorGraph


def mixture(x, K=3):
    """Bayesian Gaussian mixture: K component means, N points each with an assignment z."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(K)))
    with pyro.plate("K", K):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("N", len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(loc[z], 1.0).to_event(1), obs=x)


def hmm(y):
    """A two-state HMM with Gaussian emissions; pyro.markov unrolls it step by step."""
    initial = pyro.param("initial", torch.ones(2) / 2)
    transition = pyro.param("transition", torch.ones(2, 2) / 2)
    loc = pyro.param("loc", torch.tensor([-1.0, 1.0]))
    z = pyro.sample("z_0", dist.Categorical(initial))
    pyro.sample("y_0", dist.Normal(loc[z], 1.0), obs=y[0])
    for t in pyro.markov(range(1, len(y))):
        z = pyro.sample(f"z_{t}", dist.Categorical(transition[z]))
        pyro.sample(f"y_{t}", dist.Normal(loc[z], 1.0), obs=y[t])


def overlapping(y):
    """Rows × columns: a row effect r in plate rows, a column effect c in plate cols,
    and each cell y in both (the plates overlap without nesting)."""
    rows = pyro.plate("rows", y.shape[0], dim=-2)
    cols = pyro.plate("cols", y.shape[1], dim=-1)
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with rows:
        r = pyro.sample("r", dist.Normal(mu, 1.0))
    with cols:
        c = pyro.sample("c", dist.Normal(0.0, 1.0))
    with rows, cols:
        pyro.sample("y", dist.Normal(r + c, 1.0), obs=y)


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    written = [
        pg.render(mixture, os.path.join(out, "graph_mixture.svg"), torch.zeros(150, 2)),
        pg.render(hmm, os.path.join(out, "graph_hmm.svg"), torch.zeros(4), params=True),
        pg.render(overlapping, os.path.join(out, "graph_overlapping_plates.svg"), torch.zeros(5, 4)),
    ]
    fg = FactorGraph({"a": 2, "b": 3, "c": 2}, [(("a", "b"), torch.zeros(2, 3)),
                                                (("b", "c"), torch.zeros(3, 2))])
    written.append(pg.render(fg, os.path.join(out, "graph_factor_graph.svg"), factors=True))
    written.append(pg.render(FactorGraph.ising(4), os.path.join(out, "graph_markov_network.svg")))
    for path in written:
        print("wrote", path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "docs", "img"))
    main(parser.parse_args().out)
