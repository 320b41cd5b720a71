"""Drawing a probgen graph with Graphviz.

Latent nodes white, observed shaded, deterministic dashed, parameters as small points,
plates as labelled boxes (``name (size)``), undirected edges without arrow heads
(``dir=none``), factors as small black squares, layers as boxes labelled with their size
and unit type, units grouped by layer.

Plates. Graphviz clusters must nest, so plates that overlap without nesting (a site in
plates ``p`` and ``q``, other sites in only one of them: pyro issue 2980) cannot each be one
cluster. When plates nest (the usual case) each plate is one Graphviz cluster. When they do
not, drawing takes two passes: (1) ``dot`` lays the graph out with one cluster per *region*
(the nodes sharing a chain of plates, nested under the larger plates), so each plate's
nodes sit together; (2) each plate becomes exactly one box, the bounding box of its
nodes and of the plates inside it, and ``neato -n2`` draws the nodes and edges at the
positions of pass 1 with those boxes underneath. Every node is drawn once; the two
overlapping boxes share the nodes that are in both plates (a Venn diagram). A few
pass-1 variants are tried (region orders, one plate kept as a cluster) until every box
holds only its own nodes; when none does (three plates overlapping pairwise, say), the
intruding nodes are moved sideways out of the boxes one at a time (their edges are then
drawn straight), and if that fails too the drawing comes with a warning naming the nodes
that fall inside a box not theirs. The ``.dot`` file of such
a graph is the nested approximation (regions as clusters), since the box geometry only
exists after a layout.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import warnings
from typing import Any

import networkx as nx

__all__ = ["FORMATS", "STYLES", "to_dot", "render_graph", "plate_regions", "unrolled_chains"]

FORMATS = (".svg", ".png", ".pdf", ".dot")
_NO_DOT = ("Graphviz's `dot` program is not installed, so only .dot files can be written; "
           "install Graphviz (Debian/Ubuntu: sudo apt-get install graphviz; macOS: brew install "
           "graphviz; conda: conda install -c conda-forge graphviz) or save to a .dot file")

STYLES: dict[str, dict[str, str]] = {
    "latent": dict(shape="ellipse", style="filled", fillcolor="white"),
    "observed": dict(shape="ellipse", style="filled", fillcolor="gray80"),
    "deterministic": dict(shape="ellipse", style="dashed"),
    "param": dict(shape="point", width="0.08"),
    "factor": dict(shape="square", style="filled", fillcolor="black", width="0.15", height="0.15",
                   fixedsize="true", label=""),
    "layer": dict(shape="box", style="filled", fillcolor="white"),
    "unit": dict(shape="circle", style="filled", fillcolor="white"),
    "nonterminal": dict(shape="ellipse", style="filled", fillcolor="white"),
    "terminal": dict(shape="plaintext"),
}
_PLATE_MARGIN = 8.0   # points between a plate box and what it holds (Graphviz's cluster margin)
_PLATE_LABEL = 16.0   # points reserved under a plate box's contents for its label


# ---- plates as nested clusters ------------------------------------------------------

def plate_regions(g: nx.Graph) -> tuple[dict[tuple, list], bool]:
    """Group nodes by their chain of plates, larger plates outside (ties: the node's own
    order, outermost first). Returns ``{chain: nodes}`` and whether the plates nest, i.e.
    each plate ends exactly one chain prefix (so one Graphviz cluster per plate works).

    Args:
      g: a graph from `probgen.graph` (nodes with ``plates``; sizes in ``g.graph``).

    Returns:
      ``({plate chain (a tuple, outermost first): [node, ...]}, nested)``.

    Examples:
        >>> import probgen as pg
        >>> from probgen.drawing import plate_regions
        >>> from probgen.models import GaussianMixture
        >>> plate_regions(pg.graph(GaussianMixture(2, 2)))
        ({('data',): ['z', 'x']}, True)"""
    members: dict[str, set] = {}
    for n, ps in g.nodes(data="plates"):
        for p in ps or ():
            members.setdefault(p, set()).add(n)
    regions: dict[tuple, list] = {}
    for n, ps in g.nodes(data="plates"):
        ps = tuple(ps or ())
        chain = tuple(sorted(ps, key=lambda p: (-len(members[p]), ps.index(p))))
        regions.setdefault(chain, []).append(n)
    prefixes = {chain[:i + 1] for chain in regions for i in range(len(chain))}
    ends: dict[str, set] = {}
    for pre in prefixes:
        ends.setdefault(pre[-1], set()).add(pre)
    return regions, all(len(v) == 1 for v in ends.values())


def _id(n: Any) -> str:
    """A node's Graphviz id: its name, with ``:`` (Graphviz's node:port separator in edge
    statements) replaced by a look-alike; the label keeps the real name."""
    return str(n).replace(":", "\u2236")


def _arrow(g: nx.Graph, u: Any, v: Any, e: dict) -> bool:
    """Arrow heads on directed edges, except into a factor (a potential, not a child)."""
    return bool(e.get("directed", g.is_directed())) and g.nodes[v].get("kind") != "factor"


def _node_attrs(n: Any, d: dict) -> dict[str, str]:
    kind = d.get("kind")
    attrs = dict(STYLES.get(kind, {}))
    label = str(d.get("label", n))
    if kind == "layer":
        size = d.get("size")
        unit = d.get("unit", d.get("units", d.get("unit_type", "")))
        extra = " ".join(str(x) for x in (size, unit) if x not in (None, ""))
        label = f"{label}\n{extra}" if extra else label
    if kind == "param":
        attrs["xlabel"] = label
        attrs["label"] = ""
    attrs.setdefault("label", label)
    return attrs


def _plate_label(g: nx.Graph, plate: str) -> str:
    size = g.graph.get("plates", {}).get(plate)
    return f"{plate} ({size})" if size is not None else str(plate)


def _rankdir(g: nx.Graph) -> str:
    return g.graph.get("rankdir") or ("TB" if g.is_directed() else "LR")


def to_dot(g: nx.Graph) -> graphviz.Digraph:
    """A ``graphviz.Digraph`` for ``g`` (when plates overlap without nesting, the nested
    approximation with one cluster per region: see the module docstring). The layout runs
    top to bottom for directed graphs and left to right for undirected ones unless
    ``g.graph["rankdir"]`` says otherwise.

    Args:
      g: a graph from `probgen.graph`.

    Returns:
      A ``graphviz.Digraph`` (its ``.source`` is the DOT text): plates are clusters,
        observed nodes shaded, parameters small points.

    Examples:
        >>> import probgen as pg
        >>> from probgen.drawing import to_dot
        >>> from probgen.models import GaussianMixture
        >>> dot = to_dot(pg.graph(GaussianMixture(2, 2)))
        >>> [line.strip() for line in dot.source.splitlines()[:3]]
        ['digraph model {', 'rankdir=TB', 'subgraph cluster_data {']"""
    import graphviz
    dot = graphviz.Digraph(name=g.graph.get("name", "model"))
    dot.attr(rankdir=_rankdir(g))
    regions, nested = plate_regions(g)
    clusters: dict[tuple, Any] = {(): dot}

    def cluster(chain: tuple):
        if chain not in clusters:
            name = "cluster_" + (chain[-1] if nested else "/".join(chain))
            c = graphviz.Digraph(name=name)
            c.attr(label=_plate_label(g, chain[-1]), labeljust="r", labelloc="b", style="rounded")
            clusters[chain] = c
        return clusters[chain]

    layered = {}
    for chain in sorted(regions, key=len):
        for i in range(len(chain)):
            cluster(chain[:i + 1])
        for n in regions[chain]:
            d = g.nodes[n]
            if not chain and d.get("kind") == "unit" and d.get("layer") is not None:
                layered.setdefault(d["layer"], []).append(n)
                continue
            cluster(chain).node(_id(n), **_node_attrs(n, d))
    for layer, nodes in layered.items():
        c = graphviz.Digraph(name=f"cluster_layer_{layer}")
        c.attr(label=str(layer), style="dashed", labeljust="l")
        for n in nodes:
            c.node(_id(n), **_node_attrs(n, g.nodes[n]))
        dot.subgraph(c)
    for chain in sorted(clusters, key=len, reverse=True):  # attach children before parents
        if chain:
            clusters[chain[:-1]].subgraph(clusters[chain])
    for row in unrolled_chains(g):
        same = graphviz.Digraph()
        same.attr(rank="same")
        for n in row:
            same.node(_id(n))
        dot.subgraph(same)
    for u, v, e in g.edges(data=True):
        attrs = {} if _arrow(g, u, v, e) else {"dir": "none"}
        if e.get("label") is not None:
            attrs["label"] = str(e["label"])
        dot.edge(_id(u), _id(v), **attrs)
    return dot


def unrolled_chains(g: nx.Graph) -> list[list]:
    """Chains unrolled from a loop (``pyro.markov``): nodes named ``<prefix>_<t>`` or
    ``<prefix>[t]`` outside any plate, with an edge from each step to the next, at least 3
    long. Drawn in one row, so an HMM looks like the textbook picture.

    Args:
      g: a graph from `probgen.graph`.

    Returns:
      A list of chains, each the list of its nodes in step order.

    Examples:
        >>> import networkx as nx
        >>> from probgen.drawing import unrolled_chains
        >>> g = nx.DiGraph([("z_0", "z_1"), ("z_1", "z_2"), ("z_0", "x_0")])
        >>> nx.set_node_attributes(g, (), "plates")
        >>> unrolled_chains(g)
        [['z_0', 'z_1', 'z_2']]"""
    import re
    if not g.is_directed():
        return []
    groups: dict[str, dict[int, Any]] = {}
    for n, d in g.nodes(data=True):
        m = re.fullmatch(r"(.+?)(?:_(\d+)|\[(\d+)\])", str(n))
        if m and not d.get("plates") and d.get("kind") != "param":
            groups.setdefault(m.group(1), {})[int(m.group(2) or m.group(3))] = n
    rows = []
    for steps in groups.values():
        ts = sorted(steps)
        if len(ts) >= 3 and all(g.has_edge(steps[a], steps[b]) for a, b in zip(ts, ts[1:])):
            rows.append([steps[t] for t in ts])
    return rows


# ---- overlapping plates: pass 1 lays out by region, pass 2 draws one box per plate ----

def _layout_source(g: nx.Graph, members: dict[str, set], order: tuple = (), wrap: str | None = None) -> str:
    """Pass 1 for overlapping plates: Graphviz source whose layout keeps each plate's
    nodes together without favouring one of two overlapping plates. Plates that nest
    with every other plate are clusters; inside them each *region* (the nodes sharing one
    exact set of plates) is its own invisible cluster, so an intersection region sits
    between the regions of its two plates rather than inside one of them. ``order`` (a
    sequence of the overlapping plates) sets the order in which the regions are declared,
    which is where Graphviz starts its crossing minimisation; ``wrap`` names one
    overlapping plate to keep as a cluster around its regions (another candidate layout)."""
    import graphviz
    def laminar(p: str) -> bool:
        return all(members[p] <= members[q] or members[q] <= members[p] or not members[p] & members[q]
                   for q in members)
    clean = {p for p in members if laminar(p)} | ({wrap} if wrap else set())
    dot = graphviz.Digraph(name="layout")
    dot.attr(rankdir=_rankdir(g), nodesep="1.3")
    clusters: dict[tuple, Any] = {(): dot}
    by_set: dict[frozenset, list] = {}
    for n, ps in g.nodes(data="plates"):
        by_set.setdefault(frozenset(ps or ()), []).append(n)
    def region_key(kv):
        return tuple(p not in kv[0] for p in order) + (sorted(kv[0]),)
    for i, (plate_set, nodes) in enumerate(sorted(by_set.items(), key=region_key)):
        chain = tuple(sorted((p for p in plate_set if p in clean), key=lambda p: (-len(members[p]), p)))
        key = chain + ((f"region{i}",) if plate_set - clean else ())
        for j in range(1, len(key) + 1):
            if key[:j] not in clusters:
                c = graphviz.Digraph(name=f"cluster_{'/'.join(key[:j])}")
                c.attr(style="invis", margin="16")
                clusters[key[:j]] = c
        for n in nodes:
            clusters[key].node(_id(n), **_node_attrs(n, g.nodes[n]))
    for key in sorted(clusters, key=len, reverse=True):
        if key:
            clusters[key[:-1]].subgraph(clusters[key])
    for u, v, e in g.edges(data=True):
        dot.edge(_id(u), _id(v), **({} if _arrow(g, u, v, e) else {"dir": "none"}))
    return dot.source


def _node_boxes(layout: dict) -> dict[str, tuple[float, float, float, float]]:
    """Each node's bounding box (points) in a ``dot -Tjson`` layout."""
    box = {}
    for o in layout.get("objects", []):
        if "pos" in o:
            x, y = map(float, o["pos"].split(","))
            w, h = float(o["width"]) * 36, float(o["height"]) * 36
            box[o["name"]] = (x - w, y - h, x + w, y + h)
    return box


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _plate_boxes(box: dict, members: dict[str, set]) -> tuple[dict, dict]:
    """One box per plate (the bounding box of its nodes and of the plates inside it, plus
    margins) and, per plate, the nodes whose shapes touch its box without being in it."""
    plate_box: dict[str, tuple] = {}
    strangers: dict[str, list] = {}
    for i, p in enumerate(sorted(members, key=lambda p: (len(members[p]), p))):  # inner plates first
        parts = [box[n] for n in members[p]]
        parts += [plate_box[q] for q in plate_box if members[q] < members[p]]
        # each successive box gets a slightly larger margin, so overlapping boxes never share a border
        m = _PLATE_MARGIN + 6.0 * i
        x0, y0 = min(b[0] for b in parts) - m, min(b[1] for b in parts) - m - _PLATE_LABEL
        x1, y1 = max(b[2] for b in parts) + m, max(b[3] for b in parts) + m
        plate_box[p] = (x0, y0, x1, y1)
        inside = [n for n, b in box.items() if n not in members[p] and _overlap(b, plate_box[p])]
        if inside:
            strangers[p] = inside
    return plate_box, strangers


