"""CAVI for the Bayesian Gaussian mixture: Dirichlet weights, Normal–Wishart components.

Bishop (2006), *PRML* §10.2. The variational posterior factorises as
q(z) Π_k q(π) q(μ_k, Λ_k) with q(π) = Dirichlet(α), q(μ_k, Λ_k) = N(μ_k | m_k, (β_k Λ_k)⁻¹)
W(Λ_k | W_k, ν_k). One iteration is the variational E-step (responsibilities from
E[ln π_k], E[ln |Λ_k|] and E[(x − μ_k)ᵀ Λ_k (x − μ_k)], eqs. 10.64–10.66) and M-step
(α_k = α₀ + N_k, β_k = β₀ + N_k, m_k, ν_k = ν₀ + N_k, W_k⁻¹; eqs. 10.58–10.63).

Any declaration that states the priors by scikit-learn's names works (the protocol, not a
class): ``k``, ``dim``, ``covariance == "full"``, ``bayesian`` true, and
``weight_concentration_prior``, ``mean_prior``, ``mean_precision_prior``,
``degrees_of_freedom_prior``, ``covariance_prior`` (= W₀⁻¹), each possibly ``None`` for
scikit-learn's data-derived default (filled by the declaration's
``prior_hyperparameters(x)`` when it has one). The conventions (``10·eps`` added to N_k,
``reg_covar`` added to each component's scatter, the reported covariance W_k⁻¹/ν_k, and
the lower bound up to the same constant) follow scikit-learn's
``BayesianGaussianMixture(weight_concentration_prior_type="dirichlet_distribution")``
so that the two agree to rounding from the same starting responsibilities.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from probgen import distributed, protocols
from probgen.fit import Fit
from probgen.ops import gaussian
from probgen.loops.iterative import LOOP, Update, run
from probgen.random import generator
from probgen.registry import Method, check_options, register

PRIORS = ("weight_concentration_prior", "mean_prior", "mean_precision_prior", "degrees_of_freedom_prior",
          "covariance_prior")
OPTIONS = ("tol", "n_init", "callback", "reg_covar", "init_resp")


def prior_values(model: Any, x: torch.Tensor, moments: tuple | None = None) -> dict[str, Any]:
    """The five hyperparameters as float64 values, scikit-learn's defaults where ``None``.
    ``moments``: ``(mean (D,), covariance (D, D))`` of all the data, for a data-parallel fit
    whose ``x`` is one rank's rows (the data-derived defaults must be the whole data's)."""
    if moments is not None:
        h = dict(model.prior_hyperparameters(None)) if hasattr(model, "prior_hyperparameters") else \
            {a: getattr(model, a) for a in PRIORS}
        defaults = {"weight_concentration_prior": 1.0 / model.k, "mean_prior": moments[0],
                    "mean_precision_prior": 1.0, "degrees_of_freedom_prior": float(model.dim),
                    "covariance_prior": moments[1]}
        for a in ("mean_prior", "covariance_prior"):  # the data-derived ones: from all the data
            if getattr(model, a, None) is None:
                h[a] = defaults[a]
        h = {a: defaults[a] if h[a] is None else h[a] for a in PRIORS}
    elif hasattr(model, "prior_hyperparameters"):
        h = dict(model.prior_hyperparameters(x))
    else:
        h = {a: getattr(model, a) for a in PRIORS}
        defaults = {"weight_concentration_prior": 1.0 / model.k, "mean_prior": x.mean(0),
                    "mean_precision_prior": 1.0, "degrees_of_freedom_prior": float(model.dim),
                    "covariance_prior": torch.atleast_2d(torch.cov(x.T))}
        h = {a: defaults[a] if h[a] is None else h[a] for a in PRIORS}
    d = model.dim
    out = {"alpha0": float(h["weight_concentration_prior"]), "beta0": float(h["mean_precision_prior"]),
           "nu0": float(h["degrees_of_freedom_prior"]),
           "m0": torch.as_tensor(h["mean_prior"], dtype=torch.float64).reshape(d),
           "W0_inv": torch.as_tensor(h["covariance_prior"], dtype=torch.float64).reshape(d, d)}
    if out["nu0"] <= d - 1:
        raise ValueError(f"degrees_of_freedom_prior must exceed dim - 1 = {d - 1}, got {out['nu0']}")
    return out


def m_step(x: torch.Tensor, resp: torch.Tensor, p: dict, reg_covar: float) -> dict[str, torch.Tensor]:
    """The variational M-step (PRML eqs. 10.58–10.63): the factors of q(π) q(μ, Λ)."""
    nk = resp.sum(0) + 10 * torch.finfo(resp.dtype).eps
    _, xk, sk_chol = gaussian.m_step(x, resp, "full", reg_covar)
    return _factors(nk, xk, sk_chol, p)


def sweep_statistics(x: torch.Tensor, r: torch.Tensor, center: torch.Tensor, log_r: torch.Tensor | None = None
                     ) -> dict[str, torch.Tensor]:
    """The sums over the rows of ``x`` ``(N, D)`` that the M-step and the bound need, from
    the responsibilities ``r`` ``(N, K)``, moments about ``center`` (the same on every rank):
    ``n``, ``nk``, ``first`` Σ r x̃ ``(K, D)``, ``second`` Σ r x̃x̃ᵀ ``(K, D, D)`` and, given
    ``log_r``, ``r_log_r`` Σ r ln r (for data-parallel CAVI; Bishop 2006 eqs. 10.51–10.53)."""
    n, d = x.shape
    k = r.shape[1]
    xc = x - center
    chunk = gaussian.chunk_rows(k, d)
    second = x.new_zeros(k * d, d)
    for s in range(0, n, chunk):
        xs, rs = xc[s:s + chunk], r[s:s + chunk]
        second.addmm_((rs.unsqueeze(2) * xs.unsqueeze(1)).reshape(len(xs), k * d).T, xs)
    out = {"n": torch.tensor(float(n), dtype=x.dtype), "nk": r.sum(0), "first": r.T @ xc,
           "second": second.view(k, d, d)}
    if log_r is not None:
        out["r_log_r"] = (r * log_r).sum()
    return out


def m_step_statistics(stats: dict[str, torch.Tensor], center: torch.Tensor, p: dict, reg_covar: float
                      ) -> dict[str, torch.Tensor]:
    """`m_step` from `sweep_statistics` summed over all the rows."""
    nk = stats["nk"] + 10 * torch.finfo(stats["nk"].dtype).eps
    _, xk, sk_chol = gaussian.m_step_statistics(stats, "full", center, reg_covar)
    return _factors(nk, xk, sk_chol, p)


def _factors(nk: torch.Tensor, xk: torch.Tensor, sk_chol: torch.Tensor, p: dict) -> dict[str, torch.Tensor]:
    """The factors of q(π) q(μ, Λ) from N_k, x̄_k and the Cholesky factor of S_k (eqs. 10.58–10.63)."""
    sk = sk_chol @ sk_chol.transpose(-1, -2)                                # S_k (+ reg_covar I)
    beta = p["beta0"] + nk
    diff = xk - p["m0"]
    W_inv = p["W0_inv"] + nk[:, None, None] * sk \
        + (nk * p["beta0"] / beta)[:, None, None] * diff[:, :, None] * diff[:, None, :]
    nu = p["nu0"] + nk
    cov = W_inv / nu[:, None, None]                                        # (E[Λ_k])⁻¹
    return {"alpha": p["alpha0"] + nk, "beta": beta, "m": (p["beta0"] * p["m0"] + nk[:, None] * xk) / beta[:, None],
            "nu": nu, "W_inv": W_inv, "cov_chol": torch.linalg.cholesky(cov)}


def log_resp(x: torch.Tensor, q: dict) -> torch.Tensor:
    """The variational E-step (PRML eqs. 10.64–10.67): log r_nk, (N, K)."""
    d = x.shape[1]
    e_log_pi = torch.digamma(q["alpha"]) - torch.digamma(q["alpha"].sum())
    # log N(x | m_k, W_k⁻¹/ν_k) − D/2 log ν_k = −D/2 log 2π + ½ log|W_k| − ½ ν_k (x−m_k)ᵀ W_k (x−m_k)
    log_gauss = gaussian.log_gaussian(x, q["m"], q["cov_chol"], "full") - 0.5 * d * torch.log(q["nu"])
    e_log_det = d * math.log(2.0) + torch.digamma(
        0.5 * (q["nu"][None, :] - torch.arange(d, dtype=x.dtype)[:, None])).sum(0)   # E ln|Λ_k| − ln|W_k|
    lp = e_log_pi + log_gauss + 0.5 * (e_log_det - d / q["beta"])
    return lp - torch.logsumexp(lp, 1, keepdim=True)


def lower_bound(q: dict, log_r: torch.Tensor, d: int) -> float:
    """The ELBO up to an additive constant that depends only on the priors and N, in
    scikit-learn's form: −Σ r ln r − Σ_k ln B(W_k, ν_k) − ln C(α) − D/2 Σ_k ln β_k."""
    return _bound(q, (torch.exp(log_r) * log_r).sum(), d)


