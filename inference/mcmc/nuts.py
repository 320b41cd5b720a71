"""NUTS (Hoffman & Gelman 2014) over the continuous latent sites of any Pyro program,
with discrete latent sites enumerated out.

``pyro.param`` sites have no prior, so they cannot be sampled as they stand: a
declaration that offers ``priors()`` (name -> distribution) has its parameters
lifted to those priors (as ``pyro.poutine.lift`` does), and the fit records which
were lifted in ``fit.state["lifted"]``.

Pyro's NUTS transition is a kernel (`NUTSKernel`) of the one MCMC driver
(`probgen.loops.mcmc`): ``steps`` draws per chain after ``warmup`` adaptation steps, every
``thin``-th kept; ``num_chains`` chains run one after another in this process (chain 0 in the
stream ``seed`` started, chain c under its own seed, so a fit is reproducible). The kept
draws are ``fit.state["draws"]`` ``(chain, draw, ...)`` and ``fit.state["samples"]`` (chains
concatenated). ``fit.history`` has one record per kept draw, aligned with
``fit.state["samples"]``: ``step`` (the draw's index), ``chain``,
and the sampler's statistics for that draw — ``step_size``, ``accept_prob`` (the mean
Metropolis acceptance probability over the trajectory's proposals), ``diverging``,
``potential_energy`` (−log p(θ, data) in the unconstrained space, the Jacobian included),
``tree_depth`` (the trajectory's doublings, at most ``max_tree_depth``) and ``n_steps`` (its
leapfrog steps). The same statistics are ``fit.state["sample_stats"]`` ``(chain, draw)``, and
``fit.to_arviz()``'s ``sample_stats``.
"""
from __future__ import annotations

import math
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import NUTS

from probgen import protocols
from probgen.declarations import Program
from probgen.fit import Fit
from probgen.loops.mcmc import Kernel, check_budget, run
from probgen.random import seeded
from probgen.registry import Method, check_options, register

from .._posterior import QUERIES, check_count, map_discrete, posterior_draws, predictive_draws, program_sample, stack
from .._program import enumerated, inspect_program, inspect_without_data


