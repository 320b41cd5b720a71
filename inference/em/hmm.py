"""Baum–Welch: EM for hidden Markov chains with closed-form M-steps.

E-step: the scaled forward–backward pass (``probgen.ops.chain.forward_backward``, a
compiled loop over time, vectorised over sequences) gives the posterior state marginals γ (B, T, K) and the expected transition counts ξ (K, K).
M-step (float64, all closed form; Rabiner 1989 eqs. 40a–c, 52–53):

* initial ∝ Σ_b γ_{b,0},  transition[i] ∝ ξ[i];
* categorical: probs[k, v] ∝ Σ_{b,t} γ_{b,t,k} [x_{b,t} = v];
* Poisson: rate_k = Σ γ x / Σ γ;
* Gaussian: loc_k = Σ γ x / Σ γ; diag: scale_k² = Σ γ x² / Σ γ − loc_k²; full:
  Σ_k = Σ γ (x − loc_k)(x − loc_k)ᵀ / Σ γ, ``scale_tril`` = chol(Σ_k); plus ``min_covar``
  on the variances (0 gives the plain maximum-likelihood step).

``history`` records, per iteration, the mean log-likelihood per sequence under the
parameters the E-step used (``"log_likelihood"``), which EM never decreases. Iteration
stops after ``steps`` iterations or when its relative change falls below ``tol``
(`probgen.registry.converged`; ``tol=None``: never early); the loop, its restarts
(``n_init``) and ``callback`` are `probgen.loops.iterative`'s.

Why not autograd of the log-evidence here: the gradient of the forward pass *is* this
E-step (Eisner 2016), but backpropagating through a 500-step Python loop measured ~6×
slower than a hand-written pass even as torch ops (and the compiled pass is ~5× faster
again), and a log-depth scan in the sum-product semiring
does K times the work (K×K matrix products per step) and measured slower at K = 8 too;
the generic EM (``inference/em/program.py``) uses autograd.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.loops.iterative import LOOP, Update, run
from probgen.ops import chain
from probgen.data import has_missing
from probgen.ops import gaussian_missing as gm
from probgen.registry import Method, check_options, register

from .._chain import emissions, start_params
from . import _online as online_em


def e_step(model: Any, params: dict, data: Any, labels: torch.Tensor | None = None):
    """(log_lik (B,), gamma (B, T, K), xi (K, K)) at ``params``; with ``labels`` (B, T)
    (−1 = unknown) the labelled steps' states are clamped and log_lik is log p(x, labels)."""
    table = emissions(model, params, data) if labels is None else model.emission_table(params, data, labels)
    return chain.forward_backward(params["initial"], params["transition"], table, data.lengths)


def m_step(model: Any, data: Any, gamma: torch.Tensor, xi: torch.Tensor, min_covar: float,
           params: dict | None = None) -> dict:
    """Closed-form maximisers of the expected complete-data log-likelihood (``params``, the
    E-step's, are read only for data with missing observations: ``model.m_step_missing``)."""
    K = gamma.shape[-1]
    new = {}
    g0 = gamma[:, 0].sum(0)
    new["initial"] = g0 / g0.sum()
    new["transition"] = xi / xi.sum(-1, keepdim=True).clamp(min=torch.finfo(xi.dtype).tiny)
    # all steps, padded ones included: γ is zero there (and x zero), so they add nothing;
    # γ is the (B, T, K) view of a state-major (K, T, B) buffer, so (K, T B) is free
    gk = gamma.permute(2, 1, 0).reshape(K, -1)               # (K, N), N = T B
    if has_missing(data):
        return {**new, **model.m_step_missing(data, gk, params, min_covar)}
    x = data.columns().t()                                   # (N,) or (N, D), the same order
    nk = gk.sum(1)                                           # (K,)
    safe = nk.clamp(min=torch.finfo(gk.dtype).tiny)
    emission = model.emission
    if emission == "categorical":
        counts = torch.zeros(K, model.n_symbols, dtype=gk.dtype).index_add_(1, x, gk)
        new["probs"] = counts / counts.sum(-1, keepdim=True).clamp(min=torch.finfo(gk.dtype).tiny)
    elif emission == "poisson":
        new["rate"] = (gk @ x) / safe
    else:
        loc = (gk @ x) / safe[:, None]                       # (K, D)
        new["loc"] = loc
        if model.covariance == "full":
            D = x.shape[1]
            second = (gk @ (x[:, :, None] * x[:, None, :]).reshape(-1, D * D)).reshape(K, D, D) / safe[:, None, None]
            cov = second - loc[:, :, None] * loc[:, None, :]
            cov = 0.5 * (cov + cov.transpose(-1, -2)) + min_covar * torch.eye(D, dtype=gk.dtype)
            new["scale_tril"] = torch.linalg.cholesky(cov)
        else:
            var = (gk @ (x * x)) / safe[:, None] - loc * loc
            new["scale"] = (var.clamp(min=0) + min_covar).sqrt()
    return new


