"""Naive mean field on factor graphs (`probgen.ops.message_passing.mean_field`).

Queries (``pg.infer(fg, evidence, engine="meanfield", query=...)``, evidence as for the
exact engine): ``"marginals"`` – ``{variable: q_v}``; ``"map"`` – each q_v's argmax;
``"log_partition"`` – the ELBO Σ_f E_q[θ_f] + Σ_v H(q_v), a **lower bound** of log Z (of
log Σ over the assignments consistent with the evidence). Options ``max_iters`` (sweeps,
200) and ``mf_tol`` (1e-8: the largest change of a log q_v at which the sweeps stop).

``pg.fit`` maximises mean_n Σ_f θ_f(x_n) − ELBO(θ) with L-BFGS (the gradient uses the
product marginals in place of the exact factor marginals; see
`probgen.inference.bp.factor_graph`). Since ELBO ≤ log Z this objective is an upper
bound of the log-likelihood (concave in θ and at most 0), the classic mean-field
approximation to maximum likelihood (Wainwright & Jordan 2008, §6.2).
"""
from __future__ import annotations

from typing import Any

import torch

from probgen.fit import Fit
from probgen.ops.message_passing import mean_field
from probgen.registry import register

from ..bp.factor_graph import ApproximateFactorGraph


def mf_options(max_iters: int = 200, mf_tol: float = 1e-8) -> dict:
    return {"max_iters": max_iters, "tol": mf_tol}


@register
class FactorGraphMeanField(ApproximateFactorGraph):
    engine = "meanfield"
    name = "factor_graph"
    queries = ("marginals", "map", "log_partition")

    def approximate(self, cards, scopes, tables, rows, query, **options):
        res = mean_field(cards, scopes, tables, rows, **options)
        return res.log_q, res.factor_expectations, res.elbo

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, l2: float = 0.0, tol: float | None = 1e-8, lr: float = 1.0,
            batch_size: int | None = None, max_iters: int = 200, mf_tol: float = 1e-8, **options: Any) -> Fit:
        """Mean-field approximate maximum likelihood, as the exact fit (``steps`` default 50,
        L-BFGS on the trainer, every trainer option)."""
        return self._fit(model, data, steps, seed, init, progress, l2, tol, lr, batch_size, options,
                         mf_options(max_iters, mf_tol))

    def log_prob(self, fit: Fit, x: Any, max_iters: int = 200, mf_tol: float = 1e-8) -> torch.Tensor:
        """Σ_f θ_f(x_f) − ELBO per row ``(N,)``: an upper bound of log p(x) (ELBO ≤ log Z)."""
        return self._log_prob(fit, x, mf_options(max_iters, mf_tol))

    def infer(self, model: Any, params: dict | None, data: Any, query: str, max_iters: int = 200,
              mf_tol: float = 1e-8) -> Any:
        return self._infer(model, params, data, query, mf_options(max_iters, mf_tol))
