"""Gibbs sampling on discrete factor graphs (Geman & Geman 1984), through the MCMC driver.

One *sweep* resamples every unobserved variable from its full conditional
p(x_v | rest) ∝ exp(Σ_{f ∋ v} θ_f(x_f)), one colour class of a greedy colouring of the
Markov network at a time (variables of one colour share no factor, so they are
conditionally independent and drawn together: a blocked Gibbs sweep). All chains and all
evidence rows run side by side, as rows of one ``(chains × rows, V)`` state; each chain
draws from its own generator.

Queries (``pg.infer(fg, evidence, engine="mcmc", query="marginals")``, evidence as for the
exact engine): the Rao-Blackwellised marginals — each variable's full conditional at its
update, averaged over ``num_samples`` kept sweeps of ``num_chains`` chains after ``warmup``.

``pg.fit`` is stochastic maximum likelihood with persistent chains (Younes 1989; Tieleman
2008's PCD): the gradient of the mean log-likelihood, E_data[1{x_f}] − E_model[1{x_f}], with
the model expectation taken over ``num_chains`` persistent chains advanced ``gibbs_steps``
sweeps per optimiser step, on the gradient trainer (every trainer option). The history
records the pseudo-log-likelihood per example (Besag 1975: Σ_v log p(x_v | x_−v), exact).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.loops.gradient import GradientMethod, Trainer, Update
from probgen.loops.mcmc import Kernel, check_budget, run
from probgen.ops.message_passing import FactorSet, colour_classes
from probgen.random import generator
from probgen.registry import register

from ..exact.factor_graph import evidence_rows, factor_set


class FactorGibbs:
    """Blocked Gibbs sweeps over the rows of a state ``values`` ``(R, V)`` (R = chains ×
    evidence rows, chain-major) for a factor set; ``free`` ``(R, V)`` marks the unobserved
    cells; ``generators[c]`` draws chain ``c``'s rows."""

    def __init__(self, fs: FactorSet, chains: int):
        self.fs, self.chains = fs, chains
        # every chain's rows carry the evidence; a factor set without evidence (one row of
        # nothing observed) serves any number of rows
        self.unary = fs.unary.repeat(chains, 1, 1)
        self.colours = colour_classes(fs)
        # each group's table with position i moved last: indexing it at the other positions'
        # values gives that factor's log-potential for every state of position i
        self.moved = [[g.table.movedim(1 + i, -1) for i in range(g.arity)] for g in fs.groups]

    def logits(self, values: torch.Tensor) -> torch.Tensor:
        """Σ_{f ∋ v} θ_f(x_v = k, x_rest) + evidence, for every row, variable and state (R, V, K)."""
        R = values.shape[0]
        fs = self.fs
        out = self.unary.expand(R, -1, -1)
        for g, moved in zip(fs.groups, self.moved):
            f = torch.arange(len(g.ids))[None, :]
            for i in range(g.arity):
                idx = (f.expand(R, -1),) + tuple(values[:, g.vars[:, j]] for j in range(g.arity) if j != i)
                e = moved[i][idx]                                                          # (R, F, k_i)
                k = e.shape[-1]
                if k < fs.K:
                    e = torch.nn.functional.pad(e, (0, fs.K - k), value=0.0)
                out = out.index_add(1, g.vars[:, i], e)
        return out

    def sweep(self, values: torch.Tensor, free: torch.Tensor, generators: list, record: dict | None = None) -> None:
        """Resample every free cell once, colour by colour (in place). ``record[v]``
        receives the full conditional (R, card_v) of variable ``v`` at its update."""
        rows = values.shape[0] // self.chains
        for members in self.colours:
            logp = torch.log_softmax(self.logits(values)[:, members], -1)                # (R, M, K)
            u = torch.cat([torch.rand(rows, *logp.shape[1:], generator=g, dtype=logp.dtype) for g in generators])
            draw = (logp - torch.log(-torch.log(u.clamp_min(1e-300)))).argmax(-1)         # Gumbel-max
            values[:, members] = torch.where(free[:, members], draw, values[:, members])
            if record is not None:
                for j, v in enumerate(members.tolist()):
                    if v in record:
                        record[v] = logp[:, j, :self.fs.cards[v]].exp()

    def pseudo_log_likelihood(self, values: torch.Tensor) -> torch.Tensor:
        """Σ_v log p(x_v | x_−v) per row (R,) (Besag 1975)."""
        logp = torch.log_softmax(self.logits(values), -1)
        return logp.gather(-1, values[..., None]).squeeze(-1).sum(-1)


def _start(fs: FactorSet, chains: int, generators: list) -> torch.Tensor:
    """Every chain's rows start at the evidence, free cells uniform over their states."""
    rows = fs.B
    k = torch.tensor(fs.cards, dtype=torch.float64)
    u = torch.cat([torch.rand(rows, fs.V, generator=g, dtype=torch.float64) for g in generators])
    values = (u * k).long().clamp(max=(k - 1).long())
    ev = fs.evidence.repeat(chains, 1)
    return torch.where(ev >= 0, ev, values)


