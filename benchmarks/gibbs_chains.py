"""Collapsed Gibbs for LDA with several chains: seconds per sweep (all chains), issue 15.

The Lee corpus's 250 training documents (22 211 tokens), K = 10, ``num_chains`` chains
(default 4) run by ``pg.fit(..., engine="mcmc", probes=1)`` (one start per chain: the
sweeps alone, not the start's probes); one thread. The fit's wall time over ``warmup +
steps`` sweeps (statistics and estimates included) divided by the sweeps. Run it on an
older checkout (``PYTHONPATH=<checkout>``, which has no ``probes`` option) for the before
figure.

    python benchmarks/gibbs_chains.py [--chains 4] [--sweeps 20]
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch

import probgen as pg
from probgen.models import LDA
from probgen.models.lda import load_lee


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--sweeps", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    train = load_lee().subset(range(250))
    model = LDA(10, train.vocab_size)
    # a first small fit: Numba compiles (or loads its cache) outside the timing
    pg.fit(model, train.subset(range(5)), engine="mcmc", steps=1, warmup=1, num_chains=a.chains, seed=0,
           progress=False)
    half = max(a.sweeps // 2, 1)
    from probgen.inference.mcmc import lda as gibbs
    one_start = {"probes": 1} if "probes" in gibbs.OPTIONS else {}   # an older checkout has no probes
    t0 = time.perf_counter()
    pg.fit(model, train, engine="mcmc", steps=half, warmup=half, num_chains=a.chains, seed=0, progress=False,
           **one_start)
    dt = (time.perf_counter() - t0) / (2 * half)
    print(f"{a.chains} chains, {train.n_tokens} tokens, K = 10: {dt:.4f} s per sweep of all chains "
          f"({dt / a.chains / train.n_tokens * 1e6:.3f} µs per token and chain)")


if __name__ == "__main__":
    main()
