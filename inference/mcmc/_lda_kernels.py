"""The compiled (Numba) sweep of collapsed Gibbs sampling for LDA (`inference.mcmc.lda`),
in a module of its own so that Numba is imported (0.16 s) when a chain first runs, not with
the engines (as `probgen.ops.chain_kernels` for the HMM loops)."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def gibbs_sweeps(z: np.ndarray, w: np.ndarray, d: np.ndarray, ndk: np.ndarray, nwk: np.ndarray, nk: np.ndarray,
                 alpha: np.ndarray, eta: float, u: np.ndarray) -> None:
    """One exact sequential sweep over all tokens of every chain, in place.

    z (C, N) int64 topics; w, d (N,) int64 words and documents; ndk (C, D, K), nwk (C, V, K),
    nk (C, K) float64 counts; alpha (K,); u (C, N) one U(0, 1) draw per chain and token. Token
    i of chain c is removed from the counts, its topic drawn by inverse CDF of the
    unnormalised conditional (n_dk + α_k)(n_kw + η)/(n_k + Vη) (the first k whose running
    sum reaches u·total), and put back. Chains are independent, so the chain loop is outside:
    each chain's counts stay in cache through its sweep."""
    C, N = z.shape
    K = nk.shape[1]
    v_eta = eta * nwk.shape[1]
    cdf = np.empty(K)
    for c in range(C):
        for i in range(N):
            k, wi, di = z[c, i], w[i], d[i]
            ndk[c, di, k] -= 1.0
            nwk[c, wi, k] -= 1.0
            nk[c, k] -= 1.0
            acc = 0.0
            for j in range(K):
                acc += (ndk[c, di, j] + alpha[j]) * (nwk[c, wi, j] + eta) / (nk[c, j] + v_eta)
                cdf[j] = acc
            target = u[c, i] * acc
            k = 0
            while k < K - 1 and cdf[k] < target:  # bisect_left on the running sums
                k += 1
            z[c, i] = k
            ndk[c, di, k] += 1.0
            nwk[c, wi, k] += 1.0
            nk[c, k] += 1.0
