"""Checkpoints of data-parallel fits (issue 16): rank 0 writes the one file (every rank's state
in it), every rank waits for it; ``pg.resume`` on the same number of ranks continues.

The test kills both ranks of a 2-rank fit mid-run (``os._exit`` from the callback, after a
checkpoint and before the next one: no rank gets to clean up), then resumes in two fresh
processes and compares with an uninterrupted 2-rank fit with the same seed. On the CPU the
resumed run repeats the uninterrupted one's arithmetic exactly (the same sums, in the same
order, from the same saved bits and random streams), so the comparison is bit for bit.
Cases: EM (the iterative driver: its state is global) and a VAE with minibatches (the
gradient trainer: global permutations, an optimiser state, and a random stream per rank for
the reparameterised draws).
"""
from __future__ import annotations

import os

import pytest
import torch

import probgen as pg
from ranks import run_ranks


def _case(kind: str):
    if kind == "em":
        from probgen.models import GaussianMixture
        g = torch.Generator().manual_seed(0)
        centres = torch.tensor([[0.0, 0.0], [4.0, 1.0], [-3.0, 3.0]], dtype=torch.float64)
        x = centres[torch.randint(0, 3, (301,), generator=g)] + torch.randn(301, 2, dtype=torch.float64, generator=g)
        return GaussianMixture(3, 2), x, dict(engine="em", steps=9, tol=None, seed=0, init_method="random")
    from probgen.models import VAE
    g = torch.Generator().manual_seed(2)
    proto = (torch.rand(3, 12, generator=g) < 0.5).float()
    x = proto[torch.randint(3, (70,), generator=g)]
    return VAE(2, dims=(12, 8)), x, dict(steps=7, seed=6, batch_size=16, lr=2e-2)


#: checkpoints every 2 steps; the kill comes after step 5 (the file holds step 4)
EVERY, KILL_AFTER = 2, 5


def _killed(kind: str, path: str) -> None:
    model, x, kw = _case(kind)

    def die(record):
        if record.get("step", record.get("epoch")) == KILL_AFTER - 1:
            os._exit(3)

    pg.fit(model, x, progress=False, checkpoint=path, checkpoint_every=EVERY, callback=die, **kw)


def _resumed_and_uninterrupted(kind: str, path: str) -> tuple:
    model, x, kw = _case(kind)
    import torch.distributed as dist
    saved = torch.load(path, weights_only=True)
    assert saved["call"]["world_size"] == 2 and "1" in saved["ranks"]
    resumed = pg.resume(path, x, progress=False)
    whole = pg.fit(model, x, progress=False, **kw)
    assert dist.get_world_size() == 2
    # an epoch's record holds its wall time ("seconds"), which no run repeats
    as_np = lambda f: ({k: v.detach().numpy().copy() for k, v in f.params.items()},  # noqa: E731
                       [{k: v for k, v in r.items() if k != "seconds"} for r in f.history])
    return as_np(resumed), as_np(whole)


@pytest.mark.parametrize("kind", ["em", "vae"])
def test_killed_two_rank_fit_resumes_to_the_uninterrupted_fit(tmp_path, kind):
    path = str(tmp_path / "fit.pt")
    out = run_ranks(_killed, kind, path, errors=True)
    assert all(err is not None and "exited with code 3" in err for _, err in out), out
    saved = torch.load(path, weights_only=True)
    steps = len(saved["loop"]["history"]) if kind == "em" else saved["loop"]["step"]
    assert steps == KILL_AFTER - 1, "the file should hold the last checkpoint before the kill"
    ranks = run_ranks(_resumed_and_uninterrupted, kind, path)
    for r, ((params, history), (whole_params, whole_history)) in enumerate(ranks):
        assert history == whole_history, f"rank {r}: the history differs"
        for k in whole_params:
            assert (params[k] == whole_params[k]).all(), f"rank {r}: {k} differs"
    for k in ranks[0][0][0]:  # and the ranks agree
        assert (ranks[0][0][0][k] == ranks[1][0][0][k]).all()


def test_resume_needs_as_many_ranks_as_wrote_the_file(tmp_path):
    path = str(tmp_path / "fit.pt")
    run_ranks(_killed, "em", path, errors=True)
    _, x, _ = _case("em")
    with pytest.raises(ValueError, match="ran on 2 ranks"):
        pg.resume(path, x, progress=False)
