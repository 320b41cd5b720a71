"""Progress bars for long runs (tqdm; silent when output is not a terminal unless forced)."""
from __future__ import annotations

from typing import Iterable

from tqdm.auto import tqdm


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
             enabled: bool | None = True, **kw):
    """A tqdm bar. ``enabled=None`` shows it only on a terminal; ``False`` hides it, as does
    being a rank other than 0 of a data-parallel fit (one bar per fit)."""
    from probgen.distributed import rank
    disable = True if enabled is False or rank() != 0 else None  # None: tqdm shows a bar only on a terminal
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False, dynamic_ncols=True, **kw)
