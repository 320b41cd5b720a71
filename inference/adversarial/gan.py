"""Adversarial training (Goodfellow et al. 2014).

Discriminator: maximise E log D(x) + E log(1 − D(G(z))). Generator, by ``loss``:
  ``"minimax"``        minimise E log(1 − D(G(z))) — the value function itself;
  ``"non-saturating"`` maximise E log D(G(z)) — strong gradients early in training.
``gradient_penalty=γ`` adds the R1 penalty γ/2 E‖∇_x D(x)‖² on real data (Mescheder et al. 2018).
``fit.log_prob`` is a Parzen-window estimate from generated samples (a GAN has no
density; such estimates are known to be poor, Theis et al. 2016 — compare GANs by MMD).
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from probgen import protocols
from probgen.fit import Fit
from probgen.loops.gradient import GradientMethod, Trainer, Update
from probgen.nn import load_params
from probgen.random import generator
from probgen.registry import register

LOSSES = ("non-saturating", "minimax")


@register
class Adversarial(GradientMethod):
    engine = "adversarial"
    name = "gan"
    objective = "loss_d"
    steps_unit = "generator steps (each after d_steps discriminator steps)"
    devices = ("cpu", "cuda", "mps")  # torch only (CUDA / MPS written, not run here)
    needs = "a generator and a discriminator network (net.generator, net.discriminator)"
    log_prob_kind = "estimate"
    # critic and generator gradients each averaged over the ranks; the fakes split by rank
    parallel = "data"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.Adversarial) and \
            protocols.implements(model.net, protocols.AdversarialNetworks)

    def fit(self, model: Any, data: torch.Tensor, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, loss: str = "non-saturating", batch_size: int = 256, lr: float = 2e-4,
            gradient_penalty: float = 0.0, d_steps: int = 1, **options: Any) -> Fit:
        """Two updates on the trainer (`probgen.loops.gradient`): ``d_steps`` discriminator
        steps, each on a fresh minibatch, then one generator step on ``batch_size`` draws; both
        by the trainer's ``optim`` (Adam with β = (0.5, 0.999), Radford et al. 2016). The history
        records ``loss_d`` (the objective), ``loss_g``, ``d_real`` and ``d_fake`` (mean D on the last
        real and generated batch); ``val_loss_d`` scores a validation split against a fixed
        draw of generated points."""
        opts = self.trainer_options(model, options)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
        if isinstance(d_steps, bool) or not isinstance(d_steps, int) or d_steps < 1:
            raise ValueError(f"d_steps must be a positive integer, got {d_steps!r}")
        steps = 2000 if steps is None else steps
        net = model.net
        if init:
            load_params(net, init)
        g = generator(None if seed is None else seed + 1)

        def loss_d(real: torch.Tensor, g: torch.Generator = g, penalty: float = gradient_penalty,
                   at: tuple[int, int] | None = None) -> tuple[torch.Tensor, dict]:
            # one fake per real row; data-parallel, this rank's slice of the global batch's
            # draws (every rank draws them all: the stream stays the one-process fit's)
            start, total = trainer.rows_of(len(real)) if at is None else at
            z = torch.randn(total, model.latent_dim, generator=g)
            z = z if total == len(real) else z[start:start + len(real)]
            fake = net.generator(z).detach()
            real = real.requires_grad_(penalty > 0)
            d_real, d_fake = net.discriminator(real).reshape(-1), net.discriminator(fake).reshape(-1)
            # −[log D(x) + log(1 − D(G(z)))] with D = σ(logit)
            value = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            if penalty > 0:
                grad, = torch.autograd.grad(d_real.sum(), real, create_graph=True)
                value = value + 0.5 * penalty * grad.pow(2).sum(-1).mean()
            return value, {"loss_d": float(value.detach()), "d_real": float(torch.sigmoid(d_real.detach()).mean()),
                           "d_fake": float(torch.sigmoid(d_fake.detach()).mean())}

        def loss_g(_: Any) -> torch.Tensor:
            z = torch.randn(batch_size, model.latent_dim, generator=g)
            start, stop = trainer.rank_block(batch_size)  # data-parallel: this rank's block of the draws
            logits = net.discriminator(net.generator(z if stop - start == batch_size else z[start:stop])).reshape(-1)
            # minimax: minimise log(1 − D) = −softplus(logit); non-saturating: minimise −log D = softplus(−logit)
            per = -F.softplus(logits) if loss == "minimax" else F.softplus(-logits)
            # this rank's additive share of the batch's mean (reduce="sum"): the mean itself locally
            return per.mean() if stop - start == batch_size else per.sum() / batch_size

        def validate(x: torch.Tensor) -> float:  # the log-loss (no penalty) against the same fakes every time
            at = (0, len(x)) if trainer.ctx is None else trainer.val.position()
            with torch.no_grad():
                return float(loss_d(x, generator(None if seed is None else seed + 2), 0.0, at)[0])

        adam = {"betas": (0.5, 0.999)} if opts["optim"] == "adam" else {}
        updates = [Update(loss_d, dict(net.discriminator.named_parameters(prefix="discriminator")), key="loss_d", optim_args=adam,
                          repeats=d_steps),
                   Update(loss_g, dict(net.generator.named_parameters(prefix="generator")), key="loss_g", optim_args=adam,
                          takes_batch=False, reduce="sum")]
        trainer = Trainer(updates, data, steps=steps, seed=seed, batch_size=batch_size, lr=lr, objective="loss_d",
                          validate=validate, progress=progress,
                          desc="adversarial", generators={"noise": g}, check=model.check_data, **opts)
        trainer.run()  # (the losses read the trainer: where this rank's rows sit in a batch)
        return Fit(model, model.init_params(), trainer.history, engine=self.engine, method=self.name,
                   state=trainer.fit_state(),
                   options={"loss": loss, "lr": lr, "batch_size": batch_size, "gradient_penalty": gradient_penalty,
                            "d_steps": d_steps, **trainer.options()})

    def log_prob(self, fit: Fit, x: Any, num_samples: int = 10000, seed: int = 0) -> torch.Tensor:
        """Parzen-window estimate of log p(x): a Gaussian kernel density on ``num_samples``
        generated points (drawn with ``seed``) with Scott's bandwidth."""
        x = fit.model.check_data(x)
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 2:
            raise ValueError(f"num_samples must be an integer >= 2 (a kernel density), got {num_samples!r}")
        s = fit.model.sample(fit.params, num_samples, seed=seed)
        return parzen_log_prob(s, x)


def parzen_log_prob(samples: torch.Tensor, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """log of a Gaussian KDE on ``samples`` (S, D) at ``x`` (N, D), bandwidth by Scott's rule."""
    s, d = samples.double(), samples.shape[1]
    h = (s.std(0).mean() * len(s) ** (-1.0 / (d + 4))).clamp_min(1e-6)
    out = []
    for xc in x.double().split(chunk):
        sq = torch.cdist(xc, s) ** 2
        out.append(torch.logsumexp(-0.5 * sq / h ** 2, 1) - math.log(len(s)) - d * (torch.log(h) + 0.5 * math.log(2 * math.pi)))
    return torch.cat(out).float()
