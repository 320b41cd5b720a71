"""Exact sum-product and max-product over discrete factors, by log-space tensor contraction.

A *factor set* is a list of ``scopes`` (tuples of variable names) and matching
``tables`` (log-potential tensors, one dim per scope variable, in scope order). The
unnormalised log-density of a full assignment x is ``sum_f tables[f][x[scope_f]]``;
log Z = logsumexp over all assignments of that sum. It is computed as one einsum in the
log-sum-exp semiring (``pyro.ops.einsum.torch_log``) with the contraction order chosen by
``opt_einsum`` — variable elimination with an optimised order (Koller & Friedman 2009,
ch. 9). Max-product uses the max-plus semiring (:mod:`probgen.ops.einsum_max`).

Posterior marginals come from one backward pass (Eisner 2016, "Inside-outside and
forward-backward algorithms are just backprop"): d log Z / d probe_v, for a zero unary
"probe" factor on v, is p(v | evidence).

Evidence maps variables to values: ints, or 1-D LongTensors of a common length n; with
tensors every result gains a leading batch dim of size n (one query per row).
"""
from __future__ import annotations

import functools
from typing import Mapping, Sequence

import opt_einsum
import torch

BATCH = "\x00batch"  # the scope name of the evidence batch dim
_SUM = "pyro.ops.einsum.torch_log"
_MAX = "probgen.ops.einsum_max"


def contract(scopes: Sequence[tuple], tables: Sequence[torch.Tensor], keep: tuple = (),
             *, max_product: bool = False) -> torch.Tensor:
    """log-sum-exp (or max) of the sum of ``tables`` over every variable not in ``keep``;
    the result has one dim per name in ``keep``, in that order."""
    scopes, tables = _absorb(list(map(tuple, scopes)), list(tables))
    names = sorted({v for s in scopes for v in s} | set(keep), key=lambda v: (v != BATCH, str(v)))
    sym = {v: opt_einsum.get_symbol(i) for i, v in enumerate(names)}
    eq = ",".join("".join(sym[v] for v in s) for s in scopes) + "->" + "".join(sym[v] for v in keep)
    expr = _expression(eq, tuple(tuple(t.shape) for t in tables))
    return expr(*tables, backend=_MAX if max_product else _SUM)


@functools.lru_cache(maxsize=256)
def _expression(eq: str, shapes: tuple):
    """The contraction with its elimination order found once per equation and shapes."""
    return opt_einsum.contract_expression(eq, *shapes)


def _absorb(scopes: list, tables: list) -> tuple[list, list]:
    """Add each factor whose scope lies inside another factor's scope into that factor
    (unaries into pairwise tables, probes into their variable's factor): the sum is the
    same, and the contraction has fewer, larger steps (less per-step overhead)."""
    out_s, out_t = [], []
    order = sorted(range(len(scopes)), key=lambda i: -len(scopes[i]))
    for i in order:
        s, t = scopes[i], tables[i]
        host = next((j for j, hs in enumerate(out_s) if set(s) <= set(hs)), None)
        if host is None:
            out_s.append(s)
            out_t.append(t)
            continue
        hs = out_s[host]
        # permute t's dims into the host's order and broadcast over the host's other dims
        t = t.permute([s.index(v) for v in hs if v in s]).reshape(
            [out_t[host].shape[k] if v in s else 1 for k, v in enumerate(hs)])
        out_t[host] = out_t[host] + t
    return out_s, out_t


