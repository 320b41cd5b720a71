"""Maximum likelihood for normalizing flows: minimise the exact negative log-likelihood
``−log p(x) = −log N(f⁻¹(x)) − log|det ∂f⁻¹/∂x|`` by Adam on minibatches."""
from __future__ import annotations

from typing import Any

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.loops.gradient import GradientMethod, Trainer, Update, moments
from probgen.nn import load_params
from probgen.registry import register


@register
class FlowLikelihood(GradientMethod):
    engine = "flow"
    name = "likelihood"
    objective = "loss"
    steps_unit = "gradient steps (minibatches)"
    devices = ("cpu", "cuda", "mps")  # torch only (CUDA / MPS written, not run here)
    needs = "an invertible declaration (distribution() with an exact log_prob, e.g. Flow)"
    log_prob_kind = "exact"
    parallel = "data"  # per-example NLL: gradients averaged over the global minibatch

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.Invertible) and bool(model.invertible)

    def fit(self, model: Any, data: torch.Tensor, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, batch_size: int = 256, lr: float = 1e-3, **options: Any) -> Fit:
        """``loss``: the negative log-likelihood per example; the trainer's options
        (`probgen.loops.gradient`) besides."""
        opts = self.trainer_options(model, options)
        steps = 1000 if steps is None else steps
        net = model.net
        if init:
            load_params(net, init)
        else:  # standardise: the last transform maps unit-scale outputs onto the data's scale
            loc, scale = moments(data)  # every rank's rows in a data-parallel fit
            net.data_loc.copy_(loc)
            net.data_scale.copy_(scale.clamp_min(1e-6))

        def nll(batch: torch.Tensor) -> torch.Tensor:
            return -net.distribution().log_prob(batch).mean()

        def validate(x: torch.Tensor) -> float:
            with torch.no_grad():
                return float(nll(x))

        optim = opts.pop("optim")
        update = Update(nll, dict(net.named_parameters()), optim_args=_fused(optim))
        trainer = Trainer([update], data, steps=steps, seed=seed, batch_size=batch_size, lr=lr, validate=validate,
                          progress=progress, desc="flow", check=model.check_data, optim=optim, **opts).run()
        return Fit(model, model.init_params(), trainer.history, engine=self.engine, method=self.name,
                   state=trainer.fit_state(), options={"batch_size": batch_size, "lr": lr, **trainer.options()})


def _fused(optim: Any) -> dict:
    """Adam with the fused kernel (one pass per tensor; on CPU about 2.5x faster per step than
    the foreach form for a flow's ~20 small tensors) where torch has it on CPU (>= 2.4)."""
    if optim != "adam":
        return {}
    try:
        torch.optim.Adam([torch.zeros(1, requires_grad=True)], fused=True)
        return {"fused": True}
    except (RuntimeError, ValueError):
        return {"foreach": True}
