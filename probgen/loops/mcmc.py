"""The one MCMC driver: a *kernel* is one Markov transition; `run` owns the rest.

The split follows NumPyro's ``MCMCKernel`` / ``MCMC`` (Phan, Pradhan & Jankowiak 2019):
a kernel knows how to start a chain (`Kernel.init`), how to move it one transition
(`Kernel.step`) and what to record of a state (`Kernel.draw`: the sampled
sites; `Kernel.stats`: the sample statistics). The driver owns the budget —
``warmup`` transitions discarded, then ``steps`` transitions of which every ``thin``-th is
kept — ``num_chains`` chains, the seeds, the progress bar, the history, the ``callback``,
and returns the kept draws shaped ``(chain, draw, ...)``.

Chains: a kernel with ``vectorised = True`` carries a leading chain axis in its state and
moves all chains in one call; any other kernel's chains run one after another. Either way
chain ``c`` is seeded from ``seed`` alone (`chain_seed`): chain 0 with ``seed`` itself
(so one chain is exactly the single-chain run), chain ``c > 0`` with an independent seed
derived from ``(seed, c)``; a kernel that draws from torch's global generator (NUTS) runs
chain ``c > 0`` under `probgen.random.seeded` of that seed, and chain 0 in the stream
the caller seeded.

History: one record per chain and transition the kernel asks to record — every transition
(``record_warmup = True``: each record has ``"warmup"``) or only the kept draws; none for a
kernel without statistics — with
``"step"`` (the record's position in the history), ``"chain"`` and the kernel's
`Kernel.stats`. ``callback(record)`` is called after each record; ``True`` stops the
run there (the chains are cut to the draws every started chain has).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import torch

from probgen import distributed
from probgen.progress import progress as bar
from probgen.random import seeded

__all__ = ["Kernel", "Chains", "run", "chain_seed", "check_budget"]


class Kernel:
    """One Markov transition. Subclasses define `init`, `step`, `draw`,
    `stats`.

    ``vectorised``: ``init`` gets every chain's seed and returns one state with a leading
    chain axis; ``draw`` then returns ``(chain, ...)`` tensors and ``stats`` a dict of
    per-chain sequences. A kernel whose ``stats`` are empty records no history (a sampler
    of many chains run for its last state, say). ``record_warmup``: history records for
    warm-up transitions too.
    ``averaged``: sites of `draw` that are only averaged over the kept draws (summed
    in the driver, in draw order) instead of stored (large per-draw estimates)."""

    vectorised: bool = False
    record_warmup: bool = False
    averaged: tuple[str, ...] = ()
    name: str = "mcmc"

    def init(self, seed: Any, chain: Any, warmup: int) -> Any:
        """The starting state of one chain (``seed``, ``chain``: ints) or, vectorised, of all
        (lists); ``warmup``: how many adaptation transitions will follow."""
        raise NotImplementedError

    def step(self, state: Any, warmup: bool) -> Any:
        """The state after one transition (``warmup``: an adaptation transition)."""
        raise NotImplementedError

    def draw(self, state: Any) -> dict[str, torch.Tensor]:
        """The sampled sites of a state to keep (``{}``: none)."""
        return {}

    def stats(self, state: Any) -> dict[str, Any]:
        """The sample statistics of the last transition (a history record's content; vectorised:
        ``{stat: one value per chain}``)."""
        return {}


@dataclass
class Chains:
    """The driver's result. ``draws``: ``{site: (chain, draw, ...)}``; ``stats``:
    ``{stat: (chain, draw)}`` of the kept draws (numeric statistics only); ``sums``: the
    ``averaged`` sites summed over the kept draws, per chain (``(chain, ...)``); ``kept``:
    the number of kept draws, all chains together;
    ``history``; ``states``: the last state of every chain (the vectorised state, or a list);
    ``stopped``: a callback ended the run."""
    draws: dict[str, torch.Tensor]
    stats: dict[str, torch.Tensor]
    history: list[dict]
    states: Any
    sums: dict[str, Any] = field(default_factory=dict)
    kept: int = 0
    stopped: bool = False

    @property
    def num_chains(self) -> int:
        return len(next(iter(self.stats.values()))) if self.stats else 0

    def flat(self) -> dict[str, torch.Tensor]:
        """The draws with chains concatenated: ``{site: (chain * draw, ...)}`` (views)."""
        return {k: v.reshape((-1,) + tuple(v.shape[2:])) for k, v in self.draws.items()}


def chain_seed(seed: int | None, chain: int) -> int | None:
    """The seed of chain ``chain``: ``seed`` itself for chain 0, else an independent integer
    derived from ``(seed, chain)`` (NumPy's ``SeedSequence``); ``None`` stays ``None``."""
    if seed is None or chain == 0:
        return seed
    return int(np.random.SeedSequence([seed, chain]).generate_state(1, np.uint32)[0])


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def set_description(self, desc: str) -> None:
        pass

    def close(self) -> None:
        pass


class _Seeds(Sequence):
    """The chains' seeds, computed when asked for (a vectorised kernel with one generator for
    all its chains reads only the first of, say, 10,000)."""

    def __init__(self, seed: int | None, n: int, start: int = 0):
        self.seed, self.n, self.start = seed, n, start  # the seeds of chains start, ..., start + n - 1

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, c: Any) -> Any:
        if isinstance(c, slice):
            return [self[i] for i in range(*c.indices(self.n))]
        if not -self.n <= c < self.n:
            raise IndexError(c)
        return chain_seed(self.seed, self.start + c % self.n)