def statistics(model: Any, data: Any, log_lik: torch.Tensor, gamma: torch.Tensor, xi: torch.Tensor,
               params: dict | None = None, center: torch.Tensor | None = None) -> dict:
    """The E-step's expected counts as sums over this process's sequences (data-parallel
    Baum–Welch, `probgen.distributed`; online EM's per-minibatch statistics): ``log_lik``
    Σ log p(x_b), ``n`` B, ``initial`` Σ_b γ_b0 ``(K,)``, ``transition`` Σ ξ ``(K, K)``, ``nk``
    Σ γ ``(K,)`` and the emission sums: ``counts`` ``(K, V)`` (categorical), ``first`` Σ γ x
    ``(K,)`` | ``(K, D)``; Poisson ``observed`` Σ γ [x observed] ``(K,)``; Gaussian ``second``
    Σ γ x̃x̃ᵀ ``(K, D, D)`` | Σ γ x̃² ``(K, D)``, with x̃ = x − ``center`` (default 0) in
    ``first`` and ``second`` — the same layout for complete data and data with missing
    observations, so minibatches with and without gaps average together.

    Missing observations (``params``, the E-step's, are then needed): a missing symbol or
    count adds nothing to ``counts`` / ``first`` / ``observed``; a Gaussian step adds
    γ E[x̃ | x_o, k] and γ E[x̃x̃ᵀ | x_o, k] (Ghahramani & Jordan 1994), the sums of
    `probgen.models.HMM.m_step_missing`. Reference: Rabiner (1989) eqs. 40a–c; the
    sums of `m_step`."""
    K = gamma.shape[-1]
    gk = gamma.permute(2, 1, 0).reshape(K, -1)               # (K, N), as in m_step
    missing = has_missing(data)
    if missing and params is None:
        raise ValueError("the statistics of sequences with missing observations need the E-step's params")
    out = {"log_lik": log_lik.sum(), "n": torch.tensor(float(log_lik.numel()), dtype=gk.dtype),
           "initial": gamma[:, 0].sum(0), "transition": xi, "nk": gk.sum(1)}
    if model.emission == "categorical":
        V = model.n_symbols
        if missing:  # the missing symbols' weights land in column V, dropped
            out["counts"] = torch.zeros(K, V + 1, dtype=gk.dtype).index_add_(1, model._symbol_index(data), gk)[:, :V]
        else:
            out["counts"] = torch.zeros(K, V, dtype=gk.dtype).index_add_(1, data.columns().t(), gk)
        return out
    if model.emission == "poisson":
        x = data.columns().to(gk.dtype)
        if missing:
            obs = ~torch.isnan(x)
            out["first"], out["observed"] = gk @ x.masked_fill(~obs, 0.0), gk @ obs.to(gk.dtype)
        else:
            out["first"], out["observed"] = gk @ x, out["nk"]
        return out
    X = data.columns().t().to(gk.dtype)                      # (N, D)
    D = X.shape[1]
    if missing:
        f = params["scale_tril"] if model.covariance == "full" else params["scale"]
        cov = gm.covariance_matrices(f, model.covariance, D)
        _, first, second = gm.expected_moments(X, params["loc"], cov, gk.T, center=center)
        out["first"] = first
        out["second"] = second if model.covariance == "full" else torch.diagonal(second, dim1=-2, dim2=-1)
        return out
    xc = X if center is None else X - center
    out["first"] = gk @ xc
    out["second"] = (gk @ (xc[:, :, None] * xc[:, None, :]).reshape(-1, D * D)).reshape(K, D, D) \
        if model.covariance == "full" else gk @ (xc * xc)
    return out


