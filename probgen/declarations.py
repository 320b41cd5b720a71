"""Declaration kinds: what a model *is*, with no training loop.

* `Declaration` – the base every model shares: data checking, parameter
  initialisation, exact log-density and sampling where the family has them.
* `Program` – a declaration written as a Pyro program (``program(data)``
  with ``pyro.sample`` / ``pyro.param`` / ``pyro.plate``). Engines evaluate it at
  given parameters with ``pyro.poutine.substitute``.
* `UserProgram` – a user's own Pyro function wrapped as a Program.

Family issues add further kinds next to these (factor graphs, layered energy
models, grammars). Engines test for the capabilities they need (methods and
attributes), never for concrete classes.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import torch

from probgen import registry


def _recording_arguments(init: Callable) -> Callable:
    """``init`` that first records the arguments of the outermost constructor call (a
    subclass's ``super().__init__(...)`` does not overwrite what the user passed)."""
    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if "_init_arguments" not in self.__dict__:
            self.__dict__["_init_arguments"] = (args, dict(kwargs))
        init(self, *args, **kwargs)
    return __init__


class Declaration:
    """Base of all declarations: a model that states what it is (its parameters, data,
    structure) and never imports an engine; the registry's methods say which engines fit it.

    Attributes:
      short_name: CLI / registry name (``"gmm"``); a class with one registers itself.
      default_engine: engine used by ``pg.fit(model, data)``.
      default_dataset: bundled dataset name the CLI uses without ``--data``.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import GaussianMixture
        >>> model, data = GaussianMixture.example(seed=0)  # a small instance and its data
        >>> isinstance(model, pg.Declaration), model.short_name, model.default_engine, tuple(data.shape)
        (True, 'gmm', 'em', (60, 2))
        >>> model.init_arguments  # how fit.save writes it: the constructor's arguments
        ((2, 2), {})
    """

    short_name: str | None = None
    default_engine: str | None = None
    default_dataset: str | None = None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_arguments(cls.__dict__["__init__"])
        if cls.__dict__.get("short_name"):
            registry.register_model(cls)

    @property
    def init_arguments(self) -> tuple[tuple, dict] | None:
        """``(args, kwargs)`` this declaration was constructed with: ``type(self)(*args, **kwargs)``
        rebuilds it (how `probgen.Fit.save` writes a declaration, with no pickled code);
        ``None`` for an object that did not go through its constructor."""
        if type(self).__init__ is object.__init__:
            return (), {}
        return self.__dict__.get("_init_arguments")

    # --- hooks a family overrides -------------------------------------------------
    def check_data(self, data: Any) -> Any:
        """Validated data in the form the engines use.

        Args:
          data: the user's data.

        Returns:
          The data as the engines take them (e.g. a float64 ``(N, D)`` tensor).

        Raises:
          ValueError: naming the problem and the expected shape.
        """
        return data

    def init_params(self, data: Any, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Starting parameters (named as in ``Fit.params``).

        Args:
          data: the checked data.
          seed: seeds a random start.

        Returns:
          ``{name: tensor}`` with the declaration's shapes.
        """
        raise NotImplementedError(f"{type(self).__name__} has no parameter initialisation")

    @classmethod
    def for_data(cls, data: Any, **options: Any) -> "Declaration":
        """A default-sized instance for ``data`` (used by the CLI).

        Args:
          data: the data to size it for.
          **options: constructor arguments that override the defaults.

        Returns:
          A declaration.
        """
        return cls(**options)

    @classmethod
    def example(cls, seed: int = 0) -> tuple["Declaration", Any]:
        """A small instance with a small dataset, for the contract test and the CLI.

        Args:
          seed: seeds the data (and any random parameters).

        Returns:
          ``(declaration, data)``.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = getattr(self, "_repr_fields", ())
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in fields)
        return f"{type(self).__name__}({inner})"


class Program(Declaration):
    """A declaration written as a Pyro program.

    Subclasses implement ``program(data)``; parameters are ``pyro.param`` sites named
    as in ``Fit.params``. ``observed`` names the observed sample sites. The generic engines
    (``svi``, ``mcmc``) fit any program (Bingham et al. 2019, Pyro).

    Examples:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from torch.distributions import constraints
        >>> import probgen as pg
        >>> class Coin(pg.Program):
        ...     observed = ("x",)
        ...     def program(self, data=None):
        ...         p = pyro.param("p", torch.tensor(0.5), constraint=constraints.unit_interval)
        ...         with pyro.plate("flips", 10 if data is None else len(data)):
        ...             return pyro.sample("x", dist.Bernoulli(p), obs=data)
        >>> x = torch.tensor([1.0, 1.0, 1.0, 0.0] * 5)
        >>> pg.compatible(Coin())
        ['svi', 'mcmc']
        >>> fit = pg.fit(Coin(), x, engine="svi", steps=300, lr=0.05, seed=0, progress=False)
        >>> abs(float(fit.params["p"]) - 0.75) < 0.01  # the maximum-likelihood 15 / 20
        True
    """

    observed: tuple[str, ...] = ()
    #: False for programs the generic SVI / NUTS methods cannot fit (e.g. an implicit sampler)
    generic_inference: bool = True

    def program(self, data: Any = None) -> Any:  # pragma: no cover - abstract
        """The Pyro program: ``pyro.param`` / ``pyro.sample`` statements over ``data``.

        Args:
          data: the checked data (``None``: sample from the model).

        Returns:
          Whatever the program returns (usually the observed values).
        """
        raise NotImplementedError

    def __call__(self, data: Any = None) -> Any:
        return self.program(data)

    def program_args(self, data: Any) -> tuple:
        """Positional arguments the program is called with for ``data``."""
        return (data,)


class UserProgram(Program):
    """A user's own Pyro function ``fn(data)`` (or ``fn(*data)`` for a tuple) as a model.

    ``pg.fit(fn, data)`` wraps a plain function in one; the generic engines fit it (``em``
    where every latent site is discrete and enumerable, ``svi``, ``mcmc``).

    Args:
      fn: the Pyro function.
      spec: ``"path/to/file.py:name"`` when it was read from a file (kept for save / load).

    Examples:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from torch.distributions import constraints
        >>> import probgen as pg
        >>> def coin(data):
        ...     p = pyro.param("p", torch.tensor(0.5), constraint=constraints.unit_interval)
        ...     with pyro.plate("flips", len(data)):
        ...         pyro.sample("x", dist.Bernoulli(p), obs=data)
        >>> x = torch.tensor([1.0, 1.0, 1.0, 0.0] * 5)
        >>> fit = pg.fit(coin, x, engine="em", seed=0, progress=False)
        >>> fit.model, round(float(fit.params["p"]), 4)
        (UserProgram(coin), 0.75)
    """

    def __init__(self, fn: Callable, spec: str | None = None):
        if not callable(fn):
            raise ValueError(f"a user program must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.spec = spec  # "path/to/file.py:name" when loaded from a file (kept for save/load)
        self.__name__ = getattr(fn, "__name__", "program")
        self._n_args = _n_positional(fn)

    def program(self, *args: Any) -> Any:
        """Call the user's function.

        Args:
          *args: its positional arguments (`program_args` of the data).

        Returns:
          What the function returns.
        """
        return self.fn(*args)

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)

    def program_args(self, data: Any) -> tuple:
        if data is None:
            return ()
        if isinstance(data, tuple) and self._n_args != 1:
            return data
        return (data,)

    def check_data(self, data: Any) -> Any:
        from probgen.data import check_tensor_tree
        return check_tensor_tree(data)

    def __deepcopy__(self, memo: dict) -> "UserProgram":
        # a program holds no trained state (its parameters live in each fit's param store):
        # a fit's copy shares the user's very function, neither re-importing its file (as
        # copy.copy would, through __getstate__) nor duplicating a function decorated with
        # config_enumerate (a partial object); a saved fit names it by its module attribute
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        memo[id(self)] = new
        return new

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.spec:  # functions loaded from a file are re-imported on load
            state["fn"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.fn is None and self.spec:
            self.fn = load_program(self.spec).fn

    def __repr__(self) -> str:
        return f"UserProgram({self.spec or self.__name__})"


def _n_positional(fn: Callable) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 1
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def load_program(spec: str) -> UserProgram:
    """Load ``path/to/file.py:name`` as a `UserProgram`."""
    import importlib.util
    import os
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py"):
        raise ValueError(f"a program is given as path/to/file.py:function, got {spec!r}")
    if not os.path.exists(path):
        raise ValueError(f"no such file: {path}")
    module_name = "probgen_user_" + os.path.splitext(os.path.basename(path))[0]
    mod_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise ValueError(f"{path} defines no {name!r}")
    obj = getattr(module, name)
    if isinstance(obj, Declaration):
        return obj
    return UserProgram(obj, spec=os.path.abspath(path) + ":" + name)
