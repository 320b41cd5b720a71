"""The one variable-elimination core: Bayesian networks (`probgen.ops.bayesian_network`)
and factor graphs (``models/factor_graph.py``, the ``exact`` engine) both answer their
queries here.

A *factor* is a table whose axes are labelled by variable ids (its *scope*); a batched
factor has one extra leading axis of size ``N`` (one slice per evidence row). Eliminating
a variable multiplies the factors that mention it and sums it out (or maxes it out, for
MAP), one step per variable, in a min-fill order (Kjærulff 1990; Koller & Friedman 2009,
§9.4.3). A `Plan` fixes those steps from the scopes alone, so it is built once and
cached per (scopes, observed columns); running it is only the contractions.

One plan runs in either of two semirings (Aji & McEliece 2000, "The generalized
distributive law"):

* **probability space** (``log=False``; ×, and + or max): one ``einsum`` per step, on
  NumPy arrays (queries: low per-call overhead) or torch tensors (the EM E-step).
  Batched intermediates are rescaled after every step (each row by its maximum, the log
  of the scale accumulated per row), so long products of small probabilities never
  underflow: the result is ``value * exp(log_scale)``. Bayesian networks use this.
* **log space** (``log=True``; +, and log-sum-exp or max): per step the factors are
  added by broadcasting and the variable is reduced by ``logsumexp`` (or ``max``), on
  torch tensors. Log-potentials of any range (``-inf`` included) stay exact, and the
  result is differentiable. Factor graphs use this.

In both, max-product keeps an argmax table per maxed-out variable, and `decode`
backtracks them into the maximiser (exact with ties). Posterior marginals come from one
backward pass (Eisner 2016, "Inside-outside and forward-backward algorithms are just
backprop"; Darwiche 2003): d log Z / d probe_v, for a neutral unary "probe" factor on v,
is p(v | evidence).

The second half of this module is the factor-set interface (named variables,
log-potential tables; evidence ints or 1-D LongTensors of a common length ``n``, one
query per row): `log_partition`, `marginals`, `max_assignment`,
`sample`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

#: the default bound on the entries of one intermediate table (2**27 float64 = 1 GiB)
MAX_ENTRIES = 2 ** 27
#: what a too-large plan suggests (Bayesian networks have approximate engines)
MCMC_HINT = ("use engine='bp' (loopy belief propagation) or engine='mcmc' (Gibbs sampling) for "
             "approximate answers, or ask fewer variables / fewer rows at once")


def min_fill_order(scopes: Sequence[Sequence[Any]], cards: Any,
                   variables: Sequence[Any] | None = None) -> list:
    """A greedy min-fill elimination order (ties broken by the smallest clique weight,
    then the variable id) of ``variables`` (default: all) in the interaction graph of
    ``scopes``; ``cards[v]`` is the cardinality of ``v``."""
    adj: dict[Any, set] = {}
    for s in scopes:
        for u in s:
            adj.setdefault(u, set()).update(w for w in s if w != u)
    todo = set(adj) if variables is None else set(variables)
    for v in todo:
        adj.setdefault(v, set())
    order = []
    while todo:
        best, best_key = None, None
        for v in todo:
            nb = list(adj[v])
            fill = 0
            for i, a in enumerate(nb):
                na = adj[a]
                for b in nb[i + 1:]:
                    if b not in na:
                        fill += 1
            weight = math.prod(cards[u] for u in nb) * cards[v]
            key = (fill, weight, v)
            if best_key is None or key < best_key:
                best, best_key = v, key
        nb = adj.pop(best)
        for a in nb:
            adj[a].discard(best)
            adj[a].update(w for w in nb if w != a)
        todo.discard(best)
        order.append(best)
    return order


class _Batch:
    """The batch axis as a pseudo-variable for `batched_order` (never eliminated)."""


def batched_order(scopes: Sequence[Sequence[Any]], batched: Sequence[bool], cards: Any,
                  eliminate: Sequence[Any], batch_card: int = 1000) -> list:
    """A min-fill order of ``eliminate`` for factors some of which are batched: the batch
    axis is a variable every batched factor mentions and that is never eliminated, so the
    order accounts for the intermediates it widens (its size taken as ``batch_card``)."""
    b = _Batch()
    sizes = dict(cards.items()) if isinstance(cards, Mapping) else dict(enumerate(cards))
    sizes[b] = batch_card
    return min_fill_order([tuple(s) + ((b,) if bt else ()) for s, bt in zip(scopes, batched)], sizes, eliminate)


class Plan:
    """The steps of one elimination, built from scopes only (no tables), so it can be
    cached and reused for every evidence table with the same observed columns.

    Args:
      scopes: per factor, the variable ids of its (non-batch) axes, in axis order.
      batched: per factor, whether it has a leading batch axis.
      cards: cardinality of every variable id (a sequence or a mapping).
      order: the variables to eliminate, in elimination order; ``max_vars`` among them
        are maxed out (max-product, with argmax tables kept for decoding), the others
        summed. For a correct marginal-MAP every summed variable must come first.
      keep: the variables of the result, in axis order.
      batch_size: ``N`` (used for the memory estimate only).
      max_entries: refuse (``ValueError``) a plan whose largest intermediate is bigger.
      hint: what that error suggests instead.
    """

    def __init__(self, scopes: Sequence[Sequence[Any]], batched: Sequence[bool], cards: Any,
                 order: Sequence[Any], keep: Sequence[Any] = (), max_vars: Any = (), batch_size: int = 1,
                 max_entries: int = MAX_ENTRIES, hint: str = MCMC_HINT):
        self.keep = tuple(keep)
        self.order = list(order)
        self.n_inputs = len(scopes)
        max_vars = set(max_vars)
        live: dict[int, tuple[tuple, bool]] = {}
        by_var: dict[Any, set[int]] = {}
        for i, (s, b) in enumerate(zip(scopes, batched)):
            live[i] = (tuple(s), bool(b))
            for v in s:
                by_var.setdefault(v, set()).add(i)
        steps = []
        slot = len(scopes)
        largest = 0
        for v in order:
            ins = sorted(by_var.pop(v, ()))
            if not ins:
                continue
            union: list = []
            seen = set()
            any_b = False
            in_scopes = []
            for i in ins:
                s, b = live.pop(i)
                in_scopes.append((s, b))
                any_b |= b
                for u in s:
                    if u not in seen:
                        seen.add(u)
                        union.append(u)
            out = tuple(u for u in union if u != v)
            size = math.prod(cards[u] for u in union) * (batch_size if any_b else 1)
            largest = max(largest, size)
            is_max = v in max_vars
            # einsum sublists, fixed here so that running the plan is only the contractions
            label = {u: k + 1 for k, u in enumerate(union)}
            head = [0] if any_b else []
            subs = tuple(([0] if b else []) + [label[u] for u in s] for s, b in in_scopes)
            out_sub = head + [label[u] for u in (union if is_max else out)]
            axis = len(head) + union.index(v)
            steps.append((tuple(ins), subs, out_sub, slot, v, out, any_b, is_max, axis))
            for u in out:
                s_ = by_var[u]
                s_.difference_update(ins)
                s_.add(slot)
            live[slot] = (out, any_b)
            slot += 1
        leftover = sorted(live)
        any_b = any(live[i][1] for i in leftover)
        missing = set().union(*(set(live[i][0]) for i in leftover)) - set(self.keep) if leftover else set()
        if missing:
            raise ValueError(f"variables {sorted(missing, key=str)} are neither eliminated nor kept")
        size = math.prod(cards[u] for u in self.keep) * (batch_size if any_b else 1)
        largest = max(largest, size)
        label = {u: k + 1 for k, u in enumerate(self.keep)}
        self.final = (tuple(leftover),
                      tuple(([0] if live[i][1] else []) + [label[u] for u in live[i][0]] for i in leftover),
                      ([0] if any_b else []) + [label[u] for u in self.keep])
        self.steps = steps
        self.largest = largest
        self.scopes = [tuple(s) for s in scopes]
        self.batched = [bool(b) for b in batched]
        self.cards = cards
        self.keep_cards = tuple(cards[u] for u in self.keep)
        self._layouts = None  # log space only: built by the first log-space run
        if largest > max_entries:
            raise ValueError(
                f"exact inference here needs an intermediate table of {largest:,} entries "
                f"({largest * 8 / 2 ** 30:.1f} GiB in float64), more than the limit of {max_entries:,}; "
                + hint)

    def run(self, tensors: Sequence[Any], *, rescale: bool = True, log: bool = False) -> tuple[Any, Any, dict]:
        """Contract ``tensors`` (matching the scopes): in probability space (NumPy arrays
        or torch tensors) or, with ``log=True``, in log space (torch tensors of
        log-values).

        Returns ``(result, log_scale, argmax)``: ``result`` has axes ``(N?, *keep)``; in
        probability space the true value is ``result * exp(log_scale)`` (``log_scale`` is
        ``(N,)`` when the result is batched, else a float; intermediates are rescaled only
        when batched and ``rescale``), in log space ``result`` is the log-value itself and
        ``log_scale`` is 0. ``argmax[v]`` is, for each maxed-out variable, ``(table,
        scope, batched)`` — the maximising state of ``v`` for every value of its
        remaining scope (see `decode`)."""
        if log:
            return self._run_log(tensors)
        is_torch = bool(tensors) and isinstance(tensors[0], torch.Tensor)
        einsum = torch.einsum if is_torch else np.einsum
        live = dict(enumerate(tensors))
        log_scale = 0.0
        argmax = {}
        for ins, subs, out_sub, slot, v, out, any_b, is_max, axis in self.steps:
            args = []
            for i, sub in zip(ins, subs):
                args.append(live.pop(i))
                args.append(sub)
            res = einsum(*args, out_sub)
            if is_max:
                if is_torch:
                    res, arg = res.max(dim=axis)
                else:
                    arg = res.argmax(axis=axis)
                    res = np.take_along_axis(res, np.expand_dims(arg, axis), axis).squeeze(axis)
                argmax[v] = (arg, out, any_b)
            if any_b and rescale:
                res, log_scale = _rescale(res, log_scale, is_torch)
            live[slot] = res
        leftover, subs, out_sub = self.final
        if leftover:
            args = []
            for i, sub in zip(leftover, subs):
                args.append(live[i])
                args.append(sub)
            result = einsum(*args, out_sub)
        else:
            result = np.ones(()) if not is_torch else tensors[0].new_ones(())
        return result, log_scale, argmax

    def _run_log(self, tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, float, dict]:
        """The log-space semiring: broadcast sums, then ``logsumexp`` (or ``max``) over the
        eliminated variable's axis."""
        if self._layouts is None:
            # where each input's axes go in its step's broadcast layout (batch label 0 if
            # any, then the union's labels 1..len(union), as in the einsum sublists)
            self._layouts = ([tuple(_layout(sub, out_sub if is_max else _with(out_sub, axis)) for sub in subs)
                              for ins, subs, out_sub, slot, v, out, any_b, is_max, axis in self.steps],
                             tuple(_layout(sub, self.final[2]) for sub in self.final[1]))
        step_layouts, final_layout = self._layouts
        live = dict(enumerate(tensors))
        argmax = {}
        for (ins, subs, out_sub, slot, v, out, any_b, is_max, axis), layouts in zip(self.steps, step_layouts):
            total = None
            for i, lay in zip(ins, layouts):
                t = _place(live.pop(i), *lay)
                total = t if total is None else total + t
            if is_max:
                res, arg = total.max(dim=axis)
                argmax[v] = (arg, out, any_b)
            else:
                res = torch.logsumexp(total, dim=axis)
            live[slot] = res
        leftover, _, out_sub = self.final
        if leftover:
            result = None
            for i, lay in zip(leftover, final_layout):
                t = _place(live[i], *lay)
                result = t if result is None else result + t
            batch = (result.shape[0],) if out_sub and out_sub[0] == 0 else ()
            result = result.expand(batch + self.keep_cards)
        else:
            result = tensors[0].new_zeros(())
        return result, 0.0, argmax


