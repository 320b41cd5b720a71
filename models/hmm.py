"""Hidden Markov models: a chain of K discrete states, each emitting one observation.

    z_0 ~ Categorical(initial),  z_t | z_{t-1} ~ Categorical(transition[z_{t-1}]),
    x_t | z_t ~ Categorical(probs[z_t])                      (emission="categorical")
              | Normal(loc[z_t], diag(scale[z_t]^2))          (emission="gaussian", covariance="diag")
              | MultivariateNormal(loc[z_t], scale_tril[z_t]) (emission="gaussian", covariance="full")
              | Poisson(rate[z_t])                            (emission="poisson")

Reference: Rabiner (1989), "A tutorial on hidden Markov models and selected applications
in speech recognition", Proc. IEEE 77(2).

Data: a list of sequences ((T_i,) symbols / counts, or (T_i, D) observations), one
tensor ((T,) / (T, D): one sequence; (B, T) / (B, T, D): B sequences of equal length), or a
`Sequences` (a padded tensor plus ``lengths``): ``Sequences(x_padded, lengths)``.
``check_data`` turns all of these into a ``Sequences``.
"""
from __future__ import annotations

import math
from typing import Any

import networkx as nx
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints

from probgen.data import as_tensor, check_labels, clamp_to_labels, finite_sum, has_missing
from probgen.declarations import Program
from probgen.ops import chain
from probgen.ops import gaussian_missing as gm
from probgen.ops.chain import EmissionTable, Sequences
from probgen.ops.gaussian import kmeans_resp
from probgen.random import generator

__all__ = ["HMM", "Sequences"]

EMISSIONS = ("categorical", "gaussian", "poisson")
_CONSTRAINTS = {"initial": constraints.simplex, "transition": constraints.simplex,
                "probs": constraints.simplex, "loc": constraints.real,
                "scale": constraints.positive, "scale_tril": constraints.lower_cholesky,
                "rate": constraints.positive}


