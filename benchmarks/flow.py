"""Flows side by side with zuko: NSF and MAF of equal sizes on two-moons.

20,000 train / 5,000 test points, 3,000 Adam steps of batch 256, lr 1e-3, 3 transforms of
(64, 64) hidden units, the same threads. Reports test NLL (nats) and training seconds for
each library and the ratios. Target: NLL within 0.02 nats of zuko's, time at most zuko's.
Times are CPU seconds of this process (with --threads 1, the default, the least disturbed by
other jobs on a shared machine; wall time under load swung the ratio by ±0.2 from run to run);
the two libraries' fits alternate ``--repeats`` times (the same seeds: the same fits) and the
time ratio is the median of the repeats' ratios.
probgen's flows standardise the data (a fixed affine last transform); for a like-for-like
NLL, zuko is also trained on the standardised data ("zuko std"), its NLL corrected by the
standardisation's log-determinant (time not compared: the same training loop).

    python benchmarks/flow.py [--steps 3000] [--repeats 3] [--json docs/benchmarks/flow.json]
"""
from __future__ import annotations

import statistics
import time

import torch

import probgen as pg
from probgen.data import two_moons
from probgen.models import Flow


def zuko_fit(kind: str, train: torch.Tensor, steps: int, batch: int, seed: int):
    import zuko
    torch.manual_seed(seed)
    cls = {"spline": zuko.flows.NSF, "maf": zuko.flows.MAF}[kind]
    flow = cls(features=2, transforms=3, hidden_features=(64, 64))
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    t0 = time.process_time()
    for _ in range(steps):
        xb = train[torch.randint(len(train), (batch,), generator=g)]
        loss = -flow().log_prob(xb).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return flow, time.process_time() - t0, sum(p.numel() for p in flow.parameters())


def main() -> None:
    from _tables import parser
    ap = parser("flow", __doc__)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: the machine is shared)")
    ap.add_argument("--repeats", type=int, default=3, help="timed fits of each library, alternating (median ratio)")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {args.repeats}")
    torch.set_num_threads(args.threads)
    pg.set_num_threads(args.threads)  # probgen's calls use the same count (their default is 1)
    train, test = two_moons(20000, seed=1)[0].float(), two_moons(5000, seed=2)[0].float()
    loc, scale = train.mean(0), train.std(0)
    rows = []
    for kind in ("spline", "maf"):
        sflow, _, _ = zuko_fit(kind, (train - loc) / scale, args.steps, 256, 0)
        ratios = []
        for _ in range(args.repeats):
            zflow, zt, zn = zuko_fit(kind, train, args.steps, 256, 0)
            torch.manual_seed(0)
            model = Flow(2, kind=kind, transforms=3, hidden=(64, 64))
            t0 = time.process_time()
            fit = pg.fit(model, train, steps=args.steps, batch_size=256, lr=1e-3, seed=0, progress=False)
            pt = time.process_time() - t0
            ratios.append(pt / zt)
        with torch.no_grad():
            znll = float(-zflow().log_prob(test).mean())
            snll = float(-sflow().log_prob((test - loc) / scale).mean() + scale.log().sum())
        pnll = float(-fit.log_prob(test).mean())
        pn = sum(p.numel() for p in model.net.parameters())
        rows.append((kind, pnll, znll, snll, pt, zt, statistics.median(ratios), pn, zn))
    print(f"two-moons, {args.steps} steps, batch 256, {args.threads} threads, {args.repeats} repeats")
    print(f"{'flow':8} {'probgen NLL':>12} {'zuko NLL':>9} {'ΔNLL':>7} {'zuko std NLL':>13} {'ΔNLL std':>9} "
          f"{'probgen s':>10} {'zuko s':>7} {'time ratio':>10} {'params (pg/zuko)':>17}")
    for kind, pnll, znll, snll, pt, zt, ratio, pn, zn in rows:
        name = "NSF" if kind == "spline" else "MAF"
        print(f"{name:8} {pnll:12.4f} {znll:9.4f} {pnll - znll:+7.4f} {snll:13.4f} {pnll - snll:+9.4f} "
              f"{pt:10.1f} {zt:7.1f} {ratio:10.2f} {pn:>8}/{zn}")
    from _tables import emit, table
    sign = lambda v: f"{v:+.3f}".replace("-", "−")  # noqa: E731
    emit(args.json, f"python benchmarks/flow.py --steps {args.steps} --threads {args.threads} --repeats {args.repeats}",
         {"two-moons": table(
        ["flow", "probgen test NLL", "zuko test NLL", "Δ NLL", "zuko on standardised data", "Δ NLL",
         "time ratio probgen / zuko", "parameters"],
        [[("NSF (`kind=\"spline\"`)" if kind == "spline" else "MAF (`kind=\"maf\"`)"), f"{pnll:.4f}", f"{znll:.4f}",
          sign(pnll - znll), f"{snll:.4f}", sign(pnll - snll), f"{ratio:.2f}", f"{pn:,} / {zn:,}"]
         for kind, pnll, znll, snll, pt, zt, ratio, pn, zn in rows])}, peers=("zuko",),
        note=f"Two-moons, 20,000 train / 5,000 test points, {args.steps} steps, batch 256, {args.threads} thread(s); "
             f"time ratio: CPU seconds, the median of {args.repeats} alternating repeats")


if __name__ == "__main__":
    main()
