"""Devices: ``pg.fit(..., device="cpu" | "cuda" | "cuda:1" | "mps" | torch.device)`` and
``fit.to(device)``.

The core checks the device (`check_device`: an absent one is a ``ValueError`` naming
those there are), checks that the method runs there (``Method.devices``, the device types
its kernels support; CPU-only kernels — the compiled HMM loops of
`probgen.ops.chain_kernels`, NumPy code — refuse another device, naming the methods
that take it), moves the data, ``init`` and the declaration's networks and tensors there
once (`to_device`), and runs the method with torch's default device set to it (so
that the tensors a method creates land beside the data; ``with torch.device(d)``).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch


def available() -> list[str]:
    """The devices this machine has: ``"cpu"``, ``"cuda:i"`` for each GPU, ``"mps"``.

    Returns:
      A list of device names, ``"cpu"`` first.

    Examples:
        >>> from probgen import devices
        >>> devices.available()[0]
        'cpu'
    """
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(device: Any) -> torch.device | None:
    """``device`` as a ``torch.device`` (``None`` stays ``None``: the default, nothing moved);
    ``ValueError`` for another type, a name torch does not know, or a device this machine
    does not have (no CUDA, a GPU index out of range, no MPS), naming those it has.

    Args:
      device: ``None``, a name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) or a
        ``torch.device``.

    Returns:
      A ``torch.device``, or ``None``.

    Raises:
      ValueError: as above.

    Examples:
        >>> import torch
        >>> from probgen import devices
        >>> devices.check_device("cpu"), devices.check_device(None)
        (device(type='cpu'), None)
        >>> devices.check_device("cuda:99") if torch.cuda.device_count() < 100 else None
        Traceback (most recent call last):
        ...
        ValueError: ..."""
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be a name (\"cpu\", \"cuda\", \"cuda:1\", \"mps\") or a torch.device, "
                         f"got {type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; devices here: {available()}") from None
    here = available()
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine; devices here: {here}")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA "
                             f"device(s); devices here: {here}")
        return torch.device("cuda", index)
    if dev.type == "mps":
        if "mps" not in here:
            raise ValueError(f"device {str(device)!r}: MPS is not available on this machine; devices here: {here}")
        return torch.device("mps")
    raise ValueError(f"device {str(device)!r}: probgen runs on cpu, cuda and mps; devices here: {here}")


def check_method(method: Any, device: torch.device | None) -> None:
    """Refuse a device whose type ``method`` does not run on (``Method.devices``), naming the
    methods that do."""
    if device is None or device.type in method.devices:
        return
    from probgen import registry
    can = [f"{e}/{m.name}" for e in registry.engines() for m in registry.methods(e) if device.type in m.devices]
    raise ValueError(f"the {method.engine!r} method {method.name!r} runs on {' and '.join(method.devices)} only"
                     + (f" ({method.device_hint})" if getattr(method, "device_hint", "") else "")
                     + f", not {device.type}; methods that run on {device.type}: {', '.join(can) or 'none'}")


def to_device(obj: Any, device: torch.device) -> Any:
    """``obj`` with every tensor in it on ``device``: tensors, lists, tuples, dicts and
    dataclasses (a `probgen.corpus.Corpus`, HMM ``Sequences``; their cached fields,
    ``init=False``, are dropped and recomputed) are rebuilt around moved tensors; a tensor
    already there is returned as it is (so ``device="cpu"`` moves and copies nothing);
    anything else (numbers, strings, NumPy arrays) is returned unchanged.

    Args:
      obj: any value.
      device: the target ``torch.device``.

    Returns:
      ``obj`` rebuilt with its tensors on ``device`` (shapes and dtypes unchanged).

    Examples:
        >>> import torch
        >>> from probgen import devices
        >>> x = torch.zeros(2, 3)
        >>> moved = devices.to_device({"x": [x], "n": 3}, torch.device("cpu"))
        >>> moved["x"][0] is x, moved["n"]  # already there: not copied
        (True, 3)"""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if type(obj) is list:
        return [to_device(v, device) for v in obj]
    if type(obj) is tuple:
        return tuple(to_device(v, device) for v in obj)
    if type(obj) is dict:
        return {k: to_device(v, device) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
        moved = {k: to_device(v, device) for k, v in fields.items()}
        if all(moved[k] is v for k, v in fields.items()):
            return obj
        return dataclasses.replace(obj, **moved)
    return obj


def move_declaration(model: Any, device: torch.device) -> Any:
    """Move, in place, the networks (``nn.Module`` attributes) and tensor attributes of a
    declaration to ``device``; returns it. (The core calls it on the fit's own copy.)"""
    for attr, value in list(vars(model).items()):
        if isinstance(value, torch.nn.Module):
            value.to(device)
        elif isinstance(value, torch.Tensor) and value.device != device:
            setattr(model, attr, value.to(device))
    return model


def _copy_declaration(model: Any) -> Any:
    """A copy of a (trained) declaration: rebuilt as `probgen.Fit.save` writes it
    (constructor arguments and networks' weights; a trained Pyro transform holds cached
    non-leaf tensors, which ``copy.deepcopy`` refuses), or deep-copied where it cannot be
    written so (a network passed in by the user)."""
    from probgen.plain import from_plain, to_plain
    try:
        plain = to_plain(model, "the model")
    except ValueError:
        return copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):  # rebuilding may draw initial weights
        return from_plain(plain, "the model")


