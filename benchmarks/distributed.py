"""Data-parallel fits on torch.distributed: seconds per iteration with 1 and 2 ranks, and
Spark MLlib's ``GaussianMixture`` in local mode with as many workers, on the same data.

GMM EM (default N = 2,000,000, D = 16, K = 16, full covariance; the data of
``benchmarks/gmm.py``): probgen is launched by ``torchrun`` (``python -m torch.distributed.run
--standalone --nproc-per-node R``) with R = 1 and R = 2 ranks, one thread each, from the
same ``init``; every rank calls ``pg.fit`` with the whole data and fits its contiguous block
of the rows. Both libraries are timed alike, as ``(t(1 + ITERS) - t(1)) / ITERS``: the best
of two fits of 1 and of 1 + ITERS iterations (``tol=0``), their difference per iteration —
the per-iteration cost alone, without set-up and initialisation (probgen: after one warm-up
fit, rank 0's clock between barriers; Spark, ``pyspark.ml.clustering.GaussianMixture``,
``local[R]``, on a cached DataFrame). probgen's whole fit over its iterations is recorded
too (``seconds_per_iteration_whole_fit``). Spark has no user initialisation, so it starts
from its own random one; both run every iteration. Spark is skipped, with a message, where pyspark or Java is absent.

VAE: one epoch of the svi engine's VAE (64 -> 128 -> 8, the architecture of
``benchmarks/vae.py``) on the binarised digits, the same global batch with 1 and 2 ranks.

    python benchmarks/distributed.py                           # ~ 15 min on 2 CPU cores
    python benchmarks/distributed.py --n 200000 --iters 3      # a quick look
    python benchmarks/distributed.py --json docs/benchmarks/distributed.json

``--json PATH`` writes the figures (after each part, so that a run cut short keeps what it
measured); the README's table is made from that file.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _simulate():
    """``simulate(n, d, k, seed)`` of benchmarks/gmm.py (the one data generator of the GMM benchmarks)."""
    spec = importlib.util.spec_from_file_location("_bench_gmm", os.path.join(HERE, "gmm.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.simulate


# ---- the ranks (run under torchrun) ------------------------------------------------------

def _one_thread() -> None:
    import torch

    import probgen as pg
    torch.set_num_threads(1)
    pg.set_num_threads(1)


def _all_ranks(seconds: float) -> float:
    """The sum of ``seconds`` over the ranks (the CPU time of the whole fit)."""
    import torch
    import torch.distributed as dist
    if not dist.is_initialized():
        return seconds
    t = torch.tensor([seconds], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t)


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of process ``pid`` so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _barrier() -> None:
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()


def _marginal(timed, iters: int, repeats: int) -> tuple:
    """Both libraries' timing: ``timed(n)`` → ``(wall s, CPU s, result)`` of a fit of ``n``
    iterations; the best of ``repeats`` fits of 1 and of 1 + ``iters`` iterations, as
    ``(t1, cpu1, tn, cpun, the last fit)`` — their difference over ``iters`` is the cost of an
    iteration alone, without set-up and initialisation."""
    ones = [timed(1) for _ in range(repeats)]
    runs = [timed(1 + iters) for _ in range(repeats)]
    return (min(r[0] for r in ones), min(r[1] for r in ones), min(r[0] for r in runs), min(r[1] for r in runs),
            runs[-1][2])


def worker_gmm(a: argparse.Namespace, repeats: int = 2) -> dict:
    import numpy as np
    import torch

    import probgen as pg
    from probgen.models import GaussianMixture
    _one_thread()
    x = torch.from_numpy(np.load(a.data))
    model = GaussianMixture(a.k, a.d, "full")
    init = torch.load(a.init)

    def timed(steps: int):
        """(wall seconds on rank 0's clock between barriers, this rank's CPU seconds, the fit)."""
        _barrier()
        t, c = time.perf_counter(), time.process_time()
        fit = pg.fit(model, x, engine="em", steps=steps, tol=0.0, init=init, progress=False)
        cpu = time.process_time() - c  # this rank's own CPU time: what the other jobs on the machine do not inflate
        _barrier()
        return time.perf_counter() - t, cpu, fit

    timed(1)  # warm-up (joins the group)
    t1, c1, tn, cn, fit = _marginal(timed, a.iters, repeats)  # as Spark is timed
    return {"seconds_per_iteration": (tn - t1) / a.iters, "rank0_cpu_seconds_per_iteration": (cn - c1) / a.iters,
            "cpu_seconds_per_iteration": _all_ranks(cn - c1) / a.iters,
            "seconds_fit_1_iteration": t1, f"seconds_fit_{1 + a.iters}_iterations": tn,
            "seconds_per_iteration_whole_fit": tn / (1 + a.iters),
            "iterations": len(fit.history) - 1,
            "final_log_likelihood": fit.history[-1]["log_likelihood"],
            "parallel": getattr(fit._method(), "parallel", None)}


def worker_vae(a: argparse.Namespace) -> dict:
    import probgen as pg
    from probgen.data import split
    from probgen.models import VAE
    _one_thread()
    x_train, _ = split(pg.load_dataset("digits-binary").float())
    model = VAE(8, (x_train.shape[1], 128))
    pg.fit(model, x_train, steps=1, seed=0, batch_size=a.batch_size, validation=0, progress=False)  # warm-up
    _barrier()
    t, c = time.perf_counter(), time.process_time()
    fit = pg.fit(model, x_train, steps=a.epochs, seed=0, batch_size=a.batch_size, validation=0, progress=False)
    cpu = time.process_time() - c
    _barrier()
    seconds = time.perf_counter() - t
    return {"seconds_per_epoch": seconds / a.epochs, "rank0_cpu_seconds_per_epoch": cpu / a.epochs, "epochs": a.epochs, "rows": int(x_train.shape[0]),
            "batch_size": a.batch_size, "final_loss": fit.history[-1].get(fit.objective),
            "parallel": getattr(fit._method(), "parallel", None)}


def worker(a: argparse.Namespace) -> None:
    out = {"gmm": worker_gmm, "vae": worker_vae}[a.worker](a)
    if int(os.environ.get("RANK", "0")) == 0:
        with open(a.result, "w") as f:
            json.dump(out, f)


def launch(ranks: int, part: str, config: dict, tmp: str) -> dict:
    """Run ``part`` under ``torchrun`` with ``ranks`` local processes; rank 0's figures.
    The ranks read their arguments from a file (torchrun's own parser would take ``--n``
    after the script for an abbreviation of ``--nnodes``)."""
    result, path = os.path.join(tmp, f"{part}-{ranks}.json"), os.path.join(tmp, f"{part}-config.json")
    with open(path, "w") as f:
        json.dump(config, f)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
           os.path.abspath(__file__), "--worker", part, "--result", result, "--config", path]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    run = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if run.returncode != 0:  # e.g. a method that does not run data-parallel yet: say so, go on
        errors = [ln for ln in run.stdout.splitlines() if "Error:" in ln and "[rank" in ln]
        return {"failed": errors[-1].split("]: ", 1)[-1] if errors else run.stdout[-2000:]}
    with open(result) as f:
        return json.load(f)


# ---- Spark MLlib ---------------------------------------------------------------------------

def spark_missing() -> str | None:
    """Why Spark cannot run here (``None``: it can)."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install -e '.[spark]', or pip install pyspark)"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java runtime (e.g. apt-get install openjdk-17-jre-headless)"
    return None


