"""Chain kernels: the forward algorithm, forward–backward and Viterbi for a first-order
Markov chain with K states, batched over a padded set of sequences of different lengths.

Shared by the HMM declaration (exact ``log_prob``) and the engines (the EM E-step, the
``marginals`` / ``map`` queries). Notation (Rabiner 1989, "A tutorial on hidden Markov
models", sections III.A–C):

* ``B`` sequences padded to ``T`` steps, ``K`` states;
* ``init`` (K,) = π, ``trans`` (K, K) = A with ``A[i, j] = p(z_t = j | z_{t-1} = i)``;
* ``log_emit`` (B, T, K) = log p(x_t | z_t = k), the emission log-likelihoods;
* ``lengths`` (B,) int, every length >= 1; steps ``t >= lengths[b]`` are padding and
  are ignored (their ``log_emit`` entries may hold anything finite).

Padding is handled without a Python loop over sequences: a padded step gets emission
likelihood 1 (log 0), so the forward variable just propagates through it; the backward
recursion runs on each sequence reversed in time, so its padding also comes last; the
statistics are then masked.

No loop over sequences anywhere. ``log_evidence`` is a log-depth tree reduction in the
(logsumexp, +) semiring, exact at any length. ``forward_backward`` and ``viterbi`` keep a
Python loop over time with two or three batched ops per step: at the sizes measured
(K = 8, B = 200, T = 500, one CPU thread) a log-depth scan does K times the work in K×K
matrix products and measured slower, and what costs per step is torch's fixed per-op
overhead (a few µs), so the loops are built to issue as few ops as possible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Sequences", "pad_mask", "log_evidence", "forward_backward", "viterbi",
           "log_matmul"]


@dataclass
class Sequences:
    """A padded batch of sequences: what the HMM's ``check_data`` returns.

    Attributes:
      x: (B, T) long symbols / counts, or (B, T, D) float64 observations, padded with
         zeros after each sequence's end.
      lengths: (B,) long, each >= 1.
    """
    x: torch.Tensor
    lengths: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, T) bool: True on the steps that belong to a sequence."""
        return pad_mask(self.lengths, self.x.shape[1])

    def __len__(self) -> int:
        return len(self.lengths)

    def unpad(self) -> list[torch.Tensor]:
        """The sequences as a list of (T_i,) / (T_i, D) tensors."""
        return [self.x[b, :n] for b, n in enumerate(self.lengths.tolist())]

    def flat(self) -> torch.Tensor:
        """The valid steps of all sequences concatenated: (sum T_i,) or (sum T_i, D)."""
        return self.x[self.mask]


def pad_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) bool mask ``t < lengths[b]``."""
    return torch.arange(T, device=lengths.device) < lengths[:, None]


def _masked_emit(log_emit: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``log_emit`` with padded steps set to 0 (likelihood 1)."""
    return log_emit.masked_fill(~pad_mask(lengths, log_emit.shape[1])[..., None], 0.0)


