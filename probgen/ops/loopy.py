"""Loopy belief propagation on discrete factors, in log space, vectorised over factors
(grouped by table shape) and over rows of evidence.

A *factor set* is variable cardinalities ``cards`` (V,), factor ``scopes`` (tuples of
variable indices) and log-potential ``tables`` (one dim per scope variable). Evidence is
a ``(B, V)`` LongTensor of states, ``-1`` where unobserved: every row is its own query,
all rows run together.

Messages (Kschischang, Frey & Loeliger 2001; Koller & Friedman 2009, §11.3):

* factor → variable: m_{f→v}(x_v) = ⊕_{x_f \\ x_v} [θ_f(x_f) + Σ_{u ∈ f, u ≠ v} n_{u→f}(x_u)],
  ⊕ = log-sum-exp (sum-product) or max (max-product);
* variable → factor: n_{v→f}(x_v) = e_v(x_v) + Σ_{g ∋ v, g ≠ f} m_{g→v}(x_v), with e_v = 0
  for allowed and −∞ for excluded states (the evidence).

All factor→variable messages are updated at once (a "flooding" schedule), normalised, and
damped in the probability domain: m ← log((1 − λ) e^{m_new} + λ e^{m_old}) where m_new is
finite (a hard zero of m_new, from −∞ potentials or evidence, is kept). Leave-one-out
sums keep −∞ exact: a variable's sum is held as (finite part, number of −∞ terms), so
removing one message never computes −∞ − (−∞).

On a tree the fixed point is exact (marginals, max-marginals, and the Bethe log Z equals
log Z); on loopy graphs it is the Bethe approximation (Yedidia, Freeman & Weiss 2005):

  log Z_Bethe = Σ_f Σ_{x_f} b_f (θ_f − log b_f) + Σ_v (d_v − 1) Σ_{x_v} b_v log b_v,

with b_f, b_v the factor and variable beliefs and d_v the number of factors on v.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

_NEG = -float("inf")


@dataclass
class BPResult:
    """The fixed point (or the last iterate) of loopy BP.

    Attributes:
      log_beliefs: per variable ``(B, card_v)``, log-normalised (logsumexp over states = 0):
        marginals (sum-product) or max-marginals (max-product); :attr:`beliefs` exponentiated.
      factor_beliefs: per factor, in the order given, its belief b_f summed over the rows
        (shape of its table): the expected counts of its configurations (sum-product only).
      log_z: ``(B,)`` the Bethe estimate of log Σ_x exp(Σ_f θ_f) over assignments consistent
        with each row's evidence (sum-product only; ``None`` for max-product).
      iterations: message updates done; ``converged``: whether the largest change of a
        message (max |Δ log m|) fell below ``tol``; ``max_change``: that change at the end.
    """

    log_beliefs: list
    factor_beliefs: list | None
    log_z: torch.Tensor | None
    iterations: int
    converged: bool
    max_change: float

    @property
    def beliefs(self) -> list:
        return [b.exp() for b in self.log_beliefs]


class _Group:
    """The factors that share one table shape: stacked tables, their variables, and where
    their edges (factor, position) sit in the edge axis of the message tensors."""

    def __init__(self, factor_ids: list[int], scopes: list[tuple], tables: list[torch.Tensor], first_edge: int):
        self.ids = factor_ids
        self.vars = torch.tensor([scopes[f] for f in factor_ids], dtype=torch.long)  # (F, a)
        self.table = torch.stack([tables[f] for f in factor_ids])                      # (F, k1..ka)
        self.arity = self.vars.shape[1]
        self.shape = tuple(self.table.shape[1:])
        F = len(factor_ids)
        # position i's edges are first_edge + i F + (0..F-1)
        self.edges = [slice(first_edge + i * F, first_edge + (i + 1) * F) for i in range(self.arity)]
        self.n_edges = self.arity * F


def belief_propagation(cards: Sequence[int], scopes: Sequence[Sequence[int]], tables: Sequence[torch.Tensor],
                       evidence: torch.Tensor | None = None, *, max_product: bool = False,
                       damping: float = 0.5, max_iters: int = 200, tol: float = 1e-8) -> BPResult:
    """Run loopy BP. ``cards`` (V,), ``scopes`` F tuples of variable indices, ``tables`` F
    log-potential tensors, ``evidence`` ``(B, V)`` with −1 = unobserved (``None``: one row,
    nothing observed). Returns a :class:`BPResult`. A row whose evidence has probability
    zero under the factors is a ``ValueError`` naming it.

    Messages live in two ``(B, E, K)`` tensors over the E edges (factor, position) of the
    factor graph, K = the largest cardinality (padded with −∞): the variable side is a few
    whole-tensor operations per iteration, the factor side one reduction per group of
    equal-shaped factors and position."""
    cards = [int(k) for k in cards]
    V = len(cards)
    if not 0 <= damping < 1:
        raise ValueError(f"damping must be in [0, 1), got {damping!r}")
    if not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"max_iters must be a positive integer, got {max_iters!r}")
    dtype = tables[0].dtype if tables else torch.float64
    if evidence is None:
        evidence = torch.full((1, V), -1, dtype=torch.long)
    evidence = torch.as_tensor(evidence, dtype=torch.long)
    if evidence.dim() == 1:
        evidence = evidence[None]
    B = evidence.shape[0]
    K = max(cards)
    neg = torch.tensor(_NEG, dtype=dtype)
    # e_v: (B, V, K) evidence log-indicators; states beyond a variable's card are -inf
    states = torch.arange(K)
    valid = states[None, :] < torch.tensor(cards)[:, None]                            # (V, K)
    unary = torch.where(valid, 0.0, _NEG).to(dtype).expand(B, V, K)
    unary = torch.where((evidence >= 0)[..., None] & (states != evidence[..., None]), neg, unary)

    by_shape: dict[tuple, list[int]] = {}
    for f, t in enumerate(tables):
        by_shape.setdefault(tuple(t.shape), []).append(f)
    groups, E = [], 0
    for ids in by_shape.values():
        groups.append(_Group(ids, [tuple(s) for s in scopes], list(tables), E))
        E += groups[-1].n_edges
    edge_var = torch.cat([g.vars.t().reshape(-1) for g in groups]) if groups else torch.zeros(0, dtype=torch.long)
    degree = torch.zeros(V, dtype=dtype).index_add_(0, edge_var, torch.ones(E, dtype=dtype))
    edge_valid = valid[edge_var]                                                       # (E, K)

    # factor -> variable messages (B, E, K), uniform over each variable's states to start
    msgs = torch.where(edge_valid, -torch.log(edge_valid.sum(-1, keepdim=True).to(dtype)), neg).expand(B, E, K)
    reduce = _max if max_product else torch.logsumexp
    log_keep, log_new = (math.log(damping), math.log1p(-damping)) if damping else (None, None)
    converged, change, it = False, float("inf"), 0
    for it in range(1, max_iters + 1):
        incoming = _variable_to_factor(unary, edge_var, msgs)
        new = _normalise(torch.cat([_pad(m, K) for g in groups for m in _factor_to_variable(g, incoming, reduce)], 1))
        if damping:  # hard zeros (from -inf potentials or evidence) are not damped away
            new = torch.where(torch.isfinite(new), _normalise(torch.logaddexp(new + log_new, msgs + log_keep)), new)
        both = torch.isfinite(new) & torch.isfinite(msgs)
        same_zero = ~torch.isfinite(new) & ~torch.isfinite(msgs)
        change = float(torch.where(both, (new - msgs).abs(), torch.where(same_zero, 0.0, math.inf)).max()) \
            if new.numel() else 0.0
        msgs = new
        if change < tol:
            converged = True
            break

    finite_sum, n_inf = _variable_sums(unary, edge_var, msgs)
    log_b = torch.where(n_inf > 0, neg, finite_sum)                                    # (B, V, K)
    norm = torch.logsumexp(log_b, -1)                                                  # (B, V)
    bad = ~torch.isfinite(norm).all(-1)
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(f"evidence rows {rows[:10]} have probability zero under the factors "
                         "(belief propagation found no consistent state)")
    log_b = log_b - norm[..., None]
    beliefs = [log_b[:, v, :cards[v]] for v in range(V)]
    if max_product:
        return BPResult(beliefs, None, None, it, converged, change)
    log_z, sums = _bethe_log_z(groups, _variable_to_factor(unary, edge_var, msgs), log_b, degree)
    factor_beliefs = [None] * len(tables)
    for g, s in zip(groups, sums):
        for j, f in enumerate(g.ids):
            factor_beliefs[f] = s[j]
    return BPResult(beliefs, factor_beliefs, log_z, it, converged, change)


def _max(x: torch.Tensor, dim: tuple) -> torch.Tensor:
    return x.amax(dim=dim)


def _normalise(m: torch.Tensor) -> torch.Tensor:
    """Shift each message so its log-sum-exp is 0 (an all −∞ message is left as it is)."""
    z = torch.logsumexp(m, -1, keepdim=True)
    return m - torch.where(torch.isfinite(z), z, torch.zeros_like(z))


def _variable_sums(unary: torch.Tensor, edge_var: torch.Tensor, msgs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ over a variable's incoming factor messages plus its evidence, as (finite part,
    count of −∞ terms), each (B, V, K)."""
    fin_m = torch.where(torch.isfinite(msgs), msgs, 0.0)
    cnt_m = (~torch.isfinite(msgs)).to(msgs.dtype)
    finite = torch.where(torch.isfinite(unary), unary, 0.0).index_add(1, edge_var, fin_m)
    n_inf = (~torch.isfinite(unary)).to(unary.dtype).index_add(1, edge_var, cnt_m)
    return finite, n_inf


