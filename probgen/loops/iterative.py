"""The one driver of iterative methods: EM, coordinate-ascent VI (CAVI) and other
fixed-point updates.

The split is the template method of scikit-learn's ``BaseMixture`` (the loop in the base
class, the steps in the subclass): a method supplies an `Iteration` — how to start
one restart (`Iteration.start`) and one step (`Iteration.step`: an E-step and
an M-step, or one CAVI sweep, returning the new state and the objective) — and
`run` owns everything around it:

* ``steps``, the iteration budget of each restart;
* ``tol``, the one stopping rule `probgen.registry.converged` on the per-example
  objective (``None`` or 0: run every step);
* ``n_init`` restarts from independent seeds derived from ``seed``
  (`restart_seeds`); the restart with the best final objective wins
  (``fit.state["best_init"]``);
* ``fit.state["converged"]`` (`probgen.Fit.converged`) and a
  `ConvergenceWarning` when the budget ends before ``tol`` is met;
* the history (one record per step: ``"step"``, the objective, the step's extra values),
  the progress bar and the user's ``callback``;
* under ``torch.distributed`` (`probgen.distributed`), the data-parallel step of a
  `DataParallel` iteration: rank 0's start on every rank, then each step's
  sufficient statistics summed over the ranks in one ``all_reduce`` before the M-step;
* all the loop's state in one `Loop`, which `run` can start from (``start=``)
  and reports after every step (``on_step=``): the seam for checkpoints.

The objective is maximised (a log-likelihood, an ELBO), per example, as
``Method.objective`` names it.
Reference: Dempster, Laird & Rubin (1977) for EM; Bishop (2006) §10.1.1 for CAVI;
scikit-learn's ``sklearn.mixture.BaseMixture.fit_predict`` for the loop's shape.
"""
from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Protocol

import torch

from probgen import checkpoint, distributed
from probgen.progress import progress as bar
from probgen.random import seeded
from probgen.registry import check_tol, converged

#: the value of ``Method.loop`` for every method whose fit runs on this driver (the tests
#: find them all in the registry by it)
LOOP = "iterative"


class ConvergenceWarning(UserWarning):
    """An iterative fit used its whole budget (``steps``) before the relative change of its
    objective fell below ``tol``: raise ``steps`` (or ``tol``). Not raised for ``tol=None``
    or 0 (which ask for every step) nor when a ``callback`` stopped the fit. A ``UserWarning``;
    the fit is still returned, with ``fit.converged`` False.

    Examples:
        >>> import warnings
        >>> import torch
        >>> import probgen as pg
        >>> from probgen.models import GaussianMixture
        >>> x = torch.randn(60, 2, generator=torch.Generator().manual_seed(0)).double()
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     fit = pg.fit(GaussianMixture(3, 2), x, steps=2, seed=0, progress=False)
        >>> [w.category.__name__ for w in caught], fit.converged
        (['ConvergenceWarning'], False)
    """


class Update(NamedTuple):
    """What one step returns: the method's new ``state``, the ``objective`` (a float, per
    example) of the step, and any ``extras`` for the step's history record."""
    state: Any
    objective: float
    extras: dict | None = None


class Iteration(Protocol):
    """What a method supplies to `run`: a start and a step. The state is the method's
    own (a dict of parameters, the variational factors, ...); the driver never looks inside."""

    def start(self, seed: int | None) -> Any:
        """The state a restart starts from; ``seed`` is the restart's (`restart_seeds`).
        Nothing `step` needs may be set up here only: a resumed fit (``pg.resume``)
        continues from its saved state without calling ``start``."""

    def step(self, state: Any) -> Update:
        """One iteration from ``state``: for EM the E-step (whose log-likelihood, at the
        parameters it saw, is the objective) then the M-step; for CAVI one sweep."""


class DataParallel(Iteration, Protocol):
    """An `Iteration` that also runs data-parallel (`probgen.distributed`): its
    step split at the one place the ranks meet — `statistics` on this rank's rows, summed
    over the ranks by the driver in one ``all_reduce``, then `update` (the M-step, the
    same on every rank). ``update(state, statistics(state))`` on one process is `step`
    (to float round-off).

    Only global quantities travel: per-example local factors (LDA's document factors γ) stay
    on their rank — `statistics` may keep them on the iteration for the `update`
    that follows it (the state then holds this rank's own). An objective that needs the
    summed statistics first (LDA's ELBO at the new topics) may be summed by `update`
    itself with ``probgen.distributed.current().sum`` — a second ``all_reduce``, of a scalar."""

    def statistics(self, state: Any) -> dict[str, torch.Tensor]:
        """The E-step's sufficient statistics on this rank's data — sums over its examples
        (responsibility-weighted counts and moments, expected counts, the log-likelihood and
        the number of examples the objective is per)."""

    def update(self, state: Any, statistics: dict[str, torch.Tensor]) -> Update:
        """The M-step from the statistics summed over every rank, and the step's objective."""


