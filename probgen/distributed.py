"""Data-parallel fits on ``torch.distributed`` (gloo on CPU, NCCL on CUDA), launched by
``torchrun`` or any launcher that sets the standard environment variables (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``).

Every rank calls ``pg.fit`` with the same arguments; `context` joins (or, where the
user has not, initialises) the process group, and while the fit runs its `Context`
is `current` — the one place the loops ask whether they run data-parallel:

* `probgen.loops.iterative` sums the E-step's sufficient statistics (and the objective)
  over ranks with one ``all_reduce`` per iteration (`Context.sum`); the M-step runs
  identically everywhere;
* `probgen.loops.gradient` averages gradients over a global minibatch;
* `probgen.loops.mcmc` spreads the chains over the ranks and gathers them.

Each rank takes its own contiguous block of the rows (`Context.shard`), or, for data
that do not fit one machine, passes only its own part as `Shard`. The returned
``Fit`` is the same on every rank. A rank that fails publishes its error in the process
group's store before it stops (`Context.guard`), so the others end with that error
rather than hang; every collective has a timeout (``PROBGEN_DISTRIBUTED_TIMEOUT`` seconds,
default 300).
Reference: PyTorch's ``torch.distributed`` and ``DistributedDataParallel`` (Li et al. 2020).
"""
from __future__ import annotations

import atexit
import contextlib
import contextvars
import datetime
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

__all__ = ["Shard", "Context", "DistributedError", "context", "current", "active", "rank", "world_size"]

#: the environment variables a launcher sets (torchrun's, MPI launchers' through them)
ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """Another rank of a data-parallel fit failed (its error is in the message), or the
    connection to it was lost or timed out (after ``PROBGEN_DISTRIBUTED_TIMEOUT`` seconds).

    Examples:
        >>> import probgen as pg
        >>> issubclass(pg.distributed.DistributedError, RuntimeError)
        True
    """


@dataclass(frozen=True)
class Shard:
    """This rank's own part of the data, for data that do not fit one machine:
    ``pg.fit(model, pg.distributed.Shard(local_rows), ...)`` on every rank, each with its own
    rows (in rank order they make the whole data). Only methods that run data-parallel
    (``Method.parallel == "data"``) take a shard; a local fit refuses one.

    Attributes:
      rows: this rank's rows, in any data form the model takes (an ``(N_rank, D)`` tensor,
        a list of sequences, ...).

    Examples:
        >>> import torch
        >>> import probgen as pg
        >>> from probgen.models import GaussianMixture
        >>> shard = pg.distributed.Shard(torch.zeros(4, 2))
        >>> pg.fit(GaussianMixture(2, 2), shard, progress=False)  # no torchrun here: a local fit
        Traceback (most recent call last):
        ...
        ValueError: pg.distributed.Shard is one rank's part of the data of a data-parallel fit; ...
    """
    rows: Any


def _env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def _timeout() -> datetime.timedelta:
    raw = os.environ.get("PROBGEN_DISTRIBUTED_TIMEOUT", "300")
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"PROBGEN_DISTRIBUTED_TIMEOUT must be a number of seconds, got {raw!r}") from None
    return datetime.timedelta(seconds=seconds)


