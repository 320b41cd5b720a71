"""Boltzmann machines (BM, RBM, DBN, DBM) against oracles: closed-form conditionals,
brute-force enumeration of tiny models, AIS vs exact log Z, training that provably
raises the exact held-out likelihood, the expected CD/PCD update by enumeration, mean-field
fixed points, pretraining factors."""
import itertools
import math

import networkx as nx
import pytest
import torch
import torch.nn.functional as F

import probgen as pg
from probgen.data import split
from probgen.energy import LayeredEnergy
from probgen.inference._energy_cd import tied_gibbs_step
from probgen.inference._energy_pretrain import pretraining_factors, stage_up
from probgen.models import DBM, DBN, RBM, BoltzmannMachine

D64 = torch.float64




def random_params(model, scale=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = {}
    for name, shape in model.param_shapes().items():
        p[name] = scale * torch.randn(shape, generator=g, dtype=D64)
    for r in model.lateral_names.values():
        m = 0.5 * (p[r] + p[r].T)
        p[r] = m - torch.diag(torch.diagonal(m))
    return p


def all_states(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=D64)


def brute_joint(model, params):
    """All joint states of a small undirected model and their exact probabilities,
    straight from the energy: p(s) = exp(−E(s)/T) / Σ exp(−E/T)."""
    sizes = [layer.size for layer in model.layers]
    S = all_states(sum(sizes))
    states = list(torch.split(S, sizes, dim=1))
    logp = -model.energy(params, states) / model.T
    return states, torch.softmax(logp, 0), torch.logsumexp(logp, 0)


# ---- conditionals -------------------------------------------------------------------
@pytest.mark.parametrize("T", [1.0, 2.5])
def test_rbm_conditionals_closed_form(T):
    m = RBM(5, 3, T=T)
    p = random_params(m, 1.0)
    v = all_states(5)
    h = all_states(3)
    ph = m.conditional_mean(p, [v, None], 1)
    pv = m.conditional_mean(p, [None, h], 0)
    torch.testing.assert_close(ph, torch.sigmoid((p["c"] + v @ p["W"]) / T), rtol=0, atol=1e-12)
    torch.testing.assert_close(pv, torch.sigmoid((p["b"] + h @ p["W"].T) / T), rtol=0, atol=1e-12)
    # and both equal the conditionals of the enumerated joint distribution
    states, prob, _ = brute_joint(m, p)
    joint = prob.reshape(32, 8)  # rows v (in all_states order), columns h
    p_h_given_v = joint / joint.sum(1, keepdim=True)
    torch.testing.assert_close(p_h_given_v @ h, ph, rtol=0, atol=1e-10)
    p_v_given_h = joint / joint.sum(0, keepdim=True)
    torch.testing.assert_close(p_v_given_h.T @ v, pv, rtol=0, atol=1e-10)


def test_gaussian_rbm_conditional_and_log_partition():
    m = RBM(1, 2, visible="gaussian", T=1.5)
    p = random_params(m, 0.7, seed=3)
    h = all_states(2)
    torch.testing.assert_close(m.conditional_mean(p, [None, h], 0), p["b"] + h @ p["W"].T)
    # log Z by numerical integration over v (trapezoid on a wide grid) and a sum over h
    v = torch.linspace(-15, 15, 60001, dtype=D64)[:, None]
    logf = torch.stack([-m.energy(p, [v, hh.expand(len(v), 2)]) / m.T for hh in h], 1)
    integral = torch.trapezoid(torch.exp(torch.logsumexp(logf, 1)), v[:, 0])
    fit = pg.fit(m, torch.zeros(3, 1), engine="exact", init=p, steps=0)
    assert fit.log_partition("exact").value == pytest.approx(float(torch.log(integral)), abs=1e-6)


def test_gibbs_schedules_from_colouring():
    assert RBM(4, 3).gibbs_schedule() == [[(0, None)], [(1, None)]]
    assert DBM(4, 3, 2, 2).gibbs_schedule() == [[(0, None), (2, None)], [(1, None), (3, None)]]
    bm = BoltzmannMachine(3, 2).gibbs_schedule()
    assert bm == [[(0, 0)], [(0, 1)], [(0, 2)], [(1, 0)], [(1, 1)]]  # laterals: unit by unit
    assert DBN(4, 3, 2).gibbs_schedule() == [[(1, None)], [(2, None)]]  # only the top RBM


# ---- Gibbs marginals of a BM with laterals vs enumeration ----------------------------
def test_bm_gibbs_marginals_match_enumeration():
    m = BoltzmannMachine(6, 4)
    p = random_params(m, 0.5, seed=1)
    states, prob, _ = brute_joint(m, p)
    s_all = torch.cat(states, 1)
    exact_m = prob @ s_all  # unit marginals
    exact_pair = (s_all * prob[:, None]).T @ s_all  # E[s_i s_j]
    M = 4000
    g = torch.Generator().manual_seed(0)
    chain = m.random_states(M, D64, g)
    for _ in range(150):
        chain = m.gibbs_sweep(p, chain, g)
    s = torch.cat(chain, 1)
    emp_m, emp_pair = s.mean(0), s.T @ s / M
    # The M chains are independent; after 150 sweeps (1500 single-unit updates of a
    # 10-unit model with |couplings| ~ 0.5) each final state is a draw from p, so every
    # estimate is a mean of M iid Bernoulli variables with SE ≤ 0.5/√M = 0.0079.
    # 4.5 SE per moment keeps the family-wise false-alarm rate over 10 + 45 moments below 1e-3.
    tol = 4.5 * 0.5 / math.sqrt(M)
    assert (emp_m - exact_m).abs().max() < tol
    iu = torch.triu_indices(10, 10, 1)
    assert (emp_pair - exact_pair)[iu[0], iu[1]].abs().max() < tol


# ---- exact evaluation: log p(v) sums to one over all v ----------------------------------
@pytest.mark.parametrize("model", [RBM(6, 4), BoltzmannMachine(5, 3), DBM(4, 3, 2), DBN(4, 3, 2), DBN(3, 2, 3, 2)],
                         ids=["rbm", "bm", "dbm", "dbn", "dbn4"])
def test_exact_log_prob_normalised(model):
    p = random_params(model, 0.8, seed=2)
    v = all_states(model.layers[0].size)
    fit = pg.fit(model, v, engine="exact", init=p, steps=0)
    assert fit.log_prob_kind == "exact"
    lp = fit.log_prob(v)
    assert float(torch.logsumexp(lp, 0)) == pytest.approx(0.0, abs=1e-10)
    if model.n_directed == 0:
        states, prob, logz = brute_joint(model, p)
        assert fit.log_partition("exact").value == pytest.approx(float(logz), abs=1e-10)
        # p(v) from the joint
        nv = model.layers[0].size
        idx = (states[0] * 2 ** torch.arange(nv - 1, -1, -1, dtype=D64)).sum(1).long()
        pv = torch.zeros(2 ** nv, dtype=D64).index_add_(0, idx, prob)
        torch.testing.assert_close(lp, torch.log(pv), rtol=0, atol=1e-10)


def test_dbn_samples_top_gibbs_then_ancestral():
    m = DBN(4, 3, 2)
    p = random_params(m, 1.0, seed=5)
    v = all_states(4)
    fit = pg.fit(m, v, engine="exact", init=p, steps=0)
    exact = torch.exp(fit.log_prob(v))
    n = 4000
    x = fit.sample(n, seed=0)
    counts = torch.zeros(16, dtype=D64).index_add_(
        0, (x * torch.tensor([8.0, 4, 2, 1], dtype=D64)).sum(1).long(), torch.ones(n, dtype=D64))
    # independent draws (separate chains): each frequency has SE √(p(1−p)/n); 4.5 SE over 16 states
    se = torch.sqrt(exact * (1 - exact) / n)
    assert ((counts / n - exact).abs() < 4.5 * se + 1e-3).all()


# ---- AIS --------------------------------------------------------------------------------
def test_ais_log_partition_rbm_16_12():
    m = RBM(16, 12)
    p = random_params(m, 0.5, seed=1)
    fit = pg.fit(m, all_states(16)[:50], engine="exact", init=p, steps=0)
    exact = fit.log_partition("exact").value
    # independent oracle: sum over all 2^16 visible states with h summed out by hand
    V = all_states(16)
    brute = torch.logsumexp(V @ p["b"] + F.softplus(p["c"] + V @ p["W"]).sum(1), 0)
    assert exact == pytest.approx(float(brute), abs=1e-9)
    est = fit.log_partition("ais", chains=200, temperatures=1000)
    assert est.method == "ais" and est.stderr > 0
    assert abs(est.value - exact) < 3 * est.stderr
    assert abs(est.value - exact) < 0.05


def test_ais_log_partition_dbm():
    m = DBM(8, 6, 4)
    p = random_params(m, 0.6, seed=4)
    fit = pg.fit(m, all_states(8)[:20], engine="exact", init=p, steps=0)
    exact = fit.log_partition("exact").value
    est = fit.log_partition("ais", chains=200, temperatures=500)
    assert abs(est.value - exact) < max(3 * est.stderr, 0.02)


def test_exact_log_partition_too_large_names_ais():
    m = RBM(30, 30)
    fit = pg.fit(m, torch.zeros(4, 30), engine="mcmc", steps=1, seed=0, progress=False)
    with pytest.raises(ValueError, match="ais"):
        fit.log_partition("exact")
    assert fit.log_prob_kind == "estimate"
    assert "exact" not in pg.compatible(m)


# ---- training raises the exact held-out likelihood ------------------------------------
@pytest.mark.parametrize("persistent", [False, True], ids=["cd1", "pcd"])
def test_training_raises_exact_heldout_loglik(persistent):
    x_train, x_test = split(pg.load_dataset("digits-binary"))
    m = RBM(64, 12)
    start = pg.fit(m, x_train, engine="exact", init=m.init_params(x_train, seed=0), steps=0)
    before = float(start.log_prob(x_test).mean())
    fit = pg.fit(m, x_train, engine="mcmc", steps=12, batch_size=20, lr=0.05, persistent=persistent, seed=0,
                 progress=False)
    assert fit.log_prob_kind == "exact"
    after = float(fit.log_prob(x_test).mean())
    # The start is (almost exactly) the independent-pixel model (W ~ N(0, 0.01²), b at the
    # data's log-odds: −24.9 nats); both evaluations are exact (2^12 hidden states
    # enumerated), so there is no estimation noise: a 1-nat gain per image cannot come from
    # rounding. A working CD/PCD gains ≈ 3 nats in 12 epochs (≈ −20 after 30); a broken
    # gradient sign or sampler loses likelihood instead.
    assert after > before + 1.0


def test_exact_engine_gradient_ascent_increases_likelihood():
    m, x = BoltzmannMachine.example()
    fit = pg.fit(m, x, engine="exact", steps=30, lr=0.05, seed=0)
    ll = [r["log_likelihood"] for r in fit.history]
    assert ll[-1] > ll[0] + 0.1
    R = fit.params["R"]
    torch.testing.assert_close(R, R.T)
    assert (torch.diagonal(R) == 0).all()


# ---- DBM mean field and pretraining ----------------------------------------------------
def test_dbm_mean_field_fixed_point():
    m = DBM(8, 6, 4)
    p = random_params(m, 1.0, seed=7)
    v = all_states(8)[::7]
    mu, info = m.mean_field(p, [v, None, None], [1, 2], iters=500, tol=1e-12)
    assert info["delta"] < 1e-12
    mu1, mu2 = mu[1], mu[2]
    # mean-field fixed point (Salakhutdinov & Hinton 2009, eq. 8): μ1 = σ(b1 + vᵀW1 + W2 μ2), μ2 = σ(b2 + μ1ᵀW2)
    torch.testing.assert_close(mu1, torch.sigmoid(p["b1"] + v @ p["W1"] + mu2 @ p["W2"].T), rtol=0, atol=1e-10)
    torch.testing.assert_close(mu2, torch.sigmoid(p["b2"] + mu1 @ p["W2"]), rtol=0, atol=1e-10)
    # pg.infer gives the same posterior means
    fit = pg.fit(m, v, engine="exact", init=p, steps=0)
    inf = pg.infer(fit, v, engine="meanfield", mf_iters=500, mf_tol=1e-12)
    torch.testing.assert_close(inf[1], mu1, rtol=0, atol=1e-8)


def test_pretraining_factors_as_stated():
    assert pretraining_factors(2, "dbm") == [{"up": 2, "down": 1, "scale": 1.0}, {"up": 1, "down": 2, "scale": 1.0}]
    assert pretraining_factors(3, "dbm")[1] == {"up": 1, "down": 1, "scale": 0.5}
    assert all(f == {"up": 1, "down": 1, "scale": 1.0} for f in pretraining_factors(3, "dbn"))
    x = split(pg.load_dataset("digits-binary"))[0][:300]
    m = DBM(64, 16, 12, 8)
    fit = pg.fit(m, x, engine="meanfield", steps=0, pretrain=True, pretrain_steps=2, seed=0, progress=False)
    st = fit.state["pretraining"]
    assert [(s["up"], s["down"], s["scale"]) for s in st] == [(2, 1, 1.0), (1, 1, 0.5), (1, 2, 1.0)]
    # weights: bottom and top copied, the middle one halved
    torch.testing.assert_close(fit.params["W1"], st[0]["W"].double())
    torch.testing.assert_close(fit.params["W2"], 0.5 * st[1]["W"].double())
    torch.testing.assert_close(fit.params["W3"], st[2]["W"].double())
    # the bottom RBM's hidden units see doubled bottom-up weights: σ(c + 2 W1ᵀ v)
    xs = x[:5].float()
    torch.testing.assert_close(stage_up(xs, st[0]), torch.sigmoid(st[0]["c"] + 2 * xs @ st[0]["W"]))
    # DBN: weights copied unchanged
    dbn = pg.fit(DBN(64, 16, 8), x, engine="mcmc", steps=2, seed=0, progress=False)
    torch.testing.assert_close(dbn.params["W2"], dbn.state["pretraining"][1]["W"].double())


def test_tied_copies_sampler_matches_enumeration():
    """The bottom (two visible copies) and top (two hidden copies) RBMs of DBM pretraining:
    the Gibbs step on copy sums leaves the tied-copies RBM's distribution invariant."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 2, generator=g, dtype=D64)
    b, c = torch.randn(3, generator=g, dtype=D64), torch.randn(2, generator=g, dtype=D64)
    for up, down in [(2, 1), (1, 2)]:
        # enumerate the RBM with `up` visible copies and `down` hidden copies (weights tied)
        Wbig = W.repeat(up, down)
        S = all_states(3 * up + 2 * down)
        v, h = S[:, :3 * up], S[:, 3 * up:]
        logp = v @ b.repeat(up) + h @ c.repeat(down) + ((v @ Wbig) * h).sum(1)
        prob = torch.softmax(logp, 0)
        sv_exact = prob @ v.reshape(-1, up, 3).sum(1)
        M = 20000
        hs = torch.zeros(M, 2, dtype=D64)
        for _ in range(30):
            sv, ph, hs = tied_gibbs_step(hs, W, b, c, 1.0, "bernoulli", up, down, g)
        # M independent chains: SE of a mean of values in [0, 2] is ≤ 1/√M; 4.5 SE
        assert (sv.mean(0) - sv_exact).abs().max() < 4.5 / math.sqrt(M)


# ---- fits, sampling, graphs, errors -----------------------------------------------------
def test_dbm_meanfield_pcd_fit_and_ais_log_prob():
    x = split(pg.load_dataset("digits-binary"))[0][:400]
    m = DBM(64, 12, 8)
    fit = pg.fit(m, x, engine="meanfield", steps=2, pretrain=True, pretrain_steps=2, seed=0, progress=False)
    assert fit.log_prob_kind == "exact"  # log Z: 2^12 states of h1 (v, h2 summed out); log p*(v): 2^8
    lp = fit.log_prob(x[:20])
    assert torch.isfinite(lp).all() and (lp < 0).all()
    s = fit.sample(4, seed=0)
    assert s.shape == (4, 64) and ((s == 0) | (s == 1)).all()


def test_structure_graphs():
    g = pg.graph(RBM(3, 2))
    assert isinstance(g, nx.Graph) and not g.is_directed()
    assert g.nodes["v"]["kind"] == "layer" and g.nodes["v"]["size"] == 3 and g.nodes["v"]["units"] == "bernoulli"
    gu = pg.graph(RBM(3, 2), expand=True)
    assert gu.number_of_nodes() == 5 and gu.number_of_edges() == 6
    assert all(d["kind"] == "unit" for _, d in gu.nodes(data=True))
    bm = pg.graph(BoltzmannMachine(3, 2), expand=True)
    assert bm.number_of_edges() == 6 + 3 + 1  # couplings + lateral pairs
    dbn = pg.graph(DBN(5, 4, 3))
    assert dbn.is_directed()
    assert dbn.edges["h2", "h1"]["directed"] is False and dbn.edges["h1", "v"]["directed"] is True
    dbm = pg.graph(DBM(5, 4, 3))
    assert not dbm.is_directed() and set(dbm.edges) == {("v", "h1"), ("h1", "h2")}


def test_clear_errors():
    m = RBM(4, 2)
    with pytest.raises(ValueError, match="0/1"):
        pg.fit(m, torch.full((3, 4), 0.5), engine="mcmc")
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        pg.fit(m, torch.zeros(3, 5), engine="mcmc")
    with pytest.raises(ValueError, match="unknown mcmc options"):
        pg.fit(m, torch.zeros(3, 4), engine="mcmc", lerning_rate=0.1)
    with pytest.raises(ValueError, match="meanfield"):
        pg.fit(DBN(4, 3, 2), torch.zeros(3, 4), engine="meanfield")
    with pytest.raises(ValueError, match="temperature"):
        RBM(4, 2, T=0)
    with pytest.raises(ValueError, match="shape"):
        pg.fit(m, torch.zeros(3, 4), engine="exact", init={"W": torch.zeros(2, 4)}, steps=0)
    assert isinstance(m, LayeredEnergy)


@pytest.mark.parametrize("model", [DBM(6, 5, 4), DBN(6, 5, 4)], ids=["dbm", "dbn"])
def test_importance_sampled_log_unnormalized_matches_enumeration(model):
    """The estimate used when hidden layers are too large to enumerate (DBM: mean-field
    proposal for the enumerated layer, the other summed out; DBN: the recognition pass)."""
    from probgen.inference._energy_eval import log_unnormalized_visible
    p = random_params(model, 0.8, seed=6)
    v = all_states(6)[::5]
    exact, ok = log_unnormalized_visible(model, p, v)
    assert ok
    reps = torch.stack([log_unnormalized_visible(model, p, v, num_samples=200, max_bits=2,
                                                 g=torch.Generator().manual_seed(r))[0] for r in range(20)])
    # 20 independent estimates per row: their mean is within 4 standard errors of the exact
    # value, up to the O(1/S) downward bias of a log of a 200-sample mean (≤ 0.01 here since
    # the weights' relative variance is below 1 for a 4-5-bit proposal space)
    se = reps.std(0) / math.sqrt(20)
    assert ((reps.mean(0) - exact).abs() < 4 * se + 0.01).all()


# ---- contrastive divergence on the gradient trainer -----------------------------------------

def _rbm_data():
    model, data = RBM.example(seed=0)
    return model, data


def test_cd_fused_update_equals_the_materialised_gradient():
    """The default CD update adds Δ into the augmented matrix as two factors (no gradient
    tensor); with ``clip_grad`` set, the gradient is materialised in ``p.grad`` and the same
    ContrastiveSGD rule applies it. With a bound no gradient reaches (1e9) the two must give the
    same fit; in float64 their only difference is the order of a few roundings (~1e-16
    relative), far below the 1e-9 checked here, and a Bernoulli draw flips only if a uniform
    falls within that of its mean (probability ~1e-13 per draw)."""
    model, data = _rbm_data()
    kw = dict(engine="mcmc", steps=4, seed=0, progress=False, dtype="float64", persistent=True, momentum=0.5,
              weight_decay=0.01, batch_size=7, lr=0.3)
    fused = pg.fit(model, data, **kw)
    materialised = pg.fit(model, data, clip_grad=1e9, **kw)
    for k, v in fused.params.items():
        assert torch.allclose(materialised.params[k], v, rtol=0, atol=1e-9), k
    assert not torch.equal(fused.params["W"], RBM.example(seed=0)[0].init_params(data, seed=0)["W"].double())


def test_pcd_chains_are_trainer_state():
    """The persistent chains of PCD are saved with the trainer's state: they evolve from step to
    step, a run continued from a saved state equals the uninterrupted one bit for bit, and one
    continued with other chains does not (lr 2: weights large enough that the chains change
    the Gibbs draws; deterministic on CPU with this seed)."""
    import copy
    from probgen.loops import gradient
    model, data = _rbm_data()
    kw = dict(engine="mcmc", steps=12, seed=0, progress=False, persistent=True, momentum=0.5, batch_size=8, lr=2.0)
    states = []
    with gradient.session(every=1, save=lambda s: states.append(copy.deepcopy(s))):
        whole = pg.fit(model, data, **kw)
    chains = [s["tensors"]["chains"] for s in states]
    assert not torch.equal(chains[1], chains[2])
    with gradient.session(resume=states[2]):
        resumed = pg.fit(model, data, **kw)
    assert torch.equal(resumed.params["W"], whole.params["W"])
    other = copy.deepcopy(states[2])
    other["tensors"]["chains"].copy_(chains[0])
    with gradient.session(resume=other):
        wrong = pg.fit(model, data, **kw)
    assert not torch.equal(wrong.params["W"], whole.params["W"])


def test_cd_takes_the_trainer_options():
    """CD runs on the gradient trainer: a validation split scores ``val_recon_error`` every epoch
    and restores the best epoch; another optimiser is refused with CD's ``momentum``; a DBN
    (pretraining stages only) refuses a checkpoint."""
    model, data = _rbm_data()
    fit = pg.fit(model, data, engine="mcmc", steps=5, seed=0, progress=False, validation=0.25)
    assert all("val_recon_error" in r for r in fit.history)
    best = min(r["val_recon_error"] for r in fit.history)
    assert fit.state["best_val_recon_error"] == best
    adam = pg.fit(model, data, engine="mcmc", steps=3, seed=0, progress=False, optim="adam", lr=0.01)
    assert adam.options["optim"] == "adam"
    with pytest.raises(ValueError, match="momentum"):
        pg.fit(model, data, engine="mcmc", steps=2, seed=0, progress=False, optim="adam", momentum=0.5)
    dbn, x = DBN.example(seed=0)
    with pytest.raises(ValueError, match="checkpoint"):
        pg.fit(dbn, x, engine="mcmc", steps=2, seed=0, progress=False, checkpoint="/tmp/never-written.ckpt")


def _expected_cd_update(params, data, T, k, persistent, batch_size):
    """The expected parameter change / lr of one epoch of CD-k or PCD-k at a vanishing lr, by
    enumerating every visible state of a tiny RBM: each minibatch adds the data's mean
    statistic ṽᵀP(h̃|v) minus the chains'; a CD chain is k Gibbs steps from the batch's rows,
    so its visible state is distributed as P^k(v0, ·) with P(v, v') = Σ_h p(h|v) p(v'|h); PCD's
    chains start at random data rows and have taken k·b steps by minibatch b."""
    W, b, c = params["W"], params["b"], params["c"]
    V = all_states(W.shape[0])
    Hs = all_states(W.shape[1])
    ph_v = torch.sigmoid((c + V @ W) / T)                                  # (2^D, H)
    pv_h = torch.sigmoid((b + Hs @ W.T) / T)                               # (2^H, D)
    p_hstate = torch.exp(Hs @ torch.log(ph_v).T + (1 - Hs) @ torch.log1p(-ph_v).T).T   # (2^D, 2^H)
    p_vstate = torch.exp(V @ torch.log(pv_h).T + (1 - V) @ torch.log1p(-pv_h).T).T     # (2^H, 2^D)
    P = p_hstate @ p_vstate                                                # (2^D, 2^D)
    ones = torch.ones(len(V), 1, dtype=D64)
    stat = torch.einsum("vi,vj->vij", torch.cat([V, ones], 1), torch.cat([ph_v, ones], 1))
    rows = (data @ (2.0 ** torch.arange(W.shape[0] - 1, -1, -1, dtype=D64))).long()
    start = torch.zeros(len(V), dtype=D64).index_add_(0, rows, torch.ones(len(rows), dtype=D64)) / len(rows)
    pos = torch.einsum("v,vij->ij", start, stat)
    n_batches = -(-len(data) // batch_size)
    total = torch.zeros_like(pos)
    for bi in range(1, n_batches + 1):
        pi = start @ torch.linalg.matrix_power(P, k * bi if persistent else k)
        total += pos - torch.einsum("v,vij->ij", pi, stat)
    return total / T


@pytest.mark.parametrize("persistent,batch_size,n_chains,k", [
    (False, 40, None, 1),   # one minibatch: a single stacked product
    (False, 16, None, 2),   # CD's last minibatch smaller (16, 16, 8): the chains shrink with it
    (True, 16, None, 1),    # PCD's last minibatch smaller than its chains
    (True, 10, 6, 1),       # fewer chains than rows: two products
])
def test_cd_epoch_update_matches_enumeration(persistent, batch_size, n_chains, k):
    """The CD/PCD update an epoch makes, averaged over 400 seeds, equals its exact expectation
    (`_expected_cd_update`) at a vanishing lr (1e-5: the parameters move ~1e-5 during the epoch,
    changing the expectation by that relative amount, far below the Monte Carlo error) within 4.5
    standard errors of the mean on every entry of W, b and c (35 entries: a false alarm has
    probability ~35 × 7e-6)."""
    model, data = RBM.example(seed=0)
    data = data.to(D64)
    init = random_params(model, scale=0.7, seed=3)
    lr, T, R = 1e-5, model.T, 400
    deltas = []
    for seed in range(R):
        fit = pg.fit(model, data, engine="mcmc", init=init, steps=1, seed=seed, progress=False, dtype="float64",
                     lr=lr, k=k, persistent=persistent, batch_size=batch_size, n_chains=n_chains)
        p = fit.params
        d = torch.zeros(7, 5, dtype=D64)
        d[:6, :4], d[:6, 4], d[6, :4] = p["W"] - init["W"], p["b"] - init["b"], p["c"] - init["c"]
        deltas.append(d / lr)
    deltas = torch.stack(deltas)
    mean, se = deltas.mean(0), deltas.std(0) / math.sqrt(R)
    want = _expected_cd_update(init, data, T, k, persistent, batch_size)
    z = ((mean - want) / se)[:-1, :].flatten().tolist() + ((mean - want) / se)[-1, :-1].tolist()
    assert max(abs(v) for v in z) < 4.5, z
