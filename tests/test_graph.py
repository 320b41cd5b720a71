"""Graphs of programs and factor graphs, graph queries, drawing, and the exact engine for
discrete factor graphs (checked against brute-force enumeration)."""
import itertools
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import networkx as nx
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen as pg
from probgen import drawing
from probgen.models import FactorGraph

SVG = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")


# ---- user programs ------------------------------------------------------------------

def mixture(x, K=3):
    """Bayesian Gaussian mixture: component means in plate K, assignments in plate N."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(K)))
    with pyro.plate("K", K):
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    with pyro.plate("N", len(x)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(loc[z], 1.0).to_event(1), obs=x)


def nested(y):
    """Members (plate M, 4) nested inside groups (plate G, 3)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("G", y.shape[0], dim=-2):
        a = pyro.sample("a", dist.Normal(mu, 1.0))
        with pyro.plate("M", y.shape[1], dim=-1):
            pyro.sample("y", dist.Normal(a, 1.0), obs=y)


def overlapping():
    """pyro issue 2980's Venn diagram: y is in both plates, x only in plate1, z only in plate2."""
    plate1 = pyro.plate("plate1", 2, dim=-2)
    plate2 = pyro.plate("plate2", 3, dim=-1)
    with plate1:
        x = pyro.sample("x", dist.Normal(0.0, 1.0))
    with plate1, plate2:
        y = pyro.sample("y", dist.Normal(x, 1.0))
    with plate2:
        pyro.sample("z", dist.Normal(y.sum(-2, True), 1.0), obs=torch.zeros(3))


def crossed(y):
    """Crossed random effects: r in plate rows, c in plate cols, each cell y in both."""
    rows = pyro.plate("rows", y.shape[0], dim=-2)
    cols = pyro.plate("cols", y.shape[1], dim=-1)
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with rows:
        r = pyro.sample("r", dist.Normal(mu, 1.0))
    with cols:
        c = pyro.sample("c", dist.Normal(0.0, 1.0))
    with rows, cols:
        pyro.sample("y", dist.Normal(r + c, 1.0), obs=y)


def hmm(y):
    """A two-state HMM with Gaussian emissions, unrolled by pyro.markov."""
    initial = pyro.param("initial", torch.ones(2) / 2)
    transition = pyro.param("transition", torch.ones(2, 2) / 2)
    loc = pyro.param("loc", torch.tensor([-1.0, 1.0]))
    z = pyro.sample("z_0", dist.Categorical(initial))
    pyro.sample("y_0", dist.Normal(loc[z], 1.0), obs=y[0])
    for t in pyro.markov(range(1, len(y))):
        z = pyro.sample(f"z_{t}", dist.Categorical(transition[z]))
        pyro.sample(f"y_{t}", dist.Normal(loc[z], 1.0), obs=y[t])


def nodes(g):
    return {n: (d["kind"], d.get("plates", ())) for n, d in g.nodes(data=True)}


def edges(g):
    return {(u, v): d["directed"] for u, v, d in g.edges(data=True)}


def test_mixture_graph():
    g = pg.graph(mixture, torch.zeros(10, 2))
    assert isinstance(g, nx.DiGraph)
    assert nodes(g) == {"weights": ("latent", ()), "loc": ("latent", ("K",)),
                        "z": ("latent", ("N",)), "x": ("observed", ("N",))}
    assert edges(g) == {("weights", "z"): True, ("z", "x"): True, ("loc", "x"): True}
    assert g.graph["plates"] == {"K": 3, "N": 10}
    assert g.nodes["loc"]["distribution"] == "Normal" and g.nodes["z"]["distribution"] == "Categorical"


def test_nested_plates_graph():
    g = pg.graph(nested, torch.zeros(3, 4))
    assert nodes(g) == {"mu": ("latent", ()), "a": ("latent", ("G",)), "y": ("observed", ("G", "M"))}
    assert edges(g) == {("mu", "a"): True, ("a", "y"): True}
    assert g.graph["plates"] == {"G": 3, "M": 4}


def test_overlapping_plates_graph():
    g = pg.graph(overlapping)
    # Pyro's own relations rename the second use of plate2 to "plate2__CLONE"; ours do not
    assert nodes(g) == {"x": ("latent", ("plate1",)), "y": ("latent", ("plate1", "plate2")),
                        "z": ("observed", ("plate2",))}
    assert edges(g) == {("x", "y"): True, ("y", "z"): True}
    assert g.graph["plates"] == {"plate1": 2, "plate2": 3}


