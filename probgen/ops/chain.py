"""Chain kernels: the forward algorithm, forward–backward and Viterbi for a first-order
Markov chain with K states, batched over a padded set of sequences of different lengths.

Shared by the HMM declaration (exact ``log_prob``) and the engines (the EM E-step, the
``marginals`` / ``map`` queries). Notation (Rabiner 1989, "A tutorial on hidden Markov
models", sections III.A–C):

* ``B`` sequences padded to ``T`` steps, ``K`` states;
* ``init`` (K,) = π, ``trans`` (K, K) = A with ``A[i, j] = p(z_t = j | z_{t-1} = i)``;
* ``log_emit`` (B, T, K) = log p(x_t | z_t = k), the emission log-likelihoods (or, for
  ``forward_backward`` and ``viterbi``, the same as an `EmissionTable`);
* ``lengths`` (B,) int, every length >= 1; steps ``t >= lengths[b]`` are padding and
  are ignored (their ``log_emit`` entries may hold anything finite).

``log_evidence`` (what ``log_prob`` and gradient-based engines use) is torch code, so it
is differentiable: a log-depth tree reduction in the (logsumexp, +) semiring, exact at any
length, no loop over sequences. ``forward_backward`` and ``viterbi`` (the EM E-step and the
queries, never differentiated) run compiled loops (`probgen.ops.chain_kernels`): they
are sequential in time, and as torch ops each of their T steps cost torch's fixed per-op
overhead several times over the K² arithmetic (measured 3–5× slower than the compiled
loops at K = 8, B = 200, T = 500 on one CPU thread); a log-depth scan does K times the
work and measured slower too.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from probgen.data import finite_sum

__all__ = ["Sequences", "EmissionTable", "pad_mask", "log_evidence", "forward_backward", "viterbi",
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
    _columns: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _missing: bool | None = field(default=None, init=False, repr=False, compare=False)

    def columns(self) -> torch.Tensor:
        """The observations one column per step, steps in (t, b) order: (D, T B) (or (T B,)
        for symbols and counts) — the column order of an `EmissionTable` and of the
        chain kernels' (K, T, B) outputs. Copied once and kept (EM reads it every iteration)."""
        if self._columns is None:
            x = self.x.transpose(0, 1)
            self._columns = x.reshape(-1) if x.dim() == 2 else x.permute(2, 0, 1).reshape(x.shape[-1], -1)
        return self._columns

    def __len__(self) -> int:
        return len(self.lengths)

    def subset(self, idx: torch.Tensor) -> "Sequences":
        """The sequences ``idx`` (in that order), padded to the longest of them."""
        lengths = self.lengths[idx]
        width = int(lengths.max()) if len(lengths) else 0
        return Sequences(self.x[idx, :width], lengths)

    @property
    def mask(self) -> torch.Tensor:
        """(B, T) bool: True on the steps that belong to a sequence."""
        return pad_mask(self.lengths, self.x.shape[1])

    @property
    def any_missing(self) -> bool:
        """Whether some observation is missing: NaN in float observations, −1 among symbols
        (found once and kept: EM asks every iteration)."""
        if self._missing is None:
            x = self.x
            self._missing = (not finite_sum(x) and bool(torch.isnan(x).any())  # (checked: no inf)
                             if x.is_floating_point() else bool((x < 0).any()))
        return self._missing

    def __len__(self) -> int:
        return len(self.lengths)

    def unpad(self) -> list[torch.Tensor]:
        """The sequences as a list of (T_i,) / (T_i, D) tensors."""
        return [self.x[b, :n] for b, n in enumerate(self.lengths.tolist())]

    def flat(self) -> torch.Tensor:
        """The valid steps of all sequences concatenated: (sum T_i,) or (sum T_i, D)."""
        return self.x[self.mask]


