"""What the program-based methods share: tracing a declaration's Pyro program once to
learn its sites (parameters and their constraints, discrete latents, plate depth), and
setting up the param store from ``init``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.poutine.util import site_is_subsample


@dataclass
class ProgramInfo:
    """Sites of a traced program."""
    params: dict[str, Any] = field(default_factory=dict)          # name -> constraint
    continuous: list[str] = field(default_factory=list)           # latent sample sites
    discrete: list[str] = field(default_factory=list)             # latent discrete sites (enumerated)
    observed: list[str] = field(default_factory=list)
    max_plate_nesting: int = 0


def inspect_program(fn: Callable, args: tuple) -> ProgramInfo:
    """Trace ``fn(*args)`` once, outside the global param store."""
    with pyro.get_param_store().scope():
        try:
            tr = poutine.trace(fn).get_trace(*args)
        except Exception as exc:
            raise ValueError(f"the program failed on this data: {type(exc).__name__}: {exc}") from None
    info = ProgramInfo()
    for name, site in tr.nodes.items():
        if site["type"] == "param":
            info.params[name] = site["kwargs"].get("constraint", torch.distributions.constraints.real)
        elif site["type"] == "sample" and not site_is_subsample(site):  # plates record a sample site
            depth = sum(1 for f in site["cond_indep_stack"] if f.vectorized)
            info.max_plate_nesting = max(info.max_plate_nesting, depth)
            if site["is_observed"]:
                info.observed.append(name)
            elif site["fn"].support.is_discrete if hasattr(site["fn"], "support") else False:
                info.discrete.append(name)
            elif type(site["fn"]).__name__ != "Delta":
                info.continuous.append(name)
    return info


def enumerated(fn: Callable, info: ProgramInfo) -> Callable:
    """``fn`` with its discrete latent sites marked for parallel enumeration."""
    return config_enumerate(fn, default="parallel") if info.discrete else fn


def seed_param_store(info: ProgramInfo, init: dict | None) -> None:
    """Clear the param store and register ``init`` values with their sites' constraints."""
    pyro.clear_param_store()
    for name, value in (init or {}).items():
        if name not in info.params:
            raise ValueError(f"init names {name!r}, which is not a parameter of the program; "
                             f"parameters: {sorted(info.params)}")
        pyro.param(name, torch.as_tensor(value).clone(), constraint=info.params[name])


def param_values(names: Any) -> dict[str, torch.Tensor]:
    store = pyro.get_param_store()
    return {n: store[n].detach().clone() for n in names if n in store}
