"""The grammar text format, read and written: NLTK-style weighted rules ::

    S  -> NP VP [1.0]
    NP -> Det N [0.6] | 'John' [0.4]

Nonterminals are bare names, terminals are quoted (``'...'`` or ``"..."``), each
alternative carries its probability in brackets, ``|`` separates alternatives (also at
the start of a continuation line), ``#`` starts a comment outside quotes. A `Rule`
is ``lhs -> rhs``; `parse_rules` reads the text, `format_rules` writes it back.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

__all__ = ["Rule", "NAME", "quote", "parse_rules", "format_rules"]


@dataclass(frozen=True)
class Rule:
    """``lhs -> rhs``; ``rhs`` is a tuple of ``(symbol, is_terminal)``."""
    lhs: str
    rhs: tuple

    def __str__(self) -> str:
        return f"{self.lhs} -> " + " ".join(quote(s) if t else s for s, t in self.rhs)


def quote(word: str) -> str:
    """``word`` as a terminal in grammar text: in single quotes, or double if it holds one."""
    if "'" not in word:
        return f"'{word}'"
    if '"' not in word:
        return f'"{word}"'
    raise ValueError(f"terminal {word!r} contains both quote characters; it cannot be written")


_TOKEN = re.compile(r"\s*(?:(->)|(\|)|\[([^\]]*)\]|'([^']*)'|\"([^\"]*)\"|([^\s'\"|\[\]]+))")
#: what a nonterminal name may look like (no spaces, quotes, bars, brackets or parentheses)
NAME = re.compile(r"^[^\s'\"|\[\]()]+$")


def _strip_comment(line: str) -> str:
    """``line`` up to a ``#`` that is not inside a quoted terminal."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def parse_rules(text: str, normalize: bool) -> tuple[list[Rule], list[float], list[int]]:
    """The rules of ``text``, their probabilities (1 where missing, allowed only with
    ``normalize``) and the line number of each; ``ValueError`` naming the line otherwise."""
    rules, probs, lines = [], [], []
    lhs = None
    for ln, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        toks, pos = [], 0
        while pos < len(line):
            m = _TOKEN.match(line, pos)
            if not m or m.end() == pos:
                raise ValueError(f"line {ln}: cannot read {line[pos:pos + 20]!r} in {raw.strip()!r}")
            pos = m.end()
            if m.group(1):
                toks.append(("arrow", None))
            elif m.group(2):
                toks.append(("bar", None))
            elif m.group(3) is not None:
                toks.append(("prob", m.group(3)))
            elif m.group(4) is not None or m.group(5) is not None:
                word = m.group(4) if m.group(4) is not None else m.group(5)
                if not word:
                    raise ValueError(f"line {ln}: empty terminal '' (ε-rules are not supported)")
                toks.append(("term", word))
            else:
                toks.append(("nt", m.group(6)))
        if len(toks) >= 2 and toks[0][0] == "nt" and toks[1][0] == "arrow":
            lhs, toks = toks[0][1], toks[2:]
        elif toks[0][0] == "bar" and lhs is not None:
            toks = toks[1:]  # a continuation line: "| NP VP [0.2]" under the previous rule
        else:
            raise ValueError(f"line {ln}: expected 'LHS -> right-hand side [probability]', got {raw.strip()!r}")
        if "arrow" in (k for k, _ in toks):
            raise ValueError(f"line {ln}: more than one '->' in {raw.strip()!r}")
        alts, cur = [], []
        for tok in toks + [("bar", None)]:
            if tok[0] == "bar":
                alts.append(cur)
                cur = []
            else:
                cur.append(tok)
        for alt in alts:
            prob = None
            if alt and alt[-1][0] == "prob":
                try:
                    prob = float(alt[-1][1])
                except ValueError:
                    raise ValueError(f"line {ln}: probability [{alt[-1][1]}] is not a number") from None
                alt = alt[:-1]
            if any(k == "prob" for k, _ in alt):
                raise ValueError(f"line {ln}: a probability [p] must end its alternative in {raw.strip()!r}")
            if not alt:
                raise ValueError(f"line {ln}: empty right-hand side for {lhs!r} (ε-rules are not supported)")
            if prob is None:
                if not normalize:
                    raise ValueError(f"line {ln}: rule {lhs} -> ... has no probability [p] "
                                     "(write one, or pass normalize=True to weight it 1 before normalising)")
                prob = 1.0
            if not math.isfinite(prob) or prob < 0 or (prob > 1 and not normalize):
                raise ValueError(f"line {ln}: probability {prob} of a {lhs} rule is not in [0, 1]")
            rule = Rule(lhs, tuple((v, k == "term") for k, v in alt))
            rules.append(rule)
            probs.append(prob)
            lines.append(ln)
    if not rules:
        raise ValueError("the grammar has no rules (expected lines like: S -> NP VP [1.0])")
    return rules, probs, lines


def format_rules(rules: Sequence[Rule], probs: Sequence[float]) -> str:
    """The text of ``rules`` with their probabilities, one alternative per line (read back
    by `parse_rules` to the same rules and probabilities)."""
    return "\n".join(f"{r} [{float(p)!r}]" for r, p in zip(rules, probs))