def _variable_to_factor(unary: torch.Tensor, edge_var: torch.Tensor, msgs: torch.Tensor) -> torch.Tensor:
    """n_{v→f} on every edge (B, E, K): the variable's sum less the edge's own message,
    −∞ kept exact by the (finite, count) representation; normalised."""
    finite, n_inf = _variable_sums(unary, edge_var, msgs)
    own_inf = ~torch.isfinite(msgs)
    fin = finite[:, edge_var] - torch.where(own_inf, 0.0, msgs)
    cnt = n_inf[:, edge_var] - own_inf.to(msgs.dtype)
    return _normalise(torch.where(cnt > 0.5, torch.tensor(_NEG, dtype=msgs.dtype), fin))


def _factor_to_variable(g: _Group, incoming: torch.Tensor, reduce) -> list:
    """m_{f→v_i} for each position i of the group's factors: (B, F, k_i) each."""
    n = [incoming[:, g.edges[i], :g.shape[i]] for i in range(g.arity)]
    out = []
    for i in range(g.arity):
        score = _factor_score(g, n, skip=i)                                            # (B, F, k1..ka)
        axes = tuple(2 + j for j in range(g.arity) if j != i)
        out.append(reduce(score, dim=axes) if axes else score.expand(incoming.shape[0], *score.shape[1:]))
    return out


