"""Drawing a probgen graph with Graphviz.

Latent nodes white, observed shaded, parameters as small points, plates as labelled
clusters (``name (size)``), undirected edges without arrow heads, factors as small
squares, layers as boxes labelled with their size.
"""
from __future__ import annotations

import os
import shutil

import networkx as nx

FORMATS = (".svg", ".png", ".pdf", ".dot")
_NO_DOT = ("Graphviz's `dot` program is not installed, so only .dot files can be written; "
           "install it (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz) "
           "or save to a .dot file")


def to_dot(g: nx.Graph):
    """A ``graphviz.Digraph`` for ``g``."""
    import graphviz
    dot = graphviz.Digraph()
    dot.attr(rankdir="TB" if g.is_directed() else "LR")
    styles = {
        "latent": dict(shape="ellipse", style="filled", fillcolor="white"),
        "observed": dict(shape="ellipse", style="filled", fillcolor="gray80"),
        "deterministic": dict(shape="ellipse", style="dashed"),
        "param": dict(shape="point", width="0.08"),
        "factor": dict(shape="square", style="filled", fillcolor="black", width="0.15", label=""),
        "layer": dict(shape="box"),
        "unit": dict(shape="circle"),
        "nonterminal": dict(shape="ellipse"),
        "terminal": dict(shape="plaintext"),
    }
    plates = g.graph.get("plates", {})
    # Plates that overlap without nesting cannot be nested clusters; group nodes by
    # their full plate set and draw each group as its own cluster labelled with all plates.
    groups: dict[tuple, list] = {}
    for n, d in g.nodes(data=True):
        groups.setdefault(tuple(d.get("plates", ())), []).append(n)
    for key, nodes in groups.items():
        target = dot
        if key:
            label = " × ".join(f"{p} ({plates.get(p)})" if plates.get(p) else p for p in key)
            target = graphviz.Digraph(name="cluster_" + "__".join(map(str, key)))
            target.attr(label=label, labeljust="r", labelloc="b", style="rounded")
        for n in nodes:
            d = g.nodes[n]
            attrs = dict(styles.get(d.get("kind"), {}))
            label = d.get("label", str(n))
            if d.get("kind") == "layer" and "size" in d:
                label = f"{label}\n{d['size']} {d.get('units', '')}".rstrip()
            attrs.setdefault("label", label)
            if d.get("kind") == "param":
                attrs["xlabel"] = str(n)
            target.node(str(n), **attrs)
        if key:
            dot.subgraph(target)
    for u, v, e in g.edges(data=True):
        directed = e.get("directed", g.is_directed())
        dot.edge(str(u), str(v), **({} if directed else {"dir": "none"}))
    return dot


def render_graph(g: nx.Graph, path: str) -> str:
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot draw to {path!r}: the suffix must be one of {list(FORMATS)}")
    dot = to_dot(g)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if suffix == ".dot":
        with open(path, "w") as f:
            f.write(dot.source)
        return path
    if shutil.which("dot") is None:
        raise RuntimeError(_NO_DOT)
    data = dot.pipe(format=suffix[1:])
    with open(path, "wb") as f:
        f.write(data)
    return path
