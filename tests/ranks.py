"""Run a function on several local gloo processes, as ``torchrun`` would: the test harness of
the data-parallel tests (``tests/test_distributed*.py``).

``run_ranks(fn, *args, world=2)`` spawns ``world`` fresh Python processes, each with the
standard environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) and one thread, calls ``fn(*args)`` (a module-level function: it is pickled
by name) in each, and returns the ranks' return values in rank order. A rank that raises, or
a run past ``timeout`` seconds, fails the call with every rank's error; ``errors=True``
returns ``(value or None, error message or None)`` per rank instead, for tests of failures
(a rank that exits without a result, ``os._exit`` say, has the message "exited with code").
"""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
import socket
import time
import traceback
from typing import Any, Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, fn: Callable, args: tuple, out: Any) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "PROBGEN_DISTRIBUTED_TIMEOUT": os.environ.get("PROBGEN_DISTRIBUTED_TIMEOUT", "60")})
    import torch
    torch.set_num_threads(1)
    try:
        # pickled here, by value: a tensor put on a multiprocessing queue travels as a file
        # descriptor that vanishes when this process exits
        value = pickle.dumps(fn(*args))
        out.put((rank, value, None))
    except BaseException as exc:  # reported to the parent, which fails the test with it
        out.put((rank, None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
    finally:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(fn: Callable, *args: Any, world: int = 2, timeout: float = 240, errors: bool = False) -> list:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, fn, args, out), daemon=True)
             for r in range(world)]
    for p in procs:
        p.start()
    results: dict[int, tuple] = {}  # rank -> (pickled value or None, error text or None)
    deadline = time.monotonic() + timeout
    try:
        while len(results) < world:
            try:
                r, value, err = out.get(timeout=0.5)
            except queue.Empty:
                # a rank that died without a word (os._exit, a signal) is reported as such
                for r, p in enumerate(procs):
                    if r not in results and p.exitcode is not None:
                        try:  # what it put just before it ended may still be in the pipe
                            q, value, err = out.get(timeout=1.0)
                            results[q] = (value, err)
                            break
                        except queue.Empty:
                            results[r] = (None, f"rank {r} exited with code {p.exitcode} without a result")
                if time.monotonic() > deadline:
                    raise AssertionError(f"the {world} ranks did not all finish within {timeout} s "
                                         f"(finished: {sorted(results)})") from None
                continue
            results[r] = (value, err)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    results = {r: (None if value is None else pickle.loads(value), err) for r, (value, err) in results.items()}
    if errors:
        return [results[r] for r in range(world)]
    failed = [f"rank {r}: {results[r][1]}" for r in range(world) if results[r][1] is not None]
    if failed:
        raise AssertionError("\n".join(failed))
    return [results[r][0] for r in range(world)]
