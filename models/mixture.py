"""The Gaussian mixture, declared as a Pyro program.

    z_n ~ Categorical(weights)                       n = 1..N   (plate "data")
    x_n | z_n = k ~ Normal(loc_k, Σ_k)               Σ_k from scale_tril_k or scale_k

Reference: Bishop (2006), *Pattern Recognition and Machine Learning*, ch. 9 (EM) and
§10.2 (the Bayesian mixture with Dirichlet and Normal–Wishart priors).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints
from torch.distributions.constraint_registry import biject_to, transform_to

from probgen.data import check_labels, check_matrix, clamp_to_labels, has_missing
from probgen.declarations import Program
from probgen.ops import gaussian
from probgen.ops import gaussian_missing as gm
from probgen.random import generator


class GaussianMixture(Program):
    """A mixture of ``k`` Gaussians in ``dim`` dimensions.

    Args:
      k: number of components K.
      dim: data dimension D.
      covariance: ``"full"`` (parameter ``scale_tril`` ``(K, D, D)``, lower Cholesky factor
        of Σ_k), ``"diag"`` (``scale`` ``(K, D)``, standard deviations) or ``"spherical"``
        (``scale`` ``(K,)``).
      bayesian: when True the global parameters are latent sample sites with conjugate
        priors (below) instead of ``pyro.param`` sites.

    Parameters (``Fit.params``): ``weights`` ``(K,)`` (on the simplex), ``loc`` ``(K, D)``,
    and ``scale_tril`` or ``scale`` as above. Sample sites: ``z`` (the assignment, discrete,
    enumerated by the engines) and ``x`` (observed, ``(N, D)``).

    Priors (``bayesian=True``; hyperparameters named, and defaulted, exactly as in
    scikit-learn's ``BayesianGaussianMixture`` with
    ``weight_concentration_prior_type="dirichlet_distribution"``; ``None`` means "computed
    from the data" and `prior_hyperparameters` returns the values in use):

      weights ~ Dirichlet(weight_concentration_prior · 1_K)     default 1 / K
      Λ_k     ~ Wishart(ν₀ = degrees_of_freedom_prior, W₀ = covariance_prior⁻¹)
                default ν₀ = D, covariance_prior = the data covariance (ddof=1)
      loc_k   ~ Normal(mean_prior, (mean_precision_prior · Λ_k)⁻¹)
                default mean_prior = the data mean, mean_precision_prior = 1

    with Σ_k = Λ_k⁻¹ and the site ``scale_tril`` = chol(Σ_k) (the Wishart is carried to
    the Cholesky factor of Σ_k with its exact Jacobian, `CholeskyInverseWishart`, so
    the site keeps its public name and NUTS / autoguides work on it). ``"diag"`` uses one
    Wishart per dimension, i.e. precision_kd ~ Gamma(ν₀/2, rate = covariance_prior_d / 2)
    with ``covariance_prior`` a ``(D,)`` vector (default the per-dimension variances) and
    ``scale`` = precision^(-1/2); ``"spherical"`` the same with one precision per component
    and a scalar ``covariance_prior`` (default the mean variance). These are the conjugate
    Normal–Wishart (Normal–Gamma) pairs that a coordinate-ascent ``meanfield`` method
    updates in closed form.

    `priors` gives the same families as independent priors over the parameters of a
    plain mixture (``loc_k ~ Normal(mean_prior, covariance_prior / mean_precision_prior)``
    independent of Σ_k); the ``mcmc`` engine lifts a plain mixture's parameters to them.

    Hooks for the engines: `e_step` / `m_step` / `em_step` (EM), `responsibilities`
    (exact queries), `log_prob` (exact per-example log-likelihood), `impute`, `sample`.

    Missing values: NaN cells in ``x`` are missing (at random). The E-step, ``log_prob`` and
    the queries use each row's exact marginal over its observed cells; the M-step the
    conditional expectations of the missing cells, with the conditional-covariance
    correction (Ghahramani & Jordan 1994; `probgen.ops.gaussian_missing`). A row with
    every cell missing is refused. Partial labels (``labels``, −1 = unknown) clamp a row's
    component in the E-step.

    Fitted by EM (Dempster, Laird & Rubin 1977; Bishop 2006, §9.2), CAVI for ``bayesian=True``
    (Bishop 2006, §10.2), the generic SVI and NUTS.

    Examples:
        >>> import torch
        >>> import probgen as pg
        >>> from probgen.models import GaussianMixture
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.cat([torch.randn(50, 2, generator=g) - 3, torch.randn(50, 2, generator=g) + 3]).double()
        >>> fit = pg.fit(GaussianMixture(2, 2, covariance="diag"), x, steps=50, seed=0, progress=False)
        >>> {name: tuple(p.shape) for name, p in fit.params.items()}
        {'weights': (2,), 'loc': (2, 2), 'scale': (2, 2)}
        >>> sorted(fit.params["weights"].round(decimals=2).tolist())
        [0.5, 0.5]
        >>> pg.infer(fit, x[:3], query="map").shape  # each row's most probable component
        torch.Size([3])
    """

    short_name = "gmm"
    default_engine = "em"
    default_dataset = "iris"
    observed = ("x",)
    _repr_fields = ("k", "dim", "covariance", "bayesian")

    def __init__(self, k: int, dim: int, covariance: str = "full", bayesian: bool = False, *,
                 weight_concentration_prior: float | None = None, mean_prior: Any = None,
                 mean_precision_prior: float | None = None, degrees_of_freedom_prior: float | None = None,
                 covariance_prior: Any = None):
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k (the number of components) must be a positive integer, got {k!r}")
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if covariance not in gaussian.COVARIANCES:
            raise ValueError(f"covariance must be one of {list(gaussian.COVARIANCES)}, got {covariance!r}")
        self.k, self.dim, self.covariance, self.bayesian = k, dim, covariance, bool(bayesian)
        for name, v in (("weight_concentration_prior", weight_concentration_prior),
                        ("mean_precision_prior", mean_precision_prior)):
            if v is not None and not v > 0:
                raise ValueError(f"{name} must be positive, got {v!r}")
        if degrees_of_freedom_prior is not None and not degrees_of_freedom_prior > dim - 1:
            raise ValueError(f"degrees_of_freedom_prior must be greater than dim - 1 = {dim - 1}, "
                             f"got {degrees_of_freedom_prior!r}")
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_prior = None if mean_prior is None else torch.as_tensor(mean_prior, dtype=torch.float64)
        self.mean_precision_prior = mean_precision_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = (None if covariance_prior is None
                                 else torch.as_tensor(covariance_prior, dtype=torch.float64))
        if self.mean_prior is not None and self.mean_prior.shape != (dim,):
            raise ValueError(f"mean_prior must have shape ({dim},), got {tuple(self.mean_prior.shape)}")
        want = {"full": (dim, dim), "diag": (dim,), "spherical": ()}[covariance]
        if self.covariance_prior is not None and tuple(self.covariance_prior.shape) != want:
            raise ValueError(f"covariance_prior must have shape {want} for covariance={covariance!r}, "
                             f"got {tuple(self.covariance_prior.shape)}")

    # ---- names and shapes ------------------------------------------------------------
    @property
    def factor_name(self) -> str:
        """``"scale_tril"`` (full) or ``"scale"`` (diag, spherical)."""
        return "scale_tril" if self.covariance == "full" else "scale"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every parameter.

        Returns:
          ``{"weights": (K,), "loc": (K, D), "scale_tril": (K, D, D)}`` (``"scale"``: ``(K, D)``
            diagonal, ``(K,)`` spherical).
        """
        k, d = self.k, self.dim
        factor = {"full": (k, d, d), "diag": (k, d), "spherical": (k,)}[self.covariance]
        return {"weights": (k,), "loc": (k, d), self.factor_name: factor}

    def num_free_params(self, params: dict | None = None) -> int:
        """The number of free parameters (for BIC / AIC, `probgen.select`): K − 1
        weights, K D means and K D(D+1)/2 (full), K D (diag) or K (spherical) covariance
        entries, as scikit-learn's ``GaussianMixture._n_parameters`` counts them.
        ``ValueError`` for ``bayesian=True`` (its parameters are integrated, not free)."""
        if self.bayesian:
            raise ValueError("a Bayesian mixture (bayesian=True) has no number of free parameters: its "
                             "parameters are latent; compare such fits by their ELBO instead")
        k, d = self.k, self.dim
        cov = {"full": k * d * (d + 1) // 2, "diag": k * d, "spherical": k}[self.covariance]
        return (k - 1) + k * d + cov

    def check_params(self, params: dict) -> dict[str, torch.Tensor]:
        """``params`` as float64 tensors of the right shapes and supports; ``ValueError`` otherwise."""
        out = {}
        for name, shape in self.param_shapes().items():
            if name not in params:
                raise ValueError(f"missing parameter {name!r}; {type(self).__name__} has {list(self.param_shapes())}")
            t = torch.as_tensor(params[name]).detach().to(torch.float64)
            if tuple(t.shape) != shape:
                raise ValueError(f"parameter {name!r} must have shape {shape}, got {tuple(t.shape)}")
            if not torch.isfinite(t).all():
                raise ValueError(f"parameter {name!r} contains NaN or inf")
            out[name] = t
        if (out["weights"] < 0).any() or abs(float(out["weights"].sum()) - 1) > 1e-6:
            raise ValueError("weights must be non-negative and sum to 1")
        f = out[self.factor_name]
        diag = torch.diagonal(f, dim1=-2, dim2=-1) if self.covariance == "full" else f
        if (diag <= 0).any():
            raise ValueError(f"{self.factor_name} must have a positive diagonal")
        if self.covariance == "full" and (torch.triu(f, 1) != 0).any():
            raise ValueError("scale_tril must be lower triangular")
        extra = sorted(set(params) - set(out))
        if extra:
            raise ValueError(f"unknown parameters {extra}; {type(self).__name__} has {list(out)}")
        return out

    def _unpack(self, params: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (params["weights"].to(torch.float64), params["loc"].to(torch.float64),
                params[self.factor_name].to(torch.float64))

    # ---- declaration hooks -----------------------------------------------------------
    def check_data(self, data: Any) -> torch.Tensor:
        """``x`` as a float64 ``(N, dim)`` tensor with N >= 1: finite, or NaN in missing cells
        (no row entirely missing)."""
        return check_matrix(data, self.dim, name="x", missing=True)

    def check_labels(self, labels: Any, x: torch.Tensor) -> torch.Tensor:
        """Partial labels ``(N,)`` long: a known component 0..K-1 per row, −1 = unknown."""
        return check_labels(labels, (len(x),), self.k).to(x.device)

    def init_params(self, data: Any, seed: int | None = None, method: str = "kmeans++",
                    reg_covar: float = 1e-6) -> dict[str, torch.Tensor]:
        """Starting parameters from the data, seeded.

        ``method="kmeans++"``: k-means++ seeding (Arthur & Vassilvitskii 2007) then 10
        vectorised Lloyd iterations; the hard assignments give the moments.
        ``method="random"``: random responsibilities (uniform, normalised per row), as
        scikit-learn's ``init_params="random"``.
        """
        x = self.check_data(data)
        if has_missing(x):  # the start only: k-means on the column means' filling
            x = torch.where(torch.isnan(x), torch.nanmean(x, 0), x)
        n = len(x)
        if n < self.k:
            raise ValueError(f"x has {n} examples, fewer than k = {self.k} components")
        g = generator(seed)
        if method == "random":
            resp = torch.rand(n, self.k, dtype=torch.float64, generator=g)
            resp /= resp.sum(1, keepdim=True)
        elif method == "kmeans++":
            resp = gaussian.kmeans_resp(x, self.k, g)
        else:
            raise ValueError(f"init method must be 'kmeans++' or 'random', got {method!r}")
        return self.m_step(x, resp, reg_covar=reg_covar)

    def weighted_log_prob(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """``log π_k + log p(x_n,obs | k)`` ``(N, K)``: the whole row, or where ``x`` has NaN
        cells, the exact marginal of each row's observed cells."""
        w, loc, f = self._unpack(params)
        if not has_missing(x):
            return gaussian.weighted_log_prob(x, w, loc, f, self.covariance)
        cov = gm.covariance_matrices(f, self.covariance, self.dim)
        return gm.marginal_log_gaussian(x, loc, cov) + torch.log(w)

    def e_step(self, params: dict, x: torch.Tensor, labels: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(x_n) (N,), responsibilities (N, K))`` at ``params`` (observed cells only
        where ``x`` has NaN). With ``labels`` ``(N,)`` (−1 = unknown) a labelled row's
        component is clamped, and its log p is the joint log p(x_n, z_n)."""
        lp = clamp_to_labels(self.weighted_log_prob(params, x), labels)
        return gaussian.normalize_log(lp)

    def m_step(self, x: torch.Tensor, resp: torch.Tensor, reg_covar: float = 1e-6,
               params: dict | None = None) -> dict[str, torch.Tensor]:
        """Maximum-likelihood parameters given responsibilities ``(N, K)``. Where ``x`` has
        NaN cells the expected complete-data statistics need the current ``params`` (the
        conditional means and covariances of the missing cells, Ghahramani & Jordan 1994)."""
        if not has_missing(x):
            w, loc, f = gaussian.m_step(x, resp, self.covariance, reg_covar)
            return {"weights": w, "loc": loc, self.factor_name: f}
        if params is None:
            raise ValueError("the M-step of data with missing cells needs the current params")
        _, loc, f = self._unpack(params)
        cov = gm.covariance_matrices(f, self.covariance, self.dim)
        center = torch.nanmean(x, 0)
        return self._from_moments(*gm.expected_moments(x, loc, cov, resp, center=center), center, len(x), reg_covar)

    def _from_moments(self, nk: torch.Tensor, first: torch.Tensor, second: torch.Tensor, center: torch.Tensor,
                      n: int, reg_covar: float) -> dict[str, torch.Tensor]:
        """The M-step from expected statistics about ``center``: N_k (K,), Σ r x̃ (K, D),
        Σ r x̃x̃ᵀ (K, D, D)."""
        nk = nk + 10 * torch.finfo(nk.dtype).eps                                 # as the complete-data step
        weights = nk / n
        mean_c = first / nk[:, None]
        cov = second / nk[:, None, None] - mean_c.unsqueeze(2) * mean_c.unsqueeze(1)
        new = {"weights": weights / weights.sum(), "loc": mean_c + center}
        if self.covariance == "full":
            new["scale_tril"] = gaussian._cholesky(cov, reg_covar)
            return new
        var = torch.diagonal(cov, dim1=-2, dim2=-1) + reg_covar                  # (K, D)
        if self.covariance == "spherical":
            var = var.mean(1)
        if (var <= 0).any():
            raise ValueError("a variance became non-positive (a collapsed component); increase reg_covar")
        new["scale"] = var.sqrt()
        return new

    def em_step(self, params: dict, x: torch.Tensor, reg_covar: float = 1e-6,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One EM iteration: ``(log p(x_n) (N,)`` at ``params``, the updated params)``.
        Full covariances of complete, unlabelled data use the fused single-pass kernel; the
        others E-step then M-step."""
        if has_missing(x):  # one pass: each pattern's factors serve the E-step and the statistics
            w, loc, f = self._unpack(params)
            center = torch.nanmean(x, 0)
            log_norm, *moments = gm.em_pass(x, torch.log(w), loc, gm.covariance_matrices(f, self.covariance, self.dim),
                                            labels, center)
            return log_norm, self._from_moments(*moments, center, len(x), reg_covar)
        if self.covariance == "full" and labels is None:
            ln, w, loc, f = gaussian.em_step_full(x, *self._unpack(params), reg_covar)
            return ln, {"weights": w, "loc": loc, "scale_tril": f}
        log_norm, resp = self.e_step(params, x, labels)
        return log_norm, self.m_step(x, resp, reg_covar=reg_covar, params=params)

    def em_statistics(self, params: dict, x: torch.Tensor, center: torch.Tensor | None = None
                      ) -> dict[str, torch.Tensor]:
        """The E-step of `em_step` as sums over the rows of ``x`` ``(N, dim)``
        (`probgen.ops.gaussian.statistics`): summed over ranks (data-parallel EM) or
        averaged over minibatches (online EM), `em_update` is the M-step. The moments
        are taken about ``center`` ``(dim,)``, by default c = Σ_k π_k μ_k of ``params`` — the
        same on every rank, and the data mean after one M-step; an online fit fixes one.
        Rows with NaN cells contribute their expected moments given the observed cells
        (`probgen.ops.gaussian_missing.em_pass`, Ghahramani & Jordan 1994), in the same
        layout: ``second`` ``(K, D²)`` (full) or its diagonal ``(K, D)``."""
        w, loc, f = self._unpack(params)
        center = _center(w, loc) if center is None else center
        if not has_missing(x):
            return gaussian.statistics(x, w, loc, f, self.covariance, center)
        log_norm, nk, first, second = gm.em_pass(x, torch.log(w), loc, gm.covariance_matrices(f, self.covariance, self.dim),
                                                 None, center)
        second = second.reshape(self.k, -1) if self.covariance == "full" else torch.diagonal(second, dim1=-2, dim2=-1)
        return {"log_lik": log_norm.sum(), "n": torch.tensor(float(len(x)), dtype=x.dtype),
                "nk": nk, "first": first, "second": second}

    def em_update(self, params: dict, stats: dict[str, torch.Tensor], reg_covar: float = 1e-6,
                  center: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The M-step from `em_statistics` summed over all the data (``params``: those
        the statistics were taken at, which fix their default centre; or the ``center`` they
        were taken about)."""
        if center is None:
            w, loc, _ = self._unpack(params)
            center = _center(w, loc)
        w, loc, f = gaussian.m_step_statistics(stats, self.covariance, center, reg_covar)
        return {"weights": w, "loc": loc, self.factor_name: f}

    def responsibilities(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """p(z_n = k | x_n), shape ``(N, K)``."""
        return self.e_step(params, x)[1]

    def log_prob(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x_n) = logsumexp_k log π_k + log N(x_n | μ_k, Σ_k)``, shape ``(N,)``,
        float64; for a row with NaN cells, the exact marginal likelihood of its observed cells."""
        return torch.logsumexp(self.weighted_log_prob(params, x.to(torch.float64)), dim=1)

    def impute(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(N, D)`` with every NaN cell replaced by its conditional mean given the
        row's observed cells, E[x_m | x_o] = Σ_k p(k | x_o) E[x_m | x_o, k]."""
        x = x.to(torch.float64)
        if not has_missing(x):
            return x.clone()
        _, loc, f = self._unpack(params)
        resp = self.e_step(params, x)[1]
        return gm.conditional_means(x, loc, gm.covariance_matrices(f, self.covariance, self.dim), resp)

    def sample(self, params: dict, n: int, seed: int | None = None, return_assignments: bool = False):
        """``n`` draws ``(n, D)`` (and the assignments ``(n,)`` when asked)."""
        x, z = gaussian.sample(*self._unpack(params), self.covariance, n, generator(seed))
        return (x, z) if return_assignments else x

    @classmethod
    def for_data(cls, data: Any, k: int = 3, **options: Any) -> "GaussianMixture":
        x = check_matrix(data, name="x")
        return cls(k, x.shape[1], **options)

    @classmethod
    def example(cls, seed: int = 0) -> tuple["GaussianMixture", torch.Tensor]:
        """Two well-separated 2-D components, 60 points."""
        model = cls(2, 2)
        truth = {"weights": torch.tensor([0.4, 0.6], dtype=torch.float64),
                 "loc": torch.tensor([[-3.0, 0.0], [3.0, 1.0]], dtype=torch.float64),
                 "scale_tril": torch.tensor([[[1.0, 0.0], [0.3, 0.8]], [[0.7, 0.0], [-0.2, 1.0]]],
                                            dtype=torch.float64)}
        return model, model.sample(truth, 60, seed=seed)

    @classmethod
    def load_named_data(cls, name: str) -> Any:
        """A data set the CLI knows by name (none for mixtures: the bundled ``load_dataset`` ones serve).

        Args:
          name: the name.

        Returns:
          ``None``.
        """
        return None

    # ---- priors ----------------------------------------------------------------------
    def prior_hyperparameters(self, x: Any = None) -> dict[str, Any]:
        """The hyperparameters in use, with scikit-learn's defaults filled in from ``x``
        (``(N, D)``; without data: mean 0, identity covariance) where the attribute is None."""
        d = self.dim
        if x is not None:
            x = torch.as_tensor(x, dtype=torch.float64)
        if self.mean_prior is not None:
            m0 = self.mean_prior
        else:
            m0 = x.mean(0) if x is not None else torch.zeros(d, dtype=torch.float64)
        if self.covariance_prior is not None:
            cp = self.covariance_prior
        else:
            if x is not None and len(x) > 1:
                cov = torch.atleast_2d(torch.cov(x.T))
            else:
                cov = torch.eye(d, dtype=torch.float64)
            cp = {"full": cov, "diag": cov.diagonal().clone(), "spherical": cov.diagonal().mean()}[self.covariance]
        return {"weight_concentration_prior": self.weight_concentration_prior or 1.0 / self.k,
                "mean_prior": m0,
                "mean_precision_prior": self.mean_precision_prior or 1.0,
                "degrees_of_freedom_prior": self.degrees_of_freedom_prior or float(d),
                "covariance_prior": cp}

    def _factor_prior(self, h: dict) -> dist.Distribution:
        """Prior of one component's ``scale_tril`` / ``scale`` (Wishart on the precision)."""
        nu, cp = h["degrees_of_freedom_prior"], h["covariance_prior"]
        if self.covariance == "full":
            return CholeskyInverseWishart(torch.tensor(float(nu), dtype=torch.float64), cp)
        rate = (cp if self.covariance == "diag" else cp.reshape(())) / 2
        gamma = dist.Gamma(torch.full_like(rate, nu / 2), rate)
        scale = dist.TransformedDistribution(gamma, [dist.transforms.PowerTransform(torch.tensor(-0.5, dtype=torch.float64))])
        return scale.to_event(1) if self.covariance == "diag" else scale

    def priors(self, x: Any = None) -> dict[str, dist.Distribution]:
        """Independent priors over a plain mixture's parameters (for the ``mcmc`` engine's
        lifting): ``weights`` Dirichlet, ``loc`` Normal, ``scale_tril`` / ``scale`` the
        Wishart-derived priors of the docstring, each with the default hyperparameters
        from ``x``."""
        h = self.prior_hyperparameters(x)
        k = self.k
        alpha = torch.full((k,), float(h["weight_concentration_prior"]), dtype=torch.float64)
        cp = h["covariance_prior"]
        loc_cov = (cp if self.covariance == "full" else torch.diag(cp.expand(self.dim))) / h["mean_precision_prior"]
        return {"weights": dist.Dirichlet(alpha),
                "loc": dist.MultivariateNormal(h["mean_prior"], loc_cov).expand([k]).to_event(1),
                self.factor_name: self._factor_prior(h).expand([k]).to_event(1)}

    # ---- the program -----------------------------------------------------------------
    def program(self, x: torch.Tensor | None = None) -> None:
        """The Pyro program: ``x`` is ``(N, D)`` (None to sample one point)."""
        if self.bayesian:
            h = self.prior_hyperparameters(x)
            alpha = torch.full((self.k,), float(h["weight_concentration_prior"]), dtype=torch.float64)
            weights = pyro.sample("weights", dist.Dirichlet(alpha))
            with pyro.plate("components", self.k):
                factor = pyro.sample(self.factor_name, self._factor_prior(h))
                shrink = math.sqrt(h["mean_precision_prior"])
                if self.covariance == "full":
                    loc = pyro.sample("loc", dist.MultivariateNormal(h["mean_prior"], scale_tril=factor / shrink))
                else:
                    s = factor if self.covariance == "diag" else factor.unsqueeze(-1)
                    loc = pyro.sample("loc", dist.Normal(h["mean_prior"], s / shrink).to_event(1))
        else:
            init = _LazyInit(self, x)
            weights = pyro.param("weights", init.get("weights"), constraint=constraints.simplex)
            loc = pyro.param("loc", init.get("loc"))
            factor = pyro.param(self.factor_name, init.get(self.factor_name),
                                constraint=constraints.lower_cholesky if self.covariance == "full"
                                else constraints.positive)
        n = 1 if x is None else len(x)
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Categorical(weights))
            pyro.sample("x", self._component(loc, factor, z), obs=x)

    def _component(self, loc: torch.Tensor, factor: torch.Tensor, z: torch.Tensor) -> dist.Distribution:
        if self.covariance == "full":
            return dist.MultivariateNormal(loc[..., z, :], scale_tril=factor[..., z, :, :])
        s = factor[..., z, :] if self.covariance == "diag" else factor[..., z].unsqueeze(-1)
        return dist.Normal(loc[..., z, :], s).to_event(1)


def _center(weights: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    """Σ_k π_k μ_k ``(D,)``: the centre of the data-parallel moments."""
    return weights @ loc


class _LazyInit:
    """Initial values for the ``pyro.param`` sites, computed once on first use (k-means++ on
    the data under the current seed; a unit-scale start when there are no data)."""

    def __init__(self, model: GaussianMixture, x: Any):
        self.model, self.x, self.values = model, x, None

    def get(self, name: str):
        def value() -> torch.Tensor:
            if self.values is None:
                m = self.model
                if self.x is not None and len(self.x) >= m.k:
                    seed = int(torch.randint(0, 2**31 - 1, ()).item())
                    self.values = m.init_params(self.x, seed=seed)
                else:
                    shapes = m.param_shapes()
                    self.values = {"weights": torch.full((m.k,), 1.0 / m.k, dtype=torch.float64),
                                   "loc": torch.randn(shapes["loc"], dtype=torch.float64),
                                   m.factor_name: (torch.eye(m.dim, dtype=torch.float64).expand(shapes["scale_tril"]).clone()
                                                   if m.covariance == "full"
                                                   else torch.ones(shapes["scale"], dtype=torch.float64))}
            return self.values[name]
        return value


# ---- the Wishart carried to the Cholesky factor of the covariance --------------------

class _ScaleTril(constraints._LowerCholesky):
    """Lower-triangular matrices with a positive diagonal, with a bijection from
    ``D(D+1)/2`` real numbers (torch registers no bijection for ``lower_cholesky``)."""


scale_tril_constraint = _ScaleTril()


class FillTrilTransform(torch.distributions.Transform):
    """``R^{D(D+1)/2} → lower Cholesky factors``: fill the lower triangle row by row and
    exponentiate the diagonal. log|J| = Σ of the diagonal's pre-images."""

    domain = constraints.real_vector
    codomain = scale_tril_constraint
    bijective = True

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, FillTrilTransform)

    @staticmethod
    def _dim(m: int) -> int:
        return int(round((math.sqrt(8 * m + 1) - 1) / 2))

    def _call(self, v: torch.Tensor) -> torch.Tensor:
        d = self._dim(v.shape[-1])
        rows, cols = torch.tril_indices(d, d, device=v.device)
        out = v.new_zeros(v.shape[:-1] + (d, d))
        out[..., rows, cols] = v
        diag = torch.arange(d, device=v.device)
        out[..., diag, diag] = out[..., diag, diag].exp()
        return out

    def _inverse(self, m: torch.Tensor) -> torch.Tensor:
        d = m.shape[-1]
        rows, cols = torch.tril_indices(d, d, device=m.device)
        diag = torch.arange(d, device=m.device)
        m = m.clone()
        m[..., diag, diag] = m[..., diag, diag].log()
        return m[..., rows, cols]

    def log_abs_det_jacobian(self, v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.diagonal(m, dim1=-2, dim2=-1)).sum(-1)

    def forward_shape(self, shape: tuple) -> tuple:
        d = self._dim(shape[-1])
        return tuple(shape[:-1]) + (d, d)

    def inverse_shape(self, shape: tuple) -> tuple:
        d = shape[-1]
        return tuple(shape[:-2]) + (d * (d + 1) // 2,)


@biject_to.register(_ScaleTril)
@transform_to.register(_ScaleTril)
def _fill_tril(constraint: Any) -> FillTrilTransform:
    return FillTrilTransform()


class CholeskyInverseWishart(dist.TorchDistribution):
    """The distribution of L = chol(Σ) when the precision Λ = Σ⁻¹ ~ Wishart(ν, W₀) with
    W₀ = ``covariance_prior``⁻¹ (so Σ is inverse-Wishart with scale ``covariance_prior``).

    log p(L) = log W(Λ | ν, W₀) + log|∂Λ/∂Σ| + log|∂Σ/∂L|
             = log W(Λ) − (D+1) log|Σ| + D log 2 + Σ_i (D − i + 1) log L_ii   (i = 1..D).
    Event shape ``(D, D)``; ``df`` may be batched.
    """

    arg_constraints = {"df": constraints.positive}
    support = scale_tril_constraint
    has_rsample = False

    def __init__(self, df: torch.Tensor, covariance_prior: torch.Tensor, validate_args: Any = None):
        self.df = torch.as_tensor(df, dtype=covariance_prior.dtype)
        self.covariance_prior = covariance_prior
        d = covariance_prior.shape[-1]
        batch = torch.broadcast_shapes(self.df.shape, covariance_prior.shape[:-2])
        self._wishart = torch.distributions.Wishart(self.df.expand(batch),
                                                    precision_matrix=covariance_prior.expand(batch + (d, d)),
                                                    validate_args=False)
        super().__init__(batch, (d, d), validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> "CholeskyInverseWishart":
        batch_shape = torch.Size(batch_shape)
        d = self.event_shape[-1]
        return CholeskyInverseWishart(self.df.expand(batch_shape),
                                      self.covariance_prior.expand(batch_shape + (d, d)))

    def sample(self, sample_shape: Any = torch.Size()) -> torch.Tensor:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch retries "singular" Wishart draws itself
            precision = self._wishart.sample(sample_shape)
            return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(precision)))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        d = value.shape[-1]
        diag = torch.diagonal(value, dim1=-2, dim2=-1)
        eye = torch.eye(d, dtype=value.dtype, device=value.device).expand(value.shape)
        inv = torch.linalg.solve_triangular(value, eye, upper=False)            # L⁻¹
        precision = inv.transpose(-1, -2) @ inv                                 # Σ⁻¹ = L⁻ᵀ L⁻¹
        log_det_sigma = 2 * torch.log(diag).sum(-1)
        powers = torch.arange(d, 0, -1, dtype=value.dtype, device=value.device)  # D − i + 1
        return (self._wishart.log_prob(precision) - (d + 1) * log_det_sigma
                + d * math.log(2) + (powers * torch.log(diag)).sum(-1))