def log_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Matrix product in the (logsumexp, +) semiring: ``out[..., i, j] =
    logsumexp_k a[..., i, k] + b[..., k, j]``. Shapes (..., I, K) × (..., K, J) → (..., I, J).
    Exact (no exp of unshifted values); ``-inf`` entries are zeros of the semiring."""
    return torch.logsumexp(a.unsqueeze(-1) + b.unsqueeze(-3), dim=-2)


def log_evidence(init: torch.Tensor, trans: torch.Tensor, log_emit: torch.Tensor,
                 lengths: torch.Tensor, chunk_elements: int = 1 << 22) -> torch.Tensor:
    """log p(x_{0:T_b-1}) per sequence: the forward algorithm in log space, evaluated as a
    tree (log-depth) reduction of the per-step matrices in the (logsumexp, +) semiring.

    ``M_t[i, j] = log A[i, j] + log_emit[t, j]`` for ``t >= 1`` (the log-identity on padded
    steps), and ``log p(x) = logsumexp(log π + log_emit[0] ⊗ M_1 ⊗ … ⊗ M_{T-1})``. Every
    step is a ``logsumexp``, so nothing underflows at any length (T = 100,000 is exact to
    float64 rounding, which grows like log2(T) levels, not T steps).

    Args: init (K,), trans (K, K), log_emit (B, T, K), lengths (B,).
    Returns: (B,) log-evidence.
    Work: O(B T K^3) in ceil(log2 T) vectorised levels; batches are chunked so that one
    level holds at most ``chunk_elements`` numbers.
    """
    B, T, K = log_emit.shape
    if B * T * K ** 3 > 4 * chunk_elements:
        return _log_forward(init, trans, log_emit, lengths)
    per_seq = max(T, 1) * K * K * K
    step = max(1, chunk_elements // per_seq)
    if B > step:
        return torch.cat([log_evidence(init, trans, log_emit[s:s + step], lengths[s:s + step],
                                       chunk_elements) for s in range(0, B, step)])
    log_emit = _masked_emit(log_emit, lengths)
    log_A = torch.log(trans)
    v = (torch.log(init) + log_emit[:, 0]).unsqueeze(1)               # (B, 1, K)
    if T == 1:
        return torch.logsumexp(v[:, 0], -1)
    M = log_A + log_emit[:, 1:].unsqueeze(-2)                          # (B, T-1, K, K)
    eye = torch.full((K, K), float("-inf"), dtype=M.dtype, device=M.device)
    eye.fill_diagonal_(0.0)
    padded = ~pad_mask(lengths - 1, T - 1)                             # steps t >= length
    M = torch.where(padded[..., None, None], eye, M)
    while M.shape[1] > 1:
        if M.shape[1] % 2:
            M = torch.cat([M, eye.expand(B, 1, K, K)], 1)
        M = log_matmul(M[:, 0::2], M[:, 1::2])
    return torch.logsumexp(log_matmul(v, M[:, 0])[:, 0], -1)


def _log_forward(init: torch.Tensor, trans: torch.Tensor, log_emit: torch.Tensor,
                 lengths: torch.Tensor) -> torch.Tensor:
    """The same log-evidence as :func:`log_evidence` by the sequential log-space forward
    recursion log α_t = logsumexp_i(log α_{t-1}(i) + log A[i, ·]) + log_emit[t] (O(B T K^2)
    work in T steps: used when the tree's K-fold extra work would dominate)."""
    log_emit = _masked_emit(log_emit, lengths)
    log_A = torch.log(trans)
    T = log_emit.shape[1]
    a = torch.log(init) + log_emit[:, 0]
    last = torch.where(lengths == 1, torch.logsumexp(a, -1), torch.zeros_like(a[:, 0]))
    for t in range(1, T):
        a = torch.logsumexp(a.unsqueeze(-1) + log_A, 1) + log_emit[:, t]
        last = torch.where(lengths == t + 1, torch.logsumexp(a, -1), last)
    return last


def _reverse_index(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) long: ``lengths[b] - 1 - t`` on a sequence's steps (its time reversal), ``t``
    itself on padded steps (so a reversed batch is padded at the end like the original)."""
    t = torch.arange(T, device=lengths.device)
    return torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)


def forward_backward(init: torch.Tensor, trans: torch.Tensor, log_emit: torch.Tensor,
                     lengths: torch.Tensor, pairwise: bool = True, rescale_every: int = 8):
    """Scaled (probability-space) forward–backward, batched over sequences, with the forward
    and the backward recursion run *together*, one batched matrix product per time step.

    With ``e_t = exp(log_emit_t - max_k log_emit_t)`` (shifted emissions, max 1):

    * forward  α_0 = π ⊙ e_0,  α_t = (α_{t-1} A) ⊙ e_t;
    * backward in the form b_t = e_t ⊙ β_t:  b_{n-1} = e_{n-1},  b_t = (b_{t+1} Aᵀ) ⊙ e_t,
      which, read on each sequence reversed in time, is the forward recursion with Aᵀ.

    So both are one recursion over a stacked state (2, B, K) with matrices (A, Aᵀ): per step a
    ``bmm`` and a product with the emissions (the Python loop over time has half the steps and
    half the ops of a forward-then-backward pass, which is what costs at small K). Each
    direction is renormalised (Rabiner 1989, section V.A) every ``rescale_every`` steps rather
    than every step: every quantity below is normalised per step afterwards, so the scales
    cancel. Then, for all t at once: β_t = b_{t+1} Aᵀ (β_{n-1} = 1), γ_t = α_t ⊙ β_t / Z_t with
    Z_t = Σ_k α_t β_t, and ξ = A ⊙ Σ_{b, t < n-1} (α_t / Z_t)ᵀ b_{t+1}.
    If a normaliser or Z_t on a sequence's steps falls below 1e-200 / 1e-250 (where float64
    could start to lose digits between renormalisations), it uses the classic scaled pass
    (:func:`_forward_backward_sequential`, renormalised every step) instead.

    Args: init (K,), trans (K, K), log_emit (B, T, K), lengths (B,).
    Returns ``(log_lik, gamma, xi)``:
      log_lik (B,) log p(x) per sequence;
      gamma (B, T, K) posterior state marginals p(z_t = k | x) (zero on padded steps);
      xi (K, K) expected transition counts Σ_b Σ_{t>=1} p(z_{t-1} = i, z_t = j | x)
      (``None`` when ``pairwise`` is False).
    """
    B, T, K = log_emit.shape
    mask = pad_mask(lengths, T)
    ragged = bool((lengths != T).any())
    if ragged:
        log_emit = log_emit.masked_fill(~mask[..., None], 0.0)
    shift = log_emit.amax(-1, keepdim=True)                             # (B, T, 1)
    # time-major emissions E (2, T, B, K): E[0, t] = e_t, E[1, s] = e_{n-1-s} (each sequence
    # reversed; padding, e = 1, stays at the end). Few big buffers, reused below: fresh
    # multi-MB tensors cost page faults that measured as much as the arithmetic.
    E = torch.empty(2, T, B, K, dtype=log_emit.dtype, device=log_emit.device)
    torch.sub(log_emit.transpose(0, 1), shift.transpose(0, 1), out=E[0])
    E[0].exp_()
    tmask = mask.t()                                                    # (T, B)
    if ragged:
        rev = _reverse_index(lengths, T).t()[..., None].expand(T, B, K)
        torch.gather(E[0], 0, rev, out=E[1])
    else:
        desc = torch.arange(T - 1, -1, -1, device=E.device)
        torch.index_select(E[0], 0, desc, out=E[1])
    M = torch.stack((trans, trans.t()))                                 # (2, K, K)
    r = max(1, int(rescale_every))
    # S[t + 1] = (α_t, r_t) with r_s = b_{n-1-s}; S[0, 1] = 1 stands for b_n (β_{n-1} = 1 Aᵀ = 1)
    S = torch.empty(T + 1, 2, B, K, dtype=E.dtype, device=E.device)
    S[0] = 1.0
    c = torch.ones(T // r + 1, 2, B, 1, dtype=E.dtype, device=E.device)
    torch.mul(E[:, 0], torch.stack((init, torch.ones_like(init)))[:, None], out=S[1])
    Sv, Ev = S.unbind(0), E.unbind(1)                                   # views made once, not per step
    for t in range(1, T + 1):
        if t > 1:
            torch.bmm(Sv[t - 1], M, out=Sv[t])
            Sv[t].mul_(Ev[t - 1])
        if t % r == 0 or t == T:
            ct = c[(t - 1) // r]
            torch.sum(Sv[t], -1, keepdim=True, out=ct)
            Sv[t].div_(ct)
    alpha, R = S[1:, 0], S[:, 1]                                        # (T, B, K), (T + 1, B, K)
    # b_{t+1} = R[n - 1 - t] on a sequence's steps (R[0] = b_n = 1), into E[0]; β into E[1]
    bnext, beta = E[0], E[1]
    if ragged:
        torch.gather(R, 0, rev, out=bnext)
    else:
        torch.index_select(R, 0, desc, out=bnext)
    torch.mm(bnext.view(-1, K), trans.t(), out=beta.view(-1, K))
    Z = torch.linalg.vecdot(alpha, beta)                                # (T, B)
    # the masses later steps divide by: within a block the forward mass only shrinks, and the
    # reversed one by at most the largest column sum of A (<= K) per step, so normalisers above
    # 1e-200 keep every stored mass far above float64's smallest normal number (1e-308)
    zmin = (torch.where(tmask, Z, 1.0) if ragged else Z).amin()
    starts = torch.arange(T // r + 1, device=c.device)[:, None] * r < lengths   # blocks with data
    cmin = c[..., 0].transpose(0, 1)[:, starts].amin()
    if not (bool(zmin > 1e-250) and bool(cmin > 1e-200)):
        return _forward_backward_sequential(init, trans, log_emit, lengths, pairwise)
    w = alpha.div_(Z[..., None])                                        # α_t / Z_t, in place
    gamma = beta.mul_(w)                                                # γ_t = α_t β_t / Z_t
    if ragged:
        gamma.masked_fill_(~tmask[..., None], 0.0)
    log_lik = torch.log(c[:, 0, :, 0]).sum(0) + shift[..., 0].sum(-1)
    xi = None
    if pairwise:
        # ξ = A ⊙ Σ over transitions t -> t + 1 with t + 1 < n of (α_t / Z_t)ᵀ b_{t+1}
        # (per-step (K, B) @ (B, K) products: w is a strided view, a reshape would copy it)
        if ragged:
            w.masked_fill_(~pad_mask(lengths - 1, T).t()[..., None], 0.0)
            xi = trans * torch.bmm(w.transpose(1, 2), bnext).sum(0)
        else:
            xi = trans * torch.bmm(w[:-1].transpose(1, 2), bnext[:-1]).sum(0)
    return log_lik, gamma.transpose(0, 1), xi


def _forward_backward_sequential(init: torch.Tensor, trans: torch.Tensor, log_emit: torch.Tensor,
                     lengths: torch.Tensor, pairwise: bool = True):
    """The classic scaled forward–backward (forward pass, then backward pass), batched over
    sequences; the fallback of :func:`forward_backward` when its block rescaling would lose
    digits, and its reference in the tests.

    The forward variables are renormalised at every step, α̂_t = α_t / Π_{s<=t} c_s, and the
    backward ones scaled by the same constants (Rabiner 1989, section V.A), so that
    γ_t = α̂_t β̂_t and nothing under- or overflows; emissions are shifted by their per-step
    maximum before exponentiation. Each time step is one batched (B, K) @ (K, K) product.

    Args: init (K,), trans (K, K), log_emit (B, T, K), lengths (B,).
    Returns ``(log_lik, gamma, xi)``:
      log_lik (B,) log p(x) per sequence;
      gamma (B, T, K) posterior state marginals p(z_t = k | x) (zero on padded steps);
      xi (K, K) expected transition counts Σ_b Σ_{t>=1} p(z_{t-1} = i, z_t = j | x)
      (``None`` when ``pairwise`` is False).
    """
    B, T, K = log_emit.shape
    mask = pad_mask(lengths, T)
    log_emit = log_emit.masked_fill(~mask[..., None], 0.0)
    shift = log_emit.amax(-1, keepdim=True)                             # (B, T, 1)
    # time-major buffers, so that every step reads and writes contiguous (B, K) blocks in place
    e = torch.exp(log_emit - shift).transpose(0, 1).contiguous()        # (T, B, K), max 1
    alpha = torch.empty_like(e)
    c = torch.empty(T, B, 1, dtype=e.dtype, device=e.device)
    torch.mul(init, e[0], out=alpha[0])
    for t in range(T):
        if t:
            torch.mm(alpha[t - 1], trans, out=alpha[t])
            alpha[t].mul_(e[t])
        torch.sum(alpha[t], -1, keepdim=True, out=c[t])
        alpha[t].div_(c[t])
    # backward: β̂_{T-1} = 1, β̂_{t-1} = (u_t ⊙ β̂_t) Aᵀ with u_t = e_t / c_t; u is overwritten
    # by u_t ⊙ β̂_t, the factor the pairwise marginals need
    u = e.div_(c)
    beta = torch.empty_like(u)
    beta[T - 1] = 1.0
    trans_T = trans.t()
    for t in range(T - 1, 0, -1):
        u[t].mul_(beta[t])
        torch.mm(u[t], trans_T, out=beta[t - 1])
    tmask = mask.t()[..., None]                                         # (T, B, 1)
    gamma = (alpha * beta).masked_fill_(~tmask, 0.0).transpose(0, 1)   # (B, T, K)
    log_lik = ((torch.log(c[..., 0]).t() + shift[..., 0]) * mask).sum(-1)
    xi = None
    if pairwise and T > 1:
        # Σ_t α̂_{t-1}[i] A[i, j] e_t[j] β̂_t[j] / c_t over valid transitions (t < length)
        ut = u[1:].masked_fill_(~tmask[1:], 0.0).reshape(-1, K)
        xi = trans * torch.mm(alpha[:-1].reshape(-1, K).t(), ut)
    elif pairwise:
        xi = torch.zeros(K, K, dtype=e.dtype, device=e.device)
    return log_lik, gamma, xi


def viterbi(init: torch.Tensor, trans: torch.Tensor, log_emit: torch.Tensor,
            lengths: torch.Tensor):
    """The most probable state path per sequence (max-product in log space, with
    backtracking; Viterbi 1967, Rabiner 1989 section III.B).

    The forward max-messages δ_t(j) = max_i [δ_{t-1}(i) + log A(i, j)] + log_emit_t(j) are
    computed in a (T, K, B) layout, the batch innermost: each step is one broadcast add over
    (K, K, B) and a max over its *leading* axis, which vectorises over the batch (about 4x
    cheaper per step than reducing a size-K innermost axis). The backtrack recomputes the one
    backpointer on the path, argmax_i δ_t(i) + log A(i, z_{t+1}), step by step in NumPy
    (a tiny gather per step; torch's per-op overhead would dominate it).

    Args: init (K,), trans (K, K), log_emit (B, T, K), lengths (B,).
    Returns ``(paths, log_joint)``: paths (B, T) long (−1 on padded steps), and the
    log-probability log p(x, z*) of each path (B,). Ties go to the lowest state index
    (hmmlearn breaks exact ties differently; its paths have the same score).
    """
    B, T, K = log_emit.shape
    log_A = torch.log(trans)
    le = log_emit.permute(1, 2, 0).contiguous()                        # (T, K, B)
    delta = torch.empty_like(le)
    torch.add(torch.log(init)[:, None], le[0], out=delta[0])
    W = log_A[..., None]                                               # (K_prev, K_next, 1)
    buf = torch.empty(K, K, B, dtype=le.dtype, device=le.device)
    dv, du, lv = delta.unbind(0), delta.unsqueeze(2).unbind(0), le.unbind(0)   # views made once
    for t in range(1, T):
        torch.add(du[t - 1], W, out=buf)                               # δ_{t-1}(i) + log A(i, j)
        torch.amax(buf, 0, out=dv[t])
        dv[t].add_(lv[t])
    d = delta.transpose(1, 2).contiguous().cpu().numpy()              # (T, B, K)
    log_A_T = log_A.t().contiguous().cpu().numpy()                     # [j, i] = log A[i, j]
    last = (lengths - 1).clamp(min=0).cpu().numpy()
    idx = np.arange(B)
    end = d[last, idx].argmax(-1)                                      # first index on ties
    log_joint = d[last, idx, end]
    ragged = bool((last != T - 1).any())
    paths = np.empty((T, B), dtype=np.int64)
    state = end
    for t in range(T - 2, -1, -1):
        paths[t + 1] = state
        state = (d[t] + log_A_T[state]).argmax(-1)
        if ragged:  # a sequence's path starts from its own best end state at t = length - 1
            state = np.where(last == t, end, state)
    paths[0] = state
    paths = torch.from_numpy(paths.T.copy()).to(log_emit.device)
    return (paths.masked_fill_(~pad_mask(lengths, T), -1),
            torch.from_numpy(log_joint).to(device=log_emit.device, dtype=log_emit.dtype))
