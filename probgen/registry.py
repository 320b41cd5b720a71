"""Registries of declarations (models) and engines.

An *engine* (``"em"``, ``"svi"``, ...) is a named collection of *methods*. A method is
one algorithm for one kind of declaration: it states what it needs of a declaration
(`Method.accepts`, a capability check on protocols, never on a concrete model
class) and turns a declaration plus data into a `probgen.Fit`. Method modules
live under ``inference/<engine>/`` and register themselves with `register`.

Declarations register themselves by subclassing `probgen.declarations.Declaration`
with a ``short_name``. Both registries are filled lazily on first use by importing
``probgen.models`` and ``probgen.inference`` (the core never imports them at import time,
so imports keep pointing down).
"""
from __future__ import annotations

import functools
import importlib
import math
import sys
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from probgen.fit import Fit

#: Every engine probgen knows, in the order the README lists them, with one line each.
ENGINE_DESCRIPTIONS: dict[str, str] = {
    "exact": "sum-product / max-product: marginals, MAP, log-evidence",
    "em": "expectation-maximisation, closed-form M-steps",
    "meanfield": "fully factorised VI: CAVI / fixed-point updates",
    "bp": "loopy belief propagation: Bethe marginals, max-product MAP, Bethe log Z",
    "svi": "stochastic VI on the ELBO (autoguides, amortised encoders)",
    "mcmc": "MCMC: NUTS/HMC, Gibbs, CD/PCD, Langevin",
    "adversarial": "min-max training of an implicit sampler",
    "flow": "exact maximum likelihood through invertible transforms",
    "diffusion": "forward noising chain, learned reverse chain",
}

#: the arguments every ``Method.fit`` takes, which are not engine options
FIT_ARGS = ("model", "data", "steps", "seed", "init", "progress")

_METHODS: dict[str, list["Method"]] = {}
_MODELS: dict[str, type] = {}
_loaded = False


class Method:
    """One algorithm of an engine for the declarations that pass `accepts`.

    Subclasses set ``engine`` (the engine name) and ``name`` and implement
    `accepts` and `fit`. The defaults of `log_prob`,
    `sample` and `infer` delegate to the declaration's own exact
    evaluation (``model.log_prob(params, x)``, ``model.sample(params, n, seed)``).
    """

    engine: str = ""
    name: str = ""
    #: what ``Fit.log_prob`` returns for fits made by this method: "exact" | "bound" | "estimate"
    log_prob_kind: str = "exact"
    #: the queries `probgen.infer` may ask of this method
    queries: tuple[str, ...] = ()
    #: True for methods that handle missing cells (NaN in the checked data); the others are
    #: refused such data by `probgen.fit`
    missing_values: bool = False
    #: one line for error messages: what this method needs of a declaration
    needs: str = ""
    #: a generic method (any Pyro program) is tried only after every specific method of its
    #: engine, whatever the import order
    generic: bool = False
    #: the ``history`` key every record of a fit by this method carries: the objective, per
    #: example (per data item the user passed), e.g. "log_likelihood", "elbo", "loss"
    objective: str = ""
    #: what one of ``steps`` is for this method ("EM iterations", "gradient steps", ...)
    steps_unit: str = ""
    #: whether `fit` starts from parameters (``init=``); the core refuses ``init`` for a
    #: method that does not (closed-form counting, say), with ``init_hint`` saying what to pass instead
    accepts_init: bool = True
    init_hint: str = ""
    #: the device types (``pg.fit(device=...)``) the method's kernels run on; another is
    #: refused by the core, with ``device_hint`` saying why (a compiled CPU kernel, NumPy code)
    devices: tuple[str, ...] = ("cpu",)
    #: how the method's fit runs under ``torch.distributed`` (`probgen.distributed`):
    #: ``"data"`` (each rank fits its block of the rows; the loop combines them), ``"chains"``
    #: (each rank runs its share of the chains on the whole data) or ``None`` (each rank
    #: fits the whole data, alike)
    parallel: str | None = None
    #: the queries of `infer` that answer row by row — one answer per evidence row,
    #: sentence or sequence, each independent of the others: under ``torch.distributed``
    #: ``pg.infer`` gives each rank its block of the rows (`query_rows`) and joins the
    #: ranks' answers in order (`join_answers`); any other query runs whole on every rank
    row_queries: tuple[str, ...] = ()
    device_hint: str = ""

    def accepts(self, model: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None,
            init: dict | None, progress: bool, **options: Any) -> "Fit":  # pragma: no cover
        raise NotImplementedError

    def fit_options(self, model: Any) -> tuple[str, ...]:
        """The options `fit` takes (by default, its named keyword arguments): the core
        refuses any other before the fit starts. A method that hands options on to another
        method (one fit per class, say) names that method's."""
        return named_options(self.fit, FIT_ARGS)

    def log_prob(self, fit: "Fit", x: Any, **options: Any):
        return fit.model.log_prob(fit.params, fit.model.check_data(x))

    def sample(self, fit: "Fit", n: int, seed: int | None = None):
        return fit.model.sample(fit.params, n, seed=seed)

    def infer(self, model: Any, params: dict | None, data: Any, query: str, **options: Any):
        raise ValueError(f"engine {self.engine!r} answers no queries on {type(model).__name__}")

    def query_rows(self, model: Any, data: Any, query: str, options: dict) -> tuple[Any, dict] | None:
        """For a query in `row_queries`: the checked rows (a form
        `probgen.data.take` splits) and the options each block is answered with —
        whatever depends on all the rows (which variables are unobserved somewhere, the padded
        width) is fixed here on the whole data, so that the joined answer is the whole one.
        ``None``: this call is not over rows (one assignment), every rank answers it whole."""
        return model.check_data(data), options

    def join_answers(self, parts: list, query: str) -> Any:
        """The answer for all the rows from the answers for consecutive blocks of them, in
        order (`probgen.data.join`)."""
        from probgen.data import join
        return join(parts)

    def save_state(self, fit: "Fit") -> dict:
        """``fit.state`` in the form `probgen.Fit.save` writes (plain data, see
        `probgen.plain`); a method whose state holds live objects (a Pyro guide)
        replaces them by what rebuilds them in `load_state`."""
        return dict(fit.state)

    def load_state(self, model: Any, state: dict) -> dict:
        """The inverse of `save_state`, for a fit of ``model`` read by `probgen.load`."""
        return state


