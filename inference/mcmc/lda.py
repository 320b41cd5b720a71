"""Collapsed Gibbs sampling for LDA (Griffiths & Steyvers 2004).

θ and β are integrated out; the chain moves the topic assignment z_i of one token at a
time from its full conditional

    p(z_i = k | z_−i, w) ∝ (n_dk^−i + α_k) (n_kw^−i + η) / (n_k^−i + V η),

where n_dk, n_kw, n_k are the document–topic, topic–word and topic counts without token i.

Exactness versus vectorisation: every token's conditional depends on the counts left by
the token before it (n_k couples all tokens, n_kw all tokens of a word), so updating
tokens in parallel (as "approximate distributed LDA" does) samples a different chain.
This kernel keeps the exact sequential sweep, as a tight loop over plain Python lists
(rows of n_dk and n_kw; all random numbers of a sweep drawn at once by NumPy), which
measured 6x faster than per-token NumPy calls at K = 10. It is still an interpreted loop
over tokens, about 3 µs per token at K = 10 on one core: use it for small corpora and as
a check on the variational engines.

Estimates: the topics are the posterior mean of β, averaged over the kept sweeps
(after ``warmup`` sweeps): E[β_kw | z] = (n_kw + η) / (n_k + V η).
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Any

import numpy as np
import torch

from probgen.corpus import Corpus
from probgen.fit import Fit
from probgen.progress import progress as bar
from probgen.registry import check_options, register

from .._lda import TopicModelMethod, hyperparameters, make_fit

OPTIONS = ("warmup", "thin")


def gibbs_sweep(z: list, w: list, d: list, ndk: list, nwk: list, nk: list, alpha: list, eta: float,
                u: list) -> None:
    """One exact sequential sweep over all tokens, in place, on plain Python lists.

    z, w, d, u (N,) — topic, word, document and a U(0, 1) draw per token; ndk (D rows of
    K), nwk (V rows of K), nk (K,) counts; alpha (K,). Lists, not NumPy: for K up to ~100
    a Python loop over K floats costs less than the ~1 µs call overhead of each of the
    ~10 NumPy operations per token (measured 2.8 µs vs 17.8 µs per token at K = 10)."""
    v_eta = eta * len(nwk)
    K = len(nk)
    topics = range(K)
    cdf = [0.0] * K
    for i in range(len(z)):
        k, row_w, row_d = z[i], nwk[w[i]], ndk[d[i]]
        row_d[k] -= 1.0
        row_w[k] -= 1.0
        nk[k] -= 1.0
        acc = 0.0
        for j in topics:
            acc += (row_d[j] + alpha[j]) * (row_w[j] + eta) / (nk[j] + v_eta)
            cdf[j] = acc
        k = bisect_left(cdf, u[i] * acc)
        if k >= K:
            k = K - 1
        z[i] = k
        row_d[k] += 1.0
        row_w[k] += 1.0
        nk[k] += 1.0


def log_joint(ndk: np.ndarray, nwk: np.ndarray, nk: np.ndarray, alpha: np.ndarray, eta: float) -> float:
    """log p(w, z | α, η) with θ and β integrated out (Griffiths & Steyvers 2004, eq. 2–3)."""
    t = torch.as_tensor
    a, V = t(alpha), nwk.shape[0]
    docs = (torch.lgamma(a.sum()) - torch.lgamma(a).sum()) * ndk.shape[0] \
        + torch.lgamma(t(ndk) + a).sum() - torch.lgamma(t(ndk).sum(1) + a.sum()).sum()
    e = torch.tensor(eta, dtype=torch.float64)
    topics = (torch.lgamma(V * e) - V * torch.lgamma(e)) * nwk.shape[1] \
        + torch.lgamma(t(nwk) + e).sum() - torch.lgamma(t(nk) + V * e).sum()
    return float(docs + topics)


@register
class LDACollapsedGibbs(TopicModelMethod):
    engine = "mcmc"
    name = "lda-gibbs"
    objective = "log_joint"
    steps_unit = "sweeps kept after warmup"
    log_prob_kind = "bound"

    def fit(self, model: Any, data: Corpus, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, warmup: int | None = None, thin: int = 1, **options: Any) -> Fit:
        """``steps`` kept sweeps (default 200) after ``warmup`` sweeps (default ``steps``);
        the topic estimate averages every ``thin``-th kept sweep. ``history`` records the
        collapsed log p(w, z) per document of each sweep (``"warmup"``: discarded)."""
        check_options("mcmc", options, OPTIONS)
        steps = 200 if steps is None else steps
        warmup = steps if warmup is None else warmup
        if warmup < 0 or not isinstance(thin, int) or thin < 1:
            raise ValueError(f"need warmup >= 0 and thin >= 1, got warmup={warmup}, thin={thin}")
        alpha_t, eta_t = hyperparameters(model, init)
        alpha, eta = alpha_t.numpy(), float(eta_t)
        K, V, D = model.k, model.vocab_size, data.n_docs
        rng = np.random.default_rng(seed)
        tokens = data.token_lists()
        w = torch.cat(tokens).numpy().astype(np.int64)
        d = np.repeat(np.arange(D), [len(t) for t in tokens])
        if init and "topics" in init:  # start from z_i ~ topics[:, w_i] (normalised)
            p = torch.as_tensor(init["topics"], dtype=torch.float64).numpy()[:, w].T
            cdf = np.cumsum(p / p.sum(1, keepdims=True), 1)
            z = np.minimum((cdf < rng.random(len(w))[:, None]).sum(1), K - 1)
        else:
            z = rng.integers(0, K, size=len(w))
        ndk, nwk = np.zeros((D, K)), np.zeros((V, K))
        np.add.at(ndk, (d, z), 1.0)
        np.add.at(nwk, (w, z), 1.0)
        # the kernel works on Python lists (see gibbs_sweep); NumPy views are made per sweep
        zl, wl, dl = z.tolist(), w.tolist(), d.tolist()
        ndl, nwl, nkl, al = ndk.tolist(), nwk.tolist(), nwk.sum(0).tolist(), alpha.tolist()
        topic_sum, kept, history = np.zeros((K, V)), 0, []
        for sweep in bar(range(warmup + steps), desc="lda gibbs", enabled=progress):
            gibbs_sweep(zl, wl, dl, ndl, nwl, nkl, al, eta, rng.random(len(zl)).tolist())
            ndk, nwk, nk = np.array(ndl), np.array(nwl), np.array(nkl)
            if sweep >= warmup and (sweep - warmup) % thin == 0:
                topic_sum += ((nwk + eta) / (nk + V * eta)).T
                kept += 1
            history.append({"step": sweep, "log_joint": log_joint(ndk, nwk, nk, alpha, eta) / D,  # per document
                            "warmup": sweep < warmup})
        z = np.array(zl)
        if kept == 0:  # no kept sweep (steps=0): the current state's estimate
            topic_sum, kept = ((nwk + eta) / (nk + V * eta)).T, 1
        topics = torch.as_tensor(topic_sum / kept)
        state = {"z": torch.as_tensor(z), "kept": kept}
        return make_fit(self, model, topics, alpha_t, eta_t, data, history, state,
                        {"warmup": warmup, "thin": thin})
