"""Generative adversarial networks (Goodfellow et al. 2014).

The generator is a Pyro program: z ~ N(0, I), x = g(z) (an implicit model: no density).
A discriminator D(x) ∈ (0, 1) is trained against it by the ``adversarial`` engine.
"""
from __future__ import annotations

from typing import Any, Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from probgen.data import check_matrix
from probgen.declarations import Program
from probgen.nn import copy_params, mlp
from probgen.random import seeded
from probgen.registry import check_options


class GANNet(nn.Module):
    def __init__(self, generator: nn.Module, discriminator: nn.Module):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator


class GAN(Program):
    """``GAN(dim, latent_dim=2, hidden=[64, 64])`` with default MLPs, or
    ``GAN(dim, latent_dim, generator=g, discriminator=d)`` with your modules:
    ``g(z (B, latent_dim)) -> (B, dim)`` and ``d(x (B, dim)) -> (B, 1)`` logits.
    Parameters are the state dict of both networks (``generator.*``, ``discriminator.*``);
    ``seed`` sets the default networks' initial weights.

    Goodfellow et al. (2014), "Generative adversarial nets", with the non-saturating
    generator loss by default; ``log_prob`` is a Parzen-window estimate from generated
    samples (such estimates are poor, Theis et al. 2016).

    Args:
      dim: the data dimension D.
      latent_dim: the noise dimension.
      hidden: the hidden widths of the default networks.
      generator: your own generator module.
      discriminator: your own discriminator module.
      seed: seeds the default networks' initial weights.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import GAN
        >>> x = pg.load_dataset("two-moons")[:256]
        >>> fit = pg.fit(GAN(2, hidden=[16]), x, steps=5, seed=0, progress=False)
        >>> fit.engine, fit.method, fit.log_prob_kind
        ('adversarial', 'gan', 'estimate')
        >>> fit.log_prob(x[:5]).shape, fit.sample(3, seed=0).shape
        (torch.Size([5]), torch.Size([3, 2]))
    """

    short_name = "gan"
    default_engine = "adversarial"
    default_dataset = "two-moons"
    generic_inference = False  # an implicit sampler: the generic SVI / NUTS methods do not apply
    _repr_fields = ("dim", "latent_dim")

    def __init__(self, dim: int, latent_dim: int = 2, hidden: Sequence[int] = (64, 64),
                 generator: nn.Module | None = None, discriminator: nn.Module | None = None, seed: int = 0):
        if not isinstance(dim, int) or dim < 1 or not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"dim and latent_dim must be positive integers, got {dim!r}, {latent_dim!r}")
        self.dim, self.latent_dim = dim, latent_dim
        with seeded(seed):  # the default networks' initial weights
            g = generator if generator is not None else mlp([latent_dim, *hidden, dim])
            d = discriminator if discriminator is not None else mlp([dim, *hidden, 1], activation=nn.LeakyReLU)
        _check_shapes(g, d, dim, latent_dim)
        self.net = GANNet(g, d)

    def structure(self, *args: Any, params: bool = False, **options: Any):
        """z → x: noise z pushed through the generator, x = G(z) (an implicit density)."""
        from probgen.graph import plate_diagram
        check_options("structure", options)
        return plate_diagram(
            {"z": {"kind": "latent", "distribution": "Normal", "plates": ("data",)},
             "x": {"kind": "observed", "distribution": "implicit (generator)", "plates": ("data",)}},
            [("z", "x")], {"data": None},
            {"generator": ["x"], "discriminator": ["x"]} if params else None)

    def program(self, n: int = 1) -> torch.Tensor:
        """The generator as a Pyro program: ``n`` draws of x = g(z), z ~ N(0, I)."""
        with pyro.plate("N", n):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.latent_dim), 1.0).to_event(1))
            return pyro.deterministic("x", self.net.generator(z), event_dim=1)

    def program_args(self, data: Any) -> tuple:
        return (len(data) if data is not None else 1,)

    def check_data(self, data: Any) -> torch.Tensor:
        return check_matrix(data, self.dim, dtype=torch.float32)

    def init_params(self, data: Any = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        return copy_params(self.net)

    def sample(self, params: dict, n: int, seed: int | None = None) -> torch.Tensor:
        """``n`` draws G(z), z ~ N(0, I).

        Args:
          params: the networks' state dict (``Fit.params``).
          n: the number of draws.
          seed: seeds the draws.

        Returns:
          An ``(n, dim)`` tensor.
        """
        self.net.load_state_dict(params)
        with seeded(seed), torch.no_grad():
            return self.program(n)

    @classmethod
    def for_data(cls, data: Any, **options: Any) -> "GAN":
        return cls(int(torch.as_tensor(data).shape[-1]), **options)

    @classmethod
    def example(cls, seed: int = 0) -> tuple["GAN", torch.Tensor]:
        from probgen.data import two_moons
        return cls(2, hidden=(16,), seed=seed), two_moons(64, seed=seed)[0].float()


def _check_shapes(g: nn.Module, d: nn.Module, dim: int, latent_dim: int) -> None:
    with torch.no_grad():
        try:
            x = g(torch.zeros(2, latent_dim))
        except Exception as exc:
            raise ValueError(f"the generator must map (B, {latent_dim}) -> (B, {dim}); it failed: {exc}") from None
        if not isinstance(x, torch.Tensor) or x.shape != (2, dim):
            raise ValueError(f"the generator must return shape (B, {dim}); it returned {getattr(x, 'shape', x)}")
        try:
            y = d(x)
        except Exception as exc:
            raise ValueError(f"the discriminator must map (B, {dim}) -> (B, 1); it failed: {exc}") from None
        if not isinstance(y, torch.Tensor) or y.shape not in ((2, 1), (2,)):
            raise ValueError(f"the discriminator must return logits of shape (B, 1); it returned {getattr(y, 'shape', y)}")
