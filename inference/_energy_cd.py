"""Contrastive divergence for layered energy models (`probgen.energy.LayeredEnergy`):
CD-k (Hinton 2002) and persistent CD-k (Tieleman 2008) with momentum and weight decay —
the fused, augmented-matrix loop for a bipartite pair (RBM) and the generic loop for models
with laterals or several hidden layers (mean-field or Gibbs positive phase, Salakhutdinov &
Hinton 2009) — and the training options shared by the engines that train them.

These are gradient trainings on `probgen.loops.gradient.Trainer` (one step = one
epoch) whose update is a method-computed gradient — the positive minus the negative
statistics, the negative phase k block-Gibbs sweeps — applied by `ContrastiveSGD`;
the Gibbs *sampler* of a fitted model is `probgen.energy.BlockGibbs` on the MCMC driver.

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
from probgen.loops.gradient import Trainer, Update
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


def split_trainer_options(method: Any, model: LayeredEnergy, options: dict) -> tuple[dict, dict]:
    """(the gradient trainer's options with CD's defaults, the rest) of a fit's ``options``."""
    from probgen.loops.gradient import TRAINER_OPTIONS
    given = {k: v for k, v in options.items() if k in TRAINER_OPTIONS}
    trainer = method.trainer_options(model, given)
    return trainer, {k: v for k, v in options.items() if k not in TRAINER_OPTIONS}


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
    ``(copies, *mean.shape)`` (or ``mean.shape`` for one copy)."""
    one = u.dim() == mean.dim()
    if units == "gaussian":
        torch.add(copies * mean, u if one else u.sum(0), alpha=math.sqrt(T), out=out)
    elif copies == 1:
        torch.lt(u if one else u[0], mean, out=out)  # a Bernoulli(mean) draw, written as 0./1.
    else:
        out.copy_((u < mean).sum(0))


def _visible_half(hs: torch.Tensor, svD: torch.Tensor, WaDT: torch.Tensor, T: float, visible: str, up: int,
                  uv: torch.Tensor, mv_out: torch.Tensor | None = None) -> None:
    """The visible half of a block-Gibbs step on augmented buffers: Σ v-copies ~ P(v | b + W Σh)
    written into ``svD`` (B, D) from ``hs`` (B, H+1, a trailing column of ones) and
    ``WaDT = Wa[:D].T`` (H+1, D); ``mv_out`` (B, D) receives the means when given."""
    mv = torch.mm(hs, WaDT, out=mv_out)                 # b + W Σh
    if visible == "bernoulli":
        mv = torch.sigmoid_(mv if T == 1 else mv.div_(T))
    _draw_sum_into(svD, mv, up, visible, T, uv)


def _hidden_means(sv: torch.Tensor, WaH: torch.Tensor, T: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """P(h = 1 | c + Wᵀ Σv) (B, H) from ``sv`` (B, D+1, with its ones) and ``WaH = Wa[:, :H]``."""
    ph = torch.mm(sv, WaH, out=out)
    return torch.sigmoid_(ph if T == 1 else ph.div_(T))


def _augment(t: torch.Tensor) -> torch.Tensor:
    return torch.cat([t, torch.ones(t.shape[0], 1, dtype=t.dtype)], 1)


def tied_gibbs_step(h: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, T: float, visible: str,
                    up: int, down: int, g, uv: torch.Tensor | None = None, uh: torch.Tensor | None = None):
    """One block-Gibbs step of an RBM with ``up`` tied copies of its visible layer and
    ``down`` tied copies of its hidden layer, on the copy sums: given h = Σ h-copies,
    every visible copy ~ P(v | b + W h), then every hidden copy ~ P(h | c + Wᵀ Σ v-copies).
    (The training loop runs the same two halves on its stacked buffers.) Returns
    (Σ v-copies, hidden conditional mean, Σ h-copies); shapes (B, D), (B, H), (B, H)."""
    D, H = W.shape
    B = h.shape[0]
    Wa = torch.zeros(D + 1, H + 1, dtype=W.dtype)
    Wa[:D, :H], Wa[:D, H], Wa[D, :H] = W, b, c
    draw_v = torch.randn if visible == "gaussian" else torch.rand
    uv = draw_v((up, B, D), generator=g, dtype=W.dtype) if uv is None else uv
    uh = torch.rand((down, B, H), generator=g, dtype=W.dtype) if uh is None else uh
    hs, sv = _augment(h), _augment(torch.zeros(B, D, dtype=W.dtype))  # with the ones column of the biases
    _visible_half(hs, sv[:, :D], Wa[:D].T, T, visible, up, uv)
    ph = _hidden_means(sv, Wa[:, :H], T)
    _draw_sum_into(hs[:, :H], ph, down, "bernoulli", T, uh)
    return sv[:, :D], ph, hs[:, :H]


class ContrastiveSGD(torch.optim.Optimizer):
    """The update of contrastive divergence as Hinton (2010, §9–10) writes it: gradient ascent
    on the log-likelihood with classical momentum m and L2 weight decay λ on the couplings,

        v ← m·v + (lr/T)·(Δ − λT·θ),   θ ← θ + v,

    with Δ = E_data[stat] − E_model[stat] (per example), i.e. −T × the gradient ``p.grad`` of
    the negative mean log-likelihood that the CD step leaves. ``decayed``: the indices of the
    parameters λ applies to. ``fused``: an RBM's augmented matrix (`_Fused`): when the CD
    step leaves no ``p.grad`` (no ``clip_grad``), it hands Δ over as its factors and the
    update is one ``addmm_`` on the matrix (two where the data and chain halves differ in size)
    — the fast path, with the numbers CD always gave (to float round-off)."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 decayed: tuple = (), T: float = 1.0, fused: "_Fused | None" = None):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      decayed=list(decayed), T=T))
        self.fused = fused
        # called straight, not through the profiling / hook wrapper torch puts around a
        # class's step() and zero_grad(): that wrapper costs about as much as a small RBM's
        # whole minibatch update (the parameters never require grad: no no_grad needed)
        self.step = self._step
        self.zero_grad = self._zero_grad

    def _zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if p.grad is not None:
                p.grad = None

    def _step(self, closure=None):
        group = self.param_groups[0]
        lr, m, wd, T = group["lr"], group["momentum"], group["weight_decay"], group["T"]
        params = group["params"]
        if params[0].grad is None:  # the factored Δ of the fused matrix
            self.fused.apply(self.state[params[0]], lr / T, m, wd, T)
            return None
        for i, p in enumerate(params):
            delta = p.grad.neg() if T == 1 else p.grad.mul(-T)
            if wd and i in group["decayed"]:
                delta = delta - wd * T * p
            vel = self.state[p].get("velocity")
            if vel is None:
                vel = self.state[p]["velocity"] = torch.zeros_like(p)
            vel.mul_(m).add_(delta, alpha=lr / T)
            p += vel
        return None


