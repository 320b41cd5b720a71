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

import contextlib
import functools
from dataclasses import dataclass
from typing import Any

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


def _with_pad(left: torch.Tensor, right: torch.Tensor, w: torch.Tensor) -> tuple:
    """Index vectors and weights ``(..., M)`` extended by one pad entry of weight ``NEG``,
    the entry a segment table's padding points at."""
    zero = torch.zeros(1, dtype=torch.long)
    pad = w.new_full(w.shape[:-1] + (1,), NEG)
    return torch.cat([left, zero]), torch.cat([right, zero]), torch.cat([w, pad], -1)


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


@functools.lru_cache(maxsize=256)
def span_layout(n: int) -> tuple:
    """The flat chart layout for sentences of ``n`` words: cells ordered by width, then
    start; ``offset[w]`` is the id of cell ``(start 0, width w)``; ``left[w]`` and
    ``right[w]`` ``(S*K,)`` list the children ``(i, k)`` and ``(i+k, w-k)`` of every
    start ``i < S = n-w+1`` and split ``k = 1..w-1``."""
    offset = [0, 0]
    for w in range(1, n + 1):
        offset.append(offset[-1] + n - w + 1)
    off = torch.tensor(offset)
    left, right = [None, None], [None, None]
    for w in range(2, n + 1):
        i = torch.arange(n - w + 1)[:, None]
        k = torch.arange(1, w)[None, :]
        left.append((off[k] + i).reshape(-1))
        right.append((off[w - k] + i + k).reshape(-1))
    return offset, left, right


def active_from(lengths: torch.Tensor, n: int) -> list[int]:
    """``first[w]``: rows ``first[w]:`` of a batch sorted by length are the sentences with at
    least ``w`` words – the only ones whose width-``w`` cells matter. (All rows when the
    lengths are not sorted.)"""
    if len(lengths) > 1 and bool((lengths[1:] < lengths[:-1]).any()):
        return [0] * (n + 1)
    return torch.searchsorted(lengths.contiguous(), torch.arange(n + 1), right=False).tolist()


