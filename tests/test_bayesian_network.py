"""Bayesian networks: exact queries against brute-force enumeration and pgmpy, BIF
reading/writing, validation, EM with missing data."""
import itertools
import logging
import warnings

import numpy as np
import pytest
import torch

import probgen as pg
from probgen.models import BayesianNetwork
from probgen.models.bayesian_network import ASIA_BIF


def joint_table(bn):
    """The full joint p(x) by enumeration: an array with one axis per variable."""
    shape = tuple(bn.cards)
    joint = np.ones(shape)
    for combo in itertools.product(*(range(c) for c in shape)):
        p = 1.0
        for j, v in enumerate(bn.variables):
            idx = tuple(combo[bn.index[u]] for u in bn.parents[v]) + (combo[j],)
            p *= bn.tables[v][idx].item()
        joint[combo] = p
    return joint


def conditioned(bn, joint, evidence):
    """The joint restricted to the evidence (other entries zeroed)."""
    j = joint.copy()
    for v, s in evidence.items():
        k = bn.index[v]
        mask = np.zeros(bn.cards[k], bool)
        mask[bn.states[v].index(s)] = True
        shape = [1] * j.ndim
        shape[k] = -1
        j = j * mask.reshape(shape)
    return j


def random_evidence(bn, rng, k):
    vs = rng.choice(len(bn.variables), k, replace=False)
    row = bn.sample(None, 1, seed=int(rng.integers(1 << 30)))[0]
    return {bn.variables[j]: bn.states[bn.variables[j]][row[j]] for j in vs}


@pytest.mark.parametrize("name", ["asia", "cancer"])
def test_marginals_and_map_equal_enumeration(name):
    bn = BayesianNetwork.from_bif(ASIA_BIF) if name == "asia" else BayesianNetwork.load_bundled(name)
    joint = joint_table(bn)
    rng = np.random.default_rng(0)
    rows = []
    for trial in range(12):
        ev = random_evidence(bn, rng, int(rng.integers(0, 3)))
        rows.append(ev)
        cj = conditioned(bn, joint, ev)
        z = cj.sum()
        got = pg.infer(bn, ev, query="marginals")
        for v, probs in got.items():
            k = bn.index[v]
            want = cj.sum(axis=tuple(a for a in range(cj.ndim) if a != k)) / z
            # float64 sums of at most 256 products: agreement to rounding error
            np.testing.assert_allclose(probs.numpy(), want, atol=1e-12)
        mpe = pg.infer(bn, ev, query="map")
        best = np.unravel_index(np.argmax(cj), cj.shape)
        got_p = cj[tuple(bn.states[v].index(mpe[v]) if v in mpe else best[bn.index[v]] for v in bn.variables)]
        assert got_p == pytest.approx(cj.max(), rel=1e-12)  # ties may pick another argmax of equal value
        # marginal MAP over two variables: maximise the summed-out joint
        qv = [v for v in bn.variables if v not in ev][:2]
        mm = pg.infer(bn, ev, query="map", variables=qv)
        ks = [bn.index[v] for v in qv]
        marg = cj.sum(axis=tuple(a for a in range(cj.ndim) if a not in ks))
        assert marg[tuple(bn.states[v].index(mm[v]) for v in qv)] == pytest.approx(marg.max(), rel=1e-12)
    # the same evidence as one table (None where unobserved): one probability row per evidence row
    table = {v: [ev.get(v) for ev in rows] for v in bn.variables}
    batch = pg.infer(bn, table, query="marginals", variables=bn.variables)
    for i, ev in enumerate(rows):
        single = pg.infer(bn, ev, query="marginals", variables=[v for v in bn.variables if v not in ev])
        for v, p in single.items():
            np.testing.assert_allclose(batch[v][i].numpy(), p.numpy(), atol=1e-12)
        for v in ev:  # an observed cell has a point-mass posterior
            assert batch[v][i, bn.states[v].index(ev[v])].item() == pytest.approx(1.0)
    maps = pg.infer(bn, table, query="map")
    for i, ev in enumerate(rows):
        cj = conditioned(bn, joint, ev)
        assignment = tuple(bn.states[v].index(maps[v][i]) for v in bn.variables)
        assert cj[assignment] == pytest.approx(cj.max(), rel=1e-12)


