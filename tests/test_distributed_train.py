"""Data-parallel gradient training (issue 16, item 3): 2 local gloo ranks against the ordinary
1-process fit, same global minibatches and seed.

Tolerances. Every rank computes its rows' part of the global batch's gradient and the parts
are summed (probgen.loops.gradient.Trainer._reduce), so the gradient differs from the
1-process one only by the order of the float32 summation: a few ulps (float32 ε = 1.2e-7)
relative per step. Adam's step lr·m/(√v + ε) is scale-free, so a relative gradient error δ
moves a parameter by about lr·δ per step; over the first few steps the parameters then agree
to ~1e-6 relative — RTOL = 1e-5 leaves a factor of 10 for the error's growth through the
nonlinear losses, and is 100x below the first step's own change (lr = 1e-2..5e-2), so a wrong
weighting (a rank's rows counted twice, a missing prior share) fails it. Over hundreds of
steps round-off grows chaotically, so there the test is the quality of the fit.
"""
from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

import probgen as pg
from probgen.models import Autoencoder, Flow, VAE

from ranks import run_ranks
# pyro.param locations, a continuous global latent shift (guide: AutoNormal), local assignments
# summed out: the prior and guide of `shift` are counted once by the ranks together only if
# each counts its rows' share
from test_programs import shifted_mixture

RTOL, ATOL = 1e-5, 1e-6


def noisy_mean(x):
    """mu ~ N(0, 10²) (guide: AutoNormal), a pyro.param scale: no draw per row anywhere, so the
    ranks' draws of mu are the 1-process draws."""
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    sigma = pyro.param("sigma", torch.tensor(1.0), constraint=dist.constraints.positive)
    with pyro.plate("N", len(x)):
        pyro.sample("x", dist.Normal(mu, sigma), obs=x)


def per_row_latent(x):
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("N", len(x)):
        h = pyro.sample("h", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(h, scale), obs=x)


def mixture_data():
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.randn(23, generator=g) - 2.0, torch.randn(18, generator=g) + 2.5])  # 41 rows: 21 + 20


def flow_data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(90, 2, generator=g)
    return torch.stack([x[:, 0], 0.5 * x[:, 0] ** 2 + 0.3 * x[:, 1]], 1)


def binary_data():
    g = torch.Generator().manual_seed(2)
    proto = (torch.rand(3, 12, generator=g) < 0.5).float()
    rows = proto[torch.randint(3, (70,), generator=g)]
    flip = torch.rand(rows.shape, generator=g) < 0.1
    return torch.where(flip, 1 - rows, rows)


def ae_init(x):
    """The autoencoder's data-dependent start (init_params: b0 = logit of the data mean) from
    ALL the rows, so that both runs start alike (a data-parallel fit otherwise starts from
    rank 0's rows)."""
    return {"b0": torch.logit(x.mean(0).clamp(1e-3, 1 - 1e-3))}


def _fits(kind: str, steps: int, **extra):
    if kind == "svi":
        return pg.fit(noisy_mean, mixture_data(), engine="svi", steps=steps, seed=3, lr=0.05, progress=False,
                      **extra)
    if kind == "svi-mixture":
        return pg.fit(shifted_mixture, mixture_data(), engine="svi", steps=steps, seed=3, lr=0.05, progress=False,
                      **extra)
    if kind == "flow":
        return pg.fit(Flow(2, transforms=2, hidden=(16,)), flow_data(), steps=steps, seed=4, batch_size=16, lr=1e-2,
                      progress=False, **extra)
    if kind == "ae":
        x = binary_data()
        return pg.fit(Autoencoder("undercomplete", (12, 8), code_dim=3), x, steps=steps, seed=5, batch_size=16, lr=2e-2,
                      init=ae_init(x), progress=False, **extra)
    if kind == "vae":
        return pg.fit(VAE(2, dims=(12, 8)), binary_data(), steps=steps, seed=extra.pop("seed", 6), batch_size=16, lr=2e-2,
                      progress=False, **extra)
    if kind == "gan":
        from probgen.models import GAN
        return pg.fit(GAN(2, latent_dim=2, hidden=(16,)), flow_data(), steps=steps, seed=7, batch_size=16, lr=1e-2,
                      progress=False, **extra)
    if kind == "exact-energy":  # full-batch Adam on an RBM's exact likelihood (float64)
        model, x = pg.registry.models()["rbm"].example(seed=0)
        # the start from all the rows (a data-parallel fit otherwise starts from rank 0's)
        init = pg.fit(model, x, engine="exact", steps=0, seed=0, progress=False, distributed=False).params
        return pg.fit(model, x, engine="exact", steps=steps, seed=0, lr=0.05, init=init, progress=False, **extra)
    raise AssertionError(kind)


