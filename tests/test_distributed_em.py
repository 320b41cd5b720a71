"""Data-parallel EM and CAVI (issue 16 item 2): two local gloo ranks against the ordinary
one-process fit, from the same start, in float64.

What is compared, and why these tolerances: each rank sums its own rows' sufficient
statistics and the sums are added once across ranks, so the 2-rank fit and the 1-process fit
differ only in the order of floating-point additions (and, for the Gaussian mixture, in the
centre of its moments) — round-off of ~1e-16 relative per iteration, which EM's contraction
keeps from growing: 1e-10 relative (the issue's target) leaves a wide margin above it and is
far below any algorithmic difference (a missed row or a wrong normalisation changes the
parameters at the 1e-3 level). The ranks run the same M-step on the same summed bits, so
their fits are compared bit for bit.
"""
from __future__ import annotations

import io
import math

import pytest
import torch

import probgen as pg
from ranks import run_ranks

RTOL = 1e-10


# ---- the cases: a declaration, its data, the fit's arguments (the same in every process) ------

def _gmm(covariance: str):
    from probgen.models import GaussianMixture
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [4.0, 1.0], [-3.0, 3.0]], dtype=torch.float64)
    x = (centres[torch.randint(0, 3, (601,), generator=g)]
         + torch.randn(601, 2, dtype=torch.float64, generator=g))
    model = GaussianMixture(3, 2, covariance=covariance)
    init = model.init_params(x, seed=0)
    return model, x, dict(engine="em", steps=15, tol=None, init=init)


def _hmm(emission: str, covariance: str = "diag", gaps: bool = False):
    from probgen.models import HMM
    opts = {"n_symbols": 4} if emission == "categorical" else {"dim": 2, "covariance": covariance} \
        if emission == "gaussian" else {}
    model = HMM(3, emission, **opts)
    truth = model.init_params(None, seed=5) if emission != "gaussian" else None
    if emission == "gaussian":
        truth = {"initial": torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
                 "transition": torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]],
                                            dtype=torch.float64),
                 "loc": torch.tensor([[0.0, 0.0], [3.0, 1.0], [-2.0, 2.0]], dtype=torch.float64),
                 "scale": torch.ones(3, 2, dtype=torch.float64)}
        if covariance == "full":
            truth["scale_tril"] = torch.eye(2, dtype=torch.float64).expand(3, 2, 2).clone()
            del truth["scale"]
    x = model.sample(truth, 9, seed=1, T=30)
    data = [x[i, :30 - 2 * i] for i in range(9)]  # sequences of different lengths
    if gaps:  # 20% of the cells missing (whole steps or single dimensions), none entirely
        g = torch.Generator().manual_seed(2)
        data = [s.to(torch.float64).masked_fill(torch.rand(s.shape, generator=g) < 0.2, float("nan")) for s in data]
        for s in data:
            s[0] = x[0, 0]  # an observed first step
    init = {k: v for k, v in model.init_params(data, seed=0).items()}
    return model, data, dict(engine="em", steps=10, tol=None, init=init)


def _catmix():
    from probgen.models import CategoricalMixture
    model = CategoricalMixture(3, n_values=4)
    truth = model.init_params(torch.tensor([[0, 1, 2, 3, 0]]), seed=3)
    x = model.sample(truth, 301, seed=2)
    init = model.init_params(x, seed=0)
    return model, x, dict(engine="em", steps=10, tol=None, init=init)


def _network(complete: bool = False, engine: str = "em"):
    from probgen.models import BayesianNetwork
    bn, x = BayesianNetwork.example(seed=0)
    x = x.clone()
    if not complete:
        g = torch.Generator().manual_seed(4)
        x[torch.rand(x.shape, generator=g) < 0.2] = -1  # 20% missing cells
    init = bn.check_params(None) if not complete else None
    kw = dict(engine=engine, steps=8, tol=None, pseudo_count=0.5)
    if init is not None:  # a perturbed start: EM from uniform tables would stay symmetric in places
        g = torch.Generator().manual_seed(6)
        init = {k: v * (1 + torch.rand(v.shape, generator=g, dtype=torch.float64)) for k, v in init.items()}
        kw["init"] = {k: v / v.sum(-1, keepdim=True) for k, v in init.items()}
    return bn, x, kw


