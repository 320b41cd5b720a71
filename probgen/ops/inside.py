"""Chart algorithms for probabilistic context-free grammars, batched and vectorised.

A grammar reaches these kernels already in the normal form of
`ChartGrammar`: lexical rules ``A -> w``, binary rules ``A -> B C`` and the
*unary closure* ``A =>* B`` (every chain of unary rules, summed: ``C = (I - U)^{-1}``
for sum-product, the best chain for max-product).

The chart of a batch of sentences is one *flat* tensor ``(cells, ·)`` (see
`Layout`): the cells (span start, width) of every sentence, ordered by width,
then sentence, then start. Every cell of width ``w`` has exactly ``w - 1`` split points,
so one step per width gathers all ``(cell, split)`` children of all sentences at once –
``(C_w * (w-1), ·)`` – with no padding: sentences of different lengths cost only their
own cells, and a batch takes ``max length`` steps whatever its size.

* `inside` – log inside probabilities ``log p(w_b)``. Every step is
  differentiable, so the gradient of ``sum_b log p(w_b)`` with respect to the log rule
  weights is the vector of expected rule counts – the outside pass done by backprop
  (Eisner 2016, "Inside-outside and forward-backward algorithms are just backprop").
  Probes (ones) multiplying chart cells give span posteriors the same way.
* `viterbi` – max-product with backpointers (best closure entry and best split per
  cell), backtraced in Python by the caller.

Log zero is represented by the finite ``NEG = -1e30`` so that autograd never sees
``-inf - (-inf)``; results below ``NEG / 2`` mean probability zero.

References: Baker (1979); Lari & Young (1990), "The estimation of stochastic
context-free grammars using the inside-outside algorithm"; Stolcke (1995) for the unary
closure; Eisner (2016).
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

NEG = -1e30


@contextlib.contextmanager
def one_thread():
    """Run small chart steps on one intra-op thread: the per-width tensors are small, and
    torch's thread pool costs far more than it saves on them (measured 500× slower
    reductions on a busy 2-core machine)."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def single_threaded(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with one_thread():
            return fn(*args, **kwargs)
    return wrapper


def segment_index(keys: torch.Tensor, n: int) -> torch.Tensor:
    """Ids ``0..len(keys)-1`` grouped by ``keys`` into an ``(n, max count)`` table padded
    with ``len(keys)`` (an extra always-``NEG`` entry), for segment reductions."""
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


@dataclass
class ChartGrammar:
    """Index structure of a grammar in chart normal form (weights are passed separately).

    Shapes: ``L`` lexical rules, ``R`` binary rules, ``P`` unary-closure pairs, ``N``
    nonterminals, ``V`` words, ``E`` closed binary rules.

    * ``lex_lhs, lex_word`` ``(L,)`` – rule ``lex_lhs[l] -> word lex_word[l]``.
    * ``bin_lhs, bin_left, bin_right`` ``(R,)`` – rule ``A -> B C``.
    * ``clo_top, clo_bottom`` ``(P,)`` – pairs ``A =>* B`` (including ``A =>* A``);
      ``clo_seg`` ``(N, Pmax)`` pair ids grouped by top, padded with ``P``.
    * *closed binary rules* (max-product): one entry per pair ``A =>* B`` and binary rule
      ``B -> C D``; ``ent_pair, ent_rule`` ``(E,)``, ``ent_seg`` ``(N, Emax)`` entry ids
      grouped by ``A``, padded with ``E``.
    Build with `make`.
    """

    n_nt: int
    n_words: int
    start: int
    lex_lhs: torch.Tensor
    lex_word: torch.Tensor
    bin_lhs: torch.Tensor
    bin_left: torch.Tensor
    bin_right: torch.Tensor
    clo_top: torch.Tensor
    clo_bottom: torch.Tensor
    clo_seg: torch.Tensor
    ent_pair: torch.Tensor
    ent_rule: torch.Tensor
    ent_seg: torch.Tensor

    @classmethod
    def make(cls, n_nt: int, n_words: int, start: int, lex_lhs, lex_word, bin_lhs, bin_left, bin_right,
             clo_top, clo_bottom) -> "ChartGrammar":
        # entries (pair p = A =>* B, rule r with lhs B), grouped by A
        by_lhs = [[] for _ in range(n_nt)]
        for r, a in enumerate(bin_lhs.tolist()):
            by_lhs[a].append(r)
        ents = [(p, r) for p, b in enumerate(clo_bottom.tolist()) for r in by_lhs[b]]
        ent = torch.tensor(ents, dtype=torch.long).reshape(-1, 2)
        return cls(n_nt, n_words, start, lex_lhs, lex_word, bin_lhs, bin_left, bin_right, clo_top, clo_bottom,
                   segment_index(clo_top, n_nt), ent[:, 0], ent[:, 1], segment_index(clo_top[ent[:, 0]], n_nt))