class Query(Kernel):
    """Gibbs sweeps at fixed log-potentials; the kept draw is every target's full
    conditional in every evidence row (averaged by the driver: Rao-Blackwellised)."""

    vectorised = True
    name = "mcmc gibbs"

    def __init__(self, fs: FactorSet, targets: list[int]):
        self.fs, self.targets = fs, targets
        self.averaged = tuple(str(t) for t in targets)

    def init(self, seeds: list, chains: list, warmup: int) -> dict:
        gens = [generator(s) if s is not None else torch.Generator().manual_seed(int(torch.randint(2**62, ())))
                for s in seeds]
        sweeps = FactorGibbs(self.fs, len(seeds))
        return {"sweeps": sweeps, "values": _start(self.fs, len(seeds), gens),
                "free": (self.fs.evidence < 0).repeat(len(seeds), 1), "generators": gens, "record": None}

    def step(self, state: dict, warmup: bool) -> dict:
        state["record"] = None if warmup else dict.fromkeys(self.targets)
        state["sweeps"].sweep(state["values"], state["free"], state["generators"], state["record"])
        return state

    def draw(self, state: dict) -> dict:
        if state["record"] is None:
            return {}
        rows = self.fs.B
        return {str(t): p.reshape(-1, rows, p.shape[-1]) for t, p in state["record"].items()}  # (chain, rows, card)

    def stats(self, state: dict) -> dict:
        return {}  # no statistics: the driver records no history for the query


@register
class FactorGraphGibbs(GradientMethod):
    engine = "mcmc"
    name = "pcd"
    needs = "discrete variables with log-potential tables (a FactorGraph)"
    queries = ("marginals",)
    objective = "pseudo_log_likelihood"
    steps_unit = "optimiser steps (each after gibbs_steps sweeps of the persistent chains)"
    log_prob_kind = "exact"  # the declaration's exact log p(x) at the fitted potentials
    trainer_defaults = {"optim": "adam"}

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.FactorGraphModel)

    @staticmethod
    def _factor_set(model: Any, params: dict | None, rows: torch.Tensor | None) -> FactorSet:
        cards, scopes, tables = factor_set(model, params)
        return FactorSet(cards, scopes, [t.detach().to(torch.float64) for t in tables], rows)

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, lr: float = 0.1, batch_size: int | None = None, num_chains: int = 100,
            gibbs_steps: int = 1, l2: float = 0.0, **options: Any) -> Fit:
        """Persistent-chain stochastic maximum likelihood: ``steps`` (default 200) optimiser
        steps (Adam, ``lr`` 0.1, every trainer option), each after ``gibbs_steps`` sweeps of
        ``num_chains`` persistent chains at the current potentials; ``batch_size`` (``None``:
        all rows) of the data per step; ``l2`` penalty."""
        opts = self.trainer_options(model, options)
        for name, v in (("num_chains", num_chains), ("gibbs_steps", gibbs_steps)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        steps = 200 if steps is None else steps
        params = model.init_params(data, seed)
        params.update({k: v.to(torch.float64).clone() for k, v in (init or {}).items()})
        theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        gen = generator(seed)
        # the persistent particles: num_chains rows of one chain, nothing observed
        n_vars = len(model.variables)
        chains = _start(self._factor_set(model, theta, torch.full((num_chains, n_vars), -1, dtype=torch.long)),
                        1, [gen])

        def gibbs() -> FactorGibbs:
            """Sweeps at the current potentials, nothing observed (any number of rows)."""
            return FactorGibbs(self._factor_set(model, theta, None), 1)

        def loss(x: torch.Tensor) -> tuple[torch.Tensor, dict]:
            sweeps = gibbs()
            for _ in range(gibbs_steps):  # chains advanced in place at the current potentials
                sweeps.sweep(chains, torch.ones_like(chains, dtype=torch.bool), [gen])
            value = -(model.unnormalized_log_prob(theta, x).mean() - model.unnormalized_log_prob(theta, chains).mean())
            if l2:
                value = value + l2 * sum((t ** 2).sum() for t in theta.values())
            return value, {"pseudo_log_likelihood": float(sweeps.pseudo_log_likelihood(x).mean())}

        def validate(x: torch.Tensor) -> float:
            with torch.no_grad():
                return float(gibbs().pseudo_log_likelihood(x).mean())

        trainer = Trainer([Update(loss, theta)], data, steps=steps, seed=seed, batch_size=batch_size, lr=lr,
                          validate=validate, objective="pseudo_log_likelihood", maximise=True, progress=progress,
                          desc="mcmc PCD",
                          check=model.check_data, generators={"gibbs": gen}, tensors={"chains": chains}, **opts).run()
        out = {k: v.detach().clone() for k, v in theta.items()}
        return Fit(model, out, trainer.history, engine=self.engine, method=self.name, state=trainer.fit_state(),
                   options={"lr": lr, "batch_size": batch_size, "num_chains": num_chains, "gibbs_steps": gibbs_steps,
                            "l2": l2, **trainer.options()})

    def infer(self, model: Any, params: dict | None, data: Any, query: str, num_samples: int = 1000,
              warmup: int | None = None, num_chains: int = 4, thin: int = 1, seed: int | None = None,
              callback: Callable | None = None) -> Any:
        """Rao-Blackwellised Gibbs marginals ``{variable: (card,)}`` (or ``(n, card)`` for
        batched evidence): ``num_samples`` kept sweeps per chain after ``warmup`` (default
        ``num_samples // 10``), ``num_chains`` chains, every ``thin``-th kept."""
        rows, n = evidence_rows(model, data)
        names = list(model.variables)
        warmup = num_samples // 10 if warmup is None else warmup
        check_budget(num_samples, warmup, num_chains, thin)
        fs = self._factor_set(model, params, rows)
        chains = run(Query(fs, list(range(len(names)))), steps=num_samples, warmup=warmup, num_chains=num_chains,
                     thin=thin, seed=seed, progress=False, callback=callback)
        out = {}
        for j, v in enumerate(names):
            probs = chains.sums[str(j)].sum(0) / chains.kept                              # (rows, card)
            out[v] = probs[0] if n is None else probs
        return out

