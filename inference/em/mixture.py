"""EM for declarations that offer an E-step and a closed-form M-step over independent
examples (the Gaussian mixture): the loop lives here once, the steps in the declaration.

Protocol (checked by ``accepts``, never by class):
  ``model.init_params(x, seed)``      -> params (a fresh start for each restart);
  ``model.e_step(params, x)``         -> ``(log p(x_n) (N,), posterior (N, K))``;
  ``model.m_step(x, posterior, reg_covar=...)`` -> params maximising the expected
                                         complete-data log-likelihood;
  optionally ``model.em_step(params, x, reg_covar=...)`` -> ``(log p(x_n), new params)``,
                                         both steps fused (used when present).
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

import math
from typing import Any

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.progress import progress as bar
from probgen.registry import Method, check_options, check_tol, converged, register

@register
class MixtureEM(Method):
    engine = "em"
    name = "mixture"
    needs = "e_step / m_step / init_params hooks (a mixture with point-estimated parameters)"
    log_prob_kind = "exact"
    objective = "log_likelihood"
    steps_unit = "EM iterations"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.EMHooks) and not getattr(model, "bayesian", False)

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = 1e-5, n_init: int = 1, reg_covar: float = 1e-6,
            init_method: str = "kmeans++", **options: Any) -> Fit:
        """Args: ``steps`` = max iterations (default 100); ``tol``: stop when the relative
        change of the mean log-likelihood is below it (:func:`probgen.registry.converged`;
        ``None`` or 0 runs all steps);
        ``n_init`` restarts from independent seeds, the best final log-likelihood wins;
        ``reg_covar`` is added to every variance; ``init`` (a dict, possibly partial)
        fixes the start of every restart; ``init_method`` "kmeans++" | "random"."""
        check_options("em", options, ("tol", "n_init", "reg_covar", "init_method"))
        if not isinstance(n_init, int) or n_init < 1:
            raise ValueError(f"n_init must be a positive integer, got {n_init!r}")
        check_tol(tol)
        if not reg_covar >= 0:
            raise ValueError(f"reg_covar must be >= 0, got {reg_covar!r}")
        steps = 100 if steps is None else steps
        x = data
        seeds = torch.randint(0, 2**31 - 1, (n_init,), generator=torch.Generator().manual_seed(seed)) \
            if seed is not None else torch.randint(0, 2**31 - 1, (n_init,))
        best = None
        for r in range(n_init):
            start = model.init_params(x, seed=int(seeds[r]), method=init_method, reg_covar=reg_covar) \
                if init is None or _partial(model, init) else {}
            params = model.check_params({**start, **(init or {})}) if hasattr(model, "check_params") \
                else {**start, **(init or {})}
            params, history, converged = self._run(model, x, params, steps, tol, reg_covar,
                                                   progress and r == 0, r)
            final = history[-1]["log_likelihood"] if history else -math.inf
            if best is None or final > best[0]:
                best = (final, params, history, converged, r)
        _, params, history, converged, r = best
        return Fit(model, params, history, engine=self.engine, method=self.name,
                   state={"converged": converged, "n_iter": len(history), "best_init": r},
                   options={"tol": tol, "n_init": n_init, "reg_covar": reg_covar, "init_method": init_method})

    @staticmethod
    def _run(model: Any, x: torch.Tensor, params: dict, steps: int, tol: float | None, reg_covar: float,
             show: bool, restart: int) -> tuple[dict, list, bool]:
        history, prev, done = [], None, False
        fused = getattr(model, "em_step", None)  # optional: both steps in one pass over the data
        for it in bar(range(steps), desc=f"em (init {restart})", enabled=show):
            if fused is not None:
                log_norm, params = fused(params, x, reg_covar=reg_covar)
            else:
                log_norm, resp = model.e_step(params, x)
                params = model.m_step(x, resp, reg_covar=reg_covar)
            ll = float(log_norm.mean())
            history.append({"step": it, "log_likelihood": ll})
            if converged(prev, ll, tol):
                done = True
                break
            prev = ll
        return params, history, done


def _partial(model: Any, init: dict) -> bool:
    shapes = model.param_shapes() if hasattr(model, "param_shapes") else {}
    return bool(shapes) and not set(shapes) <= set(init)
