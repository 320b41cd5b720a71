"""Stochastic variational inference for LDA: minibatches of documents.

``inference="online"`` (default) — online variational Bayes (Hoffman, Blei & Bach 2010,
Algorithm 2): for each minibatch B, the batched document E-step
(`probgen.ops.lda.e_step`) gives expected topic–word counts, and the topic factor
takes a natural-gradient step  λ ← (1 − ρ_t) λ + ρ_t (η + D/|B| Σ_{d∈B} c_d φ_d),
ρ_t = (τ0 + t)^(−κ), t = 1, 2, … Each document's γ is warm-started from its last visit.
λ starts from batch CAVI's probed start run on a random subsample of four minibatches'
worth of documents (``probe_docs``), its statistics scaled to the corpus.

``inference="amortized"`` — an encoder network maps a document's counts to the
concentration of q(θ_d) = Dirichlet(enc(c_d)) (amortised VI, as in AVITM / ProdLDA of
Srivastava & Sutton 2017), trained with Pyro's SVI on the declaration's own program
(topics a MAP parameter under their Dirichlet(η) prior; θ reparameterised through
torch's Dirichlet ``rsample``, so no Laplace approximation of the prior is needed), on the
trainer (`probgen.loops.gradient`: every trainer option; the program subsamples
``batch_size`` documents in its own plate, so the trainer hands it the whole corpus).
The decoder stays LDA's mixture θ_d β (the paper's NVLDA variant), not ProdLDA's
product of experts, so the fitted model is the same declaration.
"""
from __future__ import annotations

import math
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import constraints

from probgen import distributed
from probgen.corpus import Corpus
from probgen.fit import Fit
from probgen.loops.gradient import TRAINER_OPTIONS, GradientMethod, Trainer
from probgen.loops.gradient import Update as GradientUpdate
from probgen.loops.iterative import LOOP, Update, check_step_size, run, step_size
from probgen.ops import lda as lda_ops
from probgen.progress import progress as bar
from probgen.random import generator
from probgen.registry import check_options, register

from .._lda import TopicModelMethod, hyperparameters, initial_lambda, make_fit, seeded_lambda

OPTIONS = ("inference", "batch_size", "tau0", "kappa", "e_step_tol", "max_e_step", "lr", "hidden", "callback",
           "probes", "probe_steps", "seed_docs", "probe_docs")


class DirichletEncoder(nn.Module):
    """Counts (B, V) → expected topic counts (B, K): an MLP on log(1 + counts); q(θ_d) is
    Dirichlet(α + encoder(c_d)). A fit keeps its weights in ``fit.state["encoder"]``
    (``load_state_dict`` them into ``DirichletEncoder(V, K, fit.state["encoder_hidden"])`` to
    encode new documents)."""

    def __init__(self, vocab_size: int, k: int, hidden: int = 100):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(vocab_size, hidden), nn.Softplus(),
                                 nn.Linear(hidden, hidden), nn.Softplus(), nn.Linear(hidden, k))

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.net(torch.log1p(counts))) + 1e-3


