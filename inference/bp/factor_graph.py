"""Loopy belief propagation on factor graphs (`probgen.ops.message_passing`), and the
base the approximate factor-graph methods share (``bp`` here, ``meanfield`` in
`probgen.inference.meanfield.factor_graph`).

Queries (``pg.infer(fg, evidence, engine="bp", query=...)``, evidence as for the exact
engine: ``{variable: int}`` or ``{variable: 1-D LongTensor}``, one query per row):
``"marginals"`` – ``{variable: beliefs}``, exact on trees, the Bethe approximation on loopy
graphs; ``"map"`` – each variable's max-product max-marginal argmax (the MAP assignment on a
tree; on loopy graphs the usual max-product decoding, not guaranteed optimal);
``"log_partition"`` – the Bethe estimate of log Z (a lower bound of log Z for attractive
binary pairwise models, Ruozzi 2012).

``pg.fit`` maximises the approximate mean log-likelihood mean_n Σ_f θ_f(x_n) − A(θ), A the
method's approximation of log Z, with L-BFGS: at the approximation's fixed point ∂A/∂θ_f is
its factor beliefs (Bethe: Yedidia, Freeman & Weiss 2005; mean field: the product of the
q_v), so the gradient is the moment-matching gradient of the exact fit with those beliefs
in place of the exact factor marginals (Sutton & McCallum 2012, §5.4; Wainwright & Jordan
2008, §6.2).
"""
from __future__ import annotations

from typing import Any

import torch

from probgen.fit import Fit
from probgen.ops.message_passing import belief_propagation
from probgen.registry import register

from ..exact.factor_graph import FactorGraphExact, evidence_rows, factor_set


def bp_options(damping: float = 0.5, max_iters: int = 200, bp_tol: float = 1e-8) -> dict:
    """The message-passing options: ``damping`` λ in [0, 1), ``max_iters`` message updates,
    ``bp_tol`` the largest change of a log-message at which BP has converged."""
    return {"damping": damping, "max_iters": max_iters, "tol": bp_tol}


class ApproximateFactorGraph(FactorGraphExact):
    """Queries and approximate maximum likelihood for factor graphs, given one approximation
    (`approximate`: marginals, factor beliefs and log Z from a factor set); the fit is
    the exact method's, on the gradient trainer, with the approximate log Z
    (`mean_log_likelihood`)."""

    log_prob_kind = "estimate"

    def approximate(self, cards: list, scopes: list, tables: list, rows: torch.Tensor | None, query: str,
                    **options: Any) -> tuple[list, list | None, torch.Tensor | None]:
        """``(log marginals per variable (B, card), factor beliefs summed over rows, log Z (B,))``."""
        raise NotImplementedError

    def mean_log_likelihood(self, model: Any, theta: dict, x: torch.Tensor, approx: dict) -> torch.Tensor:
        """mean Σ_f θ_f(x_f) − A(θ), A the approximate log Z: a surrogate whose value is that
        and whose gradient uses the approximation's factor beliefs (∂A/∂θ_f at its fixed point)."""
        names = list(model.scopes)
        cards, scopes, tables = factor_set(model, {k: theta[k].detach() for k in names})
        _, beliefs, log_z = self.approximate(cards, scopes, tables, None, "marginals", **approx)
        linear = sum((beliefs[i] * theta[k]).sum() for i, k in enumerate(names))
        return model.unnormalized_log_prob(theta, x).mean() - (linear - linear.detach()) - log_z[0]

    def _log_prob(self, fit: Fit, x: Any, options: dict) -> torch.Tensor:
        x = fit.model.check_data(x)
        cards, scopes, tables = factor_set(fit.model, fit.params)
        log_z = self.approximate(cards, scopes, tables, None, "log_partition", **options)[2][0]
        return fit.model.unnormalized_log_prob(fit.params, x) - log_z

    def _infer(self, model: Any, params: dict | None, data: Any, query: str, options: dict) -> Any:
        rows, n = evidence_rows(model, data)
        names = list(model.variables)
        cards, scopes, tables = factor_set(model, params)
        with torch.no_grad():
            log_b, _, log_z = self.approximate(cards, scopes, [t.detach() for t in tables], rows, query, **options)
        squeeze = (lambda t: t[0]) if n is None else (lambda t: t)
        if query == "log_partition":
            return squeeze(log_z)
        if query == "map":
            out = {v: squeeze(b.argmax(-1)) for v, b in zip(names, log_b)}
            return {v: int(t) if t.dim() == 0 else t for v, t in out.items()}
        return {v: squeeze(b.exp()) for v, b in zip(names, log_b)}


@register
class FactorGraphBP(ApproximateFactorGraph):
    engine = "bp"
    name = "factor_graph"
    queries = ("marginals", "map", "log_partition")

    def approximate(self, cards, scopes, tables, rows, query, **options):
        res = belief_propagation(cards, scopes, tables, rows, max_product=query == "map", **options)
        return res.log_beliefs, res.factor_beliefs, res.log_z

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, l2: float = 0.0, tol: float | None = 1e-8, lr: float = 1.0,
            batch_size: int | None = None, damping: float = 0.5, max_iters: int = 200, bp_tol: float = 1e-8,
            **options: Any) -> Fit:
        """Bethe-approximate maximum likelihood, as the exact fit (``steps`` default 50, L-BFGS on
        the trainer, every trainer option); ``damping``, ``max_iters``, ``bp_tol`` as for queries."""
        return self._fit(model, data, steps, seed, init, progress, l2, tol, lr, batch_size, options,
                         bp_options(damping, max_iters, bp_tol))

    def log_prob(self, fit: Fit, x: Any, damping: float = 0.5, max_iters: int = 200,
                 bp_tol: float = 1e-8) -> torch.Tensor:
        """Σ_f θ_f(x_f) − log Z_Bethe per row ``(N,)``: an estimate (exact on trees)."""
        return self._log_prob(fit, x, bp_options(damping, max_iters, bp_tol))

    def infer(self, model: Any, params: dict | None, data: Any, query: str, damping: float = 0.5,
              max_iters: int = 200, bp_tol: float = 1e-8) -> Any:
        return self._infer(model, params, data, query, bp_options(damping, max_iters, bp_tol))
