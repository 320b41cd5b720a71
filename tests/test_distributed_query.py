"""Batched queries under torch.distributed (issue 16, item 5): ``pg.infer`` on many evidence rows
(Bayesian network), sentences (PCFG), sequences (HMM) and examples (mixture) on two local gloo
ranks — each rank answers its contiguous block, the answers are gathered and joined in order —
equals the 1-process answer, is the same on both ranks, and ``distributed=False`` stays local."""
import functools
import os
import pickle

import numpy as np
import pytest
import torch

import probgen as pg
from probgen import registry
from probgen.data import join, n_items
from probgen.distributed import Shard
from probgen.models import HMM, PCFG, BayesianNetwork, GaussianMixture
from ranks import run_ranks


# ---- the problems (built alike on every rank and in the test process) ------------------------

def bn_problem():
    """Asia with 23 evidence rows, about half the cells missing; ``asia`` is observed in every
    row but the last, so rank 0's block observes it throughout and rank 1's does not."""
    bn, _ = BayesianNetwork.example()
    x = bn.sample(None, 23, seed=1).clone()
    g = torch.Generator().manual_seed(2)
    x[torch.rand(x.shape, generator=g) < 0.5] = -1
    j = bn.index["asia"]
    x[:, j] = bn.sample(None, 23, seed=3)[:, j]
    x[-1, j] = -1
    return bn, x


def pcfg_problem():
    g, _ = PCFG.example()
    sents = [t.leaves() for t in g.sample(None, 9, seed=4, max_length=8)]
    return g, sents


def hmm_problem():
    """Seven sequences; the longest is the first, so rank 1's block is padded less."""
    model = HMM(2, "categorical", n_symbols=3)
    params = {"initial": torch.tensor([0.6, 0.4], dtype=torch.float64),
              "transition": torch.tensor([[0.8, 0.2], [0.3, 0.7]], dtype=torch.float64),
              "probs": torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=torch.float64)}
    x = model.sample(params, 7, seed=5, T=9)
    seqs = [x[b, :n] for b, n in enumerate([9, 4, 6, 3, 5, 2, 6])]
    return model, params, seqs


