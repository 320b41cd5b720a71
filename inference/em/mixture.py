"""EM for declarations that offer an E-step and a closed-form M-step over independent
examples (the Gaussian mixture): the steps live in the declaration, the loop (restarts,
``tol``, history) in :mod:`probgen.loops.iterative`.

Protocol (checked by ``accepts``, never by class):
  ``model.init_params(x, seed)``      -> params (a fresh start for each restart);
  ``model.e_step(params, x)``         -> ``(log p(x_n) (N,), posterior (N, K))``;
  ``model.m_step(x, posterior, reg_covar=...)`` -> params maximising the expected
                                         complete-data log-likelihood;
  optionally ``model.em_step(params, x, reg_covar=...)`` -> ``(log p(x_n), new params)``,
                                         both steps fused (used when present);
  optionally ``model.em_statistics(params, x)`` -> dict of sums over the examples and
  ``model.em_update(params, summed, reg_covar=...)`` -> params: the same iteration split at
                                         its sums, so that it runs data-parallel
                                         (:mod:`probgen.distributed`: summed over ranks).
Declarations whose parameters are latent (``model.bayesian``) are left to meanfield /
svi / mcmc.

The history records, per iteration, the mean per-example log-likelihood at the
parameters the E-step saw (scikit-learn's ``lower_bound_`` sequence), so with the same
start and number of iterations (``tol=None`` or 0) it agrees with scikit-learn's
``GaussianMixture``. ``tol`` is probgen's one rule (relative change, not scikit-learn's
absolute one).
Reference: Dempster, Laird & Rubin (1977); Bishop (2006) §9.2.2.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.loops.iterative import LOOP, Update, run
from probgen.registry import Method, check_options, register

@register
class MixtureEM(Method):
    engine = "em"
    name = "mixture"
    needs = "e_step / m_step / init_params hooks (a mixture with point-estimated parameters)"
    log_prob_kind = "exact"
    objective = "log_likelihood"
    steps_unit = "EM iterations"
    devices = ("cpu", "cuda", "mps")  # torch only (CUDA / MPS written, not run here)
    loop = LOOP
    parallel = "data"  # declarations with em_statistics / em_update (the Gaussian mixture)

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.EMHooks) and not getattr(model, "bayesian", False)

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = 1e-5, n_init: int = 1, callback: Callable | None = None,
            reg_covar: float = 1e-6, init_method: str = "kmeans++", **options: Any) -> Fit:
        """Args: ``steps`` = max iterations (default 100); ``tol``: stop when the relative
        change of the mean log-likelihood is below it (:func:`probgen.registry.converged`;
        ``None`` or 0 runs all steps);
        ``n_init`` restarts from independent seeds, the best final log-likelihood wins;
        ``callback``: called with each history record, ``True`` stops
        (:func:`probgen.loops.iterative.run`);
        ``reg_covar`` is added to every variance; ``init`` (a dict, possibly partial)
        fixes the start of every restart; ``init_method`` "kmeans++" | "random"."""
        check_options("em", options, ("tol", "n_init", "callback", "reg_covar", "init_method"))
        if not reg_covar >= 0:
            raise ValueError(f"reg_covar must be >= 0, got {reg_covar!r}")
        steps = 100 if steps is None else steps
        steps_of = _ParallelSteps if hasattr(model, "em_statistics") and hasattr(model, "em_update") else _Steps
        result = run(steps_of(model, data, init, reg_covar, init_method), objective=self.objective, steps=steps,
                     tol=tol, seed=seed, n_init=n_init, progress=progress, callback=callback, desc="em")
        return Fit(model, result.state, result.history, engine=self.engine, method=self.name,
                   state=result.fit_state(),
                   options={"tol": tol, "n_init": n_init, "reg_covar": reg_covar, "init_method": init_method})


class _Steps:
    """EM of a mixture for :func:`probgen.loops.iterative.run`: the state is the params."""

    def __init__(self, model: Any, x: torch.Tensor, init: dict | None, reg_covar: float, init_method: str):
        self.model, self.x, self.init, self.reg_covar, self.init_method = model, x, init, reg_covar, init_method
        self.fused = getattr(model, "em_step", None)  # optional: both steps in one pass over the data

    def start(self, seed: int | None) -> dict:
        model, init = self.model, self.init
        start = model.init_params(self.x, seed=seed, method=self.init_method, reg_covar=self.reg_covar) \
            if init is None or _partial(model, init) else {}
        return model.check_params({**start, **(init or {})}) if hasattr(model, "check_params") \
            else {**start, **(init or {})}

    def step(self, params: dict) -> Update:
        if self.fused is not None:
            log_norm, params = self.fused(params, self.x, reg_covar=self.reg_covar)
        else:
            log_norm, resp = self.model.e_step(params, self.x)
            params = self.model.m_step(self.x, resp, reg_covar=self.reg_covar)
        return Update(params, float(log_norm.mean()))


class _ParallelSteps(_Steps):
    """:class:`_Steps` split for data-parallel EM (:class:`probgen.loops.iterative.DataParallel`):
    the E-step's sums on this rank's rows, then the M-step from the sums over all ranks."""

    def statistics(self, params: dict) -> dict:
        return self.model.em_statistics(params, self.x)

    def update(self, params: dict, stats: dict) -> Update:
        new = self.model.em_update(params, stats, reg_covar=self.reg_covar)
        return Update(new, float(stats["log_lik"] / stats["n"]))


def _partial(model: Any, init: dict) -> bool:
    shapes = model.param_shapes() if hasattr(model, "param_shapes") else {}
    return bool(shapes) and not set(shapes) <= set(init)
