"""Plain data: what a fit file may hold, so that loading it can never run code.

`to_plain` turns a value into *plain data* — ``None``, ``bool``, ``int``, ``float``,
``str``, tensors, lists and dicts with ``str`` keys — which ``torch.load(path,
weights_only=True)`` reads without unpickling any class (PyTorch's restricted unpickler,
https://pytorch.org/docs/stable/notes/serialization.html#weights-only). The few other kinds
a fit needs are written as tagged dicts ``{"__probgen__": kind, ...}``:

* ``tuple`` / ``set`` / ``frozenset``, a dict whose keys are not all strings, a NumPy array,
  a ``torch.dtype``, a ``torch.Size``, a ``torch.Generator`` (its device and state);
* a ``torch.distributions`` constraint: a named singleton (``constraints.simplex``, Pyro's
  ``softplus_positive``, a probgen module-level one) by ``module:name``, a parametrised one
  (``interval(0, 1)``, ``independent(real, 1)``, …) by its factory name and arguments;
* a declaration: its registry short name (or, for a declaration class of your own, its
  importable ``module:qualname``), its constructor arguments, and the ``state_dict`` of
  every ``nn.Module`` it holds;
* a user's Pyro program or other function: its importable name ``module:qualname`` (or the
  ``path/to/file.py:name`` the CLI loaded it from);
* a frozen dataclass defined in probgen (a grammar's ``Rule``): its class and fields.

Anything else is a ``ValueError`` naming where it sits (never a pickle). `from_plain`
inverts `to_plain`; it imports only probgen, torch and Pyro modules, the module that
defines a user program or declaration class named in the file, and calls only declaration
and probgen dataclass constructors.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import numpy as np
import torch
from torch.distributions import constraints

TAG = "__probgen__"

# parametrised constraints: name -> (class, the attributes its constructor arguments are stored under)
_PARAMETRISED = {
    "greater_than": (constraints.greater_than, ("lower_bound",)),
    "greater_than_eq": (constraints.greater_than_eq, ("lower_bound",)),
    "less_than": (constraints.less_than, ("upper_bound",)),
    "interval": (constraints.interval, ("lower_bound", "upper_bound")),
    "half_open_interval": (constraints.half_open_interval, ("lower_bound", "upper_bound")),
    "integer_interval": (constraints.integer_interval, ("lower_bound", "upper_bound")),
    "integer_greater_than": (constraints._IntegerGreaterThan, ("lower_bound",)),
    "integer_less_than": (constraints._IntegerLessThan, ("upper_bound",)),
    "independent": (constraints.independent, ("base_constraint", "reinterpreted_batch_ndims")),
    "multinomial": (constraints.multinomial, ("upper_bound",)),
    "cat": (constraints.cat, ("cseq", "dim", "lengths")),
    "stack": (constraints.stack, ("cseq", "dim")),
}
# modules whose module-level constraint objects may be named in a file
_CONSTRAINT_MODULES = ("torch.distributions.constraints", "pyro.distributions.constraints")


def to_plain(obj: Any, where: str = "value") -> Any:
    """``obj`` as plain data (see the module docstring); ``where`` names it in errors."""
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):  # np.float64 is a float subclass: written as float
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided:
            raise ValueError(f"cannot save {where}: a {obj.layout} tensor (only dense tensors)")
        return obj.detach().cpu()  # a plain tensor: an nn.Parameter or autograd history is not kept
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise ValueError(f"cannot save {where}: a NumPy array of Python objects")
        return {TAG: "ndarray", "data": torch.from_numpy(np.ascontiguousarray(obj).copy())}
    if isinstance(obj, torch.Size):
        return {TAG: "size", "items": [int(i) for i in obj]}
    if isinstance(obj, torch.Generator):  # a loop's random stream (a checkpoint holds it)
        return {TAG: "generator", "device": str(obj.device), "state": obj.get_state()}
    if isinstance(obj, torch.dtype):
        return {TAG: "dtype", "name": str(obj).removeprefix("torch.")}
    if type(obj) is tuple:
        return {TAG: "tuple", "items": [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if type(obj) in (set, frozenset):
        return {TAG: type(obj).__name__, "items": [to_plain(v, f"{where} item") for v in obj]}
    if type(obj) is list:
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):  # OrderedDict (a state_dict) too: read back as a dict, same order
        if all(type(k) is str for k in obj) and TAG not in obj:
            return {k: to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
        return {TAG: "dict", "items": [[to_plain(k, f"{where} key"), to_plain(v, f"{where}[{k!r}]")]
                                       for k, v in obj.items()]}
    if isinstance(obj, constraints.Constraint):
        return _constraint(obj, where)
    from probgen.declarations import Declaration
    if isinstance(obj, Declaration):
        return _declaration(obj, where)
    if isinstance(obj, torch.nn.Module):
        raise ValueError(f"cannot save {where}: an nn.Module ({type(obj).__name__}) is saved only as the "
                         "state_dict of a declaration that builds it; a network you pass in yourself "
                         "cannot be rebuilt when the fit is loaded")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type) and _in_probgen(type(obj)):
        return {TAG: "dataclass", "class": _name_of(type(obj)),
                "fields": {f.name: to_plain(getattr(obj, f.name), f"{where}.{f.name}")
                           for f in dataclasses.fields(obj)}}
    if callable(obj) and not isinstance(obj, type) and hasattr(obj, "__qualname__"):
        return {TAG: "function", "name": importable_name(obj, where)}
    raise ValueError(f"cannot save {where}: a {type(obj).__module__}.{type(obj).__qualname__} is not plain "
                     "data (tensors, numbers, strings, lists, dicts) nor a kind a fit file can name")


def from_plain(data: Any, where: str = "the file") -> Any:
    """The value `to_plain` encoded as ``data``; ``ValueError`` for anything it did not write."""
    if data is None or type(data) in (bool, int, float, str) or isinstance(data, torch.Tensor):
        return data
    if type(data) is list:
        return [from_plain(v, where) for v in data]
    if type(data) is not dict:
        raise ValueError(f"{where} holds a {type(data).__name__}, which probgen does not write")
    kind = data.get(TAG)
    if kind is None:
        return {k: from_plain(v, where) for k, v in data.items()}
    if kind == "tuple":
        return tuple(from_plain(v, where) for v in data["items"])
    if kind in ("set", "frozenset"):
        return {"set": set, "frozenset": frozenset}[kind](from_plain(v, where) for v in data["items"])
    if kind == "dict":
        return {from_plain(k, where): from_plain(v, where) for k, v in data["items"]}
    if kind == "ndarray":
        return data["data"].numpy()
    if kind == "size":
        return torch.Size(data["items"])
    if kind == "generator":
        g = torch.Generator(device=str(data["device"]))
        g.set_state(data["state"])
        return g
    if kind == "dtype":
        dtype = getattr(torch, str(data["name"]), None)
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"{where} names an unknown dtype {data['name']!r}")
        return dtype
    if kind == "constraint":
        return _load_constraint(data, where)
    if kind == "declaration":
        return _load_declaration(data, where)
    if kind == "program":
        return _load_program(data, where)
    if kind == "function":
        return import_name(data["name"], "function")
    if kind == "dataclass":
        module = str(data["class"]).partition(":")[0]
        cls = _import_attribute(data["class"], "class") if module.startswith("probgen.") else None
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls) and _in_probgen(cls)):
            raise ValueError(f"{where} names {data['class']!r}, which is not a probgen dataclass")
        return cls(**from_plain(data["fields"], where))
    raise ValueError(f"{where} holds an unknown kind {kind!r}")


# ---- names ------------------------------------------------------------------------------

def importable_name(obj: Any, where: str = "the function") -> str:
    """``"module:qualname"`` under which ``obj`` (a function, a class, a function decorated at
    its definition, e.g. by ``pyro.infer.config_enumerate``) is found again; ``ValueError`` if
    importing that name would not give back this very object."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    label = f"{where} ({qualname or type(obj).__name__})"
    if not module or not qualname:
        raise ValueError(f"cannot save {label}: it has no importable name (module:qualname)")
    if module == "__main__":
        raise ValueError(f"cannot save {label}: it is defined in __main__ (a script or notebook), so it cannot "
                         "be imported when the fit is loaded; define it in a module and import it from there")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise ValueError(f"cannot save {label}: a lambda or a function defined inside another function "
                         "cannot be imported when the fit is loaded; define it at the top level of a module")
    name = f"{module}:{qualname}"
    try:
        found = _import_attribute(name, "object")
    except ValueError:
        found = None
    if found is not obj:
        raise ValueError(f"cannot save {label}: importing {name!r} does not give this object back (decorate or "
                         "wrap it where it is defined, so that the module's name refers to what you fit)")
    return name