def _pcfg(treebank: bool = False):
    from probgen.models import PCFG
    g, _ = PCFG.example()
    trees = g.sample(None, 24, seed=3, max_length=8)
    data = trees if treebank else [t.leaves() for t in trees]
    return g, data, dict(engine="em", steps=6, tol=None, start="random", seed=2) if not treebank \
        else dict(engine="em")


def _lda(learn: bool = False):
    from probgen.models import LDA
    from probgen.models.lda import synthetic_corpus
    docs, _ = synthetic_corpus(k=3, vocab_size=15, n_docs=41, length=20, seed=1)
    model = LDA(3, 15)
    # seed_docs=0: the Gamma-noise start, which depends on the seed only (not on rank 0's
    # documents). e_step_tol=0: every document runs max_e_step sweeps. With a positive
    # e_step_tol a converged document goes on sweeping until a quarter of its batch has
    # converged (probgen.ops.lda.e_step), so its γ depends on the other documents of its
    # rank at the e_step_tol level — the documented limit of LDA CAVI's equality.
    return model, docs, dict(engine="meanfield", steps=6, tol=None, seed=3, seed_docs=0,
                             learn_alpha=learn, learn_eta=learn, e_step_tol=0.0, max_e_step=25)


def _lda_online(init: bool = False, missing: bool = False):
    """Online VB (issue 16): from the same start and global minibatch order (the same seed),
    each rank's part of the global minibatch summed in one all_reduce per update. ``init``:
    a start from given topics (λ's pseudo-counts use every rank's tokens); ``missing``: 20%
    of the counts NaN."""
    from probgen.models import LDA
    from probgen.models.lda import synthetic_corpus
    from probgen.corpus import Corpus
    docs, topics = synthetic_corpus(k=3, vocab_size=15, n_docs=41, length=20, seed=2)
    data = docs
    if missing:
        x = Corpus.build(docs, 15).dense()
        data = x.masked_fill(torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.2, float("nan"))
    # the default start, probed on a subsample (min(D, 4 · batch_size) = 32 of the 41
    # documents, drawn over the global numbering; each rank probes its part of it),
    # seed_docs=0: its probes from Gamma noise, which depends on the seed only (not on rank 0's
    # documents); the default steps, 4 passes of ceil(41 / 8) = 6 global minibatches (a rank
    # that counted its own 20 or 21 documents would take 12)
    kw = dict(engine="svi", batch_size=8, seed=4, e_step_tol=0.0, max_e_step=25, seed_docs=0)
    if init:
        kw["init"] = {"topics": topics + 0.05}
    return LDA(3, 15), data, kw


def _bayes_gmm():
    from probgen.models import GaussianMixture
    _, x, kw = _gmm("full")
    model = GaussianMixture(3, 2, covariance="full", bayesian=True)  # data-derived prior defaults
    resp = GaussianMixture(3, 2).responsibilities(kw["init"], x)
    return model, x, dict(engine="meanfield", steps=10, tol=None, init_resp=resp)


def coin_mixture(x=None):
    """Generic EM's closed forms: a mixing table and Bernoulli probabilities indexed by z."""
    import pyro
    import pyro.distributions as dist
    from pyro.distributions import constraints
    p = pyro.param("p", torch.tensor([0.3, 0.7], dtype=torch.float64), constraint=constraints.unit_interval)
    w = pyro.param("w", torch.tensor([0.5, 0.5], dtype=torch.float64), constraint=constraints.simplex)
    with pyro.plate("N", 30 if x is None else len(x)):
        z = pyro.sample("z", dist.Categorical(w))
        pyro.sample("x", dist.Bernoulli(p[z]), obs=x)


def normal_mixture(x=None):
    """Closed-form locations, then scales about them (the second CM-step: a second sum)."""
    import pyro
    import pyro.distributions as dist
    from pyro.distributions import constraints
    w = pyro.param("w", torch.tensor([0.4, 0.6], dtype=torch.float64), constraint=constraints.simplex)
    loc = pyro.param("loc", torch.tensor([-1.0, 1.0], dtype=torch.float64))
    scale = pyro.param("scale", torch.tensor([1.0, 2.0], dtype=torch.float64), constraint=constraints.positive)
    with pyro.plate("N", len(x)):
        z = pyro.sample("z", dist.Categorical(w))
        pyro.sample("x", dist.Normal(loc[z], scale[z]), obs=x)