@register
class ProgramNUTS(Method):
    # under torch.distributed each rank runs its block of the chains on the whole data; chain c
    # is seeded by its global index, so it is the 1-process fit's chain c (probgen.loops.mcmc)
    parallel = "chains"
    engine = "mcmc"
    name = "nuts"
    objective = "potential_energy"
    steps_unit = "draws per chain after warmup (every thin-th kept)"
    generic = True
    needs = "a Pyro program whose parameters have priors"
    log_prob_kind = "estimate"
    queries = QUERIES

    def accepts(self, model: Any) -> bool:
        if not protocols.implements(model, protocols.PyroProgram) or not getattr(model, "generic_inference", True):
            return False
        # a user's program traced with a placeholder for its data (None where it cannot run so:
        # then fit checks on the data): pyro.param sites without a priors() hook cannot be sampled
        info = inspect_without_data(model)
        return info is None or not info.params or protocols.implements(model, protocols.Priors)

    def fit(self, model: Program, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, warmup: int | None = None, num_chains: int = 1, thin: int = 1,
            target_accept: float = 0.8, max_tree_depth: int = 10, jit_compile: bool = False,
            callback: Any = None, **options: Any) -> Fit:
        check_options("mcmc", options, ("warmup", "num_chains", "thin", "target_accept", "max_tree_depth",
                                        "jit_compile", "callback"))
        steps = 500 if steps is None else steps
        warmup = steps if warmup is None else warmup
        check_budget(steps, warmup, num_chains, thin)
        args = model.program_args(data)
        program, lifted = model.program, []
        info = inspect_program(program, args)
        if info.params:
            priors = _priors(model, args)
            missing = sorted(set(info.params) - set(priors))
            if missing:
                raise ValueError(f"the mcmc engine samples latent variables, but parameters {missing} "
                                 "have no prior: declare them with pyro.sample and a prior, or use "
                                 "engine='svi' / 'em'")
            lifted = sorted(info.params)
            program = poutine.lift(program, prior={n: priors[n] for n in lifted})
            info = inspect_program(program, args)
        if init is None and hasattr(model, "init_params"):
            # start the chain at the declaration's own (seeded) starting point, not a prior draw
            init = _default_start(model, data, seed, info)
        start = _unconstrained(enumerated(program, info), args, init, info.max_plate_nesting) if init else None

        def make() -> NUTS:
            return NUTS(enumerated(program, info), max_plate_nesting=info.max_plate_nesting,
                        target_accept_prob=target_accept, max_tree_depth=max_tree_depth,
                        jit_compile=jit_compile, ignore_jit_warnings=True)

        kernel = NUTSKernel(make, tuple(a.detach() if torch.is_tensor(a) else a for a in args), start)
        # as Pyro's MCMC.run: the model's sites hidden from outer handlers, validation off
        with pyro.get_param_store().scope(), poutine.block(), pyro.validation_enabled(False):
            chains = run(kernel, steps=steps, warmup=warmup, num_chains=num_chains, thin=thin, seed=seed,
                         progress=progress, callback=callback, desc="mcmc nuts")
        # back to the constrained space, on the (chain, draw, ...) tensors as Pyro's MCMC does
        transforms = chains.states[-1]["kernel"].transforms if chains.states else {}
        draws = {k: (transforms[k].inv(v) if k in transforms else v).detach() for k, v in chains.draws.items()}
        samples = {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in draws.items()}
        params = {k: v.mean(0) for k, v in samples.items()}
        return Fit(model, params, chains.history, engine=self.engine, method=self.name,
                   state={"samples": samples, "draws": draws, "sample_stats": chains.stats, "lifted": lifted,
                          "divergences": sum(h["diverging"] for h in chains.history)},
                   options={"warmup": warmup, "num_chains": num_chains, "thin": thin,
                            "target_accept": target_accept, "max_tree_depth": max_tree_depth})

    def log_prob(self, fit: Fit, x: Any, num_samples: int = 200, **options: Any) -> torch.Tensor:
        """Posterior predictive log p(x | data) ≈ log mean_s p(x | θ_s) over up to
        ``num_samples`` posterior draws (evenly spaced over the kept draws), per example (shape
        ``(N,)``): through the declaration's ``log_prob`` where it has one, else the
        log-likelihood of the observed sites given each draw (a user program whose observed
        sites are not all in a plate of size ``len(x)`` gets the data set's total, a 0-d tensor)."""
        model, x = fit.model, fit.model.check_data(x)
        check_count("num_samples", num_samples)
        draws = _thin(fit.state["samples"], num_samples)
        if hasattr(model, "log_prob"):
            lps = torch.stack([model.log_prob(dict(fit.params, **d), x) for d in draws])
        else:
            args, n = model.program_args(x), len(x) if isinstance(x, torch.Tensor) and x.dim() else None
            lps = torch.stack([_observed_log_lik(model.program, args, d, n) for d in draws])
        return torch.logsumexp(lps, 0) - torch.log(torch.tensor(float(len(draws))))

    def sample(self, fit: Fit, n: int, seed: int | None = None) -> Any:
        """Posterior predictive draws: each of the ``n`` examples comes from its own
        (uniformly chosen, seeded) posterior draw of the parameters. A user's program is run
        with no data (``program_args(None)``: ``def model(x=None)``), each run at one kept draw,
        and gives ``{site: (n, ...)}`` for every sample site."""
        if hasattr(fit.model, "sample"):
            from probgen.random import generator
            g = generator(seed)
            samples = fit.state["samples"]
            total = len(next(iter(samples.values())))
            which = torch.randint(total, (n,), generator=g)
            out = None
            for i in which.unique().tolist():
                rows = (which == i).nonzero().squeeze(1)
                draw = {k: v[i] for k, v in samples.items()}
                xs = fit.model.sample(dict(fit.params, **draw), len(rows),
                                      seed=int(torch.randint(2**31 - 1, (), generator=g)))
                if not isinstance(xs, torch.Tensor):  # a family with structured samples: one draw
                    return fit.model.sample(dict(fit.params, **draw), n, seed=seed)
                if out is None:
                    out = xs.new_empty((n,) + tuple(xs.shape[1:]))
                out[rows] = xs
            return out
        # a user's program: run with no data, each run at a posterior draw chosen uniformly
        with seeded(seed):
            return program_sample(fit.model.program, fit.model, lambda args: _draws(fit, n, replace=True))

    def infer(self, model: Any, params: dict | None, data: Any, query: str, *, fit: Fit | None = None,
              num_samples: int | None = None, seed: int | None = None) -> Any:
        """Posterior queries of a NUTS fit on ``data`` (the program's data):

        * ``"posterior"``: ``{site: (S, ...)}`` the kept NUTS draws of the latent sites
          (``num_samples=None``: all of them, in order; else that many, drawn without
          replacement), the discrete sites (summed out by NUTS) drawn given each by
          ``infer_discrete`` at temperature 1;
        * ``"predictive"``: ``{site: (S, ...)}`` replicates of the observed sites, each given
          one posterior draw (the posterior predictive of this data);
        * ``"map"``: ``{site: tensor}`` the most probable joint values of the discrete latent
          sites given the posterior mean of the continuous ones (``fit.params``;
          ``infer_discrete`` at temperature 0).

        Monte Carlo answers are functions of ``seed``."""
        if fit is None or fit.engine != self.engine or fit.method != self.name:
            raise ValueError(f"query {query!r} of engine {self.engine!r} answers from a fit made by it: "
                             f"pg.infer(pg.fit(model, data, engine={self.engine!r}), data, query={query!r})")
        total = len(next(iter(fit.state["samples"].values())))
        if num_samples is not None and (check_count("num_samples", num_samples) > total):
            raise ValueError(f"the fit kept {total} draws, so num_samples can be at most {total} "
                             "(fit with more steps or chains for more)")
        x = model.check_data(data)
        args = model.program_args(x)
        info = inspect_program(model.program, args)  # lifted parameters are param sites here
        with seeded(seed):
            if query == "map":
                return map_discrete(model.program, args, dict(fit.params), info)
            draws = _draws(fit, num_samples or total, replace=False, ordered=num_samples is None)
            latents = posterior_draws(model.program, args, draws, info)
            if query == "posterior":
                lifted = fit.state.get("lifted", [])  # a declaration's parameters, sampled by NUTS
                return stack([dict({k: d[k] for k in lifted}, **z) for d, z in zip(draws, latents)])
            return predictive_draws(model.program, args, [dict(d, **z) for d, z in zip(draws, latents)], info)


