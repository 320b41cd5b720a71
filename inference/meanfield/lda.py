"""Batch coordinate-ascent variational inference (CAVI) for LDA.

Blei, Ng & Jordan (2003), §5 and Appendix A, for smoothed LDA: q(θ_d) = Dirichlet(γ_d),
q(z_dn) = Categorical(φ_dn), q(β_k) = Dirichlet(λ_k). One iteration:

  E-step  for all documents at once (`probgen.ops.lda.e_step`), warm-started from
          the previous γ: φ_dwk ∝ exp(E[log θ_dk] + E[log β_kw]),  γ_d = α + Σ_w c_dw φ_dw;
  M-step  λ_kw = η + Σ_d c_dw φ_dwk;
  optional empirical Bayes: α (asymmetric) and η by Minka's fixed point.

Every update maximises the ELBO in its own block of coordinates, so the ELBO recorded in
``fit.history`` (``"elbo"`` per document, with φ maximised out) never decreases.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from probgen import distributed
from probgen.corpus import Corpus
from probgen.fit import Fit
from probgen.ops import lda as lda_ops
from probgen.loops.iterative import LOOP, Update, restart_seeds, run
from probgen.registry import check_options, register

from .._lda import TopicModelMethod, hyperparameters, initial_lambda, make_fit, seeded_lambda

#: the probes' E-steps stop after this many sweeps per document (the winner's later steps
#: converge them): a probe only has to rank its start, and a cold E-step is the costly one
PROBE_E_STEP = 10

OPTIONS = ("tol", "n_init", "callback", "learn_alpha", "learn_eta", "e_step_tol", "max_e_step", "seed_docs",
           "probes", "probe_steps")


def elbo(corpus: Corpus, gamma: torch.Tensor, lam: torch.Tensor, alpha: torch.Tensor, eta: torch.Tensor,
         elog_beta: torch.Tensor | None = None) -> float:
    """The full ELBO of smoothed LDA with φ maximised out (``elog_beta`` =
    ``dirichlet_expectation(lam)`` when the caller has it)."""
    elog_beta = lda_ops.dirichlet_expectation(lam) if elog_beta is None else elog_beta
    return float(lda_ops.doc_bound(corpus, gamma, elog_beta, alpha).sum() + lda_ops.topic_bound(lam, eta, elog_beta))


@register
class LDACAVI(TopicModelMethod):
    engine = "meanfield"
    name = "lda-cavi"
    objective = "elbo"
    steps_unit = "CAVI iterations"
    device_hint = "its E-step is NumPy code, probgen.ops.lda.e_step"
    loop = LOOP
    parallel = "data"  # documents on their ranks; the topic-word expected counts summed
    missing_values = True  # NaN counts: the E-step renormalises over each document's observed words

    def fit(self, model: Any, data: Corpus, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = 1e-5, n_init: int = 1, callback: Callable | None = None,
            learn_alpha: bool = False, learn_eta: bool = False, e_step_tol: float = 1e-3, max_e_step: int = 100,
            seed_docs: int = 2, probes: int | None = None, probe_steps: int = 3, **options: Any) -> Fit:
        """``steps`` (default 200) outer iterations; stops early when the relative change of
        the ELBO falls below ``tol`` (`probgen.registry.converged`; ``None``: run every
        step); ``history`` records ``"elbo"`` per document. ``n_init`` restarts from
        independent seeds (the best final ELBO wins) and ``callback`` as in
        `probgen.loops.iterative.run`. ``learn_alpha`` / ``learn_eta``: empirical-Bayes
        updates of the hyperparameters. ``e_step_tol`` / ``max_e_step``: the per-document
        γ convergence rule inside each E-step. ``seed_docs``: without ``init["topics"]``,
        each topic starts from the counts of this many random documents (lda-c's "seeded"
        start, `seeded_lambda`); 0 gives the Gamma-noise start of the online engine.
        ``probes`` / ``probe_steps``: each restart's start is the best, by ELBO after
        ``probe_steps`` CAVI iterations, of ``probes`` random starts (the "short runs"
        strategy of Biernacki, Celeux & Govaert 2003); the winner goes on from where its
        probe ended; a probe's E-steps start every γ afresh (α + N_d/K, as scikit-learn's batch
        VB does), the winner's iterations warm from its last. ``probes=1`` is a single random
        start; the default, ``None``, is max(4, 2K) (`default_probes`). Without them one seeded start
        ended in merged topics on 7 of 30 simulated corpora (benchmarks/recovery.py), with
        an ELBO 15 nats per document below the truth's; the defaults recovered all 30."""
        check_options("meanfield", options, OPTIONS)
        probes = default_probes(model) if probes is None else probes
        if not isinstance(seed_docs, int) or isinstance(seed_docs, bool) or seed_docs < 0:
            raise ValueError(f"seed_docs must be a non-negative integer, got {seed_docs!r}")
        for name, v, least in (("probes", probes, 1), ("probe_steps", probe_steps, 0)):
            if not isinstance(v, int) or isinstance(v, bool) or v < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {v!r}")
        steps = 200 if steps is None else steps
        sweep = _Sweep(model, data, init, learn_alpha, learn_eta, e_step_tol, max_e_step, seed_docs,
                       probes if not (init and "topics" in init) else 1, probe_steps)
        result = run(sweep, objective=self.objective, steps=steps, tol=tol, seed=seed, n_init=n_init,
                     progress=progress, callback=callback, desc="lda cavi")
        q = result.state
        return make_fit(self, model, q["lambda"], q["alpha"], q["eta"], data, result.history,
                        {"lambda": q["lambda"], **result.fit_state()},
                        {"tol": tol, "n_init": n_init, "learn_alpha": learn_alpha, "learn_eta": learn_eta,
                         "probes": probes, "probe_steps": probe_steps})