def logit_mixture(x=None):
    """A parameter no closed form recognises (Bernoulli logits): L-BFGS on the whole data's Q."""
    import pyro
    import pyro.distributions as dist
    from pyro.distributions import constraints
    w = pyro.param("w", torch.tensor([0.5, 0.5], dtype=torch.float64), constraint=constraints.simplex)
    a = pyro.param("a", torch.tensor([-1.0, 0.5], dtype=torch.float64))
    with pyro.plate("N", len(x)):
        z = pyro.sample("z", dist.Categorical(w))
        pyro.sample("x", dist.Bernoulli(logits=2.0 * a[z] + 0.1), obs=x)


def _program(program):
    g = torch.Generator().manual_seed(0)
    if program is normal_mixture:
        x = torch.where(torch.rand(101, generator=g) < 0.3, -2.0, 3.0).double() + torch.randn(101, generator=g).double()
    else:
        x = (torch.rand(101, generator=g) < 0.6).double()
    return program, x, dict(engine="em", steps=6, tol=None)


CASES = {
    "program_coin": lambda: _program(coin_mixture),
    "program_normal": lambda: _program(normal_mixture),
    "program_numeric": lambda: _program(logit_mixture),
    "bayes_gmm": _bayes_gmm,
    "lda": _lda,
    "lda_learn": lambda: _lda(learn=True),
    "lda_missing": lambda: (_lda()[0], _lda_online(missing=True)[1], _lda()[2]),
    "lda_online": _lda_online,
    "lda_online_init": lambda: _lda_online(init=True),
    "lda_online_missing": lambda: _lda_online(missing=True),
    "pcfg": _pcfg,
    "pcfg_treebank": lambda: _pcfg(treebank=True),
    "network_missing": _network,
    "network_complete": lambda: _network(complete=True),
    "network_bp": lambda: _network(engine="bp"),
    "categorical_mixture": _catmix,
    "hmm_categorical": lambda: _hmm("categorical"),
    "hmm_poisson": lambda: _hmm("poisson"),
    "hmm_gaussian": lambda: _hmm("gaussian"),
    "hmm_gaussian_full": lambda: _hmm("gaussian", "full"),
    "hmm_categorical_gaps": lambda: _hmm("categorical", gaps=True),
    "hmm_gaussian_gaps": lambda: _hmm("gaussian", gaps=True),
    "hmm_gaussian_full_gaps": lambda: _hmm("gaussian", "full", gaps=True),
    "gmm_full": lambda: _gmm("full"),
    "gmm_diag": lambda: _gmm("diag"),
    "gmm_spherical": lambda: _gmm("spherical"),
}


def _rows(data, ctx_rank: int, world: int):
    """This rank's contiguous block (what pg.distributed.Shard is given)."""
    from probgen.data import n_items, take
    n = n_items(data)
    q, r = divmod(n, world)
    start = ctx_rank * q + min(ctx_rank, r)
    return take(data, torch.arange(start, start + q + (ctx_rank < r)))


def _plain(fit) -> dict:
    return {"params": {k: v.detach().clone() for k, v in fit.params.items()},
            "history": fit.history, "state": {k: v for k, v in fit.state.items()
                                              if isinstance(v, (bool, int, float, type(None)))}}


def _fit(name: str, shard: bool = False, **extra) -> dict:
    model, data, kw = CASES[name]()
    kw = {**kw, **extra}
    if shard:
        import torch.distributed as dist  # the group the first fit of the spawn initialised
        decl = pg.registry.as_declaration(model)
        data = pg.distributed.Shard(_rows(decl.check_data(data), dist.get_rank(), dist.get_world_size()))
    return _plain(pg.fit(model, data, progress=False, seed=kw.pop("seed", 0), **kw))


def _on_ranks(names: list[str]) -> bytes:
    """Every case, whole data (each rank takes its block) and as a Shard (of half the rows:
    asserted, so that a Shard test cannot pass on the whole data) — as bytes: tensors
    put on a multiprocessing queue travel through shared memory, which a finished rank frees."""
    import torch.distributed as dist
    out = {name: {"whole": _fit(name)} for name in names}
    assert dist.is_initialized() and dist.get_world_size() == 2
    for name in names:
        out[name]["shard"] = _fit(name, shard=True)
    return _bytes(out)