class _Fused:
    """An RBM's parameters as one augmented matrix Wa = [[W, b], [cᵀ, 0]] (D+1, H+1) and the
    last CD step's Δ as factors: ``pending`` = [(Xᵀ, Y, w), …] with Δ = Σ w·XᵀY (`apply` adds it in)."""

    def __init__(self, Wa: torch.Tensor):
        self.Wa, self.D, self.H = Wa, Wa.shape[0] - 1, Wa.shape[1] - 1
        self.pending: list | None = None

    def apply(self, state: dict, s: float, momentum: float, weight_decay: float, T: float) -> None:
        Wa, D, H = self.Wa, self.D, self.H
        if momentum:
            vel = state.get("velocity")
            if vel is None:
                vel = state["velocity"] = torch.zeros_like(Wa)
            vel.mul_(momentum)
            for XT, Y, w in self.pending:
                vel.addmm_(XT, Y, alpha=s * w)
            if weight_decay:
                vel[:D, :H].add_(Wa[:D, :H], alpha=-s * weight_decay * T)
            Wa += vel
        else:
            if weight_decay:
                Wa[:D, :H].mul_(1 - s * weight_decay * T)
            for XT, Y, w in self.pending:
                Wa.addmm_(XT, Y, alpha=s * w)

    def gradient(self, T: float) -> torch.Tensor:
        """The pending Δ materialised, as −Δ/T (the gradient of the negative mean log-likelihood)."""
        delta = sum(torch.mm(XT, Y).mul_(w) for XT, Y, w in self.pending)
        return delta.neg_() if T == 1 else delta.div_(-T)


