"""Stochastic variational inference for any Pyro program.

Discrete latent sites are enumerated out (``TraceEnum_ELBO``); continuous latent
sites get an autoguide (``guide="normal"`` mean-field, ``"delta"`` MAP,
``"mvn"`` full-rank) or the user's own guide callable. ``pyro.param`` sites of the
program are learned by maximum likelihood alongside.
Reference: Hoffman et al. (2013), Stochastic Variational Inference; Pyro's SVI.
"""
from __future__ import annotations

from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal
from pyro.infer.autoguide.initialization import init_to_feasible, init_to_value

from probgen.declarations import Program
from probgen.fit import Fit, own_param_store
from probgen.progress import progress as bar
from probgen.registry import Method, check_options, register

from .._program import enumerated, inspect_program, param_values, seed_param_store

GUIDES = {"normal": AutoNormal, "delta": AutoDelta, "mvn": AutoMultivariateNormal}


def _empty_guide(*args: Any, **kwargs: Any) -> None:
    pass


@register
class ProgramSVI(Method):
    engine = "svi"
    name = "program"
    objective = "loss"
    steps_unit = "gradient steps"
    generic = True
    needs = "a Pyro program"

    def accepts(self, model: Any) -> bool:
        return isinstance(model, Program) and getattr(model, "generic_inference", True)

    def fit(self, model: Program, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, guide: Any = "normal", lr: float = 0.01, lr_decay: float = 0.1,
            num_particles: int = 1,
            **options: Any) -> Fit:
        check_options("svi", options, ("guide", "lr", "lr_decay", "num_particles"))
        steps = 1000 if steps is None else steps
        args = model.program_args(data)
        info = inspect_program(model.program, args)
        program = enumerated(model.program, info)
        latent_init = {k: v for k, v in (init or {}).items() if k in info.continuous}
        seed_param_store(info, {k: v for k, v in (init or {}).items() if k not in latent_init})
        if info.continuous and not latent_init and hasattr(model, "init_params"):
            latent_init = _default_start(model, data, seed, info.continuous)
        guide_fn = self._guide(guide, program, info, latent_init)
        elbo = _elbo(info.discrete, info.max_plate_nesting, num_particles)
        # the learning rate decays geometrically to lr * lr_decay, so the last iterate settles
        optim = pyro.optim.ClippedAdam({"lr": lr, "lrd": lr_decay ** (1 / max(steps, 1))})
        svi = SVI(program, guide_fn, optim, elbo)
        history = []
        for step in bar(range(steps), desc="svi", enabled=progress):
            loss = svi.step(*args)
            if not torch.isfinite(torch.tensor(loss)):
                raise ValueError(f"the ELBO became non-finite at step {step}; try a smaller lr")
            history.append({"step": step, "loss": float(loss)})
        params = param_values(info.params)
        if info.continuous and guide_fn is not _empty_guide:
            # point summaries of the latent globals (e.g. a Bayesian mixture's weights / loc):
            # the guide's median, or the mean of 100 guide draws where it has no median (flows)
            with torch.no_grad():
                try:
                    summary = guide_fn.median(*args)
                except (AttributeError, NotImplementedError):
                    draws = [_draw(guide_fn, args, info.continuous) for _ in range(100)]
                    summary = {k: torch.stack([d[k] for d in draws]).mean(0) for k in draws[0]}
            params.update({k: v.detach().clone() for k, v in summary.items() if k in info.continuous})
        state = {"guide": guide_fn if guide_fn is not _empty_guide else None,
                 # what an autoguide is set up with (its sites' shapes): rebuilt from it on load
                 "guide_args": args if isinstance(guide_fn, tuple(GUIDES.values())) else None,
                 "guide_params": param_values(n for n in pyro.get_param_store() if n not in info.params),
                 "latent_sites": list(info.continuous), "discrete": list(info.discrete), "max_plate_nesting": info.max_plate_nesting}
        return Fit(model, params, history, engine=self.engine, method=self.name, state=state,
                   options={"guide": guide if isinstance(guide, str) else "custom", "lr": lr},
                   log_prob_kind=self._kind(model, info))

    @staticmethod
    def _guide(guide: Any, program: Any, info: Any, start: dict | None = None) -> Any:
        if not info.continuous:
            return _empty_guide
        if callable(guide):
            return guide
        if guide not in GUIDES:
            raise ValueError(f"guide must be one of {sorted(GUIDES)} or a callable, got {guide!r}")
        hidden = poutine.block(program, hide=info.discrete) if info.discrete else program
        # the autoguide starts at ``start`` (init= values, or the declaration's own seeded
        # init_params) where given: a symmetric start cannot separate a mixture's components
        init_loc = init_to_value(values=start) if start else init_to_feasible
        return GUIDES[guide](hidden, init_loc_fn=init_loc)

    @staticmethod
    def _kind(model: Any, info: Any) -> str:
        return "exact" if hasattr(model, "log_prob") and not info.continuous else "estimate"

    def save_state(self, fit: Fit) -> dict:
        """An autoguide is written as its kind (its parameters are in ``param_store``) and
        rebuilt by :meth:`load_state`; a guide function by its importable name."""
        state = dict(fit.state)
        guide = state.get("guide")
        if isinstance(guide, tuple(GUIDES.values())):
            state["guide"] = {"autoguide": next(k for k, cls in GUIDES.items() if type(guide) is cls)}
        elif isinstance(guide, torch.nn.Module):
            raise ValueError(f"cannot save an SVI fit whose guide is a {type(guide).__name__}: fits with "
                             f"guide= one of {sorted(GUIDES)}, or a guide function defined at the top "
                             "level of a module, can be saved")
        return state

    def load_state(self, model: Program, state: dict) -> dict:
        spec = state.get("guide")
        if not (isinstance(spec, dict) and "autoguide" in spec):
            return state
        args = tuple(state["guide_args"])
        info = inspect_program(model.program, args)
        guide = self._guide(spec["autoguide"], enumerated(model.program, info), info)
        # an autoguide makes its parameters on its first call: make them now, reading the fit's
        # own (saved) values, without touching the caller's random state or param store
        with torch.random.fork_rng(devices=[]), own_param_store(state.get("param_store")):
            guide(*args)
        return dict(state, guide=guide)

    def log_prob(self, fit: Fit, x: Any, num_samples: int = 100, **options: Any) -> torch.Tensor:
        """Exact per-example log p(x) for declarations with no latent globals; otherwise a
        Monte Carlo estimate: the posterior predictive over guide draws for declarations
        with ``log_prob``, or importance sampling of the whole data set's log-evidence
        (a 0-d tensor) for user programs."""
        model, x = fit.model, fit.model.check_data(x)
        guide, sites = fit.state.get("guide"), fit.state.get("latent_sites", [])
        if hasattr(model, "log_prob"):
            if not sites:
                return model.log_prob(fit.params, x)
            draws = [dict(fit.params, **_draw(guide, model.program_args(x), sites)) for _ in range(num_samples)]
            lps = torch.stack([model.log_prob(d, x) for d in draws])
            return torch.logsumexp(lps, 0) - torch.log(torch.tensor(float(num_samples)))
        return _importance_log_evidence(fit, model.program_args(x), num_samples)

    def sample(self, fit: Fit, n: int, seed: int | None = None) -> Any:
        from probgen.random import seeded
        with seeded(seed):
            if hasattr(fit.model, "sample"):
                params = dict(fit.params)
                if fit.state.get("latent_sites"):
                    params.update(_draw(fit.state["guide"], fit.model.program_args(None), fit.state["latent_sites"]))
                return fit.model.sample(params, n, seed=seed)
            predictive = pyro.infer.Predictive(poutine.substitute(fit.model.program, data=fit.params),
                                               guide=fit.state.get("guide"), num_samples=n)
            return {k: v.detach() for k, v in predictive().items()}


