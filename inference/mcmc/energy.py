"""Learning layered energy models by MCMC: block Gibbs with a coloured schedule, CD-k
(Hinton 2002) and PCD-k (Tieleman 2008), with momentum and weight decay; greedy
layer-wise stacking for DBNs (Hinton, Osindero & Teh 2006) and, with ``pretrain=True``,
for DBMs (Salakhutdinov & Hinton 2009, §3.1: doubled / halved weights).

Accepts any `probgen.energy.LayeredEnergy`. A bipartite pair (RBM) uses the
closed-form P(h|v) in the positive phase; models with lateral couplings or several hidden
layers use k clamped Gibbs sweeps. ``fit.log_prob`` is exact by enumeration for small
models and an AIS / importance-sampling estimate otherwise (``fit.log_prob_kind``).
"""
from __future__ import annotations

from typing import Any

import torch

from probgen import checkpoint, protocols
from probgen.energy import BlockGibbs, LayeredEnergy
from probgen.fit import Fit
from probgen.loops.gradient import TRAINER_OPTIONS, GradientMethod
from probgen.loops.mcmc import run
from probgen.random import generator
from probgen.registry import register

from .._energy import EnergyMethod
from .._energy_cd import (TRAIN_OPTIONS, ContrastiveSGD, _dtype, is_bipartite_pair, split_trainer_options, start_params,
                          train_bipartite, train_layered, training_options)
from .._energy_pretrain import greedy_pretrain


@register
class EnergyGibbs(EnergyMethod, GradientMethod):
    #: CD's momentum update is the default optimiser (``optim=`` another one: its own rule)
    trainer_defaults = {"optim": ContrastiveSGD}
    engine = "mcmc"
    name = "cd"
    objective = "recon_error"
    steps_unit = "epochs (passes over the data)"
    needs = "a layered energy model (BM, RBM, DBN, DBM: probgen.energy.LayeredEnergy)"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.LayeredEnergyModel)

    def fit_options(self, model: LayeredEnergy) -> tuple[str, ...]:
        return TRAIN_OPTIONS + TRAINER_OPTIONS

    def fit(self, model: LayeredEnergy, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, **options: Any) -> Fit:
        """Options: ``batch_size`` (20), ``lr`` (0.05), ``k`` (Gibbs steps per update, 1),
        ``persistent`` (PCD, False), ``momentum`` (0), ``weight_decay`` (0, L2 on couplings),
        ``n_chains`` (persistent chains, = batch_size), ``pretrain`` (greedy stacking first;
        always for a DBN), ``pretrain_steps`` (epochs per stacked RBM, = steps), ``dtype``
        ("float64" | "float32" for training), and the gradient trainer's options
        (`probgen.loops.gradient.TRAINER_OPTIONS`; the default ``optim`` is CD's momentum
        update, `ContrastiveSGD`). ``steps`` = epochs (default 20)."""
        trainer, options = split_trainer_options(self, model, options)
        opts = training_options("mcmc", options)
        steps = 20 if steps is None else steps
        if model.n_directed and checkpoint.active() is not None:
            raise ValueError("a DBN is trained by greedy pretraining stages only, which write no checkpoint: "
                             "fit it without checkpoint=")
        dtype = _dtype(opts["dtype"])
        x = data.to(dtype)
        g = generator(seed)
        params = start_params(model, x, init, seed, dtype)
        history: list[dict] = []
        state: dict = {}
        if model.n_directed or (opts["pretrain"] and len(model.coupling_names) > 1):
            kind = "dbn" if model.n_directed else "dbm"
            pre_steps = opts["pretrain_steps"] if opts["pretrain_steps"] is not None else steps
            params, stages = greedy_pretrain(model, x, params, kind, opts, pre_steps, g, progress, seed, trainer)
            state["pretraining"] = [{k: v for k, v in s.items() if k != "history"} for s in stages]
            for s in stages:
                history += [dict(r, stage=s["weight"]) for r in s["history"]]
        if not model.n_directed:
            if is_bipartite_pair(model):
                (i, j), w = next(iter(model.coupling_names.items()))
                W, b, c, hist, run = train_bipartite(
                    x, params[w], params[model.bias_names[i]], params[model.bias_names[j]], T=model.T,
                    visible=model.layers[i].units, steps=steps, batch_size=opts["batch_size"], lr=opts["lr"],
                    k=opts["k"], persistent=opts["persistent"], momentum=opts["momentum"],
                    weight_decay=opts["weight_decay"], n_chains=opts["n_chains"], g=g, progress=progress,
                    seed=seed, trainer=trainer, desc=type(model).__name__)
                params.update({w: W, model.bias_names[i]: b, model.bias_names[j]: c})
            else:
                params, hist, _, run = train_layered(
                    model, x, params, positive="gibbs", steps=steps, batch_size=opts["batch_size"], lr=opts["lr"],
                    k=opts["k"], persistent=opts["persistent"], momentum=opts["momentum"],
                    weight_decay=opts["weight_decay"], n_chains=opts["n_chains"], g=g, progress=progress,
                    seed=seed, trainer=trainer, desc=type(model).__name__)
            history += hist
            state.update(run.fit_state())
            opts.update(run.options())
        return self.make_fit(model, params, history, state, dict(opts, steps=steps), data)

    def infer(self, model: LayeredEnergy, params: dict | None, data: Any, query: str, num_samples: int = 500,
              warmup: int = 100, seed: int | None = 0) -> list:
        """``query="marginals"``: Gibbs estimates of P(h_j = 1 | v) for every hidden layer,
        ``[v, μ_1, …, μ_L]``. One chain per visible row, clamped to it, ``warmup`` sweeps,
        then the Rao-Blackwellised average of the conditional means E[h_l | rest] over
        ``num_samples`` sweeps (Geman & Geman 1984; Gelfand & Smith 1990). A DBN's directed
        layers have no Gibbs chain here: its bottom-up recognition pass (Hinton et al. 2006)."""
        if params is None:
            raise ValueError("infer on an energy model needs fitted parameters: pass a Fit")
        if model.n_directed:
            return super().infer(model, params, data, query)
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}")
        x = model.check_data(data).double()
        params = {k: v.double() for k, v in params.items()}
        hidden = [l for l in model.undirected_layers if l != 0]
        kernel = BlockGibbs(model, params, dtype=torch.float64, free=hidden, clamp=x, averaged=tuple(hidden))
        sums = run(kernel, steps=num_samples, warmup=warmup, num_chains=len(x), seed=seed, progress=False).sums
        totals = [sums[f"mean_{l}"] for l in hidden]
        out = [x] + [None] * (model.n_layers - 1)
        for t, l in zip(totals, hidden):
            out[l] = t / num_samples
        return out
