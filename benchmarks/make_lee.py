"""Rebuild ``probgen/datasets/lee.txt.gz`` from gensim's copy of the Lee news corpus.

The Lee background corpus (300 Australian news articles; Lee, Pincombe & Welsh 2005) ships
with gensim's test data. probgen keeps gensim out of its core dependencies, so the
tokenised corpus is committed once, compressed, and this script says how it was made:

  1. lowercase; tokens are maximal runs of letters ``[a-z]+`` (digits and punctuation split);
  2. drop tokens shorter than 3 letters and gensim's English stop words
     (``gensim.parsing.preprocessing.STOPWORDS``, 337 words);
  3. drop rare words: those occurring in fewer than 2 of the 300 documents.

One document per line, tokens separated by single spaces, in the original order.
Run: ``python benchmarks/make_lee.py`` (needs gensim).
"""
import collections
import gzip
import os
import re

from gensim.parsing.preprocessing import STOPWORDS
from gensim.test.utils import datapath

OUT = os.path.join(os.path.dirname(__file__), "..", "probgen", "datasets", "lee.txt.gz")


def main() -> None:
    with open(datapath("lee_background.cor"), encoding="latin-1") as f:
        raw = [line for line in f.read().splitlines() if line.strip()]
    docs = [[t for t in re.findall(r"[a-z]+", line.lower()) if len(t) >= 3 and t not in STOPWORDS]
            for line in raw]
    df = collections.Counter(w for d in docs for w in set(d))
    docs = [[t for t in d if df[t] >= 2] for d in docs]
    # mtime=0: the compressed file is byte-identical on every rebuild
    with open(OUT, "wb") as raw_out, gzip.GzipFile(fileobj=raw_out, mode="wb", mtime=0) as f:
        f.write(("\n".join(" ".join(d) for d in docs) + "\n").encode("ascii"))
    vocab = {w for d in docs for w in d}
    print(f"{len(docs)} documents, {sum(map(len, docs))} tokens, {len(vocab)} words -> {OUT}")


if __name__ == "__main__":
    main()