def test_hmm_unrolled_with_params():
    g = pg.graph(hmm, torch.zeros(4), params=True)
    want = {f"z_{t}": ("latent", ()) for t in range(4)}
    want.update({f"y_{t}": ("observed", ()) for t in range(4)})
    want.update({p: ("param", ()) for p in ("initial", "transition", "loc")})
    assert nodes(g) == want
    want_edges = {(f"z_{t}", f"y_{t}") for t in range(4)} | {(f"z_{t}", f"z_{t + 1}") for t in range(3)}
    want_edges |= {("initial", "z_0")} | {("transition", f"z_{t}") for t in (1, 2, 3)}
    want_edges |= {("loc", f"y_{t}") for t in range(4)}
    assert edges(g) == {e: True for e in want_edges}
    # without params only the random variables remain
    assert set(pg.graph(hmm, torch.zeros(4)).nodes) == {n for n in want if want[n][0] != "param"}


def test_deterministic_sites_only_when_asked():
    def prog():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.deterministic("b", 2 * a)
        pyro.sample("c", dist.Normal(b, 1.0), obs=torch.tensor(0.0))
    assert nodes(pg.graph(prog)) == {"a": ("latent", ()), "c": ("observed", ())}
    g = pg.graph(prog, deterministic=True)
    assert nodes(g) == {"a": ("latent", ()), "b": ("deterministic", ()), "c": ("observed", ())}
    assert set(g.edges) == {("a", "b"), ("b", "c")}


def test_graph_of_a_fit_and_tracing_errors():
    x = torch.zeros(10, 2)
    fit = pg.Fit(pg.UserProgram(mixture), {}, engine="svi", method="program")
    assert nodes(pg.graph(fit, x)) == nodes(pg.graph(mixture, x))
    with pytest.raises(ValueError, match="could not trace the program 'mixture'"):
        pg.graph(mixture)  # needs its data
    with pytest.raises(ValueError, match="unknown graph options"):
        pg.graph(mixture, x, expand=True)


def test_tracing_leaves_random_state_alone():
    torch.manual_seed(5)
    a = torch.rand(1)
    torch.manual_seed(5)
    pg.graph(mixture, torch.zeros(10, 2))
    assert torch.equal(torch.rand(1), a)


# ---- factor graphs ------------------------------------------------------------------

def three_variables():
    return FactorGraph.example(seed=0)[0]


def test_factor_graph_bipartite_and_markov_forms():
    fg = three_variables()
    b = pg.graph(fg, factors=True)
    assert isinstance(b, nx.Graph) and not b.is_directed()
    assert dict(b.nodes(data="kind")) == {"a": "latent", "b": "latent", "c": "latent",
                                          "f0": "factor", "f1": "factor"}
    assert {frozenset(e): d for *e, d in b.edges(data="directed")} == {
        frozenset(("a", "f0")): False, frozenset(("b", "f0")): False,
        frozenset(("b", "f1")): False, frozenset(("c", "f1")): False}
    assert b.nodes["f0"]["scope"] == ("a", "b") and b.nodes["b"]["cardinality"] == 3
    m = pg.graph(fg)
    assert not m.is_directed() and set(m.nodes) == {"a", "b", "c"}
    assert {frozenset(e): d for *e, d in m.edges(data="directed")} == {
        frozenset(("a", "b")): False, frozenset(("b", "c")): False}
    assert set(map(frozenset, pg.moral_graph(b).edges)) == set(map(frozenset, pg.moral_graph(m).edges))
    assert pg.markov_blanket(fg, "b") == {"a", "c"} and pg.markov_blanket(fg, "a") == {"b"}


def test_pairwise_model_graph():
    grid = FactorGraph.pairwise({"a": 2, "b": 2, "c": 2, "d": 2},
                                {("a", "b"): torch.eye(2), ("b", "d"): torch.eye(2),
                                 ("a", "c"): torch.eye(2), ("c", "d"): torch.eye(2)},
                                unary={"a": torch.tensor([0.0, 1.0])})
    m = pg.graph(grid)
    assert dict(m.nodes(data="kind")) == {v: "latent" for v in "abcd"}
    assert set(map(frozenset, m.edges)) == {frozenset(e) for e in ("ab", "bd", "ac", "cd")}
    assert all(d is False for *_, d in m.edges(data="directed"))
    b = pg.graph(grid, factors=True)
    assert {n for n, k in b.nodes(data="kind") if k == "factor"} == {
        "psi_a", "psi_a_b", "psi_b_d", "psi_a_c", "psi_c_d"}
    assert set(b.neighbors("psi_a")) == {"a"} and set(b.neighbors("psi_c_d")) == {"c", "d"}
    # a 4-cycle: a and d are separated by {b, c}, not by {b}
    assert pg.markov_blanket(grid, "a") == {"b", "c"}