def default_probes(model: Any) -> int:
    """The default number of CAVI's start probes, max(4, 2K): the more topics, the more ways a
    start has to merge two of them. On block-topic corpora (benchmarks/recovery.py, 300
    documents, V = 10K, seeds 0–9) K probes with warm-started γ recovered 10 of 10 at K = 4
    and 6 but 5 of 10 at K = 8 and 1 of 10 at K = 10; 2K probes of 3 steps each, their
    E-steps started cold, 10 of 10 at K = 4, 6, 8 and 10."""
    return max(4, 2 * int(model.k))


def probed_start(model: Any, data: Corpus, init: dict | None, seed: int | None, probes: int | None = None,
                 probe_steps: int = 3, seed_docs: int = 2, e_step_tol: float = 1e-3) -> torch.Tensor:
    """The (K, V) topic factor λ that CAVI starts from (`LDACAVI.fit`'s ``probes`` /
    ``probe_steps`` / ``seed_docs``): the best by ELBO of ``probes`` document-seeded starts
    after ``probe_steps`` CAVI iterations each (their E-steps capped at ``PROBE_E_STEP``
    sweeps, each document's stopping once its γ changes by less than ``e_step_tol``; ``None``:
    `default_probes`). Also the amortised encoder's start and, on a subsample, online VB's
    (`inference.svi.lda`)."""
    probes = default_probes(model) if probes is None else probes
    return _Sweep(model, data, init, False, False, e_step_tol, 100, seed_docs, probes,
                  probe_steps).start(seed)["lambda"]


