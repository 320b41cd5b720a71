"""Variational Bayes for hidden Markov models (``HMM(..., bayesian=True)``).

Beal (2003), *Variational algorithms for approximate Bayesian inference*, ch. 3; MacKay
(1997), "Ensemble learning for hidden Markov models". The posterior is approximated by
q(z) q(θ): q(θ) keeps the conjugate families of the priors (``HMM``'s docstring) —
Dirichlet rows for ``initial``, ``transition`` and ``probs``; Normal–Wishart (full) or
Normal–Gamma per dimension (diag) for each state's Gaussian — and q(z) is the chain itself
with the sub-normalised parameters exp E_q[log θ]:

* VB E-step: forward–backward (``probgen.ops.chain.forward_backward``, the Baum–Welch
  kernel: its scaled recursions never assume that rows sum to one) on
  π̃_k = exp(ψ(α_k) − ψ(Σα)), Ã_ij likewise per row, and the emission log-terms
  E_q[log p(x_t | z_t = k, θ)] (for Gaussians ½ E log|Λ_k| − D/2 log 2π
  − ½ ν_k (x − m_k)ᵀ W_k (x − m_k) − D / (2 β_k), PRML eq. 10.64–10.65);
  its log-normaliser is log Z̃ = Σ_b log Σ_z Π π̃ Ã p̃(x | z).
* VB M-step: prior plus expected counts — α = α₀ + Σ_b γ_b0, A = A₀ + ξ, probs = P₀ +
  Σ γ [x = v]; β = β₀ + N_k, m = (β₀ m₀ + Σ γ x) / β, ν = ν₀ + N_k, W⁻¹ = W₀⁻¹ + Σ γ x xᵀ
  + β₀ m₀ m₀ᵀ − β m mᵀ (the diagonal of it, per dimension, for diag).

The objective is the exact lower bound at the q(θ) the E-step used, with q(z) optimal for
it: ELBO = log Z̃ − KL(q(θ) ‖ p(θ)) (Beal 2003, eq. 3.52), the KL terms in closed form;
``history`` records it per sequence. An E-step then an M-step each maximise the bound over
one factor, so it never decreases. States the data do not need keep only their prior's mass
(their expected occupancy N_k → 0): ``fit.state["state_counts"]`` (K,) and
``fit.state["effective_states"]`` (the states with N_k ≥ 1 step).

The conventions follow hmmlearn 0.3's ``VariationalCategoricalHMM`` and
``VariationalGaussianHMM`` (same priors and defaults, bound taken before the M-step);
hmmlearn drops −D/2 log 2π per step from its bound, and its "diag" model puts a Wishart on a
diagonal scale matrix, which equals the Normal–Gamma here for D = 1 only.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from probgen import protocols
from probgen.fit import Fit
from probgen.loops.iterative import LOOP, Update, run
from probgen.ops import chain
from probgen.ops.chain import EmissionTable
from probgen.registry import Method, check_options, register

from .._chain import emissions, start_params

OPTIONS = ("tol", "n_init", "callback", "init_posterior")


def _dirichlet_expect_log(alpha: torch.Tensor) -> torch.Tensor:
    """E[log θ] under Dirichlet rows (last axis): ψ(α) − ψ(Σα)."""
    return torch.digamma(alpha) - torch.digamma(alpha.sum(-1, keepdim=True))


def _kl_dirichlet(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """KL(Dir(q) ‖ Dir(p)) summed over the rows (last axis the simplex)."""
    qs = q.sum(-1)
    return (torch.lgamma(qs) - torch.lgamma(p.sum(-1)) - (torch.lgamma(q) - torch.lgamma(p)).sum(-1)
            + ((q - p) * (torch.digamma(q) - torch.digamma(qs)[..., None])).sum(-1)).sum()


def _kl_gamma(a_q: torch.Tensor, b_q: torch.Tensor, a_p: torch.Tensor, b_p: torch.Tensor) -> torch.Tensor:
    """KL(Gamma(a_q, rate b_q) ‖ Gamma(a_p, rate b_p)), summed."""
    return ((a_q - a_p) * torch.digamma(a_q) - torch.lgamma(a_q) + torch.lgamma(a_p)
            + a_p * (torch.log(b_q) - torch.log(b_p)) + a_q * (b_p - b_q) / b_q).sum()


def _wishart_log_norm(nu: torch.Tensor, w_inv: torch.Tensor) -> torch.Tensor:
    """log of the Wishart(ν, W) normaliser, W = w_inv⁻¹: ν/2 log|W| + νD/2 log 2 + log Γ_D(ν/2), (K,)."""
    D = w_inv.shape[-1]
    return -0.5 * nu * torch.logdet(w_inv) + 0.5 * nu * D * math.log(2.0) + torch.mvlgamma(0.5 * nu, D)


def _e_log_det(nu: torch.Tensor, w_inv: torch.Tensor) -> torch.Tensor:
    """E log|Λ| under Wishart(ν, W): Σ_i ψ((ν − i)/2) + D log 2 − log|W⁻¹|, (K,) (PRML eq. 10.65)."""
    D = w_inv.shape[-1]
    i = torch.arange(D, dtype=nu.dtype)
    return torch.digamma(0.5 * (nu[:, None] - i)).sum(-1) + D * math.log(2.0) - torch.logdet(w_inv)


class VariationalHMM:
    """The VB updates of one Bayesian HMM on one batch of sequences; the state of the loop
    is the dict of variational parameters ``q``: ``initial`` (K,), ``transition`` (K, K),
    ``probs`` (K, V) (Dirichlet concentrations) | ``m`` (K, D), ``beta`` (K,), ``nu`` (K,),
    ``W_inv`` (K, D, D) full / (K, D) diag; plus ``state_counts`` (K,), the N_k of the
    E-step that made it."""

    def __init__(self, model: Any, data: Any, prior: dict):
        self.model, self.data, self.p = model, data, prior
        self.x = data.columns().t()                                      # (N,) or (N, D), N = T B (padding incl.)

    # -- the sub-normalised parameters and the E-step
    def log_emission_table(self, q: dict) -> EmissionTable:
        """E_q[log p(x_t | z_t = k, θ)] as the chain kernels read it."""
        model, data = self.model, self.data
        B, T = data.x.shape[:2]
        if model.emission == "categorical":
            return EmissionTable(_dirichlet_expect_log(q["probs"]), data.columns().view(T, B), (B, T))
        D = model.dim
        # the plug-in Gaussian N(x | m_k, (ν_k W_k)⁻¹) (the model's own emission kernel) plus
        # ½ (E log|Λ_k| − log|ν_k W_k|) − D / (2 β_k)
        if model.covariance == "full":
            plug = {"loc": q["m"], "scale_tril": torch.linalg.cholesky(q["W_inv"] / q["nu"][:, None, None])}
            gap = _e_log_det(q["nu"], q["W_inv"]) - (D * torch.log(q["nu"]) - torch.logdet(q["W_inv"]))
        else:
            plug = {"loc": q["m"], "scale": (q["W_inv"] / q["nu"][:, None]).sqrt()}
            gap = D * (torch.digamma(0.5 * q["nu"]) - torch.log(0.5 * q["nu"]))
        table = model.emission_table(plug, data)
        return EmissionTable(table.table + (0.5 * gap - 0.5 * D / q["beta"])[:, None], table.index, table.shape)

    def kl(self, q: dict) -> torch.Tensor:
        """KL(q(θ) ‖ p(θ)), all factors."""
        p = self.p
        kl = _kl_dirichlet(q["initial"], p["initial_prior"]) + _kl_dirichlet(q["transition"], p["transition_prior"])
        if self.model.emission == "categorical":
            return kl + _kl_dirichlet(q["probs"], p["probs_prior"])
        D, beta0, m0, nu0, w0 = self.model.dim, p["mean_precision_prior"], p["mean_prior"], \
            p["degrees_of_freedom_prior"], p["covariance_prior"]
        beta, m, nu, w = q["beta"], q["m"], q["nu"], q["W_inv"]
        d = m - m0
        if self.model.covariance == "full":
            # E_q(Λ) KL of the Normals (linear in Λ: exact at E[Λ] = ν W) + KL of the Wisharts
            maha = (d[:, None, :] @ torch.linalg.solve(w, d[..., None]))[:, 0, 0] * nu
            kl_normal = 0.5 * (D * beta0 / beta - D - D * torch.log(beta0 / beta) + beta0 * maha)
            trace = torch.diagonal(torch.linalg.solve(w, w0), dim1=-2, dim2=-1).sum(-1)     # tr(W₀⁻¹ W)
            kl_wishart = (0.5 * (nu - nu0) * _e_log_det(nu, w) - 0.5 * nu * D + 0.5 * nu * trace
                          + _wishart_log_norm(nu0, w0) - _wishart_log_norm(nu, w))
            return kl + kl_normal.sum() + kl_wishart.sum()
        lam = nu[:, None] / w                                                             # E[λ_kd]
        kl_normal = 0.5 * (beta0 / beta - 1 - torch.log(beta0 / beta))[:, None] + 0.5 * beta0[:, None] * d * d * lam
        a_q, a_p = (0.5 * nu)[:, None].expand_as(w), (0.5 * nu0)[:, None].expand_as(w)
        return kl + kl_normal.sum() + _kl_gamma(a_q, 0.5 * w, a_p, 0.5 * w0)

    def m_step(self, gamma: torch.Tensor, xi: torch.Tensor) -> dict:
        """Prior plus expected counts (the module docstring)."""
        p, model = self.p, self.model
        K = gamma.shape[-1]
        gk = gamma.permute(2, 1, 0).reshape(K, -1)               # (K, N), the order of self.x
        nk = gk.sum(1)
        q = {"initial": p["initial_prior"] + gamma[:, 0].sum(0), "transition": p["transition_prior"] + xi,
             "state_counts": nk}
        if model.emission == "categorical":
            counts = torch.zeros(K, model.n_symbols, dtype=gk.dtype).index_add_(1, self.x, gk)
            q["probs"] = p["probs_prior"] + counts
            return q
        x, beta0, m0 = self.x, p["mean_precision_prior"], p["mean_prior"]
        beta = beta0 + nk
        m = (beta0[:, None] * m0 + gk @ x) / beta[:, None]
        if model.covariance == "full":
            D = x.shape[1]
            second = (gk @ (x[:, :, None] * x[:, None, :]).reshape(-1, D * D)).reshape(K, D, D)
            outer = lambda a: a[:, :, None] * a[:, None, :]  # noqa: E731
            w = p["covariance_prior"] + second + beta0[:, None, None] * outer(m0) - beta[:, None, None] * outer(m)
            w = 0.5 * (w + w.transpose(-1, -2))
        else:
            w = p["covariance_prior"] + gk @ (x * x) + beta0[:, None] * m0 * m0 - beta[:, None] * m * m
        return {**q, "m": m, "beta": beta, "nu": p["degrees_of_freedom_prior"] + nk, "W_inv": w}

    def step(self, q: dict) -> tuple[dict, float]:
        """One VB iteration from ``q``: (the new q, the ELBO at ``q``)."""
        init = torch.exp(_dirichlet_expect_log(q["initial"]))
        trans = torch.exp(_dirichlet_expect_log(q["transition"]))
        log_z, gamma, xi = chain.forward_backward(init, trans, self.log_emission_table(q), self.data.lengths)
        elbo = float(log_z.sum() - self.kl(q))
        return self.m_step(gamma, xi), elbo

    def posterior_means(self, q: dict) -> dict[str, torch.Tensor]:
        """The HMM parameters at the posterior means (covariances E[Λ_k]⁻¹ = W_k⁻¹ / ν_k)."""
        out = {"initial": q["initial"] / q["initial"].sum(),
               "transition": q["transition"] / q["transition"].sum(-1, keepdim=True)}
        if self.model.emission == "categorical":
            out["probs"] = q["probs"] / q["probs"].sum(-1, keepdim=True)
        elif self.model.covariance == "full":
            out["loc"], out["scale_tril"] = q["m"], torch.linalg.cholesky(q["W_inv"] / q["nu"][:, None, None])
        else:
            out["loc"], out["scale"] = q["m"], (q["W_inv"] / q["nu"][:, None]).sqrt()
        return out


class _Steps:
    """VB for `probgen.loops.iterative.run`: start from the posterior given the state
    marginals at the declaration's starting parameters (one VB M-step), or from
    ``init_posterior``."""

    def __init__(self, vb: VariationalHMM, init: dict | None, init_posterior: dict | None):
        self.vb, self.init, self.init_posterior = vb, init, init_posterior

    def start(self, seed: int | None) -> dict:
        if self.init_posterior is not None:
            return {k: v.clone() for k, v in self.init_posterior.items()}
        vb = self.vb
        params = start_params(vb.model, vb.data, self.init, seed)
        _, gamma, xi = chain.forward_backward(params["initial"], params["transition"],
                                              emissions(vb.model, params, vb.data), vb.data.lengths)
        return vb.m_step(gamma, xi)

    def step(self, q: dict) -> Update:
        new, elbo = self.vb.step(q)
        return Update(new, elbo / len(self.vb.data.lengths))  # per sequence


@register
class VariationalBayesHMM(Method):
    engine = "meanfield"
    name = "hmm-vb"
    needs = ("a Bayesian hidden Markov model (HMM(..., bayesian=True), categorical or Gaussian emissions, "
             "with prior_hyperparameters)")
    objective = "elbo"
    steps_unit = "VB iterations"
    device_hint = "its forward-backward runs in compiled CPU loops, probgen.ops.chain_kernels"
    loop = LOOP

    def accepts(self, model: Any) -> bool:
        return (protocols.is_hidden_markov_chain(model) and protocols.implements(model, protocols.BayesianHiddenMarkovChain)
                and model.bayesian is True and model.emission in ("categorical", "gaussian"))

    def fit(self, model: Any, data: Any, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = 1e-8, n_init: int = 1, callback: Callable | None = None,
            init_posterior: dict | None = None, **options: Any) -> Fit:
        """``steps`` (default 100) VB iterations; ``tol``, ``n_init`` and ``callback`` as in
        `probgen.loops.iterative.run` (``history``: ``"elbo"`` per sequence).
        The start: one VB M-step from the state marginals at ``init`` (completed from
        ``model.init_params``), or ``init_posterior``, a dict of the variational parameters
        (`VariationalHMM`; every restart's start). ``fit.params`` are the posterior
        means; ``fit.state`` holds ``q``, ``state_counts`` and ``effective_states``."""
        check_options("meanfield", options, OPTIONS)
        steps = 100 if steps is None else steps
        prior = model.prior_hyperparameters(data)
        vb = VariationalHMM(model, data, prior)
        start = None if init_posterior is None else _check_posterior(vb, init_posterior)
        with torch.no_grad():
            result = run(_Steps(vb, init, start), objective=self.objective, steps=steps, tol=tol, seed=seed,
                         n_init=n_init, progress=progress, callback=callback, desc="hmm vb")
        q = result.state
        counts = q["state_counts"]
        return Fit(model, vb.posterior_means(q), result.history, engine=self.engine, method=self.name,
                   state={"q": q, "prior": prior, "state_counts": counts,
                          "effective_states": int((counts >= 1).sum()), **result.fit_state()},
                   options={"tol": tol, "n_init": n_init})


def _check_posterior(vb: VariationalHMM, given: Any) -> dict:
    """``init_posterior`` as float64 tensors with the shapes of the prior's factors."""
    K = vb.model.k
    p = vb.p
    shapes = {"initial": (K,), "transition": (K, K)}
    if vb.model.emission == "categorical":
        shapes["probs"] = tuple(p["probs_prior"].shape)
    else:
        shapes.update(m=tuple(p["mean_prior"].shape), beta=(K,), nu=(K,), W_inv=tuple(p["covariance_prior"].shape))
    if not isinstance(given, dict) or set(given) - {"state_counts"} != set(shapes):
        raise ValueError(f"init_posterior must be a dict with the keys {sorted(shapes)}, got "
                         f"{sorted(given) if isinstance(given, dict) else type(given).__name__}")
    out = {}
    for k, shape in shapes.items():
        t = torch.as_tensor(given[k], dtype=torch.float64)
        if tuple(t.shape) != shape:
            raise ValueError(f"init_posterior[{k!r}] must have shape {shape}, got {tuple(t.shape)}")
        positive = k != "m" and t.dim() < 3  # a full W⁻¹ must be positive definite instead
        if not torch.isfinite(t).all() or (positive and not (t > 0).all()):
            raise ValueError(f"init_posterior[{k!r}] must be finite" + (" and positive" if positive else ""))
        if t.dim() == 3 and torch.linalg.cholesky_ex(t).info.any():
            raise ValueError("init_posterior['W_inv'] must be symmetric positive definite")
        out[k] = t
    out["state_counts"] = torch.zeros(K, dtype=torch.float64)
    return out
