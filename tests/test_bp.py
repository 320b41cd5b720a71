"""The `bp` engine (loopy belief propagation) against exact elimination.

Oracles: on graphs without loops (a tree factor graph, a polytree network) the BP fixed
point is exact, so marginals, max-marginal MAP and the Bethe log Z equal the exact engine's
to float round-off (1e-9 leaves room for the ~1e-12 residual of a converged fixed point);
on a loopy attractive binary grid the Bethe log Z is a lower bound of log Z (Ruozzi
2012) and the beliefs are locally consistent (factor beliefs marginalise to variable
beliefs) at convergence.
"""
import math

import pytest
import torch

import probgen as pg
from probgen.models import BayesianNetwork, FactorGraph
from probgen.ops.message_passing import belief_propagation


def _tree_graph(seed):
    g = torch.Generator().manual_seed(seed)
    cards = {"a": 2, "b": 3, "c": 4, "d": 2, "e": 3}
    scopes = [("a", "b"), ("b", "c"), ("b", "d"), ("d", "e"), ("c",)]
    factors = {f"f{i}": (s, torch.randn(*[cards[v] for v in s], generator=g, dtype=torch.float64))
               for i, s in enumerate(scopes)}
    return FactorGraph(cards, factors)


def _grid(n, seed, strength=0.4):
    g = torch.Generator().manual_seed(seed)
    name = lambda i, j: f"x{i}_{j}"  # noqa: E731
    edges, unary = {}, {}
    for i in range(n):
        for j in range(n):
            unary[name(i, j)] = 0.3 * torch.randn(2, generator=g, dtype=torch.float64)
            for di, dj in ((1, 0), (0, 1)):
                if i + di < n and j + dj < n:
                    w = strength * float(torch.rand((), generator=g, dtype=torch.float64))
                    edges[(name(i, j), name(i + di, j + dj))] = torch.tensor([[w, -w], [-w, w]], dtype=torch.float64)
    return FactorGraph.pairwise({name(i, j): 2 for i in range(n) for j in range(n)}, edges, unary)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tree_factor_graph_is_exact(seed):
    fg = _tree_graph(seed)
    g = torch.Generator().manual_seed(seed + 10)
    evidence = {"a": torch.randint(0, 2, (6,), generator=g), "e": torch.randint(0, 3, (6,), generator=g)}
    for ev in ({}, {"c": 1}, evidence):
        got = pg.infer(fg, ev, engine="bp", bp_tol=1e-12)
        want = pg.infer(fg, ev, engine="exact")
        for v in fg.variables:
            assert torch.allclose(got[v], want[v], atol=1e-9, rtol=0), (ev, v)
        lz = pg.infer(fg, ev, engine="bp", query="log_partition", bp_tol=1e-12)
        assert torch.allclose(lz, pg.infer(fg, ev, engine="exact", query="log_partition"), atol=1e-9, rtol=0)
        got_map = pg.infer(fg, ev, engine="bp", query="map")
        want_map = pg.infer(fg, ev, engine="exact", query="map")
        for v in fg.variables:  # random continuous tables: the maximiser is unique almost surely
            assert torch.equal(torch.as_tensor(got_map[v]), torch.as_tensor(want_map[v])), (ev, v)


@pytest.mark.parametrize("seed", [0, 1])
def test_loopy_grid_bethe_bound_and_consistency(seed):
    fg = _grid(4, seed)
    lz_bethe = float(pg.infer(fg, None, engine="bp", query="log_partition", bp_tol=1e-12))
    lz = float(pg.infer(fg, None, engine="exact", query="log_partition"))
    assert lz_bethe <= lz + 1e-9
    col = {v: j for j, v in enumerate(fg.variables)}
    scopes = [tuple(col[v] for v in s) for s in fg.scopes.values()]
    res = belief_propagation(list(fg.variables.values()), scopes, list(fg.log_potentials.values()),
                             damping=0.5, tol=1e-12, max_iters=2000)
    assert res.converged
    for s, bf in zip(scopes, res.factor_beliefs):
        for i, v in enumerate(s):
            other = tuple(j for j in range(len(s)) if j != i)
            marg = bf.sum(other) if other else bf
            assert torch.allclose(marg, res.beliefs[v][0], atol=1e-9)
    # and the Bethe marginals are close to exact here (weak couplings): not a bound, a sanity check
    exact = pg.infer(fg, None, engine="exact")
    assert max(float((res.beliefs[col[v]][0] - exact[v]).abs().max()) for v in fg.variables) < 0.05


