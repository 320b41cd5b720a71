"""Launching data-parallel fits for real (issue 16, items 1 and 6): a script under
``python -m torch.distributed.run`` (torchrun) and ``probgen fit ... --nproc 2``, each a GMM EM
fit on two gloo processes that equals the local fit."""
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import torch

import probgen as pg
from probgen.cli import main
from probgen.models import GaussianMixture
from ranks import run_ranks

SCRIPT = """
import sys
import torch
import probgen as pg
from probgen.models import GaussianMixture

x = torch.randn(301, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
x[::2] += 3.0
model = GaussianMixture(k=2, dim=2)
fit = pg.fit(model, x, steps=8, tol=0.0, init=model.init_params(x, seed=0), progress=False)
rank = torch.distributed.get_rank()
torch.save({"params": fit.params, "history": fit.history, "world": torch.distributed.get_world_size()},
           f"{sys.argv[1]}/rank{rank}.pt")
print(f"rank {rank}: log-likelihood {fit.history[-1]['log_likelihood']!r}")
"""


def _data():
    x = torch.randn(301, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x[::2] += 3.0
    return x


def _close(a, b):
    # the EM target: 2 ranks == 1 process to 1e-10 relative in float64 (the sums of the
    # E-step differ only in their order of addition)
    return torch.allclose(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-10, atol=1e-12)


def _env():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PROBGEN_DISTRIBUTED_TIMEOUT": "60"}
    env.pop("RANK", None)
    return env


def test_a_script_under_torchrun_fits_the_same_gmm_on_both_ranks(tmp_path):
    script = tmp_path / "fit_gmm.py"
    script.write_text(textwrap.dedent(SCRIPT))
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                          str(script), str(tmp_path)], capture_output=True, text=True, timeout=300, env=_env())
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k])  # the same Fit on every rank
    assert r0["history"] == r1["history"]
    x = _data()
    model = GaussianMixture(k=2, dim=2)
    local = pg.fit(model, x, steps=8, tol=0.0, init=model.init_params(x, seed=0), progress=False)
    for k, v in local.params.items():
        assert _close(r0["params"][k], v), k
    assert len(r0["history"]) == len(local.history)
    for h, l in zip(r0["history"], local.history):
        assert _close(h["log_likelihood"], l["log_likelihood"])
    assert "rank 0: log-likelihood" in run.stdout and "rank 1: log-likelihood" in run.stdout


def _fit_like_the_command(path):
    from probgen.data import read_file
    x = read_file(path)
    fit = pg.fit(GaussianMixture.for_data(x, k=2), x, steps=6, seed=3, tol=0, progress=False)
    return pickle.dumps({"params": fit.params, "history": fit.history})


def test_cli_fit_nproc_2_launches_two_ranks_and_rank_0_writes(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("PROBGEN_DISTRIBUTED_TIMEOUT", "60")
    data = tmp_path / "x.csv"
    np.savetxt(data, _data().numpy(), delimiter=",")
    common = ["fit", "gmm", "--data", str(data), "--steps", "6", "--seed", "3", "--set", "k=2",
              "--option", "tol=0"]
    assert main([*common, "--out", str(tmp_path / "two"), "--nproc", "2"]) == 0
    out = capfd.readouterr().out
    assert out.count("fitted GaussianMixture") == 1 and out.count("saved ") == 1  # rank 0 alone
    # the same fit as pg.fit on two ranks with the command's arguments (its start is drawn from
    # the seed on rank 0's rows, so it is not the local fit's start; the torchrun test above
    # compares with the local fit from one init)
    two = pg.load(str(tmp_path / "two" / "fit.pt"))
    want = pickle.loads(run_ranks(_fit_like_the_command, str(data))[0])
    assert two.history == want["history"]
    for k, v in want["params"].items():
        assert torch.equal(two.params[k], v), k
    # the same command without --nproc: a local fit, written as ever
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    assert len(pg.load(str(tmp_path / "one" / "fit.pt")).history) == len(two.history)
    assert os.path.exists(tmp_path / "two" / "history.png")
    assert main(["fit", "gmm", "--nproc", "0", "--out", str(tmp_path / "z")]) == 2
    assert "--nproc must be a positive number" in capfd.readouterr().err