def m_step_statistics(model: Any, stats: dict, min_covar: float, center: torch.Tensor | None = None) -> dict:
    """`m_step` from `statistics` summed over all the sequences (``center``: the
    one the Gaussian moments were taken about, default 0)."""
    tiny = torch.finfo(stats["nk"].dtype).tiny
    g0, xi = stats["initial"], stats["transition"]
    new = {"initial": g0 / g0.sum(), "transition": xi / xi.sum(-1, keepdim=True).clamp(min=tiny)}
    safe = stats["nk"].clamp(min=tiny)
    if model.emission == "categorical":
        counts = stats["counts"]
        new["probs"] = counts / counts.sum(-1, keepdim=True).clamp(min=tiny)
    elif model.emission == "poisson":
        new["rate"] = stats["first"] / stats.get("observed", stats["nk"]).clamp(min=tiny)
    else:
        mean_c = stats["first"] / safe[:, None]              # about the centre
        new["loc"] = mean_c if center is None else mean_c + center
        if model.covariance == "full":
            D = mean_c.shape[1]
            cov = stats["second"] / safe[:, None, None] - mean_c[:, :, None] * mean_c[:, None, :]
            cov = 0.5 * (cov + cov.transpose(-1, -2)) + min_covar * torch.eye(D, dtype=mean_c.dtype)
            new["scale_tril"] = torch.linalg.cholesky(cov)
        else:
            var = stats["second"] / safe[:, None] - mean_c * mean_c
            new["scale"] = (var.clamp(min=0) + min_covar).sqrt()
    return new


