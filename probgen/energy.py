"""Layered energy models: the declaration kind behind Boltzmann machines, RBMs, DBNs and DBMs.

A `LayeredEnergy` declares

* layers ``s_0 … s_L`` (``s_0`` visible), each with a size and a unit type
  (``"bernoulli"``: s ∈ {0,1}; ``"gaussian"``: s ∈ ℝ with unit variance),
* couplings between layers: weight matrices ``W`` of shape ``(size_i, size_j)``,
* lateral couplings inside a layer (symmetric, zero diagonal),
* one bias vector per layer, and a temperature ``T``,

with the energy (Goodfellow, Bengio & Courville 2016, ch. 20, e.g. E(v,h) = −vᵀRv − vᵀWh − hᵀSh − bᵀv − cᵀh)

    E(s) = − Σ_l b_lᵀ s_l − Σ_(i,j) s_iᵀ W_ij s_j − Σ_l s_lᵀ R_l s_l + Σ_(l gaussian) ½‖s_l‖²

and the Boltzmann distribution p(s) ∝ exp(−E(s)/T). The energy is linear in the
parameters, so p_β ∝ p_A^(1−β) p_B^β is again a member of the family (with mixed
parameters): annealed importance sampling reuses the same Gibbs kernel.

Everything engines need is here, written once over the layer tensors: energies,
the input ("field") each layer receives, conditionals, free energies with layers summed
out, a Gibbs schedule from a greedy colouring of the layer graph (two blocks for a
bipartite chain; unit-by-unit sweeps inside layers with lateral couplings), Gibbs sweeps,
mean-field fixed points, and exact enumeration of log Z and log p*(v) for small models.

A DBN is a layered model whose lowest ``n_directed`` links are directed (top-down
sigmoid belief net) and whose top pair is an undirected RBM (``n_directed = L − 1``).

Parameters are a ``dict[str, Tensor]`` named by the concrete declaration through
``bias_names``, ``coupling_names`` and ``lateral_names``.

References: Ackley, Hinton & Sejnowski (1985); Hinton (2002); Salakhutdinov & Murray
(2008); Salakhutdinov & Hinton (2009); Goodfellow, Bengio & Courville, ch. 20.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch
import torch.nn.functional as F

from probgen.declarations import Declaration
from probgen.loops.mcmc import Kernel

UNIT_TYPES = ("bernoulli", "gaussian")
_LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class Layer:
    name: str
    size: int
    units: str = "bernoulli"


class LayeredEnergy(Declaration):
    """Base of layered energy declarations (see the module docstring).

    Concrete classes set in ``__init__``: ``layers`` (list of `Layer`),
    ``bias_names`` (one per layer), ``coupling_names`` (``{(i, j): name}``, i < j,
    weight shape ``(size_i, size_j)``), ``lateral_names`` (``{l: name}``), ``T`` and
    ``n_directed`` (number of bottom links that are directed; 0 for BM/RBM/DBM).

    States are lists of tensors, one ``(N, size_l)`` tensor per layer.
    """

    layers: list[Layer]
    bias_names: list[str]
    coupling_names: dict[tuple[int, int], str]
    lateral_names: dict[int, str]
    T: float = 1.0
    n_directed: int = 0

    # ---- structure -------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def undirected_layers(self) -> list[int]:
        """Layers of the undirected part (all of them except below a DBN's top pair)."""
        return list(range(self.n_directed, self.n_layers))

    def neighbours(self, l: int) -> list[tuple[int, str, bool]]:
        """``(other layer, weight name, l is the row side)`` for every coupling touching l."""
        out = []
        for (i, j), name in self.coupling_names.items():
            if i == l:
                out.append((j, name, True))
            elif j == l:
                out.append((i, name, False))
        return out

    def layer_graph(self) -> nx.Graph:
        g = nx.Graph()
        g.add_nodes_from(range(self.n_layers))
        g.add_edges_from(self.coupling_names)
        return g

    def colouring(self, layers: list[int] | None = None) -> list[list[int]]:
        """Greedy colouring of the (undirected part of the) layer graph: a list of
        colour classes, each a list of mutually uncoupled layers. A bipartite chain
        (RBM, DBM) gives two classes: even and odd layers."""
        layers = self.undirected_layers if layers is None else layers
        g = self.layer_graph().subgraph(layers)
        colour = nx.greedy_color(g, strategy="largest_first") if g.number_of_nodes() else {}
        classes: dict[int, list[int]] = {}
        for l in sorted(colour):
            classes.setdefault(colour[l], []).append(l)
        # visible side first: the class holding the lowest layer goes first
        return sorted(classes.values(), key=min)

    def gibbs_schedule(self, free: list[int] | None = None) -> list[list[tuple[int, int | None]]]:
        """The blocks of one Gibbs sweep over the ``free`` layers (default: the undirected
        part). Each block is a list of ``(layer, unit)`` updated together; ``unit=None``
        means the whole layer. Layers of one colour class form one block; a layer with
        lateral couplings is swept unit by unit (every unit is its own colour in the unit
        graph, since a dense lateral matrix couples all of them)."""
        free = self.undirected_layers if free is None else free
        blocks: list[list[tuple[int, int | None]]] = []
        for cls in self.colouring(free):
            plain = [(l, None) for l in cls if l not in self.lateral_names]
            if plain:
                blocks.append(plain)
            for l in cls:
                if l in self.lateral_names:
                    blocks.extend([[(l, u)] for u in range(self.layers[l].size)])
        return blocks

    def check_params(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``params`` checked for names and shapes (ValueError otherwise)."""
        expected = self.param_shapes()
        missing = sorted(set(expected) - set(params))
        if missing:
            raise ValueError(f"{type(self).__name__} needs parameters {sorted(expected)}; missing {missing}")
        for k, shape in expected.items():
            if tuple(params[k].shape) != shape:
                raise ValueError(f"parameter {k!r} must have shape {shape}, got {tuple(params[k].shape)}")
        return params

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {b: (self.layers[l].size,) for l, b in enumerate(self.bias_names)}
        for (i, j), w in self.coupling_names.items():
            shapes[w] = (self.layers[i].size, self.layers[j].size)
        for l, r in self.lateral_names.items():
            shapes[r] = (self.layers[l].size,) * 2
        return shapes

    def init_params(self, data: Any = None, seed: int | None = None, scale: float = 0.01,
                    dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
        """Small random couplings (N(0, scale²)), zero laterals and hidden biases; the
        visible bias at the data's log-odds (Hinton 2010, "A practical guide", §8)."""
        from probgen.random import generator
        g = generator(0 if seed is None else seed)
        p = {}
        for name, shape in self.param_shapes().items():
            p[name] = torch.zeros(shape, dtype=dtype)
        for (i, j), w in self.coupling_names.items():
            p[w] = scale * torch.randn(p[w].shape, generator=g, dtype=dtype)
        if data is not None and self.layers[0].units == "bernoulli":
            m = torch.as_tensor(data, dtype=dtype).mean(0).clamp(1e-3, 1 - 1e-3)
            p[self.bias_names[0]] = torch.log(m / (1 - m)) * self.T
        elif data is not None:
            p[self.bias_names[0]] = torch.as_tensor(data, dtype=dtype).mean(0)
        return p

    # ---- energies and conditionals -----------------------------------------------------
    def energy(self, params: dict, states: list[torch.Tensor]) -> torch.Tensor:
        """E(s) per row, shape ``(N,)``, over the undirected part (all layers for BM/RBM/DBM)."""
        return self._energy_subset(params, states, self.undirected_layers)

    def field(self, params: dict, states: list[torch.Tensor | None], l: int,
              unit: int | None = None, scale: dict | None = None) -> torch.Tensor:
        """The input to layer ``l`` (or one of its units): −∂E/∂s_l without the
        Gaussian self-term, i.e. b_l + Σ W s_neighbour + 2 R_l s_l. Shape ``(N, size_l)``
        or ``(N,)`` for one unit. Only undirected couplings of the undirected part count
        (for a DBN's lower layers use `directed_mean`)."""
        b = params[self.bias_names[l]]
        f = b if unit is None else b[unit]
        for other, w, row in self.neighbours(l):
            if other not in self.undirected_layers or l not in self.undirected_layers or states[other] is None:
                continue
            W = params[w]
            if unit is None:
                f = f + (states[other] @ (W.T if row else W))
            else:
                f = f + (states[other] @ (W[unit] if row else W[:, unit]))
        if l in self.lateral_names and states[l] is not None:
            R = params[self.lateral_names[l]]
            f = f + 2 * (states[l] @ (R if unit is None else R[:, unit]))
        return f

    def conditional_mean(self, params: dict, states: list, l: int, unit: int | None = None) -> torch.Tensor:
        """E[s_l | rest] under p ∝ exp(−E/T): σ(field/T) for Bernoulli units, the field
        itself for Gaussian ones (whose conditional is N(field, T))."""
        f = self.field(params, states, l, unit)
        return torch.sigmoid(f / self.T) if self.layers[l].units == "bernoulli" else f

    def _draw(self, l: int, mean: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        if self.layers[l].units == "bernoulli":
            return (torch.rand(mean.shape, generator=g, dtype=mean.dtype) < mean).to(mean.dtype)
        return mean + math.sqrt(self.T) * torch.randn(mean.shape, generator=g, dtype=mean.dtype)

    def gibbs_sweep(self, params: dict, states: list, g: torch.Generator | None = None,
                    free: list[int] | None = None, schedule: list | None = None) -> list:
        """One sweep of the Gibbs schedule over the ``free`` layers (others stay clamped).
        Returns new states (a new list; tensors of updated layers are replaced)."""
        states = list(states)
        for block in (schedule if schedule is not None else self.gibbs_schedule(free)):
            # layers in one block are uncoupled: their means can be computed together
            means = [(l, u, self.conditional_mean(params, states, l, u)) for l, u in block]
            for l, u, m in means:
                x = self._draw(l, m, g)
                if u is None:
                    states[l] = x
                else:
                    s = states[l].clone()
                    s[:, u] = x
                    states[l] = s
        return states

    # ---- summing layers out -----------------------------------------------------------
    def summable(self, l: int) -> bool:
        return l not in self.lateral_names

    def log_unnormalized(self, params: dict, states: list, sum_out: list[int]) -> torch.Tensor:
        """log Σ_{s_U} exp(−E(s)/T) per row (shape ``(N,)``) with the layers ``U = sum_out``
        summed (integrated) out analytically; they must be mutually uncoupled and have no
        lateral couplings. Equals −F/T with F the free energy (Hinton 2010, §16.1):
        a Bernoulli unit contributes softplus(field/T), a Gaussian one
        field²/(2T) + ½ log(2πT)."""
        U = set(sum_out)
        kept = [l for l in self.undirected_layers if l not in U]
        out = -self._energy_subset(params, states, kept) / self.T
        for l in U:
            f = self.field(params, states, l)
            if self.layers[l].units == "bernoulli":
                out = out + F.softplus(f / self.T).sum(-1)
            else:
                out = out + (f * f).sum(-1) / (2 * self.T) + 0.5 * f.shape[-1] * (_LOG_2PI + math.log(self.T))
        return out

    def _energy_subset(self, params: dict, states: list, layers: list[int]) -> torch.Tensor:
        """The energy terms that involve only ``layers`` (biases, Gaussian self-terms,
        laterals, couplings among them), per row."""
        n = next(s.shape[0] for s in states if s is not None)
        dtype = next(s.dtype for s in states if s is not None)
        e = torch.zeros(n, dtype=dtype)
        for l in layers:
            s = states[l]
            e = e - s @ params[self.bias_names[l]]
            if self.layers[l].units == "gaussian":
                e = e + 0.5 * (s * s).sum(-1)
            if l in self.lateral_names:
                e = e - ((s @ params[self.lateral_names[l]]) * s).sum(-1)
        for (i, j), w in self.coupling_names.items():
            if i in layers and j in layers:
                e = e - ((states[i] @ params[w]) * states[j]).sum(-1)
        return e

    def split_for_enumeration(self, free: list[int]) -> tuple[list[int], list[int]]:
        """Among the ``free`` layers, ``(enumerated, summed_out)`` minimising the number
        of enumerated bits: summed-out layers are mutually uncoupled with no laterals;
        Gaussian layers must be summed out (ValueError when that is impossible)."""
        g = self.layer_graph()
        best = None
        for r in range(len(free), -1, -1):
            for U in itertools.combinations(free, r):
                if any(not self.summable(l) for l in U) or any(g.has_edge(a, b) for a in U for b in U):
                    continue
                E = [l for l in free if l not in U]
                if any(self.layers[l].units == "gaussian" for l in E):
                    continue
                bits = sum(self.layers[l].size for l in E)
                if best is None or bits < best[0]:
                    best = (bits, E, list(U))
        if best is None:
            raise ValueError("this model has Gaussian units that cannot be summed out; no exact evaluation")
        return best[1], best[2]

    def enumeration_bits(self, clamped: tuple[int, ...] = ()) -> int:
        free = [l for l in self.undirected_layers if l not in clamped]
        return sum(self.layers[l].size for l in self.split_for_enumeration(free)[0])

    def log_sum_enumerated(self, params: dict, states: list, free: list[int], *,
                           max_bits: int = 22, chunk: int = 1 << 16) -> torch.Tensor:
        """log Σ over the ``free`` layers of exp(−E/T), the other layers clamped to
        ``states`` (rows ``N``; with nothing clamped pass ``states=[None]*L``, giving one row).
        Works in chunks of about ``chunk`` (configuration × row) pairs to bound memory.
        Enumerates the cheaper side and sums the rest out analytically."""
        E, U = self.split_for_enumeration(free)
        bits = sum(self.layers[l].size for l in E)
        if bits > max_bits:
            raise ValueError(f"exact enumeration needs 2^{bits} states (limit 2^{max_bits}); use AIS "
                             "(fit.log_partition(method='ais')) for a model this large")
        dtype = next(iter(params.values())).dtype
        n = next((s.shape[0] for s in states if s is not None), 1)
        total = 1 << bits
        codes = torch.arange(total)
        parts = []
        per = max(1, chunk // max(n, 1))
        for start in range(0, total, per):
            c = codes[start:start + per]
            m = len(c)
            bitmat = ((c[:, None] >> torch.arange(bits)) & 1).to(dtype)  # (m, bits)
            st = [None if s is None else s.repeat_interleave(m, 0) for s in states]
            off = 0
            for l in E:
                sz = self.layers[l].size
                st[l] = bitmat[:, off:off + sz].repeat(n, 1)
                off += sz
            for l in U:
                st[l] = None
            lu = self.log_unnormalized(params, st, U).reshape(n, m)
            parts.append(torch.logsumexp(lu, 1))
        return torch.logsumexp(torch.stack(parts, 1), 1)

    def log_partition_exact(self, params: dict, max_bits: int = 22) -> torch.Tensor:
        """log Z by enumeration of the cheaper colour side (a 0-d tensor)."""
        states = [None] * self.n_layers
        return self.log_sum_enumerated(params, states, self.undirected_layers, max_bits=max_bits)[0]

    def log_partition_factorised(self, params: dict) -> torch.Tensor:
        """log Z of the model with couplings and laterals removed (AIS's base model):
        Σ softplus(b/T) over Bernoulli units, Σ b²/(2T) + ½ log(2πT) over Gaussian ones."""
        out = 0.0
        for l in self.undirected_layers:
            b = params[self.bias_names[l]]
            if self.layers[l].units == "bernoulli":
                out = out + F.softplus(b / self.T).sum()
            else:
                out = out + (b * b).sum() / (2 * self.T) + 0.5 * b.numel() * (_LOG_2PI + math.log(self.T))
        return torch.as_tensor(out)

    # ---- mean field --------------------------------------------------------------------
    def mean_field(self, params: dict, states: list, free: list[int], *, iters: int = 50,
                   tol: float = 1e-6, init: list | None = None) -> tuple[list, dict]:
        """Fully factorised q(s_free) = Π Bernoulli(μ) by fixed-point iteration of
        μ_l = σ(field_l(μ)/T) (Gaussian layers: μ_l = field_l(μ)), in the Gibbs schedule's
        order (coordinate ascent on the mean-field free energy; Salakhutdinov & Hinton 2009, §3).
        Returns ``(mu, info)`` with ``mu`` the states list with free layers replaced by μ and
        ``info = {"iters": ..., "delta": last max change}``."""
        mu = list(states)
        n = next(s.shape[0] for s in states if s is not None)
        dtype = next(s.dtype for s in states if s is not None)
        for l in free:
            if init is not None and init[l] is not None:
                mu[l] = init[l]
            else:
                mu[l] = torch.full((n, self.layers[l].size), 0.5, dtype=dtype)
        schedule = self.gibbs_schedule(free)
        delta, it = float("inf"), 0
        for it in range(1, iters + 1):
            delta = 0.0
            for block in schedule:
                means = [(l, u, self.conditional_mean(params, mu, l, u)) for l, u in block]
                for l, u, m in means:
                    old = mu[l] if u is None else mu[l][:, u]
                    delta = max(delta, float((m - old).abs().max()))
                    if u is None:
                        mu[l] = m
                    else:
                        t = mu[l].clone()
                        t[:, u] = m
                        mu[l] = t
            if delta < tol:
                break
        return mu, {"iters": it, "delta": delta}

    # ---- directed part (DBN) ---------------------------------------------------------
    def directed_mean(self, params: dict, upper: torch.Tensor, l: int) -> torch.Tensor:
        """Mean of layer ``l`` given layer ``l+1`` through a directed top-down link
        (a sigmoid belief net: P(s_l = 1 | s_{l+1}) = σ((b_l + W_{l+1} s_{l+1})/T))."""
        w = self.coupling_names[(l, l + 1)]
        f = params[self.bias_names[l]] + upper @ params[w].T
        return torch.sigmoid(f / self.T) if self.layers[l].units == "bernoulli" else f

    def recognition_mean(self, params: dict, lower: torch.Tensor, l: int) -> torch.Tensor:
        """The bottom-up approximate posterior of a DBN's layer ``l+1`` given layer ``l``:
        σ((b_{l+1} + W_{l+1}ᵀ s_l)/T) (Hinton, Osindero & Teh 2006)."""
        w = self.coupling_names[(l, l + 1)]
        return torch.sigmoid((params[self.bias_names[l + 1]] + lower @ params[w]) / self.T)

    # ---- sampling ----------------------------------------------------------------------
    def sample(self, params: dict, n: int, seed: int | None = None, warmup: int = 1000,
               init: list | None = None) -> torch.Tensor:
        """``n`` visible vectors ``(n, size_0)``: ``warmup`` Gibbs sweeps of the undirected
        part from uniform random states, then (for a DBN) one ancestral pass down the
        directed links. Each row is its own chain, so the rows are independent draws."""
        from probgen.loops.mcmc import run
        dtype = next(iter(params.values())).dtype
        kernel = BlockGibbs(self, params, dtype=dtype, start=init)
        if warmup == 0:  # no transition: the starting states themselves
            state = kernel.init([seed], list(range(n)), 0)
        else:  # the draw is the state after the warmup-th sweep
            state = run(kernel, steps=1, warmup=warmup - 1, num_chains=n, seed=seed, progress=False).states
        states, g = state["states"], state["g"]
        for l in range(self.n_directed - 1, -1, -1):
            states[l] = self._draw(l, self.directed_mean(params, states[l + 1], l), g)
        return states[0]

    def random_states(self, n: int, dtype: torch.dtype, g: torch.Generator | None = None) -> list:
        out = []
        for layer in self.layers:
            if layer.units == "bernoulli":
                out.append((torch.rand(n, layer.size, generator=g, dtype=dtype) < 0.5).to(dtype))
            else:
                out.append(torch.randn(n, layer.size, generator=g, dtype=dtype))
        return out

    # ---- data ------------------------------------------------------------------------
    def check_data(self, data: Any) -> torch.Tensor:
        from probgen.data import check_matrix
        layer = self.layers[0]
        x = check_matrix(data, layer.size, name="data")
        if layer.units == "bernoulli" and not ((x == 0) | (x == 1)).all():
            bad = (~((x == 0) | (x == 1))).nonzero()[0].tolist()
            raise ValueError(f"{type(self).__name__} has binary visible units: data must be 0/1 of shape "
                             f"(N, {layer.size}); got {float(x[bad[0], bad[1]])} at index {tuple(bad)}")
        return x


class BlockGibbs(Kernel):
    """Block Gibbs transitions of a layered energy model (Geman & Geman 1984) as a driver
    kernel: one transition is one sweep of the model's coloured schedule over the ``free``
    layers (default: the undirected part; ``clamp`` fixes the visible layer to given rows).
    Vectorised: the chains are the rows of the layer states, all moved by one sweep and all
    drawn from one generator seeded with the first chain's seed (so a chain's draws depend
    on how many run beside it). The kept draw: ``mean_<l>``, the conditional means
    E[s_l | rest] of the layers in ``averaged`` (only averaged by the driver:
    Rao-Blackwellised estimates, Gelfand & Smith 1990); the last states are in the
    driver's ``states``."""

    vectorised = True
    name = "gibbs"

    def __init__(self, model: "LayeredEnergy", params: dict, *, dtype: torch.dtype, free: list[int] | None = None,
                 clamp: torch.Tensor | None = None, start: list | None = None, averaged: tuple[int, ...] = ()):
        self.model, self.params, self.dtype, self.clamp, self.start = model, params, dtype, clamp, start
        self.schedule = model.gibbs_schedule(free)
        self.layers = averaged
        self.averaged = tuple(f"mean_{l}" for l in averaged)

    def init(self, seeds: list, chains: list, warmup: int) -> dict:
        from probgen.random import generator
        g = generator(seeds[0])
        states = self.start or self.model.random_states(len(chains), self.dtype, g)
        if self.clamp is not None:
            states[0] = self.clamp
        return {"g": g, "states": states}

    def step(self, state: dict, warmup: bool) -> dict:
        state["states"] = self.model.gibbs_sweep(self.params, state["states"], state["g"], schedule=self.schedule)
        return state

    def draw(self, state: dict) -> dict:
        return {f"mean_{l}": self.model.conditional_mean(self.params, state["states"], l) for l in self.layers}


@dataclass(frozen=True)
class PartitionEstimate:
    """log Z with its standard error (0 for exact enumeration).

    ``value`` – the estimate of log Z; ``stderr`` – its standard error (delta method over
    the AIS importance weights); ``method`` – ``"exact"`` or ``"ais"``; ``chains`` and
    ``temperatures`` – the AIS settings (0 for exact)."""

    value: float
    stderr: float
    method: str
    chains: int = 0
    temperatures: int = 0

    def __float__(self) -> float:
        return self.value
