"""The data-parallel core (probgen.distributed): blocks, collectives, errors across ranks.
The methods' data-parallel fits are tested in tests/test_distributed_*.py."""
import pytest
import torch

import probgen as pg
from probgen.distributed import Context, DistributedError, Shard
from probgen.models import GaussianMixture
from probgen.ops.chain import Sequences
from ranks import run_ranks


@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_blocks_partition_the_rows_in_rank_order(world):
    for n in range(0, 12):
        blocks = [Context(r, world).block(n) for r in range(world)]
        assert [i for a, b in blocks for i in range(a, b)] == list(range(n))
        sizes = [b - a for a, b in blocks]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_shard_takes_each_data_form_by_rows():
    ctx = Context(1, 2)
    x = torch.arange(10.).reshape(5, 2)
    assert torch.equal(ctx.shard(x), x[3:])
    assert ctx.shard([("a",), ("b",), ("c",)]) == [("c",)]
    seq = Sequences(torch.tensor([[1, 2, 3], [4, 0, 0], [5, 6, 0]]), torch.tensor([3, 1, 2]))
    part = ctx.shard(seq)
    assert torch.equal(part.x, torch.tensor([[5, 6]])) and part.lengths.tolist() == [2]


def test_local_calls_refuse_distributed_inputs_clearly():
    model, x = GaussianMixture(k=2, dim=2), torch.randn(20, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="Shard is one rank's part"):
        pg.fit(model, Shard(x), seed=0)
    with pytest.raises(ValueError, match="needs a process group: launch with torchrun"):
        pg.fit(model, x, seed=0, distributed=True)
    with pytest.raises(ValueError, match="distributed must be True, False or None"):
        pg.fit(model, x, seed=0, distributed="yes")
    local = pg.fit(model, x, seed=0, steps=3, distributed=False)
    assert local.params.keys() == pg.fit(model, x, seed=0, steps=3).params.keys()


def _collectives():
    from probgen import distributed
    ctx = distributed.context()
    r = ctx.rank
    summed = ctx.sum({"f64": torch.tensor([0.1, 0.2], dtype=torch.float64) * (r + 1),
                      "i64": torch.tensor([[r, 1]]), "f32": torch.full((3,), 0.5, dtype=torch.float32)})
    return {"rank": ctx.rank, "world": ctx.world_size, "sum": summed,
            "broadcast": ctx.broadcast({"from": r, "t": torch.tensor([r])}), "gather": ctx.gather(r * 10)}


def test_collectives_on_two_ranks():
    out = run_ranks(_collectives)
    assert [o["rank"] for o in out] == [0, 1] and all(o["world"] == 2 for o in out)
    for o in out:
        s = o["sum"]
        # 0.1 + 0.2 is rounded once, the same way on both ranks
        assert torch.equal(s["f64"], torch.tensor([0.1, 0.2], dtype=torch.float64) * 1
                           + torch.tensor([0.1, 0.2], dtype=torch.float64) * 2)
        assert s["i64"].dtype == torch.int64 and s["i64"].tolist() == [[1, 2]]
        assert s["f32"].dtype == torch.float32 and s["f32"].tolist() == [1.0, 1.0, 1.0]
        assert o["broadcast"]["from"] == 0 and o["broadcast"]["t"].tolist() == [0]
        assert o["gather"] == [0, 10]


def _one_rank_fails():
    from probgen import distributed
    ctx = distributed.context()
    with distributed.active(ctx):
        if ctx.rank == 1:
            raise ValueError("rank one's data are bad")
        ctx.sum({"x": torch.ones(1)})  # waits for rank 1, which never comes


def test_a_failing_rank_ends_the_others_with_its_error():
    out = run_ranks(_one_rank_fails, errors=True, timeout=120)
    assert out[1][1].startswith("ValueError: rank one's data are bad")
    assert out[0][1].startswith("DistributedError: rank 1 failed: ValueError: rank one's data are bad")
    assert DistributedError.__mro__[1] is RuntimeError
