"""The one driver of iterative methods (``probgen.loops.iterative``, issue 15), generated over
the registry: every method marked ``loop = "iterative"`` is reached by a case below, and for
each its restarts pick the best objective, ``tol=None`` / 0 run every step, the objective of
EM and CAVI never decreases, the budget running out warns (and converging does not), a
callback stops the fit, and ``fit.converged`` says which happened."""
import copy
import os
import tempfile
import warnings

import pytest
import torch

import probgen as pg
from probgen import registry
from probgen.loops import iterative
from probgen.loops.iterative import ConvergenceWarning, Loop, Update, restart_seeds
from test_contract import _extra_tol_examples

#: options that make a case's restarts differ (the declared start of a grammar ignores the seed)
CASE_OPTIONS = {"pcfg-em": {"start": "random"}}


def _method(model, engine):
    return registry.find_method(registry.as_declaration(model), engine)


def _all_cases():
    """Every built-in model x engine cell whose method runs on the driver, and the extra
    examples of test_contract (the Bayesian mixture, network EM with missing cells, the
    generic EM of a user program). A Bayesian network's complete rows are fitted in one
    closed-form step, so its cells (EM, and the bp / meanfield approximate EMs) are given
    the extra example's rows with missing cells instead."""
    extra = _extra_tol_examples()
    out = {}
    for name, cls in sorted(registry.models().items()):
        model, data = cls.example(seed=0)
        for engine in pg.compatible(model):
            if getattr(_method(model, engine), "loop", None) == iterative.LOOP:
                if name == "bn":
                    out[f"bn_missing-{engine}"] = (model, extra["bn_missing-em"][1], engine)
                else:
                    out[f"{name}-{engine}"] = (model, data, engine)
    return {**extra, **out}


CASES = _all_cases()


def _ids(pred=lambda method, engine: True):
    return [key for key, (m, _, e) in CASES.items() if pred(_method(m, e), e)]


def _takes(option):
    return lambda method, engine: option in registry.named_options(method.fit, ())


def _fit(key, **kw):
    model, data, engine = CASES[key]
    return pg.fit(model, data, engine=engine, progress=False, **{**CASE_OPTIONS.get(key, {}), **kw})


def _values(fit):
    return [r[fit.objective] for r in fit.history]


def test_every_iterative_method_is_covered():
    """A new method on the driver is reached by the tests below (or is given an example)."""
    marked = {type(m) for e in pg.engines() for m in registry.methods(e) if getattr(m, "loop", None) == iterative.LOOP}
    covered = {type(_method(m, e)) for m, _, e in CASES.values()}
    assert marked <= covered, f"iterative methods without a case: {marked - covered}"
    # the eight EM / CAVI loops of the issue and LDA's online VB
    names = {(m.engine, m.name) for e in pg.engines() for m in registry.methods(e) if type(m) in marked}
    assert names >= {("em", "mixture"), ("em", "baum-welch"), ("em", "categorical_mixture"),
                     ("em", "bayesian_network"), ("em", "inside-outside"), ("em", "program"),
                     ("meanfield", "lda-cavi"), ("meanfield", "mixture-cavi"), ("svi", "lda-online")}


def test_every_em_method_takes_restarts_tol_and_callback():
    for key in _ids(lambda m, e: e in ("em", "meanfield")):
        model, _, engine = CASES[key]
        assert {"n_init", "tol", "callback"} <= set(_method(model, engine).fit_options(model)), key


@pytest.mark.parametrize("key", _ids(_takes("n_init")))
def test_restarts_pick_the_best_objective(key):
    """n_init=3 keeps the restart with the highest final objective; restart r is the fit a
    single start from the r-th derived seed gives (so the comparison is with those fits)."""
    steps = 4  # few steps: the restarts have not all reached the same optimum yet
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        best = _fit(key, steps=steps, seed=0, n_init=3)
        singles = [_fit(key, steps=steps, seed=s) for s in restart_seeds(0, 3)]
    finals = [_values(f)[-1] for f in singles]
    assert _values(best)[-1] >= max(finals)
    r = best.state["best_init"]
    assert r == finals.index(max(finals))  # the first of the best, on a tie
    assert best.history == singles[r].history
    for k, v in best.params.items():
        assert torch.equal(v, singles[r].params[k]), k


