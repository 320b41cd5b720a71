"""Gibbs sampling on discrete Bayesian networks (Geman & Geman 1984; Pearl 1987), for
networks too wide for exact elimination.

One *sweep* resamples every unobserved cell of every evidence row from its full
conditional ``p(x_v | Markov blanket) ∝ p(x_v | x_pa(v)) prod_{c in ch(v)} p(x_c | x_pa(c))``,
vectorised over rows and states (no Python loop over rows). Queries average the full
conditionals of the target variables over ``num_samples`` sweeps after ``warmup`` sweeps (Rao-Blackwellised
estimates, lower variance than counting draws). Fitting is Bayesian learning by data
augmentation (Tanner & Wong 1987): alternate a sweep over the missing cells with a draw
of every table from its Dirichlet posterior; the fit's tables are the posterior mean.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.inference.exact.bayesian_network import _targets, parse_evidence
from probgen.progress import progress as bar
from probgen.registry import Method, check_options, register


class GibbsKernel:
    """Single-site Gibbs transitions for a network with tables ``tables`` (list of
    float64 arrays in ``model.variables`` order)."""

    def __init__(self, model: Any, tables: list[np.ndarray]):
        self.n = len(model.variables)
        self.cards = list(model.cards)
        self.parents = [[model.index[p] for p in model.parents[v]] for v in model.variables]
        self.children = [[c for c in range(self.n) if j in self.parents[c]] for j in range(self.n)]
        self.set_tables(tables)

    def set_tables(self, tables: list[np.ndarray]) -> None:
        with np.errstate(divide="ignore"):
            self.log_tables = [np.log(t) for t in tables]

    def init_state(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Observed cells kept; missing cells drawn forward from their parents."""
        values = x.copy()
        for j in range(self.n):
            free = values[:, j] < 0
            if free.any():
                lp = self.log_tables[j][tuple(values[free][:, p] for p in self.parents[j])]
                values[free, j] = _draw(np.broadcast_to(lp, (int(free.sum()), self.cards[j])), rng)
        return values

    def conditional(self, values: np.ndarray, j: int) -> np.ndarray:
        """``p(x_j = k | Markov blanket)`` for every row, ``(N, card_j)``."""
        n = values.shape[0]
        lp = self.log_tables[j][tuple(values[:, p] for p in self.parents[j])]
        lp = np.array(np.broadcast_to(lp, (n, self.cards[j])))
        states = np.arange(self.cards[j])[None, :]
        for c in self.children[j]:
            idx = tuple(states if p == j else values[:, p][:, None] for p in self.parents[c]) + (values[:, c][:, None],)
            lp += self.log_tables[c][idx]
        m = lp.max(1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        p = np.exp(lp - m)
        z = p.sum(1, keepdims=True)
        return np.where(z > 0, p / np.where(z > 0, z, 1.0), 1.0 / self.cards[j])  # stuck rows: uniform

    def sweep(self, values: np.ndarray, free: np.ndarray, rng: np.random.Generator,
              record: dict[int, np.ndarray] | None = None) -> None:
        """Resample every free cell once, in topological order (in place). ``record[j]``
        accumulates the full conditionals of variable ``j``."""
        for j in range(self.n):
            rows = free[:, j]
            if not rows.any() and (record is None or j not in record):
                continue
            p = self.conditional(values, j)
            if rows.any():
                values[rows, j] = _draw_probs(p[rows], rng)
            if record is not None and j in record:
                record[j] += np.where(rows[:, None], p, np.eye(self.cards[j])[np.maximum(values[:, j], 0)])


def _draw_probs(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = rng.random((p.shape[0], 1))
    return np.minimum((u > np.cumsum(p, 1)).sum(1), p.shape[1] - 1)


def _draw(lp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = np.exp(lp - lp.max(1, keepdims=True))
    return _draw_probs(p / p.sum(1, keepdims=True), rng)


@register
class NetworkGibbs(Method):
    engine = "mcmc"
    name = "gibbs"
    needs = "a discrete Bayesian network (variables, parents, tables)"
    queries = ("marginals",)
    log_prob_kind = "exact"  # exact log-likelihood at the posterior-mean tables
    objective = "log_likelihood"
    steps_unit = "draws kept after warmup (data-augmentation rounds)"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.NetworkWithTables)

    def fit(self, model: Any, data: torch.Tensor, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, warmup: int | None = None, pseudo_count: float = 1.0, **options: Any) -> Fit:
        """Posterior-mean tables under symmetric Dirichlet(``pseudo_count``) priors, by
        ``steps`` (default 500) rounds of data augmentation after ``warmup`` (default
        ``steps // 4``). ``history`` records the complete-data log-likelihood per row of
        each round's draw (``"warmup"``: whether the round is discarded)."""
        check_options("mcmc", options, ("warmup", "pseudo_count"))
        if pseudo_count <= 0:
            raise ValueError(f"the Gibbs fit needs a proper Dirichlet prior: pseudo_count > 0, got {pseudo_count}")
        steps = 500 if steps is None else steps
        warmup = steps // 4 if warmup is None else warmup
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
            raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
        rng = np.random.default_rng(seed)
        x = data.numpy()
        free = x < 0
        params = model.check_params(dict(model.check_params(None), **init) if init else None)
        tables = [params[f"probs_{v}"].numpy() for v in model.variables]
        kernel = GibbsKernel(model, tables)
        values = kernel.init_state(x, rng)
        mean = [np.zeros_like(t) for t in tables]
        history = []
        for step in bar(range(warmup + steps), desc="gibbs", enabled=progress):
            kernel.sweep(values, free, rng)
            tables, ll = [], 0.0
            for j in range(kernel.n):
                scope = kernel.parents[j] + [j]
                counts = np.zeros(model.table_shape(model.variables[j]))
                np.add.at(counts, tuple(values[:, u] for u in scope), 1.0)
                g = rng.gamma(counts + pseudo_count)
                t = g / g.sum(-1, keepdims=True)
                tables.append(t)
                with np.errstate(divide="ignore"):
                    ll += float((counts * np.log(np.where(counts > 0, t, 1.0))).sum())
            kernel.set_tables(tables)
            history.append({"step": step, "log_likelihood": ll / len(x), "warmup": step < warmup})
            if step >= warmup:
                for m, t in zip(mean, tables):
                    m += t / steps
        if steps == 0:
            mean = tables
        out = {f"probs_{v}": torch.from_numpy(m) for v, m in zip(model.variables, mean)}
        return Fit(model, out, history, engine=self.engine, method=self.name,
                   options={"warmup": warmup, "pseudo_count": pseudo_count})

    def infer(self, model: Any, params: dict | None, data: Any, query: str, variables: Any = None,
              num_samples: int = 2000, warmup: int | None = None, seed: int | None = None,
              **options: Any) -> Any:
        """Approximate posterior marginals of ``variables`` given one assignment or a table
        of evidence rows (as the exact engine takes them), averaged over ``num_samples``
        sweeps after ``warmup`` sweeps (default ``num_samples // 10``); all rows are sampled
        side by side."""
        check_options("mcmc query", options, ("variables", "num_samples", "warmup", "seed"))
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if warmup is not None and (not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0):
            raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
        params = model.check_params(params)
        single, x = parse_evidence(model, data)
        if single is not None:
            x = np.full((1, len(model.variables)), -1, dtype=np.int64)
            for j, k in single.items():
                x[0, j] = k
            observed = set(single)
        else:
            observed = set(j for j in range(x.shape[1]) if (x[:, j] >= 0).all())
        targets = _targets(model, variables, observed)
        rng = np.random.default_rng(seed)
        kernel = GibbsKernel(model, [params[f"probs_{v}"].numpy() for v in model.variables])
        free = x < 0
        values = kernel.init_state(x, rng)
        warmup = num_samples // 10 if warmup is None else warmup
        for _ in range(warmup):
            kernel.sweep(values, free, rng)
        record = {t: np.zeros((x.shape[0], model.cards[t])) for t in targets}
        for _ in range(num_samples):
            kernel.sweep(values, free, rng, record)
        out = {}
        for t in targets:
            probs = torch.from_numpy(record[t] / num_samples)
            out[model.variables[t]] = probs[0] if single is not None else probs
        return out
