"""EM for mixtures of products of categoricals (the latent class model; Dempster, Laird
& Rubin 1977): E-step responsibilities ``r_nk ∝ weights_k prod_d probs[k, d, x_nd]`` in
log space, M-step normalised expected counts plus a Dirichlet pseudo-count."""
from __future__ import annotations

from typing import Any

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.progress import progress as bar
from probgen.registry import Method, check_options, check_tol, converged, register


@register
class CategoricalMixtureEM(Method):
    engine = "em"
    name = "categorical_mixture"
    needs = "a mixture of categoricals (component_log_prob, weights / probs)"
    objective = "log_likelihood"
    steps_unit = "EM iterations"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.CategoricalMixtureModel)

    def fit(self, model: Any, data: torch.Tensor, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = 1e-7, **options: Any) -> Fit:
        check_options("em", options, ("tol",))
        check_tol(tol)
        steps = 200 if steps is None else steps
        params = model.init_params(data, seed)
        if init:
            params.update({k: torch.as_tensor(v, dtype=torch.float64) for k, v in init.items()})
        n_values = params["probs"].shape[-1]
        onehot = torch.nn.functional.one_hot(data, n_values).double()  # (N, D, V)
        a = model.pseudo_count
        history, prev = [], None
        for step in bar(range(max(steps, 1)), desc="em", enabled=progress):
            lp = model.component_log_prob(params, data)  # E-step
            ll = torch.logsumexp(lp, -1)
            r = torch.exp(lp - ll[:, None])  # (N, K)
            mean = float(ll.mean())  # per row
            history.append({"step": step, "log_likelihood": mean})
            counts = torch.einsum("nk,ndv->kdv", r, onehot) + a  # M-step
            params = {"weights": (r.sum(0) + 1e-12) / (r.sum() + 1e-12 * r.shape[1]),
                      "probs": counts / counts.sum(-1, keepdim=True)}
            if converged(prev, mean, tol):
                break
            prev = mean
        return Fit(model, params, history, engine=self.engine, method=self.name, options={"tol": tol})
