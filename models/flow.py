"""Normalizing flows: an invertible transform of a standard normal (Papamakarios et al. 2021).

Built on Pyro's transforms (not zuko) so that a flow is a Pyro distribution — usable in
any Pyro program and as an SVI guide (``Flow.as_guide``) — and zuko stays a benchmark-only
dependency. Kinds:
  ``realnvp`` – affine coupling layers with alternating halves (Dinh et al. 2017);
  ``maf``     – masked autoregressive flow (Papamakarios et al. 2017): density in one
                parallel pass, sampling sequential over dimensions;
  ``spline``  – autoregressive rational-quadratic splines (NSF, Durkan et al. 2019),
                used like MAF: density in one parallel pass, sampling sequential.
                The spline layer is probgen's own (``SplineAutoregressive`` below, kernel
                in ``probgen.ops.spline``) rather than Pyro's ``SplineAutoregressive``:
                Pyro's generic kernel (masks for the tails, a gather per quantity, torch's
                softmax, which is slow on CPU over 8 bins) made NSF training 1.04–1.07×
                zuko's time; this one trains in 0.74–0.77× (``benchmarks/flow.py``).
A fixed affine standardisation (the data's mean and scale, set by the flow engine) is
the last transform, so the networks see unit-scale inputs.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions.torch_transform import TransformModule
from pyro.nn import AutoRegressiveNN, DenseNN
from torch import nn
from torch.distributions import constraints

from probgen.data import check_matrix
from probgen.declarations import Declaration
from probgen.nn import copy_params
from probgen.ops.spline import rqs
from probgen.random import seeded
from probgen.registry import check_options

KINDS = ("realnvp", "maf", "spline")


def build_transforms(dim: int, kind: str = "realnvp", transforms: int = 4, hidden: Sequence[int] = (64, 64),
                     bins: int = 8, bound: float = 4.0) -> nn.ModuleList:
    """The learnable transforms of a flow, base → data order. Shapes: (B, dim) -> (B, dim)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    if kind == "realnvp" and dim < 2:
        raise ValueError("a coupling flow ('realnvp') needs dim >= 2; use kind='maf' or 'spline' for 1-D data")
    hidden = list(hidden)
    split = dim // 2
    out: list[nn.Module] = []
    for i in range(transforms):
        perm = torch.arange(dim) if i % 2 == 0 else torch.arange(dim - 1, -1, -1)
        if kind == "realnvp":
            out.append(T.AffineCoupling(split, DenseNN(split, hidden, [dim - split, dim - split])))
        elif kind == "spline":  # autoregressive rational-quadratic splines, density direction parallel
            out.append(_Inverse(SplineAutoregressive(dim, hidden, bins=bins, bound=bound, permutation=perm)))
        else:  # MAF: the density direction is the parallel one, so the layer is used inverted
            out.append(_Inverse(T.AffineAutoregressive(AutoRegressiveNN(dim, hidden, permutation=perm))))
        if kind == "realnvp" and i < transforms - 1:
            out.append(_Reverse())
    return nn.ModuleList(out)