def import_name(name: str, what: str = "program") -> Any:
    """The callable ``"module:qualname"`` names; ``ValueError`` saying which name could not be imported."""
    obj = _import_attribute(name, what)
    if not callable(obj) or isinstance(obj, type):
        raise ValueError(f"the {what} {name!r} the fit was saved with is not a function")
    return obj


def _import_attribute(name: Any, what: str) -> Any:
    module, sep, qualname = str(name).partition(":")
    if not sep or not module or not qualname:
        raise ValueError(f"a {what} is named as module:qualname, got {name!r}")
    try:
        obj = importlib.import_module(module)
    except Exception as exc:  # ImportError, or the module failed while importing
        raise ValueError(f"cannot import the {what} {name!r} the fit was saved with: "
                         f"{type(exc).__name__}: {exc}") from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"cannot import the {what} {name!r} the fit was saved with: "
                             f"module {module!r} has no {qualname!r}")
        obj = getattr(obj, part)
    return obj


def _name_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _in_probgen(cls: type) -> bool:
    return cls.__module__ == "probgen" or cls.__module__.startswith("probgen.")


# ---- constraints ------------------------------------------------------------------------

def _constraint(c: constraints.Constraint, where: str) -> dict:
    # a module-level singleton (constraints.positive, a probgen one) by name: the very object comes back
    for module_name in dict.fromkeys((*_CONSTRAINT_MODULES, type(c).__module__)):
        if module_name in _CONSTRAINT_MODULES or module_name.startswith("probgen."):
            module = importlib.import_module(module_name)
            for attr, value in vars(module).items():
                if value is c and not attr.startswith("__"):
                    return {TAG: "constraint", "name": f"{module_name}:{attr}"}
    for name, (factory, fields) in _PARAMETRISED.items():
        if type(c) is factory:  # the exact class: a subclass may take other arguments
            return {TAG: "constraint", "name": name,
                    "args": [to_plain(getattr(c, f), f"{where} ({name} {f})") for f in fields]}
    raise ValueError(f"cannot save {where}: the constraint {c!r} ({type(c).__qualname__}) is neither a named "
                     f"constraint nor one of {sorted(_PARAMETRISED)}")



