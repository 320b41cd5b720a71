"""Generic EM for any Pyro program whose latent sites are discrete and enumerable and
whose parameters are ``pyro.param`` sites.

E-step (the probe method, after Eisner 2016, "Inside-outside and
forward-backward algorithms are just backprop"): every sample site's ``log_prob`` gets a
zero tensor ``probe`` of its own shape added under enumeration, and the exact
log-evidence log Z = −``TraceEnum_ELBO.differentiable_loss`` (an empty guide: every latent
is summed out) is differentiated. Since log Z = log Σ_z exp Σ_s scale_s (log p_s + probe_s),

    ∂ log Z / ∂ probe_s = scale_s · p(the site's enumerated configuration | data),

the site's posterior weight tensor w_s (responsibilities for a mixture, pairwise
marginals for a chain), aligned with its log_prob.

M-step: maximise Q(θ) = Σ_s Σ w_s · log p_s(value_s | θ). Closed form where a site is
recognised and its parameters are ``pyro.param`` tensors *indexed by the latents*
(checked, not assumed):

* ``Categorical(probs=P[idx])`` with P simplex-constrained: P[r] ∝ expected counts;
* ``Bernoulli(probs=p[idx])``: p = Σ w x / Σ w;
* ``Normal(loc[idx], scale[idx])`` (also inside ``.to_event``): loc = Σ (w/σ²) x / Σ w/σ²,
  then scale² = Σ w (x − loc)² / Σ w with the new loc;
* ``MultivariateNormal(loc[idx], scale_tril=L[idx])``: weighted mean, then L = chol of the
  weighted scatter about the new mean.

"Indexed" is verified on the traced tensors: a distribution argument ``a`` built from one
parameter θ is a selection of θ's entries iff the vector–Jacobian products satisfy
vjp(1)·θ = vjp(a) and vjp(1)·θ² = vjp(a²) (for Categorical tables, by tracing the program
once with the table's rows replaced by rows that encode their own index). The sufficient
statistics are then vjps too: Σ over the positions that use an entry. The location-like
and scale-like parameters are updated in two conditional-maximisation steps (ECM, Meng &
Rubin 1993), so EM stays monotone. Every other parameter is updated by numerical
maximisation of Q (L-BFGS in the unconstrained space); if a closed-form step ever lowered
Q (an unrecognised sharing pattern), that iteration falls back to numerical maximisation
for all parameters.
"""
from __future__ import annotations

from typing import Any, Callable

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from probgen import distributed, protocols
from probgen.declarations import Program
from probgen.fit import Fit
from probgen.loops.iterative import LOOP, Update, run
from probgen.registry import Method, check_options, register

from .._program import ProgramInfo, data_plates, inspect_program, inspect_without_data, traced


# ---- tracing with probes ---------------------------------------------------------------

class _Probed(dist.TorchDistribution):
    """``base`` with a zero probe added to its log_prob (created on first use, with the
    shape of the log_prob, and kept in ``probes[name]``)."""

    arg_constraints: dict = {}

    def __init__(self, base: Any, name: str, probes: dict | None, record: dict):
        self.base, self._name, self._probes, self._record = base, name, probes, record
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    @property
    def has_enumerate_support(self) -> bool:
        return self.base.has_enumerate_support

    def enumerate_support(self, expand: bool = True):
        return self.base.enumerate_support(expand=expand)

    def sample(self, sample_shape=torch.Size()):
        return self.base.sample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        lp = self.base.log_prob(value)
        if lp.is_floating_point() and lp.dtype != torch.float64:
            # EM runs in float64; a site built from the program's own float32 constants (fixed
            # weights, say) must not meet float64 sites in the enumerated contraction
            lp = lp.to(torch.float64)
        self._record[self._name] = (self.base, value, lp)
        if self._probes is None:
            return lp
        probe = self._probes.get(self._name)
        if probe is None or probe.shape != lp.shape:
            probe = torch.zeros(lp.shape, dtype=lp.dtype, requires_grad=True)
            self._probes[self._name] = probe
        return lp + probe


