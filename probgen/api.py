"""The public entry points: ``fit``, ``infer``, ``engines``, ``compatible``, ``load``."""
from __future__ import annotations

import copy
from typing import Any

import torch

from probgen import registry
from probgen.fit import Fit, load, own_param_store  # noqa: F401  (re-exported)
from probgen.random import seeded
from probgen.threads import limited, num_threads, set_num_threads  # noqa: F401  (re-exported)

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
    # a fit is a value: it trains its own copy of the declaration (neural declarations hold
    # networks that training would otherwise change in place) in its own Pyro param store
    model = copy.deepcopy(registry.as_declaration(model))
    method = registry.find_method(model, engine)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    known = method.fit_options(model)
    registry.check_options(method.engine, {k: v for k, v in options.items() if k not in known}, known)
    data = model.check_data(data)
    if init is not None:
        init = _check_init(model, method, init, data)
    with seeded(seed), limited(), own_param_store() as store:
        result = method.fit(model, data, steps=steps, seed=seed, init=init, progress=progress, **options)
    if store["params"]:  # e.g. an SVI guide's parameters, read back when the fit is evaluated
        result.state["param_store"] = {"params": {k: v.detach().clone() for k, v in store["params"].items()},
                                       "constraints": store["constraints"]}
    return result


def infer(model_or_fit: Any, data: Any = None, query: str = "marginals", engine: str | None = None,
          **options: Any) -> Any:
    """Posterior queries: ``query="marginals"`` (posterior marginals) or ``"map"``
    (most probable assignment); families add their own (``"encode"``, ...).

    With a :class:`Fit` the fitted parameters are used; with a declaration, its own
    (declared) parameters. ``engine``: the engine that answers; ``None`` = ``"exact"`` where
    the exact engine takes the model, else (a VAE's ``query="encode"``, say) the engine that
    made the fit. A named engine answers itself or refuses: ``engine="exact"`` never hands
    the query to an approximate engine. Options are the answering method's (checked by the
    core: an unknown one is a ``ValueError``)."""
    if isinstance(model_or_fit, Fit):
        with limited(), model_or_fit.own_param_store():
            return _infer(model_or_fit, data, query, engine, options)
    with limited(), own_param_store():
        return _infer(model_or_fit, data, query, engine, options)


def _infer(model_or_fit: Any, data: Any, query: str, engine: str, options: dict) -> Any:
    if isinstance(model_or_fit, Fit):
        model, params = model_or_fit.model, model_or_fit.params
    else:
        model, params = registry.as_declaration(model_or_fit), None
    if engine is None:
        exact = any(m.accepts(model) for m in registry.methods("exact"))
        engine = "exact" if exact or not isinstance(model_or_fit, Fit) else model_or_fit.engine
    method = registry.find_method(model, engine)
    registry.check_named_options(f"{query!r} query", method.infer, options, _INFER_ARGS + ("fit",))
    if isinstance(model_or_fit, Fit) and "fit" in registry.named_options(method.infer, _INFER_ARGS):
        options["fit"] = model_or_fit  # a method that answers from the fit's state (a guide, draws)
    if method.queries and query not in method.queries:
        raise ValueError(f"engine {engine!r} answers queries {list(method.queries)} on "
                         f"{type(model).__name__}, not {query!r}")
    return method.infer(model, params, data, query, **options)


_INFER_ARGS = ("model", "params", "data", "query")


def _check_init(model: Any, method: registry.Method, init: Any, data: Any) -> dict[str, torch.Tensor]:
    """``init`` as tensors, checked once for every method: a dict, finite, refused by a method
    that does not start from parameters, and — where the declaration can state its parameters
    (``param_shapes()`` or ``init_params``) — only its parameter names, each with its shape."""
    if not isinstance(init, dict):
        raise ValueError(f"init must be a dict of parameter tensors, got {type(init).__name__}")
    what = f"the {method.engine!r} method {method.name!r} for {type(model).__name__}"
    if not method.accepts_init:
        raise ValueError(f"{what} does not start from parameters, so it cannot use init"
                         + (f" ({method.init_hint})" if method.init_hint else ""))
    out = {}
    for k, v in init.items():
        try:
            t = torch.as_tensor(v)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"init[{k!r}] must be a tensor or array, got {type(v).__name__}") from None
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"init[{k!r}] contains NaN or inf")
        out[k] = t
    shapes = _param_shapes(model, data)
    if shapes is not None:
        unknown = sorted(set(out) - set(shapes))
        if unknown:
            raise ValueError(f"init names {unknown}, which are not parameters of {type(model).__name__}; "
                             f"parameters: {sorted(shapes)}")
        for k, t in out.items():
            if tuple(t.shape) != tuple(shapes[k]):
                raise ValueError(f"init[{k!r}] has shape {tuple(t.shape)}; {type(model).__name__} "
                                 f"expects {tuple(shapes[k])}")
    return out


def _param_shapes(model: Any, data: Any) -> dict[str, tuple[int, ...]] | None:
    """The declaration's parameter shapes: ``param_shapes()`` where it states them, else the
    shapes of a start from ``init_params`` (seeded and with the caller's random state restored,
    so checking ``init`` draws nothing from the fit's stream); ``None`` where it has neither
    (a user program: its method checks names against the traced ``pyro.param`` sites)."""
    if hasattr(model, "param_shapes"):
        return {k: tuple(v) for k, v in model.param_shapes().items()}
    try:
        with seeded(0):
            start = model.init_params(data, seed=0)
    except NotImplementedError:
        return None
    return {k: tuple(torch.as_tensor(v).shape) for k, v in start.items()}
