"""VAE on the binarised 8×8 digits: probgen's svi engine against a plain Pyro SVI loop of the
same architecture (64 → 128 → 8 encoder, 8 → 128 → 64 Bernoulli decoder, ReLU), same optimiser
(ClippedAdam), same minibatches and per-example loss, in the same process.

Reports CPU seconds per epoch of each loop (one thread; short runs of the two alternate so
that machine load hits both alike), the ratio, and the test negative log-likelihood of both fits by
the same IWAE-k estimator (k = 5000 by default; Burda et al. 2016), on the fixed split
``probgen.data.split(x, test_fraction=0.2, seed=0)``.

    python benchmarks/vae.py                 # ~ a few minutes on 2 CPU cores
    python benchmarks/vae.py --epochs 20 --k 500   # a quick look
"""
from __future__ import annotations

import time

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from torch import nn

import probgen as pg
from probgen.data import split
from probgen.inference.svi.autoencoder import iwae_bound
from probgen.models import VAE

LATENT, HIDDEN = 8, 128


class Encoder(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc, self.loc, self.scale = nn.Linear(d, HIDDEN), nn.Linear(HIDDEN, LATENT), nn.Linear(HIDDEN, LATENT)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        return self.loc(h), nn.functional.softplus(self.scale(h)) + 1e-4


class Decoder(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc, self.out = nn.Linear(LATENT, HIDDEN), nn.Linear(HIDDEN, d)

    def forward(self, z):
        return self.out(torch.relu(self.fc(z)))


class PlainVAE:
    """The Pyro tutorial's VAE: nn.Modules registered with pyro.module."""

    def __init__(self, d):
        self.encoder, self.decoder = Encoder(d), Decoder(d)

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", len(x), dim=-1), poutine.scale(scale=1.0 / len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(LATENT), torch.ones(LATENT)).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", len(x), dim=-1), poutine.scale(scale=1.0 / len(x)):
            loc, scale = self.encoder(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def plain_epochs(x, epochs, batch_size, lr, seed, times):
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    vae = PlainVAE(x.shape[1])
    svi = SVI(vae.model, vae.guide, pyro.optim.ClippedAdam({"lr": lr}), Trace_ELBO(max_plate_nesting=1))
    for _ in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch_size):
            svi.step(x[perm[i:i + batch_size]])
        times.append(time.perf_counter() - start)
    return vae


def main():
    from _tables import parser
    p = parser("vae", __doc__)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--k", type=int, default=5000, help="importance samples of the IWAE bound")
    p.add_argument("--rounds", type=int, default=4, help="alternating short timing runs per loop")
    args = p.parse_args()
    torch.set_num_threads(1)  # a shared machine: one thread each, no oversubscription noise

    x = pg.load_dataset("digits-binary").float()
    x_train, x_test = split(x)
    per_round = max(1, args.epochs // args.rounds)
    cpu = {"ours": [0.0, 0], "plain": [0.0, 0]}   # CPU seconds, epochs

    def ours(epochs, seed, progress=False):
        t0 = time.process_time()
        fit = pg.fit(VAE(LATENT, (x.shape[1], HIDDEN)), x_train, steps=epochs, seed=seed, lr=args.lr,
                     batch_size=args.batch_size, validation=0, progress=progress)
        cpu["ours"][0] += time.process_time() - t0
        cpu["ours"][1] += epochs
        return fit

    def plain(epochs, seed):
        t0 = time.process_time()
        vae = plain_epochs(x_train, epochs, args.batch_size, args.lr, seed, [])
        cpu["plain"][0] += time.process_time() - t0
        cpu["plain"][1] += epochs
        return vae

    # Timing in CPU seconds of this (single-threaded) process, which other processes on a
    # shared machine disturb far less than wall-clock time; short runs of the two loops
    # alternate, then one full run of each gives the fits whose likelihood is reported.
    ours(1, 0), plain(1, 0)                        # warm-up: imports, first-call costs
    cpu = {"ours": [0.0, 0], "plain": [0.0, 0]}
    for r in range(args.rounds):
        ours(per_round, r + 1)
        plain(per_round, r + 1)
    fit = ours(args.epochs, 0, progress=True)
    plain_vae = plain(args.epochs, 0)

    pyro.set_rng_seed(0)
    nll_ours = -fit.log_prob(x_test, num_samples=args.k).mean().item()
    elbo_ours = -fit.log_prob(x_test).mean().item()
    with torch.no_grad():
        pyro.set_rng_seed(0)
        nll_plain = -iwae_bound(plain_vae.model, plain_vae.guide, (x_test,), args.k).mean().item()  # (ignores scale)

    so, sp = cpu["ours"][0] / cpu["ours"][1], cpu["plain"][0] / cpu["plain"][1]
    print(f"VAE {x.shape[1]}-{HIDDEN}-{LATENT}, binarised digits: {len(x_train)} train / {len(x_test)} test, "
          f"batch {args.batch_size}, lr {args.lr}, {args.epochs} epochs")
    print()
    from _tables import emit, table
    emit(args.json, f"python benchmarks/vae.py --epochs {args.epochs} --k {args.k}", {"digits": table(
        [f"VAE {x.shape[1]}-{HIDDEN}-{LATENT}, binarised digits, {args.epochs} epochs, batch {args.batch_size}",
         "probgen svi", "plain Pyro SVI", "ratio"],
        [[f"CPU seconds / epoch ({cpu['ours'][1]} epochs each, one thread)", f"{so:.4f}", f"{sp:.4f}", f"{so / sp:.2f}"],
         [f"test NLL, IWAE-{args.k} (nats)", f"{nll_ours:.2f}", f"{nll_plain:.2f}", f"{nll_ours / nll_plain:.2f}"],
         ["test −ELBO (nats)", f"{elbo_ours:.2f}", "", ""]])}, peers=("pyro-ppl",),
         note=f"{len(x_train)} train / {len(x_test)} test images, lr {args.lr}, one thread")


if __name__ == "__main__":
    main()
