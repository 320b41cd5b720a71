"""Evaluation of layered energy models: log p*(v) per row (exact enumeration of the cheaper
hidden layers, or importance sampling beyond ``MAX_BITS``; DBNs through their directed
links, Salakhutdinov & Murray 2008) and exact posterior marginals by enumeration."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from probgen.energy import LayeredEnergy


#: enumerate at most 2^MAX_BITS states for automatic "exact" evaluation (about a second);
#: an explicit ``log_partition(method="exact")`` goes up to 2^EXPLICIT_MAX_BITS
MAX_BITS = 16
EXPLICIT_MAX_BITS = 24


def visible_bits(model: LayeredEnergy) -> int:
    """Bits enumerated to compute log p*(v) exactly (a DBN: all of its hidden layers below the top)."""
    if model.n_directed:
        return sum(model.layers[l].size for l in range(1, model.n_layers - 1))
    hidden = [l for l in model.undirected_layers if l != 0]
    return sum(model.layers[l].size for l in model.split_for_enumeration(hidden)[0]) if hidden else 0


def partition_bits(model: LayeredEnergy) -> int:
    return model.enumeration_bits()


def exact_feasible(model: LayeredEnergy, max_bits: int = MAX_BITS) -> bool:
    try:
        return partition_bits(model) <= max_bits and visible_bits(model) <= max_bits
    except ValueError:
        return False


def _bernoulli_loglik(s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Σ log Bernoulli(s; σ(f)) = Σ s f − softplus(f) over the last axis."""
    return (s * f - F.softplus(f)).sum(-1)


def _directed_loglik(model: LayeredEnergy, params: dict, states: list) -> torch.Tensor:
    """Σ over a DBN's directed links of log p(s_l | s_{l+1})."""
    out = 0.0
    for l in range(model.n_directed):
        w = model.coupling_names[(l, l + 1)]
        f = params[model.bias_names[l]] + states[l + 1] @ params[w].T
        if model.layers[l].units == "bernoulli":
            out = out + _bernoulli_loglik(states[l], f / model.T)
        else:
            d = states[l] - f
            out = out - (d * d).sum(-1) / (2 * model.T) - 0.5 * d.shape[-1] * math.log(2 * math.pi * model.T)
    return out


def log_unnormalized_visible(model: LayeredEnergy, params: dict, x: torch.Tensor, *, num_samples: int = 100,
                             g: torch.Generator | None = None, max_bits: int = MAX_BITS,
                             chunk_rows: int = 256) -> tuple[torch.Tensor, bool]:
    """log p*(v) (log p(v) + log Z) per row, and whether it is exact.

    Undirected models: the cheaper set of hidden layers is enumerated, the rest summed out
    analytically; beyond ``max_bits`` an importance-sampling estimate with the mean-field
    posterior of the enumerated layers as proposal (``num_samples`` draws per row).
    DBNs: Σ over h¹…h^{L−1} of Π p(h_{l−1}|h_l) · p*_top(h^{L−1}) by enumeration, or with
    the bottom-up recognition distribution as proposal (Salakhutdinov & Murray 2008)."""
    outs, exact = [], True
    for s in range(0, x.shape[0], chunk_rows):
        xs = x[s:s + chunk_rows]
        if model.n_directed:
            lp, ex = _dbn_visible(model, params, xs, num_samples, g, max_bits)
        else:
            lp, ex = _undirected_visible(model, params, xs, num_samples, g, max_bits)
        outs.append(lp)
        exact = exact and ex
    return torch.cat(outs), exact


def _undirected_visible(model, params, x, samples, g, max_bits):
    hidden = [l for l in model.undirected_layers if l != 0]
    states = [x] + [None] * (model.n_layers - 1)
    if not hidden:
        return model.log_unnormalized(params, states, []), True
    E, U = model.split_for_enumeration(hidden)
    bits = sum(model.layers[l].size for l in E)
    if bits <= max_bits:
        return model.log_sum_enumerated(params, states, hidden, max_bits=max_bits), True
    mu, _ = model.mean_field(params, states, hidden, iters=30)
    N, S = x.shape[0], samples
    rep = [None if m is None else m.repeat_interleave(S, 0) for m in mu]
    st = [rep[0]] + [None] * (model.n_layers - 1)
    logq = 0.0
    for l in E:
        p = rep[l].clamp(1e-6, 1 - 1e-6)
        st[l] = (torch.rand(p.shape, generator=g, dtype=p.dtype) < p).to(p.dtype)
        logq = logq + (st[l] * torch.log(p) + (1 - st[l]) * torch.log1p(-p)).sum(-1)
    lw = (model.log_unnormalized(params, st, U) - logq).reshape(N, S)
    return torch.logsumexp(lw, 1) - math.log(S), False


