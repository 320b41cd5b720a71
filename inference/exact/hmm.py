"""Exact inference in hidden Markov chains at given parameters: log-evidence (the
log-space forward algorithm), posterior state marginals (scaled forward–backward) and
the most probable state paths (Viterbi), batched over sequences.

``pg.fit(model, data, engine="exact", init=params)`` does not learn: it conditions on the
given parameters (``init``, else the model's ``init_params``) and records the
log-evidence. Queries: ``pg.infer(fit, seqs, query="marginals")`` → (B, T, K) posterior
state probabilities (zero on padded steps); ``"map"`` → (B, T) Viterbi paths (−1 on
padded steps; both padded to ``width=`` steps where given); ``"log_evidence"`` → (B,);
``"impute"`` → the padded observations (B, T) / (B, T, D) with missing ones filled
(conditional means, or most probable symbols / counts). Under ``torch.distributed`` each rank
answers its block of the sequences for the first three (``pg.infer`` joins them).
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
    row_queries = ("marginals", "map", "log_evidence")  # sequence by sequence
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

    def query_rows(self, model: Any, data: Any, query: str, options: dict) -> tuple[Any, dict]:
        """The padded sequences, with the answers' width fixed at the whole batch's: a block
        of shorter sequences is padded less, and its answers are padded out again."""
        data = model.check_data(data)
        return data, {**options, "width": int(data.x.shape[1])}

    def infer(self, model: Any, params: dict | None, data: Any, query: str, width: int | None = None,
              **options: Any):
        """``width``: the number of steps the ``(B, T, K)`` / ``(B, T)`` answers are padded to
        (``None``: the data's padded length ``T``; at least the longest sequence's)."""
        check_options(f"{query!r} query", options, ("width",))
        if params is None:
            raise ValueError("HMM queries need parameters: pass a Fit (pg.fit(...)) rather than the declaration")
        data = model.check_data(data)
        T = int(data.x.shape[1])
        if width is not None and (isinstance(width, bool) or not isinstance(width, int)
                                  or width < int(data.lengths.max())):
            raise ValueError(f"width must be an integer >= the longest sequence's length "
                             f"{int(data.lengths.max())}, got {width!r}")
        pad = 0 if width is None else width - T
        params = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in params.items()}
        init, trans = params["initial"], params["transition"]
        with torch.no_grad():
            if query == "marginals":
                gamma = chain.forward_backward(init, trans, emissions(model, params, data), data.lengths,
                                               pairwise=False)[1]
                return _width(gamma, pad, 0.0)
            if query == "map":
                return _width(chain.viterbi(init, trans, emissions(model, params, data), data.lengths)[0], pad, -1)
            if query == "log_evidence":
                return chain.log_evidence(init, trans, model.log_emission(params, data), data.lengths)
            if query == "impute" and hasattr(model, "impute"):
                gamma = chain.forward_backward(init, trans, emissions(model, params, data), data.lengths,
                                               pairwise=False)[1]
                return model.impute(params, data, gamma)
        raise ValueError(f"unknown query {query!r}; known: {list(QUERIES)}")


def _width(answer: torch.Tensor, pad: int, value: float) -> torch.Tensor:
    """``answer`` (B, T, ...) with ``pad`` more padded steps of ``value`` (fewer where negative:
    steps past every sequence's end)."""
    if pad == 0:
        return answer
    if pad < 0:
        return answer[:, :answer.shape[1] + pad]
    fill = answer.new_full((answer.shape[0], pad, *answer.shape[2:]), value)
    return torch.cat([answer, fill], 1)
