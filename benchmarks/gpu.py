"""CPU against GPU on one machine: seconds per epoch of VAE, flow, diffusion and GAN training and
per EM iteration of a large full-covariance Gaussian mixture, through ``pg.fit(..., device=...)``.

Each case runs on ``"cpu"`` (every core: torch's and probgen's threads set to the CPU count)
and on ``"cuda"`` (one CPU thread feeding it), with the same data, options and seed; each
device first fits once briefly (the CUDA context, the kernels' first launches, the thread
pool), then the timed fit runs. An epoch is one pass over the training rows: ``N / batch``
minibatch steps (a GAN's generator step takes one minibatch per discriminator step,
``d_steps=1``); the VAE's steps are epochs already. The mixture's EM iteration is one fused
E+M pass in float64 (`probgen.ops.gaussian.em_step_full`). Two sizes per deep model: the CPU
benchmarks' own (``benchmarks/vae.py``, ``flow.py``, ``diffusion.py``, the GAN of
``examples/gan_modes.py``), too small to fill a GPU, and a wide one with large minibatches.
The small models are also timed on one CPU thread (their fastest: a thread pool's barriers
outweigh such small operations), and the GPU is set against the CPU's better time. Without a
CUDA device the GPU column says so and the CPU columns are still measured.

    python benchmarks/gpu.py --json docs/benchmarks/gpu.json   # ~4 min on an H200 machine
    python benchmarks/gpu.py --quick                           # a look at the code path
"""
from __future__ import annotations

import math
import os
import time

import torch

import probgen as pg
from probgen.data import two_moons
from probgen.models import GAN, VAE, Diffusion, Flow, GaussianMixture


def _digits_binary(n: int, seed: int) -> torch.Tensor:
    """``n`` binarised 8×8 digits: the bundled 1,797 tiled, every pixel flipped with
    probability 0.05 (so the copies differ)."""
    x = pg.load_dataset("digits-binary").float()
    g = torch.Generator().manual_seed(seed)
    x = x[torch.randint(len(x), (n,), generator=g)]
    return (x + (torch.rand(x.shape, generator=g) < 0.05).float()) % 2


def _digits_unit(n: int, seed: int) -> torch.Tensor:
    """``n`` 8×8 digits scaled to [0, 1] (the bundled 1,797 tiled, with U(0, 1/16) jitter)."""
    x = pg.load_dataset("digits").float() / 16
    g = torch.Generator().manual_seed(seed)
    x = x[torch.randint(len(x), (n,), generator=g)]
    return (x + torch.rand(x.shape, generator=g) / 16).clamp(0, 1)