def _bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _unbytes(raw: bytes):
    return torch.load(io.BytesIO(raw), weights_only=False)


def _close(a, b, what: str) -> None:
    if isinstance(a, torch.Tensor):
        a, b = a.double(), b.double()
        scale = max(float(b.abs().max()), 1e-300)
        err = float((a - b).abs().max()) / scale
        assert err <= RTOL, f"{what}: relative difference {err:.3g}"
    elif isinstance(a, float):
        assert math.isclose(a, b, rel_tol=RTOL, abs_tol=0.0), f"{what}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{what}: {a!r} vs {b!r}"


def _same_as_local(dist_fit: dict, local: dict, label: str) -> None:
    assert set(dist_fit["params"]) == set(local["params"])
    for k in local["params"]:
        _close(dist_fit["params"][k], local["params"][k], f"{label} param {k}")
    assert len(dist_fit["history"]) == len(local["history"]), label
    for i, (a, b) in enumerate(zip(dist_fit["history"], local["history"])):
        assert set(a) == set(b), label
        for key in b:
            _close(a[key], b[key], f"{label} history[{i}][{key!r}]")
    assert dist_fit["state"] == local["state"], label


def _identical(a: dict, b: dict, label: str) -> None:
    for k in a["params"]:
        assert torch.equal(a["params"][k], b["params"][k]), f"{label}: ranks differ in {k}"
    assert a["history"] == b["history"], f"{label}: ranks differ in the history"
    assert a["state"] == b["state"], label


def _all_on_ranks() -> bytes:
    """One spawn for every case and the restarts (spawning costs seconds under load)."""
    return _bytes({"cases": _unbytes(_on_ranks(list(CASES))), "restarts": _unbytes(_restarts())})


@pytest.fixture(scope="module")
def spawned() -> list[dict]:
    return [_unbytes(r) for r in run_ranks(_all_on_ranks, timeout=600)]


def _check(spawned: list[dict], names: list[str]) -> None:
    for name in names:
        local = _fit(name)  # this process has no torchrun environment: the ordinary local fit
        for form in ("whole", "shard"):
            label = f"{name} ({form})"
            _identical(spawned[0]["cases"][name][form], spawned[1]["cases"][name][form], label)
            _same_as_local(spawned[0]["cases"][name][form], local, label)


def test_gaussian_mixture_em_two_ranks_equal_one_process(spawned):
    _check(spawned, ["gmm_full", "gmm_diag", "gmm_spherical"])


def test_baum_welch_two_ranks_equal_one_process(spawned):
    _check(spawned, ["hmm_categorical", "hmm_poisson", "hmm_gaussian", "hmm_gaussian_full"])


def test_baum_welch_with_missing_observations_two_ranks_equal_one_process(spawned):
    """The missing-aware statistics (online EM's) summed over ranks: batch EM's fit of the gaps."""
    _check(spawned, ["hmm_categorical_gaps", "hmm_gaussian_gaps", "hmm_gaussian_full_gaps"])


def test_categorical_mixture_em_two_ranks_equal_one_process(spawned):
    _check(spawned, ["categorical_mixture"])


def test_bayesian_network_em_two_ranks_equal_one_process(spawned):
    _check(spawned, ["network_missing", "network_complete", "network_bp"])


def test_inside_outside_two_ranks_equal_one_process(spawned):
    _check(spawned, ["pcfg", "pcfg_treebank"])


def test_lda_cavi_two_ranks_equal_one_process(spawned):
    _check(spawned, ["lda", "lda_learn", "lda_missing"])


def test_online_lda_two_ranks_equal_one_process(spawned):
    _check(spawned, ["lda_online", "lda_online_init", "lda_online_missing"])


def test_bayesian_mixture_cavi_two_ranks_equal_one_process(spawned):
    _check(spawned, ["bayes_gmm"])


def test_generic_program_em_two_ranks_equal_one_process(spawned):
    """Closed-form tables and Bernoulli probabilities (one sum), locations then scales (a
    second sum, of the scale statistics at the new locations) and L-BFGS on Q (Q and its
    gradient summed at every evaluation)."""
    _check(spawned, ["program_coin", "program_normal", "program_numeric"])


