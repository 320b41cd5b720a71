"""Compiled (Numba) loops of the chain kernels in `probgen.ops.chain`.

Why compiled: forward–backward and Viterbi are sequential in time, and at the sizes HMM
users run (K ≈ 2–50 states) each time step is only K² multiply-adds per sequence. Written
as torch ops, a step costs torch's fixed per-op overhead (a few µs) many times over the
arithmetic; here a step is a few hundred machine instructions.

Layout: every (K, ..., B) array is *state-major with the batch innermost*, so that the
innermost loop of every recursion runs over the B sequences with unit stride and the
compiler vectorises it (SIMD over sequences), and no loop runs over a size-K axis at the
innermost level. Emissions come as a table of columns, ``emission[k, t, b] =
table[k, index[t, b]]`` (``probgen.ops.chain.EmissionTable``; ``index=None``: column
``t B + b``), looked up one (K, B) step at a time. Sequences are padded to T steps;
``lengths`` (B,) gives each one's length (>= 1); padded steps are never read.

Reference: Rabiner (1989), "A tutorial on hidden Markov models", sections III.A–C and
V.A (scaling).
"""
from __future__ import annotations

import numpy as np
from numba import njit

# Reassociation lets the compiler vectorise the sums over sequences (ξ) and fuse
# multiply-adds; it changes results only at float64 rounding level (~1e-16 relative).
# No fast-math for Viterbi: its comparisons must be exact (ties go to the lowest state).
_SUMS = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True)
def _load_step(table, index, t, lengths, pad, out):
    """out (K, B) ← the emission columns of step t; ``pad`` on steps t >= lengths[b]."""
    K, B = out.shape
    if index is None:
        for j in range(K):
            for b in range(B):
                out[j, b] = table[j, t * B + b] if t < lengths[b] else pad
    else:
        for j in range(K):
            for b in range(B):
                out[j, b] = table[j, index[t, b]] if t < lengths[b] else pad


@njit(cache=True, fastmath=_SUMS)
def forward_backward(init, trans, table, index, lengths, gamma, c, xi):
    """Scaled forward–backward (Rabiner 1989, section V.A), batched over sequences.

    Args:
      init (K,) π; trans (K, K) A with ``A[i, j] = p(z_t = j | z_{t-1} = i)``;
      table (K, M), index (T, B) int64 or None: the emission likelihoods (see the module
        docstring), each column scaled so its maximum is 1; lengths (B,) int64.
    Writes:
      gamma (K, T, B): posterior state marginals p(z_t = k | x) (0 on padded steps);
      c (T, B): the forward normalisers c_t = Σ_k (α̂_{t-1} A)_k e_t(k), so that
        log p(x) = Σ_{t < n} log c_t + the emission shifts (padded steps hold 1);
      xi (K, K): *adds* Σ_{b, 1 <= t < n_b} α̂_{t-1}(i) e_t(j) β̂_t(j) / c_t, the
        expected transition counts divided by A[i, j] (the caller multiplies by A).
    """
    K, T, B = gamma.shape
    s = np.zeros(B)
    acc = np.empty(B)      # a separate accumulator: in-place += on gamma measured 2x slower
    e = np.empty((K, B))   # the current step's emission likelihoods (1 on padding)
    # forward: gamma holds the normalised forward variables α̂_t until the backward pass
    _load_step(table, index, 0, lengths, 1.0, e)
    for j in range(K):
        for b in range(B):
            gamma[j, 0, b] = init[j] * e[j, b]
            s[b] += gamma[j, 0, b]
    for t in range(T):
        if t > 0:
            _load_step(table, index, t, lengths, 1.0, e)
            for b in range(B):
                s[b] = 0.0
            for j in range(K):
                for b in range(B):
                    acc[b] = 0.0
                for i in range(K):
                    w = trans[i, j]
                    for b in range(B):
                        acc[b] += gamma[i, t - 1, b] * w
                for b in range(B):
                    v = acc[b] * e[j, b]
                    gamma[j, t, b] = v
                    s[b] += v
        for b in range(B):
            c[t, b] = s[b]
            s[b] = 1.0 / s[b]
        for j in range(K):
            for b in range(B):
                gamma[j, t, b] *= s[b]
    # backward: β̂_{n-1} = 1, β̂_{t-1}(i) = Σ_j A[i, j] u_t(j) with u_t = e_t β̂_t / c_t
    # (u = 0 on padded steps, so they add nothing to ξ and leave β̂ = 1 before them)
    beta = np.ones((K, B))
    u = np.empty((K, B))
    for t in range(T - 1, 0, -1):
        _load_step(table, index, t, lengths, 0.0, e)
        for b in range(B):
            s[b] = 1.0 / c[t, b] if t < lengths[b] else 0.0
        for j in range(K):
            for b in range(B):
                u[j, b] = e[j, b] * beta[j, b] * s[b]
                gamma[j, t, b] *= beta[j, b] if t < lengths[b] else 0.0
        for i in range(K):
            for j in range(K):
                dot = 0.0
                for b in range(B):
                    dot += gamma[i, t - 1, b] * u[j, b]
                xi[i, j] += dot
        for i in range(K):   # β̂_{t-1}(i): the forward step's weighted row sum, with Aᵀ (kept
            for b in range(B):  # inline: a helper taking array views measured 2-3x slower)
                acc[b] = 0.0
            for j in range(K):
                w = trans[i, j]
                for b in range(B):
                    acc[b] += w * u[j, b]
            for b in range(B):
                beta[i, b] = acc[b] if t < lengths[b] else 1.0
    for j in range(K):
        for b in range(B):
            gamma[j, 0, b] *= beta[j, b]


