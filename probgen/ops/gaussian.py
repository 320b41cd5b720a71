"""Gaussian kernels shared by the mixture declaration (exact log-density, sampling,
initialisation) and its engines (E-step, closed-form M-step).

Covariance forms (as in scikit-learn's ``GaussianMixture``), with the factor each one
stores:

* ``"full"``      – ``scale_tril`` ``(K, D, D)``: lower Cholesky factor L_k, Σ_k = L_k L_kᵀ;
* ``"diag"``      – ``scale`` ``(K, D)``: standard deviations, Σ_k = diag(scale_k²);
* ``"spherical"`` – ``scale`` ``(K,)``: one standard deviation, Σ_k = scale_k² I.

Every kernel works over the data in chunks of rows so that nothing of size N×K×D is
ever materialised: the largest temporary is ``chunk × K × D`` with
``chunk × K × D ≈ 2¹⁸`` (a few MB, cache-sized). Everything runs in the dtype of the
inputs (float64 in the engines).

Reference: Bishop (2006), *Pattern Recognition and Machine Learning*, §9.2 (EM for
Gaussian mixtures); the floor ``reg_covar`` and the ``10·eps`` added to the component
masses follow scikit-learn so that results agree with it to rounding.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

COVARIANCES = ("full", "diag", "spherical")
_CHUNK_ELEMENTS = 1 << 18


def chunk_rows(k: int, d: int) -> int:
    """Rows per chunk so that a ``chunk × K × D`` temporary stays about 2 MB."""
    return max(64, _CHUNK_ELEMENTS // max(1, k * d))


def log_gaussian(x: torch.Tensor, loc: torch.Tensor, factor: torch.Tensor, covariance: str,
                 chunk: int | None = None) -> torch.Tensor:
    """``log N(x_n | loc_k, Σ_k)`` for every example and component.

    Args:
      x: ``(N, D)``; loc: ``(K, D)``; factor: ``scale_tril (K, D, D)`` | ``scale (K, D)`` |
      ``scale (K,)`` as ``covariance`` says.
    Returns: ``(N, K)``.

    Full covariances use whitened distances ‖L_k⁻¹(x − μ_k)‖²: the K inverse factors are
    laid side by side as one ``(D, K·D)`` matrix, so each chunk of rows needs one matrix
    product (``addmm``) and one squared-sum, never a Python loop over components.
    Diagonal / spherical ones expand the square (three matrix products, as scikit-learn).
    """
    n, d = x.shape
    k = loc.shape[0]
    chunk = chunk or chunk_rows(k, d)
    const = -0.5 * d * math.log(2 * math.pi)
    out = x.new_empty(n, k)
    if covariance == "full":
        eye = torch.eye(d, dtype=x.dtype, device=x.device).expand(k, d, d)
        prec = torch.linalg.solve_triangular(factor, eye, upper=False)          # L_k⁻¹  (K, D, D)
        w = prec.transpose(-1, -2).permute(1, 0, 2).reshape(d, k * d)          # [L_1⁻ᵀ … L_K⁻ᵀ]
        shift = -torch.einsum("kd,ked->ke", loc, prec).reshape(k * d)           # −L_k⁻¹ μ_k
        log_det = torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum(-1)   # log|L_k|
        for s in range(0, n, chunk):
            y = torch.addmm(shift, x[s:s + chunk], w)                          # (c, K·D)
            y.square_()
            maha = y.view(-1, k, d).sum(-1)
            out[s:s + chunk] = const - log_det - 0.5 * maha
        return out
    var = factor.square()
    if covariance == "diag":
        prec = 1.0 / var                                                        # (K, D)
        log_det = 0.5 * torch.log(var).sum(-1)
    elif covariance == "spherical":
        prec = (1.0 / var).unsqueeze(-1).expand(k, d)
        log_det = 0.5 * d * torch.log(var)
    else:
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
    c0 = (loc.square() * prec).sum(-1)                                          # μᵀΛμ  (K,)
    lin = (-2.0 * loc * prec).T                                                 # (D, K)
    quad = prec.T.contiguous()
    for s in range(0, n, chunk):
        xc = x[s:s + chunk]
        maha = torch.addmm(c0, xc, lin) + xc.square() @ quad
        out[s:s + chunk] = const - log_det - 0.5 * maha
    return out


def weighted_log_prob(x: torch.Tensor, weights: torch.Tensor, loc: torch.Tensor, factor: torch.Tensor,
                      covariance: str) -> torch.Tensor:
    """``log π_k + log N(x_n | μ_k, Σ_k)``, shape ``(N, K)``."""
    return log_gaussian(x, loc, factor, covariance) + torch.log(weights)


def normalize_log(lp: torch.Tensor, dim: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logsumexp over the axis dim, softmax)`` of ``lp`` ``(…, K)`` (K along ``dim``), with one
    ``exp``; ``lp`` is overwritten (it becomes the softmax). See `softmax_`."""
    shape = list(lp.shape)
    shape[dim] = 1
    top, total = lp.new_empty(shape), lp.new_empty(shape)
    softmax_(lp, dim, top, total)
    return (total.log_() + top).squeeze(dim), lp