def condition(scopes: Sequence[tuple], tables: Sequence[torch.Tensor],
              evidence: Mapping | None) -> tuple[list, list, int | None]:
    """Clamp observed variables: index each table at the evidence values. Returns the new
    scopes and tables and the batch size (``None`` for scalar evidence); batched
    evidence puts a leading ``BATCH`` dim on each table that touches it."""
    evidence = dict(evidence or {})
    n = None
    for v, val in evidence.items():
        if torch.is_tensor(val) and val.dim() == 1:
            if n is not None and len(val) != n:
                raise ValueError("batched evidence values must all have the same length")
            n = len(val)
    new_scopes, new_tables = [], []
    for scope, t in zip(scopes, tables):
        obs = [i for i, v in enumerate(scope) if v in evidence]
        if not obs:
            new_scopes.append(tuple(scope))
            new_tables.append(t)
            continue
        rest = [i for i in range(len(scope)) if i not in obs]
        t = t.permute(obs + rest)
        idx = []
        for i in obs:
            val = evidence[scope[i]]
            idx.append(val.long() if torch.is_tensor(val) and val.dim() == 1 else
                       (torch.full((n,), int(val), dtype=torch.long) if n is not None else int(val)))
        t = t[tuple(idx)]
        batched = n is not None
        new_scopes.append(((BATCH,) if batched else ()) + tuple(scope[i] for i in rest))
        new_tables.append(t)
    return new_scopes, new_tables, n


def _free_unaries(cards: Mapping[str, int], scopes: Sequence[tuple], evidence: Mapping,
                  dtype: torch.dtype) -> tuple[list, list]:
    """Zero unary factors for unobserved variables no factor mentions (they add log card)."""
    covered = {v for s in scopes for v in s}
    free = [v for v in cards if v not in covered and v not in evidence]
    return [(v,) for v in free], [torch.zeros(cards[v], dtype=dtype) for v in free]


def log_partition(cards: Mapping[str, int], scopes: Sequence[tuple], tables: Sequence[torch.Tensor],
                  evidence: Mapping | None = None) -> torch.Tensor:
    """log Σ_x exp(Σ_f table_f(x_f)) over assignments x consistent with ``evidence``
    (log Z without evidence): shape ``()`` or ``(n,)`` for batched evidence."""
    evidence = dict(evidence or {})
    s, t, n = condition(scopes, tables, evidence)
    fs, ft = _free_unaries(cards, scopes, evidence, tables[0].dtype)
    keep = (BATCH,) if n is not None else ()
    s, t = s + fs, t + ft
    if n is not None:  # every batched query needs the batch dim even if no table kept it
        s, t = s + [(BATCH,)], t + [torch.zeros(n, dtype=tables[0].dtype)]
    return contract(s, t, keep)


def marginals(cards: Mapping[str, int], scopes: Sequence[tuple], tables: Sequence[torch.Tensor],
              evidence: Mapping | None = None) -> dict[str, torch.Tensor]:
    """p(v | evidence) for every variable v: ``(card_v,)`` or ``(n, card_v)`` tensors
    (one-hot for observed variables), by differentiating log Z(evidence) with respect to
    zero probe factors."""
    evidence = dict(evidence or {})
    s, t, n = condition(scopes, [x.detach() for x in tables], evidence)
    dtype = tables[0].dtype
    hidden = [v for v in cards if v not in evidence]
    probes = {v: torch.zeros(((n,) if n is not None else ()) + (cards[v],), dtype=dtype, requires_grad=True)
              for v in hidden}
    ps = [((BATCH,) if n is not None else ()) + (v,) for v in hidden]
    keep = (BATCH,) if n is not None else ()
    extra_s, extra_t = ([(BATCH,)], [torch.zeros(n, dtype=dtype)]) if n is not None else ([], [])
    out: dict[str, torch.Tensor] = {}
    if hidden:
        with torch.enable_grad():
            log_z = contract(s + ps + extra_s, t + list(probes.values()) + extra_t, keep)
            grads = torch.autograd.grad(log_z.sum(), list(probes.values()))
        out.update({v: g for v, g in zip(hidden, grads)})
    for v, val in evidence.items():
        out[v] = torch.nn.functional.one_hot(torch.as_tensor(val).long(), cards[v]).to(dtype)
    return {v: out[v] for v in cards}


