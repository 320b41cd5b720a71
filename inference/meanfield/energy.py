"""Mean-field learning of deep Boltzmann machines (Salakhutdinov & Hinton 2009): the
positive phase is the fixed point of μ_l = σ((b_l + W_lᵀμ_{l−1} + W_{l+1}μ_{l+1})/T)
with the data clamped, the negative phase persistent Gibbs chains (PCD) over the two
colour blocks; ``pretrain=True`` first stacks RBMs with Salakhutdinov & Hinton's (2009) correction (bottom
RBM with two copies of the visible layer, top RBM with two copies of the top layer,
middle RBMs' weights halved).

Accepts any undirected `probgen.energy.LayeredEnergy` with hidden units (DBM,
RBM, BM; lateral couplings are updated unit by unit). ``pg.infer(fit, x,
engine="meanfield")`` returns the mean-field posterior means.
"""
from __future__ import annotations

from typing import Any

from probgen import protocols
from probgen.energy import LayeredEnergy
from probgen.fit import Fit
from probgen.loops.gradient import TRAINER_OPTIONS, GradientMethod
from probgen.random import generator
from probgen.registry import register

from .._energy import EnergyMethod
from .._energy_cd import TRAIN_OPTIONS, ContrastiveSGD, _dtype, split_trainer_options, start_params, train_layered, training_options
from .._energy_pretrain import greedy_pretrain


@register
class EnergyMeanField(EnergyMethod, GradientMethod):
    #: CD's momentum update is the default optimiser (``optim=`` another one: its own rule)
    trainer_defaults = {"optim": ContrastiveSGD}
    engine = "meanfield"
    name = "energy"
    objective = "recon_error"
    steps_unit = "epochs (passes over the data)"
    needs = "an undirected layered energy model with hidden layers (BM, RBM, DBM)"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.LayeredEnergyModel) and model.n_directed == 0 and model.n_layers > 1

    def fit_options(self, model: LayeredEnergy) -> tuple[str, ...]:
        return TRAIN_OPTIONS + ("mf_iters",) + TRAINER_OPTIONS

    def fit(self, model: LayeredEnergy, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, **options: Any) -> Fit:
        """Options as the mcmc engine (``persistent`` defaults to True here) plus
        ``mf_iters`` (fixed-point sweeps per positive phase, 10) and the gradient trainer's
        options. ``steps`` = epochs (20)."""
        trainer, options = split_trainer_options(self, model, options)
        opts = training_options("meanfield", options, extra={"mf_iters": 10}, persistent=True)
        if not isinstance(opts["mf_iters"], int) or opts["mf_iters"] < 1:
            raise ValueError(f"mf_iters must be a positive integer, got {opts['mf_iters']!r}")
        steps = 20 if steps is None else steps
        dtype = _dtype(opts["dtype"])
        x = data.to(dtype)
        g = generator(seed)
        params = start_params(model, x, init, seed, dtype)
        history: list[dict] = []
        state: dict = {}
        if opts["pretrain"]:
            pre_steps = opts["pretrain_steps"] if opts["pretrain_steps"] is not None else steps
            params, stages = greedy_pretrain(model, x, params, "dbm", opts, pre_steps, g, progress, seed, trainer)
            state["pretraining"] = [{k: v for k, v in s.items() if k != "history"} for s in stages]
            for s in stages:
                history += [dict(r, stage=s["weight"]) for r in s["history"]]
        params, hist, chains, run = train_layered(
            model, x, params, positive="meanfield", steps=steps, batch_size=opts["batch_size"], lr=opts["lr"],
            k=opts["k"], persistent=opts["persistent"], momentum=opts["momentum"],
            weight_decay=opts["weight_decay"], n_chains=opts["n_chains"], g=g, progress=progress,
            mf_iters=opts["mf_iters"], seed=seed, trainer=trainer, desc=type(model).__name__)
        history += hist
        state.update(run.fit_state())
        opts.update(run.options())
        state["chains"] = [c.double() for c in chains]
        return self.make_fit(model, params, history, state, dict(opts, steps=steps), data)