def softmax_(lp: torch.Tensor, dim: int, top: torch.Tensor, total: torch.Tensor) -> None:
    """``lp`` becomes its softmax along ``dim`` in place; ``top`` and ``total`` (``lp``'s shape
    with 1 at ``dim``) receive the maximum and Σ exp(lp − top), so that logsumexp =
    log(total) + top (a caller chunking rows forms it once for all its chunks).

    Terms more than 700 nats below a row's maximum (relative weight < 1e-304) are set to
    exactly 0: their exponentials would be subnormal numbers, which make ``exp`` and every
    later product with them tens of times slower on x86 (scikit-learn pays this price), and
    their contribution is below float64 resolution anyway. They are clamped to −700 before
    ``exp`` and zeroed after it, not set to −inf: ``exp(−inf)`` takes the vectorised ``exp``'s
    slow path (5× the time per element), which cost a quarter of a full-covariance EM
    iteration on well-separated data.
    """
    torch.amax(lp, dim, keepdim=True, out=top)
    lp.sub_(top).clamp_(min=-700.0).exp_()
    torch.nn.functional.threshold_(lp, 1e-300, 0.0)                    # exp(−700) ≈ 1e-304 → 0
    torch.sum(lp, dim, keepdim=True, out=total)
    lp.div_(total)


