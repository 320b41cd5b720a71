"""EM for probabilistic grammars.

* Raw sentences: inside–outside re-estimation (Baker 1979; Lari & Young 1990). The
  E-step's expected rule counts are the gradient of the corpus log inside probability
  with respect to the log rule probabilities (Eisner 2016); the M-step normalises them
  per left-hand side. The corpus log-likelihood never decreases.
* A treebank (trees): relative-frequency estimation, the closed-form maximum-likelihood
  estimate from observed rule counts (one step).

``history`` records the mean log-likelihood per sentence (per tree for a treebank).
Options: ``tol`` (stop when its relative change is below ``tol``,
:func:`probgen.registry.converged`), ``start`` – ``"declared"`` (the grammar's probabilities, default),
``"uniform"`` or ``"random"`` (Dirichlet(1) per left-hand side, from ``seed``).
"""
from __future__ import annotations

from typing import Any

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.progress import progress as bar
from probgen.random import generator
from probgen.registry import Method, check_options, check_tol, converged, register

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

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.Grammar)

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = 1e-8, start: str = "declared", **options: Any) -> Fit:
        check_options("em", options, ("tol", "start"))
        check_tol(tol)
        if start not in STARTS:
            raise ValueError(f"start must be one of {list(STARTS)}, got {start!r}")
        params = start_params(model, init)
        if init is None and start != "declared":
            r = len(params["probs"])
            w = torch.ones(r, dtype=torch.float64) if start == "uniform" else \
                torch.empty(r, dtype=torch.float64).exponential_(generator=generator(seed))
            params = model.m_step(w, params["probs"])
        if is_treebank(data):  # supervised: relative frequencies of the observed rules
            params = model.m_step(model.treebank_counts(data), params["probs"])
            ll = float(model.log_prob(params, data).mean())
            return Fit(model, params, [{"step": 0, "log_likelihood": ll}], engine=self.engine,
                       method=self.name, state={"closed_form": True}, options={"data": "treebank"})
        steps = 100 if steps is None else steps
        history, prev = [], None
        for step in bar(range(steps), desc="inside-outside", enabled=progress):
            counts, ll = model.expected_counts(params, data)          # E-step at the current params
            mean = float(ll.mean())                                    # per sentence
            history.append({"step": step, "log_likelihood": mean})
            params = model.m_step(counts, params["probs"])             # M-step
            if converged(prev, mean, tol):
                break
            prev = mean
        return Fit(model, params, history, engine=self.engine, method=self.name,
                   options={"tol": tol, "start": start, "data": "sentences"})