def brute_force(fg, params=None):
    """Every assignment and its unnormalised log-density (the oracle)."""
    xs = torch.tensor(list(itertools.product(*(range(k) for k in fg.variables.values()))))
    return xs, fg.unnormalized_log_prob(params, xs)


def loopy():
    """Four variables, a cycle a-b-c-a, a triple factor (b, c, d), a unary and a free variable."""
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return FactorGraph({"a": 2, "b": 3, "c": 2, "d": 3, "e": 2},
                       {"ab": (("a", "b"), r(2, 3)), "ca": (("c", "a"), r(2, 2)),
                        "bcd": (("b", "c", "d"), r(3, 2, 3)), "ua": (("a",), r(2))})


def test_log_partition_and_log_prob_against_enumeration():
    fg = loopy()
    xs, score = brute_force(fg)
    # float64 contraction of ~70 terms: agreement to rounding error
    assert torch.allclose(fg.log_partition(), torch.logsumexp(score, 0), atol=1e-10)
    assert torch.allclose(pg.infer(fg, None, query="log_partition"), torch.logsumexp(score, 0), atol=1e-10)
    lp = fg.log_prob(None, xs)
    assert torch.allclose(torch.logsumexp(lp, 0), torch.zeros((), dtype=torch.float64), atol=1e-10)
    assert torch.allclose(lp, score - torch.logsumexp(score, 0), atol=1e-10)


@pytest.mark.parametrize("evidence", [None, {"c": 1}, {"b": 2, "d": 0}])
def test_marginals_and_map_against_enumeration(evidence):
    fg = loopy()
    xs, score = brute_force(fg)
    keep = torch.ones(len(xs), dtype=torch.bool)
    for v, val in (evidence or {}).items():
        keep &= xs[:, list(fg.variables).index(v)] == val
    xs, score = xs[keep], score[keep]
    p = torch.softmax(score, 0)
    marg = pg.infer(fg, evidence, query="marginals")
    for j, v in enumerate(fg.variables):
        want = torch.zeros(fg.variables[v], dtype=torch.float64).index_add_(0, xs[:, j], p)
        assert torch.allclose(marg[v], want, atol=1e-10), v
    best = pg.infer(fg, evidence, query="map")
    assert best == dict(zip(fg.variables, map(int, xs[score.argmax()])))
    want_lz = torch.logsumexp(score, 0)
    assert torch.allclose(pg.infer(fg, evidence, query="log_partition"), want_lz, atol=1e-10)


def test_map_with_tied_maximisers_is_consistent():
    # (a, b) = (0, 1) and (1, 0) tie: per-variable gradients split 50/50 and would decode
    # (0, 0), which scores lower; the exact sequential decoding must take over
    xor = FactorGraph({"a": 2, "b": 2, "c": 2}, [(("a", "b"), torch.tensor([[0.0, 1.0], [1.0, 0.0]])),
                                                 (("b", "c"), torch.zeros(2, 2))])
    best = pg.infer(xor, None, query="map")
    assert best["a"] != best["b"]
    xs, score = brute_force(xor)
    x = torch.tensor([[best[v] for v in xor.variables]])
    assert xor.unnormalized_log_prob(None, x).item() == score.max().item()


def test_batched_evidence_is_one_query_per_row():
    fg = loopy()
    rows = torch.tensor([0, 1, 1, 0])
    d = torch.tensor([2, 0, 1, 1])
    marg = pg.infer(fg, {"a": rows, "d": d}, query="marginals")
    best = pg.infer(fg, {"a": rows, "d": d}, query="map")
    lz = pg.infer(fg, {"a": rows, "d": d}, query="log_partition")
    for i in range(4):
        one = {"a": int(rows[i]), "d": int(d[i])}
        single = pg.infer(fg, one, query="marginals")
        for v in fg.variables:
            assert torch.allclose(marg[v][i], single[v], atol=1e-12)
        assert {v: int(best[v][i]) for v in fg.variables} == pg.infer(fg, one, query="map")
        assert torch.allclose(lz[i], pg.infer(fg, one, query="log_partition"), atol=1e-12)


