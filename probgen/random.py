"""Seeding: every stochastic entry point takes ``seed`` and goes through here."""
from __future__ import annotations

import contextlib
import random as _random

import numpy as np
import pyro
import torch


def set_seed(seed: int | None) -> None:
    """Seed Python, NumPy, torch and Pyro (no-op for ``None``)."""
    if seed is None:
        return
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    pyro.set_rng_seed(seed)  # seeds random, numpy and torch too


def generator(seed: int | None) -> torch.Generator:
    """A torch generator seeded with ``seed`` (random when ``None``), on torch's default device
    (the fit's ``device=``: a generator must sit where the tensors it fills are made)."""
    g = torch.Generator(device=torch.get_default_device())
    g.manual_seed(int(seed) if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    return g


@contextlib.contextmanager
def seeded(seed: int | None):
    """Run a block with all generators seeded, restoring the previous global state after."""
    if seed is None:
        yield
        return
    state = (_random.getstate(), np.random.get_state(), torch.get_rng_state())
    set_seed(seed)
    try:
        yield
    finally:
        _random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])
