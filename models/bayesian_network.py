"""Discrete Bayesian networks: a DAG of categorical variables with named states and
conditional probability tables (CPTs), declared as a Pyro program.

Each variable ``v`` with parents ``pa(v)`` has a table ``probs_<v>`` of shape
``(*cards of pa(v), card(v))`` whose last axis sums to one; the program samples
``v ~ Categorical(probs_v[values of pa(v)])`` in topological order inside a ``data``
plate. The joint is ``p(x) = prod_v p(x_v | x_pa(v))`` (Pearl 1988; Koller & Friedman
2009, ch. 3).

Data are tables of states, one row per case: a dict ``{variable: [state, ...]}`` (``None``
or NaN for a missing cell; absent columns are missing), a pandas DataFrame, or an
``(N, V)`` integer array of state indices in `BayesianNetwork.variables` order with
``-1`` for missing. `BayesianNetwork.check_data` turns each into an ``(N, V)``
int64 tensor with ``-1`` for missing cells.

Networks are read from and written to the BIF interchange format (Cozman 1998) with a
parser of our own (`probgen.models.bif`; `BayesianNetwork.from_bif`,
`BayesianNetwork.to_bif`).
"""
from __future__ import annotations

import math
import os
import re
from typing import Any

import networkx as nx
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from probgen.declarations import Program
from probgen.models import bif

#: networks bundled with pgmpy, readable offline by `BayesianNetwork.load_bundled`
BUNDLED = ("asia", "cancer", "earthquake", "survey", "sachs", "child", "alarm", "insurance",
           "hepar2", "win95pts", "water", "hailfinder", "andes", "barley", "diabetes", "link",
           "mildew", "munin", "munin1", "munin2", "munin3", "munin4", "pathfinder", "pigs")

#: how far a distribution may be from summing to one before it is an error (within it,
#: the distribution is renormalised: the bundled files are rounded to ~1e-7)
SUM_TOL = 1e-6


def _prefix(v: str) -> str:
    return f"probs_{v}"


