"""The one trainer (probgen.loops.gradient) under every gradient method of the registry:
early stopping restores the best validation, the weight average is the documented average
of the iterates, clipping bounds the update, the schedules give the documented learning
rates, the callback stops the run, and a run continued from its state_dict equals the
uninterrupted run bit for bit.

The trainer's iterates are read through its checkpoint seam (``gradient.session(every=1,
save=...)``: the whole state after every step), so every test sees what the trainer did,
whatever the method."""
import copy
import math

import pytest
import torch

import probgen as pg
from probgen import registry
from probgen.loops import gradient
from probgen.loops.gradient import GradientMethod

#: options a method needs to be the gradient method of its engine for this declaration
NEEDS = {"lda-online": {"inference": "amortized"}}
#: the declaration each method is tested on where several qualify (the generic SVI on a
#: mixture: continuous latents, so an autoguide whose parameters appear on the first step)
PREFERRED = {"program": "gmm", "amortised": "vae"}


def _cases():
    found = {}
    for name, cls in sorted(registry.models().items()):
        model, _ = cls.example(seed=0)
        for engine in pg.compatible(model):
            method = registry.find_method(model, engine)
            if isinstance(method, GradientMethod):
                key = (method.engine, method.name)
                if key not in found or PREFERRED.get(method.name) == name:
                    found[key] = (name, engine)
    return [pytest.param(name, engine, method, id=f"{engine}-{method}-{name}")
            for (_, method), (name, engine) in sorted(found.items())]


CASES = _cases()


def test_every_gradient_method_is_a_case():
    methods = {type(m) for e in pg.engines() for m in registry.methods(e) if isinstance(m, GradientMethod)}
    covered = {type(registry.find_method(registry.models()[p.values[0]].example(seed=0)[0], p.values[1]))
               for p in CASES}
    assert methods and methods == covered


def _fit(name, engine, method, steps, **options):
    """The fit and the trainer's state after every step (deep copies)."""
    model, data = registry.models()[name].example(seed=0)
    states = []
    with gradient.session(every=1, save=lambda s: states.append(copy.deepcopy(s))):
        fit = pg.fit(model, data, engine=engine, steps=steps, seed=0, progress=False,
                     **{**NEEDS.get(method, {}), **options})
    return fit, states


def _tensors(fit):
    """Every tensor a fit holds of its parameters: ``params``, the Pyro param store it trained
    in (unconstrained values: what the trainer steps) and an LDA encoder's weights."""
    out = list(fit.params.values())
    out += list(fit.state.get("param_store", {}).get("params", {}).values())
    out += list(fit.state.get("encoder", {}).values())
    return out


def _holds(fit, values):
    """Whether the fit's parameters are exactly ``values`` (the trainer's, by name): every one
    equals a tensor of the fit (continuous random values: equal only if the same)."""
    mine = _tensors(fit)
    return all(any(t.shape == v.shape and torch.equal(t, v) for t in mine) for v in values.values())


def _norm(a, b):
    return math.sqrt(sum(float((a[k].double() - b[k].double()).pow(2).sum()) for k in a))


#: the methods whose epochs are several minibatches by default: one batch per step where a test
#: counts optimiser steps (amortised SVI, contrastive divergence of the energy models)
ONE_BATCH = ("amortised", "cd", "energy")

#: a learning rate large enough that the validation objective gets worse after some epoch
BIG_LR = {"factor_graph": 1.0, "program": 0.5, "lda-online": 0.5, "langevin": 0.5}


