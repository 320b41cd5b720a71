"""Variable elimination as a sequence of small tensor contractions (sum-product and
max-product), batched over evidence rows.

A *factor* is a table whose axes are labelled by variable ids (its *scope*); a batched
factor has one extra leading axis of size ``N`` (one slice per evidence row). Eliminating
a variable multiplies the factors that mention it and sums it out (or maxes it out, for
MAP), one ``einsum`` per variable, in a min-fill order (Kjærulff 1990; Koller & Friedman
2009, §9.4.3). Evidence enters either by slicing tables (one assignment) or as batched
indicator factors ``(N, card)`` — one-hot for an observed cell, all ones for a missing one
— so that a whole table of evidence rows is answered by one contraction.

Batched intermediates are rescaled after every step (each row by its maximum, the log of
the scale accumulated per row), so long products of small probabilities never underflow:
the result is ``value * exp(log_scale)`` — log-space accuracy at probability-space speed.

The same plan runs on NumPy arrays (queries: low per-call overhead) or on torch tensors
(the EM E-step: the gradient of ``log Z`` with respect to the tables gives the expected
counts; Darwiche 2003, Eisner 2016).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

#: the default bound on the entries of one intermediate table (2**27 float64 = 1 GiB)
MAX_ENTRIES = 2 ** 27


def min_fill_order(scopes: Sequence[Sequence[int]], cards: Sequence[int],
                   variables: Sequence[int] | None = None) -> list[int]:
    """A greedy min-fill elimination order (ties broken by the smallest clique weight)
    of ``variables`` (default: all) in the interaction graph of ``scopes``."""
    adj: dict[int, set[int]] = {}
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


class Plan:
    """The steps of one elimination, built from scopes only (no tables), so it can be
    cached and reused for every evidence table with the same observed columns.

    Args:
      scopes: per factor, the variable ids of its (non-batch) axes, in axis order.
      batched: per factor, whether it has a leading batch axis.
      cards: cardinality of every variable id.
      order: the variables to eliminate, in elimination order; ``max_vars`` among them
        are maxed out (max-product, with argmax tables kept for decoding), the others
        summed. For a correct marginal-MAP every summed variable must come first.
      keep: the variables of the result, in axis order.
      batch_size: ``N`` (used for the memory estimate only).
      max_entries: refuse (``ValueError``) a plan whose largest intermediate is bigger.
    """

    def __init__(self, scopes: Sequence[Sequence[int]], batched: Sequence[bool], cards: Sequence[int],
                 order: Sequence[int], keep: Sequence[int] = (), max_vars: Any = (), batch_size: int = 1,
                 max_entries: int = MAX_ENTRIES):
        self.keep = tuple(keep)
        self.order = list(order)
        self.n_inputs = len(scopes)
        max_vars = set(max_vars)
        live: dict[int, tuple[tuple[int, ...], bool]] = {}
        by_var: dict[int, set[int]] = {}
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
            union: list[int] = []
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
            raise ValueError(f"variables {sorted(missing)} are neither eliminated nor kept")
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
        if largest > max_entries:
            raise ValueError(
                f"exact inference here needs an intermediate table of {largest:,} entries "
                f"({largest * 8 / 2 ** 30:.1f} GiB in float64), more than the limit of {max_entries:,}; "
                "use engine='bp' (loopy belief propagation) or engine='mcmc' (Gibbs sampling) for "
                "approximate answers, or ask fewer "
                "variables / fewer rows at once")

    def run(self, tensors: Sequence[Any], *, rescale: bool = True) -> tuple[Any, Any, dict]:
        """Contract ``tensors`` (NumPy arrays or torch tensors, matching the scopes).

        Returns ``(result, log_scale, argmax)``: ``result`` has axes ``(N?, *keep)`` and
        the true value is ``result * exp(log_scale)`` (``log_scale`` is ``(N,)`` when the
        result is batched, else a float); ``argmax[v]`` is, for each maxed-out variable,
        ``(table, scope, batched)`` — the maximising state of ``v`` for every value of its
        remaining scope (see :func:`decode`)."""
        import torch
        is_torch = bool(tensors) and isinstance(tensors[0], torch.Tensor)
        if is_torch:
            einsum = torch.einsum
        else:
            einsum = np.einsum
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


def _rescale(t: Any, log_scale: Any, is_torch: bool) -> tuple[Any, Any]:
    """Divide each batch row of ``t`` by its maximum (rows that are all zero keep scale 1)."""
    if t.ndim == 1:
        m = t
    elif is_torch:
        m = t.detach().reshape(t.shape[0], -1).amax(1)
    else:
        m = t.reshape(t.shape[0], -1).max(1)
    if is_torch:
        import torch
        m = torch.where(m > 0, m, torch.ones_like(m)).detach()
        return t / m.reshape((-1,) + (1,) * (t.ndim - 1)), log_scale + torch.log(m)
    m = np.where(m > 0, m, 1.0)
    return t / m.reshape((-1,) + (1,) * (t.ndim - 1)), log_scale + np.log(m)


def decode(argmax: dict, order: Sequence[int], known: dict[int, Any], n: int | None) -> dict[int, Any]:
    """Backtrack a max-product elimination: the maximising state of every maxed-out
    variable, in reverse elimination order. ``known`` holds the values (ints or ``(N,)``
    arrays) of the kept variables; ``n`` is the batch size (``None`` when unbatched)."""
    values = dict(known)
    rows = np.arange(n) if n is not None else None
    for v in reversed(list(order)):
        if v not in argmax:
            continue
        table, scope, batched = argmax[v]
        idx = ((rows,) if batched else ()) + tuple(values[u] for u in scope)
        val = table[idx] if idx else table
        if n is not None and np.ndim(val) == 0:
            val = np.full(n, int(val))
        values[v] = val
    return values