class Restart(NamedTuple):
    """A finished restart: its index, final state, history and whether ``tol`` was met."""
    index: int
    state: Any
    history: list
    converged: bool


@dataclass
class Loop:
    """Everything the loop holds between two steps, in one place (what a checkpoint saves;
    `run` continues from one with ``start=``).

    ``seeds``: one per restart (`restart_seeds`); ``restart``: the restart running;
    ``step``: the next step of that restart; ``state``: its state (``None``: not started
    yet); ``history``: its records so far; ``best``: the best finished restart (or ``None``);
    ``converged`` / ``stopped``: the running restart met ``tol`` / a callback stopped the fit.
    """
    seeds: list
    restart: int = 0
    step: int = 0
    state: Any = None
    history: list = field(default_factory=list)
    best: Restart | None = None
    converged: bool = False
    stopped: bool = False

    def to_plain(self) -> dict:
        """The loop as a dict of plain data and tensors (what a checkpoint writes)."""
        best = None if self.best is None else dict(self.best._asdict())
        return {"seeds": list(self.seeds), "restart": self.restart, "step": self.step, "state": self.state,
                "history": self.history, "best": best, "converged": self.converged, "stopped": self.stopped}

    @classmethod
    def from_plain(cls, d: dict) -> "Loop":
        """The inverse of `to_plain`."""
        best = None if d["best"] is None else Restart(**d["best"])
        return cls(seeds=list(d["seeds"]), restart=d["restart"], step=d["step"], state=d["state"],
                   history=list(d["history"]), best=best, converged=d["converged"], stopped=d["stopped"])


@dataclass
class Result:
    """What `run` returns: the winning restart's ``state``, ``history``, whether it
    ``converged``, its index ``best_init``, and whether a callback ``stopped`` the fit."""
    state: Any
    history: list
    converged: bool
    best_init: int
    stopped: bool

    def fit_state(self) -> dict:
        """The entries every fit made by this driver has in ``fit.state``."""
        return {"converged": self.converged, "best_init": self.best_init}


def restart_seeds(seed: int | None, n_init: int) -> list[int | None]:
    """The seeds of ``n_init`` restarts: the first is ``seed`` itself (so ``n_init=1`` is
    the fit seeded by ``seed``), the others independent draws from a generator seeded by
    ``seed`` (from torch's global generator when ``seed`` is ``None``)."""
    if n_init == 1:
        return [seed]
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    drawn = torch.randint(0, 2**31 - 1, (n_init,), generator=g, device="cpu").tolist()  # a CPU stream, whatever device= is
    return [seed] + drawn[1:]


def check_n_init(n_init: Any) -> int:
    if isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 1:
        raise ValueError(f"n_init must be a positive integer, got {n_init!r}")
    return n_init


def check_callback(callback: Any) -> Callable[[dict], Any] | None:
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be a function of a history record (or None), got {type(callback).__name__}")
    return callback


