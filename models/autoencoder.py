"""Autoencoders read probabilistically (Goodfellow, Bengio & Courville 2016,
ch. 14).

An autoencoder is a pair of conditionals: a *decoder* p(x | h), which together with a prior
p(h) is a generative model p(x, h) = p(h) p(x | h) (the Pyro ``program``), and an *encoder*
q(h | x) (the Pyro ``guide``). The ``svi`` engine trains the pair:

* deterministic kinds: the encoder is a point mass q(h | x) = δ(h − f(x)), so the ELBO is
  log p(x, h = f(x)) — training is MAP in the joint model with an amortised code;
* ``undercomplete`` / ``denoising`` / ``contractive`` / ``deep``: a flat (improper) prior on
  h, so the objective is the reconstruction loss L(x, g(f(x))) = −log p(x | f(x));
* ``sparse``: a Laplace prior p(h_j) ∝ exp(−λ|h_j|), whose negative log is the sparsity
  penalty Ω(h) = λ‖h‖₁ (Goodfellow et al. 2016, §14.2.1);
* ``denoising``: the encoder sees a corrupted copy x̃ ~ C(x̃ | x) (masking or Gaussian
  noise) during training and the decoder must reproduce the clean x: L(x, g(f(x̃)));
* ``contractive``: the penalty Ω(h, x) = λ‖∂f/∂x‖²_F, computed exactly (closed form for one
  layer, a batched Jacobian chain product for deeper encoders); it enters the guide as a
  factor, which Pyro counts in log q, so the objective is E[log p(x, h)] − λ‖J‖²_F;
* ``stochastic``: the encoder is a conditional distribution q(h | x) = N(f(x), σ²I) with a
  fixed noise scale σ and the prior is N(0, I), so the objective is a true ELBO and
  ``fit.log_prob`` is a bound on log p(x) (IWAE-k).

Parameter names (shapes for dims = (D, H1, …, Hk) and code size C; the decoder uses the
stack convention of the Boltzmann stacks, ``W1`` touching the visible units):
  decoder: ``W1`` (D, H1), ``W2`` (H1, H2), …, ``W{k+1}`` (Hk, C); ``b0`` (D,), …, ``b{k}`` (Hk,);
    ``scale`` () for the Gaussian likelihood (one shared standard deviation);
  encoder: ``enc_W{i}`` (Hi, H{i-1}), ``enc_b{i}`` (Hi,) for the hidden layers, then the code
    head ``enc_loc_W`` (C, Hk), ``enc_loc_b`` (C,) (and ``enc_scale_W``, ``enc_scale_b`` for an
    encoder with a learned scale, as in the VAE).
"""
from __future__ import annotations

import math
from typing import Any

import networkx as nx
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch.distributions import constraints

from probgen.data import check_matrix, load_dataset
from probgen.declarations import Program

KINDS = ("undercomplete", "sparse", "denoising", "contractive", "deep", "stochastic")
ACTIVATIONS = ("tanh", "sigmoid", "relu", "softplus", "identity")
LIKELIHOODS = ("bernoulli", "gaussian")


def activate(name: str, a: torch.Tensor) -> torch.Tensor:
    if name == "tanh":
        return torch.tanh(a)
    if name == "sigmoid":
        return torch.sigmoid(a)
    if name == "relu":
        return torch.relu(a)
    if name == "softplus":
        return F.softplus(a)
    return a


