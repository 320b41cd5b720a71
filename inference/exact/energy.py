"""Exact evaluation (and exact maximum likelihood) of small layered energy models by
enumeration: log Z sums over the cheaper colour side with the other side summed out
analytically; log p(v) likewise with v clamped (a DBN: over its hidden layers below the
top RBM). ``pg.fit(model, x, engine="exact", init=params, steps=0)`` evaluates a declared
model at given parameters; ``steps > 0`` runs full-batch gradient ascent (Adam) on the
exact mean log-likelihood (autograd through the enumeration), on the gradient trainer
(`probgen.loops.gradient`: its validation split, early stopping, schedules, callbacks,
checkpoints and data-parallel gradient averaging)."""
from __future__ import annotations

from typing import Any

import torch

from probgen import protocols
from probgen.energy import LayeredEnergy
from probgen.fit import Fit
from probgen.loops.gradient import GradientMethod, Trainer, Update
from probgen.registry import check_options, register

from .._energy import EnergyMethod
from .._energy_cd import start_params
from .._energy_eval import MAX_BITS, exact_feasible, exact_marginals, log_unnormalized_visible


@register
class EnergyEnumeration(GradientMethod, EnergyMethod):
    engine = "exact"
    name = "enumerate"
    log_prob_kind = "exact"
    objective = "log_likelihood"
    steps_unit = "gradient steps (full-batch Adam on the exact likelihood; default 0)"
    needs = f"a layered energy model small enough to enumerate (at most 2^{MAX_BITS} states on its cheaper side)"
    parallel = "data"  # the mean log-likelihood's gradient: each rank its rows, log Z on every rank

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.LayeredEnergyModel) and exact_feasible(model)

    def fit(self, model: LayeredEnergy, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, lr: float = 0.05, **options: Any) -> Fit:
        """``steps`` (default 0: evaluate ``init``) full-batch Adam steps with learning rate ``lr``
        on the exact mean log-likelihood, on the gradient trainer (every trainer option:
        ``optim``, ``lr_schedule``, ``clip_grad``, ``ema``, ``validation``, ``patience``,
        ``callback``); history records ``log_likelihood`` (nats per row), one record per step
        at the parameters the step started from (the trainer's records: what a ``callback``
        sees; with ``validation``, also ``val_log_likelihood``) — with ``steps=0`` the one
        record of the evaluation; ``fit.state["log_likelihood"]`` is the final parameters'
        (on the training rows)."""
        opts = self.trainer_options(model, options)
        steps = 0 if steps is None else steps
        x = data.double()
        params = start_params(model, x, init, seed, torch.float64)
        free = {k: v.clone().requires_grad_(True) for k, v in params.items()}

        def mean_loglik(p, rows):
            p = _symmetrised(model, p)
            lp, _ = log_unnormalized_visible(model, p, rows)
            return lp.mean() - model.log_partition_exact(p, max_bits=MAX_BITS)

        def loss(rows: torch.Tensor) -> tuple[torch.Tensor, dict]:
            ll = mean_loglik(free, rows)
            return -ll, {"log_likelihood": float(ll.detach())}

        def validate(rows: torch.Tensor) -> float:
            with torch.no_grad():
                return float(mean_loglik(free, rows))

        # full batch (batch_size=None): every step the whole training split, nothing drawn
        trainer = Trainer([Update(loss, free)], x, steps=steps, seed=seed, batch_size=None, lr=lr,
                          objective="log_likelihood", maximise=True, validate=validate, progress=progress,
                          desc="exact (Adam)", check=lambda v: model.check_data(v).double(), **opts).run()
        history = trainer.history
        with torch.no_grad():  # the final parameters' mean log-likelihood, on the training rows of every rank
            final = _symmetrised(model, free)
            last = float(mean_loglik(final, trainer.train_rows()))
            if trainer.ctx is not None:
                n = float(len(trainer.train_rows()))
                s = trainer.ctx.sum({"ll": torch.tensor(last * n, dtype=torch.float64),
                                     "n": torch.tensor(n, dtype=torch.float64)})
                last = float(s["ll"] / s["n"])
            if not history:  # steps=0: the evaluation
                history.append({"step": 0, "log_likelihood": last})
        return self.make_fit(model, {k: v.detach() for k, v in final.items()}, history,
                             {"log_likelihood": last, **trainer.fit_state()}, {"lr": lr, **trainer.options()}, data)

    def infer(self, model: LayeredEnergy, params: dict | None, data: Any, query: str, **options: Any):
        """``query="marginals"``: the exact posterior means ``[v, E[s_1|v], …, E[s_L|v]]`` by
        enumeration (`exact_marginals`), not mean-field values."""
        check_options("infer", options)
        if params is None:
            raise ValueError("infer on an energy model needs fitted parameters: pass a Fit")
        x = model.check_data(data).double()
        return exact_marginals(model, {k: v.double() for k, v in params.items()}, x)


def _symmetrised(model: LayeredEnergy, p: dict) -> dict:
    """Lateral matrices as (R + Rᵀ)/2 with zero diagonal (the declared constraint)."""
    out = dict(p)
    for r in model.lateral_names.values():
        m = 0.5 * (p[r] + p[r].T)
        out[r] = m - torch.diag(torch.diagonal(m))
    return out