def test_log_prob_sums_out_missing_cells():
    bn = BayesianNetwork.from_bif(ASIA_BIF)
    joint = joint_table(bn)
    x = bn.sample(None, 40, seed=1)
    rng = np.random.default_rng(1)
    x[torch.from_numpy(rng.random(x.shape) < 0.4)] = -1
    lp = bn.log_prob(None, x)
    for i in range(len(x)):
        ev = {v: bn.states[v][x[i, j]] for j, v in enumerate(bn.variables) if x[i, j] >= 0}
        assert lp[i].item() == pytest.approx(np.log(conditioned(bn, joint, ev).sum()), abs=1e-12)


def test_sampling_matches_the_joint():
    bn = BayesianNetwork.from_bif(ASIA_BIF)
    x = bn.sample(None, 40000, seed=0)
    want = pg.infer(bn, {}, variables=bn.variables)
    for j, v in enumerate(bn.variables):
        freq = np.bincount(x[:, j].numpy(), minlength=2) / len(x)
        # 5 standard errors of a frequency from 40,000 draws (sd <= 0.0025)
        np.testing.assert_allclose(freq, want[v].numpy(), atol=5 * 0.0025)


# ---- pgmpy as the oracle --------------------------------------------------------------

def to_pgmpy(bn):
    from pgmpy.factors.discrete import TabularCPD
    from pgmpy.models import DiscreteBayesianNetwork
    m = DiscreteBayesianNetwork([(p, v) for v in bn.variables for p in bn.parents[v]])
    m.add_nodes_from(bn.variables)
    for v in bn.variables:
        pa = bn.parents[v]
        t = bn.tables[v].numpy()
        m.add_cpds(TabularCPD(v, len(bn.states[v]), t.reshape(-1, t.shape[-1]).T, evidence=pa or None,
                              evidence_card=[len(bn.states[p]) for p in pa] or None,
                              state_names={u: bn.states[u] for u in [v] + pa}))
    return m


@pytest.fixture(scope="module")
def pgmpy_models():
    pytest.importorskip("pgmpy")
    logging.disable(logging.WARNING)
    from pgmpy.inference import VariableElimination
    out = {}
    for name in ("alarm", "child", "insurance"):
        bn = BayesianNetwork.load_bundled(name)
        # pgmpy gets our (renormalised) tables, so both answer the same question
        out[name] = (bn, VariableElimination(to_pgmpy(bn)))
    yield out
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("name", ["alarm", "child", "insurance"])
def test_queries_equal_pgmpy(pgmpy_models, name):
    bn, ve = pgmpy_models[name]
    rng = np.random.default_rng(42)
    x = bn.sample(None, 50, seed=3).numpy()
    for i in range(50):
        vs = rng.choice(len(bn.variables), 4, replace=False)
        ev = {bn.variables[j]: bn.states[bn.variables[j]][x[i, j]] for j in vs[:3]}
        q = bn.variables[vs[3]]
        ours = pg.infer(bn, ev, variables=[q])[q].numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = ve.query([q], evidence=ev, show_progress=False)
        want = theirs.values[[theirs.state_names[q].index(s) for s in bn.states[q]]]
        np.testing.assert_allclose(ours, want, atol=1e-9, rtol=0)