def _optimiser(trainer: dict, momentum: float, weight_decay: float, T: float, decayed: tuple,
               fused: _Fused | None = None) -> tuple[Any, dict, bool]:
    """(optimiser, its keywords, whether the CD step adds the weight decay to the gradient): the
    default `ContrastiveSGD` carries ``momentum`` and ``weight_decay``; another
    ``optim=`` takes the L2 term in the gradient and has its own momentum, if any."""
    optim = trainer["optim"]
    if optim is ContrastiveSGD:
        return optim, dict(momentum=momentum, weight_decay=weight_decay, decayed=decayed, T=T, fused=fused), False
    if momentum:
        raise ValueError(f"momentum= is that of the default CD update; with optim={optim!r} leave it 0 "
                         "(the optimiser's own momentum, if any, applies)")
    return optim, {}, bool(weight_decay)


def _run_trainer(update: Update, data: torch.Tensor, trainer: dict, **kw: Any) -> Trainer:
    opts = {k: v for k, v in trainer.items() if k != "optim"}
    return Trainer([update], data, optim=update.optim, unit="epoch", maximise=False,
                   objective="recon_error", **opts, **kw)


#: the trainer's options of a CD run with the energy methods' defaults (momentum SGD, no schedule)
CD_TRAINER = {"optim": ContrastiveSGD, "lr_schedule": None, "lr_decay": None, "clip_grad": None, "ema": None,
              "validation": None, "patience": None, "callback": None}