@register
class LDAOnlineVB(TopicModelMethod, GradientMethod):
    engine = "svi"
    name = "lda-online"
    objective = "elbo"
    steps_unit = "minibatch updates"
    device_hint = "online VB's E-step is NumPy code, probgen.ops.lda.e_step"
    loop = LOOP
    missing_values = True  # online VB: the E-step's renormalisation (inference="amortized" refuses them)
    parallel = "data"  # online VB: each rank's part of the global minibatch, its statistics summed

    def fit(self, model: Any, data: Corpus, *, steps: int | None, seed: int | None, init: dict | None,
            progress: bool, inference: str = "online", batch_size: int = 32, tau0: float = 10.0,
            kappa: float = 0.7, e_step_tol: float = 1e-3, max_e_step: int = 100, lr: float = 0.01,
            hidden: int = 100, probes: int | None = None, probe_steps: int | None = None,
            seed_docs: int | None = None, probe_docs: int | None = None, **options: Any) -> Fit:
        """``steps``: minibatch updates (default: 4 passes over the documents for
        ``"online"``, 1000 for ``"amortized"``). ``batch_size``: documents per minibatch.
        ``tau0``, ``kappa``: the step-size schedule ρ_t = (τ0 + t)^(−κ), κ ∈ (0.5, 1]
        for convergence. ``lr``, ``hidden``: Adam step and encoder width (amortized).
        ``history`` records ``"elbo"`` per document (a noisy minibatch estimate). ``callback``
        (both; for ``"online"`` as in `probgen.loops.iterative.run`): called with each
        history record, ``True`` stops. The trainer's other options (`probgen.loops.gradient`)
        apply to ``"amortized"`` only.

        The start: the best by ELBO of ``probes`` (default max(4, 2K)) document-seeded starts
        (``seed_docs`` documents per topic, default 2) after ``probe_steps`` CAVI iterations
        (`inference.meanfield.lda.probed_start`, batch CAVI's start; ``probes=1``: one seeded
        start; ``probe_steps`` default 3); ``init["topics"]`` replaces it. ``"amortized"``
        probes every document. ``"online"`` probes a seeded random subsample S of
        ``probe_docs`` documents, default min(D, 4 · ``batch_size``) — four minibatches, a cost
        that does not grow with the corpus — and scales their
        data part by D/|S| as a minibatch's statistics are (`_OnlineUpdates._probed_start`);
        the Gamma-noise start of Hoffman et al. (2010), Gamma(100, 1/100), merged
        well-separated simulated topics that this start recovers (docs/recovery.md). ``probe_docs=0``: that Gamma-noise start (``probes`` /
        ``probe_steps`` / ``seed_docs`` are then refused). ``fit.options`` records the
        resolved values (``probe_docs`` at most D)."""
        check_options("svi", {k: v for k, v in options.items() if k not in TRAINER_OPTIONS}, OPTIONS + TRAINER_OPTIONS)
        if inference == "amortized" and probe_docs is not None:
            raise ValueError("probe_docs applies to inference='online' (its start probes a subsample of the "
                             "documents); the amortised encoder's start probes all of them")
        given = sorted(k for k, v in (("probes", probes), ("probe_steps", probe_steps), ("seed_docs", seed_docs))
                       if v is not None)
        if inference == "online" and probe_docs == 0 and given:
            raise ValueError(f"{given} apply to online VB's probed start; probe_docs=0 is the Gamma-noise "
                             "start, which probes nothing")
        from probgen.inference.meanfield.lda import default_probes
        probes = default_probes(model) if probes is None else probes
        probe_steps = 3 if probe_steps is None else probe_steps
        seed_docs = 2 if seed_docs is None else seed_docs
        for name, v, least in (("probes", probes, 1), ("probe_steps", probe_steps, 0), ("seed_docs", seed_docs, 0),
                               ("probe_docs", 0 if probe_docs is None else probe_docs, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {v!r}")
        if inference == "online" and set(options) - {"callback"}:
            raise ValueError(f"the trainer options {sorted(set(options) - {'callback'})} apply to "
                             "inference='amortized' (a gradient method); online VB takes natural-gradient "
                             "steps rho_t = (tau0 + t)^-kappa")
        if inference not in ("online", "amortized"):
            raise ValueError(f"inference must be 'online' or 'amortized', got {inference!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        tau0, kappa = check_step_size(tau0, kappa, "tau0")
        if inference == "amortized" and data.any_missing:
            raise ValueError("the count matrix has missing cells (NaN), which inference='amortized' (an encoder "
                             "of complete counts) does not handle; engine='meanfield' and engine='svi' "
                             "(inference='online') marginalise them")
        if inference == "amortized" and distributed.current() is not None:
            raise ValueError("inference='amortized' does not run data-parallel (the encoder's trainer is not "
                             "split over ranks here): pass distributed=False, or use inference='online'")
        if inference == "amortized":
            return self._amortized(model, data, steps, seed, init, progress, min(batch_size, data.n_docs), lr,
                                   hidden, self.trainer_options(model, options), probes, probe_steps, seed_docs)
        # the global number of documents (data-parallel: every rank's): the minibatches, the
        # passes and the probes' subsample are drawn over the global numbering
        ctx = distributed.current()
        n_docs = data.n_docs if ctx is None else sum(ctx.sizes(data.n_docs))
        batch_size = min(batch_size, n_docs)
        steps = 4 * math.ceil(n_docs / batch_size) if steps is None else steps
        probe_docs = min(n_docs, 4 * batch_size if probe_docs is None else probe_docs)
        start = {"probe_docs": 0} if probe_docs == 0 else \
            {"probes": probes, "probe_steps": probe_steps, "seed_docs": seed_docs, "probe_docs": probe_docs}
        updates = _OnlineUpdates(model, data, init, batch_size, tau0, kappa, e_step_tol, max_e_step, **start)
        # no tol: the recorded ELBO is a noisy minibatch estimate, and its relative change says
        # nothing about convergence; nor n_init: picking the best restart by that noise would be noise too
        result = run(updates, objective=self.objective, steps=steps, tol=None, seed=seed, progress=progress,
                     callback=options.get("callback"), desc="lda online vb")
        q = result.state
        return make_fit(self, model, q["lambda"], q["alpha"], q["eta"], data, result.history,
                        {"lambda": q["lambda"], **result.fit_state()},
                        {"inference": "online", "batch_size": batch_size, "tau0": tau0, "kappa": kappa, **start})

    def _amortized(self, model: Any, data: Corpus, steps: int | None, seed: int | None, init: dict | None,
                   progress: bool, batch_size: int, lr: float, hidden: int, opts: dict, probes: int,
                   probe_steps: int, seed_docs: int) -> Fit:
        """The encoder's fit from CAVI's probed start (see `fit`).

        Why that start: from Dirichlet(1) topics the encoder's fit ended with two true topics
        merged into one and another split in two on seeds 1 and 8 of benchmarks/recovery.py
        (a fold-in ELBO 14 nats per document below a recovered fit's after the default 1000
        steps, still there after more: a local optimum), from one document-seeded start on
        seeds 2 and 5, and from the best by fold-in ELBO of 4 seeded starts after 200 encoder
        steps on 2 of 5 corpora with K = 6; CAVI's probes (Biernacki, Celeux & Govaert 2003:
        short runs from several starts, the best kept) cost a few CAVI iterations."""
        from probgen.inference.meanfield.lda import probed_start
        steps = 1000 if steps is None else steps
        alpha, eta = hyperparameters(model, init)
        counts = data.dense(torch.float64)  # float64: see _EncoderGuide
        if opts["validation"] is not None and not isinstance(opts["validation"], (int, float)):
            opts["validation"] = model.check_data(opts["validation"]).dense(torch.float64)
        if init is not None and "topics" in init:
            topics0 = torch.as_tensor(init["topics"], dtype=torch.float64)
        else:
            lam = probed_start(model, data, init, seed, probes, probe_steps, seed_docs)
            topics0 = lam / lam.sum(1, keepdim=True)
        topics, encoder, trainer = self._train(model, counts, topics0, alpha, steps, seed, progress, batch_size,
                                               lr, hidden, opts)
        # the encoder as weights (a module that went through pyro.module holds weak references)
        state = {"encoder": {k: v.detach().clone() for k, v in encoder.state_dict().items()},
                 "encoder_hidden": hidden, **trainer.fit_state()}
        return make_fit(self, model, topics, alpha, eta, data, trainer.history, state,
                        {"inference": "amortized", "batch_size": batch_size, "lr": lr, "hidden": hidden,
                         "probes": probes, "probe_steps": probe_steps, "seed_docs": seed_docs,
                         **trainer.options()})

    def _train(self, model: Any, counts: torch.Tensor, topics0: torch.Tensor, alpha: torch.Tensor, steps: int,
               seed: int | None, progress: bool, batch_size: int, lr: float, hidden: int,
               opts: dict) -> tuple[torch.Tensor, "DirichletEncoder", Trainer]:
        """One run of the encoder's trainer from the topics ``topics0``: (topics, encoder, trainer)."""
        pyro.clear_param_store()
        pyro.param("topics", topics0.double(), constraint=constraints.simplex)
        encoder = DirichletEncoder(model.vocab_size, model.k, hidden).double()
        guide = _EncoderGuide(encoder, batch_size, alpha.double())
        elbo = pyro.infer.Trace_ELBO()

        def program(c: torch.Tensor) -> Any:
            return model.program(c, batch_size=min(batch_size, len(c)))

        def loss(c: torch.Tensor) -> tuple[float, dict]:
            value = elbo.loss_and_grads(program, guide, c)  # Pyro computes the gradients
            # Trace_ELBO's loss estimates the corpus's −ELBO (the plate scales the minibatch up)
            return value, {"elbo": -float(value) / len(c), "loss": float(value)}

        def validate(c: torch.Tensor) -> float:  # the held-out documents' ELBO per document
            return -float(elbo.loss(program, guide, c)) / len(c)

        trainer = Trainer([GradientUpdate(loss, lambda: dict(pyro.get_param_store().named_parameters()),
                                  backward=False)], counts, steps=steps, seed=seed, batch_size=None, lr=lr,
                          validate=validate, objective="elbo", maximise=True, progress=progress,
                          desc="lda amortized", **opts).run()
        return pyro.param("topics").detach().double(), encoder, trainer


class _OnlineUpdates:
    """Online VB (Hoffman et al. 2010, Algorithm 2) for `probgen.loops.iterative.run`:
    one step is one minibatch update of λ; the state holds λ, the rest of the current pass's
    minibatches (global document indices), the generator that orders the passes and — on one
    process — the (D, K) warm starts of γ.

    Data-parallel (`statistics` / `update`, issue 16): the minibatches are drawn
    over the global document numbering (rank r holds documents offset_r … offset_r + D_r − 1,
    contiguous by rank), the same on every rank (the same seed); each rank runs the E-step
    on its documents of the global minibatch, and their expected counts, bound and number
    are summed in one ``all_reduce`` per update, so the update is the one-process update of
    the union. γ's warm starts stay on their rank. One process: ``step`` is
    ``update(statistics)``."""

    def __init__(self, model: Any, data: Corpus, init: dict | None, batch_size: int, tau0: float, kappa: float,
                 e_step_tol: float, max_e_step: int, probes: int = 1, probe_steps: int = 0, seed_docs: int = 0,
                 probe_docs: int = 0):
        self.model, self.data, self.init, self.batch_size = model, data, init, batch_size
        self.probes, self.probe_steps, self.seed_docs, self.probe_docs = probes, probe_steps, seed_docs, probe_docs
        self.tau0, self.kappa, self.e_step_tol, self.max_e_step = tau0, kappa, e_step_tol, max_e_step
        self.local: dict | None = None   # data-parallel: this rank's γ and place in the numbering

    def start(self, seed: int | None) -> dict:
        model, data, init = self.model, self.data, self.init
        alpha, eta = hyperparameters(model, init)
        ctx = distributed.current()
        offset, D = 0, data.n_docs
        if ctx is not None:
            sizes = ctx.sizes(data.n_docs)
            offset, D = sum(sizes[:ctx.rank]), sum(sizes)
        g = generator(seed)
        if init is not None and "topics" in init:
            lam = initial_lambda(model, data, eta, init, seed)
        elif self.probes == 1 or self.probe_steps == 0:  # one random start, as CAVI's (seed_docs=0: Gamma noise)
            lam = seeded_lambda(data, model.k, eta, self.seed_docs, seed) if self.seed_docs else \
                initial_lambda(model, data, eta, init, seed)
        else:
            lam = self._probed_start(seed, g, eta, offset, D)
        gamma = (alpha + (data.lengths / model.k)[:, None]).clone()   # (D, K) warm starts
        q = {"lambda": lam, "alpha": alpha, "eta": eta, "t": 0, "generator": g, "batches": [], "gamma": gamma}
        if ctx is not None:
            self.local = {"gamma": q.pop("gamma"), "offset": offset, "n_docs": D}
        return q

    def _probed_start(self, seed: int | None, g: torch.Generator, eta: torch.Tensor, offset: int,
                      D: int) -> torch.Tensor:
        """CAVI's probed start (`inference.meanfield.lda.probed_start`) on a random subsample S
        of ``probe_docs`` documents (drawn over the global numbering by the passes' generator
        ``g``, before its first pass), its data part scaled up to the corpus as online VB's
        minibatch statistics are (Hoffman et al. 2010, Algorithm 2: η + (D/|B|) ŝ):
        λ = λ₀ + (D/|S|)(λ_S − η) on the random start's noise λ₀ (`initial_lambda`). Returns
        the (K, V) λ. The noise, not η, under the data part: on the Lee corpus (V = 3 261)
        the words no document of a 128-document S holds kept η = 0.1, and the fits' held-out
        perplexity was 1 897 against the noise start's 1 771 (5 seeds); on λ₀ it was 1 770.
        Data-parallel: each rank probes with its documents of S (the probes' reductions sum
        them), so every rank ends with the same λ_S."""
        from probgen.inference.meanfield.lda import probed_start
        n = self.probe_docs  # at most D (`LDAOnlineVB.fit`)
        idx = torch.randperm(D, generator=g)[:n].sort().values
        mine = idx[(idx >= offset) & (idx < offset + self.data.n_docs)] - offset
        # a rank without documents of S adds nothing to the probes' sums; its seeded start
        # (which needs documents) would be overwritten by their first update anyway
        seed_docs = self.seed_docs if len(mine) else 0
        lam_s = probed_start(self.model, self.data.subset(mine), self.init, seed, self.probes, self.probe_steps,
                             seed_docs, self.e_step_tol)
        # on the Gamma(100, 1/100) noise of the random start (`initial_lambda`), not on η: the
        # words no document of S holds keep ≈ 1 pseudo-count each instead of η's
        return initial_lambda(self.model, self.data, eta, None, seed) + (D / n) * (lam_s - eta)

    def _where(self, q: dict) -> tuple[torch.Tensor, int, int]:
        """This process's γ, the global index of its first document and the global number."""
        if self.local is None:
            return q["gamma"], 0, self.data.n_docs
        return self.local["gamma"], self.local["offset"], self.local["n_docs"]

    def step(self, q: dict) -> Update:
        return self.update(q, self.statistics(q))

    def statistics(self, q: dict) -> dict:
        gamma, offset, D = self._where(q)
        if not q["batches"]:  # a new pass over the (global) documents in a new random order
            q["batches"] = [b.sort().values for b in
                            torch.split(torch.randperm(D, generator=q["generator"]), self.batch_size)]
        idx = q["batches"].pop(0)
        mine = idx[(idx >= offset) & (idx < offset + self.data.n_docs)] - offset   # this rank's part
        K, V = q["lambda"].shape
        self._elog_beta = elog_beta = lda_ops.dirichlet_expectation(q["lambda"])
        out = {"n": torch.tensor(float(len(mine)), dtype=torch.float64)}   # summed: the global batch's size
        if len(mine):
            sub = self.data.subset(mine)
            gamma_b, sstats, _, bound = lda_ops.e_step(sub, elog_beta, q["alpha"], gamma[mine],
                                                       max_iter=self.max_e_step, tol=self.e_step_tol,
                                                       with_bound=True)
            gamma[mine] = gamma_b
            out.update(sstats=sstats, bound=bound.sum())
        else:
            out.update(sstats=torch.zeros(K, V, dtype=torch.float64), bound=torch.zeros((), dtype=torch.float64))
        return out

    def update(self, q: dict, s: dict) -> Update:
        lam, eta, t = q["lambda"], q["eta"], q["t"]
        _, _, D = self._where(q)
        elog_beta = getattr(self, "_elog_beta", None)
        elog_beta = lda_ops.dirichlet_expectation(lam) if elog_beta is None else elog_beta
        scale = D / float(s["n"])
        # noisy ELBO estimate at the current λ: the minibatch's documents scaled up to D
        elbo = scale * s["bound"] + lda_ops.topic_bound(lam, eta, elog_beta)
        rho = step_size(t + 1, self.tau0, self.kappa)
        q["lambda"], q["t"] = (1 - rho) * lam + rho * (eta + scale * s["sstats"]), t + 1
        self._elog_beta = None
        return Update(q, float(elbo) / D, {"rho": rho})  # per document


class _EncoderGuide:
    """q(θ_d) = Dirichlet(α + encoder(c_d)) in the same subsampled ``documents`` plate as the
    program: the encoder gives the document's expected topic counts, as CAVI's γ_d = α + Σ c φ
    (the exact posterior's concentration is never below the prior's). The floor α also keeps
    the reparameterised draw finite: from concentrations near the encoder's own floor (1e-3)
    every float32 Gamma variate underflows to 0 with probability ≈ e^(−87.5·10⁻³) ≈ 0.9 and
    θ = 0/0 (the NaN the fits raised on simulated corpora). The fit trains in float64: at
    concentration a one float32 variate underflows with probability ≈ (10⁻³⁸)^a / Γ(1 + a),
    3·10⁻⁷ at α = 1/6, so over the ~10⁶ draws of a K = 6 fit some θ_dk is exactly 0, and
    where it owns the document's words θ·β underflows and the ELBO's gradient is NaN (seen
    on a K = 6 corpus); in float64 the same probability is ≈ 10⁻⁵¹."""

    def __init__(self, encoder: DirichletEncoder, batch_size: int, alpha: torch.Tensor):
        self.encoder, self.batch_size, self.alpha = encoder, batch_size, alpha

    def __call__(self, counts: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("documents", counts.shape[0], subsample_size=min(self.batch_size, counts.shape[0])) as idx:
            pyro.sample("theta", dist.Dirichlet(self.alpha + self.encoder(counts[idx])))
