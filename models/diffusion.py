"""Denoising diffusion probabilistic models (Ho, Jain & Abbeel 2020).

Forward chain q(x_t | x_{t-1}) = N(√(1−β_t) x_{t-1}, β_t I), in closed form
q(x_t | x_0) = N(√ᾱ_t x_0, (1−ᾱ_t) I) with ᾱ_t = ∏_{s≤t} (1−β_s); the posterior
q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I) (Ho et al. eq. 6–7); a denoiser ε_θ(x_t, t)
predicts the noise; the reverse chain p_θ(x_{t-1} | x_t) = N(μ_θ, β̃_t I) is sampled
ancestrally, or deterministically by DDIM (Song, Meng & Ermon 2021).
Schedules: ``linear`` (Ho et al., scaled to the number of steps) and ``cosine``
(Nichol & Dhariwal 2021).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from probgen.data import check_matrix
from probgen.declarations import Declaration
from probgen.nn import TimeMLP, copy_params
from probgen.random import seeded
from probgen.registry import check_options

SCHEDULES = ("linear", "cosine")


def beta_schedule(steps: int, schedule: str = "linear") -> torch.Tensor:
    """β_1..β_T, float64, shape (T,)."""
    if schedule == "linear":
        scale = 1000.0 / steps  # Ho et al.'s 1e-4..0.02 for T=1000, kept comparable for other T
        return torch.linspace(1e-4 * scale, min(0.02 * scale, 0.999), steps, dtype=torch.float64)
    if schedule == "cosine":
        s = 0.008
        t = torch.linspace(0, steps, steps + 1, dtype=torch.float64) / steps
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")


class DiffusionNet(nn.Module):
    """The denoiser plus the data standardisation buffers (set by the engine)."""

    def __init__(self, dim: int, denoiser: nn.Module):
        super().__init__()
        self.denoiser = denoiser
        self.register_buffer("data_loc", torch.zeros(dim))
        self.register_buffer("data_scale", torch.ones(dim))
        # range the predicted x_0 is clipped to (standardised units; set by the engine)
        self.register_buffer("x0_range", torch.tensor([-float("inf"), float("inf")]))


class Diffusion(Declaration):
    """``Diffusion(dim, steps=100, schedule="linear"|"cosine", hidden=[128, 128])`` or
    ``Diffusion(dim, steps, denoiser=my_module)`` where ``my_module(x_t (B, D), t (B,) long)``
    returns ε̂ of shape (B, D). Parameters are the denoiser's state dict.

    Data are standardised (per-dimension mean, one pooled scale; set by the engine); densities
    are reported for the original data (the log-Jacobian of the standardisation is added).

    Denoising diffusion (Ho, Jain & Abbeel 2020, DDPM; the cosine schedule of Nichol &
    Dhariwal 2021); ``log_prob`` is the variational bound.

    Args:
      dim: the data dimension D.
      steps: the number of diffusion steps T.
      schedule: ``"linear"`` or ``"cosine"`` noise schedule.
      hidden: the hidden widths of the default denoiser.
      denoiser: your own denoiser module instead.
      seed: seeds the default network's initial weights.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import Diffusion
        >>> x = pg.load_dataset("two-moons")[:256]
        >>> fit = pg.fit(Diffusion(2, steps=10, hidden=[16]), x, steps=5, seed=0, progress=False)
        >>> fit.engine, fit.method, fit.log_prob_kind
        ('diffusion', 'ddpm', 'bound')
        >>> fit.log_prob(x[:5]).shape, fit.sample(3, seed=0).shape
        (torch.Size([5]), torch.Size([3, 2]))
    """

    short_name = "diffusion"
    default_engine = "diffusion"
    default_dataset = "two-moons"
    _repr_fields = ("dim", "steps", "schedule")

    def __init__(self, dim: int, steps: int = 100, schedule: str = "linear", hidden: Sequence[int] = (128, 128),
                 denoiser: nn.Module | None = None, seed: int = 0):
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not isinstance(steps, int) or steps < 2:
            raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
        self.dim, self.steps, self.schedule = dim, steps, schedule
        self.betas = beta_schedule(steps, schedule)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, 0)
        with seeded(seed):  # the default network's initial weights
            denoiser = denoiser if denoiser is not None else TimeMLP(dim, hidden)
        _check_denoiser(denoiser, dim)
        self.net = DiffusionNet(dim, denoiser)

    # ---- the forward chain -------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε. Shapes: x0, noise (B, D); t (B,) in 0..T−1."""
        ab = self.alphas_cumprod.to(x0.dtype)[t][:, None]
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean μ̃_t (B, D) and variance β̃_t (B, 1) of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 6–7)."""
        dt = x0.dtype
        ab = self.alphas_cumprod.to(dt)
        ab_prev = torch.cat([torch.ones(1, dtype=dt), ab[:-1]])
        beta, a = self.betas.to(dt)[t][:, None], (1 - self.betas.to(dt))[t][:, None]
        abt, abp = ab[t][:, None], ab_prev[t][:, None]
        mean = abp.sqrt() * beta / (1 - abt) * x0 + a.sqrt() * (1 - abp) / (1 - abt) * xt
        var = (1 - abp) / (1 - abt) * beta
        return mean, var

    # ---- the reverse chain -------------------------------------------------------
    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t, clipped to the data's range: near t = T, ᾱ_t → 0
        amplifies any error in ε̂ (as diffusers' ``clip_sample``)."""
        ab = self.alphas_cumprod.to(xt.dtype)[t][:, None]
        lo, hi = self.net.x0_range.to(xt.dtype)
        return ((xt - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(lo, hi)

    def p_mean_variance(self, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p_θ(x_{t-1} | x_t) = N(μ̃_t(x̂_0, x_t), β̃_t): the posterior at the predicted x_0.
        For t = 0 the variance is β_1 (β̃_1 = 0 would make the decoder degenerate)."""
        eps = self.net.denoiser(xt, t)
        mean, var = self.q_posterior(self.predict_x0(xt, t, eps), xt, t)
        var = torch.where(t[:, None] == 0, self.betas.to(xt.dtype)[0].expand_as(var), var)
        return mean, var

    def p_sample(self, xt: torch.Tensor, t: int, g: torch.Generator) -> torch.Tensor:
        """One reverse step x_{t−1} ~ p_θ(x_{t−1} | x_t) (Ho et al. 2020, Algorithm 2); the mean at t = 0.

        Args:
          xt: ``(B, D)`` states at step ``t``.
          t: the step.
          g: the generator of the noise.

        Returns:
          ``(B, D)`` states at step ``t − 1``.
        """
        tt = torch.full((len(xt),), t, dtype=torch.long)
        mean, var = self.p_mean_variance(xt, tt)
        if t == 0:
            return mean
        return mean + var.sqrt() * torch.randn(xt.shape, generator=g, dtype=xt.dtype)

    def ddim_sample(self, xt: torch.Tensor, ts: list[int], g: torch.Generator, eta: float = 0.0) -> torch.Tensor:
        """DDIM (Song et al. 2021, eq. 12) over the decreasing steps ``ts``."""
        ab = self.alphas_cumprod.to(xt.dtype)
        for i, t in enumerate(ts):
            tt = torch.full((len(xt),), t, dtype=torch.long)
            eps = self.net.denoiser(xt, tt)
            x0 = self.predict_x0(xt, tt, eps)
            a_prev = ab[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=xt.dtype)
            sigma = eta * ((1 - a_prev) / (1 - ab[t]) * (1 - ab[t] / a_prev)).sqrt()
            xt = a_prev.sqrt() * x0 + (1 - a_prev - sigma ** 2).clamp_min(0).sqrt() * eps
            if eta > 0 and i + 1 < len(ts):
                xt = xt + sigma * torch.randn(xt.shape, generator=g, dtype=xt.dtype)
        return xt

    # ---- declaration hooks -------------------------------------------------------
    def structure(self, *args: Any, params: bool = False, **options: Any):
        """The learned reverse chain x_T → … → x_t → x_{t−1} → … → x_0 (x_0 the data)."""
        from probgen.graph import plate_diagram
        check_options("structure", options)
        chain = ["x_T", "x_t", "x_t-1", "x_0"]
        nodes = {v: {"kind": "observed" if v == "x_0" else "latent", "distribution": "Normal",
                     "plates": ("data",)} for v in chain}
        return plate_diagram(nodes, zip(chain, chain[1:]), {"data": None},
                             {"denoiser": chain[1:]} if params else None)

    def check_data(self, data: Any) -> torch.Tensor:
        return check_matrix(data, self.dim, dtype=torch.float32)

    def init_params(self, data: Any = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        return copy_params(self.net)

    def sample(self, params: dict, n: int, seed: int | None = None, method: str = "ancestral",
               ddim_steps: int = 50, eta: float = 0.0) -> torch.Tensor:
        """``n`` samples by the ancestral reverse chain (T denoiser calls) or DDIM
        (``ddim_steps`` calls, deterministic for ``eta=0``)."""
        self.net.load_state_dict(params)
        g = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(2**31, ())))
        x = torch.randn(n, self.dim, generator=g)
        with torch.no_grad():
            if method == "ancestral":
                for t in reversed(range(self.steps)):
                    x = self.p_sample(x, t, g)
            elif method == "ddim":
                ts = torch.linspace(self.steps - 1, 0, min(ddim_steps, self.steps)).round().long().unique_consecutive()
                x = self.ddim_sample(x, ts.tolist(), g, eta)
            else:
                raise ValueError(f"method must be 'ancestral' or 'ddim', got {method!r}")
        return x * self.net.data_scale + self.net.data_loc

    def log_prob(self, params: dict, x: torch.Tensor, seed: int | None = 0) -> torch.Tensor:
        """The variational lower bound on log p(x) in nats per example (Ho et al. eq. 5):
        −L_T − Σ_{t≥2} KL(q(x_{t-1}|x_t,x_0) ‖ p_θ(x_{t-1}|x_t)) + log p_θ(x_0|x_1), every t
        summed exactly, each x_t drawn once from q (an unbiased estimate of the bound)."""
        self.net.load_state_dict(params)
        with seeded(seed), torch.no_grad():
            x0 = ((x - self.net.data_loc) / self.net.data_scale).double()
            n, T = len(x0), self.steps
            ab = self.alphas_cumprod
            # L_T: KL(q(x_T|x_0) ‖ N(0, I))
            mT, vT = ab[-1].sqrt() * x0, (1 - ab[-1])
            bound = -0.5 * (vT + mT ** 2 - 1 - torch.log(vT)).sum(-1)
            for t in range(T):
                tt = torch.full((n,), t, dtype=torch.long)
                xt = self.q_sample(x0, tt, torch.randn_like(x0))
                mean, var = self.p_mean_variance(xt.float(), tt)
                mean, var = mean.double(), var.double()
                if t == 0:  # decoder term log N(x_0; μ_θ(x_1), β_1)
                    bound += (-0.5 * ((x0 - mean) ** 2 / var + torch.log(2 * math.pi * var))).sum(-1)
                else:
                    qm, qv = self.q_posterior(x0, xt, tt)
                    bound -= 0.5 * (torch.log(var / qv) + (qv + (qm - mean) ** 2) / var - 1).sum(-1)
            return (bound - torch.log(self.net.data_scale.double()).sum()).float()

    @classmethod
    def for_data(cls, data: Any, **options: Any) -> "Diffusion":
        return cls(int(torch.as_tensor(data).shape[-1]), **options)

    @classmethod
    def example(cls, seed: int = 0) -> tuple["Diffusion", torch.Tensor]:
        from probgen.data import two_moons
        return cls(2, steps=10, hidden=(16,), seed=seed), two_moons(64, seed=seed)[0].float()


def _check_denoiser(denoiser: nn.Module, dim: int) -> None:
    if not isinstance(denoiser, nn.Module):
        raise ValueError(f"denoiser must be a torch.nn.Module, got {type(denoiser).__name__}")
    try:
        with torch.no_grad():
            out = denoiser(torch.zeros(2, dim), torch.zeros(2, dtype=torch.long))
    except Exception as exc:
        raise ValueError(f"the denoiser must accept (x_t of shape (B, {dim}), t of shape (B,)); "
                         f"calling it failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(out, torch.Tensor) or out.shape != (2, dim):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the denoiser must return ε̂ of shape (B, {dim}); for B=2 it returned {shape}")
