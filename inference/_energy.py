"""Shared machinery of the engines for layered energy models (:class:`probgen.energy.LayeredEnergy`):
contrastive-divergence / persistent-CD learning, mean-field positive phases, greedy
layer-wise pretraining, annealed importance sampling, and log-likelihood evaluation.

The engines (``mcmc``, ``meanfield``, ``exact``) are thin methods over these functions.

References:
  Hinton (2002) "Training products of experts by minimizing contrastive divergence".
  Tieleman (2008) "Training RBMs using approximations to the likelihood gradient" (PCD).
  Salakhutdinov & Murray (2008) "On the quantitative analysis of deep belief networks" (AIS).
  Salakhutdinov & Hinton (2009) "Deep Boltzmann machines" (mean-field + PCD, pretraining).
  Hinton (2010) "A practical guide to training restricted Boltzmann machines".
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from probgen.energy import LayeredEnergy, PartitionEstimate
from probgen.fit import Fit
from probgen.progress import progress as progress_bar
from probgen.random import generator
from probgen.registry import Method, check_options

#: enumerate at most 2^MAX_BITS states for automatic "exact" evaluation (about a second);
#: an explicit ``log_partition(method="exact")`` goes up to 2^EXPLICIT_MAX_BITS
MAX_BITS = 16
EXPLICIT_MAX_BITS = 24

TRAIN_OPTIONS = ("batch_size", "lr", "k", "persistent", "momentum", "weight_decay", "n_chains",
                 "pretrain", "pretrain_steps", "dtype")


# ---------------------------------------------------------------------------------------
# option handling
# ---------------------------------------------------------------------------------------
def training_options(engine: str, options: dict, extra: dict | None = None, **defaults: Any) -> dict:
    """The shared training options with defaults; ValueError naming unknown ones."""
    known = dict(batch_size=20, lr=0.05, k=1, persistent=False, momentum=0.0, weight_decay=0.0,
                 n_chains=None, pretrain=False, pretrain_steps=None, dtype="float32")
    known.update(defaults)
    known.update(extra or {})
    check_options(engine, {k: v for k, v in options.items() if k not in known}, tuple(sorted(known)))
    out = {**known, **options}
    for name in ("batch_size", "k"):
        if not isinstance(out[name], int) or out[name] < 1:
            raise ValueError(f"{name} must be a positive integer, got {out[name]!r}")
    for name in ("lr", "momentum", "weight_decay"):
        if not isinstance(out[name], (int, float)) or out[name] < 0 or not math.isfinite(out[name]):
            raise ValueError(f"{name} must be a non-negative number, got {out[name]!r}")
    if out["n_chains"] is not None and (not isinstance(out["n_chains"], int) or out["n_chains"] < 1):
        raise ValueError(f"n_chains must be a positive integer, got {out['n_chains']!r}")
    if out["pretrain_steps"] is not None and (not isinstance(out["pretrain_steps"], int) or out["pretrain_steps"] < 0):
        raise ValueError(f"pretrain_steps must be a non-negative integer, got {out['pretrain_steps']!r}")
    if out["momentum"] >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {out['momentum']}")
    if out["dtype"] not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {out['dtype']!r}")
    return out


def _dtype(name: str) -> torch.dtype:
    return torch.float32 if name == "float32" else torch.float64


def start_params(model: LayeredEnergy, data: torch.Tensor, init: dict | None, seed: int | None,
                 dtype: torch.dtype) -> dict[str, torch.Tensor]:
    params = model.init_params(data, seed=seed, dtype=dtype)
    if init:
        unknown = sorted(set(init) - set(params))
        if unknown:
            raise ValueError(f"init names unknown parameters {unknown}; {type(model).__name__} has {sorted(params)}")
        params.update({k: torch.as_tensor(v).to(dtype).clone() for k, v in init.items()})
    return {k: v.to(dtype) for k, v in model.check_params(params).items()}


def is_bipartite_pair(model: LayeredEnergy) -> bool:
    """Two undirected layers, one coupling, no laterals (an RBM, or a DBN's top pair)."""
    return len(model.undirected_layers) == 2 and not model.lateral_names


# ---------------------------------------------------------------------------------------
# CD / PCD for a bipartite pair (RBM), with tied copies for DBM pretraining
# ---------------------------------------------------------------------------------------
def _v_mean(f: torch.Tensor, units: str, T: float) -> torch.Tensor:
    if units == "gaussian":
        return f
    return torch.sigmoid_(f if T == 1 else f.div_(T))


def _draw_sum_into(out: torch.Tensor, mean: torch.Tensor, copies: int, units: str, T: float,
                   u: torch.Tensor) -> None:
    """Write Σ over ``copies`` independent draws with means ``mean`` into ``out`` (a view),
    from pre-drawn uniforms (Bernoulli) or standard normals (Gaussian) ``u`` of shape
    ``(copies, *mean.shape)``."""
    if units == "gaussian":
        torch.add(copies * mean, u.sum(0), alpha=math.sqrt(T), out=out)
    elif copies == 1:
        torch.lt(u[0], mean, out=out)  # a Bernoulli(mean) draw, written as 0./1.
    else:
        out.copy_((u < mean).sum(0))


def _gibbs_step_aug(hs: torch.Tensor, sv: torch.Tensor, Wa: torch.Tensor, T: float, visible: str, up: int,
                    down: int, uv: torch.Tensor, uh: torch.Tensor, ph_out: torch.Tensor | None = None,
                    views: tuple | None = None) -> torch.Tensor:
    """One block-Gibbs step on augmented buffers (a trailing column of ones carries the
    biases): ``Wa = [[W, b], [cᵀ, 0]]`` of shape (D+1, H+1); ``hs`` (B, H+1) holds Σ h-copies,
    ``sv`` (B, D+1) receives Σ v-copies. Returns the hidden conditional means (B, H),
    written into ``ph_out`` when given. ``views`` = (hs[:, :H], sv[:, :D], Wa[:, :H],
    Wa[:D].T), precomputed by the training loop."""
    D, H = Wa.shape[0] - 1, Wa.shape[1] - 1
    hsH, svD, WaH, WaDT = views if views is not None else (hs[:, :H], sv[:, :D], Wa[:, :H], Wa[:D].T)
    mv = torch.mm(hs, WaDT)                      # b + W Σh
    if visible == "bernoulli":
        mv = torch.sigmoid_(mv if T == 1 else mv.div_(T))
    _draw_sum_into(svD, mv, up, visible, T, uv)
    ph = torch.mm(sv, WaH) if ph_out is None else torch.mm(sv, WaH, out=ph_out)   # c + Wᵀ Σv
    ph = torch.sigmoid_(ph if T == 1 else ph.div_(T))
    _draw_sum_into(hsH, ph, down, "bernoulli", T, uh)
    return ph


def _augment(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t, torch.ones(t.shape[0], 1, dtype=t.dtype)], 1)