def _draws(fit: Fit, n: int, replace: bool, ordered: bool = False) -> list[dict[str, torch.Tensor]]:
    """``n`` of the kept draws (parameters and continuous latents), chosen uniformly under the
    current seed — with or without replacement — or the first ``n`` in order."""
    samples = fit.state["samples"]
    total = len(next(iter(samples.values())))
    if ordered:
        idx = torch.arange(n)
    else:
        idx = torch.randint(total, (n,)) if replace else torch.randperm(total)[:n]
    return [dict(fit.params, **{k: v[i] for k, v in samples.items()}) for i in idx.tolist()]


class NUTSKernel(Kernel):
    """Pyro's NUTS transition (``pyro.infer.NUTS.sample``) as a driver kernel: one NUTS
    kernel object per chain (made by ``make``), set up with the chain's ``warmup`` (step-size
    and mass-matrix adaptation happen in its warm-up transitions). State: the Pyro kernel,
    the unconstrained sites, and the statistics of the last transition. Pyro's NUTS exposes
    no per-draw statistics, so they are read from the kernel after each transition: the
    adapted ``step_size``; the draw's acceptance probability, recovered from the running
    mean the kernel keeps over the kept draws (m_n = m_{n-1} + (a_n - m_{n-1}) / n); a
    divergence (the kernel appends the draw's index to its list); and the potential energy
    of the state it kept. The tree depth and the number of leapfrog steps are local to
    ``NUTS.sample``: they are counted by wrapping the kernel's ``_build_tree`` (a call from
    ``sample`` itself, not from the recursion, is one doubling of the trajectory: ``tree_depth``
    is their number, as Stan's ``treedepth__`` and NumPyro's ``tree_depth``; the trajectory then
    has up to 2^depth − 1 leapfrog steps) and ``_build_basetree`` (one leapfrog step each:
    ``n_steps``). Chains are not vectorised (Pyro's kernel moves one state)."""

    name = "nuts"

    def __init__(self, make: Any, args: tuple, start: dict | None):
        self.make, self.args, self.start = make, args, start

    def init(self, seed: Any, chain: int, warmup: int) -> dict:
        kernel = self.make()
        if self.start is not None:
            kernel.initial_params = self.start
        kernel.setup(warmup, *self.args)
        counts = _count_tree(kernel)
        return {"kernel": kernel, "params": kernel.initial_params, "chain": chain, "t": 0, "warmup": warmup,
                "mean": 0.0, "stats": {}, "counts": counts}

    def step(self, state: dict, warmup: bool) -> dict:
        kernel, counts = state["kernel"], state["counts"]
        counts.update(doublings=0, leapfrogs=0, nesting=0)
        state["params"] = kernel.sample(state["params"])
        state["t"] += 1
        if not warmup:
            i = state["t"] - state["warmup"] - 1          # the index among the post-warm-up draws
            mean = float(kernel._mean_accept_prob)
            accept = state["mean"] + (i + 1) * (mean - state["mean"])
            state["mean"] = mean
            divergences = kernel._divergences
            stats = {"step_size": float(kernel.step_size), "accept_prob": min(max(accept, 0.0), 1.0),
                     "diverging": bool(divergences and divergences[-1] == i),
                     "potential_energy": float(kernel._potential_energy_last),
                     "tree_depth": counts["doublings"], "n_steps": counts["leapfrogs"]}
            if not all(math.isfinite(stats[k]) for k in ("step_size", "accept_prob", "potential_energy")):
                raise ValueError(f"NUTS draw {i} of chain {state['chain']} has non-finite statistics {stats}: "
                                 "the posterior has no finite density there (check the priors and the data)")
            state["stats"] = stats
        return state

    def draw(self, state: dict) -> dict[str, torch.Tensor]:
        return {k: state["params"][k] for k in sorted(state["params"])}   # unconstrained, as Pyro keeps them

    def stats(self, state: dict) -> dict:
        return dict(state["stats"])


