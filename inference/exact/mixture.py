"""Exact posterior queries for mixtures: responsibilities p(z_n = k | x_n) and the most
probable assignment, from the declaration's own ``responsibilities(params, x)`` (log-space,
normalised by logsumexp)."""
from __future__ import annotations

from typing import Any

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.registry import Method, check_options, register


@register
class MixturePosterior(Method):
    engine = "exact"
    name = "mixture"
    needs = "responsibilities(params, x) (a mixture)"
    log_prob_kind = "exact"
    queries = ("marginals", "map", "log_prob", "impute")
    row_queries = queries  # example by example
    missing_values = True  # the declaration's densities marginalise NaN cells
    objective = "log_likelihood"
    steps_unit = "none (exact: learns nothing; steps is ignored)"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.Responsibilities)

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, **options: Any) -> Fit:
        """Exact inference learns nothing: the fit holds ``init`` (completed by the model's
        own seeded ``init_params``) and records the exact mean log-likelihood there, so that
        queries and ``log_prob`` can be asked of given parameters. ``steps`` is ignored."""
        check_options("exact", options)
        params = {} if init is not None and set(init) >= set(model.param_shapes()) \
            else model.init_params(data, seed=seed)
        params = model.check_params({**params, **(init or {})})
        ll = float(model.log_prob(params, data).mean())
        return Fit(model, params, [{"step": 0, "log_likelihood": ll}], engine=self.engine,
                   method=self.name, log_prob_kind="exact")

    def infer(self, model: Any, params: dict | None, data: Any, query: str, **options: Any) -> torch.Tensor:
        """``query="marginals"``: responsibilities ``(N, K)``; ``"map"``: the most probable
        component of each example ``(N,)``; ``"log_prob"``: log p(x_n) ``(N,)`` (of the
        observed cells where ``x`` has NaN); ``"impute"``: ``x`` with each NaN cell replaced by
        its conditional mean given the row's observed cells (``model.impute``).
        A declaration holds no parameters: ask a fit (for given parameters,
        ``pg.fit(model, x, engine="exact", init=params)`` makes one)."""
        check_options("infer", options)
        if params is None:
            raise ValueError(f"{type(model).__name__} holds no parameters of its own: pass a fit, "
                             "pg.infer(fit, x); for given parameters, "
                             "fit = pg.fit(model, x, engine='exact', init=params)")
        params = model.check_params(params)
        x = model.check_data(data)
        if query == "log_prob":
            return model.log_prob(params, x)
        if query == "impute":
            if not hasattr(model, "impute"):
                raise ValueError(f"{type(model).__name__} has no impute hook")
            return model.impute(params, x)
        resp = model.responsibilities(params, x)
        return resp if query == "marginals" else resp.argmax(1)