@dataclass
class EmissionTable:
    """Emission log-likelihoods of a padded batch, stored as a table of columns:
    ``log_emit[b, t, k] = table[k, index[t, b]]``.

    Discrete emissions keep their (K, V) log-probability table and the (T, B) symbols, so
    no (B, T, K) tensor is ever written (the chain kernels look each step up); with
    ``index=None`` the table holds one column per step, ``table[:, t B + b]`` (a state-major
    (K, T, B) buffer).

    Attributes: table (K, M) float; index (T, B) long or None; shape (B, T).
    """
    table: torch.Tensor
    index: torch.Tensor | None
    shape: tuple[int, int]

    @classmethod
    def of(cls, log_emit: "torch.Tensor | EmissionTable") -> "EmissionTable":
        """The table of a (B, T, K) tensor (free for the view of a (K, T, B) buffer)."""
        if isinstance(log_emit, EmissionTable):
            return log_emit
        B, T, K = log_emit.shape
        return cls(log_emit.permute(2, 1, 0).reshape(K, T * B), None, (B, T))

    def dense(self) -> torch.Tensor:
        """(B, T, K): the view of a state-major (K, T, B) buffer."""
        B, T = self.shape
        cols = self.table if self.index is None else self.table[:, self.index.reshape(-1)]
        return cols.reshape(-1, T, B).permute(2, 1, 0)

    def kernel_args(self, table: torch.Tensor) -> tuple:
        """``table`` (the same columns, transformed) and the index as the compiled kernels
        take them: a float64 C-contiguous (K, M) array and a (T, B) int64 array or None."""
        table = table.detach().to("cpu", torch.float64).contiguous().numpy()
        if self.index is None:
            return table, None
        return table, self.index.to("cpu", torch.int64).contiguous().numpy()


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
    """The same log-evidence as `log_evidence` by the sequential log-space forward
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


def forward_backward(init: torch.Tensor, trans: torch.Tensor, log_emit: "torch.Tensor | EmissionTable",
                     lengths: torch.Tensor, pairwise: bool = True):
    """Scaled (probability-space) forward–backward, batched over sequences (Rabiner 1989,
    sections III.A and V.A): the forward variables are renormalised at every step,
    α̂_t = α_t / Π_{s<=t} c_s, the backward ones scaled by the same constants, so that
    γ_t = α̂_t β̂_t and nothing under- or overflows; each emission column is shifted by its
    maximum over states before exponentiation (so every step's largest likelihood is 1).
    The recursions run in the compiled loops of `probgen.ops.chain_kernels` (float64,
    on the CPU; SIMD over sequences).

    Args: init (K,), trans (K, K), log_emit (B, T, K) or an `EmissionTable`,
      lengths (B,).
    Returns ``(log_lik, gamma, xi)``:
      log_lik (B,) log p(x) per sequence;
      gamma (B, T, K) posterior state marginals p(z_t = k | x) (zero on padded steps), the
        view of a (K, T, B) buffer;
      xi (K, K) expected transition counts Σ_b Σ_{t>=1} p(z_{t-1} = i, z_t = j | x)
      (``None`` when ``pairwise`` is False).
    """
    from probgen.ops import chain_kernels

    em = EmissionTable.of(log_emit)
    device, dtype, (B, T), K = em.table.device, em.table.dtype, em.shape, len(trans)
    table = em.table.detach().to(torch.float64)
    shift = table.amax(0)                                               # (M,) per column
    e, index = em.kernel_args((table - shift).exp_())
    gamma = torch.empty(K, T, B, dtype=torch.float64)
    c = torch.empty(T, B, dtype=torch.float64)
    xi = torch.zeros(K, K, dtype=torch.float64)
    pi64, A64 = (v.detach().to("cpu", torch.float64).contiguous() for v in (init, trans))
    chain_kernels.forward_backward(pi64.numpy(), A64.numpy(), e, index,
                                   lengths.to("cpu", torch.int64).contiguous().numpy(),
                                   gamma.numpy(), c.numpy(), xi.numpy())
    # log p(x) = Σ_{t < n} log c_t + the shifts of the steps' columns
    step_shift = (shift.cpu().view(T, B) if em.index is None else shift.cpu()[em.index])
    log_c = torch.log(c) + step_shift
    if bool((lengths != T).any()):
        log_c.masked_fill_(~pad_mask(lengths.cpu(), T).t(), 0.0)
    log_lik = log_c.sum(0).to(device, dtype)
    gamma = gamma.to(device, dtype).permute(2, 1, 0)
    xi = (A64 * xi).to(device, dtype) if pairwise else None
    return log_lik, gamma, xi


def viterbi(init: torch.Tensor, trans: torch.Tensor, log_emit: "torch.Tensor | EmissionTable",
            lengths: torch.Tensor):
    """The most probable state path per sequence (max-product in log space, with
    backtracking; Viterbi 1967, Rabiner 1989 section III.B), in the compiled loop of
    `probgen.ops.chain_kernels` (SIMD over sequences).

    Args: init (K,), trans (K, K), log_emit (B, T, K) or an `EmissionTable`,
      lengths (B,).
    Returns ``(paths, log_joint)``: paths (B, T) long (−1 on padded steps), and the
    log-probability log p(x, z*) of each path (B,). Ties go to the lowest state index
    (hmmlearn breaks exact ties differently; its paths have the same score).
    """
    from probgen.ops import chain_kernels

    em = EmissionTable.of(log_emit)
    device, dtype, (B, T), K = em.table.device, em.table.dtype, em.shape, len(trans)
    paths = torch.empty(B, T, dtype=torch.long)
    score = torch.empty(B, dtype=torch.float64)
    log_pi, log_A = (torch.log(v.detach().to("cpu", torch.float64)).contiguous() for v in (init, trans))
    back = torch.empty(T, K, B, dtype=torch.int8 if K <= 127 else torch.int32)
    chain_kernels.viterbi(log_pi.numpy(), log_A.numpy(), *em.kernel_args(em.table),
                          lengths.to("cpu", torch.int64).contiguous().numpy(), back.numpy(),
                          paths.numpy(), score.numpy())
    return paths.to(device), score.to(device, dtype)
