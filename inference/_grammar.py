"""The setup the grammar methods (exact, em) share: which kind of data they were given
(sentences or a treebank) and the starting parameters from ``init``. What a grammar
declaration offers is `probgen.protocols.Grammar`."""
from __future__ import annotations

from typing import Any

import torch

def is_treebank(data: Any) -> bool:
    """Checked grammar data are token tuples (sentences) or trees (objects with ``leaves``)."""
    return bool(data) and hasattr(data[0], "leaves")


def start_params(model: Any, init: dict | None) -> dict[str, torch.Tensor]:
    params = model.init_params()
    if init:
        unknown = sorted(set(init) - set(params))
        if unknown:
            raise ValueError(f"init names {unknown}, which are not parameters of {type(model).__name__}; "
                             f"parameters: {sorted(params)}")
        for k, v in init.items():
            v = torch.as_tensor(v, dtype=torch.float64)
            if v.shape != params[k].shape:
                raise ValueError(f"init[{k!r}] must have shape {tuple(params[k].shape)}, got {tuple(v.shape)}")
            params[k] = v
        if hasattr(model, "with_probs"):
            model.with_probs(params["probs"])  # raises a clear error unless each left-hand side sums to 1
    return params
