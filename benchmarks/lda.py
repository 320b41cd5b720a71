"""LDA on the Lee news corpus: probgen's engines side by side with scikit-learn's
LatentDirichletAllocation (batch and online) and gensim's LdaModel, in one run.

Data: the bundled Lee background corpus (300 news articles, tokenised as in
benchmarks/make_lee.py); documents 0–249 train, 250–299 are held out. K = 10 topics,
α = η = 1/K for every library (their defaults). Each library runs with its own default
settings (scikit-learn: 10 iterations, online batches of 128; gensim: 1 pass, plus a
10-pass row because its single-pass default under-fits); probgen's engines run with theirs.

One evaluator for everyone (probgen.ops.lda): each library's topic–word matrix (rows
normalised) goes through the same document-completion perplexity on the 50 held-out
documents (θ_d folded in from the first half of each document's tokens with the topics
fixed and α = 1/K, the second half scored) and the same UMass coherence (top 10 words,
document frequencies of the training documents).

Every library is timed in this one process with one BLAS / OpenMP / torch thread (the
machine is shared, and this puts numpy-, BLAS- and torch-based code on equal terms).
Fit seconds are the median, perplexity and coherence the mean ± s.d., over the seeds.

Run: python benchmarks/lda.py            (about 2–4 minutes on one core)
     python benchmarks/lda.py --figure docs/img/lda_topics.png
"""
import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_v] = "1"

import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import probgen as pg  # noqa: E402
from probgen.models import LDA  # noqa: E402
from probgen.models.lda import load_lee  # noqa: E402
from probgen.ops import lda as lda_ops  # noqa: E402

torch.set_num_threads(1)
warnings.simplefilter("ignore")
K, SEEDS = 10, (0, 1, 2)


def sklearn_fit(method):
    from sklearn.decomposition import LatentDirichletAllocation

    def run(train, seed):
        x = train.dense().numpy()
        m = LatentDirichletAllocation(K, learning_method=method, random_state=seed).fit(x)
        return m.components_
    return run


def gensim_fit(passes):
    from gensim.models import LdaModel

    def run(train, seed):
        bow = [[] for _ in range(train.n_docs)]
        for d, w, c in zip(train.doc.tolist(), train.word.tolist(), train.count.long().tolist()):
            bow[d].append((w, c))
        m = LdaModel(bow, num_topics=K, id2word=dict(enumerate(train.vocab)), passes=passes, random_state=seed)
        return m.get_topics()
    return run


def probgen_fit(engine, **options):
    def run(train, seed):
        return pg.fit(LDA(K, train.vocab_size), train, engine=engine, seed=seed, progress=False, **options)
    return run


def main() -> None:
    from _tables import parser
    ap = parser("lda", __doc__)
    ap.add_argument("--figure", default=None, help="write the top words of probgen's meanfield fit here")
    args = ap.parse_args()
    corpus = load_lee()
    train, test = corpus.subset(range(250)), corpus.subset(range(250, 300))
    alpha = torch.full((K,), 1.0 / K, dtype=torch.float64)
    rows = [
        ("scikit-learn LDA, batch", sklearn_fit("batch"), SEEDS, True),
        ("scikit-learn LDA, online", sklearn_fit("online"), SEEDS, True),
        ("gensim LdaModel, 1 pass", gensim_fit(1), SEEDS, True),
        ("gensim LdaModel, 10 passes", gensim_fit(10), SEEDS, True),
        ("probgen meanfield (CAVI)", probgen_fit("meanfield"), SEEDS, False),
        ("probgen meanfield, one start (probes=1)", probgen_fit("meanfield", probes=1), SEEDS, False),
        ("probgen meanfield, Gamma-noise start (seed_docs=0)", probgen_fit("meanfield", seed_docs=0), SEEDS, False),
        ("probgen meanfield, learn_eta", probgen_fit("meanfield", learn_eta=True), SEEDS, False),
        ("probgen svi (online VB)", probgen_fit("svi"), SEEDS, False),
        ("probgen svi (online VB), Gamma-noise start (probe_docs=0)", probgen_fit("svi", probe_docs=0), SEEDS, False),
        ("probgen svi (online VB), 1 pass", probgen_fit("svi", steps=8), SEEDS, False),
        ("probgen svi (online VB), 2 passes", probgen_fit("svi", steps=16), SEEDS, False),
        ("probgen svi (amortized encoder, 300 steps)", probgen_fit("svi", inference="amortized", batch_size=64, steps=300),
         SEEDS, False),
        ("probgen mcmc (collapsed Gibbs, 100+100)", probgen_fit("mcmc", steps=100, warmup=100), (0,), False),
        ("probgen mcmc (collapsed Gibbs, 100+100), one start (probes=1)",
         probgen_fit("mcmc", steps=100, warmup=100, probes=1), (0,), False),
    ]
    results, first_fit = [], None
    for name, run, seeds, peer in rows:
        times, ppl, coh = [], [], []
        for seed in seeds:
            t0 = time.perf_counter()
            out = run(train, seed)
            times.append(time.perf_counter() - t0)
            if isinstance(out, pg.Fit):
                topics, a = out.params["topics"], out.params["alpha"]
                if first_fit is None:
                    first_fit = out
            else:
                topics, a = torch.as_tensor(np.asarray(out), dtype=torch.float64), alpha
            topics = topics / topics.sum(1, keepdim=True)
            ppl.append(lda_ops.perplexity(topics, a, test))
            coh.append(float(lda_ops.umass_coherence(topics, train).mean()))
        results.append((name, statistics.median(times), ppl, coh, peer))
        print(f"  {name}: {statistics.median(times):.2f} s, perplexity {np.mean(ppl):.0f}", flush=True)
    fastest = min(r[1] for r in results if r[4])
    best = min(np.mean(r[2]) for r in results if r[4])
    note = (f"Lee corpus: 250 training / 50 held-out documents, V = {corpus.vocab_size}, K = {K}, "
            f"{train.n_tokens} training tokens; seeds {SEEDS} (Gibbs: seed 0); one thread each")
    print(f"\n{note}\n")
    from _tables import emit, table
    rows = []
    for name, t, ppl, coh, _ in results:
        sd = f" ± {np.std(ppl):.0f}" if len(ppl) > 1 else ""
        rows.append([name, f"{t:.2f}", f"{t / fastest:.2f}", f"{np.mean(ppl):.0f}{sd}", f"{np.mean(ppl) / best:.3f}",
                     f"{np.mean(coh):.1f}"])
    emit(args.json, "python benchmarks/lda.py", {"lee": table(
        ["method", "fit s", "× fastest peer", "held-out perplexity", "× best peer", "UMass coherence"], rows)},
        peers=("scikit-learn", "gensim"), note=note)
    print("\nTop words per topic, probgen meanfield (seed 0):")
    for k, words in enumerate(first_fit.model.top_words(first_fit.params, 8, corpus.vocab)):
        print(f"  {k}: {' '.join(words)}")
    if args.figure:
        first_fit.model.plot_topics(first_fit.params, args.figure, n=8, vocab=corpus.vocab,
                                    title="LDA on the Lee corpus (probgen meanfield, K = 10)")
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