def cases(quick: bool) -> list[dict]:
    """The timed fits: a name, the size in words, a model factory, the data, the options, the
    timed steps and the steps per epoch."""
    q = 10 if quick else 1  # --quick: a tenth of the rows and steps
    moons = two_moons(200_000 // q, seed=1)[0].float()
    small_moons = two_moons(20_000 // q, seed=1)[0].float()
    out = [
        dict(name="VAE", size="64-128-8, batch 64, 1,797 rows", make=lambda: VAE(8, (64, 128)),
             data=_digits_binary(1797, 0), options=dict(batch_size=64, validation=0), steps=max(1, 4 // q),
             per_epoch=1),
        dict(name="VAE", size="64-512-512-32, batch 1,024, 50,000 rows", make=lambda: VAE(32, (64, 512, 512)),
             data=_digits_binary(50_000 // q, 0), options=dict(batch_size=1024, validation=0),
             steps=max(1, 2 // q), per_epoch=1, large=True),
        dict(name="flow (MAF)", size="3 × (64, 64), batch 256, 20,000 rows",
             make=lambda: Flow(2, kind="maf", transforms=3, hidden=(64, 64)), data=small_moons,
             options=dict(batch_size=256, lr=1e-3), steps=300 // q, per_epoch=len(small_moons) / 256),
        dict(name="flow (MAF)", size="5 × (512, 512), batch 4,096, 200,000 rows",
             make=lambda: Flow(2, kind="maf", transforms=5, hidden=(512, 512)), data=moons,
             options=dict(batch_size=4096, lr=1e-3), steps=100 // q, per_epoch=len(moons) / 4096, large=True),
        dict(name="diffusion (DDPM)", size="64-D, (256, 256), batch 128, 1,797 rows",
             make=lambda: Diffusion(64, steps=200, schedule="cosine", hidden=(256, 256)),
             data=_digits_unit(1797, 0), options=dict(batch_size=128, lr=1e-3), steps=300 // q,
             per_epoch=1797 / 128),
        dict(name="diffusion (DDPM)", size="64-D, 3 × 1,024, batch 4,096, 100,000 rows",
             make=lambda: Diffusion(64, steps=200, schedule="cosine", hidden=(1024, 1024, 1024)),
             data=_digits_unit(100_000 // q, 0), options=dict(batch_size=4096, lr=1e-3), steps=50 // q,
             per_epoch=100_000 // q / 4096, large=True),
        dict(name="GAN", size="(64, 64), batch 256, 20,000 rows", make=lambda: GAN(2, latent_dim=2, hidden=(64, 64)),
             data=small_moons, options=dict(batch_size=256, lr=1e-3), steps=300 // q, per_epoch=len(small_moons) / 256),
        dict(name="GAN", size="(512, 512, 512), batch 4,096, 200,000 rows",
             make=lambda: GAN(2, latent_dim=8, hidden=(512, 512, 512)), data=moons,
             options=dict(batch_size=4096, lr=1e-3), steps=30 // q, per_epoch=len(moons) / 4096, large=True),
    ]
    n = 2_000_000 // q
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(16, 16, generator=g, dtype=torch.float64) * 3
    x = centres[torch.randint(16, (n,), generator=g)] + torch.randn(n, 16, generator=g, dtype=torch.float64)
    out.append(dict(name="GMM EM (full covariance, float64)", size=f"N = {n:,}, D = 16, K = 16",
                    make=lambda: GaussianMixture(16, 16, "full"), data=x,
                    options=dict(engine="em", tol=0.0), steps=max(2, 5 // q), per_epoch=1, unit="iteration",
                    large=True))
    return out


def _timed(case: dict, device: str, init: dict | None, threads: int) -> float:
    """Seconds per epoch (per iteration for EM) of ``case`` on ``device`` with ``threads`` CPU
    threads (torch's and probgen's), after a warm-up fit."""
    torch.set_num_threads(threads)
    pg.set_num_threads(threads)
    opts = dict(case["options"], seed=0, progress=False, device=device)
    if init is not None:
        opts["init"] = {k: v.to(device) for k, v in init.items()}
    pg.fit(case["make"](), case["data"], steps=1, **opts)                    # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    fit = pg.fit(case["make"](), case["data"], steps=case["steps"], **opts)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    assert all(torch.isfinite(v).all() for v in fit.params.values() if torch.is_tensor(v) and v.is_floating_point())
    return seconds / case["steps"] * case["per_epoch"]


def main() -> None:
    from _tables import emit, parser, table
    ap = parser("gpu", __doc__)
    ap.add_argument("--quick", action="store_true", help="a tenth of the rows and steps")
    ap.add_argument("--only", default=None, help="run only the cases whose name contains this")
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    cuda = torch.cuda.is_available()
    gpu_name = torch.cuda.get_device_name(0) if cuda else None
    rows = []
    for case in cases(args.quick):
        if args.only and args.only.lower() not in case["name"].lower():
            continue
        init = None
        if case.get("unit") == "iteration":  # EM from one start on both devices (k-means++ is seeded, but on the CPU)
            init = dict(pg.fit(case["make"](), case["data"][:20_000], engine="em", steps=2, seed=0,
                               progress=False).params)
        # small models run fastest on one thread (a thread pool's barriers outweigh their
        # work): those get both, and the CPU's best is what the GPU is set against
        one = None if case.get("large") else _timed(case, "cpu", init, 1)
        every = _timed(case, "cpu", init, cpus)
        best = min(every, one or every)
        gpu_s = _timed(case, "cuda", init, 1) if cuda else math.nan
        unit = case.get("unit", "epoch")
        rows.append([case["name"], case["size"], f"s / {unit}", "—" if one is None else f"{one:.4g}", f"{every:.4g}",
                     f"{gpu_s:.4g}" if cuda else "no CUDA device", f"{best / gpu_s:.2f}×" if cuda else ""])
        print(" | ".join(rows[-1]), flush=True)
    note = (f"{cpus} CPU threads against {gpu_name or 'no GPU'}; torch {torch.__version__}"
            + (" (--quick: a tenth of the rows and steps)" if args.quick else ""))
    emit(args.json, "python benchmarks/gpu.py" + (" --quick" if args.quick else ""), {"devices": table(
        ["model", "size", "unit", "CPU, 1 thread", f"CPU, {cpus} threads", "GPU", "best CPU / GPU"], rows,
        ["", "", "", "r", "r", "r", "r"])}, peers=("pyro-ppl",), note=note)


if __name__ == "__main__":
    main()