class _Probe(Messenger):
    """Wraps every sample site's distribution in `_Probed`."""

    def __init__(self, probes: dict | None, record: dict, masks: dict | None = None):
        super().__init__()
        self.probes, self.record = probes, record
        self.masks = {} if masks is None else masks

    def _pyro_sample(self, msg: dict) -> None:
        if site_is_subsample(msg):  # a plate's own site
            return
        if not isinstance(msg["fn"], _Probed):
            msg["fn"] = _Probed(msg["fn"], msg["name"], self.probes, self.record)
            # Pyro leaves enumerated latent sites unmasked (a normalised site sums to one), but
            # a masked latent is absent for EM: its weight must not reach the M-step
            self.masks[msg["name"]] = msg["mask"]


def _empty_guide(*args: Any, **kwargs: Any) -> None:
    pass


class _Runner:
    """Runs the program at given parameter tensors, enumerated, with probes."""

    def __init__(self, model: Program, args: tuple, max_plate_nesting: int):
        self.model, self.args, self.mpn = model, args, max_plate_nesting

    def _fn(self, params: dict, probes: dict | None, record: dict, masks: dict | None = None):
        program = poutine.substitute(self.model.program, data=params)

        def probed(*args: Any) -> Any:
            with _Probe(probes, record, masks):
                return program(*args)
        return config_enumerate(probed, default="parallel")

    def evidence(self, params: dict):
        """(log Z, probes, record, masks): log Z from TraceEnum_ELBO, differentiable in the
        probes and the parameter tensors; record[name] = (fn, value, log_prob)."""
        probes: dict = {}
        record: dict = {}
        masks: dict = {}
        elbo = TraceEnum_ELBO(max_plate_nesting=self.mpn)
        with pyro.get_param_store().scope():
            log_z = -elbo.differentiable_loss(self._fn(params, probes, record, masks), _empty_guide,
                                              *self.args)
        return log_z, probes, record, masks

    def trace(self, params: dict) -> dict:
        """record[name] = (fn, value, log_prob) of one enumerated run (no ELBO)."""
        record: dict = {}
        fn = poutine.enum(self._fn(params, None, record), first_available_dim=-1 - self.mpn)
        with pyro.get_param_store().scope():
            tr = poutine.trace(fn).get_trace(*self.args)
        for site in tr.nodes.values():  # make sure every sample site's log_prob was computed
            if site["type"] == "sample" and site["name"] not in record:
                site["fn"].log_prob(site["value"])
        return record


def _q(record: dict, weights: dict) -> torch.Tensor:
    """Q = Σ_s Σ w_s log p_s (masked-out entries, w = 0, contribute 0 even if log p = -inf)."""
    total = 0.0
    for name, w in weights.items():
        lp = record[name][2]
        total = total + torch.where(w != 0, w * lp, torch.zeros_like(w * 0)).sum()
    return total


# ---- recognising closed-form sites -------------------------------------------------------

def _unwrap(fn: Any):
    """(distribution, number of reinterpreted event dims) through ``Independent``."""
    n = 0
    while isinstance(fn, dist.Independent) or isinstance(fn, torch.distributions.Independent):
        n += fn.reinterpreted_batch_ndims
        fn = fn.base_dist
    return fn, n


def _source(a: torch.Tensor, leaves: dict) -> str | None:
    """The one parameter ``a`` is a selection (indexing / broadcasting) of, else None."""
    if not isinstance(a, torch.Tensor) or not a.requires_grad:
        return None
    names = list(leaves)
    grads = torch.autograd.grad(a, [leaves[n] for n in names], torch.ones_like(a),
                                retain_graph=True, allow_unused=True)
    used = [(n, g) for n, g in zip(names, grads) if g is not None]
    if len(used) != 1:
        return None
    name, count = used[0]
    theta = leaves[name]
    g1, g2 = torch.autograd.grad(a, theta, a.detach(), retain_graph=True)[0], \
        torch.autograd.grad(a, theta, a.detach() ** 2, retain_graph=True)[0]
    scale = theta.detach().abs().max() + 1
    ok = (torch.allclose(g1, count * theta.detach(), rtol=1e-9, atol=1e-9 * scale * count.abs().max())
          and torch.allclose(g2, count * theta.detach() ** 2, rtol=1e-9,
                             atol=1e-9 * scale ** 2 * count.abs().max()))
    return name if ok else None