def _restart_case():
    from probgen.models import GaussianMixture
    _, x, _ = _gmm("full")
    # 4 components on 3 clusters from random responsibilities, 4 steps: restarts that end apart
    # (1e-4 per example), so which one wins is not decided by round-off
    return GaussianMixture(4, 2), x, dict(engine="em", steps=4, tol=None, init_method="random")


def _restarts() -> bytes:
    model, x, kw = _restart_case()
    return _bytes(_plain(pg.fit(model, x, n_init=3, seed=1, progress=False, **kw)))


def test_restarts_run_distributed(spawned):
    """``n_init`` restarts under 2 ranks: each restart starts from rank 0's rows (random
    responsibilities of its block, broadcast), so the reference is three local fits from those starts on the whole
    data, the best final log-likelihood winning."""
    from probgen.loops.iterative import restart_seeds
    ranks = [r["restarts"] for r in spawned]
    _identical(ranks[0], ranks[1], "n_init=3")
    model, x, kw = _restart_case()
    block0 = x[:(len(x) + 1) // 2]  # rank 0's rows (probgen.distributed.Context.block)
    local = [_plain(pg.fit(model, x, progress=False, seed=1, **kw,
                           init=model.init_params(block0, seed=s, method="random")))
             for s in restart_seeds(1, 3)]
    assert len({f["history"][-1]["log_likelihood"] for f in local}) == 3
    finals = [f["history"][-1]["log_likelihood"] for f in local]
    best = max(range(3), key=lambda i: (finals[i], -i))
    assert ranks[0]["state"]["best_init"] == best
    expected = dict(local[best], state={**local[best]["state"], "best_init": best})
    _same_as_local(ranks[0], expected, "n_init=3")


def _vb_hmm():
    """A Bayesian HMM's variational Bayes, which does not run data-parallel (no statistics / update split)."""
    from probgen.models import HMM
    model = HMM(2, "categorical", n_symbols=3, bayesian=True)
    x = torch.randint(0, 3, (4, 12), generator=torch.Generator().manual_seed(0))
    return pg.fit(model, x, engine="meanfield", steps=3, progress=False)


def test_method_without_the_seam_says_distributed_false():
    out = run_ranks(_vb_hmm, errors=True)
    for value, err in out:
        assert value is None and err is not None
        assert err.startswith("ValueError") and "distributed=False" in err, err


def global_latent(x=None):
    """A program whose latent is shared by every row: its log-evidence is no sum over rows."""
    import pyro
    import pyro.distributions as dist
    from pyro.distributions import constraints
    p = pyro.param("p", torch.tensor([0.3, 0.7], dtype=torch.float64), constraint=constraints.unit_interval)
    z = pyro.sample("z", dist.Categorical(torch.tensor([0.5, 0.5], dtype=torch.float64)))
    with pyro.plate("N", len(x)):
        pyro.sample("x", dist.Bernoulli(p[z]), obs=x)


def _program_refusals():
    x = (torch.rand(40, generator=torch.Generator().manual_seed(0)) < 0.6).double()
    out = []
    for program in (global_latent, no_plate):
        try:
            pg.fit(program, x, engine="em", steps=2, progress=False)
            out.append(None)
        except ValueError as exc:
            out.append(str(exc))
    return out


def no_plate(x=None):
    """A program that does not declare its examples (no plate of size len(x))."""
    import pyro
    import pyro.distributions as dist
    from pyro.distributions import constraints
    p = pyro.param("p", torch.tensor(0.3, dtype=torch.float64), constraint=constraints.unit_interval)
    z = pyro.sample("z", dist.Categorical(torch.tensor([0.5, 0.5], dtype=torch.float64)))
    pyro.sample("x", dist.Bernoulli(p * (1 + z) / 2).expand([len(x)]).to_event(1), obs=x)


def test_generic_em_refuses_programs_whose_rows_are_not_independent():
    out = run_ranks(_program_refusals)
    for messages in out:
        assert "outside it" in messages[0] and "distributed=False" in messages[0], messages[0]
        assert "declares its examples" in messages[1] and "distributed=False" in messages[1], messages[1]
