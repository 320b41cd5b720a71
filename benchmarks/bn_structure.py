"""Structure learning side by side: probgen, pgmpy and pyAgrum on the same samples.

    python benchmarks/bn_structure.py [--networks alarm,child,insurance] [--rows 500,1000,5000]
        [--seed 1] [--cap 300] [--json docs/benchmarks/bn_structure.json]
    python benchmarks/bn_structure.py --table docs/benchmarks/bn_structure.json   # the README table

For each network and ``N``: ``N`` rows sampled from the bundled network (``--seed``), given
to every learner as the same table of state names. Rows (learner pairs):

* hill climbing with BIC and with BDeu (equivalent sample size 10): probgen's
  ``"hill-climb"`` (defaults: sideways moves, 8 tie-breaking restarts) against pgmpy's
  ``HillClimbSearch().estimate()`` (defaults: tabu list 100, epsilon 1e-4) with its
  ``BIC`` / ``BDeu`` given the network's state names (so both score the same tables), and
  pyAgrum's ``BNLearner.useGreedyHillClimbing()`` with ``useScoreBIC`` plus
  ``useSmoothingPrior(1)`` (its BIC refuses a sample in which a parent configuration it
  considers never occurs) / ``useScoreBDeu`` (pyAgrum sees only the states present in the
  sample; one thread, ``setNumberOfThreads(1)``); no parent limit anywhere;
* Chow-Liu: probgen's ``"chow-liu"`` against pgmpy's ``TreeSearch`` (chow-liu), both at
  their default root (the variable of largest total mutual information with the others);
* PC-stable: probgen's ``"pc"`` against pgmpy's ``PC(variant="stable")``, both with the G²
  test, significance 0.01 and at most 5 conditioning variables (pgmpy's default), and
  pyAgrum's MIIC (its constraint-based learner) in the pyAgrum columns. Both count the
  degrees of freedom of the states seen in each configuration of the conditioning set
  (probgen's ``dof="adjusted"``); they differ where pgmpy (through scipy's
  ``chi2_contingency``) applies Yates' correction to 2 x 2 strata, reads a test with no
  degree of freedom as dependence (NaN p-value), and removes edges as it goes (its
  "stable" variant does not freeze the adjacencies per level, so it depends on the
  variable order).

Each row: seconds (wall, one call) and the structural Hamming distance to the true DAG (a
reversed edge counts 1; for PC the DAG each library extends its CPDAG to). A peer call
runs in a child process (pgmpy forked; pyAgrum spawned afresh, since forked from a process
that has run threaded numpy / torch its learners hang) killed after ``--cap`` seconds
(the row says "capped"); a peer
that raises is "refused" (the JSON keeps its message). Ratio = pgmpy seconds / probgen
seconds. ``--json`` writes every row (the README table's source).

pgmpy's searches iterate over Python sets of edges, so their ties (and so its graphs) follow
Python's string hashing: the script re-runs itself with ``PYTHONHASHSEED=0`` unless the
variable is set, so that a run is reproducible (pgmpy's SHD on insurance N=500 BIC was 39-45
over hash seeds 0-5).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import sys
import time
import warnings

import networkx as nx
import pandas as pd

from probgen.models import BayesianNetwork
from probgen.ops import structure as S


def _pgmpy(kind: str, df: pd.DataFrame, states: dict, root: str) -> list:
    warnings.filterwarnings("ignore")
    from pgmpy.estimators import BDeu, BIC, PC, HillClimbSearch, TreeSearch
    if kind in ("bic", "bdeu"):
        score = BIC(df, state_names=states) if kind == "bic" else BDeu(df, equivalent_sample_size=10,
                                                                      state_names=states)
        dag = HillClimbSearch(df).estimate(scoring_method=score, show_progress=False)
    elif kind == "chow-liu":
        dag = TreeSearch(df, root_node=root, n_jobs=1).estimate(estimator_type="chow-liu", show_progress=False)
    else:
        dag = PC(df).estimate(variant="stable", ci_test="g_sq", significance_level=0.01, max_cond_vars=5,
                              return_type="dag", n_jobs=1, show_progress=False)
    return list(dag.edges())


def _pyagrum(kind: str, df: pd.DataFrame, states: dict, root: str) -> list:
    import pyagrum as gum
    learner = gum.BNLearner(df.astype(str))
    # one thread, as pgmpy (n_jobs=1): on this loaded 2-core machine its default (one thread
    # per core) took 4.6 s where 1 took 0.2 s (alarm, N=5000, BDeu)
    learner.setNumberOfThreads(1)
    if kind == "miic":
        learner.useMIIC()
    else:
        learner.useGreedyHillClimbing()
        if kind == "bic":
            # pyAgrum's BIC refuses a sample in which a parent configuration it considers never
            # occurs; a smoothing prior (Laplace: weight 1 added to every cell) lets it score
            # every row; the counts it scores differ from probgen's and pgmpy's by that 1
            learner.useScoreBIC()
            learner.useSmoothingPrior(1.0)
        else:
            learner.useScoreBDeu()  # pyAgrum's own BDeu ESS
    bn = learner.learnBN()
    return [(bn.variable(a).name(), bn.variable(b).name()) for a, b in bn.arcs()]


def _child(fn, kind, df, states, root, q):
    if fn is _pyagrum:  # a spawned child: the import is not part of the call's seconds
        import pyagrum  # noqa: F401
    t = time.perf_counter()
    try:
        edges = fn(kind, df, states, root)
    except Exception as e:  # the peer refuses the sample: the row says why
        q.put((None, time.perf_counter() - t, f"{type(e).__name__}: {e}"))
        return
    q.put((edges, time.perf_counter() - t, None))


def _capped(fn, kind: str, df: pd.DataFrame, states: dict, root: str, cap: float):
    """``(edges, seconds, error)`` of a peer call in a child process: ``(None, cap, "capped")``
    past the cap, ``(None, seconds, message)`` when the peer raised."""
    # pyAgrum in a fresh (spawned) process: forked from this one, which has run probgen's
    # threaded numpy / torch, its learners hung (MIIC even on one thread: > 120 s where a
    # plain process took 1.5 s on child N=5000); pgmpy (pure Python) is forked
    ctx = mp.get_context("spawn" if fn is _pyagrum else "fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, kind, df, states, root, q))
    p.start()
    try:
        return q.get(timeout=cap)
    except queue.Empty:
        return None, cap, "capped"
    finally:
        p.kill()
        p.join()


def _shd(true, nodes, edges) -> int | None:
    if edges is None:
        return None
    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    return S.shd(true, g)


ROWS = [("hill-climb BIC", dict(method="hill-climb", score="bic"), "bic", "bic"),
        ("hill-climb BDeu", dict(method="hill-climb", score="bdeu"), "bdeu", "bdeu"),
        ("Chow-Liu", dict(method="chow-liu"), "chow-liu", None),
        ("PC-stable", dict(method="pc", significance_level=0.01, ci_test="g2", max_cond_vars=5), "pc", "miic")]


HEADER = ("| network | N | method | probgen s | probgen SHD | pgmpy s | pgmpy SHD | pgmpy s / probgen s "
          "| pyAgrum | pyAgrum s | pyAgrum SHD |\n|---|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    if "PYTHONHASHSEED" not in os.environ:  # pgmpy's set iteration order: a reproducible run
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    from _tables import parser
    ap = parser("bn_structure", __doc__, rows=(HEADER, table_row))
    ap.add_argument("--networks", default="alarm,child,insurance")
    ap.add_argument("--rows", default="500,1000,5000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cap", type=float, default=300.0, help="seconds a peer call may take")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import pgmpy.estimators  # noqa: F401  (imported here, before the peers' child processes fork:
    # their seconds do not include the import)
    try:
        import pyagrum  # noqa: F401
        have_agrum = True
    except ImportError:
        have_agrum = False
    out = []
    print(HEADER, flush=True)
    for name in args.networks.split(","):
        true = BayesianNetwork.load_bundled(name)
        states = {v: list(true.states[v]) for v in true.variables}
        root = None  # Chow-Liu: both libraries' default root (largest total mutual information)
        for n in [int(r) for r in args.rows.split(",")]:
            x = true.sample(None, n, seed=args.seed).numpy()
            df = pd.DataFrame(true.decode(x))
            for label, ours, peer_kind, agrum_kind in ROWS:
                kw = dict(ours)
                t = time.perf_counter()
                net = BayesianNetwork.learn_structure(x, states=states, seed=0, progress=False, **kw)
                t_ours = time.perf_counter() - t
                e_pg, t_pg, err_pg = _capped(_pgmpy, peer_kind, df, states, root, args.cap)
                row = {"network": name, "N": n, "method": label, "probgen_s": t_ours,
                       "probgen_shd": S.shd(true, net), "pgmpy_s": t_pg, "pgmpy_shd": _shd(true, true.variables, e_pg),
                       "pgmpy_error": err_pg, "ratio": t_pg / t_ours,
                       "pyagrum": None, "pyagrum_s": None, "pyagrum_shd": None, "pyagrum_error": None}
                if have_agrum and agrum_kind is not None:
                    e_ag, t_ag, err_ag = _capped(_pyagrum, agrum_kind, df, states, root, args.cap)
                    row.update(pyagrum="MIIC" if agrum_kind == "miic" else "greedy hill climbing",
                               pyagrum_s=t_ag, pyagrum_shd=_shd(true, true.variables, e_ag), pyagrum_error=err_ag)
                out.append(row)
                if args.json:
                    with open(args.json, "w") as f:
                        json.dump(out, f, indent=1)
                print(table_row(row), flush=True)


def _f(v, spec):
    return "—" if v is None else format(v, spec)


def _peer(r: dict, who: str) -> tuple[str, str]:
    """(seconds, SHD) cells of a peer: "> cap (capped)" past the cap, "refused" when it raised."""
    err = r[f"{who}_error"]
    if err == "capped":
        return f"> {r[f'{who}_s']:.0f} (capped)", "—"
    if err is not None:
        return "refused", "—"
    return _f(r[f"{who}_s"], ".2f"), _f(r[f"{who}_shd"], "d")


def table_row(r: dict) -> str:
    """One README table row from one JSON row."""
    pg_s, pg_shd = _peer(r, "pgmpy")
    ag_s, ag_shd = _peer(r, "pyagrum")
    ratio = "—" if r["pgmpy_error"] not in (None, "capped") else (
        f"> {r['ratio']:.0f}x" if r["pgmpy_error"] else f"{r['ratio']:.1f}x")
    return (f"| {r['network']} | {r['N']:,} | {r['method']} | {r['probgen_s']:.2f} | {r['probgen_shd']} | {pg_s} "
            f"| {pg_shd} | {ratio} | {r['pyagrum'] or '—'} | {ag_s} | {ag_shd} |")


if __name__ == "__main__":
    main()
