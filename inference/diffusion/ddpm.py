"""Training a diffusion declaration by ε-prediction (Ho et al. 2020, Algorithm 1):
minimise E_{t, x_0, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖² with t uniform.

The fit's parameters are an exponential moving average of the denoiser's weights
(the trainer's ``ema``, default 0.999 here; Ho et al. use 0.9999 over far longer runs): the reverse chain
compounds the step-to-step noise of SGD iterates, and on the 8×8 digits averaging cut the
samples' MMD² to held-out data from 0.0064 to 0.0010 (DDIM, 10,000 steps; benchmarks/diffusion.py)."""
from __future__ import annotations

from typing import Any

import torch

from probgen import distributed, protocols
from probgen.fit import Fit
from probgen.loops.gradient import GradientMethod, Trainer, Update, moments
from probgen.loops.mcmc import chain_seed
from probgen.nn import load_params
from probgen.random import generator
from probgen.registry import register


@register
class DDPM(GradientMethod):
    engine = "diffusion"
    name = "ddpm"
    objective = "loss"
    steps_unit = "gradient steps (minibatches)"
    devices = ("cpu", "cuda", "mps")  # torch only (CUDA / MPS written, not run here)
    needs = "a diffusion declaration (q_sample, p_sample and a denoiser network)"
    log_prob_kind = "bound"
    trainer_defaults = {"clip_grad": 1.0, "ema": 0.999}
    # per-example loss: gradients averaged over the global minibatch; the (t, ε) draws are
    # each rank's own (rank 0's stream as in one process), so only the quality matches 1 process
    parallel = "data"

    def sample(self, fit: Fit, n: int, seed: int | None = None, method: str = "ancestral",
               ddim_steps: int = 50, eta: float = 0.0) -> torch.Tensor:
        """``n`` draws: ``method="ancestral"`` (the learned reverse chain, Ho et al. 2020) or
        ``"ddim"`` (``ddim_steps`` calls; deterministic for ``eta=0``, Song et al. 2021)."""
        return fit.model.sample(fit.params, n, seed=seed, method=method, ddim_steps=ddim_steps, eta=eta)

    def log_prob(self, fit: Fit, x: Any, seed: int = 0) -> torch.Tensor:
        """The variational bound per example; its Monte Carlo noise (steps, ε) drawn with ``seed``."""
        return fit.model.log_prob(fit.params, fit.model.check_data(x), seed=seed)

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.Denoising)

    def fit(self, model: Any, data: torch.Tensor, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, batch_size: int = 256, lr: float = 1e-3, **options: Any) -> Fit:
        """``loss``: the ε-prediction error per example and dimension; the trainer's options
        (`probgen.loops.gradient`; here ``clip_grad=1.0``, ``ema=0.999``) besides."""
        opts = self.trainer_options(model, options)
        steps = 2000 if steps is None else steps
        net = model.net
        ctx = distributed.current()
        ctx = ctx if ctx is not None and ctx.parallel == "data" else None
        if init:
            load_params(net, init)
        else:
            # centre each dimension but scale all by one pooled standard deviation: a per-dimension
            # scale would blow up nearly-constant dimensions (the digits' border pixels) into outliers
            net.data_loc.copy_(moments(data, std=False)[0])
            if ctx is None:
                pooled = (data - data.mean(0)).std() if len(data) > 1 else torch.tensor(1.0)
            else:  # over every rank's rows
                d = (data - net.data_loc).double()
                s = ctx.sum({"sq": (d ** 2).sum(), "n": torch.tensor(float(d.numel()), dtype=torch.float64)})
                pooled = (s["sq"] / (s["n"] - 1)).sqrt() if s["n"] > data.shape[1] else torch.tensor(1.0)
            net.data_scale.fill_(float(pooled.clamp_min(1e-6)))
        x = (data - net.data_loc) / net.data_scale
        if not init:
            lo, hi = x.min(), x.max()
            if ctx is not None:  # every rank's rows
                ends = ctx.gather((float(lo), float(hi)))
                lo, hi = torch.tensor(min(e[0] for e in ends)), torch.tensor(max(e[1] for e in ends))
            span = float(hi - lo)
            net.x0_range.copy_(torch.tensor([float(lo) - 0.1 * span, float(hi) + 0.1 * span]))
        # data-parallel, ranks other than 0 draw their rows' (t, ε) from a stream of their own
        g = generator(None if seed is None else seed + 1 if ctx is None or ctx.rank == 0
                      else chain_seed(seed + 1, ctx.rank))

        def loss(batch: torch.Tensor, g: torch.Generator = g) -> torch.Tensor:
            x0 = (batch - net.data_loc) / net.data_scale
            t = torch.randint(model.steps, (len(x0),), generator=g)
            noise = torch.randn(x0.shape, generator=g)
            return ((net.denoiser(model.q_sample(x0, t, noise), t) - noise) ** 2).mean()

        def validate(xv: torch.Tensor) -> float:  # the same (t, ε) at every validation: comparable scores
            with torch.no_grad():
                return float(loss(xv, generator(None if seed is None else seed + 2)))

        trainer = Trainer([Update(loss, dict(net.denoiser.named_parameters()))], data, steps=steps, seed=seed,
                          batch_size=batch_size, lr=lr, validate=validate, progress=progress, desc="diffusion",
                          generators={"noise": g}, check=model.check_data, **opts).run()
        return Fit(model, model.init_params(), trainer.history, engine=self.engine, method=self.name,
                   state=trainer.fit_state(), options={"batch_size": batch_size, "lr": lr, **trainer.options()})
