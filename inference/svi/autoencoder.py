"""Amortised SVI for encoder/decoder declarations: autoencoders and variational autoencoders.

A declaration qualifies by protocol: a Pyro ``program(x, train)`` (the decoder p(h)p(x|h)),
a ``guide(x, train)`` (the encoder q(h|x)), ``encode(params, x)``, ``reconstruct(params, x)``
and ``encoder_dist`` (``"delta"`` or a distribution). The loss is Pyro's ``Trace_ELBO``:

* a point-mass encoder δ(h − f(x)) makes it −log p(x, h = f(x)) (log δ = 0): MAP in the
  joint model with an amortised code (autoencoders);
* a Gaussian encoder makes it the negative ELBO −E_q[log p(x, h) − log q(h | x)] (VAE).

Training runs on the trainer (`probgen.loops.gradient`) over epochs of shuffled
minibatches (``steps`` = epochs), scores a held-out validation split after each epoch (the
same loss, without the denoising corruption), keeps the parameters of the best validation
epoch and stops early after ``patience`` epochs without improvement. Losses are per example.

``fit.log_prob(x, num_samples=…)``: for a distributional encoder the importance-weighted bound
IWAE-k = log (1/k) Σ_s p(x, h_s) / q(h_s | x), h_s ~ q(h | x) (Burda, Grosse & Salakhutdinov
2016); k = 1 gives the ELBO (``log_prob_kind="bound"``, its expectation is a lower bound on
log p(x)). For a point-mass encoder there is no bound: it is the decoder's log-likelihood at
the code, log p(x | h = f(x)) — the negative reconstruction error in nats, a plug-in score
that is neither exact nor a bound (``log_prob_kind="estimate"``).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from probgen import protocols
from probgen.fit import Fit
from probgen.loops.gradient import GradientMethod, Trainer, Update, moments, split
from probgen.registry import check_options, register


class PerExample:
    """``fn(x, *rest)`` with every log-density scaled by 1 / len(x), so losses are per
    example and a minibatch's gradient estimates the per-example mean's (a class, not a
    closure, so that it pickles)."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, x: torch.Tensor, *rest: Any) -> Any:
        with poutine.scale(scale=1.0 / len(x)):
            return self.fn(x, *rest)


