"""Exact Bayesian-network queries: probgen vs pgmpy's VariableElimination, side by side.

    python benchmarks/bn.py [--networks asia,child,...] [--queries 50] [--rows 1000]

For each network bundled with pgmpy (read by probgen's own BIF parser; pgmpy is given
the very same tables, so both answer the same question):
  * single queries: ``--queries`` random queries, each a target variable and 3 evidence
    variables (states from a sample of the network, so the evidence is possible), one
    call per query on each side (per-call overhead);
  * batched prediction: one target, ``--rows`` evidence rows over the same 5 observed
    variables sampled from the network; pgmpy answers row by row, probgen in one call
    (the median of 3 cold calls: each includes building its plan and cached tables).
Answers are compared (max absolute difference; must be below 1e-9) and times reported
as milliseconds and ratios (pgmpy / probgen).
"""
from __future__ import annotations

import logging
import time
import warnings

import numpy as np

import probgen as pg
from probgen.models import BayesianNetwork

NETWORKS = ("asia", "child", "alarm", "insurance", "hepar2", "win95pts")


def to_pgmpy(bn: BayesianNetwork):
    from pgmpy.factors.discrete import TabularCPD
    from pgmpy.models import DiscreteBayesianNetwork
    m = DiscreteBayesianNetwork([(p, v) for v in bn.variables for p in bn.parents[v]])
    m.add_nodes_from(bn.variables)
    for v in bn.variables:
        pa = bn.parents[v]
        t = bn.tables[v].numpy()
        m.add_cpds(TabularCPD(v, len(bn.states[v]), t.reshape(-1, t.shape[-1]).T, evidence=pa or None,
                              evidence_card=[len(bn.states[p]) for p in pa] or None,
                              state_names={u: bn.states[u] for u in [v] + pa}))
    return m


def pgmpy_probs(ve, bn, q, ev):
    r = ve.query([q], evidence=ev, show_progress=False)
    return r.values[[r.state_names[q].index(s) for s in bn.states[q]]]


def cold(bn, table, target, repeats: int = 3):
    """probgen's answer and the median time of ``repeats`` cold calls: the plans and joint
    tables cached for earlier queries are dropped before each, so the time includes
    building them; the compiled network (float64 tables, elimination order — built once
    per network, like pgmpy's VariableElimination object) is kept."""
    from probgen.ops.bayesian_network import compiled
    net = compiled(bn, bn.check_params(None))
    times = []
    for _ in range(repeats):
        net.plans.clear()
        net.joints.clear()
        t = time.perf_counter()
        out = pg.infer(bn, table, variables=[target])[target].numpy()
        times.append(time.perf_counter() - t)
    return out, float(np.median(times))


