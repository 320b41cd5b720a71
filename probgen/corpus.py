"""A corpus of documents as a sparse document–term count matrix (the form topic models use).

`Corpus` stores only the non-zero cells ``(doc, word, count)`` in coordinate form,
sorted by document, so engines batch their per-document updates over all non-zeros at
once (gathers and ``index_add``) instead of looping over documents or tokens. When a corpus
is built from token lists it also keeps each document's tokens in their original order
(document completion needs "the first half of a document").

``Corpus.build(data, vocab_size)`` accepts: a list of token-id sequences; a dense
``(D, V)`` count array / tensor; a SciPy sparse matrix or a torch sparse tensor; a
``(docs, vocab)`` tuple adding a vocabulary (list of strings) to any of these; or a
``Corpus``. It raises ``ValueError`` for empty corpora or documents, ids outside the
vocabulary, negative / fractional / non-finite counts.

Missing counts: in a dense count matrix a NaN cell is a count that is not known (not a
zero). The corpus keeps those cells apart (``missing_doc``, ``missing_word``) and the
variational engines marginalise them (`probgen.ops.lda.e_step`); a document with no
observed count (every cell NaN, or its known cells all zero) is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch


@dataclass
class Corpus:
    """Non-zero cells of a ``(n_docs, vocab_size)`` count matrix, sorted by document.

    Attributes:
      doc, word – ``(nnz,)`` int64 document and word index of each non-zero cell.
      count – ``(nnz,)`` float64 counts (whole numbers, > 0).
      n_docs, vocab_size – the matrix shape.
      vocab – optional list of ``vocab_size`` words.
      tokens – optional list of ``n_docs`` int64 tensors: each document's tokens in order.
      missing_doc, missing_word – ``(n_missing,)`` int64 cells whose count is unknown (NaN
        in a dense matrix), sorted by document; ``None`` when every count is known.
    """

    doc: torch.Tensor
    word: torch.Tensor
    count: torch.Tensor
    n_docs: int
    vocab_size: int
    vocab: list[str] | None = None
    tokens: list[torch.Tensor] | None = field(default=None, repr=False)
    missing_doc: torch.Tensor | None = field(default=None, repr=False)
    missing_word: torch.Tensor | None = field(default=None, repr=False)

    @property
    def any_missing(self) -> bool:
        """Whether some counts are unknown (read by `probgen.data.has_missing`)."""
        return self.missing_doc is not None

    # ---- construction --------------------------------------------------------------
    @classmethod
    def build(cls, data: Any, vocab_size: int | None = None, vocab: Sequence[str] | None = None) -> "Corpus":
        """A validated corpus from any supported input (see the module docstring)."""
        if isinstance(data, tuple) and len(data) == 2 and _is_vocab(data[1]):
            data, vocab = data
        if isinstance(data, Corpus):
            corpus = data
            if vocab is not None:
                corpus = Corpus(data.doc, data.word, data.count, data.n_docs, data.vocab_size, list(vocab),
                                data.tokens, data.missing_doc, data.missing_word)
        elif isinstance(data, (list, tuple)) and (len(data) == 0 or _is_token_list(data[0])):
            corpus = cls.from_tokens(data, vocab_size)
        elif hasattr(data, "tocoo") or (isinstance(data, torch.Tensor) and data.is_sparse):
            corpus = cls.from_sparse(data)
        elif isinstance(data, (np.ndarray, torch.Tensor, list, tuple)):
            corpus = cls.from_counts(data)
        else:
            raise ValueError("documents must be a list of token-id lists, a (D, V) count matrix (dense or "
                             f"sparse) or a (documents, vocabulary) tuple; got {type(data).__name__}")
        if vocab is not None and not isinstance(data, Corpus):
            corpus.vocab = list(vocab)
        if vocab_size is not None and corpus.vocab_size > vocab_size:
            raise ValueError(f"the count matrix has {corpus.vocab_size} columns but the vocabulary has "
                             f"{vocab_size} words: expected shape (D, {vocab_size})")
        if vocab_size is not None and corpus.vocab_size < vocab_size:
            corpus = Corpus(corpus.doc, corpus.word, corpus.count, corpus.n_docs, vocab_size, corpus.vocab,
                            corpus.tokens, corpus.missing_doc, corpus.missing_word)
        if corpus.vocab is not None and len(corpus.vocab) != corpus.vocab_size:
            raise ValueError(f"the vocabulary lists {len(corpus.vocab)} words but the model has "
                             f"vocab_size={corpus.vocab_size}")
        return corpus

    @classmethod
    def from_tokens(cls, docs: Sequence[Sequence[int]], vocab_size: int | None = None) -> "Corpus":
        """From token-id lists (document order and token order are kept)."""
        if len(docs) == 0:
            raise ValueError("the corpus is empty: expected at least one document (a list of token ids)")
        tokens = []
        for d, toks in enumerate(docs):
            try:
                arr = np.asarray(toks)
            except (TypeError, ValueError):
                raise ValueError(f"document {d} is not a sequence of integer token ids") from None
            if arr.ndim != 1:
                raise ValueError(f"document {d} must be a flat list of token ids, got shape {arr.shape}")
            if arr.size == 0:
                raise ValueError(f"document {d} is empty: every document needs at least one token")
            if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            if arr.dtype.kind not in "iu":
                raise ValueError(f"document {d} holds non-integer token ids (dtype {arr.dtype}); "
                                 "expected integer ids in [0, vocab_size)")
            tokens.append(torch.from_numpy(arr.astype(np.int64)))
        flat = torch.cat(tokens)
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or (vocab_size is not None and hi >= vocab_size):
            bad = lo if lo < 0 else hi
            where = next(d for d, t in enumerate(tokens) if (t == bad).any())
            raise ValueError(f"token id {bad} in document {where} is outside the vocabulary: "
                             f"ids must lie in [0, {vocab_size if vocab_size is not None else 'V'})")
        V = vocab_size if vocab_size is not None else hi + 1
        doc_of = torch.repeat_interleave(torch.arange(len(tokens)), torch.tensor([len(t) for t in tokens]))
        cell, count = torch.unique(doc_of * V + flat, return_counts=True)  # sorted: by doc, then word
        return cls(cell // V, cell % V, count.to(torch.float64), len(tokens), V, None, tokens)

    @classmethod
    def from_counts(cls, x: Any) -> "Corpus":
        """From a dense ``(D, V)`` count matrix; NaN cells are missing counts."""
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64)) if not isinstance(x, torch.Tensor) else x.double()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"the count matrix must be numeric, shape (D, V) ({exc})") from None
        if t.dim() != 2:
            raise ValueError(f"the count matrix must have shape (D, V), got shape {tuple(t.shape)}")
        nan = torch.isnan(t)
        if not nan.any():
            nz = t.nonzero()
            return cls._checked(nz[:, 0], nz[:, 1], t[nz[:, 0], nz[:, 1]], t.shape[0], t.shape[1])
        if t.shape[0] and t.shape[1]:
            known = t.masked_fill(nan, 0.0)
            empty = (known.sum(1) == 0) & torch.isfinite(known.sum(1))
            if empty.any():
                d = int(empty.nonzero()[0])
                what = "entirely missing (every count NaN)" if bool(nan[d].all()) else \
                    "without an observed token (its known counts are all zero, the others NaN)"
                raise ValueError(f"document {d} is {what}: it carries no information about the topics; "
                                 "drop it")
        nz = torch.nan_to_num(t, nan=0.0).nonzero()
        out = cls._checked(nz[:, 0], nz[:, 1], t[nz[:, 0], nz[:, 1]], t.shape[0], t.shape[1])
        miss = nan.nonzero()                                     # row-major: sorted by document
        out.missing_doc, out.missing_word = miss[:, 0], miss[:, 1]
        return out

    @classmethod
    def from_sparse(cls, x: Any) -> "Corpus":
        """From a SciPy sparse matrix or a torch sparse COO / CSR tensor of shape ``(D, V)``."""
        if isinstance(x, torch.Tensor):
            c = x.to_sparse_coo().coalesce()
            if c.dim() != 2:
                raise ValueError(f"the count matrix must have shape (D, V), got shape {tuple(c.shape)}")
            i, v = c.indices(), c.values().double()
            return cls._checked(i[0], i[1], v, c.shape[0], c.shape[1])
        c = x.tocoo()
        if len(c.shape) != 2:
            raise ValueError(f"the count matrix must have shape (D, V), got shape {c.shape}")
        c.sum_duplicates()
        return cls._checked(torch.as_tensor(c.row, dtype=torch.int64), torch.as_tensor(c.col, dtype=torch.int64),
                            torch.as_tensor(c.data, dtype=torch.float64), c.shape[0], c.shape[1])

    @classmethod
    def _checked(cls, doc: torch.Tensor, word: torch.Tensor, count: torch.Tensor, D: int, V: int) -> "Corpus":
        if D == 0 or V == 0:
            raise ValueError(f"the count matrix is empty: shape ({D}, {V}); expected (D, V) with D, V >= 1")
        if not torch.isfinite(count).all():
            raise ValueError("the count matrix contains NaN or inf")
        if (count < 0).any():
            k = int((count < 0).nonzero()[0])
            raise ValueError(f"negative count {float(count[k])} at (document {int(doc[k])}, word {int(word[k])}): "
                             "counts must be non-negative whole numbers")
        if (count != count.round()).any():
            k = int((count != count.round()).nonzero()[0])
            raise ValueError(f"fractional count {float(count[k])} at (document {int(doc[k])}, word {int(word[k])}): "
                             "counts must be whole numbers")
        keep = count > 0
        doc, word, count = doc[keep], word[keep], count[keep]
        order = torch.argsort(doc * V + word)
        doc, word, count = doc[order], word[order], count[order]
        lengths = torch.zeros(D, dtype=torch.float64).index_add_(0, doc, count)
        if (lengths == 0).any():
            raise ValueError(f"document {int((lengths == 0).nonzero()[0])} is empty (all counts are zero): "
                             "every document needs at least one token")
        return cls(doc, word, count, D, V)

    # ---- views -----------------------------------------------------------------------
    @property
    def lengths(self) -> torch.Tensor:
        """``(n_docs,)`` float64 number of tokens per document."""
        return torch.zeros(self.n_docs, dtype=torch.float64).index_add_(0, self.doc, self.count)

    @property
    def n_tokens(self) -> int:
        return int(self.count.sum())

    def dense(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The ``(n_docs, vocab_size)`` count matrix (NaN at missing cells)."""
        out = torch.zeros(self.n_docs, self.vocab_size, dtype=dtype)
        out[self.doc, self.word] = self.count.to(dtype)
        if self.missing_doc is not None:
            out[self.missing_doc, self.missing_word] = float("nan")
        return out

    def token_lists(self) -> list[torch.Tensor]:
        """Each document's tokens: the original order when known, else grouped by word id."""
        if self.tokens is not None:
            return list(self.tokens)
        flat = torch.repeat_interleave(self.word, self.count.long())
        per_doc = self.lengths.long().tolist()
        return list(torch.split(flat, per_doc))

    def subset(self, idx: Any) -> "Corpus":
        """The documents ``idx`` (a sequence of indices), renumbered 0..len(idx)-1."""
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1)
        new = torch.full((self.n_docs,), -1, dtype=torch.int64)
        new[idx] = torch.arange(len(idx))
        keep = new[self.doc] >= 0
        doc, word, count = new[self.doc[keep]], self.word[keep], self.count[keep]
        if len(idx) > 1 and not bool((idx[1:] > idx[:-1]).all()):  # sorted idx keep the cells sorted
            order = torch.argsort(doc * self.vocab_size + word)
            doc, word, count = doc[order], word[order], count[order]
        tokens = [self.tokens[i] for i in idx.tolist()] if self.tokens is not None else None
        mdoc = mword = None
        if self.missing_doc is not None:
            mkeep = new[self.missing_doc] >= 0
            mdoc, mword = new[self.missing_doc[mkeep]], self.missing_word[mkeep]
            order = torch.argsort(mdoc * self.vocab_size + mword)
            mdoc, mword = mdoc[order], mword[order]
            if len(mdoc) == 0:
                mdoc = mword = None
        return Corpus(doc, word, count, len(idx), self.vocab_size, self.vocab, tokens, mdoc, mword)

    def halves(self, seed: int = 0) -> tuple["Corpus", "Corpus"]:
        """Split every document's tokens into a first and a second half (document completion).

        With token order known, the first ``floor(n/2)`` tokens form the first half; from a
        count matrix (order lost) the tokens are shuffled with ``seed`` first. Documents
        with a single token put it in the second half, so the first half may be empty for
        them (the fold-in then uses the prior alone)."""
        g = torch.Generator().manual_seed(seed)
        first, second = [], []
        for toks in self.token_lists():
            if self.tokens is None:
                toks = toks[torch.randperm(len(toks), generator=g)]
            h = len(toks) // 2
            first.append(toks[:h])
            second.append(toks[h:])
        return _from_ragged(first, self.vocab_size), _from_ragged(second, self.vocab_size)


def _from_ragged(docs: list[torch.Tensor], V: int) -> Corpus:
    """A corpus from token tensors that may include empty documents (internal use)."""
    lengths = torch.tensor([len(t) for t in docs])
    doc_of = torch.repeat_interleave(torch.arange(len(docs)), lengths)
    flat = torch.cat(docs) if len(docs) else torch.zeros(0, dtype=torch.int64)
    cell, count = torch.unique(doc_of * V + flat, return_counts=True)
    return Corpus(cell // V, cell % V, count.to(torch.float64), len(docs), V, None, list(docs))


def _is_token_list(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dim() == 1
    if isinstance(x, np.ndarray):
        return x.ndim == 1
    return isinstance(x, (list, tuple))


def _is_vocab(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(w, str) for w in x)