def _repair(box: dict, members: dict[str, set], moves: int = 12) -> tuple[dict, dict, dict, set]:
    """Greedy repair of a layout whose plate boxes hold strangers: move one stranger at a
    time just left or right of the box it intrudes on, keeping the move that leaves the
    fewest strangers (and no node on top of another); stop when none is left or no move
    helps. Returns the node boxes, plate boxes, remaining strangers and moved nodes."""
    def cost(b: dict) -> tuple[dict, dict, int]:
        pb, st = _plate_boxes(b, members)
        clash = sum(_overlap(b[u], b[v]) for u, v in itertools.combinations(b, 2))
        return pb, st, sum(map(len, st.values())) + len(b) * clash
    plate_box, strangers, current = cost(box)
    moved: set = set()
    gap = _PLATE_MARGIN + 6.0 * len(members)
    for _ in range(moves):
        if not strangers:
            break
        best = None
        for p, ns in strangers.items():
            x0, _, x1, _ = plate_box[p]
            for n in ns:
                a, b, c, d = box[n]
                for left in (x0 - gap - (c - a), x1 + gap):
                    trial = dict(box)
                    trial[n] = (left, b, left + c - a, d)
                    pb, st, k = cost(trial)
                    if best is None or k < best[0]:
                        best = (k, trial, n, pb, st)
        if best is None or best[0] >= current:
            break
        current, box, plate_box, strangers = best[0], best[1], best[3], best[4]
        moved.add(best[2])
    return box, plate_box, strangers, moved


