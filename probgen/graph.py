"""Model structure as networkx graphs, graph queries, and drawing.

``graph(model, *args)`` returns a ``networkx.DiGraph`` for directed models (edges
parents → children) and a ``networkx.Graph`` for undirected ones; mixed models (a DBN)
give a ``DiGraph`` whose undirected edges carry ``directed=False``. Nodes carry
``kind`` (``latent``, ``observed``, ``param``, ``factor``, ``layer``, ``unit``,
``nonterminal``, ``terminal``; ``deterministic`` for ``pyro.deterministic`` sites when
asked) and directed-model nodes carry ``plates`` (a tuple of plate names, outermost
first); edges carry ``directed``. The graph's ``plates`` attribute maps plate name → size.

Declarations that are not Pyro programs provide ``structure(*args, params=, **options)``
returning such a graph. Pyro programs are traced, in Pyro's three stages (trace → plain
relations → drawing): ``pyro.infer.inspect.get_model_relations`` gives the sample→sample
dependencies (by provenance tracking, so a ``pyro.markov`` loop unrolls into a chain),
and one ``poutine.trace`` gives each site's plates, their sizes and whether it is
observed or deterministic.
"""
from __future__ import annotations

from typing import Any, Iterable

import networkx as nx

#: the node kinds a probgen graph uses
KINDS = ("latent", "observed", "param", "factor", "layer", "unit", "nonterminal", "terminal",
         "deterministic")


def graph(model: Any, *args: Any, params: bool = False, deterministic: bool = False,
          **options: Any) -> nx.Graph:
    """The structure of ``model``: a declaration, a Pyro function, or a `probgen.Fit`.

    Args:
      args: what a program needs to be traced (usually its data); declarations with a
        ``structure`` method receive them too.
      params: add ``pyro.param`` sites as ``kind="param"`` nodes (edges param → site).
      deterministic: keep ``pyro.deterministic`` sites as ``kind="deterministic"`` nodes.
      **options: declaration-specific (``expand=True`` for one node per unit, ``factors=True``
        for a factor graph's bipartite form, ...).

    Returns:
      A ``networkx`` graph (``DiGraph`` for directed models, ``Graph`` for undirected ones):
        every node has ``kind`` (``"latent"``, ``"observed"``, ``"param"``, ``"factor"``, ...)
        and ``plates``; ``g.graph["plates"]`` maps plate names to sizes.

    Raises:
      ValueError: unknown options, or a model that declares no structure.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import BayesianNetwork
        >>> bn = BayesianNetwork({"rain": {"states": 2, "parents": []},
        ...                       "sprinkler": {"states": 2, "parents": []},
        ...                       "wet": {"states": 2, "parents": ["rain", "sprinkler"]}})
        >>> g = pg.graph(bn)
        >>> sorted(g.edges)
        [('rain', 'wet'), ('sprinkler', 'wet')]
        >>> g.nodes["wet"]["kind"]
        'latent'
    """
    from probgen import registry
    from probgen.declarations import Program
    model = registry.as_declaration(model)
    if hasattr(model, "structure"):
        return model.structure(*args, params=params, **options)
    if options:
        raise ValueError(f"unknown graph options {sorted(options)} for a Pyro program; "
                         "known: params, deterministic")
    if isinstance(model, Program):
        if not args and hasattr(model, "trace_args"):
            args = model.trace_args()
        elif len(args) == 1:
            args = model.program_args(args[0])
        return program_graph(model, *args, params=params, deterministic=deterministic,
                             observed=getattr(model, "observed", ()))
    raise ValueError(f"{type(model).__name__} declares no structure")


