"""Parse trees: the `Tree` a grammar's Viterbi parse and sampler return, NLTK's
bracketed text form ``(S (NP John) (VP ran))`` read and written, and its drawing."""
from __future__ import annotations

import re
from typing import Any, Sequence

__all__ = ["Tree"]


class Tree:
    """A parse tree: ``label`` (a nonterminal) and ``children`` (trees or word strings).

    ``str(tree)`` is NLTK's bracketed form on one line, ``(S (NP John) (VP (V ran)))``;
    `fromstring` reads it back. ``log_prob`` is the tree's log probability
    under the grammar that produced it (``None`` for a tree read from text).

    Args:
      label: the nonterminal at the root.
      children: subtrees and words, left to right.
      log_prob: the tree's log probability, if known.

    Examples:
        >>> from probgen.models import Tree
        >>> t = Tree.fromstring("(S (NP John) (VP (V ran)))")
        >>> t.label, t.leaves(), t.height()
        ('S', ['John', 'ran'], 4)
        >>> print(t)
        (S (NP John) (VP (V ran)))
    """

    __slots__ = ("label", "children", "log_prob")

    def __init__(self, label: str, children: Sequence["Tree | str"], log_prob: float | None = None):
        self.label = label
        self.children = list(children)
        self.log_prob = log_prob

    def leaves(self) -> list[str]:
        """The words at the leaves, left to right.

        Returns:
          A list of strings.
        """
        out = []
        for c in self.children:
            out.extend(c.leaves() if isinstance(c, Tree) else [c])
        return out

    def productions(self) -> list[tuple[str, tuple[tuple[str, bool], ...]]]:
        """The rules the tree uses, as ``(lhs, ((symbol, is_terminal), ...))``, pre-order."""
        out = [(self.label, tuple((c.label, False) if isinstance(c, Tree) else (c, True)
                                  for c in self.children))]
        for c in self.children:
            if isinstance(c, Tree):
                out.extend(c.productions())
        return out

    def height(self) -> int:
        """The height, NLTK's convention: a preterminal over a word has height 2.

        Returns:
          An int.
        """
        return 1 + max((c.height() if isinstance(c, Tree) else 1) for c in self.children)

    def __str__(self) -> str:
        return "(" + " ".join([self.label] + [str(c) for c in self.children]) + ")"

    def __repr__(self) -> str:
        lp = "" if self.log_prob is None else f", log_prob={self.log_prob:.6g}"
        return f"Tree({str(self)!r}{lp})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, Tree) and self.label == other.label and self.children == other.children

    def __hash__(self) -> int:
        return hash(str(self))

    def __getstate__(self):
        return (self.label, self.children, self.log_prob)

    def __setstate__(self, state):
        self.label, self.children, self.log_prob = state

    @classmethod
    def fromstring(cls, text: str) -> "Tree":
        """Read NLTK's bracketed form ``(S (NP John) (VP ran))``; ``ValueError`` if malformed."""
        tokens = re.findall(r"\(|\)|[^\s()]+", text)
        if not tokens or tokens[0] != "(":
            raise ValueError(f"a bracketed tree starts with '(', got {text[:40]!r}")
        pos = 0

        def node() -> Tree:
            nonlocal pos
            pos += 1  # '('
            if pos >= len(tokens) or tokens[pos] in "()":
                raise ValueError(f"a label must follow '(' in {text[:60]!r}")
            label, children = tokens[pos], []
            pos += 1
            while pos < len(tokens) and tokens[pos] != ")":
                if tokens[pos] == "(":
                    children.append(node())
                else:
                    children.append(tokens[pos])
                    pos += 1
            if pos >= len(tokens):
                raise ValueError(f"unbalanced brackets in {text[:60]!r}")
            pos += 1  # ')'
            if not children:
                raise ValueError(f"node {label!r} has no children in {text[:60]!r}")
            return Tree(label, children)

        tree = node()
        if pos != len(tokens):
            raise ValueError(f"text after the end of the tree in {text[:60]!r}")
        return tree

    def to_graph(self):
        """A networkx ``DiGraph`` of the tree (nonterminal / terminal nodes, ordered edges)."""
        import networkx as nx
        g = nx.DiGraph()
        g.graph["plates"] = {}
        counter = [0]

        def add(t: Any) -> str:
            name = f"n{counter[0]}"
            counter[0] += 1
            if isinstance(t, Tree):
                g.add_node(name, kind="nonterminal", label=t.label, plates=())
                for c in t.children:
                    g.add_edge(name, add(c), directed=True)
            else:
                g.add_node(name, kind="terminal", label=t, plates=())
            return name

        add(self)
        return g

    def render(self, path: str) -> str:
        """Draw the tree to ``path`` (.svg, .png, .pdf or .dot) with Graphviz."""
        from probgen.drawing import render_graph
        return render_graph(self.to_graph(), path)
