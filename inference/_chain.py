"""The setup the hidden-Markov-chain methods (exact, em) share: a declaration's emissions
in the form the chain kernels (`probgen.ops.chain`) read fastest, and its starting
parameters as checked float64 tensors. What a chain declaration offers is
`probgen.protocols.HiddenMarkovChain`."""
from __future__ import annotations

from typing import Any

import torch


def emissions(model: Any, params: dict, data: Any) -> Any:
    """The model's emission log-likelihoods in the form the chain kernels read fastest."""
    if hasattr(model, "emission_table"):
        return model.emission_table(params, data)
    return model.log_emission(params, data)


def start_params(model: Any, data: Any, init: dict | None, seed: int | None) -> dict[str, torch.Tensor]:
    """``init`` completed from ``model.init_params``; float64; unknown names refused. An
    ``init`` that gives every parameter needs no data-driven start (k-means for Gaussian
    emissions costs more than a Baum–Welch iteration)."""
    complete = init is not None and set(model.param_shapes()) <= set(init)
    params = {k: v.to(torch.float64) for k, v in model.init_params(None if complete else data, seed=seed).items()}
    for name, value in (init or {}).items():
        if name not in params:
            raise ValueError(f"init names {name!r}, which is not a parameter; parameters: {sorted(params)}")
        value = torch.as_tensor(value, dtype=torch.float64)
        if value.shape != params[name].shape:
            raise ValueError(f"init[{name!r}] must have shape {tuple(params[name].shape)}, "
                             f"got {tuple(value.shape)}")
        params[name] = value.clone()
    for name in ("initial", "transition", "probs"):
        if name in params:
            p = params[name]
            if (p < 0).any() or not torch.allclose(p.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-6):
                raise ValueError(f"{name} must hold probabilities whose last axis sums to 1")
    return params