def test_batched_prediction_equals_pgmpy(pgmpy_models):
    bn, ve = pgmpy_models["alarm"]
    x = bn.sample(None, 30, seed=5)
    cols = bn.variables[:5]
    target = "HYPOVOLEMIA" if "HYPOVOLEMIA" not in cols else bn.variables[-1]
    table = {c: [bn.states[c][k] for k in x[:, bn.index[c]]] for c in cols}
    table[cols[0]][3] = None  # a missing cell: that row is answered without it
    ours = pg.infer(bn, table, variables=[target])[target].numpy()
    for i in range(len(x)):
        ev = {c: table[c][i] for c in cols if table[c][i] is not None}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = ve.query([target], evidence=ev, show_progress=False)
        want = theirs.values[[theirs.state_names[target].index(s) for s in bn.states[target]]]
        np.testing.assert_allclose(ours[i], want, atol=1e-9, rtol=0)


def test_dataframe_evidence():
    pd = pytest.importorskip("pandas")
    bn = BayesianNetwork.from_bif(ASIA_BIF)
    df = pd.DataFrame({"smoke": ["yes", None, "no"], "xray": ["yes", "no", np.nan]})
    a = pg.infer(bn, df, variables=["lung"])["lung"]
    b = pg.infer(bn, {"smoke": ["yes", None, "no"], "xray": ["yes", "no", None]}, variables=["lung"])["lung"]
    assert a.shape == (3, 2) and torch.equal(a, b)
    single = pg.infer(bn, {"xray": "no"}, variables=["lung"])["lung"]
    np.testing.assert_allclose(a[1].numpy(), single.numpy(), atol=1e-14)


# ---- BIF and validation ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["asia", "alarm", "win95pts"])
def test_bif_round_trip_is_exact(name):
    bn = BayesianNetwork.load_bundled(name)
    again = BayesianNetwork.from_bif(bn.to_bif())
    assert again.variables == bn.variables and again.states == bn.states and again.parents == bn.parents
    for v in bn.variables:
        assert torch.equal(again.tables[v], bn.tables[v]), v
    assert again.to_bif() == bn.to_bif()


def test_bif_file_and_gz(tmp_path):
    bn = BayesianNetwork.from_bif(ASIA_BIF)
    (tmp_path / "a.bif").write_text(bn.to_bif())
    import gzip
    with gzip.open(tmp_path / "b.bif.gz", "wt") as f:
        f.write(bn.to_bif())
    for p in ("a.bif", "b.bif.gz"):
        other = BayesianNetwork.from_bif(tmp_path / p)
        assert all(torch.equal(other.tables[v], bn.tables[v]) for v in bn.variables)


@pytest.mark.parametrize("text,match", [
    ("variable a { type discrete [ 2 ] { x, y }; }\nprobability ( a ) { table 0.5 0.5; }", "line 2: expected"),
    ("variable a { type discrete [ 2 ] { x, y }; }\n\nprobability ( a ) {\n table 0.5, 0.5, 0.1; }",
     "line 4: variable 'a': table has 3 entries"),
    ("variable a { type discrete [ 3 ] { x, y }; }", "line 1: variable 'a' declares 3 states"),
    ("variable a { type discrete [ 2 ] { x, y }; }\nvariable b { type discrete [ 2 ] { x, y }; }\n"
     "probability ( a ) { table 0.5, 0.5; }\nprobability ( b | a ) {\n (x) 0.5, 0.5;\n (z) 0.1, 0.9; }",
     "line 6: variable 'b': parent 'a' has no state 'z'"),
    ("variable a { type discrete [ 2 ] { x, y }; }\nprobability ( a ) { table 0.5, 0.6; }",
     "line 2: variable 'a': distributions in the table sum"),
    ("variable a { type discrete [ 2 ] { x, y }; }\nprobability ( a ) { table 0.5, zero; }",
     "line 2: expected a probability, found 'zero'"),
    ("variable a { type discrete [ 2 ] { x, y }; }\nprobability ( a ) { table 0.5, 0.5; ",
     "line 2: .*unexpected end of text"),
    ("netwrk x { }", "line 1: expected 'network', 'variable' or 'probability'"),
])
def test_malformed_bif_names_the_line(text, match):
    with pytest.raises(ValueError, match=match):
        BayesianNetwork.from_bif(text)


