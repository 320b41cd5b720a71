"""Contrastive divergence for layered energy models (:class:`probgen.energy.LayeredEnergy`):
CD-k (Hinton 2002) and persistent CD-k (Tieleman 2008) with momentum and weight decay —
the fused, augmented-matrix loop for a bipartite pair (RBM) and the generic loop for models
with laterals or several hidden layers (mean-field or Gibbs positive phase, Salakhutdinov &
Hinton 2009) — and the training options shared by the engines that train them.

These are gradient-training loops whose negative phase is k block-Gibbs sweeps; the Gibbs
*sampler* of a fitted model is :class:`probgen.energy.BlockGibbs` on the MCMC driver.

References:
  Hinton (2002) "Training products of experts by minimizing contrastive divergence".
  Tieleman (2008) "Training RBMs using approximations to the likelihood gradient" (PCD).
  Hinton (2010) "A practical guide to training restricted Boltzmann machines".
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from probgen.energy import LayeredEnergy
from probgen.progress import progress as progress_bar
from probgen.registry import check_options


TRAIN_OPTIONS = ("batch_size", "lr", "k", "persistent", "momentum", "weight_decay", "n_chains",
                 "pretrain", "pretrain_steps", "dtype")


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
