"""Online (stepwise) EM: ``pg.fit(..., online=True, batch_size=B)`` and ``Fit.update``
(`inference.em._online`; Cappé & Moulines 2009).

Oracles: the batch EM fit on the whole data (online EM on a stream of chunks reaches its
per-row log-likelihood within 1%, the issue's criterion: stepwise EM with Σρ = ∞, Σρ² < ∞
converges to a stationary point of the same likelihood, and after one pass over thousands of
rows the remaining noise of the running statistics is O(√ρ_t) ≈ a few per cent of a moment,
well under 1% of the log-likelihood), the update formula written out by hand on two
minibatches (equal to float round-off, 1e-12), and the uninterrupted fit for checkpoints
(bit for bit, as every checkpoint test)."""
import gc
import weakref

import pytest
import torch

import probgen as pg
from probgen import checkpoint as checkpoints
from probgen.models import HMM, CategoricalMixture, GaussianMixture


def _gmm_data(seed, n=6000, d=2, covariance="full"):
    g = torch.Generator().manual_seed(seed)
    loc = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]], dtype=torch.float64)[:, :d]
    z = torch.randint(3, (n,), generator=g)
    scale = torch.tensor([1.0, 0.7, 1.3], dtype=torch.float64)
    x = loc[z] + torch.randn(n, d, generator=g, dtype=torch.float64) * scale[z, None]
    if covariance == "full":  # a correlated component
        x[z == 0, 1] += 0.8 * x[z == 0, 0]
    return x


def _chunks(x, size):
    """A generator of numpy chunks of ``x`` (what a reader of a large file would yield)."""
    for lo in range(0, len(x), size):
        yield x[lo:lo + size].numpy().copy()


def _close(online, batch, data, rel=0.01):
    a, b = float(online.log_prob(data).mean()), float(batch.log_prob(data).mean())
    assert abs(a - b) <= rel * abs(b), (a, b)
    return a, b


@pytest.mark.parametrize("covariance", ["full", "diag", "spherical"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gmm_online_on_a_stream_reaches_the_batch_fit(covariance, seed):
    x = _gmm_data(seed, covariance=covariance)
    model = GaussianMixture(3, 2, covariance)
    batch = pg.fit(model, x, seed=seed, progress=False)
    online = pg.fit(model, _chunks(x, 1000), online=True, batch_size=200, seed=seed, progress=False)
    _close(online, batch, x)
    assert online.options["online"] is True and online.state["online"]["t"] == 30  # 6 chunks × 5 minibatches
    assert len(online.history) == 1 and online.history[0]["updates"] == 30


def _hmm_case(emission, seed, n=300, T=40):
    if emission == "gaussian":
        model = HMM(3, "gaussian", dim=2, covariance="diag")
        params = {"initial": torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
                  "transition": torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.15, 0.15, 0.7]], dtype=torch.float64),
                  "loc": torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], dtype=torch.float64),
                  "scale": torch.tensor([[1.0, 0.8], [0.7, 1.0], [1.0, 1.0]], dtype=torch.float64)}
    else:
        model = HMM(2, "categorical", n_symbols=4)
        params = {"initial": torch.tensor([0.6, 0.4], dtype=torch.float64),
                  "transition": torch.tensor([[0.85, 0.15], [0.2, 0.8]], dtype=torch.float64),
                  "probs": torch.tensor([[0.6, 0.25, 0.1, 0.05], [0.05, 0.15, 0.3, 0.5]], dtype=torch.float64)}
    x = model.sample(params, n, seed=seed, T=T)
    return model, [x[i] for i in range(n)]


def test_poisson_hmm_online_on_in_memory_sequences():
    model = HMM(2, "poisson")
    params = {"initial": torch.tensor([0.5, 0.5], dtype=torch.float64),
              "transition": torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=torch.float64),
              "rate": torch.tensor([1.0, 6.0], dtype=torch.float64)}
    x = model.sample(params, 200, seed=0, T=30)
    seqs = [x[i] for i in range(200)]
    batch = pg.fit(model, seqs, seed=0, progress=False)
    online = pg.fit(model, seqs, online=True, batch_size=10, tol=None, seed=0, progress=False)
    _close(online, batch, seqs)
    assert len(online.history) == 5 and online.state["online"]["n"] == 200  # 5 passes by default


