"""Exact inference on discrete factor graphs: probgen (log-space tensor contraction) vs
pgmpy (variable elimination / belief propagation on a junction tree), same model, same
process.

    python benchmarks/factor_graph.py [--repeat 5] [--json docs/benchmarks/factor_graph.json]

Models: n×n grid Markov random fields with random log-potentials (cardinality k) and
random unary terms. Tasks: log Z (pgmpy: variable elimination); every variable's marginal given evidence on one corner;
the MAP assignment. Times are the best of ``--repeat`` runs; the answers are checked to
agree before timing is reported.
"""
from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import torch

from probgen.models import FactorGraph
import probgen as pg

warnings.filterwarnings("ignore")
# pgmpy runs on single-threaded NumPy; give torch one thread too (on a loaded machine
# torch's intra-op thread pool makes tiny-tensor ops thousands of times slower)
torch.set_num_threads(1)
logging.getLogger("pgmpy").setLevel(logging.ERROR)


def grid(n: int, k: int, seed: int = 0) -> FactorGraph:
    g = torch.Generator().manual_seed(seed)
    name = lambda i, j: f"x{i}_{j}"  # noqa: E731
    cards = {name(i, j): k for i in range(n) for j in range(n)}
    edges = {}
    for i in range(n):
        for j in range(n):
            if i + 1 < n:
                edges[(name(i, j), name(i + 1, j))] = torch.randn(k, k, generator=g, dtype=torch.float64)
            if j + 1 < n:
                edges[(name(i, j), name(i, j + 1))] = torch.randn(k, k, generator=g, dtype=torch.float64)
    unary = {v: torch.randn(k, generator=g, dtype=torch.float64) for v in cards}
    return FactorGraph.pairwise(cards, edges, unary)


def to_pgmpy(fg: FactorGraph):
    from pgmpy.factors.discrete import DiscreteFactor
    from pgmpy.models import DiscreteMarkovNetwork
    m = DiscreteMarkovNetwork([s for s in fg.scopes.values() if len(s) == 2])
    m.add_nodes_from(fg.variables)
    for f, s in fg.scopes.items():
        m.add_factors(DiscreteFactor(list(s), [fg.variables[v] for v in s],
                                     fg.log_potentials[f].exp().numpy().ravel()))
    return m


def best(fn, repeat):
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, min(times)


def main(repeat: int, json_path: str | None = None) -> None:
    from pgmpy.inference import BeliefPropagation, VariableElimination
    rows = []
    for n, k in ((3, 2), (4, 2), (4, 3), (5, 2)):
        fg = grid(n, k)
        pm = to_pgmpy(fg)
        ev = {"x0_0": 1}
        hidden = [v for v in fg.variables if v not in ev]

        lz_pg, t_pg = best(lambda: pg.infer(fg, None, query="log_partition"), repeat)
        # pgmpy's variable elimination leaves a Markov network's query unnormalised: its sum is Z
        lz_peer, t_peer = best(lambda: VariableElimination(pm).query([hidden[0]], show_progress=False,
                                                                     joint=True).values.sum(), repeat)
        assert abs(float(lz_pg) - np.log(lz_peer)) < 1e-8, (float(lz_pg), np.log(lz_peer))
        rows.append((f"{n}x{n} grid, k={k}", "log Z", t_pg, t_peer))

        m_pg, t_pg = best(lambda: pg.infer(fg, ev, query="marginals"), repeat)

        def peer_marginals():
            bp = BeliefPropagation(pm)
            bp.calibrate()
            return {v: bp.query([v], evidence=ev, show_progress=False).values for v in hidden}
        m_peer, t_peer = best(peer_marginals, repeat)
        for v in hidden:
            want = m_peer[v] / m_peer[v].sum()
            assert np.allclose(m_pg[v].numpy(), want, atol=1e-8), v
        rows.append((f"{n}x{n} grid, k={k}", "all marginals given evidence", t_pg, t_peer))

        map_pg, t_pg = best(lambda: pg.infer(fg, ev, query="map"), repeat)
        map_peer, t_peer = best(lambda: VariableElimination(pm).map_query(hidden, evidence=ev, show_progress=False), repeat)
        # compare scores, not assignments (ties are possible in principle)
        x = lambda a: torch.tensor([[a[v] if v in a else ev[v] for v in fg.variables]])  # noqa: E731
        assert abs(float(fg.unnormalized_log_prob(None, x(map_pg)) - fg.unnormalized_log_prob(None, x(map_peer)))) < 1e-8
        rows.append((f"{n}x{n} grid, k={k}", "MAP given evidence", t_pg, t_peer))

    from _tables import emit, table
    emit(json_path, f"python benchmarks/factor_graph.py --repeat {repeat}", {"grids": table(
        ["model", "task", "probgen (ms)", "pgmpy (ms)", "pgmpy / probgen"],
        [[model, task, f"{a * 1e3:.1f}", f"{b * 1e3:.1f}", f"{b / a:.1f}×"] for model, task, a, b in rows])},
        peers=("pgmpy",), note=f"Best of {repeat} calls each")


if __name__ == "__main__":
    from _tables import parser
    p = parser("factor_graph", __doc__)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    main(a.repeat, a.json)