def test_validation_names_the_variable():
    base = {"a": {"states": ["x", "y"], "cpt": [0.3, 0.7]},
            "b": {"states": ["x", "y"], "parents": ["a"], "cpt": [[0.1, 0.9], [0.5, 0.5]]}}
    BayesianNetwork(base)
    with pytest.raises(ValueError, match="cycle through variable"):
        BayesianNetwork({"a": {"states": 2, "parents": ["b"]}, "b": {"states": 2, "parents": ["a"]}})
    with pytest.raises(ValueError, match=r"variable 'b': the table has shape \(3, 2\), expected \(2, 2\)"):
        BayesianNetwork(dict(base, b=dict(base["b"], cpt=[[0.1, 0.9]] * 3)))
    with pytest.raises(ValueError, match="variable 'b': unknown parent 'c'"):
        BayesianNetwork(dict(base, b=dict(base["b"], parents=["c"])))
    with pytest.raises(ValueError, match="variable 'a': distributions in the table sum"):
        BayesianNetwork(dict(base, a=dict(base["a"], cpt=[0.3, 0.71])))
    # within 1e-6 the table is renormalised
    bn = BayesianNetwork(dict(base, a=dict(base["a"], cpt=[0.3, 0.7000004])))
    assert bn.tables["a"].sum().item() == pytest.approx(1.0, abs=1e-15)
    bn = BayesianNetwork(base)
    with pytest.raises(ValueError, match="variable 'a' has no state 'z'"):
        pg.infer(bn, {"a": "z"})
    with pytest.raises(ValueError, match="unknown variables"):
        bn.check_data({"c": ["x"]})
    with pytest.raises(ValueError, match=r"data\[0, 1\] = 2 is not a state index of variable 'b'"):
        bn.check_data([[0, 2]])
    # integer arrays take the NumPy path: the same checks, the same codes as the float path
    with pytest.raises(ValueError, match=r"data\[1, 0\] = -2 is not a state index of variable 'a'"):
        bn.check_data(np.array([[0, 1], [-2, 0]]))
    codes = np.array([[0, 1], [-1, 0], [1, -1]], dtype=np.int32)
    assert torch.equal(bn.check_data(codes), bn.check_data(codes.astype(float)))
    assert bn.check_data(codes).dtype == torch.int64
    with pytest.raises(ValueError, match="probability zero"):
        pg.infer(BayesianNetwork(dict(base, a=dict(base["a"], cpt=[1.0, 0.0]))), {"a": "y"})


def test_too_wide_names_the_mcmc_engine():
    from probgen.ops.elimination import Plan
    with pytest.raises(ValueError, match="engine='mcmc'"):
        Plan([(0, 1, 2, 3)], [False], [1000] * 4, [0, 1, 2, 3])


def test_structure_and_program():
    bn = BayesianNetwork.from_bif(ASIA_BIF)
    g = pg.graph(bn)
    assert set(g.edges) == {(p, v) for v in bn.variables for p in bn.parents[v]}
    assert pg.d_separated(bn, "asia", "smoke")
    x = bn.sample(None, 10, seed=0)
    gp = bn.structure(x)
    assert gp.graph["plates"] == {"data": 10} and gp.nodes["asia"]["plates"] == ("data",)
    # the Pyro program traces to the same DAG:
    from probgen.graph import program_graph
    tg = program_graph(bn.program, x)
    assert set(tg.edges) == set(g.edges)
    # the program's log-density at the declared tables equals log_prob
    tr = pyro_trace(bn, x)
    assert tr == pytest.approx(bn.log_prob(None, x).sum().item(), abs=1e-9)


def pyro_trace(bn, x):
    import pyro
    with pyro.get_param_store().scope():
        tr = pyro.poutine.trace(bn.program).get_trace(x)
        tr.compute_log_prob()
    return sum(s["log_prob_sum"].item() for s in tr.nodes.values() if s["type"] == "sample")


