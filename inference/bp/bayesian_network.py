"""Loopy belief propagation on discrete Bayesian networks (`probgen.ops.message_passing`), for
networks whose exact elimination plan is too large.

The network is its factor set: one factor per family, θ = log p(v | pa(v)) (zero table
entries become −∞), so Z = 1 and, with evidence e, the Bethe log Z estimates log p(e).
Queries take the exact engine's evidence forms (one assignment ``{variable: state}``, or a
table of rows: dict of lists with ``None``, DataFrame, ``(N, V)`` codes with −1) and
answer every row at once, in chunks of rows that bound the memory, on the ancestral part
of the network only (the query and observed variables and their ancestors; the rest is
barren and sums to one):
``"marginals"`` – ``{variable: beliefs}`` (``(card,)`` or ``(N, card)``);
``"map"`` – each variable's max-product max-marginal argmax (exact on polytrees).

``pg.fit`` counts complete rows exactly (no inference needed); with missing cells it runs
EM whose E-step takes each family's expected counts from the BP factor beliefs instead of
exact elimination (approximate EM; Heskes, Zoeter & Wiegerinck 2004).

`ApproximateNetwork` is the base the approximate network methods share (``bp`` here,
``meanfield`` in `probgen.inference.meanfield.bayesian_network`).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from probgen import protocols
from probgen.ops.message_passing import belief_propagation
from probgen.registry import register

from ..em.bayesian_network import NetworkEM
from ..exact.bayesian_network import _targets, evidence_rows
from .factor_graph import bp_options

#: rows per chunk are chosen so that the largest per-chunk message tensor has about this many entries
CHUNK_ENTRIES = 2 ** 22


def network_factors(model: Any, params: dict) -> tuple[list[int], list[tuple], list[torch.Tensor]]:
    """``(cards, scopes, log tables)`` of a network: one factor per family (parents, v)."""
    cards = list(model.cards)
    scopes = [tuple(model.index[p] for p in model.parents[v]) + (model.index[v],) for v in model.variables]
    tables = [params[f"probs_{v}"].to(torch.float64).log() for v in model.variables]
    return cards, scopes, tables


def ancestral(model: Any, variables: set[int]) -> list[int]:
    """``variables`` and their ancestors, in topological order: the rest of the network is
    barren for a query on them (it sums to one), so BP runs on this part only — exact
    pruning that also removes loops."""
    keep, stack = set(), list(variables)
    while stack:
        j = stack.pop()
        if j not in keep:
            keep.add(j)
            stack.extend(model.index[p] for p in model.parents[model.variables[j]])
    return sorted(keep)


def run_rows(model: Any, params: dict, x: np.ndarray, approximate: Callable, *,
             keep: list[int] | None = None) -> tuple[list, list | None, torch.Tensor | None]:
    """An approximation on every row of ``x`` (N, V) (−1 = unobserved), chunked:
    ``approximate(cards, scopes, tables, rows)`` → (log-beliefs per variable (B, card),
    factor beliefs summed over the rows, log p(row) estimates (B,)), e.g. loopy BP or mean
    field. Returns the per-variable log-beliefs ``(N, card)``, the summed factor beliefs
    and the estimates ``(N,)``. ``keep``: run on the families of these variables only (an
    ancestral set, see `ancestral`); beliefs of the others are ``None``."""
    cards, scopes, tables = network_factors(model, params)
    if keep is not None:
        local = {j: i for i, j in enumerate(keep)}
        cards, tables = [cards[j] for j in keep], [tables[j] for j in keep]
        scopes = [tuple(local[u] for u in scopes[j]) for j in keep]
        x = np.asarray(x)[:, keep]
    per_row = sum(t.numel() for t in tables) * max(len(s) for s in scopes)
    chunk = max(1, CHUNK_ENTRIES // per_row)
    log_b, sums, log_z = [[] for _ in cards], None, []
    ev = torch.from_numpy(np.asarray(x, dtype=np.int64))
    for start in range(0, len(ev), chunk):
        b, s, z = approximate(cards, scopes, tables, ev[start:start + chunk])
        for v, bv in enumerate(b):
            log_b[v].append(bv)
        if s is not None:
            sums = s if sums is None else [a + c for a, c in zip(sums, s)]
        if z is not None:
            log_z.append(z)
    log_b = [torch.cat(b) for b in log_b]
    if keep is not None:
        full = [None] * len(model.variables)
        for i, j in enumerate(keep):
            full[j] = log_b[i]
        log_b = full
    return log_b, sums, (torch.cat(log_z) if log_z else None)


class ApproximateNetwork(NetworkEM):
    """Queries and EM for networks through one approximation of the posterior given
    evidence (`approximate`, as `run_rows` calls it); the E-step's expected
    counts are its factor beliefs."""

    needs = "a discrete Bayesian network (variables, parents, tables)"
    queries = ("marginals", "map")
    objective = "log_likelihood"
    log_prob_kind = "exact"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.NetworkWithTables)

    def approximate(self, cards, scopes, tables, rows, query: str = "marginals", **options):
        raise NotImplementedError

    def expected_counts(self, model: Any, params: dict, x) -> tuple[list[torch.Tensor], Any]:
        """Expected family counts from the approximation's factor beliefs, and its estimate
        of the log-likelihood of the rows (a sum)."""
        _, sums, log_z = run_rows(model, params, x, self.approximate)
        return sums, log_z.sum()

    def _infer(self, model: Any, params: dict | None, data: Any, query: str, variables: Any,
               options: dict) -> Any:
        params = model.check_params(params)
        single, x, observed = evidence_rows(model, data)
        targets = _targets(model, variables, observed)
        seen = set(np.flatnonzero((np.asarray(x) >= 0).any(0)).tolist())
        with torch.no_grad():
            log_b, _, _ = run_rows(model, params, x,
                                   lambda *a: self.approximate(*a, query=query, **options),
                                   keep=ancestral(model, seen | set(targets)))
        names = model.variables
        if query == "map":
            best = {t: log_b[t].argmax(-1) for t in targets}
            if single is not None:
                return {names[t]: model.states[names[t]][int(best[t][0])] for t in targets}
            return {names[t]: [model.states[names[t]][int(k)] for k in best[t]] for t in targets}
        if single is not None:
            return {names[t]: log_b[t][0].exp() for t in targets}
        return {names[t]: log_b[t].exp() for t in targets}


@register
class NetworkBP(ApproximateNetwork):
    engine = "bp"
    name = "bayesian_network"
    steps_unit = "EM iterations with a BP E-step (complete data: one closed-form step)"

    def approximate(self, cards, scopes, tables, rows, query: str = "marginals", **options):
        res = belief_propagation(cards, scopes, tables, rows, max_product=query == "map",
                                 **(options or bp_options()))
        return res.log_beliefs, res.factor_beliefs, res.log_z

    def infer(self, model: Any, params: dict | None, data: Any, query: str, variables: Any = None,
              damping: float = 0.5, max_iters: int = 200, bp_tol: float = 1e-8) -> Any:
        """``query="marginals"`` or ``"map"``; ``variables``: the query variables (default:
        every unobserved one); ``damping``, ``max_iters``, ``bp_tol``: the message passing."""
        return self._infer(model, params, data, query, variables, bp_options(damping, max_iters, bp_tol))
