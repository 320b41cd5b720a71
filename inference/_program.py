"""A Pyro program's sites, for the program-based methods (generic SVI, NUTS, generic EM):
tracing a declaration's program once to learn its sites (parameters and their constraints,
continuous and discrete latents, plate depth), tracing a user's program without its data
(for ``pg.compatible``), marking discrete sites for enumeration, and setting up and reading
the param store. The posterior queries of the fits are `probgen.inference._posterior`."""
from __future__ import annotations

import inspect
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.poutine.util import site_is_subsample

from probgen.random import seeded


@dataclass
class ProgramInfo:
    """Sites of a traced program."""
    params: dict[str, Any] = field(default_factory=dict)          # name -> constraint
    continuous: list[str] = field(default_factory=list)           # latent sample sites
    discrete: list[str] = field(default_factory=list)             # latent discrete sites (enumerated)
    observed: list[str] = field(default_factory=list)
    max_plate_nesting: int = 0
    #: the data items: the size of the outermost vectorised plate around every observed site
    #: (1 when there is none), the "per example" of a program's objective
    n_examples: int = 1


def inspect_program(fn: Callable, args: tuple) -> ProgramInfo:
    """Trace ``fn(*args)`` once, outside the global param store."""
    with pyro.get_param_store().scope():
        try:
            tr = poutine.trace(fn).get_trace(*args)
        except Exception as exc:
            raise ValueError(f"the program failed on this data: {type(exc).__name__}: {exc}") from None
    info = ProgramInfo()
    common = None  # the plates (name, dim, size) every observed site is in
    for name, site in tr.nodes.items():
        if site["type"] == "param":
            info.params[name] = site["kwargs"].get("constraint", torch.distributions.constraints.real)
        elif site["type"] == "sample" and not site_is_subsample(site):  # plates record a sample site
            depth = sum(1 for f in site["cond_indep_stack"] if f.vectorized)
            info.max_plate_nesting = max(info.max_plate_nesting, depth)
            if site["is_observed"]:
                info.observed.append(name)
                plates = {(f.name, f.dim, f.size) for f in site["cond_indep_stack"] if f.vectorized}
                common = plates if common is None else common & plates
            elif site["fn"].support.is_discrete if hasattr(site["fn"], "support") else False:
                info.discrete.append(name)
            elif type(site["fn"]).__name__ != "Delta":
                info.continuous.append(name)
    if common:
        info.n_examples = int(min(common, key=lambda f: f[1])[2])  # the leftmost batch dim's plate
    return info


# ---- a user's program traced without its data -----------------------------------------------

class _Placeholder:
    """Stands for a program's data argument when ``pg.compatible`` traces the program without
    data: it has length 1 and indexes to itself, and any computation with it fails. A sample
    site given ``obs=`` the placeholder is therefore an observed site, one given no ``obs`` a
    latent one: what a method must know before it accepts the program. A program that
    computes with its data cannot run on the placeholder, and is then judged on its data at
    fit time."""

    shape = torch.Size([1])

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: Any) -> "_Placeholder":
        return self

    def __iter__(self):
        yield self


_DATA_FREE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def inspect_without_data(model: Any) -> ProgramInfo | None:
    """The sites of a user's program (a `probgen.declarations.UserProgram`) traced with
    a placeholder for every data argument (positional parameters without a default or with
    default ``None``), or ``None`` when the program cannot run so. Seeded, with the caller's
    random state, param store and handlers left as they were; cached per function."""
    fn = getattr(model, "fn", None)
    if fn is None:
        return None
    try:
        return _DATA_FREE[fn]
    except (KeyError, TypeError):  # not seen yet, or not weak-referenceable
        pass
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    args = tuple(_Placeholder() if p.default is p.empty or p.default is None else p.default
                 for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    with seeded(0), poutine.block(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            info = inspect_program(fn, args)
        except ValueError:
            info = None
    try:
        _DATA_FREE[fn] = info
    except TypeError:
        pass
    return info


def enumerated(fn: Callable, info: ProgramInfo) -> Callable:
    """``fn`` with its discrete latent sites marked for parallel enumeration."""
    return config_enumerate(fn, default="parallel") if info.discrete else fn


def seed_param_store(info: ProgramInfo, init: dict | None) -> None:
    """Register ``init`` values with their sites' constraints in the param store (the fit's
    own: `probgen.fit` runs every fit in a fresh store)."""
    for name, value in (init or {}).items():
        if name not in info.params:
            raise ValueError(f"init names {name!r}, which is not a parameter of the program; "
                             f"parameters: {sorted(info.params)}")
        pyro.param(name, torch.as_tensor(value).clone(), constraint=info.params[name])


def param_values(names: Any) -> dict[str, torch.Tensor]:
    store = pyro.get_param_store()
    return {n: store[n].detach().clone() for n in names if n in store}


# ---- the examples a program declares (data-parallel fits split them over ranks) ----------------

def traced(model: Any, args: tuple) -> Any:
    """One run of the program, traced in a forked random state and param store scope (it
    changes nothing of the fit); ``None`` where it fails (the method's own trace says why)."""
    with torch.random.fork_rng(devices=[]), pyro.get_param_store().scope(), poutine.block():
        try:
            return poutine.trace(model.program).get_trace(*args)
        except Exception:
            return None


def data_plates(model: Any, data: Any, args: tuple) -> set[str]:
    """The names of the plates of size ``len(data)`` that hold every observed site (see
    `examples`; empty where there are none)."""
    if examples(model, data, args) is None:
        return set()
    tr = traced(model, args)
    n = len(data)
    observed = [s for s in tr.nodes.values() if s["type"] == "sample" and s["is_observed"]]
    names = [{f.name for f in s["cond_indep_stack"] if f.size == n and f.vectorized} for s in observed]
    return set.intersection(*names) if names else set()


def examples(model: Any, data: Any, args: tuple) -> int | None:
    """The number of examples the program declares for ``data``: ``len(x)`` where ``x``, the
    data, is a tensor (or has a length: sequences, not a tuple or dict of arguments) and every
    observed site of one run lies in a plate of that size (as ``fit.log_prob`` of a NUTS fit
    reads it); else ``None``. The run is traced in a forked random state and param store
    scope, so that it changes nothing of the fit."""
    if isinstance(data, torch.Tensor):
        if data.dim() == 0:
            return None
    elif isinstance(data, (tuple, list, dict, str)) or not hasattr(data, "__len__"):
        return None
    n = len(data)
    with torch.random.fork_rng(devices=[]), pyro.get_param_store().scope(), poutine.block():
        try:
            tr = poutine.trace(model.program).get_trace(*args)
        except Exception:  # the method's own trace says why a program fails
            return None
    observed = [s for s in tr.nodes.values() if s["type"] == "sample" and s["is_observed"]]
    if observed and all(any(f.size == n and f.vectorized for f in s["cond_indep_stack"]) for s in observed):
        return n
    return None
