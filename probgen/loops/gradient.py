"""The one trainer of every gradient method (flow, diffusion, adversarial, Langevin CD, SVI,
exact maximum likelihood by gradient steps).

A method supplies only what is its own: one or more `Update` s — a loss on a minibatch
and the parameters that loss moves, each with its optimiser — and, optionally, a validation
objective. The `Trainer` owns everything else: the budget (``steps``), seeded
minibatches reshuffled every epoch, the optimisers, the learning-rate schedule, gradient
clipping, the weight average (EMA), the validation split with early stopping and best-epoch
restore, the history, the progress bar, the callback, and its whole state as one dict
(`Trainer.state_dict` / `Trainer.load_state_dict`) so that a run can be stopped
and continued bit for bit.

Options every gradient method takes (the method's ``fit`` keywords, checked by the core; the
defaults are each method's own):

* ``lr`` – the learning rate; ``optim`` – ``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"``,
  ``"clipped_adam"`` (Pyro's Adam with element-wise gradient clamping at 10), ``"lbfgs"`` or a
  ``torch.optim.Optimizer`` subclass (built with ``lr=`` only);
* ``lr_schedule`` – ``None`` (constant), ``"exponential"`` (lr_t = lr · lr_decay^((t+1)/T):
  geometric, reaching lr · lr_decay at the last of the T optimiser steps; Pyro ClippedAdam's
  ``lrd`` rule), ``"cosine"`` (lr_t = lr_end + (lr − lr_end)(1 + cos(π t / (T−1)))/2, lr_end =
  lr · lr_decay; Loshchilov & Hutter 2017, SGDR without restarts) or ``"step"`` (four equal
  stages, stage s = ⌊4t/T⌋ at lr · lr_decay^(s/3): a staircase from lr to lr · lr_decay);
  ``lr_decay`` – the factor the schedule ends at (default 0.1 when a schedule is set);
* ``clip_grad`` – ``None`` or the largest global L2 norm of each optimiser's gradient
  (Pascanu et al. 2013): gradients with a larger norm are scaled down to it;
* ``ema`` – ``None`` or a decay d in [0, 1): the fit's parameters are the exponential moving
  average of the iterates (Polyak & Juditsky 1992), updated after every training step (every
  minibatch of an epoch; a GAN's after its generator step) with the warm-up
  d_n = min(d, (n − 1)/(n + 9)) at update n (the first update copies the weights);
* ``validation`` – ``None`` / 0 (none), a fraction in (0, 1) of the data held out (drawn with
  ``seed``), or a validation data set; the method's objective on it is recorded as
  ``"val_<objective>"`` after every pass over the training split, the parameters of the best
  validation are restored at the end, and ``patience`` (``None``: never) validations without
  improvement stop the run;
* ``callback`` – called after every step with that step's history record; ``True`` stops.
"""
from __future__ import annotations

import contextlib
import copy
import math
import random as _random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from probgen import checkpoint, distributed
from probgen.data import n_items, take
from probgen.progress import progress as bar
from probgen.loops.mcmc import chain_seed
from probgen.random import generator as seeded_generator
from probgen.registry import Method, check_options, check_tol, converged

SCHEDULES = (None, "exponential", "cosine", "step")

#: the optimisers ``optim=`` names
OPTIMS = ("adam", "adamw", "sgd", "rmsprop", "clipped_adam", "lbfgs")


def optimiser_class(optim: Any) -> type:
    """The ``torch.optim.Optimizer`` subclass ``optim`` names (`OPTIMS`) or is."""
    if isinstance(optim, type) and issubclass(optim, torch.optim.Optimizer):
        return optim
    if optim == "clipped_adam":
        from pyro.optim.clipped_adam import ClippedAdam
        return ClippedAdam
    table = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
             "rmsprop": torch.optim.RMSprop, "lbfgs": torch.optim.LBFGS}
    if optim not in table:
        raise ValueError(f"optim must be one of {list(OPTIMS)} or a torch.optim.Optimizer subclass, got {optim!r}")
    return table[optim]


