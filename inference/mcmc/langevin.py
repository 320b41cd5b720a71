"""Learning a neural energy-based model by contrastive divergence with Langevin negatives
and a persistent replay buffer (Du & Mordatch 2019):

  ∇θ L = E_data ∇θ E(x) − E_model ∇θ E(x) (+ α ∇θ E(E(x)²), keeping energies bounded),

the model expectation taken over short Langevin (or MALA) chains started 95% of the time
from a replay buffer of earlier negatives and 5% from uniform noise over the data's box.
"""
from __future__ import annotations

from typing import Any

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.loops.gradient import GradientMethod, Trainer, Update
from probgen.nn import load_params
from probgen.random import generator
from probgen.registry import register


@register
class LangevinCD(GradientMethod):
    engine = "mcmc"
    name = "langevin"
    objective = "loss"
    steps_unit = "gradient steps (minibatches)"
    devices = ("cpu", "cuda", "mps")  # torch only (CUDA / MPS written, not run here)
    needs = "a continuous energy-based declaration (energy(x), langevin(...))"
    log_prob_kind = "estimate"

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.ContinuousEnergy) and bool(model.continuous_energy)

    def fit(self, model: Any, data: torch.Tensor, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, batch_size: int = 128, lr: float = 1e-3, k: int = 40, step_size: float | None = None,
            buffer_size: int = 10000, reinit: float = 0.05, alpha: float = 1e-3, metropolis: bool = False,
            **options: Any) -> Fit:
        """The training loop is the trainer's (:mod:`probgen.loops.gradient`, all its options);
        the negatives come from ``k`` Langevin steps (the sampler, ``model.langevin``). The history
        records ``loss``, ``e_data``, ``e_model`` and the chains' ``acceptance``; ``val_loss`` is
        the loss on a validation split against the first replay-buffer entries (no new chains)."""
        opts = self.trainer_options(model, options)
        steps = 2000 if steps is None else steps
        step_size = model.step_size if step_size is None else step_size
        net = model.net
        if init:
            load_params(net, init)
        g = generator(None if seed is None else seed + 1)
        lo, hi = data.min(0).values, data.max(0).values
        span = (hi - lo).clamp_min(1e-3)
        lo, hi = lo - 0.25 * span, hi + 0.25 * span

        def noise(n: int) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, data.shape[1], generator=g)

        buffer = noise(buffer_size)

        def cd(e_pos: torch.Tensor, e_neg: torch.Tensor) -> torch.Tensor:
            return e_pos.mean() - e_neg.mean() + alpha * (e_pos ** 2 + e_neg ** 2).mean()

        def loss(pos: torch.Tensor) -> tuple[torch.Tensor, dict]:
            idx = torch.randint(buffer_size, (len(pos),), generator=g)
            start = buffer[idx]
            fresh = torch.rand(len(pos), generator=g) < reinit
            start[fresh] = noise(int(fresh.sum()))
            neg, acc = model.langevin(start, k, step_size, g, metropolis)
            buffer[idx] = neg
            e_pos, e_neg = model.energy(pos), model.energy(neg)
            value = cd(e_pos, e_neg)
            return value, {"loss": float(value.detach()), "e_data": float(e_pos.mean().detach()),
                           "e_model": float(e_neg.mean().detach()), "acceptance": acc}

        def validate(x: torch.Tensor) -> float:
            with torch.no_grad():
                return float(cd(model.energy(x), model.energy(buffer[:len(x)])))

        trainer = Trainer([Update(loss, dict(net.named_parameters()))], data, steps=steps, seed=seed,
                          batch_size=batch_size, lr=lr, validate=validate, progress=progress, desc="mcmc (CD)",
                          generators={"chains": g}, tensors={"buffer": buffer}, check=model.check_data,
                          **opts).run()
        history = trainer.history
        d = data.double()
        cov = torch.cov(d.T).reshape(data.shape[1], data.shape[1]) + 1e-6 * torch.eye(data.shape[1], dtype=d.dtype)
        # the importance proposal for log Z: the data's Gaussian, widened to cover the model's tails
        proposal = (d.mean(0), 1.5 * torch.linalg.cholesky(cov))
        return Fit(model, model.init_params(), history, engine=self.engine, method=self.name,
                   state={"buffer": buffer, "proposal": proposal, **trainer.fit_state()},
                   options={"k": k, "step_size": step_size, "lr": lr, "metropolis": metropolis,
                            **trainer.options()})

    def log_prob(self, fit: Fit, x: Any, num_samples: int = 20000, seed: int = 0) -> torch.Tensor:
        """−E(x)/T − log Ẑ, Ẑ by importance sampling (``num_samples`` draws with ``seed``) from a
        widened Gaussian fit to the data."""
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        return fit.model.log_prob_with(fit.params, fit.model.check_data(x), fit.state["proposal"], num_samples,
                                       seed=seed)

    def sample(self, fit: Fit, n: int, seed: int | None = None) -> torch.Tensor:
        """Langevin chains started from random replay-buffer entries (Du & Mordatch 2019)."""
        g = generator(seed)
        buf = fit.state["buffer"]
        start = buf[torch.randint(len(buf), (n,), generator=g)]
        return fit.model.sample(fit.params, n, seed=seed, start=start)
