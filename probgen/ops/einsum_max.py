"""A max-plus ("tropical") einsum backend for ``opt_einsum``: contractions in log space
where sums of products become maxima of sums, i.e. max-product message passing.

``opt_einsum.contract(eq, *log_tables, backend="probgen.ops.einsum_max")`` returns the
max over the contracted indices of the sum of the operands. Pairwise steps broadcast
the two operands to their joint index set, add, and take the max over the indices that
leave, so memory per step is that of the contraction path (the treewidth), as for the
log-sum-exp backend ``pyro.ops.einsum.torch_log``.
"""
from __future__ import annotations

import torch
from pyro.ops.einsum.util import Tensordot


def transpose(a: torch.Tensor, axes) -> torch.Tensor:
    return a.permute(axes)


def einsum(equation: str, *operands: torch.Tensor) -> torch.Tensor:
    """``max_{contracted} sum_i operand_i`` for an einsum ``equation`` (no repeated index
    within one operand)."""
    inputs, output = equation.split("->")
    inputs = inputs.split(",")
    sizes: dict[str, int] = {}
    for dims, op in zip(inputs, operands):
        if len(set(dims)) != len(dims):
            raise ValueError(f"einsum_max: repeated index in operand {dims!r}")
        sizes.update(zip(dims, op.shape))
    contracted = sorted(set("".join(inputs)) - set(output))
    order = list(output) + contracted
    total = None
    for dims, op in zip(inputs, operands):
        perm = sorted(range(len(dims)), key=lambda i: order.index(dims[i]))
        t = op.permute(perm).reshape([sizes[d] if d in dims else 1 for d in order])
        total = t if total is None else total + t
    total = total.expand([sizes[d] for d in order])
    if contracted:
        total = total.reshape(total.shape[:len(output)] + (-1,)).amax(-1)
    return total.clone() if total is operands[0] else total


tensordot = Tensordot(einsum)

__all__ = ["transpose", "einsum", "tensordot"]