def check_trainer_options(*, lr: Any, optim: Any, lr_schedule: Any, lr_decay: Any, clip_grad: Any, ema: Any,
                          validation: Any, patience: Any, callback: Any = None,
                          batch_size: Any = None, batch_size_optional: bool = False) -> float | None:
    """Check the trainer's options (clear ``ValueError`` s); returns ``lr_decay`` with its
    default (0.1 where a schedule is set)."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    optimiser_class(optim)
    if lr_schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {list(SCHEDULES)}, got {lr_schedule!r}")
    if lr_decay is not None and (isinstance(lr_decay, bool) or not isinstance(lr_decay, (int, float))
                                 or not 0 < lr_decay <= 1):
        raise ValueError(f"lr_decay (the factor the learning rate ends at) must be in (0, 1], got {lr_decay!r}")
    if lr_decay is not None and lr_schedule is None:
        raise ValueError("lr_decay is the factor a schedule ends at; pass lr_schedule= one of "
                         f"{[s for s in SCHEDULES if s]} with it")
    if clip_grad is not None and (isinstance(clip_grad, bool) or not isinstance(clip_grad, (int, float))
                                  or not clip_grad > 0):
        raise ValueError(f"clip_grad must be None or a positive number (a gradient norm), got {clip_grad!r}")
    if ema is not None and (isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0 <= ema < 1):
        raise ValueError(f"ema must be in [0, 1) (or None to switch it off), got {ema!r}")
    if isinstance(validation, (int, float)) and not isinstance(validation, bool):
        if not 0 <= validation < 1:
            raise ValueError(f"validation must be None, a fraction in [0, 1) or a validation data set, got {validation!r}")
    elif isinstance(validation, bool):
        raise ValueError(f"validation must be None, a fraction in [0, 1) or a validation data set, got {validation!r}")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive integer or None, got {patience!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be a function of a history record, got {type(callback).__name__}")
    if not (batch_size is None and batch_size_optional) and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer{' or None (the whole data)' if batch_size_optional else ''}, "
                         f"got {batch_size!r}")
    return 0.1 if lr_decay is None and lr_schedule is not None else lr_decay


#: the trainer's options every gradient method takes besides its own ``lr`` and ``batch_size``
TRAINER_OPTIONS = ("optim", "lr_schedule", "lr_decay", "clip_grad", "ema", "validation", "patience", "callback")
_DEFAULTS = {"optim": "adam", "lr_schedule": None, "lr_decay": None, "clip_grad": None, "ema": None,
             "validation": None, "patience": None, "callback": None}


class GradientMethod(Method):
    """A method trained by `Trainer`: its ``fit`` takes every trainer option
    (`TRAINER_OPTIONS`, in ``**options``) with the defaults ``trainer_defaults`` states."""

    #: the loop its fit runs on (`probgen.checkpoint.LOOPS`: it checkpoints)
    loop = "gradient"

    trainer_defaults: dict = {}

    def fit_options(self, model: Any) -> tuple[str, ...]:
        return super().fit_options(model) + TRAINER_OPTIONS

    def trainer_options(self, model: Any, options: dict) -> dict:
        """The trainer options of ``options`` with this method's defaults; any other is refused."""
        check_options(self.engine, {k: v for k, v in options.items() if k not in TRAINER_OPTIONS},
                      self.fit_options(model))
        out = {**_DEFAULTS, **self.trainer_defaults, **options}
        if "lr_schedule" in options and "lr_decay" not in options:
            out["lr_decay"] = None  # the method's decay belongs to its default schedule
        return out


# ---- data: length, rows, the validation split, minibatches ------------------------------------

def split(data: Any, validation: Any, seed: int | None) -> tuple[Any, Any]:
    """``(train, val)``: ``validation`` a fraction f holds out ⌊f·N⌋ items drawn with ``seed``
    (none when that is 0 or all of them: ``val`` is None), a data set is the validation set."""
    if validation is None:
        return data, None
    if not isinstance(validation, (int, float)):
        return data, validation
    n = n_items(data)
    n_val = int(math.floor(n * validation))
    if n_val < 1 or n_val >= n:
        return data, None
    perm = torch.randperm(n, generator=seeded_generator(seed))
    return take(data, perm[n_val:]), take(data, perm[:n_val])


class GlobalRows:
    """The rows of a data-parallel fit (`probgen.distributed`) numbered as the one-process
    fit numbers them: ``ids`` (global row numbers, in this view's order) of the ``n`` rows all
    ranks hold together, of which this rank holds ``[offset, offset + n_local)`` in ``data``.
    ``n_items`` / ``take`` see the global rows, so the validation split and the minibatches
    draw exactly the one-process permutations; `local` is this rank's part of a view
    (its rows among ``ids``, in order), which is all a loss ever sees."""

    def __init__(self, data: Any, ctx: Any, ids: torch.Tensor | None = None, offset: int | None = None):
        self.data, self.ctx = data, ctx
        if offset is None:
            sizes = ctx.sizes(n_items(data))
            offset, n = sum(sizes[:ctx.rank]), sum(sizes)
            ids = torch.arange(n)
        self.offset, self.ids = offset, ids
        self.n_local = n_items(data)
        self._local: tuple[Any, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, idx: Any) -> "GlobalRows":
        return self.subset(torch.as_tensor(idx).reshape(-1))

    def subset(self, idx: torch.Tensor) -> "GlobalRows":
        return GlobalRows(self.data, self.ctx, self.ids[idx], self.offset)

    def position(self) -> tuple[int, int]:
        """``(start, n)``: this rank's rows are rows ``[start, start + m)`` of the view's ``n``
        rows taken rank by rank (the rows of lower ranks first) — where a loss that draws noise
        per row of its batch (a GAN's fakes) takes its slice of the ``n`` draws the one-process
        fit makes, so that the ranks' draws together are that fit's."""
        return int((self.ids < self.offset).sum()), len(self.ids)

    def local(self) -> tuple[Any, int]:
        """``(rows, m)``: this rank's ``m`` rows of the view (``rows`` None where m = 0); kept
        (a whole-data view is asked every step)."""
        if self._local is None:
            mine = self.ids[(self.ids >= self.offset) & (self.ids < self.offset + self.n_local)] - self.offset
            self._local = (take(self.data, mine) if len(mine) else None), len(mine)
        return self._local