# ---- learning ----------------------------------------------------------------------------

def test_counting_and_em_complete_data_agree():
    bn = BayesianNetwork.from_bif(ASIA_BIF)
    x = bn.sample(None, 500, seed=0)
    a = pg.fit(bn, x, engine="exact", progress=False)
    b = pg.fit(bn, x, engine="em", progress=False)
    for k in a.params:
        assert torch.allclose(a.params[k], b.params[k], atol=1e-12)
    # counts by hand for one family: p(tub | asia=no)
    X = x.numpy()
    rows = X[X[:, bn.index["asia"]] == 1]
    want = np.bincount(rows[:, bn.index["tub"]], minlength=2) / len(rows)
    np.testing.assert_allclose(a.params["probs_tub"][1].numpy(), want, atol=1e-12)
    with pytest.raises(ValueError, match="engine='em'"):
        x2 = x.clone()
        x2[0, 0] = -1
        pg.fit(bn, x2, engine="exact", progress=False)


def test_em_with_missing_cells_recovers_alarm():
    from probgen.inference.em.bayesian_network import available_case_tables
    from probgen.inference.exact.bayesian_network import count_tables
    bn = BayesianNetwork.load_bundled("alarm")
    x = bn.sample(None, 2000, seed=0)
    rng = np.random.default_rng(0)
    xm = x.clone()
    xm[torch.from_numpy(rng.random(x.shape) < 0.2)] = -1
    fit = pg.fit(bn, xm, engine="em", seed=0, progress=False)
    lls = [h["log_likelihood"] for h in fit.history]
    assert all(b >= a - 1e-8 * abs(a) for a, b in zip(lls, lls[1:])), "EM never decreases the likelihood"
    X = x.numpy()
    seen = {}
    for v in bn.variables:
        pa = [bn.index[p] for p in bn.parents[v]]
        m = np.zeros(bn.table_shape(v)[:-1], bool)
        m[tuple(X[:, pa].T)] = True
        seen[v] = m

    def mae(params):
        # over the parent configurations that occur in the complete sample: the others are
        # not estimable from it by any method (counting leaves them uniform)
        return np.mean(np.concatenate([(params[f"probs_{v}"] - bn.tables[v]).abs().numpy()[seen[v]].ravel()
                                       for v in bn.variables]))
    em, available, complete = mae(fit.params), mae(available_case_tables(bn, xm.numpy())), mae(count_tables(bn, X))
    assert em < available
    assert abs(em - complete) < 0.005


def test_em_pseudo_counts_and_options():
    bn = BayesianNetwork.from_bif(ASIA_BIF)
    x = bn.sample(None, 300, seed=2)
    x[::3, 3] = -1
    fit = pg.fit(bn, x, engine="em", pseudo_count=1.0, steps=20, progress=False)
    for v in bn.variables:
        t = fit.params[f"probs_{v}"]
        assert (t > 0).all() and torch.allclose(t.sum(-1), torch.ones(()).double())
    with pytest.raises(ValueError, match="known: tol, n_init, callback, pseudo_count"):
        pg.fit(bn, x, engine="em", bogus=1, progress=False)
    again = pg.infer(fit, {"smoke": "yes"}, variables=["lung"])["lung"]
    assert again.shape == (2,)


# ---- Gibbs (mcmc) ------------------------------------------------------------------------

