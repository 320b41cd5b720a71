"""Diffusion on the 8×8 digits: training and sampling time, and MMD to held-out digits.

For scale, the same MMD is reported for two references: the training set itself (the
floor a perfect model reaches) and a full-covariance Gaussian fitted to the training set.
Where diffusers is installed, its DDPMScheduler runs the same reverse chain with our
denoiser for a sampling-time comparison.

    python benchmarks/diffusion.py [--steps 10000] [--T 200] [--json docs/benchmarks/diffusion.json]
"""
from __future__ import annotations

import time

import torch

import probgen as pg
from probgen.data import load_dataset, split
from probgen.evaluate import median_bandwidth, mmd2
from probgen.models import Diffusion


def main() -> None:
    from _tables import emit, parser, table
    ap = parser("diffusion", __doc__)
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--T", type=int, default=200)
    ap.add_argument("--n", type=int, default=500, help="samples drawn for the MMD")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pg.set_num_threads(args.threads)  # on a shared machine a thread pool's barriers make timings swing 5x
    x = load_dataset("digits").float() / 16
    train, test = split(x, test_fraction=0.2, seed=0)
    h = median_bandwidth(test)
    torch.manual_seed(0)
    model = Diffusion(64, steps=args.T, schedule="cosine", hidden=(256, 256))
    t0 = time.perf_counter()
    fit = pg.fit(model, train, steps=args.steps, batch_size=128, lr=1e-3, seed=0, progress=False)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    anc = fit.sample(args.n, seed=0)
    anc_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ddim = model.sample(fit.params, args.n, seed=0, method="ddim", ddim_steps=50)
    ddim_s = time.perf_counter() - t0
    mean, cov = train.double().mean(0), torch.cov(train.double().T) + 1e-4 * torch.eye(64, dtype=torch.float64)
    gauss = torch.distributions.MultivariateNormal(mean, cov).sample((args.n,))
    bound = float(fit.log_prob(test[:200]).mean())
    print(f"digits (scaled to [0,1]), T={args.T} cosine, {args.steps} steps batch 128, MMD² bandwidth {h:.3f}")
    print(f"train: {train_s:.1f} s ({1000 * train_s / args.steps:.1f} ms/step)")
    print(f"{'sampler':22} {'seconds':>8} {'MMD² to test':>13}")
    print(f"{'ancestral (T steps)':22} {anc_s:8.2f} {mmd2(anc, test, h):13.5f}")
    print(f"{'DDIM (50 steps)':22} {ddim_s:8.2f} {mmd2(ddim, test, h):13.5f}")
    print(f"{'Gaussian baseline':22} {'':8} {mmd2(gauss, test, h):13.5f}")
    print(f"{'training set (floor)':22} {'':8} {mmd2(train[:args.n], test, h):13.5f}")
    print(f"variational bound on test: {bound:.1f} nats per image")
    from probgen.plots import save_samples_png
    save_samples_png(ddim[:40], "docs/img/diffusion_digits.png", title="diffusion (DDIM, 50 steps)")
    rows = [[f"training, {args.steps} steps of batch 128", f"{train_s:.1f}", f"{1000 * train_s / args.steps:.1f} ms/step", ""],
            [f"ancestral sampling ({args.T} steps)", f"{anc_s:.2f}", "", f"{mmd2(anc, test, h):.4f}"],
            ["DDIM sampling (50 steps)", f"{ddim_s:.2f}", "", f"{mmd2(ddim, test, h):.4f}"]]
    refs = [["full-covariance Gaussian fitted to the training set", "", "", f"{mmd2(gauss, test, h):.4f}"],
            ["the training set itself (floor)", "", "", f"{mmd2(train[:args.n], test, h):.4f}"]]
    columns = ["digits scaled to [0, 1]", "seconds", "", f"MMD² to test ({args.n} samples)"]
    note = (f"T={args.T}, cosine schedule, MLP denoiser (256, 256), MMD² bandwidth {h:.3f} (median heuristic), "
            f"{args.threads} thread(s)")

    def write(extra=()):
        emit(args.json, f"python benchmarks/diffusion.py --steps {args.steps} --T {args.T} --threads {args.threads}",
             {"digits": table(columns, rows + list(extra) + refs)}, peers=("diffusers",), note=note)
    try:
        import diffusers
    except ImportError:
        print("(diffusers not installed: no scheduler comparison)")
        write()
        return
    sched = diffusers.DDPMScheduler(num_train_timesteps=args.T, beta_schedule="squaredcos_cap_v2",
                                    variance_type="fixed_small")
    g = torch.Generator().manual_seed(0)
    xt = torch.randn(args.n, 64, generator=g)
    t0 = time.perf_counter()
    with torch.no_grad():
        for t in sched.timesteps:
            eps = model.net.denoiser(xt, torch.full((args.n,), int(t)))
            xt = sched.step(eps, int(t), xt, generator=g).prev_sample
    peer_s = time.perf_counter() - t0
    print(f"diffusers DDPMScheduler, same denoiser: {peer_s:.2f} s (ratio probgen/diffusers {anc_s / peer_s:.2f})")
    write([[f"diffusers DDPMScheduler, same denoiser ({args.T} steps)", f"{peer_s:.2f}",
            f"probgen / diffusers {anc_s / peer_s:.2f}", ""]])


if __name__ == "__main__":
    main()
