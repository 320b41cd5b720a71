"""Learning the tables of a discrete Bayesian network: counting for complete data,
expectation-maximisation for missing cells (Lauritzen 1995; Koller & Friedman 2009,
§19.2). The E-step is one batched variable-elimination contraction over the rows with
missing cells; its gradient with respect to the tables gives every family's expected
counts at once (Darwiche 2003). The M-step normalises expected counts plus optional
Dirichlet pseudo-counts (then EM climbs the posterior instead of the likelihood).
"""
from __future__ import annotations

from typing import Any

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.inference.exact.bayesian_network import count_tables, normalise_counts
from probgen.ops.bayesian_network import CompiledNetwork
from probgen.progress import progress as bar
from probgen.registry import Method, check_options, check_tol, converged, register


@register
class NetworkEM(Method):
    engine = "em"
    name = "bayesian_network"
    needs = "a discrete Bayesian network (variables, parents, tables)"
    objective = "log_likelihood"
    steps_unit = "EM iterations (complete data: one closed-form step)"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.NetworkWithTables)

    def fit(self, model: Any, data: torch.Tensor, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = 1e-7, pseudo_count: float = 0.0, **options: Any) -> Fit:
        """``steps``: the most EM iterations (default 100); stops when the relative change of
        the log-likelihood per row (log-posterior with pseudo-counts) is below ``tol``
        (:func:`probgen.registry.converged`; ``tol=None``: run all steps). ``history``
        records it per row; complete data are fitted in one closed-form step
        (``state["closed_form"]``).
        Initial tables: ``init``, else counts of the observed cells of each family
        (rows where the family is fully observed) with one pseudo-count, randomly
        perturbed (``seed``) for families with a latent (never observed) variable."""
        check_options("em", options, ("tol", "pseudo_count"))
        check_tol(tol)
        if pseudo_count < 0:
            raise ValueError(f"pseudo_count must be >= 0, got {pseudo_count}")
        x = data.numpy()
        n = x.shape[0]
        if not (x < 0).any():  # complete data: the M-step of the exact counts is the answer
            params = count_tables(model, x, pseudo_count)
            ll = float(model.log_prob(params, data).mean())
            return Fit(model, params, [{"step": 0, self.objective: ll}], engine=self.engine, method=self.name,
                       state={"closed_form": True}, options={"pseudo_count": pseudo_count, "tol": tol})
        steps = 100 if steps is None else steps
        if init:
            params = model.check_params(dict(model.check_params(None), **init))
        else:
            params = available_case_tables(model, x, 1.0)
            params = _break_symmetry(model, params, x, seed)
        history = []
        prev = None
        for step in bar(range(steps), desc="em", enabled=progress):
            tables = [params[f"probs_{v}"] for v in model.variables]
            counts, ll = self.expected_counts(model, params, x)  # E-step at the current tables
            ll = (float(ll) + _log_prior(tables, pseudo_count)) / n  # per row
            history.append({"step": step, self.objective: ll})
            params = normalise_counts(model, counts, pseudo_count)  # M-step
            if converged(prev, ll, tol):
                break
            prev = ll
        return Fit(model, params, history, engine=self.engine, method=self.name,
                   options={"pseudo_count": pseudo_count, "tol": tol})

    def expected_counts(self, model: Any, params: dict, x) -> tuple[list[torch.Tensor], Any]:
        """The E-step: every family's expected counts over the rows ``x`` (N, V) (-1 =
        missing) and the log-likelihood of the rows, at the tables ``params`` (exact
        elimination here; the ``bp`` engine overrides it with belief propagation)."""
        return CompiledNetwork(model, params).expected_counts([params[f"probs_{v}"] for v in model.variables], x)


def _break_symmetry(model: Any, params: dict, x, seed: int | None) -> dict:
    """Tables of families with a never-observed (latent) variable start uniform from
    available-case counting, a fixed point of EM where every latent state looks alike;
    multiply them by Exp(1) noise (a Dirichlet(1) perturbation) so EM can separate them."""
    import numpy as np
    latent = {v for v in model.variables if (x[:, model.index[v]] < 0).all()}
    if not latent:
        return params
    rng = np.random.default_rng(seed)
    out = dict(params)
    for v in model.variables:
        if v in latent or latent & set(model.parents[v]):
            t = out[f"probs_{v}"] * torch.from_numpy(rng.exponential(size=tuple(out[f"probs_{v}"].shape)))
            out[f"probs_{v}"] = t / t.sum(-1, keepdim=True)
    return out


def _log_prior(tables: list[torch.Tensor], pseudo_count: float) -> float:
    if pseudo_count == 0:
        return 0.0
    return float(sum((pseudo_count * torch.log(t.clamp_min(1e-300))).sum() for t in tables))


def available_case_tables(model: Any, x, pseudo_count: float = 0.0) -> dict[str, torch.Tensor]:
    """Tables counted, family by family, over the rows where that family (the variable and
    its parents) is fully observed — the usual baseline and EM's starting point."""
    import numpy as np
    counts = []
    for v in model.variables:
        cols = [model.index[p] for p in model.parents[v]] + [model.index[v]]
        rows = x[(x[:, cols] >= 0).all(1)][:, cols]
        c = np.zeros(model.table_shape(v))
        np.add.at(c, tuple(rows.T), 1.0)
        counts.append(torch.from_numpy(c))
    return normalise_counts(model, counts, pseudo_count)