def activation_grad(name: str, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d act(a) / da elementwise, from the pre-activation ``a`` and the output ``y``."""
    if name == "tanh":
        return 1 - y * y
    if name == "sigmoid":
        return y * (1 - y)
    if name == "relu":
        return (a > 0).to(a.dtype)
    if name == "softplus":
        return torch.sigmoid(a)
    return torch.ones_like(a)


class FlatPrior(dist.ImproperUniform):
    """The improper flat density on R^C (log p(h) = 0), so that MAP under it is least
    reconstruction loss. A flat density has no draws; ``sample`` returns N(0, I) values only
    so that a program can be traced and an MCMC chain initialised — generation from a
    flat-prior autoencoder uses the fitted code distribution instead (``Autoencoder.sample``)."""

    def __init__(self, code_dim: int, batch_shape: tuple = ()):
        super().__init__(constraints.real, batch_shape, (code_dim,))

    def expand(self, batch_shape: Any, _instance: Any = None) -> "FlatPrior":
        return FlatPrior(self.event_shape[0], tuple(batch_shape))

    def sample(self, sample_shape: Any = torch.Size()) -> torch.Tensor:
        return torch.randn(torch.Size(sample_shape) + self.batch_shape + self.event_shape)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


class EncoderDecoder(Program):
    """What the autoencoders and the VAE share: an MLP encoder (the guide) and an MLP
    decoder with a Bernoulli or Gaussian likelihood (the model), written as Pyro programs.

    Subclasses choose the prior on the code (`prior`), the encoder's distribution
    (``encoder_dist`` = ``"delta"`` or ``"gaussian"``) and any corruption / penalty.
    """

    default_engine = "svi"
    default_dataset = "digits-binary"
    observed = ("x",)
    #: "delta": a point-mass encoder (MAP training); "gaussian": a conditional Normal q(h|x)
    encoder_dist = "delta"
    #: whether the encoder's scale is learned (``enc_scale_W``/``enc_scale_b``) or fixed
    learned_scale = False

    def __init__(self, dims: Any, code_dim: int, likelihood: str = "bernoulli", activation: str = "tanh",
                 code_activation: str = "identity"):
        if isinstance(dims, int):
            dims = (dims,)
        try:
            dims = tuple(int(d) for d in dims)
        except (TypeError, ValueError):
            raise ValueError(f"dims must be an int D or a sequence (D, H1, ..., Hk) of layer sizes, "
                             f"got {dims!r}") from None
        if not dims or any(d <= 0 for d in dims):
            raise ValueError(f"dims must be positive layer sizes (D, H1, ..., Hk), got {dims!r}")
        if not isinstance(code_dim, int) or code_dim <= 0:
            raise ValueError(f"the code size must be a positive integer, got {code_dim!r}")
        _check_choice("likelihood", likelihood, LIKELIHOODS)
        _check_choice("activation", activation, ACTIVATIONS)
        _check_choice("code_activation", code_activation, ACTIVATIONS)
        self.dims, self.code_dim, self.likelihood = dims, code_dim, likelihood
        self.activation, self.code_activation = activation, code_activation

    # ---- shapes and parameters -------------------------------------------------------
    @property
    def n_hidden(self) -> int:
        return len(self.dims) - 1

    def decoder_shapes(self) -> dict[str, tuple]:
        widths = self.dims + (self.code_dim,)
        shapes = {}
        for l in range(1, len(widths)):
            shapes[f"W{l}"] = (widths[l - 1], widths[l])
            shapes[f"b{l - 1}"] = (widths[l - 1],)
        if self.likelihood == "gaussian":
            shapes["scale"] = ()
        return shapes

    def encoder_shapes(self) -> dict[str, tuple]:
        shapes = {}
        for i in range(1, len(self.dims)):
            shapes[f"enc_W{i}"] = (self.dims[i], self.dims[i - 1])
            shapes[f"enc_b{i}"] = (self.dims[i],)
        shapes["enc_loc_W"] = (self.code_dim, self.dims[-1])
        shapes["enc_loc_b"] = (self.code_dim,)
        if self.learned_scale:
            shapes["enc_scale_W"] = (self.code_dim, self.dims[-1])
            shapes["enc_scale_b"] = (self.code_dim,)
        return shapes

    @staticmethod
    def constraint(name: str) -> Any:
        return constraints.positive if name == "scale" else constraints.real

    def init_params(self, data: Any = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        """LeCun-normal weights (std 1/√fan_in), zero biases; the visible bias ``b0`` starts at
        the data mean (its logit for Bernoulli data), ``scale`` at the data's standard deviation."""
        from probgen.random import generator
        g = generator(0 if seed is None else seed)
        out = {}
        for name, shape in {**self.encoder_shapes(), **self.decoder_shapes()}.items():
            if name == "scale":
                out[name] = torch.tensor(1.0)
            elif len(shape) == 2:
                out[name] = torch.randn(shape, generator=g) / math.sqrt(shape[1])
            else:
                out[name] = torch.zeros(shape)
        if self.learned_scale:  # start the encoder's scale small (softplus(-2) ≈ 0.13)
            out["enc_scale_b"] = torch.full((self.code_dim,), -2.0)
        if data is not None:
            x = torch.as_tensor(data, dtype=torch.float32)
            mean = x.mean(0)
            if self.likelihood == "bernoulli":
                out["b0"] = torch.logit(mean.clamp(1e-3, 1 - 1e-3))
            else:
                out["b0"] = mean
                out["scale"] = x.std().clamp_min(1e-3)
        return out

    def _params(self, names: Any) -> dict[str, torch.Tensor]:
        """``pyro.param`` sites; a program run outside an engine starts from `init_params`."""
        default: dict = {}

        def init(name: str):
            if not default:
                default.update(self.init_params())
            return default[name]

        return {n: pyro.param(n, lambda n=n: init(n), constraint=self.constraint(n)) for n in names}

    # ---- the networks (pure functions of a params dict; broadcast over leading dims) --
    def encoder_hidden(self, params: dict, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(pre-activation, activation) of each hidden encoder layer."""
        layers, a = [], x
        for i in range(1, len(self.dims)):
            pre = a @ params[f"enc_W{i}"].T + params[f"enc_b{i}"]
            a = activate(self.activation, pre)
            layers.append((pre, a))
        return layers

    def encode(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """The code f(x) (shape (N, C)): the encoder's location — the posterior mean for a
        Gaussian encoder, the point itself for a deterministic one."""
        layers = self.encoder_hidden(params, x)
        a = layers[-1][1] if layers else x
        return activate(self.code_activation, a @ params["enc_loc_W"].T + params["enc_loc_b"])

    def encoder_scale(self, params: dict, x: torch.Tensor) -> torch.Tensor | None:
        """The Gaussian encoder's standard deviations (N, C); ``None`` for a point mass."""
        return None

    def decode(self, params: dict, h: torch.Tensor) -> torch.Tensor:
        """The decoder's output for codes ``h`` (..., C): Bernoulli logits or Gaussian means (..., D)."""
        a = h
        for l in range(len(self.dims), 1, -1):
            a = activate(self.activation, a @ params[f"W{l}"].T + params[f"b{l - 1}"])
        return a @ params["W1"].T + params["b0"]

    def likelihood_dist(self, params: dict, out: torch.Tensor) -> dist.Distribution:
        """p(x | h) given the decoder output, with the D pixels as one event."""
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out).to_event(1)
        return dist.Normal(out, params["scale"]).to_event(1)

    def mean(self, params: dict, out: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else out

    def reconstruct(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """E[x | h = f(x)] (N, D): the decoder's mean at the code."""
        return self.mean(params, self.decode(params, self.encode(params, x)))

    def recon_log_prob(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """log p(x | h = f(x)) per example (N,): the negative reconstruction error in nats."""
        return self.likelihood_dist(params, self.decode(params, self.encode(params, x))).log_prob(x)

    # ---- the model and the guide -----------------------------------------------------
    def prior(self) -> dist.Distribution:
        """p(h) with event shape (C,). Default: flat (improper), so MAP = least reconstruction loss."""
        return FlatPrior(self.code_dim)

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """The corruption C(x̃ | x) applied before the encoder in training (none by default)."""
        return x

    def program(self, x: torch.Tensor | None = None, train: bool = False, n: int | None = None) -> torch.Tensor:
        """The generative model p(h) p(x | h); ``x`` (N, D) observed (``None``: ``n`` draws)."""
        p = self._params(self.decoder_shapes())
        size = len(x) if x is not None else (n or 1)
        with pyro.plate("data", size, dim=-1):
            h = pyro.sample("h", self.prior())
            return pyro.sample("x", self.likelihood_dist(p, self.decode(p, h)), obs=x)

    def guide(self, x: torch.Tensor, train: bool = False) -> None:
        """The encoder q(h | x): a point mass at f(x̃) or N(f(x̃), σ²); x̃ = x unless training
        a denoising autoencoder."""
        p = self._params(self.encoder_shapes())
        x_in = self.corrupt(x) if train else x
        loc = self.encode(p, x_in)
        with pyro.plate("data", len(x), dim=-1):
            if self.encoder_dist == "delta":
                pyro.sample("h", dist.Delta(loc).to_event(1))
            else:
                pyro.sample("h", dist.Normal(loc, self.encoder_scale(p, x_in)).to_event(1))
            self.guide_penalty(p, x_in)

    def guide_penalty(self, params: dict, x: torch.Tensor) -> None:
        """A regulariser of the encoder, added as a guide factor (none by default)."""

    # ---- declaration hooks -----------------------------------------------------------
    def check_data(self, data: Any) -> torch.Tensor:
        """An (N, D) float32 tensor; 0/1 values for the Bernoulli likelihood."""
        x = check_matrix(data, self.dims[0], dtype=torch.float32)
        if self.likelihood == "bernoulli" and not ((x == 0) | (x == 1)).all():
            raise ValueError("the bernoulli likelihood needs 0/1 data (e.g. 'digits-binary'); "
                             "use likelihood='gaussian' for continuous data")
        return x

    def program_args(self, data: Any) -> tuple:
        return (data,)

    def priors(self) -> dict[str, dist.Distribution]:
        """Priors on the decoder's parameters, for the ``mcmc`` engine (a Bayesian decoder):
        N(0, 1) weights and biases, a LogNormal(0, 1) observation scale."""
        out = {}
        for name, shape in self.decoder_shapes().items():
            base = dist.LogNormal(0.0, 1.0) if name == "scale" else dist.Normal(0.0, 1.0)
            out[name] = base.expand(shape).to_event(len(shape)) if shape else base
        return out

    def sample(self, params: dict, n: int, seed: int | None = None, code_loc: Any = None,
               code_scale: Any = None) -> torch.Tensor:
        """``n`` draws x ~ p(x | h), h ~ p(h) (shape (n, D)). With a flat prior there is no
        p(h) to draw from: the codes are drawn from a Gaussian fitted to the training codes
        (``code_loc``, ``code_scale``, which the svi engine records), or to ``params["h"]``."""
        from probgen.random import seeded
        with seeded(seed), torch.no_grad():
            h = self.sample_codes(params, n, code_loc, code_scale)
            return self.likelihood_dist(params, self.decode(params, h)).sample()

    def sample_codes(self, params: dict, n: int, code_loc: Any = None, code_scale: Any = None) -> torch.Tensor:
        prior = self.prior()
        if not isinstance(prior, FlatPrior):
            return prior.expand((n,)).sample()
        if code_loc is None and "h" in params:  # e.g. codes sampled by the mcmc engine
            hs = params["h"].reshape(-1, self.code_dim)
            code_loc, code_scale = hs.mean(0), hs.std(0) if len(hs) > 1 else torch.ones(self.code_dim)
        if code_loc is None:
            raise ValueError(f"{type(self).__name__}(kind={getattr(self, 'kind', '?')!r}) has a flat prior "
                             "on its code: sample from a fit (which records the code distribution)")
        return torch.as_tensor(code_loc) + torch.as_tensor(code_scale) * torch.randn(n, self.code_dim)

    def structure(self, *args: Any, params: bool = False, **options: Any) -> nx.DiGraph:
        """The generative graph h → x inside the data plate; with ``params=True`` the decoder's
        parameters point at x and the encoder's (the guide's) at h."""
        g = nx.DiGraph()
        prior = self.prior()
        prior = type(getattr(prior, "base_dist", prior)).__name__  # "Normal", not "Independent"
        g.add_node("h", kind="latent", plates=("data",), distribution=prior, size=self.code_dim)
        g.add_node("x", kind="observed", plates=("data",),
                   distribution="Bernoulli" if self.likelihood == "bernoulli" else "Normal", size=self.dims[0])
        g.add_edge("h", "x", directed=True)
        if params:
            for name in self.decoder_shapes():
                g.add_node(name, kind="param", plates=())
                g.add_edge(name, "x", directed=True)
            for name in self.encoder_shapes():
                g.add_node(name, kind="param", plates=(), role="encoder")
                g.add_edge(name, "h", directed=True, guide=True)
        g.graph["plates"] = {"data": args[0].shape[0] if args and hasattr(args[0], "shape") else None}
        return g

    @classmethod
    def load_named_data(cls, name: str) -> Any:
        """``"digits"`` scaled to [0, 1] (for the Gaussian likelihood); other names: None."""
        if name == "digits":
            return load_dataset("digits") / 16.0
        return None

    @staticmethod
    def _likelihood_for(data: Any) -> str:
        x = torch.as_tensor(data)
        return "bernoulli" if ((x == 0) | (x == 1)).all() else "gaussian"


class Autoencoder(EncoderDecoder):
    """An autoencoder of one of the kinds ``undercomplete``, ``sparse``, ``denoising``,
    ``contractive``, ``deep``, ``stochastic`` (see the module docstring).

    Args:
      kind: which autoencoder.
      dims: D, or (D, H1, …, Hk): the input size and the encoder's hidden widths (the decoder
        mirrors them). ``deep`` needs at least one hidden layer.
      code_dim: the code size C (``undercomplete`` and ``deep`` need C < D).
      likelihood: ``"bernoulli"`` (0/1 data) or ``"gaussian"`` (one learned scale).
      activation: hidden-layer nonlinearity.
      code_activation: the code layer's nonlinearity (default ``sigmoid`` for ``contractive``,
        as in Rifai et al. 2011, ``identity`` otherwise).
      sparsity: λ of the Laplace prior p(h_j) = λ/2 exp(−λ|h_j|) (``sparse``).
      corruption: ``"mask"`` (each input set to 0 with probability ``noise``) or ``"gaussian"``
        (x̃ = x + ``noise``·ε) (``denoising``).
      noise: the corruption level (``denoising``) or the encoder's fixed σ (``stochastic``).
      contraction: λ of the contractive penalty λ‖∂h/∂x‖²_F (``contractive``).
    Reference: Goodfellow, Bengio & Courville (2016), Deep Learning, ch. 14; Vincent et al.
    (2008) (denoising); Rifai et al. (2011) (contractive).

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import Autoencoder
        >>> x = pg.load_dataset("digits-binary")[:64]  # 64 rows of 8 × 8 binary pixels
        >>> fit = pg.fit(Autoencoder(dims=(64, 16), code_dim=4), x, steps=2, seed=0, progress=False)
        >>> fit.engine, fit.log_prob(x[:5]).shape
        ('svi', torch.Size([5]))
        >>> pg.infer(fit, x[:5], query="encode").shape  # the codes
        torch.Size([5, 4])
    """

    short_name = "autoencoder"
    aliases = ("ae",)
    _repr_fields = ("kind", "dims", "code_dim", "likelihood", "activation", "code_activation",
                    "sparsity", "corruption", "noise", "contraction")

    def __init__(self, kind: str = "undercomplete", dims: Any = 64, code_dim: int = 8,
                 likelihood: str = "bernoulli", activation: str = "tanh", code_activation: str | None = None,
                 sparsity: float = 2.0, corruption: str = "mask", noise: float | None = None,
                 contraction: float = 0.1):
        _check_choice("kind", kind, KINDS)
        if code_activation is None:
            code_activation = "sigmoid" if kind == "contractive" else "identity"
        super().__init__(dims, code_dim, likelihood, activation, code_activation)
        self.kind = kind
        if kind in ("undercomplete", "deep") and code_dim >= self.dims[0]:
            raise ValueError(f"an {kind} autoencoder needs code_dim < D = {self.dims[0]}, got {code_dim}")
        if kind == "deep" and self.n_hidden < 1:
            raise ValueError("a deep autoencoder needs hidden layers: dims=(D, H1, ..., Hk) with k >= 1")
        _check_choice("corruption", corruption, ("mask", "gaussian"))
        if noise is None:
            noise = {"denoising": 0.3, "stochastic": 0.25}.get(kind, 0.0)
        for name, v in (("sparsity", sparsity), ("noise", noise), ("contraction", contraction)):
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if corruption == "mask" and kind == "denoising" and noise >= 1:
            raise ValueError(f"the masking probability noise must be < 1, got {noise}")
        if kind == "stochastic" and noise <= 0:
            raise ValueError("a stochastic autoencoder needs an encoder noise scale noise > 0")
        self.sparsity, self.corruption, self.noise = float(sparsity), corruption, float(noise)
        self.contraction = float(contraction)
        self.encoder_dist = "gaussian" if kind == "stochastic" else "delta"

    def prior(self) -> dist.Distribution:
        if self.kind == "sparse":  # −log p(h) = λ‖h‖₁ + const: the sparsity penalty
            return dist.Laplace(torch.zeros(self.code_dim), torch.full((self.code_dim,), 1 / self.sparsity)
                                ).to_event(1)
        if self.kind == "stochastic":
            return dist.Normal(torch.zeros(self.code_dim), torch.ones(self.code_dim)).to_event(1)
        return super().prior()

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """x̃ ~ C(x̃ | x): masking noise (zero each input with probability ``noise``) or
        additive Gaussian noise. Drawn with torch's generator, not as a Pyro site: the
        corruption is part of the encoder's input, not a latent variable of the model."""
        if self.kind != "denoising" or self.noise == 0:
            return x
        if self.corruption == "mask":
            return x * (torch.rand_like(x) >= self.noise).to(x.dtype)
        return x + self.noise * torch.randn_like(x)

    def encoder_scale(self, params: dict, x: torch.Tensor) -> torch.Tensor | None:
        if self.kind != "stochastic":
            return None
        return torch.full((self.code_dim,), self.noise, dtype=x.dtype)

    def contractive_penalty(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """‖∂f(x)/∂x‖²_F per example (N,), exactly.

        One layer h = s(Wx + b): ∂h_j/∂x_i = s'(a_j) W_ji, so ‖J‖²_F = Σ_j s'(a_j)² Σ_i W_ji².
        Deeper encoders: the batched chain product J = diag(s_L') W_L ⋯ diag(s_1') W_1
        (N × C × D), accumulated layer by layer (forward mode)."""
        layers = self.encoder_hidden(params, x)
        a_in = layers[-1][1] if layers else x
        pre = a_in @ params["enc_loc_W"].T + params["enc_loc_b"]
        d_code = activation_grad(self.code_activation, pre, activate(self.code_activation, pre))
        if not layers:
            return (d_code ** 2) @ (params["enc_loc_W"] ** 2).sum(1)
        J = activation_grad(self.activation, *layers[0]).unsqueeze(-1) * params["enc_W1"]  # (N, H1, D)
        for i, (pre_i, a_i) in enumerate(layers[1:], start=2):
            J = activation_grad(self.activation, pre_i, a_i).unsqueeze(-1) * (params[f"enc_W{i}"] @ J)
        J = d_code.unsqueeze(-1) * (params["enc_loc_W"] @ J)
        return J.pow(2).sum((-2, -1))

    def guide_penalty(self, params: dict, x: torch.Tensor) -> None:
        if self.kind == "contractive" and self.contraction > 0:
            # Pyro subtracts every guide site's log-density from the ELBO, so a guide factor
            # of +λ‖J‖² lowers the objective by λ‖J‖²: loss = −log p(x|h) + λ‖J‖²_F.
            pyro.factor("contractive", self.contraction * self.contractive_penalty(params, x),
                        has_rsample=True)

    @classmethod
    def for_data(cls, data: Any, **options: Any) -> "Autoencoder":
        d = int(torch.as_tensor(data).shape[1])
        kind = options.pop("kind", "undercomplete")
        defaults = {"dims": (d, 64) if kind == "deep" else d, "code_dim": min(8, max(1, d - 1)),
                    "likelihood": cls._likelihood_for(data)}
        return cls(kind=kind, **{**defaults, **options})

    @classmethod
    def example(cls, seed: int = 0) -> tuple["Autoencoder", torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        x = (torch.rand(24, 6, generator=g) < 0.4).float()
        return cls("undercomplete", dims=6, code_dim=2), x