def _count_tree(kernel: NUTS) -> dict:
    """Count, per transition, the trajectory doublings (``_build_tree`` called by ``sample``,
    not by its own recursion) and the leapfrog steps (``_build_basetree``) of a Pyro NUTS
    kernel: its bound methods are wrapped on the instance (the recursion calls
    ``self._build_tree``, so it goes through the wrapper too)."""
    counts = {"doublings": 0, "leapfrogs": 0, "nesting": 0}
    build_tree, build_base = kernel._build_tree, kernel._build_basetree

    def tree(*args, **kwargs):
        if counts["nesting"] == 0:
            counts["doublings"] += 1
        counts["nesting"] += 1
        try:
            return build_tree(*args, **kwargs)
        finally:
            counts["nesting"] -= 1

    def base(*args, **kwargs):
        counts["leapfrogs"] += 1
        return build_base(*args, **kwargs)

    kernel._build_tree, kernel._build_basetree = tree, base
    return counts


def _priors(model: Any, args: tuple) -> dict:
    """``model.priors(*args)`` when the hook takes the data (data-dependent default
    hyperparameters), ``model.priors()`` otherwise; ``{}`` without the hook."""
    import inspect
    hook = getattr(model, "priors", None)
    if hook is None:
        return {}
    try:
        takes_data = len(inspect.signature(hook).parameters) > 0
    except (TypeError, ValueError):
        takes_data = False
    return hook(*args) if takes_data else hook()


def _default_start(model: Any, data: Any, seed: int | None, info: Any) -> dict | None:
    """The declaration's ``init_params(data, seed)`` restricted to the sampled sites, or None
    when it does not give a value for every one of them."""
    try:
        start = model.init_params(data, seed=seed)
    except (NotImplementedError, ValueError, TypeError):
        return None
    sites = set(info.continuous)
    if not sites <= set(start):  # NUTS needs a starting value for every sampled site
        return None
    return {k: v for k, v in start.items() if k in sites}


def _thin(samples: dict[str, torch.Tensor], k: int) -> list[dict[str, torch.Tensor]]:
    n = len(next(iter(samples.values())))
    idx = torch.linspace(0, n - 1, min(k, n)).long()
    return [{name: v[i] for name, v in samples.items()} for i in idx]


def _observed_log_lik(fn: Any, args: tuple, values: dict, n: int | None) -> torch.Tensor:
    """log p(observed sites | ``values``) per example, shape ``(n,)``, summed over every
    dimension but the plate of size ``n`` (the data plate); the 0-d total when some observed
    site lies in no such plate."""
    tr = poutine.trace(poutine.condition(fn, data=values)).get_trace(*args)
    tr.compute_log_prob()
    sites = [s for s in tr.nodes.values() if s["type"] == "sample" and s["is_observed"] and s["name"] not in values]
    per = []
    for s in sites:
        dims = [f.dim for f in s["cond_indep_stack"] if n is not None and f.size == n and f.dim is not None]
        if not dims:
            return sum(s["log_prob_sum"] for s in sites)
        per.append(s["log_prob"].movedim(dims[0], 0).reshape(n, -1).sum(1))  # plates broadcast log_prob
    return sum(per)


def _unconstrained(program: Any, args: tuple, init: dict, max_plate_nesting: int) -> dict:
    """``init`` (constrained values) mapped to NUTS's unconstrained space."""
    from pyro.infer.mcmc.util import initialize_model
    _, _, transforms, _ = initialize_model(program, model_args=args, max_plate_nesting=max_plate_nesting)
    unknown = sorted(set(init) - set(transforms))
    if unknown:
        raise ValueError(f"init names {unknown}, which are not latent sites; sites: {sorted(transforms)}")
    return {k: transforms[k](torch.as_tensor(v)) for k, v in init.items()}
