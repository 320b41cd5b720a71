"""Learning the tables of a discrete Bayesian network: counting for complete data,
expectation-maximisation for missing cells (Lauritzen 1995; Koller & Friedman 2009,
§19.2). The E-step is one batched variable-elimination contraction over the rows with
missing cells; its gradient with respect to the tables gives every family's expected
counts at once (Darwiche 2003). The M-step normalises expected counts plus optional
Dirichlet pseudo-counts (then EM climbs the posterior instead of the likelihood).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from probgen import distributed, protocols
from probgen.fit import Fit
from probgen.inference.exact.bayesian_network import count_tables, normalise_counts
from probgen.ops.bayesian_network import CompiledNetwork
from probgen.loops.iterative import LOOP, Update, check_callback, check_n_init, run
from probgen.registry import Method, check_options, check_tol, register


@register
class NetworkEM(Method):
    engine = "em"
    name = "bayesian_network"
    needs = "a discrete Bayesian network (variables, parents, tables)"
    objective = "log_likelihood"
    steps_unit = "EM iterations (complete data: one closed-form step)"
    loop = LOOP
    parallel = "data"  # rows are independent: expected family counts summed over ranks

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.NetworkWithTables)

    def fit(self, model: Any, data: torch.Tensor, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = 1e-7, n_init: int = 1, callback: Callable | None = None,
            pseudo_count: float = 0.0, **options: Any) -> Fit:
        """``steps``: the most EM iterations (default 100); stops when the relative change of
        the log-likelihood per row (log-posterior with pseudo-counts) is below ``tol``
        (`probgen.registry.converged`; ``tol=None``: run all steps). ``history``
        records it per row; complete data are fitted in one closed-form step
        (``state["closed_form"]``; ``fit.converged`` is then ``None``).
        ``n_init`` restarts from independent seeds (the best final value wins) and
        ``callback`` as in `probgen.loops.iterative.run`.
        Initial tables: ``init``, else counts of the observed cells of each family
        (rows where the family is fully observed) with one pseudo-count, randomly
        perturbed (``seed``) for families with a latent (never observed) variable."""
        check_options("em", options, ("tol", "n_init", "callback", "pseudo_count"))
        check_tol(tol), check_n_init(n_init), check_callback(callback)  # the closed form runs no loop
        if pseudo_count < 0:
            raise ValueError(f"pseudo_count must be >= 0, got {pseudo_count}")
        x = data.numpy()
        ctx = distributed.current()
        missing = bool((x < 0).any())
        if ctx is not None:  # every rank takes the same branch: missing cells anywhere mean EM
            missing = bool(ctx.sum({"missing": torch.tensor(float(missing))})["missing"] > 0)
        if not missing and ctx is not None:
            params, ll = _closed_form_distributed(model, x, data, pseudo_count, ctx)
            return Fit(model, params, [{"step": 0, self.objective: ll}], engine=self.engine, method=self.name,
                       state={"closed_form": True}, options={"pseudo_count": pseudo_count, "tol": tol})
        if not missing:  # complete data: the M-step of the exact counts is the answer
            params = count_tables(model, x, pseudo_count)
            ll = float(model.log_prob(params, data).mean())
            return Fit(model, params, [{"step": 0, self.objective: ll}], engine=self.engine, method=self.name,
                       state={"closed_form": True}, options={"pseudo_count": pseudo_count, "tol": tol})
        steps = 100 if steps is None else steps
        result = run(_Steps(model, x, init, pseudo_count, self.expected_counts), objective=self.objective,
                     steps=steps, tol=tol, seed=seed, n_init=n_init, progress=progress, callback=callback,
                     desc=self.engine)
        return Fit(model, result.state, result.history, engine=self.engine, method=self.name,
                   state=result.fit_state(), options={"pseudo_count": pseudo_count, "tol": tol, "n_init": n_init})

    def expected_counts(self, model: Any, params: dict, x) -> tuple[list[torch.Tensor], Any]:
        """The E-step: every family's expected counts over the rows ``x`` (N, V) (-1 =
        missing) and the log-likelihood of the rows, at the tables ``params`` (exact
        elimination here; the ``bp`` and ``meanfield`` methods override it)."""
        return CompiledNetwork(model, params).expected_counts([params[f"probs_{v}"] for v in model.variables], x)


class _Steps:
    """EM of a network's tables for `probgen.loops.iterative.run`: the state is the params."""

    def __init__(self, model: Any, x, init: dict | None, pseudo_count: float, expected_counts):
        self.model, self.x, self.init, self.pseudo_count = model, x, init, pseudo_count
        self.expected_counts = expected_counts  # the E-step: exact elimination, or the bp / meanfield approximation

    def start(self, seed: int | None) -> dict:
        model, x = self.model, self.x
        if self.init:
            return model.check_params(dict(model.check_params(None), **self.init))
        return _break_symmetry(model, available_case_tables(model, x, 1.0), x, seed)

    def step(self, params: dict) -> Update:
        tables = [params[f"probs_{v}"] for v in self.model.variables]
        counts, ll = self.expected_counts(self.model, params, self.x)  # E-step at the current tables
        ll = (float(ll) + _log_prior(tables, self.pseudo_count)) / self.x.shape[0]  # per row
        return Update(normalise_counts(self.model, counts, self.pseudo_count), ll)  # M-step


    def statistics(self, params: dict) -> dict:
        """This rank's E-step: every family's expected counts (``counts_i``, in
        ``model.variables`` order), the log-likelihood ``log_lik`` and the number of rows ``n``."""
        counts, ll = self.expected_counts(self.model, params, self.x)
        out = {f"counts_{i}": c for i, c in enumerate(counts)}
        out.update(log_lik=torch.as_tensor(ll, dtype=torch.float64).reshape(()),
                   n=torch.tensor(float(self.x.shape[0]), dtype=torch.float64))
        return out

    def update(self, params: dict, stats: dict) -> Update:
        """The M-step of `step` from the counts summed over every rank's rows."""
        tables = [params[f"probs_{v}"] for v in self.model.variables]
        counts = [stats[f"counts_{i}"] for i in range(len(self.model.variables))]
        ll = (float(stats["log_lik"]) + _log_prior(tables, self.pseudo_count)) / float(stats["n"])
        return Update(normalise_counts(self.model, counts, self.pseudo_count), ll)


