"""Naive mean field on discrete Bayesian networks
(`probgen.ops.message_passing.mean_field` on the network's factor set, θ = log CPTs).

Queries take the exact engine's evidence forms: ``"marginals"`` – ``{variable: q_v}``,
``"map"`` – each q_v's argmax; options ``max_iters`` (200) and ``mf_tol`` (1e-8). Queries
run on the ancestral part of the network (the rest is barren).

``pg.fit`` counts complete rows exactly; with missing cells it runs **variational EM**
(Neal & Hinton 1998; Jordan et al. 1999): per row, q over its missing cells maximises
ELBO = E_q[log p(observed, missing)] + H(q) ≤ log p(observed); the M-step normalises the
expected family counts Π q (with observed cells one-hot). The per-row ELBO recorded in the
history never decreases (each step maximises the same bound, first in q, then in the tables).
Zero table entries make log θ = −∞: the product q then avoids those configurations, and a
row that cannot is a ``ValueError``.
"""
from __future__ import annotations

from typing import Any

from probgen.ops.message_passing import mean_field
from probgen.registry import register

from ..bp.bayesian_network import ApproximateNetwork
from .factor_graph import mf_options


@register
class NetworkMeanField(ApproximateNetwork):
    engine = "meanfield"
    name = "bayesian_network"
    objective = "elbo"
    steps_unit = "variational EM iterations (complete data: one closed-form step)"

    def approximate(self, cards, scopes, tables, rows, query: str = "marginals", **options):
        res = mean_field(cards, scopes, tables, rows, **(options or mf_options()))
        return res.log_q, res.factor_expectations, res.elbo

    def infer(self, model: Any, params: dict | None, data: Any, query: str, variables: Any = None,
              max_iters: int = 200, mf_tol: float = 1e-8) -> Any:
        """``query="marginals"`` or ``"map"``; ``variables``: the query variables (default:
        every unobserved one); ``max_iters``, ``mf_tol``: the sweeps."""
        return self._infer(model, params, data, query, variables, mf_options(max_iters, mf_tol))