class SplineAutoregressive(TransformModule):
    """An autoregressive layer of monotonic rational-quadratic splines (NSF, Durkan et al.
    2019): ``y_d = g_d(x_d)`` with the parameters of spline ``g_d`` a MADE output (Germain et
    al. 2015) that depends on ``x`` only through the coordinates before ``d`` in ``permutation``.
    Oriented like Pyro's IAF layers: ``x → y`` is one parallel pass (the MADE on ``x``), ``y → x``
    is sequential over dimensions. Identity outside ``[−bound, bound]``; kernel in
    ``probgen.ops.spline``. Shapes: (..., dim) → (..., dim); ``log_abs_det_jacobian`` (...,).
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    autoregressive = True
    sign = 1

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64), bins: int = 8, bound: float = 4.0,
                 permutation: torch.Tensor | None = None):
        super().__init__(cache_size=1)
        # one parameter group of 3K−1 per dimension: K width logits, K height logits, K−1 slopes
        self.arn = AutoRegressiveNN(dim, list(hidden), param_dims=[3 * bins - 1], permutation=permutation)
        self.bound = bound
        self._cached_ladj: torch.Tensor | None = None

    def _params(self, x: torch.Tensor) -> torch.Tensor:
        return self.arn(x).transpose(-1, -2).contiguous()  # (..., 3K−1, dim) → (..., dim, 3K−1)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        y, ladj = rqs(x, self._params(x), self.bound)
        self._cached_ladj = ladj
        return y

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        # x_d depends on x_<d only, so D passes fix one more coordinate each (in MADE order)
        x = torch.zeros_like(y)
        for _ in range(y.shape[-1]):
            x, ladj = rqs(y, self._params(x), self.bound, inverse=True)
        self._cached_ladj = -ladj  # log|dy/dx| at the final x
        return x

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_old, y_old = self._cached_x_y
        if x is not x_old or y is not y_old:
            self._cached_x_y = x, self._call(x)  # the parallel direction: recompute
        return self._cached_ladj.sum(-1)


class _Reverse(T.Permute, nn.Module):
    """Reverse the coordinates (a volume-preserving permutation), as a module so that it can
    sit in an ``nn.ModuleList`` between coupling layers."""

    def __init__(self):
        nn.Module.__init__(self)
        T.Permute.__init__(self, torch.zeros(0, dtype=torch.long))

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y.flip(-1)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[:-1], dtype=x.dtype)

    __hash__ = nn.Module.__hash__


class _Inverse(nn.Module):
    """Holds a transform module and exposes its inverse (so its parameters stay registered)."""

    def __init__(self, transform: nn.Module):
        super().__init__()
        self.transform = transform

    @property
    def inv(self) -> Any:
        return self.transform.inv


class FlowNet(nn.Module):
    """The flow's modules: transforms plus the data standardisation buffers."""

    def __init__(self, dim: int, layers: nn.ModuleList):
        super().__init__()
        self.layers = layers
        self.register_buffer("data_loc", torch.zeros(dim))
        self.register_buffer("data_scale", torch.ones(dim))

    def transforms(self) -> list:
        ts = [m.inv if isinstance(m, _Inverse) else m for m in self.layers]
        return ts + [T.AffineTransform(self.data_loc, self.data_scale, event_dim=1)]

    def distribution(self) -> dist.TransformedDistribution:
        dim = self.data_loc.shape[0]
        # no argument validation: the flow engine checked the data once, not every step
        base = dist.Normal(torch.zeros(dim), torch.ones(dim), validate_args=False).to_event(1)
        return dist.TransformedDistribution(base, self.transforms(), validate_args=False)