@njit(cache=True)
def viterbi(log_init, log_trans, table, index, lengths, back, paths, score):
    """Max-product recursion with stored backpointers, then backtracking (Rabiner 1989,
    section III.B): δ_t(j) = max_i [δ_{t-1}(i) + log A(i, j)] + log_emit_t(j).

    Args: log_init (K,), log_trans (K, K), table (K, M) and index (T, B) int64 or None:
      the emission log-likelihoods (see the module docstring); lengths (B,) int64;
      back (T, K, B) an integer buffer for the backpointers (int8 suffices for K <= 127).
    Writes paths (B, T) int64 (−1 on padded steps) and score (B,) = log p(x, z*).
    Ties go to the lowest state index (strict ``>``), at every step and at the end.
    """
    T, K, B = back.shape
    prev = np.empty((K, B))
    cur = np.empty((K, B))
    le = np.empty((K, B))
    state = np.zeros(B, dtype=np.int64)
    _load_step(table, index, 0, lengths, 0.0, le)
    for j in range(K):
        for b in range(B):
            prev[j, b] = log_init[j] + le[j, b]
    for t in range(T):
        if t > 0:
            _load_step(table, index, t, lengths, 0.0, le)
            for j in range(K):
                w = log_trans[0, j]
                for b in range(B):
                    cur[j, b] = prev[0, b] + w
                    back[t, j, b] = 0
                for i in range(1, K):
                    w = log_trans[i, j]
                    for b in range(B):
                        v = prev[i, b] + w
                        if v > cur[j, b]:
                            cur[j, b] = v
                            back[t, j, b] = i
                for b in range(B):
                    cur[j, b] += le[j, b]
            prev, cur = cur, prev
        for b in range(B):
            if lengths[b] == t + 1:        # sequence b ends here: its best final state
                k = 0
                for j in range(1, K):
                    if prev[j, b] > prev[k, b]:
                        k = j
                state[b] = k
                score[b] = prev[k, b]
    # backtrack all sequences together, time outermost (independent loads across b)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if t < lengths[b]:
                k = state[b]
                paths[b, t] = k
                state[b] = back[t, k, b]
            else:
                paths[b, t] = -1
