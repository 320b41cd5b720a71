"""Exact inference in hidden Markov chains at given parameters: log-evidence (the
log-space forward algorithm), posterior state marginals (scaled forward–backward) and
the most probable state paths (Viterbi), batched over sequences.

``pg.fit(model, data, engine="exact", init=params)`` does not learn: it conditions on the
given parameters (``init``, else the model's ``init_params``) and records the
log-evidence. Queries: ``pg.infer(fit, seqs, query="marginals")`` → (B, T, K) posterior
state probabilities (zero on padded steps); ``"map"`` → (B, T) Viterbi paths (−1 on
padded steps); ``"log_evidence"`` → (B,); ``"impute"`` → the padded observations (B, T) /
(B, T, D) with missing ones filled (conditional means, or most probable symbols / counts).
Reference: Rabiner (1989), sections III.A–C.
"""
from __future__ import annotations

from typing import Any

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.ops import chain
from probgen.registry import Method, check_options, register

from .._chain import emissions, start_params

QUERIES = ("marginals", "map", "log_evidence", "impute")


@register
class ChainExact(Method):
    engine = "exact"
    name = "chain"
    needs = "a hidden Markov chain (initial, transition and per-step emission log-likelihoods)"
    queries = QUERIES
    missing_values = True  # missing steps / dimensions: the declaration's emissions marginalise them
    objective = "log_likelihood"
    steps_unit = "none (exact: learns nothing; steps is ignored)"

    def accepts(self, model: Any) -> bool:
        return protocols.is_hidden_markov_chain(model)

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, **options: Any) -> Fit:
        check_options("exact", options)
        params = start_params(model, data, init, seed)
        lp = model.log_prob(params, data)
        return Fit(model, params, [{"step": 0, "log_likelihood": float(lp.mean())}],  # per sequence
                   engine=self.engine, method=self.name)

    def infer(self, model: Any, params: dict | None, data: Any, query: str, **options: Any):
        check_options(f"{query!r} query", options)
        if params is None:
            raise ValueError("HMM queries need parameters: pass a Fit (pg.fit(...)) rather than the declaration")
        data = model.check_data(data)
        params = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in params.items()}
        init, trans = params["initial"], params["transition"]
        with torch.no_grad():
            if query == "marginals":
                return chain.forward_backward(init, trans, emissions(model, params, data), data.lengths,
                                              pairwise=False)[1]
            if query == "map":
                return chain.viterbi(init, trans, emissions(model, params, data), data.lengths)[0]
            if query == "log_evidence":
                return chain.log_evidence(init, trans, model.log_emission(params, data), data.lengths)
            if query == "impute" and hasattr(model, "impute"):
                gamma = chain.forward_backward(init, trans, emissions(model, params, data), data.lengths,
                                               pairwise=False)[1]
                return model.impute(params, data, gamma)
        raise ValueError(f"unknown query {query!r}; known: {list(QUERIES)}")