def _with(out_sub: list[int], axis: int) -> list[int]:
    """A summing step's broadcast layout: its output sublist with the eliminated
    variable's label put back at ``axis`` (labels number the step's union 1, 2, … in
    order, so that label is its position in the union plus one)."""
    head = 1 if out_sub and out_sub[0] == 0 else 0
    return out_sub[:axis] + [axis - head + 1] + out_sub[axis:]


def _layout(sub: Sequence[int], target: Sequence[int]) -> tuple[tuple[int, ...] | None, tuple[int, ...], int]:
    """How a factor with einsum sublist ``sub`` is placed in the broadcast layout
    ``target``: the permutation that sorts its axes into target order (``None`` when
    already sorted), the target positions of its axes, and the target's rank."""
    pos = [list(target).index(lab) for lab in sub]
    perm = tuple(sorted(range(len(sub)), key=pos.__getitem__))
    return (None if perm == tuple(range(len(sub))) else perm), tuple(sorted(pos)), len(target)


def _place(t: torch.Tensor, perm, positions, rank) -> torch.Tensor:
    """``t`` viewed in a broadcast layout (see `_layout`): axes sorted, size-1 axes added."""
    if perm is not None:
        t = t.permute(perm)
    shape = [1] * rank
    for p, k in zip(positions, t.shape):
        shape[p] = k
    return t.reshape(shape)