def tied_gibbs_step(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, T: float, visible: str,
                    up: int, down: int, g, uv: torch.Tensor | None = None, uh: torch.Tensor | None = None):
    """One block-Gibbs step of an RBM with ``up`` tied copies of its visible layer and
    ``down`` tied copies of its hidden layer, on the copy sums: given h = Σ h-copies,
    every visible copy ~ P(v | b + W h), then every hidden copy ~ P(h | c + Wᵀ Σ v-copies).
    (The training loop runs the same step on augmented buffers.) Returns
    (Σ v-copies, hidden conditional mean, Σ h-copies); shapes (B, D), (B, H), (B, H)."""
    D, H = W.shape
    B = h.shape[0]
    Wa = torch.zeros(D + 1, H + 1, dtype=W.dtype)
    Wa[:D, :H], Wa[:D, H], Wa[D, :H] = W, b, c
    draw_v = torch.randn if visible == "gaussian" else torch.rand
    uv = draw_v((up, B, D), generator=g, dtype=W.dtype) if uv is None else uv
    uh = torch.rand((down, B, H), generator=g, dtype=W.dtype) if uh is None else uh
    hs, sv = _augment(h), _augment(torch.zeros(B, D, dtype=W.dtype))
    ph = _gibbs_step_aug(hs, sv, Wa, T, visible, up, down, uv, uh)
    return sv[:, :D], ph, hs[:, :H]


