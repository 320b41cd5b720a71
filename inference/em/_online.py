"""Online (stepwise) EM for the EM methods whose E-step is a sum over independent items —
rows of a Gaussian or categorical mixture, sequences of an HMM (Cappé & Moulines 2009;
Liang & Klein 2009, "Online EM for unsupervised models").

A running average ``s`` of the per-item E-step statistics replaces the batch sum: after the
E-step of minibatch ``t`` (``t`` = 1, 2, … over the whole fit) at the current parameters,

    s ← (1 − ρ_t) s + ρ_t · (statistics of the minibatch) / (its number of items),
    ρ_t = (t + t0)^−κ  (`probgen.loops.iterative.step_size`; ρ_1 = 1: the first
          minibatch's statistics start ``s``, whatever ``t0``),

and the M-step maps ``n · s`` to new parameters, ``n`` the number of distinct items seen so
far (the rows of an in-memory data set; of a stream, those of its first pass so far) — the
scale only matters for a prior's pseudo-counts (the categorical mixture's), which then weigh
as against the data seen. The statistics are the data-parallel EM's (``em_statistics`` /
``statistics`` and their M-steps): the online step is the same E-step, weighted.

One driver step (`probgen.loops.iterative.run`) is **one pass over the data**, so
``steps`` counts passes and ``tol``, ``n_init``, ``callback``, the history and checkpoints
mean what they mean for every iterative method — but ``tol`` only when passed: the per-pass
objective is a running estimate that wanders by about the batch defaults, so by default an
online fit runs every pass (`BatchTol`). The data are

* an in-memory data set: each pass visits it in minibatches of ``batch_size`` items from a
  fresh permutation (drawn with ``seed``);
* an iterator of chunks (a generator): chunks are checked and split into minibatches of at
  most ``batch_size`` items (``None``: one minibatch per chunk) one at a time, never held
  together (out-of-core); it can be consumed once, so one pass (``steps=1``) and one restart;
* a callable returning a fresh iterator of chunks: one call per pass.

The history records ``log_likelihood``: the per-item mean, over the pass, of each
minibatch's log-likelihood at the parameters its E-step saw (a running estimate);
``updates``: minibatch updates so far (``t``); ``rho``: the pass's last ρ_t.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import torch

from probgen.data import is_stream, n_items, take
from probgen.fit import Fit
from probgen.loops.iterative import Loop, Update, check_step_size, run, step_size
from probgen.random import generator

#: the options every online EM method takes (on top of its batch options)
OPTIONS = ("online", "batch_size", "t0", "kappa")
#: the sums of a statistics dict that are not averaged (its log-likelihood and item count)
_TOTALS = ("log_lik", "n")


class Hooks:
    """What a method supplies for online EM: ``check(chunk)`` -> checked data (refusing what
    its statistics do not carry), ``start(data, seed)`` -> params (from an in-memory data set
    or a stream's first chunk), ``fixed(params)`` -> the fit's constant extras (the Gaussian
    mixture's centre of moments), ``statistics(params, batch, fixed)`` -> dict of sums with
    ``log_lik`` and ``n``, ``update(params, stats, fixed)`` -> params (the M-step)."""

    def __init__(self, check: Callable, start: Callable, statistics: Callable, update: Callable,
                 fixed: Callable | None = None):
        self.check, self.start, self.statistics, self.update = check, start, statistics, update
        self.fixed = fixed or (lambda params: {})


class BatchTol(float):
    """The default ``tol`` of a method with an online form: a float equal to its batch default,
    marked so that an online fit can tell it from a ``tol`` the caller passed. An online fit's
    per-pass objective is a running estimate that wanders between passes by about the batch
    defaults (1e-5 relative on a GMM pass), so by default it runs every pass (``tol=None``)."""


def resolve_tol(tol: Any, online: Any) -> Any:
    """``tol`` as the fit uses it: the batch default (`BatchTol`) as a plain float for a
    batch fit, ``None`` for an online one; a ``tol`` the caller passed as given."""
    if isinstance(tol, BatchTol):
        return None if online is True else float(tol)
    return tol


def check_options(online: Any, batch_size: Any, t0: Any, kappa: Any, labels: Any = None) -> None:
    """The online options, checked (also when ``online`` is False: a ``batch_size`` without
    ``online=True`` would be silently ignored)."""
    if not isinstance(online, bool):
        raise ValueError(f"online must be True or False, got {online!r}")
    if not online:
        if batch_size is not None:
            raise ValueError("batch_size is an option of online EM: pass online=True with it")
        return
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer (or None: one minibatch per chunk), "
                         f"got {batch_size!r}")
    check_step_size(t0, kappa)
    if labels is not None:
        raise ValueError("online EM takes no labels (a stream's chunks carry no labels): fit with "
                         "online=False, or without labels")


class Stream:
    """The data of an online fit (see the module docstring): `first` is what the start
    sees, `minibatches` one pass."""

    def __init__(self, data: Any, check: Callable, batch_size: int | None):
        self.batch_size = batch_size
        if is_stream(data) and not isinstance(data, Iterator):
            self.kind, self.factory = "callable", data
        elif is_stream(data):
            self.kind, self.iterator = "iterator", data
        else:
            self.kind, self.data = "memory", check(data)
            if batch_size is None:
                raise ValueError("online EM on an in-memory data set needs batch_size (the items per "
                                 "minibatch); batch_size=None (one minibatch per chunk) is for streams")
        self.check = check
        self._head: Any = None      # a stream's first chunk, read by first(), used by pass 0
        self._open: Iterator | None = None
        self._used = False

    @property
    def once(self) -> bool:
        """A one-shot iterator: one pass, one restart."""
        return self.kind == "iterator"

    def n(self) -> float:
        """Items of an in-memory data set (0 for a stream: counted as its first pass goes)."""
        return float(n_items(self.data)) if self.kind == "memory" else 0.0

    def first(self) -> Any:
        """An in-memory data set, or a stream's first chunk (checked; kept for pass 0)."""
        if self.kind == "memory":
            return self.data
        if self._head is None:
            self._open = iter(self.factory()) if self.kind == "callable" else self.iterator
            self._head = self._next(self._open)
            if self._head is None:
                raise ValueError("the data stream of an online fit yielded no chunk")
        return self._head

    def _next(self, it: Iterator) -> Any:
        for chunk in it:  # the next non-empty chunk, checked
            chunk = self.check(chunk)
            if n_items(chunk) > 0:
                return chunk
        return None

    def minibatches(self, g: torch.Generator) -> Iterator[Any]:
        """One pass: minibatches of at most ``batch_size`` items."""
        if self.kind == "memory":
            for idx in torch.split(torch.randperm(n_items(self.data), generator=g, device=g.device),
                                   self.batch_size):
                yield take(self.data, idx.sort().values)
            return
        if self._head is not None:  # pass 0: the chunk the start read, then the rest
            head, it, self._head, self._open = self._head, self._open, None, None
        elif self.kind == "callable":
            head, it = None, iter(self.factory())
        elif not self._used:  # a continued fit (Fit.update): no start read the head
            head, it = None, self.iterator
        else:
            raise ValueError("an iterator of chunks can be consumed once: fit it with steps=1 and n_init=1, "
                             "or pass a callable that returns a fresh iterator for each pass")
        self._used = True
        chunk = head if head is not None else self._next(it)
        while chunk is not None:
            n = n_items(chunk)
            size = self.batch_size or n
            for lo in range(0, n, size):
                yield chunk if size >= n else take(chunk, torch.arange(lo, min(lo + size, n)))
            chunk = self._next(it)  # only now: the previous chunk is no longer referenced here


class OnlineSteps:
    """Stepwise EM for `probgen.loops.iterative.run`: one step is one pass. The state:
    ``params``, ``stats`` (the running per-item averages ``s``, ``None`` before the first
    update), ``t`` (updates so far), ``n`` (distinct items seen), ``passes`` (done),
    ``fixed`` (constant extras), ``generator`` (the passes' permutations)."""

    def __init__(self, hooks: Hooks, stream: Stream, t0: float, kappa: float):
        self.hooks, self.stream, self.t0, self.kappa = hooks, stream, t0, kappa

    def start(self, seed: int | None) -> dict:
        params = self.hooks.start(self.stream.first(), seed)
        return {"params": params, "stats": None, "t": 0, "n": self.stream.n(), "passes": 0,
                "fixed": self.hooks.fixed(params), "generator": generator(seed)}

    def step(self, q: dict) -> Update:
        hooks, params, s, t, n = self.hooks, q["params"], q["stats"], q["t"], q["n"]
        counting = self.stream.kind != "memory" and q["passes"] == q.get("count_pass", 0)
        total, items, rho = 0.0, 0.0, None
        for batch in self.stream.minibatches(q["generator"]):
            stats = hooks.statistics(params, batch, q["fixed"])
            nb = float(stats["n"])
            total += float(stats["log_lik"])
            items += nb
            if counting:
                n += nb
            t += 1
            rho = 1.0 if s is None else step_size(t, self.t0, self.kappa)
            mean = {k: v / nb for k, v in stats.items() if k not in _TOTALS}
            s = mean if s is None else {k: torch.lerp(s[k], mean[k], rho) for k in s}  # (1−ρ)s + ρ·mean
            scaled = {k: v * n for k, v in s.items()}
            scaled["n"] = torch.tensor(n, dtype=torch.float64)
            params = hooks.update(params, scaled, q["fixed"])
        if items == 0:
            raise ValueError("a pass of the online fit's data stream yielded no items")
        q = {**q, "params": params, "stats": s, "t": t, "n": n, "passes": q["passes"] + 1}
        return Update(q, total / items, {"updates": t, "rho": rho})


def fit(method: Any, model: Any, data: Any, hooks: Hooks, *, steps: int | None, seed: int | None,
        tol: float | None, n_init: int, callback: Callable | None, progress: bool, batch_size: int | None,
        t0: float, kappa: float, options: dict, start: dict | None = None) -> Fit:
    """An online EM fit of ``model`` (``method``'s) on ``data``; ``start``: the state to
    continue (`update`) instead of a fresh start. ``steps``: passes (default 1 for a
    one-shot iterator, else 5); ``options``: the fit's batch options, kept on the Fit."""
    t0, kappa = check_step_size(t0, kappa)
    stream = Stream(data, hooks.check, batch_size)
    steps = (1 if stream.once else 5) if steps is None else steps
    if stream.once and (steps > 1 or n_init > 1):
        raise ValueError(f"an iterator of chunks can be consumed once, so an online fit of it runs one pass "
                         f"(steps=1) and one restart (n_init=1), got steps={steps}, n_init={n_init}: pass a "
                         "callable that returns a fresh iterator for several passes")
    iteration = OnlineSteps(hooks, stream, t0, kappa)
    loop = None
    if start is not None:
        if n_init != 1:
            raise ValueError("a continued online fit has one state to continue: n_init must be 1")
        state = {**start, "generator": generator(seed), "passes": 0, "count_pass": 0}
        state["n"] = state["n"] + stream.n()
        loop = Loop(seeds=[seed], state=state)
    if steps <= 1:  # nothing to converge over: one pass (a one-shot stream's) is the whole fit
        tol = None
    with torch.no_grad():
        result = run(iteration, objective=method.objective, steps=steps, tol=tol, seed=seed, n_init=n_init,
                     progress=progress, callback=callback, desc=f"online {method.name}", start=loop)
    q = result.state
    online = {"stats": q["stats"], "t": q["t"], "n": q["n"], "fixed": q["fixed"]}
    return Fit(model, q["params"], result.history, engine=method.engine, method=method.name,
               state={**result.fit_state(), "online": online},
               options={**options, "online": True, "batch_size": batch_size, "t0": t0, "kappa": kappa})


def update(method: Any, fit_: Fit, data: Any, *, steps: int | None, seed: int | None, progress: bool,
           hooks: Callable[[dict], Hooks], options: dict) -> Fit:
    """``Fit.update`` of an EM fit (see `probgen.Fit.update`): an online fit continues
    stepwise on ``data`` with its running statistics, ``t`` and items seen (its options, any of
    ``batch_size``, ``t0``, ``kappa``, ``tol``, ``callback`` overridable); a batch fit is refit by
    batch EM on ``data`` from its parameters (its options, overridable)."""
    from probgen import api
    if fit_.state.get("online") is None:
        if options.get("online"):
            raise ValueError("this fit was made by batch EM, which keeps no running statistics: Fit.update "
                             "continues it by batch EM on the new data; fit with online=True to continue "
                             "online")
        if is_stream(data):
            raise ValueError("Fit.update of a batch EM fit refits it by batch EM on a data set in memory, not a "
                             "stream of chunks: fit with online=True to continue on streams")
        kept = {k: v for k, v in fit_.options.items() if k in method.fit_options(fit_.model)}
        return api.fit(fit_.model, data, engine=fit_.engine, steps=steps, seed=seed, init=fit_.params,
                       progress=progress, **{**kept, **options})
    opts = {**fit_.options, **options}
    unknown = sorted(set(options) - set(OPTIONS) - {"tol", "callback"})
    if unknown or options.get("online") is False:
        raise ValueError(f"Fit.update of an online fit continues it with its own options; it takes "
                         f"batch_size, t0, kappa, tol, callback, not {unknown or ['online=False']}")
    check_options(True, opts.get("batch_size"), opts["t0"], opts["kappa"])
    saved = fit_.state["online"]
    start = {"params": dict(fit_.params), "stats": saved["stats"], "t": saved["t"], "n": saved["n"],
             "fixed": saved["fixed"]}
    batch = {k: v for k, v in opts.items() if k not in OPTIONS + ("callback",)}
    from probgen.random import seeded
    from probgen.threads import limited
    with limited(), seeded(seed):
        return fit(method, fit_.model, data, hooks(batch), steps=steps, seed=seed, tol=opts.get("tol"), n_init=1,
                   callback=options.get("callback"), progress=progress, batch_size=opts.get("batch_size"),
                   t0=opts["t0"], kappa=opts["kappa"], options=batch, start=start)
