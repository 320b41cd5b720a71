"""The variational autoencoder (Kingma & Welling 2014; Rezende et al. 2014; Goodfellow, Bengio & Courville 2016, §20.10.3).

The model is p(h) p(x | h) with p(h) = N(0, I) and a neural decoder p(x | h) (Bernoulli for
0/1 data, Gaussian with one learned scale otherwise); the guide is an amortised Gaussian
encoder q(h | x) = N(μ(x), diag σ(x)²). The ``svi`` engine maximises the ELBO

    L(x) = E_{h~q}[log p(x, h)] + H(q) = log p(x) − KL(q(h|x) ‖ p(h|x)),

and evaluates log p(x) by the importance-weighted bound IWAE-k (Burda et al. 2016),
which is the ELBO for k = 1 and increases to log p(x) as k → ∞.

With ``flow_layers=L > 0`` the encoder is a Gaussian followed by L inverse autoregressive
flow steps (Kingma et al. 2016): z ← g ⊙ z + (1 − g) ⊙ m with (m, s) = MADE(z) autoregressive
(Germain et al. 2015), g = sigmoid(s), and the order of z reversed between steps; log q(h|x) =
log N(z₀; μ(x), σ(x)²) − Σ_l Σ_j log g_lj. (The flow is shared by all x; the base Gaussian is
amortised.) In the guide the base draw z₀ is an auxiliary site and h a ``Delta`` carrying the
log-determinant, so Pyro's ELBO and the IWAE bound see log q(h|x) exactly.

Parameters: as `probgen.models.autoencoder` (decoder ``W1…``, ``b0…``, ``scale``;
encoder ``enc_W…``, ``enc_b…``, ``enc_loc_W``, ``enc_loc_b``, ``enc_scale_W``, ``enc_scale_b``
with σ(x) = softplus(·) + 1e-4), and per flow step l: ``iaf{l}_W`` (H, C), ``iaf{l}_b`` (H,),
``iaf{l}_m_W``, ``iaf{l}_s_W`` (C, H), ``iaf{l}_m_b``, ``iaf{l}_s_b`` (C,), with H = 2C hidden units.
"""
from __future__ import annotations

from typing import Any

import pyro
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
      flow_layers: inverse autoregressive flow steps after the Gaussian encoder (0: none).

    Kingma & Welling (2014), "Auto-encoding variational Bayes", trained by the amortised SVI on
    the ELBO; ``log_prob`` is the importance-weighted bound IWAE-k (Burda, Grosse &
    Salakhutdinov 2016); ``flow_layers`` adds inverse autoregressive flow (Kingma et al. 2016).

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import VAE
        >>> x = pg.load_dataset("digits-binary")[:64]  # 64 rows of 8 × 8 binary pixels
        >>> fit = pg.fit(VAE(latent_dim=2, dims=(64, 16)), x, steps=2, seed=0, progress=False)
        >>> fit.engine, fit.log_prob(x[:5]).shape
        ('svi', torch.Size([5]))
        >>> pg.infer(fit, x[:5], query="encode").shape  # the codes
        torch.Size([5, 2])
    """

    short_name = "vae"
    encoder_dist = "gaussian"
    learned_scale = True
    _repr_fields = ("latent_dim", "dims", "likelihood", "activation", "flow_layers")

    def __init__(self, latent_dim: int = 2, dims: Any = 64, likelihood: str = "bernoulli",
                 activation: str = "relu", flow_layers: int = 0):
        super().__init__(dims, latent_dim, likelihood, activation, "identity")
        if not isinstance(flow_layers, int) or flow_layers < 0:
            raise ValueError(f"flow_layers must be a non-negative integer, got {flow_layers!r}")
        if flow_layers and latent_dim < 2:
            raise ValueError("an inverse autoregressive flow needs latent_dim >= 2")
        self.kind = "vae"
        self.flow_layers = flow_layers

    # ---- the inverse autoregressive flow --------------------------------------------------
    def encoder_shapes(self) -> dict[str, tuple]:
        """The shape of every encoder parameter, the IAF steps' included.

        Returns:
          ``{name: shape}``.
        """
        shapes = super().encoder_shapes()
        c, h = self.code_dim, 2 * self.code_dim
        for l in range(1, self.flow_layers + 1):
            shapes.update({f"iaf{l}_W": (h, c), f"iaf{l}_b": (h,), f"iaf{l}_m_W": (c, h), f"iaf{l}_m_b": (c,),
                           f"iaf{l}_s_W": (c, h), f"iaf{l}_s_b": (c,)})
        return shapes

    def init_params(self, data: Any = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        out = super().init_params(data, seed)
        for l in range(1, self.flow_layers + 1):
            out[f"iaf{l}_s_b"] = torch.full((self.code_dim,), 2.0)  # gates start near 1: z ≈ identity
        return out

    def made_masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """MADE masks (Germain et al. 2015) for inputs of degree 1..C and 2C hidden units of
        degree 1..C−1: output j depends only on inputs i < j."""
        c = self.code_dim
        d_in = torch.arange(1, c + 1)
        d_hid = torch.arange(2 * c) % (c - 1) + 1
        return (d_hid[:, None] >= d_in[None]).float(), (d_in[:, None] > d_hid[None]).float()

    def flow(self, params: dict, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z₀ (..., C) → (z_L, Σ log|det ∂z_l/∂z_{l−1}|) with shapes (..., C) and (...)."""
        m_in, m_out = self.made_masks()
        logdet = torch.zeros(z.shape[:-1])
        for l in range(1, self.flow_layers + 1):
            hid = torch.relu(z @ (params[f"iaf{l}_W"] * m_in).T + params[f"iaf{l}_b"])
            m = hid @ (params[f"iaf{l}_m_W"] * m_out).T + params[f"iaf{l}_m_b"]
            s = hid @ (params[f"iaf{l}_s_W"] * m_out).T + params[f"iaf{l}_s_b"]
            gate = torch.sigmoid(s)
            z = gate * z + (1 - gate) * m
            logdet = logdet + F.logsigmoid(s).sum(-1)
            z = z.flip(-1)  # reverse the order: a permutation, |det| = 1
        return z, logdet

    def encode(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """The Gaussian's mean μ(x); with a flow, its image under the flow (the flow of the
        base mean, not the exact mean of q, which has no closed form)."""
        loc = super().encode(params, x)
        return self.flow(params, loc)[0] if self.flow_layers else loc

    def guide(self, x: torch.Tensor, train: bool = False) -> None:
        if not self.flow_layers:
            return super().guide(x, train)
        p = self._params(self.encoder_shapes())
        loc, scale = super().encode(p, x), self.encoder_scale(p, x)
        with pyro.plate("data", len(x), dim=-1):
            z0 = pyro.sample("h_base", dist.Normal(loc, scale).to_event(1), infer={"is_auxiliary": True})
            z, logdet = self.flow(p, z0)
            # log q(h) = log q0(z0) − log|det|: the auxiliary site carries log q0, the Delta the rest
            pyro.sample("h", dist.Delta(z, log_density=-logdet, event_dim=1))

    @property
    def latent_dim(self) -> int:
        """The code size C."""
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