def run(iteration: Iteration, *, objective: str, steps: int, tol: float | None, seed: int | None,
        n_init: int = 1, progress: bool = True, callback: Callable[[dict], Any] | None = None,
        desc: str = "", start: Loop | None = None, on_step: Callable[[Loop], None] | None = None) -> Result:
    """Run ``iteration`` for up to ``steps`` steps per restart, ``n_init`` restarts.

    Args:
      iteration: the method's `Iteration`.
      objective: the history key of the objective (``Method.objective``), maximised.
      steps: the budget of each restart; ``tol``: stop a restart when
        `probgen.registry.converged` holds (``None`` or 0: every step).
      seed, n_init: restart ``r`` starts from ``iteration.start(restart_seeds(seed, n_init)[r])``;
        restarts after the first run their start with all random generators seeded by
        their seed (`probgen.random.seeded`), as a fit with that seed would. The
        winner has the highest final objective (the earliest on a tie).
      progress: show a bar; ``desc`` labels it.
      callback: called after every step with the step's history record (the running
        restart's: ``"step"`` counts from 0 in each restart); if it returns ``True`` the
        fit stops there — no further steps nor restarts, ``converged`` False, no warning —
        and the best restart so far (the stopped one included) wins.
      start: a `Loop` to continue, else the active checkpoint's
        (`probgen.checkpoint.active`, on ``pg.resume``), else a fresh one; the active
        checkpoint is written every ``checkpoint_every`` steps of a restart and at the end.
      on_step: called with the `Loop` after every step.
    Returns: a `Result`; warns `ConvergenceWarning` when the winning restart
    ran all ``steps`` (> 0) without meeting ``tol`` (> 0).
    """
    check_tol(tol)
    check_n_init(n_init)
    check_callback(callback)
    ck = checkpoint.active()
    saved = ck.start() if ck is not None and start is None else None
    if saved is not None:
        start = Loop.from_plain(saved)
    loop = start if start is not None else Loop(seeds=restart_seeds(seed, n_init))
    ctx = distributed.current()
    if ctx is not None and not (hasattr(iteration, "statistics") and hasattr(iteration, "update")):
        raise ValueError(f"{desc or 'this iterative fit'} does not run data-parallel (its step is not split "
                         "into statistics and update): pass distributed=False")
    while loop.restart < len(loop.seeds):
        r = loop.restart
        if loop.state is None:
            if r == 0:  # the fit's own seed: pg.fit has seeded the generators with it already
                loop.state = iteration.start(loop.seeds[0])
            else:
                with seeded(loop.seeds[r]):
                    loop.state = iteration.start(loop.seeds[r])
            if ctx is not None:  # rank 0's start (from its rows) is every rank's
                loop.state = ctx.broadcast(loop.state)
        label = desc if len(loop.seeds) == 1 else f"{desc} (init {r + 1}/{len(loop.seeds)})"
        history = loop.history
        # a Loop saved at the step that met tol (or that a callback stopped) is finished
        todo = range(steps if loop.converged or loop.stopped else loop.step, steps)
        for it in bar(todo, total=steps, initial=loop.step, desc=label, enabled=progress):
            update = iteration.step(loop.state) if ctx is None else \
                iteration.update(loop.state, ctx.sum(iteration.statistics(loop.state)))
            loop.state = update.state
            record = {"step": it, objective: update.objective}
            if update.extras:
                record.update(update.extras)
            prev = history[-1][objective] if history else None
            history.append(record)
            loop.step = it + 1
            loop.converged = converged(prev, update.objective, tol)
            if callback is not None and callback(record) is True:
                loop.stopped, loop.converged = True, False
            if on_step is not None:
                on_step(loop)
            if loop.converged or loop.stopped:
                break
            if ck is not None:  # only while the restart goes on: a saved loop never holds a finished one
                ck.step(loop.step, loop.to_plain)
        final = Restart(r, loop.state, history, loop.converged)
        if loop.best is None or _final(final, objective) > _final(loop.best, objective):
            loop.best = final
        if loop.stopped:
            break
        loop.restart, loop.step, loop.state, loop.history, loop.converged = r + 1, 0, None, [], False
    if ck is not None:
        ck.save(loop.to_plain())
    best = loop.best
    if tol and steps > 0 and not best.converged and not loop.stopped:
        last = [r[objective] for r in best.history[-2:]]
        change = (f" (last relative change of {objective}: "
                  f"{abs(last[1] - last[0]) / max(abs(last[0]), sys.float_info.min):.3g})" if len(last) == 2 else "")
        which = f"the best of {len(loop.seeds)} restarts" if len(loop.seeds) > 1 else "the fit"
        warnings.warn(f"{desc or 'iterative fit'}: {which} ran all {steps} steps without reaching "
                      f"tol={tol:g}{change}; raise steps or tol",
                      ConvergenceWarning, stacklevel=5)
    return Result(best.state, best.history, best.converged, best.index, loop.stopped)


def step_size(t: int, t0: float, kappa: float) -> float:
    """The Robbins–Monro step ρ_t = (t + t0)^−κ of update ``t`` = 1, 2, … of a stochastic
    fixed-point method: online EM's blend of sufficient statistics (Cappé & Moulines 2009)
    and online VB's of λ (Hoffman, Blei & Bach 2010, with τ0 = ``t0``). κ ∈ (0.5, 1] makes
    Σ ρ_t = ∞ and Σ ρ_t² < ∞ (`check_step_size`); ``t0`` ≥ 0 damps the early steps."""
    return float((t + t0) ** (-kappa))


def check_step_size(t0: Any, kappa: Any, t0_name: str = "t0") -> tuple[float, float]:
    """``(t0, kappa)`` of `step_size`, checked: κ ∈ (0.5, 1] and ``t0`` ≥ 0, numbers."""
    for name, v in ((t0_name, t0), ("kappa", kappa)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must be a number, got {v!r}")
    if not 0.5 < kappa <= 1 or t0 < 0:
        raise ValueError(f"need kappa in (0.5, 1] and {t0_name} >= 0 (steps rho_t = ({t0_name} + t)^-kappa), "
                         f"got kappa={kappa}, {t0_name}={t0}")
    return float(t0), float(kappa)


def _final(restart: Restart, objective: str) -> float:
    return restart.history[-1][objective] if restart.history else -math.inf
