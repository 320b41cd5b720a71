"""What the program-based methods share: tracing a declaration's Pyro program once to
learn its sites (parameters and their constraints, discrete latents, plate depth), tracing
a user's program without its data (for ``pg.compatible``), setting up the param store from
``init``, and the posterior queries of SVI and NUTS fits (``posterior``, ``predictive``,
``map``) and their sampling."""
from __future__ import annotations

import inspect
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.infer import config_enumerate, infer_discrete
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
    """The sites of a user's program (a :class:`probgen.declarations.UserProgram`) traced with
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
    own: :func:`probgen.fit` runs every fit in a fresh store)."""
    for name, value in (init or {}).items():
        if name not in info.params:
            raise ValueError(f"init names {name!r}, which is not a parameter of the program; "
                             f"parameters: {sorted(info.params)}")
        pyro.param(name, torch.as_tensor(value).clone(), constraint=info.params[name])


def param_values(names: Any) -> dict[str, torch.Tensor]:
    store = pyro.get_param_store()
    return {n: store[n].detach().clone() for n in names if n in store}


# ---- posterior queries and sampling of SVI / NUTS fits ----------------------------------------
#
# Both methods describe the posterior by draws of the continuous latent sites (guide draws for
# SVI, the kept NUTS draws for MCMC); the discrete sites, summed out in training, are drawn
# given each of them with Pyro's infer_discrete (Obermeyer et al. 2019, "Tensor variable
# elimination for plated factor graphs"): temperature 1 samples p(z | θ, data), temperature 0
# gives the joint MAP of the discrete sites given θ.

QUERIES = ("posterior", "predictive", "map")


def check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def fixed(program: Callable, values: dict[str, torch.Tensor], info: ProgramInfo) -> Callable:
    """``program`` with its ``pyro.param`` sites (``info.params``) substituted and its sample
    sites conditioned at ``values`` (a posterior draw: parameters, lifted parameters and
    latent sites)."""
    params = {k: v for k, v in values.items() if k in info.params}
    latents = {k: v for k, v in values.items() if k not in info.params}
    return poutine.condition(poutine.substitute(program, data=params), data=latents)


def _discrete_given(program: Callable, args: tuple, values: dict, info: ProgramInfo,
                    temperature: int) -> dict[str, torch.Tensor]:
    """The discrete latent sites of ``program(*args)`` with everything else fixed at
    ``values``: a posterior draw (``temperature=1``) or the joint MAP (``0``)."""
    fn = infer_discrete(config_enumerate(fixed(program, values, info), default="parallel"),
                        temperature=temperature, first_available_dim=-1 - info.max_plate_nesting)
    tr = poutine.trace(fn).get_trace(*args)
    return {s: tr.nodes[s]["value"].detach() for s in info.discrete if s in tr.nodes}


def posterior_draws(program: Callable, args: tuple, draws: list[dict[str, torch.Tensor]],
                    info: ProgramInfo) -> list[dict[str, torch.Tensor]]:
    """Joint posterior draws of every latent site: each of ``draws`` (parameters and the
    continuous sites) completed by a draw of the discrete sites given it (infer_discrete, T = 1)."""
    out = []
    for values in draws:
        latent = {k: v for k, v in values.items() if k in info.continuous}
        if info.discrete:
            latent.update(_discrete_given(program, args, values, info, temperature=1))
        out.append(latent)
    return out


def predictive_draws(program: Callable, args: tuple, draws: list[dict[str, torch.Tensor]],
                     info: ProgramInfo) -> dict[str, torch.Tensor]:
    """Replicates of the observed sites, ``{site: (S, ...)}``: the program run on ``args`` with
    the parameters and every latent site fixed at draw s and the observed sites sampled (their
    ``obs`` removed), i.e. draws from p(x_rep | data) = ∫ p(x_rep | z) p(z | data) dz
    (Gelman et al. 2013, Bayesian Data Analysis, §6.3)."""
    out = []
    for values in draws:
        # uncondition runs inside the conditioning: the observed sites are sampled, the latents fixed
        tr = poutine.trace(fixed(poutine.uncondition(program), values, info)).get_trace(*args)
        out.append({k: tr.nodes[k]["value"].detach() for k in info.observed})
    return stack(out)


def map_discrete(program: Callable, args: tuple, values: dict[str, torch.Tensor],
                 info: ProgramInfo) -> dict[str, torch.Tensor]:
    """The joint MAP of the discrete latent sites given the parameters and continuous sites at
    ``values`` (infer_discrete with temperature 0: max-product over the enumerated sites)."""
    if not info.discrete:
        raise ValueError("query='map' gives the most probable values of discrete latent sites, and "
                         "this program has none; query='posterior' gives draws of its latent sites")
    return _discrete_given(program, args, values, info, temperature=0)


def program_sample(program: Callable, model: Any, draws: Callable[[tuple], list[dict]]) -> dict:
    """Draws of every sample site of ``program`` called with no data
    (``model.program_args(None)``), ``{site: (n, ...)}``: each with the parameters and the
    continuous latent sites fixed at one of ``draws(args)`` (the fit's posterior) and every
    other site — the observed ones, and the discrete latents of the new examples — sampled
    from the model given them."""
    args = model.program_args(None)
    _check_runs_without_data(model, args)
    try:
        info = inspect_program(program, args)
    except ValueError as exc:
        raise ValueError(_NO_DATA.format(name=_name(model), why=str(exc))) from None
    try:
        runs = draws(args)
    except Exception as exc:  # a guide that needs the data, say
        raise ValueError(_NO_DATA.format(name=_name(model), why=f"{type(exc).__name__}: {exc}")) from None
    out = []
    for values in runs:
        try:
            tr = poutine.trace(fixed(program, values, info)).get_trace(*args)
        except Exception as exc:
            raise ValueError(_NO_DATA.format(name=_name(model), why=f"{type(exc).__name__}: {exc}")) from None
        out.append({k: s["value"].detach() for k, s in tr.nodes.items()
                    if s["type"] == "sample" and not site_is_subsample(s)})
    return stack(out)


_NO_DATA = ("fit.sample runs the program with no data, so that its observed sites are sampled; "
            "{name} cannot run so ({why}). Write it to run without data, e.g. "
            "def model(x=None): ... pyro.plate('N', len(x) if x is not None else 100) ... "
            "pyro.sample('x', ..., obs=x)")


def _name(model: Any) -> str:
    return getattr(model, "__name__", type(model).__name__)


def _check_runs_without_data(model: Any, args: tuple) -> None:
    fn = getattr(model, "fn", None)
    if fn is None:
        return
    try:
        inspect.signature(fn).bind(*args)
    except TypeError as exc:
        raise ValueError(_NO_DATA.format(name=_name(model), why=str(exc))) from None
    except ValueError:  # no signature to check: let the call tell
        pass


def stack(draws: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    if not draws:
        return {}
    return {k: torch.stack([d[k] for d in draws]) for k in draws[0]}