def train_bipartite(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, *,
                    T: float = 1.0, visible: str = "bernoulli", up: int = 1, down: int = 1, steps: int,
                    batch_size: int, lr: float, k: int, persistent: bool, momentum: float,
                    weight_decay: float, n_chains: int | None, g: torch.Generator, progress: bool,
                    seed: int | None = None, trainer: dict | None = None,
                    desc: str = "rbm") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[dict], Trainer]:
    """CD-k (Hinton 2002) or PCD-k (Tieleman 2008) for an RBM E = −bᵀv − cᵀh − vᵀWh on the
    gradient trainer (`probgen.loops.gradient.Trainer`, one step = one epoch of
    minibatches; ``trainer``: its options, `CD_TRAINER` by default): minibatch gradient
    ascent on (E_data − E_model)[stat]/T, by default with momentum and L2 weight decay on W
    (`ContrastiveSGD`). The negative statistics use the sampled visible states and the
    hidden conditional means given them (Rao-Blackwellised, as scikit-learn's BernoulliRBM).
    The persistent chains of PCD and the generator ``g`` are the trainer's saved state.

    ``up`` / ``down`` copies implement the tied-copies RBMs of DBM pretraining
    (Salakhutdinov & Hinton 2009, §3.1; Goodfellow, Bengio & Courville 2016, §20.4.5): ``up`` copies of the
    visible layer (hidden input c + Wᵀ Σ_copies v, i.e. doubled bottom-up weights for the
    bottom RBM) and ``down`` copies of the hidden layer (visible input b + W Σ_copies h,
    doubled top-down weights for the top RBM). Copies are sampled independently; their
    sums are Binomial(copies, p).

    Implementation: the parameters live in one augmented matrix Wa = [[W, b], [cᵀ, 0]] (W, b
    and c are views of it) and the states carry a column of ones, so each field is one matrix
    product; the data's and the chains' states are stacked in one buffer S and their hidden
    statistics in Y (the chains' negated), so the default update (W, b and c) is one ``addmm_``,
    Wa += lr/(T·B)·SᵀY = lr/T·(ṽᵀh̃_data/B − ṽᵀh̃_model/B) where both halves have B rows, and
    PCD's positive phase shares the last Gibbs step's hidden product. All of an epoch's random
    numbers are drawn at once.

    Shapes: x (N, D), W (D, H), b (D,), c (H,). Returns updated (W, b, c), the per-epoch
    history (reconstruction error, pseudo-log-likelihood for binary data) and the trainer."""
    trainer = CD_TRAINER if trainer is None else trainer
    N, D = x.shape
    H = W.shape[1]
    dtype = x.dtype
    Wa = torch.zeros(D + 1, H + 1, dtype=dtype)
    Wa[:D, :H], Wa[:D, H], Wa[D, :H] = W, b, c
    fused = _Fused(Wa)
    named = {"W": Wa[:D, :H], "b": Wa[:D, H], "c": Wa[D, :H]}  # views: the trainer steps Wa through them
    optim, optim_args, decay_in_grad = _optimiser(trainer, momentum, weight_decay, T, (0,), fused)
    materialise = optim is not ContrastiveSGD or trainer["clip_grad"] is not None
    xa = _augment(up * x) if up != 1 else _augment(x)       # [Σ v-copies, 1] for the data
    n_chains = n_chains or batch_size
    rows = n_chains if persistent else batch_size
    Bf = batch_size
    # The states stacked: rows [0, Bf) a minibatch, [Bf, Bf + rows) the chains' Σ v-copies, each with a
    # column of ones; beside them their hidden statistics down·P(h | v), the chains' negated (their
    # ones column −1). Δ·Bf = SᵀY is then ONE product where both halves have Bf rows, and PCD's
    # last hidden half and the positive phase are one product too (a product of 2Bf rows costs
    # about what one of Bf did: 4.3 µs vs 4.1 µs at 20 rows, 64 × 64).
    S = _augment(torch.zeros(Bf + rows, D, dtype=dtype))
    Y = _augment(torch.zeros(Bf + rows, H, dtype=dtype))
    Y[Bf:, H] = -1.0
    hs = _augment(torch.zeros(rows, H, dtype=dtype))  # the chains' Σ h-copies (sampled), + ones
    mv = torch.zeros(rows, D, dtype=dtype)            # the visible means
    draw_v = torch.randn if visible == "gaussian" else torch.rand
    WaH, WaDT = Wa[:, :H], Wa[:D].T  # views: stay valid while Wa is updated in place
    epoch = {"batch": 0, "uv": None, "uh": None}
    views: dict[int, tuple] = {}  # per minibatch size: slicing costs ~1 µs a view, as much as a small product

    def views_of(B: int) -> tuple:
        n = rows if persistent else B  # chain rows this step (CD's last minibatch is smaller)
        pos, neg, h = S[:B], S[Bf:Bf + n], hs[:n]
        hp, hn = Y[:B, :H], Y[Bf:Bf + n, :H]
        if B == Bf and n == Bf:
            terms = [(S.T, Y, 1.0 / Bf)]
        else:
            terms = [(pos.T, Y[:B], 1.0 / B), (neg.T, Y[Bf:Bf + n], 1.0 / n)]
        merged = Y[:, :H] if persistent and B == Bf else None  # the positive phase joins the last hidden half
        return n, pos, neg, neg[:, :D], h, h[:, :H], hp, hn, mv[:n], merged, terms

    kh = k + (0 if persistent else 1)  # hidden draws a step: CD's first from the data, then one a Gibbs step

    def copies(m: int) -> tuple:
        return () if m == 1 else (m,)

    def rows_of(u: torch.Tensor, n: int) -> torch.Tensor:  # the first n chains' draws (CD's last minibatch)
        return u if n == rows else u[..., :n, :]

    def cd_step(v0: torch.Tensor):
        bi = epoch["batch"]
        if bi == 0:  # all of the epoch's random numbers at once (one call instead of one per block), as
            # (batch · step, [copies,] rows, units): one index a draw (each index makes a view, ~0.8 µs)
            n_batches = run.batches.batches_per_epoch()
            epoch["uv"] = draw_v((n_batches * k, *copies(up), rows, D), generator=g, dtype=dtype)
            epoch["uh"] = torch.rand((n_batches * kh, *copies(down), rows, H), generator=g, dtype=dtype)
        epoch["batch"] = bi + 1
        B = v0.shape[0]
        vw = views.get(B)
        if vw is None:
            vw = views[B] = views_of(B)
        n, pos, neg, negD, h, hH, hp, hn, mvn, merged, terms = vw
        uv, uh = epoch["uv"], epoch["uh"]
        pos.copy_(v0)
        if merged is None:  # the positive phase: the hidden copies' means given the (copied) data
            _hidden_means(pos, WaH, T, out=hp)
        if not persistent:  # CD starts the chains at the data's hidden draws
            _draw_sum_into(hH, hp, down, "bernoulli", T, rows_of(uh[bi * kh + k], n))
        for step in range(k):  # k block-Gibbs steps of the chains
            _visible_half(h, negD, WaDT, T, visible, up, rows_of(uv[bi * k + step], n), mvn)
            if merged is not None and step == k - 1:
                _hidden_means(S, WaH, T, out=merged)
            else:
                _hidden_means(neg, WaH, T, out=hn)
            _draw_sum_into(hH, hn, down, "bernoulli", T, rows_of(uh[bi * kh + step], n))
        if down != 1:
            hp.mul_(down)
            hn.mul_(-down)
        else:
            hn.neg_()
        fused.pending = terms
        if materialise:  # the gradient in p.grad, for clip_grad and other optimisers
            grad = fused.gradient(T)
            grad[D, H] = 0.0  # the ones×ones corner is not a parameter
            for name, view in named.items():
                view.grad = _view_like(grad, name, D, H).clone()
            if decay_in_grad:
                named["W"].grad.add_(named["W"], alpha=weight_decay)
        return None, {}

    def measure() -> dict:
        epoch["batch"] = 0
        rec = _bipartite_record(0, eval_rows, named["W"], named["b"], named["c"], T, visible, up, down, g)
        del rec["step"]
        return rec

    def validate(val: torch.Tensor) -> float:
        v = val[:, :D] / up if up != 1 else val[:, :D]
        return _recon_error(v, named["W"], named["b"], named["c"], T, visible, up, down)

    update = Update(cd_step, named, optim=optim, optim_args=optim_args, backward=False)
    run = _run_trainer(update, xa, trainer, steps=steps, seed=seed, batch_size=batch_size, lr=lr,
                       validate=validate, progress=progress, desc=desc, shuffle=g, generators={"g": g},
                       tensors={"chains": hs} if persistent else {}, measure=measure)
    train = run.train
    Nt = train.shape[0]
    if persistent:
        v_init = train[torch.randint(Nt, (n_chains,), generator=g)]
        p0 = torch.sigmoid(v_init @ Wa[:, :H] / T)
        _draw_sum_into(hs[:, :H], p0, down, "bernoulli", T,
                       torch.rand((down, n_chains, H), generator=g, dtype=dtype))
    eval_rows = train[torch.randperm(Nt, generator=g)[:500], :D]
    if up != 1:
        eval_rows = eval_rows / up
    run.run()
    return Wa[:D, :H].clone(), Wa[:D, H].clone(), Wa[D, :H].clone(), run.history, run