def _rescale(t: Any, log_scale: Any, is_torch: bool) -> tuple[Any, Any]:
    """Divide each batch row of ``t`` by its maximum (rows that are all zero keep scale 1)."""
    if t.ndim == 1:
        m = t
    elif is_torch:
        m = t.detach().reshape(t.shape[0], -1).amax(1)
    else:
        m = t.reshape(t.shape[0], -1).max(1)
    if is_torch:
        m = torch.where(m > 0, m, torch.ones_like(m)).detach()
        return t / m.reshape((-1,) + (1,) * (t.ndim - 1)), log_scale + torch.log(m)
    m = np.where(m > 0, m, 1.0)
    return t / m.reshape((-1,) + (1,) * (t.ndim - 1)), log_scale + np.log(m)


def decode(argmax: dict, order: Sequence[Any], known: dict, n: int | None) -> dict:
    """Backtrack a max-product elimination: the maximising state of every maxed-out
    variable, in reverse elimination order. ``known`` holds the values (ints or ``(N,)``
    arrays / LongTensors) of the kept variables; ``n`` is the batch size (``None`` when
    unbatched). Values come back as NumPy arrays or torch tensors, like the tables."""
    values = dict(known)
    rows = None
    for v in reversed(list(order)):
        if v not in argmax:
            continue
        table, scope, batched = argmax[v]
        is_torch = isinstance(table, torch.Tensor)
        if rows is None and n is not None:
            rows = torch.arange(n) if is_torch else np.arange(n)
        idx = ((rows,) if batched else ()) + tuple(values[u] for u in scope)
        val = table[idx] if idx else table
        if n is not None and val.ndim == 0:
            val = val.expand(n) if is_torch else np.full(n, int(val))
        values[v] = val
    return values