def check_options(what: str, options: dict, known: tuple[str, ...] = ()) -> None:
    """Refuse the keyword options a method did not take, in one message format for every
    engine and query: ``ValueError`` naming the unknown ones and listing the known ones.
    ``what``: the engine or query they were given to (``"em"``, ``"'map' query"``)."""
    if options:
        raise ValueError(f"unknown {what} options {sorted(options)}; known: {', '.join(known) or 'none'}")


def check_tol(tol: Any) -> float | None:
    """A convergence tolerance: ``None`` (never stop early: run every step) or a number >= 0."""
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0):
        raise ValueError(f"tol must be None (run all steps) or a number >= 0, got {tol!r}")
    return tol


def converged(prev: float | None, cur: float, tol: float | None) -> bool:
    """The one stopping rule of every method that takes ``tol``: the relative change of the
    per-example objective, ``|cur - prev| / max(|prev|, tiny) < tol``. ``tol=None`` (or no
    previous value) never stops. Relative, so that it does not depend on the data set's size
    or the objective's units (nats per example or per token)."""
    if tol is None or prev is None or not math.isfinite(prev):
        return False
    return abs(cur - prev) / max(abs(prev), sys.float_info.min) < tol


def named_options(fn: Callable, skip: tuple[str, ...]) -> tuple[str, ...]:
    """The keyword options a method's function takes by name (its signature less ``skip``
    and ``**options``): what the core lets through to it, so that a method cannot forget
    to refuse an unknown option."""
    names = _keyword_names(getattr(fn, "__func__", fn))
    if hasattr(fn, "__func__"):  # a bound method: its first parameter is bound already
        names = names[1:]
    return tuple(n for n in names if n not in skip)


@functools.lru_cache(maxsize=None)
def _keyword_names(fn: Callable) -> tuple[str, ...]:
    """A function's parameters that can be passed by name (read once per function: the
    signature is looked up on every query and fit)."""
    import inspect
    params = inspect.signature(fn).parameters.values()
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def check_named_options(what: str, fn: Callable, options: dict, skip: tuple[str, ...]) -> None:
    """Refuse the ``options`` that ``fn`` does not take by name (`named_options`)."""
    known = named_options(fn, skip)
    check_options(what, {k: v for k, v in options.items() if k not in known}, known)


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a `Method` to its engine's registry."""
    if cls.engine not in ENGINE_DESCRIPTIONS:
        raise ValueError(f"unknown engine name {cls.engine!r} for method {cls.__name__}")
    methods = _METHODS.setdefault(cls.engine, [])
    if not any(type(m) is cls for m in methods):
        methods.append(cls())
        methods.sort(key=lambda m: m.generic)  # stable: specific methods first, in import order
    return cls


