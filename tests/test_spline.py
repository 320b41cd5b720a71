"""The rational-quadratic spline kernel (probgen.ops.spline) and the autoregressive spline
layer of kind="spline" flows: oracles are autograd derivatives, Pyro's own spline kernel on
the same knots, and exact identities (inverse, tails, zero parameters)."""
import pytest
import torch

from probgen.models.flow import SplineAutoregressive
from probgen.ops.spline import MIN_DERIVATIVE, rqs

B, K = 4.0, 8


@pytest.fixture
def float64():
    """float64, so that the tolerances measure the algorithm, not float32 rounding."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _case(n=4000, scale=2.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = scale * torch.randn(n, 3 * K - 1, generator=g)
    x = 3.0 * torch.randn(n, generator=g)  # about 18% of the points in the tails |x| > 4
    return x, params


def test_inverse_of_forward_inside_and_outside_the_bound(float64):
    x, params = _case()
    assert (x.abs() > B).sum() > 100 and (x.abs() < B).sum() > 100
    y, ld = rqs(x, params, B)
    xb, ldi = rqs(y, params, B, inverse=True)
    # float64 roots of a well-conditioned quadratic (a stable root formula): errors ~1e-12
    torch.testing.assert_close(xb, x, atol=1e-9, rtol=0)
    torch.testing.assert_close(ldi, -ld, atol=1e-9, rtol=0)


def test_tails_are_the_identity(float64):
    x, params = _case()
    y, ld = rqs(x, params, B)
    out = x.abs() > B
    # the tail is g(±B) + (x ∓ B) with g(±B) = ±B up to the rounding of a softmax's sum to 1
    torch.testing.assert_close(y[out], x[out], atol=1e-12, rtol=0)
    # log g'(±B) = log 1, evaluated at a rounded ξ ≈ 0 or 1 (error ~1e-16·B/w, w ≥ 8e-3) times
    # d log g'/dξ, which reaches ~1e3 for these random splines: ~1e-11
    torch.testing.assert_close(ld[out], torch.zeros(int(out.sum())), atol=1e-10, rtol=0)


def test_log_slope_is_the_autograd_derivative(float64):
    x, params = _case()
    xr = x.clone().requires_grad_()
    dy, = torch.autograd.grad(rqs(xr, params, B)[0].sum(), xr)
    assert (dy > 0).all()
    torch.testing.assert_close(rqs(x, params, B)[1], dy.log(), atol=1e-9, rtol=0)
    # and the inverse's log-slope is its own autograd derivative
    y = rqs(x, params, B)[0]
    yr = y.clone().requires_grad_()
    dx, = torch.autograd.grad(rqs(yr, params, B, inverse=True)[0].sum(), yr)
    torch.testing.assert_close(rqs(y, params, B, inverse=True)[1], dx.log(), atol=1e-8, rtol=0)


def test_matches_pyros_spline_on_the_same_knots(float64):
    """Pyro's quadratic spline kernel with the same bin floors and our knot derivatives gives
    the same values and log-slopes in both directions (a peer implementation as oracle)."""
    from pyro.distributions.transforms.spline import _monotonic_rational_spline
    x, params = _case(n=500)
    x, params = x.reshape(50, 10), params.reshape(50, 10, -1)
    w, h = params[..., :K].softmax(-1), params[..., K:2 * K].softmax(-1)
    # our interior derivatives, given to Pyro with min_derivative=0 so that its boundary ones are 1
    d = torch.nn.functional.softplus(params[..., 2 * K:], beta=torch.log(torch.tensor(2.0)) / (1 - MIN_DERIVATIVE))
    d = d + MIN_DERIVATIVE
    for inverse in (False, True):
        want_y, want_ld = _monotonic_rational_spline(x, w, h, d, inverse=inverse, bound=B, min_derivative=0.0)
        y, ld = rqs(x, params, B, inverse=inverse)
        # Pyro finds bins with a 1e-6 margin on the knots; both agree to rounding elsewhere
        torch.testing.assert_close(y, want_y, atol=1e-9, rtol=0)
        torch.testing.assert_close(ld, want_ld, atol=1e-7, rtol=0)


def test_monotone(float64):
    _, params = _case(n=1, scale=3.0)
    x = torch.linspace(-6, 6, 20001)
    y, ld = rqs(x, params.expand(len(x), -1), B)
    assert (y.diff() > 0).all() and torch.isfinite(ld).all()


def test_zero_parameters_are_the_identity(float64):
    """Equal bins and unit knot derivatives (all-zero parameters) make every bin's rational
    quadratic the line y = x."""
    x = torch.linspace(-6, 6, 1001)
    y, ld = rqs(x, torch.zeros(len(x), 3 * K - 1), B)
    torch.testing.assert_close(y, x, atol=1e-12, rtol=0)
    torch.testing.assert_close(ld, torch.zeros_like(x), atol=1e-12, rtol=0)
    xb, _ = rqs(x, torch.zeros(len(x), 3 * K - 1), B, inverse=True)
    torch.testing.assert_close(xb, x, atol=1e-12, rtol=0)


def _layer(dim=4, seed=0):
    torch.manual_seed(seed)
    t = SplineAutoregressive(dim, (16, 16), bins=K, bound=B, permutation=torch.tensor([2, 0, 3, 1]))
    for p in t.parameters():  # move off the near-identity initialisation (log-slopes ~ −5..2)
        p.data.add_(0.2 * torch.randn_like(p))
    return t


def test_layer_inverts_inside_and_outside_the_bound(float64):
    t = _layer()
    x = 3.0 * torch.randn(200, 4)
    x[0] = torch.tensor([5.0, -7.0, 4.5, -4.2])  # every coordinate in a tail
    y = t(x)
    t._cached_x_y = None, None  # invert afresh (sequential over dimensions), not from the cache
    # float64 rounding, amplified by the inverse's slope 1/g' ≤ e^5 and along the MADE chain
    torch.testing.assert_close(t.inv(y), x, atol=1e-9, rtol=0)


def test_layer_log_det_is_the_triangular_jacobian(float64):
    t = _layer()
    perm = torch.tensor([2, 0, 3, 1])
    x = 3.0 * torch.randn(6, 4)
    y = t(x)
    ld = t.log_abs_det_jacobian(x, y)
    for i in range(6):
        jac = torch.autograd.functional.jacobian(lambda v: t._call(v.unsqueeze(0)).squeeze(0), x[i])
        # autoregressive: y_perm[a] depends only on x_perm[≤ a], so J is lower-triangular in MADE order
        jp = jac[perm][:, perm]
        torch.testing.assert_close(jp.triu(1), torch.zeros(4, 4), atol=0, rtol=0)
        torch.testing.assert_close(ld[i], torch.linalg.slogdet(jac)[1], atol=1e-9, rtol=0)
    # log|det| computed afresh (no cached pair) equals the cached one
    torch.testing.assert_close(t.log_abs_det_jacobian(x.clone(), y.clone()), ld, atol=1e-12, rtol=0)
    # and the sequential direction caches the same log|det| at its solution
    t._cached_x_y = None, None
    xb = t.inv(y)
    torch.testing.assert_close(t.log_abs_det_jacobian(xb, y), ld, atol=1e-9, rtol=0)