def _summary(fit) -> dict:
    """What the tests compare of a fit; NumPy arrays, which cross the ranks' result queue as
    plain pickles (torch shares a tensor's memory with the process that sent it)."""
    return {"params": {k: v.detach().numpy().copy() for k, v in fit.params.items()}, "history": fit.history,
            "state": {k: v.numpy().copy() for k, v in fit.state.items() if isinstance(v, torch.Tensor)}}


def _t(a) -> torch.Tensor:
    return torch.as_tensor(a)


def rank_fits(plan: list) -> list:
    """On each rank: the data-parallel fits of ``plan`` [(kind, steps, options)]."""
    return [_summary(_fits(kind, steps, **extra)) for kind, steps, extra in plan]


def assert_close_fit(a: dict, b: dict, what: str) -> None:
    assert set(a["params"]) == set(b["params"]), what
    for k in a["params"]:
        torch.testing.assert_close(_t(a["params"][k]), _t(b["params"][k]), rtol=RTOL, atol=ATOL,
                                   msg=lambda m: f"{what}: {k}: {m}")
    assert len(a["history"]) == len(b["history"]), what
    for ra, rb in zip(a["history"], b["history"]):
        assert set(ra) == set(rb), what
        for k in ra:
            if k != "seconds":
                assert ra[k] == pytest.approx(rb[k], rel=RTOL, abs=ATOL), f"{what}: history {k} {ra} vs {rb}"


def assert_same_on_ranks(fits: list, what: str) -> None:
    a, b = fits
    for k in a["params"]:
        assert torch.equal(_t(a["params"][k]), _t(b["params"][k])), f"{what}: {k} differs between the ranks"
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in a["history"]] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in b["history"]], what
    for k in a["state"]:
        assert torch.equal(_t(a["state"][k]), _t(b["state"][k])), f"{what}: state {k}"


PLAN = [("svi", 5, {}), ("svi", 4, {"validation": 0.25}), ("flow", 5, {}), ("ae", 3, {}),
        ("flow", 4, {"validation": 0.2, "clip_grad": 1.0, "ema": 0.9}),
        ("ae", 3, {"validation": 0.25, "patience": 1}),
        ("gan", 4, {}), ("gan", 3, {"validation": 0.25, "gradient_penalty": 1.0, "d_steps": 2, "loss": "minimax"}),
        ("exact-energy", 5, {}), ("exact-energy", 4, {"validation": 0.25})]


@pytest.fixture(scope="module")
def ranked():
    return run_ranks(rank_fits, PLAN)


@pytest.mark.parametrize("i", range(len(PLAN)))
def test_two_ranks_equal_one_process_over_the_first_steps(ranked, i):
    """SVI (global latent + summed-out local ones), flow and autoencoder (minibatches, epochs),
    with validation / early stopping, clipping after the reduce and EMA; the GAN's critic and
    generator steps (each rank's slice of the one-process fit's fakes, the R1 penalty, two
    critic steps per generator step); the exact energy model's full-batch Adam."""
    kind, steps, extra = PLAN[i]
    local = _summary(_fits(kind, steps, **extra))
    assert_same_on_ranks([r[i] for r in ranked], kind)
    assert_close_fit(ranked[0][i], local, f"{kind} {extra}")
    # the check can fail: the fit moved far more than the tolerance in those steps
    start = _summary(_fits(kind, 0, **extra))
    moved = max(float(abs(local["params"][k] - start["params"][k]).max()) for k in local["params"] if k in start["params"])
    assert moved > 100 * ATOL


VAE_SEEDS = (6, 7, 8, 9)


def rank_quality() -> list:
    return [float(_fits("svi-mixture", 300).history[-1]["loss"]), _summary(_fits("flow", 300)),
            [float(_fits("vae", 30, validation=0.2, seed=s).state["best_val_loss"]) for s in VAE_SEEDS]]


def test_two_ranks_train_to_the_same_quality():
    """Over many steps: the SVI loss (an enumerated mixture with a global latent) and the
    flow's loss as the 1-process fit's, within 1% (round-off grows, the optimum is the same).
    The VAE draws its reparametrisation noise ε per rank, so its draws are not the 1-process
    draws and only the quality can agree: over four seeds, the mean best validation loss of
    the 2-rank fits is within 3 standard errors of the 1-process fits' (a two-sample test;
    the seed-to-seed spread is ~0.2 nats)."""
    ranked = run_ranks(rank_quality)
    svi, flow, vae = ranked[0]
    assert ranked[0][0] == ranked[1][0] and ranked[0][2] == ranked[1][2]
    assert svi == pytest.approx(float(_fits("svi-mixture", 300).history[-1]["loss"]), rel=1e-2)
    local_flow = _fits("flow", 300)
    assert flow["history"][-1]["loss"] == pytest.approx(local_flow.history[-1]["loss"], rel=1e-2, abs=1e-2)
    x = flow_data()
    assert float(local_flow.log_prob(x).mean()) > float(_fits("flow", 0).log_prob(x).mean()) + 0.5
    local = torch.tensor([float(_fits("vae", 30, validation=0.2, seed=s).state["best_val_loss"]) for s in VAE_SEEDS])
    two = torch.tensor(vae)
    se = (local.var() / len(local) + two.var() / len(two)).sqrt()
    assert abs(float(two.mean() - local.mean())) <= 3 * float(se), (vae, local.tolist())