@pytest.mark.parametrize("emission", ["gaussian", "categorical"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hmm_online_on_a_stream_of_sequences_reaches_the_batch_fit(emission, seed):
    model, seqs = _hmm_case(emission, seed)
    batch = pg.fit(model, seqs, seed=seed, progress=False)
    def stream():  # chunks: lists of sequences
        return (seqs[lo:lo + 50] for lo in range(0, len(seqs), 50))

    # a categorical HMM starts from random tables (a Gaussian one from k-means), and its batch
    # EM takes ~100 iterations from there: one pass (30 updates) is not enough, five passes are
    passes = 1 if emission == "gaussian" else 5
    online = pg.fit(model, stream() if passes == 1 else stream, online=True, batch_size=10, steps=passes,
                    tol=None, seed=seed, progress=False)
    _close(online, batch, seqs)  # per sequence


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_categorical_mixture_online_reaches_the_batch_fit(seed):
    model = CategoricalMixture(3)
    truth = {"weights": torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
             "probs": torch.tensor([[[0.7, 0.2, 0.1]] * 6, [[0.1, 0.8, 0.1]] * 6, [[0.15, 0.15, 0.7]] * 6],
                                   dtype=torch.float64)}
    x = model.sample(truth, 5000, seed=seed)
    batch = pg.fit(model, x, seed=seed, progress=False)
    online = pg.fit(model, _chunks(x, 500), online=True, batch_size=100, seed=seed, progress=False)
    _close(online, batch, x)


def test_missing_cells_stream_through_online_em():
    """NaN cells (GMM) and −1 codes (categorical mixture) take the batch EM's statistics path."""
    x = _gmm_data(0, covariance="full")
    g = torch.Generator().manual_seed(1)
    xm = x.clone()
    xm[torch.rand(x.shape, generator=g) < 0.2] = float("nan")
    xm[torch.isnan(xm).all(1), 0] = x[torch.isnan(xm).all(1), 0]  # no row entirely missing
    model = GaussianMixture(3, 2, "full")
    batch = pg.fit(model, xm, seed=0, progress=False)
    online = pg.fit(model, _chunks(xm, 1000), online=True, batch_size=200, seed=0, progress=False)
    _close(online, batch, xm)
    cm = CategoricalMixture(2)
    codes = CategoricalMixture.example(0)[1]
    codes = codes.repeat(40, 1)
    full = codes.clone()
    codes[torch.rand(codes.shape, generator=g) < 0.2] = -1
    gone = (codes < 0).all(1)
    codes[gone] = full[gone]  # no row entirely missing
    b = pg.fit(cm, codes, seed=0, progress=False)
    o = pg.fit(cm, codes, online=True, batch_size=200, steps=5, seed=0, progress=False, tol=None)
    _close(o, b, codes)


def _gaps(seqs, seed, rate=0.2):
    """The sequences with ``rate`` of their cells missing at random (NaN; for a Gaussian some
    whole steps and some single dimensions), none entirely missing."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in seqs:
        s = s.to(torch.float64).clone()
        miss = torch.rand(s.shape, generator=g) < rate
        miss.view(len(s), -1)[0] = False  # the first step observed: no sequence entirely missing
        out.append(s.masked_fill(miss, float("nan")))
    return out


@pytest.mark.parametrize("emission", ["gaussian", "categorical"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hmm_online_with_missing_steps_reaches_the_batch_fit(emission, seed):
    """Online Baum-Welch on sequences with gaps (20% of the cells missing at random) reaches
    batch EM's fit of the same data within the complete-data test's 1%: the minibatch
    statistics are the batch E-step's (missing observations marginalised exactly)."""
    model, seqs = _hmm_case(emission, seed)
    seqs = _gaps(seqs, seed + 10)
    assert model.check_data(seqs).any_missing
    batch = pg.fit(model, seqs, seed=seed, progress=False)
    def stream():
        return (seqs[lo:lo + 50] for lo in range(0, len(seqs), 50))

    # EM's linear rate is the fraction of missing information (Dempster, Laird & Rubin 1977), which
    # the gaps raise: the categorical HMM from its random start takes 10 passes here, not the
    # complete-data test's 5 (measured, seed 0: 1.2% short of batch EM after 5, 0.2% after 10,
    # 0.07% after 20 — the same optimum, approached more slowly)
    passes = 1 if emission == "gaussian" else 10
    online = pg.fit(model, stream() if passes == 1 else stream, online=True, batch_size=10, steps=passes,
                    tol=None, seed=seed, progress=False)
    _close(online, batch, seqs)  # the exact marginal likelihood of the observed cells, per sequence


def test_hmm_online_refuses_labels():
    with pytest.raises(ValueError, match="labels"):
        pg.fit(GaussianMixture(2, 2), _gmm_data(0)[:100], online=True, batch_size=10, labels=torch.zeros(100),
               progress=False)
    model, seqs = _hmm_case("categorical", 0, n=20)
    with pytest.raises(ValueError, match="labels"):
        pg.fit(model, seqs, online=True, batch_size=5, labels=torch.zeros(20, 40, dtype=torch.long), progress=False)


def test_a_stream_is_consumed_lazily():
    """The chunks are never all alive: when the generator yields chunk i, at most the two
    before it are still referenced (the one being processed, the last minibatch's)."""
    x = _gmm_data(0, n=4000)
    alive, peak, yielded = set(), [0], [0]

    def stream():
        for i, lo in enumerate(range(0, len(x), 200)):
            gc.collect()
            peak[0] = max(peak[0], len(alive))
            chunk = x[lo:lo + 200].numpy().copy()
            alive.add(i)
            weakref.finalize(chunk, alive.discard, i)
            yielded[0] += 1
            yield chunk

    fit = pg.fit(GaussianMixture(3, 2), stream(), online=True, batch_size=100, seed=0, progress=False)
    assert yielded[0] == 20 and fit.state["online"]["t"] == 40
    assert peak[0] <= 2, peak


def test_an_iterator_is_one_pass_and_a_callable_gives_several():
    x = _gmm_data(0, n=2000)
    model = GaussianMixture(3, 2)
    with pytest.raises(ValueError, match="consumed once"):
        pg.fit(model, _chunks(x, 500), online=True, steps=2, progress=False)
    with pytest.raises(ValueError, match="consumed once"):
        pg.fit(model, _chunks(x, 500), online=True, n_init=2, progress=False)
    calls = []

    def fresh():
        calls.append(1)
        return _chunks(x, 500)

    fit = pg.fit(model, fresh, online=True, batch_size=250, steps=3, tol=None, seed=0, progress=False)
    assert len(calls) == 3 and len(fit.history) == 3 and fit.state["online"]["t"] == 24
    assert fit.state["online"]["n"] == 2000  # distinct rows: counted on the first pass only


def test_the_stepwise_update_is_the_formula():
    """Two minibatches by hand: s1 = S(b1; θ0)/n1, θ1 = M(n1 s1); ρ2 = (2 + t0)^−κ,
    s2 = (1 − ρ2) s1 + ρ2 S(b2; θ1)/n2, θ2 = M((n1 + n2) s2) — to 1e-12."""
    x = _gmm_data(3, n=700, covariance="diag")
    model = GaussianMixture(3, 2, "diag")
    init = {"weights": torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64),
            "loc": torch.tensor([[0.5, 0.0], [4.0, 0.5], [0.0, 4.0]], dtype=torch.float64),
            "scale": torch.ones(3, 2, dtype=torch.float64)}
    t0, kappa, reg = 3.0, 0.7, 1e-6
    fit = pg.fit(model, iter([x[:300], x[300:]]), online=True, t0=t0, kappa=kappa, init=init, progress=False)
    center = init["weights"] @ init["loc"]

    def stats(p, b):
        s = model.em_statistics(p, b, center=center)
        return {k: v / s["n"] for k, v in s.items() if k not in ("log_lik", "n")}, s

    def m(s, n):
        return model.em_update(None, {**{k: v * n for k, v in s.items()}, "n": torch.tensor(n, dtype=torch.float64)},
                               reg_covar=reg, center=center)

    s1, raw1 = stats(init, x[:300])
    p1 = m(s1, 300.0)
    rho = (2 + t0) ** -kappa
    s2b, raw2 = stats(p1, x[300:])
    s2 = {k: (1 - rho) * s1[k] + rho * s2b[k] for k in s1}
    p2 = m(s2, 700.0)
    for k in p2:
        torch.testing.assert_close(fit.params[k], p2[k], rtol=1e-12, atol=1e-12)
    for k in s2:
        torch.testing.assert_close(fit.state["online"]["stats"][k], s2[k], rtol=1e-12, atol=1e-12)
    assert fit.history[0]["rho"] == pytest.approx(rho, abs=1e-15)
    # the recorded objective: the pass's per-row log-likelihood at the parameters each E-step saw
    assert fit.history[0]["log_likelihood"] == pytest.approx(float(raw1["log_lik"] + raw2["log_lik"]) / 700, abs=1e-12)


def test_categorical_pseudo_counts_weigh_against_the_rows_seen():
    """With n = all rows, the online M-step from one minibatch holding every row equals the
    batch EM step (pseudo-counts included)."""
    model, x = CategoricalMixture.example(0)
    init = {"weights": torch.tensor([0.4, 0.6], dtype=torch.float64),
            "probs": torch.softmax(torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0),
                                               dtype=torch.float64), -1)}
    online = pg.fit(model, iter([x]), online=True, init=init, progress=False)
    batch = pg.fit(model, x, steps=1, tol=None, init=init, progress=False)
    for k in batch.params:
        torch.testing.assert_close(online.params[k], batch.params[k], rtol=1e-12, atol=1e-12)