def _closed_form_distributed(model: Any, x, data: torch.Tensor, pseudo_count: float, ctx: Any
                             ) -> tuple[dict, float]:
    """`count_tables` over every rank's complete rows (the family counts summed), and
    the log-likelihood per row of all of them: the local closed form, data-parallel."""
    from probgen.ops.bayesian_network import compiled
    params = model.check_params(None)
    counts, _ = compiled(model, params).expected_counts([params[f"probs_{v}"] for v in model.variables], x)
    summed = ctx.sum({f"counts_{i}": c for i, c in enumerate(counts)})
    params = normalise_counts(model, [summed[f"counts_{i}"] for i in range(len(counts))], pseudo_count)
    ll = ctx.sum({"log_lik": model.log_prob(params, data).sum(),
                  "n": torch.tensor(float(len(data)), dtype=torch.float64)})
    return params, float(ll["log_lik"] / ll["n"])


def _break_symmetry(model: Any, params: dict, x, seed: int | None) -> dict:
    """Tables of families with a never-observed (latent) variable start uniform from
    available-case counting, a fixed point of EM where every latent state looks alike;
    multiply them by Exp(1) noise (a Dirichlet(1) perturbation) so EM can separate them."""
    import numpy as np
    latent = {v for v in model.variables if (x[:, model.index[v]] < 0).all()}
    if not latent:
        return params
    rng = np.random.default_rng(seed)
    out = dict(params)
    for v in model.variables:
        if v in latent or latent & set(model.parents[v]):
            t = out[f"probs_{v}"] * torch.from_numpy(rng.exponential(size=tuple(out[f"probs_{v}"].shape)))
            out[f"probs_{v}"] = t / t.sum(-1, keepdim=True)
    return out


def _log_prior(tables: list[torch.Tensor], pseudo_count: float) -> float:
    if pseudo_count == 0:
        return 0.0
    return float(sum((pseudo_count * torch.log(t.clamp_min(1e-300))).sum() for t in tables))


def available_case_tables(model: Any, x, pseudo_count: float = 0.0) -> dict[str, torch.Tensor]:
    """Tables counted, family by family, over the rows where that family (the variable and
    its parents) is fully observed — the usual baseline and EM's starting point."""
    import numpy as np
    counts = []
    for v in model.variables:
        cols = [model.index[p] for p in model.parents[v]] + [model.index[v]]
        rows = x[(x[:, cols] >= 0).all(1)][:, cols]
        c = np.zeros(model.table_shape(v))
        np.add.at(c, tuple(rows.T), 1.0)
        counts.append(torch.from_numpy(c))
    return normalise_counts(model, counts, pseudo_count)
