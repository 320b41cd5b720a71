"""The method behaviour shared by the engines for layered energy models
(`probgen.energy.LayeredEnergy`: BM, RBM, DBN, DBM): making the fit, ``log_prob``,
``log_partition`` (cached), ``sample`` and mean-field ``marginals``. The algorithms live in
modules of one role each: ``_energy_cd`` (CD / PCD training), ``_energy_pretrain`` (greedy
stacking), ``_energy_ais`` (AIS and log Z), ``_energy_eval`` (log p*(v), exact marginals);
the Gibbs sampler is `probgen.energy.BlockGibbs`.
"""
from __future__ import annotations

from typing import Any

import torch

from probgen.energy import LayeredEnergy, PartitionEstimate
from probgen.fit import Fit
from probgen.random import generator
from probgen.registry import Method, check_options

from ._energy_ais import log_partition
from ._energy_eval import exact_feasible, log_unnormalized_visible


class EnergyMethod(Method):
    """Evaluation, partition functions and sampling shared by the energy-model methods."""

    log_prob_kind = "estimate"
    queries = ("marginals",)

    def make_fit(self, model: LayeredEnergy, params: dict, history: list, state: dict, options: dict,
                 data: torch.Tensor) -> Fit:
        params = {k: v.detach().double() for k, v in params.items()}
        from probgen.loops.gradient import moments
        m = moments(data.double(), std=False)[0].clamp(1e-3, 1 - 1e-3)  # of every rank's rows, data-parallel
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
