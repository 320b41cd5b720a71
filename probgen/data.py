"""Data: checking user input (clear errors, never a traceback from inside torch) and
the small datasets probgen ships, so that nothing is downloaded at run time.

Bundled datasets (``load_dataset(name)``):
  ``iris`` (150, 4) float — Fisher's iris measurements, with ``target`` labels;
  ``digits`` (1797, 64) float in [0, 16] — the UCI 8×8 handwritten digits, with labels;
  ``digits-binary`` — the digits thresholded at 8, as 0/1 floats;
  ``two-moons`` (2000, 2) — two interleaved half circles with noise 0.1 (generated, seed 0).
Train/test splits are fixed: ``split(x, test_fraction=0.2, seed=0)``.
"""
from __future__ import annotations

import csv
import math
import os
from importlib import resources
from typing import Any

import numpy as np
import torch

DATASETS = ("iris", "digits", "digits-binary", "two-moons")


def as_tensor(x: Any, *, name: str = "data", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``x`` as a tensor of ``dtype``; ``ValueError`` if it is not numeric."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric array-like, got {type(x).__name__} ({exc})") from None
    return torch.as_tensor(arr).to(dtype)


def check_finite(x: torch.Tensor, name: str = "data") -> torch.Tensor:
    """``x``, or a ``ValueError`` naming the first NaN / inf cell."""
    if x.is_floating_point() and not finite_sum(x) and not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).nonzero()[0].tolist()
        kind = "NaN" if torch.isnan(x).any() else "inf"
        raise ValueError(f"{name} contains {kind} values (first at index {tuple(bad)})")
    return x


def finite_sum(t: torch.Tensor) -> bool:
    """A finite sum: every cell finite (NaN and inf propagate), found in one pass without a
    mask the size of the data; an overflowing sum of finite cells only sends the caller to
    the cell-by-cell check."""
    return bool(torch.isfinite(t.sum()))


def check_matrix(x: Any, dim: int | None = None, *, name: str = "data",
                 dtype: torch.dtype = torch.float64, missing: bool = False) -> torch.Tensor:
    """An ``(N, D)`` finite tensor with ``N >= 1`` (and ``D == dim`` when given).

    A 1-D input is read as ``N`` points when ``dim == 1`` (or ``dim`` is None).
    ``missing=True``: NaN marks a missing cell and is kept (inf is still refused, and so is
    a row with every cell missing: it carries no information)."""
    t = as_tensor(x, name=name, dtype=dtype)
    expected = f"(N, {dim if dim is not None else 'D'})"
    if t.dim() == 1 and (dim is None or dim == 1):
        t = t.unsqueeze(-1)
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape {expected}, got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty: expected shape {expected} with N >= 1")
    if dim is not None and t.shape[1] != dim:
        raise ValueError(f"{name} must have shape {expected}, got shape {tuple(t.shape)}")
    if t.is_floating_point() and finite_sum(t):  # every cell finite (the common case): one pass
        return t
    if missing and t.is_floating_point():
        nan = torch.isnan(t)
        if nan.any():
            empty = nan.all(1)
            if empty.any():
                raise ValueError(f"{name} row {int(empty.nonzero()[0])} is entirely missing (every cell NaN); "
                                 "drop such rows: they carry no information")
            check_finite(t.masked_fill(nan, 0.0), name)
            return t
    return check_finite(t, name)


def has_missing(data: Any) -> bool:
    """Whether checked data (a float tensor, or an object with a tensor ``x`` such as a
    padded batch of sequences) hold NaN cells, i.e. missing values; data that say it
    themselves (``any_missing``, as `probgen.ops.chain.Sequences`) are asked."""
    flag = getattr(data, "any_missing", None)
    if flag is not None:
        return bool(flag)
    t = getattr(data, "x", data)
    # a finite sum means no NaN, found without a mask the size of the data (EM asks every
    # iteration; checked data hold no inf)
    return (isinstance(t, torch.Tensor) and t.is_floating_point() and not finite_sum(t)
            and bool(torch.isnan(t).any()))


def check_labels(labels: Any, shape: tuple, k: int, name: str = "labels") -> torch.Tensor:
    """Partial labels as a long tensor of ``shape``: a known class / state ``0..k-1`` per
    cell, ``-1`` for unknown; ``ValueError`` for another shape or value."""
    try:
        arr = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an integer array of shape {tuple(shape)} (-1 = unknown) ({exc})") from None
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (one per example; -1 = unknown), "
                         f"got {tuple(arr.shape)}")
    bad = ~np.isfinite(arr) | (arr != np.round(arr)) | (arr < -1) | (arr >= k)
    if bad.any():
        i = tuple(int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"{name}{list(i)} = {arr[i]!r}: labels must be integers in -1..{k - 1} (-1 = unknown)")
    return torch.from_numpy(arr.astype(np.int64))