def _vjp(a: torch.Tensor, theta: torch.Tensor, cot: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(a, theta, cot.sum_to_size(a.shape), retain_graph=True)[0]


def _expand_w(w: torch.Tensor, event_ndim: int) -> torch.Tensor:
    return w.reshape(w.shape + (1,) * event_ndim)


def _row_ids(runner: _Runner, params: dict, simplex: list[str]) -> dict:
    """For Categorical sites: site -> (param, flat row index tensor), found by tracing the
    program once with every simplex table's rows replaced by rows that encode their own
    index (row r = (r + 2, 1, …, 1) / (r + 1 + V); a Categorical's normalisation keeps it)."""
    if not simplex:
        return {}
    coded, offsets, offset = dict(params), {}, 0
    for name in simplex:
        p = params[name]
        V = p.shape[-1]
        R = p.numel() // V
        rows = torch.ones(R, V, dtype=torch.float64)
        rows[:, 0] = torch.arange(R, dtype=torch.float64) + offset + 2
        coded[name] = (rows / rows.sum(-1, keepdim=True)).reshape(p.shape)
        offsets[name] = (offset, R, V)
        offset += R
    with pyro.validation_enabled(False):
        try:
            record = runner.trace(coded)
        except Exception:
            return {}
    out = {}
    for site, (fn, _, _) in record.items():
        base, n_event = _unwrap(fn)
        if type(base) is not dist.Categorical or n_event:
            continue
        probs = base.probs.detach()
        V = probs.shape[-1]
        if V < 2:
            continue
        v = probs[..., 0]
        ids = (v * (1 + V) - 2) / (1 - v)
        r = torch.round(ids)
        if not torch.allclose(ids, r, atol=1e-6):
            continue
        for name, (off, R, VV) in offsets.items():
            if VV == V and bool(((r >= off) & (r < off + R)).all()):
                out[site] = (name, (r - off).long())
    return out


# ---- the method ----------------------------------------------------------------------------

@register
class ProgramEM(Method):
    engine = "em"
    name = "program"
    objective = "log_likelihood"
    steps_unit = "EM iterations"
    generic = True
    loop = LOOP
    parallel = "data"  # a program that declares its examples: log Z and the E-step's sums add over rows
    needs = "a Pyro program whose latent sites are all discrete and enumerable, with pyro.param parameters"

    _cache: dict = {}

    def accepts(self, model: Any) -> bool:
        if protocols.implements(model, protocols.UserFunction):
            # traced with a placeholder for its data: a program that computes with its data
            # cannot run so (None), and fit then refuses it on the data with the same message
            info = inspect_without_data(model)
            return info is None or refusal(info) is None
        if not protocols.implements(model, protocols.PyroProgram) or getattr(model, "bayesian", False):
            return False  # a declared prior on the parameters makes them continuous latents
        cls = type(model)
        if cls not in self._cache:  # a built-in program: look at its example once
            try:
                ex, data = cls.example(seed=0)
                info = inspect_program(ex.program, ex.program_args(ex.check_data(data)))
                self._cache[cls] = bool(info.params) and not info.continuous
            except Exception:
                self._cache[cls] = False
        return self._cache[cls]

    def fit(self, model: Program, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = 1e-8, n_init: int = 1, callback: Callable | None = None,
            m_steps: int = 50, **options: Any) -> Fit:
        """``steps`` (default 100) EM iterations; ``history`` records the exact
        log-likelihood **per example**: log Z divided by the number of data items, the size
        of the outermost ``pyro.plate`` around every observed site (1 without one: then the
        whole data set is the one example). ``tol``, ``n_init`` and ``callback`` as in
        `probgen.loops.iterative.run`: restarts start from the program's own
        ``pyro.param`` initial values drawn under each restart's seed (they differ only if
        those values are random) or from ``init``. ``m_steps``: L-BFGS iterations of a
        numerical M-step. Under ``torch.distributed`` each rank fits its block of the examples
        (`_Steps`: the E-step's sums in one ``all_reduce``; what needs the new
        parameters — the scale CM-step, the safeguard's Q, each L-BFGS evaluation — summed
        after it), for a program whose latent sites all lie in its data plate."""
        check_options("em", options, ("tol", "n_init", "callback", "m_steps"))
        steps = 100 if steps is None else steps
        args = model.program_args(_float64(data))
        info = inspect_program(model.program, args)
        if refusal(info):
            raise ValueError(refusal(info))
        ctx = distributed.current()
        n = _check_parallel(model, data, args, info, ctx) if ctx is not None else None
        result = run(_Steps(self, model, args, info, init, m_steps, n), objective=self.objective, steps=steps,
                     tol=tol, seed=seed, n_init=n_init, progress=progress, callback=callback, desc="em")
        params = {k: v.detach() for k, v in result.state.items()}
        return Fit(model, params, result.history, engine=self.engine, method=self.name,
                   state=result.fit_state(), options={"tol": tol, "n_init": n_init, "m_steps": m_steps})

    # -- E-step: posterior weights from the probes ------------------------------------------
    def e_step(self, runner: _Runner, params: dict, info: Any):
        """(log Z, weights {site: w}, closed-form plan)."""
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
        log_z, probes, record, masks = runner.evidence(leaves)
        names = list(probes)
        grads = torch.autograd.grad(log_z, [probes[n] for n in names], retain_graph=True)
        weights = {n: g.detach() if masks.get(n) is None else g.detach() * masks[n]
                   for n, g in zip(names, grads)}
        cf = self._closed_form_stats(runner, params, leaves, record, weights, info)
        return log_z.detach(), weights, cf

    def _closed_form_stats(self, runner, params, leaves, record, weights, info) -> dict:
        """Sufficient statistics for the recognised (site, parameter) pairs:
        {param: ("table" | "bernoulli" | "loc" | "mvn_loc", stats)} and the scale-like
        parameters to update in the second CM-step ({param: kind})."""
        simplex = [n for n, c in info.params.items() if c is constraints.simplex or c == constraints.simplex]
        rows = _row_ids(runner, {k: v.detach() for k, v in params.items()}, simplex)
        claims: dict[str, list] = {}
        for site, (fn, value, lp) in record.items():
            if site not in weights:
                continue
            w = weights[site]
            base, n_event = _unwrap(fn)
            kind = type(base)
            if kind is dist.Categorical and site in rows:
                name, r = rows[site]
                P = params[name]
                V = P.shape[-1]
                table = P.reshape(-1, V)
                if not torch.allclose(base.probs.detach(), table[r], rtol=1e-10, atol=1e-12):
                    continue
                onehot = torch.nn.functional.one_hot(value.long(), V).to(w.dtype)
                c = (w[..., None] * onehot).sum_to_size(base.probs.shape)
                counts = torch.zeros_like(table).index_add_(0, r.reshape(-1), c.reshape(-1, V))
                claims.setdefault(name, []).append(("table", counts))
            elif kind is dist.Bernoulli and n_event == 0:
                name = _source(base.probs, leaves)
                if name:
                    we = w.expand(torch.broadcast_shapes(w.shape, value.shape))
                    claims.setdefault(name, []).append(("bernoulli", (
                        _vjp(base.probs, leaves[name], we * value), _vjp(base.probs, leaves[name], we))))
            elif kind is dist.Normal:
                name = _source(base.loc, leaves)
                sname = _source(base.scale, leaves)
                if name:
                    wp = _expand_w(w, n_event) / base.scale.detach() ** 2
                    wp = wp.expand(torch.broadcast_shapes(wp.shape, value.shape))
                    claims.setdefault(name, []).append(("loc", (
                        _vjp(base.loc, leaves[name], wp * value), _vjp(base.loc, leaves[name], wp))))
                if sname:
                    claims.setdefault(sname, []).append(("scale", site))
            elif kind is dist.MultivariateNormal and n_event == 0:
                name = _source(base.loc, leaves)
                sname = _source(base.scale_tril, leaves)
                if name:
                    we = w[..., None].expand(torch.broadcast_shapes(w.shape + (1,), value.shape))
                    claims.setdefault(name, []).append(("loc", (
                        _vjp(base.loc, leaves[name], we * value), _vjp(base.loc, leaves[name], we))))
                if sname:
                    claims.setdefault(sname, []).append(("scale_tril", site))
        # a parameter is closed-form only if every site whose log_prob depends on it claimed it
        users: dict[str, int] = {}
        names = list(leaves)
        for site, (fn, value, lp) in record.items():
            if site not in weights or not lp.requires_grad:
                continue
            grads = torch.autograd.grad(lp.sum(), [leaves[n] for n in names], retain_graph=True,
                                        allow_unused=True)
            for n, g in zip(names, grads):
                if g is not None:
                    users[n] = users.get(n, 0) + 1
        plan = {}
        for name, items in claims.items():
            kinds = {k for k, _ in items}
            if len(items) == users.get(name, 0) and len(kinds) == 1:
                plan[name] = (kinds.pop(), [s for _, s in items])
        return plan

    # -- M-step ---------------------------------------------------------------------------------
    def statistics(self, runner: _Runner, params: dict, log_z: torch.Tensor, weights: dict, info: Any,
                   plan: dict) -> dict:
        """The E-step's sums over this process's examples, in a layout fixed by the
        parameters alone (so that the ranks of a data-parallel fit sum the same entries):
        ``log_z``; per parameter ``θ``, ``θ/kind`` (a one-hot over `_KINDS`: how this
        process's plan updates θ, zeros where numerically), ``θ/num`` and ``θ/den`` (θ's
        shape: a table's expected counts, or a weighted mean's numerator and denominator);
        ``q_old`` (Q at ``params``, for the M-step's safeguard; 0 without a closed-form plan)."""
        out = {"log_z": log_z.detach().to(torch.float64)}
        for name in info.params:
            p = params[name]
            kind, stats = plan.get(name, (None, []))
            onehot = torch.zeros(len(_KINDS), dtype=torch.float64)
            num = den = torch.zeros(p.shape, dtype=torch.float64)
            if kind is not None:
                onehot[_KINDS.index(kind)] = 1.0
            if kind == "table":
                num = sum(stats).reshape(p.shape)
            elif kind in ("bernoulli", "loc"):
                num, den = sum(s[0] for s in stats), sum(s[1] for s in stats)
            out[f"{name}/kind"], out[f"{name}/num"], out[f"{name}/den"] = onehot, num, den
        out["q_old"] = _q(runner.trace({k: v.detach() for k, v in params.items()}), weights).detach() \
            if plan else torch.zeros((), dtype=torch.float64)
        return out

    def m_step(self, runner: _Runner, params: dict, weights: dict, info: Any, sums: dict, m_steps: int,
               plan: dict, total: Callable[[dict], dict] | None = None) -> dict:
        """The M-step from ``sums`` (`statistics`, summed over the ranks in a
        data-parallel fit), this process's ``weights`` and ``plan`` (the sites of each
        closed-form parameter). ``total``: sums a dict of tensors over the ranks (``None``: one
        process) — for what needs the new parameters first: the second CM-step's scale
        statistics, Q at the new parameters (the safeguard) and every L-BFGS evaluation of Q
        and its gradient, so that every rank takes the same steps on the whole data's Q."""
        old = {k: v.detach() for k, v in params.items()}
        new = dict(old)
        # the closed-form parameters every rank's plan agrees on (one process: its own plan)
        agreed, world = {}, 1 if total is None else distributed.world_size()
        for name in info.params:
            hits = (sums[f"{name}/kind"] == float(world)).nonzero()
            if len(hits):
                agreed[name] = _KINDS[int(hits[0])]
        for name, kind in agreed.items():
            num, den = sums[f"{name}/num"], sums[f"{name}/den"]
            if kind == "table":
                V = old[name].shape[-1]
                counts = num.reshape(-1, V)
                tot = counts.sum(-1, keepdim=True)
                table = old[name].reshape(counts.shape)
                new[name] = torch.where(tot > 0, counts / tot.clamp(min=1e-300), table).reshape(old[name].shape)
            elif kind in ("bernoulli", "loc"):
                new[name] = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), old[name])
        scales = {n: (k, plan[n][1]) for n, k in agreed.items() if k in ("scale", "scale_tril")}
        if scales:  # second CM-step: scales about the new locations
            leaves = {k: v.clone().requires_grad_(True) for k, v in new.items()}
            record = runner.trace(leaves)
            moments = {}
            for name, (kind, sites) in scales.items():
                num, den = 0.0, 0.0
                for site in sites:
                    fn, value, _ = record[site]
                    base, n_event = _unwrap(fn)
                    w = weights[site]
                    if kind == "scale":
                        we = _expand_w(w, n_event)
                        sq = (value - base.loc.detach()) ** 2
                        we = we.expand(torch.broadcast_shapes(we.shape, sq.shape))
                        num = num + _vjp(base.scale, leaves[name], we * sq)
                        den = den + _vjp(base.scale, leaves[name], we)
                    else:
                        d = value - base.loc.detach()
                        outer = d[..., :, None] * d[..., None, :]
                        we = w[..., None, None].expand(torch.broadcast_shapes(w.shape + (1, 1), outer.shape))
                        num = num + _vjp(base.scale_tril, leaves[name], we * outer)
                        den = den + _vjp(base.scale_tril, leaves[name], we)
                moments[f"{name}/num"], moments[f"{name}/den"] = num, den
            if total is not None:
                moments = total(moments)
            for name, (kind, sites) in scales.items():
                num, den = moments[f"{name}/num"], moments[f"{name}/den"]
                if kind == "scale":
                    new[name] = torch.where(den > 0, (num / torch.where(den > 0, den, torch.ones_like(den))).sqrt(),
                                            old[name])
                else:
                    # den holds each matrix's total weight in every entry
                    cov = num / den.clamp(min=1e-300)
                    cov = 0.5 * (cov + cov.transpose(-1, -2))
                    new[name] = torch.linalg.cholesky(cov)
        numeric = [n for n in info.params if n not in agreed]
        if agreed:
            # safeguard: a closed-form step must not lower Q (it cannot when the recognition is right)
            q_old = sums["q_old"]
            q_new = _q(runner.trace(new), weights)
            if total is not None:
                q_new = total({"q": q_new.detach()})["q"]
            if not bool(q_new >= q_old - 1e-9 * (1 + abs(q_old))) or not all(torch.isfinite(v).all() for v in new.values()):
                new, numeric = dict(old), list(info.params)
        if numeric and m_steps > 0:
            new = self._numeric(runner, new, weights, info, numeric, m_steps, total)
        return new

    def _numeric(self, runner: _Runner, params: dict, weights: dict, info: Any, names: list[str],
                 m_steps: int, total: Callable[[dict], dict] | None = None) -> dict:
        """Maximise Q over ``names`` with L-BFGS in the unconstrained space; ``total`` (a
        data-parallel fit) sums Q and its gradient over the ranks at every evaluation, so that
        L-BFGS, deterministic in what it is given, takes the same steps on every rank."""
        transforms = {n: torch.distributions.biject_to(info.params[n]) for n in names}
        free = {n: transforms[n].inv(params[n]).detach().clone().requires_grad_(True) for n in names}
        opt = torch.optim.LBFGS(list(free.values()), max_iter=m_steps, line_search_fn="strong_wolfe")
        fixed = {k: v for k, v in params.items() if k not in names}

        def closure():
            opt.zero_grad()
            current = dict(fixed, **{n: transforms[n](free[n]) for n in names})
            loss = -_q(runner.trace(current), weights)
            loss.backward()
            if total is None:
                return loss
            grads = {n: free[n].grad if free[n].grad is not None else torch.zeros_like(free[n]) for n in names}
            summed = total({"loss": loss.detach(), **{f"grad/{n}": g for n, g in grads.items()}})
            for n in names:
                free[n].grad = summed[f"grad/{n}"]
            return summed["loss"]

        def q_at(values: dict) -> float:
            q = _q(runner.trace(values), weights).detach()
            return float(q if total is None else total({"q": q})["q"])

        with torch.no_grad():
            before = q_at(params)
        opt.step(closure)
        with torch.no_grad():
            out = dict(fixed, **{n: transforms[n](free[n]).detach() for n in names})
            after = q_at(out)
        return out if after >= before else params