# ---- factor sets: named variables, log-potential tables ------------------------------------
#: plans for factor sets, by (cards, scopes, batched, keep, maxed variables)
_PLANS: dict = {}
_FG_HINT = ("the factor graph's cliques are too large for exact inference; use a model with "
            "smaller factors or fewer loops")


def _plan(cards: Mapping[str, int], scopes: Sequence[tuple], batched: Sequence[bool],
          keep: tuple = (), max_vars: Sequence = ()) -> Plan:
    """The cached log-space plan for these scopes: min-fill order over the summed
    variables, then the maxed ones (a valid order for max-marginals)."""
    key = (tuple(cards.items()), tuple(map(tuple, scopes)), tuple(batched), tuple(keep), tuple(max_vars))
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) > 256:
            _PLANS.clear()
        mentioned = {v for s in scopes for v in s}
        gone = [v for v in cards if v in mentioned and v not in keep]
        maxed = [v for v in gone if v in set(max_vars)]
        summed = [v for v in gone if v not in set(max_vars)]
        order = batched_order(scopes, batched, cards, summed)
        if maxed:
            order += batched_order(scopes, batched, cards, maxed)
        plan = _PLANS[key] = Plan(scopes, batched, cards, order, keep=keep, max_vars=maxed, hint=_FG_HINT)
    return plan