def clamp_to_labels(log_p: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """``log_p`` ``(..., K)`` with every class but the known one set to −inf where
    ``labels`` ``(...)`` is not −1 (in place; ``labels=None`` leaves it as it is): an E-step
    so clamped gives the joint log p(x, label) where a label is given (Nigam et al. 2000)."""
    if labels is not None:
        k = log_p.shape[-1]
        other = (labels.unsqueeze(-1) >= 0) & (torch.arange(k, device=log_p.device) != labels.unsqueeze(-1))
        log_p.masked_fill_(other, float("-inf"))
    return log_p


def check_tensor_tree(data: Any, name: str = "data") -> Any:
    """Tensors / arrays inside ``data`` (a tensor, tuple, list or dict) checked for NaN/inf
    and emptiness; other leaves pass through unchanged."""
    if data is None:
        return None
    if isinstance(data, dict):
        return {k: check_tensor_tree(v, f"{name}[{k!r}]") for k, v in data.items()}
    if isinstance(data, tuple):
        return tuple(check_tensor_tree(v, f"{name}[{i}]") for i, v in enumerate(data))
    if isinstance(data, (torch.Tensor, np.ndarray)):
        t = torch.as_tensor(data)
        if t.numel() == 0:
            raise ValueError(f"{name} is empty")
        return check_finite(t, name)
    return data


def load_dataset(name: str, *, with_target: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """A bundled dataset as a float64 tensor (and its integer labels when asked).

    Args:
      name: ``"iris"`` (Fisher 1936: 150 × 4, 3 classes), ``"digits"`` (scikit-learn's
        8 × 8 handwritten digits: 1797 × 64, values 0–16, 10 classes), ``"digits-binary"``
        (the same thresholded at 8 to 0 / 1) or ``"two-moons"`` (2000 × 2, 2 classes,
        `two_moons` with ``seed=0``).
      with_target: also return the labels.

    Returns:
      ``x`` of shape ``(N, D)``, float64; with ``with_target``, ``(x, y)`` with ``y`` of
        shape ``(N,)``, int64.

    Raises:
      ValueError: an unknown name, listing the bundled ones.

    Examples:
        >>> import probgen as pg
        >>> x, y = pg.load_dataset("iris", with_target=True)
        >>> x.shape, x.dtype, y.unique().tolist()
        (torch.Size([150, 4]), torch.float64, [0, 1, 2])
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; bundled datasets: {list(DATASETS)}")
    if name == "two-moons":
        x, y = two_moons(2000, seed=0)
        return (x, y) if with_target else x
    base = name.replace("-binary", "")
    with resources.files("probgen").joinpath(f"datasets/{base}.npz").open("rb") as f:
        z = np.load(f)
        x, y = z["data"].astype(np.float64), z["target"].astype(np.int64)
    if name == "digits-binary":
        x = (x >= 8).astype(np.float64)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    return (x, y) if with_target else x


def two_moons(n: int, noise: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points on two interleaved half circles plus Gaussian noise: ``(x (n, 2), y (n,))``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    angle = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
    x = torch.stack([torch.cos(angle), torch.sin(angle)], -1)
    x[y == 1] = torch.stack([1 - torch.cos(angle[y == 1]), 0.5 - torch.sin(angle[y == 1])], -1)
    return x + noise * torch.randn(n, 2, generator=g, dtype=torch.float64), y


def split(x: torch.Tensor, *others: torch.Tensor, test_fraction: float = 0.2, seed: int = 0):
    """A fixed random train/test split: returns ``(x_train, x_test, *others_train_test)``."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    n_test = int(round(len(x) * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    out = [x[train], x[test]]
    for o in others:
        out += [o[train], o[test]]
    return tuple(out)


def read_file(path: str) -> torch.Tensor:
    """A ``.npy`` or ``.csv`` (numbers, optional header row) file as a float64 tensor."""
    if not os.path.exists(path):
        raise ValueError(f"no such data file: {path}")
    if path.endswith(".npy"):
        return as_tensor(np.load(path), name=path)
    if path.endswith(".csv"):
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r]
        if rows and not _is_number(rows[0][0]):
            rows = rows[1:]
        if not rows:
            raise ValueError(f"{path} has no data rows")
        try:
            return torch.tensor([[float(v) for v in r] for r in rows], dtype=torch.float64)
        except ValueError as exc:
            raise ValueError(f"{path}: non-numeric cell ({exc})") from None
    raise ValueError(f"data files must be .npy or .csv, got {path}")


def write_file(path: str, x: Any) -> None:
    """Samples to ``.npy`` / ``.csv`` (one row per example), or ``.txt`` (one example per
    line, space-separated: also for ragged samples such as documents, sentences or trees)."""
    if path.endswith(".txt"):
        with open(path, "w") as f:
            for item in x:
                if isinstance(item, (torch.Tensor, np.ndarray)):
                    item = " ".join(str(v) for v in np.asarray(item).reshape(-1).tolist())
                elif isinstance(item, (list, tuple)):
                    item = " ".join(map(str, item))
                f.write(f"{item}\n")
        return
    if isinstance(x, (list, tuple)) and len({tuple(np.shape(i)) for i in x}) > 1:
        raise ValueError(f"these samples have different lengths; write them to a .txt file, not {path}")
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
    if path.endswith(".npy"):
        np.save(path, arr)
    elif path.endswith(".csv"):
        np.savetxt(path, arr.reshape(len(arr), -1), delimiter=",")
    else:
        raise ValueError(f"output must be .npy, .csv, .txt or .png, got {path}")


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


# ---- data items: what minibatches, validation splits and a rank's shard take ----------------

def _parallel(data: Any) -> bool:
    """A tuple (or a list of tensors) of equally long arrays: items are taken from each."""
    return isinstance(data, tuple) or (isinstance(data, list) and bool(data)
                                       and all(isinstance(d, (torch.Tensor, np.ndarray)) for d in data))


def is_stream(data: Any) -> bool:
    """Whether ``data`` is a stream of chunks — an iterator (a generator), or a callable that
    returns one — rather than a data set: what online fits (``pg.fit(..., online=True)``) take
    chunk by chunk, never checked (nor held) as a whole."""
    from collections.abc import Iterator
    return isinstance(data, Iterator) or (callable(data) and not isinstance(data, (torch.Tensor, np.ndarray)))


def n_items(data: Any) -> int:
    """The number of data items (rows, documents, sequences, sentences) of ``data``: a tensor,
    a container with ``n_docs`` (a corpus) or ``__len__`` and ``subset`` (padded sequences),
    a list of items (sentences, trees), or a tuple of equally long tensors."""
    if isinstance(data, torch.Tensor):  # the hot path: once per minibatch
        return data.shape[0]
    if _parallel(data):
        return n_items(data[0])
    if hasattr(data, "n_docs"):
        return int(data.n_docs)
    if isinstance(data, dict) or not hasattr(data, "__len__") or not (hasattr(data, "__getitem__")
                                                                      or hasattr(data, "subset")):
        raise ValueError(f"minibatches, a validation split and a rank's shard take data items (a tensor's rows, "
                         f"a corpus's documents), not a {type(data).__name__}: pass the whole data (no "
                         "batch_size, validation=None, distributed=False) or validation= a data set")
    return len(data)


def take(data: Any, idx: torch.Tensor) -> Any:
    """The items ``idx`` (a 1-d long tensor) of ``data`` (see `n_items`), in that order."""
    if isinstance(data, torch.Tensor):
        return data.index_select(0, idx)  # = data[idx], at a fraction of the indexing overhead
    if _parallel(data):
        return type(data)(take(d, idx) for d in data)
    if hasattr(data, "subset"):
        return data.subset(idx)
    if isinstance(data, list):
        return [data[i] for i in idx.tolist()]
    return data[idx]


def join(parts: list, same: tuple[str, ...] = ()) -> Any:
    """The inverse of `take` over consecutive blocks: the answers (or data) for
    consecutive blocks of items, in order, joined into those for all of them — tensors and
    arrays concatenated on dim 0, lists extended, dicts and tuples joined entry by entry.
    Dict entries named in ``same`` are not per item (labels, say): they are the first part's."""
    if not parts:
        raise ValueError("join needs at least one part")
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, 0)
    if isinstance(first, np.ndarray):
        return np.concatenate(parts, 0)
    if isinstance(first, list):
        return [v for p in parts for v in p]
    if isinstance(first, dict):
        return {k: first[k] if k in same else join([p[k] for p in parts], same) for k in first}
    if isinstance(first, tuple):
        joined = [join(list(entries), same) for entries in zip(*parts)]
        return type(first)(*joined) if hasattr(first, "_fields") else tuple(joined)
    raise ValueError(f"answers per item are tensors, arrays, lists, or dicts / tuples of them; "
                     f"a {type(first).__name__} cannot be joined over blocks of items")
