"""Gaussian kernels for data with missing cells (NaN): the exact marginal density of the
observed dimensions, and the conditional moments of the missing ones, for K Gaussians at
once. Shared by the Gaussian mixture (E-step, M-step, ``log_prob``, ``impute``) and the
Gaussian HMM (emissions of partly observed steps, the Baum–Welch M-step).

Rows are grouped by their missingness pattern (``torch.unique`` over the observed mask):
one pattern's rows are handled by batched matrix work over components, so the Python loop
runs over patterns, never over rows. For a pattern with observed dimensions o and missing
ones m, and component k (Ghahramani & Jordan 1994, "Supervised learning from incomplete
data via an EM approach", NIPS 6, §3):

    log p(x_o | k) = log N(x_o | μ_ko, Σ_koo)
    E[x_m | x_o, k] = μ_km + Σ_kmo Σ_koo⁻¹ (x_o − μ_ko)
    Cov[x_m | x_o, k] = Σ_kmm − Σ_kmo Σ_koo⁻¹ Σ_kom        (the same for every row of the pattern)

so E[x | x_o, k] = x̂_k (observed cells kept, missing ones filled) and
E[x xᵀ | x_o, k] = x̂_k x̂_kᵀ + C_k, C_k the conditional covariance placed in the (m, m) block.
Covariances are given as full ``(K, D, D)`` matrices (`covariance_matrices` builds them
from any of the mixture's factors). Everything runs in the dtype of the inputs.
"""
from __future__ import annotations

import math
import weakref

import torch

from probgen.data import clamp_to_labels
from probgen.ops.gaussian import normalize_log

__all__ = ["covariance_matrices", "patterns", "marginal_log_gaussian", "expected_moments", "em_pass",
           "conditional_means", "observed_mask"]


def observed_mask(x: torch.Tensor) -> torch.Tensor:
    """``~isnan(x)``: True on the observed cells, shape of ``x``."""
    return ~torch.isnan(x)


def covariance_matrices(factor: torch.Tensor, covariance: str, d: int) -> torch.Tensor:
    """Σ_k ``(K, D, D)`` from ``scale_tril (K, D, D)`` | ``scale (K, D)`` | ``scale (K,)``."""
    if covariance == "full":
        return factor @ factor.transpose(-1, -2)
    var = factor.square() if covariance == "diag" else factor.square()[:, None].expand(-1, d)
    return torch.diag_embed(var)


_LAST: list = [None, None, None]  # (weak reference to the data, a key of the view and version, patterns)


