"""Thread count vs speed for small and medium fits, on an idle machine and under load.

For each model the same fit (same data, seed, steps) is timed with torch using 1 thread and
with torch's default (one per core), with ``--load`` busy processes competing for the cores
(a shared machine). Reported as the ratio default / 1-thread (> 1: the default is slower).

    python benchmarks/threads.py --load 0 1 2
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import torch

import probgen as pg
from probgen.models import HMM, DBM, Flow, GaussianMixture, VAE


def _busy(stop):
    x = 0
    while not stop.is_set():
        x = (x * 31 + 7) % 1000003


def cases():
    iris = pg.load_dataset("iris")
    digits = pg.load_dataset("digits-binary").float()
    moons = pg.load_dataset("two-moons").float()
    seqs = [torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(i)).tolist() for i in range(50)]
    return {
        "gmm em (iris 150x4)": lambda: pg.fit(GaussianMixture(3, 4), iris, engine="em", steps=100, tol=None, seed=0, progress=False),
        "hmm em (50x200)": lambda: pg.fit(HMM(4, "categorical", n_symbols=4), seqs, steps=50, tol=None, seed=0, progress=False),
        "dbm meanfield (digits 1797x64)": lambda: pg.fit(DBM(64, 32, 16), digits, engine="meanfield", steps=2, seed=0, progress=False),
        "flow (moons)": lambda: pg.fit(Flow(2, transforms=4), moons, engine="flow", steps=200, seed=0, progress=False),
        "vae svi (digits)": lambda: pg.fit(VAE(8, [64, 64]), digits, engine="svi", steps=3, seed=0, progress=False),
    }


def timed(fn, threads, repeats=3):
    pg.set_num_threads(threads)
    fn()  # warm-up (compilation, caches)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--load", type=int, nargs="+", default=[0, os.cpu_count() or 1])
    args = ap.parse_args()
    default = torch.get_num_threads()
    print(f"cores: {os.cpu_count()}, torch default threads: {default}")
    print(f"| model | busy processes | 1 thread (s) | {default} threads (s) | ratio {default}/1 |")
    print("|---|---|---|---|---|")
    for load in args.load:
        stop = mp.Event()
        procs = [mp.Process(target=_busy, args=(stop,), daemon=True) for _ in range(load)]
        for p in procs:
            p.start()
        try:
            for name, fn in cases().items():
                one, many = timed(fn, 1), timed(fn, default)
                print(f"| {name} | {load} | {one:.3f} | {many:.3f} | {many / one:.2f} |", flush=True)
        finally:
            stop.set()
            for p in procs:
                p.join()
    pg.set_num_threads(None)


if __name__ == "__main__":
    main()