#: how `ProgramEM.m_step` updates a parameter in closed form (the layout of its statistics)
_KINDS = ("table", "bernoulli", "loc", "scale", "scale_tril")


class _Steps:
    """Generic EM for `probgen.loops.iterative.run`: the state is the params. Split for
    a data-parallel fit (`probgen.loops.iterative.DataParallel`): `statistics`
    on this rank's examples (its posterior weights kept for `update`), summed over the
    ranks by the driver; `update` the M-step from the sums. ``n_examples``: the examples
    of every rank (the objective is per example of the whole data)."""

    def __init__(self, method: ProgramEM, model: Program, args: tuple, info: ProgramInfo, init: dict | None,
                 m_steps: int, n_examples: int | None = None):
        self.method, self.model, self.args, self.info, self.init, self.m_steps = method, model, args, info, init, m_steps
        self.n_examples = info.n_examples if n_examples is None else n_examples
        self.runner = _Runner(model, args, info.max_plate_nesting)
        self._local: tuple | None = None

    def start(self, seed: int | None) -> dict:
        return _initial(self.model, self.args, self.info, self.init)

    def statistics(self, params: dict) -> dict:
        log_z, weights, plan = self.method.e_step(self.runner, params, self.info)
        self._local = (weights, plan)  # this rank's, for the update that follows
        return self.method.statistics(self.runner, params, log_z, weights, self.info, plan)

    def update(self, params: dict, sums: dict, total: Callable[[dict], dict] | None = None) -> Update:
        ctx = distributed.current()
        total = ctx.sum if ctx is not None else total
        weights, plan = self._local
        new = self.method.m_step(self.runner, params, weights, self.info, sums, self.m_steps, plan, total)
        return Update(new, float(sums["log_z"]) / self.n_examples)  # per example

    def step(self, params: dict) -> Update:
        return self.update(params, self.statistics(params))


