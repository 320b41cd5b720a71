"""The chart normal form of a grammar, for the chart algorithms (`probgen.ops.inside`).

The conversion preserves the distribution over trees: terminals inside longer rules get
a preterminal of probability one, n-ary rules are binarised right-branching with
intermediate symbols of probability one, and unary chains are closed – the sum over all
chains ``A =>* B`` is ``(I - U)^{-1}`` (Stolcke 1995), the best chain a shortest path
(Floyd–Warshall in the (max, +) semiring). `NormalForm` holds the converted
symbols and rules, maps rule probabilities to normal-form weights, and keeps the tables
the Viterbi backtrace uses to map parses back to trees of the original grammar.

Reference: Manning & Schütze (1999), ch. 11; Stolcke (1995), "An efficient probabilistic
context-free parsing algorithm that computes prefix probabilities".
"""
from __future__ import annotations

from typing import Any

import torch

from probgen.models.pcfg.text import quote
from probgen.ops.inside import NEG, ChartGrammar

__all__ = ["NormalForm"]


class NormalForm:
    """The normal form of a grammar (anything with ``rules``, ``nonterminals``,
    ``nt_index``, ``words``, ``word_index`` and ``start``).

    Attributes: ``symbols`` (``N`` names: the grammar's nonterminals, then preterminals
    ``<'word'>`` and intermediate symbols), ``kinds`` (``"orig"``, ``"pre"`` or ``"inter"``
    per symbol), ``lex`` ``(L, 3)`` (symbol, word, rule), ``bin`` ``(R', 4)`` (lhs, left,
    right, rule), ``unary`` ``(U, 3)`` (lhs, child, rule) — rule ``R`` (one past the
    grammar's rules) stands for probability one —, ``chart_grammar`` (the
    `ChartGrammar`), ``backtrace`` (Python tables for Viterbi).
    """

    def __init__(self, grammar: Any):
        nts = list(grammar.nonterminals)
        kinds = ["orig"] * len(nts)
        pre_of: dict[str, int] = {}

        def preterminal(word: str) -> int:
            if word not in pre_of:
                pre_of[word] = len(nts)
                nts.append(f"<{quote(word)}>")
                kinds.append("pre")
            return pre_of[word]

        lex, binary, unary = [], [], []
        R = len(grammar.rules)
        for i, r in enumerate(grammar.rules):
            a = grammar.nt_index[r.lhs]
            if len(r.rhs) == 1:
                s, t = r.rhs[0]
                (lex if t else unary).append((a, grammar.word_index[s] if t else grammar.nt_index[s], i))
                continue
            syms = [preterminal(s) if t else grammar.nt_index[s] for s, t in r.rhs]
            top, orig = a, i
            for j in range(len(syms) - 2):  # right-branching binarisation: A -> X1 <A:X2..Xk>
                nts.append(f"{r.lhs}|<{' '.join(s for s, _ in r.rhs[j + 1:])}>#{i}")
                kinds.append("inter")
                binary.append((top, syms[j], len(nts) - 1, orig))
                top, orig = len(nts) - 1, R  # intermediate rules have probability one
            binary.append((top, syms[-2], syms[-1], orig))
        for word, p in pre_of.items():
            lex.append((p, grammar.word_index[word], R))
        N = len(nts)
        self.symbols, self.kinds = nts, kinds
        lex_t = torch.tensor(lex, dtype=torch.long).reshape(-1, 3)
        bin_t = torch.tensor(binary, dtype=torch.long).reshape(-1, 3 + 1)
        un_t = torch.tensor(unary, dtype=torch.long).reshape(-1, 3)
        # unary closure pairs: every (A, B) with a chain A =>* B (reflexive)
        reach = torch.eye(N, dtype=torch.bool)
        if len(un_t):
            step = torch.zeros(N, N, dtype=torch.bool)
            step[un_t[:, 0], un_t[:, 1]] = True
            for _ in range(N):
                nxt = reach | (reach.double() @ step.double() > 0)
                if torch.equal(nxt, reach):
                    break
                reach = nxt
        pairs = reach.nonzero()
        self.lex, self.bin, self.unary = lex_t, bin_t, un_t
        cg = self.chart_grammar = ChartGrammar.make(
            n_nt=N, n_words=len(grammar.words), start=grammar.nt_index[grammar.start],
            lex_lhs=lex_t[:, 0], lex_word=lex_t[:, 1],
            bin_lhs=bin_t[:, 0], bin_left=bin_t[:, 1], bin_right=bin_t[:, 2],
            clo_top=pairs[:, 0], clo_bottom=pairs[:, 1])
        # Python tables for the Viterbi backtrace: bottom symbol of each closure slot,
        # (bottom symbol, rule) of each closed-rule slot
        clo_bottom = cg.clo_bottom.tolist() + [0]
        ent_pair, ent_rule = cg.ent_pair.tolist() + [0], cg.ent_rule.tolist() + [0]
        self.backtrace = ([[clo_bottom[p] for p in row] for row in cg.clo_seg.tolist()],
                          [[(clo_bottom[ent_pair[e]], ent_rule[e]) for e in row] for row in cg.ent_seg.tolist()],
                          cg.bin_left.tolist(), cg.bin_right.tolist())

    def weights(self, logp: torch.Tensor, semiring: str = "sum", chains: torch.Tensor | None = None) -> tuple:
        """Normal-form log weights ``(lex_w (L,), bin_w (R',), clo_w (P,))`` from the log
        rule probabilities ``logp`` ``(R,)`` or ``(B, R)`` (differentiable for ``"sum"``).

        The closure is ``log (I - U)^{-1}`` for ``semiring="sum"`` and the best chain
        (a shortest path on ``-log p``; ``chains`` if given) for ``"max"``."""
        cg = self.chart_grammar
        ext = torch.cat([logp, logp.new_zeros(logp.shape[:-1] + (1,))], -1)
        lex_w, bin_w = ext[..., self.lex[:, 2]], ext[..., self.bin[:, 3]]
        N = cg.n_nt
        if semiring == "sum":
            U = logp.new_zeros(logp.shape[:-1] + (N, N))
            if len(self.unary):
                flat = U.reshape(logp.shape[:-1] + (N * N,))
                flat = flat.index_add(-1, self.unary[:, 0] * N + self.unary[:, 1], logp[..., self.unary[:, 2]].exp())
                U = flat.reshape(U.shape)
                C = torch.linalg.inv(torch.eye(N, dtype=logp.dtype) - U)
                if not torch.isfinite(C).all() or (C.detach() < -1e-9).any():
                    raise ValueError("the unary rules form cycles of total probability 1; "
                                     "the sum over unary chains diverges")
            else:
                C = torch.eye(N, dtype=logp.dtype).expand(U.shape)
            clo = C[..., cg.clo_top, cg.clo_bottom].clamp(min=1e-300).log().clamp(min=NEG)
        else:
            D = self.best_chains(logp)[0] if chains is None else chains
            clo = D[cg.clo_top, cg.clo_bottom]
        return lex_w.clamp(min=NEG), bin_w.clamp(min=NEG), clo

    def best_chains(self, logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Floyd–Warshall in the (max, +) semiring: ``D[A, B]`` the log weight of the best
        unary chain ``A =>* B`` and ``nxt[A, B]`` its first step."""
        N = self.chart_grammar.n_nt
        D = torch.full((N, N), NEG, dtype=torch.float64)
        D.fill_diagonal_(0.0)
        nxt = torch.arange(N).repeat(N, 1)
        for a, b, i in self.unary.tolist():
            if a != b and float(logp[i]) > D[a, b]:
                D[a, b] = float(logp[i])
        for k in range(N):
            via = D[:, k:k + 1] + D[k:k + 1, :]
            better = via > D + 1e-15 * via.abs()
            D = torch.where(better, via, D)
            nxt = torch.where(better, nxt[:, k:k + 1].expand(N, N), nxt)
        return D.clamp(min=NEG), nxt

    def max_weights(self, logp: torch.Tensor) -> tuple:
        """``(lex_w, bin_w, clo_w, chains)`` for Viterbi: normal-form log weights with the
        best unary chains, and ``chains[a][b]`` the symbols of the best chain
        ``a => ... => b`` (excluding ``b``)."""
        D, nxt = self.best_chains(logp)
        nxt = nxt.tolist()
        chains = []
        for a in range(len(nxt)):
            row = []
            for b in range(len(nxt)):
                chain = [a]
                while chain[-1] != b and len(chain) <= len(nxt):
                    chain.append(nxt[chain[-1]][b])
                row.append(chain[:-1])
            chains.append(row)
        return self.weights(logp, semiring="max", chains=D) + (chains,)
