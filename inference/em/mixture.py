"""EM for declarations that offer an E-step and a closed-form M-step over independent
examples (the Gaussian mixture): the steps live in the declaration, the loop (restarts,
``tol``, history) in `probgen.loops.iterative`.

Protocol (checked by ``accepts``, never by class):
  ``model.init_params(x, seed)``      -> params (a fresh start for each restart);
  ``model.e_step(params, x)``         -> ``(log p(x_n) (N,), posterior (N, K))``;
  ``model.m_step(x, posterior, reg_covar=...)`` -> params maximising the expected
                                         complete-data log-likelihood;
  optionally ``model.em_step(params, x, reg_covar=...)`` -> ``(log p(x_n), new params)``,
                                         both steps fused (used when present);
  with ``labels=`` (partial labels, −1 = unknown) ``e_step`` / ``em_step`` also take
  ``labels`` (and ``model.check_labels(labels, x)`` checks them). Missing cells (NaN) are
  the declaration's business: its steps marginalise them (``missing_values``).
  optionally ``model.em_statistics(params, x)`` -> dict of sums over the examples and
  ``model.em_update(params, summed, reg_covar=...)`` -> params: the same iteration split at
                                         its sums, so that it runs data-parallel
                                         (`probgen.distributed`: summed over ranks).
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
from probgen.data import has_missing
from probgen.fit import Fit
from probgen.loops.iterative import LOOP, Update, run
from probgen.registry import Method, check_options, register

from . import _online as online_em

@register
class MixtureEM(Method):
    engine = "em"
    name = "mixture"
    needs = "e_step / m_step / init_params hooks (a mixture with point-estimated parameters)"
    log_prob_kind = "exact"
    objective = "log_likelihood"
    steps_unit = "EM iterations (`online=True`: passes over the data)"
    devices = ("cpu", "cuda", "mps")  # torch only (CUDA / MPS written, not run here)
    loop = LOOP
    missing_values = True  # NaN cells: the declaration's E-step marginalises them
    parallel = "data"  # declarations with em_statistics / em_update (the Gaussian mixture), complete and unlabelled data

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.EMHooks) and not getattr(model, "bayesian", False)

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = online_em.BatchTol(1e-5), n_init: int = 1,
            callback: Callable | None = None, reg_covar: float = 1e-6, init_method: str = "kmeans++",
            labels: Any = None, online: bool = False, batch_size: int | None = None, t0: float = 2.0,
            kappa: float = 0.6, **options: Any) -> Fit:
        """Args: ``steps`` = max iterations (default 100); ``tol``: stop when the relative
        change of the mean log-likelihood is below it (`probgen.registry.converged`;
        ``None`` or 0 runs all steps);
        ``n_init`` restarts from independent seeds, the best final log-likelihood wins;
        ``callback``: called with each history record, ``True`` stops
        (`probgen.loops.iterative.run`);
        ``reg_covar`` is added to every variance; ``init`` (a dict, possibly partial)
        fixes the start of every restart; ``init_method`` "kmeans++" | "random";
        ``labels`` ``(N,)``: known components (−1 = unknown), clamped in every E-step, the
        objective then being the log-likelihood of the data and the given labels.
        ``online=True``: stepwise EM (`inference.em._online`) over minibatches of
        ``batch_size`` rows, step sizes ρ_t = (t + ``t0``)^−``kappa``; ``data`` may then be an
        iterator of chunks (or a callable returning one), and ``steps`` counts passes."""
        check_options("em", options,
                      ("tol", "n_init", "callback", "reg_covar", "init_method", "labels") + online_em.OPTIONS)
        if not reg_covar >= 0:
            raise ValueError(f"reg_covar must be >= 0, got {reg_covar!r}")
        online_em.check_options(online, batch_size, t0, kappa, labels)
        tol = online_em.resolve_tol(tol, online)
        if online:
            hooks = self.online_hooks(model, init, reg_covar, init_method)
            return online_em.fit(self, model, data, hooks, steps=steps, seed=seed, tol=tol, n_init=n_init,
                                 callback=callback, progress=progress, batch_size=batch_size, t0=t0, kappa=kappa,
                                 options={"tol": tol, "n_init": n_init, "reg_covar": reg_covar,
                                          "init_method": init_method})
        steps = 100 if steps is None else steps
        if labels is not None:
            labels = model.check_labels(labels, data)
        # the split steps (data-parallel) sum complete, unlabelled rows; missing cells and labels
        # take the fused local steps (a data-parallel fit of them says so: no statistics)
        split = hasattr(model, "em_statistics") and hasattr(model, "em_update") and labels is None \
            and not has_missing(data)
        steps_of = _ParallelSteps if split else _Steps
        result = run(steps_of(model, data, init, reg_covar, init_method, labels), objective=self.objective, steps=steps,
                     tol=tol, seed=seed, n_init=n_init, progress=progress, callback=callback, desc="em")
        return Fit(model, result.state, result.history, engine=self.engine, method=self.name,
                   state=result.fit_state(),
                   options={"tol": tol, "n_init": n_init, "reg_covar": reg_covar, "init_method": init_method})

    def online_hooks(self, model: Any, init: dict | None, reg_covar: float = 1e-6,
                     init_method: str = "kmeans++", **_: Any) -> online_em.Hooks:
        """Online EM's steps: ``model.em_statistics`` / ``em_update`` about a centre fixed at the
        start's Σ_k π_k μ_k (running averages of moments about a moving centre would not add up);
        rows with NaN cells give their expected moments."""
        def start(x: torch.Tensor, seed: int | None) -> dict:
            return _Steps(model, x, init, reg_covar, init_method).start(seed)

        return online_em.Hooks(
            check=model.check_data, start=start,
            fixed=lambda p: {"center": (p["weights"].to(torch.float64) @ p["loc"].to(torch.float64))},
            statistics=lambda p, x, fixed: model.em_statistics(p, x, center=fixed["center"]),
            update=lambda p, stats, fixed: model.em_update(p, stats, reg_covar=reg_covar, center=fixed["center"]))

    def update(self, fit: Fit, data: Any, *, steps: int | None, seed: int | None, progress: bool,
               **options: Any) -> Fit:
        """`probgen.Fit.update` (`inference.em._online.update`)."""
        return online_em.update(self, fit, data, steps=steps, seed=seed, progress=progress, options=options,
                                hooks=lambda opts: self.online_hooks(fit.model, None, **opts))


class _Steps:
    """EM of a mixture for `probgen.loops.iterative.run`: the state is the params."""

    def __init__(self, model: Any, x: torch.Tensor, init: dict | None, reg_covar: float, init_method: str,
                 labels: torch.Tensor | None = None):
        self.model, self.x, self.init, self.reg_covar, self.init_method = model, x, init, reg_covar, init_method
        self.fused = getattr(model, "em_step", None)  # optional: both steps in one pass over the data
        # partial labels are handed to the declaration's steps only when given
        self.labels = {} if labels is None else {"labels": labels}

    def start(self, seed: int | None) -> dict:
        model, init = self.model, self.init
        start = model.init_params(self.x, seed=seed, method=self.init_method, reg_covar=self.reg_covar) \
            if init is None or _partial(model, init) else {}
        return model.check_params({**start, **(init or {})}) if hasattr(model, "check_params") \
            else {**start, **(init or {})}

    def step(self, params: dict) -> Update:
        if self.fused is not None:
            log_norm, params = self.fused(params, self.x, reg_covar=self.reg_covar, **self.labels)
        else:
            log_norm, resp = self.model.e_step(params, self.x, **self.labels)
            params = self.model.m_step(self.x, resp, reg_covar=self.reg_covar)
        return Update(params, float(log_norm.mean()))


class _ParallelSteps(_Steps):
    """`_Steps` split for data-parallel EM (`probgen.loops.iterative.DataParallel`):
    the E-step's sums on this rank's rows, then the M-step from the sums over all ranks."""

    def statistics(self, params: dict) -> dict:
        return self.model.em_statistics(params, self.x)

    def update(self, params: dict, stats: dict) -> Update:
        new = self.model.em_update(params, stats, reg_covar=self.reg_covar)
        return Update(new, float(stats["log_lik"] / stats["n"]))


def _partial(model: Any, init: dict) -> bool:
    shapes = model.param_shapes() if hasattr(model, "param_shapes") else {}
    return bool(shapes) and not set(shapes) <= set(init)
