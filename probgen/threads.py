"""How many CPU threads probgen's own calls give torch.

Measured with ``benchmarks/threads.py`` on a shared 2-core machine, torch's default (one
thread per core) made small and medium fits 5-65x slower than one thread (GMM and HMM EM,
SVI, flows: many small kernels, where OpenMP start-up and spin-waiting under contention cost
more than the parallel work saves); the largest case measured broke even. So probgen runs
``pg.fit``, ``Fit.log_prob`` / ``sample`` / ``log_partition`` and ``pg.infer`` with **one
thread by default**, restoring the caller's setting afterwards. Set it with
``pg.set_num_threads(n)`` or the environment variable ``PROBGEN_NUM_THREADS`` (``n`` threads,
or ``0`` / ``None``: leave torch's own setting alone).
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

_setting: int | None = None  # None: not set in this process, read the environment


def set_num_threads(n: int | None) -> None:
    """Threads for probgen's calls (``pg.fit``, ``fit.log_prob`` / ``sample``, ``pg.infer``).

    Each call sets torch's thread count for its duration and restores the caller's; the
    default (``PROBGEN_NUM_THREADS``, else 1) is one thread, which on a shared machine made
    small and medium fits 5–65× faster than torch's one per core (``benchmarks/threads.py``).

    Args:
      n: a positive number of threads, or ``None`` / ``0`` to leave torch's setting
        (``torch.set_num_threads``) as the caller has it.

    Raises:
      ValueError: ``n`` is negative or not an integer.

    Examples:
        >>> import probgen as pg
        >>> pg.set_num_threads(2)
        >>> pg.num_threads()
        2
        >>> pg.set_num_threads(None)  # torch's own setting
        >>> pg.num_threads() is None
        True
    """
    global _setting
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ValueError(f"threads must be a non-negative integer or None, got {n!r}")
    _setting = n or 0


def num_threads() -> int | None:
    """The threads probgen's calls use.

    Returns:
      The count `set_num_threads` set, else ``PROBGEN_NUM_THREADS`` (default 1);
        ``None`` for torch's own setting.

    Raises:
      ValueError: ``PROBGEN_NUM_THREADS`` is not a non-negative integer.

    Examples:
        >>> import probgen as pg
        >>> pg.set_num_threads(3)
        >>> pg.num_threads()
        3
    """
    if _setting is not None:
        return _setting or None
    raw = os.environ.get("PROBGEN_NUM_THREADS", "1").strip()
    if not raw.isdigit():
        raise ValueError(f"PROBGEN_NUM_THREADS must be a non-negative integer, got {raw!r}")
    return int(raw) or None


@contextlib.contextmanager
def limited() -> Iterator[None]:
    """Run a block with `num_threads` torch threads, restoring the caller's count."""
    n = num_threads()
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
