"""Learning a neural energy-based model by contrastive divergence with Langevin negatives
and a persistent replay buffer (Du & Mordatch 2019):

  ∇θ L = E_data ∇θ E(x) − E_model ∇θ E(x) (+ α ∇θ E(E(x)²), keeping energies bounded),

the model expectation taken over short Langevin (or MALA) chains started 95% of the time
from a replay buffer of earlier negatives and 5% from uniform noise over the data's box.

Data-parallel (`probgen.distributed`): the positive phase is the trainer's global
minibatch (each rank its rows of it, gradients averaged in one all-reduce per step); the
negative phase is per rank — each rank keeps its own block of the ``buffer_size`` persistent
chains, drawn from its own stream (rank 0's is the one-process stream, the others' seeded by
`probgen.loops.mcmc.chain_seed`), and runs one chain per row it holds of the batch. The
negatives are therefore other draws than the one-process fit's (so the fits agree in quality,
not to round-off); the data's box and the proposal's moments are of all the rows, and the
returned buffer is every rank's block in rank order (the same ``Fit`` on every rank).
"""
from __future__ import annotations

from typing import Any

import torch

from probgen import distributed, protocols
from probgen.fit import Fit
from probgen.loops.gradient import GradientMethod, Trainer, Update
from probgen.loops.mcmc import chain_seed
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
    parallel = "data"  # the positive phase's gradients averaged; each rank its own negative chains

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.ContinuousEnergy) and bool(model.continuous_energy)

    def fit(self, model: Any, data: torch.Tensor, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, batch_size: int = 128, lr: float = 1e-3, k: int = 40, step_size: float | None = None,
            buffer_size: int = 10000, reinit: float = 0.05, alpha: float = 1e-3, metropolis: bool = False,
            **options: Any) -> Fit:
        """The training loop is the trainer's (`probgen.loops.gradient`, all its options);
        the negatives come from ``k`` Langevin steps (the sampler, ``model.langevin``). The history
        records ``loss``, ``e_data``, ``e_model`` and the chains' ``acceptance``; ``val_loss`` is
        the loss on a validation split against the first replay-buffer entries (no new chains)."""
        opts = self.trainer_options(model, options)
        steps = 2000 if steps is None else steps
        step_size = model.step_size if step_size is None else step_size
        net = model.net
        if init:
            load_params(net, init)
        ctx = distributed.current()
        ctx = ctx if ctx is not None and ctx.parallel == "data" else None
        rank = 0 if ctx is None else ctx.rank
        g = generator(None if seed is None else chain_seed(seed + 1, rank))
        lo, hi = data.min(0).values, data.max(0).values
        if ctx is not None:  # the box of every rank's rows
            boxes = ctx.gather((lo, hi))
            lo, hi = torch.stack([b[0] for b in boxes]).min(0).values, torch.stack([b[1] for b in boxes]).max(0).values
        span = (hi - lo).clamp_min(1e-3)
        lo, hi = lo - 0.25 * span, hi + 0.25 * span

        def noise(n: int) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, data.shape[1], generator=g)

        if ctx is not None:  # this rank's block of the persistent chains
            start, stop = ctx.block(buffer_size)
            if stop - start < 1:
                raise ValueError(f"buffer_size={buffer_size} persistent chains cannot be split over "
                                 f"{ctx.world_size} ranks: raise buffer_size")
            buffer_size = stop - start
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
        mean, cov = _moments(d, ctx)
        cov = cov + 1e-6 * torch.eye(data.shape[1], dtype=d.dtype)
        # the importance proposal for log Z: the data's Gaussian, widened to cover the model's tails
        proposal = (mean, 1.5 * torch.linalg.cholesky(cov))
        if ctx is not None:  # every rank's chains, in rank order: the same fit everywhere
            buffer = torch.cat(ctx.gather(buffer))
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


def _moments(d: torch.Tensor, ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and (unbiased) covariance of the rows of ``d`` (N, D) — of every rank's rows in
    a data-parallel fit (two sums: the mean, then the scatter about it)."""
    if ctx is None:
        return d.mean(0), torch.cov(d.T).reshape(d.shape[1], d.shape[1])
    s = ctx.sum({"n": torch.tensor(float(len(d)), dtype=torch.float64), "sum": d.sum(0)})
    mean = s["sum"] / s["n"]
    c = d - mean
    return mean, ctx.sum({"sq": c.T @ c})["sq"] / (s["n"] - 1)
