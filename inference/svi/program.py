"""Stochastic variational inference for any Pyro program.

Discrete latent sites are enumerated out (``TraceEnum_ELBO``); continuous latent
sites get an autoguide (``guide="normal"`` mean-field, ``"delta"`` MAP,
``"mvn"`` full-rank) or the user's own guide callable. ``pyro.param`` sites of the
program are learned by maximum likelihood alongside. The ELBO estimator (``elbo=``) is an
option; the training loop, its optimiser (``optim=``) and schedule are the trainer's
(`probgen.loops.gradient`); the autoguide starts at a seeded draw (``init_to_median``
of prior draws), so the seed changes the start. Every step sees the whole data (a program
subsamples in its own plates).
References: Hoffman et al. (2013), Stochastic Variational Inference; Ranganath et al. (2014),
Black Box Variational Inference (TraceGraph_ELBO's variance reduction); Li & Turner (2016),
Rényi Divergence Variational Inference; Pyro's SVI.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from pyro.infer import RenyiELBO, Trace_ELBO, TraceEnum_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal
from pyro.infer.autoguide.initialization import init_to_median, init_to_value

from probgen import distributed, protocols
from probgen.declarations import Program
from probgen.fit import Fit, own_param_store
from probgen.loops.gradient import GradientMethod, Trainer, Update
from probgen.random import seeded
from probgen.registry import Method, register

from .._posterior import QUERIES, check_count, map_discrete, posterior_draws, predictive_draws, program_sample, stack
from .._program import data_plates as _data_plates, enumerated, examples as _examples, inspect_program, \
    param_values, seed_param_store, traced as _trace

GUIDES = {"normal": AutoNormal, "delta": AutoDelta, "mvn": AutoMultivariateNormal}
#: elbo= names; with discrete latent sites only "trace" applies (as TraceEnum_ELBO, which sums them out)
ELBOS = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO, "tracegraph": TraceGraph_ELBO,
         "renyi": RenyiELBO}


def _empty_guide(*args: Any, **kwargs: Any) -> None:
    pass


@register
class ProgramSVI(GradientMethod):
    engine = "svi"
    name = "program"
    objective = "loss"
    steps_unit = "gradient steps"
    devices = ("cpu", "cuda", "mps")  # torch only (CUDA / MPS written, not run here)
    generic = True
    needs = "a Pyro program"
    # data-parallel: each rank's ELBO on its rows counts the sites outside the data plate (the
    # globals) at its share of the rows, so that the ranks' sum is the whole data's ELBO
    parallel = "data"
    queries = QUERIES
    trainer_defaults = {"optim": "clipped_adam", "lr_schedule": "exponential", "lr_decay": 0.1}

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.PyroProgram) and getattr(model, "generic_inference", True)

    def fit(self, model: Program, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, guide: Any = "normal", lr: float = 0.01, num_particles: int = 1, elbo: str = "trace",
            **options: Any) -> Fit:
        """``steps`` SVI steps (default 1000) on the whole data, by the trainer's options
        (`probgen.loops.gradient`), here ``optim="clipped_adam"`` and ``lr`` decaying
        geometrically to ``lr * lr_decay`` (0.1) by the last step. The history's ``loss`` (the
        negative ELBO) is per example where the program declares its examples — every observed
        site in a plate of size ``len(x)``, ``x`` the data tensor — and the data set's total
        otherwise (a program with no such plate says nothing of what an example is)."""
        opts = self.trainer_options(model, options)
        if elbo not in ELBOS:
            raise ValueError(f"elbo must be one of {list(ELBOS)}, got {elbo!r}")
        check_count("num_particles", num_particles)
        steps = 1000 if steps is None else steps
        args = model.program_args(data)
        info = inspect_program(model.program, args)
        program = enumerated(model.program, info)
        latent_init = {k: v for k, v in (init or {}).items() if k in info.continuous}
        seed_param_store(info, {k: v for k, v in (init or {}).items() if k not in latent_init})
        if info.continuous and not latent_init and hasattr(model, "init_params"):
            latent_init = _default_start(model, data, seed, info.continuous)
        ctx = distributed.current()
        share = None
        if ctx is not None and ctx.parallel == "data":
            share = _RankShare(model, data, args, info, ctx, opts["validation"])
            latent_init = ctx.broadcast(latent_init)  # rank 0's start, from its rows, on every rank
        guide_fn = self._guide(guide, program, info, latent_init)
        estimator = _elbo(info.discrete, info.max_plate_nesting, num_particles, elbo)
        n = _examples(model, data, args) if share is None else share.n

        def loss(x: Any) -> tuple[float, dict]:  # Pyro computes the gradients (surrogate losses)
            with share.of(x, share.n_train) if share is not None else contextlib.nullcontext():
                value = estimator.loss_and_grads(program, guide_fn, *model.program_args(x))
            if share is not None and not share.synced:
                # setting up an autoguide traces the program once, drawing every site (a summed-out
                # assignment per row too): from here on every rank draws the globals as rank 0
                torch.set_rng_state(ctx.broadcast(torch.get_rng_state()))
                share.synced = True
            return value, {"loss": float(value) / (n or 1)}

        def validate(x: Any) -> float:
            m = _examples(model, x, model.program_args(x))
            with share.of(x, share.n_val) if share is not None else contextlib.nullcontext():
                value = float(estimator.loss(program, guide_fn, *model.program_args(x)))
            # data-parallel, this rank's share of the validation loss per row of its own: the
            # trainer's rows-weighted mean over the ranks is then the whole validation loss per row
            return value / (m or 1)

        def params() -> dict:
            return dict(pyro.get_param_store().named_parameters())

        trainer = Trainer([Update(loss, params, backward=False, reduce="sum")], data, steps=steps, seed=seed, batch_size=None,
                          lr=lr, validate=validate, progress=progress, desc="svi", check=model.check_data,
                          **opts).run()
        history = trainer.history
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
                 "latent_sites": list(info.continuous), "discrete": list(info.discrete),
                 "max_plate_nesting": info.max_plate_nesting, "per_example": n is not None, **trainer.fit_state()}
        return Fit(model, params, history, engine=self.engine, method=self.name, state=state,
                   options={"guide": guide if isinstance(guide, str) else "custom", "lr": lr, "elbo": elbo,
                            "num_particles": num_particles, **trainer.options()},
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
        # init_params) where given, elsewhere at the median of 15 prior draws taken under the
        # fit's seed: a fixed start (init_to_feasible) is symmetric in a mixture's components,
        # and gradient steps never leave that saddle, whatever the seed
        seeded_start = init_to_median(num_samples=15)
        init_loc = init_to_value(values=start, fallback=seeded_start) if start else seeded_start
        return GUIDES[guide](hidden, init_loc_fn=init_loc)

    @staticmethod
    def _kind(model: Any, info: Any) -> str:
        return "exact" if hasattr(model, "log_prob") and not info.continuous else "estimate"

    def save_state(self, fit: Fit) -> dict:
        """An autoguide is written as its kind (its parameters are in ``param_store``) and
        rebuilt by `load_state`; a guide function by its importable name."""
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
        """``n`` draws from the fitted model. A declaration with its own ``sample`` samples at
        the parameters (and one guide draw of its latent globals); a user's program is run
        with no data (``program_args(None)``: ``def model(x=None)``), each run with its
        continuous latent sites at a fresh guide draw, and gives ``{site: (n, ...)}`` for every
        sample site: the guide's posterior and the posterior predictive of the observed
        sites (discrete latents of the new examples drawn from the model)."""
        with seeded(seed):
            if hasattr(fit.model, "sample"):
                params = dict(fit.params)
                if fit.state.get("latent_sites"):
                    params.update(_draw(fit.state["guide"], fit.model.program_args(None), fit.state["latent_sites"]))
                return fit.model.sample(params, n, seed=seed)
            return program_sample(fit.model.program, fit.model, lambda args: _guide_draws(fit, args, n))

    def infer(self, model: Any, params: dict | None, data: Any, query: str, *, fit: Fit | None = None,
              num_samples: int = 100, seed: int | None = None) -> Any:
        """Posterior queries of an SVI fit on ``data`` (the program's data):

        * ``"posterior"``: ``{site: (num_samples, ...)}`` joint draws of the latent sites, the
          continuous ones from the guide, the discrete ones (summed out in training) given
          each by ``infer_discrete`` at temperature 1;
        * ``"predictive"``: ``{site: (num_samples, ...)}`` replicates of the observed sites,
          each drawn given one posterior draw (the posterior predictive of this data);
        * ``"map"``: ``{site: tensor}`` the most probable joint values of the discrete latent
          sites given the fitted parameters and the guide's median of the continuous ones
          (``infer_discrete`` at temperature 0).

        Monte Carlo answers are functions of ``seed``."""
        fit = _own_fit(self, fit, query)
        check_count("num_samples", num_samples)
        x = model.check_data(data)
        args = model.program_args(x)
        info = inspect_program(model.program, args)
        with seeded(seed):
            if query == "map":
                return map_discrete(model.program, args, dict(fit.params), info)
            latents = posterior_draws(model.program, args, _guide_draws(fit, args, num_samples), info)
            if query == "posterior":
                if not info.continuous and not info.discrete:
                    raise ValueError("the program has no latent sample sites: its fitted parameters are fit.params")
                return stack(latents)
            return predictive_draws(model.program, args, [dict(fit.params, **z) for z in latents], info)


def _own_fit(method: Method, fit: Fit | None, query: str) -> Fit:
    """The fit a query of ``method`` answers from (its guide or draws)."""
    if fit is None or fit.engine != method.engine or fit.method != method.name:
        raise ValueError(f"query {query!r} of engine {method.engine!r} answers from a fit made by it: "
                         f"pg.infer(pg.fit(model, data, engine={method.engine!r}), data, query={query!r})")
    return fit


def _guide_draws(fit: Fit, args: tuple, n: int) -> list[dict[str, torch.Tensor]]:
    """``n`` draws of the parameters and the continuous latent sites: the fitted parameters
    with a fresh guide draw each (the parameters alone when there is no guide)."""
    guide, sites = fit.state.get("guide"), fit.state.get("latent_sites", [])
    if guide is None or not sites:
        return [dict(fit.params) for _ in range(n)]
    return [dict(fit.params, **_draw(guide, args, sites)) for _ in range(n)]


class _RankShare(Messenger):
    """A data-parallel SVI fit's scaling (`probgen.distributed`): on a rank holding m of
    the M rows, every sample site outside the data plates (the plates of size ``len(x)`` that
    hold every observed site: the globals, their guide sites) is scaled by m / M, so that the
    ranks' ELBOs sum to the whole data's — the factor Pyro's plate subsampling applies the
    other way round (Hoffman et al. 2013). The program must declare its examples so, and have
    no continuous latent site in the data plate: such per-row draws would advance the ranks'
    random streams apart, and the draws of the globals must be the same on every rank."""

    def __init__(self, model: Any, data: Any, args: tuple, info: Any, ctx: Any, validation: Any):
        super().__init__()
        self.plates = _data_plates(model, data, args)
        if not self.plates:
            raise ValueError("a data-parallel SVI fit needs a program that declares its examples: every observed "
                             "site in a plate of size len(x) (pyro.plate('data', len(x))), x the data tensor; "
                             "or pass distributed=False")
        tr = _trace(model, args)
        local = [k for k in info.continuous if k in tr.nodes and
                 any(f.name in self.plates for f in tr.nodes[k]["cond_indep_stack"])]
        if local:
            raise ValueError(f"a data-parallel SVI fit cannot have continuous latent sites per example ({local}): "
                             "their per-row draws would set the ranks' random streams apart; pass distributed=False")
        self.n = sum(ctx.sizes(len(data)))  # the rows (examples) of all ranks
        # the training and validation rows of all ranks (the trainer's split of the global rows)
        if isinstance(validation, (int, float)):
            self.n_val = int(math.floor(self.n * validation))
            self.n_val = self.n_val if 1 <= self.n_val < self.n else None
        else:
            self.n_val = None if validation is None else len(validation)
        self.n_train = self.n - (self.n_val or 0) if isinstance(validation, (int, float)) else self.n
        self.factor = 1.0
        self.synced = False

    @contextlib.contextmanager
    def of(self, x: Any, total: int) -> Any:
        """Scale for a rank's ``x`` of ``total`` rows."""
        self.factor = len(x) / total
        with self:
            yield

    def _process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and not any(f.name in self.plates for f in msg["cond_indep_stack"]):
            msg["scale"] = self.factor * msg["scale"]


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
    info = inspect_program(fit.model.program, args)
    params = {k: v for k, v in fit.params.items() if k in info.params}  # not the latents' medians
    model = enumerated(poutine.substitute(fit.model.program, data=params), info)
    guide = fit.state.get("guide") or _empty_guide
    elbo = _elbo(fit.state.get("discrete"), fit.state.get("max_plate_nesting", 0), 1, "trace")
    terms = torch.tensor([-elbo.loss(model, guide, *args) for _ in range(num_samples)])
    return torch.logsumexp(terms, 0) - torch.log(torch.tensor(float(num_samples)))


def _elbo(discrete: Any, max_plate_nesting: int, num_particles: int, name: str) -> Any:
    """The ELBO estimator ``name`` (`ELBOS`); with discrete latent sites, which the
    guide leaves to enumeration, only ``"trace"`` applies, as TraceEnum_ELBO."""
    if discrete:
        if name != "trace":
            raise ValueError(f"elbo={name!r} cannot sum out the discrete latent sites {list(discrete)}; with "
                             "discrete latents the ELBO is TraceEnum_ELBO, which enumerates them: "
                             "elbo='trace' (the default)")
        return TraceEnum_ELBO(max_plate_nesting=max_plate_nesting, num_particles=num_particles)
    # RenyiELBO with alpha = 0 over num_particles draws is the importance-weighted bound
    return ELBOS[name](max_plate_nesting=max_plate_nesting, num_particles=num_particles)