def e_step(x: torch.Tensor, weights: torch.Tensor, loc: torch.Tensor, factor: torch.Tensor,
           covariance: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The E-step: ``(log p(x_n)  (N,), responsibilities r_nk = p(z_n = k | x_n)  (N, K))``."""
    return normalize_log(weighted_log_prob(x, weights, loc, factor, covariance))


def m_step(x: torch.Tensor, resp: torch.Tensor, covariance: str, reg_covar: float = 1e-6,
           chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The closed-form M-step: weighted moments.

    Args: x ``(N, D)``; resp ``(N, K)`` (rows sum to 1, or hard 0/1 assignments).
    Returns: ``weights (K,)``, ``loc (K, D)``, and ``scale_tril (K, D, D)`` | ``scale (K, D)`` |
    ``scale (K,)``; ``reg_covar`` is added to every variance.

    Second moments are taken about the data mean c (exact algebra, and it keeps
    Σ r (x−c)(x−c)ᵀ/N_k − (μ−c)(μ−c)ᵀ free of cancellation); full covariances come from
    one matrix product per chunk, ``((R ∘ X)ᵀ X)`` with R ∘ X laid out as ``(c, K·D)``.
    """
    n, d = x.shape
    k = resp.shape[1]
    chunk = chunk or chunk_rows(k, d)
    nk = resp.sum(0) + 10 * torch.finfo(resp.dtype).eps                       # as scikit-learn
    center = x.mean(0)
    xc = x - center
    mean_c = (resp.T @ xc) / nk.unsqueeze(1)                                    # μ_k − c  (K, D)
    weights = nk / n
    weights = weights / weights.sum()
    loc = mean_c + center
    if covariance == "full":
        second = x.new_zeros(k * d, d)
        for s in range(0, n, chunk):
            xs, rs = xc[s:s + chunk], resp[s:s + chunk]
            rx = (rs.unsqueeze(2) * xs.unsqueeze(1)).reshape(len(xs), k * d)   # (c, K·D)
            second.addmm_(rx.T, xs)
        cov = second.view(k, d, d) / nk.view(k, 1, 1) - mean_c.unsqueeze(2) * mean_c.unsqueeze(1)
        return weights, loc, _cholesky(cov, reg_covar)
    var = (resp.T @ xc.square()) / nk.unsqueeze(1) - mean_c.square() + reg_covar    # (K, D)
    return weights, loc, _diagonal_scale(var, covariance)


def _diagonal_scale(var: torch.Tensor, covariance: str) -> torch.Tensor:
    """The scale of a ``"diag"`` (K, D) or ``"spherical"`` (K,) M-step from the regularised
    per-dimension variances ``var`` (K, D); a ``ValueError`` for another kind or a collapsed one."""
    if covariance == "spherical":
        var = var.mean(1)
    elif covariance != "diag":
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
    if (var <= 0).any():
        raise ValueError("a variance became non-positive (a collapsed component); increase reg_covar")
    return var.sqrt()


def em_step_full(x: torch.Tensor, weights: torch.Tensor, loc: torch.Tensor, scale_tril: torch.Tensor,
                 reg_covar: float = 1e-6, chunk: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One EM iteration for full covariances, E-step and M-step fused in one pass over
    chunks of rows: returns ``(log p(x_n) (N,)`` at the given parameters, and the new
    ``weights (K,)``, ``loc (K, D)``, ``scale_tril (K, D, D))``.

    With x̃ = x − c (c the data mean), m_k = μ_k − c and Λ_k = Σ_k⁻¹,
    ‖L_k⁻¹(x − μ_k)‖² = vec(x̃x̃ᵀ)·vec(Λ_k) − 2 x̃ᵀΛ_k m_k + m_kᵀΛ_k m_k, so a chunk's
    outer products (of x̂ = [x̃, 1], their distinct entries: see `_full_pass`) serve both
    steps: one product with the K precisions gives every squared distance, and one with
    the responsibilities ``R`` every moment; the responsibilities never exist beyond a
    chunk. Centring at c keeps
    the expansion's rounding error at the 1e-13 level for data of moderate range
    (against a 1e-6 parity target); `log_gaussian` keeps whitened distances for
    ``log_prob`` and queries.
    """
    n = x.shape[0]
    center = x.mean(0)
    log_norm = x.new_empty(n)
    nk, first, second = _full_pass(x, weights, loc, scale_tril, center, log_norm, chunk)
    return (log_norm, *_full_m_step(nk, first, second, n, center, reg_covar))


def statistics_full(x: torch.Tensor, weights: torch.Tensor, loc: torch.Tensor, scale_tril: torch.Tensor,
                    center: torch.Tensor, chunk: int | None = None) -> dict[str, torch.Tensor]:
    """The E-step's sufficient statistics of ``x`` ``(N, D)`` for full covariances, summed over
    its rows, about a given ``center`` ``(D,)`` (the same on every rank of a data-parallel fit):
    ``log_lik`` Σ log p(x_n), ``n`` N, ``nk`` Σ r_nk ``(K,)``, ``first`` Σ r_nk x̃_n ``(K, D)``,
    ``second`` Σ r_nk x̃_n x̃_nᵀ ``(K, D²)`` with x̃ = x − center. The pass of
    `em_step_full` (same kernel, same speed per row); `m_step_statistics` is its
    M-step. Reference: Bishop (2006) §9.2.2; Chu et al. (2006), "Map-Reduce for machine
    learning on multicore" (EM as sums over examples)."""
    log_norm = x.new_empty(x.shape[0])
    nk, first, second = _full_pass(x, weights, loc, scale_tril, center, log_norm, chunk)
    return {"log_lik": log_norm.sum(), "n": torch.tensor(float(x.shape[0]), dtype=x.dtype),
            "nk": nk, "first": first, "second": second}


def statistics(x: torch.Tensor, weights: torch.Tensor, loc: torch.Tensor, factor: torch.Tensor,
               covariance: str, center: torch.Tensor) -> dict[str, torch.Tensor]:
    """The E-step's sufficient statistics for any ``covariance`` (as `statistics_full`;
    diagonal / spherical ones have ``second`` Σ r_nk x̃_n² ``(K, D)``)."""
    if covariance == "full":
        return statistics_full(x, weights, loc, factor, center)
    log_norm, resp = e_step(x, weights, loc, factor, covariance)
    xc = x - center
    return {"log_lik": log_norm.sum(), "n": torch.tensor(float(x.shape[0]), dtype=x.dtype),
            "nk": resp.sum(0), "first": resp.T @ xc, "second": resp.T @ xc.square()}


def m_step_statistics(stats: dict[str, torch.Tensor], covariance: str, center: torch.Tensor,
                      reg_covar: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The closed-form M-step from summed `statistics` (taken about ``center``):
    ``weights``, ``loc`` and the covariance factor, with the regularisation of `m_step`
    (``reg_covar`` on every variance, scikit-learn's ``10·eps`` on the masses)."""
    n = stats["n"]
    if covariance == "full":
        return _full_m_step(stats["nk"].clone(), stats["first"], stats["second"], n, center, reg_covar)
    nk = stats["nk"] + 10 * torch.finfo(stats["nk"].dtype).eps
    mean_c = stats["first"] / nk.unsqueeze(1)
    weights = nk / n
    weights = weights / weights.sum()
    var = stats["second"] / nk.unsqueeze(1) - mean_c.square() + reg_covar
    return weights, mean_c + center, _diagonal_scale(var, covariance)


def _full_pass(x: torch.Tensor, weights: torch.Tensor, loc: torch.Tensor, scale_tril: torch.Tensor,
               center: torch.Tensor, log_norm: torch.Tensor, chunk: int | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused pass of `em_step_full` about ``center``: fills ``log_norm`` (N,) and
    returns the sums N_k, Σ r x̃, Σ r x̃x̃ᵀ (``(K,)``, ``(K, D)``, ``(K, D²)``).

    With x̂ = [x̃, 1] (D + 1 coordinates), log π_k N(x | μ_k, Σ_k) = x̂ᵀ A_k x̂ for
    A_k = [[−½Λ_k, ½Λ_k m_k], [½(Λ_k m_k)ᵀ, c_k]], and x̂x̂ᵀ holds x̃x̃ᵀ, x̃ and 1, so each
    chunk's rows become the features φ(x̂) = the distinct products x̂_i x̂_j, j = (i + s) mod
    (D + 1), for the h = ⌊(D+1)/2⌋ + 1 cyclic offsets s (``(c, h·(D+1))``: 153 columns at
    D = 16 — each pair once for odd D + 1, twice with weight 1 at s = (D+1)/2 for even). One
    product ``φ Wᵀ`` (W: A's entries, off-diagonal pairs doubled) gives every log π_k N, and
    one product ``Rᵀ φ`` every Σ r x̂x̂ᵀ, which holds N_k, Σ r x̃ and Σ r x̃x̃ᵀ.
    """
    n, d = x.shape
    k = loc.shape[0]
    on_cpu = x.device.type == "cpu"
    # A GPU runs a chunk's dozen kernels in microseconds whatever their size: few, large
    # chunks. On a CPU, each of `map_blocks`' threads dispatches a chunk's operations holding
    # the GIL: with many threads, chunks grow so that dispatch stays a small share (16 cores,
    # 2M rows: 0.75 s per pass with 1,024 rows, 0.18 s with 8,192; 1 thread: 0.89 s).
    chunk = chunk or (chunk_rows(k, d) * max(1, torch.get_num_threads() // 2) if on_cpu else 64 * chunk_rows(k, d))
    e = d + 1                                                                   # x̂'s coordinates
    h = e // 2 + 1                                                              # cyclic offsets
    offsets = torch.arange(h, device=x.device).unsqueeze(1)
    cols = (torch.arange(e, device=x.device) + offsets) % e                     # (h, D+1): j = (i + s) mod (D+1)
    rows = torch.arange(e, device=x.device).expand(h, e)
    pair_weight = torch.where((offsets == 0) | (2 * offsets == e), 1.0, 2.0).to(x.dtype)  # (h, 1)
    m = loc - center
    prec = torch.cholesky_inverse(scale_tril)                                    # Λ_k  (K, D, D)
    pm = torch.einsum("kde,ke->kd", prec, m)                                    # Λ_k m_k
    log_det = torch.log(torch.diagonal(scale_tril, dim1=-2, dim2=-1)).sum(-1)
    a = x.new_empty(k, e, e)
    a[:, :d, :d] = -0.5 * prec
    a[:, :d, d] = a[:, d, :d] = 0.5 * pm
    a[:, d, d] = torch.log(weights) - 0.5 * d * math.log(2 * math.pi) - log_det - 0.5 * (pm * m).sum(-1)
    weight_t = (a[:, rows, cols] * pair_weight).reshape(k, h * e).T.contiguous()  # (w, K)
    width = h * e

    def block(lo: int, hi: int) -> torch.Tensor:
        """Σ r_nk φ(x̂_n) over rows [lo, hi) ``(K, h·(D+1))``; fills ``log_norm[lo:hi]``."""
        sums_t = x.new_zeros(width, k)
        # Features × rows: a chunk's x̂ and φ are laid out transposed, so that the products
        # run along rows (contiguous, c long) rather than along the D + 1 coordinates — 7%
        # less per pass than the rows × features layout, and the same sums bit for bit.
        # Reused buffers (a fresh 2 MB block per chunk page-faults), every view made once:
        # a chunk is a dozen small operations, and each view costs a tenth of one.
        c = min(chunk, hi - lo)
        twice_buf, phi_buf, lp_buf = x.new_empty((e + h - 1) * c), x.new_empty(width * c), x.new_empty(c, k)

        def views(size: int) -> tuple:
            """The buffers laid out for a chunk of ``size`` ≤ c rows."""
            twice = twice_buf[:(e + h - 1) * size].view(e + h - 1, size)  # [x̂; x̂_0 … x̂_{h-2}]
            twice[d] = 1.0                                           # x̂'s last coordinate
            phi = phi_buf[:width * size].view(width, size)
            shifted = twice.as_strided((h, e, size), (size, size, 1))         # [s, i] = x̂_j, j = (i + s) mod (D+1)
            return twice[:d].T, twice[e:], twice[:h - 1], shifted, twice[:e], phi, phi.view(h, e, size), lp_buf[:size]

        chunk_views = views(c)
        top, total = x.new_empty(hi - lo, 1), x.new_empty(hi - lo, 1)           # per row: log p = log total + top
        for rows_c, top_c, total_c in zip(x[lo:hi].split(chunk), top.split(chunk), total.split(chunk)):
            if len(rows_c) < c:  # the last, shorter chunk
                chunk_views = views(len(rows_c))
            centred, wrap, head, shifted, hat, phi, products, lp = chunk_views
            torch.sub(rows_c, center, out=centred)                               # x̃ (written transposed)
            wrap.copy_(head)
            torch.mul(shifted, hat.unsqueeze(0), out=products)
            torch.mm(phi.T, weight_t, out=lp)                                    # (c, K) log π_k N
            softmax_(lp, 1, top_c, total_c)                                      # lp: responsibilities
            sums_t.addmm_(phi, lp)
        torch.add(total.log_(), top, out=log_norm[lo:hi].unsqueeze(1))
        return sums_t.T

    sums = sum(map_blocks(block, n, chunk)) if on_cpu else block(0, n)
    full = x.new_empty(k, e, e)
    packed = sums.view(k, h, e)
    full[:, rows, cols] = packed
    full[:, cols, rows] = packed
    # keep Σ r x̂x̂ᵀ exactly symmetric (at s = (D+1)/2 both orders of a pair were summed)
    full = (full + full.transpose(1, 2)).mul_(0.5)
    return full[:, d, d].clone(), full[:, :d, d].clone(), full[:, :d, :d].reshape(k, d * d)


def _full_m_step(nk: torch.Tensor, first: torch.Tensor, second: torch.Tensor, n: Any, center: torch.Tensor,
                 reg_covar: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The M-step of `em_step_full` from the sums about ``center`` (``nk`` is updated in place)."""
    k, d = first.shape
    nk += 10 * torch.finfo(nk.dtype).eps                                         # as scikit-learn
    mean_c = first / nk.unsqueeze(1)
    new_weights = nk / n
    new_weights = new_weights / new_weights.sum()
    cov = second.view(k, d, d) / nk.view(k, 1, 1) - mean_c.unsqueeze(2) * mean_c.unsqueeze(1)
    return new_weights, mean_c + center, _cholesky(cov, reg_covar)


def map_blocks(fn: Any, n: int, chunk: int) -> list:
    """``fn(lo, hi)`` over ``torch.get_num_threads()`` contiguous blocks of ``range(n)``, one
    Python thread each with single-threaded torch ops inside, joined once.

    Coarse blocks synchronise once per call instead of once per operation: on a machine
    shared with other jobs, OpenMP's per-operation barriers (spin-waiting for descheduled
    threads) cost more than the work on these small chunks. torch releases the GIL inside
    its kernels, so the blocks run in parallel.
    """
    threads = torch.get_num_threads()
    parts = min(threads, max(1, n // chunk))
    if parts <= 1:
        return [fn(0, n)]
    bounds = [round(i * n / parts) for i in range(parts + 1)]

    def run(i: int):
        torch.set_num_threads(1)  # this thread's ops: no nested OpenMP team
        return fn(bounds[i], bounds[i + 1])

    try:
        with ThreadPoolExecutor(parts) as pool:
            return list(pool.map(run, range(parts)))
    finally:
        torch.set_num_threads(threads)


def _cholesky(cov: torch.Tensor, reg_covar: float) -> torch.Tensor:
    """Lower Cholesky factors of ``cov + reg_covar·I`` (symmetrised), or a clear error."""
    cov = 0.5 * (cov + cov.transpose(-1, -2))
    cov.diagonal(dim1=-2, dim2=-1).add_(reg_covar)
    factor, info = torch.linalg.cholesky_ex(cov)
    if (info != 0).any():
        bad = int((info != 0).nonzero()[0, 0])
        raise ValueError(f"the covariance of component {bad} is not positive definite "
                         "(a collapsed component or duplicated points); increase reg_covar "
                         "or use fewer components")
    return factor


def sample(weights: torch.Tensor, loc: torch.Tensor, factor: torch.Tensor, covariance: str, n: int,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` draws ``(x (n, D), z (n,))`` from the mixture."""
    k, d = loc.shape
    z = torch.multinomial(weights, n, replacement=True, generator=generator)
    eps = torch.randn(n, d, dtype=loc.dtype, generator=generator)
    if covariance == "full":
        x = torch.empty_like(eps)
        for j in range(k):  # a loop over K components (not over data): one matmul each
            idx = (z == j).nonzero().squeeze(1)
            x[idx] = loc[j] + eps[idx] @ factor[j].T
        return x, z
    scale = factor[z] if covariance == "diag" else factor[z].unsqueeze(1)
    return loc[z] + eps * scale, z


def kmeans_resp(x: torch.Tensor, k: int, g: torch.Generator, iters: int = 10) -> torch.Tensor:
    """Hard responsibilities ``(N, K)`` of the rows of ``x (N, D)``: k-means++ seeding
    (Arthur & Vassilvitskii 2007) then ``iters`` Lloyd steps; the start of mixtures' and
    Gaussian HMMs' EM."""
    n = len(x)
    sq = x.square().sum(1)
    centers = x[torch.randint(n, (1,), generator=g)]
    d2 = (sq - 2 * x @ centers[0] + centers[0].square().sum()).clamp_min(0)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        c = x[torch.multinomial(p, 1, generator=g)]
        centers = torch.cat([centers, c])
        d2 = torch.minimum(d2, (sq - 2 * x @ c[0] + c[0].square().sum()).clamp_min(0))
    for _ in range(iters):
        dist2 = sq.unsqueeze(1) - 2 * x @ centers.T + centers.square().sum(1)
        label = dist2.argmin(1)
        counts = torch.bincount(label, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centers).index_add_(0, label, x)
        keep = counts > 0
        centers[keep] = sums[keep] / counts[keep].unsqueeze(1)
    label = (sq.unsqueeze(1) - 2 * x @ centers.T + centers.square().sum(1)).argmin(1)
    return torch.nn.functional.one_hot(label, k).to(x.dtype)