@register
class BaumWelch(Method):
    engine = "em"
    name = "baum-welch"
    needs = "a hidden Markov chain (initial, transition and per-step emission log-likelihoods)"
    objective = "log_likelihood"
    steps_unit = "EM iterations (`online=True`: passes over the data)"
    device_hint = "its forward-backward runs in compiled CPU loops, probgen.ops.chain_kernels"
    loop = LOOP
    missing_values = True  # missing steps / dimensions: the declaration's emissions marginalise them
    parallel = "data"  # sequences are independent: expected counts summed over ranks (gaps too)

    def accepts(self, model: Any) -> bool:
        return protocols.is_hidden_markov_chain(model) and getattr(model, "emission", None) in (
            "categorical", "gaussian", "poisson") and not getattr(model, "bayesian", False)

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = online_em.BatchTol(1e-8), n_init: int = 1,
            callback: Callable | None = None, min_covar: float = 1e-6, labels: Any = None, online: bool = False,
            batch_size: int | None = None, t0: float = 2.0, kappa: float = 0.6, **options: Any) -> Fit:
        """``steps`` (default 100) iterations; ``tol``, ``n_init`` (restarts from independent
        seeds, the best final log-likelihood wins) and ``callback`` as in
        `probgen.loops.iterative.run`; ``min_covar`` is added to Gaussian variances;
        ``labels``: known states at some steps (a list of (T_i,) arrays or a (B, T) array,
        −1 = unknown), clamped in every E-step; the objective is then log p(x, labels).
        ``online=True``: stepwise EM (`inference.em._online`) over minibatches of
        ``batch_size`` sequences, step sizes ρ_t = (t + ``t0``)^−``kappa``; ``data`` may then be
        an iterator of chunks of sequences (or a callable returning one), ``steps`` counts passes."""
        check_options("em", options, ("tol", "n_init", "callback", "min_covar", "labels") + online_em.OPTIONS)
        if min_covar < 0:
            raise ValueError(f"min_covar must be >= 0, got {min_covar}")
        online_em.check_options(online, batch_size, t0, kappa, labels)
        tol = online_em.resolve_tol(tol, online)
        if online:
            return online_em.fit(self, model, data, self.online_hooks(model, init, min_covar), steps=steps, seed=seed,
                                 tol=tol, n_init=n_init, callback=callback, progress=progress, batch_size=batch_size,
                                 t0=t0, kappa=kappa, options={"tol": tol, "n_init": n_init, "min_covar": min_covar})
        steps = 100 if steps is None else steps
        if labels is not None:
            labels = model.check_labels(labels, data)
        with torch.no_grad():
            result = run(_Steps(model, data, init, min_covar, labels), objective=self.objective, steps=steps, tol=tol,
                         seed=seed, n_init=n_init, progress=progress, callback=callback, desc="baum-welch")
        return Fit(model, result.state, result.history, engine=self.engine, method=self.name,
                   state=result.fit_state(), options={"tol": tol, "n_init": n_init, "min_covar": min_covar})

    def online_hooks(self, model: Any, init: dict | None, min_covar: float = 1e-6, **_: Any) -> online_em.Hooks:
        """Online EM's steps: the expected counts (`statistics`) of a minibatch of
        sequences, missing observations marginalised as in the batch E-step, and their M-step
        (`m_step_statistics`). Gaussian moments are taken about a centre fixed at the
        start's mean of the state means (running averages of moments about a moving centre
        would not add up; the centre only keeps the second moments free of cancellation)."""
        gaussian = model.emission == "gaussian"

        def fixed(params: dict) -> dict:
            return {"center": params["loc"].to(torch.float64).mean(0)} if gaussian else {}

        def stats(params: dict, seqs: Any, fixed: dict) -> dict:
            return statistics(model, seqs, *e_step(model, params, seqs), params=params, center=fixed.get("center"))

        return online_em.Hooks(
            check=model.check_data, start=lambda seqs, seed: start_params(model, seqs, init, seed), statistics=stats,
            fixed=fixed, update=lambda p, s, fixed: {**p, **m_step_statistics(model, s, min_covar, fixed.get("center"))})

    def update(self, fit: Fit, data: Any, *, steps: int | None, seed: int | None, progress: bool,
               **options: Any) -> Fit:
        """`probgen.Fit.update` (`inference.em._online.update`)."""
        return online_em.update(self, fit, data, steps=steps, seed=seed, progress=progress, options=options,
                                hooks=lambda opts: self.online_hooks(fit.model, None, **opts))


class _Steps:
    """Baum–Welch for `probgen.loops.iterative.run`: the state is the params."""

    def __init__(self, model: Any, data: Any, init: dict | None, min_covar: float,
                 labels: torch.Tensor | None = None):
        self.model, self.data, self.init, self.min_covar, self.labels = model, data, init, min_covar, labels

    def start(self, seed: int | None) -> dict:
        return start_params(self.model, self.data, self.init, seed)

    def step(self, params: dict) -> Update:
        log_lik, gamma, xi = e_step(self.model, params, self.data, self.labels)
        ll = float(log_lik.mean())  # per sequence: independent of how many were passed
        params = {**params, **m_step(self.model, self.data, gamma, xi, self.min_covar, params)}
        del gamma  # frees the E-step buffers before the next E-step allocates its own
        return Update(params, ll)

    def _center(self, params: dict) -> torch.Tensor | None:
        """The Gaussian moments' centre: from the params, so the same on every rank."""
        return params["loc"].to(torch.float64).mean(0) if self.model.emission == "gaussian" else None

    def statistics(self, params: dict) -> dict:
        log_lik, gamma, xi = e_step(self.model, params, self.data, self.labels)
        return statistics(self.model, self.data, log_lik, gamma, xi, params=params, center=self._center(params))

    def update(self, params: dict, stats: dict) -> Update:
        ll = float(stats["log_lik"] / stats["n"])
        return Update({**params, **m_step_statistics(self.model, stats, self.min_covar, self._center(params))}, ll)