def spark_gmm(x, k: int, iters: int, workers: int, tmp: str, repeats: int = 2) -> dict:
    """Spark MLlib's GaussianMixture in ``local[workers]`` on the rows of ``x`` (N, D): the
    best of ``repeats`` timings of ``maxIter=1`` and of ``maxIter=1 + iters``, their difference
    per iteration. Native BLAS (OpenBLAS, one thread per worker) where the system has it."""
    import numpy as np
    from pyspark.ml.clustering import GaussianMixture as SparkGMM
    from pyspark.ml.feature import VectorAssembler
    from pyspark.sql import SparkSession
    path = os.path.join(tmp, "x.csv")
    if not os.path.exists(path):
        np.savetxt(path, x, delimiter=",", fmt="%.17g")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # local[W] means W cores: one BLAS thread each
    spark = (SparkSession.builder.master(f"local[{workers}]").appName("probgen-bench")
             .config("spark.driver.memory", "8g").config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.executorEnv.OPENBLAS_NUM_THREADS", "1").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        raw = spark.read.csv(path, inferSchema=True)
        df = VectorAssembler(inputCols=raw.columns, outputCol="features").transform(raw).select("features")
        df = df.repartition(workers).cache()
        n = df.count()  # materialise the cache before any timing

        jvm = spark.sparkContext._gateway.proc.pid  # the JVM (spark-submit execs java): all its threads

        def timed(max_iter: int):
            t, c = time.perf_counter(), _proc_cpu(jvm)
            m = SparkGMM(k=k, maxIter=max_iter, tol=0.0, seed=0).fit(df)
            return time.perf_counter() - t, _proc_cpu(jvm) - c, m

        timed(1)  # warm-up (the JVM's JIT)
        t1, c1, tn, cn, m = _marginal(timed, iters, repeats)
        return {"seconds_per_iteration": (tn - t1) / iters, "cpu_seconds_per_iteration": (cn - c1) / iters,
                "seconds_fit_1_iteration": t1,
                f"seconds_fit_{1 + iters}_iterations": tn, "iterations": iters, "rows": n,
                "final_log_likelihood": float(m.summary.logLikelihood) / n,
                "spark": spark.version, "master": f"local[{workers}]"}
    finally:
        spark.stop()


def _cell(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.2f}"


def table(out: dict) -> str:
    """The README's table (Markdown) from the figures ``main`` writes."""
    g = out["gmm"]
    rows = ["| | seconds per iteration / epoch | CPU seconds per iteration (every rank / the JVM) | speed-up |", "|---|---|---|---|"]
    pg1 = g["probgen"].get("1", {}).get("seconds_per_iteration")
    for r, res in sorted(g["probgen"].items()):
        if "seconds_per_iteration" in res:
            whole = res.get("seconds_per_iteration_whole_fit")
            rows.append(f"| probgen GMM EM, {r} rank{'s' if r != '1' else ''} | {res['seconds_per_iteration']:.2f}"
                        + (f" (whole fit: {whole:.2f})" if whole is not None else "") + " | "
                        f"{_cell(res.get('cpu_seconds_per_iteration'))} | "
                        f"{pg1 / res['seconds_per_iteration']:.2f}× |")
    for w, res in sorted(g.get("spark", {}).items()):
        if isinstance(res, dict) and "seconds_per_iteration" in res:
            mine = g["probgen"].get(w, {}).get("seconds_per_iteration")
            vs = f"probgen {res['seconds_per_iteration'] / mine:.1f}× faster" if mine else ""
            cpu = res.get("cpu_seconds_per_iteration")
            rows.append(f"| Spark MLlib {res['spark']} `GaussianMixture`, `local[{w}]` | "
                        f"{res['seconds_per_iteration']:.2f} | {_cell(cpu)} | {vs} |")
    v1 = out.get("vae", {}).get("1", {}).get("seconds_per_epoch")
    for r, res in sorted(out.get("vae", {}).items()):
        if "seconds_per_epoch" in res:
            rows.append(f"| probgen VAE epoch, {r} rank{'s' if r != '1' else ''} | {res['seconds_per_epoch']:.2f} | | "
                        f"{v1 / res['seconds_per_epoch']:.2f}× |")
    return "\n".join(rows)


# ---- the driver ----------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2_000_000)
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--ranks", default="1,2", help="numbers of ranks to time, comma-separated")
    p.add_argument("--spark-workers", default="2", help="Spark's local[W] worker counts, comma-separated")
    p.add_argument("--epochs", type=int, default=5, help="VAE epochs timed")
    p.add_argument("--batch-size", type=int, default=128, help="the VAE's global minibatch")
    p.add_argument("--parts", default="gmm,spark,vae", help="which of gmm, spark, vae to run")
    p.add_argument("--json", default=None)
    # a rank's arguments (set by launch)
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", default=None, help=argparse.SUPPRESS)
    p.add_argument("--config", default=None, help=argparse.SUPPRESS)
    p.add_argument("--table", default=None, metavar="JSON", help="print the README's table from a --json file")
    a = p.parse_args()
    if a.table:
        with open(a.table) as f:
            return print(table(json.load(f)))
    if a.worker:
        with open(a.config) as f:
            vars(a).update(json.load(f))
        return worker(a)

    import numpy as np
    import torch

    from probgen.models import GaussianMixture
    ranks = [int(r) for r in a.ranks.split(",")]
    parts = set(a.parts.split(","))
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
           "gmm": {"n": a.n, "d": a.d, "k": a.k, "covariance": "full", "iterations": a.iters, "probgen": {}}}

    def save() -> None:
        if a.json:
            from _tables import run_info
            out["run"] = run_info(("pyspark",))   # command, start/end, load, versions (the docs' run: line)
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)

    with tempfile.TemporaryDirectory() as tmp:
        x = _simulate()(a.n, a.d, a.k)
        data, init_path = os.path.join(tmp, "x.npy"), os.path.join(tmp, "init.pt")
        if "gmm" in parts:
            np.save(data, x)
            torch.save(GaussianMixture(a.k, a.d, "full").init_params(torch.from_numpy(x), seed=0), init_path)
            common = {"data": data, "init": init_path, "d": a.d, "k": a.k, "iters": a.iters}
            for r in ranks:
                res = launch(r, "gmm", common, tmp)
                out["gmm"]["probgen"][str(r)] = res
                save()
                if "failed" in res:
                    print(f"probgen GMM EM, {r} rank(s): failed: {res['failed']}", flush=True)
                    continue
                print(f"probgen GMM EM, {r} rank(s): {res['seconds_per_iteration']:.3f} s/iteration, rank 0's CPU "
                      f"{res['rank0_cpu_seconds_per_iteration']:.3f} s "
                      f"(final log-likelihood {res['final_log_likelihood']:.6f}; method parallel="
                      f"{res['parallel']!r})", flush=True)
                save()
            pg = out["gmm"]["probgen"]
            if all("seconds_per_iteration" in pg.get(r, {}) for r in ("1", "2")):
                out["gmm"]["speedup_2_ranks"] = pg["1"]["seconds_per_iteration"] / pg["2"]["seconds_per_iteration"]
                print(f"speed-up with 2 ranks: {out['gmm']['speedup_2_ranks']:.2f}x (target >= 1.7x)")
                save()
        if "spark" in parts:
            why = spark_missing()
            if why is not None:
                out["gmm"]["spark"] = {"skipped": why}
                print(f"Spark MLlib skipped: {why}")
            else:
                for r in [int(w) for w in a.spark_workers.split(",")]:
                    res = spark_gmm(x, a.k, a.iters, r, tmp)
                    out["gmm"].setdefault("spark", {})[str(r)] = res
                    print(f"Spark MLlib GaussianMixture, local[{r}]: {res['seconds_per_iteration']:.3f} "
                          f"s/iteration", flush=True)
                    mine = out["gmm"]["probgen"].get(str(r), {})
                    if "seconds_per_iteration" in mine:
                        res["probgen_faster"] = res["seconds_per_iteration"] / mine["seconds_per_iteration"]
                        print(f"probgen with {r} rank(s) is {res['probgen_faster']:.1f}x faster (target >= 10x)")
                    save()
        if "vae" in parts:
            out["vae"] = {}
            for r in ranks:
                res = launch(r, "vae", {"epochs": a.epochs, "batch_size": a.batch_size}, tmp)
                out["vae"][str(r)] = res
                save()
                if "failed" in res:
                    print(f"VAE, {r} rank(s): failed: {res['failed']}", flush=True)
                    continue
                print(f"VAE, {r} rank(s): {res['seconds_per_epoch']:.3f} s/epoch "
                      f"(method parallel={res['parallel']!r})", flush=True)
                save()
            if all("seconds_per_epoch" in out["vae"].get(r, {}) for r in ("1", "2")):
                out["vae_speedup_2_ranks"] = out["vae"]["1"]["seconds_per_epoch"] / out["vae"]["2"]["seconds_per_epoch"]
                print(f"VAE speed-up with 2 ranks: {out['vae_speedup_2_ranks']:.2f}x")
                save()


if __name__ == "__main__":
    main()