def max_assignment(cards: Mapping[str, int], scopes: Sequence[tuple], tables: Sequence[torch.Tensor],
                   evidence: Mapping | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The most probable assignment of the unobserved variables given ``evidence`` (MAP /
    MPE) and its unnormalised log-score; values are LongTensors of shape ``()`` or ``(n,)``.

    One max-product contraction and its backward pass: the derivative of the max score
    with respect to a zero probe factor on v is the indicator of v's value in the
    maximiser (Eisner 2016: Viterbi is backprop in the max-plus semiring). When the
    maximiser is not unique the gradient splits between ties, so the decoded assignment is
    checked against the max score; if it falls short, variables are decoded one at a time
    (max-marginal given the ones already fixed, argmax, clamp), which is exact with ties."""
    evidence = {v: torch.as_tensor(val).long() for v, val in dict(evidence or {}).items()}
    n = next((len(val) for val in evidence.values() if val.dim() == 1), None)
    dtype = tables[0].dtype
    tables = [t.detach() for t in tables]
    hidden = [v for v in cards if v not in evidence]
    batch = (BATCH,) if n is not None else ()
    extra = ([(BATCH,)], [torch.zeros(n, dtype=dtype)]) if n is not None else ([], [])
    s, t, _ = condition(scopes, tables, evidence)
    probes = [torch.zeros(((n,) if n is not None else ()) + (cards[v],), dtype=dtype, requires_grad=True)
              for v in hidden]
    fixed = dict(evidence)
    if hidden:
        with torch.enable_grad():
            best = contract(s + [batch + (v,) for v in hidden] + extra[0], t + probes + extra[1], batch,
                            max_product=True)
            grads = torch.autograd.grad(best.sum(), probes)
        fixed.update({v: g.argmax(-1) for v, g in zip(hidden, grads)})
        score = _score(scopes, tables, fixed, n, dtype)
        if not torch.allclose(score, best.detach(), rtol=1e-12, atol=1e-9):  # ties: decode exactly
            fixed = _decode_sequentially(cards, scopes, tables, evidence, n)
    return {v: fixed[v] for v in cards}, _score(scopes, tables, fixed, n, dtype)


def _score(scopes, tables, assignment, n, dtype) -> torch.Tensor:
    """Σ_f table_f at a full assignment: ``()`` or ``(n,)``."""
    _, t, _ = condition(scopes, tables, assignment)
    return sum(t, torch.zeros((n,) if n is not None else (), dtype=dtype))


def _decode_sequentially(cards, scopes, tables, evidence, n) -> dict:
    dtype = tables[0].dtype
    fixed = dict(evidence)
    for v in cards:
        if v in evidence:
            continue
        s, t, _ = condition(scopes, tables, fixed)
        fs, ft = _free_unaries(cards, scopes, fixed, dtype)
        keep = ((BATCH,) if n is not None else ()) + (v,)
        extra = ([(BATCH,)], [torch.zeros(n, dtype=dtype)]) if n is not None else ([], [])
        if not any(v in sc for sc in s + fs):
            s, t = s + [(v,)], t + [torch.zeros(cards[v], dtype=dtype)]
        m = contract(s + fs + extra[0], t + ft + extra[1], keep, max_product=True)
        fixed[v] = m.argmax(-1)
    return fixed


def sample(cards: Mapping[str, int], scopes: Sequence[tuple], tables: Sequence[torch.Tensor], n: int,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` exact joint draws, ``(n, V)`` LongTensor in ``cards`` order: each variable in
    turn from its conditional given the ones drawn before it (a batched sum-product
    contraction per variable)."""
    dtype = tables[0].dtype
    drawn: dict[str, torch.Tensor] = {}
    for v in cards:
        s, t, _ = condition(scopes, tables, drawn)
        fs, ft = _free_unaries(cards, scopes, drawn, dtype)
        s, t = s + fs + [(BATCH,)], t + ft + [torch.zeros(n, dtype=dtype)]
        if not any(v in sc for sc in s):
            s, t = s + [(v,)], t + [torch.zeros(cards[v], dtype=dtype)]
        logits = contract(s, t, (BATCH, v))
        probs = torch.softmax(logits, -1)
        drawn[v] = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return torch.stack([drawn[v] for v in cards], -1)
