"""Partition functions of layered energy models: annealed importance sampling (Neal 2001;
Salakhutdinov & Murray 2008) and the choice between it and exact enumeration."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from probgen.energy import LayeredEnergy, PartitionEstimate
from probgen.random import generator

from ._energy_eval import EXPLICIT_MAX_BITS, MAX_BITS, partition_bits


def beta_schedule(temperatures: Any) -> torch.Tensor:
    """Inverse temperatures 0 = β_0 < … < β_K = 1: an explicit increasing sequence, or a
    count K spaced as Salakhutdinov & Murray (2008): a tenth of the steps in [0, 0.5), four
    tenths in [0.5, 0.9), half in [0.9, 1] (finer where the distributions change fastest)."""
    if isinstance(temperatures, int):
        if temperatures < 2:
            raise ValueError(f"temperatures must be >= 2, got {temperatures}")
        K = temperatures
        k1, k2 = max(1, K // 10), max(1, (4 * K) // 10)
        k3 = max(1, K - k1 - k2)
        betas = np.concatenate([np.linspace(0, 0.5, k1, endpoint=False),
                                np.linspace(0.5, 0.9, k2, endpoint=False), np.linspace(0.9, 1.0, k3 + 1)])
        return torch.as_tensor(betas, dtype=torch.float64)
    b = torch.as_tensor(temperatures, dtype=torch.float64).flatten()
    if len(b) < 2 or b[0] != 0 or b[-1] != 1 or (b[1:] <= b[:-1]).any():
        raise ValueError("temperatures must be a count or an increasing sequence from 0 to 1")
    return b


def ais_log_partition(model: LayeredEnergy, params: dict, *, chains: int = 100, temperatures: Any = 1000,
                      base_visible: torch.Tensor | None = None, seed: int | None = 0) -> PartitionEstimate:
    """Annealed importance sampling (Neal 2001; Salakhutdinov & Murray 2008) for log Z.

    The base model A keeps only biases (``base_visible`` for the visible layer — the data's
    log-odds in S&M — and zeros elsewhere), so log Z_A is closed-form. Since E is linear in
    θ, p_β ∝ p_A^(1−β) p_B^β is the model at θ_β = (1−β)θ_A + βθ_B, and its own coloured
    Gibbs sweep is the transition. The largest uncoupled set of lateral-free layers is
    summed out analytically (hidden units of an RBM, odd layers of a DBM), which lowers
    the variance of the weights. log Ẑ = log Z_A + log mean_m w_m; its standard error by
    the delta method, sd(w)/(mean(w)·√M)."""
    if not isinstance(chains, int) or chains < 2:
        raise ValueError(f"chains must be an integer >= 2, got {chains!r}")
    betas = beta_schedule(temperatures)
    g = generator(seed)
    dtype = torch.float64
    pB = {kk: v.to(dtype) for kk, v in params.items()}
    pA = {kk: torch.zeros_like(v) for kk, v in pB.items()}
    if base_visible is not None and 0 in model.undirected_layers:
        pA[model.bias_names[0]] = base_visible.to(dtype)
    keep, U = model.split_for_enumeration(model.undirected_layers)
    log_zA = model.log_partition_factorised(pA)
    # exact draws from the factorised base model
    states = [None] * model.n_layers
    for l in model.undirected_layers:
        states[l] = model._draw(l, model.conditional_mean(pA, [None] * model.n_layers, l)
                                .expand(chains, -1).contiguous(), g)
    schedule = model.gibbs_schedule()
    logw = torch.zeros(chains, dtype=dtype)

    def mix(beta):
        return {kk: (1 - beta) * pA[kk] + beta * pB[kk] for kk in pB}

    prev = mix(0.0)
    for kk in range(1, len(betas)):
        cur = mix(float(betas[kk]))
        logw += model.log_unnormalized(cur, states, U) - model.log_unnormalized(prev, states, U)
        states = model.gibbs_sweep(cur, states, g, schedule=schedule)
        prev = cur
    lw_max = logw.max()
    w = torch.exp(logw - lw_max)
    value = float(log_zA + lw_max + torch.log(w.mean()))
    stderr = float(w.std() / (w.mean() * math.sqrt(chains)))
    return PartitionEstimate(value, stderr, "ais", chains, len(betas) - 1)


def log_partition(model: LayeredEnergy, params: dict, method: str = "auto", *, chains: int = 100,
                  temperatures: Any = 1000, base_visible: torch.Tensor | None = None,
                  seed: int | None = 0, max_bits: int = MAX_BITS) -> PartitionEstimate:
    """log Z by ``"exact"`` enumeration, ``"ais"``, or ``"auto"`` (exact when feasible)."""
    if method not in ("exact", "ais", "auto"):
        raise ValueError(f"method must be 'exact', 'ais' or 'auto', got {method!r}")
    params = {k: v.double() for k, v in params.items()}
    if method == "auto":
        method = "exact" if partition_bits(model) <= max_bits else "ais"
    if method == "exact":
        bits = partition_bits(model)
        max_bits = max(max_bits, EXPLICIT_MAX_BITS)
        if bits > max_bits:
            raise ValueError(f"exact log Z needs 2^{bits} states (limit 2^{max_bits}); use "
                             "fit.log_partition(method='ais', chains=..., temperatures=...)")
        return PartitionEstimate(float(model.log_partition_exact(params, max_bits=max_bits)), 0.0, "exact")
    return ais_log_partition(model, params, chains=chains, temperatures=temperatures,
                             base_visible=base_visible, seed=seed)