class BayesianNetwork(Program):
    """A discrete Bayesian network.

    Args:
      spec: ``{variable: {"states": [...], "parents": [...], "cpt": table}}``; ``table``
        has shape ``(*parent cards, n_states)`` (or ``(prod parent cards, n_states)``, parent
        configurations in row-major order), rows summing to one. ``cpt`` may be left out
        for a structure to be learned (uniform tables). ``states`` may be an int (``k``
        states named ``"0".."k-1"``).
      name: the network's name (written to BIF).

    Attributes:
      variables: the variable names in topological order.
      states: ``{variable: [state name, ...]}``.
      parents: ``{variable: [parent, ...]}``.
      tables: ``{variable: float64 tensor}`` of shape ``(*parent cards, card)``.
      cards: ``{variable: number of states}``.

    The joint is p(x) = Π_v p(x_v | x_pa(v)) (Pearl 1988; Koller & Friedman 2009, ch. 3).
    Parameters (``Fit.params``): ``probs_<v>`` per variable, shaped as ``tables[v]``.
    Data: ``{variable: [state, ...]}`` rows, a DataFrame, or ``(N, V)`` state indices.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import BayesianNetwork
        >>> bn = BayesianNetwork({
        ...     "rain": {"states": ["no", "yes"], "parents": []},
        ...     "wet": {"states": ["no", "yes"], "parents": ["rain"]}}, name="lawn")
        >>> data = {"rain": ["no", "no", "yes", "no"], "wet": ["no", "yes", "yes", "no"]}
        >>> fit = pg.fit(bn, data, seed=0, progress=False)  # complete data: counting, one step
        >>> fit.params["probs_wet"].round(decimals=4).tolist()  # p(wet | rain), rows rain = no, yes
        [[0.6667, 0.3333], [0.0, 1.0]]
        >>> pg.infer(fit, {"wet": ["yes"]})["rain"].round(decimals=4).tolist()
        [[0.5, 0.5]]
    """

    short_name = "bn"
    default_engine = "em"
    default_dataset = "asia"
    _repr_fields = ("name",)

    def __init__(self, spec: dict, name: str = "network"):
        if not isinstance(spec, dict) or not spec:
            raise ValueError("a Bayesian network spec is a non-empty dict {variable: {'states': [...], "
                             "'parents': [...], 'cpt': table}}")
        self.name = name
        states, parents = {}, {}
        for v, entry in spec.items():
            if not isinstance(v, str):
                raise ValueError(f"variable names must be strings, got {v!r}")
            if not isinstance(entry, dict) or "states" not in entry:
                raise ValueError(f"variable {v!r}: the spec entry must be a dict with 'states'")
            unknown = set(entry) - {"states", "parents", "cpt"}
            if unknown:
                raise ValueError(f"variable {v!r}: unknown spec keys {sorted(unknown)}; known: states, parents, cpt")
            st = entry["states"]
            if isinstance(st, int):
                st = [str(i) for i in range(st)]
            st = [str(s) for s in st]
            if len(st) < 1 or len(set(st)) != len(st):
                raise ValueError(f"variable {v!r}: states must be a non-empty list of distinct names, got {st}")
            states[v] = st
            pa = list(entry.get("parents") or [])
            if len(set(pa)) != len(pa) or v in pa:
                raise ValueError(f"variable {v!r}: parents must be distinct and not the variable itself, got {pa}")
            parents[v] = pa
        for v, pa in parents.items():
            for p in pa:
                if p not in states:
                    raise ValueError(f"variable {v!r}: unknown parent {p!r}; variables: {sorted(states)}")
        g = nx.DiGraph()
        g.add_nodes_from(spec)
        g.add_edges_from((p, v) for v, pa in parents.items() for p in pa)
        if not nx.is_directed_acyclic_graph(g):
            cycle = nx.find_cycle(g)
            raise ValueError(f"the network has a cycle through variable {cycle[0][0]!r}: "
                             + " -> ".join(str(e[0]) for e in cycle) + f" -> {cycle[0][0]}")
        position = {v: i for i, v in enumerate(spec)}
        self.variables: list[str] = list(nx.lexicographical_topological_sort(g, key=position.get))
        self.index = {v: i for i, v in enumerate(self.variables)}
        self.states = {v: states[v] for v in self.variables}
        self.parents = {v: parents[v] for v in self.variables}
        self.cards = [len(self.states[v]) for v in self.variables]
        self.state_index = {v: {s: i for i, s in enumerate(self.states[v])} for v in self.variables}
        self.tables = {v: self._check_table(v, spec[v].get("cpt")) for v in self.variables}
        self._cache: dict = {}

    # ---- validation -----------------------------------------------------------------
    def num_free_params(self, params: dict | None = None) -> int:
        """The number of free parameters (for BIC / AIC): Σ_v q_v (r_v − 1), q_v the number of
        parent configurations and r_v the states of v (the count of the ``"bic"`` structure
        score, `probgen.ops.structure`)."""
        return sum(math.prod(self.table_shape(v)[:-1]) * (len(self.states[v]) - 1) for v in self.variables)

    def table_shape(self, v: str) -> tuple[int, ...]:
        """The shape of ``v``'s table: ``(*parent cards, card(v))``.

        Args:
          v: a variable name.

        Returns:
          The shape tuple.
        """
        return tuple(len(self.states[p]) for p in self.parents[v]) + (len(self.states[v]),)

    def _check_table(self, v: str, cpt: Any, name: str | None = None) -> torch.Tensor:
        shape = self.table_shape(v)
        if cpt is None:
            return torch.full(shape, 1.0 / shape[-1], dtype=torch.float64)
        try:
            t = torch.as_tensor(np.asarray(cpt, dtype=np.float64) if not isinstance(cpt, torch.Tensor) else cpt,
                                dtype=torch.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"variable {v!r}: the table must be numeric ({exc})") from None
        if tuple(t.shape) != shape:
            flat = (math.prod(shape[:-1]), shape[-1])
            if tuple(t.shape) == flat or (len(shape) == 1 and tuple(t.shape) == (1, shape[-1])):
                t = t.reshape(shape)
            else:
                raise ValueError(f"variable {v!r}: the table has shape {tuple(t.shape)}, expected {shape} "
                                 f"(parents {self.parents[v]} then the variable's {shape[-1]} states)")
        if not torch.isfinite(t).all() or (t < 0).any():
            raise ValueError(f"variable {v!r}: the table must hold finite non-negative probabilities")
        sums = t.sum(-1)
        err = (sums - 1).abs().max().item()
        if err > SUM_TOL:
            raise ValueError(f"variable {v!r}: distributions in the table sum to {sums.flatten().tolist()[:6]} "
                             f"(off by up to {err:.2g} > {SUM_TOL}); each row over the states must sum to 1")
        if err > 1e-12:  # rounding in the source file; exact rows are left bit-for-bit alone
            t = t / sums.unsqueeze(-1)
        return t.clone()

    def check_params(self, params: dict | None) -> dict[str, torch.Tensor]:
        """``params`` (or the declared tables when ``None``) as a validated dict
        ``probs_<v> -> table``."""
        if params is None:
            return {_prefix(v): self.tables[v] for v in self.variables}
        out = {}
        for v in self.variables:
            key = _prefix(v)
            if key not in params:
                raise ValueError(f"params lack {key!r} (the table of variable {v!r})")
            t = torch.as_tensor(params[key], dtype=torch.float64)
            if tuple(t.shape) != self.table_shape(v):
                raise ValueError(f"params[{key!r}] has shape {tuple(t.shape)}, expected {self.table_shape(v)}")
            out[key] = t
        return out

    # ---- data -----------------------------------------------------------------------
    def encode(self, v: str, value: Any) -> int:
        """State index of ``value`` (a state name, or an int index) for variable ``v``;
        -1 for a missing value (``None`` / NaN)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return -1
        idx = self.state_index[v].get(str(value) if not isinstance(value, str) else value)
        if idx is not None and (isinstance(value, str) or not self._numeric_names(v)):
            return idx
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= value < self.cards[self.index[v]]:
            return int(value)
        if isinstance(value, (float, np.floating)) and float(value).is_integer() and 0 <= value < self.cards[self.index[v]]:
            return int(value)
        if idx is not None:
            return idx
        raise ValueError(f"variable {v!r} has no state {value!r}; states: {self.states[v]}")

    def _numeric_names(self, v: str) -> bool:
        return all(s.lstrip("-").isdigit() for s in self.states[v])

    def check_data(self, data: Any) -> torch.Tensor:
        """An ``(N, V)`` int64 tensor of state indices (columns in `variables` order,
        -1 for missing cells)."""
        if data is None:
            raise ValueError("a Bayesian network needs data: a dict {variable: [states]}, a DataFrame or an "
                             f"(N, {len(self.variables)}) array of state indices (-1 for missing)")
        if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a pandas DataFrame
            data = {str(c): list(data[c]) for c in data.columns}
        if isinstance(data, dict):
            unknown = [c for c in data if c not in self.index]
            if unknown:
                raise ValueError(f"unknown variables {unknown}; variables: {self.variables}")
            scalar = {c for c, col in data.items() if col is None or isinstance(col, (str, int, float, np.generic))}
            cols = {c: list(col) for c, col in data.items() if c not in scalar}
            n_rows = len(next(iter(cols.values()))) if cols else 1
            cols.update({c: [data[c]] * n_rows for c in scalar})  # one value for every row
            lengths = {len(c) for c in cols.values()}
            if len(lengths) != 1 or 0 in lengths:
                raise ValueError(f"the columns must be non-empty and of equal length, got lengths "
                                 f"{ {c: len(col) for c, col in cols.items()} }")
            n = lengths.pop()
            out = np.full((n, len(self.variables)), -1, dtype=np.int64)
            for c, col in cols.items():
                enc = self.state_index[c]
                j = self.index[c]
                try:  # fast path: every cell a known state name
                    out[:, j] = [enc[x] for x in col]
                except (KeyError, TypeError):
                    out[:, j] = [self.encode(c, x) for x in col]
            return torch.from_numpy(out)
        if isinstance(data, np.ndarray) and data.dtype.kind in "iu" and data.ndim == 2 \
                and data.shape[1] == len(self.variables) and data.shape[0] > 0:
            # integer codes (the common case, e.g. ``sample().numpy()``): checked in NumPy,
            # without the float round trip that NaN-coded input needs
            bad = (data < -1) | (data >= np.asarray(self.cards))
            if bad.any():
                i, j = np.argwhere(bad)[0].tolist()
                raise ValueError(f"data[{i}, {j}] = {data[i, j]} is not a state index of variable "
                                 f"{self.variables[j]!r} (0..{self.cards[j] - 1}, or -1 for missing)")
            return torch.from_numpy(data.astype(np.int64, copy=True))
        arr = torch.as_tensor(np.asarray(data.detach().cpu() if isinstance(data, torch.Tensor) else data,
                                         dtype=np.float64))
        if arr.dim() == 1 and arr.shape[0] == len(self.variables):
            arr = arr.unsqueeze(0)
        if arr.dim() != 2 or arr.shape[1] != len(self.variables) or arr.shape[0] == 0:
            raise ValueError(f"data must be an (N, {len(self.variables)}) array of state indices (columns "
                             f"{self.variables[:5]}...), got shape {tuple(arr.shape)}")
        arr = torch.where(torch.isnan(arr), torch.full_like(arr, -1.0), arr)
        if (arr != arr.round()).any():
            raise ValueError("data must hold integer state indices (-1 or NaN for missing)")
        cards = torch.tensor(self.cards, dtype=torch.float64)
        bad = (arr < -1) | (arr >= cards)
        if bad.any():
            i, j = bad.nonzero()[0].tolist()
            raise ValueError(f"data[{i}, {j}] = {arr[i, j].item():g} is not a state index of variable "
                             f"{self.variables[j]!r} (0..{self.cards[j] - 1}, or -1 for missing)")
        return arr.long()

    def decode(self, x: Any) -> dict[str, list]:
        """An ``(N, V)`` array of state indices as a dict ``{variable: [state names]}``."""
        x = np.asarray(x)
        return {v: [self.states[v][k] if k >= 0 else None for k in x[:, j]] for j, v in enumerate(self.variables)}

    # ---- the model --------------------------------------------------------------------
    def init_params(self, data: Any = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.check_params(None).items()}

    def program(self, data: torch.Tensor | None = None) -> torch.Tensor:
        """Ancestral sampling of every variable in a ``data`` plate of ``N`` rows (one row
        when ``data`` is None); observed when data is given (complete rows only: missing
        cells are handled by the ``em`` and ``exact`` engines)."""
        if data is not None and (data < 0).any():
            raise ValueError("the Pyro program of a Bayesian network takes complete rows; for missing "
                             "cells use engine='em' (or the exact engine's log_prob)")
        n = 1 if data is None else data.shape[0]
        values = {}
        with pyro.plate("data", n):
            for j, v in enumerate(self.variables):
                probs = pyro.param(_prefix(v), self.tables[v].clone(), constraint=constraints.simplex)
                idx = tuple(values[p] for p in self.parents[v])
                p = probs[idx] if idx else probs
                values[v] = pyro.sample(v, dist.Categorical(probs=p),
                                        obs=None if data is None else data[:, j])
        return torch.stack([values[v].expand(n) for v in self.variables], -1)

    def log_prob(self, params: dict | None, x: Any) -> torch.Tensor:
        """Exact ``log p(row)`` per row, ``(N,)``; missing cells are summed out
        (variable elimination over the unobserved variables, one batched contraction)."""
        params = self.check_params(params)
        x = x if isinstance(x, torch.Tensor) and x.dtype == torch.long and x.dim() == 2 else self.check_data(x)
        from probgen.ops.bayesian_network import compiled
        return torch.from_numpy(compiled(self, params).log_prob_rows(x.numpy()))

    def sample(self, params: dict | None, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` rows by ancestral sampling, ``(n, V)`` int64 state indices."""
        params = self.check_params(params)
        from probgen.random import generator
        g = generator(seed)
        out = torch.empty(n, len(self.variables), dtype=torch.long)
        for j, v in enumerate(self.variables):
            t = params[_prefix(v)]
            idx = tuple(out[:, self.index[p]] for p in self.parents[v])
            p = t[idx] if idx else t.expand(n, -1)
            u = torch.rand(n, 1, generator=g, dtype=torch.float64)
            c = p.cumsum(-1)
            out[:, j] = (u > c[:, :-1]).sum(-1) if c.shape[-1] > 1 else 0
        return out

    # ---- structure -------------------------------------------------------------------
    def structure(self, data: Any = None, *, params: bool = False, plate: bool = False, **options: Any) -> nx.DiGraph:
        """The DAG. With ``data`` (or ``plate=True``) the variables sit in a ``data`` plate
        and are marked observed (latent when a column is entirely missing); with
        ``params=True`` each table is a ``param`` node pointing at its variable."""
        if options:
            raise ValueError(f"unknown structure options {sorted(options)}; known: params, plate")
        g = nx.DiGraph()
        shown = plate or data is not None
        observed = None
        n = None
        if data is not None:
            x = self.check_data(data)
            n = x.shape[0]
            observed = (x >= 0).any(0).tolist()
        for j, v in enumerate(self.variables):
            kind = "observed" if (observed is None and shown) or (observed is not None and observed[j]) else "latent"
            g.add_node(v, kind=kind, states=list(self.states[v]), plates=("data",) if shown else ())
        for v in self.variables:
            for p in self.parents[v]:
                g.add_edge(p, v, directed=True)
        if params:
            for v in self.variables:
                g.add_node(_prefix(v), kind="param", plates=())
                g.add_edge(_prefix(v), v, directed=True)
        g.graph["plates"] = {"data": n} if shown else {}
        return g

    @classmethod
    def learn_structure(cls, data: Any, method: str = "hill-climb", score: str = "bic", *,
                        max_parents: int | None = None, white_list: Any = None, black_list: Any = None,
                        start: Any = None, states: Any = None, seed: int | None = None,
                        **options: Any) -> "BayesianNetwork":
        """Learn a network (DAG and tables) from data; implemented in
        `probgen.ops.structure`.

        Args:
          data: a dict of state columns (``None`` / NaN missing), a DataFrame, or an
            ``(N, V)`` array of state indices with -1 for missing (then ``states`` names
            the variables in column order, else ``X0..X{V-1}`` with ``max + 1`` states).
          method: ``"hill-climb"`` (add / delete / reverse until no move improves, with
            sideways moves of equal score: at most ``patience=10`` in a row, none undoing
            one of the last ``tabu_length=10``), ``"tabu"`` (tabu search, the same options),
            ``"chow-liu"`` (maximum mutual-information spanning tree, ``root=``; default:
            the variable of largest total mutual information, pgmpy's rule; pairs of zero
            mutual information get no edge, see `probgen.ops.structure._max_tree`),
            ``"tan"`` (tree-augmented naive Bayes, needs ``class_variable=``; ``root=``),
            ``"pc"`` (PC-stable; ``significance_level=0.01``, ``ci_test="g2" | "chi2"``,
            ``max_cond_vars=None``, ``dof="adjusted" | "full"``: the tests' degrees of
            freedom, see `probgen.ops.structure.ci_test`).
          score: ``"bic"``, ``"bdeu"`` (``ess=10``, the equivalent sample size) or ``"k2"``
            for the score-based methods.
          max_parents: the most parents a variable may have (score-based methods only).
          white_list: edges that must be present (score-based methods only).
          black_list: edges that must not be present (score-based methods only).
          start: a network or edge list to start the search from (score-based methods only).
          states: ``{variable: [states] | k}``: the variables and their states (default:
            the data's distinct values, sorted).
          seed: the random priorities that break ties between equally good moves of the
            greedy searches, and the Monte Carlo completion of rows with many missing
            cells (structural EM); the same seed gives the same network.
          **options: ``restarts=8`` (greedy searches with different tie-breaking, the
            best-scoring kept), ``pseudo_count=1`` (the tables' Dirichlet pseudo-count),
            ``max_iter`` (search moves), ``em_steps=10`` (structural EM rounds),
            ``progress`` (a bar; ``None`` = on a terminal).

        With missing cells, hill-climb and tabu run structural EM (Friedman 1997).

        Returns:
          The learned network (a `BayesianNetwork`), its variables in topological order.
        """
        from probgen.ops.structure import learn_structure
        return learn_structure(cls, data, method, score, max_parents=max_parents, white_list=white_list,
                               black_list=black_list, start=start, states=states, seed=seed, **options)

    # ---- constructors ----------------------------------------------------------------
    def spec(self) -> dict:
        """The constructor's spec of this network, with its current tables (copies).

        Returns:
          ``{variable: {"states": [...], "parents": [...], "cpt": tensor}}``.
        """
        return {v: {"states": list(self.states[v]), "parents": list(self.parents[v]),
                    "cpt": self.tables[v].clone()} for v in self.variables}

    def with_tables(self, params: dict) -> "BayesianNetwork":
        """The same structure with the tables in ``params`` (``probs_<v>``), e.g. a fit's."""
        params = self.check_params(params)
        spec = self.spec()
        for v in self.variables:
            spec[v]["cpt"] = params[_prefix(v)]
        return BayesianNetwork(spec, name=self.name)

    @classmethod
    def from_bif(cls, source: str | os.PathLike) -> "BayesianNetwork":
        """Read a network from BIF text, or a ``.bif`` / ``.bif.gz`` file path.

        ``table`` entries list the child's states outermost (pgmpy's reading); rows
        ``(parent states) p1, p2, ...;`` may come in any order (`probgen.models.bif`).
        Malformed text raises ``ValueError`` with the line number."""
        name, spec, lines = bif.parse(*bif.read_text(source))
        try:
            return cls(spec, name=name)
        except ValueError as exc:  # say where in the text the bad table is
            m = re.match(r"variable '([^']*)'", str(exc))
            if m and m.group(1) in lines:
                raise ValueError(f"BIF line {lines[m.group(1)]}: {exc}") from None
            raise

    @classmethod
    def load_bundled(cls, name: str) -> "BayesianNetwork":
        """One of the BIF networks bundled with pgmpy (read offline with our own parser)."""
        path = bundled_path(name)
        return cls.from_bif(path)

    def to_bif(self) -> str:
        """The network as BIF text (`probgen.models.bif.write`: floats written with
        ``repr``, so reading it back gives the same tables bit for bit)."""
        return bif.write(self)

    @classmethod
    def example(cls, seed: int = 0) -> tuple["BayesianNetwork", torch.Tensor]:
        """The asia network (Lauritzen & Spiegelhalter 1988), 200 rows sampled from it."""
        bn = cls.from_bif(ASIA_BIF)
        return bn, bn.sample(None, 200, seed=seed)

    @classmethod
    def load_named_data(cls, name: str) -> Any:
        """``"<network>"`` or ``"<network>:<n>"`` (a bundled network): ``n`` rows (default
        1000) sampled from it as a dict of state columns; ``None`` for other names."""
        base, _, n = name.partition(":")
        if base not in BUNDLED:
            return None
        bn = cls.load_bundled(base)
        return bn.decode(bn.sample(None, int(n) if n else 1000, seed=0).numpy())

    @classmethod
    def for_data(cls, data: Any, network: str | None = None, **options: Any) -> "BayesianNetwork":
        """The bundled network whose variables are the data's columns (uniform tables, to
        be learned), or the one named by ``network``."""
        if options:
            raise TypeError(f"unknown options {sorted(options)}; known: network")
        if network is None:
            cols = set(data) if isinstance(data, dict) else None
            for name in BUNDLED:
                try:
                    bn = cls.load_bundled(name)
                except ValueError:
                    continue
                if cols is not None and set(bn.variables) == cols:
                    network = name
                    break
            if network is None:
                raise TypeError("pass --set network=<name> (one of " + ", ".join(BUNDLED) + ")")
        bn = cls.load_bundled(network)
        spec = bn.spec()
        for v in spec:
            spec[v]["cpt"] = None
        return cls(spec, name=bn.name)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state


