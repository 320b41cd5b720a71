"""Latent Dirichlet allocation (Blei, Ng & Jordan 2003), smoothed: a Pyro program over documents.

Generative story, for K topics over a V-word vocabulary::

    β_k ~ Dirichlet(η)                 k = 1..K      (topic–word distributions, ``topics``)
    θ_d ~ Dirichlet(α)                 d = 1..D      (document–topic proportions)
    z_dn ~ Categorical(θ_d),  w_dn ~ Categorical(β_{z_dn})    n = 1..N_d

The program sums z out (w_dn ~ Categorical(θ_d β)) and treats ``topics`` as a parameter
(a point estimate for β, whose MAP under the program's Dirichlet(η + 1) factor is the
posterior mean under Dirichlet(η); Bayesian for θ). Engines:
``meanfield`` (CAVI, the default), ``svi`` (online VB; ``inference="amortized"`` for an
encoder network), ``mcmc`` (collapsed Gibbs).

Parameters (``fit.params``): ``topics`` (K, V) rows on the simplex; ``alpha`` (K,);
``eta`` (scalar tensor).

Data: a list of token-id lists, a dense or sparse (D, V) count matrix, a
``(documents, vocabulary)`` tuple, or a `probgen.corpus.Corpus`.
"""
from __future__ import annotations

import gzip
from importlib import resources
from typing import Any, Sequence

import networkx as nx
import pyro
import pyro.distributions as dist
import torch
from torch.distributions import constraints

from probgen.corpus import Corpus
from probgen.declarations import Program
from probgen.ops import lda as lda_ops
from probgen.random import generator


