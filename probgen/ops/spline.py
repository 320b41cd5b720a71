"""Monotonic rational-quadratic splines (Durkan et al. 2019, "Neural Spline Flows", sec. 3.1
and appendix A), elementwise on [−B, B] with identity tails outside.

One spline per element of ``x``; its ``3K − 1`` unconstrained parameters are, in this order,
K bin-width logits, K bin-height logits and K − 1 interior-knot derivative pre-activations.
Widths and heights are softmaxes (scaled to 2B, floored at ``MIN_BIN``·2B), derivatives
``MIN_DERIVATIVE`` + a softplus scaled so that a zero pre-activation is slope 1;
the two boundary knots have derivative 1 so the spline meets the identity tails with matching
value and slope. All-zero parameters are therefore the identity map.

Tails without a mask: with ``x̄ = clamp(x, −B, B)`` the output is ``g(x̄) + (x − x̄)``; inside
the interval that is ``g(x)``, outside it is ``±B + (x ∓ B) = x`` with log-slope
``log g'(±B) = log 1 = 0``, and autograd gives slope 1 through the second term.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MIN_BIN = 1e-3
MIN_DERIVATIVE = 1e-3
# softplus(0; β) = log(2)/β = 1 − MIN_DERIVATIVE: a zero pre-activation gives slope exactly 1
_BETA = math.log(2.0) / (1 - MIN_DERIVATIVE)


def rqs_knots(params: torch.Tensor, bound: float) -> torch.Tensor:
    """Knots of the splines. ``params``: (..., 3K−1) → (..., 3, K+1) holding, in this order,
    the knots' x positions, y positions and derivatives (boundary derivatives 1)."""
    k = (params.shape[-1] + 1) // 3
    wh = params[..., :2 * k].unflatten(-1, (2, k)).softmax(-1)  # (..., 2, K): widths, heights
    cum = F.pad(wh.cumsum(-1), (1, 0))  # (..., 2, K+1), from 0 to 1
    # x_j = −B + 2B (j·MIN_BIN + (1 − K·MIN_BIN) cum_j): bins of width ≥ 2B·MIN_BIN, ending at B
    offset = torch.arange(k + 1, dtype=params.dtype, device=params.device) * (2 * bound * MIN_BIN) - bound
    xy = torch.add(offset, cum, alpha=2 * bound * (1 - k * MIN_BIN))
    d = F.pad(F.softplus(params[..., 2 * k:], beta=_BETA) + MIN_DERIVATIVE, (1, 1), value=1.0)
    return torch.cat((xy, d.unsqueeze(-2)), -2)


def rqs(x: torch.Tensor, params: torch.Tensor, bound: float, inverse: bool = False
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The spline ``y = g(x)`` (or ``x = g⁻¹(y)`` with ``inverse=True``, the input then being y)
    and the elementwise log-slope of the map computed, ``log|dy/dx|`` (or ``log|dx/dy|``).

    Shapes: ``x`` (...,), ``params`` (..., 3K−1) → two tensors of shape (...,).
    Forward: Durkan et al. eq. 4 (value) and eq. 5 (derivative); inverse: the root of the
    quadratic in their appendix A, in the form that does not cancel catastrophically.
    """
    knots = rqs_knots(params, bound)  # (..., 3, K+1)
    xc = x.clamp(-bound, bound)
    # the bin: how many interior knots (x positions, or y for the inverse) lie at or below xc
    interior = knots[..., 1 if inverse else 0, 1:-1]  # (..., K−1)
    b = (interior <= xc.unsqueeze(-1)).sum(-1, keepdim=True)  # (..., 1), in 0..K−1
    lo_hi = knots.gather(-1, (b + _STEP.to(b.device)).unsqueeze(-2).expand(*b.shape[:-1], 3, 2))  # (..., 3, 2)
    x0, y0, d0 = lo_hi[..., 0].unbind(-1)
    w, h, _ = (lo_hi[..., 1] - lo_hi[..., 0]).unbind(-1)
    d1 = lo_hi[..., 2, 1]
    s = h / w  # the bin's mean slope
    if not inverse:
        xi = (xc - x0) / w
        om = xi * (1 - xi)
        den = s + (d0 + d1 - 2 * s) * om
        y = y0 + h * (s * xi * xi + d0 * om) / den
        # eq. 5: g' = s² (d1 ξ² + 2 s ξ(1−ξ) + d0 (1−ξ)²) / den²
        slope = s * s * (d1 * xi * xi + 2 * s * om + d0 * (1 - xi) * (1 - xi)) / (den * den)
        return y + (x - xc), slope.log()
    eta = xc - y0
    c2 = d0 + d1 - 2 * s
    a = h * (s - d0) + eta * c2
    bq = h * d0 - eta * c2
    c = -s * eta
    xi = 2 * c / (-bq - (bq * bq - 4 * a * c).clamp_min(0).sqrt())
    om = xi * (1 - xi)
    den = s + c2 * om
    slope = s * s * (d1 * xi * xi + 2 * s * om + d0 * (1 - xi) * (1 - xi)) / (den * den)
    return x0 + xi * w + (x - xc), -slope.log()


_STEP = torch.tensor([0, 1])
