"""Factor graphs over discrete variables: a Markov network given by log-potential tables.

    p(x) = exp(Σ_f φ_f(x_{scope f})) / Z,    log Z = log Σ_x exp(Σ_f φ_f(x_{scope f}))

Reference: Kschischang, Frey & Loeliger (2001), "Factor graphs and the sum-product
algorithm"; Koller & Friedman (2009), ch. 4. ``structure(factors=True)`` is the bipartite
variable/factor graph; ``structure()`` the Markov network (variables joined when they
share a factor). The exact engine answers log Z, marginals and MAP by log-space tensor
variable elimination (`probgen.ops.elimination`, in log space).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import networkx as nx
import torch

from probgen.declarations import Declaration
from probgen.ops import elimination as fops


class FactorGraph(Declaration):
    """Discrete variables and factors (log-potential tables).

    Args:
      variables: ``{name: cardinality}``; its order is the column order of data and samples.
      factors: ``[(scope, log_potential), ...]`` (named ``f0, f1, ...``) or
        ``{name: (scope, log_potential)}``; ``scope`` a tuple of variable names,
        ``log_potential`` a tensor of shape ``(card of scope[0], card of scope[1], ...)``
        (``-inf`` entries forbid an assignment).

    Parameters (``Fit.params``) are the log-potential tables, keyed by factor name.
    Data: an ``(N, V)`` integer tensor of full assignments, columns in ``variables`` order.

    Exact inference by variable elimination (Koller & Friedman 2009, ch. 9), approximate by
    loopy belief propagation and mean field; parameters fitted by L-BFGS on the likelihood.

    Examples:
        >>> import torch
        >>> import probgen as pg
        >>> from probgen.models import FactorGraph
        >>> fg = FactorGraph({"a": 2, "b": 2}, [(("a", "b"), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))])
        >>> pg.infer(fg)["a"].round(decimals=4).tolist()  # symmetric: each state has probability 1/2
        [0.5, 0.5]
        >>> model, x = FactorGraph.example(seed=0)  # a (2), b (3), c (2); f0(a, b), f1(b, c)
        >>> fit = pg.fit(model, x, steps=5, seed=0, progress=False)
        >>> fit.params["f0"].shape, fit.log_prob(x).shape
        (torch.Size([2, 3]), torch.Size([30]))
    """

    short_name = "factor_graph"
    default_engine = "exact"
    _repr_fields = ("variables", "scopes")

    def __init__(self, variables: Mapping[str, int], factors: Sequence | Mapping):
        if not isinstance(variables, Mapping) or not variables:
            raise ValueError("variables must be a non-empty dict {name: cardinality}")
        self.variables = {}
        for v, k in variables.items():
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise ValueError(f"cardinality of {v!r} must be a positive integer, got {k!r}")
            self.variables[v] = k
        items = factors.items() if isinstance(factors, Mapping) else \
            ((f"f{i}", f) for i, f in enumerate(factors))
        self.scopes: dict[str, tuple] = {}
        self.log_potentials: dict[str, torch.Tensor] = {}
        for name, spec in items:
            if name in self.variables:
                raise ValueError(f"factor name {name!r} is also a variable name")
            try:
                scope, table = spec
            except (TypeError, ValueError):
                raise ValueError(f"factor {name!r} must be a (scope, log_potential) pair") from None
            scope = (scope,) if isinstance(scope, str) else tuple(scope)
            unknown = [v for v in scope if v not in self.variables]
            if unknown or not scope or len(set(scope)) != len(scope):
                raise ValueError(f"factor {name!r}: scope {scope} must name distinct known variables "
                                 f"{list(self.variables)}")
            table = torch.as_tensor(table, dtype=torch.float64)
            want = tuple(self.variables[v] for v in scope)
            if tuple(table.shape) != want:
                raise ValueError(f"factor {name!r}: log-potential has shape {tuple(table.shape)}, "
                                 f"expected {want} for scope {scope}")
            if torch.isnan(table).any() or (table == math.inf).any():
                raise ValueError(f"factor {name!r}: log-potentials must not be NaN or +inf")
            self.scopes[name] = scope
            self.log_potentials[name] = table
        if not self.scopes:
            raise ValueError("a factor graph needs at least one factor")

    @classmethod
    def pairwise(cls, variables: Mapping[str, int], edges: Mapping[tuple, Any],
                 unary: Mapping[str, Any] | None = None) -> "FactorGraph":
        """A pairwise Markov random field: ``edges={(a, b): table (card_a, card_b)}``,
        ``unary={a: vector (card_a,)}`` (log-potentials). Factors are named ``psi_a`` and
        ``psi_a_b``."""
        factors = {}
        for v, vec in (unary or {}).items():
            factors[f"psi_{v}"] = ((v,), vec)
        for (a, b), table in edges.items():
            factors[f"psi_{a}_{b}"] = ((a, b), table)
        return cls(variables, factors)

    @classmethod
    def ising(cls, n: int, coupling: float = 0.5, field: float = 0.0) -> "FactorGraph":
        """A chain of ``n`` ±1 spins (states 0 ↔ −1, 1 ↔ +1) with log-potential
        ``coupling·s_i·s_j`` on neighbours and ``field·s_i`` on each spin."""
        spins = torch.tensor([-1.0, 1.0], dtype=torch.float64)
        names = [f"x{i}" for i in range(n)]
        edges = {(a, b): coupling * torch.outer(spins, spins) for a, b in zip(names, names[1:])}
        unary = {a: field * spins for a in names} if field else None
        return cls.pairwise({a: 2 for a in names}, edges, unary)

    # --- declaration hooks ------------------------------------------------------------
    def init_params(self, data: Any = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        """The declared log-potentials (copies)."""
        return {k: v.clone() for k, v in self.log_potentials.items()}

    def check_data(self, data: Any) -> torch.Tensor:
        """``(N, V)`` integer assignments with 0 <= x[:, j] < cardinality of variable j."""
        if data is None:
            raise ValueError(f"data must be an (N, {len(self.variables)}) integer tensor of assignments, got None")
        try:
            x = torch.as_tensor(data)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"data must be an (N, {len(self.variables)}) integer tensor of assignments "
                             f"(columns {list(self.variables)}), got {type(data).__name__}") from None
        if x.dim() == 1 and len(self.variables) > 1 and x.shape[0] == len(self.variables):
            x = x[None]
        if x.dim() != 2 or x.shape[1] != len(self.variables) or x.shape[0] == 0:
            raise ValueError(f"data must be an (N, {len(self.variables)}) integer tensor of assignments "
                             f"(columns {list(self.variables)}), got shape {tuple(x.shape)}")
        if x.is_floating_point():
            if not torch.isfinite(x).all() or (x != x.round()).any():
                raise ValueError("data must hold integer states (found NaN, inf or a fraction)")
        x = x.long()
        cards = torch.tensor(list(self.variables.values()))
        bad = (x < 0) | (x >= cards)
        if bad.any():
            i, j = map(int, bad.nonzero()[0])
            raise ValueError(f"data[{i}, {j}] = {int(x[i, j])} is out of range for variable "
                             f"{list(self.variables)[j]!r} with {int(cards[j])} states")
        return x

    @classmethod
    def for_data(cls, data: Any, **options: Any) -> "FactorGraph":
        """A pairwise chain over the data's columns (x0 - x1 - ...), zero log-potentials."""
        x = torch.as_tensor(data).long()
        if options:
            raise ValueError(f"FactorGraph.for_data takes no options, got {sorted(options)}")
        names = [f"x{j}" for j in range(x.shape[1])]
        cards = {v: int(x[:, j].max()) + 1 for j, v in enumerate(names)}
        edges = {(a, b): torch.zeros(cards[a], cards[b]) for a, b in zip(names, names[1:])}
        unary = {a: torch.zeros(cards[a]) for a in names}
        return cls.pairwise(cards, edges, unary)

    @classmethod
    def example(cls, seed: int = 0) -> tuple["FactorGraph", torch.Tensor]:
        """Three variables a (2), b (3), c (2) and two factors f0(a, b), f1(b, c); 30 draws."""
        g = torch.Generator().manual_seed(seed)
        fg = cls({"a": 2, "b": 3, "c": 2},
                 [(("a", "b"), torch.randn(2, 3, generator=g, dtype=torch.float64)),
                  (("b", "c"), torch.randn(3, 2, generator=g, dtype=torch.float64))])
        return fg, fg.sample(fg.init_params(), 30, seed=seed)

    # --- exact evaluation -----------------------------------------------------------
    def _tables(self, params: Mapping[str, torch.Tensor] | None) -> tuple[list, list]:
        params = self.log_potentials if params is None else params
        return list(self.scopes.values()), [params[k] for k in self.scopes]

    def log_partition(self, params: Mapping | None = None, evidence: Mapping | None = None) -> torch.Tensor:
        """log Z (or log Σ over assignments consistent with ``evidence``)."""
        return fops.log_partition(self.variables, *self._tables(params), evidence=evidence)

    def unnormalized_log_prob(self, params: Mapping | None, x: torch.Tensor) -> torch.Tensor:
        """Σ_f φ_f(x_f) for each row of ``x`` ``(N, V)`` → ``(N,)``."""
        col = {v: j for j, v in enumerate(self.variables)}
        scopes, tables = self._tables(params)
        return sum(t[tuple(x[:, col[v]] for v in s)] for s, t in zip(scopes, tables))

    def log_prob(self, params: Mapping | None, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) for full assignments ``x`` ``(N, V)`` → ``(N,)``."""
        return self.unnormalized_log_prob(params, x) - self.log_partition(params)

    def sample(self, params: Mapping | None, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` exact draws ``(n, V)``."""
        from probgen.random import generator
        return fops.sample(self.variables, *self._tables(params), n, generator=generator(seed))

    def structure(self, *args: Any, params: bool = False, factors: bool = False, expand: bool = False,
                  **options: Any) -> nx.Graph:
        """The Markov network (``factors=False``: variables joined when they share a factor)
        or the bipartite factor graph (``factors=True``, or ``expand=True`` as the CLI's
        ``--expand`` says: variable and factor nodes)."""
        if args or options:
            raise ValueError(f"FactorGraph.structure takes only factors=True/False, got {args or sorted(options)}")
        factors = factors or expand
        g = nx.Graph(plates={})
        for v, k in self.variables.items():
            g.add_node(v, kind="latent", cardinality=k)
        for f, scope in self.scopes.items():
            if factors:
                g.add_node(f, kind="factor", scope=scope)
                g.add_edges_from(((v, f) for v in scope), directed=False)
            else:
                g.add_edges_from(((a, b) for i, a in enumerate(scope) for b in scope[i + 1:]), directed=False)
        return g
