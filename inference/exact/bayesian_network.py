"""Exact queries on discrete Bayesian networks: posterior marginals (sum-product) and
the most probable explanation / marginal MAP (max-product) by variable elimination in
a min-fill order, batched over tables of evidence rows (Koller & Friedman 2009, ch. 9
and 13). Fitting is closed-form maximum likelihood from complete data (counts plus
optional Dirichlet pseudo-counts); for missing cells use the ``em`` engine.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.ops.bayesian_network import compiled
from probgen.registry import Method, check_options, register


def parse_evidence(model: Any, evidence: Any) -> tuple[dict[int, int] | None, np.ndarray | None]:
    """``(assignment, None)`` for one assignment ``{variable: state}``, ``(None, x)`` for a
    table of rows (dict of lists, DataFrame or ``(N, V)`` array) as state indices."""
    if evidence is None:
        return {}, None
    if isinstance(evidence, dict) and all(v is None or isinstance(v, (str, int, float, np.integer, np.floating))
                                          for v in evidence.values()):
        out = {}
        for name, value in evidence.items():
            if name not in model.index:
                raise ValueError(f"unknown evidence variable {name!r}; variables: {model.variables}")
            k = model.encode(name, value)
            if k >= 0:
                out[model.index[name]] = k
        return out, None
    return None, model.check_data(evidence).numpy()


def evidence_rows(model: Any, evidence: Any) -> tuple[dict[int, int] | None, np.ndarray, set[int]]:
    """``(single, x, observed)``: the evidence as ``(N, V)`` state indices ``x`` (−1 =
    unobserved; one row for one assignment, which ``single`` then holds, else ``None``) and
    the columns observed in every row."""
    single, x = parse_evidence(model, evidence)
    if single is not None:
        x = np.full((1, len(model.variables)), -1, dtype=np.int64)
        for j, k in single.items():
            x[0, j] = k
        return single, x, set(single)
    return None, x, set(j for j in range(x.shape[1]) if (x[:, j] >= 0).all())


def _targets(model: Any, variables: Any, observed: set[int]) -> list[int]:
    if variables is None:
        return [j for j in range(len(model.variables)) if j not in observed]
    if isinstance(variables, str):
        variables = [variables]
    out = []
    for v in variables:
        if v not in model.index:
            raise ValueError(f"unknown query variable {v!r}; variables: {model.variables}")
        out.append(model.index[v])
    return out


def count_tables(model: Any, x: np.ndarray, pseudo_count: float = 0.0) -> dict[str, torch.Tensor]:
    """Maximum-likelihood (``pseudo_count`` = 0) or posterior-mean tables from complete
    rows: normalised family counts plus a symmetric Dirichlet pseudo-count. Parent
    configurations never seen (and without pseudo-counts) get a uniform distribution."""
    params = model.check_params(None)
    net = compiled(model, params)
    counts, _ = net.expected_counts([params[f"probs_{v}"] for v in model.variables], x)
    return normalise_counts(model, counts, pseudo_count)


def normalise_counts(model: Any, counts: list[torch.Tensor], pseudo_count: float) -> dict[str, torch.Tensor]:
    out = {}
    for v, c in zip(model.variables, counts):
        c = c + pseudo_count
        z = c.sum(-1, keepdim=True)
        out[f"probs_{v}"] = torch.where(z > 0, c / torch.where(z > 0, z, torch.ones_like(z)),
                                        torch.full_like(c, 1.0 / c.shape[-1]))
    return out


@register
class NetworkExact(Method):
    engine = "exact"
    name = "bayesian_network"
    needs = "a discrete Bayesian network (variables, parents, tables)"
    queries = ("marginals", "map")
    row_queries = ("marginals", "map")  # over a table of evidence rows, row by row
    objective = "log_likelihood"
    steps_unit = "none (closed form: counting; steps is ignored)"
    accepts_init = False
    init_hint = "the tables are counted from complete rows; engine='em' starts from init"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.NetworkWithTables)

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, pseudo_count: float = 0.0, **options: Any) -> Fit:
        """Closed-form maximum likelihood (or Dirichlet posterior mean) from complete rows."""
        check_options("exact", options, ("pseudo_count",))
        if pseudo_count < 0:
            raise ValueError(f"pseudo_count must be >= 0, got {pseudo_count}")
        x = data.numpy()
        if (x < 0).any():
            raise ValueError("the data have missing cells; the exact engine counts complete rows only — "
                             "use engine='em' (expectation-maximisation over the missing cells)")
        params = count_tables(model, x, pseudo_count)
        ll = float(model.log_prob(params, data).mean())  # per row
        return Fit(model, params, [{"step": 0, "log_likelihood": ll}], engine=self.engine, method=self.name,
                   state={"closed_form": True}, options={"pseudo_count": pseudo_count})

    def query_rows(self, model: Any, data: Any, query: str, options: dict) -> tuple[Any, dict] | None:
        """A table of evidence rows, with the query variables fixed on the whole table (by
        default those unobserved in some row: a block may have them observed throughout);
        ``None`` for one assignment."""
        single, x = parse_evidence(model, data)
        if single is not None:
            return None
        observed = set(j for j in range(x.shape[1]) if (x[:, j] >= 0).all())
        targets = _targets(model, options.get("variables"), observed)
        return torch.from_numpy(x), {**options, "variables": [model.variables[t] for t in targets]}

    def infer(self, model: Any, params: dict | None, data: Any, query: str, variables: Any = None,
              **options: Any) -> Any:
        """``query="marginals"``: ``{variable: probabilities}`` — ``(card,)`` tensors for one
        assignment ``{variable: state}``, ``(N, card)`` for a table of evidence rows (dict of
        lists with ``None`` for unobserved, DataFrame, or ``(N, V)`` state indices, -1 =
        unobserved), answered by one batched contraction per variable.
        ``query="map"``: the most probable joint state of ``variables`` (default: every
        unobserved variable, i.e. the MPE), other variables summed out — ``{variable: state}``
        or ``{variable: [state per row]}``."""
        check_options("exact query", options, ("variables",))
        params = model.check_params(params)
        net = compiled(model, params)
        single, x = parse_evidence(model, data)
        if single is not None:
            targets = _targets(model, variables, set(single))
            if query == "marginals":
                res = net.query_single(targets, single, "marginals")
                return {model.variables[t]: torch.from_numpy(np.asarray(res[t])) for t in targets}
            res = net.query_single(targets, single, "map")
            return {model.variables[t]: model.states[model.variables[t]][res[t]] for t in targets}
        observed = set(j for j in range(x.shape[1]) if (x[:, j] >= 0).all())
        targets = _targets(model, variables, observed)
        if query == "marginals":
            res = net.query_batch(targets, x, "marginals")
            return {model.variables[t]: torch.from_numpy(np.ascontiguousarray(res[t])) for t in targets}
        vals, _ = net.query_batch(targets, x, "map")
        return {model.variables[t]: [model.states[model.variables[t]][k] for k in vals[t]] for t in targets}
