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


def rqs(x: torch.Tensor, params: torch.Tensor, bound: float, inverse: bool = False
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The spline ``y = g(x)`` (or ``x = g⁻¹(y)`` with ``inverse=True``, the input then being y)
    and the elementwise log-slope of the map computed, ``log|dy/dx|`` (or ``log|dx/dy|``).

    Shapes: ``x`` (...,), ``params`` (..., 3K−1) → two tensors of shape (...,).
    Forward: Durkan et al. eq. 4 (value) and eq. 5 (derivative); inverse: the root of the
    quadratic in their appendix A, in the form that does not cancel catastrophically.
    Only the bin's own quantities are formed per element (one gather); the softmax is written
    out (exp, cumsum, one division) because torch's CPU softmax over a last dimension of 8 is
    an order of magnitude slower than these three operations.
    """
    k = (params.shape[-1] + 1) // 3
    wh = params[..., :2 * k].unflatten(-1, (2, k))  # (..., 2, K): width and height logits
    e = (wh - wh.detach().amax(-1, keepdim=True)).exp()  # softmax numerators (shift-invariant)
    cum = e.cumsum(-1)
    # (..., 2, 2, K): for widths and heights, the cumulative share up to bin j and bin j's share
    q = torch.stack((cum, e), -2) / cum[..., -1:].unsqueeze(-1)
    # bin j's width is a + c·share_j: a floor of 2B·MIN_BIN, the rest shared out by the softmax;
    # so the upper knot of bin j is −B + a(j+1) + c·cumshare_j
    a, c = 2 * bound * MIN_BIN, 2 * bound * (1 - k * MIN_BIN)
    xc = x.clamp(-bound, bound)
    j = torch.arange(1, k, dtype=x.dtype, device=x.device)
    interior = q[..., 1 if inverse else 0, 0, :k - 1] * c + (j * a - bound)  # (..., K−1) inner knots
    b = torch.searchsorted(interior, xc.unsqueeze(-1), right=True)  # (..., 1): the bin, in 0..K−1
    g = q.gather(-1, b.unsqueeze(-2).unsqueeze(-2).expand(*b.shape[:-1], 2, 2, 1)).squeeze(-1)  # (..., 2, 2)
    size = g[..., 1] * c + a  # (..., 2): the bin's width and height
    x0, y0 = (g[..., 0] * c + (a * (b + 1) - bound) - size).unbind(-1)  # its lower knot
    w, h = size.unbind(-1)
    # knot derivatives: interior ones from the parameters, the boundary ones (pre-activation 0) are 1
    dd = F.pad(params[..., 2 * k:], (1, 1)).gather(-1, torch.cat((b, b + 1), -1))
    d0, d1 = (F.softplus(dd, beta=_BETA) + MIN_DERIVATIVE).unbind(-1)
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
    qa = h * (s - d0) + eta * c2
    qb = h * d0 - eta * c2
    qc = -s * eta
    xi = 2 * qc / (-qb - (qb * qb - 4 * qa * qc).clamp_min(0).sqrt())
    om = xi * (1 - xi)
    den = s + c2 * om
    slope = s * s * (d1 * xi * xi + 2 * s * om + d0 * (1 - xi) * (1 - xi)) / (den * den)
    return x0 + xi * w + (x - xc), -slope.log()