def _bound(q: dict, r_log_r: torch.Tensor, d: int) -> float:
    """`lower_bound` given Σ r ln r."""
    log_det_w_half = -torch.log(torch.diagonal(q["cov_chol"], dim1=-2, dim2=-1)).sum(-1) - 0.5 * d * torch.log(q["nu"])
    nu = q["nu"]
    log_wishart_norm = -(nu * log_det_w_half + nu * d * 0.5 * math.log(2.0)
                         + torch.lgamma(0.5 * (nu[:, None] - torch.arange(d, dtype=nu.dtype)[None, :])).sum(1))
    log_dirichlet_norm = torch.lgamma(q["alpha"].sum()) - torch.lgamma(q["alpha"]).sum()
    return float(-r_log_r - log_wishart_norm.sum() - log_dirichlet_norm
                 - 0.5 * d * torch.log(q["beta"]).sum())


class _Sweep:
    """One CAVI iteration (E-step then M-step) for `probgen.loops.iterative.run`; the
    state is the variational factors q (the M-step's output)."""

    def __init__(self, method: "BayesianMixtureCAVI", model: Any, x: torch.Tensor, p: dict, reg_covar: float,
                 init_resp: Any):
        self.method, self.model, self.x, self.p, self.reg_covar, self.init_resp = \
            method, model, x, p, reg_covar, init_resp
        self.center = p["m0"]  # the moments' centre for data-parallel sums: the same on every rank

    def start(self, seed: int | None) -> dict:
        resp = self.method._initial_resp(self.model, self.x, seed, self.init_resp)
        ctx = distributed.current()
        if ctx is None:
            return m_step(self.x, resp, self.p, self.reg_covar)
        # data-parallel: every rank runs start, so the starting M-step sums every rank's rows
        return m_step_statistics(ctx.sum(sweep_statistics(self.x, resp, self.center)), self.center, self.p,
                                 self.reg_covar)

    def statistics(self, q: dict) -> dict:
        log_r = log_resp(self.x, q)
        return sweep_statistics(self.x, torch.exp(log_r), self.center, log_r)

    def update(self, q: dict, stats: dict) -> Update:
        q = m_step_statistics(stats, self.center, self.p, self.reg_covar)
        return Update(q, _bound(q, stats["r_log_r"], self.model.dim) / float(stats["n"]))

    def step(self, q: dict) -> Update:
        log_r = log_resp(self.x, q)
        q = m_step(self.x, torch.exp(log_r), self.p, self.reg_covar)
        return Update(q, lower_bound(q, log_r, self.model.dim) / len(self.x))  # per example


