"""Boltzmann machines as layered energy declarations (Goodfellow, Bengio & Courville 2016, §§20.1-20.4).

* `BoltzmannMachine` – visible and hidden units with lateral couplings,
  E(v,h) = −vᵀRv − vᵀWh − hᵀSh − bᵀv − cᵀh (``R``, ``S`` symmetric, zero diagonal).
* `RBM` – no laterals: E(v,h) = −bᵀv − cᵀh − vᵀWh; Bernoulli–Bernoulli or
  Gaussian–Bernoulli (unit-variance visible units: + ½‖v‖²).
* `DBM` – a stack of undirected links, E = −Σ_l b_lᵀh_l − Σ_l h_{l−1}ᵀ W_l h_l.
* `DBN` – a stack whose top pair is an RBM and whose lower links are directed
  (P(h_{l−1} = 1 | h_l) = σ(b_{l−1} + W_l h_l)).

All take a temperature ``T``: p ∝ exp(−E/T). Parameters: ``W``, ``b``, ``c`` (+ ``R``,
``S``) for BM / RBM; ``W1…WL`` (``W_l`` of shape (size_{l−1}, size_l)) and ``b0…bL`` for
stacks. Training, evaluation and sampling live in the engines (``mcmc``: CD-k / PCD;
``meanfield``: DBM mean-field + PCD; ``exact``: enumeration); the energy maths in
`probgen.energy`.
"""
from __future__ import annotations

from typing import Any

import networkx as nx
import torch

from probgen.energy import UNIT_TYPES, Layer, LayeredEnergy


