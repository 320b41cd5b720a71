"""Collapsed Gibbs for LDA with several chains: seconds per sweep (all chains), issue 15.

The Lee corpus's 250 training documents (22 211 tokens), K = 10, ``num_chains`` chains
(default 4) run by ``pg.fit(..., engine="mcmc", probes=1)`` (one start per chain: the
sweeps alone, not the start's probes); one thread. The fit's wall time over ``warmup +
steps`` sweeps (statistics and estimates included) divided by the sweeps. Run it on an
older checkout (``PYTHONPATH=<checkout>``, which has no ``probes`` option) for the before
figure.

    python benchmarks/gibbs_chains.py [--chains 1,4] [--sweeps 20] [--json docs/benchmarks/gibbs_chains.json]
"""
from __future__ import annotations

import time
import warnings

import torch

import probgen as pg
from probgen.models import LDA
from probgen.models.lda import load_lee


def main() -> None:
    from _tables import emit, parser, table
    ap = parser("gibbs_chains", __doc__)
    ap.add_argument("--chains", default="1,4", help="chain counts, comma-separated (one row each)")
    ap.add_argument("--sweeps", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    train = load_lee().subset(range(250))
    model = LDA(10, train.vocab_size)
    half = max(a.sweeps // 2, 1)
    from probgen.inference.mcmc import lda as gibbs
    one_start = {"probes": 1} if "probes" in gibbs.OPTIONS else {}   # an older checkout has no probes
    rows = []
    for chains in (int(c) for c in a.chains.split(",")):
        # a first small fit: Numba compiles (or loads its cache) outside the timing
        pg.fit(model, train.subset(range(5)), engine="mcmc", steps=1, warmup=1, num_chains=chains, seed=0,
               progress=False)
        t0 = time.perf_counter()
        pg.fit(model, train, engine="mcmc", steps=half, warmup=half, num_chains=chains, seed=0, progress=False,
               **one_start)
        dt = (time.perf_counter() - t0) / (2 * half)
        print(f"{chains} chains, {train.n_tokens} tokens, K = 10: {dt:.4f} s per sweep of all chains "
              f"({dt / chains / train.n_tokens * 1e6:.3f} µs per token and chain)", flush=True)
        rows.append([chains, f"{dt:.4f}", f"{dt / chains / train.n_tokens * 1e6:.3f}"])
    emit(a.json, f"python benchmarks/gibbs_chains.py --chains {a.chains} --sweeps {a.sweeps}", {"sweeps": table(
        ["chains", "s per sweep (all chains)", "µs per token and chain"], rows, ["r", "r", "r"])}, peers=("numba",),
        note=f"Lee corpus, 250 training documents, {train.n_tokens} tokens, K = 10, {2 * half} sweeps "
        "(half warm-up), one start per chain, one thread; wall time of the fit")


if __name__ == "__main__":
    main()
