"""Batch coordinate-ascent variational inference (CAVI) for LDA.

Blei, Ng & Jordan (2003), §5 and Appendix A, for smoothed LDA: q(θ_d) = Dirichlet(γ_d),
q(z_dn) = Categorical(φ_dn), q(β_k) = Dirichlet(λ_k). One iteration:

  E-step  for all documents at once (:func:`probgen.ops.lda.e_step`), warm-started from
          the previous γ: φ_dwk ∝ exp(E[log θ_dk] + E[log β_kw]),  γ_d = α + Σ_w c_dw φ_dw;
  M-step  λ_kw = η + Σ_d c_dw φ_dwk;
  optional empirical Bayes: α (asymmetric) and η by Minka's fixed point.

Every update maximises the ELBO in its own block of coordinates, so the ELBO recorded in
``fit.history`` (``"elbo"`` per document, with φ maximised out) never decreases.
"""
from __future__ import annotations

from typing import Any

import torch

from probgen.corpus import Corpus
from probgen.fit import Fit
from probgen.ops import lda as lda_ops
from probgen.progress import progress as bar
from probgen.registry import check_options, check_tol, converged, register

from .._lda import TopicModelMethod, hyperparameters, initial_lambda, make_fit, seeded_lambda

OPTIONS = ("tol", "learn_alpha", "learn_eta", "e_step_tol", "max_e_step", "seed_docs")


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

    def fit(self, model: Any, data: Corpus, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, tol: float | None = 1e-5, learn_alpha: bool = False, learn_eta: bool = False,
            e_step_tol: float = 1e-3, max_e_step: int = 100, seed_docs: int = 2, **options: Any) -> Fit:
        """``steps`` (default 200) outer iterations; stops early when the relative change of
        the ELBO falls below ``tol`` (:func:`probgen.registry.converged`; ``None``: run every
        step); ``history`` records ``"elbo"`` per document. ``learn_alpha`` / ``learn_eta``: empirical-Bayes
        updates of the hyperparameters. ``e_step_tol`` / ``max_e_step``: the per-document
        γ convergence rule inside each E-step. ``seed_docs``: without ``init["topics"]``,
        each topic starts from the counts of this many random documents (lda-c's "seeded"
        start, :func:`seeded_lambda`); 0 gives the Gamma-noise start of the online engine."""
        check_options("meanfield", options, OPTIONS)
        check_tol(tol)
        steps = 200 if steps is None else steps
        alpha, eta = hyperparameters(model, init)
        if not isinstance(seed_docs, int) or seed_docs < 0:
            raise ValueError(f"seed_docs must be a non-negative integer, got {seed_docs!r}")
        if seed_docs and not (init and "topics" in init):
            lam = seeded_lambda(data, model.k, eta, seed_docs, seed)
        else:
            lam = initial_lambda(model, data, eta, init, seed)
        gamma, history, prev = None, [], None
        elog_beta = lda_ops.dirichlet_expectation(lam)   # (K, V) digammas: computed once per λ
        for it in bar(range(steps), desc="lda cavi", enabled=progress):
            gamma, sstats, inner = lda_ops.e_step(data, elog_beta, alpha, gamma, max_iter=max_e_step, tol=e_step_tol)
            lam = eta + sstats
            if learn_alpha:
                alpha = lda_ops.update_alpha(alpha, lda_ops.dirichlet_expectation(gamma).mean(0))
            if learn_eta:
                eta = lda_ops.update_eta(eta, lda_ops.dirichlet_expectation(lam).mean(), model.vocab_size)
                lam = eta + sstats  # λ's optimum moves with η (still a coordinate maximisation)
            elog_beta = lda_ops.dirichlet_expectation(lam)
            value = elbo(data, gamma, lam, alpha, eta, elog_beta) / data.n_docs  # per document
            history.append({"step": it, "elbo": value, "e_step_iterations": inner})
            if converged(prev, value, tol):
                break
            prev = value
        return make_fit(self, model, lam, alpha, eta, data, history, {"lambda": lam},
                        {"tol": tol, "learn_alpha": learn_alpha, "learn_eta": learn_eta})
