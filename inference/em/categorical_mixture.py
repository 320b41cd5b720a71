"""EM for mixtures of products of categoricals (the latent class model; Dempster, Laird
& Rubin 1977): E-step responsibilities ``r_nk ∝ weights_k prod_d probs[k, d, x_nd]`` in
log space, M-step normalised expected counts plus a Dirichlet pseudo-count."""
from __future__ import annotations

from typing import Any, Callable

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.loops.iterative import LOOP, Update, run
from probgen.data import clamp_to_labels
from probgen.models.categorical_mixture import one_hot
from probgen.registry import Method, check_options, register

from . import _online as online_em


@register
class CategoricalMixtureEM(Method):
    engine = "em"
    name = "categorical_mixture"
    needs = "a mixture of categoricals (component_log_prob, weights / probs)"
    objective = "log_likelihood"
    steps_unit = "EM iterations (`online=True`: passes over the data)"
    devices = ("cpu", "cuda", "mps")  # torch only (CUDA / MPS written, not run here)
    loop = LOOP
    missing_values = True  # missing cells (−1): left out of the products and the counts
    queries = ("impute",)
    parallel = "data"  # rows are independent: expected counts summed over ranks

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.CategoricalMixtureModel)

    def fit(self, model: Any, data: torch.Tensor, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = online_em.BatchTol(1e-7), n_init: int = 1,
            callback: Callable | None = None, labels: Any = None, online: bool = False,
            batch_size: int | None = None, t0: float = 2.0, kappa: float = 0.6, **options: Any) -> Fit:
        """``steps`` (default 200) iterations; ``tol``, ``n_init`` (restarts from independent
        seeds, the best final log-likelihood wins) and ``callback`` as in
        `probgen.loops.iterative.run`; ``labels`` ``(N,)``: known components (−1 =
        unknown), clamped in every E-step (the objective is then log p(x, labels)).
        ``online=True``: stepwise EM (`inference.em._online`) over minibatches of
        ``batch_size`` rows, step sizes ρ_t = (t + ``t0``)^−``kappa``; ``data`` may then be an
        iterator of chunks (or a callable returning one), and ``steps`` counts passes."""
        check_options("em", options, ("tol", "n_init", "callback", "labels") + online_em.OPTIONS)
        online_em.check_options(online, batch_size, t0, kappa, labels)
        tol = online_em.resolve_tol(tol, online)
        if online:
            return online_em.fit(self, model, data, self.online_hooks(model, init), steps=steps, seed=seed, tol=tol,
                                 n_init=n_init, callback=callback, progress=progress, batch_size=batch_size, t0=t0,
                                 kappa=kappa, options={"tol": tol, "n_init": n_init})
        steps = 200 if steps is None else steps
        if labels is not None:
            labels = model.check_labels(labels, data)
        result = run(_Steps(model, data, init, labels), objective=self.objective, steps=max(steps, 1), tol=tol,
                     seed=seed, n_init=n_init, progress=progress, callback=callback, desc="em")
        return Fit(model, result.state, result.history, engine=self.engine, method=self.name,
                   state=result.fit_state(), options={"tol": tol, "n_init": n_init})

    def infer(self, model: Any, params: dict | None, data: Any, query: str, **options: Any) -> torch.Tensor:
        """``query="impute"``: the codes with each missing cell replaced by its most probable
        value given the row's observed cells (``model.impute``), ``(N, D)``."""
        check_options(f"{query!r} query", options)
        if params is None:
            raise ValueError(f"{type(model).__name__} holds no parameters of its own: pass a fit")
        return model.impute(params, data)

    def online_hooks(self, model: Any, init: dict | None, **_: Any) -> online_em.Hooks:
        """Online EM's steps: `statistics` of a minibatch (missing cells, −1, left out)
        and `m_step_statistics`, whose pseudo-counts weigh against the rows seen."""
        return online_em.Hooks(
            check=model.check_data, start=lambda x, seed: _Steps(model, x, init).start(seed),
            statistics=lambda p, x, fixed: statistics(model, p, x),
            update=lambda p, s, fixed: m_step_statistics(model, s))

    def update(self, fit: Fit, data: Any, *, steps: int | None, seed: int | None, progress: bool,
               **options: Any) -> Fit:
        """`probgen.Fit.update` (`inference.em._online.update`)."""
        return online_em.update(self, fit, data, steps=steps, seed=seed, progress=progress, options=options,
                                hooks=lambda opts: self.online_hooks(fit.model, None))