@single_threaded
def inside(cg: ChartGrammar, lex_w: torch.Tensor, bin_w: torch.Tensor, clo_w: torch.Tensor,
           tokens: torch.Tensor, lengths: torch.Tensor, probe: bool = False) -> Any:
    """Log inside probabilities of a batch of sentences.

    The chart is kept *scaled*: each cell stores probabilities ``p (N,)`` divided by
    their maximum and the log of that scale ``m`` (a constant for autograd), so that
    ``beta = m + log p`` never underflows while each width needs only products, one
    batched sum over split points and one small matrix product (rules → left-hand sides
    → unary closure, premultiplied) – no exp/log over the large ``(B, S, K, R)`` tensor.

    Args:
      cg: the grammar's index structure.
      lex_w ``(L,)`` / bin_w ``(R,)`` / clo_w ``(P,)``: log weights of lexical rules,
        binary rules and unary-closure pairs – or ``(B, ·)`` for per-sentence copies
        (so that gradients come out per sentence).
      tokens ``(B, n)`` long: word ids, padded with any valid id.
      lengths ``(B,)``: sentence lengths ``1 <= n_b <= n``.
      probe: also return a tensor of ones ``(B, cells, N)`` multiplying every
        post-closure cell (cells laid out by :func:`span_layout`) and the log chart
        ``(B, cells, N)`` (``NEG`` for zero); the probe's gradient is the posterior of
        each nonterminal topping each span.
    Returns: ``(B,)`` log p(sentence) (``-inf`` or below ``NEG/2`` for zero); with
      ``probe``, ``(log p, probe, log chart)``.
    """
    B, n = tokens.shape
    N, R = cg.n_nt, len(cg.bin_lhs)
    lex = lexical_table(cg, lex_w).exp()                          # (N, V) or (B, N, V)
    if lex.dim() == 2:
        first = lex[:, tokens].permute(1, 2, 0)                     # (B, n, N)
    else:
        first = torch.gather(lex, 2, tokens[:, None, :].expand(B, N, n)).transpose(1, 2)
    dtype = first.dtype
    lhs = torch.zeros(R, N, dtype=dtype).index_put_((torch.arange(R), cg.bin_lhs), torch.tensor(1.0, dtype=dtype))
    rules = bin_w.exp()[..., :, None] * lhs                          # (R, N): p(r) in column lhs(r)
    top_1h = torch.zeros(len(cg.clo_top), N, dtype=dtype).index_put_(
        (torch.arange(len(cg.clo_top)), cg.clo_top), torch.tensor(1.0, dtype=dtype))
    bot_1h = torch.zeros(len(cg.clo_top), N, dtype=dtype).index_put_(
        (torch.arange(len(cg.clo_top)), cg.clo_bottom), torch.tensor(1.0, dtype=dtype))
    closure_t = (clo_w.exp()[..., :, None] * bot_1h).transpose(-1, -2) @ top_1h   # (N, N): C[A, B] at [B, A]
    closed = rules @ closure_t                                       # (R, N): rule r, then chains up to A
    offset, left_ids, right_ids = span_layout(n)
    chart = torch.zeros(B, offset[n + 1], N, dtype=dtype)
    scale = torch.zeros(B, offset[n + 1], dtype=dtype)              # log scales (constants)
    probe_t = torch.ones_like(chart, requires_grad=True) if probe else None
    start = active_from(lengths, n)
    for w in range(1, n + 1):
        S = n - w + 1
        cells = slice(offset[w], offset[w] + S)
        f = start[w]                                                 # rows f: have >= w words
        Bw = B - f
        if w == 1:
            post, base = first @ closure_t, scale.new_zeros(B, S)           # unary closure
        elif R == 0:
            post, base = chart.new_zeros(Bw, S, N), scale.new_zeros(Bw, S)
        else:
            pl = chart[f:].index_select(1, left_ids[w]).reshape(Bw, S, w - 1, N)
            pr = chart[f:].index_select(1, right_ids[w]).reshape(Bw, S, w - 1, N)
            ms = (scale[f:].index_select(1, left_ids[w]) + scale[f:].index_select(1, right_ids[w])
                  ).reshape(Bw, S, w - 1)
            base = ms.amax(2)                                        # (B, S)
            a = (ms - base[..., None]).exp()                         # (B, S, K) split weights
            v = pl[..., cg.bin_left] * pr[..., cg.bin_right]         # (B, S, K, R)
            u = (a[..., None] * v).sum(2)                            # (B, S, R)
            post = u @ (closed if closed.dim() == 2 else closed[f:])  # rules -> lhs, then closure
        top = post.detach().amax(-1).clamp(min=1e-300)               # (B, S)
        p = post / top[..., None]
        if probe:
            p = p * probe_t[f:, cells]
        # cells of width w are written once, after every read of narrower cells they depend
        # on (index_select saves only indices for backward, so the in-place write is safe)
        chart[f:, cells] = p
        scale[f:, cells] = base + top.log()
    ends = torch.tensor(offset)[lengths]
    out = scale[torch.arange(B), ends] + chart[torch.arange(B), ends, cg.start].log()
    if not probe:
        return out
    log_chart = (scale[..., None] + chart.detach().log()).clamp(min=NEG)
    return out, probe_t, log_chart


@dataclass
class ViterbiChart:
    """Backpointers of :func:`viterbi` over the cells of :func:`span_layout`, each ``(B, cells, N)``:
    ``bottom`` – the best unary-closure pair ``A =>* B`` of the cell (a pair id),
    ``rule`` – the best binary rule of the chain's bottom ``B``, ``split`` – its split width ``k``;
    ``score (B,)`` – the log probability of each sentence's best tree; ``offset`` – cell ids."""
    bottom: torch.Tensor
    rule: torch.Tensor
    split: torch.Tensor
    score: torch.Tensor
    offset: list