def gmm_problem():
    model = GaussianMixture(k=3, dim=2)
    x = torch.randn(31, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    params = model.init_params(x, seed=0)
    return model, params, x


def _trees(trees):
    return [None if t is None else (str(t), float(t.log_prob)) for t in trees]


def answers(distributed):
    """Every query of the four problems, as picklable values."""
    bn, ev = bn_problem()
    g, sents = pcfg_problem()
    hmm, hp, seqs = hmm_problem()
    gmm, gp, x = gmm_problem()
    hfit = pg.fit(hmm, seqs, engine="exact", init=hp, progress=False, distributed=False)
    gfit = pg.fit(gmm, x, engine="exact", init=gp, progress=False, distributed=False)
    out = {"bn_marginals": pg.infer(bn, ev, query="marginals", distributed=distributed),
           "bn_map": pg.infer(bn, ev, query="map", distributed=distributed),
           "bn_map_two": pg.infer(bn, ev, query="map", variables=["lung", "asia"], distributed=distributed),
           "bn_single": pg.infer(bn, {"smoke": "yes"}, query="marginals", distributed=distributed),
           "pcfg_map": _trees(pg.infer(g, sents, query="map", distributed=distributed)),
           "pcfg_marginals": pg.infer(g, sents, query="marginals", distributed=distributed)}
    for q in ("marginals", "map", "log_evidence"):
        out[f"hmm_{q}"] = pg.infer(hfit, seqs, query=q, distributed=distributed)
    for q in ("marginals", "map", "log_prob"):
        out[f"gmm_{q}"] = pg.infer(gfit, x, query=q, distributed=distributed)
    return out


def _count_rows(method, calls):
    """Wrap ``method.infer`` (the registry's one instance, in this process) to record how many
    rows each call answers (``None``: one assignment); its signature is kept (the core reads it)."""
    inner = method.infer

    @functools.wraps(inner)
    def counted(model, params, data, query, **options):
        rows = None if isinstance(data, dict) else n_items(model.check_data(data))
        calls.append((method.name, query, rows))
        return inner(model, params, data, query, **options)
    method.infer = counted


def _ranked(distributed=None):
    """On a rank: the answers, and the number of rows each call of a method's ``infer`` got."""
    calls = []
    for model in (bn_problem()[0], pcfg_problem()[0], hmm_problem()[0], gmm_problem()[0]):
        _count_rows(registry.find_method(model, "exact"), calls)
    # pickled here: a tensor put on the queue as such is shared through a file descriptor that
    # is gone once this process has exited
    return pickle.dumps((answers(distributed), calls))


def _assert_same(got, want, exact_keys=()):
    assert got.keys() == want.keys()
    for k in want:
        a, b = got[k], want[k]
        if isinstance(b, dict):
            _assert_same(a, b)
        elif isinstance(b, torch.Tensor):
            assert a.shape == b.shape and a.dtype == b.dtype, k
            # each row's answer is the same computation on a smaller batch: equal up to float64
            # round-off of its own sums (tensor kernels may block a batch differently)
            assert torch.allclose(a, b, rtol=1e-12, atol=1e-14), k
        elif isinstance(b, list) and b and isinstance(b[0], torch.Tensor):
            assert len(a) == len(b) and all(torch.allclose(u, v, rtol=1e-12, atol=1e-14) for u, v in zip(a, b)), k
        else:
            assert a == b, k


def test_batched_queries_split_the_rows_and_equal_one_process():
    want = answers(distributed=False)
    (got0, calls0), (got1, calls1) = map(pickle.loads, run_ranks(_ranked))
    # the same answer on both ranks, bit for bit (one gather, joined alike), and the 1-process one
    for k in want:
        _assert_same({k: got0[k]}, {k: want[k]})
        _assert_same({k: got1[k]}, {k: got0[k]})
        if isinstance(want[k], torch.Tensor):
            assert torch.equal(got0[k], got1[k])
    # each rank answered its own contiguous block (rank 0 the larger half) of every row-wise query
    sizes = {"bayesian_network": 23, "grammar": 9, "chain": 7, "mixture": 31}
    for rank, calls in ((0, calls0), (1, calls1)):
        for name, query, rows in calls:
            if query == "marginals" and name == "bayesian_network" and rows is None:
                continue  # one assignment: answered whole on every rank
            n = sizes[name]
            assert rows == (n + 1) // 2 if rank == 0 else rows == n // 2, (name, query, rows)
    assert ("bayesian_network", "marginals", None) in calls1  # the single assignment ran whole
    # rank 0's block observes `asia` in every row, rank 1's does not: the query variables are
    # fixed on the whole table, so `asia` is answered for all 23 rows
    assert got0["bn_marginals"]["asia"].shape == (23, 2)
    assert list(got0["bn_map_two"]) == ["lung", "asia"]
    # the HMM answers keep the whole batch's width (rank 1's sequences are shorter)
    assert got0["hmm_marginals"].shape == (7, 9, 2) and (got0["hmm_map"][5, 2:] == -1).all()


def _local_on_rank_1():
    """Only rank 1 asks, with distributed=False: answered here (no collective: rank 0 has left)."""
    if os.environ["RANK"] == "0":
        return None
    bn, ev = bn_problem()
    calls = []
    _count_rows(registry.find_method(bn, "exact"), calls)
    return pickle.dumps((pg.infer(bn, ev, query="marginals", distributed=False), [rows for _, _, rows in calls]))


def test_distributed_false_answers_locally_on_one_rank():
    want = pg.infer(*bn_problem(), query="marginals")
    none, mine = run_ranks(_local_on_rank_1, timeout=120)
    got, calls = pickle.loads(mine)
    assert none is None and calls == [23]
    _assert_same(got, want)


def test_join_and_refusals():
    a = {"p": torch.ones(2, 3), "s": ["x", "y"], "labels": ["A"], "t": (torch.zeros(2), [1, 2])}
    b = {"p": torch.zeros(1, 3), "s": ["z"], "labels": ["A"], "t": (torch.ones(1), [3])}
    j = join([a, b], same=("labels",))
    assert torch.equal(j["p"], torch.cat([a["p"], b["p"]])) and j["s"] == ["x", "y", "z"]
    assert j["labels"] == ["A"] and torch.equal(j["t"][0], torch.tensor([0., 0., 1.])) and j["t"][1] == [1, 2, 3]
    assert np.array_equal(join([np.arange(2), np.arange(3)]), np.array([0, 1, 0, 1, 2]))
    with pytest.raises(ValueError, match="cannot be joined"):
        join([1.0, 2.0])
    bn, ev = bn_problem()
    with pytest.raises(ValueError, match="whole data on every rank"):
        pg.infer(bn, Shard(ev), query="marginals")
    with pytest.raises(ValueError, match="needs a process group"):
        pg.infer(bn, ev, query="marginals", distributed=True)
    hmm, hp, seqs = hmm_problem()
    fit = pg.fit(hmm, seqs, engine="exact", init=hp, progress=False)
    wide = pg.infer(fit, seqs, query="map", width=12)
    assert wide.shape == (7, 12) and torch.equal(wide[:, :9], pg.infer(fit, seqs, query="map"))
    assert (wide[:, 9:] == -1).all()
    with pytest.raises(ValueError, match="width must be an integer >= the longest"):
        pg.infer(fit, seqs, query="map", width=5)