def stage_up(x: torch.Tensor, stage: dict, T: float = 1.0) -> torch.Tensor:
    """A stacked RBM's hidden means given its input, σ((c + up·Wᵀx)/T) — what the next
    RBM of a greedy stack is trained on (up = 2 for a DBM's bottom RBM: doubled weights)."""
    return torch.sigmoid((stage["c"] + stage["up"] * (x @ stage["W"])) / T)


def train_bipartite(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *,
                    T: float = 1.0, visible: str = "bernoulli", up: int = 1, down: int = 1, steps: int,
                    batch_size: int, lr: float, k: int, persistent: bool, momentum: float,
                    weight_decay: float, n_chains: int | None, g: torch.Generator, progress: bool,
                    desc: str = "rbm") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[dict]]:
    """CD-k (Hinton 2002) or PCD-k (Tieleman 2008) for an RBM E = −bᵀv − cᵀh − vᵀWh,
    minibatch gradient ascent on (E_data − E_model)[stat]/T with momentum and L2 weight
    decay on W. The negative statistics use the sampled visible states and the hidden
    conditional means given them (Rao-Blackwellised, as scikit-learn's BernoulliRBM).

    ``up`` / ``down`` copies implement the tied-copies RBMs of DBM pretraining
    (Salakhutdinov & Hinton 2009, §3.1; Goodfellow, Bengio & Courville 2016, §20.4.5): ``up`` copies of the
    visible layer (hidden input c + Wᵀ Σ_copies v, i.e. doubled bottom-up weights for the
    bottom RBM) and ``down`` copies of the hidden layer (visible input b + W Σ_copies h,
    doubled top-down weights for the top RBM). Copies are sampled independently; their
    sums are Binomial(copies, p).

    Implementation: the parameters live in one augmented matrix Wa = [[W, b], [cᵀ, 0]] and
    the states carry a column of ones, so each field is one matrix product and the whole
    update (W, b and c) is two ``addmm_`` calls: Wa += lr/T·(ṽᵀh̃_data/B − ṽᵀh̃_model/B').
    All of an epoch's random numbers are drawn at once.

    Shapes: x (N, D), W (D, H), b (D,), c (H,). Returns updated (W, b, c) and the
    per-epoch history (reconstruction error, pseudo-log-likelihood for binary data)."""
    N, D = x.shape
    H = W.shape[1]
    dtype = x.dtype
    Wa = torch.zeros(D + 1, H + 1, dtype=dtype)
    Wa[:D, :H], Wa[:D, H], Wa[D, :H] = W, b, c
    vel = torch.zeros_like(Wa) if momentum else None
    xa = _augment(up * x) if up != 1 else _augment(x)       # [Σ v-copies, 1] for the data
    n_chains = n_chains or batch_size
    rows = n_chains if persistent else batch_size
    hs = _augment(torch.zeros(rows, H, dtype=dtype))         # Σ h-copies (sampled), + ones
    sv = _augment(torch.zeros(rows, D, dtype=dtype))         # Σ v-copies (sampled), + ones
    hpos = _augment(torch.zeros(batch_size, H, dtype=dtype))  # down·P(h|v) for the data, + ones
    hneg = _augment(torch.zeros(rows, H, dtype=dtype))       # down·P(h|v) for the samples, + ones
    if persistent:
        v_init = xa[torch.randint(N, (n_chains,), generator=g)]
        p0 = torch.sigmoid(v_init @ Wa[:, :H] / T)
        _draw_sum_into(hs[:, :H], p0, down, "bernoulli", T,
                       torch.rand((down, n_chains, H), generator=g, dtype=dtype))
    history = []
    eval_rows = x[torch.randperm(N, generator=g)[:500]]
    n_batches = -(-N // batch_size)
    draw_v = torch.randn if visible == "gaussian" else torch.rand
    s = lr / T
    WaH, WaDT = Wa[:, :H], Wa[:D].T  # views: stay valid while Wa is updated in place
    full = (hs, sv, hpos, hneg, hpos[:, :H], hneg[:, :H], (hs[:, :H], sv[:, :D], WaH, WaDT))
    for epoch in progress_bar(range(steps), total=steps, desc=desc, enabled=progress):
        xp = xa[torch.randperm(N, generator=g)]
        # all of the epoch's random numbers at once (one call instead of one per block)
        uv = draw_v((n_batches, k, up, rows, D), generator=g, dtype=dtype)
        uh = torch.rand((n_batches, k + (0 if persistent else 1), down, rows, H), generator=g, dtype=dtype)
        for bi in range(n_batches):
            v0 = xp[bi * batch_size:(bi + 1) * batch_size]
            B = v0.shape[0]
            if B == batch_size:
                h, v, hp, hn, hpH, hnH, views = full
                ub, ubh = uv[bi], uh[bi]
            else:  # the last, smaller minibatch
                hp, hpH = hpos[:B], hpos[:B, :H]
                h, v, hn, hnH, views = full[0], full[1], hneg, hneg[:, :H], full[6]
                if not persistent:
                    h, v, hn = hs[:B], sv[:B], hneg[:B]
                    hnH, views = hn[:, :H], (h[:, :H], v[:, :D], WaH, WaDT)
                ub, ubh = uv[bi, :, :, :v.shape[0]], uh[bi, :, :, :v.shape[0]]
            # positive phase: the hidden copies' means given the (copied) data, P(h | v)
            ph0 = torch.mm(v0, WaH, out=hpH)
            ph0 = torch.sigmoid_(ph0 if T == 1 else ph0.div_(T))
            # negative phase: k block-Gibbs steps from the data (CD) or the persistent chains (PCD)
            if not persistent:
                _draw_sum_into(views[0], ph0[:h.shape[0]], down, "bernoulli", T, ubh[k])
            if down != 1:
                hpH.mul_(down)
            for step in range(k):
                _gibbs_step_aug(h, v, Wa, T, visible, up, down, ub[step], ubh[step], ph_out=hnH, views=views)
            if down != 1:
                hnH.mul_(down)
            Bn = v.shape[0]
            if momentum:
                vel.mul_(momentum).addmm_(v0.T, hp, alpha=s / B).addmm_(v.T, hn, alpha=-s / Bn)
                if weight_decay:
                    vel[:D, :H].add_(Wa[:D, :H], alpha=-s * weight_decay * T)
                Wa += vel
            else:
                if weight_decay:
                    Wa[:D, :H].mul_(1 - s * weight_decay * T)
                Wa.addmm_(v0.T, hp, alpha=s / B).addmm_(v.T, hn, alpha=-s / Bn)
        W, b, c = Wa[:D, :H], Wa[:D, H], Wa[D, :H]  # (the ones×ones corner is not a parameter)
        history.append(_bipartite_record(epoch, eval_rows, W, b, c, T, visible, up, down, g))
    return Wa[:D, :H].clone(), Wa[:D, H].clone(), Wa[D, :H].clone(), history


def _bipartite_record(epoch, v, W, b, c, T, visible, up, down, g) -> dict:
    """Reconstruction error (mean squared, one up-down pass with means) and, for binary
    data with single copies, the stochastic pseudo-log-likelihood of Besag (1975) as
    scikit-learn's BernoulliRBM.score_samples computes it (one random unit flipped)."""
    ph = torch.sigmoid((c + up * (v @ W)) / T)
    rec = _v_mean(b + down * (ph @ W.T), visible, T)
    rec_err = float(((v - rec) ** 2).sum(1).mean())
    out = {"step": epoch, "recon_error": rec_err}
    if visible == "bernoulli" and up == 1 and down == 1:
        idx = torch.randint(v.shape[1], (v.shape[0],), generator=g)
        flipped = v.clone()
        rows = torch.arange(v.shape[0])
        flipped[rows, idx] = 1 - flipped[rows, idx]

        def logp(s):
            return s @ b / T + F.softplus((c + s @ W) / T).sum(1)

        pl = -v.shape[1] * F.softplus(logp(flipped) - logp(v))
        out["pseudo_loglik"] = float(pl.mean())
    return out


# ---------------------------------------------------------------------------------------
# generic CD / PCD (Boltzmann machines with laterals, DBMs) with Gibbs or mean-field positive phase
# ---------------------------------------------------------------------------------------
def sufficient_statistics(model: LayeredEnergy, states: list) -> dict[str, torch.Tensor]:
    """Σ over rows of −∂E/∂θ for every parameter θ (the energy is linear in θ):
    s_l for biases, s_iᵀs_j for couplings, s_lᵀs_l (zero diagonal) for laterals."""
    out = {}
    for l in model.undirected_layers:
        out[model.bias_names[l]] = states[l].sum(0)
        if l in model.lateral_names:
            m = states[l].T @ states[l]
            out[model.lateral_names[l]] = m - torch.diag(torch.diagonal(m))
    for (i, j), w in model.coupling_names.items():
        if i in model.undirected_layers:
            out[w] = states[i].T @ states[j]
    return out


def train_layered(model: LayeredEnergy, x: torch.Tensor, params: dict, *, positive: str, steps: int,
                  batch_size: int, lr: float, k: int, persistent: bool, momentum: float,
                  weight_decay: float, n_chains: int | None, g: torch.Generator, progress: bool,
                  mf_iters: int = 10, desc: str = "train") -> tuple[dict, list[dict], list]:
    """Stochastic maximum likelihood for any layered energy model:
    ∇ log p(v) = (E_data[stat] − E_model[stat]) / T.

    The positive phase is ``"meanfield"`` (fixed-point posterior means, Salakhutdinov &
    Hinton 2009) or ``"gibbs"`` (k clamped Gibbs sweeps from a mean-field start); the
    negative phase runs k sweeps of the model's coloured Gibbs schedule from the positive
    states (CD) or from persistent chains (PCD). Returns (params, history, chains)."""
    params = {kk: v.clone() for kk, v in params.items()}
    vel = {kk: torch.zeros_like(v) for kk, v in params.items()}
    hidden = [l for l in model.undirected_layers if l != 0]
    sched_all, sched_hidden = model.gibbs_schedule(), model.gibbs_schedule(hidden)
    N = x.shape[0]
    n_chains = n_chains or batch_size
    chains = model.random_states(n_chains, x.dtype, g)
    chains[0] = x[torch.randint(N, (n_chains,), generator=g)]
    lateral_or_coupling = set(model.coupling_names.values()) | set(model.lateral_names.values())
    history = []
    for epoch in progress_bar(range(steps), total=steps, desc=desc, enabled=progress):
        rec, nb = 0.0, 0
        perm = torch.randperm(N, generator=g)
        for start in range(0, N, batch_size):
            v0 = x[perm[start:start + batch_size]]
            clamped = [v0] + [None] * (model.n_layers - 1)
            mu, _ = model.mean_field(params, clamped, hidden, iters=mf_iters if positive == "meanfield" else 5)
            if positive == "meanfield":
                pos = mu
            else:
                pos = [v0] + [model._draw(l, mu[l], g) for l in range(1, model.n_layers)]
                for _ in range(k):
                    pos = model.gibbs_sweep(params, pos, g, schedule=sched_hidden)
            if persistent:
                neg = chains
            else:
                neg = [v0] + [model._draw(l, pos[l], g) if positive == "meanfield" else pos[l]
                              for l in range(1, model.n_layers)]
            for _ in range(k):
                neg = model.gibbs_sweep(params, neg, g, schedule=sched_all)
            if persistent:
                chains = neg
            sp, sn = sufficient_statistics(model, pos), sufficient_statistics(model, neg)
            B, Bn = v0.shape[0], neg[0].shape[0]
            for name in params:
                grad = sp[name] / B - sn[name] / Bn
                if weight_decay and name in lateral_or_coupling:
                    grad = grad - weight_decay * model.T * params[name]
                vel[name].mul_(momentum).add_(grad, alpha=lr / model.T)
                params[name] += vel[name]
            recon = model.conditional_mean(params, [None] + [mu[l] for l in range(1, model.n_layers)], 0)
            rec += float(((v0 - recon) ** 2).sum(1).mean())
            nb += 1
        history.append({"step": epoch, "recon_error": rec / max(nb, 1)})
    return params, history, chains


# ---------------------------------------------------------------------------------------
# greedy layer-wise pretraining (DBN: copy; DBM: Salakhutdinov & Hinton 2009's doubling / halving)
# ---------------------------------------------------------------------------------------
def pretraining_factors(n_links: int, kind: str) -> list[dict]:
    """For each stacked RBM (bottom first): ``up`` copies of its visible layer, ``down``
    copies of its hidden layer, and ``scale``, the factor its weights get when composed.

    DBN: plain RBMs, weights copied (scale 1). DBM (Salakhutdinov & Hinton
    2009): the bottom RBM has two copies of the visible layer (bottom-up weights
    effectively doubled), the top RBM two copies of the top layer, and the weights of the
    RBMs in between are halved when composed. A one-link DBM is a plain RBM."""
    out = []
    for l in range(1, n_links + 1):
        if kind == "dbn" or n_links == 1:
            out.append({"up": 1, "down": 1, "scale": 1.0})
        elif l == 1:
            out.append({"up": 2, "down": 1, "scale": 1.0})
        elif l == n_links:
            out.append({"up": 1, "down": 2, "scale": 1.0})
        else:
            out.append({"up": 1, "down": 1, "scale": 0.5})
    return out


def greedy_pretrain(model: LayeredEnergy, x: torch.Tensor, params: dict, kind: str, opts: dict,
                    steps: int, g: torch.Generator, progress: bool) -> tuple[dict, list[dict]]:
    """Train one RBM per link by CD-k, bottom-up, each on the previous RBM's hidden
    probabilities, and compose them (Hinton, Osindero & Teh 2006; Salakhutdinov & Hinton
    2009 pretrain with CD as well; ``persistent`` applies to the joint training only).

    Biases: the visible bias from the bottom RBM; a DBN's layer l < L takes the bias of
    the RBM above it (its visible side, which generates layer l top-down) and the top
    layer its own; a DBM's inner layers average the two RBMs' biases (each RBM accounts
    for half of the layer's input). Returns (params, stages)."""
    links = sorted(model.coupling_names)
    factors = pretraining_factors(len(links), kind)
    params = dict(params)
    stages = []
    inp = x
    for (i, j), fac in zip(links, factors):
        w = model.coupling_names[(i, j)]
        visible = model.layers[i].units
        W, b, c, hist = train_bipartite(inp, params[w], params[model.bias_names[i]], params[model.bias_names[j]],
                                        T=model.T, visible=visible, up=fac["up"], down=fac["down"], steps=steps,
                                        batch_size=opts["batch_size"], lr=opts["lr"], k=opts["k"],
                                        persistent=False, momentum=opts["momentum"],
                                        weight_decay=opts["weight_decay"], n_chains=opts["n_chains"], g=g,
                                        progress=progress, desc=f"pretrain {w}")
        stages.append({"link": (i, j), "weight": w, **fac, "W": W, "b": b, "c": c, "history": hist})
        inp = stage_up(inp, stages[-1], model.T)
    for st in stages:
        params[st["weight"]] = st["scale"] * st["W"]
    L = len(stages)
    params[model.bias_names[0]] = stages[0]["b"]
    for l in range(1, L + 1):
        below, above = stages[l - 1], stages[l] if l < L else None
        if above is None:
            params[model.bias_names[l]] = below["c"]
        elif kind == "dbn":
            params[model.bias_names[l]] = above["b"]
        else:
            params[model.bias_names[l]] = 0.5 * (below["c"] + above["b"])
    return params, stages


# ---------------------------------------------------------------------------------------
# annealed importance sampling
# ---------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------
# evaluation: log p(v) exact or estimated, log Z
# ---------------------------------------------------------------------------------------
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

    The cheaper set of hidden layers (:func:`visible_bits`; a DBN: its layers below the top)
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


# ---------------------------------------------------------------------------------------
# the shared Method behaviour
# ---------------------------------------------------------------------------------------
class EnergyMethod(Method):
    """Evaluation, partition functions and sampling shared by the energy-model methods."""

    log_prob_kind = "estimate"
    queries = ("marginals",)

    def make_fit(self, model: LayeredEnergy, params: dict, history: list, state: dict, options: dict,
                 data: torch.Tensor) -> Fit:
        params = {k: v.detach().double() for k, v in params.items()}
        m = data.double().mean(0).clamp(1e-3, 1 - 1e-3)
        if model.layers[0].units == "bernoulli":
            state["base_visible"] = torch.log(m / (1 - m)) * model.T
        kind = "exact" if exact_feasible(model) else "estimate"
        return Fit(model, params, history, engine=self.engine, method=self.name, state=state,
                   options=options, log_prob_kind=kind)

    def log_partition(self, fit: Fit, method: str = "auto", *, chains: int = 100, temperatures: Any = 1000,
                      seed: int | None = 0) -> PartitionEstimate:
        """log Z of the fitted model (a DBN: of its top RBM); AIS results are cached on the fit."""
        key = (method, chains, temperatures if isinstance(temperatures, int) else tuple(map(float, temperatures)),
               seed)
        cache = fit.state.setdefault("log_partition_cache", {})
        if key not in cache:
            cache[key] = log_partition(fit.model, fit.params, method, chains=chains, temperatures=temperatures,
                                       base_visible=fit.state.get("base_visible"), seed=seed)
        return cache[key]

    def log_prob(self, fit: Fit, x: Any, *, num_samples: int = 100, chains: int = 100, temperatures: Any = 1000,
                 **options: Any) -> torch.Tensor:
        """log p(v) per row: exact enumeration where feasible (``fit.log_prob_kind == "exact"``),
        otherwise importance sampling for log p*(v) (``num_samples`` draws per row) and AIS
        (``chains`` chains over ``temperatures``) for log Z."""
        check_options("log_prob", options, ("num_samples", "chains", "temperatures"))
        model = fit.model
        x = model.check_data(x).double()
        g = generator(0)
        lp, _ = log_unnormalized_visible(model, fit.params, x, num_samples=num_samples, g=g)
        z = self.log_partition(fit, "auto", chains=chains, temperatures=temperatures)
        return lp - z.value

    def sample(self, fit: Fit, n: int, seed: int | None = None, warmup: int = 1000) -> torch.Tensor:
        """``n`` independent chains, each run ``warmup`` Gibbs sweeps (the last state is the draw)."""
        return fit.model.sample(fit.params, n, seed=seed, warmup=warmup)

    def infer(self, model: LayeredEnergy, params: dict | None, data: Any, query: str, mf_iters: int = 50,
              mf_tol: float = 1e-6, **options: Any):
        """``query="marginals"``: mean-field posterior means of every hidden layer given the
        visible rows, a list ``[v, μ_1, …, μ_L]`` (a DBN: its bottom-up recognition pass):
        at most ``mf_iters`` fixed-point sweeps, stopping when no mean moves by more than
        ``mf_tol`` (the names of the training option; not the fit's ``tol``)."""
        check_options("infer", options, ("mf_iters", "mf_tol"))
        if params is None:
            raise ValueError("infer on an energy model needs fitted parameters: pass a Fit")
        x = model.check_data(data).double()
        if model.n_directed:
            out = [x]
            for l in range(model.n_layers - 1):
                out.append(model.recognition_mean(params, out[-1], l))
            return out
        hidden = [l for l in model.undirected_layers if l != 0]
        mu, _ = model.mean_field(params, [x] + [None] * (model.n_layers - 1), hidden, iters=mf_iters, tol=mf_tol)
        return mu