def run(name: str, n_queries: int, n_rows: int, seed: int = 0) -> dict:
    from pgmpy.inference import VariableElimination
    bn = BayesianNetwork.load_bundled(name)
    ve = VariableElimination(to_pgmpy(bn))
    rng = np.random.default_rng(seed)
    x = bn.sample(None, max(n_queries, n_rows), seed=seed).numpy()
    queries = []
    for i in range(n_queries):
        vs = rng.choice(len(bn.variables), 4, replace=False)
        ev = {bn.variables[j]: bn.states[bn.variables[j]][x[i, j]] for j in vs[:3]}
        queries.append((bn.variables[vs[3]], ev))
    # warm-up, one call each (imports, first-touch caches); the timed queries differ from it
    pg.infer(bn, {}, variables=[bn.variables[0]])
    pgmpy_probs(ve, bn, bn.variables[0], {})

    t = time.perf_counter()
    ours = [pg.infer(bn, ev, variables=[q])[q].numpy() for q, ev in queries]
    t_ours = (time.perf_counter() - t) / n_queries
    t = time.perf_counter()
    theirs = [pgmpy_probs(ve, bn, q, ev) for q, ev in queries]
    t_pgmpy = (time.perf_counter() - t) / n_queries
    err_single = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs))

    vs = rng.choice(len(bn.variables), 6, replace=False)
    target, cols = bn.variables[vs[0]], [bn.variables[j] for j in vs[1:]]
    table = {c: [bn.states[c][k] for k in x[:n_rows, bn.index[c]]] for c in cols}
    batch, t_batch = cold(bn, table, target)
    t = time.perf_counter()
    rows = [pgmpy_probs(ve, bn, target, {c: table[c][i] for c in cols}) for i in range(n_rows)]
    t_rows = time.perf_counter() - t
    err_batch = float(np.abs(batch - np.array(rows)).max())
    # the same rows with 10% of the cells missing: one batched contraction with indicator
    # factors (the general path) instead of a lookup in the cached joint table
    holes = rng.random((n_rows, len(cols))) < 0.1
    gappy = {c: [None if holes[i, k] else s for i, s in enumerate(table[c])] for k, c in enumerate(cols)}
    batch, t_gap = cold(bn, gappy, target)
    t = time.perf_counter()
    rows = [pgmpy_probs(ve, bn, target, {c: gappy[c][i] for c in cols if gappy[c][i] is not None})
            for i in range(n_rows)]
    t_gap_rows = time.perf_counter() - t
    err_batch = max(err_batch, float(np.abs(batch - np.array(rows)).max()))
    return {"network": name, "vars": len(bn.variables), "single_ours_ms": t_ours * 1e3,
            "single_pgmpy_ms": t_pgmpy * 1e3, "single_ratio": t_pgmpy / t_ours, "single_err": err_single,
            "batch_ours_ms": t_batch * 1e3, "batch_pgmpy_ms": t_rows * 1e3, "batch_ratio": t_rows / t_batch,
            "batch_err": err_batch, "gap_ours_ms": t_gap * 1e3, "gap_pgmpy_ms": t_gap_rows * 1e3,
            "gap_ratio": t_gap_rows / t_gap}


def main() -> None:
    from _tables import parser
    ap = parser("bn", __doc__)
    ap.add_argument("--networks", default=",".join(NETWORKS))
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--rows", type=int, default=1000)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    print(f"single: {args.queries} queries x 3 evidence vars, one call each; batched: 1 target, "
          f"{args.rows} rows x 5 observed vars (pgmpy row by row, probgen one call)\n")
    from _tables import emit, table
    columns = ["network", "vars", "single: probgen ms/query", "pgmpy ms/query", "ratio",
               f"batched {args.rows:,} rows: probgen ms", "pgmpy ms", "ratio", "10% cells missing: probgen ms", "pgmpy ms",
               "ratio", "max abs diff"]
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    rows = []
    for name in args.networks.split(","):
        r = run(name, args.queries, args.rows)
        err = max(r["single_err"], r["batch_err"])
        rows.append([name, r['vars'], f"{r['single_ours_ms']:.3f}", f"{r['single_pgmpy_ms']:.3f}",
                     f"{r['single_ratio']:.1f}x", f"{r['batch_ours_ms']:.2f}", f"{r['batch_pgmpy_ms']:.0f}",
                     f"{r['batch_ratio']:.0f}x", f"{r['gap_ours_ms']:.1f}", f"{r['gap_pgmpy_ms']:.0f}",
                     f"{r['gap_ratio']:.0f}x", f"{err:.1e}"])
        print("| " + " | ".join(map(str, rows[-1])) + " |", flush=True)
        if err > 1e-9:
            raise SystemExit(f"{name}: answers differ from pgmpy by {err:.2e} > 1e-9")
    emit(args.json, f"python benchmarks/bn.py --queries {args.queries} --rows {args.rows}", {"queries": table(columns, rows)},
         show=False, peers=("pgmpy",), note=f"Single: {args.queries} queries x 3 evidence variables, one call each; "
         f"batched: 1 target, {args.rows:,} rows x 5 observed variables (pgmpy row by row, probgen one call)")


if __name__ == "__main__":
    main()