def program_graph(fn: Any, *args: Any, params: bool = False, deterministic: bool = False,
                  observed: Iterable[str] = (), **kwargs: Any) -> nx.DiGraph:
    """Trace the Pyro program ``fn(*args, **kwargs)``; its sample→sample dependency graph.

    ``observed``: sites the program declares observed; they are drawn as observed even when
    the trace (run without data) sampled them.

    Sites inside a ``pyro.markov`` loop appear once per step (``z_0 → z_1 → ...``): the
    graph is the unrolled trace, with the dependencies that provenance tracking finds
    (Pyro's ``get_dependencies``).

    Args:
      fn: a Pyro program.
      *args: its positional arguments (usually its data).
      params: add ``pyro.param`` sites as ``kind="param"`` nodes.
      deterministic: keep ``pyro.deterministic`` sites.
      observed: sites drawn as observed.
      **kwargs: its keyword arguments.

    Returns:
      A ``networkx.DiGraph`` of the sample sites (``kind``, ``plates`` per node; plate
        sizes in ``g.graph["plates"]``).

    Examples:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from probgen.graph import program_graph
        >>> def model(x):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(mu, 1.0), obs=x)
        >>> g = program_graph(model, torch.zeros(3))
        >>> dict(g.nodes(data="kind")), list(g.edges), g.graph["plates"]
        ({'mu': 'latent', 'x': 'observed'}, [('mu', 'x')], {'data': 3})
    """
    import pyro
    import torch
    from pyro import poutine
    from pyro.infer.inspect import get_model_relations
    name = getattr(fn, "__name__", type(fn).__name__)
    # tracing samples random values: keep the caller's random state and param store untouched
    with torch.random.fork_rng(devices=[]), poutine.block(), pyro.get_param_store().scope():
        try:
            rel = get_model_relations(fn, model_args=args, model_kwargs=kwargs,
                                      include_deterministic=deterministic)
            tr = poutine.trace(fn).get_trace(*args, **kwargs)
        except Exception as exc:
            raise ValueError(f"could not trace the program {name!r} with the given arguments "
                             f"(pass what it needs: pg.graph(fn, data)): {type(exc).__name__}: {exc}") from None
    g = nx.DiGraph()
    sizes: dict[str, int] = {}
    for site_name, site in tr.nodes.items():
        if site["type"] != "sample" or site_name not in rel["sample_dist"]:
            continue
        frames = _outermost_first(site["cond_indep_stack"])
        for f in frames:
            sizes[f.name] = f.size
        if site["infer"].get("_deterministic"):
            if not deterministic:  # its parents already link to its children
                continue
            kind = "deterministic"
        elif rel["sample_dist"][site_name] == "Unit":  # pyro.factor: a log-potential on its parents
            kind = "factor"
        elif site["is_observed"] or site_name in observed:
            kind = "observed"
        else:
            kind = "latent"
        g.add_node(site_name, kind=kind, distribution=rel["sample_dist"][site_name],
                   plates=tuple(f.name for f in frames))
    for child, parents in rel["sample_sample"].items():
        for p in parents:
            if p in g and child in g:
                g.add_edge(p, child, directed=True)
    if params:
        for site_name, ps in rel["sample_param"].items():
            for p in ps:
                if p not in g:
                    g.add_node(p, kind="param", plates=())
                g.add_edge(p, site_name, directed=True)
    g.graph["plates"] = sizes
    return g


def plate_diagram(nodes: dict[str, dict], edges: Iterable[tuple[str, str]], plates: dict | None = None,
                  params: dict[str, Iterable[str]] | None = None, undirected: bool = False) -> nx.Graph:
    """A declared structure as a graph: ``nodes`` name -> attributes (``kind`` and, where
    they apply, ``distribution`` and ``plates``), ``edges`` parent -> child (or undirected
    pairs with ``undirected=True``), ``plates`` plate name -> size (None when unknown) and
    ``params`` parameter name -> the nodes it feeds (``kind="param"`` nodes, drawn when the
    caller asked ``params=True``). Declarations build their ``structure`` with it.

    Args:
      nodes: node name -> attributes.
      edges: ``(parent, child)`` pairs (or undirected pairs).
      plates: plate name -> size.
      params: parameter name -> the nodes it feeds.
      undirected: build an undirected graph.

    Returns:
      A ``networkx.DiGraph`` (``Graph`` with ``undirected=True``).

    Examples:
        >>> from probgen.graph import plate_diagram
        >>> g = plate_diagram({"z": {"kind": "latent", "plates": ("N",)},
        ...                    "x": {"kind": "observed", "plates": ("N",)}},
        ...                   [("z", "x")], plates={"N": 10}, params={"loc": ["x"]})
        >>> sorted(g.edges), g.graph["plates"]
        ([('loc', 'x'), ('z', 'x')], {'N': 10})
    """
    g = nx.Graph() if undirected else nx.DiGraph()
    for name, attrs in nodes.items():
        g.add_node(name, **{"plates": (), **attrs})
    for a, b in edges:
        g.add_edge(a, b, directed=not undirected)
    for p, targets in (params or {}).items():
        g.add_node(p, kind="param", plates=())
        for t in targets:
            g.add_edge(p, t, directed=True)
    g.graph["plates"] = dict(plates or {})
    return g