def _load_constraint(data: dict, where: str) -> constraints.Constraint:
    name = str(data["name"])
    if ":" in name:
        module = name.partition(":")[0]
        if module not in _CONSTRAINT_MODULES and not module.startswith("probgen."):
            raise ValueError(f"{where} names a constraint {name!r} outside torch, Pyro and probgen")
        c = _import_attribute(name, "constraint")
    elif name in _PARAMETRISED:
        factory, fields = _PARAMETRISED[name]
        args = from_plain(data.get("args", []), where)
        if len(args) != len(fields):
            raise ValueError(f"{where}: the constraint {name} takes {len(fields)} arguments, got {len(args)}")
        c = factory(*args)
    else:
        raise ValueError(f"{where} names an unknown constraint {name!r}")
    if not isinstance(c, constraints.Constraint):
        raise ValueError(f"{where} names {name!r}, which is not a constraint")
    return c


# ---- declarations and programs ----------------------------------------------------------

def _declaration(model: Any, where: str) -> dict:
    from probgen import registry
    from probgen.declarations import UserProgram
    cls = type(model)
    if isinstance(model, UserProgram):
        if model.spec:  # loaded by the CLI from path/to/file.py:name; read from that file again
            return {TAG: "program", "file": model.spec}
        return {TAG: "program", "name": importable_name(model.fn, f"{where}: the program")}
    recorded = model.init_arguments
    if recorded is None:
        raise ValueError(f"cannot save {where}: this {cls.__name__} was not made by its constructor, "
                         "so it cannot be rebuilt from constructor arguments")
    args, kwargs = recorded
    label = f"{where} ({cls.__name__} constructor argument"
    out = {TAG: "declaration",
           "args": [to_plain(v, f"{label} {i})") for i, v in enumerate(args)],
           "kwargs": {k: to_plain(v, f"{label} {k}=)") for k, v in kwargs.items()},
           # networks the declaration built (trained weights): their state_dict tensors
           "modules": {attr: to_plain(dict(v.state_dict()), f"{where}.{attr}")
                       for attr, v in vars(model).items() if isinstance(v, torch.nn.Module)}}
    short = cls.__dict__.get("short_name")
    if short and registry.models().get(short) is cls:
        out["name"] = short
    else:
        out["class"] = importable_name(cls, f"{where}: the declaration class")
    return out