@single_threaded
def viterbi(cg: ChartGrammar, lex_w: torch.Tensor, bin_w: torch.Tensor, clo_w: torch.Tensor,
            tokens: torch.Tensor, lengths: torch.Tensor) -> ViterbiChart:
    """Max-product chart with backpointers (same shapes and conventions as :func:`inside`;
    ``clo_w`` are the log weights of the *best* unary chains)."""
    B, n = tokens.shape
    N = cg.n_nt
    with torch.no_grad():
        pre = lexical_table(cg, lex_w)[:, tokens].permute(1, 2, 0)
        offset, left_ids, right_ids = span_layout(n)
        chart = torch.zeros(B, offset[n + 1], N, dtype=pre.dtype)
        bottom = torch.zeros(chart.shape, dtype=torch.long)
        rule = torch.zeros(chart.shape, dtype=torch.long)
        split = torch.zeros(chart.shape, dtype=torch.long)
        nts = torch.arange(N)
        bl, br, binw = _with_pad(cg.bin_left, cg.bin_right, bin_w)
        cb, _, clo = _with_pad(cg.clo_bottom, cg.clo_bottom, clo_w)
        start = active_from(lengths, n)
        for w in range(1, n + 1):
            S = n - w + 1
            cells = slice(offset[w], offset[w] + S)
            f = start[w]                                                          # rows with >= w words
            Bw = B - f
            if w > 1 and len(cg.bin_lhs) == 0:
                pre = chart.new_full((Bw, S, N), NEG)
            elif w > 1:
                left = chart[f:].index_select(1, left_ids[w]).reshape(Bw, S, w - 1, N)
                right = chart[f:].index_select(1, right_ids[w]).reshape(Bw, S, w - 1, N)
                v = left[..., bl] + right[..., br]                                # (B,S,K,R+1)
                v, k_best = v.max(2)                                              # (B,S,R+1)
                pre, slot = (v + binw)[..., cg.bin_seg].max(-1)                   # (B,S,N)
                r = cg.bin_seg[nts, slot]                                         # (B,S,N)
                rule[f:, cells] = r
                split[f:, cells] = torch.gather(k_best, 2, r) + 1
            cell, slot = (pre[..., cb] + clo)[..., cg.clo_seg].max(-1)
            bottom[f:, cells] = cg.clo_seg[nts, slot]
            chart[f:, cells] = cell
        score = chart[torch.arange(B), torch.tensor(offset)[lengths], cg.start]
    return ViterbiChart(bottom, rule, split, score, offset)


def length_batches(lengths: list[int], budget: int = 4_000_000, n_rules: int = 1,
                   small: int = 100_000) -> list[list[int]]:
    """Sentence ids sorted by length and cut into batches, each padded to its longest
    sentence. Each width costs a fixed number of tensor operations, so padding pays while
    the padded work is small: a batch may span any lengths while ``B * n^3 * R`` stays
    under ``small``; beyond that it spans lengths ``n0 .. max(n0 + 2, 1.2 n0)`` (the work
    grows as ``n^3``). Always, the largest per-width tensor ``(B, S, K, R)`` – at most
    ``B * (n^2/4 + 1) * R`` elements – stays under ``budget``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups, cur = [], []
    R = max(n_rules, 1)
    for i in order:
        n = lengths[i]  # the longest so far, as ids come sorted
        if cur:
            n0, B = lengths[cur[0]], len(cur) + 1
            too_wide = n > max(n0 + 2, 1.2 * n0) and B * n ** 3 * R > small
            if too_wide or B * (n * n // 4 + 1) * R > budget:
                groups.append(cur)
                cur = []
        cur.append(i)
    if cur:
        groups.append(cur)
    return groups