def _factor_score(g: _Group, n: list, skip: int | None = None) -> torch.Tensor:
    """θ_f + Σ_{i ≠ skip} n_{v_i→f}, broadcast to (B, F, k1..ka); ``n`` per position (B, F, k_i)."""
    score = g.table.unsqueeze(0)                                                       # (1, F, k1..ka)
    for i in range(g.arity):
        if i == skip:
            continue
        shape = [n[i].shape[0], n[i].shape[1]] + [1] * g.arity
        shape[2 + i] = g.shape[i]
        score = score + n[i].reshape(shape)
    return score


def _bethe_log_z(groups: list, incoming: torch.Tensor, log_b: torch.Tensor,
                 degree: torch.Tensor) -> tuple[torch.Tensor, list]:
    """The Bethe estimate of log Z per row (B,), from the factor and variable beliefs, and
    per group the factor beliefs summed over rows (F, k1..ka)."""
    B = log_b.shape[0]
    total = torch.zeros(B, dtype=log_b.dtype)
    sums = []
    for g in groups:
        score = _factor_score(g, [incoming[:, g.edges[i], :g.shape[i]] for i in range(g.arity)])
        axes = tuple(range(2, 2 + g.arity))
        log_bf = score - torch.logsumexp(score, dim=axes, keepdim=True)
        bf = log_bf.exp()
        sums.append(bf.sum(0))
        theta = g.table.unsqueeze(0).expand_as(bf)
        term = torch.where(bf > 0, bf * (theta - log_bf), torch.zeros_like(bf))
        total = total + term.sum(dim=axes).sum(-1)
    b = log_b.exp()
    ent = torch.where(b > 0, b * log_b, torch.zeros_like(b)).sum(-1)                   # (B, V)
    return total + ((degree - 1)[None, :] * ent).sum(-1), sums


def _pad(m: torch.Tensor, K: int) -> torch.Tensor:
    """(B, F, k) → (B, F, K), padded with −∞ (states a variable does not have)."""
    k = m.shape[-1]
    return m if k == K else torch.nn.functional.pad(m, (0, K - k), value=_NEG)
