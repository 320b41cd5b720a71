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
likelihood 1 (log 0), so the forward variable just propagates through it and the scaled
backward variable stays 1 there; the statistics are then masked.

No loop over sequences anywhere; the loops over time are the hand-written scaled passes
(a few batched matrix products per step) and ``log_evidence`` is a log-depth tree
reduction in the (logsumexp, +) semiring, exact at any length.
"""
from __future__ import annotations

from dataclasses import dataclass

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


def forward_backward(init: torch.Tensor, trans: torch.Tensor, log_emit: torch.Tensor,
                     lengths: torch.Tensor, pairwise: bool = True):
    """Scaled (normalised, probability-space) forward–backward, batched over sequences.

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
    backpointers; Viterbi 1967, Rabiner 1989 section III.B).

    Args: init (K,), trans (K, K), log_emit (B, T, K), lengths (B,).
    Returns ``(paths, log_joint)``: paths (B, T) long (−1 on padded steps), and the
    log-probability log p(x, z*) of each path (B,). Ties go to the lowest state index.
    """
    B, T, K = log_emit.shape
    mask = pad_mask(lengths, T)
    log_A = torch.log(trans)
    le = log_emit.transpose(0, 1).contiguous()                         # (T, B, K)
    delta = torch.empty_like(le)
    torch.add(torch.log(init), le[0], out=delta[0])
    buf = torch.empty(B, K, K, dtype=le.dtype, device=le.device)
    log_A_T = log_A.t().contiguous()                                   # [j, i] = log A[i, j]
    for t in range(1, T):
        torch.add(delta[t - 1].unsqueeze(1), log_A_T, out=buf)         # buf[b, j, i]
        torch.amax(buf, -1, out=delta[t])                              # max over the previous state i
        delta[t].add_(le[t])
    last = (lengths - 1).clamp(min=0)
    idx = torch.arange(B, device=le.device)
    log_joint, end = delta[last, idx].max(-1)
    # backtracking recomputes the one backpointer on the path, argmax_i δ_t(i) + log A[i, z_{t+1}]
    # (cheaper than a max-with-indices over all (B, K, K) per forward step); a sequence's path
    # starts from its own best end state at t = length - 1
    ragged = bool((lengths != T).any())
    paths = torch.empty(T, B, dtype=torch.long, device=le.device)
    state = end
    paths[T - 1] = state
    for t in range(T - 2, -1, -1):
        state = (delta[t] + log_A_T[state]).argmax(-1)
        if ragged:
            state = torch.where(last == t, end, state)
        paths[t] = state
    paths = paths.t()
    return paths.masked_fill_(~mask, -1), log_joint