def fit_to(fit: Any, device: Any) -> Any:
    """A copy of ``fit`` on ``device`` (`probgen.Fit.to`): its parameters, its
    declaration's networks and tensors, and the tensors of its state (posterior draws, the
    Pyro param store) moved there; ``fit`` itself is unchanged.

    Args:
      fit: a `probgen.Fit`.
      device: as for `check_device`.

    Returns:
      A new `probgen.Fit`.

    Raises:
      ValueError: an absent device.

    Examples:
        >>> import torch
        >>> import probgen as pg
        >>> from probgen.models import GaussianMixture
        >>> x = torch.randn(40, 2, generator=torch.Generator().manual_seed(0)).double()
        >>> from probgen import devices
        >>> fit = pg.fit(GaussianMixture(2, 2), x, steps=3, seed=0, progress=False)
        >>> copy = devices.fit_to(fit, "cpu")
        >>> copy is not fit, torch.equal(copy.log_prob(x), fit.log_prob(x))
        (True, True)"""
    dev = check_device(device)
    out = copy.copy(fit)
    out.model = move_declaration(_copy_declaration(fit.model), dev)
    out.params = {k: v.detach().to(dev) for k, v in fit.params.items()}
    state = dict(fit.state)
    if "param_store" in state:
        store = state["param_store"]
        state["param_store"] = {"params": {k: v.to(dev) for k, v in store["params"].items()},
                                "constraints": dict(store["constraints"])}
    out.state = {k: v if k == "param_store" else
                 copy.deepcopy(v).to(dev) if isinstance(v, torch.nn.Module) else to_device(v, dev)
                 for k, v in state.items()}
    out.history = list(fit.history)
    out.options = dict(fit.options)
    return out


def table() -> str:
    """Every method's devices and whether it checkpoints (Markdown; the README's table, which
    a test keeps equal to the registry): the device types of ``Method.devices`` (``cpu`` only:
    with the reason, ``Method.device_hint``, where a CPU-only kernel is the cause) and whether
    its loop writes checkpoints (`probgen.checkpoint.can_checkpoint`).

    Returns:
      The Markdown table, one row per method.

    Examples:
        >>> from probgen import devices
        >>> print(devices.table().splitlines()[0])
        | engine | method | `device=` | `checkpoint=` |"""
    from probgen import registry
    from probgen.checkpoint import can_checkpoint
    rows: dict[tuple, list[str]] = {}
    for engine in registry.engines():
        for m in registry.methods(engine):  # a method registered for several engines: one row
            where = ", ".join(m.devices) + (f" ({m.device_hint})" if m.device_hint else "")
            rows.setdefault((m.name, where, "yes" if can_checkpoint(m) else ""), []).append(engine)
    out = ["| engine | method | `device=` | `checkpoint=` |", "|---|---|---|---|"]
    for (name, where, ck), engines in rows.items():
        engines = ["any"] if engines == registry.engines() else engines
        out.append(f"| {', '.join(engines)} | `{name}` | {where} | {ck} |")
    return "\n".join(out)