def rank_refusals() -> list:
    out = []
    for fn in (per_row_latent, lambda x: pyro.sample("x", dist.Normal(0.0, 1.0).expand([len(x)]).to_event(1), obs=x)):
        try:
            pg.fit(fn, mixture_data(), engine="svi", steps=1, seed=0, progress=False)
            out.append(None)
        except ValueError as exc:
            out.append(str(exc))
    return out


def test_svi_programs_that_cannot_run_data_parallel_are_refused():
    for messages in run_ranks(rank_refusals):
        assert "per example" in messages[0] and "distributed=False" in messages[0]
        assert "declares its examples" in messages[1] and "distributed=False" in messages[1]


def _diffusion(seed: int) -> float:
    from probgen.models import Diffusion
    fit = pg.fit(Diffusion(2, steps=10, hidden=(16,)), flow_data(), steps=150, seed=seed, batch_size=32, lr=1e-2,
                 validation=0.2, progress=False)
    return float(fit.state["best_val_loss"])


def rank_diffusion() -> list:
    return [_diffusion(s) for s in VAE_SEEDS]


def test_diffusion_trains_to_the_same_quality():
    """Diffusion draws its (t, ε) per rank, so, as the VAE, only the quality can agree: the
    mean best validation loss over four seeds within 3 standard errors of the 1-process fits'."""
    ranked = run_ranks(rank_diffusion)
    assert ranked[0] == ranked[1]
    local, two = torch.tensor([_diffusion(s) for s in VAE_SEEDS]), torch.tensor(ranked[0])
    se = (local.var() / len(local) + two.var() / len(two)).sqrt()
    assert abs(float(two.mean() - local.mean())) <= 3 * float(se), (two.tolist(), local.tolist())


class LearnedGaussian(torch.nn.Module):
    """E(x) = ½ Σ_d exp(λ_d) (x_d − μ_d)²: a learnable mean μ and log-precisions λ."""

    def __init__(self):
        super().__init__()
        self.mu, self.log_prec = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))

    def forward(self, x):
        return 0.5 * (self.log_prec.exp() * (x - self.mu) ** 2).sum(-1)


CD_MEAN = torch.tensor([1.0, -2.0])


def _langevin_cd(seed: int) -> dict:
    from probgen.models import EnergyModel
    g = torch.Generator().manual_seed(0)
    x = CD_MEAN + torch.tensor([0.7, 1.2]) * torch.randn(2000, 2, generator=g)
    fit = pg.fit(EnergyModel(2, energy_net=LearnedGaussian(), step_size=0.05), x, steps=300, seed=seed,
                 batch_size=100, lr=0.03, k=20, buffer_size=1000, progress=False)
    return {"mu": fit.params["mu"].numpy().copy(), "log_prec": fit.params["log_prec"].numpy().copy(),
            "buffer": fit.state["buffer"].numpy().copy()}


CD_SEEDS = (0, 1)


def rank_langevin_cd() -> list:
    return [_langevin_cd(s) for s in CD_SEEDS]


def test_langevin_cd_trains_to_the_same_quality():
    """Langevin contrastive divergence: the positive phase is the global minibatch (gradients
    averaged as for every method), the negative chains are each rank's own (its block of the
    replay buffer, its own stream), so the 2-rank draws are not the 1-process draws and only
    the quality can agree. A learnable Gaussian energy on Gaussian data: the learnt mean is the
    data's (an oracle; the seed-to-seed spread of the 1-process fits is ~0.1, the data mean's
    standard error 0.03) within 0.25 for every fit, and the learnt log-precisions (the method's
    own fixed point) within 0.25 of the 1-process fits' mean (their spread is ~0.05). The
    ranks return the same fit, the buffer every rank's chains (1000 in all)."""
    ranked = run_ranks(rank_langevin_cd)
    local = [_langevin_cd(s) for s in CD_SEEDS]
    for a, b in zip(*ranked):
        for k in a:
            assert (a[k] == b[k]).all(), k
    assert all(f["buffer"].shape == (1000, 2) for f in ranked[0])
    lam = torch.tensor(torch.stack([_t(f["log_prec"]) for f in local]).mean(0))
    for f in ranked[0] + local:
        assert float((_t(f["mu"]) - CD_MEAN).abs().max()) < 0.25, f["mu"]
    for f in ranked[0]:
        assert float((_t(f["log_prec"]) - lam).abs().max()) < 0.25, (f["log_prec"], lam)