def _view_like(t: torch.Tensor, name: str, D: int, H: int) -> torch.Tensor:
    return {"W": t[:D, :H], "b": t[:D, H], "c": t[D, :H]}[name]


def _recon_error(v, W, b, c, T, visible, up, down, field: torch.Tensor | None = None) -> float:
    """Mean squared reconstruction error of one up-down pass with means (per row);
    ``field``: the hidden field c + up·vW (n, H) where the caller has it."""
    ph = torch.sigmoid((torch.addmm(c, v, W, alpha=up) if field is None else field) / T)
    rec = _v_mean(b + down * (ph @ W.T), visible, T)
    return float(((v - rec) ** 2).sum(1).mean())


def _bipartite_record(epoch, v, W, b, c, T, visible, up, down, g) -> dict:
    """Reconstruction error (mean squared, one up-down pass with means) and, for binary
    data with single copies, the stochastic pseudo-log-likelihood of Besag (1975) as
    scikit-learn's BernoulliRBM.score_samples computes it (one random unit flipped)."""
    field = torch.addmm(c, v, W, alpha=up)  # c + up·vW, shared by both scores
    out = {"step": epoch, "recon_error": _recon_error(v, W, b, c, T, visible, up, down, field)}
    if visible == "bernoulli" and up == 1 and down == 1:
        idx = torch.randint(v.shape[1], (v.shape[0],), generator=g)
        sign = 1 - 2 * v.gather(1, idx[:, None])  # (n, 1): +1 where the flip turns the unit on
        # log p̃(flipped) − log p̃(v) with log p̃(s) = sᵀb/T + Σ softplus((c + sᵀW)/T): flipping unit i
        # moves sᵀb by sign·b_i and the field by sign·W_i (no second product of the data)
        flipped = torch.addcmul(field, sign, W[idx])
        gap = (sign[:, 0] * b[idx] / T + F.softplus(flipped / T).sum(1)) - F.softplus(field / T).sum(1)
        out["pseudo_loglik"] = float((-v.shape[1] * F.softplus(gap)).mean())
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
                  mf_iters: int = 10, seed: int | None = None, trainer: dict | None = None,
                  desc: str = "train") -> tuple[dict, list[dict], list, Trainer]:
    """Stochastic maximum likelihood for any layered energy model on the gradient trainer
    (one step = one epoch; ``trainer``: its options, `CD_TRAINER` by default):
    ∇ log p(v) = (E_data[stat] − E_model[stat]) / T, by default with momentum and L2 weight
    decay on couplings and laterals (`ContrastiveSGD`).

    The positive phase is ``"meanfield"`` (fixed-point posterior means, Salakhutdinov &
    Hinton 2009) or ``"gibbs"`` (k clamped Gibbs sweeps from a mean-field start); the
    negative phase runs k sweeps of the model's coloured Gibbs schedule from the positive
    states (CD) or from persistent chains (PCD; the chains and ``g`` are the trainer's saved
    state). The history's ``recon_error`` is the mean over the epoch's minibatches of the
    reconstruction error after each update. Returns (params, history, chains, trainer)."""
    trainer = CD_TRAINER if trainer is None else trainer
    params = {kk: v.clone() for kk, v in params.items()}
    names = list(params)
    lateral_or_coupling = set(model.coupling_names.values()) | set(model.lateral_names.values())
    decayed = tuple(i for i, name in enumerate(names) if name in lateral_or_coupling)
    optim, optim_args, decay_in_grad = _optimiser(trainer, momentum, weight_decay, model.T, decayed)
    hidden = [l for l in model.undirected_layers if l != 0]
    sched_all, sched_hidden = model.gibbs_schedule(), model.gibbs_schedule(hidden)
    N = x.shape[0]
    n_chains = n_chains or batch_size
    chains = model.random_states(n_chains, x.dtype, g)
    chains[0] = x[torch.randint(N, (n_chains,), generator=g)]
    T = model.T
    iters = mf_iters if positive == "meanfield" else 5
    # the reconstruction error of a minibatch is scored after its update (the next step, or measure)
    recon = {"sum": 0.0, "n": 0, "pending": None}

    def score_pending() -> None:
        if recon["pending"] is not None:
            v0, mu = recon["pending"]
            r = model.conditional_mean(params, [None] + [mu[l] for l in range(1, model.n_layers)], 0)
            recon["sum"] += float(((v0 - r) ** 2).sum(1).mean())
            recon["n"] += 1
            recon["pending"] = None

    def cd_step(v0: torch.Tensor):
        score_pending()
        clamped = [v0] + [None] * (model.n_layers - 1)
        mu, _ = model.mean_field(params, clamped, hidden, iters=iters)
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
        if persistent:  # into the trainer's chain tensors
            for c, n in zip(chains, neg):
                c.copy_(n)
        sp, sn = sufficient_statistics(model, pos), sufficient_statistics(model, neg)
        B, Bn = v0.shape[0], neg[0].shape[0]
        for name, p in params.items():
            grad = sp[name] / B - sn[name] / Bn          # Δ, per example
            grad = grad.neg_() if T == 1 else grad.div_(-T)  # the gradient of −mean log p(v)
            if decay_in_grad and name in lateral_or_coupling:
                grad.add_(p, alpha=weight_decay)
            p.grad = grad
        recon["pending"] = (v0, mu)
        return None, {}

    def measure() -> dict:
        score_pending()
        out = {"recon_error": recon["sum"] / max(recon["n"], 1)}
        recon["sum"], recon["n"] = 0.0, 0
        return out

    def validate(val: torch.Tensor) -> float:
        mu, _ = model.mean_field(params, [val] + [None] * (model.n_layers - 1), hidden, iters=iters)
        r = model.conditional_mean(params, [None] + [mu[l] for l in range(1, model.n_layers)], 0)
        return float(((val - r) ** 2).sum(1).mean())

    update = Update(cd_step, params, optim=optim, optim_args=optim_args, backward=False)
    run = _run_trainer(update, x, trainer, steps=steps, seed=seed, batch_size=batch_size, lr=lr,
                       validate=validate, progress=progress, desc=desc, shuffle=g, generators={"g": g},
                       tensors={f"chain_{l}": c for l, c in enumerate(chains)} if persistent else {},
                       measure=measure)
    run.run()
    return params, run.history, chains, run
