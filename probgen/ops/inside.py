"""Chart algorithms for probabilistic context-free grammars, batched and in log space.

A grammar reaches these kernels already in the normal form of
:class:`ChartGrammar`: lexical rules ``A -> w``, binary rules ``A -> B C`` and the
*unary closure* ``A =>* B`` (every chain of unary rules, summed: ``C = (I - U)^{-1}``
for sum-product, the best chain for max-product). The chart is a list indexed by span
width ``w``; entry ``w`` is a tensor ``(batch, n - w + 1, N)`` over span starts and
nonterminals, so every step is vectorised over all spans of one width and over all
sentences of the batch (sentences of different lengths are padded; a sentence of
length ``n_b`` reads its answer from cell ``(0, n_b)``, which never depends on padding).

* :func:`inside` – log inside probabilities ``log p(w_b)``. Because every step is a
  differentiable log-sum-exp, the gradient of ``sum_b log p(w_b)`` with respect to the
  log rule weights is the vector of expected rule counts – the outside pass done by
  backprop (Eisner 2016, "Inside-outside and forward-backward algorithms are just
  backprop"). Zero "probes" added to chart cells give span posteriors the same way.
* :func:`viterbi` – max-product with backpointers (best split, rule and unary chain
  per cell).

Log zero is represented by the finite ``NEG = -1e30`` so that autograd never sees
``-inf - (-inf)``; results below ``NEG / 2`` mean probability zero.

References: Baker (1979); Lari & Young (1990), "The estimation of stochastic
context-free grammars using the inside-outside algorithm"; Stolcke (1995) for the unary
closure; Eisner (2016).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

NEG = -1e30


@dataclass
class ChartGrammar:
    """Index structure of a grammar in chart normal form (weights are passed separately).

    Shapes: ``L`` lexical rules, ``R`` binary rules, ``P`` unary-closure pairs, ``N``
    nonterminals, ``V`` words.

    * ``lex_lhs, lex_word`` ``(L,)`` – rule ``lex_lhs[l] -> word lex_word[l]``.
    * ``bin_lhs, bin_left, bin_right`` ``(R,)`` – rule ``A -> B C``.
    * ``bin_seg`` ``(N, Rmax)`` – binary rule ids grouped by left-hand side, padded with ``R``.
    * ``clo_top, clo_bottom`` ``(P,)`` – pairs ``A =>* B`` (including ``A =>* A``).
    * ``clo_seg`` ``(N, Pmax)`` – pair ids grouped by top, padded with ``P``.
    """

    n_nt: int
    n_words: int
    start: int
    lex_lhs: torch.Tensor
    lex_word: torch.Tensor
    bin_lhs: torch.Tensor
    bin_left: torch.Tensor
    bin_right: torch.Tensor
    bin_seg: torch.Tensor
    clo_top: torch.Tensor
    clo_bottom: torch.Tensor
    clo_seg: torch.Tensor


def segment_index(keys: torch.Tensor, n: int) -> torch.Tensor:
    """Ids ``0..len(keys)-1`` grouped by ``keys`` into an ``(n, max count)`` table padded
    with ``len(keys)`` (an extra always-``NEG`` column), for segment reductions."""
    m = len(keys)
    counts = torch.bincount(keys, minlength=n) if m else torch.zeros(n, dtype=torch.long)
    width = max(int(counts.max()) if n else 0, 1)
    table = torch.full((n, width), m, dtype=torch.long)
    order = torch.argsort(keys, stable=True)
    if m:
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(m) - starts[keys[order]]
        table[keys[order], pos] = order
    return table


def _segment(values: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """``values (..., M)`` → ``(..., n, width)`` gathered through a segment table."""
    pad = values.new_full(values.shape[:-1] + (1,), NEG)
    return torch.cat([values, pad], -1)[..., seg]


def lexical_table(cg: ChartGrammar, lex_w: torch.Tensor) -> torch.Tensor:
    """The ``(..., N, V)`` table of ``log p(A -> w)`` (``NEG`` where there is no rule)."""
    shape = lex_w.shape[:-1] + (cg.n_nt * cg.n_words,)
    flat = lex_w.new_full(shape, NEG)
    idx = cg.lex_lhs * cg.n_words + cg.lex_word
    flat = flat.index_put((idx,) if lex_w.dim() == 1 else (torch.arange(shape[0])[:, None], idx[None]), lex_w)
    return flat.reshape(lex_w.shape[:-1] + (cg.n_nt, cg.n_words))


def _batch_w(w: torch.Tensor, extra: int) -> torch.Tensor:
    """Weights ``(M,)`` or per-sentence ``(B, M)`` made broadcastable against
    ``(B, ..extra dims.., M)``."""
    if w.dim() == 1:
        return w
    return w.reshape(w.shape[:1] + (1,) * extra + w.shape[1:])


def inside(cg: ChartGrammar, lex_w: torch.Tensor, bin_w: torch.Tensor, clo_w: torch.Tensor,
           tokens: torch.Tensor, lengths: torch.Tensor, probes: list | None = None,
           return_chart: bool = False) -> Any:
    """Log inside probabilities of a batch of sentences.

    Args:
      cg: the grammar's index structure.
      lex_w ``(L,)`` / bin_w ``(R,)`` / clo_w ``(P,)``: log weights of lexical rules,
        binary rules and unary-closure pairs – or ``(B, ·)`` for per-sentence copies
        (so that gradients come out per sentence).
      tokens ``(B, n)`` long: word ids, padded with any valid id.
      lengths ``(B,)``: sentence lengths ``1 <= n_b <= n``.
      probes: optional list, filled with one zero tensor ``(B, n-w+1, N)`` per width
        (``probes[w-1]``) added to the post-closure cells; their gradients are the
        posteriors of each nonterminal topping a span.
      return_chart: also return the chart (a list over widths of post-closure cells
        ``(B, n-w+1, N)``) and the pre-closure cells.
    Returns: ``(B,)`` log p(sentence) (values ``< NEG/2`` mean zero), and the charts
      when asked.
    """
    B, n = tokens.shape
    lex = lexical_table(cg, lex_w)                               # (N, V) or (B, N, V)
    if lex.dim() == 2:
        pre = lex[:, tokens].permute(1, 2, 0)                      # (B, n, N)
    else:
        pre = torch.gather(lex, 2, tokens[:, None, :].expand(B, cg.n_nt, n)).transpose(1, 2)
    clo = _batch_w(clo_w, 1)
    binw = _batch_w(bin_w, 1)
    chart, pres = [], []
    for w in range(1, n + 1):
        if w > 1 and len(cg.bin_lhs) == 0:
            pre = chart[0].new_full((B, n - w + 1, cg.n_nt), NEG)
        elif w > 1:
            S = n - w + 1
            left = torch.stack([chart[k - 1][:, :S] for k in range(1, w)], 2)              # (B,S,K,N)
            right = torch.stack([chart[w - k - 1][:, k:k + S] for k in range(1, w)], 2)    # (B,S,K,N)
            v = left[..., cg.bin_left] + right[..., cg.bin_right]                         # (B,S,K,R)
            v = torch.logsumexp(v, 2) + binw                                              # (B,S,R)
            pre = torch.logsumexp(_segment(v, cg.bin_seg), -1)                            # (B,S,N)
            pre = pre.clamp(min=NEG)
        # unary closure: beta[A] = logsumexp_B logC[A,B] + pre[B]
        cell = torch.logsumexp(_segment(pre[..., cg.clo_bottom] + clo, cg.clo_seg), -1).clamp(min=NEG)
        if probes is not None:
            probe = torch.zeros_like(cell, requires_grad=True)
            probes.append(probe)
            cell = cell + probe
        pres.append(pre)
        chart.append(cell)
    out = root_values(chart, lengths, cg.start)
    return (out, chart, pres) if return_chart else out


def root_values(chart: list, lengths: torch.Tensor, start: int) -> torch.Tensor:
    """``chart[n_b - 1][b, 0, start]`` for every sentence (one gather per distinct length)."""
    out = chart[0].new_empty(len(lengths))
    pieces, idx = [], []
    for n_b in torch.unique(lengths).tolist():
        rows = (lengths == n_b).nonzero().squeeze(1)
        pieces.append(chart[n_b - 1][rows, 0, start])
        idx.append(rows)
    return out.index_put((torch.cat(idx),), torch.cat(pieces)) if pieces else out


@dataclass
class ViterbiChart:
    """Backpointers of :func:`viterbi`, per width ``w`` (index ``w-1``), each ``(B, n-w+1, N)``:
    ``bottom`` – the chain bottom ``B`` of the best ``A =>* B`` (a closure-pair id),
    ``rule`` – the best binary rule of the bottom cell, ``split`` – its split width ``k``."""
    bottom: list
    rule: list
    split: list
    score: torch.Tensor


def viterbi(cg: ChartGrammar, lex_w: torch.Tensor, bin_w: torch.Tensor, clo_w: torch.Tensor,
            tokens: torch.Tensor, lengths: torch.Tensor) -> ViterbiChart:
    """Max-product chart with backpointers (same shapes and conventions as :func:`inside`;
    ``clo_w`` are the log weights of the *best* unary chains). ``score (B,)`` is the log
    probability of each sentence's best tree."""
    B, n = tokens.shape
    with torch.no_grad():
        lex = lexical_table(cg, lex_w)
        pre = lex[:, tokens].permute(1, 2, 0)
        chart, bottoms, rules, splits = [], [], [], []
        for w in range(1, n + 1):
            if w > 1 and len(cg.bin_lhs) == 0:
                pre = chart[0].new_full((B, n - w + 1, cg.n_nt), NEG)
                rule = split = torch.zeros(B, n - w + 1, cg.n_nt, dtype=torch.long)
            elif w > 1:
                S = n - w + 1
                left = torch.stack([chart[k - 1][:, :S] for k in range(1, w)], 2)
                right = torch.stack([chart[w - k - 1][:, k:k + S] for k in range(1, w)], 2)
                v = left[..., cg.bin_left] + right[..., cg.bin_right]            # (B,S,K,R)
                v, k_best = v.max(2)                                              # (B,S,R)
                v = v + bin_w
                pre, slot = _segment(v, cg.bin_seg).max(-1)                       # (B,S,N)
                rule = cg.bin_seg[torch.arange(cg.n_nt), slot]                    # (B,S,N)
                rule_c = rule.clamp(max=len(cg.bin_lhs) - 1)
                split = torch.gather(k_best, 2, rule_c) + 1
                pre = pre.clamp(min=NEG)
            else:
                rule = split = torch.zeros(B, n, cg.n_nt, dtype=torch.long)
            cell, slot = _segment(pre[..., cg.clo_bottom] + clo_w, cg.clo_seg).max(-1)
            pair = cg.clo_seg[torch.arange(cg.n_nt), slot]
            chart.append(cell.clamp(min=NEG))
            bottoms.append(pair)
            rules.append(rule)
            splits.append(split)
        score = root_values(chart, lengths, cg.start)
    return ViterbiChart(bottoms, rules, splits, score)


def length_batches(lengths: list[int], budget: int = 2_000_000, n_rules: int = 1) -> list[list[int]]:
    """Sentence ids grouped by similar length (sorted), each group small enough that the
    largest per-width tensor ``(B, S, K, R)`` stays under ``budget`` elements."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups, cur = [], []
    for i in order:
        n = lengths[i]
        per = max(1, (n * n // 4 + 1) * max(n_rules, 1))
        # a group holds sentences of one length (no wasted padding) up to the budget
        if cur and (lengths[cur[0]] != n or (len(cur) + 1) * per > budget):
            groups.append(cur)
            cur = []
        cur.append(i)
    if cur:
        groups.append(cur)
    return groups
