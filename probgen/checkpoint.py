"""Checkpoints of a running fit, and resuming one: ``pg.fit(..., checkpoint=PATH,
checkpoint_every=N)`` and ``pg.resume(PATH, data)``.

The core (`probgen.fit`) validates the two options, records the call and makes a
`Checkpoint` *active* for the duration of the method's ``fit``; the loops (the
iterative driver, the gradient trainer) ask `active` for it — no method's signature
carries it. A loop that can checkpoint:

1. calls `Checkpoint.start` once, just before its first step: ``None`` on a fresh
   fit; on a resume, the loop state it saved (the core has restored, at that moment, every
   global random state and the Pyro param store to what they were when it was saved), from
   which it continues;
2. calls `Checkpoint.step` after each of its steps with the count of steps done and a
   function returning its whole state (parameters, optimiser / scheduler / sampler state, its
   own generators' states, history, step) as plain data (`probgen.plain`);
3. calls `Checkpoint.save` once at the end with its final state.

A file holds, in format ``"probgen.checkpoint/1"``: the call (the declaration as
`probgen.plain` writes it, engine and method, steps, seed, init, options, device, the
checkpoint interval, a fingerprint of the data), the loop's state, the global random states
(torch, NumPy, Python ``random``: Pyro's are these) and the Pyro param store. It is written
with `probgen.plain.write_file` (temporary file + ``fsync`` + ``os.replace``: never
half-written) and read with ``torch.load(weights_only=True)`` (no code from it runs).

This is the checkpoint/restart scheme of Lightning's ``ModelCheckpoint`` and Orbax: the
state after step ``t`` plus the random streams, so that the continued run draws exactly the
numbers the uninterrupted one would have.

Under ``torch.distributed`` (`probgen.distributed`) every rank's state is gathered to
rank 0 (one collective), rank 0 writes the one file (atomically, as above) and every rank
waits at a barrier until it is written: the top-level entries are rank 0's, ``"ranks"``
holds the other ranks' (a rank's random streams and loop state may be its own: a trainer's
per-rank generator, a rank's chains), and the call records the world size and every rank's
data fingerprint. ``pg.resume`` under the same launch (the same number of ranks, each
reading the same file: a file system every rank sees) gives each rank its own state back.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import os
import random as _random
from typing import Any, Callable, Iterator

import numpy as np
import pyro
import torch

#: the file format of a checkpoint
FORMAT = "probgen.checkpoint/1"

#: options of ``pg.fit`` that are not saved in a checkpoint: how a run is watched, not what
#: it computes (``pg.resume`` takes them again)
RUNTIME_OPTIONS = ("callback",)

_ACTIVE: contextvars.ContextVar["Checkpoint | None"] = contextvars.ContextVar("probgen_checkpoint", default=None)


def active() -> "Checkpoint | None":
    """The checkpoint of the ``pg.fit`` / ``pg.resume`` call running now: how a loop learns of
    it (the methods' signatures do not carry it).

    Returns:
      The active `Checkpoint`, or ``None`` (no call, or one without ``checkpoint=``).

    Examples:
        >>> from probgen import checkpoint
        >>> checkpoint.active() is None
        True
    """
    return _ACTIVE.get()


@contextlib.contextmanager
def activate(ck: "Checkpoint | None") -> Iterator[None]:
    """Make ``ck`` the active checkpoint for a block (``None``: no checkpoint in it)."""
    token = _ACTIVE.set(ck)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class Checkpoint:
    """The checkpoint of one fit: where it is written, how often, and the call it continues.

    Attributes:
      path: the file.
      every: write after every ``every`` steps (``None``: only at the end).
      call: the recorded ``pg.fit`` call (plain data, written into every file).
    """

    def __init__(self, path: str, every: int | None, call: dict, saved: dict | None = None):
        self.path, self.every, self.call = path, every, call
        self._saved = saved  # a file's payload, on a resume
        self._started = False

    @property
    def resuming(self) -> bool:
        """Whether this fit continues a saved one (``pg.resume``)."""
        return self._saved is not None

    def start(self) -> dict | None:
        """The loop state to continue from, or ``None`` on a fresh fit. On a resume it also
        restores the global random states (torch, NumPy, ``random``) and the Pyro param store
        to what they were when the state was saved: call it once, just before the first step
        (after the method's set-up, which draws what it drew the first time)."""
        if self._started:
            raise RuntimeError("Checkpoint.start() is called once per fit")
        self._started = True
        if self._saved is None:
            return None
        from probgen import distributed
        from probgen.plain import from_plain
        where = f"the checkpoint {self.path}"
        saved, r = self._saved, distributed.rank()
        if r:  # this rank's own state (checked against the world size by pg.resume)
            saved = saved["ranks"][str(r)]
        rng = from_plain(saved["rng"], where)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        _random.setstate(rng["random"])
        _restore_param_store(from_plain(saved["param_store"], where))
        return from_plain(saved["loop"], where)

    def due(self, done: int) -> bool:
        """Whether a checkpoint is written after ``done`` steps."""
        return self.every is not None and done > 0 and done % self.every == 0

    def step(self, done: int, state: Callable[[], dict]) -> None:
        """After a step: write ``state()`` when `due` (``done``: the steps done so far)."""
        if self.due(done):
            self.save(state())

    def save(self, loop: dict) -> None:
        """Write the checkpoint now, with the loop's state ``loop`` (plain data, or what
        `probgen.plain.to_plain` writes), the global random states and the param store."""
        from probgen import distributed
        from probgen.plain import to_plain, write_file
        store = pyro.get_param_store().get_state()
        own = {"loop": to_plain(loop, "the loop state"),
               "rng": to_plain({"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                                "random": _random.getstate()}, "the random states"),
               "param_store": to_plain({"params": {k: v.detach() for k, v in store["params"].items()},
                                        "constraints": store["constraints"]}, "the param store")}
        ctx = distributed.current()
        if ctx is None:
            write_file(self.path, {"format": FORMAT, "call": self.call, **own})
            return
        states = ctx.collect(own)  # every rank's, on rank 0
        if ctx.rank == 0:
            with ctx.guard():  # a rank 0 that cannot write ends the others with its error
                write_file(self.path, {"format": FORMAT, "call": self.call, **states[0],
                                       "ranks": {str(r): st for r, st in enumerate(states) if r}})
        ctx.barrier()  # no rank goes on (or ends) before the file is there


class Hook(Checkpoint):
    """An in-memory checkpoint, for code that watches or restarts a loop without a file
    (`probgen.loops.gradient.session`, tests): `start` gives ``resume`` (the
    loop's own state, e.g. a ``Trainer.state_dict()``; nothing global is restored besides
    what that state holds) and `save` calls ``save(state)``."""

    def __init__(self, resume: dict | None = None, every: int | None = None,
                 save: Callable[[dict], None] | None = None):
        super().__init__(path="", every=every, call={})
        self._resume, self._save = resume, save

    def start(self) -> dict | None:
        if self._started:
            raise RuntimeError("Checkpoint.start() is called once per fit")
        self._started = True
        return self._resume

    def save(self, loop: dict) -> None:
        if self._save is not None:
            self._save(loop)


def _restore_param_store(saved: dict) -> None:
    """Put the saved Pyro param store back *into the tensors the fit already has*: a
    parameter the method's set-up has made (``pyro.module`` ties a network's weights to their
    store entries, an optimiser holds them) is overwritten in place, so that what trains it
    keeps training the same tensor; the others are added."""
    store = pyro.get_param_store()
    live = store.get_state()["params"]
    fresh = {}
    with torch.no_grad():
        for name, value in saved["params"].items():
            if name in live and live[name].shape == value.shape:
                live[name].copy_(value)
            else:  # a store parameter is a leaf that requires grad (the file holds plain tensors)
                fresh[name] = value.requires_grad_(value.is_floating_point())
    if fresh:
        store.set_state({"params": fresh, "constraints": {k: saved["constraints"][k] for k in fresh}})


def check_options(method: Any, checkpoint: Any, every: Any) -> tuple[str | None, int | None]:
    """``checkpoint`` (a path or ``None``) and ``checkpoint_every`` (a positive integer or
    ``None`` = only at the end) checked for ``method``: a method whose loop cannot checkpoint
    refuses, naming the methods that can."""
    if checkpoint is None:
        if every is not None:
            raise ValueError("checkpoint_every is given without checkpoint= (the file to write)")
        return None, None
    path = check_path(checkpoint)
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise ValueError(f"checkpoint_every must be a positive integer (steps) or None (only at the end), "
                         f"got {every!r}")
    if not can_checkpoint(method):
        raise ValueError(f"the {method.engine!r} method {method.name!r} cannot checkpoint (its loop does not "
                         f"save its state); methods that can: {', '.join(checkpointing_methods()) or 'none'}")
    return path, every


def check_path(path: Any) -> str:
    """A checkpoint's file path, made absolute; ``ValueError`` for another type or a folder."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"checkpoint must be a file path, got {type(path).__name__}")
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise ValueError(f"checkpoint {path} is a folder; give a file path")
    return path


def checkpointing_methods() -> list[str]:
    """``"engine/method"`` for every registered method whose loop writes checkpoints.

    Returns:
      A list of ``"engine/method"`` strings, in the registry's order.

    Examples:
        >>> from probgen import checkpoint
        >>> "em/mixture" in checkpoint.checkpointing_methods()
        True
    """
    from probgen import registry
    return [f"{e}/{m.name}" for e in registry.engines() for m in registry.methods(e) if can_checkpoint(m)]


#: the loops (``Method.loop``) that save and restore their state through `active`
LOOPS = ("iterative", "gradient")


def can_checkpoint(method: Any) -> bool:
    """Whether ``method``'s fit runs on a loop that writes checkpoints (`LOOPS`): the
    gradient trainer and the iterative driver.

    Args:
      method: a registered `probgen.registry.Method`.

    Returns:
      ``True`` or ``False``.

    Examples:
        >>> from probgen import checkpoint
        >>> from probgen.models import GaussianMixture
        >>> from probgen.registry import find_method
        >>> checkpoint.can_checkpoint(find_method(GaussianMixture(2, 2), "em"))  # the iterative driver
        True
        >>> checkpoint.can_checkpoint(find_method(GaussianMixture(2, 2), "mcmc"))  # NUTS
        False
    """
    return getattr(method, "loop", None) in LOOPS


def record_call(model: Any, method: Any, data: Any, *, steps: int | None, seed: int | None,
                init: dict | None, options: dict, device: Any) -> dict:
    """The ``pg.fit`` call as plain data (raising a ``ValueError`` naming what cannot be
    written — a program defined in ``__main__``, a network passed in — before any work)."""
    from probgen.plain import to_plain
    kept = {k: v for k, v in options.items() if k not in RUNTIME_OPTIONS}
    return _frozen({"model": to_plain(model, "the model"), "engine": method.engine, "method": method.name,
            "steps": steps, "seed": seed, "init": to_plain(init, "init"),
            "options": to_plain(kept, "the fit options"),
            "device": None if device is None else str(device), "data": fingerprint(data)})


def _frozen(plain: Any) -> Any:
    """``plain`` with its tensors copied: `probgen.plain.to_plain` gives views of the
    declaration's weights, which training would go on changing in place."""
    if isinstance(plain, torch.Tensor):
        return plain.clone()
    if isinstance(plain, list):
        return [_frozen(v) for v in plain]
    if isinstance(plain, dict):
        return {k: _frozen(v) for k, v in plain.items()}
    return plain


def read(path: str | os.PathLike) -> dict:
    """A checkpoint file's payload, read with ``torch.load(weights_only=True)`` (no code runs).

    Args:
      path: a file written by ``pg.fit(..., checkpoint=path)``.

    Returns:
      The payload dict: ``"call"`` (the ``pg.fit`` call), the loop's state and the random
        states.

    Raises:
      ValueError: a missing, foreign, truncated or damaged file.

    Examples:
        >>> import torch
        >>> import probgen as pg
        >>> from probgen.models import GaussianMixture
        >>> x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0)).double()
        >>> fit = pg.fit(GaussianMixture(2, 2), x, steps=3, seed=0, tol=None, progress=False,
        ...              checkpoint="gmm.ckpt")
        >>> from probgen import checkpoint
        >>> payload = checkpoint.read("gmm.ckpt")
        >>> payload["call"]["engine"], payload["call"]["steps"]
        ('em', 3)
    """
    from probgen.plain import read_file
    path = os.fspath(path)
    payload = read_file(path, FORMAT, "probgen checkpoint file", missing="checkpoint")
    missing = [k for k in ("call", "loop", "rng", "param_store") if k not in payload]
    if missing or not isinstance(payload["call"], dict):
        raise ValueError(f"{path} is a damaged probgen checkpoint file (missing {missing or ['call']})")
    return payload


def fingerprint(data: Any) -> str | None:
    """A SHA-256 digest of checked data (tensors' dtype, shape and bytes; lists, tuples,
    dicts, dataclasses such as `probgen.corpus.Corpus`, numbers, strings), so that
    ``pg.resume`` can tell data that differ from the fit's; ``None`` for data of another kind
    (not checked).

    Args:
      data: data as a declaration's ``check_data`` returns them.

    Returns:
      A 64-character hex digest, or ``None``.

    Examples:
        >>> import torch
        >>> from probgen import checkpoint
        >>> len(checkpoint.fingerprint(torch.zeros(3)))
        64
        >>> checkpoint.fingerprint(torch.zeros(3)) == checkpoint.fingerprint(torch.ones(3))
        False"""
    h = hashlib.sha256()

    def feed(obj: Any) -> bool:
        if obj is None or type(obj) in (bool, int, float, str):
            h.update(f"{type(obj).__name__}:{obj!r};".encode())
        elif isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f"tensor:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, np.ndarray):
            return obj.dtype != object and feed(torch.from_numpy(np.ascontiguousarray(obj)))
        elif isinstance(obj, (list, tuple)):
            h.update(f"{type(obj).__name__}[{len(obj)}];".encode())
            return all(feed(v) for v in obj)
        elif isinstance(obj, dict):
            h.update(f"dict[{len(obj)}];".encode())
            return all(feed(k) and feed(v) for k, v in obj.items())
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            h.update(f"{type(obj).__qualname__};".encode())
            return all(feed(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.name.startswith("_"))
        else:
            return False
        return True

    return h.hexdigest() if feed(data) else None
