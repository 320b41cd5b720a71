"""Exact queries on a discrete Bayesian network by variable elimination
(`probgen.ops.elimination`, in probability space), shared by the declaration (``log_prob``), the ``exact``
engine (marginals, MAP) and the ``em`` engine (expected counts).

What does not depend on the evidence is computed once per network and set of tables
and cached: float64 tables, factor scopes, a min-fill elimination order of the whole
network, each variable's ancestors, plans per (query, observed columns), and, for
tables of evidence rows that observe the same few columns, the joint table of the
query and those columns (the answer for every row is then a lookup).

The network is duck-typed: anything with ``variables``, ``parents``, ``cards``,
``index`` and tables named ``probs_<v>``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from probgen.ops.elimination import MAX_ENTRIES, Plan, batched_order, decode, min_fill_order

#: evidence tables whose observed columns and query span at most this many joint
#: entries are answered from a cached joint table (one lookup per row)
JOINT_LOOKUP_ENTRIES = 2 ** 16
#: rows of a table are contracted in chunks whose largest intermediate has about this many entries
ROW_CHUNK_ENTRIES = 2 ** 21
_CACHE_SIZE = 4


def compiled(bn: Any, params: dict[str, torch.Tensor]) -> "CompiledNetwork":
    """The compiled form of ``bn`` with tables ``params`` (cached on ``bn``: the last few
    sets of tables, held so their ids stay valid)."""
    cache = bn.__dict__.setdefault("_cache", {})
    key = tuple(id(params[f"probs_{v}"]) for v in bn.variables)
    entry = cache.get(key)
    if entry is None:
        if len(cache) >= _CACHE_SIZE:
            cache.pop(next(iter(cache)))
        entry = cache[key] = (CompiledNetwork(bn, params), [params[f"probs_{v}"] for v in bn.variables])
    return entry[0]


class CompiledNetwork:
    """A network's tables as float64 NumPy factors plus everything a query reuses."""

    def __init__(self, bn: Any, params: dict[str, torch.Tensor]):
        self.variables = list(bn.variables)
        self.n = len(self.variables)
        self.cards = list(bn.cards)
        idx = bn.index
        self.parents = [[idx[p] for p in bn.parents[v]] for v in self.variables]
        self.scopes = [tuple(self.parents[j]) + (j,) for j in range(self.n)]
        self.tables = [np.ascontiguousarray(params[f"probs_{v}"].detach().cpu().numpy().astype(np.float64))
                       for v in self.variables]
        self.order = min_fill_order(self.scopes, self.cards, range(self.n))
        self.rank = {v: k for k, v in enumerate(self.order)}
        anc: list[frozenset] = []
        for j in range(self.n):  # topological order: parents come first
            s = {j}
            for p in self.parents[j]:
                s |= anc[p]
            anc.append(frozenset(s))
        self.ancestors = anc
        self.plans: dict = {}
        self.joints: dict = {}

    # ---- helpers ---------------------------------------------------------------------
    def _plan(self, key: Any, build) -> Plan:
        plan = self.plans.get(key)
        if plan is None:
            if len(self.plans) > 512:
                self.plans.clear()
            plan = self.plans[key] = build()
        return plan

    def _batched_order(self, scopes: list, ind_cols: Sequence[int], eliminate: Sequence[int]) -> list[int]:
        """A min-fill order for CPT factors ``scopes`` plus batched indicators on ``ind_cols``."""
        return batched_order(list(scopes) + [(j,) for j in ind_cols],
                             [False] * len(scopes) + [True] * len(ind_cols), self.cards, eliminate)

    def _relevant(self, vars_: Sequence[int]) -> list[int]:
        """Ancestors of ``vars_`` (the rest of the network sums to one), topologically."""
        s = set()
        for v in vars_:
            s |= self.ancestors[v]
        return sorted(s)

    # ---- one assignment --------------------------------------------------------------
    def query_single(self, targets: Sequence[int], evidence: dict[int, int], mode: str = "marginals"):
        """Posterior marginals ``{v: (card,)}`` of ``targets`` given one assignment, or
        (``mode="map"``) the most probable joint state of ``targets`` (summing out the
        other unobserved variables) and its probability ``p(targets, evidence)``."""
        out = {}
        groups = [[t] for t in targets] if mode == "marginals" else [list(targets)]
        ev_key = tuple(sorted(evidence))
        for group in groups:
            if mode == "marginals" and group[0] in evidence:  # an observed target: a point mass
                res = np.zeros(self.cards[group[0]])
                res[evidence[group[0]]] = 1.0
                out[group[0]] = res
                continue
            key = ("s", mode, tuple(group), ev_key)
            entry = self.plans.get(key)
            if entry is None:  # everything but the evidence values: cached per observed set
                entry = self.plans[key] = self._single_plan(group, set(evidence), mode)
            rel, slicing, plan, order = entry
            tensors = [self.tables[j] if not sl else
                       np.asarray(self.tables[j][tuple(evidence[u] if u is not None else slice(None) for u in sl)])
                       for j, sl in zip(rel, slicing)]
            res, _, argmax = plan.run(tensors)
            if mode == "marginals":
                z = res.sum()
                if not z > 0:
                    raise ValueError("the evidence has probability zero under this network")
                out[group[0]] = res / z
            else:
                if not float(res) > 0:
                    raise ValueError("the evidence has probability zero under this network")
                vals = decode(argmax, order, {}, None)
                out = {u: (int(vals[u]) if u in vals else evidence[u]) for u in group}
        return out

    def largest_intermediate(self, targets: Sequence[int], evidence: Sequence[int]) -> int:
        """Entries of the largest intermediate table the exact marginals of ``targets`` given
        the observed variables ``evidence`` would build (before any is built; the plans are
        not refused or cached here): what decides whether exact elimination is feasible."""
        return max((self._single_plan([t], set(evidence), "marginals", max_entries=math.inf)[2].largest
                    for t in targets if t not in set(evidence)), default=0)

    def _single_plan(self, group: list[int], evidence: set[int], mode: str, max_entries: float = MAX_ENTRIES):
        if len(self.plans) > 4096:
            self.plans.clear()
        rel = self._relevant(list(group) + list(evidence))
        scopes, slicing = [], []
        for j in rel:
            s = self.scopes[j]
            if any(u in evidence for u in s):
                slicing.append(tuple(u if u in evidence else None for u in s))
                s = tuple(u for u in s if u not in evidence)
            else:
                slicing.append(())
            scopes.append(s)
        gset = set(group)
        summed = sorted((u for u in rel if u not in evidence and u not in gset), key=self.rank.__getitem__)
        if mode == "marginals":
            plan = Plan(scopes, [False] * len(scopes), self.cards, summed, keep=tuple(group), max_entries=max_entries)
            return rel, slicing, plan, summed
        maxed = sorted((u for u in gset if u not in evidence), key=self.rank.__getitem__)
        plan = Plan(scopes, [False] * len(scopes), self.cards, summed + maxed, keep=(), max_vars=maxed,
                    max_entries=max_entries)
        return rel, slicing, plan, summed + maxed

    # ---- tables of evidence rows ------------------------------------------------------
    def _indicator_factors(self, x: np.ndarray, cols: Sequence[int]):
        """Per observed column, an ``(N, card)`` indicator: one-hot, or ones when missing."""
        tensors, scopes = [], []
        n = x.shape[0]
        for j in cols:
            ind = np.zeros((n, self.cards[j]))
            col = x[:, j]
            obs = col >= 0
            ind[np.nonzero(obs)[0], col[obs]] = 1.0
            ind[~obs] = 1.0
            tensors.append(ind)
            scopes.append((j,))
        return tensors, scopes

    def _chunks(self, plan: Plan, n: int):
        """Row ranges whose batched intermediates stay near ``ROW_CHUNK_ENTRIES`` entries
        (``plan.largest`` is per row: plans for tables of rows are built with batch size 1)."""
        size = max(1, ROW_CHUNK_ENTRIES // max(plan.largest, 1))
        return [(a, min(a + size, n)) for a in range(0, n, size)]

    def _rows_plan(self, key: Any, scopes: list, cols: Sequence[int], eliminate: Sequence[int],
                   keep: tuple = (), max_vars: Any = ()) -> Plan:
        """A cached plan for CPT factors ``scopes`` plus batched indicators on ``cols``."""
        def build() -> Plan:
            if max_vars:  # sum-product first, then max-product (a valid order for marginal MAP)
                order = self._batched_order(scopes, cols, [u for u in eliminate if u not in max_vars])
                order += self._batched_order(scopes, cols, [u for u in eliminate if u in max_vars])
            else:
                order = self._batched_order(scopes, cols, eliminate)
            return Plan(list(scopes) + [(j,) for j in cols], [False] * len(scopes) + [True] * len(cols),
                        self.cards, order, keep=keep, max_vars=max_vars, batch_size=1)
        return self._plan(key, build)

    def query_batch(self, targets: Sequence[int], x: np.ndarray, mode: str = "marginals"):
        """Like `query_single` for a table ``x`` ``(N, V)`` of state indices (-1 =
        missing), in one batched contraction per target (marginals ``{v: (N, card)}``)
        or one for all targets (MAP ``{v: (N,)}`` plus ``log p(targets, evidence)``);
        rows are processed in chunks that bound the intermediates' memory."""
        n = x.shape[0]
        observed = [j for j in range(self.n) if (x[:, j] >= 0).any()]
        if mode != "marginals":
            return self._batched_map(list(targets), x, observed)
        out = {}
        for t in targets:
            cols = [j for j in observed if j != t]
            complete = bool((x[:, cols] >= 0).all()) if cols else True
            span = math.prod(self.cards[j] for j in cols) * self.cards[t]
            if t not in observed and span <= JOINT_LOOKUP_ENTRIES:
                joint = self._joint(t, tuple(cols))
                if complete:  # a lookup per row
                    rows = joint[tuple(x[:, j] for j in cols)] if cols else np.broadcast_to(joint, (n,) + joint.shape)
                else:  # sum the joint against the rows' indicators (all ones where a cell is missing)
                    plan = self._plan(("j", t, tuple(cols)), lambda: Plan(
                        [tuple(cols) + (t,)] + [(j,) for j in cols], [False] + [True] * len(cols), self.cards,
                        cols, keep=(t,), batch_size=1))
                    rows = np.concatenate([plan.run([joint] + self._indicator_factors(x[a:b], cols)[0],
                                                    rescale=False)[0] for a, b in self._chunks(plan, n)])
            else:
                rows = self._batched(t, x, cols + ([t] if t in observed else []))
            z = rows.sum(1, keepdims=True)
            if not (z > 0).all():
                bad = int(np.nonzero(~(z[:, 0] > 0))[0][0])
                raise ValueError(f"evidence row {bad} has probability zero under this network")
            out[t] = rows / z
        return out

    def _joint(self, t: int, cols: tuple[int, ...]) -> np.ndarray:
        """The joint table ``p(cols..., t)`` (cached: it does not depend on the rows)."""
        key = (t, cols)
        joint = self.joints.get(key)
        if joint is None:
            rel = self._relevant((t,) + cols)
            keep = cols + (t,)
            order = sorted((u for u in rel if u not in keep), key=self.rank.__getitem__)
            scopes = [self.scopes[j] for j in rel]
            plan = Plan(scopes, [False] * len(rel), self.cards, order, keep=keep)
            joint, _, _ = plan.run([self.tables[j] for j in rel])
            if len(self.joints) > 64:
                self.joints.clear()
            self.joints[key] = joint
        return joint

    def _batched(self, t: int, x: np.ndarray, cols: list[int]) -> np.ndarray:
        n = x.shape[0]
        rel = self._relevant([t] + cols)
        plan = self._rows_plan(("b", t, tuple(cols)), [self.scopes[j] for j in rel], cols,
                               [u for u in rel if u != t], keep=(t,))
        tables = [self.tables[j] for j in rel]
        parts = []
        for a, b in self._chunks(plan, n):
            res, _, _ = plan.run(tables + self._indicator_factors(x[a:b], cols)[0])
            parts.append(res if res.ndim == 2 else np.broadcast_to(res, (b - a,) + res.shape))
        return np.concatenate(parts)

    def _batched_map(self, targets: list[int], x: np.ndarray, cols: list[int]):
        n = x.shape[0]
        tset = set(targets)
        rel = self._relevant(targets + cols)
        plan = self._rows_plan(("m", tuple(targets), tuple(cols)), [self.scopes[j] for j in rel], cols,
                               rel, max_vars=tset)
        tables = [self.tables[j] for j in rel]
        logp = np.empty(n)
        vals = {u: np.empty(n, dtype=np.int64) for u in targets}
        for a, b in self._chunks(plan, n):
            res, log_scale, argmax = plan.run(tables + self._indicator_factors(x[a:b], cols)[0])
            with np.errstate(divide="ignore"):
                logp[a:b] = np.log(np.broadcast_to(res, (b - a,))) + log_scale
            dec = decode(argmax, plan.order, {}, b - a)
            for u in targets:
                vals[u][a:b] = dec[u]
        if not np.isfinite(logp).all():
            bad = int(np.nonzero(~np.isfinite(logp))[0][0])
            raise ValueError(f"evidence row {bad} has probability zero under this network")
        return vals, logp

    def _missing_rows_plan(self, xm: np.ndarray) -> tuple[Plan, list[int]]:
        cols = [j for j in range(self.n) if (xm[:, j] >= 0).any()]
        return self._rows_plan(("lp", tuple(cols)), list(self.scopes), cols, range(self.n)), cols

    def log_prob_rows(self, x: np.ndarray) -> np.ndarray:
        """``log p(observed cells of each row)``, ``(N,)``: complete rows by a lookup per
        variable, the others by a batched contraction with the missing cells summed out."""
        n = x.shape[0]
        out = np.empty(n)
        full = (x >= 0).all(1)
        if full.any():
            xf = x[full]
            lp = np.zeros(len(xf))
            with np.errstate(divide="ignore"):
                for j in range(self.n):
                    lp += np.log(self.tables[j][tuple(xf[:, u] for u in self.scopes[j])])
            out[full] = lp
        if (~full).any():
            xm = x[~full]
            plan, cols = self._missing_rows_plan(xm)
            parts = []
            for a, b in self._chunks(plan, len(xm)):
                res, log_scale, _ = plan.run(self.tables + self._indicator_factors(xm[a:b], cols)[0])
                with np.errstate(divide="ignore"):
                    parts.append(np.log(np.broadcast_to(res, (b - a,))) + log_scale)
            out[~full] = np.concatenate(parts)
        return out

    def expected_counts(self, tables: list[torch.Tensor], x: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
        """E-step: for every variable, the expected counts ``sum_n p(x_v, x_pa(v) | row n)``
        (shape of its table) and ``sum_n log p(row n)``, from a batched contraction of
        the rows with missing cells and its gradient (d log Z / d theta * theta is the
        family posterior; Darwiche 2003). Complete rows are counted directly."""
        counts = [torch.zeros_like(t) for t in tables]
        full = (x >= 0).all(1)
        ll = torch.zeros((), dtype=torch.float64)
        if full.any():
            xf = torch.from_numpy(x[full])
            for j in range(self.n):
                flat = torch.zeros(tables[j].numel(), dtype=torch.float64)
                strides = np.cumprod([1] + [self.cards[u] for u in self.scopes[j]][::-1])[:-1][::-1]
                lin = sum(xf[:, u] * int(s) for u, s in zip(self.scopes[j], strides))
                flat.index_add_(0, lin, torch.ones(len(lin), dtype=torch.float64))
                counts[j] += flat.reshape(tables[j].shape)
                ll = ll + torch.log(tables[j][tuple(xf[:, u] for u in self.scopes[j])]).sum()
        if (~full).any():
            xm = x[~full]
            plan, cols = self._missing_rows_plan(xm)
            leaves = [t.detach().clone().requires_grad_(True) for t in tables]
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # row chunks are small kernels: thread start-up costs more than it saves
            try:
                grads = [torch.zeros_like(t) for t in tables]
                for a, b in self._chunks(plan, len(xm)):
                    ind = [torch.from_numpy(i) for i in self._indicator_factors(xm[a:b], cols)[0]]
                    res, log_scale, _ = plan.run(leaves + ind)
                    logz = (torch.log(res.expand(b - a)) + log_scale).sum()
                    for g, d in zip(grads, torch.autograd.grad(logz, leaves)):
                        g += d
                    ll = ll + logz.detach()
            finally:
                torch.set_num_threads(threads)
            for j in range(self.n):
                counts[j] += grads[j] * tables[j]
        return counts, ll


__all__ = ["compiled", "CompiledNetwork", "MAX_ENTRIES"]
