"""Loopy belief propagation on factor graphs (:mod:`probgen.ops.loopy`).

Queries (``pg.infer(fg, evidence, engine="bp", query=...)``, evidence as for the exact
engine: ``{variable: int}`` or ``{variable: 1-D LongTensor}``, one query per row):
``"marginals"`` – ``{variable: beliefs}``, exact on trees, the Bethe approximation on loopy
graphs; ``"map"`` – each variable's max-product max-marginal argmax (the MAP assignment on a
tree; on loopy graphs the usual max-product decoding, not guaranteed optimal);
``"log_partition"`` – the Bethe estimate of log Z (a lower bound of log Z for attractive
binary pairwise models, Ruozzi 2012).

``pg.fit`` maximises the Bethe approximation of the mean log-likelihood with L-BFGS: at a
BP fixed point ∂ log Z_Bethe / ∂θ_f = b_f (Yedidia, Freeman & Weiss 2005), so the gradient
is the moment-matching gradient of the exact fit with BP factor beliefs in place of the
exact factor marginals (Sutton & McCallum 2012, §5.4).
"""
from __future__ import annotations

from typing import Any

import torch

from probgen.fit import Fit
from probgen.ops.loopy import belief_propagation
from probgen.progress import progress as bar
from probgen.registry import Method, check_tol, converged, register

from ..exact.factor_graph import _check_evidence

BP_OPTIONS = ("damping", "max_iters", "bp_tol")


def bp_options(damping: float = 0.5, max_iters: int = 200, bp_tol: float = 1e-8) -> dict:
    """The message-passing options: ``damping`` λ in [0, 1), ``max_iters`` message updates,
    ``bp_tol`` the largest change of a log-message at which BP has converged."""
    return {"damping": damping, "max_iters": max_iters, "tol": bp_tol}


@register
class FactorGraphBP(Method):
    engine = "bp"
    name = "factor_graph"
    needs = "discrete variables with log-potential tables (a FactorGraph)"
    objective = "log_likelihood"
    steps_unit = "L-BFGS iterations"
    log_prob_kind = "estimate"
    queries = ("marginals", "map", "log_partition")

    def accepts(self, model: Any) -> bool:
        return all(hasattr(model, a) for a in ("variables", "scopes", "log_potentials", "log_partition"))

    @staticmethod
    def _factors(model: Any, params: dict | None) -> tuple[list, list, list]:
        col = {v: j for j, v in enumerate(model.variables)}
        p = model.log_potentials if params is None else params
        return (list(model.variables.values()), [tuple(col[v] for v in s) for s in model.scopes.values()],
                [p[k] for k in model.scopes])

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, l2: float = 0.0, tol: float | None = 1e-8, damping: float = 0.5,
            max_iters: int = 200, bp_tol: float = 1e-8) -> Fit:
        """Bethe-approximate maximum likelihood, ``steps`` (default 50) L-BFGS iterations;
        ``tol`` as in the exact fit; the BP options as for queries."""
        check_tol(tol)
        opts = bp_options(damping, max_iters, bp_tol)
        steps = 50 if steps is None else steps
        params = model.init_params(data, seed)
        params.update({k: v.to(torch.float64).clone() for k, v in (init or {}).items()})
        theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        names = list(model.scopes)
        opt = torch.optim.LBFGS(list(theta.values()), lr=1.0, max_iter=1, line_search_fn="strong_wolfe")

        def objective() -> torch.Tensor:
            opt.zero_grad()
            cards, scopes, tables = self._factors(model, {k: theta[k].detach() for k in names})
            res = belief_propagation(cards, scopes, tables, **opts)
            # the gradient of log Z_Bethe is the factor beliefs: a surrogate with that gradient
            # and the value of -(mean unnormalised log p - log Z_Bethe)
            linear = sum((res.factor_beliefs[i] * theta[k]).sum() for i, k in enumerate(names))
            loss = -model.unnormalized_log_prob(theta, data).mean() + (linear - linear.detach()) + res.log_z[0]
            if l2:
                loss = loss + l2 * sum((t ** 2).sum() for t in theta.values())
            loss.backward()
            return loss

        history, last = [], None
        for step in bar(range(steps), desc="bp ML", enabled=progress):
            loss = float(opt.step(objective).detach())
            history.append({"step": step, "log_likelihood": -loss})
            if converged(last, loss, tol):
                break
            last = loss
        out = {k: v.detach().clone() for k, v in theta.items()}
        return Fit(model, out, history, engine=self.engine, method=self.name,
                   options={"l2": l2, "tol": tol, **opts})

    def log_prob(self, fit: Fit, x: Any, damping: float = 0.5, max_iters: int = 200,
                 bp_tol: float = 1e-8) -> torch.Tensor:
        """Σ_f θ_f(x_f) − log Z_Bethe per row ``(N,)``: an estimate (exact on trees)."""
        x = fit.model.check_data(x)
        cards, scopes, tables = self._factors(fit.model, fit.params)
        log_z = belief_propagation(cards, scopes, tables, **bp_options(damping, max_iters, bp_tol)).log_z[0]
        return fit.model.unnormalized_log_prob(fit.params, x) - log_z

    def infer(self, model: Any, params: dict | None, data: Any, query: str, damping: float = 0.5,
              max_iters: int = 200, bp_tol: float = 1e-8) -> Any:
        evidence = _check_evidence(model, data)
        names = list(model.variables)
        n = next((len(v) for v in evidence.values() if torch.is_tensor(v) and v.dim() == 1), None)
        rows = torch.full((n or 1, len(names)), -1, dtype=torch.long)
        for v, val in evidence.items():
            rows[:, names.index(v)] = torch.as_tensor(val)
        cards, scopes, tables = self._factors(model, params)
        with torch.no_grad():
            res = belief_propagation(cards, scopes, [t.detach() for t in tables], rows,
                                     max_product=query == "map", **bp_options(damping, max_iters, bp_tol))
        squeeze = (lambda t: t[0]) if n is None else (lambda t: t)
        if query == "log_partition":
            return squeeze(res.log_z)
        if query == "map":
            out = {v: squeeze(b.argmax(-1)) for v, b in zip(names, res.log_beliefs)}
            return {v: int(t) if t.dim() == 0 else t for v, t in out.items()}
        return {v: squeeze(b) for v, b in zip(names, res.beliefs)}