def test_restart_seeds():
    seeds = restart_seeds(7, 4)
    assert seeds[0] == 7 and len(set(seeds)) == 4 and seeds == restart_seeds(7, 4)
    assert restart_seeds(7, 1) == [7] and restart_seeds(None, 1) == [None]
    assert restart_seeds(8, 4)[1:] != seeds[1:]


@pytest.mark.parametrize("key", _ids(_takes("tol")))
@pytest.mark.parametrize("tol", [None, 0.0])
def test_tol_none_or_zero_runs_every_step_without_warning(key, tol):
    steps = 6
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fit = _fit(key, steps=steps, seed=0, tol=tol)
    assert [r["step"] for r in fit.history] == list(range(steps))
    assert fit.converged is False


#: the M-step regularisers (a ridge on the variances) move the M-step off the exact maximiser
#: of the expected complete-data log-likelihood, so EM's monotonicity theorem holds without them
EXACT_STEPS = {"mixture": {"reg_covar": 0.0}, "mixture-cavi": {"reg_covar": 0.0}, "baum-welch": {"min_covar": 0.0}}


@pytest.mark.parametrize("key", _ids(lambda m, e: e in ("em", "meanfield")))
def test_objective_never_decreases(key):
    """EM (Dempster et al. 1977, Thm. 1) and CAVI (each update maximises the ELBO in its block
    of coordinates; Bishop 2006 §10.1.1) never lower their objective. Slack: the per-example
    objective is a float64 sum of N terms (here N <= 200) divided by N, and a float64 sum of N
    terms is exact to N·eps·Σ|terms| (Higham 2002, §4.2), i.e. to N·eps ≈ 5e-14 relative; so
    1e-12 · |value| covers rounding and nothing else."""
    model, data, engine = CASES[key]
    options = EXACT_STEPS.get(_method(model, engine).name, {})
    fit = _fit(key, steps=30, seed=0, tol=None, **options)
    v = _values(fit)
    drops = [(t, a, b) for t, (a, b) in enumerate(zip(v, v[1:])) if b < a - 1e-12 * abs(a)]
    assert not drops, f"the objective fell: {drops}"
    assert v[-1] >= v[0]


@pytest.mark.parametrize("key", _ids(_takes("tol")))
def test_convergence_warning_when_the_budget_runs_out(key):
    """One step cannot meet tol (it needs two values to compare): the budget runs out first."""
    with pytest.warns(ConvergenceWarning, match="ran all 1 steps without reaching tol"):
        fit = _fit(key, steps=1, seed=0)
    assert fit.converged is False and fit.state["converged"] is False


@pytest.mark.parametrize("key", _ids(_takes("tol")))
def test_converged_stops_at_the_first_step_that_meets_tol(key):
    tol = 1e-2
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # converging does not warn
        fit = _fit(key, steps=200, seed=0, tol=tol)
    assert fit.converged is True and len(fit.history) < 200
    v = _values(fit)
    change = [abs(b - a) / abs(a) for a, b in zip(v, v[1:])]
    assert change[-1] < tol and all(c >= tol for c in change[:-1])


@pytest.mark.parametrize("key", list(CASES))
def test_callback_stops_early(key):
    seen = []

    def stop_at_1(record):
        seen.append(dict(record))
        return record["step"] == 1

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # a callback's stop does not warn
        fit = _fit(key, steps=50, seed=0, callback=stop_at_1)
    assert [r["step"] for r in fit.history] == [0, 1] and seen == fit.history
    assert fit.converged is False


@pytest.mark.parametrize("key", _ids(_takes("n_init")))
def test_callback_stop_ends_every_restart(key):
    calls = []
    fit = _fit(key, steps=50, seed=0, n_init=3, callback=lambda r: calls.append(r["step"]) or len(calls) == 4)
    # the fourth call, counted over the whole fit (in whichever restart it falls), ends it: no
    # step and no restart after it; the best restart so far wins, and it has not converged if
    # it is the stopped one (an earlier restart that converged may win: fit.converged is its)
    assert len(calls) == 4
    stopped = calls.count(0) - 1
    assert fit.state["best_init"] <= stopped
    if fit.state["best_init"] == stopped:
        assert fit.converged is False and len(fit.history) == calls[::-1].index(0) + 1