def _polytree():
    spec = {
        "a": {"states": 2, "cpt": [0.3, 0.7]},
        "e": {"states": 3, "cpt": [0.2, 0.5, 0.3]},
        "b": {"states": 3, "parents": ["a"], "cpt": [[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]]},
        "c": {"states": 2, "parents": ["a"], "cpt": [[0.9, 0.1], [0.35, 0.65]]},
        "d": {"states": 2, "parents": ["b", "e"],
              "cpt": [[[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]], [[0.7, 0.3], [0.1, 0.9], [0.45, 0.55]],
                      [[0.3, 0.7], [0.85, 0.15], [0.05, 0.95]]]},
    }
    return BayesianNetwork(spec, name="polytree")


def test_polytree_network_marginals_map_and_em_are_exact():
    bn = _polytree()
    x = bn.sample(None, 300, seed=0).clone()
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) < 0.4
    x[mask] = -1
    got = pg.infer(bn, x, engine="bp", bp_tol=1e-12)
    want = pg.infer(bn, x, engine="exact")
    assert set(got) == set(want)
    for v in want:
        assert torch.allclose(got[v], want[v], atol=1e-9, rtol=0), v
    single = {"d": "1", "c": "0"}
    assert pg.infer(bn, single, engine="bp", query="map") == pg.infer(bn, single, engine="exact", query="map")
    # EM with the BP E-step follows exact EM on a polytree (same start, same iterations)
    a = pg.fit(bn, x, engine="em", seed=0, steps=15, tol=None, progress=False)
    b = pg.fit(bn, x, engine="bp", seed=0, steps=15, tol=None, progress=False)
    for k in a.params:
        assert torch.allclose(a.params[k], b.params[k], atol=1e-7), k
    assert [r["log_likelihood"] for r in a.history] == pytest.approx([r["log_likelihood"] for r in b.history],
                                                                        abs=1e-8)


def test_tree_factor_graph_fit_matches_exact_fit():
    fg = _tree_graph(0)
    data = fg.sample(None, 400, seed=1)
    a = pg.fit(fg, data, engine="exact", progress=False)
    b = pg.fit(fg, data, engine="bp", progress=False)
    # the same concave objective (BP is exact on a tree), both run to a relative change < 1e-8
    assert b.history[-1]["log_likelihood"] == pytest.approx(a.history[-1]["log_likelihood"], rel=1e-6)
    assert torch.allclose(b.log_prob(data), a.log_prob(data), atol=1e-4)


def test_bad_input_is_a_clear_error():
    fg = FactorGraph({"a": 2, "b": 2}, [(("a", "b"), torch.tensor([[0.0, -math.inf], [-math.inf, 0.0]]))])
    with pytest.raises(ValueError, match="probability zero"):
        belief_propagation([2, 2], [(0, 1)], [fg.log_potentials["f0"]], torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match="damping"):
        pg.infer(fg, None, engine="bp", damping=1.0)
    with pytest.raises(ValueError, match="bogus"):
        pg.infer(fg, None, engine="bp", bogus=1)


# ---- naive mean field (the meanfield engine on factor graphs and networks) -----------------

from probgen.ops.message_passing import mean_field  # noqa: E402


def _factor_set(fg):
    from probgen.inference.exact.factor_graph import factor_set
    return factor_set(fg, None)


@pytest.mark.parametrize("start", ["uniform", "bp"])
@pytest.mark.parametrize("seed", [0, 1])
def test_mean_field_elbo_is_a_nondecreasing_lower_bound(seed, start):
    fg = _grid(4, seed, strength=0.8)
    cards, scopes, tables = _factor_set(fg)
    lz = float(pg.infer(fg, None, engine="exact", query="log_partition"))
    # the run is deterministic: k sweeps are the first k sweeps of a longer run
    elbos = [float(mean_field(cards, scopes, tables, max_iters=k, tol=0, start=start).elbo[0]) for k in range(1, 10)]
    assert all(b >= a - 1e-12 for a, b in zip(elbos, elbos[1:])), elbos  # float round-off only
    assert max(elbos) <= lz + 1e-12
    assert float(pg.infer(fg, None, engine="meanfield", query="log_partition")) <= lz + 1e-12