def _outermost_first(stack: Iterable) -> tuple:
    """Plate frames ordered outermost first: vectorised plates by ``dim`` (−2 outside −1),
    then sequential plates (``for i in pyro.plate(...)``), which have no ``dim``."""
    frames = [f for f in stack if f.name is not None]
    vec = sorted((f for f in frames if f.dim is not None), key=lambda f: f.dim)
    seq = [f for f in frames if f.dim is None]
    return tuple(vec + seq)


# ---- queries ----------------------------------------------------------------------

def _as_graph(model: Any, *args: Any) -> nx.Graph:
    return model if isinstance(model, nx.Graph) else graph(model, *args)


def _probabilistic(g: nx.Graph, factors: bool = False) -> nx.Graph:
    """Only random-variable nodes: parameters dropped, and factor nodes too unless
    ``factors`` (a ``pyro.factor`` in a directed model acts as an observed child of its
    arguments, which is how the queries below treat it)."""
    drop = ("param",) if factors else ("param", "factor")
    return g.subgraph([n for n, d in g.nodes(data=True) if d.get("kind") not in drop])


def _factor_children(g: nx.Graph) -> set:
    """Factor nodes of a directed model (``pyro.factor`` sites)."""
    return {n for n, k in g.nodes(data="kind") if k == "factor"} if g.is_directed() else set()


def _directed_part(g: nx.DiGraph) -> nx.DiGraph:
    d = nx.DiGraph()
    d.add_nodes_from(g.nodes(data=True))
    d.add_edges_from((u, v) for u, v, e in g.edges(data=True) if e.get("directed", True))
    return d


def _undirected_edges(g: nx.Graph) -> list:
    return [(u, v) for u, v, e in g.edges(data=True) if not e.get("directed", g.is_directed())]


def moral_graph(model: Any, *args: Any) -> nx.Graph:
    """The moral graph: each node's parents married, directions dropped; an undirected
    model's Markov network passes through; a factor graph's factors connect their scopes;
    a mixed graph keeps its undirected edges. Reference: Koller & Friedman (2009), §4.5.3.

    Args:
      model: a declaration, a Pyro program, a `probgen.Fit` or a ``networkx`` graph.
      *args: what `graph` needs to trace a program (its data).

    Returns:
      An undirected ``networkx.Graph`` over the random variables.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import BayesianNetwork
        >>> bn = BayesianNetwork({"rain": {"states": 2, "parents": []},
        ...                       "sprinkler": {"states": 2, "parents": []},
        ...                       "wet": {"states": 2, "parents": ["rain", "sprinkler"]}})
        >>> sorted(tuple(sorted(e)) for e in pg.moral_graph(bn).edges)  # the parents married
        [('rain', 'sprinkler'), ('rain', 'wet'), ('sprinkler', 'wet')]
    """
    g = _as_graph(model, *args)
    factors = [n for n, k in g.nodes(data="kind") if k == "factor"]
    if factors and not g.is_directed():  # bipartite factor graph → Markov network
        m = nx.Graph()
        m.add_nodes_from(_probabilistic(g).nodes(data=True))
        for f in factors:
            scope = list(g.neighbors(f))
            m.add_edges_from((a, b) for i, a in enumerate(scope) for b in scope[i + 1:])
        return m
    g = _probabilistic(g, factors=True)
    if not g.is_directed():
        return nx.Graph(g)
    m = nx.moral_graph(_directed_part(g))  # a factor's arguments are married like co-parents
    m.add_edges_from(_undirected_edges(g))
    m.remove_nodes_from(_factor_children(g))
    return m


def markov_blanket(model: Any, node: Any, *args: Any) -> set:
    """The Markov blanket of ``node``: parents, children and the children's other parents
    (the neighbours in the moral graph; the neighbours in an undirected model).
    Reference: Pearl (1988); Koller & Friedman (2009), §3.2.2.

    Args:
      model: a declaration, a Pyro program, a `probgen.Fit` or a ``networkx`` graph.
      node: a variable's name.
      *args: what `graph` needs to trace a program (its data).

    Returns:
      The set of node names.

    Raises:
      ValueError: ``node`` is not a variable of the graph.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import BayesianNetwork
        >>> bn = BayesianNetwork({"rain": {"states": 2, "parents": []},
        ...                       "sprinkler": {"states": 2, "parents": []},
        ...                       "wet": {"states": 2, "parents": ["rain", "sprinkler"]}})
        >>> sorted(pg.markov_blanket(bn, "rain"))  # its child and the child's other parent
        ['sprinkler', 'wet']
    """
    g = _as_graph(model, *args)
    m = moral_graph(g)
    if node not in m:
        raise ValueError(f"no variable {node!r} in the graph; variables: {sorted(map(str, m.nodes))}")
    return set(m.neighbors(node))