def _check_size(name: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return v


def _check_T(T: Any) -> float:
    try:
        T = float(T)
    except (TypeError, ValueError):
        raise ValueError(f"temperature T must be a positive number, got {T!r}") from None
    if not T > 0 or T == float("inf"):
        raise ValueError(f"temperature T must be a positive finite number, got {T!r}")
    return T


def _random_binary(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # a little structure (two prototypes with noise) so that training has something to find
    protos = (torch.rand(2, d, generator=g) < 0.5).double()
    idx = torch.randint(2, (n,), generator=g)
    flip = (torch.rand(n, d, generator=g) < 0.1).double()
    return (protos[idx] + flip) % 2


class _LayeredDeclaration(LayeredEnergy):
    default_engine = "mcmc"
    default_dataset = "digits-binary"

    def structure(self, *args: Any, params: bool = False, expand: bool = False, **options: Any) -> nx.Graph:
        """The layer graph (nodes kind ``"layer"`` with ``size`` / ``units``) or, with
        ``expand=True``, the unit graph (nodes kind ``"unit"``, e.g. ``v1``, ``h3``).
        Undirected models give an ``nx.Graph``; a DBN a ``DiGraph`` (top-down edges)
        whose top pair's edges carry ``directed=False``."""
        if options or args:
            raise ValueError(f"structure() takes expand= and params=, got {sorted(options) or args}")
        directed = self.n_directed > 0
        g = nx.DiGraph() if directed else nx.Graph()
        g.graph["plates"] = {}
        names = [layer.name for layer in self.layers]
        observed = {0}

        def unit_names(l):
            return [f"{names[l]}{k + 1}" for k in range(self.layers[l].size)]

        for l, layer in enumerate(self.layers):
            kind = "observed" if l in observed else "latent"
            if expand:
                for u in unit_names(l):
                    g.add_node(u, kind="unit", layer=layer.name, units=layer.units, observed=l in observed,
                               plates=())
            else:
                g.add_node(layer.name, kind="layer", size=layer.size, units=layer.units,
                           observed=l in observed, role=kind, plates=())
        for (i, j), w in self.coupling_names.items():
            und = i >= self.n_directed
            src, dst = (j, i)  # generative direction: upper layer -> lower layer
            if expand:
                for a in unit_names(src):
                    for b in unit_names(dst):
                        g.add_edge(a, b, directed=not und, weight=w)
            else:
                g.add_edge(names[src], names[dst], directed=not und, weight=w)
        for l, r in self.lateral_names.items():
            if expand:
                us = unit_names(l)
                for a in range(len(us)):
                    for b in range(a + 1, len(us)):
                        g.add_edge(us[a], us[b], directed=False, weight=r)
            else:
                g.add_edge(names[l], names[l], directed=False, weight=r)
        if params:
            for l, b in enumerate(self.bias_names):
                g.add_node(b, kind="param", plates=())
                g.add_edge(b, names[l] if not expand else unit_names(l)[0], directed=True)
        return g

    @classmethod
    def for_data(cls, data: Any, **options: Any):
        x = torch.as_tensor(data)
        return cls._for_dim(int(x.shape[-1]), **options)


class BoltzmannMachine(_LayeredDeclaration):
    """A Boltzmann machine with visible units v and hidden units h and lateral couplings,
    E(v,h) = −vᵀRv − vᵀWh − hᵀSh − bᵀv − cᵀh (Goodfellow et al. 2016, §20.1; Ackley, Hinton &
    Sejnowski 1985). ``R`` (n_visible × n_visible) and ``S`` (n_hidden × n_hidden) are
    symmetric with zero diagonal. Gibbs sweeps go unit by unit inside each layer.

    Args:
      n_visible: the number of visible units V.
      n_hidden: the number of hidden units H.
      T: the temperature.

    Parameters (``Fit.params``): ``b`` (V,), ``c`` (H,), ``W`` (V, H), ``R`` (V, V), ``S`` (H, H).
    Data: ``(N, V)`` 0 / 1 tensors.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import BoltzmannMachine
        >>> model, data = BoltzmannMachine.example(seed=0)  # 5 visible, 3 hidden units; 40 rows of 0 / 1
        >>> fit = pg.fit(model, data, steps=3, seed=0, progress=False)
        >>> fit.engine, fit.method, fit.params["W"].shape, fit.params["R"].shape
        ('mcmc', 'cd', torch.Size([5, 3]), torch.Size([5, 5]))
        >>> fit.log_prob(data).shape, fit.log_prob_kind
        (torch.Size([40]), 'exact')
    """

    short_name = "bm"
    _repr_fields = ("n_visible", "n_hidden", "T")

    def __init__(self, n_visible: int, n_hidden: int, T: float = 1.0):
        self.n_visible = _check_size("n_visible", n_visible)
        self.n_hidden = _check_size("n_hidden", n_hidden)
        self.T = _check_T(T)
        self.layers = [Layer("v", n_visible), Layer("h", n_hidden)]
        self.bias_names = ["b", "c"]
        self.coupling_names = {(0, 1): "W"}
        self.lateral_names = {0: "R", 1: "S"}
        self.n_directed = 0

    @classmethod
    def _for_dim(cls, d: int, n_hidden: int = 16, **kw: Any):
        return cls(d, n_hidden, **kw)

    @classmethod
    def example(cls, seed: int = 0):
        return cls(5, 3), _random_binary(40, 5, seed)


class RBM(_LayeredDeclaration):
    """A restricted Boltzmann machine, E(v,h) = −bᵀv − cᵀh − vᵀWh (Goodfellow et al. 2016, §20.2;
    Smolensky 1986, Hinton 2002), with P(h|v) = σ((c + Wᵀv)/T), P(v|h) = σ((b + Wh)/T).
    ``visible="gaussian"`` gives unit-variance Gaussian visible units (E gains ½‖v‖²,
    v | h ~ N(b + Wh, T); standardise the data first).

    Args:
      n_visible: the number of visible units V.
      n_hidden: the number of hidden units H.
      visible: ``"bernoulli"`` or ``"gaussian"`` visible units.
      T: the temperature.

    Parameters (``Fit.params``): ``b`` (V,), ``c`` (H,), ``W`` (V, H). Data: ``(N, V)``.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import RBM
        >>> model, data = RBM.example(seed=0)  # 6 visible, 4 hidden units; 40 rows of 0 / 1
        >>> fit = pg.fit(model, data, steps=3, seed=0, progress=False)
        >>> fit.engine, fit.method, fit.params["W"].shape
        ('mcmc', 'cd', torch.Size([6, 4]))
        >>> fit.log_prob(data).shape, fit.log_prob_kind
        (torch.Size([40]), 'exact')
    """

    short_name = "rbm"
    _repr_fields = ("n_visible", "n_hidden", "visible", "T")

    def __init__(self, n_visible: int, n_hidden: int, visible: str = "bernoulli", T: float = 1.0):
        self.n_visible = _check_size("n_visible", n_visible)
        self.n_hidden = _check_size("n_hidden", n_hidden)
        if visible not in UNIT_TYPES:
            raise ValueError(f"visible must be one of {UNIT_TYPES}, got {visible!r}")
        self.visible = visible
        self.T = _check_T(T)
        self.layers = [Layer("v", n_visible, visible), Layer("h", n_hidden)]
        self.bias_names = ["b", "c"]
        self.coupling_names = {(0, 1): "W"}
        self.lateral_names = {}
        self.n_directed = 0

    @classmethod
    def _for_dim(cls, d: int, n_hidden: int = 64, **kw: Any):
        return cls(d, n_hidden, **kw)

    @classmethod
    def example(cls, seed: int = 0):
        return cls(6, 4), _random_binary(40, 6, seed)


class _Stack(_LayeredDeclaration):
    _repr_fields = ("sizes", "T")

    def __init__(self, *sizes: int, T: float = 1.0):
        if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
            sizes = tuple(sizes[0])
        if len(sizes) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two layer sizes (visible, hidden...), "
                             f"got {sizes!r}")
        self.sizes = tuple(_check_size(f"size of layer {i}", s) for i, s in enumerate(sizes))
        self.T = _check_T(T)
        self.layers = [Layer("v" if i == 0 else f"h{i}", s) for i, s in enumerate(self.sizes)]
        self.bias_names = [f"b{i}" for i in range(len(sizes))]
        self.coupling_names = {(i - 1, i): f"W{i}" for i in range(1, len(sizes))}
        self.lateral_names = {}

    @classmethod
    def _for_dim(cls, d: int, hidden: tuple = (64, 32), **kw: Any):
        return cls(d, *hidden, **kw)

    @classmethod
    def example(cls, seed: int = 0):
        return cls(6, 4, 3), _random_binary(40, 6, seed)


class DBM(_Stack):
    """A deep Boltzmann machine: undirected links between consecutive layers,
    E(v,h¹,…,h^L) = −Σ_l b_lᵀh_l − Σ_l h_{l−1}ᵀ W_l h_l (Goodfellow et al. 2016, §20.4; Salakhutdinov &
    Hinton 2009). Odd and even layers form the two Gibbs / mean-field blocks.

    Args:
      *sizes: the layer sizes, visible first (visible, hidden₁, …).
      T: the temperature.

    Parameters (``Fit.params``): ``b0`` … ``bL`` (one bias per layer), ``W1`` … ``WL``
    (``W_l`` of shape (size_{l−1}, size_l)). Data: ``(N, sizes[0])``.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import DBM
        >>> model, data = DBM.example(seed=0)  # layers 6, 4, 3; 40 rows of 0 / 1
        >>> fit = pg.fit(model, data, steps=3, seed=0, progress=False)
        >>> fit.engine, fit.method, fit.params["W1"].shape, fit.params["W2"].shape
        ('meanfield', 'energy', torch.Size([6, 4]), torch.Size([4, 3]))
        >>> fit.log_prob(data).shape, fit.log_prob_kind
        (torch.Size([40]), 'exact')
    """

    short_name = "dbm"
    default_engine = "meanfield"

    def __init__(self, *sizes: int, T: float = 1.0):
        super().__init__(*sizes, T=T)
        self.n_directed = 0


class DBN(_Stack):
    """A deep belief network: the top two layers an RBM, the links below directed
    top-down sigmoid belief nets, P(h_{l−1} = 1 | h_l) = σ((b_{l−1} + W_l h_l)/T)
    (Goodfellow et al. 2016, §20.3; Hinton, Osindero & Teh 2006). Trained by greedy stacking of RBMs
    (weights copied). A DBN with one hidden layer is an RBM.

    Args:
      *sizes: the layer sizes, visible first (visible, hidden₁, …).
      T: the temperature.

    Parameters (``Fit.params``): ``b0`` … ``bL``, ``W1`` … ``WL`` as for `DBM`.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import DBN
        >>> model, data = DBN.example(seed=0)  # layers 6, 4, 3; 40 rows of 0 / 1
        >>> fit = pg.fit(model, data, steps=3, seed=0, progress=False)
        >>> fit.engine, fit.method, fit.params["W1"].shape, fit.params["W2"].shape
        ('mcmc', 'cd', torch.Size([6, 4]), torch.Size([4, 3]))
        >>> fit.log_prob(data).shape, fit.log_prob_kind
        (torch.Size([40]), 'exact')
    """

    short_name = "dbn"

    def __init__(self, *sizes: int, T: float = 1.0):
        super().__init__(*sizes, T=T)
        self.n_directed = len(self.sizes) - 2
