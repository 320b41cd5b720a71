"""Collapsed Gibbs sampling for LDA (Griffiths & Steyvers 2004).

θ and β are integrated out; the chain moves the topic assignment z_i of one token at a
time from its full conditional

    p(z_i = k | z_−i, w) ∝ (n_dk^−i + α_k) (n_kw^−i + η) / (n_k^−i + V η),

where n_dk, n_kw, n_k are the document–topic, topic–word and topic counts without token i.

Exactness versus vectorisation: every token's conditional depends on the counts left by
the token before it (n_k couples all tokens, n_kw all tokens of a word), so updating
tokens in parallel (as "approximate distributed LDA" does) samples a different chain.
This kernel keeps the exact sequential sweep within a chain and vectorises over chains,
which are independent: all chains' assignments are one (chains, tokens) array and one
call of the compiled (Numba) `gibbs_sweeps` moves every chain one sweep, reading
one pre-drawn U(0, 1) per chain and token (each chain's own NumPy generator, so a chain
is the same whether it runs alone or beside others). About 0.09 µs per token and chain at
K = 10 (benchmarks/gibbs_chains.py; the interpreted loop it replaced: 2 µs).

Estimates: the topics are the posterior mean of β, averaged over the kept sweeps
(after ``warmup`` sweeps) of every chain, each chain's topics first matched to chain 0's
(`aligned`: the labels are exchangeable): E[β_kw | z] = (n_kw + η) / (n_k + V η).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from probgen.corpus import Corpus
from probgen.fit import Fit
from probgen.loops.mcmc import Kernel, check_budget, run
from probgen.registry import check_options, register

from .._lda import TopicModelMethod, hyperparameters, make_fit

OPTIONS = ("warmup", "num_chains", "thin", "callback", "probes", "probe_sweeps")


def gibbs_sweeps(z: np.ndarray, w: np.ndarray, d: np.ndarray, ndk: np.ndarray, nwk: np.ndarray, nk: np.ndarray,
                 alpha: np.ndarray, eta: float, u: np.ndarray) -> None:
    """One exact sequential sweep over all tokens of every chain, in place: the compiled
    `inference.mcmc._lda_kernels.gibbs_sweeps` (its docstring gives the shapes), imported on
    the first call."""
    from ._lda_kernels import gibbs_sweeps as compiled
    compiled(z, w, d, ndk, nwk, nk, alpha, eta, u)


def log_joint(ndk: np.ndarray, nwk: np.ndarray, nk: np.ndarray, alpha: np.ndarray, eta: float) -> Any:
    """log p(w, z | α, η) with θ and β integrated out (Griffiths & Steyvers 2004, eq. 2–3):
    ndk (..., D, K), nwk (..., V, K), nk (..., K), any leading chain axes; a float without
    them, else a (...) array."""
    t = torch.as_tensor
    a, V, D, K = t(alpha), nwk.shape[-2], ndk.shape[-2], nwk.shape[-1]
    n_dk, n_wk = t(ndk), t(nwk)
    docs = (torch.lgamma(a.sum()) - torch.lgamma(a).sum()) * D \
        + torch.lgamma(n_dk + a).sum((-2, -1)) - torch.lgamma(n_dk.sum(-1) + a.sum()).sum(-1)
    e = torch.tensor(eta, dtype=torch.float64)
    topics = (torch.lgamma(V * e) - V * torch.lgamma(e)) * K \
        + torch.lgamma(n_wk + e).sum((-2, -1)) - torch.lgamma(t(nk) + V * e).sum(-1)
    out = docs + topics
    return float(out) if out.dim() == 0 else out.numpy()


def aligned(per_chain: Any) -> Any:
    """Per-chain topic sums ``(C, K, V)`` with every chain's topics relabelled to match chain
    0's. Topic labels are exchangeable in LDA, so independent chains find the same topics in
    different orders (label switching, Stephens 2000); averaging them unmatched blurs the
    topics together. Chain c's permutation minimises the total L1 distance between its
    normalised topics and chain 0's (an assignment problem, solved exactly by
    `scipy.optimize.linear_sum_assignment`). Within one chain a collapsed Gibbs sampler
    does not switch labels in practice, so its kept sweeps are summed as they are."""
    from scipy.optimize import linear_sum_assignment

    per_chain = np.asarray(per_chain, dtype=np.float64)
    if per_chain.shape[0] < 2:
        return per_chain
    unit = per_chain / per_chain.sum(-1, keepdims=True)
    out = per_chain.copy()
    for c in range(1, per_chain.shape[0]):   # a handful of chains: K×K assignments, not a hot path
        _, order = linear_sum_assignment(np.abs(unit[0][:, None, :] - unit[c][None, :, :]).sum(-1))
        out[c] = per_chain[c][order]
    return out


class CollapsedGibbs(Kernel):
    """One exact sequential sweep of every chain (`gibbs_sweeps`) per transition,
    vectorised over chains. State: the (C, N) assignments, the (C, D, K), (C, V, K), (C, K)
    counts and one NumPy generator per chain (seeded by the chain's seed: chain c's draws are
    the same alone or beside others). The kept draw is each chain's sweep estimate
    E[β | z] = (n_kw + η) / (n_k + V η), (C, K, V), only averaged over kept sweeps
    (``averaged``: a (K, V) table per sweep is not stored); statistics: the collapsed
    log p(w, z) per document, one per chain."""

    vectorised = True
    record_warmup = True
    averaged = ("topics",)
    name = "lda gibbs"

    def __init__(self, k: int, vocab_size: int, w: np.ndarray, d: np.ndarray, n_docs: int, alpha: np.ndarray,
                 eta: float, start: np.ndarray | None, probes: int = 1, probe_sweeps: int = 0):
        self.k, self.v, self.w, self.d, self.n_docs = k, vocab_size, w, d, n_docs
        self.alpha, self.eta, self.start = alpha, eta, start
        self.probes, self.probe_sweeps = probes, probe_sweeps

    def _start_one(self, rng: np.random.Generator) -> np.ndarray:
        K, w = self.k, self.w
        if self.start is not None:  # start from z_i ~ topics[:, w_i] (normalised)
            p = self.start[:, w].T
            cdf = np.cumsum(p / p.sum(1, keepdims=True), 1)
            return np.minimum((cdf < rng.random(len(w))[:, None]).sum(1), K - 1)
        return rng.integers(0, K, size=len(w))

    def _states(self, rngs: list) -> dict:
        z = np.stack([self._start_one(r) for r in rngs]).astype(np.int64)          # (C, N)
        C, K, w, d = len(rngs), self.k, self.w, self.d
        ndk, nwk = np.zeros((C, self.n_docs, K)), np.zeros((C, self.v, K))
        chain = np.repeat(np.arange(C), len(w))
        np.add.at(ndk, (chain, np.tile(d, C), z.ravel()), 1.0)
        np.add.at(nwk, (chain, np.tile(w, C), z.ravel()), 1.0)
        return {"rngs": rngs, "z": z, "ndk": ndk, "nwk": nwk, "nk": nwk.sum(1)}

    def init(self, seeds: Any, chains: Any, warmup: int) -> dict:
        """Every chain's start. With ``probes > 1`` a chain's start is the best, by the
        collapsed log p(w, z) after ``probe_sweeps`` sweeps, of ``probes`` random starts, all
        moved together (one batch of chains × probes); the candidates' generators derive from
        the chain's seed alone (its own generator and ``probes − 1`` spawned from it), so a
        chain is still the same alone or beside others. Choosing where a chain starts leaves
        its stationary distribution alone: it only shortens the time stuck in a poor mode."""
        rngs = [np.random.default_rng(s) for s in seeds]
        if self.probes == 1 or self.probe_sweeps == 0:
            return self._states(rngs)
        P = self.probes
        cands = [r for rng in rngs for r in [rng] + rng.spawn(P - 1)]              # chain-major
        state = self._states(cands)
        for _ in range(self.probe_sweeps):
            self.step(state, True)
        score = np.asarray(log_joint(state["ndk"], state["nwk"], state["nk"], self.alpha, self.eta)).reshape(-1, P)
        best = np.arange(len(rngs)) * P + score.argmax(1)                          # the earliest on a tie
        return {"rngs": [cands[i] for i in best], "z": state["z"][best].copy(), "ndk": state["ndk"][best].copy(),
                "nwk": state["nwk"][best].copy(), "nk": state["nk"][best].copy()}

    def step(self, state: dict, warmup: bool) -> dict:
        u = np.stack([r.random(len(self.w)) for r in state["rngs"]])
        gibbs_sweeps(state["z"], self.w, self.d, state["ndk"], state["nwk"], state["nk"], self.alpha, self.eta, u)
        return state

    def draw(self, state: dict) -> dict:
        return {"topics": ((state["nwk"] + self.eta) / (state["nk"][:, None, :] + self.v * self.eta)).transpose(0, 2, 1)}

    def stats(self, state: dict) -> dict:
        # per document, one value per chain
        return {"log_joint": (log_joint(state["ndk"], state["nwk"], state["nk"], self.alpha, self.eta)
                              / self.n_docs).tolist()}


@register
class LDACollapsedGibbs(TopicModelMethod):
    engine = "mcmc"
    name = "lda-gibbs"
    objective = "log_joint"
    steps_unit = "sweeps per chain after warmup (every thin-th kept)"
    log_prob_kind = "bound"

    def fit(self, model: Any, data: Corpus, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, warmup: int | None = None, num_chains: int = 1, thin: int = 1, callback: Any = None,
            probes: int = 4, probe_sweeps: int = 20, **options: Any) -> Fit:
        """``steps`` sweeps (default 200) after ``warmup`` sweeps (default ``steps``), in
        ``num_chains`` chains; the topic estimate averages every ``thin``-th of them over all
        chains. ``history`` records the collapsed log p(w, z) per document of each sweep
        (``"warmup"``: discarded; ``"chain"``); ``fit.state["z"]`` is the first chain's last state.
        ``probes`` / ``probe_sweeps``: each chain starts from the best, by collapsed log p(w, z)
        after ``probe_sweeps`` sweeps, of ``probes`` random starts (`CollapsedGibbs.init`;
        ``probes=1``: one random start). From one start a chain stayed in merged topics
        (log p(w, z) 20 nats per document below the truth's) through 3 000 sweeps on one of ten
        simulated corpora (benchmarks/recovery.py)."""
        check_options("mcmc", options, OPTIONS)
        for name, v, least in (("probes", probes, 1), ("probe_sweeps", probe_sweeps, 0)):
            if not isinstance(v, int) or isinstance(v, bool) or v < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {v!r}")
        steps = 200 if steps is None else steps
        warmup = steps if warmup is None else warmup
        check_budget(steps, warmup, num_chains, thin)
        alpha_t, eta_t = hyperparameters(model, init)
        alpha, eta = alpha_t.numpy(), float(eta_t)
        tokens = data.token_lists()
        w = torch.cat(tokens).numpy().astype(np.int64)
        d = np.repeat(np.arange(data.n_docs), [len(t) for t in tokens])
        start = torch.as_tensor(init["topics"], dtype=torch.float64).numpy() if init and "topics" in init else None
        kernel = CollapsedGibbs(model.k, model.vocab_size, w, d, data.n_docs, alpha, eta, start,
                                probes if start is None else 1, probe_sweeps)
        chains = run(kernel, steps=steps, warmup=warmup, num_chains=num_chains, thin=thin, seed=seed,
                     progress=progress, callback=callback)
        last = chains.states  # this process's chains (under torch.distributed, its block of them)
        if chains.kept == 0:  # no kept sweep (steps=0): the first chain's current estimate
            topic_sum, kept = kernel.draw(last)["topics"][0], 1
        else:
            topic_sum, kept = aligned(chains.sums["topics"]).sum(0), chains.kept   # all chains' kept sweeps
        topics = torch.as_tensor(topic_sum / kept)
        state = {"z": torch.as_tensor(last["z"][0]), "kept": kept, "draws": chains.draws,
                 "sample_stats": chains.stats}
        return make_fit(self, model, topics, alpha_t, eta_t, data, history=chains.history, state=state,
                        options={"warmup": warmup, "num_chains": num_chains, "thin": thin, "probes": probes,
                                 "probe_sweeps": probe_sweeps})