def d_separated(model: Any, xs: Iterable | Any, ys: Iterable | Any, given: Iterable | Any = (),
                *args: Any) -> bool:
    """Whether the node sets ``xs`` and ``ys`` are d-separated by ``given`` in a directed
    model (Pearl 1988; Koller & Friedman 2009, §3.3.1). Single node names are accepted.
    A ``pyro.factor`` site counts as an observed child of its arguments.

    Args:
      model: a directed declaration, a Pyro program, a `probgen.Fit` or a graph.
      xs: a node name or a set of them.
      ys: a node name or a set of them.
      given: the conditioning nodes (disjoint from ``xs`` and ``ys``).
      *args: what `graph` needs to trace a program (its data).

    Returns:
      ``True`` when every path between ``xs`` and ``ys`` is blocked by ``given``.

    Raises:
      ValueError: an undirected model, unknown nodes, or overlapping sets.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import BayesianNetwork
        >>> bn = BayesianNetwork({"rain": {"states": 2, "parents": []},
        ...                       "sprinkler": {"states": 2, "parents": []},
        ...                       "wet": {"states": 2, "parents": ["rain", "sprinkler"]}})
        >>> pg.d_separated(bn, "rain", "sprinkler"), pg.d_separated(bn, "rain", "sprinkler", given="wet")
        (True, False)
    """
    g = _probabilistic(_as_graph(model, *args), factors=True)
    if not g.is_directed() or _undirected_edges(g):
        raise ValueError("d-separation is defined for directed graphs; this model has undirected "
                         "edges (use separation in pg.moral_graph(model) instead)")
    sets = [_as_set(s) for s in (xs, ys, given)]
    for s in sets:
        missing = s - set(g.nodes)
        if missing:
            raise ValueError(f"unknown nodes {sorted(map(str, missing))}; nodes: {sorted(map(str, g.nodes))}")
    if sets[0] & sets[1] or (sets[0] | sets[1]) & sets[2]:
        raise ValueError("xs, ys and given must be disjoint node sets")
    d = _directed_part(g)
    test = getattr(nx, "is_d_separator", None) or nx.d_separated
    return bool(test(d, sets[0], sets[1], sets[2] | _factor_children(g)))


def _as_set(s: Any) -> set:
    if isinstance(s, (str, int)):
        return {s}
    return set(s)


def render(model: Any, path: str, *args: Any, rankdir: str | None = None, **options: Any) -> str:
    """Draw ``model``'s structure to ``path`` (.svg, .png, .pdf or .dot by suffix); returns
    ``path``. ``args`` and ``options`` are as for `graph`; ``rankdir`` ("TB", "LR",
    ...) overrides the layout direction (top to bottom for directed models, left to right
    for undirected ones). Drawn by Graphviz ``dot`` (`probgen.drawing`), plates as boxes.

    Args:
      model: a declaration, a Pyro program, a `probgen.Fit` or a ``networkx`` graph.
      path: the output file; its suffix picks the format.
      *args: as for `graph`.
      rankdir: ``"TB"``, ``"LR"``, ``"BT"`` or ``"RL"``.
      **options: as for `graph`.

    Returns:
      ``path``.

    Raises:
      ValueError: a bad ``rankdir`` or an unknown suffix.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import HMM
        >>> pg.render(HMM(2, n_symbols=3), "hmm.svg")
        'hmm.svg'
    """
    from probgen.drawing import render_graph
    g = model if isinstance(model, nx.Graph) else graph(model, *args, **options)
    if rankdir is not None:
        if rankdir not in ("TB", "LR", "BT", "RL"):
            raise ValueError(f"rankdir must be one of TB, LR, BT, RL, got {rankdir!r}")
        g = g.copy()
        g.graph["rankdir"] = rankdir
    return render_graph(g, path)
