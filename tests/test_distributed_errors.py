"""A failing rank ends the others with its error, not a hang (issue 16, item 7)."""
from __future__ import annotations

import os
import time

import torch

import probgen as pg
from probgen.models import Flow

from ranks import run_ranks


def rows(rank: int) -> torch.Tensor:
    x = torch.randn(30, 2, generator=torch.Generator().manual_seed(rank))
    if rank == 1:
        x[7, 1] = float("nan")  # bad data on rank 1 only
    return x


def rank_bad_shard() -> float:
    rank = int(os.environ["RANK"])
    start = time.monotonic()
    try:
        pg.fit(Flow(2, transforms=1, hidden=(8,)), pg.distributed.Shard(rows(rank)), steps=3, seed=0,
               batch_size=8, progress=False)
    except Exception as exc:
        raise type(exc)(f"{exc} [after {time.monotonic() - start:.1f} s]") from None
    return time.monotonic() - start


def rank_dies_mid_fit() -> float:
    rank = int(os.environ["RANK"])

    def callback(record: dict) -> bool:
        if rank == 1 and record["step"] == 2:
            os._exit(3)  # a hard death: no error published, the connection just goes
        return False

    start = time.monotonic()
    try:
        pg.fit(Flow(2, transforms=1, hidden=(8,)), rows(0), steps=50, seed=0, batch_size=8, progress=False,
               callback=callback)
    except Exception as exc:
        raise type(exc)(f"{exc} [after {time.monotonic() - start:.1f} s]") from None
    return time.monotonic() - start


def test_bad_data_on_one_rank_ends_both_with_its_error():
    (v0, e0), (v1, e1) = run_ranks(rank_bad_shard, errors=True, timeout=60)
    assert v0 is None and v1 is None
    assert e1.startswith("ValueError") and "NaN" in e1.splitlines()[0], e1
    first = e0.splitlines()[0]
    assert first.startswith("DistributedError") and "rank 1 failed: ValueError" in first and "NaN" in first, e0
    seconds = float(first.rsplit("[after ", 1)[1].split(" s]")[0])
    assert seconds < 20, first


def test_a_rank_that_dies_ends_the_other_within_the_timeout(monkeypatch):
    monkeypatch.setenv("PROBGEN_DISTRIBUTED_TIMEOUT", "10")
    start = time.monotonic()
    (v0, e0), (v1, e1) = run_ranks(rank_dies_mid_fit, errors=True, timeout=60)
    assert v1 is None and "exited with code 3" in e1, e1
    first = e0.splitlines()[0]
    assert first.startswith("DistributedError") and "lost another rank" in first, e0
    assert float(first.rsplit("[after ", 1)[1].split(" s]")[0]) < 10 + 5, first
    assert time.monotonic() - start < 50