def _default_start(model: Any, data: Any, seed: int | None, sites: list[str]) -> dict:
    """The declaration's ``init_params(data, seed)`` restricted to the latent ``sites``."""
    try:
        start = model.init_params(data, seed=seed)
    except (NotImplementedError, ValueError, TypeError):
        return {}
    return {k: v for k, v in start.items() if k in sites}


def _draw(guide: Any, args: tuple, sites: list[str]) -> dict[str, torch.Tensor]:
    tr = poutine.trace(guide).get_trace(*args)
    return {s: tr.nodes[s]["value"].detach() for s in sites if s in tr.nodes}


def _importance_log_evidence(fit: Fit, args: tuple, num_samples: int) -> torch.Tensor:
    """log p(data) ≈ log mean_s exp(ELBO_s), each ELBO_s a single-particle enumerated
    bound with z_s drawn from the guide (an importance-sampling estimate)."""
    model = enumerated(poutine.substitute(fit.model.program, data=fit.params),
                       inspect_program(fit.model.program, args))
    guide = fit.state.get("guide") or _empty_guide
    elbo = _elbo(fit.state.get("discrete"), fit.state.get("max_plate_nesting", 0), 1)
    terms = torch.tensor([-elbo.loss(model, guide, *args) for _ in range(num_samples)])
    return torch.logsumexp(terms, 0) - torch.log(torch.tensor(float(num_samples)))


def _elbo(discrete: Any, max_plate_nesting: int, num_particles: int) -> Any:
    """TraceEnum_ELBO when discrete sites are enumerated out, Trace_ELBO otherwise."""
    cls = TraceEnum_ELBO if discrete else Trace_ELBO
    return cls(max_plate_nesting=max_plate_nesting, num_particles=num_particles)
