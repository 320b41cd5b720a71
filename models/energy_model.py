"""Neural energy-based models: p(x) ∝ exp(−E_θ(x)/T) for continuous x (LeCun et al. 2006;
Du & Mordatch 2019). Sampling is by Langevin dynamics, optionally Metropolis-adjusted
(MALA, Roberts & Tweedie 1996); learning is by contrastive divergence (the ``mcmc`` engine).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from probgen.data import check_matrix
from probgen.declarations import Declaration
from probgen.loops.mcmc import Kernel
from probgen.nn import copy_params, mlp
from probgen.random import generator, seeded
from probgen.registry import check_options


class Langevin(Kernel):
    """One step of (unadjusted or Metropolis-adjusted) Langevin dynamics on E(x)/T as a
    driver kernel (Roberts & Tweedie 1996): x' = x − (ε²/2) ∇E(x) + ε ξ, accepted with the
    MALA probability when ``metropolis``. Vectorised: the rows of ``x`` are the chains, all
    drawn from the generator ``g``. State: x, E(x), ∇E(x) and the summed acceptance rates."""

    vectorised = True
    name = "langevin"

    def __init__(self, model: "EnergyModel", x: torch.Tensor, step_size: float, g: torch.Generator,
                 metropolis: bool):
        self.model, self.x, self.eps, self.g, self.metropolis = model, x, step_size, g, metropolis

    def init(self, seeds: list, chains: list, warmup: int) -> dict:
        x = self.x.detach()
        e, grad = self.model._energy_grad(x)
        return {"x": x, "e": e, "grad": grad, "accepted": 0.0}

    def step(self, state: dict, warmup: bool) -> dict:
        eps, x, e, grad = self.eps, state["x"], state["e"], state["grad"]
        noise = torch.randn(x.shape, generator=self.g, dtype=x.dtype)
        prop = x - 0.5 * eps ** 2 * grad + eps * noise
        e_p, grad_p = self.model._energy_grad(prop)
        if self.metropolis:
            # log q(x | x') − log q(x' | x) for the Gaussian Langevin proposal
            fwd = ((prop - x + 0.5 * eps ** 2 * grad) ** 2).sum(-1)
            bwd = ((x - prop + 0.5 * eps ** 2 * grad_p) ** 2).sum(-1)
            log_a = -e_p + e - (bwd - fwd) / (2 * eps ** 2)
            acc = torch.log(torch.rand(len(x), generator=self.g, dtype=x.dtype)) < log_a
            state["accepted"] += float(acc.double().mean())
            state.update(x=torch.where(acc[:, None], prop, x), e=torch.where(acc, e_p, e),
                         grad=torch.where(acc[:, None], grad_p, grad))
        else:
            state.update(x=prop, e=e_p, grad=grad_p)
        return state


class EnergyModel(Declaration):
    """``EnergyModel(dim, hidden=[64, 64], temperature=1.0)`` with a default MLP energy, or
    ``EnergyModel(dim, energy_net=my_module)`` with ``my_module(x (B, D)) -> (B,) or (B, 1)``.

    ``sample_steps``, ``step_size`` and ``metropolis`` set how ``sample`` runs Langevin
    dynamics: x ← x − (ε²/2) ∇E(x)/T + ε ξ, with a Metropolis–Hastings accept step when
    ``metropolis=True`` (then the chain leaves p exactly invariant).

    p(x) ∝ exp(−E(x)/T) (LeCun et al. 2006, "A tutorial on energy-based learning"), trained
    with Langevin-sampled negatives (Du & Mordatch 2019); ``log_prob`` is an importance-sampling
    estimate of the normalised density.

    Args:
      dim: the data dimension D.
      hidden: the hidden widths of the default MLP energy.
      energy_net: your own energy module.
      temperature: T.
      sample_steps: Langevin steps of ``sample``.
      step_size: the Langevin step ε.
      metropolis: add the Metropolis–Hastings correction (MALA).
      seed: seeds the default network's initial weights.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import EnergyModel
        >>> x = pg.load_dataset("two-moons")[:256]
        >>> fit = pg.fit(EnergyModel(2, hidden=[16], sample_steps=10), x, steps=5, seed=0, progress=False)
        >>> fit.engine, fit.method, fit.log_prob_kind
        ('mcmc', 'langevin', 'estimate')
        >>> fit.log_prob(x[:5]).shape, fit.sample(3, seed=0).shape
        (torch.Size([5]), torch.Size([3, 2]))
    """

    short_name = "ebm"
    default_engine = "mcmc"
    default_dataset = "two-moons"
    continuous_energy = True  # the protocol the Langevin method checks
    _repr_fields = ("dim", "temperature")

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64), energy_net: nn.Module | None = None,
                 temperature: float = 1.0, sample_steps: int = 200, step_size: float = 0.1,
                 metropolis: bool = False, seed: int = 0):
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.dim, self.temperature = dim, float(temperature)
        self.sample_steps, self.step_size, self.metropolis = sample_steps, step_size, metropolis
        with seeded(seed):  # the default network's initial weights
            self.net = energy_net if energy_net is not None else mlp([dim, *hidden, 1])
        with torch.no_grad():
            try:
                out = self.net(torch.zeros(2, dim))
            except Exception as exc:
                raise ValueError(f"the energy network must map (B, {dim}) -> (B,); it failed: {exc}") from None
        if not isinstance(out, torch.Tensor) or out.reshape(-1).shape != (2,):
            raise ValueError(f"the energy network must return one energy per row, shape (B,) or (B, 1); "
                             f"it returned {getattr(out, 'shape', out)}")

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x)/T, shape (B,)."""
        return self.net(x).reshape(len(x)) / self.temperature

    def langevin(self, x: torch.Tensor, steps: int, step_size: float, g: torch.Generator,
                 metropolis: bool = False) -> tuple[torch.Tensor, float]:
        """Run ``steps`` Langevin (or MALA) steps from ``x`` (B, D), one chain per row, on the
        MCMC driver (`Langevin` is the transition); returns (x, acceptance rate)."""
        from probgen.loops.mcmc import run
        if steps == 0:
            return x.detach(), 1.0
        # the draw is the state after the last step: steps - 1 transitions, then one kept
        state = run(Langevin(self, x, step_size, g, metropolis), steps=1, warmup=steps - 1, num_chains=len(x),
                    progress=False).states
        return state["x"].detach(), (state["accepted"] / steps if metropolis else 1.0)

    def _energy_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            e = self.energy(x)
            grad, = torch.autograd.grad(e.sum(), x)
        return e.detach(), grad.detach()

    # ---- declaration hooks -------------------------------------------------------
    def structure(self, *args: Any, params: bool = False, **options: Any):
        """An undirected model of x alone: x and its energy factor E_θ(x), p(x) ∝ exp(−E(x)/T)."""
        from probgen.graph import plate_diagram
        check_options("structure", options)
        return plate_diagram({"x": {"kind": "observed", "plates": ("data",)},
                              "energy": {"kind": "factor", "plates": ("data",)}},
                             [("energy", "x")], {"data": None},
                             {"energy_net": ["energy"]} if params else None, undirected=True)

    def check_data(self, data: Any) -> torch.Tensor:
        return check_matrix(data, self.dim, dtype=torch.float32)

    def init_params(self, data: Any = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        return copy_params(self.net)

    def sample(self, params: dict, n: int, seed: int | None = None, start: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` draws by Langevin dynamics from N(0, I) (or from ``start``)."""
        self.net.load_state_dict(params)
        g = generator(seed)
        x = start.clone() if start is not None else torch.randn(n, self.dim, generator=g)
        return self.langevin(x, self.sample_steps, self.step_size, g, self.metropolis)[0]

    def log_prob_with(self, params: dict, x: torch.Tensor, proposal: tuple[torch.Tensor, torch.Tensor],
                      num_samples: int = 20000, seed: int = 0) -> torch.Tensor:
        """log p(x) = −E(x)/T − log Z with log Z estimated by importance sampling from the
        Gaussian ``proposal = (mean (D,), scale_tril (D, D))``: an estimate, exact as
        ``num_samples`` → ∞."""
        self.net.load_state_dict(params)
        q = torch.distributions.MultivariateNormal(proposal[0].double(), scale_tril=proposal[1].double())
        g = generator(seed)
        z = q.loc + (torch.randn(num_samples, self.dim, generator=g, dtype=torch.float64) @ q.scale_tril.T)
        with torch.no_grad():
            log_w = -self.energy(z.float()).double() - q.log_prob(z)
            log_z = torch.logsumexp(log_w, 0) - math.log(num_samples)
            return (-self.energy(x).double() - log_z).float()

    @classmethod
    def for_data(cls, data: Any, **options: Any) -> "EnergyModel":
        return cls(int(torch.as_tensor(data).shape[-1]), **options)

    @classmethod
    def example(cls, seed: int = 0) -> tuple["EnergyModel", torch.Tensor]:
        from probgen.data import two_moons
        return cls(2, hidden=(16,), sample_steps=5, seed=seed), two_moons(64, seed=seed)[0].float()
