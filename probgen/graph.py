"""Model structure as networkx graphs, graph queries, and drawing.

``graph(model, *args)`` returns a ``networkx.DiGraph`` for directed models (edges
parents → children) and a ``networkx.Graph`` for undirected ones. Nodes carry
``kind`` (``latent``, ``observed``, ``param``, ``factor``, ``layer``, ``unit``,
``nonterminal``, ``terminal``) and directed-model nodes carry ``plates`` (a tuple of
plate names); edges carry ``directed``. The graph's ``plates`` attribute maps plate
name → size.

Declarations that are not Pyro programs provide ``structure(**options)`` returning
such a graph. Pyro programs are traced (Pyro's ``get_model_relations``).
"""
from __future__ import annotations

from typing import Any, Iterable

import networkx as nx


def graph(model: Any, *args: Any, params: bool = False, deterministic: bool = False,
          **options: Any) -> nx.Graph:
    """The structure of ``model`` (a declaration, a Pyro function or a Fit)."""
    from probgen import registry
    from probgen.declarations import Program
    model = registry.as_declaration(model)
    if hasattr(model, "structure"):
        return model.structure(*args, params=params, **options)
    if isinstance(model, Program):
        if not args and hasattr(model, "trace_args"):
            args = model.trace_args(**options)
        elif len(args) == 1:
            args = model.program_args(args[0])
        return program_graph(model.program, *args, params=params, deterministic=deterministic)
    raise ValueError(f"{type(model).__name__} declares no structure")


def program_graph(fn: Any, *args: Any, params: bool = False, deterministic: bool = False,
                  **kwargs: Any) -> nx.DiGraph:
    """Trace a Pyro program and return its sample→sample dependency graph."""
    import pyro
    from pyro.infer.inspect import get_model_relations
    with pyro.poutine.block(), pyro.get_param_store().scope():
        try:
            rel = get_model_relations(fn, model_args=args, model_kwargs=kwargs,
                                      include_deterministic=deterministic)
        except Exception as exc:
            raise ValueError(f"could not trace the program {getattr(fn, '__name__', fn)!r} with the given "
                             f"arguments: {type(exc).__name__}: {exc}") from None
    g = nx.DiGraph()
    plate_of = {site: () for site in rel["sample_sample"]}
    plate_sizes = {}
    for plate, sites in rel["plate_sample"].items():
        for s in sites:
            plate_of[s] = plate_of.get(s, ()) + (plate,)
    observed = set(rel["observed"])
    for site, dist in rel["sample_dist"].items():
        kind = "observed" if site in observed else ("deterministic" if dist == "Deterministic" else "latent")
        g.add_node(site, kind=kind, distribution=dist, plates=tuple(sorted(plate_of.get(site, ()))))
    for child, parents in rel["sample_sample"].items():
        for p in parents:
            g.add_edge(p, child, directed=True)
    if params:
        for site, ps in rel["sample_param"].items():
            for p in ps:
                if p not in g:
                    g.add_node(p, kind="param", plates=())
                g.add_edge(p, site, directed=True)
    for plate in rel["plate_sample"]:
        plate_sizes[plate] = _plate_size(fn, args, kwargs, plate)
    g.graph["plates"] = plate_sizes
    return g


def _plate_size(fn: Any, args: tuple, kwargs: dict, plate: str) -> int | None:
    import pyro
    from pyro import poutine
    with pyro.poutine.block(), pyro.get_param_store().scope():
        tr = poutine.trace(fn).get_trace(*args, **kwargs)
    for site in tr.nodes.values():
        for f in site.get("cond_indep_stack", ()):
            if f.name == plate:
                return f.size
    return None


# ---- queries ----------------------------------------------------------------------

def _as_graph(model: Any, *args: Any) -> nx.Graph:
    return model if isinstance(model, nx.Graph) else graph(model, *args)


def _probabilistic(g: nx.Graph) -> nx.Graph:
    """Only random-variable nodes (drop parameters and factor nodes)."""
    keep = [n for n, d in g.nodes(data=True) if d.get("kind") not in ("param", "factor")]
    return g.subgraph(keep)


def moral_graph(model: Any, *args: Any) -> nx.Graph:
    """The moral graph: parents married, directions dropped (undirected graphs pass through)."""
    g = _probabilistic(_as_graph(model, *args))
    if not g.is_directed():
        return nx.Graph(g)
    return nx.moral_graph(_directed_part(g))


def _directed_part(g: nx.DiGraph) -> nx.DiGraph:
    d = nx.DiGraph()
    d.add_nodes_from(g.nodes(data=True))
    d.add_edges_from((u, v) for u, v, e in g.edges(data=True) if e.get("directed", True))
    return d


def markov_blanket(model: Any, node: Any, *args: Any) -> set:
    """Parents, children and the children's other parents (neighbours when undirected)."""
    g = _probabilistic(_as_graph(model, *args))
    if node not in g:
        raise ValueError(f"no node {node!r} in the graph; nodes: {sorted(map(str, g.nodes))}")
    if not g.is_directed():
        return set(g.neighbors(node))
    return set(moral_graph(g).neighbors(node))


def d_separated(model: Any, xs: Iterable | Any, ys: Iterable | Any, given: Iterable | Any = (),
                *args: Any) -> bool:
    """Whether ``xs`` and ``ys`` are d-separated by ``given`` in a directed model."""
    g = _probabilistic(_as_graph(model, *args))
    if not g.is_directed():
        raise ValueError("d-separation is defined for directed graphs; this model is undirected "
                         "(use graph separation on pg.graph(model))")
    sets = [_as_set(s) for s in (xs, ys, given)]
    for s in sets:
        missing = s - set(g.nodes)
        if missing:
            raise ValueError(f"unknown nodes {sorted(map(str, missing))}; nodes: {sorted(map(str, g.nodes))}")
    d = _directed_part(g)
    test = getattr(nx, "is_d_separator", None) or nx.d_separated
    return bool(test(d, *sets))


def _as_set(s: Any) -> set:
    if isinstance(s, (str, int)):
        return {s}
    return set(s)


def render(model: Any, path: str, *args: Any, **options: Any) -> str:
    """Draw ``model``'s structure to ``path`` (.svg, .png, .pdf or .dot by suffix)."""
    from probgen.render import render_graph
    g = model if isinstance(model, nx.Graph) else graph(model, *args, **options)
    return render_graph(g, path)
