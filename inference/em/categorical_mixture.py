"""EM for mixtures of products of categoricals (the latent class model; Dempster, Laird
& Rubin 1977): E-step responsibilities ``r_nk ∝ weights_k prod_d probs[k, d, x_nd]`` in
log space, M-step normalised expected counts plus a Dirichlet pseudo-count."""
from __future__ import annotations

from typing import Any, Callable

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.loops.iterative import LOOP, Update, run
from probgen.registry import Method, check_options, register


@register
class CategoricalMixtureEM(Method):
    engine = "em"
    name = "categorical_mixture"
    needs = "a mixture of categoricals (component_log_prob, weights / probs)"
    objective = "log_likelihood"
    steps_unit = "EM iterations"
    devices = ("cpu", "cuda", "mps")  # torch only (CUDA / MPS written, not run here)
    loop = LOOP
    parallel = "data"  # rows are independent: expected counts summed over ranks

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.CategoricalMixtureModel)

    def fit(self, model: Any, data: torch.Tensor, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = 1e-7, n_init: int = 1, callback: Callable | None = None,
            **options: Any) -> Fit:
        """``steps`` (default 200) iterations; ``tol``, ``n_init`` (restarts from independent
        seeds, the best final log-likelihood wins) and ``callback`` as in
        :func:`probgen.loops.iterative.run`."""
        check_options("em", options, ("tol", "n_init", "callback"))
        steps = 200 if steps is None else steps
        result = run(_Steps(model, data, init), objective=self.objective, steps=max(steps, 1), tol=tol,
                     seed=seed, n_init=n_init, progress=progress, callback=callback, desc="em")
        return Fit(model, result.state, result.history, engine=self.engine, method=self.name,
                   state=result.fit_state(), options={"tol": tol, "n_init": n_init})


class _Steps:
    """EM of the latent class model for :func:`probgen.loops.iterative.run`: the state is the params."""

    def __init__(self, model: Any, data: torch.Tensor, init: dict | None):
        self.model, self.data, self.init = model, data, init
        self.onehot = None

    def start(self, seed: int | None) -> dict:
        params = self.model.init_params(self.data, seed)
        if self.init:
            params.update({k: torch.as_tensor(v, dtype=torch.float64) for k, v in self.init.items()})
        return params

    def step(self, params: dict) -> Update:
        if self.onehot is None:  # here, not in start: a resumed fit (pg.resume) does not call start
            self.onehot = torch.nn.functional.one_hot(self.data, params["probs"].shape[-1]).double()  # (N, D, V)
        lp = self.model.component_log_prob(params, self.data)  # E-step
        ll = torch.logsumexp(lp, -1)
        r = torch.exp(lp - ll[:, None])  # (N, K)
        counts = torch.einsum("nk,ndv->kdv", r, self.onehot) + self.model.pseudo_count  # M-step
        params = {"weights": (r.sum(0) + 1e-12) / (r.sum() + 1e-12 * r.shape[1]),
                  "probs": counts / counts.sum(-1, keepdim=True)}
        return Update(params, float(ll.mean()))  # per row

    def statistics(self, params: dict) -> dict:
        """This process's E-step as sums over its rows: ``log_lik``, ``n``, ``nk`` Σ r_nk
        ``(K,)`` and ``counts`` Σ r_nk [x_nd = v] ``(K, D, V)`` (for data-parallel EM)."""
        if self.onehot is None:
            self.onehot = torch.nn.functional.one_hot(self.data, params["probs"].shape[-1]).double()
        lp = self.model.component_log_prob(params, self.data)
        ll = torch.logsumexp(lp, -1)
        r = torch.exp(lp - ll[:, None])
        return {"log_lik": ll.sum(), "n": torch.tensor(float(len(ll)), dtype=torch.float64), "nk": r.sum(0),
                "counts": torch.einsum("nk,ndv->kdv", r, self.onehot)}

    def update(self, params: dict, stats: dict) -> Update:
        """The M-step of :meth:`step` from the summed :meth:`statistics` (Σ_k N_k is N up to round-off)."""
        nk, counts = stats["nk"], stats["counts"] + self.model.pseudo_count
        params = {"weights": (nk + 1e-12) / (nk.sum() + 1e-12 * len(nk)),
                  "probs": counts / counts.sum(-1, keepdim=True)}
        return Update(params, float(stats["log_lik"] / stats["n"]))
