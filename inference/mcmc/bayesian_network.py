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
from probgen.inference.exact.bayesian_network import _targets, evidence_rows
from probgen.loops.mcmc import Kernel, check_budget, run
from probgen.registry import Method, check_options, register


class Sweeps:
    """Single-site Gibbs sweeps for a network, over the evidence rows of ``C`` chains side by
    side: ``values`` ``(C * N, V)`` state indices, chain-major (chain ``c`` owns rows
    ``c*N .. (c+1)*N - 1``), each chain with its own tables (``set_tables``: per chain a list
    of float64 arrays in ``model.variables`` order) and its own NumPy generator, so every
    chain draws exactly what it would draw alone."""

    def __init__(self, model: Any, tables: list[list[np.ndarray]], rngs: list[np.random.Generator], rows: int):
        self.n = len(model.variables)
        self.cards = list(model.cards)
        self.parents = [[model.index[p] for p in model.parents[v]] for v in model.variables]
        self.children = [[c for c in range(self.n) if j in self.parents[c]] for j in range(self.n)]
        self.rngs, self.rows = rngs, rows
        self.chain = np.repeat(np.arange(len(rngs)), rows)      # the chain of every row
        self.set_tables(tables)

    def set_tables(self, tables: list[list[np.ndarray]]) -> None:
        """``tables[c][j]``: chain ``c``'s table of variable ``j``; kept as ``(C, *table)`` logs."""
        with np.errstate(divide="ignore"):
            self.log_tables = [np.log(np.stack([t[j] for t in tables])) for j in range(self.n)]

    def init_state(self, x: np.ndarray) -> np.ndarray:
        """``x`` ``(N, V)`` (-1: missing) repeated per chain; missing cells drawn forward from
        their parents, each chain with its generator."""
        values = np.concatenate([x] * len(self.rngs))
        for j in range(self.n):
            for c, rng in enumerate(self.rngs):
                block = values[c * self.rows:(c + 1) * self.rows]
                free = block[:, j] < 0
                if free.any():
                    lp = self.log_tables[j][(c,) + tuple(block[free][:, p] for p in self.parents[j])]
                    block[free, j] = _draw(np.broadcast_to(lp, (int(free.sum()), self.cards[j])), rng)
        return values

    def conditional(self, values: np.ndarray, j: int) -> np.ndarray:
        """``p(x_j = k | Markov blanket)`` for every row, ``(C * N, card_j)``."""
        n = values.shape[0]
        lp = self.log_tables[j][(self.chain,) + tuple(values[:, p] for p in self.parents[j])]
        lp = np.array(np.broadcast_to(lp, (n, self.cards[j])))
        states = np.arange(self.cards[j])[None, :]
        for c in self.children[j]:
            idx = (self.chain[:, None],) + tuple(states if p == j else values[:, p][:, None]
                                                 for p in self.parents[c]) + (values[:, c][:, None],)
            lp += self.log_tables[c][idx]
        m = lp.max(1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        p = np.exp(lp - m)
        z = p.sum(1, keepdims=True)
        return np.where(z > 0, p / np.where(z > 0, z, 1.0), 1.0 / self.cards[j])  # stuck rows: uniform

    def sweep(self, values: np.ndarray, free: np.ndarray, record: dict[int, np.ndarray] | None = None) -> None:
        """Resample every free cell once, in topological order (in place; ``free`` ``(C * N, V)``).
        ``record[j]`` receives the full conditionals of variable ``j`` (observed rows: their
        indicator)."""
        for j in range(self.n):
            rows = free[:, j]
            if not rows.any() and (record is None or j not in record):
                continue
            p = self.conditional(values, j)
            if rows.any():
                for c, rng in enumerate(self.rngs):   # each chain's draws from its own generator
                    block = slice(c * self.rows, (c + 1) * self.rows)
                    mine = rows[block]
                    if mine.any():
                        values[block][mine, j] = _draw_probs(p[block][mine], rng)
            if record is not None and j in record:
                record[j] = np.where(rows[:, None], p, np.eye(self.cards[j])[np.maximum(values[:, j], 0)])


def _draw_probs(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = rng.random((p.shape[0], 1))
    return np.minimum((u > np.cumsum(p, 1)).sum(1), p.shape[1] - 1)


def _draw(lp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = np.exp(lp - lp.max(1, keepdims=True))
    return _draw_probs(p / p.sum(1, keepdims=True), rng)


class Augmentation(Kernel):
    """Data augmentation for a network's tables (Tanner & Wong 1987), vectorised over chains:
    one transition is a Gibbs sweep over the missing cells, then a draw of every table from
    its Dirichlet(counts + ``pseudo_count``) posterior. State: the rows ``(C * N, V)``, the
    chains' tables and their complete-data log-likelihoods per row; the kept draw is every
    table, ``probs_<variable>``."""

    vectorised = True
    record_warmup = True
    name = "mcmc gibbs"

    def __init__(self, model: Any, x: np.ndarray, tables: list[np.ndarray], pseudo_count: float):
        self.model, self.x, self.start, self.pseudo_count = model, x, tables, pseudo_count

    def init(self, seeds: list, chains: list, warmup: int) -> dict:
        rngs = [np.random.default_rng(s) for s in seeds]
        sweeps = Sweeps(self.model, [self.start] * len(rngs), rngs, len(self.x))
        values = sweeps.init_state(self.x)
        return {"sweeps": sweeps, "values": values, "free": np.concatenate([self.x < 0] * len(rngs)),
                "tables": [list(self.start) for _ in rngs], "ll": [0.0] * len(rngs)}

    def step(self, state: dict, warmup: bool) -> dict:
        sweeps, model = state["sweeps"], self.model
        sweeps.sweep(state["values"], state["free"])
        n = len(self.x)
        for c, rng in enumerate(sweeps.rngs):
            values = state["values"][c * n:(c + 1) * n]
            tables, ll = [], 0.0
            for j in range(sweeps.n):
                scope = sweeps.parents[j] + [j]
                counts = np.zeros(model.table_shape(model.variables[j]))
                np.add.at(counts, tuple(values[:, u] for u in scope), 1.0)
                g = rng.gamma(counts + self.pseudo_count)
                t = g / g.sum(-1, keepdims=True)
                tables.append(t)
                with np.errstate(divide="ignore"):
                    ll += float((counts * np.log(np.where(counts > 0, t, 1.0))).sum())
            state["tables"][c], state["ll"][c] = tables, ll
        sweeps.set_tables(state["tables"])
        return state

    def draw(self, state: dict) -> dict[str, torch.Tensor]:
        return {f"probs_{v}": torch.from_numpy(np.stack([t[j] for t in state["tables"]]))
                for j, v in enumerate(self.model.variables)}

    def stats(self, state: dict) -> dict:
        return {"log_likelihood": [ll / len(self.x) for ll in state["ll"]]}


class Query(Kernel):
    """Gibbs sweeps at fixed tables for approximate marginals: the kept draw is the full
    conditional of every target variable in every evidence row (Rao-Blackwellised: the
    driver averages them, ``averaged``), one chain over all rows side by side."""

    name = "mcmc gibbs query"

    def __init__(self, model: Any, x: np.ndarray, tables: list[np.ndarray], targets: list[int]):
        self.model, self.x, self.tables, self.targets = model, x, tables, targets
        self.averaged = tuple(targets)

    def init(self, seed: Any, chain: int, warmup: int) -> dict:
        sweeps = Sweeps(self.model, [self.tables], [np.random.default_rng(seed)], len(self.x))
        return {"sweeps": sweeps, "values": sweeps.init_state(self.x), "free": self.x < 0, "record": None}

    def step(self, state: dict, warmup: bool) -> dict:
        # the conditionals are only needed for the kept sweeps
        state["record"] = None if warmup else dict.fromkeys(self.targets)
        state["sweeps"].sweep(state["values"], state["free"], state["record"])
        return state

    def draw(self, state: dict) -> dict:
        return dict(state["record"])


@register
class NetworkGibbs(Method):
    # chains spread over the ranks (probgen.loops.mcmc); each chain has its own generator
    # from its global seed, so the split keeps every chain's draws
    parallel = "chains"
    engine = "mcmc"
    name = "gibbs"
    needs = "a discrete Bayesian network (variables, parents, tables)"
    queries = ("marginals",)
    log_prob_kind = "exact"  # exact log-likelihood at the posterior-mean tables
    objective = "log_likelihood"
    steps_unit = "data-augmentation rounds per chain after warmup (every thin-th kept)"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.NetworkWithTables)

    def fit(self, model: Any, data: torch.Tensor, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, warmup: int | None = None, num_chains: int = 1, thin: int = 1,
            pseudo_count: float = 1.0, callback: Any = None, **options: Any) -> Fit:
        """Posterior-mean tables under symmetric Dirichlet(``pseudo_count``) priors, by
        ``steps`` (default 500) rounds of data augmentation after ``warmup`` (default
        ``steps // 4``), every ``thin``-th kept, in ``num_chains`` chains run side by side
        (`Augmentation`). ``history`` records the complete-data log-likelihood per row
        of each round's draw (``"warmup"``: whether the round is discarded; ``"chain"``)."""
        check_options("mcmc", options, ("warmup", "num_chains", "thin", "pseudo_count", "callback"))
        if pseudo_count <= 0:
            raise ValueError(f"the Gibbs fit needs a proper Dirichlet prior: pseudo_count > 0, got {pseudo_count}")
        steps = 500 if steps is None else steps
        warmup = steps // 4 if warmup is None else warmup
        check_budget(steps, warmup, num_chains, thin)
        params = model.check_params(dict(model.check_params(None), **init) if init else None)
        kernel = Augmentation(model, data.numpy(), [params[f"probs_{v}"].numpy() for v in model.variables],
                              pseudo_count)
        chains = run(kernel, steps=steps, warmup=warmup, num_chains=num_chains, thin=thin, seed=seed,
                     progress=progress, callback=callback)
        draws = chains.draws
        if draws:
            # the posterior mean, summed draw by draw (chain-major) as the one-chain loop did
            total = draws[f"probs_{model.variables[0]}"].shape[:2].numel()
            out = {}
            for k, d in draws.items():
                m = np.zeros(d.shape[2:])
                for t in d.flatten(0, 1).numpy():
                    m += t / total
                out[k] = torch.from_numpy(m)
        else:  # no kept round (steps=0): the last round's tables of the first chain
            out = {f"probs_{v}": torch.from_numpy(t) for v, t in zip(model.variables, chains.states["tables"][0])}
        return Fit(model, out, chains.history, engine=self.engine, method=self.name,
                   state={"draws": draws, "sample_stats": chains.stats},
                   options={"warmup": warmup, "num_chains": num_chains, "thin": thin, "pseudo_count": pseudo_count})

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
        single, x, observed = evidence_rows(model, data)
        targets = _targets(model, variables, observed)
        warmup = num_samples // 10 if warmup is None else warmup
        tables = [params[f"probs_{v}"].numpy() for v in model.variables]
        chains = run(Query(model, x, tables, list(targets)), steps=num_samples, warmup=warmup, seed=seed,
                     progress=False)
        record = {t: v[0] for t, v in chains.sums.items()}   # the one chain
        out = {}
        for t in targets:
            probs = torch.from_numpy(record[t] / num_samples)
            out[model.variables[t]] = probs[0] if single is not None else probs
        return out