def bundled_path(name: str) -> str:
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled network {name!r}; bundled: {list(BUNDLED)}")
    try:
        from importlib import resources
        path = resources.files("pgmpy") / "utils" / "example_models" / f"{name}.bif.gz"
    except ModuleNotFoundError:
        raise ValueError(f"the bundled network {name!r} ships with pgmpy, which is not installed "
                         "(pip install pgmpy, or pass your own .bif file)") from None
    if not path.is_file():
        raise ValueError(f"pgmpy has no bundled network {name!r}")
    return str(path)


ASIA_BIF = """network asia {
}
variable asia { type discrete [ 2 ] { yes, no }; }
variable tub { type discrete [ 2 ] { yes, no }; }
variable smoke { type discrete [ 2 ] { yes, no }; }
variable lung { type discrete [ 2 ] { yes, no }; }
variable bronc { type discrete [ 2 ] { yes, no }; }
variable either { type discrete [ 2 ] { yes, no }; }
variable xray { type discrete [ 2 ] { yes, no }; }
variable dysp { type discrete [ 2 ] { yes, no }; }
probability ( asia ) { table 0.01, 0.99; }
probability ( tub | asia ) { (yes) 0.05, 0.95; (no) 0.01, 0.99; }
probability ( smoke ) { table 0.5, 0.5; }
probability ( lung | smoke ) { (yes) 0.1, 0.9; (no) 0.01, 0.99; }
probability ( bronc | smoke ) { (yes) 0.6, 0.4; (no) 0.3, 0.7; }
probability ( either | lung, tub ) { (yes, yes) 1.0, 0.0; (no, yes) 1.0, 0.0; (yes, no) 1.0, 0.0; (no, no) 0.0, 1.0; }
probability ( xray | either ) { (yes) 0.98, 0.02; (no) 0.05, 0.95; }
probability ( dysp | bronc, either ) { (yes, yes) 0.9, 0.1; (no, yes) 0.7, 0.3; (yes, no) 0.8, 0.2; (no, no) 0.1, 0.9; }
"""