def _check_parallel(model: Program, data: Any, args: tuple, info: ProgramInfo, ctx: Any) -> int:
    """The examples of every rank of a data-parallel generic EM fit, or a ``ValueError``
    where the program's log-evidence is not a sum over its rows: every observed site must be
    in a plate of size ``len(x)`` (the program declares its examples) and every latent site in
    that plate too (a latent outside it couples the rows of every rank)."""
    plates = data_plates(model, data, args)
    if not plates:
        raise ValueError("a data-parallel generic EM fit needs a program that declares its examples: every "
                         "observed site in a plate of size len(x) (pyro.plate('data', len(x))), x the data "
                         "tensor; or pass distributed=False")
    tr = traced(model, args)
    shared = [k for k in info.discrete if k in tr.nodes and
              not any(f.name in plates for f in tr.nodes[k]["cond_indep_stack"])]
    if shared:
        raise ValueError(f"a data-parallel generic EM fit needs every latent site in the data plate; {shared} "
                         "are outside it (shared by all rows, so the rows of different ranks are not "
                         "independent): pass distributed=False")
    return sum(ctx.sizes(len(data)))


def refusal(info: ProgramInfo) -> str | None:
    """Why generic EM cannot fit a program with these sites (None: it can): one message for
    ``pg.compatible`` and for the fit."""
    if info.continuous:
        return (f"generic EM needs every latent site discrete and enumerable; {info.continuous} "
                "are continuous (use engine='svi' or 'mcmc')")
    if not info.params:
        return "generic EM fits pyro.param sites, and the program has none (use engine='svi' or 'mcmc')"
    return None


