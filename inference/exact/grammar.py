"""Exact inference for probabilistic grammars: inside log-probabilities, Viterbi best
trees, and span / rule posteriors (the outside pass by backprop, Eisner 2016).

``pg.fit(grammar, sentences, engine="exact")`` learns nothing: it returns a Fit at the
grammar's own rule probabilities (or ``init``) whose ``log_prob`` is the inside
log-probability of each sentence. ``pg.infer(grammar_or_fit, sentences, query=...)``:
``"map"`` – one best `Tree` per sentence (``None`` if it has no
parse); ``"marginals"`` – span and rule posteriors (see ``PCFG.posteriors``).
"""
from __future__ import annotations

from typing import Any

from probgen import protocols
from probgen.fit import Fit
from probgen.registry import Method, check_options, register

from .._grammar import is_treebank, start_params


@register
class GrammarExact(Method):
    engine = "exact"
    name = "grammar"
    needs = "a grammar declaration (inside / Viterbi charts)"
    log_prob_kind = "exact"
    queries = ("map", "marginals")
    row_queries = ("map", "marginals")  # sentence by sentence
    objective = "log_likelihood"
    steps_unit = "none (exact: learns nothing; steps is ignored)"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.Grammar)

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, **options: Any) -> Fit:
        check_options("exact", options)
        params = start_params(model, init)
        ll = float(model.log_prob(params, data).mean())  # per sentence
        return Fit(model, params, [{"step": 0, "log_likelihood": ll}], engine=self.engine, method=self.name)

    def join_answers(self, parts: list, query: str) -> Any:
        from probgen.data import join
        return join(parts, same=("nonterminals",))  # the labels of the spans' last axis, not per sentence

    def infer(self, model: Any, params: dict | None, data: Any, query: str, **options: Any) -> Any:
        check_options("grammar query", options)
        data = model.check_data(data)
        if is_treebank(data):
            raise ValueError("queries take sentences (token lists or strings), not trees")
        if query == "map":
            return model.viterbi(params, data)
        if query == "marginals":
            return model.posteriors(params, data)
        raise ValueError(f"grammar queries are 'map' and 'marginals', not {query!r}")