def condition(scopes: Sequence[tuple], tables: Sequence[torch.Tensor],
              evidence: Mapping | None) -> tuple[list, list, list, int | None]:
    """Clamp observed variables: index each table at the evidence values. Returns the new
    scopes, tables, per table whether it is batched, and the batch size (``None`` for
    scalar evidence); batched evidence gives each table that touches an observed
    variable a leading batch axis."""
    evidence = dict(evidence or {})
    n = None
    for v, val in evidence.items():
        if torch.is_tensor(val) and val.dim() == 1:
            if n is not None and len(val) != n:
                raise ValueError("batched evidence values must all have the same length")
            n = len(val)
    new_scopes, new_tables, batched = [], [], []
    for scope, t in zip(scopes, tables):
        obs = [i for i, v in enumerate(scope) if v in evidence]
        if not obs:
            new_scopes.append(tuple(scope))
            new_tables.append(t)
            batched.append(False)
            continue
        rest = [i for i in range(len(scope)) if i not in obs]
        t = t.permute(obs + rest)
        idx = []
        for i in obs:
            val = evidence[scope[i]]
            idx.append(val.long() if torch.is_tensor(val) and val.dim() == 1 else
                       (torch.full((n,), int(val), dtype=torch.long) if n is not None else int(val)))
        new_scopes.append(tuple(scope[i] for i in rest))
        new_tables.append(t[tuple(idx)])
        batched.append(n is not None)
    return new_scopes, new_tables, batched, n


def _conditioned(cards: Mapping[str, int], scopes: Sequence[tuple], tables: Sequence[torch.Tensor],
                 evidence: Mapping, also: Sequence[str] = (), n: int | None = None) -> tuple[list, list, list, int | None]:
    """`condition`, plus a zero unary on every unobserved variable no factor mentions
    (each adds log card to log Z) or named in ``also``, and, for batched evidence, a zero
    ``(n,)`` factor so that every result has the batch axis (``n`` gives the batch size
    when the evidence is not batched)."""
    s, t, b, batch = condition(scopes, tables, evidence)
    n = batch if batch is not None else n
    dtype = tables[0].dtype
    covered = {v for sc in s for v in sc}
    for v in cards:
        if v not in evidence and (v not in covered or v in also):
            s.append((v,))
            t.append(torch.zeros(cards[v], dtype=dtype))
            b.append(False)
    if n is not None:
        s.append(())
        t.append(torch.zeros(n, dtype=dtype))
        b.append(True)
    return s, t, b, n


def log_partition(cards: Mapping[str, int], scopes: Sequence[tuple], tables: Sequence[torch.Tensor],
                  evidence: Mapping | None = None) -> torch.Tensor:
    """log Σ_x exp(Σ_f table_f(x_f)) over assignments x consistent with ``evidence``
    (log Z without evidence): shape ``()`` or ``(n,)`` for batched evidence;
    differentiable in the tables."""
    evidence = dict(evidence or {})
    s, t, b, _ = _conditioned(cards, scopes, tables, evidence)
    return _plan(cards, s, b).run(t, log=True)[0]