def patterns_of(x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`patterns` of ``~isnan(x)``, kept for the last ``x`` seen (EM asks every
    iteration for the same data; a changed or new tensor is grouped again)."""
    # a view (the HMM's (T B, D) view of its columns) is a new object at every call: the
    # key is its base tensor, alive while the data are, and the view's place in it
    base = x._base if x._base is not None else x
    key = (x.data_ptr(), tuple(x.shape), x.stride(), base._version)
    ref, old, groups = _LAST
    if ref is not None and ref() is base and old == key:
        return groups
    groups = patterns(observed_mask(x))
    _LAST[:] = [weakref.ref(base), key, groups]
    return groups


def patterns(obs: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The missingness patterns of ``obs`` ``(N, D)`` bool: a list of ``(rows, observed dims)``
    index tensors, one per distinct row of ``obs`` (rows with nothing observed included)."""
    uniq, inverse = torch.unique(obs, dim=0, return_inverse=True)
    order = torch.argsort(inverse, stable=True)
    counts = torch.bincount(inverse, minlength=len(uniq)).tolist()
    rows = torch.split(order, counts)
    return [(r, u.nonzero().squeeze(1)) for r, u in zip(rows, uniq)]


def _pattern_solve(x: torch.Tensor, loc: torch.Tensor, cov: torch.Tensor, o: torch.Tensor):
    """For rows ``x`` ``(n, D)`` sharing the observed dims ``o``: the Cholesky factors of
    Σ_koo ``(K, |o|, |o|)`` and the whitened residuals L_k⁻¹ (x_o − μ_ko) ``(K, |o|, n)``."""
    L = torch.linalg.cholesky(cov[:, o][:, :, o])
    resid = x[:, o].T.unsqueeze(0) - loc[:, o].unsqueeze(2)                       # (K, |o|, n)
    return L, torch.linalg.solve_triangular(L, resid, upper=False)


def marginal_log_gaussian(x: torch.Tensor, loc: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """``log N(x_no | μ_ko, Σ_koo)`` ``(N, K)``: each row's observed cells' exact marginal
    density under each component (0 for a row with nothing observed: an empty product).

    Args: x ``(N, D)`` (NaN where missing); loc ``(K, D)``; cov ``(K, D, D)``.
    """
    n, k = len(x), len(loc)
    out = x.new_zeros(n, k)
    for rows, o in patterns_of(x):
        if len(o) == 0:
            continue
        L, y = _pattern_solve(x[rows], loc, cov, o)
        log_det = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)          # (K,)
        maha = y.square().sum(1)                                                 # (K, n)
        out[rows] = (-0.5 * len(o) * math.log(2 * math.pi) - log_det[:, None] - 0.5 * maha).T
    return out


def _filled(x: torch.Tensor, loc: torch.Tensor, cov: torch.Tensor, o: torch.Tensor, m: torch.Tensor,
            solved: tuple | None = None):
    """Rows of one pattern: x̂ ``(K, n, D)`` (missing cells replaced by their conditional
    means under each component) and the conditional covariance of the missing cells
    C_k ``(K, |m|, |m|)``; ``solved``: `_pattern_solve`'s result, when already known."""
    k, d = loc.shape
    xh = x.unsqueeze(0).expand(k, -1, -1).clone()                                # (K, n, D)
    if len(m) == 0:
        return xh, cov.new_zeros(k, 0, 0)
    s_mm = cov[:, m][:, :, m]
    if len(o) == 0:
        xh[:, :, m] = loc[:, m].unsqueeze(1)
        return xh, s_mm
    L, y = solved if solved is not None else _pattern_solve(x, loc, cov, o)
    # Σ_mo Σ_oo⁻¹ = (L⁻¹ Σ_om)ᵀ L⁻¹: one triangular solve of Σ_om serves mean and covariance
    w = torch.linalg.solve_triangular(L, cov[:, o][:, :, m], upper=False)       # (K, |o|, |m|)
    xh[:, :, m] = loc[:, m].unsqueeze(1) + (w.transpose(1, 2) @ y).transpose(1, 2)
    return xh, s_mm - w.transpose(1, 2) @ w


def expected_moments(x: torch.Tensor, loc: torch.Tensor, cov: torch.Tensor, resp: torch.Tensor,
                     center: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The expected sufficient statistics of the complete data under weights ``resp``:
    ``(N_k (K,), Σ_n r_nk E[x̃_n | x_no, k] (K, D), Σ_n r_nk E[x̃_n x̃_nᵀ | x_no, k] (K, D, D))``
    with x̃ = x − ``center`` (default 0; centring keeps the second moments free of
    cancellation). resp ``(N, K)``: responsibilities or hard assignments."""
    k, d = loc.shape
    center = x.new_zeros(d) if center is None else center
    nk = resp.sum(0)
    first, second = x.new_zeros(k, d), x.new_zeros(k, d, d)
    all_dims = torch.arange(d, device=x.device)
    for rows, o in patterns_of(x):
        m = all_dims[~torch.isin(all_dims, o)]
        xh, c = _filled(x[rows], loc, cov, o, m)
        _add_moments(first, second, resp[rows].T, xh - center, c, m)
    return nk, first, second


def _add_moments(first: torch.Tensor, second: torch.Tensor, r: torch.Tensor, xh: torch.Tensor,
                 c: torch.Tensor, m: torch.Tensor) -> None:
    """Add one pattern's Σ r x̂ and Σ r (x̂x̂ᵀ + C) to ``first`` (K, D) / ``second`` (K, D, D),
    in place: r (K, n) weights, x̂ (K, n, D) filled rows, C (K, |m|, |m|) placed at (m, m)."""
    rx = r.unsqueeze(2) * xh
    first += rx.sum(1)
    second += rx.transpose(1, 2) @ xh
    if len(m):
        second[:, m[:, None], m[None, :]] += r.sum(1)[:, None, None] * c


def conditional_means(x: torch.Tensor, loc: torch.Tensor, cov: torch.Tensor, resp: torch.Tensor) -> torch.Tensor:
    """``x`` ``(N, D)`` with each missing cell replaced by E[x_nm | x_no] = Σ_k r_nk
    E[x_nm | x_no, k] (``resp`` ``(N, K)`` the posterior over components given the observed
    cells; for one Gaussian, K = 1 and resp = 1)."""
    out = x.clone()
    d = x.shape[1]
    all_dims = torch.arange(d, device=x.device)
    for rows, o in patterns_of(x):
        if len(o) == d:
            continue
        m = all_dims[~torch.isin(all_dims, o)]
        xh, _ = _filled(x[rows], loc, cov, o, m)
        out[rows[:, None], m[None, :]] = (resp[rows].T.unsqueeze(2) * xh[:, :, m]).sum(0)
    return out


def em_pass(x: torch.Tensor, log_weights: torch.Tensor, loc: torch.Tensor, cov: torch.Tensor,
            labels: torch.Tensor | None = None, center: torch.Tensor | None = None):
    """One EM pass of a Gaussian mixture over data with missing cells, E-step and expected
    statistics fused per pattern (a row's responsibilities depend on its own row only, so
    each pattern's Cholesky factors and whitened residuals serve both):
    ``(log p(x_no) (N,), N_k (K,), Σ r E[x̃ | x_o, k] (K, D), Σ r E[x̃ x̃ᵀ | x_o, k] (K, D, D))``
    with x̃ = x − ``center``. ``labels`` ``(N,)`` (−1 = unknown) clamp a row's component;
    its log p is then the joint log p(x_no, z_n)."""
    k, d = loc.shape
    center = x.new_zeros(d) if center is None else center
    log_norm = x.new_empty(len(x))
    nk, first, second = x.new_zeros(k), x.new_zeros(k, d), x.new_zeros(k, d, d)
    all_dims = torch.arange(d, device=x.device)
    for rows, o in patterns_of(x):
        m = all_dims[~torch.isin(all_dims, o)]
        xr = x[rows]
        solved = _pattern_solve(xr, loc, cov, o)
        L, y = solved
        log_det = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        lp = (log_weights - 0.5 * len(o) * math.log(2 * math.pi) - log_det - 0.5 * y.square().sum(1).T)
        lp = clamp_to_labels(lp, None if labels is None else labels[rows])
        log_norm[rows], resp = normalize_log(lp)                                  # resp (n, K)
        xh, c = _filled(xr, loc, cov, o, m, solved)
        nk += resp.sum(0)
        _add_moments(first, second, resp.T, xh - center, c, m)
    return log_norm, nk, first, second