def _load_declaration(data: dict, where: str) -> Any:
    from probgen import registry
    from probgen.declarations import Declaration
    if "name" in data:
        cls = registry.models().get(data["name"])
        if cls is None:
            raise ValueError(f"{where} names the model {data['name']!r}, which this probgen does not have; "
                             f"built-in models: {sorted(registry.models())}")
    else:
        cls = _import_attribute(data["class"], "declaration class")
        # only a declaration class is called: a file cannot make load construct anything else
        if not (isinstance(cls, type) and issubclass(cls, Declaration)):
            raise ValueError(f"{where} names {data['class']!r}, which is not a probgen declaration class")
    args, kwargs = from_plain(data["args"], where), from_plain(data["kwargs"], where)
    model = cls(*args, **kwargs)
    for attr, state in data.get("modules", {}).items():
        module = getattr(model, attr, None)
        if not isinstance(module, torch.nn.Module):
            raise ValueError(f"{where}: the rebuilt {cls.__name__} has no network {attr!r}")
        try:
            module.load_state_dict(from_plain(state, where), strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{where}: the saved weights of {cls.__name__}.{attr} do not fit the rebuilt "
                             f"network: {exc}") from None
    return model


def _load_program(data: dict, where: str) -> Any:
    from probgen.declarations import UserProgram, load_program
    if "file" in data:
        return load_program(str(data["file"]))
    return UserProgram(import_name(data["name"], "program"))



# ---- files ------------------------------------------------------------------------------

def write_file(path: str, payload: dict) -> None:
    """Write ``payload`` (plain data) to ``path`` with ``torch.save``, atomically and durably:
    into a temporary file in the same folder (so that the rename cannot cross file systems),
    flushed and ``fsync``-ed, then ``os.replace``-d over ``path`` (atomic on POSIX and
    Windows) and the folder ``fsync``-ed so that the rename itself survives a crash. A reader
    sees the old file or the new one, never part of one; an error leaves no temporary file."""
    import os
    import tempfile
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".probgen-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # POSIX: make the new directory entry durable too
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_file(path: str, fmt: str, what: str, hint: str = "", missing: str = "file") -> dict:
    """The payload `write_file` wrote to ``path`` in format ``fmt``, read with
    ``torch.load(weights_only=True)`` (tensors and plain data only: nothing in the file is
    unpickled as an object, so no code from it runs). Anything else — a pickle of other
    objects, a truncated or foreign file, another format — is a ``ValueError`` saying the file
    is not a ``what`` (``"probgen fit file"``); ``hint`` is added where the file holds objects;
    no file at all is "no ``missing`` at ``path``"."""
    import os
    import pickle
    import warnings
    if not os.path.exists(path):
        raise ValueError(f"no {missing} at {path}")
    label = f"{path} is not a {what} (format {fmt!r})"
    try:
        with warnings.catch_warnings():  # torch's note on a foreign pickle protocol: the refusal says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # objects other than tensors and plain data: never unpickled
        detail = str(exc).partition("WeightsUnpickler error:")[2].strip().split("\n")[0]
        detail = detail.split(" was not an allowed global")[0].strip(" .")  # the class it names, not torch's advice
        raise ValueError(f"{label}: it holds something other than tensors and plain data"
                         + (f" ({hint})" if hint else "") + ", so it was not unpickled and no code in it ran"
                         + (f" ({detail})" if detail else "")) from None
    except Exception as exc:  # not a torch file at all (or a truncated one)
        raise ValueError(f"{label}: {type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
    if not isinstance(payload, dict) or payload.get("format") != fmt:
        found = payload.get("format") if isinstance(payload, dict) else None
        raise ValueError(label + (f"; it has format {found!r}" if found else ""))
    return payload