def _float64(data: Any) -> Any:
    """``data`` with its floating tensors in float64, the dtype EM runs in (float32 data would
    meet float64 parameters, e.g. Bernoulli probabilities, in one expression); integer tensors
    and other leaves unchanged."""
    if isinstance(data, torch.Tensor):
        return data.to(torch.float64) if data.is_floating_point() else data
    if isinstance(data, dict):
        return {k: _float64(v) for k, v in data.items()}
    if isinstance(data, (tuple, list)):
        out = [_float64(v) for v in data]
        return tuple(out) if isinstance(data, tuple) else out
    return data


def _initial(model: Program, args: tuple, info: Any, init: dict | None) -> dict[str, torch.Tensor]:
    """Starting values: ``init`` where given, else the program's own ``pyro.param`` initial
    values (traced once under the current seed)."""
    unknown = sorted(set(init or {}) - set(info.params))
    if unknown:
        raise ValueError(f"init names {unknown}, which are not parameters of the program; "
                         f"parameters: {sorted(info.params)}")
    with pyro.get_param_store().scope():
        tr = poutine.trace(model.program).get_trace(*args)
    values = {n: tr.nodes[n]["value"].detach().clone() for n in info.params}
    for n, v in (init or {}).items():
        values[n] = torch.as_tensor(v).clone()
    # EM runs in float64 (and one dtype, whatever mix the program's initial values had)
    return {n: v.to(torch.float64) if v.is_floating_point() else v for n, v in values.items()}


