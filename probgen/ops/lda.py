"""Kernels for latent Dirichlet allocation shared by the model and every engine.

All per-document work is batched over the non-zero cells of the document–term matrix
(a `probgen.corpus.Corpus`): one gather of ``(nnz, K)`` rows and one
``index_add`` per update, so there is no Python loop over documents or tokens.

Notation (Blei, Ng & Jordan 2003; Hoffman, Blei & Bach 2010): ``K`` topics, ``V`` words,
``D`` documents; ``gamma`` (D, K) per-document Dirichlet factors q(θ_d); ``phi`` the
per-word topic responsibilities (never materialised: φ_dwk ∝ exp(E[log θ_dk] + E[log β_kw])
is folded into the normaliser ``phinorm``); ``lam`` (K, V) the topic factors q(β_k);
``alpha`` (K,) and ``eta`` (scalar) the Dirichlet hyperparameters.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import psi

from probgen.corpus import Corpus

TINY = 1e-100  # guards log(0) in float64 when a word has zero probability under every topic


def dirichlet_expectation(a: torch.Tensor) -> torch.Tensor:
    """E[log x] for x ~ Dirichlet(a), row-wise: ψ(a) − ψ(Σ a). Shape of ``a``."""
    return torch.digamma(a) - torch.digamma(a.sum(-1, keepdim=True))


def dirichlet_kl_terms(q: torch.Tensor, prior: torch.Tensor, elog: torch.Tensor) -> torch.Tensor:
    """Row-wise E_q[log p(x)] − E_q[log q(x)] for q = Dirichlet(q), p = Dirichlet(prior),
    given ``elog`` = E_q[log x]: the negative KL divergence, shape ``q.shape[:-1]``."""
    prior = prior.expand_as(q)
    return (torch.lgamma(prior.sum(-1)) - torch.lgamma(prior).sum(-1)
            - torch.lgamma(q.sum(-1)) + torch.lgamma(q).sum(-1)
            + ((prior - q) * elog).sum(-1))


def missing_log_scale(corpus: Corpus, elog_beta: torch.Tensor) -> torch.Tensor | None:
    """−log(1 − S_dk), S_dk = Σ_{v ∈ M_d} exp(E[log β_kv]), for every document d and topic k,
    (D, K); ``None`` when the corpus has no missing cell.

    Missing counts (NaN cells; M_d the words of document d whose count is unknown, O_d the
    others). The observed part of a document is its n_O = Σ_{w∈O_d} c_dw tokens, each drawn
    from the topics restricted to the observed vocabulary:

        z ~ Categorical(θ_d),   w | z ~ β_z renormalised over O_d:  β_zw / B_z(O_d),
        B_k(O) = Σ_{w∈O} β_kw,

    so that p(c_{d,O} | θ_d, β, n_O) = Multinomial(n_O; Σ_k θ_dk β_kw / B_k(O_d), w ∈ O_d), the
    multinomial of the observed tokens with every topic–word distribution renormalised over the
    document's observed vocabulary, with θ_d ~ Dirichlet(α) the topic proportions of the
    observed tokens. (The full LDA marginal of the observed cells is this likelihood in the
    tilted proportions θ'_k ∝ θ_k B_k(O), under the prior θ ~ Dirichlet(α) induces on θ'; we
    take Dirichlet(α) on θ' itself, which keeps CAVI conjugate; both are LDA exactly when
    nothing is missing.) The renormalisation is exact data augmentation — draw w from β_z
    until it lands in O_d: 1/B_k(O) = Σ_m B_k(M)^m counts the rejected draws, which fall on
    the missing words — so mean-field over z and the rejected draws stays conjugate. With
    q(β_k) = Dirichlet(λ_k) the rejected draws sum out in closed form to the factor
    Σ_m S_dk^m = 1/(1 − S_dk) on every observed token's φ (S_dk < 1 by Jensen), and each
    observed token of topic k sends exp(E[log β_kv]) / (1 − S_dk) expected draws to each
    missing word v (`e_step`'s statistics). With fixed topics (``elog_beta = log β``)
    S_dk = B_k(M_d) and the factor is 1/B_k(O_d), the renormalisation itself."""
    if corpus.missing_doc is None:
        return None
    s = torch.zeros(corpus.n_docs, elog_beta.shape[0], dtype=elog_beta.dtype).index_add_(
        0, corpus.missing_doc, torch.exp(elog_beta).T[corpus.missing_word])
    return -torch.log1p(-s.clamp_max(1.0 - 1e-15))


def e_step(corpus: Corpus, elog_beta: torch.Tensor, alpha: torch.Tensor, gamma: torch.Tensor | None = None,
           max_iter: int = 100, tol: float = 1e-3, sstats: bool = True, with_bound: bool = False):
    """Batched document-level CAVI: alternate φ and γ updates for all documents at once.

    Args:
      corpus: D documents over V words.
      elog_beta: (K, V) E[log β] (``dirichlet_expectation(lam)``, or ``log(topics)`` for
        fixed topics).
      alpha: (K,) document–topic prior.
      gamma: (D, K) starting γ (warm start); default α + N_d / K.
      max_iter, tol: a document stops once the mean absolute change of its γ falls below
        ``tol`` (scikit-learn's ``mean_change_tol``), or after ``max_iter`` sweeps.
        Converged documents leave the batch (its non-zero cells are compacted whenever
        a quarter of the active documents have converged), so slow documents do not
        hold the work of the others.
      Missing cells of ``corpus`` (NaN counts) are marginalised: every observed token's
      word probabilities carry the document's factor 1/(1 − S_dk) of
      `missing_log_scale`, and the statistics add the expected draws that fell on the
      missing words; without missing cells nothing changes (the same operations).
    Returns:
      ``(gamma, sstats, n_iter)``: the (D, K) γ, the (K, V) expected topic–word counts
      Σ_d c_dw φ_dwk for φ optimal given the returned γ (``None`` if not asked), and the
      number of sweeps of the slowest document. With ``with_bound=True`` a fourth item:
      the (D,) per-document ELBO terms of `doc_bound` at the returned γ, read off the
      final φ step's normaliser at no extra cost.

    Each φ update (given γ) and γ update (given φ) maximises the ELBO in its own
    coordinates, for every document independently, so the ELBO never decreases.
    Reference: Blei, Ng & Jordan (2003), §5.2; the ``phinorm`` trick of Hoffman et al.
    (2010), Algorithm 2.
    """
    D, K = corpus.n_docs, elog_beta.shape[0]
    if D == 0:  # no documents (a data-parallel rank's empty share): nothing to sweep
        out = (alpha.new_zeros(0, K), torch.zeros_like(elog_beta) if sstats else None, 0)
        return out + (alpha.new_zeros(0),) if with_bound else out
    exp_elog_beta = torch.exp(elog_beta)
    exp_elog_beta_w = exp_elog_beta.T[corpus.word]                     # (nnz, K), fixed in this step
    log_scale = missing_log_scale(corpus, elog_beta)                     # (D, K) or None
    if log_scale is not None:  # the renormalisation over each document's observed words
        exp_elog_beta_w = exp_elog_beta_w * torch.exp(log_scale)[corpus.doc]
    gamma = (alpha + (corpus.lengths / K)[:, None]).expand(D, K).clone() if gamma is None else gamma.clone()
    # The sweeps run in NumPy: at a minibatch's size (~10^3 non-zeros) a sweep is ~10 small
    # array ops and torch's per-op dispatch cost (~5-8 µs) dominated; NumPy's is ~1 µs.
    # The cells are sorted by document, so the per-document sums are one add.reduceat.
    a = alpha.detach().numpy()
    gam = gamma.numpy()                                                   # shares memory with gamma
    doc, count, ebw = corpus.doc.numpy(), corpus.count.numpy(), exp_elog_beta_w.numpy()
    act = np.arange(D)                                                    # the active documents
    starts = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])             # first cell of each
    g = gam.copy()
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        # exp(ψ(γ_dk)) only: the factor exp(−ψ(Σ_k γ_dk)) of exp(E[log θ_dk]) cancels in φ's normaliser
        exp_elog_theta = np.exp(psi(g))                                   # (A, K), up to a per-row factor
        phinorm = np.einsum("nk,nk->n", exp_elog_theta[doc], ebw) + TINY   # (nnz_A,)
        new = a + exp_elog_theta * np.add.reduceat(ebw * (count / phinorm)[:, None], starts, axis=0)
        moving = np.abs(new - g).mean(1) >= tol
        g = new
        if not moving.any():
            break
        if moving.sum() <= 0.75 * len(act):                                 # compact the active set
            gam[act] = g
            keep = moving[doc]
            local = np.cumsum(moving) - 1
            act, g = act[moving], g[moving]
            doc, count, ebw = local[doc[keep]], count[keep], ebw[keep]
            starts = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]])
    gam[act] = g
    if not sstats:
        return gamma, None, n_iter
    # φ given the final γ (one more φ-coordinate step), summed into (K, V) counts
    elog_theta = dirichlet_expectation(gamma)
    theta_w = torch.exp(elog_theta)[corpus.doc]
    phinorm = (theta_w * exp_elog_beta_w).sum(1) + TINY
    V = elog_beta.shape[1]
    weight = theta_w * (corpus.count / phinorm)[:, None]                  # c_dw φ_dwk / exp(E[log β_kw])
    if log_scale is not None:
        scale = torch.exp(log_scale)
        weight = weight * scale[corpus.doc]
        # the observed tokens' expected topic counts n_dk = Σ_w c_dw φ_dwk; each sends
        # exp(E[log β_kv]) / (1 − S_dk) expected rejected draws to every missing word v
        n_dk = torch.zeros(D, K, dtype=gamma.dtype).index_add_(0, corpus.doc, weight * exp_elog_beta_w
                                                               / scale[corpus.doc])
        per_word = torch.zeros(V, K, dtype=gamma.dtype).index_add_(0, corpus.word, weight).index_add_(
            0, corpus.missing_word, (n_dk * scale)[corpus.missing_doc])
    else:
        per_word = torch.zeros(V, K, dtype=gamma.dtype).index_add_(0, corpus.word, weight)
    if not with_bound:
        return gamma, per_word.T * exp_elog_beta, n_iter
    # Σ_w c_dw log Σ_k exp(E[log θ_dk] + E[log β_kw]) = Σ_w c_dw log phinorm_dw (doc_bound's word term)
    words = torch.zeros(D, dtype=gamma.dtype).index_add_(0, corpus.doc, corpus.count * torch.log(phinorm))
    return gamma, per_word.T * exp_elog_beta, n_iter, words + dirichlet_kl_terms(gamma, alpha, elog_theta)


def doc_bound(corpus: Corpus, gamma: torch.Tensor, elog_beta: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Per-document ELBO terms with φ maximised out (shape (D,)):

    Σ_w c_dw log Σ_k exp(E[log θ_dk] + E[log β_kw]) + E[log p(θ_d | α)] − E[log q(θ_d | γ_d)].

    With ``elog_beta = log(topics)`` this is a lower bound on log p(w_d | topics, α), the
    probability of the document's token sequence (no multinomial coefficient); with missing
    cells, of its observed tokens' sequence, each word's probability renormalised over the
    document's observed vocabulary (`missing_log_scale`, whose factor enters the sum)."""
    elog_theta = dirichlet_expectation(gamma)
    s = elog_theta[corpus.doc] + elog_beta.T[corpus.word]             # (nnz, K)
    log_scale = missing_log_scale(corpus, elog_beta)
    if log_scale is not None:
        s = s + log_scale[corpus.doc]
    words = torch.zeros(corpus.n_docs, dtype=gamma.dtype).index_add_(
        0, corpus.doc, corpus.count * torch.logsumexp(s, 1))
    return words + dirichlet_kl_terms(gamma, alpha, elog_theta)


def topic_bound(lam: torch.Tensor, eta: torch.Tensor, elog_beta: torch.Tensor | None = None) -> torch.Tensor:
    """E[log p(β | η)] − E[log q(β | λ)] summed over topics (smoothed LDA's global term);
    ``elog_beta`` = ``dirichlet_expectation(lam)`` when the caller has it."""
    elog_beta = dirichlet_expectation(lam) if elog_beta is None else elog_beta
    K, V = lam.shape
    # dirichlet_kl_terms with the symmetric prior's log-normaliser written in closed form
    # (one lgamma of a scalar instead of K·V)
    return (K * (torch.lgamma(V * eta) - V * torch.lgamma(eta)) - torch.lgamma(lam.sum(1)).sum()
            + torch.lgamma(lam).sum() + ((eta - lam) * elog_beta).sum())


def inv_digamma(y: torch.Tensor, iters: int = 6) -> torch.Tensor:
    """x with ψ(x) = y, by Newton's method from Minka's (2000) starting point."""
    x = torch.where(y >= -2.22, torch.exp(y) + 0.5, -1.0 / (y + 0.5772156649015329))
    for _ in range(iters):
        x = x - (torch.digamma(x) - y) / torch.polygamma(1, x)
    return x


def update_alpha(alpha: torch.Tensor, mean_elog_theta: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """Minka's (2000) fixed point for a Dirichlet prior from E[log θ] averaged over documents:
    ψ(α_k) ← ψ(Σ α) + mean_d E[log θ_dk]. Each iteration maximises a lower bound that
    touches the ELBO's α-terms at the current α, so the ELBO never decreases."""
    for _ in range(iters):
        new = inv_digamma(torch.digamma(alpha.sum()) + mean_elog_theta)
        if (new - alpha).abs().max() < 1e-10 * alpha.max():
            return new
        alpha = new
    return alpha


def update_eta(eta: torch.Tensor, mean_elog_beta: torch.Tensor, V: int, iters: int = 20) -> torch.Tensor:
    """The same fixed point for a symmetric scalar prior η on V-dimensional topics:
    ψ(η) ← ψ(V η) + mean_{k,w} E[log β_kw]."""
    for _ in range(iters):
        eta = inv_digamma(torch.digamma(V * eta) + mean_elog_beta)
    return eta


# ---- evaluation shared by all engines --------------------------------------------------

def fold_in(corpus: Corpus, topics: torch.Tensor, alpha: torch.Tensor, max_iter: int = 200,
            tol: float = 1e-6) -> torch.Tensor:
    """γ (D, K) of each document with the topics held fixed (a point estimate)."""
    log_topics = torch.log(topics.double().clamp_min(TINY))
    gamma, _, _ = e_step(corpus, log_topics, alpha.double(), max_iter=max_iter, tol=tol, sstats=False)
    return gamma


def impute_counts(corpus: Corpus, topics: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The count matrix (D, V) with every missing cell replaced by its expected count.

    Convention (the document's length is not known when some counts are): a missing cell's
    expected count is the expected number of draws that land on its word while the
    document's n_O observed tokens are drawn (the augmentation of `missing_log_scale`):
    E[c_dv] = Σ_k n_dk β_kv / B_k(O_d), with n_dk = Σ_{w∈O_d} c_dw φ_dwk the observed tokens'
    expected topic counts by fold-in (θ_d's factor γ_d with the topics fixed). Equivalently
    the document's length is taken as n_O plus those draws; for a single topic it is
    n_O / B(O_d), the length at which the observed count is its expected share."""
    out = corpus.dense()
    if corpus.missing_doc is None:
        return out
    topics = topics.double()
    log_topics = torch.log(topics.clamp_min(TINY))
    gamma = fold_in(corpus, topics, alpha)
    scale = torch.exp(missing_log_scale(corpus, log_topics))              # 1 / B_k(O_d), (D, K)
    theta_w = torch.exp(dirichlet_expectation(gamma))[corpus.doc]
    ebw = topics.T[corpus.word] * scale[corpus.doc]
    phinorm = (theta_w * ebw).sum(1, keepdim=True) + TINY
    n_dk = torch.zeros_like(gamma).index_add_(0, corpus.doc, theta_w * ebw * (corpus.count[:, None] / phinorm))
    out[corpus.missing_doc, corpus.missing_word] = (
        (n_dk * scale)[corpus.missing_doc] * topics.T[corpus.missing_word]).sum(1)
    return out


def completion_log_lik(topics: torch.Tensor, alpha: torch.Tensor, corpus: Corpus, seed: int = 0):
    """Document completion (Wallach et al. 2009, §4 "estimated θ" variant): for every held-out
    document estimate θ_d = E_q[θ_d] from the first half of its tokens (fold-in with the
    topics fixed), then score the second half: Σ_w c_dw log Σ_k θ_dk β_kw.

    Returns ``(log_lik, n_tokens)``: the total log-likelihood of all second halves and
    their token count. Perplexity is ``exp(-log_lik / n_tokens)``."""
    first, second = corpus.halves(seed)
    gamma = fold_in(first, topics, alpha)
    theta = gamma / gamma.sum(1, keepdim=True)
    p = (theta[second.doc] * topics.double().T[second.word]).sum(1)
    return float((second.count * torch.log(p.clamp_min(TINY))).sum()), second.n_tokens


def perplexity(topics: torch.Tensor, alpha: torch.Tensor, corpus: Corpus, seed: int = 0) -> float:
    """Held-out perplexity by document completion (see `completion_log_lik`)."""
    ll, n = completion_log_lik(topics, alpha, corpus, seed)
    return math.exp(-ll / n)


def umass_coherence(topics: torch.Tensor, corpus: Corpus, top_n: int = 10) -> torch.Tensor:
    """UMass topic coherence (Mimno et al. 2011) of each topic's ``top_n`` words, (K,):
    Σ_{m=2..M} Σ_{l<m} log((D(w_m, w_l) + 1) / D(w_l)), with D(·) document frequencies
    in ``corpus`` and words ordered by decreasing probability. Higher is better."""
    top = torch.argsort(topics, dim=1, descending=True)[:, :top_n]        # (K, M)
    cols = top.reshape(-1)
    uniq, inv = torch.unique(cols, return_inverse=True)
    pos = torch.full((corpus.vocab_size,), -1, dtype=torch.int64)
    pos[uniq] = torch.arange(len(uniq))
    sel = pos[corpus.word] >= 0
    present = torch.zeros(corpus.n_docs, len(uniq), dtype=torch.float64)   # (D, #top words) 0/1
    present[corpus.doc[sel], pos[corpus.word[sel]]] = 1.0
    B = present[:, inv].reshape(corpus.n_docs, *top.shape).permute(1, 0, 2)  # (K, D, M)
    co = B.transpose(1, 2) @ B                                             # (K, M, M) co-document counts
    df = torch.diagonal(co, dim1=1, dim2=2)                                # (K, M)
    M = top.shape[1]
    lower = torch.tril(torch.ones(M, M, dtype=torch.bool), -1)              # m > l
    score = torch.log((co + 1) / df[:, None, :].clamp_min(1))               # [k, m, l] uses D(w_l)
    return (score * lower).sum((1, 2))
