"""Every bundled Bayesian network answers: exact where its plan fits, bp and mcmc always.

For each network pgmpy bundles (``probgen.models.bayesian_network.BUNDLED``): load it, then
* a single query: all unobserved marginals given 3 observed variables (from one sample);
* a batched query: the marginals of 3 variables for 200 evidence rows over 5 observed
  columns (sampled from the network; fewer on networks of under 8 variables);
by ``exact`` (variable elimination; its largest intermediate is computed first, and past
the 2^27-entry limit it refuses), ``bp`` (loopy belief propagation) and ``mcmc`` (Gibbs,
``--samples`` sweeps). Errors are the largest absolute difference of a marginal
probability from exact's, where exact ran. Seconds are wall time of one call on one
thread. ``--json PATH`` writes the rows, merged by network name into the rows already
in that file (a run over some networks replaces their rows and keeps the others).

    python benchmarks/networks.py [--networks asia,alarm] [--samples 2000] [--json docs/benchmarks/networks.json]
    python benchmarks/networks.py --table docs/benchmarks/networks.json   # the README table
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

import probgen as pg
from probgen.models import BayesianNetwork
from probgen.models.bayesian_network import BUNDLED
from probgen.ops.bayesian_network import compiled


def _max_err(got: dict, want: dict) -> float:
    return max(float((torch.as_tensor(got[k]) - torch.as_tensor(want[k])).abs().max()) for k in want)


def _timed(fn):
    t = time.perf_counter()
    try:
        return fn(), time.perf_counter() - t
    except ValueError as e:
        return e, time.perf_counter() - t


def run(name: str, samples: int, rows: int, seed: int) -> dict:
    t = time.perf_counter()
    bn = BayesianNetwork.load_bundled(name)
    out = {"network": name, "variables": len(bn.variables), "load_s": time.perf_counter() - t}
    rng = np.random.default_rng(seed)
    x = bn.sample(None, rows, seed=seed).numpy()
    obs = rng.choice(len(bn.variables), 3, replace=False)
    ev = {bn.variables[j]: bn.states[bn.variables[j]][x[0, j]] for j in obs}
    net = compiled(bn, bn.check_params(None))
    out["largest"] = net.largest_intermediate(range(len(bn.variables)), [int(j) for j in obs])
    res = {}
    for engine, opts in (("exact", {}), ("bp", {}), ("mcmc", {"num_samples": samples, "seed": seed})):
        res[engine], out[f"{engine}_s"] = _timed(lambda: pg.infer(bn, ev, engine=engine, **opts))
    # batched: 5 observed columns, 3 targets among the others
    n_obs = min(5, len(bn.variables) - 2)  # small networks: fewer observed columns and targets
    cols = rng.choice(len(bn.variables), min(n_obs + 3, len(bn.variables)), replace=False)
    table = np.full_like(x, -1)
    table[:, cols[:n_obs]] = x[:, cols[:n_obs]]
    targets = [bn.variables[j] for j in cols[n_obs:]]
    batch = {}
    for engine, opts in (("exact", {}), ("bp", {}), ("mcmc", {"num_samples": samples, "seed": seed})):
        batch[engine], out[f"{engine}_batch_s"] = _timed(
            lambda: pg.infer(bn, table, engine=engine, variables=targets, **opts))
    for engine in ("bp", "mcmc"):
        for key, got in ((engine, res), (f"{engine}_batch", batch)):
            want = got["exact"]
            ok = not isinstance(want, Exception) and not isinstance(got[engine], Exception)
            out[f"{key}_err"] = _max_err(got[engine], want) if ok else None
    out["exact_ran"] = not isinstance(res["exact"], Exception)
    return out


HEADER = ("| network | vars | exact: largest intermediate | exact s | bp s | mcmc s | bp err | mcmc err "
          "| batched 200 rows: exact s | bp s | mcmc s | bp err | mcmc err |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def table_row(r: dict) -> str:
    """One README table row from one JSON row."""
    fmt = lambda v, spec: "—" if v is None else format(v, spec)  # noqa: E731
    exact = f"{r['largest']:.3g}" + ("" if r["exact_ran"] else " (refused)")
    return (f"| {r['network']} | {r['variables']} | {exact} | {fmt(r['exact_s'] if r['exact_ran'] else None, '.3f')} "
            f"| {r['bp_s']:.3f} | {r['mcmc_s']:.3f} | {fmt(r['bp_err'], '.3f')} | {fmt(r['mcmc_err'], '.3f')} "
            f"| {fmt(r['exact_batch_s'] if r['exact_ran'] else None, '.3f')} | {r['bp_batch_s']:.3f} "
            f"| {r['mcmc_batch_s']:.3f} | {fmt(r['bp_batch_err'], '.3f')} | {fmt(r['mcmc_batch_err'], '.3f')} |")


def main() -> None:
    from _tables import parser
    ap = parser("networks", __doc__, rows=(HEADER, table_row))
    ap.add_argument("--networks", default=",".join(BUNDLED))
    ap.add_argument("--samples", type=int, default=2000, help="Gibbs sweeps per mcmc query")
    ap.add_argument("--rows", type=int, default=200, help="evidence rows of the batched query")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pg.set_num_threads(1)
    results = []
    kept = []
    if args.json and os.path.exists(args.json):
        with open(args.json) as f:
            kept = json.load(f)
    order = {n: k for k, n in enumerate(BUNDLED)}
    print(HEADER, flush=True)
    for name in args.networks.split(","):
        r = run(name, args.samples, args.rows, args.seed)
        results.append(r)
        if args.json:  # after every network: a long run that is cut short keeps what it measured
            done = {row["network"] for row in results}
            rows = [row for row in kept if row["network"] not in done] + results
            rows.sort(key=lambda row: order.get(row["network"], len(order)))
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
        print(table_row(r), flush=True)


if __name__ == "__main__":
    main()
