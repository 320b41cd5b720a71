"""The public entry points: ``fit``, ``infer``, ``engines``, ``compatible``, ``load``."""
from __future__ import annotations

from typing import Any

import torch

from probgen import registry
from probgen.fit import Fit, load  # noqa: F401  (re-exported)
from probgen.random import seeded

engines = registry.engines
compatible = registry.compatible


def fit(model: Any, data: Any = None, engine: str | None = None, steps: int | None = None,
        seed: int | None = None, init: dict | None = None, progress: bool = True, **options: Any) -> Fit:
    """Fit ``model`` to ``data`` with ``engine`` (a name; ``None`` = the model's default).

    Args:
      model: a probgen declaration or a Pyro function ``fn(data)``.
      data: the model's data (its ``check_data`` states the expected form).
      steps: the iteration budget (EM iterations, SVI steps, MCMC samples after
        warm-up, epochs for contrastive divergence); ``None`` = the method's default.
      seed: seeds all randomness (initialisation, minibatches, sampling).
      init: starting parameters, named as in ``Fit.params``.
      progress: show a progress bar on long runs (only on a terminal).
      options: engine options (``tol``, ``n_init``, ``lr``, ``batch_size``, ...).
    Returns: a :class:`Fit`.
    """
    model = registry.as_declaration(model)
    method = registry.find_method(model, engine)
    if steps is not None and (not isinstance(steps, int) or steps < 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if init is not None:
        init = _check_init(init)
    data = model.check_data(data)
    with seeded(seed):
        return method.fit(model, data, steps=steps, seed=seed, init=init, progress=progress, **options)


def infer(model_or_fit: Any, data: Any = None, query: str = "marginals", engine: str = "exact",
          **options: Any) -> Any:
    """Posterior queries: ``query="marginals"`` (posterior marginals) or ``"map"``
    (most probable assignment); families add their own (``"encode"``, ...).

    With a :class:`Fit` the fitted parameters are used; with a declaration, its own
    (declared) parameters. Where the ``exact`` engine does not fit the model (a VAE's
    ``query="encode"``, say), a fit is asked through the engine that made it."""
    if isinstance(model_or_fit, Fit):
        model, params = model_or_fit.model, model_or_fit.params
        if (engine == "exact" and query in model_or_fit._method().queries
                and not any(m.accepts(model) for m in registry.methods("exact"))):
            engine = model_or_fit.engine
    else:
        model, params = registry.as_declaration(model_or_fit), None
    method = registry.find_method(model, engine)
    if method.queries and query not in method.queries:
        raise ValueError(f"engine {engine!r} answers queries {list(method.queries)} on "
                         f"{type(model).__name__}, not {query!r}")
    return method.infer(model, params, data, query, **options)


def _check_init(init: Any) -> dict[str, torch.Tensor]:
    if not isinstance(init, dict):
        raise ValueError(f"init must be a dict of parameter tensors, got {type(init).__name__}")
    out = {}
    for k, v in init.items():
        t = torch.as_tensor(v)
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"init[{k!r}] contains NaN or inf")
        out[k] = t
    return out