def marginals(cards: Mapping[str, int], scopes: Sequence[tuple], tables: Sequence[torch.Tensor],
              evidence: Mapping | None = None) -> dict[str, torch.Tensor]:
    """p(v | evidence) for every variable v: ``(card_v,)`` or ``(n, card_v)`` tensors
    (one-hot for observed variables), by differentiating log Z(evidence) with respect to
    zero probe factors (one backward pass for all variables)."""
    evidence = dict(evidence or {})
    s, t, b, n = _conditioned(cards, scopes, [x.detach() for x in tables], evidence)
    dtype = tables[0].dtype
    hidden = [v for v in cards if v not in evidence]
    probes = [torch.zeros(((n,) if n is not None else ()) + (cards[v],), dtype=dtype, requires_grad=True)
              for v in hidden]
    out: dict[str, torch.Tensor] = {}
    if hidden:
        plan = _plan(cards, s + [(v,) for v in hidden], b + [n is not None] * len(hidden))
        with torch.enable_grad():
            log_z = plan.run(t + probes, log=True)[0]
            grads = torch.autograd.grad(log_z.sum(), probes)
        out.update(zip(hidden, grads))
    for v, val in evidence.items():
        out[v] = torch.nn.functional.one_hot(torch.as_tensor(val).long(), cards[v]).to(dtype)
    return {v: out[v] for v in cards}


def max_assignment(cards: Mapping[str, int], scopes: Sequence[tuple], tables: Sequence[torch.Tensor],
                   evidence: Mapping | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The most probable assignment of the unobserved variables given ``evidence`` (MAP /
    MPE) and its unnormalised log-score; values are LongTensors of shape ``()`` or ``(n,)``.

    One max-product elimination in log space and its backtracking through the argmax
    tables (Koller & Friedman 2009, §13.3), exact when the maximiser is not unique."""
    evidence = {v: torch.as_tensor(val).long() for v, val in dict(evidence or {}).items()}
    tables = [t.detach() for t in tables]
    s, t, b, n = _conditioned(cards, scopes, tables, evidence)
    hidden = [v for v in cards if v not in evidence]
    fixed = dict(evidence)
    if hidden:
        plan = _plan(cards, s, b, max_vars=tuple(hidden))
        _, _, argmax = plan.run(t, log=True)
        fixed.update(decode(argmax, plan.order, {}, n))
    dtype = tables[0].dtype
    return {v: fixed[v] for v in cards}, _score(scopes, tables, fixed, n, dtype)


def _score(scopes, tables, assignment, n, dtype) -> torch.Tensor:
    """Σ_f table_f at a full assignment: ``()`` or ``(n,)``."""
    _, t, _, _ = condition(scopes, tables, assignment)
    return sum(t, torch.zeros((n,) if n is not None else (), dtype=dtype))


def sample(cards: Mapping[str, int], scopes: Sequence[tuple], tables: Sequence[torch.Tensor], n: int,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` exact joint draws, ``(n, V)`` LongTensor in ``cards`` order: each variable in
    turn from its conditional given the ones drawn before it (a batched sum-product
    elimination per variable)."""
    drawn: dict[str, torch.Tensor] = {}
    for v in cards:
        s, t, b, _ = _conditioned(cards, scopes, tables, drawn, also=(v,), n=n)
        logits = _plan(cards, s, b, keep=(v,)).run(t, log=True)[0]
        probs = torch.softmax(logits, -1)
        drawn[v] = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return torch.stack([drawn[v] for v in cards], -1)


__all__ = ["MAX_ENTRIES", "min_fill_order", "batched_order", "Plan", "decode",
           "condition", "log_partition", "marginals", "max_assignment", "sample"]