def _count(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    return value


def check_budget(steps: int, warmup: int, num_chains: int, thin: int) -> None:
    """``ValueError`` for a budget the driver cannot run."""
    _count("steps", steps, 0)
    _count("warmup", warmup, 0)
    _count("num_chains", num_chains, 1)
    _count("thin", thin, 1)


def run(kernel: Kernel, *, steps: int, warmup: int, num_chains: int = 1, thin: int = 1, seed: int | None = None,
        progress: bool = True, callback: Callable[[dict], Any] | None = None, desc: str | None = None) -> Chains:
    """Run ``num_chains`` chains of ``kernel``: ``warmup`` transitions, then ``steps``
    transitions keeping those at positions 0, thin, 2·thin, … (``ceil(steps / thin)`` draws per
    chain). Returns `Chains`."""
    check_budget(steps, warmup, num_chains, thin)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be a function of the history record, got {type(callback).__name__}")
    ctx = distributed.current()
    if ctx is not None and ctx.parallel == "chains":
        # this rank's contiguous block of the chains, each seeded by its global index; a sampler
        # the kernel runs inside stays local
        lo, hi = ctx.block(num_chains)
        with distributed.active(None):
            mine = _run(kernel, range(lo, hi), steps, warmup, num_chains, thin, seed, progress, callback, desc)
        # the states (live kernels, wrapped methods) stay on their rank: only the results travel
        return _gathered(ctx.gather(replace(mine, states=None)), mine, kernel.vectorised)
    return _run(kernel, range(num_chains), steps, warmup, num_chains, thin, seed, progress, callback, desc)


def _gathered(parts: list["Chains"], mine: "Chains", vectorised: bool) -> "Chains":
    """The ranks' `Chains` (blocks of chains, in rank order) as one: draws, statistics
    and sums concatenated along the chain axis (cut to the draws every chain has, as a
    callback's stop cuts them), histories in the 1-process order (sequential chains one after
    another; vectorised ones transition by transition, chains in order; ``"step"`` renumbered), ``kept``
    summed; ``states`` stay this rank's own."""
    parts = [p for p in parts if p.draws or p.stats or p.sums or p.history]
    if not parts:
        return mine
    length = min((next(iter(p.draws.values())).shape[1] for p in parts if p.draws), default=None)

    def cat(tables: list[dict], cut: bool) -> dict:
        out = {}
        for k in tables[0]:
            vs = [t[k][:, :length] if cut and length is not None else t[k] for t in tables]
            out[k] = torch.cat(vs) if torch.is_tensor(vs[0]) else np.concatenate(vs)
        return out

    records = [r for p in parts for r in p.history]
    if vectorised:  # each rank's records go transition by transition over its block of chains
        order = []
        for p in parts:
            width = len({r["chain"] for r in p.history}) or 1
            order += [(i // width, r["chain"]) for i, r in enumerate(p.history)]
        records = [r for _, r in sorted(zip(order, records), key=lambda pair: pair[0])]
    history = [dict(r, step=i) for i, r in enumerate(records)]
    return Chains(cat([p.draws for p in parts if p.draws], True) if parts[0].draws else {},
                  cat([p.stats for p in parts if p.stats], True) if parts[0].stats else {},
                  history, mine.states, cat([p.sums for p in parts], False) if parts[0].sums else {},
                  sum(p.kept for p in parts), any(p.stopped for p in parts))


def _run(kernel: Kernel, chain_ids: range, steps: int, warmup: int, num_chains: int, thin: int, seed: int | None,
         progress: bool, callback: Callable[[dict], Any] | None, desc: str | None) -> "Chains":
    """The chains ``chain_ids`` (global indices) of `run`."""
    here = len(chain_ids)
    seeds = _Seeds(seed, here, chain_ids.start)
    history: list[dict] = []
    # sequential kernels: per chain, per kept draw; vectorised ones: per kept draw, (chain, ...) each
    draws: list[list[dict]] = [[] for _ in range(num_chains)]
    stats: list[list[dict]] = [[] for _ in range(num_chains)]
    vdraws: list[dict] = []
    vstats: list[dict] = []
    sums: dict[str, Any] = {}
    kept, stopped = 0, False
    total = (warmup + steps) * (1 if kernel.vectorised else here)
    label = desc or kernel.name
    # no tqdm object at all without a bar: samplers called once per training step (Langevin) stay cheap
    progress_bar = bar(total=total, desc=label, enabled=progress) if progress else _NoBar()

    def record(chain: int, content: dict, is_warmup: bool) -> bool:
        r = {"step": len(history), "chain": chain}
        if kernel.record_warmup:
            r["warmup"] = is_warmup
        r.update(content)
        history.append(r)
        return bool(callback(r)) if callback is not None else False

    def keep(d: dict, content: dict, chains: list[int]) -> None:
        nonlocal kept
        stored = {k: v for k, v in d.items() if k not in kernel.averaged}
        if kernel.vectorised:
            vdraws.append(stored)
            vstats.append(content)
        else:
            draws[chains[0]].append(stored)
            stats[chains[0]].append(content)
        kept += len(chains)
        # averaged sites: summed in draw order, per chain (a vectorised kernel's (chain, ...) at once)
        for k in kernel.averaged:
            if kernel.vectorised:
                sums[k] = d[k] if k not in sums else sums[k] + d[k]
            else:
                per = sums.setdefault(k, {})
                c = chains[0]
                per[c] = d[k] if c not in per else per[c] + d[k]

    def transitions(state: Any, chains: list[int]) -> tuple[Any, bool]:
        for i in range(warmup + steps):
            is_warmup = i < warmup
            state = kernel.step(state, is_warmup)
            progress_bar.update(1)
            is_kept = not is_warmup and (i - warmup) % thin == 0
            if not (is_kept or kernel.record_warmup):
                continue
            content = kernel.stats(state)
            if is_kept:
                keep(kernel.draw(state), content, chains)
            if content:  # a kernel without statistics records no history
                halt = False
                for j, c in enumerate(chains):
                    one = {k: v[j] for k, v in content.items()} if kernel.vectorised else content
                    halt = record(c, one, is_warmup) or halt
                if halt:
                    return state, True
        return state, False

    try:
        if kernel.vectorised:
            if here:
                states, stopped = transitions(kernel.init(seeds, list(chain_ids), warmup), list(chain_ids))
            else:
                states = None
        else:
            states = []
            for c in chain_ids:
                progress_bar.set_description(f"{label} chain {c + 1}/{num_chains}" if num_chains > 1 else label)
                # chain 0 continues the caller's seeded stream; the others get their own seed
                with seeded(seeds[c - chain_ids.start] if c else None):
                    state, stopped = transitions(kernel.init(seeds[c - chain_ids.start], c, warmup), [c])
                states.append(state)
                if stopped:
                    break
    finally:
        progress_bar.close()
    out_draws: dict[str, torch.Tensor] = {}
    out_stats: dict[str, torch.Tensor] = {}

    def numeric(v: Any) -> torch.dtype | None:
        return torch.bool if isinstance(v, bool) else torch.float64 if isinstance(v, (int, float)) else None

    if kernel.vectorised:
        if vdraws:
            out_draws = {k: torch.stack([torch.as_tensor(d[k]) for d in vdraws], 1) for k in vdraws[0]}
            for k, v in vstats[0].items():
                dtype = numeric(v[0]) if len(v) else None
                if dtype is not None:
                    out_stats[k] = torch.tensor([list(s[k]) for s in vstats], dtype=dtype).T.contiguous()
    else:
        for k, per in sums.items():
            parts = [per[c] for c in sorted(per)]
            sums[k] = torch.stack(parts) if torch.is_tensor(parts[0]) else np.stack(parts)
        started = [c for c in range(num_chains) if draws[c]]
        length = min((len(draws[c]) for c in started), default=0)
        if started and draws[started[0]][0]:
            for k in draws[started[0]][0]:
                out_draws[k] = torch.stack([torch.stack([torch.as_tensor(d[k]) for d in draws[c][:length]])
                                            for c in started])
        if started and stats[started[0]]:
            for k, v in stats[started[0]][0].items():
                dtype = numeric(v)
                if dtype is not None:
                    out_stats[k] = torch.tensor([[s[k] for s in stats[c][:length]] for c in started], dtype=dtype)
    return Chains(out_draws, out_stats, history, states, sums, kept, stopped)