def _overlapping_plates_source(g: nx.Graph) -> str:
    """Graphviz source (for ``neato -n2``) with every node and edge at its pass-1 position
    and one box node per plate, drawn first so it lies underneath."""
    import graphviz
    members: dict[str, set] = {}
    for n, ps in g.nodes(data="plates"):
        for p in ps or ():
            members.setdefault(p, set()).add(_id(n))
    # Graphviz's layout of the regions decides whether each plate's box holds only its own
    # nodes; try the region orders a few ways and keep the first that does
    overlapping = sorted(p for p in members if any(
        members[p] & members[q] and not (members[p] <= members[q] or members[q] <= members[p]) for q in members))
    best = None
    orders = list(itertools.islice(itertools.permutations(overlapping), 6))
    candidates = [(o, None) for o in orders] + [(o, w) for w in overlapping for o in orders[:2]]
    for order, wrap in candidates:
        layout = json.loads(_graphviz(["dot", "-Tjson"], _layout_source(g, members, order, wrap).encode()))
        box = _node_boxes(layout)
        plate_box, strangers = _plate_boxes(box, members)
        if best is None or sum(map(len, strangers.values())) < sum(map(len, best[3].values())):
            best = (layout, box, plate_box, strangers)
        if not strangers:
            break
    layout, box, plate_box, strangers = best
    moved: set = set()
    if strangers:  # no layout fits: move the intruding nodes aside (their edges become straight)
        box, plate_box, strangers, moved = _repair(box, members)
    if strangers:
        warnings.warn("no layout found that keeps every plate's box to its own nodes: "
                      + "; ".join(f"{sorted(ns)} inside {p!r}" for p, ns in strangers.items()))
    objects = {o["_gvid"]: o for o in layout.get("objects", []) if "pos" in o}
    out = graphviz.Digraph(name=g.graph.get("name", "model"))
    out.attr(splines="true")
    for p, (x0, y0, x1, y1) in sorted(plate_box.items(), key=lambda kv: -len(members[kv[0]])):
        out.node(f"cluster_{p}", label=_plate_label(g, p) + "\\r", shape="box", style="rounded",
                 labelloc="b", fixedsize="true", width=f"{(x1 - x0) / 72:.4f}", height=f"{(y1 - y0) / 72:.4f}",
                 pos=f"{(x0 + x1) / 2:.2f},{(y0 + y1) / 2:.2f}!", id=f"cluster_{p}", **{"class": "cluster"})
    for n, d in g.nodes(data=True):
        x0, y0, x1, y1 = box[_id(n)]
        out.node(_id(n), pos=f"{(x0 + x1) / 2:.2f},{(y0 + y1) / 2:.2f}!", **_node_attrs(n, d))
    edge_pos = {(objects[e["tail"]]["name"], objects[e["head"]]["name"]): e.get("pos")
                for e in layout.get("edges", [])}
    for u, v, e in g.edges(data=True):
        attrs = {} if _arrow(g, u, v, e) else {"dir": "none"}
        if edge_pos.get((_id(u), _id(v))) and not {_id(u), _id(v)} & moved:
            attrs["pos"] = edge_pos[(_id(u), _id(v))]
        out.edge(_id(u), _id(v), **attrs)
    return out.source