@dataclass
class Context:
    """The process group a data-parallel fit runs in: this process's ``rank`` of
    ``world_size`` and the ``device`` collectives use (CPU for gloo, the rank's GPU for NCCL).
    ``parallel``: the running method's `probgen.registry.Method.parallel` (set by
    ``pg.fit``): the gradient trainer averages gradients only under ``"data"`` and the MCMC
    driver spreads chains only under ``"chains"`` (a sampler inside a training step stays local).

    Attributes:
      rank: this process's rank, 0 ≤ rank < world_size.
      world_size: the number of processes W.
      device: where collectives run.
      parallel: ``"data"``, ``"chains"`` or ``None``.

    Examples:
        >>> import torch
        >>> from probgen.distributed import Context
        >>> ctx = Context(rank=1, world_size=3)
        >>> ctx.block(10), ctx.shard(torch.arange(10)).tolist()  # ranks take 4, 3, 3 rows
        ((4, 7), [4, 5, 6])
    """
    rank: int
    world_size: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    parallel: str | None = None

    # ---- the data -------------------------------------------------------------------------

    def block(self, n: int) -> tuple[int, int]:
        """The contiguous block ``[start, stop)`` of ``n`` rows that is this rank's: ranks
        take ⌊n/W⌋ or ⌈n/W⌉ rows, in rank order (torch's ``tensor_split`` rule)."""
        q, r = divmod(n, self.world_size)
        start = self.rank * q + min(self.rank, r)
        return start, start + q + (self.rank < r)

    def shard(self, data: Any) -> Any:
        """This rank's block of ``data``'s rows (`probgen.data.n_items` / ``take``)."""
        from probgen.data import n_items, take
        start, stop = self.block(n_items(data))
        return take(data, torch.arange(start, stop))

    def sizes(self, n_local: int) -> list[int]:
        """Every rank's number of rows, given this rank's ``n_local`` (one collective)."""
        return [int(v) for v in self.gather(int(n_local))]

    # ---- collectives ----------------------------------------------------------------------

    def sum(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``tensors`` (any shapes) summed over the ranks, in ONE ``all_reduce``: they travel
        as one flat buffer of the widest floating dtype among them (float64 where any is) and
        come back in their own shapes and dtypes. Summing two numbers is commutative, so every
        rank gets the same bits."""
        import torch.distributed as dist
        if not tensors:
            return {}
        items = [(k, torch.as_tensor(v)) for k, v in tensors.items()]
        dtype = torch.float64 if any(v.dtype in (torch.float64, torch.int64, torch.long) for _, v in items) \
            else torch.float32
        flat = torch.cat([v.detach().reshape(-1).to(self.device, dtype) for _, v in items])
        self._collective(dist.all_reduce, flat)
        out, i = {}, 0
        for k, v in items:
            n = v.numel()
            out[k] = flat[i:i + n].reshape(v.shape).to(v.device, v.dtype)
            i += n
        return out

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` (any picklable value, tensors included) on every rank."""
        import torch.distributed as dist
        box = [obj if self.rank == src else None]
        self._collective(dist.broadcast_object_list, box, src=src)
        return box[0]

    def gather(self, obj: Any) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        import torch.distributed as dist
        out = [None] * self.world_size
        self._collective(dist.all_gather_object, out, obj)
        return out

    def collect(self, obj: Any, dst: int = 0) -> list | None:
        """Every rank's ``obj`` (picklable), in rank order, on rank ``dst`` (``None`` on the
        others): what only one rank needs, e.g. the states a checkpoint writes. The objects
        travel as ``torch.save`` bytes: ``gather_object``'s own pickling of tensors fails to
        load them back in torch 2.13 (its legacy storage path)."""
        import io

        import torch.distributed as dist
        buf = io.BytesIO()
        torch.save(obj, buf)
        out = [None] * self.world_size if self.rank == dst else None
        self._collective(dist.gather_object, buf.getvalue(), out, dst=dst)
        # the bytes are this job's own ranks' (as any collective's are)
        return None if out is None else [torch.load(io.BytesIO(b), weights_only=False) for b in out]

    def barrier(self) -> None:
        """Wait until every rank is here."""
        import torch.distributed as dist
        self._collective(dist.barrier)

    def _collective(self, op: Any, *args: Any, **kw: Any) -> Any:
        try:
            return op(*args, **kw)
        except DistributedError:
            raise
        except RuntimeError as exc:  # a peer is gone or late: say which and why, if it said
            raise DistributedError(self._peer_error(exc)) from None

    # ---- errors ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run a fit: an error here is published in the process group's store (so the ranks
        waiting on this one end with it) and raised."""
        try:
            yield
        except DistributedError:
            raise
        except BaseException as exc:
            self._publish(exc)
            raise

    def _store(self) -> Any:
        import torch.distributed.distributed_c10d as c10d
        try:
            return c10d._get_default_store()
        except (RuntimeError, ValueError, AttributeError):
            return None

    def _publish(self, exc: BaseException) -> None:
        store = self._store()
        if store is None:
            return
        message = f"rank {self.rank} failed: {type(exc).__name__}: {exc}"
        try:
            store.set(f"probgen/error/{self.rank}", message)
            store.add("probgen/errors", 1)
        except RuntimeError:  # the store's host (rank 0) is gone already
            pass

    def _peer_error(self, exc: BaseException) -> str:
        store = self._store()
        if store is not None:
            try:
                if store.add("probgen/errors", 0) > 0:
                    for r in range(self.world_size):
                        key = f"probgen/error/{r}"
                        if r != self.rank and store.check([key]):
                            return store.get(key).decode()
            except RuntimeError:
                pass
        return (f"rank {self.rank}: lost another rank of the data-parallel fit "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")


_CURRENT: contextvars.ContextVar[Context | None] = contextvars.ContextVar("probgen_distributed", default=None)


def current() -> Context | None:
    """The `Context` of the data-parallel fit running now.

    Returns:
      The context, or ``None`` for a local fit (or outside any fit).

    Examples:
        >>> from probgen.distributed import current
        >>> current() is None
        True
    """
    return _CURRENT.get()


@contextlib.contextmanager
def active(ctx: Context | None) -> Iterator[Context | None]:
    """Make ``ctx`` `current` for a block (``None``: a local block), guarded
    (`Context.guard`: an error in the block ends the other ranks with it).

    Args:
      ctx: the context, or ``None``.

    Returns:
      A context manager yielding ``ctx``.

    Examples:
        >>> from probgen.distributed import Context, active, rank, world_size
        >>> with active(Context(rank=1, world_size=3)):
        ...     print(rank(), world_size())
        1 3
        >>> rank(), world_size()
        (0, 1)
    """
    token = _CURRENT.set(ctx)
    try:
        if ctx is None:
            yield None
        else:
            with ctx.guard():
                yield ctx
    finally:
        _CURRENT.reset(token)


def rank() -> int:
    """This process's rank in the running data-parallel fit.

    Returns:
      The rank (0 when local).

    Examples:
        >>> import probgen as pg
        >>> pg.distributed.rank()
        0
    """
    ctx = current()
    return 0 if ctx is None else ctx.rank


def world_size() -> int:
    """The number of ranks of the running data-parallel fit.

    Returns:
      W (1 when local).

    Examples:
        >>> import probgen as pg
        >>> pg.distributed.world_size()
        1
    """
    ctx = current()
    return 1 if ctx is None else ctx.world_size


def context(distributed: bool | None = None, device: torch.device | None = None) -> Context | None:
    """The `Context` a call runs in: ``None`` (local) for ``distributed=False``, or when
    no process group of more than one process is initialised and the environment names none;
    else the process group, initialised here when the user has not (NCCL when ``device`` is
    CUDA, else gloo; with the collective timeout).

    Args:
      distributed: ``None`` (data-parallel when launched so), ``True`` (must be) or ``False``.
      device: the fit's device (picks NCCL for CUDA).

    Returns:
      The context (a `Context`), or ``None`` for a local call.

    Raises:
      ValueError: ``distributed=True`` without a launcher's environment or process group,
        or a partial environment.

    Examples:
        >>> from probgen.distributed import context
        >>> context() is None, context(False) is None  # not launched by torchrun
        (True, True)
    """
    if distributed is not None and not isinstance(distributed, bool):
        raise ValueError(f"distributed must be True, False or None, got {distributed!r}")
    if distributed is False:
        return None
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        world, r = dist.get_world_size(), dist.get_rank()
    else:
        world = _env_world()
        if world <= 1 or not dist.is_available():
            if distributed:
                raise ValueError("distributed=True needs a process group: launch with torchrun (e.g. "
                                 "`torchrun --nproc-per-node 2 script.py`, which sets RANK, WORLD_SIZE, "
                                 "MASTER_ADDR and MASTER_PORT) or call torch.distributed.init_process_group")
            return None
        missing = [k for k in ENV if k not in os.environ]
        if missing:
            raise ValueError(f"WORLD_SIZE={world} but {', '.join(missing)} not set: launch with torchrun "
                             "or set the four variables torch.distributed's env:// initialisation reads")
        backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=_timeout())
        atexit.register(_shutdown)  # gloo aborts a process that exits with its group alive
        world, r = dist.get_world_size(), dist.get_rank()
    if world <= 1:
        return None
    comm = torch.device("cpu")
    if dist.get_backend() == "nccl":
        local = int(os.environ.get("LOCAL_RANK", r % max(torch.cuda.device_count(), 1)))
        comm = torch.device("cuda", local)
    return Context(rank=r, world_size=world, device=comm)


def _shutdown() -> None:
    import torch.distributed as dist
    if dist.is_initialized():
        dist.destroy_process_group()