class LDA(Program):
    """LDA with ``k`` topics over ``vocab_size`` words.

    Args:
      k: number of topics K.
      vocab_size: vocabulary size V (token ids lie in [0, V)).
      alpha: document–topic Dirichlet prior, a scalar (symmetric) or (K,) sequence;
        default 1/K (as scikit-learn and gensim).
      eta: symmetric topic–word Dirichlet prior (scalar); default 1/K.

    Parameters (``Fit.params``): ``topics`` (K, V) (rows on the simplex), ``alpha`` (K,),
    ``eta``. Data: a list of documents, each a 1-D tensor of token ids. Fitted by CAVI
    (Blei, Ng & Jordan 2003), online VB (Hoffman, Blei & Bach 2010) and collapsed Gibbs
    sampling (Griffiths & Steyvers 2004).

    Examples:
        >>> import probgen as pg
        >>> from probgen.models import LDA
        >>> model, docs = LDA.example(seed=0)  # 3 topics, 12 words, 20 documents
        >>> fit = pg.fit(LDA(3, 12), docs, steps=5, seed=0, progress=False)
        >>> fit.engine, fit.params["topics"].shape
        ('meanfield', torch.Size([3, 12]))
        >>> fit.log_prob(docs).shape, fit.log_prob_kind  # the ELBO per document
        (torch.Size([20]), 'bound')
    """

    short_name = "lda"
    default_engine = "meanfield"
    default_dataset = "lee"
    observed = ("words",)
    _repr_fields = ("k", "vocab_size", "alpha", "eta")

    def __init__(self, k: int, vocab_size: int, alpha: Any = None, eta: Any = None):
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k (number of topics) must be a positive integer, got {k!r}")
        if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 2:
            raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
        self.k, self.vocab_size = k, vocab_size
        a = torch.as_tensor(1.0 / k if alpha is None else alpha, dtype=torch.float64)
        if a.dim() > 1 or (a.dim() == 1 and len(a) != k):
            raise ValueError(f"alpha must be a scalar or a sequence of k={k} values, got shape {tuple(a.shape)}")
        if not (torch.isfinite(a).all() and (a > 0).all()):
            raise ValueError(f"alpha must be positive and finite, got {alpha!r}")
        e = torch.as_tensor(1.0 / k if eta is None else eta, dtype=torch.float64)
        if e.dim() != 0 or not (torch.isfinite(e) and e > 0):
            raise ValueError(f"eta must be a positive scalar (a symmetric prior), got {eta!r}")
        self.alpha = float(a) if a.dim() == 0 else a.tolist()
        self.eta = float(e)

    # ---- hyperparameters as tensors --------------------------------------------------
    @property
    def alpha_vector(self) -> torch.Tensor:
        """(K,) float64 document–topic prior."""
        return torch.as_tensor(self.alpha, dtype=torch.float64).expand(self.k).clone()

    @property
    def eta_tensor(self) -> torch.Tensor:
        """The topic–word prior ``eta`` as a float64 scalar tensor."""
        return torch.tensor(self.eta, dtype=torch.float64)

    # ---- declaration hooks -------------------------------------------------------------
    def check_data(self, data: Any) -> Corpus:
        """A validated `Corpus` (errors: empty corpus or documents, ids outside
        [0, vocab_size), negative or fractional counts, a matrix with the wrong width)."""
        if data is None:
            raise ValueError("LDA needs documents: a list of token-id lists or a (D, V) count matrix")
        return Corpus.build(data, self.vocab_size)

    def init_params(self, data: Any = None, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Topics drawn from Dirichlet(1) rows; the declared hyperparameters."""
        g = generator(seed)
        raw = torch._standard_gamma(torch.ones(self.k, self.vocab_size, dtype=torch.float64), generator=g)
        return {"topics": raw / raw.sum(1, keepdim=True), "alpha": self.alpha_vector, "eta": self.eta_tensor}

    def program(self, data: Any = None, batch_size: int | None = None) -> None:
        """The Pyro program: θ_d ~ Dirichlet(α) in a ``documents`` plate (subsampled when
        ``batch_size`` is given) and each document's word counts ~ Multinomial(θ_d β)."""
        counts = data.dense() if isinstance(data, Corpus) else torch.as_tensor(data, dtype=torch.float64)
        dtype = counts.dtype
        topics = pyro.param("topics", lambda: self.init_params(None, 0)["topics"].to(dtype),
                            constraint=constraints.simplex)
        # a point estimate of β: with the factor Dirichlet(η + 1) its MAP estimate is the
        # posterior mean (n_kw + η) / (n_k + V η) under LDA's Dirichlet(η) prior (Asuncion et
        # al. 2009, §3), and it stays proper for η < 1, where MAP under Dirichlet(η) runs off
        # to the simplex's corners
        pyro.factor("topics_prior", dist.Dirichlet((self.eta_tensor + 1).to(dtype).expand(self.vocab_size),
                                                   validate_args=False).log_prob(topics).sum())
        n_max = int(counts.sum(1).max())
        with pyro.plate("documents", counts.shape[0], subsample_size=batch_size) as idx:
            theta = pyro.sample("theta", dist.Dirichlet(self.alpha_vector.to(dtype)))
            # Multinomial.log_prob reads each document's length from the value itself
            pyro.sample("words", dist.Multinomial(n_max, probs=theta @ topics, validate_args=False),
                        obs=counts[idx])

    def sample(self, params: dict, n: int, seed: int | None = None, length: float = 50.0) -> list[torch.Tensor]:
        """``n`` documents (int64 token tensors) from the generative story; lengths ~
        Poisson(``length``), at least 1."""
        g = generator(seed)
        topics, alpha = params["topics"].double(), params["alpha"].double()
        gam = torch._standard_gamma(alpha.expand(n, self.k).contiguous(), generator=g)
        theta = gam / gam.sum(1, keepdim=True)
        lengths = torch.poisson(torch.full((n,), float(length)), generator=g).long().clamp_min(1)
        doc_of = torch.repeat_interleave(torch.arange(n), lengths)
        z = torch.multinomial(theta[doc_of], 1, generator=g).squeeze(1)
        w = _categorical_rows(topics, z, g)
        return list(torch.split(w, lengths.tolist()))

    def structure(self, *args: Any, params: bool = False, **options: Any) -> nx.DiGraph:
        """The textbook plate diagram: α → θ → z → w ← β ← η."""
        g = nx.DiGraph()
        g.add_node("theta", kind="latent", distribution="Dirichlet", plates=("documents",))
        g.add_node("z", kind="latent", distribution="Categorical", plates=("documents", "words"))
        g.add_node("w", kind="observed", distribution="Categorical", plates=("documents", "words"))
        g.add_node("topics", kind="latent", distribution="Dirichlet", plates=("topics",))
        for a, b in (("theta", "z"), ("z", "w"), ("topics", "w")):
            g.add_edge(a, b, directed=True)
        if params:
            g.add_node("alpha", kind="param", plates=())
            g.add_node("eta", kind="param", plates=())
            g.add_edge("alpha", "theta", directed=True)
            g.add_edge("eta", "topics", directed=True)
        g.graph["plates"] = {"documents": None, "words": None, "topics": self.k}
        return g

    @classmethod
    def for_data(cls, data: Any, k: int = 10, **options: Any) -> "LDA":
        corpus = Corpus.build(data)
        return cls(k, corpus.vocab_size, **options)

    @classmethod
    def example(cls, seed: int = 0) -> tuple["LDA", list[torch.Tensor]]:
        """3 topics over 12 words, 20 documents of ~15 tokens drawn from known topics."""
        docs, _ = synthetic_corpus(k=3, vocab_size=12, n_docs=20, length=15, seed=seed)
        return cls(3, 12), docs

    @classmethod
    def load_named_data(cls, name: str) -> Corpus | None:
        """A corpus the CLI knows by name: ``"lee"`` (gensim's Lee background corpus, bundled).

        Args:
          name: the name.

        Returns:
          The corpus (a `probgen.corpus.Corpus`), or ``None`` for another name.
        """
        return load_lee() if name == "lee" else None

    # ---- evaluation (one evaluator for every engine) ------------------------------------
    def perplexity(self, params: dict, docs: Any, seed: int = 0) -> float:
        """Held-out perplexity by document completion: θ from each document's first half
        (fold-in with ``params["topics"]`` fixed), scored on the second half."""
        return lda_ops.perplexity(params["topics"], params["alpha"], self.check_data(docs), seed)

    def coherence(self, params: dict, docs: Any, top_n: int = 10) -> torch.Tensor:
        """UMass coherence of each topic's ``top_n`` words on ``docs``, shape (K,)."""
        return lda_ops.umass_coherence(params["topics"], self.check_data(docs), top_n)

    def top_words(self, params: dict, n: int = 10, vocab: Sequence[str] | None = None) -> list[list]:
        """Each topic's ``n`` most probable words (strings with ``vocab``, else ids)."""
        top = torch.argsort(params["topics"], dim=1, descending=True)[:, :n].tolist()
        return [[vocab[i] for i in row] for row in top] if vocab is not None else top

    def plot_topics(self, params: dict, path: str, n: int = 8, vocab: Sequence[str] | None = None,
                    title: str | None = None) -> None:
        """A figure of each topic's top ``n`` words as horizontal bars (PNG/SVG by suffix)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        topics = params["topics"].double()
        cols = min(5, self.k)
        rows = -(-self.k // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 0.26 * n * rows + 0.6 * rows), squeeze=False)
        for k, ax in enumerate(axes.flat):
            if k >= self.k:
                ax.axis("off")
                continue
            top = torch.argsort(topics[k], descending=True)[:n]
            labels = [vocab[i] if vocab is not None else str(i) for i in top.tolist()]
            ax.barh(range(n)[::-1], topics[k, top].numpy(), color="tab:blue")
            ax.set_yticks(range(n)[::-1], labels, fontsize=8)
            ax.set_xticks([])
            ax.set_title(f"topic {k}", fontsize=9)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)


def _categorical_rows(probs: torch.Tensor, rows: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One draw from ``probs[rows[i]]`` for each i, by inverse CDF (no (N, V) copy)."""
    cdf = probs.cumsum(1)
    u = torch.rand(len(rows), generator=g, dtype=cdf.dtype) * cdf[rows, -1]
    return torch.searchsorted(cdf[rows], u[:, None]).squeeze(1).clamp_max(probs.shape[1] - 1)


def synthetic_corpus(k: int = 3, vocab_size: int = 30, n_docs: int = 100, length: int = 50,
                     alpha: float = 0.2, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Documents drawn from known, well-separated topics (each topic gives the words of its
    own block of V/K words 9 times the probability of the others), for recovery tests.
    Returns ``(docs, topics)``."""
    g = generator(seed)
    block = torch.arange(vocab_size) * k // vocab_size
    topics = torch.where(block[None, :] == torch.arange(k)[:, None], 0.9, 0.1).double()
    topics = topics / topics.sum(1, keepdim=True)
    lda = LDA(k, vocab_size, alpha=alpha)
    lengths = float(length)
    docs = lda.sample({"topics": topics, "alpha": lda.alpha_vector}, n_docs, seed=int(torch.randint(2**31, (), generator=g)),
                      length=lengths)
    return docs, topics


def load_lee() -> Corpus:
    """The Lee background news corpus (300 documents), tokenised as described in
    ``benchmarks/make_lee.py`` (lowercase letters-only tokens of length >= 3, gensim's
    stop words removed, words in fewer than 2 documents removed); the vocabulary is
    sorted alphabetically (``corpus.vocab``)."""
    with resources.files("probgen").joinpath("datasets/lee.txt.gz").open("rb") as f:
        lines = gzip.decompress(f.read()).decode("ascii").splitlines()
    words = [line.split() for line in lines]
    vocab = sorted({w for d in words for w in d})
    index = {w: i for i, w in enumerate(vocab)}
    docs = [[index[w] for w in d] for d in words]
    return Corpus.build((docs, vocab), len(vocab))