def render_graph(g: nx.Graph, path: str | os.PathLike) -> str:
    """Write ``g`` to ``path``; the format comes from the suffix (.svg, .png, .pdf, .dot).
    Without Graphviz's ``dot`` program only ``.dot`` works (a ``RuntimeError`` says how to
    install it otherwise).

    Args:
      g: a graph from `probgen.graph`.
      path: the output file.

    Returns:
      ``path`` as a string.

    Raises:
      ValueError: an unknown suffix.
      RuntimeError: Graphviz's ``dot`` is missing (for any format but ``.dot``).

    Examples:
        >>> import probgen as pg
        >>> from probgen.drawing import render_graph
        >>> from probgen.models import GaussianMixture
        >>> render_graph(pg.graph(GaussianMixture(2, 2)), "gmm.dot")
        'gmm.dot'
        >>> open("gmm.dot").read().startswith("digraph")
        True"""
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FORMATS:
        raise ValueError(f"cannot draw to {path!r}: the suffix must be one of {list(FORMATS)}")
    if suffix != ".dot" and shutil.which("dot") is None:
        raise RuntimeError(_NO_DOT)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if suffix == ".dot":
        with open(path, "w") as f:
            f.write(to_dot(g).source)
        return path
    _, nested = plate_regions(g)
    if nested:
        data = to_dot(g).pipe(format=suffix[1:])
    else:
        data = _graphviz(["neato", "-n2", "-T" + suffix[1:]], _overlapping_plates_source(g).encode())
    with open(path, "wb") as f:
        f.write(data)
    return path


def _graphviz(command: list[str], source: bytes) -> bytes:
    """Run a Graphviz program on ``source``; its own message on failure."""
    done = subprocess.run(command, input=source, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"Graphviz's {command[0]} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout
