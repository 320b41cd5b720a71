"""The variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014; the seed §1.3.5).

The model is p(h) p(x | h) with p(h) = N(0, I) and a neural decoder p(x | h) (Bernoulli for
0/1 data, Gaussian with one learned scale otherwise); the guide is an amortised Gaussian
encoder q(h | x) = N(μ(x), diag σ(x)²). The ``svi`` engine maximises the ELBO

    L(x) = E_{h~q}[log p(x, h)] + H(q) = log p(x) − KL(q(h|x) ‖ p(h|x)),

and evaluates log p(x) by the importance-weighted bound IWAE-k (Burda et al. 2016),
which is the ELBO for k = 1 and increases to log p(x) as k → ∞.

Parameters: as :mod:`probgen.models.autoencoder` (decoder ``W1…``, ``b0…``, ``scale``;
encoder ``enc_W…``, ``enc_b…``, ``enc_loc_W``, ``enc_loc_b``, ``enc_scale_W``, ``enc_scale_b``
with σ(x) = softplus(·) + 1e-4).
"""
from __future__ import annotations

from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F

from .autoencoder import EncoderDecoder


class VAE(EncoderDecoder):
    """A variational autoencoder.

    Args:
      latent_dim: the code size C.
      dims: D, or (D, H1, …, Hk): input size and the encoder's hidden widths (decoder mirrors).
      likelihood: ``"bernoulli"`` (0/1 data) or ``"gaussian"`` (one learned scale; with no
        hidden layers this is the linear-Gaussian model of probabilistic PCA).
      activation: hidden-layer nonlinearity.
    """

    short_name = "vae"
    encoder_dist = "gaussian"
    learned_scale = True
    _repr_fields = ("latent_dim", "dims", "likelihood", "activation")

    def __init__(self, latent_dim: int = 2, dims: Any = 64, likelihood: str = "bernoulli",
                 activation: str = "relu"):
        super().__init__(dims, latent_dim, likelihood, activation, "identity")
        self.kind = "vae"

    @property
    def latent_dim(self) -> int:
        return self.code_dim

    def prior(self) -> dist.Distribution:
        return dist.Normal(torch.zeros(self.code_dim), torch.ones(self.code_dim)).to_event(1)

    def encoder_scale(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        layers = self.encoder_hidden(params, x)
        a = layers[-1][1] if layers else x
        return F.softplus(a @ params["enc_scale_W"].T + params["enc_scale_b"]) + 1e-4

    @classmethod
    def for_data(cls, data: Any, **options: Any) -> "VAE":
        d = int(torch.as_tensor(data).shape[1])
        defaults = {"latent_dim": 8, "dims": (d, 128), "likelihood": cls._likelihood_for(data)}
        return cls(**{**defaults, **options})

    @classmethod
    def example(cls, seed: int = 0) -> tuple["VAE", torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        x = (torch.rand(24, 6, generator=g) < 0.4).float()
        return cls(2, dims=(6, 4)), x