def test_agrees_with_pgmpy_on_a_loopy_grid():
    pytest.importorskip("pgmpy")
    import logging
    import warnings
    logging.getLogger("pgmpy").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgmpy.factors.discrete import DiscreteFactor
        from pgmpy.inference import VariableElimination
        from pgmpy.models import DiscreteMarkovNetwork
    g = torch.Generator().manual_seed(3)
    names = [f"x{i}" for i in range(6)]  # a 2×3 grid: two 4-cycles
    pairs = [("x0", "x1"), ("x1", "x2"), ("x3", "x4"), ("x4", "x5"), ("x0", "x3"), ("x1", "x4"), ("x2", "x5")]
    fg = FactorGraph.pairwise({v: 3 for v in names},
                              {p: torch.randn(3, 3, generator=g, dtype=torch.float64) for p in pairs})
    pm = DiscreteMarkovNetwork(pairs)
    for f, sc in fg.scopes.items():
        pm.add_factors(DiscreteFactor(list(sc), [3, 3], fg.log_potentials[f].exp().numpy().ravel()))
    ve = VariableElimination(pm)
    # pgmpy leaves a Markov network's query unnormalised (its sum is Z); float64 both sides
    z = ve.query(["x0"], joint=True, show_progress=False).values.sum()
    assert pg.infer(fg, None, query="log_partition").item() == pytest.approx(np.log(z), abs=1e-10)
    marg = pg.infer(fg, {"x5": 2}, query="marginals")
    for v in ("x0", "x2", "x4"):
        want = ve.query([v], evidence={"x5": 2}, show_progress=False).values
        assert np.allclose(marg[v].numpy(), want / want.sum(), atol=1e-10)
    best = pg.infer(fg, {"x5": 2}, query="map")
    peer = ve.map_query(names[:5], evidence={"x5": 2}, show_progress=False)
    score = lambda a: fg.unnormalized_log_prob(None, torch.tensor([[a.get(v, 2) for v in names]])).item()  # noqa: E731
    assert score(best) == pytest.approx(score(peer), abs=1e-12)


def test_exact_samples_match_the_distribution():
    fg = loopy()
    xs, score = brute_force(fg)
    p = torch.softmax(score, 0)
    n = 20000
    s = fg.sample(None, n, seed=0)
    assert s.shape == (n, 5) and s.dtype == torch.long
    index = {tuple(r): i for i, r in enumerate(xs.tolist())}
    freq = torch.zeros(len(xs), dtype=torch.float64).index_add_(
        0, torch.tensor([index[tuple(r)] for r in s.tolist()]), torch.ones(n, dtype=torch.float64)) / n
    # each cell's frequency is binomial: 5 standard errors over 72 cells is a ~4e-5 false alarm rate
    assert ((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-12).all()


def test_fit_is_maximum_likelihood_moment_matching():
    fg, _ = FactorGraph.example(seed=0)
    data = fg.sample(None, 400, seed=1)
    start = {k: torch.zeros_like(v) for k, v in fg.log_potentials.items()}
    fit = pg.fit(fg, data, engine="exact", steps=100, init=start, seed=0, progress=False)
    assert set(pg.graph(fit, factors=True).edges) == set(pg.graph(fg, factors=True).edges)
    ll = [h["log_likelihood"] for h in fit.history]
    # L-BFGS with a strong-Wolfe line search only accepts steps that increase the objective
    assert all(b >= a - 1e-12 for a, b in zip(ll, ll[1:]))
    assert ll[-1] == pytest.approx(fit.log_prob(data).mean().item(), abs=1e-9)
    # at the maximum, model factor marginals equal the empirical ones (the gradient is their
    # difference); every cell is populated, so the optimum is finite and L-BFGS reaches it
    xs, score = brute_force(fg, fit.params)
    p = torch.softmax(score, 0)
    for f, scope in fg.scopes.items():
        cols = [list(fg.variables).index(v) for v in scope]
        model = torch.zeros(fg.log_potentials[f].shape, dtype=torch.float64)
        model.index_put_(tuple(xs[:, c] for c in cols), p, accumulate=True)
        emp = torch.zeros_like(model)
        emp.index_put_(tuple(data[:, c] for c in cols), torch.ones(len(data), dtype=torch.float64), accumulate=True)
        assert torch.allclose(model, emp / len(data), atol=1e-5), f


def test_factor_graph_bad_input():
    fg = three_variables()
    with pytest.raises(ValueError, match="out of range for variable 'b'"):
        fg.check_data(torch.tensor([[0, 3, 0]]))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        fg.check_data(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="integer states"):
        fg.check_data(torch.tensor([[0.5, 0.0, 1.0]]))
    with pytest.raises(ValueError, match="not a variable"):
        pg.infer(fg, {"q": 1}, query="marginals")
    with pytest.raises(ValueError, match="integer states"):
        pg.infer(fg, {"b": 3}, query="map")
    with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
        FactorGraph({"a": 2, "b": 3}, [(("a", "b"), torch.zeros(3, 2))])
    with pytest.raises(ValueError, match="distinct known variables"):
        FactorGraph({"a": 2}, [(("a", "z"), torch.zeros(2, 2))])
    with pytest.raises(ValueError, match="unknown exact options"):
        pg.fit(fg, FactorGraph.example()[1], engine="exact", bogus=1)


# ---- queries ------------------------------------------------------------------------

def collider():
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    pyro.sample("c", dist.Normal(a + b, 1.0))


def chain():
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.Normal(a, 1.0))
    pyro.sample("c", dist.Normal(b, 1.0))


