"""The BIF interchange format for discrete Bayesian networks (Cozman 1998), read and
written with a parser of our own: `read_text` (text or a ``.bif`` / ``.bif.gz``
path), `parse` (text → name, spec, lines), `write` (a network → text; floats
written with ``repr``, so reading it back gives the same tables bit for bit).
"""
from __future__ import annotations

import gzip
import itertools
import math
import os
import re
from typing import Any

import numpy as np

__all__ = ["read_text", "parse", "write"]


_TOKEN = re.compile(r"//[^\n]*|/\*.*?\*/|\s+|([{}()\[\]|,;])|([^\s{}()\[\]|,;]+)", re.S)


def read_text(source: Any) -> tuple[str, str | None]:
    """BIF text and a name from ``source``: the text itself, or a ``.bif`` / ``.bif.gz`` path."""
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "{" not in source):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise ValueError(f"no such BIF file: {path} (pass a path or the BIF text itself)")
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            return f.read(), os.path.basename(path).split(".")[0]
    if not isinstance(source, str):
        raise ValueError(f"from_bif takes BIF text or a file path, got {type(source).__name__}")
    return source, None


class _Tokens:
    """BIF tokens with their line numbers (comments and whitespace dropped)."""

    def __init__(self, text: str):
        self.toks: list[tuple[str, int]] = []
        line = 1
        pos = 0
        for m in _TOKEN.finditer(text):
            if m.start() != pos:  # unreachable: the pattern matches any character class
                raise ValueError(f"BIF line {line}: cannot read {text[pos:m.start()]!r}")
            tok = m.group(1) or m.group(2)
            if tok:
                self.toks.append((tok, line))
            line += m.group(0).count("\n")
            pos = m.end()
        self.i = 0
        self.last_line = line

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def line(self) -> int:
        return self.toks[self.i][1] if self.i < len(self.toks) else self.last_line

    def next(self, expect: str | None = None) -> str:
        if self.i >= len(self.toks):
            raise ValueError(f"BIF line {self.last_line}: unexpected end of text"
                             + (f", expected {expect!r}" if expect else ""))
        tok, line = self.toks[self.i]
        if expect is not None and tok != expect:
            raise ValueError(f"BIF line {line}: expected {expect!r}, found {tok!r}")
        self.i += 1
        return tok

    def error(self, msg: str) -> ValueError:
        return ValueError(f"BIF line {self.line()}: {msg}")

    def skip_block(self) -> None:
        """Skip a ``{ ... }`` block (network / property bodies)."""
        self.next("{")
        depth = 1
        while depth:
            t = self.next()
            depth += (t == "{") - (t == "}")

    def skip_statement(self) -> None:
        while self.next() != ";":
            pass


def _number(tok: _Tokens) -> float:
    line, t = tok.line(), tok.next()
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"BIF line {line}: expected a probability, found {t!r}") from None