def lexical_table(cg: ChartGrammar, lex_w: torch.Tensor) -> torch.Tensor:
    """The ``(..., N, V)`` table of ``log p(A -> w)`` (``NEG`` where there is no rule)."""
    shape = lex_w.shape[:-1] + (cg.n_nt * cg.n_words,)
    flat = lex_w.new_full(shape, NEG)
    idx = cg.lex_lhs * cg.n_words + cg.lex_word
    flat = flat.index_put((idx,) if lex_w.dim() == 1 else (torch.arange(shape[0])[:, None], idx[None]), lex_w)
    return flat.reshape(lex_w.shape[:-1] + (cg.n_nt, cg.n_words))


@dataclass
class Layout:
    """The flat chart of a batch of sentences of ``lengths`` (``B``): cell ids ordered by
    width ``w``, then sentence ``b``, then start ``i``.

    * ``base[w]`` – id of the first cell of width ``w`` (``base[n+1]`` = number of cells);
    * ``first[w-1][b]`` – id of cell ``(b, start 0, width w)`` (cell ``(b, i, w)`` is
      ``first[w-1][b] + i`` for ``i <= n_b - w``); ``(n, B)`` as nested lists;
    * ``left[w], right[w]`` ``(C_w * (w-1),)`` – the children ``(b, i, k)`` and
      ``(b, i+k, w-k)`` of every cell of width ``w`` (in cell order) and split ``k = 1..w-1``;
    * ``sentence[w]`` ``(C_w,)`` – the sentence of each cell of width ``w``;
    * ``roots`` ``(B,)`` – the cell ``(b, 0, n_b)`` of each whole sentence.
    """
    lengths: list
    base: list
    first: list
    left: list
    right: list
    sentence: list
    roots: torch.Tensor

    @classmethod
    def make(cls, lengths: list[int]) -> "Layout":
        # all (cell, split) pairs of all widths at once; the pairs of a cell (b, i, w) are
        # its k = 1..w-1, its children c + first[k-1, b] - first[w-1, b] (left) and
        # c + k + first[w-k-1, b] - first[w-1, b] (right), c its own id
        n = np.asarray(lengths, dtype=np.int64)
        B, nmax = len(n), int(n.max())
        S = np.clip(n[None, :] - np.arange(nmax)[:, None], 0, None)     # (nmax, B): cells of width w+1
        counts = S.sum(1)
        base = np.concatenate([[0, 0], np.cumsum(counts)])              # base[w], w = 1..nmax+1
        first = base[1:-1, None] + np.cumsum(S, 1) - S                   # (nmax, B)
        cell_b = np.repeat(np.tile(np.arange(B), nmax), S.reshape(-1))  # sentence of each cell
        m = int(base[2])                                                 # width-1 cells have no pairs
        K = np.repeat(np.arange(1, nmax), counts[1:])                    # w - 1 splits per cell
        cell_i = np.arange(m, int(base[-1])) - np.repeat(first[1:].reshape(-1), S[1:].reshape(-1))  # start
        pb = np.repeat(cell_b[m:] + B * K, K)                            # b + B (w-1) of each pair
        pi = np.repeat(cell_i, K)
        pk = np.arange(len(pb)) - np.repeat(np.cumsum(K) - K, K) + 1     # split k = 1..w-1
        ff = first.reshape(-1)
        left = ff[pb - B * (pb // B) + B * (pk - 1)] + pi                 # cell (b, i, k)
        right = ff[pb - B * pk] + pi + pk                                # cell (b, i+k, w-k)
        left_t, right_t, sent_t = torch.from_numpy(left), torch.from_numpy(right), torch.from_numpy(cell_b)
        pbase = np.concatenate([[0], np.cumsum(counts[1:] * np.arange(1, nmax))]).tolist()
        bl = base.tolist()
        L, Rr, sentence = [None, None], [None, None], [None]
        for w in range(1, nmax + 1):
            sentence.append(sent_t[bl[w]:bl[w + 1]])
            if w > 1:
                L.append(left_t[pbase[w - 2]:pbase[w - 1]])
                Rr.append(right_t[pbase[w - 2]:pbase[w - 1]])
        roots = torch.from_numpy(first[n - 1, np.arange(B)])
        return cls(list(lengths), bl, first.tolist(), L, Rr, sentence, roots)

    def cells(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(sentence, start, width)`` of every cell, each ``(cells,)``."""
        out = [], [], []
        for w in range(1, len(self.first) + 1):
            bs = self.sentence[w]
            out[0].append(bs)
            out[1].append(torch.arange(len(bs)) - torch.tensor(self.first[w - 1])[bs] + self.base[w])
            out[2].append(torch.full((len(bs),), w))
        return tuple(torch.cat(x) for x in out)


def _per_cell(x: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
    """Per-sentence matrices ``(B, ·, ·)`` picked for each cell (shared ones pass through)."""
    return x if x.dim() == 2 else x.index_select(0, sentence)


def _times(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``x (C, a) @ m`` for a shared ``m (a, b)`` or per-cell ``m (C, a, b)``."""
    return x @ m if m.dim() == 2 else torch.bmm(x[:, None, :], m)[:, 0]


@single_threaded
def inside(cg: ChartGrammar, lex_w: torch.Tensor, bin_w: torch.Tensor, clo_w: torch.Tensor,
           tokens: torch.Tensor, layout: Layout, probe: bool = False) -> Any:
    """Log inside probabilities of a batch of sentences.

    The chart is kept *scaled*: each cell stores probabilities ``p (N,)`` divided by
    their maximum and the log of that scale ``m`` (a constant for autograd), so that
    ``beta = m + log p`` never underflows while each width needs only products, one
    batched sum over split points and one small matrix product (rules → left-hand sides
    → unary closure, premultiplied) – no exp/log over the large ``(C, K, R)`` tensor.
    The children's probabilities are read from ``X (cells, 2R + 2)``: each cell's
    probabilities already gathered at every rule's left and right child, at the start
    symbol, and its log scale.

    Args:
      cg: the grammar's index structure.
      lex_w ``(L,)`` / bin_w ``(R,)`` / clo_w ``(P,)``: log weights of lexical rules,
        binary rules and unary-closure pairs – or ``(B, ·)`` for per-sentence copies
        (so that gradients come out per sentence).
      tokens ``(W,)`` long: the word ids of all sentences, concatenated (= the width-1 cells).
      layout: `Layout` of the batch.
      probe: also return a tensor of ones ``(cells, N)`` multiplying every post-closure
        cell and the log chart ``(cells, N)`` (``NEG`` for zero); the probe's gradient is
        the posterior of each nonterminal topping each span.
    Returns: ``(B,)`` log p(sentence) (``-inf`` or below ``NEG/2`` for zero); with
      ``probe``, ``(log p, probe, log chart)``.
    """
    N, R = cg.n_nt, len(cg.bin_lhs)
    shared = lex_w.dim() == 1
    lex = lexical_table(cg, lex_w).exp()                             # (N, V) or (B, N, V)
    dtype = lex.dtype
    if shared:
        first = lex.t().index_select(0, tokens)                      # (W, N)
    else:
        first = lex[layout.sentence[1], :, tokens]                   # (W, N)
    lhs = torch.zeros(R, N, dtype=dtype).index_put_((torch.arange(R), cg.bin_lhs), torch.tensor(1.0, dtype=dtype))
    rules = bin_w.exp()[..., :, None] * lhs                          # (R, N): p(r) in column lhs(r)
    P = len(cg.clo_top)
    top_1h = torch.zeros(P, N, dtype=dtype).index_put_((torch.arange(P), cg.clo_top), torch.tensor(1.0, dtype=dtype))
    bot_1h = torch.zeros(P, N, dtype=dtype).index_put_((torch.arange(P), cg.clo_bottom), torch.tensor(1.0, dtype=dtype))
    closure_t = (clo_w.exp()[..., :, None] * bot_1h).transpose(-1, -2) @ top_1h   # (N, N): C[A, B] at [B, A]
    closed = rules @ closure_t                                       # (R, N): rule r, then chains up to A
    lr = torch.cat([cg.bin_left, cg.bin_right, torch.tensor([cg.start])])
    base, n = layout.base, len(layout.first)
    # per cell: [p(left child of each rule), p(right child of each rule), p(start), log scale]
    X = torch.zeros(base[-1], 2 * R + 2, dtype=dtype)
    chart = torch.zeros(base[-1], N, dtype=dtype) if probe else None   # all of it, for posteriors
    probe_t = torch.ones_like(chart, requires_grad=True) if probe else None
    for w in range(1, n + 1):
        cells = slice(base[w], base[w + 1])
        C = base[w + 1] - base[w]
        if w == 1:
            post, scale = _times(first, _per_cell(closure_t, layout.sentence[1])), X.new_zeros(C)
        elif R == 0:
            post, scale = X.new_zeros(C, N), X.new_zeros(C)
        else:
            L = X.index_select(0, layout.left[w])                      # (C*K, 2R+1)
            Rt = X.index_select(0, layout.right[w])
            ms = (L[:, -1] + Rt[:, -1]).view(C, w - 1)
            scale = ms.amax(1)                                         # (C,)
            a = (ms - scale[:, None]).exp()                            # (C, K) split weights
            v = (L[:, :R] * Rt[:, R:2 * R]).view(C, w - 1, R)          # (C, K, R)
            u = torch.bmm(a[:, None, :], v)[:, 0]                      # (C, R): sum over splits
            post = _times(u, _per_cell(closed, layout.sentence[w]))   # rules -> lhs, then closure
        top = post.detach().amax(-1).clamp(min=1e-300)               # (C,)
        p = post / top[:, None]
        if probe:
            p = p * probe_t[cells]
            chart[cells] = p
        # cells of width w are written once, after every read of narrower cells they depend
        # on (index_select saves only indices for backward, so the in-place write is safe)
        X[cells] = torch.cat([p[:, lr], (scale + top.log())[:, None]], 1)
    root = X[layout.roots]
    out = root[:, -1] + root[:, -2].log()
    if not probe:
        return out
    log_chart = (X[:, -1:].detach() + chart.detach().log()).clamp(min=NEG)
    return out, probe_t, log_chart


@dataclass
class ViterbiChart:
    """Backpointers of `viterbi` over the cells of a `Layout`:
    ``slot (cells, N)`` – the best entry of each cell and symbol ``A``: at width 1 a
    position in ``clo_seg[A]`` (the unary chain ``A =>* B`` over the word), above it a
    position in ``ent_seg[A]`` (a chain ``A =>* B`` and a binary rule of ``B``);
    ``split (cells - W, R)`` – the best split ``k - 1`` of each binary rule in each cell
    wider than one word (row ``c - W`` for cell ``c``, ``W`` the number of words);
    ``score (B,)`` – the log probability of each sentence's best tree."""
    slot: torch.Tensor
    split: torch.Tensor
    score: torch.Tensor


@single_threaded
def viterbi(cg: ChartGrammar, lex_w: torch.Tensor, bin_w: torch.Tensor, clo_w: torch.Tensor,
            tokens: torch.Tensor, layout: Layout) -> ViterbiChart:
    """Max-product chart with backpointers (shared weights; same conventions as
    `inside`, ``clo_w`` the log weights of the *best* unary chains).

    Each width takes the best split of every binary rule (``(C, K, R)`` max), then one
    segment max over the closed binary rules ``A =>* B -> C D`` (chain weight + rule
    weight, premultiplied) – no separate pass for the unary closure."""
    N, R = cg.n_nt, len(cg.bin_lhs)
    with torch.no_grad():
        pad = clo_w.new_full((1,), NEG)
        clo_p = torch.cat([clo_w, pad])
        clo_seg_w = clo_p[cg.clo_seg]                                  # (N, Pmax)
        clo_bot = torch.cat([cg.clo_bottom, cg.clo_bottom.new_zeros(1)])[cg.clo_seg].reshape(-1)
        ent_w = torch.cat([clo_w[cg.ent_pair] + bin_w[cg.ent_rule], pad])[cg.ent_seg]   # (N, Emax)
        ent_rule = torch.cat([cg.ent_rule, cg.ent_rule.new_zeros(1)])[cg.ent_seg].reshape(-1)
        Pm, Em = cg.clo_seg.shape[1], cg.ent_seg.shape[1]
        base, n = layout.base, len(layout.first)
        X = torch.full((base[-1], 2 * R + 1), NEG, dtype=clo_w.dtype)  # chart at each rule's left / right child, start
        slots, splits = [], [torch.zeros(0, max(R, 1), dtype=torch.long)]   # per width, concatenated once
        lr = torch.cat([cg.bin_left, cg.bin_right, torch.tensor([cg.start])])
        pre = lexical_table(cg, lex_w).t().index_select(0, tokens)     # (W, N)
        for w in range(1, n + 1):
            cells = slice(base[w], base[w + 1])
            C = base[w + 1] - base[w]
            if w == 1:
                cell, s = (pre.index_select(1, clo_bot).view(C, N, Pm) + clo_seg_w).max(-1)
            elif R == 0:
                slots.append(torch.zeros(base[-1] - base[w], N, dtype=torch.long))
                break
            else:
                v = (X.index_select(0, layout.left[w])[:, :R] + X.index_select(0, layout.right[w])[:, R:2 * R]
                     ).view(C, w - 1, R)
                v, k = v.max(1)                                        # (C, R) best split per rule
                splits.append(k)
                cell, s = (v.index_select(1, ent_rule).view(C, N, Em) + ent_w).max(-1)
            slots.append(s)
            X[cells] = cell[:, lr]
        score = X[layout.roots, 2 * R]
    return ViterbiChart(torch.cat(slots), torch.cat(splits), score)


def length_batches(lengths: list[int], budget: int = 4_000_000, n_rules: int = 1) -> list[list[int]]:
    """Sentence ids sorted by length and cut into batches so that the largest per-width
    tensor ``(C_w * (w-1), 2R+1)`` – at most ``sum_b (n_b^2/4 + 1) (2R+1)`` elements –
    stays under ``budget``. A flat chart has no padding, so one batch is best while it
    fits: each batch costs a fixed number of tensor operations per width."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    R = 2 * max(n_rules, 1) + 1
    groups, cur, size = [], [], 0
    for i in order:
        add = (lengths[i] ** 2 // 4 + 1) * R
        if cur and size + add > budget:
            groups.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += add
    if cur:
        groups.append(cur)
    return groups
