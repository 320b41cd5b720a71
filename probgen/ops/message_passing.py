"""Message passing on discrete factors, in log space, vectorised over factors (grouped by
table shape) and over rows of evidence: loopy belief propagation and naive mean field.

A *factor set* is variable cardinalities ``cards`` (V,), factor ``scopes`` (tuples of
variable indices) and log-potential ``tables`` θ_f (one dim per scope variable). Evidence
is a ``(B, V)`` LongTensor of states, ``-1`` where unobserved: every row is its own query,
all rows run together.

**Loopy BP** (`belief_propagation`; Kschischang, Frey & Loeliger 2001; Koller &
Friedman 2009, §11.3):

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

**Naive mean field** (`mean_field`; Koller & Friedman 2009, §11.5; Wainwright &
Jordan 2008, §5): q(x) = Π_v q_v(x_v) maximising

  ELBO(q) = Σ_f E_q[θ_f(x_f)] + Σ_v H(q_v) ≤ log Z,

by coordinate ascent q_v ∝ exp(e_v + Σ_{f ∋ v} E_{q_{−v}}[θ_f]), all variables of one colour
of a greedy colouring of the Markov network at once (they share no factor, so the block
update is exact coordinate ascent and the ELBO never decreases). Zero potentials (−∞) in
tables are softened to e^-30 times the smallest positive one (`_soften`); evidence
stays hard.
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
        marginals (sum-product) or max-marginals (max-product); `beliefs` exponentiated.
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


class FactorSet:
    """A factor set ready for message passing: the evidence as (B, V, K) log-indicators
    ``unary`` (K = the largest cardinality; states a variable lacks are −∞), the factors in
    groups of one table shape, and the edges (factor, position) with their variables."""

    def __init__(self, cards: Sequence[int], scopes: Sequence[Sequence[int]], tables: Sequence[torch.Tensor],
                 evidence: torch.Tensor | None):
        self.cards = [int(k) for k in cards]
        self.V = V = len(self.cards)
        self.dtype = dtype = tables[0].dtype if tables else torch.float64
        if evidence is None:
            evidence = torch.full((1, V), -1, dtype=torch.long)
        evidence = torch.as_tensor(evidence, dtype=torch.long)
        if evidence.dim() == 1:
            evidence = evidence[None]
        if evidence.dim() != 2 or evidence.shape[1] != V:
            raise ValueError(f"evidence must be a (rows, {V}) tensor of states (-1 = unobserved), "
                             f"got shape {tuple(evidence.shape)}")
        self.evidence = evidence
        self.B, self.K = evidence.shape[0], max(self.cards)
        self.neg = torch.tensor(_NEG, dtype=dtype)
        states = torch.arange(self.K)
        self.valid = states[None, :] < torch.tensor(self.cards)[:, None]                 # (V, K)
        unary = torch.where(self.valid, 0.0, _NEG).to(dtype).expand(self.B, V, self.K)
        self.unary = torch.where((evidence >= 0)[..., None] & (states != evidence[..., None]), self.neg, unary)
        by_shape: dict[tuple, list[int]] = {}
        for f, t in enumerate(tables):
            by_shape.setdefault(tuple(t.shape), []).append(f)
        self.groups, E = [], 0
        for ids in by_shape.values():
            self.groups.append(_Group(ids, [tuple(s) for s in scopes], list(tables), E))
            E += self.groups[-1].n_edges
        self.E = E
        self.edge_var = torch.cat([g.vars.t().reshape(-1) for g in self.groups]) if self.groups \
            else torch.zeros(0, dtype=torch.long)
        self.degree = torch.zeros(V, dtype=dtype).index_add_(0, self.edge_var, torch.ones(E, dtype=dtype))
        self.n_factors = len(tables)

    def per_factor(self, per_group: list) -> list:
        """Per-group stacked values (F, ...) back in the order the factors were given."""
        out = [None] * self.n_factors
        for g, vals in zip(self.groups, per_group):
            for j, f in enumerate(g.ids):
                out[f] = vals[j]
        return out

    def check_rows(self, log_b: torch.Tensor) -> torch.Tensor:
        """Normalise (B, V, K) log-beliefs; a row where some variable has no possible state is
        a ``ValueError`` (its evidence has probability zero under the factors)."""
        norm = torch.logsumexp(log_b, -1)                                              # (B, V)
        bad = ~torch.isfinite(norm).all(-1)
        if bad.any():
            rows = bad.nonzero().flatten().tolist()
            raise ValueError(f"evidence rows {rows[:10]} have probability zero under the factors "
                             "(message passing found no consistent state)")
        return log_b - norm[..., None]


def _check_iters(max_iters) -> None:
    if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f"max_iters must be a positive integer, got {max_iters!r}")


def belief_propagation(cards: Sequence[int], scopes: Sequence[Sequence[int]], tables: Sequence[torch.Tensor],
                       evidence: torch.Tensor | None = None, *, max_product: bool = False,
                       damping: float = 0.5, max_iters: int = 200, tol: float = 1e-8) -> BPResult:
    """Run loopy BP. ``cards`` (V,), ``scopes`` F tuples of variable indices, ``tables`` F
    log-potential tensors, ``evidence`` ``(B, V)`` with −1 = unobserved (``None``: one row,
    nothing observed). Returns a `BPResult`. A row whose evidence has probability
    zero under the factors is a ``ValueError`` naming it.

    Messages live in two ``(B, E, K)`` tensors over the E edges (factor, position) of the
    factor graph, K = the largest cardinality (padded with −∞): the variable side is a few
    whole-tensor operations per iteration, the factor side one reduction per group of
    equal-shaped factors and position."""
    if not 0 <= damping < 1:
        raise ValueError(f"damping must be in [0, 1), got {damping!r}")
    _check_iters(max_iters)
    fs = FactorSet(cards, scopes, tables, evidence)
    cards, V, B, K, dtype, neg = fs.cards, fs.V, fs.B, fs.K, fs.dtype, fs.neg
    unary, groups, E, edge_var, degree = fs.unary, fs.groups, fs.E, fs.edge_var, fs.degree
    edge_valid = fs.valid[edge_var]                                                    # (E, K)

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
    log_b = fs.check_rows(torch.where(n_inf > 0, neg, finite_sum))                    # (B, V, K)
    beliefs = [log_b[:, v, :cards[v]] for v in range(V)]
    if max_product:
        return BPResult(beliefs, None, None, it, converged, change)
    log_z, sums = _bethe_log_z(groups, _variable_to_factor(unary, edge_var, msgs), log_b, degree)
    return BPResult(beliefs, fs.per_factor(sums), log_z, it, converged, change)


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


def _along(g: _Group, values: torch.Tensor, i: int) -> torch.Tensor:
    """Position ``i``'s per-state values (B, F, k_i) shaped to broadcast over the group's
    tables: (B, F, 1, …, k_i, …, 1)."""
    shape = [values.shape[0], values.shape[1]] + [1] * g.arity
    shape[2 + i] = g.shape[i]
    return values.reshape(shape)


def _factor_score(g: _Group, n: list, skip: int | None = None) -> torch.Tensor:
    """θ_f + Σ_{i ≠ skip} n_{v_i→f}, broadcast to (B, F, k1..ka); ``n`` per position (B, F, k_i)."""
    score = g.table.unsqueeze(0)                                                       # (1, F, k1..ka)
    for i in range(g.arity):
        if i != skip:
            score = score + _along(g, n[i], i)
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


@dataclass
class MeanFieldResult:
    """The mean-field fixed point (or the last iterate).

    Attributes:
      log_q: per variable ``(B, card_v)`` log q_v (log-normalised; one-hot for observed ones).
      factor_expectations: per factor, Σ over rows of E_q[1{x_f = c}] = Π_{v ∈ f} q_v(c_v)
        (shape of its table): expected counts of its configurations.
      elbo: ``(B,)`` Σ_f E_q[θ_f] + Σ_v H(q_v), a lower bound of log Σ_x exp(Σ_f θ_f) over
        the assignments consistent with each row's evidence.
      iterations: sweeps done; ``converged``: the largest change of a log q_v (over allowed
        states) fell below ``tol``; ``max_change``: that change at the end.
    """

    log_q: list
    factor_expectations: list
    elbo: torch.Tensor
    iterations: int
    converged: bool
    max_change: float

    @property
    def marginals(self) -> list:
        return [q.exp() for q in self.log_q]


def mean_field(cards: Sequence[int], scopes: Sequence[Sequence[int]], tables: Sequence[torch.Tensor],
               evidence: torch.Tensor | None = None, *, max_iters: int = 200, tol: float = 1e-8,
               start: str = "bp") -> MeanFieldResult:
    """Naive mean field by colour-block coordinate ascent. Arguments as
    `belief_propagation`; ``start``: ``"bp"`` starts q at the loopy-BP marginals (a
    few BP sweeps; coordinate ascent is mode-seeking, and from uniform q it often settles in a
    poor mode when tables are near-deterministic), ``"uniform"`` at uniform q over the
    states the evidence allows. Impossible evidence is a ``ValueError`` naming the row."""
    _check_iters(max_iters)
    if start not in ("bp", "uniform"):
        raise ValueError(f"start must be 'bp' or 'uniform', got {start!r}")
    fs = FactorSet(cards, scopes, _soften(tables), evidence)
    colours = colour_classes(fs)
    log_q = fs.check_rows(fs.unary.clone())                                            # (B, V, K)
    if start == "bp":
        bp = belief_propagation(cards, scopes, tables, fs.evidence, max_iters=50, tol=1e-6)
        for v, b in enumerate(bp.log_beliefs):
            log_q[:, v, :fs.cards[v]] = b
    converged, change, it = False, math.inf, 0
    for it in range(1, max_iters + 1):
        change = 0.0
        for members in colours:
            field = _mean_field_input(fs, log_q.exp())                                # (B, V, K)
            new = fs.check_rows(fs.unary[:, members] + field[:, members])
            ok = torch.isfinite(new) & torch.isfinite(log_q[:, members])
            moved = torch.where(ok, (new - log_q[:, members]).abs(), 0.0)
            support = (torch.isfinite(new) != torch.isfinite(log_q[:, members])).any()
            change = max(change, math.inf if support else float(moved.max()) if moved.numel() else 0.0)
            log_q = log_q.index_copy(1, members, new)
        if change < tol:
            converged = True
            break
    q = log_q.exp()
    expectations, energy = [], torch.zeros(fs.B, dtype=fs.dtype)
    for g in fs.groups:
        joint = _outer(g, q)                                                           # (B, F, k1..ka)
        axes = tuple(range(1, 2 + g.arity))
        energy = energy + (joint * g.table.unsqueeze(0)).sum(axes)  # finite: the tables are softened
        expectations.append(joint.sum(0))
    entropy = -torch.where(q > 0, q * log_q, 0.0).sum((1, 2))
    return MeanFieldResult([log_q[:, v, :fs.cards[v]] for v in range(fs.V)], fs.per_factor(expectations),
                           energy + entropy, it, converged, change)


#: how far below the smallest finite log-potential mean field puts a −∞ one (e^-30 ≈ 1e-13)
SOFT_ZERO = 30.0


def _soften(tables: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """−∞ log-potentials (zero table entries, e.g. deterministic CPTs) replaced by the
    smallest finite one less `SOFT_ZERO`: a product q cannot avoid a hard zero that
    couples several variables without collapsing to point masses (its expected log-potential
    is −∞ for every state otherwise), so mean field runs on this softened model; tables
    without −∞ entries are used as they are."""
    finite = [t[torch.isfinite(t)] for t in tables]
    if all(f.numel() == t.numel() for f, t in zip(finite, tables)):
        return list(tables)
    floor = min(float(f.min()) for f in finite if f.numel()) - SOFT_ZERO
    return [torch.where(torch.isfinite(t), t, torch.tensor(floor, dtype=t.dtype)) for t in tables]


def colour_classes(fs: FactorSet) -> list[torch.Tensor]:
    """A greedy colouring of the Markov network (variables joined when they share a factor),
    largest degree first: variables of one colour can be updated together."""
    neighbours: list[set] = [set() for _ in range(fs.V)]
    for g in fs.groups:
        for row in g.vars.tolist():
            for u in row:
                neighbours[u].update(w for w in row if w != u)
    colour: dict[int, int] = {}
    for v in sorted(range(fs.V), key=lambda u: -len(neighbours[u])):
        used = {colour[u] for u in neighbours[v] if u in colour}
        colour[v] = next(c for c in range(fs.V + 1) if c not in used)
    n = max(colour.values(), default=-1) + 1
    return [torch.tensor(sorted(v for v, c in colour.items() if c == k), dtype=torch.long) for k in range(n)]


def _outer(g: _Group, q: torch.Tensor, skip: int | None = None) -> torch.Tensor | None:
    """Π_{i ≠ skip} q_{v_i}(x_i) over the group's factors, broadcast to (B, F, k1..ka)
    (``None`` when no position is left: a unary factor without its own)."""
    out = None
    for i in range(g.arity):
        if i != skip:
            qi = _along(g, q[:, g.vars[:, i], :g.shape[i]], i)
            out = qi if out is None else out * qi
    return out


def _mean_field_input(fs: FactorSet, q: torch.Tensor) -> torch.Tensor:
    """Σ_{f ∋ v} E_{q_{−v}}[θ_f(x_v, ·)] for every variable and state (B, V, K), on the
    softened (finite) tables `mean_field` gives it."""
    out = torch.zeros(fs.B, fs.V, fs.K, dtype=fs.dtype)
    for g in fs.groups:
        theta = g.table.unsqueeze(0)
        for i in range(g.arity):
            others = _outer(g, q, skip=i)
            if others is None:  # a unary factor
                e = theta.expand(fs.B, *theta.shape[1:])
            else:
                e = (others * theta).sum(tuple(2 + j for j in range(g.arity) if j != i))
            out = out.index_add(1, g.vars[:, i], _pad(e, fs.K))
    return out