def parse(text: str, name: str | None = None) -> tuple[str, dict, dict[str, int]]:
    """Read BIF ``text``: the network's name (``name``, e.g. the file's, when the text
    says none or pgmpy's ``unknown``), its spec ``{variable: {"states", "parents",
    "cpt"}}`` (the constructor's argument of `BayesianNetwork`;
    ``table`` entries list the child's states outermost, pgmpy's reading; rows
    ``(parent states) p1, p2, ...;`` in any order) and the line of each variable's
    probability block. ``ValueError`` with the line number for malformed text."""
    tok = _Tokens(text)
    states: dict[str, list[str]] = {}
    probs: dict[str, tuple[list[str], Any, int]] = {}
    net_name = name or "network"
    while tok.peek() is not None:
        line, kw = tok.line(), tok.next()
        if kw == "network":
            parts = []
            while tok.peek() not in ("{", None):
                parts.append(tok.next())
            if parts and not (parts == ["unknown"] and name):  # pgmpy's files all say "unknown"
                net_name = " ".join(parts)
            tok.skip_block()
        elif kw == "variable":
            v = tok.next()
            tok.next("{")
            while tok.peek() != "}":
                if tok.peek() == "type":
                    tok.next()
                    kind = tok.next()
                    if kind != "discrete":
                        raise tok.error(f"variable {v!r}: only discrete variables are supported, got {kind!r}")
                    tok.next("[")
                    n_line, n_tok = tok.line(), tok.next()
                    if not n_tok.isdigit():
                        raise ValueError(f"BIF line {n_line}: variable {v!r}: expected a number of states, found {n_tok!r}")
                    tok.next("]")
                    tok.next("{")
                    st = [tok.next()]
                    while tok.peek() == ",":
                        tok.next()
                        st.append(tok.next())
                    tok.next("}")
                    tok.next(";")
                    if len(st) != int(n_tok):
                        raise ValueError(f"BIF line {n_line}: variable {v!r} declares {n_tok} states but lists {len(st)}")
                    states[v] = st
                elif tok.peek() == "property":
                    tok.skip_statement()
                elif tok.peek() is None:
                    raise tok.error(f"variable {v!r}: unexpected end of text, expected '}}'")
                else:
                    raise tok.error(f"variable {v!r}: expected 'type' or 'property', found {tok.peek()!r}")
            tok.next("}")
            if v not in states:
                raise ValueError(f"BIF line {line}: variable {v!r} has no 'type discrete' declaration")
        elif kw == "probability":
            tok.next("(")
            v = tok.next()
            if v not in states:
                raise ValueError(f"BIF line {line}: probability for undeclared variable {v!r}")
            pa = []
            if tok.peek() == "|":
                tok.next()
                pa.append(tok.next())
                while tok.peek() == ",":
                    tok.next()
                    pa.append(tok.next())
            tok.next(")")
            for p in pa:
                if p not in states:
                    raise ValueError(f"BIF line {line}: variable {v!r} has undeclared parent {p!r}")
            card = len(states[v])
            shape = tuple(len(states[p]) for p in pa) + (card,)
            table = np.full(shape, np.nan)
            tok.next("{")
            while tok.peek() != "}":
                row_line = tok.line()
                head = tok.peek()
                if head in ("table", "default"):
                    tok.next()
                    vals = [_number(tok)]
                    while tok.peek() == ",":
                        tok.next()
                        vals.append(_number(tok))
                    tok.next(";")
                    if len(vals) != math.prod(shape):
                        raise ValueError(f"BIF line {row_line}: variable {v!r}: {head} has {len(vals)} entries, "
                                         f"expected {math.prod(shape)}")
                    arr = np.array(vals).reshape(card, -1).T.reshape(shape)
                    if head == "table":
                        table = arr
                    else:
                        table = np.where(np.isnan(table), arr, table)
                elif head == "(":
                    tok.next()
                    combo = [tok.next()]
                    while tok.peek() == ",":
                        tok.next()
                        combo.append(tok.next())
                    tok.next(")")
                    if len(combo) != len(pa):
                        raise ValueError(f"BIF line {row_line}: variable {v!r}: a row names {len(combo)} parent "
                                         f"states, expected {len(pa)} ({', '.join(pa)})")
                    idx = []
                    for p, s in zip(pa, combo):
                        if s not in states[p]:
                            raise ValueError(f"BIF line {row_line}: variable {v!r}: parent {p!r} has no state "
                                             f"{s!r}; states: {states[p]}")
                        idx.append(states[p].index(s))
                    vals = [_number(tok)]
                    while tok.peek() == ",":
                        tok.next()
                        vals.append(_number(tok))
                    tok.next(";")
                    if len(vals) != card:
                        raise ValueError(f"BIF line {row_line}: variable {v!r}: a row has {len(vals)} "
                                         f"probabilities, expected {card}")
                    table[tuple(idx)] = vals
                elif head is None:
                    raise tok.error(f"variable {v!r}: unexpected end of text in its probability block")
                elif head == "property":
                    tok.skip_statement()
                else:
                    raise tok.error(f"variable {v!r}: expected 'table', 'default' or '(parent states)', "
                                    f"found {head!r}")
            tok.next("}")
            if np.isnan(table).any():
                raise ValueError(f"BIF line {line}: variable {v!r}: the probability block leaves parent "
                                 "configurations without a distribution")
            if v in probs:
                raise ValueError(f"BIF line {line}: a second probability block for variable {v!r}")
            probs[v] = (pa, table, line)
        else:
            raise ValueError(f"BIF line {line}: expected 'network', 'variable' or 'probability', found {kw!r}")
    missing = [v for v in states if v not in probs]
    if missing:
        raise ValueError(f"BIF: variables {missing} have no probability block")
    spec = {v: {"states": states[v], "parents": probs[v][0], "cpt": probs[v][1]} for v in states}
    return net_name, spec, {v: probs[v][2] for v in probs}


def write(bn: Any) -> str:
    """``bn`` (``name``, ``variables``, ``states``, ``parents``, ``tables``) as BIF text."""
    lines = [f"network {bn.name} {{", "}"]
    for v in bn.variables:
        lines += [f"variable {v} {{",
                  f"  type discrete [ {len(bn.states[v])} ] {{ {', '.join(bn.states[v])} }};", "}"]
    for v in bn.variables:
        pa = bn.parents[v]
        t = bn.tables[v].numpy()
        head = f"probability ( {v}" + (f" | {', '.join(pa)}" if pa else "") + " ) {"
        lines.append(head)
        if not pa:
            lines.append("  table " + ", ".join(repr(float(p)) for p in t) + ";")
        else:
            for combo in itertools.product(*(range(len(bn.states[p])) for p in pa)):
                names = ", ".join(bn.states[p][k] for p, k in zip(pa, combo))
                lines.append(f"  ({names}) " + ", ".join(repr(float(p)) for p in t[combo]) + ";")
        lines.append("}")
    return "\n".join(lines) + "\n"