def test_converged_is_none_without_an_iterative_driver():
    model, data = registry.models()["bn"].example(seed=0)
    fit = pg.fit(model, data, engine="em", progress=False)  # complete data: closed form
    assert fit.state["closed_form"] and fit.converged is None
    model, data = registry.models()["gmm"].example(seed=0)
    init = model.init_params(data, seed=0)
    assert pg.fit(model, data, engine="exact", init=init, progress=False).converged is None


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_n_init_is_a_value_error(bad):
    with pytest.raises(ValueError, match="n_init must be a positive integer"):
        _fit("gmm-em", steps=2, n_init=bad)


def test_bad_callback_is_a_value_error():
    with pytest.raises(ValueError, match="callback must be a function"):
        _fit("hmm-em", steps=2, callback=3)


def test_converged_is_saved():
    fit = _fit("gmm-em", seed=0)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f.pt")
        fit.save(path)
        assert pg.load(path).converged is fit.converged is True


# ---- the driver itself, on a toy fixed-point iteration ---------------------------------------

class _Cosine:
    """x <- cos(x) from a seeded start; objective −1 − |cos x − x| rises to −1 at the fixed point."""

    def start(self, seed):
        return torch.rand((), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))

    def step(self, x):
        new = torch.cos(x)
        return Update(new, -1.0 - float(abs(torch.cos(new) - new)), {"x": float(new)})


def test_loop_continues_from_a_saved_state():
    """The seam for checkpoints: a copy of the Loop taken after any step, passed as start=,
    ends exactly where the uninterrupted run ends (restarts, best so far and history)."""
    kw = dict(objective="score", steps=25, tol=None, seed=3, n_init=3, progress=False)
    full = iterative.run(_Cosine(), **kw)
    saved = {}

    def keep(loop):
        saved[(loop.restart, loop.step)] = copy.deepcopy(loop)

    iterative.run(_Cosine(), on_step=keep, **kw)
    assert len(saved) == 3 * 25
    for at in [(0, 1), (0, 25), (1, 7), (2, 24)]:
        resumed = iterative.run(_Cosine(), start=copy.deepcopy(saved[at]), **kw)
        assert resumed.history == full.history and resumed.best_init == full.best_init
        assert torch.equal(resumed.state, full.state)


@pytest.mark.parametrize("stop", [False, True])
def test_loop_continues_from_a_finished_restart(stop):
    """A Loop saved at the step that met tol (or that a callback stopped) resumes without
    another step of that restart (and without calling the callback again)."""
    calls = []

    def callback(record):
        calls.append(record["step"])
        return stop and len(calls) == 30

    kw = dict(objective="score", steps=60, tol=1e-6, seed=3, n_init=3, progress=False)
    full = iterative.run(_Cosine(), callback=callback, **kw)
    assert full.stopped is stop and (stop or full.converged)
    saved = []
    iterative.run(_Cosine(), on_step=lambda loop: saved.append(copy.deepcopy(loop)), **kw)
    finished = [loop for loop in saved if loop.converged] if not stop else []
    if stop:
        calls.clear()
        iterative.run(_Cosine(), callback=callback, on_step=lambda loop: saved.append(copy.deepcopy(loop)), **kw)
        finished = [loop for loop in saved if loop.stopped]
    assert finished
    for loop in finished:
        n = len(calls)
        resumed = iterative.run(_Cosine(), start=copy.deepcopy(loop), callback=callback, **kw)
        if loop.restart == len(loop.seeds) - 1 or loop.stopped:
            assert len(calls) == n  # nothing left to run
        assert resumed.history == full.history and resumed.best_init == full.best_init
        assert resumed.converged == full.converged


def test_loop_records_and_warns():
    with pytest.warns(ConvergenceWarning, match=r"toy: the best of 2 restarts ran all 3 steps"):
        out = iterative.run(_Cosine(), objective="score", steps=3, tol=1e-12, seed=0, n_init=2, progress=False,
                            desc="toy")
    assert [set(r) for r in out.history] == [{"step", "score", "x"}] * 3
    assert out.fit_state() == {"converged": False, "best_init": out.best_init}
    fresh = Loop(seeds=[0])
    assert fresh.step == 0 and fresh.state is None and fresh.best is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        out = iterative.run(_Cosine(), objective="score", steps=0, tol=1e-3, seed=0, progress=False)
    assert out.history == [] and out.converged is False