def test_mean_field_is_exact_on_independent_variables():
    """With unary factors only the posterior is a product: q = p and the ELBO = log Z."""
    g = torch.Generator().manual_seed(0)
    fg = FactorGraph({"a": 2, "b": 3, "c": 4},
                     {f"u_{v}": ((v,), torch.randn(k, generator=g, dtype=torch.float64))
                      for v, k in (("a", 2), ("b", 3), ("c", 4))})
    got = pg.infer(fg, {"b": 1}, engine="meanfield")
    want = pg.infer(fg, {"b": 1}, engine="exact")
    for v in fg.variables:
        assert torch.allclose(got[v], want[v], atol=1e-12)
    assert float(pg.infer(fg, {"b": 1}, engine="meanfield", query="log_partition")) == \
        pytest.approx(float(pg.infer(fg, {"b": 1}, engine="exact", query="log_partition")), abs=1e-12)


def test_network_variational_em_never_decreases():
    bn = _polytree()
    x = bn.sample(None, 300, seed=0).clone()
    x[torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) < 0.4] = -1
    fit = pg.fit(bn, x, engine="meanfield", seed=0, steps=30, tol=None, progress=False)
    values = [r[fit.objective] for r in fit.history]
    assert all(b >= a - 1e-10 for a, b in zip(values, values[1:])), values
    # the per-row ELBO is a lower bound of the exact per-row log-likelihood at the same tables
    assert values[-1] <= float(bn.log_prob(fit.params, x).mean()) + 1e-10


# ---- Gibbs sampling (the mcmc engine on factor graphs) -------------------------------------

def test_factor_graph_gibbs_marginals_within_monte_carlo_error():
    """8 independent chains: each entry's mean over chains is within 6 standard errors of
    the between-chain spread of exact (t with 7 degrees of freedom: P(|t| > 6) ≈ 5e-4)."""
    from probgen.inference.mcmc.factor_graph import FactorGraphGibbs, Query
    from probgen.loops.mcmc import run
    fg = _grid(3, 0, strength=0.8)
    evidence = {"x0_0": torch.tensor([0, 1]), "x2_2": torch.tensor([1, 1])}
    exact = pg.infer(fg, evidence, engine="exact")
    rows = torch.full((2, len(fg.variables)), -1, dtype=torch.long)
    names = list(fg.variables)
    for v, val in evidence.items():
        rows[:, names.index(v)] = val
    fs = FactorGraphGibbs._factor_set(fg, None, rows)
    chains = run(Query(fs, list(range(len(names)))), steps=1500, warmup=150, num_chains=8, seed=0, progress=False)
    per_chain = chains.kept // 8
    for j, v in enumerate(names):
        means = chains.sums[str(j)] / per_chain                              # (chain, rows, card)
        se = means.std(0) / 8 ** 0.5
        err = (means.mean(0) - exact[v]).abs()
        assert (err <= 6 * se + 1e-12).all(), (v, err, se)
    got = pg.infer(fg, evidence, engine="mcmc", num_samples=1500, num_chains=8, seed=0)
    for v in names:  # the method's answer is the same average over the same chains
        assert torch.allclose(got[v], (chains.sums[str(names.index(v))].sum(0) / chains.kept))


def test_factor_graph_persistent_chain_ml_approaches_exact_ml():
    fg = _tree_graph(0)
    data = fg.sample(None, 500, seed=1)
    zero = {k: torch.zeros_like(v) for k, v in fg.log_potentials.items()}
    ll_start = float(fg.log_prob(zero, data).mean())
    ll_ml = float(pg.fit(fg, data, engine="exact", progress=False).log_prob(data).mean())
    fit = pg.fit(fg, data, engine="mcmc", init=zero, seed=0, steps=300, progress=False)
    ll = float(fit.log_prob(data).mean())
    # stochastic gradients: not the optimum, but most of the way from the start to it
    assert ll >= ll_start + 0.9 * (ll_ml - ll_start)
    assert all(r["pseudo_log_likelihood"] < 0 for r in fit.history)