class Substituted:
    """``fn`` run with its ``pyro.param`` sites read from ``params`` (``params`` may hold
    more names than ``fn`` uses: the model and the guide each take their own)."""

    def __init__(self, fn: Callable, params: dict):
        self.fn, self.params = fn, params

    def __call__(self, *args: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*did not find params.*")
            with poutine.substitute(data=self.params):
                return self.fn(*args)


@register
class AmortisedSVI(GradientMethod):
    engine = "svi"
    name = "amortised"
    objective = "loss"
    steps_unit = "epochs (passes over the training split)"
    devices = ("cpu", "cuda", "mps")  # torch only (CUDA / MPS written, not run here)
    needs = "an encoder/decoder program (program(x), guide(x), encode, reconstruct)"
    log_prob_kind = "bound"
    queries = ("encode", "reconstruct")
    # per-example losses (every site in the data plate, scaled by 1 / len(x)): gradients
    # averaged over the global minibatch
    parallel = "data"
    trainer_defaults = {"optim": "clipped_adam", "lr_schedule": "exponential", "lr_decay": 1.0, "validation": 0.1}

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.AmortisedProgram)

    def fit(self, model: Any, data: torch.Tensor, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, batch_size: int = 128, lr: float = 1e-3, num_particles: int = 1,
            **options: Any) -> Fit:
        """Args (besides the common ones; ``steps`` = epochs, default 100): ``batch_size``;
        ``num_particles``: ELBO samples per step; the trainer's options
        (`probgen.loops.gradient`), here with the defaults ``optim="clipped_adam"``, ``lr``
        decayed geometrically to ``lr * lr_decay`` (1.0) by the last step, ``validation=0.1``
        (the fraction held out for early stopping; 0: none) and ``patience=None`` (never stop
        early; the best validation epoch is kept either way).
        """
        opts = self.trainer_options(model, options)
        steps = 100 if steps is None else steps
        if not isinstance(num_particles, int) or isinstance(num_particles, bool) or num_particles < 1:
            raise ValueError(f"num_particles must be a positive integer, got {num_particles!r}")
        validation = opts["validation"]
        if isinstance(validation, (int, float)) and not isinstance(validation, bool) and validation == 0:
            opts["validation"] = None
        elif validation is not None and not isinstance(validation, (int, float)):
            opts["validation"] = model.check_data(validation)
        # the trainer's split, for the start (data-parallel: of this rank's rows; the trainer
        # then starts every rank from rank 0's parameters)
        x_train, _ = split(data, opts["validation"], seed)
        names = self._seed_params(model, x_train, seed, init)
        elbo = Trace_ELBO(num_particles=num_particles, vectorize_particles=num_particles > 1,
                          max_plate_nesting=1)
        program, guide = PerExample(model.program), PerExample(model.guide)

        def loss(xb: torch.Tensor) -> float:  # Pyro computes the gradients (surrogate losses)
            return elbo.loss_and_grads(program, guide, xb, True)

        def validate(xv: torch.Tensor) -> float:
            return float(elbo.loss(program, guide, xv, False))

        store = pyro.get_param_store()
        trainer = Trainer([Update(loss, dict(store.named_parameters()), backward=False)], data, steps=steps,
                          seed=seed, batch_size=batch_size, lr=lr, validate=validate, progress=progress,
                          desc=f"svi {type(model).__name__}", unit="epoch", shuffle="global", **opts).run()
        params = _snapshot(names)
        state = {}
        if model.encoder_dist == "delta":  # the aggregate code distribution, for sampling
            with torch.no_grad():
                codes = model.encode(params, trainer.train_rows())
            loc, scale = moments(codes)  # of every rank's training rows in a data-parallel fit
            state = {"code_loc": loc, "code_scale": scale}
        state.update(trainer.fit_state())
        return Fit(model, params, trainer.history, engine=self.engine, method=self.name, state=state,
                   options={"batch_size": batch_size, "lr": lr, "num_particles": num_particles, **trainer.options()},
                   log_prob_kind="estimate" if model.encoder_dist == "delta" else "bound")

    @staticmethod
    def _seed_params(model: Any, x: torch.Tensor, seed: int | None, init: dict | None) -> list[str]:
        start = model.init_params(x, seed)
        unknown = sorted(set(init or {}) - set(start))
        if unknown:
            raise ValueError(f"init names {unknown}, which are not parameters of {type(model).__name__}; "
                             f"parameters: {sorted(start)}")
        pyro.clear_param_store()
        for name, value in {**start, **(init or {})}.items():
            value = torch.as_tensor(value, dtype=torch.float32)
            if value.shape != start[name].shape:
                raise ValueError(f"init[{name!r}] has shape {tuple(value.shape)}, expected {tuple(start[name].shape)}")
            pyro.param(name, value.clone(), constraint=model.constraint(name))
        return list(start)

    # ---- evaluation, sampling, queries ---------------------------------------------------
    def log_prob(self, fit: Fit, x: Any, num_samples: int = 1, **options: Any) -> torch.Tensor:
        """Per-example (N,): the importance-weighted bound IWAE-k with k = ``num_samples``
        for a distributional encoder (1: the ELBO; Burda et al. 2016); the decoder's
        log-likelihood at the code, log p(x | f(x)), for a point-mass encoder."""
        check_options("log_prob", options, ("num_samples",))
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
            raise ValueError(f"num_samples (importance samples) must be a positive integer, got {num_samples!r}")
        model, x = fit.model, fit.model.check_data(x)
        if model.encoder_dist == "delta":
            return model.recon_log_prob(fit.params, x)
        return iwae_bound(Substituted(model.program, fit.params), Substituted(model.guide, fit.params), (x,),
                          num_samples)

    def sample(self, fit: Fit, n: int, seed: int | None = None) -> torch.Tensor:
        return fit.model.sample(fit.params, n, seed=seed, code_loc=fit.state.get("code_loc"),
                                code_scale=fit.state.get("code_scale"))

    def infer(self, model: Any, params: dict | None, data: Any, query: str, **options: Any) -> torch.Tensor:
        """``"encode"``: the codes f(x) (N, C) — the posterior mean for a Gaussian encoder;
        ``"reconstruct"``: the decoder's mean at the code (N, D)."""
        check_options(f"{query!r} query", options)
        if params is None:
            raise ValueError(f"query {query!r} needs fitted parameters: pass a Fit (pg.infer(fit, x, ...))")
        x = model.check_data(data)
        with torch.no_grad():
            if query == "encode":
                return model.encode(params, x)
            return model.reconstruct(params, x)


def log_importance_weights(model: Callable, guide: Callable, args: tuple, k: int,
                           max_elements: int = 2 ** 22) -> torch.Tensor:
    """log w_s = log p(x, h_s) − log q(h_s | x) for k draws h_s ~ q per example: shape (k, N).

    Works for any model/guide pair whose sites sit in a data plate at dim −1 (continuous or
    discrete latents; nothing is reparametrised, nothing is differentiated). The k draws are
    vectorised in a ``particles`` plate at dim −2, in chunks of at most ``max_elements``
    observed numbers so that memory stays bounded."""
    per_particle = max(1, sum(a.numel() for a in args if isinstance(a, torch.Tensor)))
    chunk = max(1, min(k, max_elements // per_particle))
    out = []
    for start in range(0, k, chunk):
        kc = min(chunk, k - start)
        with torch.no_grad(), pyro.plate("particles", kc, dim=-2):
            g = poutine.trace(guide).get_trace(*args)
            m = poutine.trace(poutine.replay(model, trace=g)).get_trace(*args)
        out.append(_sum_log_prob(m, kc) - _sum_log_prob(g, kc))
    return torch.cat(out, 0)


def _sum_log_prob(trace: Any, k: int) -> torch.Tensor:
    total = torch.zeros(())
    for site in trace.nodes.values():
        if site["type"] == "sample":
            total = total + site["fn"].log_prob(site["value"])
    return total.expand(k, -1) if total.dim() == 2 else total.reshape(k, -1)


def iwae_bound(model: Callable, guide: Callable, args: tuple, k: int) -> torch.Tensor:
    """IWAE-k per example (N,): log (1/k) Σ_s w_s (Burda et al. 2016, eq. 8); k = 1 is the ELBO."""
    lw = log_importance_weights(model, guide, args, k)
    return torch.logsumexp(lw, 0) - math.log(k)


def _snapshot(names: list[str]) -> dict[str, torch.Tensor]:
    store = pyro.get_param_store()
    return {n: store[n].detach().clone() for n in names}