def _dbn_top(model):
    return model.n_layers - 2  # the lower layer of the top RBM


def _dbn_visible(model, params, x, samples, g, max_bits):
    top = _dbn_top(model)
    L = model.n_layers
    mids = list(range(1, top + 1))
    bits = sum(model.layers[l].size for l in mids)

    def joint(states):
        return _directed_loglik(model, params, states) + model.log_unnormalized(params, states, [L - 1])

    if bits <= max_bits:
        N, M = x.shape[0], 1 << bits
        codes = torch.arange(M)
        bitmat = ((codes[:, None] >> torch.arange(bits)) & 1).to(x.dtype)
        st = [x.repeat_interleave(M, 0)] + [None] * (L - 1)
        off = 0
        for l in mids:
            sz = model.layers[l].size
            st[l] = bitmat[:, off:off + sz].repeat(N, 1)
            off += sz
        return torch.logsumexp(joint(st).reshape(N, M), 1), True
    N, S = x.shape[0], samples
    st = [x.repeat_interleave(S, 0)] + [None] * (L - 1)
    logq = 0.0
    for l in mids:
        p = model.recognition_mean(params, st[l - 1], l - 1).clamp(1e-6, 1 - 1e-6)
        st[l] = (torch.rand(p.shape, generator=g, dtype=p.dtype) < p).to(p.dtype)
        logq = logq + (st[l] * torch.log(p) + (1 - st[l]) * torch.log1p(-p)).sum(-1)
    lw = (joint(st) - logq).reshape(N, S)
    return torch.logsumexp(lw, 1) - math.log(S), False


def exact_marginals(model: LayeredEnergy, params: dict, x: torch.Tensor, *, max_bits: int = MAX_BITS,
                    chunk: int = 1 << 18) -> list[torch.Tensor]:
    """Exact posterior means E[s_l | v] of every layer, ``[v, m_1, …, m_L]`` (each ``(N, size_l)``).

    The cheaper set of hidden layers (`visible_bits`; a DBN: its layers below the top)
    is enumerated with weights p(s_E | v) = softmax over the configurations of
    log Σ_{s_U} p*(v, s_E, s_U), computed in log space; the summed-out layers' means are the
    weighted averages of their conditional means E[s_U | v, s_E]. ValueError beyond
    ``2^max_bits`` configurations, naming the engines that approximate."""
    L = model.n_layers
    if model.n_directed:
        E, U = list(range(1, _dbn_top(model) + 1)), [L - 1]
    else:
        hidden = [l for l in model.undirected_layers if l != 0]
        E, U = model.split_for_enumeration(hidden) if hidden else ([], [])
    bits = sum(model.layers[l].size for l in E)
    if bits > max_bits:
        raise ValueError(f"exact marginals of this {type(model).__name__} enumerate 2^{bits} hidden states "
                         f"(limit 2^{max_bits}); use engine='meanfield' (mean-field) or engine='mcmc' "
                         "for approximations")
    M = 1 << bits
    bitmat = ((torch.arange(M)[:, None] >> torch.arange(bits)) & 1).to(x.dtype)   # (M, bits)
    outs: list[list[torch.Tensor]] = [[] for _ in range(L)]
    rows = max(1, chunk // M)  # data rows per chunk: rows × M configurations at a time
    for s in range(0, x.shape[0], rows):
        xs = x[s:s + rows]
        N = xs.shape[0]
        st = [xs.repeat_interleave(M, 0)] + [None] * (L - 1)
        off = 0
        for l in E:
            st[l] = bitmat[:, off:off + model.layers[l].size].repeat(N, 1)
            off += model.layers[l].size
        lw = model.log_unnormalized(params, st, U)
        if model.n_directed:
            lw = lw + _directed_loglik(model, params, st)
        w = torch.softmax(lw.reshape(N, M), 1).unsqueeze(-1)                      # p(s_E | v)
        outs[0].append(xs)
        for l in range(1, L):
            m = st[l] if l in E else model.conditional_mean(params, st, l)
            outs[l].append((w * m.reshape(N, M, -1)).sum(1))
    return [torch.cat(o) for o in outs]