class _Sweep:
    """One CAVI iteration for `probgen.loops.iterative.run`; the state holds γ, λ, α, η
    and E[log β] (digammas of λ, computed once per λ).

    Data-parallel (`statistics` / `update`): the document factors γ are local —
    each rank keeps its own documents' γ (warm starts included) and nothing of them travels;
    only the global part is summed: the topic–word expected counts Σ_d c_dw φ_dwk, the number
    of documents, Σ_d E[log θ_d] (for ``learn_alpha``) and the histogram of E-step sweeps.
    The ELBO needs every document's bound at the *new* λ, so `update` sums that one
    scalar in a second ``all_reduce``.

    The start probes ``probes`` random starts for ``probe_steps`` iterations each (data-parallel
    too: every rank takes part in the probes' reductions) and keeps the best by ELBO; its γ
    stays on the rank (``_local_gamma``) while the driver broadcasts the global part."""

    def __init__(self, model: Any, data: Corpus, init: dict | None, learn_alpha: bool, learn_eta: bool,
                 e_step_tol: float, max_e_step: int, seed_docs: int, probes: int = 1, probe_steps: int = 0):
        self.model, self.data, self.init = model, data, init
        self.learn_alpha, self.learn_eta = learn_alpha, learn_eta
        self.e_step_tol, self.max_e_step, self.seed_docs = e_step_tol, max_e_step, seed_docs
        self.probes, self.probe_steps = probes, probe_steps
        self._local_gamma = None

    def start(self, seed: int | None) -> dict:
        if self.probes == 1 or self.probe_steps == 0:
            return self._random_start(seed)
        ctx = distributed.current()
        best, best_value = None, -float("inf")
        full, self.max_e_step = self.max_e_step, min(self.max_e_step, PROBE_E_STEP)
        for s in restart_seeds(seed, self.probes):
            q = self._random_start(s)
            for _ in range(self.probe_steps):
                # every probe E-step starts γ afresh: warm-started γ holds a probe in the
                # merged topics its first E-step found (block corpora at K = 10, 2K probes:
                # 3 of 10 recovered warm with 2 or 4 steps, 10 of 10 cold with 3; `default_probes`)
                q = dict(q, gamma=None)
                update = self.step(q) if ctx is None else self.update(q, ctx.sum(self.statistics(q)))
                q, value = update.state, update.objective
            if value > best_value:  # the earliest probe on a tie
                best, best_value = q, value
        self.max_e_step = full
        if ctx is not None:  # the document factors are this rank's: kept here, not broadcast
            self._local_gamma, best = best["gamma"], dict(best, gamma=None)
        return best

    def _warm_gamma(self, q: dict) -> torch.Tensor | None:
        if q["gamma"] is None and self._local_gamma is not None:
            gamma, self._local_gamma = self._local_gamma, None
            return gamma
        return q["gamma"]

    def _random_start(self, seed: int | None) -> dict:
        model, data, init = self.model, self.data, self.init
        alpha, eta = hyperparameters(model, init)
        if self.seed_docs and not (init and "topics" in init):
            lam = seeded_lambda(data, model.k, eta, self.seed_docs, seed)
        else:
            lam = initial_lambda(model, data, eta, init, seed)
        return {"gamma": None, "lambda": lam, "alpha": alpha, "eta": eta,
                "elog_beta": lda_ops.dirichlet_expectation(lam)}

    def step(self, q: dict) -> Update:
        data, alpha, eta = self.data, q["alpha"], q["eta"]
        gamma, sstats, inner = lda_ops.e_step(data, q["elog_beta"], alpha, self._warm_gamma(q), max_iter=self.max_e_step,
                                              tol=self.e_step_tol)
        lam = eta + sstats
        if self.learn_alpha:
            alpha = lda_ops.update_alpha(alpha, lda_ops.dirichlet_expectation(gamma).mean(0))
        if self.learn_eta:
            eta = lda_ops.update_eta(eta, lda_ops.dirichlet_expectation(lam).mean(), self.model.vocab_size)
            lam = eta + sstats  # λ's optimum moves with η (still a coordinate maximisation)
        elog_beta = lda_ops.dirichlet_expectation(lam)
        value = elbo(data, gamma, lam, alpha, eta, elog_beta) / data.n_docs  # per document
        return Update({"gamma": gamma, "lambda": lam, "alpha": alpha, "eta": eta, "elog_beta": elog_beta},
                      value, {"e_step_iterations": inner})

    def statistics(self, q: dict) -> dict:
        gamma, sstats, inner = lda_ops.e_step(self.data, q["elog_beta"], q["alpha"], self._warm_gamma(q),
                                              max_iter=self.max_e_step, tol=self.e_step_tol)
        self._gamma = gamma  # this rank's documents' factors: local, handed to update
        sweeps = torch.zeros(self.max_e_step + 1, dtype=torch.float64)
        sweeps[inner] = 1.0  # summed over ranks: the slowest document's count is the highest non-zero bin
        out = {"sstats": sstats, "n_docs": torch.tensor(float(self.data.n_docs), dtype=torch.float64),
               "sweeps": sweeps}
        if self.learn_alpha:
            out["elog_theta"] = lda_ops.dirichlet_expectation(gamma).sum(0)
        return out

    def update(self, q: dict, s: dict) -> Update:
        gamma, alpha, eta, sstats, n_docs = self._gamma, q["alpha"], q["eta"], s["sstats"], s["n_docs"]
        lam = eta + sstats
        if self.learn_alpha:
            alpha = lda_ops.update_alpha(alpha, s["elog_theta"] / n_docs)
        if self.learn_eta:
            eta = lda_ops.update_eta(eta, lda_ops.dirichlet_expectation(lam).mean(), self.model.vocab_size)
            lam = eta + sstats
        elog_beta = lda_ops.dirichlet_expectation(lam)
        bound = lda_ops.doc_bound(self.data, gamma, elog_beta, alpha).sum()
        ctx = distributed.current()
        if ctx is not None:  # the documents' bound at the new λ: the one value a second all_reduce sums
            bound = ctx.sum({"bound": bound})["bound"]
        value = float(bound + lda_ops.topic_bound(lam, eta, elog_beta)) / float(n_docs)
        inner = int(s["sweeps"].nonzero().max())
        return Update({"gamma": gamma, "lambda": lam, "alpha": alpha, "eta": eta, "elog_beta": elog_beta},
                      value, {"e_step_iterations": inner})