@pytest.mark.parametrize("name,engine,method", CASES)
def test_early_stopping_restores_the_best_validation(name, engine, method):
    """A small validation split and a large lr, so that the validation objective gets worse
    after its best step: the fit's parameters are the trainer's at that step (exactly), not the
    last step's, and the run stopped exactly ``patience`` validations after it (or ran out).
    (The examples' data sets are smaller than a batch: one validation per step.)"""
    lr = BIG_LR.get(method, 0.05)
    options = {"optim": "sgd"} if method == "factor_graph" else {}
    fit, states = _fit(name, engine, method, 20, validation=0.3, patience=3, lr=lr, ema=None, **options)
    key = f"val_{fit.objective}"
    records = [r for r in fit.history if key in r]
    assert records, f"no {key} in the history"
    values = [r[key] for r in records]
    maximise = fit.objective in ("log_likelihood", "elbo", "pseudo_log_likelihood")
    best = values.index(max(values) if maximise else min(values))
    best_step = records[best]["step"]
    assert best_step < fit.history[-1]["step"], "the case must make the validation worse after its best step"
    assert fit.history[-1]["step"] == 19 or len(values) - 1 - best == 3
    assert _holds(fit, states[best_step]["params"])
    assert not _holds(fit, states[-1]["params"])


@pytest.mark.parametrize("name,engine,method", CASES)
def test_weight_average_is_the_warmed_up_average_of_the_iterates(name, engine, method):
    """``ema=d``: the fit's parameters are a_n = d_n a_{n−1} + (1 − d_n) θ_n with
    d_n = min(d, (n − 1)/(n + 9)) over the iterates θ_n after each step (one optimiser step of
    each update per step here: one minibatch per epoch), computed here in float64. The
    trainer's float32 lerps each round with relative error ≤ 2^-24; over 6 steps that is below
    1e-6 of the magnitudes, so rtol 1e-5 with a matching atol cannot hide a wrong average
    (a different weight changes a_n by about |θ_n − a_{n−1}| ≫ 1e-5)."""
    options = {"batch_size": 10 ** 6} if method in ONE_BATCH else {}
    fit, states = _fit(name, engine, method, 6, ema=0.5, validation=None, **options)
    iterates = [s["params"] for s in states]
    average = None
    for n, theta in enumerate(iterates, start=1):
        d = min(0.5, (n - 1) / (n + 9))
        average = {k: v.double() for k, v in theta.items()} if average is None else \
            {k: d * average[k] + (1 - d) * theta[k].double() for k, v in theta.items()}
    mine = _tensors(fit)
    for k, v in average.items():
        close = [t for t in mine if t.shape == v.shape
                 and torch.allclose(t.double(), v, rtol=1e-5, atol=1e-5 * float(v.abs().max()) + 1e-12)]
        assert close, f"{k}: no parameter of the fit is the average"
    assert not _holds(fit, iterates[-1]), "the averaged parameters differ from the last iterate"


@pytest.mark.parametrize("name,engine,method", CASES)
def test_clipping_bounds_the_update(name, engine, method):
    """SGD with ``clip_grad=c``: each optimiser step moves its parameters by lr·‖g‖ with
    ‖g‖ ≤ c, so a step of the trainer moves all of them by at most lr·c·√(number of updates)
    (the updates move disjoint parameters); a tiny c makes the unclipped gradient far larger,
    so the bound fails unless clipping is applied. Slack: the new parameters are rounded to
    their dtype, each element by at most eps·|θ_i|/2, so the measured move can exceed the true
    one by ‖eps·θ‖/2 (bounded here by eps·‖θ‖)."""
    lr, c = 0.1, 1e-3
    options = {"batch_size": 10 ** 6} if method in ONE_BATCH else {}
    fit, states = _fit(name, engine, method, 4, optim="sgd", lr=lr, clip_grad=c, validation=None, **options)
    n_updates = 2 if method == "gan" else 1
    moves = [_norm(b["params"], a["params"]) for a, b in zip(states, states[1:])]
    slack = [math.sqrt(sum(float((torch.finfo(v.dtype).eps * v.double()).pow(2).sum()) for v in s["params"].values()))
             for s in states[1:]]
    assert moves and all(m <= lr * c * math.sqrt(n_updates) + e for m, e in zip(moves, slack)), (moves, slack)
    assert max(moves) > 0.1 * lr * c, "the parameters moved (the bound is not met by standing still)"


