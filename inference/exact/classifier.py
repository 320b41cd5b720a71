"""Classifiers: fitting and class-posterior queries.

* AODE-like declarations (``count(data)`` + ``class_log_posterior``) are fitted by
  counting in the ``exact`` engine: their estimates are closed-form functions of
  frequency counts of complete data, so nothing is iterated and the fitted model's
  class posterior is exact — the natural home is the engine ``pg.infer`` uses by default.
* Generative classifiers by Bayes' rule (``class_conditional``) are fitted by whichever
  engine fits their class-conditional, one fit per class; that engine then answers the
  class-posterior queries (``pg.infer(fit, X, query="map", engine=fit.engine)``).
"""
from __future__ import annotations

from typing import Any

import torch

from probgen import protocols
from probgen import registry
from probgen.fit import Fit
from probgen.registry import ENGINE_DESCRIPTIONS, Method, check_options, register


class ClassifierQueries(Method):
    """``query="marginals"``: ``P(y | x)`` ``(N, C)``; ``query="map"``: classes ``(N,)``."""

    queries = ("marginals", "map")

    def infer(self, model: Any, params: dict | None, data: Any, query: str, **options: Any) -> torch.Tensor:
        check_options("classifier query", options)
        if params is None:
            raise ValueError(f"{type(model).__name__} must be fitted first: pg.infer(pg.fit(model, (X, y)), X)")
        logp = model.class_log_posterior(params, data)
        return logp.exp() if query == "marginals" else logp.argmax(-1)


@register
class CountingClassifier(ClassifierQueries):
    engine = "exact"
    name = "counting_classifier"
    accepts_init = False
    init_hint = "its tables are counted in closed form"
    needs = "a classifier estimated from counts (count, class_log_posterior)"
    objective = "log_likelihood"
    steps_unit = "none (closed form: counting; steps is ignored)"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.CountingClassifier)

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, n_classes: int | None = None, n_values: Any = None, **options: Any) -> Fit:
        if options:
            raise ValueError(f"unknown options {sorted(options)}; known: n_classes, n_values")
        params = model.count(data, n_classes=n_classes, n_values=n_values)
        # an empty history (no iterations): scoring the data costs more than counting, and
        # fit.log_prob(data) gives the log-likelihood on demand
        return Fit(model, params, [], engine=self.engine, method=self.name,
                   state={"closed_form": True, "n": len(data[1])})


class BayesRuleFit(ClassifierQueries):
    """One fit of the class-conditional per class, with this method's engine."""

    name = "bayes_rule"
    needs = "a generative classifier whose class-conditional this engine fits"
    steps_unit = "the class-conditional method's steps, per class"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.BayesRuleClassifier) and model.class_conditional is not None \
            and any(m.accepts(model.class_conditional) for m in registry.methods(self.engine))

    def fit_options(self, model: Any) -> tuple[str, ...]:
        base = model.class_conditional
        return registry.find_method(base, self.engine).fit_options(base)

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, **options: Any) -> Fit:
        x, y = data
        base = model.class_conditional
        if hasattr(base, "sized_for"):
            base = base.sized_for(x)
        method = registry.find_method(base, self.engine)
        n_classes = int(y.max()) + 1
        counts = torch.bincount(y, minlength=n_classes).double()
        if (counts == 0).any():
            raise ValueError(f"classes {torch.nonzero(counts == 0)[:, 0].tolist()} have no examples; "
                             "class codes must be 0..C-1 with every class present")
        params = {"weights": counts / counts.sum()}
        history, converged = [], []
        opts = dict(model.fit_options, **options)
        for c in range(n_classes):
            xc = x[y == c]
            fc = method.fit(base, xc, steps=steps, seed=None if seed is None else seed + c,
                            init=init, progress=progress, **opts)
            params.update({f"c{c}.{k}": v for k, v in fc.params.items()})
            converged.append(fc.converged)
            history.append({"step": c, "class": c, **{k: v for k, v in (fc.history[-1] if fc.history else {}).items()
                                                      if k != "step"}})
        # one record per class (its class-conditional fit's last one), under that fit's objective;
        # converged: every class's fit converged (False if one ran out of steps; None where the
        # class-conditional's method does not say, as for non-iterative methods)
        state = {"converged": None if None in converged else all(converged), "class_converged": converged}
        return Fit(model, params, history, engine=self.engine, method=self.name, options=opts,
                   objective=method.objective, state=state)


# one Bayes'-rule method per engine: the classifier is fitted by whatever fits its class-conditional
for _engine in ENGINE_DESCRIPTIONS:
    register(type(f"BayesRuleFit_{_engine}", (BayesRuleFit,), {"engine": _engine, "__module__": __name__}))
