"""Maximum likelihood for normalizing flows: minimise the exact negative log-likelihood
``−log p(x) = −log N(f⁻¹(x)) − log|det ∂f⁻¹/∂x|`` by Adam on minibatches."""
from __future__ import annotations

from typing import Any

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.nn import load_params
from probgen.progress import progress as bar
from probgen.registry import Method, check_options, register

from .._train import minibatches


@register
class FlowLikelihood(Method):
    engine = "flow"
    name = "likelihood"
    objective = "loss"
    steps_unit = "gradient steps (minibatches)"
    needs = "an invertible declaration (distribution() with an exact log_prob, e.g. Flow)"
    log_prob_kind = "exact"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.Invertible) and bool(model.invertible)

    def fit(self, model: Any, data: torch.Tensor, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, batch_size: int = 256, lr: float = 1e-3, clip: float | None = None, **options: Any) -> Fit:
        check_options("flow", options, ("batch_size", "lr", "clip"))
        steps = 1000 if steps is None else steps
        net = model.net
        if init:
            load_params(net, init)
        else:  # standardise: the last transform maps unit-scale outputs onto the data's scale
            net.data_loc.copy_(data.mean(0))
            net.data_scale.copy_(data.std(0).clamp_min(1e-6) if len(data) > 1 else torch.ones(data.shape[1]))
        opt = _adam(list(net.parameters()), lr)
        history = []
        for step, batch in enumerate(bar(minibatches(data, batch_size, steps, seed), total=steps,
                                         desc="flow", enabled=progress)):
            loss = -net.distribution().log_prob(batch).mean()
            if not torch.isfinite(loss):
                raise ValueError(f"the negative log-likelihood became non-finite at step {step}; try a smaller lr")
            opt.zero_grad()
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            opt.step()
            history.append({"step": step, "loss": float(loss.detach())})
        return Fit(model, model.init_params(), history, engine=self.engine, method=self.name,
                   options={"batch_size": batch_size, "lr": lr})


def _adam(params: list, lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel (one pass per tensor; on CPU about 2.5x faster per step than
    the foreach form for a flow's ~20 small tensors), the foreach form where torch lacks it."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # torch < 2.4 has no fused Adam on CPU
        return torch.optim.Adam(params, lr=lr, foreach=True)
