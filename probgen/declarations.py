"""Declaration kinds: what a model *is*, with no training loop.

* :class:`Declaration` – the base every model shares: data checking, parameter
  initialisation, exact log-density and sampling where the family has them.
* :class:`Program` – a declaration written as a Pyro program (``program(data)``
  with ``pyro.sample`` / ``pyro.param`` / ``pyro.plate``). Engines evaluate it at
  given parameters with ``pyro.poutine.substitute``.
* :class:`UserProgram` – a user's own Pyro function wrapped as a Program.

Family issues add further kinds next to these (factor graphs, layered energy
models, grammars). Engines test for the capabilities they need (methods and
attributes), never for concrete classes.
"""
from __future__ import annotations

import copy

import inspect
from typing import Any, Callable

import torch

from probgen import registry


class Declaration:
    """Base of all declarations.

    Class attributes:
      ``short_name`` – CLI / registry name (``"gmm"``); a class with one registers itself.
      ``default_engine`` – engine used by ``pg.fit(model, data)``.
      ``default_dataset`` – bundled dataset name the CLI uses without ``--data``.
    """

    short_name: str | None = None
    default_engine: str | None = None
    default_dataset: str | None = None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.__dict__.get("short_name"):
            registry.register_model(cls)

    # --- hooks a family overrides -------------------------------------------------
    def check_data(self, data: Any) -> Any:
        """Validated data in the form the engines use; ``ValueError`` naming the problem
        and the expected shape otherwise."""
        return data

    def init_params(self, data: Any, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Starting parameters (named as in ``Fit.params``)."""
        raise NotImplementedError(f"{type(self).__name__} has no parameter initialisation")

    @classmethod
    def for_data(cls, data: Any, **options: Any) -> "Declaration":
        """A default-sized instance for ``data`` (used by the CLI)."""
        return cls(**options)

    @classmethod
    def example(cls, seed: int = 0) -> tuple["Declaration", Any]:
        """A small instance with a small dataset, for the contract test and the CLI."""
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = getattr(self, "_repr_fields", ())
        inner = ", ".join(f"{f}={getattr(self, f)!r}" for f in fields)
        return f"{type(self).__name__}({inner})"


class Program(Declaration):
    """A declaration written as a Pyro program.

    Subclasses implement ``program(data)``; parameters are ``pyro.param`` sites named
    as in ``Fit.params``. ``observed`` names the observed sample sites.
    """

    observed: tuple[str, ...] = ()
    #: False for programs the generic SVI / NUTS methods cannot fit (e.g. an implicit sampler)
    generic_inference: bool = True

    def program(self, data: Any = None) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, data: Any = None) -> Any:
        return self.program(data)

    def program_args(self, data: Any) -> tuple:
        """Positional arguments the program is called with for ``data``."""
        return (data,)


class UserProgram(Program):
    """A user's own Pyro function ``fn(data)`` (or ``fn(*data)`` for a tuple) as a model."""

    def __init__(self, fn: Callable, spec: str | None = None):
        if not callable(fn):
            raise ValueError(f"a user program must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.spec = spec  # "path/to/file.py:name" when loaded from a file (kept for save/load)
        self.__name__ = getattr(fn, "__name__", "program")
        self._n_args = _n_positional(fn)

    def program(self, *args: Any) -> Any:
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
        # a fit's copy shares the function rather than re-importing its file
        new = copy.copy(self)
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
    """Load ``path/to/file.py:name`` as a :class:`UserProgram`."""
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
