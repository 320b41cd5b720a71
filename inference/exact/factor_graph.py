"""Exact inference and maximum-likelihood learning for discrete factor graphs.

Queries (``pg.infer(fg, evidence, query=...)``, evidence a dict ``{variable: value}``
with int values, or 1-D LongTensors for one query per row):
  ``"marginals"`` – ``{variable: p(variable | evidence)}``;
  ``"map"`` – the most probable joint assignment ``{variable: value}``;
  ``"log_partition"`` – log Z (log Σ over assignments consistent with the evidence).
All by log-space variable elimination (`probgen.ops.elimination`).

``pg.fit`` maximises the exact mean log-likelihood of full assignments over the
log-potentials with L-BFGS (on the trainer, `probgen.loops.gradient`, so every trainer
option applies: another ``optim``, minibatches, validation, ...): the gradient of log Z by backprop is the model's factor
marginals (Eisner 2016), so each step is the moment-matching gradient
(empirical − model factor marginals) of a log-linear model (Koller & Friedman 2009, §20.3).
"""
from __future__ import annotations

from typing import Any

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.loops.gradient import GradientMethod, Trainer, Update
from probgen.ops import elimination as fops
from probgen.registry import check_options, check_tol, register


@register
class FactorGraphExact(GradientMethod):
    engine = "exact"
    name = "factor_graph"
    needs = "discrete variables with log-potential tables (a FactorGraph)"
    objective = "log_likelihood"
    steps_unit = "L-BFGS iterations"
    log_prob_kind = "exact"
    queries = ("marginals", "map", "log_partition")
    trainer_defaults = {"optim": "lbfgs"}

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.FactorGraphModel)

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, l2: float = 0.0, tol: float | None = 1e-10, lr: float = 1.0,
            batch_size: int | None = None, **options: Any) -> Fit:
        """Maximum likelihood of the log-potentials, ``steps`` (default 50) optimiser steps —
        L-BFGS (``optim="lbfgs"``, one iteration with a strong-Wolfe line search per step) on the
        whole data (``batch_size=None``) by default; stops when the relative change of the
        per-example objective (the mean log-likelihood less the ``l2`` penalty) is below ``tol``
        (`probgen.registry.converged`; ``None``: run all steps)."""
        return self._fit(model, data, steps, seed, init, progress, l2, tol, lr, batch_size, options, {})

    def mean_log_likelihood(self, model: Any, theta: dict, x: torch.Tensor, approx: dict) -> torch.Tensor:
        """The per-example objective on rows ``x`` at the log-potentials ``theta`` (a 0-d
        tensor whose gradient the trainer follows): here the exact mean log p(x); the ``bp``
        and ``meanfield`` methods put their approximation of log Z in its place."""
        return model.log_prob(theta, x).mean()

    def _fit(self, model: Any, data: Any, steps: int | None, seed: int | None, init: dict | None, progress: bool,
             l2: float, tol: float | None, lr: float, batch_size: int | None, options: dict, approx: dict) -> Fit:
        opts = self.trainer_options(model, options)
        check_tol(tol)
        steps = 50 if steps is None else steps
        params = model.init_params(data, seed)
        for k, v in (init or {}).items():
            if k not in params or v.shape != params[k].shape:
                raise ValueError(f"init[{k!r}] must be one of {sorted(params)} with shape of that table")
            params[k] = v.to(torch.float64).clone()
        theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}

        def loss(x: torch.Tensor) -> tuple[torch.Tensor, dict]:
            value = -self.mean_log_likelihood(model, theta, x, approx)
            if l2:
                value = value + l2 * sum((t ** 2).sum() for t in theta.values())
            return value, {"log_likelihood": -float(value.detach())}

        def validate(x: torch.Tensor) -> float:
            with torch.no_grad():
                return float(self.mean_log_likelihood(model, theta, x, approx))

        lbfgs = {"max_iter": 1, "line_search_fn": "strong_wolfe"} if opts["optim"] == "lbfgs" else {}
        trainer = Trainer([Update(loss, theta, optim_args=lbfgs)], data, steps=steps, seed=seed,
                          batch_size=batch_size, lr=lr, validate=validate, objective="log_likelihood", maximise=True,
                          progress=progress, desc=f"{self.engine} ML", tol=tol, check=model.check_data, **opts).run()
        out = {k: v.detach().clone() for k, v in theta.items()}
        return Fit(model, out, trainer.history, engine=self.engine, method=self.name, state=trainer.fit_state(),
                   options={"l2": l2, "tol": tol, "lr": lr, "batch_size": batch_size, **trainer.options(),
                            **({"approximation": approx} if approx else {})},
                   log_prob_kind=self.log_prob_kind)

    def infer(self, model: Any, params: dict | None, data: Any, query: str, **options: Any) -> Any:
        check_options("factor-graph query", options)
        evidence = _check_evidence(model, data)
        scopes = list(model.scopes.values())
        p = model.log_potentials if params is None else params
        tables = [p[k] for k in model.scopes]
        with torch.no_grad():
            if query == "log_partition":
                return fops.log_partition(model.variables, scopes, tables, evidence)
            if query == "map":
                best = fops.max_assignment(model.variables, scopes, tables, evidence)[0]
                return {v: int(t) if t.dim() == 0 else t for v, t in best.items()}
        return fops.marginals(model.variables, scopes, tables, evidence)


def _check_evidence(model: Any, data: Any) -> dict:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("evidence must be a dict {variable: value} (int, or a 1-D tensor of values)")
    out = {}
    for v, val in data.items():
        if v not in model.variables:
            raise ValueError(f"evidence names {v!r}, not a variable; variables: {list(model.variables)}")
        t = torch.as_tensor(val)
        if t.is_floating_point() or t.dim() > 1 or ((t < 0) | (t >= model.variables[v])).any():
            raise ValueError(f"evidence {v}={val!r}: expected integer states in [0, {model.variables[v]})")
        out[v] = t.long() if t.dim() == 1 else int(t)
    return out


def evidence_rows(model: Any, data: Any) -> tuple[torch.Tensor, int | None]:
    """Evidence as ``(rows, n)``: a ``(n or 1, V)`` LongTensor of states in variable order, −1
    where unobserved, and ``n`` the number of batched queries (``None`` for one assignment)."""
    evidence = _check_evidence(model, data)
    names = list(model.variables)
    n = next((len(v) for v in evidence.values() if torch.is_tensor(v) and v.dim() == 1), None)
    rows = torch.full((n or 1, len(names)), -1, dtype=torch.long)
    for v, val in evidence.items():
        rows[:, names.index(v)] = torch.as_tensor(val)
    return rows, n


def factor_set(model: Any, params: dict | None) -> tuple[list, list, list]:
    """``(cards, scopes as variable indices, tables)`` of a factor graph at the log-potentials
    ``params`` (``None``: its declared ones), as `probgen.ops.message_passing` takes them."""
    col = {v: j for j, v in enumerate(model.variables)}
    p = model.log_potentials if params is None else params
    return (list(model.variables.values()), [tuple(col[v] for v in s) for s in model.scopes.values()],
            [p[k] for k in model.scopes])