def register_model(cls: type) -> None:
    """Called by ``Declaration.__init_subclass__`` for classes with a ``short_name``."""
    _MODELS[cls.short_name] = cls


def _load() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        importlib.import_module("probgen.models")
        importlib.import_module("probgen.inference")


def engines() -> list[str]:
    """Names of all engines that have at least one method, in the README's order.

    Returns:
      A list of engine names (``"exact"``, ``"em"``, ``"meanfield"``, ...).

    Examples:
        >>> import probgen as pg
        >>> pg.engines()
        ['exact', 'em', 'meanfield', 'bp', 'svi', 'mcmc', 'adversarial', 'flow', 'diffusion']
    """
    _load()
    return [e for e in ENGINE_DESCRIPTIONS if _METHODS.get(e)]


def models() -> dict[str, type]:
    """Built-in declarations by short name (``"gmm"`` -> ``GaussianMixture``)."""
    _load()
    return dict(_MODELS)


def methods(engine: str) -> list[Method]:
    _load()
    return list(_METHODS.get(engine, []))


def compatible(model: Any) -> list[str]:
    """Engine names with a method that accepts ``model``.

    Args:
      model: a declaration or a Pyro function ``fn(data)``.

    Returns:
      The engines (in `engines` order) that ``pg.fit(model, data, engine=e)`` takes.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import GaussianMixture, HMM
        >>> pg.compatible(GaussianMixture(2, 2))
        ['exact', 'em', 'svi', 'mcmc']
        >>> pg.compatible(HMM(2, n_symbols=3, bayesian=True))  # variational Bayes: meanfield
        ['exact', 'meanfield']
    """
    _load()
    model = as_declaration(model)
    return [e for e in engines() if any(m.accepts(model) for m in _METHODS[e])]


def find_method(model: Any, engine: str | None, name: str | None = None) -> Method:
    """The method of ``engine`` that accepts ``model``; clear ``ValueError`` otherwise."""
    _load()
    if engine is None:
        engine = getattr(model, "default_engine", None)
        if engine is None:
            raise ValueError(
                f"{type(model).__name__} has no default engine; pass engine= one of {compatible(model)}")
    if not isinstance(engine, str):
        raise ValueError(f"engine must be a name (one of {engines()}), got {type(engine).__name__}")
    if engine not in _METHODS:
        raise ValueError(f"unknown engine {engine!r}; engines that fit {_describe(model)}: {compatible(model)}"
                         f" (all engines: {engines()})")
    for m in _METHODS[engine]:
        if (name is None or m.name == name) and m.accepts(model):
            return m
    needs = "; ".join(m.needs for m in _METHODS[engine] if m.needs)
    raise ValueError(f"engine {engine!r} does not fit {_describe(model)}"
                     + (f" (it needs: {needs})" if needs else "")
                     + f"; engines that do: {compatible(model)}")


def _describe(model: Any) -> str:
    return getattr(model, "__name__", None) or type(model).__name__


def as_declaration(model: Any) -> Any:
    """A declaration for ``model``: declarations pass through, plain callables are
    wrapped as user Pyro programs."""
    from probgen.declarations import Declaration, UserProgram
    if isinstance(model, Declaration):
        return model
    from probgen.fit import Fit
    if isinstance(model, Fit):
        return model.model
    if callable(model):
        return UserProgram(model)
    raise ValueError(f"a model must be a probgen declaration or a Pyro function, got {type(model).__name__}")


def resolve_model_name(name: str) -> type:
    """A built-in declaration class by short name, class name (case-insensitive) or one of
    its ``aliases`` (a class attribute, e.g. ``("ae",)``)."""
    table = models()
    if name in table:
        return table[name]
    for cls in table.values():
        if cls.__name__.lower() == name.lower() or name in getattr(cls, "aliases", ()):
            return cls
    raise ValueError(f"unknown model {name!r}; built-in models: {sorted(table)}"
                     " (or path/to/file.py:function for your own Pyro program)")


Callback = Callable[[dict], None]