def fork():
    b = pyro.sample("b", dist.Normal(0.0, 1.0))
    pyro.sample("a", dist.Normal(b, 1.0))
    pyro.sample("c", dist.Normal(b, 1.0))


def test_d_separation_textbook_triples():
    # collider a → c ← b: independent until the common effect is observed
    assert pg.d_separated(collider, "a", "b")
    assert not pg.d_separated(collider, "a", "b", "c")
    # chain a → b → c and fork a ← b → c: dependent until the middle is observed
    for prog in (chain, fork):
        assert not pg.d_separated(prog, "a", "c")
        assert pg.d_separated(prog, "a", "c", "b")
        assert pg.d_separated(prog, ["a"], {"c"}, ["b"])


def test_pyro_factor_is_a_factor_node_and_an_observed_child():
    def prog():
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
        pyro.factor("ab", -((a - b) ** 2))
    g = pg.graph(prog)
    assert nodes(g) == {"a": ("latent", ()), "b": ("latent", ()), "ab": ("factor", ())}
    assert edges(g) == {("a", "ab"): True, ("b", "ab"): True}
    # the potential couples a and b: like conditioning on a common child
    assert not pg.d_separated(prog, "a", "b")
    assert set(map(frozenset, pg.moral_graph(prog).edges)) == {frozenset("ab")}
    assert pg.markov_blanket(prog, "a") == {"b"}
    if shutil.which("dot"):  # drawn as a small square, edges into it without arrow heads
        source = drawing.to_dot(g).source
        assert "shape=square" in source and source.count("dir=none") == 2


def test_moral_graph_and_markov_blanket():
    assert set(map(frozenset, pg.moral_graph(collider).edges)) == {frozenset("ab"), frozenset("ac"), frozenset("bc")}
    assert pg.markov_blanket(collider, "a") == {"b", "c"}
    assert pg.markov_blanket(chain, "a") == {"b"}
    g = pg.graph(hmm, torch.zeros(4), params=True)  # params are not variables
    assert pg.markov_blanket(g, "z_1") == {"z_0", "z_2", "y_1"}
    with pytest.raises(ValueError, match="no variable 'nope'"):
        pg.markov_blanket(chain, "nope")


def test_queries_refuse_bad_input():
    with pytest.raises(ValueError, match="unknown nodes"):
        pg.d_separated(chain, "a", "q")
    with pytest.raises(ValueError, match="disjoint"):
        pg.d_separated(chain, "a", "c", "a")
    with pytest.raises(ValueError, match="undirected"):
        pg.d_separated(three_variables(), "a", "c", "b")


def test_mixed_graph_moralises_with_its_undirected_edges():
    g = nx.DiGraph(plates={})
    g.add_nodes_from(["v", "h1", "h2"], kind="layer")
    g.add_edge("h1", "v", directed=True)
    g.add_edge("h1", "h2", directed=False)
    assert set(map(frozenset, pg.moral_graph(g).edges)) == {frozenset(("h1", "v")), frozenset(("h1", "h2"))}
    with pytest.raises(ValueError, match="undirected"):
        pg.d_separated(g, "v", "h2", "h1")