def _lrs(states):
    return [s["optimisers"][0]["param_groups"][0]["lr"] for s in states]


@pytest.mark.parametrize("schedule", ["exponential", "cosine", "step"])
@pytest.mark.parametrize("name,engine,method", CASES)
def test_schedule_gives_the_documented_learning_rates(name, engine, method, schedule):
    """The learning rate of optimiser step t (t = 0..T−1, read after it from the optimiser's
    state) is the documented one: exponential lr·decay^((t+1)/T), cosine
    end + (lr − end)(1 + cos(πt/(T−1)))/2 with end = lr·decay, step lr·decay^(⌊4t/T⌋/3)."""
    lr, decay, steps = 0.01, 0.1, 8
    options = {"batch_size": 10 ** 6} if method in ONE_BATCH else {}
    fit, states = _fit(name, engine, method, steps, lr=lr, lr_schedule=schedule, lr_decay=decay,
                       validation=None, optim="sgd", **options)
    end = lr * decay
    expected = {"exponential": [lr * decay ** ((t + 1) / steps) for t in range(steps)],
                "cosine": [end + 0.5 * (lr - end) * (1 + math.cos(math.pi * t / (steps - 1))) for t in range(steps)],
                "step": [lr * decay ** ((4 * t // steps) / 3) for t in range(steps)]}[schedule]
    # the exponential rule is applied recursively (lr·γ·γ…): float64 rounding, 1e-12 relative
    assert _lrs(states) == pytest.approx(expected, rel=1e-12)
    assert fit.options["lr_schedule"] == schedule


@pytest.mark.parametrize("name,engine,method", CASES)
def test_callback_sees_every_record_and_stops_the_run(name, engine, method):
    seen = []

    def callback(record):
        seen.append(dict(record))
        return len(seen) == 3

    model, data = registry.models()[name].example(seed=0)
    fit = pg.fit(model, data, engine=engine, steps=10, seed=0, progress=False, callback=callback,
                 **NEEDS.get(method, {}))
    assert len(fit.history) == 3 and seen == fit.history


def _without_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


@pytest.mark.parametrize("name,engine,method", CASES)
def test_continuing_from_state_dict_equals_the_uninterrupted_run(name, engine, method, tmp_path):
    """The state after step 3 of 7, written to a file of tensors and plain data (read back with
    ``torch.load(weights_only=True)``) and loaded into a fresh fit (``session(resume=...)``),
    gives the uninterrupted run's parameters and history bit for bit (CPU; validation and
    early-stopping bookkeeping included where the method validates by default)."""
    whole, states = _fit(name, engine, method, 7)
    torch.save(states[2], tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    model, data = registry.models()[name].example(seed=0)
    with gradient.session(resume=state):
        resumed = pg.fit(model, data, engine=engine, steps=7, seed=0, progress=False, **NEEDS.get(method, {}))
    assert _without_seconds(resumed.history) == _without_seconds(whole.history)
    assert set(resumed.params) == set(whole.params)
    for k, v in whole.params.items():
        assert torch.equal(resumed.params[k], v), k
    for a, b in zip(_tensors(resumed), _tensors(whole)):
        assert torch.equal(a, b)
    # and the resumed run did start from the saved state: it ran (and called back for) steps 3-6
    # only (or up to the step where the uninterrupted run met its tol)
    seen = []
    with gradient.session(resume=states[2]):
        pg.fit(model, data, engine=engine, steps=7, seed=0, progress=False, callback=seen.append,
               **NEEDS.get(method, {}))
    assert [r["step"] for r in seen] == [r["step"] for r in whole.history if r["step"] >= 3]
    assert seen and seen[0]["step"] == 3


# ---- the trainer's own contract --------------------------------------------------------------

def test_minibatches_cover_each_epoch_and_are_seeded():
    x = torch.arange(10)
    a = gradient.Minibatches(x, 3, torch.Generator().manual_seed(0))
    batches = [next(a) for _ in range(6)]
    assert all(len(b) == 3 for b in batches)
    # an epoch of ⌊10/3⌋ = 3 batches: distinct items, then a new permutation
    assert len(set(torch.cat(batches[:3]).tolist())) == 9 and len(set(torch.cat(batches[3:]).tolist())) == 9
    whole = gradient.Minibatches(x, 3, torch.Generator().manual_seed(0), whole=True)
    epoch = list(whole.epoch())
    assert [len(b) for b in epoch] == [3, 3, 3, 1] and sorted(torch.cat(epoch).tolist()) == list(range(10))


@pytest.mark.parametrize("chunk_batches", [1, 2, 3, 100])
def test_epoch_gathers_in_chunks_the_batches_of_the_permutation(monkeypatch, chunk_batches):
    # rows gathered a chunk at a time are the batches perm[i:i + B] of the epoch's permutation,
    # in order, whatever the chunk size (one batch, several, a remainder chunk, the whole data)
    x = torch.arange(11 * 4, dtype=torch.float32).reshape(11, 4)
    monkeypatch.setattr(gradient, "GATHER_BYTES", chunk_batches * 3 * 4 * 4)
    epoch = list(gradient.Minibatches(x, 3, torch.Generator().manual_seed(5), whole=True).epoch())
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(5))
    assert len(epoch) == 4
    for i, b in enumerate(epoch):
        assert torch.equal(b, x[perm[3 * i:3 * i + 3]])


@pytest.mark.parametrize("bad,match", [
    ({"lr_schedule": "linear"}, "lr_schedule must be one of"),
    ({"lr_decay": 0.5}, "lr_decay is the factor a schedule ends at"),
    ({"lr_schedule": "cosine", "lr_decay": 2.0}, r"lr_decay .* must be in \(0, 1\]"),
    ({"clip_grad": -1.0}, "clip_grad must be None or a positive number"),
    ({"ema": 1.0}, r"ema must be in \[0, 1\)"),
    ({"validation": 1.5}, "validation must be None, a fraction"),
    ({"patience": 0, "validation": 0.2}, "patience must be a positive integer"),
    ({"patience": 2}, "patience stops on the validation objective"),
    ({"optim": "adagrad"}, "optim must be one of"),
    ({"callback": 3}, "callback must be a function"),
])
def test_bad_trainer_options_are_clear_errors(bad, match):
    model, data = registry.models()["flow"].example(seed=0)
    with pytest.raises(ValueError, match=match):
        pg.fit(model, data, steps=2, seed=0, progress=False, **bad)


def test_validation_may_be_a_data_set():
    model, data = registry.models()["flow"].example(seed=0)
    fit = pg.fit(model, data[:48], steps=6, seed=0, progress=False, validation=data[48:], batch_size=16)
    assert "val_loss" in fit.history[-1] and fit.options["validation"] == "data"
    assert fit.state["best_val_loss"] == min(r["val_loss"] for r in fit.history if "val_loss" in r)


def test_generic_svi_history_is_per_example():
    """A user program whose observed site lies in a plate of size len(x) records the negative
    ELBO per example: the data passed twice records the same values where a total would
    double. No latent sites, so the loss is exact; Adam's step does not depend on the
    gradient's scale (up to eps = 1e-8 against gradients of order 1), so both runs take the
    same steps and agree to rounding (1e-6 relative is ample for float32 sums of 80 terms)."""
    import pyro
    import pyro.distributions as dist

    def program(x):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("N", len(x)):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    x = torch.randn(40, generator=torch.Generator().manual_seed(0))
    one = pg.fit(program, x, engine="svi", steps=5, seed=0, progress=False)
    two = pg.fit(program, torch.cat([x, x]), engine="svi", steps=5, seed=0, progress=False)
    assert one.state["per_example"] and two.state["per_example"]
    assert [r["loss"] for r in one.history] == pytest.approx([r["loss"] for r in two.history], rel=1e-6)