def statistics(model: Any, params: dict, data: torch.Tensor, labels: torch.Tensor | None = None,
               onehot: torch.Tensor | None = None) -> dict:
    """The E-step as sums over the rows of ``data`` ``(N, D)`` codes (−1 = missing):
    ``log_lik``, ``n``, ``nk`` Σ r_nk ``(K,)`` and ``counts`` Σ r_nk [x_nd = v] ``(K, D, V)``
    (data-parallel and online EM); ``onehot``: ``data``'s one-hot codes, if at hand."""
    if onehot is None:
        onehot = one_hot(data, params["probs"].shape[-1])  # (N, D, V); zero where missing
    lp = clamp_to_labels(model.component_log_prob(params, data), labels)
    ll = torch.logsumexp(lp, -1)
    r = torch.exp(lp - ll[:, None])
    return {"log_lik": ll.sum(), "n": torch.tensor(float(len(ll)), dtype=torch.float64), "nk": r.sum(0),
            "counts": torch.einsum("nk,ndv->kdv", r, onehot)}


def m_step_statistics(model: Any, stats: dict) -> dict:
    """The M-step from summed `statistics` (Σ_k N_k is N up to round-off), with the
    declaration's Dirichlet pseudo-count on every count."""
    nk, counts = stats["nk"], stats["counts"] + model.pseudo_count
    return {"weights": (nk + 1e-12) / (nk.sum() + 1e-12 * len(nk)), "probs": counts / counts.sum(-1, keepdim=True)}


class _Steps:
    """EM of the latent class model for `probgen.loops.iterative.run`: the state is the params."""

    def __init__(self, model: Any, data: torch.Tensor, init: dict | None, labels: torch.Tensor | None = None):
        self.model, self.data, self.init, self.labels = model, data, init, labels
        self.onehot = None

    def start(self, seed: int | None) -> dict:
        params = self.model.init_params(self.data, seed)
        if self.init:
            params.update({k: torch.as_tensor(v, dtype=torch.float64) for k, v in self.init.items()})
        return params

    def step(self, params: dict) -> Update:
        if self.onehot is None:  # here, not in start: a resumed fit (pg.resume) does not call start
            self.onehot = one_hot(self.data, params["probs"].shape[-1])  # (N, D, V); zero where missing
        lp = clamp_to_labels(self.model.component_log_prob(params, self.data), self.labels)  # E-step
        ll = torch.logsumexp(lp, -1)
        r = torch.exp(lp - ll[:, None])  # (N, K)
        counts = torch.einsum("nk,ndv->kdv", r, self.onehot) + self.model.pseudo_count  # M-step
        params = {"weights": (r.sum(0) + 1e-12) / (r.sum() + 1e-12 * r.shape[1]),
                  "probs": counts / counts.sum(-1, keepdim=True)}
        return Update(params, float(ll.mean()))  # per row

    def statistics(self, params: dict) -> dict:
        """This process's E-step as sums over its rows (`statistics`, for data-parallel EM)."""
        if self.onehot is None:
            self.onehot = one_hot(self.data, params["probs"].shape[-1])  # (N, D, V); zero where missing
        return statistics(self.model, params, self.data, self.labels, self.onehot)

    def update(self, params: dict, stats: dict) -> Update:
        """The M-step of `step` from the summed `statistics`."""
        return Update(m_step_statistics(self.model, stats), float(stats["log_lik"] / stats["n"]))