def test_gibbs_queries_agree_with_exact():
    bn = BayesianNetwork.load_bundled("cancer")
    ev = {"Xray": "positive", "Smoker": "True"}
    exact = pg.infer(bn, ev, variables=["Cancer", "Pollution"])
    gibbs = pg.infer(bn, ev, engine="mcmc", variables=["Cancer", "Pollution"], num_samples=4000, seed=0)
    for v in exact:
        # Rao-Blackwellised averages over 4,000 correlated sweeps: a few hundredths at most
        np.testing.assert_allclose(gibbs[v].numpy(), exact[v].numpy(), atol=0.03)
    table = {"Xray": ["positive", "negative", None], "Dyspnoea": [None, "True", "False"]}
    exact = pg.infer(bn, table, variables=["Cancer"])["Cancer"]
    gibbs = pg.infer(bn, table, engine="mcmc", variables=["Cancer"], num_samples=4000, seed=1)["Cancer"]
    assert gibbs.shape == (3, 2)
    np.testing.assert_allclose(gibbs.numpy(), exact.numpy(), atol=0.03)


def test_gibbs_fit_is_the_dirichlet_posterior_mean():
    bn = BayesianNetwork.load_bundled("cancer")
    x = bn.sample(None, 400, seed=0)
    fit = pg.fit(bn, x, engine="mcmc", steps=400, seed=0, progress=False)
    want = pg.fit(bn, x, engine="exact", pseudo_count=1.0, progress=False)  # (counts + 1) / (n + K)
    for k in want.params:
        # 400 posterior draws: the Monte Carlo error of the mean is far below 0.02
        np.testing.assert_allclose(fit.params[k].numpy(), want.params[k].numpy(), atol=0.02)


def test_network_too_wide_for_exact_inference_goes_to_gibbs():
    # 60 binary causes, 200 observed effects with 3 random causes each: conditioning on
    # the effects couples the causes into a graph whose treewidth is far beyond 27
    rng = np.random.default_rng(0)
    spec = {f"r{i}": {"states": 2, "cpt": [0.5, 0.5]} for i in range(60)}
    for j in range(200):
        spec[f"c{j}"] = {"states": 2, "parents": [f"r{k}" for k in rng.choice(60, 3, replace=False)],
                         "cpt": rng.dirichlet([1, 1], size=8).reshape(2, 2, 2, 2)}
    bn = BayesianNetwork(spec)
    evidence = {f"c{j}": "1" for j in range(200)}
    with pytest.raises(ValueError, match=r"intermediate table of [\d,]+ entries .* engine='mcmc'"):
        pg.infer(bn, evidence, variables=["r0"])
    approx = pg.infer(bn, evidence, engine="mcmc", variables=["r0"], num_samples=50, seed=0)["r0"]
    assert approx.shape == (2,) and approx.sum().item() == pytest.approx(1.0)


def test_markov_blanket_and_moral_graph():
    from probgen.graph import markov_blanket, moral_graph
    bn = BayesianNetwork.from_bif(ASIA_BIF)
    assert markov_blanket(bn, "either") == {"lung", "tub", "xray", "dysp", "bronc"}
    assert moral_graph(bn).has_edge("lung", "tub")  # co-parents of "either" are married


def test_em_learns_a_latent_variable():
    # a latent class model: hidden z -> four observed 3-state features
    rng = np.random.default_rng(0)
    spec = {"z": {"states": 2, "cpt": [0.4, 0.6]}}
    for f in "abcd":
        spec[f] = {"states": 3, "parents": ["z"], "cpt": rng.dirichlet([0.5] * 3, size=2)}
    truth = BayesianNetwork(spec)
    x = truth.sample(None, 3000, seed=1)
    x[:, truth.index["z"]] = -1
    fit = pg.fit(truth.with_tables({k: torch.full_like(v, 1 / v.shape[-1]) for k, v in truth.check_params(None).items()}),
                 x, engine="em", seed=0, steps=300, progress=False)
    ll_fit = fit.log_prob(x).sum().item()
    ll_true = truth.log_prob(None, x).sum().item()
    # maximum likelihood on 3,000 rows beats the generating tables (by ~#params/2 nats)
    assert ll_fit > ll_true - 1.0
    # the fitted joint of two observed features matches the true one (sampling error ~0.01)
    pair = {"a": [], "b": []}
    for i, j in itertools.product(range(3), range(3)):
        pair["a"].append(str(i))
        pair["b"].append(str(j))
    lp_fit = fit.log_prob(pair).exp().numpy()
    lp_true = truth.log_prob(None, pair).exp().numpy()
    np.testing.assert_allclose(lp_fit, lp_true, atol=0.03)



