"""The common base of the LDA methods of every engine (meanfield CAVI, online SVI,
collapsed Gibbs): their starting values (hyperparameters, the starting topic factor) and
`TopicModelMethod` — per-document evaluation (a bound on log p(w_d | topics, α) by
fold-in), sampling and the ``doc_topics`` query. What a topic model offers is
`probgen.protocols.TopicModel`; the maths lives in `probgen.ops.lda`."""
from __future__ import annotations

from typing import Any

import torch

from probgen import distributed, protocols
from probgen.corpus import Corpus
from probgen.fit import Fit
from probgen.ops import lda as lda_ops
from probgen.random import generator
from probgen.registry import Method

NEEDS = "a topic model (a Program with k, vocab_size, alpha_vector, eta_tensor, over a Corpus)"


def hyperparameters(model: Any, init: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(α (K,), η scalar) as float64, from ``init`` where given, else the declaration."""
    init = init or {}
    alpha = torch.as_tensor(init.get("alpha", model.alpha_vector), dtype=torch.float64).expand(model.k).clone()
    eta = torch.as_tensor(init.get("eta", model.eta_tensor), dtype=torch.float64).reshape(())
    if not ((alpha > 0).all() and eta > 0):
        raise ValueError("init alpha and eta must be positive")
    return alpha, eta


def initial_lambda(model: Any, corpus: Corpus, eta: torch.Tensor, init: dict | None, seed: int | None) -> torch.Tensor:
    """The (K, V) starting topic factor λ: from ``init["topics"]`` (as if each topic had
    seen N/K tokens), else Gamma(100, 1/100) noise around 1 (Hoffman et al. 2010; the
    random symmetry breaking scikit-learn uses)."""
    K, V = model.k, model.vocab_size
    if init and "topics" in init:
        topics = torch.as_tensor(init["topics"], dtype=torch.float64)
        if topics.shape != (K, V) or (topics < 0).any():
            raise ValueError(f"init['topics'] must be a non-negative ({K}, {V}) matrix, got shape {tuple(topics.shape)}")
        topics = topics / topics.sum(1, keepdim=True)
        tokens = float(corpus.n_tokens)
        ctx = distributed.current()
        if ctx is not None:  # data-parallel: every rank's tokens, as one process would count them
            tokens = float(ctx.sum({"tokens": torch.tensor(tokens, dtype=torch.float64)})["tokens"])
        return eta + topics * (tokens / K)
    g = generator(seed)
    return torch._standard_gamma(torch.full((K, V), 100.0, dtype=torch.float64), generator=g) / 100.0


def seeded_lambda(corpus: Corpus, k: int, eta: torch.Tensor, n_docs: int, seed: int | None) -> torch.Tensor:
    """The (K, V) starting λ of the "seeded" initialisation of Blei's lda-c: topic k starts
    from the word counts of ``n_docs`` distinct random documents (plus Gamma(100, 1/100)
    noise around 1 on every word), normalised and given N/K pseudo-tokens like an
    ``init["topics"]`` start. It breaks the topics' symmetry with real co-occurrences
    instead of noise alone, which leads batch CAVI to better local optima (measured in
    benchmarks/lda.py: higher final ELBO and lower held-out perplexity on the Lee corpus)."""
    g = generator(seed)
    noise = torch._standard_gamma(torch.full((k, corpus.vocab_size), 100.0, dtype=torch.float64), generator=g) / 100.0
    n_docs = min(n_docs, corpus.n_docs // k) if corpus.n_docs >= k else 1
    picks = torch.randperm(corpus.n_docs, generator=g)[:k * n_docs] if corpus.n_docs >= k else \
        torch.randint(0, corpus.n_docs, (k,), generator=g)
    owner = torch.full((corpus.n_docs,), -1, dtype=torch.int64)
    owner[picks] = torch.arange(len(picks)) // n_docs                      # topic seeded by each picked doc
    sel = owner[corpus.doc] >= 0
    counts = torch.zeros(k, corpus.vocab_size, dtype=torch.float64)
    counts.index_put_((owner[corpus.doc[sel]], corpus.word[sel]), corpus.count[sel], accumulate=True)
    topics = noise + counts
    return eta + topics / topics.sum(1, keepdim=True) * (corpus.n_tokens / k)




class TopicModelMethod(Method):
    """Evaluation, sampling and queries shared by the LDA methods."""

    log_prob_kind = "bound"
    queries = ("doc_topics", "impute")
    needs = NEEDS

    def accepts(self, model: Any) -> bool:
        return protocols.implements(model, protocols.TopicModel)

    def log_prob(self, fit: Fit, x: Any, **options: Any) -> torch.Tensor:
        """Per-document lower bound on log p(w_d | topics, α) (the token sequence's
        probability with θ_d integrated out), by fold-in with the fitted topics fixed; for a
        document with missing counts (NaN), the bound on the probability of its observed
        tokens (`probgen.ops.lda.missing_log_scale`)."""
        corpus = fit.model.check_data(x)
        topics, alpha = fit.params["topics"].double(), fit.params["alpha"].double()
        gamma = lda_ops.fold_in(corpus, topics, alpha)
        return lda_ops.doc_bound(corpus, gamma, torch.log(topics.clamp_min(lda_ops.TINY)), alpha)

    def sample(self, fit: Fit, n: int, seed: int | None = None) -> list[torch.Tensor]:
        """``n`` new documents (token-id tensors) of about the training documents' mean length."""
        return fit.model.sample(fit.params, n, seed=seed, length=fit.state.get("mean_length", 50.0))

    def infer(self, model: Any, params: dict | None, data: Any, query: str, **options: Any) -> torch.Tensor:
        """``query="doc_topics"``: E[θ_d] (D, K) for each document, by fold-in with the
        fitted topics fixed. ``query="impute"``: the (D, V) count matrix with each missing
        (NaN) count replaced by its expected value (convention:
        `probgen.ops.lda.impute_counts`)."""
        if params is None:
            raise ValueError(f"the {query} query needs fitted topics: pass a Fit, not a declaration")
        corpus = model.check_data(data)
        if query == "impute":
            return lda_ops.impute_counts(corpus, params["topics"], params["alpha"])
        gamma = lda_ops.fold_in(corpus, params["topics"], params["alpha"])
        return gamma / gamma.sum(1, keepdim=True)


def make_fit(method: Method, model: Any, lam_or_topics: torch.Tensor, alpha: torch.Tensor, eta: torch.Tensor,
             corpus: Corpus, history: list, state: dict, options: dict) -> Fit:
    topics = lam_or_topics / lam_or_topics.sum(1, keepdim=True)
    mean_length = float(corpus.lengths.mean())
    ctx = distributed.current()
    if ctx is not None and ctx.parallel == "data":  # the mean document length of every rank's documents
        tot = ctx.sum({"tokens": corpus.lengths.sum().double(),
                       "docs": torch.tensor(float(corpus.n_docs), dtype=torch.float64)})
        mean_length = float(tot["tokens"] / tot["docs"])
    state = dict(state, mean_length=mean_length)
    return Fit(model, {"topics": topics, "alpha": alpha.clone(), "eta": eta.clone()}, history,
               engine=method.engine, method=method.name, state=state, options=options)