def test_update_continues_an_online_fit_toward_the_new_data():
    model = GaussianMixture(3, 2, "diag")
    old = _gmm_data(0, n=4000, covariance="diag")
    new = _gmm_data(1, n=4000, covariance="diag") + torch.tensor([1.5, -1.0], dtype=torch.float64)
    fit = pg.fit(model, _chunks(old, 1000), online=True, batch_size=200, seed=0, progress=False)
    t = fit.state["online"]["t"]
    loc0 = fit.params["loc"].clone()
    target = pg.fit(model, new, seed=0, progress=False, init=fit.params)
    up = fit.update(_chunks(new, 1000), seed=0, progress=False)
    assert up.state["online"]["t"] == t + 20 and up.state["online"]["n"] == 8000
    assert torch.equal(fit.params["loc"], loc0)  # a fit is a value: the old one is unchanged
    before = (loc0 - target.params["loc"]).norm()
    after = (up.params["loc"] - target.params["loc"]).norm()
    assert after < 0.5 * before, (before, after)
    # and its log-likelihood on the new data rises
    assert float(up.log_prob(new).mean()) > float(fit.log_prob(new).mean())
    # in-memory data and changed options
    up2 = fit.update(new, steps=2, batch_size=500, kappa=0.9, tol=None, seed=0, progress=False)
    assert up2.options["kappa"] == 0.9 and up2.state["online"]["t"] == t + 16 and len(up2.history) == 2
    with pytest.raises(ValueError, match="takes batch_size"):
        fit.update(new, reg_covar=1.0, progress=False)