class Flow(Declaration):
    """``Flow(dim, kind="realnvp"|"maf"|"spline", transforms=4, hidden=[64, 64], bins=8)``.

    Or ``Flow(dim, net=my_transform_modules)`` with an ``nn.ModuleList`` of Pyro transform
    modules (base → data order). Parameters (``fit.params``) are the module's state dict.
    ``log_prob(params, x)`` is the exact density by the change of variables,
    ``log p(x) = log N(f⁻¹(x)) + log|det ∂f⁻¹/∂x|``.

    RealNVP (Dinh, Sohl-Dickstein & Bengio 2017), MAF (Papamakarios, Pavlakou & Murray 2017)
    or rational-quadratic neural splines (Durkan et al. 2019), trained by maximum likelihood.

    Args:
      dim: the data dimension D.
      kind: ``"realnvp"``, ``"maf"`` or ``"spline"``.
      transforms: the number of transforms.
      hidden: the hidden widths of each transform's network.
      bins: spline bins (``"spline"``).
      net: your own ``nn.ModuleList`` of Pyro transform modules instead.
      seed: seeds the default networks' initial weights.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import Flow
        >>> x = pg.load_dataset("two-moons")[:256]
        >>> fit = pg.fit(Flow(2, transforms=2, hidden=[16]), x, steps=5, seed=0, progress=False)
        >>> fit.engine, fit.method, fit.log_prob_kind
        ('flow', 'likelihood', 'exact')
        >>> fit.log_prob(x[:5]).shape, fit.sample(3, seed=0).shape
        (torch.Size([5]), torch.Size([3, 2]))
    """

    short_name = "flow"
    default_engine = "flow"
    default_dataset = "two-moons"
    invertible = True
    _repr_fields = ("dim", "kind", "transforms", "hidden")

    def __init__(self, dim: int, kind: str = "realnvp", transforms: int = 4, hidden: Sequence[int] = (64, 64),
                 bins: int = 8, net: nn.ModuleList | None = None, seed: int = 0):
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim, self.kind, self.transforms, self.hidden, self.bins = dim, kind, transforms, list(hidden), bins
        with seeded(seed):  # the default networks' initial weights
            layers = net if net is not None else build_transforms(dim, kind, transforms, hidden, bins)
        self.net = FlowNet(dim, layers)

    def structure(self, *args: Any, params: bool = False, **options: Any):
        """z → x: a base Normal z mapped to x by the invertible transform (deterministic given z)."""
        from probgen.graph import plate_diagram
        check_options("structure", options)
        return plate_diagram(
            {"z": {"kind": "latent", "distribution": "Normal", "plates": ("data",)},
             "x": {"kind": "observed", "distribution": f"{self.kind} flow", "plates": ("data",)}},
            [("z", "x")], {"data": None}, {"transform": ["x"]} if params else None)

    def check_data(self, data: Any) -> torch.Tensor:
        return check_matrix(data, self.dim, dtype=torch.float32)

    def init_params(self, data: Any = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        return copy_params(self.net)

    def distribution(self, params: dict | None = None) -> dist.TransformedDistribution:
        """The flow as a Pyro ``TransformedDistribution`` (a standard normal base, event shape ``(D,)``).

        Args:
          params: a state dict to load into the networks first (``None``: as they are).

        Returns:
          The distribution.
        """
        if params is not None:
            self.net.load_state_dict(params)
        return self.net.distribution()

    def log_prob(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """The exact log-density by the change of variables.

        Args:
          params: the networks' state dict (``Fit.params``).
          x: ``(N, D)`` points.

        Returns:
          ``(N,)`` log-densities.
        """
        return self.distribution(params).log_prob(x)

    def sample(self, params: dict, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` draws from the flow.

        Args:
          params: the networks' state dict (``Fit.params``).
          n: the number of draws.
          seed: seeds the draws.

        Returns:
          An ``(n, D)`` tensor.
        """
        with seeded(seed):
            return self.distribution(params).sample((n,))

    def as_guide(self, program: Any) -> Any:
        """An SVI guide over ``program``'s latent sites: this kind of flow on the
        unconstrained latent space (Pyro's ``AutoNormalizingFlow``)."""
        from pyro.infer.autoguide import AutoNormalizingFlow
        make = functools.partial(_guide_transform, kind=self.kind, transforms=self.transforms,
                                 hidden=tuple(self.hidden), bins=self.bins)
        return AutoNormalizingFlow(program, make)

    @classmethod
    def for_data(cls, data: Any, **options: Any) -> "Flow":
        return cls(int(torch.as_tensor(data).shape[-1]), **options)

    @classmethod
    def example(cls, seed: int = 0) -> tuple["Flow", torch.Tensor]:
        from probgen.data import two_moons
        return cls(2, transforms=2, hidden=(16,), seed=seed), two_moons(64, seed=seed)[0].float()


def _guide_transform(dim: int, *, kind: str, transforms: int, hidden: tuple, bins: int) -> Any:
    if kind == "realnvp" and dim >= 2:
        return T.ComposeTransformModule(list(build_transforms(dim, kind, transforms, hidden, bins)))
    # As a guide an autoregressive layer is used as an IAF (Kingma et al. 2016): sampling is
    # one parallel pass and log q of its own samples is cached.
    if kind == "spline":  # our spline layer is IAF-oriented already: base → latent is its parallel pass
        perms = [torch.arange(dim) if i % 2 == 0 else torch.arange(dim - 1, -1, -1) for i in range(transforms)]
        return T.ComposeTransformModule([SplineAutoregressive(dim, hidden, bins=bins, permutation=p)
                                         for p in perms])
    return T.ComposeTransformModule([T.AffineAutoregressive(AutoRegressiveNN(dim, list(hidden)))
                                     for _ in range(transforms)])
