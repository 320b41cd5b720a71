"""NUTS (Hoffman & Gelman 2014) over the continuous latent sites of any Pyro program,
with discrete latent sites enumerated out.

``pyro.param`` sites have no prior, so they cannot be sampled as they stand: a
declaration that offers ``priors()`` (name -> distribution) has its parameters
lifted to those priors (as ``pyro.poutine.lift`` does), and the fit records which
were lifted in ``fit.state["lifted"]``.
"""
from __future__ import annotations

from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS

from probgen.declarations import Program
from probgen.fit import Fit
from probgen.registry import Method, check_options, register

from .._program import enumerated, inspect_program


@register
class ProgramNUTS(Method):
    engine = "mcmc"
    name = "nuts"
    objective = "potential_energy"
    steps_unit = "draws kept per chain after warmup"
    generic = True
    needs = "a Pyro program whose parameters have priors"
    log_prob_kind = "estimate"

    def accepts(self, model: Any) -> bool:
        return isinstance(model, Program) and getattr(model, "generic_inference", True)

    def fit(self, model: Program, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, warmup: int | None = None, chains: int = 1, target_accept: float = 0.8,
            max_tree_depth: int = 10, jit_compile: bool = False, **options: Any) -> Fit:
        check_options("mcmc", options, ("warmup", "chains", "target_accept", "max_tree_depth", "jit_compile"))
        steps = 500 if steps is None else steps
        warmup = steps if warmup is None else warmup
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
        kernel = NUTS(enumerated(program, info), max_plate_nesting=info.max_plate_nesting,
                      target_accept_prob=target_accept, max_tree_depth=max_tree_depth,
                      jit_compile=jit_compile, ignore_jit_warnings=True)
        if init is None and hasattr(model, "init_params"):
            # start the chain at the declaration's own (seeded) starting point, not a prior draw
            init = _default_start(model, data, seed, info)
        start = _unconstrained(enumerated(program, info), args, init, info.max_plate_nesting) if init else None
        mcmc = MCMC(kernel, num_samples=steps, warmup_steps=warmup, num_chains=chains,
                    disable_progbar=not progress, initial_params=start)
        with pyro.get_param_store().scope():
            mcmc.run(*args)
        samples = {k: v.detach() for k, v in mcmc.get_samples().items()}
        params = {k: v.mean(0) for k, v in samples.items()}
        diag = mcmc.diagnostics() if steps >= 4 else {}  # split R-hat needs >= 4 draws per chain
        history = [{"step": i} for i in range(steps)]
        summary = {k: {"r_hat": float(torch.as_tensor(d.get("r_hat", float("nan"))).mean()),
                       "n_eff": float(torch.as_tensor(d.get("n_eff", float("nan"))).mean())}
                   for k, d in diag.items() if isinstance(d, dict) and "n_eff" in d}
        return Fit(model, params, history, engine=self.engine, method=self.name,
                   state={"samples": samples, "lifted": lifted, "diagnostics": summary},
                   options={"warmup": warmup, "chains": chains})

    def log_prob(self, fit: Fit, x: Any, max_draws: int = 200, **options: Any) -> torch.Tensor:
        """Posterior predictive log p(x | data) ≈ log mean_s p(x | θ_s) over up to
        ``max_draws`` posterior draws, per example (shape ``(N,)``): through the declaration's
        ``log_prob`` where it has one, else the log-likelihood of the observed sites given
        each draw (a user program whose observed sites are not all in a plate of size
        ``len(x)`` gets the data set's total, a 0-d tensor)."""
        model, x = fit.model, fit.model.check_data(x)
        draws = _thin(fit.state["samples"], max_draws)
        if hasattr(model, "log_prob"):
            lps = torch.stack([model.log_prob(dict(fit.params, **d), x) for d in draws])
        else:
            args, n = model.program_args(x), len(x) if isinstance(x, torch.Tensor) and x.dim() else None
            lps = torch.stack([_observed_log_lik(model.program, args, d, n) for d in draws])
        return torch.logsumexp(lps, 0) - torch.log(torch.tensor(float(len(draws))))

    def sample(self, fit: Fit, n: int, seed: int | None = None) -> Any:
        """Posterior predictive draws: each of the ``n`` examples comes from its own
        (uniformly chosen, seeded) posterior draw of the parameters."""
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
        predictive = pyro.infer.Predictive(fit.model.program, posterior_samples=fit.state["samples"],
                                           num_samples=n)
        return {k: v.detach() for k, v in predictive().items()}


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