def test_update_of_a_batch_fit_is_batch_em_on_the_new_data_from_its_parameters():
    model, seqs = _hmm_case("categorical", 0, n=60)
    fit = pg.fit(model, seqs[:30], seed=0, progress=False, tol=1e-6)
    up = fit.update(seqs[30:], steps=20, progress=False)
    ref = pg.fit(model, seqs[30:], steps=20, init=fit.params, tol=1e-6, progress=False)
    for k in ref.params:
        assert torch.equal(up.params[k], ref.params[k])
    assert up.options["tol"] == 1e-6
    with pytest.raises(ValueError, match="batch EM"):
        fit.update(seqs[30:], online=True, progress=False)
    with pytest.raises(ValueError, match="not a stream"):
        fit.update(iter([seqs[30:]]), progress=False)
    with pytest.raises(ValueError, match="cannot continue"):
        pg.fit(GaussianMixture(2, 2), _gmm_data(0)[:50], engine="exact",
               init={"weights": torch.tensor([0.5, 0.5]), "loc": torch.zeros(2, 2),
                     "scale_tril": torch.eye(2).expand(2, 2, 2)}).update(_gmm_data(0)[:50])


@pytest.mark.parametrize("bad, match", [
    ({"kappa": 0.5}, "kappa in"), ({"kappa": 1.2}, "kappa in"), ({"kappa": True}, "kappa must be a number"),
    ({"t0": -1.0}, "t0 >= 0"), ({"batch_size": 0}, "batch_size"), ({"batch_size": -3}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"), ({"online": "yes"}, "online must be"),
])
def test_bad_online_options_are_clear_errors(bad, match):
    x = _gmm_data(0, n=200)
    with pytest.raises(ValueError, match=match):
        pg.fit(GaussianMixture(3, 2), x, **{"online": True, "batch_size": 50, **bad}, progress=False)


def test_online_needs_an_online_method_and_its_options():
    x = _gmm_data(0, n=200)
    with pytest.raises(ValueError, match="has no online form.*em 'mixture'"):
        pg.fit(GaussianMixture(3, 2), x, engine="exact", online=True)
    with pytest.raises(ValueError, match="has no online form.*none for this model"):
        pg.fit(GaussianMixture(3, 2, bayesian=True), x, engine="meanfield", online=True)
    with pytest.raises(ValueError, match="needs batch_size"):
        pg.fit(GaussianMixture(3, 2), x, online=True, progress=False)
    with pytest.raises(ValueError, match="pass online=True"):
        pg.fit(GaussianMixture(3, 2), x, batch_size=50, progress=False)
    with pytest.raises(ValueError, match="no chunk"):
        pg.fit(GaussianMixture(3, 2), iter([]), online=True, progress=False)


def test_online_checkpoints_resume_bit_for_bit(tmp_path):
    """An in-memory online fit checkpoints after every pass; a run interrupted after its
    second pass resumes to the uninterrupted fit exactly. A stream cannot be checkpointed."""
    x = _gmm_data(0, n=3000)
    model = GaussianMixture(3, 2)
    opts = dict(online=True, batch_size=300, steps=4, tol=None, seed=5, progress=False)
    whole = pg.fit(model, x, **opts)
    path = tmp_path / "online.ckpt"

    class Stop(Exception):
        pass

    def die(record):
        if record["step"] == 2:
            raise Stop

    with pytest.raises(Stop):
        pg.fit(model, x, checkpoint=path, checkpoint_every=1, callback=die, **opts)
    assert checkpoints.read(path)["loop"]["step"] == 2
    resumed = pg.resume(path, x, progress=False)
    for k in whole.params:
        assert torch.equal(resumed.params[k], whole.params[k])
    assert resumed.history == whole.history
    for k, v in whole.state["online"]["stats"].items():
        assert torch.equal(resumed.state["online"]["stats"][k], v)
    with pytest.raises(ValueError, match="checkpoint of an online fit"):
        pg.fit(model, _chunks(x, 500), online=True, checkpoint=tmp_path / "s.ckpt", progress=False)


def test_online_fits_save_load_and_refuse_distributed(tmp_path):
    x = _gmm_data(0, n=1000)
    fit = pg.fit(GaussianMixture(3, 2), x, online=True, batch_size=250, steps=2, tol=None, seed=0, progress=False)
    fit.save(tmp_path / "f.pt")
    back = pg.load(tmp_path / "f.pt")
    assert torch.equal(back.log_prob(x), fit.log_prob(x))
    up1, up2 = fit.update(x[:500], seed=1, progress=False), back.update(x[:500], seed=1, progress=False)
    assert torch.equal(up1.params["loc"], up2.params["loc"])


def _online_on_a_rank():
    try:
        pg.fit(GaussianMixture(3, 2), _gmm_data(0, n=400), online=True, batch_size=100, progress=False)
    except ValueError as exc:
        return str(exc)
    return None


def test_online_is_refused_under_torch_distributed():
    """Stepwise updates are sequential: a data-parallel launch is refused on every rank."""
    from ranks import run_ranks
    for message in run_ranks(_online_on_a_rank, world=2):
        assert message is not None and "online EM runs on one process" in message