class HMM(Program):
    """A hidden Markov model with ``k`` states, as a vectorised Pyro program.

    Args:
      k: number of hidden states K.
      emission: ``"categorical"`` (needs ``n_symbols`` V), ``"gaussian"`` (needs ``dim`` D)
        or ``"poisson"``.
      dim: observation dimension D for Gaussian emissions.
      covariance: ``"diag"`` (parameter ``scale`` (K, D)) or ``"full"`` (``scale_tril``
        (K, D, D), the lower Cholesky factor of each state's covariance).
      n_symbols: alphabet size V for categorical emissions (symbols 0..V-1).
      bayesian: conjugate priors on the parameters (categorical and Gaussian emissions), fitted
        by variational Bayes (the ``meanfield`` engine, then the default; Beal 2003, ch. 3):

          initial ~ Dirichlet(initial_prior)              default 1/K each
          transition[i] ~ Dirichlet(transition_prior[i])  default 1/K each
          probs[k] ~ Dirichlet(probs_prior[k])            default 1/V each
          Gaussian, full:  Λ_k ~ Wishart(ν₀, W₀),  loc_k | Λ_k ~ Normal(m₀, (β₀ Λ_k)⁻¹)
          Gaussian, diag:  λ_kd ~ Gamma(ν₀/2, rate = w₀_d/2),  loc_kd | λ_kd ~ Normal(m₀_d, 1/(β₀ λ_kd))

        with ν₀ = ``degrees_of_freedom_prior`` (default D), W₀⁻¹ = ``covariance_prior`` ((D, D)
        full, (D,) diag, or per state (K, D, D) / (K, D); default 10⁻³ I), m₀ = ``mean_prior``
        ((D,) or (K, D); default the data mean) and β₀ = ``mean_precision_prior`` (default 1):
        hmmlearn's ``VariationalCategoricalHMM`` / ``VariationalGaussianHMM`` priors and defaults
        (their ``startprob_prior``, ``transmat_prior``, ``emissionprob_prior``, ``dof_prior``,
        ``scale_prior``, ``means_prior``, ``beta_prior``). Scalars are repeated;
        `prior_hyperparameters` returns the values in use.

    Parameters (``Fit.params``): ``initial`` (K,), ``transition`` (K, K) (rows sum to 1),
    and ``probs`` (K, V) | ``loc`` (K, D) with ``scale`` (K, D) or ``scale_tril`` (K, D, D)
    | ``rate`` (K,) (for a Bayesian HMM, their posterior means: E[Λ_k]⁻¹ for the covariance).

    Missing observations: NaN (or −1 among integer symbols) marks a missing step, or, for
    Gaussian emissions, missing dimensions of a step. A missing step's emission
    log-likelihood is 0 (it is summed out), a partly missing Gaussian step's the exact
    marginal of its observed dimensions; Baum–Welch's M-step takes the conditional
    expectations of the missing dimensions (Ghahramani & Jordan 1994). A sequence with
    every step missing is refused.

    Fitted by Baum–Welch EM (Rabiner 1989), variational Bayes (``bayesian=True``), the generic
    SVI and NUTS; queries (``"map"``: Viterbi paths, ``"marginals"``: forward–backward) are exact.

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import HMM
        >>> model, seqs = HMM.example(seed=0)  # 2 states, 3 symbols; sequences of lengths 6, 4, 5
        >>> [len(s) for s in seqs]
        [6, 4, 5]
        >>> fit = pg.fit(HMM(2, n_symbols=3), seqs, steps=5, seed=0, progress=False)
        >>> fit.method, fit.params["transition"].shape, fit.params["probs"].shape
        ('baum-welch', torch.Size([2, 2]), torch.Size([2, 3]))
        >>> fit.log_prob(seqs).shape  # one log-likelihood per sequence
        torch.Size([3])
        >>> pg.infer(fit, seqs, query="map").shape  # Viterbi paths, padded to the longest
        torch.Size([3, 6])
    """

    short_name = "hmm"
    default_engine = "em"
    default_dataset = "sunspots"
    _repr_fields = ("k", "emission", "dim", "covariance", "n_symbols", "bayesian")

    def __init__(self, k: int, emission: str = "categorical", dim: int | None = None,
                 covariance: str = "diag", n_symbols: int | None = None, bayesian: bool = False, *,
                 initial_prior: Any = None, transition_prior: Any = None, probs_prior: Any = None,
                 mean_prior: Any = None, mean_precision_prior: Any = None, degrees_of_freedom_prior: Any = None,
                 covariance_prior: Any = None):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k (number of states) must be a positive integer, got {k!r}")
        if emission not in EMISSIONS:
            raise ValueError(f"emission must be one of {list(EMISSIONS)}, got {emission!r}")
        if covariance not in ("diag", "full"):
            raise ValueError(f"covariance must be 'diag' or 'full', got {covariance!r}")
        if emission == "categorical" and (not isinstance(n_symbols, int) or n_symbols < 1):
            raise ValueError(f"categorical emissions need n_symbols (a positive integer), got {n_symbols!r}")
        if emission == "gaussian":
            dim = 1 if dim is None else dim
            if not isinstance(dim, int) or dim < 1:
                raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.k, self.emission, self.dim = k, emission, dim if emission == "gaussian" else None
        self.covariance = covariance if emission == "gaussian" else None
        self.n_symbols = n_symbols if emission == "categorical" else None
        self._init_priors(bool(bayesian), initial_prior=initial_prior, transition_prior=transition_prior,
                          probs_prior=probs_prior, mean_prior=mean_prior, mean_precision_prior=mean_precision_prior,
                          degrees_of_freedom_prior=degrees_of_freedom_prior, covariance_prior=covariance_prior)

    # ---- priors of the Bayesian HMM (bayesian=True) ------------------------------------
    _PRIOR_NAMES = {"categorical": ("initial_prior", "transition_prior", "probs_prior"),
                    "gaussian": ("initial_prior", "transition_prior", "mean_prior", "mean_precision_prior",
                                 "degrees_of_freedom_prior", "covariance_prior")}

    def _init_priors(self, bayesian: bool, **given: Any) -> None:
        self.bayesian = bayesian
        set_ = sorted(n for n, v in given.items() if v is not None)
        if not bayesian and set_:
            raise ValueError(f"{set_} are priors of a Bayesian HMM: pass bayesian=True")
        if bayesian:
            if self.emission not in self._PRIOR_NAMES:
                raise ValueError("bayesian=True needs categorical or gaussian emissions (variational Bayes), "
                                 f"not {self.emission!r}")
            wrong = sorted(set(set_) - set(self._PRIOR_NAMES[self.emission]))
            if wrong:
                raise ValueError(f"{wrong} are not priors of a {self.emission} HMM; its priors: "
                                 f"{list(self._PRIOR_NAMES[self.emission])}")
            # VB is its method: Baum–Welch, and the generic SVI / NUTS on the (maximum-likelihood)
            # program, would ignore these priors
            self.default_engine, self.generic_inference = "meanfield", False
        self._priors = {n: None if v is None else torch.as_tensor(v, dtype=torch.float64) for n, v in given.items()}
        if bayesian:
            self.prior_hyperparameters()  # shapes and signs checked now (the data mean is filled in later)

    def prior_hyperparameters(self, data: Any = None) -> dict[str, torch.Tensor]:
        """The priors of a Bayesian HMM as float64 tensors of full shape: ``initial_prior``
        (K,), ``transition_prior`` (K, K) and ``probs_prior`` (K, V) | ``mean_prior`` (K, D)
        (the mean of ``data``'s steps where not given; zeros without data),
        ``mean_precision_prior`` (K,), ``degrees_of_freedom_prior`` (K,),
        ``covariance_prior`` (K, D, D) full / (K, D) diag (W₀⁻¹). ``ValueError`` for a wrong
        shape or a non-positive value."""
        if not self.bayesian:
            raise ValueError("this HMM has no priors (bayesian=False)")
        K, h = self.k, self._priors
        D = self.dim

        def full(name: str, default: Any, shapes: list[tuple], want: tuple, positive: bool = True) -> torch.Tensor:
            v = h[name] if h[name] is not None else torch.as_tensor(default, dtype=torch.float64)
            if tuple(v.shape) not in [()] + shapes:
                raise ValueError(f"{name} must be a scalar or have shape "
                                 f"{' or '.join(str(s) for s in shapes)}, got {tuple(v.shape)}")
            if not torch.isfinite(v).all() or (positive and not (v > 0).all()):
                raise ValueError(f"{name} must be finite" + (" and positive" if positive else ""))
            return v.expand(want).clone()

        out = {"initial_prior": full("initial_prior", 1.0 / K, [(K,)], (K,)),
               "transition_prior": full("transition_prior", 1.0 / K, [(K, K)], (K, K))}
        if self.emission == "categorical":
            V = self.n_symbols
            out["probs_prior"] = full("probs_prior", 1.0 / V, [(K, V)], (K, V))
            return out
        mean = torch.zeros(D, dtype=torch.float64)
        if data is not None and h["mean_prior"] is None:
            mean = self.check_data(data).flat().mean(0)
        out["mean_prior"] = full("mean_prior", mean, [(D,), (K, D)], (K, D), positive=False)
        out["mean_precision_prior"] = full("mean_precision_prior", 1.0, [(K,)], (K,))
        nu = full("degrees_of_freedom_prior", float(D), [(K,)], (K,))
        if self.covariance == "full":
            if not (nu > D - 1).all():
                raise ValueError(f"degrees_of_freedom_prior must exceed dim - 1 = {D - 1}, got {nu.tolist()}")
            eye = 1e-3 * torch.eye(D, dtype=torch.float64)
            w = full("covariance_prior", eye, [(D, D), (K, D, D)], (K, D, D), positive=False)
            if not torch.allclose(w, w.transpose(-1, -2)) or bool((torch.linalg.eigvalsh(w) <= 0).any()):
                raise ValueError("covariance_prior must be symmetric positive definite")
        else:
            w = full("covariance_prior", 1e-3, [(D,), (K, D)], (K, D))
        out["degrees_of_freedom_prior"], out["covariance_prior"] = nu, w
        return out

    # ---- facts -------------------------------------------------------------------------
    @property
    def param_names(self) -> tuple[str, ...]:
        """The parameter names, in order (those of `param_shapes`)."""
        return tuple(self.param_shapes())

    def num_free_params(self, params: dict | None = None) -> int:
        """The number of free parameters (for BIC / AIC, `probgen.select`): K − 1
        initial and K (K − 1) transition probabilities, and K (V − 1) symbol probabilities |
        K D means with K D (diag) or K D(D+1)/2 (full) covariance entries | K rates (hmmlearn's
        ``_get_n_fit_scalars_per_param`` counts the same)."""
        if self.bayesian:
            raise ValueError("a Bayesian HMM (bayesian=True) has no number of free parameters: its parameters "
                             "are latent; compare such fits by their ELBO instead")
        K = self.k
        if self.emission == "categorical":
            em = K * (self.n_symbols - 1)
        elif self.emission == "poisson":
            em = K
        else:
            D = self.dim
            em = K * D + (K * D * (D + 1) // 2 if self.covariance == "full" else K * D)
        return (K - 1) + K * (K - 1) + em

    @property
    def event_ndim(self) -> int:
        """The number of event dimensions of one step: 1 for Gaussian emissions (a vector), else 0."""
        return 1 if self.emission == "gaussian" else 0

    @property
    def _expected(self) -> str:
        return "(T_i, %d)" % self.dim if self.emission == "gaussian" else "(T_i,)"

    # ---- data --------------------------------------------------------------------------
    def check_data(self, data: Any) -> Sequences:
        """A `Sequences` (padded batch + lengths) for ``data``; ``ValueError`` on a
        wrong dimension, NaN / inf, zero-length sequences, symbols outside
        ``0..n_symbols-1`` or negative / non-integer Poisson counts."""
        if data is None:
            raise ValueError(f"HMM needs data: a list of sequences of shape {self._expected}")
        ev = f", {self.dim}" if self.emission == "gaussian" else ""
        if isinstance(data, Sequences):
            x, lengths = _as_numbers(data.x, self.emission), torch.as_tensor(data.lengths)
            if lengths.dim() != 1 or len(lengths) != x.shape[0] or len(lengths) == 0:
                raise ValueError(f"lengths must have shape (B,) matching the padded data's first "
                                 f"dimension {x.shape[0]}, got {tuple(lengths.shape)}")
            if x.dim() != 2 + self.event_ndim or (lengths > x.shape[1]).any():
                raise ValueError(f"padded sequences must have shape (B, T{ev}) with lengths <= T, "
                                 f"got {tuple(x.shape)}")
            return self._check_padded(x, lengths.long())
        if isinstance(data, (list, tuple)):
            if len(data) == 0:
                raise ValueError(f"no sequences: expected a list of arrays of shape {self._expected}")
            seqs = [self._shape_one(as_tensor(s, name=f"sequence {i}"), i) for i, s in enumerate(data)]
            lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
            if (lengths == 0).all():
                raise ValueError("every sequence has length zero")
            x = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True)
            return self._check_padded(x, lengths)
        t = _as_numbers(data, self.emission)
        if self.emission == "gaussian" and self.dim == 1 and t.dim() == 1:
            t = t[:, None]
        if t.dim() == 1 + self.event_ndim:
            t = t[None]
        if t.dim() != 2 + self.event_ndim:
            raise ValueError(f"sequences must have shape {self._expected} (one), (B, T{ev}) (several of "
                             f"equal length) or be a list of arrays; got shape {tuple(t.shape)}")
        if self.emission == "gaussian" and t.shape[-1] != self.dim:
            raise ValueError(f"sequences must have shape (T_i, {self.dim}) or (B, T, {self.dim}), "
                             f"got shape {tuple(t.shape)}")
        return self._check_padded(t, torch.full((t.shape[0],), t.shape[1], dtype=torch.long))

    def _shape_one(self, s: torch.Tensor, i: int) -> torch.Tensor:
        if self.emission == "gaussian" and self.dim == 1 and s.dim() == 1:
            s = s[:, None]
        if s.dim() != 1 + self.event_ndim or (self.emission == "gaussian" and s.shape[-1] != self.dim):
            raise ValueError(f"sequence {i} must have shape {self._expected}, got shape {tuple(s.shape)}")
        return s

    def _check_padded(self, x: torch.Tensor, lengths: torch.Tensor) -> Sequences:
        """Vectorised checks of the valid steps of a padded batch; padding is set to 0."""
        if (lengths < 1).any():
            i = int((lengths < 1).nonzero()[0])
            raise ValueError(f"sequence {i} has length zero (zero-length sequence); every sequence needs "
                             "at least one step")
        if bool((lengths != x.shape[1]).any()):
            mask = chain.pad_mask(lengths, x.shape[1])
            x = torch.where(mask if x.dim() == 2 else mask[..., None], x, torch.zeros((), dtype=x.dtype))

        def first(bad: torch.Tensor) -> int:
            return int(bad.reshape(len(bad), -1).any(-1).nonzero()[0])

        nan = None
        if x.is_floating_point() and not finite_sum(x):
            if torch.isinf(x).any():
                raise ValueError(f"sequence {first(torch.isinf(x))} contains inf values")
            nan = torch.isnan(x)                                         # missing observations
            if not nan.any():
                nan = None
        if self.emission == "categorical" and not x.is_floating_point() and bool((x == -1).any()):
            nan = x == -1                                                # missing symbols, as integers
        if nan is not None:
            step_missing = nan if nan.dim() == 2 else nan.all(-1)
            whole = (step_missing | ~chain.pad_mask(lengths, x.shape[1])).all(1)
            if whole.any():
                raise ValueError(f"sequence {int(whole.nonzero()[0])} is entirely missing (every step NaN); "
                                 "drop it: it carries no information")
        if self.emission == "gaussian":
            return Sequences(x.to(torch.float64), lengths)
        # (integer tensors, the usual input for symbols and counts, skip the float checks)
        bad = ((x != torch.round(x)) | (x < 0)) if x.is_floating_point() else (x < 0)
        if nan is not None:
            bad &= ~nan
        if bad.any():
            what = "symbols" if self.emission == "categorical" else "Poisson counts"
            raise ValueError(f"sequence {first(bad)}: {what} must be non-negative integers")
        if self.emission == "categorical":
            if nan is not None:  # missing symbols are −1 in the long tensor
                x = torch.where(nan, torch.full((), -1, dtype=x.dtype), x)
            if int(x.max()) >= self.n_symbols:
                raise ValueError(f"sequence {first(x >= self.n_symbols)} has symbol {int(x.max())} outside "
                                 f"0..{self.n_symbols - 1} (n_symbols={self.n_symbols})")
            return Sequences(x.to(torch.long), lengths)
        return Sequences(x.to(torch.float64), lengths)

    def check_labels(self, labels: Any, data: Sequences) -> torch.Tensor:
        """Partial state labels as a (B, T) long tensor (−1 = unknown, and on padded steps):
        from a list of (T_i,) arrays, one per sequence, or a (B, T) / (T,) array."""
        B, T = data.x.shape[:2]
        if isinstance(labels, (list, tuple)):
            if len(labels) != B:
                raise ValueError(f"labels must give one array per sequence ({B}), got {len(labels)}")
            out = torch.full((B, T), -1, dtype=torch.long)
            for b, (lab, n) in enumerate(zip(labels, data.lengths.tolist())):
                out[b, :n] = check_labels(lab, (n,), self.k, name=f"labels[{b}]")
            return out
        t = torch.as_tensor(labels) if not isinstance(labels, np.ndarray) else torch.from_numpy(labels)
        if t.dim() == 1 and B == 1:
            t = t[None]
        out = check_labels(t, (B, T), self.k)
        return out.masked_fill(~data.mask, -1)

    # ---- exact evaluation --------------------------------------------------------------
    def log_emission(self, params: dict[str, torch.Tensor], data: Sequences) -> torch.Tensor:
        """log p(x_t | z_t = k) for every step: (B, T, K) (padded steps hold finite junk),
        the view of a state-major (K, T, B) buffer (`emission_table`, dense)."""
        return self.emission_table(params, data).dense()

    def emission_table(self, params: dict[str, torch.Tensor], data: Sequences,
                       labels: torch.Tensor | None = None) -> EmissionTable:
        """The emission log-likelihoods as the chain kernels read them: categorical
        emissions as the (K, V) table ``log probs`` indexed by the symbols (nothing of size
        B T K is written); others as one column per step of a (K, T B) table. Gaussian
        log-densities are two matrix products of per-state coefficients with per-step
        features (the quadratic form expanded: (x − μ_k)ᵀ P_k (x − μ_k) = xxᵀ·P_k − 2 xᵀ P_k μ_k
        + μ_kᵀ P_k μ_k, P_k = Σ_k⁻¹), so the (K, T B) output is written once.

        Missing observations contribute 0 (a missing step) or the marginal of the observed
        dimensions. ``labels`` (B, T) (−1 = unknown): a labelled step's other states get
        −inf, so the chain kernels compute log p(x, labels) and the clamped posteriors."""
        table = self._emission_table(params, data) if not data.any_missing else self._missing_table(params, data)
        if labels is None:
            return table
        B, T = table.shape
        cols = table.table if table.index is None else table.table[:, table.index.reshape(-1)]
        clamp_to_labels(cols.T, labels.t().reshape(-1))                          # (T B, K) view
        return EmissionTable(cols, None, (B, T))

    def _missing_table(self, params: dict[str, torch.Tensor], data: Sequences) -> EmissionTable:
        """The emission table of data with missing observations (see emission_table)."""
        B, T = data.x.shape[:2]
        if self.emission == "categorical":
            logp = torch.log(params["probs"])
            table = torch.cat([logp, logp.new_zeros(len(logp), 1)], 1)           # column V: log 1
            return EmissionTable(table, self._symbol_index(data).view(T, B), (B, T))
        if self.emission == "poisson":
            x = data.columns()
            miss = torch.isnan(x)
            x0, rate = x.masked_fill(miss, 0.0), params["rate"][:, None]
            return EmissionTable((x0 * torch.log(rate) - rate - torch.lgamma(x0 + 1)).masked_fill_(miss, 0.0),
                                 None, (B, T))
        xf = data.columns()                                                     # (D, T B), NaN where missing
        obs = ~torch.isnan(xf)
        loc = params["loc"]
        if self.covariance == "full":
            cov = gm.covariance_matrices(params["scale_tril"], "full", self.dim)
            out = gm.marginal_log_gaussian(xf.T, loc, cov).T.contiguous()        # (K, T B)
            return EmissionTable(out, None, (B, T))
        # diagonal: each observed dimension adds its own term; as the complete-data table
        # with the missing cells' features zeroed and the constant summed over observed dims
        prec = params["scale"] ** -2                                            # (K, D)
        x0 = xf.masked_fill(~obs, 0.0)
        per_dim = -0.5 * loc * loc * prec - torch.log(params["scale"]) - 0.5 * math.log(2 * math.pi)  # (K, D)
        out = per_dim @ obs.to(x0.dtype)
        out.addmm_(-0.5 * prec, x0 * x0).addmm_(loc * prec, x0)
        return EmissionTable(out, None, (B, T))

    def _symbol_index(self, data: Sequences) -> torch.Tensor:
        """The symbols in (t, b) order with missing ones (−1) mapped to column V."""
        cols = data.columns()
        return torch.where(cols < 0, torch.full((), self.n_symbols, dtype=cols.dtype), cols)

    def _emission_table(self, params: dict[str, torch.Tensor], data: Sequences) -> EmissionTable:
        """The emission table of complete data."""
        B, T = data.x.shape[:2]
        if self.emission == "categorical":
            # the symbols in (t, b) order, kept by the Sequences: no copy per EM iteration
            return EmissionTable(torch.log(params["probs"]), data.columns().view(T, B), (B, T))
        if self.emission == "poisson":
            x, rate = data.columns(), params["rate"][:, None]
            return EmissionTable(x * torch.log(rate) - rate - torch.lgamma(x + 1), None, (B, T))
        loc = params["loc"]
        K, D = loc.shape
        xf = data.columns()                                                     # (D, T B)
        if self.covariance == "full":
            L = params["scale_tril"]
            eye = torch.eye(D, dtype=L.dtype, device=L.device).expand_as(L)
            Linv = torch.linalg.solve_triangular(L, eye, upper=False)            # (K, D, D)
            P = Linv.transpose(1, 2) @ Linv                                      # (K, D, D)
            Pmu = (P @ loc[..., None])[..., 0]                                   # (K, D)
            quad = (xf[:, None] * xf[None, :]).reshape(D * D, -1)                # (D², T B)
            coef_quad = P.reshape(K, D * D)
            log_det = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        else:
            prec = params["scale"] ** -2                                         # (K, D)
            Pmu = loc * prec
            quad, coef_quad = xf * xf, prec
            log_det = torch.log(params["scale"]).sum(-1)
        const = -0.5 * (loc * Pmu).sum(-1) - log_det - 0.5 * D * math.log(2 * math.pi)   # (K,)
        out = torch.addmm(const[:, None], -0.5 * coef_quad, quad)                # (K, T B)
        return EmissionTable(out.addmm_(Pmu, xf), None, (B, T))

    def log_prob(self, params: dict[str, torch.Tensor], data: Any) -> torch.Tensor:
        """Exact log p(x) per sequence (B,): the log-space forward algorithm."""
        data = self.check_data(data)
        params = _as64(params)
        return chain.log_evidence(params["initial"], params["transition"],
                                  self.log_emission(params, data), data.lengths)

    def m_step_missing(self, data: Sequences, gk: torch.Tensor, params: dict[str, torch.Tensor],
                       min_covar: float) -> dict[str, torch.Tensor]:
        """Emission M-step of data with missing observations: ``gk`` (K, T B) the posterior
        state weights in (t, b) column order, ``params`` the E-step's (the conditional
        moments of missing Gaussian dimensions need them). Missing symbols and counts are
        left out of their counts; Gaussian statistics use E[x | x_o, k] and
        E[x xᵀ | x_o, k] (Ghahramani & Jordan 1994)."""
        tiny = torch.finfo(gk.dtype).tiny
        if self.emission == "categorical":
            V = self.n_symbols
            counts = torch.zeros(len(gk), V + 1, dtype=gk.dtype).index_add_(1, self._symbol_index(data), gk)[:, :V]
            return {"probs": counts / counts.sum(-1, keepdim=True).clamp(min=tiny)}
        if self.emission == "poisson":
            x = data.columns()
            obs = ~torch.isnan(x)
            return {"rate": (gk @ x.masked_fill(~obs, 0.0)) / (gk @ obs.to(gk.dtype)).clamp(min=tiny)}
        X = data.columns().T                                                    # (T B, D)
        D = self.dim
        f = params["scale_tril"] if self.covariance == "full" else params["scale"]
        cov = gm.covariance_matrices(f, self.covariance, D)
        center = torch.nanmean(data.flat(), 0)
        nk, first, second = gm.expected_moments(X, params["loc"], cov, gk.T, center=center)
        safe = nk.clamp(min=tiny)
        mean_c = first / safe[:, None]
        cov = second / safe[:, None, None] - mean_c[:, :, None] * mean_c[:, None, :]
        new = {"loc": mean_c + center}
        if self.covariance == "full":
            cov = 0.5 * (cov + cov.transpose(-1, -2)) + min_covar * torch.eye(D, dtype=gk.dtype)
            new["scale_tril"] = torch.linalg.cholesky(cov)
        else:
            new["scale"] = (torch.diagonal(cov, dim1=-2, dim2=-1).clamp(min=0) + min_covar).sqrt()
        return new

    def impute(self, params: dict[str, torch.Tensor], data: Sequences, gamma: torch.Tensor) -> torch.Tensor:
        """The padded observations (B, T) / (B, T, D) with the missing ones filled, given the
        posterior state marginals ``gamma`` (B, T, K): Gaussian cells by their conditional
        means Σ_k γ_tk E[x_m | x_o, k]; a missing symbol by its most probable value
        argmax_v Σ_k γ_tk probs[k, v]; a missing count by its most probable value under
        the posterior mixture of Poissons."""
        params = _as64(params)
        x = data.x.clone()
        B, T = x.shape[:2]
        if self.emission == "categorical":
            pred = (gamma @ params["probs"]).argmax(-1)                         # (B, T)
            return torch.where(x < 0, pred, x)
        if self.emission == "poisson":
            miss = torch.isnan(x)
            rate = params["rate"]
            top = int(rate.max() + 10 * rate.max().sqrt() + 10)                  # beyond every mode
            c = torch.arange(top + 1, dtype=torch.float64)
            logpmf = c[:, None] * torch.log(rate) - rate - torch.lgamma(c + 1)[:, None]  # (C, K)
            pred = (gamma @ logpmf.exp().T).argmax(-1).to(x.dtype)              # (B, T)
            return torch.where(miss, pred, x)
        X = x.reshape(B * T, -1)
        cov = gm.covariance_matrices(params["scale_tril"] if self.covariance == "full" else params["scale"],
                                     self.covariance, self.dim)
        out = gm.conditional_means(X, params["loc"], cov, gamma.reshape(B * T, -1))
        return out.reshape(x.shape)

    def sample(self, params: dict[str, torch.Tensor], n: int, seed: int | None = None,
               T: int = 50, return_states: bool = False) -> Any:
        """``n`` sequences of length ``T`` by ancestral sampling: (n, T) or (n, T, D)
        (and the hidden states (n, T) when ``return_states``)."""
        g = generator(seed)
        p = _as64(params)
        z = torch.empty(n, T, dtype=torch.long)
        z[:, 0] = torch.multinomial(p["initial"], n, replacement=True, generator=g)
        for t in range(1, T):
            z[:, t] = torch.multinomial(p["transition"][z[:, t - 1]], 1, generator=g)[:, 0]
        flat = z.reshape(-1)
        if self.emission == "categorical":
            x = torch.multinomial(p["probs"][flat], 1, generator=g)[:, 0]
        elif self.emission == "poisson":
            x = torch.poisson(p["rate"][flat], generator=g)
        else:
            eps = torch.randn(len(flat), self.dim, generator=g, dtype=torch.float64)
            if self.covariance == "full":
                x = p["loc"][flat] + (p["scale_tril"][flat] @ eps[..., None])[..., 0]
            else:
                x = p["loc"][flat] + p["scale"][flat] * eps
        x = x.reshape(n, T, self.dim) if self.emission == "gaussian" else x.reshape(n, T)
        return (x, z) if return_states else x

    # ---- initialisation ---------------------------------------------------------------
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The parameters' names and shapes: ``initial`` (K,), ``transition`` (K, K) and the
        emission's — ``probs`` (K, V), ``rate`` (K,), ``loc`` (K, D) with ``scale_tril``
        (K, D, D) (full) or ``scale`` (K, D)."""
        K = self.k
        shapes = {"initial": (K,), "transition": (K, K)}
        if self.emission == "categorical":
            shapes["probs"] = (K, self.n_symbols)
        elif self.emission == "poisson":
            shapes["rate"] = (K,)
        elif self.covariance == "full":
            shapes.update(loc=(K, self.dim), scale_tril=(K, self.dim, self.dim))
        else:
            shapes.update(loc=(K, self.dim), scale=(K, self.dim))
        return shapes

    def init_params(self, data: Any = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Random starting parameters: uniform ``initial``, a sticky random ``transition``;
        for Gaussians the k-means centres of the steps (k-means++ seeding, Arthur & Vassilvitskii
        2007; hmmlearn starts from k-means too) as means and the data's spread as scales. Random
        data points as means often put two states on one cluster, where Baum–Welch stays
        (benchmarks/recovery.py)."""
        g = generator(seed)
        K = self.k
        p = {"initial": torch.full((K,), 1.0 / K, dtype=torch.float64)}
        tr = torch.rand(K, K, generator=g, dtype=torch.float64) + K * torch.eye(K, dtype=torch.float64)
        p["transition"] = tr / tr.sum(-1, keepdim=True)
        flat = self.check_data(data).flat() if data is not None else None
        if flat is not None and flat.is_floating_point() and has_missing(flat):  # the start only
            fill = torch.nanmean(flat, 0)
            flat = torch.where(torch.isnan(flat), fill, flat)
            flat = flat[~torch.isnan(flat).reshape(len(flat), -1).any(1)]
        if self.emission == "categorical":
            pr = 0.5 + torch.rand(K, self.n_symbols, generator=g, dtype=torch.float64)
            p["probs"] = pr / pr.sum(-1, keepdim=True)
        elif self.emission == "poisson":
            mean = float(flat.mean()) if flat is not None else 1.0
            p["rate"] = max(mean, 1e-3) * (0.5 + torch.rand(K, generator=g, dtype=torch.float64))
        else:
            D = self.dim
            if flat is not None and len(flat) >= 1:
                if len(flat) > K:  # k-means (k-means++ seeded) centres, as hmmlearn starts its means
                    resp = kmeans_resp(flat, K, g)
                    counts = resp.sum(0)
                    loc = (resp.T @ flat) / counts.clamp_min(1).unsqueeze(1)
                    empty = counts == 0
                    loc[empty] = flat[torch.randint(len(flat), (int(empty.sum()),), generator=g)]
                else:  # as many steps as states or fewer: the steps themselves, repeated
                    loc = flat[torch.arange(K) % len(flat)]
                var = flat.var(0) if len(flat) > 1 else torch.ones(D, dtype=torch.float64)
                var = torch.where(var > 0, var, torch.ones_like(var))
                loc = loc + 1e-3 * var.sqrt() * torch.randn(K, D, generator=g, dtype=torch.float64)
                cov = torch.cov(flat.t()).reshape(D, D) if len(flat) > 1 else torch.eye(D, dtype=torch.float64)
            else:
                loc = torch.randn(K, D, generator=g, dtype=torch.float64)
                var, cov = torch.ones(D, dtype=torch.float64), torch.eye(D, dtype=torch.float64)
            p["loc"] = loc
            if self.covariance == "full":
                cov = cov + 1e-6 * cov.diagonal().mean().clamp(min=1e-12) * torch.eye(D, dtype=torch.float64)
                p["scale_tril"] = torch.linalg.cholesky(cov).expand(K, D, D).clone()
            else:
                p["scale"] = var.sqrt().expand(K, D).clone()
        return p

    # ---- the Pyro program ---------------------------------------------------------------
    def program(self, data: Any = None) -> None:
        """The HMM as a Pyro program over a padded batch: a ``pyro.plate`` over sequences,
        ``pyro.markov`` over time, padded steps masked out. States are enumerable."""
        if data is None:
            raise ValueError("the HMM program needs data (a Sequences batch)")
        data = data if isinstance(data, Sequences) else self.check_data(data)
        defaults: dict = {}

        def default(name: str):
            if not defaults:
                defaults.update(self.init_params(data, seed=0))
            return defaults[name]

        p = {n: pyro.param(n, lambda n=n: default(n), constraint=_CONSTRAINTS[n]) for n in self.param_names}
        x, mask = data.x, data.mask
        with pyro.plate("sequences", len(data.lengths), dim=-1):
            z = None
            for t in pyro.markov(range(x.shape[1])):
                probs = p["initial"] if z is None else p["transition"][z]
                with poutine.mask(mask=mask[:, t]):
                    z = pyro.sample(f"z_{t}", dist.Categorical(probs), infer={"enumerate": "parallel"})
                    pyro.sample(f"x_{t}", self._emission_dist(p, z), obs=x[:, t])

    def _emission_dist(self, p: dict, z: torch.Tensor):
        if self.emission == "categorical":
            return dist.Categorical(p["probs"][z])
        if self.emission == "poisson":
            return dist.Poisson(p["rate"][z])
        if self.covariance == "full":
            return dist.MultivariateNormal(p["loc"][z], scale_tril=p["scale_tril"][z])
        return dist.Normal(p["loc"][z], p["scale"][z]).to_event(1)

    def priors(self) -> dict[str, Any]:
        """Priors for a Bayesian HMM (used when NUTS lifts the parameters): flat Dirichlet
        rows for ``initial``, ``transition`` and ``probs``; Normal(0, 10) means, LogNormal(0, 2)
        scales, Gamma(1, 0.1) rates. Full covariances have no prior here (use diag)."""
        K = self.k
        one = lambda *s: torch.ones(*s, dtype=torch.float64)  # noqa: E731
        pr = {"initial": dist.Dirichlet(one(K)), "transition": dist.Dirichlet(one(K, K)).to_event(1)}
        if self.emission == "categorical":
            pr["probs"] = dist.Dirichlet(one(K, self.n_symbols)).to_event(1)
        elif self.emission == "poisson":
            pr["rate"] = dist.Gamma(one(K), 0.1 * one(K)).to_event(1)
        else:
            pr["loc"] = dist.Normal(0 * one(K, self.dim), 10.0).to_event(2)
            if self.covariance == "diag":
                pr["scale"] = dist.LogNormal(0 * one(K, self.dim), 2.0).to_event(2)
        return pr

    # ---- structure ---------------------------------------------------------------------
    def structure(self, *args: Any, params: bool = False, T: int = 4, **options: Any) -> nx.DiGraph:
        """The chain unrolled over ``T`` steps: latent ``z_t`` → ``z_{t+1}``, ``z_t`` → observed
        ``x_t``, all inside the ``sequences`` plate (with ``params=True``, parameter nodes)."""
        if options:
            raise ValueError(f"unknown structure options {sorted(options)}; known: T, params")
        if not isinstance(T, int) or T < 1:
            raise ValueError(f"T must be a positive integer, got {T!r}")
        g = nx.DiGraph()
        em = {"categorical": "Categorical", "poisson": "Poisson"}.get(
            self.emission, "MultivariateNormal" if self.covariance == "full" else "Normal")
        for t in range(T):
            g.add_node(f"z_{t}", kind="latent", distribution="Categorical", plates=("sequences",))
            g.add_node(f"x_{t}", kind="observed", distribution=em, plates=("sequences",))
            g.add_edge(f"z_{t}", f"x_{t}", directed=True)
            if t:
                g.add_edge(f"z_{t - 1}", f"z_{t}", directed=True)
        if params:
            for name in self.param_names:
                g.add_node(name, kind="param", plates=())
            g.add_edge("initial", "z_0", directed=True)
            for t in range(1, T):
                g.add_edge("transition", f"z_{t}", directed=True)
            for name in self.param_names[2:]:
                for t in range(T):
                    g.add_edge(name, f"x_{t}", directed=True)
        n = len(args[0]) if args and hasattr(args[0], "__len__") else None
        g.graph["plates"] = {"sequences": n}
        return g

    # ---- CLI / contract hooks ----------------------------------------------------------
    @classmethod
    def for_data(cls, data: Any, k: int = 3, **options: Any) -> "HMM":
        """Gaussian emissions for real-valued data (D from the data), categorical for
        integer symbols, unless ``emission=`` says otherwise."""
        if "emission" not in options:
            seqs = data.unpad() if isinstance(data, Sequences) else data if isinstance(data, list) else [data]
            t = torch.cat([as_tensor(s).reshape(len(as_tensor(s)), -1) for s in seqs])
            if bool((t == torch.round(t)).all()) and t.shape[1] == 1 and (t >= 0).all():
                options.update(emission="categorical", n_symbols=options.get("n_symbols", int(t.max()) + 1))
            else:
                options.update(emission="gaussian", dim=options.get("dim", t.shape[1]))
        return cls(k, **options)

    @classmethod
    def example(cls, seed: int = 0) -> tuple["HMM", list[torch.Tensor]]:
        """A 2-state, 3-symbol HMM and three short sequences of different lengths."""
        model = cls(2, "categorical", n_symbols=3)
        params = {"initial": torch.tensor([0.6, 0.4], dtype=torch.float64),
                  "transition": torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=torch.float64),
                  "probs": torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=torch.float64)}
        x = model.sample(params, 3, seed=seed, T=6)
        return model, [x[0], x[1, :4], x[2, :5]]

    @classmethod
    def load_named_data(cls, name: str) -> torch.Tensor | None:
        """``"sunspots"``: yearly sunspot numbers 1700–2008 (309,) (public domain, NOAA; the
        same series statsmodels bundles), shipped with probgen."""
        if name != "sunspots":
            return None
        from importlib import resources
        with resources.files("probgen").joinpath("datasets/sunspots.txt").open("r") as f:
            values = np.loadtxt(f, comments="#", delimiter=",")
        return torch.as_tensor(values[:, 1], dtype=torch.float64)


def _as_numbers(x: Any, emission: str) -> torch.Tensor:
    """Sequences data as a tensor: integer tensors stay integer for discrete emissions
    (symbols and counts), everything else becomes float64 (``ValueError`` if not numeric)."""
    if isinstance(x, torch.Tensor) and emission != "gaussian" and not (x.is_floating_point() or x.is_complex()):
        return x
    return as_tensor(x, name="sequences")


def _as64(params: dict) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v).to(torch.float64) for k, v in params.items()}