def test_table_entry_with_parents_is_read_child_state_major():
    # as pgmpy's BIFReader reads it: the values are (child states) x (parent configurations);
    # checked once against pgmpy 1.1.2 (importing its reader takes ~10 s, too slow for here)
    text = ("variable a { type discrete [ 2 ] { lo, hi }; }\n"
            "variable b { type discrete [ 3 ] { x, y, z }; }\n"
            "probability ( a ) { table 0.25, 0.75; }\n"
            "probability ( b | a ) { table 0.1, 0.6, 0.3, 0.3, 0.6, 0.1; }\n")
    bn = BayesianNetwork.from_bif(text)
    np.testing.assert_array_equal(bn.tables["b"].numpy(), [[0.1, 0.3, 0.6], [0.6, 0.3, 0.1]])


def test_row_chunks_give_the_same_answers(monkeypatch):
    import probgen.ops.bayesian_network as ops
    bn = BayesianNetwork.load_bundled("child")
    x = bn.sample(None, 100, seed=4)
    x[torch.from_numpy(np.random.default_rng(4).random(x.shape) < 0.3)] = -1
    table = {v: [bn.states[v][k] if k >= 0 else None for k in x[:, j]] for j, v in enumerate(bn.variables[:8])}
    params = bn.check_params(None)
    tables = [params[f"probs_{v}"] for v in bn.variables]

    def answers():
        bn._cache.clear()
        net = ops.compiled(bn, params)
        counts, ll = net.expected_counts(tables, x.numpy())
        return (bn.log_prob(None, x), pg.infer(bn, table, variables=["Disease", "Age"]),
                pg.infer(bn, table, query="map", variables=["Disease"]), counts, ll)

    whole = answers()
    monkeypatch.setattr(ops, "ROW_CHUNK_ENTRIES", 1024)  # a few rows per chunk
    chunked = answers()
    assert torch.allclose(whole[0], chunked[0], atol=1e-12, rtol=0)
    for v in whole[1]:
        assert torch.allclose(whole[1][v], chunked[1][v], atol=1e-12, rtol=0)
    assert whole[2] == chunked[2]
    for a, b in zip(whole[3], chunked[3]):
        assert torch.allclose(a, b, atol=1e-9, rtol=0)
    assert whole[4].item() == pytest.approx(chunked[4].item(), abs=1e-9)


def test_one_elimination_core_for_networks_and_factor_graphs():
    """A network written as a factor graph of log-CPTs: the log-space plans the factor graphs
    run give the probability-space answers of the network (one core, two semirings)."""
    from probgen.models import FactorGraph
    bn = BayesianNetwork.from_bif(ASIA_BIF)
    fg = FactorGraph({v: bn.cards[bn.index[v]] for v in bn.variables},
                     {f"p_{v}": (tuple(bn.parents[v]) + (v,), bn.tables[v].double().log()) for v in bn.variables})
    # a network's tables sum to one: log Z = 0 up to float64 rounding of a few hundred terms
    assert abs(pg.infer(fg, None, query="log_partition").item()) < 1e-12
    ev = {"xray": "yes", "smoke": "no"}
    fev = {v: bn.states[v].index(s) for v, s in ev.items()}
    want = pg.infer(bn, ev, query="marginals")
    got = pg.infer(fg, fev, query="marginals")
    for v, p in want.items():
        np.testing.assert_allclose(got[v].numpy(), p.numpy(), atol=1e-12)
    mpe = pg.infer(bn, ev, query="map")
    best = pg.infer(fg, fev, query="map")
    assert {v: bn.states[v][k] for v, k in best.items() if v not in ev} == {v: s for v, s in mpe.items() if v not in ev}