def moments(x: torch.Tensor, std: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(mean, std)`` over the rows of ``x`` (N, D) — of every rank's rows together in a
    data-parallel fit (`probgen.distributed`: two sums, in float64), else ``x.mean(0)``
    and ``x.std(0)`` (unbiased; ones where N = 1), for a method's data-dependent start.
    ``std=False``: ``(mean, None)``, without the second pass over the data."""
    ctx = distributed.current()
    if ctx is None or ctx.parallel != "data":
        if not std:
            return x.mean(0), None
        return x.mean(0), (x.std(0) if len(x) > 1 else torch.ones(x.shape[1:], dtype=x.dtype))
    d = x.double()
    s = ctx.sum({"n": torch.tensor(float(len(x)), dtype=torch.float64), "sum": d.sum(0)})
    mean = s["sum"] / s["n"]
    if not std:
        return mean.to(x.dtype), None
    sq = ctx.sum({"sq": ((d - mean) ** 2).sum(0)})["sq"]
    std = (sq / (s["n"] - 1)).sqrt() if s["n"] > 1 else torch.ones_like(mean)
    return mean.to(x.dtype), std.to(x.dtype)


#: the bytes of rows `Minibatches.epoch` gathers at once (at least one batch): well inside a
#: core's L2 cache, so that a chunk's batches are read from cache when they are used
GATHER_BYTES = 256 * 1024


class Minibatches:
    """Minibatches of ``data`` over a random permutation, drawn anew each epoch.

    ``whole=False``: each batch has exactly min(batch_size, N) items and a new permutation is
    drawn when fewer than that remain (the rest of the epoch is skipped); ``whole=True``: an
    epoch is every item once, the last batch the remainder (`epoch`). The permutations
    come from ``generator`` (torch's global generator when ``None``, for methods whose own
    sampling, Pyro's, shares that stream). ``batch_size=None``: the whole data every time,
    nothing drawn. ``ctx`` (a data-parallel fit): permutations from torch's global generator
    are rank 0's, broadcast (a seeded generator draws alike on every rank)."""

    def __init__(self, data: Any, batch_size: int | None, generator: torch.Generator | None, whole: bool = False,
                 ctx: Any = None):
        self.data, self.n = data, None if batch_size is None else n_items(data)
        self.batch_size = None if batch_size is None else min(batch_size, self.n)
        self.generator, self.whole, self.ctx = generator, whole, ctx
        self.perm: torch.Tensor | None = None
        self.pos = 0

    def _permutation(self) -> torch.Tensor:
        if self.ctx is not None and self.generator is None:
            return self.ctx.broadcast(torch.randperm(self.n) if self.ctx.rank == 0 else None)
        return torch.randperm(self.n, generator=self.generator)

    def __next__(self) -> Any:
        if self.batch_size is None:
            return self.data
        if self.perm is None or self.pos + self.batch_size > self.n:
            self.perm, self.pos = self._permutation(), 0
        out = take(self.data, self.perm[self.pos:self.pos + self.batch_size])
        self.pos += self.batch_size
        return out

    def epoch(self) -> Iterator[Any]:
        """One pass over every item (``whole=True``), the last batch the remainder."""
        if self.batch_size is None:
            yield self.data
            return
        perm = self._permutation()
        if isinstance(self.data, torch.Tensor):
            # the same batches, gathered a chunk of whole batches (about GATHER_BYTES) at a time
            # and handed out as views: few gather calls where rows are small, and each chunk still
            # in cache when its batches are used, where a gather of the whole data writes it out
            # and reads it back from memory (an epoch's gathers and first products of 60,000 x 785
            # float32 rows in batches of 100: 0.46 s whole, 0.38 s in chunks, on one thread)
            batch_bytes = self.batch_size * self.data[:1].numel() * self.data.element_size()
            per = max(1, GATHER_BYTES // max(batch_bytes, 1)) * self.batch_size
            for j in range(0, self.n, per):
                chunk = self.data.index_select(0, perm[j:j + per])
                for i in range(0, chunk.shape[0], self.batch_size):
                    yield chunk[i:i + self.batch_size]
            return
        for i in range(0, self.n, self.batch_size):
            yield take(self.data, perm[i:i + self.batch_size])

    def batches_per_epoch(self) -> int:
        if self.batch_size is None:
            return 1
        return math.ceil(self.n / self.batch_size) if self.whole else max(self.n // self.batch_size, 1)

    def state_dict(self) -> dict:
        return {"perm": None if self.perm is None else self.perm.clone(), "pos": self.pos,
                "generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.perm, self.pos = (None if state["perm"] is None else state["perm"].clone()), state["pos"]
        if self.generator is not None:
            self.generator.set_state(state["generator"])


# ---- what a method supplies -------------------------------------------------------------------

@dataclass
class Update:
    """One optimiser and the loss it descends.

    ``loss(batch)`` returns the loss (a 0-d tensor, per example) or ``(loss, record)`` with
    ``record`` the history entries of this update (floats); without a record the loss is
    recorded under ``key``. ``batch`` is the next minibatch, or ``None`` for an update that
    takes none (``takes_batch=False``: a GAN's generator step). ``backward=False``: the loss
    function computes the gradients itself (Pyro's ``loss_and_grads``) and returns a float —
    or ``None`` (with a record, or ``(None, {})``) for a gradient that is no loss's, such as
    contrastive divergence's difference of positive and negative statistics.
    ``optim``/``optim_args``: this update's optimiser (``None``: the trainer's ``optim``) and
    the keywords it is built with besides ``lr``. ``params``: ``{name: tensor}`` or a function giving it, read after the first loss (Pyro
    creates its parameters on the first call). ``repeats``: optimiser steps of this update per
    trainer step (a critic's n_critic), each on a fresh minibatch. ``reduce``: what the loss
    is of its batch, for a data-parallel fit (`probgen.distributed`): ``"mean"`` (per
    example: each rank's gradients and record are weighted by its share of the batch's rows)
    or ``"sum"`` (this rank's additive share of the global batch's loss: summed as they are)."""
    loss: Callable[[Any], Any]
    params: dict[str, torch.Tensor] | Callable[[], dict[str, torch.Tensor]]
    key: str = "loss"
    optim: Any = None  # None: the trainer's ``optim``
    optim_args: dict = field(default_factory=dict)
    repeats: int = 1
    takes_batch: bool = True
    backward: bool = True
    reduce: str = "mean"


class _Schedule:
    """The learning rate of one optimiser over its ``total`` steps (`SCHEDULES`)."""

    def __init__(self, kind: str | None, lr: float, decay: float | None, total: int):
        self.kind, self.lr, self.decay, self.total = kind, lr, decay, max(total, 1)
        self.gamma = decay ** (1 / self.total) if kind == "exponential" else None

    def apply(self, opt: torch.optim.Optimizer, t: int) -> None:
        """Set the learning rate of optimiser step ``t`` (from 0) before it is taken."""
        if self.kind is None:
            return
        for group in opt.param_groups:
            if self.kind == "exponential":  # recursive, as ClippedAdam's lrd and torch's ExponentialLR
                group["lr"] = group["lr"] * self.gamma
            elif self.kind == "cosine":
                end = self.lr * self.decay
                group["lr"] = end + 0.5 * (self.lr - end) * (1 + math.cos(math.pi * t / max(self.total - 1, 1)))
            else:
                group["lr"] = self.lr * self.decay ** (min(4 * t // self.total, 3) / 3)


def session(*, resume: dict | None = None, every: int | None = None,
            save: Callable[[dict], None] | None = None) -> contextlib.AbstractContextManager:
    """Within the block, the trainer a fit runs starts from ``resume`` (a
    `Trainer.state_dict`) and calls ``save(state_dict)`` after every ``every`` steps and
    at the end: an in-memory checkpoint (`probgen.checkpoint.Hook`), the same seam
    ``pg.fit(checkpoint=...)`` and ``pg.resume`` use with a file."""
    return checkpoint.activate(checkpoint.Hook(resume=resume, every=every, save=save))


# ---- the trainer -------------------------------------------------------------------------------

class Trainer:
    """Runs ``steps`` steps of ``updates`` on ``data`` (see the module docstring for the options).

    ``unit="step"``: a step applies every update once (``repeats`` times) to minibatches of
    exactly ``batch_size`` items; ``"epoch"``: a step is a pass over the training split, every
    update applied to each minibatch, the record the batch-size-weighted mean of its losses (and
    its ``"seconds"``). ``validate(val) -> float`` gives the objective on the validation data
    (lower is better unless ``maximise``); it is scored after every pass over the training split
    with the averaged weights when ``ema`` is on. ``shuffle``: ``"seeded"`` (a generator from
    ``seed``) or ``"global"`` (torch's global generator; see `Minibatches`).
    A ``torch.Generator`` as ``shuffle``: the permutations come from that stream (a method
    whose own draws share it, as contrastive divergence's Gibbs chains do).
    ``generators`` / ``tensors``: the method's own random generators and mutable tensors (a
    replay buffer, persistent Markov chains), saved and restored with the trainer's state.
    ``measure() -> dict``: entries the method adds to each step's record after its training
    (before validation), e.g. a training metric scored once per epoch. ``tol``: stop when the
    objective's relative change is below it (`probgen.registry.converged`).

    After `run`, the parameter tensors hold the fit's parameters: the best validation's,
    else the weight average, else the last iterate."""

    def __init__(self, updates: list[Update], data: Any, *, steps: int, seed: int | None, batch_size: int | None,
                 lr: float, optim: Any = "adam", lr_schedule: str | None = None, lr_decay: float | None = None,
                 clip_grad: float | None = None, ema: float | None = None, validation: Any = None,
                 patience: int | None = None, validate: Callable[[Any], float] | None = None,
                 objective: str = "loss", maximise: bool = False, callback: Callable | None = None,
                 progress: bool = True, desc: str = "train", unit: str = "step", shuffle: str = "seeded",
                 generators: dict[str, torch.Generator] | None = None, tensors: dict[str, torch.Tensor] | None = None,
                 tol: float | None = None, check: Callable[[Any], Any] | None = None,
                 measure: Callable[[], dict] | None = None):
        lr_decay = check_trainer_options(lr=lr, optim=optim, lr_schedule=lr_schedule, lr_decay=lr_decay,
                                         clip_grad=clip_grad, ema=ema, validation=validation, patience=patience,
                                         callback=callback, batch_size=batch_size, batch_size_optional=True)
        updates = [u if u.optim is not None else copy.copy(u) for u in updates]
        for u in updates:
            if u.optim is None:
                u.optim = optim
            optimiser_class(u.optim)
        check_tol(tol)
        if unit not in ("step", "epoch"):
            raise ValueError(f"unit must be 'step' or 'epoch', got {unit!r}")
        if validation is not None and not isinstance(validation, (int, float)) and check is not None:
            validation = check(validation)
        # data-parallel (probgen.distributed): the rows are numbered globally, so that the split
        # and every minibatch are the one-process fit's; each rank computes on its rows of them
        self.ctx = ctx = distributed.current()
        if ctx is not None and ctx.parallel != "data":
            self.ctx = ctx = None
        self.rows_at: tuple[int, int] | None = None  # this rank's rows in the batch (rows_of)
        if ctx is not None:
            data = GlobalRows(data, ctx)
            if data.n_local == 0:
                raise ValueError(f"{desc}: rank {ctx.rank} has no rows of the data ({len(data)} rows over "
                                 f"{ctx.world_size} ranks): use fewer ranks or distributed=False")
            if validation is not None and not isinstance(validation, (int, float)):
                validation = GlobalRows(ctx.shard(validation), ctx)
            if shuffle == "global" and ctx.rank:
                # torch's global stream then feeds only this rank's per-row noise (a VAE's ε):
                # independent of rank 0's, which draws the permutations (broadcast)
                torch.manual_seed(chain_seed(0 if seed is None else seed, ctx.rank))
        train, val = split(data, validation, seed)
        if val is not None and validate is None:
            raise ValueError(f"{desc} has no validation objective: pass validation=None")
        if patience is not None and validation is None:
            raise ValueError("patience stops on the validation objective: pass validation= a fraction or a data set too")
        self.updates, self.train, self.val = updates, train, val
        self._validation = validation
        self.steps, self.seed, self.lr = steps, seed, lr
        self.schedule = (lr_schedule, lr_decay)
        self.clip_grad, self.ema, self.patience = clip_grad, ema, patience
        self.validate, self.objective, self.maximise = validate, objective, maximise
        self.callback, self.progress, self.desc, self.unit, self.tol = callback, progress, desc, unit, tol
        if isinstance(shuffle, torch.Generator):
            stream = shuffle
        elif shuffle in ("seeded", "global"):
            stream = seeded_generator(seed) if shuffle == "seeded" else None
        else:
            raise ValueError(f"shuffle must be 'seeded', 'global' or a torch.Generator, got {shuffle!r}")
        self.batches = Minibatches(train, batch_size, stream, whole=unit == "epoch", ctx=ctx)
        self.measure = measure
        self.generators, self.tensors = dict(generators or {}), dict(tensors or {})
        per_step = self.batches.batches_per_epoch() if unit == "epoch" else 1
        self.validate_every = 1 if unit == "epoch" else self.batches.batches_per_epoch()
        self._totals = [steps * per_step * u.repeats for u in updates]
        self.optimisers: list[torch.optim.Optimizer | None] = [None] * len(updates)
        self._schedules: list[_Schedule | None] = [None] * len(updates)
        self._params: list[dict[str, torch.Tensor] | None] = [None] * len(updates)
        self._opt_steps = [0] * len(updates)
        # what the hot path of a step checks, decided once
        self._line_search = [issubclass(optimiser_class(u.optim), torch.optim.LBFGS) for u in updates]
        self._hooks = ctx is not None or clip_grad is not None or lr_schedule is not None
        self._lists: list[list[torch.Tensor] | None] = [None] * len(updates)  # the loop's hot path reads these
        self._merged: dict[str, torch.Tensor] | None = None
        for i, u in enumerate(updates):
            if not callable(u.params):
                self._build(i)
        self.history: list[dict] = []
        self.step = 0
        self.best, self.best_step, self.best_params, self.stale = None, None, None, 0
        self.average: dict[str, torch.Tensor] | None = None
        self._pairs: list | None = None  # (average, parameter) tensors
        self.n_averaged = 0
        self.converged = False
        self.stopped = False  # by the callback or early stopping

    # -- parameters and optimisers --
    def _build(self, i: int) -> None:
        u = self.updates[i]
        params, seen = {}, set()
        for k, v in (u.params() if callable(u.params) else u.params).items():
            if id(v) not in seen:  # one tensor under two names (a module registered twice) is stepped once
                seen.add(id(v))
                params[k] = v
        if not params:
            raise ValueError(f"{self.desc}: an update has no parameters to train")
        if self.ctx is not None:  # every rank starts from rank 0's values
            values = self.ctx.broadcast({k: v.detach().cpu() for k, v in params.items()})
            _copy_into(params, values)
        self._params[i] = params
        self._lists[i] = list(params.values())
        self._merged = None
        cls = optimiser_class(u.optim)
        self.optimisers[i] = cls(list(params.values()), lr=self.lr, **u.optim_args)
        self._schedules[i] = _Schedule(self.schedule[0], self.lr, self.schedule[1], self._totals[i])

    def options(self) -> dict:
        """The trainer options of the run as plain data (for ``fit.options``)."""
        optim = self.updates[0].optim
        validation = self._validation
        return {"optim": optim if isinstance(optim, str) else getattr(optim, "__name__", str(optim)),
                "lr_schedule": self.schedule[0], "lr_decay": self.schedule[1], "clip_grad": self.clip_grad,
                "ema": self.ema, "patience": self.patience,
                "validation": validation if validation is None or isinstance(validation, (int, float)) else "data"}

    def train_rows(self) -> Any:
        """This rank's rows of the training split (the whole split in a local fit)."""
        return self.train if self.ctx is None else self.train.local()[0]

    def fit_state(self) -> dict:
        """What a fit keeps of the run: the best validation objective and its step, where validated."""
        if self.val is None:
            return {}
        return {f"best_val_{self.objective}": self.best, "best_step": self.best_step}

    def params(self) -> dict[str, torch.Tensor]:
        """Every trained parameter tensor by name (the updates' together)."""
        if self._merged is not None:
            return self._merged
        out: dict[str, torch.Tensor] = {}
        for p in self._params:
            for k, v in (p or {}).items():
                if k in out and out[k] is not v:
                    raise ValueError(f"{self.desc}: two updates name different parameters {k!r}")
                out[k] = v
        if all(p is not None for p in self._params):
            self._merged = out
        return out

    # -- one optimiser step --
    def _apply(self, i: int, batch: Any) -> tuple[float, dict]:
        u, opt = self.updates[i], self.optimisers[i]
        weight = 1.0
        if self.ctx is not None:
            batch, weight = self._local(u, batch)
        if self._line_search[i]:
            return self._apply_line_search(i, u, opt, batch, weight)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        out = u.loss(batch)
        loss, record = out if isinstance(out, tuple) else (out, None)
        if loss is None:  # a method-computed gradient with no loss value (contrastive divergence)
            value = 0.0
            if record is None:
                record = {}
        else:
            value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
            if record is None:
                record = {u.key: value}
        if u.backward:
            loss.backward()
        if opt is None:  # parameters created by the first loss (a Pyro param store)
            self._build(i)
            opt = self.optimisers[i]
        if self._hooks:  # clipping, the schedule and the step see the global batch's gradient
            if self.ctx is not None:
                value, record = self._reduce(i, value, record, weight)
            self._clip(i)
            self._schedules[i].apply(opt, self._opt_steps[i])
        opt.step()
        self._opt_steps[i] += 1
        return value, record

    def _apply_line_search(self, i: int, u: Update, opt: Any, batch: Any, weight: float) -> tuple[float, dict]:
        """One step of an optimiser whose line search evaluates the loss again (LBFGS)."""
        first: dict = {}

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss, rec = _as_record(u.loss(batch), u.key)
            loss.backward()
            if self.ctx is not None:
                value, rec = self._reduce(i, float(loss.detach()), rec, weight)
                loss = torch.tensor(value)
            self._clip(i)
            if not first:  # the record is of the step's start, as the value LBFGS returns
                first.update(rec)
            return loss

        self._schedules[i].apply(opt, self._opt_steps[i])
        value = float(opt.step(closure).detach())
        self._opt_steps[i] += 1
        return value, first

    def _local(self, u: Update, batch: Any) -> tuple[Any, float]:
        """This rank's rows of the global ``batch`` (a `GlobalRows` view) and the weight
        of its gradients and record in the batch's: its share m / B of the rows for a per-example
        loss (``reduce="mean"``), 1 for a rank's share of a sum, 1 / world for an update that
        takes no batch (every rank computes it alike). A rank with no rows in the batch computes
        the loss on one row of its own with weight 0 (it still takes part in the sum)."""
        if not u.takes_batch:  # a "sum" share: the loss splits its own draws (rank_block)
            return batch, 1.0 if u.reduce == "sum" else 1.0 / self.ctx.world_size
        rows, m = batch.local()
        if m == 0:
            self.rows_at = (0, len(batch))
            return take(batch.data, torch.arange(1)), 0.0
        self.rows_at = batch.position()
        return rows, (m / len(batch) if u.reduce == "mean" else 1.0)

    def rows_of(self, n: int) -> tuple[int, int]:
        """``(start, total)``: where the ``n`` rows a loss was given sit among the rows of the
        global batch (`GlobalRows.position`) — ``(0, n)`` in a local fit. A loss that
        draws noise per row draws ``total`` and keeps ``[start, start + n)``."""
        return (0, n) if self.ctx is None or self.rows_at is None else self.rows_at

    def rank_block(self, n: int) -> tuple[int, int]:
        """``[start, stop)``: this rank's contiguous block of ``n`` draws an update makes on
        its own (a GAN generator step's ``n`` latent draws; the whole ``(0, n)`` locally)."""
        return (0, n) if self.ctx is None else self.ctx.block(n)

    def _reduce(self, i: int, value: float, record: dict, weight: float) -> tuple[float, dict]:
        """Sum update ``i``'s gradients (and its loss and record), each rank's times its
        ``weight``, over the ranks in ONE all-reduce of a flat buffer, DistributedDataParallel's
        scheme (Li et al. 2020): the step then equals the one-process step on the global batch,
        to float round-off (the order of the summation differs), on every rank alike."""
        params = self._lists[i]
        dtype = params[0].dtype
        parts = {f"g{j}": (p.grad if p.grad is not None else torch.zeros_like(p)) * weight
                 for j, p in enumerate(params)}
        parts.update({f"r{j}": torch.tensor(float(v) * weight, dtype=dtype) for j, v in enumerate(record.values())})
        parts["value"] = torch.tensor(float(value) * weight, dtype=dtype)
        out = self.ctx.sum(parts)
        for j, p in enumerate(params):
            p.grad = out[f"g{j}"]
        return float(out["value"]), {k: float(out[f"r{j}"]) for j, k in enumerate(record)}

    def _clip(self, i: int) -> None:
        if self.clip_grad is not None and self._lists[i] is not None:
            torch.nn.utils.clip_grad_norm_(self._lists[i], self.clip_grad)

    def _inner(self) -> dict:
        """Every update once (``repeats`` times): the step's record."""
        record = {}
        for i, u in enumerate(self.updates):
            for _ in range(u.repeats):
                batch = next(self.batches) if u.takes_batch else None
                value, rec = self._apply(i, batch)
                if not math.isfinite(value):
                    raise ValueError(f"the {u.key} became non-finite at step {self.step} ({self.desc}); try a smaller lr")
                record.update(rec)
        if self.ema is not None:  # (a no_grad call costs ~15 µs even when it returns at once)
            self._average()
        return record

    def _epoch(self) -> dict:
        totals: dict[str, float] = {}
        n = 0
        apply, updates = self._apply, list(enumerate(self.updates))
        for batch in self.batches.epoch():
            record = {}
            for i, u in updates:
                value, rec = apply(i, batch)
                record.update(rec)
                if not math.isfinite(value):
                    raise ValueError(f"the {u.key} became non-finite in epoch {self.step} ({self.desc}); "
                                     "try a smaller lr")
            if self.ema is not None:  # (a no_grad call costs ~15 µs even when it returns at once)
                self._average()
            m = n_items(batch)
            for k, v in record.items():
                totals[k] = totals.get(k, 0.0) + v * m
            n += m
        return {k: v / n for k, v in totals.items()}

    # -- weight average --
    @torch.no_grad()
    def _average(self) -> None:
        if self.ema is None:
            return
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in self.params().items()}
        if self._pairs is None:
            params = self.params()
            self._pairs = [(a, params[k]) for k, a in self.average.items()]
        self.n_averaged += 1
        d = min(self.ema, (self.n_averaged - 1) / (self.n_averaged + 9))
        for a, p in self._pairs:
            a.lerp_(p, 1.0 - d)

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """The parameters hold the weight average inside the block (the iterates after it)."""
        if self.average is None:
            yield
            return
        params = self.params()
        saved = {k: v.detach().clone() for k, v in params.items()}
        _copy_into(params, self.average)
        try:
            yield
        finally:
            _copy_into(params, saved)

    # -- validation --
    def _validate(self, record: dict) -> bool:
        """Score the validation data; True when patience has run out."""
        # not in a forked random state: a method whose validation samples from torch's global
        # generator (Pyro's ELBO) draws from the training stream, as it always has
        with self.averaged():
            value = self._score(self.val)
        record[f"val_{self.objective}"] = value
        if not math.isfinite(value):
            better = False
        else:
            better = self.best is None or (value > self.best if self.maximise else value < self.best)
        if better:
            self.best, self.best_step, self.stale = value, self.step, 0
            with self.averaged():
                self.best_params = {k: v.detach().clone() for k, v in self.params().items()}
            return False
        self.stale += 1
        return self.patience is not None and self.stale >= self.patience

    def _score(self, val: Any) -> float:
        """The validation objective; data-parallel, the rows-weighted mean of the ranks' (the
        objective per example on all the validation rows), the same on every rank."""
        if self.ctx is None:
            return float(self.validate(val))
        rows, m = val.local()
        value = float(self.validate(rows)) if m else 0.0
        out = self.ctx.sum({"v": torch.tensor(value * m, dtype=torch.float64),
                            "m": torch.tensor(float(m), dtype=torch.float64)})
        return float(out["v"] / out["m"])

    # -- the loop --
    def run(self) -> "Trainer":
        """Run to the budget (or early stop, convergence or the callback), from the state the
        active checkpoint resumes (`probgen.checkpoint.active`), writing it every
        ``checkpoint_every`` steps and at the end; leaves the fit's parameters in place."""
        ck = checkpoint.active()
        saved = ck.start() if ck is not None else None
        if saved is not None:
            self.load_state_dict(saved)
        last = self.history[-1].get(self.objective) if self.history else None
        first = self.steps if self.stopped or self.converged else self.step  # a finished run stays finished
        steps = bar(range(first, self.steps), total=self.steps, initial=self.step, desc=self.desc,
                    enabled=self.progress)
        for _ in steps:
            start = time.perf_counter()
            if self.unit == "epoch":
                record = {"step": self.step, **self._epoch()}
            else:
                record = {"step": self.step, **self._inner()}
            if self.measure is not None:
                record.update(self.measure())
            stop = False
            if self.val is not None and ((self.step + 1) % self.validate_every == 0 or self.step + 1 == self.steps):
                stop = self._validate(record)
            if self.unit == "epoch":
                record["seconds"] = time.perf_counter() - start
                if hasattr(steps, "set_postfix"):
                    steps.set_postfix({k: round(v, 3) for k, v in record.items() if k != "step"})
            self.history.append(record)
            self.step += 1
            value = record.get(self.objective)
            if converged(last, value, self.tol):
                self.converged = True
                stop = True
            last = value
            if self.callback is not None:
                verdict = self.callback(record) is True  # called on every rank, with the same record
                if self.ctx is not None:  # rank 0's verdict is every rank's
                    verdict = self.ctx.broadcast(verdict)
                if verdict:
                    stop = True
            if stop:
                self.stopped = not self.converged
            if stop:
                break
            if ck is not None and self.step < self.steps:
                ck.step(self.step, self.state_dict)
        if ck is not None:  # the end: before the best / averaged weights are put in place
            ck.save(self.state_dict())
        self._finish()
        return self

    @torch.no_grad()
    def _finish(self) -> None:
        if self.best_params is not None:  # the best validation (averaged weights where ema is on)
            _copy_into(self.params(), self.best_params)
        elif self.average is not None:
            _copy_into(self.params(), self.average)

    # -- state --
    def state_dict(self) -> dict:
        """The whole state as plain data and tensors (copies): parameters, optimiser and
        schedule state, the weight average, minibatch and random-generator states (torch's
        global one, Python's and NumPy's too: Pyro samples from torch's), the method's own
        generators and tensors, history, step and the early-stopping bookkeeping."""
        clone = _clone
        return {
            "step": self.step, "history": copy.deepcopy(self.history),
            "params": {k: clone(v) for k, v in self.params().items()},
            "optimisers": [None if o is None else copy.deepcopy(o.state_dict()) for o in self.optimisers],
            "opt_steps": list(self._opt_steps),
            "average": None if self.average is None else {k: clone(v) for k, v in self.average.items()},
            "n_averaged": self.n_averaged,
            "best": self.best, "best_step": self.best_step, "stale": self.stale,
            "converged": self.converged, "stopped": self.stopped,
            "best_params": None if self.best_params is None else {k: clone(v) for k, v in self.best_params.items()},
            "batches": self.batches.state_dict(),
            "generators": {k: g.get_state() for k, g in self.generators.items()},
            "tensors": {k: clone(v) for k, v in self.tensors.items()},
            "rng": {"torch": torch.get_rng_state(), "python": _random.getstate(), "numpy": _numpy_state()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (`state_dict`): the run then equals the uninterrupted
        one. Parameters a loss creates on its first call are created first (their random
        draws undone: every generator is then set from ``state``)."""
        for i, u in enumerate(self.updates):
            if self.optimisers[i] is None and state["optimisers"][i] is not None:
                if callable(u.params):
                    self._materialise(i)
                self._build(i)
        params = self.params()
        if set(params) != set(state["params"]):
            raise ValueError(f"the state is of other parameters: {sorted(state['params'])}, not {sorted(params)}")
        with torch.no_grad():
            _copy_into(params, state["params"])
            for k, v in self.tensors.items():
                v.copy_(state["tensors"][k])
        for opt, saved in zip(self.optimisers, state["optimisers"]):
            if opt is not None and saved is not None:
                opt.load_state_dict(copy.deepcopy(saved))
        self._opt_steps = list(state["opt_steps"])
        self.average = None if state["average"] is None else {k: _clone(v) for k, v in state["average"].items()}
        self._pairs = None
        self.n_averaged = state["n_averaged"]
        self.best, self.best_step, self.stale = state["best"], state["best_step"], state["stale"]
        self.converged, self.stopped = state.get("converged", False), state.get("stopped", False)
        self.best_params = None if state["best_params"] is None else \
            {k: _clone(v) for k, v in state["best_params"].items()}
        self.batches.load_state_dict(state["batches"])
        for k, g in self.generators.items():
            g.set_state(state["generators"][k])
        self.history, self.step = copy.deepcopy(state["history"]), state["step"]
        torch.set_rng_state(state["rng"]["torch"])
        _random.setstate(state["rng"]["python"])
        _set_numpy_state(state["rng"]["numpy"])

    def _materialise(self, i: int) -> None:
        """Call update ``i``'s loss once on a batch so that it creates its parameters."""
        u = self.updates[i]
        batch = None
        if u.takes_batch:
            size = self.batches.batch_size
            batch = self.train if size is None else take(self.train, torch.arange(size))
        with torch.random.fork_rng(devices=[]):
            loss, _ = _as_record(u.loss(batch), u.key)
            if u.backward:
                loss.backward()
        for p in u.params().values():
            p.grad = None


def _numpy_state() -> dict:
    """NumPy's global generator state as tensors and plain data (``torch.load(weights_only=True)``
    reads it back)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(state: dict) -> None:
    np.random.set_state((state["name"], state["keys"].numpy().astype(np.uint32), state["pos"],
                         state["has_gauss"], state["cached_gaussian"]))


def _as_record(out: Any, key: str) -> tuple[Any, dict]:
    loss, record = out if isinstance(out, tuple) else (out, None)
    if record is None:
        record = {key: float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)}
    return loss, record


def _clone(v: torch.Tensor) -> torch.Tensor:
    return v.detach().clone()


def _copy_into(params: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(values[k])