def _moments(x: torch.Tensor, ctx: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and (unbiased) covariance of every rank's rows: two sums, the second about
    the mean (no cancellation), once at the start of a data-parallel fit."""
    s = ctx.sum({"sum": x.sum(0), "n": torch.tensor(float(len(x)), dtype=torch.float64)})
    mean = s["sum"] / s["n"]
    xc = x - mean
    scatter = ctx.sum({"scatter": xc.T @ xc})["scatter"]
    return mean, torch.atleast_2d(scatter / (s["n"] - 1))


@register
class BayesianMixtureCAVI(Method):
    engine = "meanfield"
    name = "mixture-cavi"
    needs = ("a Bayesian Gaussian mixture with full covariances (bayesian=True, k, dim, and "
             "scikit-learn-named priors: " + ", ".join(PRIORS) + ")")
    log_prob_kind = "estimate"
    objective = "elbo"
    steps_unit = "CAVI iterations"
    devices = ("cpu", "cuda", "mps")  # torch only (CUDA / MPS written, not run here)
    loop = LOOP
    parallel = "data"  # responsibility-weighted moments summed over ranks
    accepts_init = False
    init_hint = "it starts from responsibilities: pass init_resp=(N, K)"

    def accepts(self, model: Any) -> bool:
        return (protocols.implements(model, protocols.BayesianMixture) and getattr(model, "bayesian", False) is True
                and getattr(model, "covariance", None) == "full")

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = 1e-6, n_init: int = 1, callback: Callable | None = None,
            reg_covar: float = 1e-6, init_resp: Any = None, **options: Any) -> Fit:
        """``steps`` (default 100) iterations; stops when the relative change of the lower
        bound is below ``tol`` (`probgen.registry.converged`; ``None``: run every
        step). ``history`` records ``"elbo"`` per example (scikit-learn's lower bound / N).
        ``n_init`` restarts from independent seeds (the best final bound wins) and
        ``callback`` as in `probgen.loops.iterative.run`.
        ``init_resp``: starting responsibilities (N, K) of every restart; default the declaration's own initialisation (``init_params`` then
        ``responsibilities``, e.g. k-means++) or, lacking those, random ones."""
        check_options("meanfield", options, OPTIONS)
        steps = 100 if steps is None else steps
        x = torch.as_tensor(data, dtype=torch.float64)
        ctx = distributed.current()
        p = prior_values(model, x, None if ctx is None else _moments(x, ctx))
        if ctx is not None and init_resp is not None:  # the whole (N, K) matrix: this rank's block of it
            sizes = ctx.sizes(len(x))
            if len(init_resp) == sum(sizes) != len(x):
                start = sum(sizes[:ctx.rank])
                init_resp = torch.as_tensor(init_resp, dtype=torch.float64)[start:start + len(x)]
        sweep = _Sweep(self, model, x, p, reg_covar, init_resp)
        result = run(sweep, objective=self.objective, steps=steps, tol=tol, seed=seed, n_init=n_init,
                     progress=progress, callback=callback, desc="mixture cavi")
        q = result.state
        params = {"weights": q["alpha"] / q["alpha"].sum(), "loc": q["m"], "scale_tril": q["cov_chol"]}
        return Fit(model, params, result.history, engine=self.engine, method=self.name,
                   state={**q, **result.fit_state()},
                   options={"tol": tol, "n_init": n_init, "reg_covar": reg_covar})

    @staticmethod
    def _initial_resp(model: Any, x: torch.Tensor, seed: int | None, init_resp: Any) -> torch.Tensor:
        n, k = len(x), model.k
        if init_resp is not None:
            r = torch.as_tensor(init_resp, dtype=torch.float64)
            if r.shape != (n, k) or (r < 0).any() or not torch.allclose(r.sum(1), torch.ones(n, dtype=torch.float64)):
                raise ValueError(f"init_resp must be ({n}, {k}) non-negative rows summing to 1, got shape {tuple(r.shape)}")
            return r
        if hasattr(model, "init_params") and hasattr(model, "responsibilities"):
            return model.responsibilities(model.init_params(x, seed), x)
        r = torch.rand(n, k, dtype=torch.float64, generator=generator(seed))
        return r / r.sum(1, keepdim=True)

    def log_prob(self, fit: Fit, x: Any, **options: Any) -> torch.Tensor:
        """The variational posterior predictive (PRML eq. 10.81), a mixture of Student-t
        densities: Σ_k α_k/Σα St(x | m_k, L_k⁻¹, ν_k + 1 − D), shape (N,)."""
        x = fit.model.check_data(x).to(torch.float64)
        q, d = fit.state, x.shape[1]
        dof = q["nu"] + 1 - d
        scale = ((1 + q["beta"]) / (dof * q["beta"]))[:, None, None] * q["W_inv"]
        chol = torch.linalg.cholesky(scale)
        log_det = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        # Mahalanobis distances recovered from the shared chunked Gaussian kernel
        maha = -2 * (gaussian.log_gaussian(x, q["m"], chol, "full") + 0.5 * d * math.log(2 * math.pi) + log_det)
        log_t = (torch.lgamma((dof + d) / 2) - torch.lgamma(dof / 2) - 0.5 * d * torch.log(dof * math.pi)
                 - log_det - 0.5 * (dof + d) * torch.log1p(maha / dof))
        return torch.logsumexp(torch.log(q["alpha"] / q["alpha"].sum()) + log_t, 1)

    def sample(self, fit: Fit, n: int, seed: int | None = None) -> torch.Tensor:
        """Draws from the mixture at the posterior-mean weights and means and W_k⁻¹/ν_k."""
        return gaussian.sample(fit.params["weights"], fit.params["loc"], fit.params["scale_tril"], "full", n,
                               generator(seed))[0]