def _log_evidence(fit: Fit, x: Any) -> torch.Tensor:
    model = fit.model
    args = model.program_args(_float64(x))
    info = inspect_program(model.program, args)
    program = _Runner(model, args, info.max_plate_nesting)._fn(dict(fit.params), None, {})
    elbo = TraceEnum_ELBO(max_plate_nesting=info.max_plate_nesting)
    with pyro.get_param_store().scope():
        return torch.tensor(-elbo.loss(program, _empty_guide, *args), dtype=torch.float64)


def _log_prob(self: ProgramEM, fit: Fit, x: Any, **options: Any) -> torch.Tensor:
    """Exact log-likelihood: the declaration's own per-example ``log_prob`` when it has one,
    else the whole data set's exact log-evidence (a 0-d tensor) by enumeration."""
    check_options("log_prob", options)
    x = fit.model.check_data(x)
    if hasattr(fit.model, "log_prob"):
        return fit.model.log_prob(fit.params, x)
    return _log_evidence(fit, x)


def _sample(self: ProgramEM, fit: Fit, n: int, seed: int | None = None) -> Any:
    from probgen.random import seeded
    if hasattr(fit.model, "sample"):
        return fit.model.sample(fit.params, n, seed=seed)
    with seeded(seed):
        predictive = pyro.infer.Predictive(poutine.substitute(fit.model.program, data=fit.params), num_samples=n)
        try:
            return {k: v.detach() for k, v in predictive().items()}
        except TypeError as exc:  # the program needs its data arguments
            raise ValueError(f"cannot sample this program without arguments ({exc}); run "
                             "pyro.infer.Predictive(pyro.poutine.substitute(fn, data=fit.params), "
                             "num_samples=n)(*args) with arguments that leave the sites to sample unobserved") from None


ProgramEM.log_prob = _log_prob
ProgramEM.sample = _sample
