"""EM for probabilistic grammars.

* Raw sentences: inside–outside re-estimation (Baker 1979; Lari & Young 1990). The
  E-step's expected rule counts are the gradient of the corpus log inside probability
  with respect to the log rule probabilities (Eisner 2016); the M-step normalises them
  per left-hand side. The corpus log-likelihood never decreases.
* A treebank (trees): relative-frequency estimation, the closed-form maximum-likelihood
  estimate from observed rule counts (one step).

``history`` records the mean log-likelihood per sentence (per tree for a treebank).
Options: ``tol`` (stop when its relative change is below ``tol``,
`probgen.registry.converged`), ``n_init``, ``callback`` (`probgen.loops.iterative`), ``start`` – ``"declared"`` (the grammar's probabilities, default),
``"uniform"`` or ``"random"`` (Dirichlet(1) per left-hand side, from ``seed``).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from probgen import distributed, protocols
from probgen.fit import Fit
from probgen.loops.iterative import LOOP, Update, check_callback, check_n_init, run
from probgen.random import generator
from probgen.registry import Method, check_options, check_tol, register

from .._grammar import is_treebank, start_params

STARTS = ("declared", "uniform", "random")


@register
class GrammarEM(Method):
    engine = "em"
    name = "inside-outside"
    needs = "a grammar declaration (expected rule counts and a per-left-hand-side M-step)"
    log_prob_kind = "exact"
    objective = "log_likelihood"
    steps_unit = "EM iterations (a treebank: one closed-form step)"
    loop = LOOP
    parallel = "data"  # sentences are independent: expected rule counts summed over ranks

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.Grammar)

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = 1e-8, n_init: int = 1, callback: Callable | None = None,
            start: str = "declared", **options: Any) -> Fit:
        """``steps`` (default 100) iterations; ``tol``, ``n_init`` (restarts from independent
        seeds, the best final log-likelihood wins; useful with ``start="random"``, as the other
        starts do not depend on the seed) and ``callback`` as in
        `probgen.loops.iterative.run`. A treebank is one closed-form step
        (``fit.converged`` is then ``None``)."""
        check_options("em", options, ("tol", "n_init", "callback", "start"))
        check_tol(tol), check_n_init(n_init), check_callback(callback)  # the closed form runs no loop
        if start not in STARTS:
            raise ValueError(f"start must be one of {list(STARTS)}, got {start!r}")
        steps_ = _Steps(model, data, init, start)
        if is_treebank(data):  # supervised: relative frequencies of the observed rules
            params = steps_.start(seed)
            ctx = distributed.current()
            if ctx is None:
                params = model.m_step(model.treebank_counts(data), params["probs"])
                ll = float(model.log_prob(params, data).mean())
            else:  # every rank's rule counts, then the log-likelihood of every rank's trees
                params = model.m_step(ctx.sum({"c": model.treebank_counts(data)})["c"], params["probs"])
                lls = ctx.sum({"ll": model.log_prob(params, data).sum(),
                               "n": torch.tensor(float(len(data)), dtype=torch.float64)})
                ll = float(lls["ll"] / lls["n"])
            return Fit(model, params, [{"step": 0, "log_likelihood": ll}], engine=self.engine,
                       method=self.name, state={"closed_form": True}, options={"data": "treebank"})
        steps = 100 if steps is None else steps
        result = run(steps_, objective=self.objective, steps=steps, tol=tol, seed=seed, n_init=n_init,
                     progress=progress, callback=callback, desc="inside-outside")
        return Fit(model, result.state, result.history, engine=self.engine, method=self.name,
                   state=result.fit_state(),
                   options={"tol": tol, "n_init": n_init, "start": start, "data": "sentences"})


class _Steps:
    """Inside–outside for `probgen.loops.iterative.run`: the state is the params."""

    def __init__(self, model: Any, data: Any, init: dict | None, start: str):
        self.model, self.data, self.init, self.how = model, data, init, start

    def start(self, seed: int | None) -> dict:
        params = start_params(self.model, self.init)
        if self.init is None and self.how != "declared":
            r = len(params["probs"])
            w = torch.ones(r, dtype=torch.float64) if self.how == "uniform" else \
                torch.empty(r, dtype=torch.float64).exponential_(generator=generator(seed))
            params = self.model.m_step(w, params["probs"])
        return params

    def step(self, params: dict) -> Update:
        counts, ll = self.model.expected_counts(params, self.data)   # E-step at the current params
        return Update(self.model.m_step(counts, params["probs"]), float(ll.mean()))  # M-step; per sentence

    def statistics(self, params: dict) -> dict:
        """This rank's E-step: expected rule ``counts`` ``(R,)``, ``log_lik`` and ``n`` (sentences)."""
        counts, ll = self.model.expected_counts(params, self.data)
        return {"counts": counts, "log_lik": ll.sum(), "n": torch.tensor(float(len(ll)), dtype=torch.float64)}

    def update(self, params: dict, stats: dict) -> Update:
        return Update(self.model.m_step(stats["counts"], params["probs"]), float(stats["log_lik"] / stats["n"]))
