"""What the grammar methods share: the capability check (by protocol) and ``init``."""
from __future__ import annotations

from typing import Any

import torch

#: the methods a grammar declaration offers (see probgen.models.PCFG)
GRAMMAR_PROTOCOL = ("rules", "expected_counts", "m_step", "treebank_counts", "viterbi", "posteriors",
                    "log_prob", "init_params")


def is_grammar(model: Any) -> bool:
    return all(hasattr(model, a) for a in GRAMMAR_PROTOCOL)


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