# ---- drawing ------------------------------------------------------------------------

def svg_parts(path):
    """(cluster titles, node titles, texts, edge groups) of a Graphviz SVG."""
    root = ET.parse(path).getroot()
    groups = list(root.iter(SVG + "g"))
    def title(e):
        t = e.find(SVG + "title")
        return t.text if t is not None else None
    clusters = [g for g in groups if "cluster" in g.get("class", "").split()]
    node_groups = [g for g in groups if g.get("class", "").split() == ["node"]]
    texts = [t.text for t in root.iter(SVG + "text")]
    edge_groups = {title(g): g for g in groups if g.get("class") == "edge"}
    return {title(c): c for c in clusters}, [title(n) for n in node_groups], texts, edge_groups, \
        [title(c) for c in clusters]


def bbox(element):
    """Bounding box of an SVG group's first shape (polygon / path / ellipse)."""
    for shape in element:
        tag = shape.tag.replace(SVG, "")
        if tag == "ellipse":
            cx, cy, rx, ry = (float(shape.get(k)) for k in ("cx", "cy", "rx", "ry"))
            return cx - rx, cy - ry, cx + rx, cy + ry
        if tag in ("polygon", "path"):
            nums = list(map(float, re.findall(r"-?\d+(?:\.\d+)?", shape.get("points") or shape.get("d"))))
            xs, ys = nums[0::2], nums[1::2]
            return min(xs), min(ys), max(xs), max(ys)
    raise AssertionError("no shape")


def centre(element):
    x0, y0, x1, y1 = bbox(element)
    return (x0 + x1) / 2, (y0 + y1) / 2


def inside(point, box):
    return box[0] < point[0] < box[2] and box[1] < point[1] < box[3]


@needs_dot
def test_render_mixture_svg(tmp_path):
    path = pg.render(mixture, tmp_path / "m.svg", torch.zeros(10, 2))
    clusters, node_titles, texts, edge_groups, cluster_list = svg_parts(path)
    assert sorted(cluster_list) == ["cluster_K", "cluster_N"]
    assert sorted(node_titles) == ["loc", "weights", "x", "z"]
    for label in ("weights", "loc", "z", "x", "K (3)", "N (10)"):
        assert label in texts
    root = ET.parse(path).getroot()
    fill = {g.find(SVG + "title").text: g.find(SVG + "ellipse").get("fill")
            for g in root.iter(SVG + "g") if g.get("class") == "node"}
    assert fill["x"] != "white" and fill["z"] == "white"  # observed shaded, latent white


@needs_dot
def test_render_nested_plates_as_nested_clusters(tmp_path):
    path = pg.render(nested, tmp_path / "n.svg", torch.zeros(3, 4))
    clusters, node_titles, texts, *_ = svg_parts(path)
    assert sorted(clusters) == ["cluster_G", "cluster_M"]
    g, m = bbox(clusters["cluster_G"]), bbox(clusters["cluster_M"])
    assert g[0] < m[0] and g[1] < m[1] and m[2] < g[2] and m[3] < g[3]
    assert "G (3)" in texts and "M (4)" in texts


def overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def needs_repair():
    """A layout dot gets wrong for rectangles (v0 ends up right above one of its children):
    the renderer must move v3 or v1 aside."""
    g = nx.DiGraph(plates={"p": 2, "r": 4})
    for n, ps in {"v0": ("p", "r"), "v1": ("r",), "v2": (), "v3": ("p",), "v4": ()}.items():
        g.add_node(n, kind="latent", plates=ps)
    g.add_edges_from([("v0", "v1"), ("v0", "v2"), ("v0", "v3"), ("v1", "v2"), ("v1", "v4"), ("v2", "v4")],
                     directed=True)
    return g


@needs_dot
@pytest.mark.parametrize("prog,args,plates", [
    (overlapping, (), {"plate1 (2)": {"x", "y"}, "plate2 (3)": {"y", "z"}}),
    (crossed, (torch.zeros(5, 4),), {"rows (5)": {"r", "y"}, "cols (4)": {"c", "y"}}),
    (needs_repair(), (), {"p (2)": {"v0", "v3"}, "r (4)": {"v0", "v1"}}),
])
def test_render_overlapping_plates_one_box_each(tmp_path, prog, args, plates):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the renderer warns when a box would hold a stranger
        path = pg.render(prog, tmp_path / "o.svg", *args)
    clusters, node_titles, texts, edge_groups, cluster_list = svg_parts(path)
    g = prog if isinstance(prog, nx.Graph) else pg.graph(prog, *args)
    # one cluster per plate, every node drawn exactly once, each plate label once
    assert sorted(cluster_list) == sorted(f"cluster_{p}" for p in g.graph["plates"])
    assert sorted(node_titles) == sorted(g.nodes)
    for label in plates:
        assert texts.count(label) == 1
    root = ET.parse(path).getroot()
    node = {e.find(SVG + "title").text: e for e in root.iter(SVG + "g") if e.get("class") == "node"}
    # a Venn diagram: each plate's box holds exactly its own nodes and touches no other node
    for label, own in plates.items():
        box = bbox(clusters["cluster_" + label.split(" ")[0]])
        for n in g.nodes:
            if n in own:
                assert inside(centre(node[n]), box) and bbox(node[n])[0] > box[0], (label, n)
            else:
                assert not overlaps(bbox(node[n]), box), (label, n)
    assert set(edge_groups) == {f"{u}->{v}" for u, v in g.edges}
    # the other formats take the same path
    for suffix in (".png", ".pdf"):
        out = pg.render(prog, tmp_path / f"o{suffix}", *args)
        assert open(out, "rb").read(4) in (b"\x89PNG", b"%PDF")


@needs_dot
def test_render_factor_graph_and_undirected_edges(tmp_path):
    fg = three_variables()
    path = pg.render(fg, tmp_path / "f.svg", factors=True)
    clusters, node_titles, texts, edge_groups, _ = svg_parts(path)
    assert sorted(node_titles) == ["a", "b", "c", "f0", "f1"]
    assert {"a", "b", "c"} <= set(texts) and "f0" not in texts  # factors are unlabelled squares
    for e in edge_groups.values():  # no arrow heads on undirected edges
        assert e.find(SVG + "polygon") is None
    source = open(pg.render(fg, tmp_path / "f.dot", factors=True)).read()
    assert source.count("dir=none") == 4 and "shape=square" in source


@needs_dot
def test_render_layers_units_and_mixed_edges(tmp_path):
    g = nx.DiGraph(plates={})
    g.add_node("v", kind="layer", size=784, unit="bernoulli")
    g.add_node("h1", kind="layer", size=500, unit="bernoulli")
    g.add_node("h2", kind="layer", size=20, unit="gaussian")
    g.add_edge("h1", "v", directed=True)
    g.add_edge("h2", "h1", directed=False)
    path = pg.render(g, tmp_path / "dbn.svg")
    _, node_titles, texts, edge_groups, _ = svg_parts(path)
    assert {"784 bernoulli", "500 bernoulli", "20 gaussian"} <= set(texts)
    assert edge_groups["h1->v"].find(SVG + "polygon") is not None   # arrow head
    assert edge_groups["h2->h1"].find(SVG + "polygon") is None      # none
    u = nx.Graph(plates={})
    for i in range(2):
        u.add_node(f"v{i}", kind="unit", layer="visible")
        u.add_node(f"h{i}", kind="unit", layer="hidden")
    u.add_edges_from(((f"v{i}", f"h{j}") for i in range(2) for j in range(2)), directed=False)
    clusters, node_titles, texts, *_ = svg_parts(pg.render(u, tmp_path / "rbm.svg"))
    assert sorted(clusters) == ["cluster_layer_hidden", "cluster_layer_visible"]
    assert sorted(node_titles) == ["h0", "h1", "v0", "v1"] and "visible" in texts


@needs_dot
def test_render_params_as_points(tmp_path):
    path = pg.render(hmm, tmp_path / "h.svg", torch.zeros(4), params=True)
    _, node_titles, texts, *_ = svg_parts(path)
    assert len(node_titles) == 11 and {"initial", "transition", "loc", "z_3", "y_3"} <= set(texts)
    # the unrolled chain is drawn in one row; the emissions are no chain (no y_t -> y_t+1 edges)
    assert drawing.unrolled_chains(pg.graph(hmm, torch.zeros(4))) == [["z_0", "z_1", "z_2", "z_3"]]
    source = open(pg.render(hmm, tmp_path / "h.dot", torch.zeros(4), rankdir="LR")).read()
    assert "rank=same" in source and "rankdir=LR" in source


def test_without_graphviz_only_dot_works(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    out = pg.render(nested, tmp_path / "n.dot", torch.zeros(3, 4))
    assert "subgraph cluster_G" in open(out).read()
    with pytest.raises(RuntimeError, match="install Graphviz.*apt-get install graphviz"):
        pg.render(nested, tmp_path / "n.svg", torch.zeros(3, 4))
    with pytest.raises(ValueError, match="suffix must be one of"):
        pg.render(nested, tmp_path / "n.jpg", torch.zeros(3, 4))


def test_render_stays_callable_after_drawing(tmp_path):
    """pg.render is the function even after the drawing module has been imported."""
    g = pg.graph(FactorGraph.pairwise({"a": 2, "b": 2}, {("a", "b"): torch.zeros(2, 2)}))
    pg.render(g, tmp_path / "one.dot")
    pg.render(g, tmp_path / "two.dot")
    assert (tmp_path / "two.dot").exists()


@needs_dot
def test_cli_graph_for_a_user_program_with_data(tmp_path):
    (tmp_path / "prog.py").write_text(
        "import pyro, pyro.distributions as dist\n"
        "def model(x):\n"
        "    mu = pyro.sample('mu', dist.Normal(0., 10.))\n"
        "    with pyro.plate('rows', x.shape[0]):\n"
        "        pyro.sample('obs', dist.Normal(mu, 1.).expand([x.shape[1]]).to_event(1), obs=x)\n")
    np.save(tmp_path / "x.npy", np.zeros((7, 2)))
    out = tmp_path / "g.svg"
    r = subprocess.run([sys.executable, "-m", "probgen.cli", "graph", f"{tmp_path / 'prog.py'}:model",
                        "-o", str(out), "--data", str(tmp_path / "x.npy"), "--params"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "2 nodes, 1 edges" in r.stdout
    _, node_titles, texts, *_ = svg_parts(out)
    assert sorted(node_titles) == ["mu", "obs"] and "rows (7)" in texts


def test_cli_graph_errors_and_built_in_models(tmp_path, capsys):
    from probgen.cli import main
    (tmp_path / "prog.py").write_text(
        "import pyro, pyro.distributions as dist\n"
        "def model(x):\n"
        "    with pyro.plate('rows', x.shape[0]):\n"
        "        pyro.sample('obs', dist.Normal(0., 1.), obs=x)\n")
    assert main(["graph", f"{tmp_path / 'prog.py'}:model", "-o", str(tmp_path / "g.dot")]) == 2
    assert "could not trace the program 'model'" in capsys.readouterr().err  # it needs --data
    assert main(["graph", "factor_graph", "-o", str(tmp_path / "f.dot"), "--expand"]) == 0
    assert "5 nodes, 4 edges" in capsys.readouterr().out
    assert main(["graph", "factor_graph", "-o", str(tmp_path / "f.dot")]) == 0
    assert "3 nodes, 2 edges" in capsys.readouterr().out


def test_declared_observed_sites_are_observed_without_data():
    """A built-in program traced with no data samples its observed site; the graph still
    draws it as observed (the site the declaration names in ``observed``)."""
    from probgen.models import GaussianMixture
    g = pg.graph(GaussianMixture(3, 4))
    assert g.nodes["x"]["kind"] == "observed" and g.nodes["z"]["kind"] == "latent"


@pytest.mark.parametrize("name", sorted(pg.registry.models()))
def test_every_builtin_declaration_is_drawable(name, tmp_path):
    """Every registered declaration has a structure: nodes of the documented kinds and a
    drawing (the .dot, which needs no Graphviz program)."""
    from probgen.graph import KINDS
    model, _ = pg.registry.models()[name].example(seed=0)
    for params in (False, True):
        g = pg.graph(model, params=params)
        assert len(g) >= 2
        kinds = {k for _, k in g.nodes(data="kind")}
        assert kinds <= set(KINDS), f"{name}: undocumented node kinds {kinds - set(KINDS)}"
        if not params:
            assert "param" not in kinds, f"{name}: param nodes drawn without params=True"
    out = pg.render(model, str(tmp_path / f"{name}.dot"))
    assert open(out).read().strip().startswith(("digraph", "graph"))
